#!/usr/bin/env bash
# Runs CMD... with the official Python SDKs of the 402 protocols installed: PyPI's `pympp`
# (Machine Payments Protocol) and `x402`, the Standard Webhooks receiver library
# `standardwebhooks` (the webhook sink's interop test), and `eth-account` (the EVM signer's
# interop test: EIP-712 signatures checked byte for byte), in a venv under
# ${XDG_CACHE_HOME:-$HOME/.cache}/agent-mandate/, and MPP_SDK_PYTHON set to its python.
#
#   scripts/with-mpp-sdk.sh cargo test --features mpp,x402 --test mpp_interop
#
# Idempotent: installs only when the venv lacks the pinned versions (needs python3 with venv
# and access to PyPI). Composable with the other wrappers. Exits with CMD's status.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi

PYMPP_VERSION="${PYMPP_VERSION:-0.16.0}"
X402_VERSION="${X402_VERSION:-2.25.0}"
STANDARDWEBHOOKS_VERSION="${STANDARDWEBHOOKS_VERSION:-1.1.0}"
ETH_ACCOUNT_VERSION="${ETH_ACCOUNT_VERSION:-0.14.0}"
venv="${MPP_SDK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-mandate/mpp-sdk-venv}"

ensure_python() {
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "with-mpp-sdk: installing python3 and python3-venv with apt-get" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >&2
  else
    echo "with-mpp-sdk: python3 with the venv module is required" >&2
    exit 1
  fi
}

installed() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$PYMPP_VERSION" "$X402_VERSION" \
    "$STANDARDWEBHOOKS_VERSION" "$ETH_ACCOUNT_VERSION" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
wanted = tuple(sys.argv[1:5])
got = (version("pympp"), version("x402"), version("standardwebhooks"), version("eth-account"))
sys.exit(0 if got == wanted else 1)
PY
}

ensure_python
if ! installed; then
  echo "with-mpp-sdk: installing pympp==$PYMPP_VERSION, x402==$X402_VERSION, standardwebhooks==$STANDARDWEBHOOKS_VERSION and eth-account==$ETH_ACCOUNT_VERSION into $venv" >&2
  mkdir -p "$(dirname "$venv")"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "pympp==$PYMPP_VERSION" "x402==$X402_VERSION" \
    "standardwebhooks==$STANDARDWEBHOOKS_VERSION" "eth-account==$ETH_ACCOUNT_VERSION" >&2
fi

export MPP_SDK_PYTHON="$venv/bin/python"
exec "$@"
