#!/usr/bin/env bash
# Runs CMD... with headless Chromium available, CHROMIUM=/usr/bin/chromium exported.
#
#   scripts/with-chromium.sh scripts/dashboard-browser.sh
#
# Installs Debian's `chromium` package with apt-get only when /usr/bin/chromium is missing
# (needs root and access to Debian's package archive). When it cannot be installed, prints
# SKIPPED with the reason and exits 0 without running CMD: the browser check is then not run,
# and says so; with REQUIRE_CHROMIUM=1 (CI) that is a failure (exit 1) instead. Exits with
# CMD's status otherwise.
set -euo pipefail

skip() {
  echo "SKIPPED: the browser check: $1"
  if [ "${REQUIRE_CHROMIUM:-0}" = 1 ]; then
    echo "with-chromium: REQUIRE_CHROMIUM=1: the browser check may not be skipped" >&2
    exit 1
  fi
  exit 0
}

if [ "$#" -eq 0 ]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi

chromium=/usr/bin/chromium
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "with-chromium: installing Debian's chromium with apt-get" >&2
    if ! { apt-get update -qq >&2 \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
          chromium fonts-dejavu-core >&2; }; then
      skip "chromium could not be installed with apt-get"
    fi
  else
    skip "/usr/bin/chromium is missing and cannot be installed (not root, or no apt-get)"
  fi
fi
if [ ! -x "$chromium" ]; then
  skip "chromium was installed but /usr/bin/chromium is missing"
fi
export CHROMIUM="$chromium"
exec "$@"
