#!/usr/bin/env bash
# Runs CMD... with a localstripe server (a Stripe-compatible test PSP, PyPI package
# `localstripe`) listening on 127.0.0.1, and LOCALSTRIPE_URL=http://127.0.0.1:PORT exported.
#
#   scripts/with-localstripe.sh cargo test --all-features
#
# Installs localstripe into a venv under ${XDG_CACHE_HOME:-$HOME/.cache}/agent-mandate/ when it
# is missing (needs python3 with venv and access to PyPI), starts it on a free port, waits
# until it answers, runs CMD, and stops the server on exit. Composable with other wrappers
# (scripts/with-postgres.sh scripts/with-localstripe.sh cargo test ...). Exits with CMD's
# status.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi

venv="${LOCALSTRIPE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-mandate/localstripe-venv}"
# A fresh Debian machine may lack python3 or its venv module: install them when we can.
ensure_python() {
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "with-localstripe: installing python3 and python3-venv with apt-get" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >&2
  else
    echo "with-localstripe: python3 with the venv module is required" >&2
    exit 1
  fi
}
ensure_python
if [ ! -x "$venv/bin/localstripe" ]; then
  echo "with-localstripe: installing localstripe into $venv" >&2
  mkdir -p "$(dirname "$venv")"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check localstripe >&2
fi

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
log="$(mktemp -t localstripe.XXXXXX.log)"
# localstripe binds every interface by default; --host keeps it on the loopback when supported.
host_flag=()
if "$venv/bin/localstripe" --help 2>/dev/null | grep -q -- '--host'; then
  host_flag=(--host 127.0.0.1)
fi
# --from-scratch: no state from an earlier run (localstripe otherwise reloads its pickle).
"$venv/bin/localstripe" ${host_flag[@]+"${host_flag[@]}"} --from-scratch --port "$port" >"$log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT INT TERM

url="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  if python3 - "$url" >/dev/null 2>&1 <<'PY'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1] + "/v1/customers", timeout=1)
except urllib.error.HTTPError:
    pass  # any HTTP answer means it is up (401 without a key)
PY
  then
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "with-localstripe: localstripe exited early:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "with-localstripe: localstripe at $url (pid $pid)" >&2
export LOCALSTRIPE_URL="$url"
set +e
"$@"
status=$?
set -e
exit "$status"
