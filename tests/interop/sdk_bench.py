"""Times the official Python SDK (pympp) on the operations benches/protocols.rs measures, for the
side-by-side table of BENCHMARKS: parse a challenge, issue one, verify a credential's binding.

    scripts/with-mpp-sdk.sh sh -c '"$MPP_SDK_PYTHON" tests/interop/sdk_bench.py'

Prints the median of 15 runs of each operation, in microseconds per call.
"""

import statistics
import timeit

import mpp
from mpp import Challenge, Credential

SECRET = "bench secret of thirty-two bytes"
REQUEST = {
    "amount": "50",
    "currency": "eur",
    "description": "One answer",
    "methodDetails": {"networkId": "profile_bench", "paymentMethodTypes": ["card"]},
}


def issue():
    ch = Challenge.create(
        secret_key=SECRET,
        realm="api.example.com",
        method="stripe",
        intent="charge",
        request=REQUEST,
        expires="2026-06-28T09:05:00Z",
        description="One answer",
    )
    return ch.to_www_authenticate("api.example.com")


HEADER = issue()
AUTH = Credential(challenge=mpp.parse_www_authenticate(HEADER).to_echo(), payload={"spt": "spt_bench_1"}).to_authorization()


def parse():
    return mpp.parse_www_authenticate(HEADER)


def verify():
    cred = Credential.from_authorization(AUTH)
    echo = cred.challenge
    request = mpp._parsing._b64_decode(echo.request)
    ch = Challenge(
        id=echo.id,
        method=echo.method,
        intent=echo.intent,
        request=request,
        realm=echo.realm,
        request_b64=echo.request,
        expires=echo.expires,
        digest=echo.digest,
    )
    assert ch.verify(SECRET, "api.example.com")
    return cred


def median_us(fn, number=2000):
    runs = timeit.repeat(fn, number=number, repeat=15)
    return statistics.median(runs) / number * 1e6


if __name__ == "__main__":
    from importlib.metadata import version

    print(f"pympp {version('pympp')}")
    for name, fn in [("parse_challenge", parse), ("issue_challenge", issue), ("verify_credential", verify)]:
        print(f"{name}: {median_us(fn):.1f} us")
