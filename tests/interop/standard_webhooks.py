"""Verifies deliveries with PyPI's `standardwebhooks` (a Standard Webhooks receiver library no
one here wrote), for tests/webhook_sink.rs.

stdin: {"cases": [{"secret": str, "headers": {name: value}, "body": str}]}
stdout: {"version": str, "results": [{"accepted": bool, "error": str | null,
         "payload": any | null, "signature": str}]}
where `signature` is the library's own `v1,...` for the case's id, timestamp and body (what a
sender using the library would send). The library checks the timestamp against the real
clock with a 5 minute tolerance.
"""

import json
import sys
from datetime import datetime, timezone
from importlib.metadata import version

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def run(case):
    wh = Webhook(case["secret"])
    headers = case["headers"]
    result = {"accepted": False, "error": None, "payload": None, "signature": None}
    try:
        timestamp = datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=timezone.utc)
        result["signature"] = wh.sign(headers["webhook-id"], timestamp, case["body"])
    except (KeyError, ValueError) as e:
        result["signature"] = f"cannot sign: {e}"
    try:
        result["payload"] = wh.verify(case["body"], headers)
        result["accepted"] = True
    except WebhookVerificationError as e:
        result["error"] = str(e)
    return result


def main():
    doc = json.load(sys.stdin)
    out = {
        "version": version("standardwebhooks"),
        "results": [run(c) for c in doc["cases"]],
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
