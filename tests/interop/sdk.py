"""Runs the official Python SDKs (PyPI `pympp` and `x402`) on cases sent by the Rust interop test.

Reads one JSON document on stdin: {"secret": "...", "cases": [{"op": ..., ...}, ...]} and
writes {"results": [...]} on stdout, one result per case, in order. A case that raises is
answered {"error": "<exception type>: <message>"} so the Rust side can report it.
"""

import json
import sys
from datetime import datetime

import mpp
from mpp import Challenge, ChallengeEcho, Credential, Receipt, generate_challenge_id
from x402.http.utils import (
    decode_payment_required_header,
    decode_payment_response_header,
    decode_payment_signature_header,
    encode_payment_required_header,
    encode_payment_response_header,
    encode_payment_signature_header,
)
from x402.schemas import PaymentPayload, PaymentRequired, SettleResponse


def answer_challenge(case, secret):
    """Parse our WWW-Authenticate value, check its binding, answer it with a credential."""
    ch = mpp.parse_www_authenticate(case["header"])
    return {
        "id": ch.id,
        "realm": ch.realm,
        "method": ch.method,
        "intent": ch.intent,
        "request": ch.request,
        "expires": ch.expires,
        "digest": ch.digest,
        "opaque": ch.opaque,
        "description": ch.description,
        "sdk_verifies_binding": ch.verify(secret, ch.realm),
        "authorization": Credential(
            challenge=ch.to_echo(), payload=case["payload"], source=case.get("source")
        ).to_authorization(),
    }


def issue_challenge(case, secret):
    """Issue a challenge with the SDK, for our client to parse and our binding to recompute."""
    ch = Challenge.create(
        secret_key=secret,
        realm=case["realm"],
        method=case["method"],
        intent=case["intent"],
        request=case["request"],
        expires=case.get("expires"),
        digest=case.get("digest"),
        description=case.get("description"),
        meta=case.get("opaque"),
    )
    return {
        "header": ch.to_www_authenticate(case["realm"]),
        "id": ch.id,
        "id_again": generate_challenge_id(
            secret_key=secret,
            realm=case["realm"],
            method=case["method"],
            intent=case["intent"],
            request=case["request"],
            expires=case.get("expires"),
            digest=case.get("digest"),
            opaque=case.get("opaque"),
        ),
    }


def read_credential(case, secret):
    """Parse our Authorization value with the SDK."""
    cred = Credential.from_authorization(case["header"])
    return {"id": cred.challenge.id, "request": cred.challenge.request, "payload": cred.payload}


def receipts(case, secret):
    """Parse our receipt; write one of the SDK's."""
    ours = Receipt.from_payment_receipt(case["header"])
    theirs = Receipt.success(
        reference="pi_sdk_1",
        timestamp=datetime.fromisoformat("2026-06-28T09:00:00+00:00"),
        method="stripe",
    ).to_payment_receipt()
    return {"reference": ours.reference, "method": ours.method, "theirs": theirs}


def x402_roundtrip(case, secret):
    """Decode our x402 headers into the x402 package's models and encode them again."""
    out = {}
    if "required" in case:
        m = decode_payment_required_header(case["required"])
        assert isinstance(m, PaymentRequired), type(m)
        out["required"] = encode_payment_required_header(m)
    if "signature" in case:
        m = decode_payment_signature_header(case["signature"])
        assert isinstance(m, PaymentPayload), type(m)
        out["signature"] = encode_payment_signature_header(m)
    if "response" in case:
        m = decode_payment_response_header(case["response"])
        assert isinstance(m, SettleResponse), type(m)
        out["response"] = encode_payment_response_header(m)
    return out


def x402_issue(case, secret):
    """Build x402 models from plain JSON with the package and encode them."""
    return {
        "required": encode_payment_required_header(PaymentRequired.model_validate(case["required"])),
        "signature": encode_payment_signature_header(PaymentPayload.model_validate(case["signature"])),
        "response": encode_payment_response_header(SettleResponse.model_validate(case["response"])),
    }


OPS = {
    "answer_challenge": answer_challenge,
    "issue_challenge": issue_challenge,
    "read_credential": read_credential,
    "receipts": receipts,
    "x402_roundtrip": x402_roundtrip,
    "x402_issue": x402_issue,
}


def main():
    doc = json.load(sys.stdin)
    secret = doc["secret"]
    results = []
    for case in doc["cases"]:
        try:
            results.append(OPS[case["op"]](case, secret))
        except Exception as e:  # reported to the Rust side, case by case
            results.append({"error": f"{type(e).__name__}: {e}"})
    json.dump({"results": results, "versions": versions()}, sys.stdout)


def versions():
    from importlib.metadata import version

    return {"pympp": version("pympp"), "x402": version("x402")}


if __name__ == "__main__":
    main()
