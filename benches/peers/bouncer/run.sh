#!/usr/bin/env bash
# agent-bouncer (PyPI, Python) on the peers benchmark's requests, for the rules it can express.
#
# Creates target/bouncer-venv with agent-bouncer 0.1.2 if missing, exports the benchmark's 1,024
# requests with agent-mandate's decisions (peers-export), checks that bouncer agrees on every
# request it can express and times its `evaluate` (compare.py). Extra arguments go to compare.py
# (e.g. --rounds 100). For the ratio, run the criterion bench first:
#   cargo bench -p peers --bench engines -- --warm-up-time 1 --measurement-time 3
#
# Run from anywhere: bash benches/peers/bouncer/run.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$root"

venv=target/bouncer-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("agent-bouncer") != "0.1.2")' 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check agent-bouncer==0.1.2
fi

cargo run -q -p peers --release --bin peers-export -- target/peers-requests.jsonl
"$venv/bin/python" benches/peers/bouncer/compare.py target/peers-requests.jsonl "$@"
