"""Signs EIP-3009 `TransferWithAuthorization` typed data with PyPI's `eth-account` for the Rust
EVM signer's interop test.

Reads one JSON document on stdin: {"cases": [{"key", "domain", "message", "rust_signature"}]}
where `domain` is {name, version, chainId, verifyingContract} and `message` is {from, to,
value, validAfter, validBefore, nonce} (numbers as decimal strings, `nonce` as 0x-hex). Writes
{"results": [...]}: per case the signature and digest eth-account computes, the address of the
key, and the address the Rust signature recovers to. A case that raises
is answered {"error": "<exception type>: <message>"}.
"""

import json
import sys

from eth_account import Account
from eth_account.messages import encode_typed_data

TYPES = {
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ]
}


def hexstr(b):
    h = b.hex()
    return h[2:] if h.startswith("0x") else h


def run(case):
    d = case["domain"]
    m = case["message"]
    domain = {
        "name": d["name"],
        "version": d["version"],
        "chainId": int(d["chainId"]),
        "verifyingContract": d["verifyingContract"],
    }
    message = {
        "from": m["from"],
        "to": m["to"],
        "value": int(m["value"]),
        "validAfter": int(m["validAfter"]),
        "validBefore": int(m["validBefore"]),
        "nonce": bytes.fromhex(m["nonce"].removeprefix("0x")),
    }
    signed = Account.sign_typed_data(
        case["key"], domain_data=domain, message_types=TYPES, message_data=message
    )
    signable = encode_typed_data(
        domain_data=domain, message_types=TYPES, message_data=message
    )
    recovered = Account.recover_message(
        signable, signature=bytes.fromhex(case["rust_signature"].removeprefix("0x"))
    )
    return {
        "signature": hexstr(signed.signature),
        "digest": hexstr(signed.message_hash),
        "address": Account.from_key(case["key"]).address,
        "recovered": recovered,
    }


def main():
    doc = json.load(sys.stdin)
    results = []
    for case in doc["cases"]:
        try:
            results.append(run(case))
        except Exception as e:  # reported to the Rust side, which fails the case
            results.append({"error": f"{type(e).__name__}: {e}"})
    json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    main()
