#!/usr/bin/env bash
# Drives headless Chromium over the dashboard example: loads every page, fails on any console
# message (script errors, Content-Security-Policy refusals, failed loads: the pages log
# nothing themselves), checks each page's content in the DOM Chromium built, and saves
# screenshots to docs/screenshots/ (phone width, and desktop for the overview).
#
#   scripts/with-chromium.sh scripts/dashboard-browser.sh
#
# Needs CHROMIUM (set by with-chromium.sh) and cargo. Builds the example with all features,
# serves it on a free port of 127.0.0.1 and stops it on exit.
set -euo pipefail

chromium="${CHROMIUM:-/usr/bin/chromium}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${SCREENSHOT_DIR:-$root/docs/screenshots}"
mkdir -p "$out"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

browse() { # browse OUTPUT-FLAG WIDTHxHEIGHT URL ERRFILE
  timeout 90 "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --no-first-run --disable-extensions --disable-background-networking \
    --enable-logging=stderr --v=0 --user-data-dir="$work/profile" \
    --window-size="$2" "$1" "$3" 2>"$4"
}

# The check must be able to fail: a page that logs an error has to be caught.
printf '<html><body><script>console.error("selfcheck-marker")</script></body></html>' >"$work/bad.html"
browse --dump-dom 400,300 "file://$work/bad.html" "$work/bad.err" >/dev/null
if ! grep -q 'CONSOLE.*selfcheck-marker' "$work/bad.err"; then
  echo "browser: the console capture does not work with this Chromium (no CONSOLE line for a console.error)" >&2
  exit 1
fi

cd "$root"
cargo build --quiet --all-features --example dashboard
bin="${CARGO_TARGET_DIR:-$root/target}/debug/examples/dashboard"
DASHBOARD_ADDR=127.0.0.1:0 "$bin" >"$work/server.log" 2>&1 &
server_pid=$!
base=""
for _ in $(seq 1 100); do
  base="$(sed -n 's/^dashboard on \(http:[^ ]*\)$/\1/p' "$work/server.log")"
  [ -n "$base" ] && break
  sleep 0.1
done
if [ -z "$base" ]; then echo "browser: the example did not start" >&2; cat "$work/server.log" >&2; exit 1; fi

passed=0
failed=0
page() { # page NAME PATH MARKER [SIZE]
  local name="$1" url="$base$2" marker="$3" size="${4:-390,1500}"
  local ok=1
  browse --dump-dom "$size" "$url" "$work/$name.dom.err" >"$work/$name.html" || ok=0
  browse --screenshot="$out/$name.png" "$size" "$url" "$work/$name.shot.err" >/dev/null || ok=0
  if grep -h 'CONSOLE' "$work/$name.dom.err" "$work/$name.shot.err"; then
    echo "browser: $name: console messages above" >&2; ok=0
  fi
  if ! grep -q -- "$marker" "$work/$name.html"; then
    echo "browser: $name: '$marker' is not in the page Chromium rendered" >&2; ok=0
  fi
  if [ ! -s "$out/$name.png" ]; then echo "browser: $name: no screenshot" >&2; ok=0; fi
  if [ "$ok" = 1 ]; then passed=$((passed + 1)); echo "browser: $name ok ($url)"; else failed=$((failed + 1)); fi
}

page overview-phone "" "Recent alerts"
page overview-desktop "" "mandate_booking" 1280,1100
page activity-phone "/activity" "LIFETIME_LIMIT_EXCEEDED"
page activity-filtered "/activity?agent=agent_booker" "agent_booker"
attempt="$(grep -o '/dashboard/activity/att_[A-Za-z0-9_]*' "$work/activity-filtered.html" | head -1 || true)"
if [ -n "$attempt" ]; then
  page evidence-phone "${attempt#/dashboard}" "audit_chain"
else
  echo "browser: no attempt link on the activity page" >&2; failed=$((failed + 1))
fi
page waiting-phone "/waiting" "Flight Lisbon to Berlin"
page mandate-phone "/mandates/mandate_booking" "Delegated from"
page stop-phone "/stop" "Stop everything"
page stop-agent-phone "/stop/agents/agent_shopper" "Yes, stop agent_shopper now"
page stop-all-phone "/stop/all" "Yes, stop everything now"

echo "browser: $passed passed, $failed failed"
[ "$failed" = 0 ]
