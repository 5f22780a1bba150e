#!/usr/bin/env bash
# Runs CMD... with headless Chromium available, CHROMIUM=/usr/bin/chromium exported.
#
#   scripts/with-chromium.sh scripts/dashboard-browser.sh
#
# Installs Debian's `chromium` package with apt-get only when /usr/bin/chromium is missing
# (needs root and access to Debian's package archive). When it cannot be installed, prints
# SKIPPED with the reason and exits 0 without running CMD: the browser check is then not run,
# and says so. Exits with CMD's status otherwise.
set -euo pipefail

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
      echo "SKIPPED: the browser check: chromium could not be installed with apt-get"
      exit 0
    fi
  else
    echo "SKIPPED: the browser check: /usr/bin/chromium is missing and cannot be installed (not root, or no apt-get)"
    exit 0
  fi
fi
if [ ! -x "$chromium" ]; then
  echo "SKIPPED: the browser check: chromium was installed but /usr/bin/chromium is missing"
  exit 0
fi
export CHROMIUM="$chromium"
exec "$@"
