#!/usr/bin/env bash
# Runs CMD... with DATABASE_URL pointing at a PostgreSQL database.
#
#   scripts/with-postgres.sh cargo test --all-features
#   scripts/with-postgres.sh scripts/with-localstripe.sh cargo test --all-features
#
# If DATABASE_URL is already set, CMD runs as it is. Otherwise a throwaway cluster is made: the
# Debian `postgresql` package is installed if no server binaries are found, a cluster is
# initialised in a temporary directory (owned by the `postgres` user when run as root; trust
# authentication on 127.0.0.1 only, no TCP elsewhere, its socket inside the temporary
# directory), started on a free port, given a database `agent_mandate`, and DATABASE_URL is
# exported for CMD. The cluster is stopped and its directory removed on exit, whatever CMD
# did; the exit code of CMD is the script's.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 64
fi

if [ -n "${DATABASE_URL:-}" ]; then
  exec "$@"
fi

log() { echo "with-postgres: $*" >&2; }

find_bindir() {
  local d
  # Newest major version first.
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

BINDIR="$(find_bindir || true)"
if [ -z "$BINDIR" ]; then
  log "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: installing the Debian package"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  # A package script may fail to start the distribution's own cluster (no init system in a
  # container): what matters is that the binaries are there, checked below.
  if ! $SUDO apt-get install -y --no-install-recommends postgresql >/dev/null; then
    $SUDO apt-get update >/dev/null || true
    $SUDO apt-get install -y --no-install-recommends postgresql >/dev/null || true
  fi
  BINDIR="$(find_bindir || true)"
  if [ -z "$BINDIR" ]; then
    log "the postgresql package installed no initdb/pg_ctl"
    exit 69
  fi
fi

# Run a command as the cluster's owner: `postgres` when we are root (initdb refuses root).
if [ "$(id -u)" -eq 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
  # From / : the caller's directory may be closed to the postgres user.
  as_owner() {
    if command -v runuser >/dev/null 2>&1; then
      (cd / && runuser -u postgres -- "$@")
    else
      (cd / && su postgres -s /bin/bash -c "$(printf '%q ' "$@")")
    fi
  }
else
  as_owner() { "$@"; }
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/with-postgres.XXXXXX")"
DATA="$TMP/data"
SOCK="$TMP/socket"
mkdir -p "$SOCK"
if [ "$(id -u)" -eq 0 ]; then
  chown -R postgres: "$TMP"
fi
chmod 700 "$TMP"

started=""
cleanup() {
  local rc=$?
  if [ -n "$started" ]; then
    as_owner "$BINDIR/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  local p
  for p in $(seq 54320 54420) ; do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

as_owner "$BINDIR/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=reject \
  --encoding=UTF8 --no-locale >"$TMP/initdb.log" 2>&1 || {
  log "initdb failed:"; cat "$TMP/initdb.log" >&2; exit 70; }
# Only 127.0.0.1 may connect over TCP, without a password; everything else is refused.
cat >"$DATA/pg_hba.conf" <<HBA
local all all trust
host  all all 127.0.0.1/32 trust
HBA
if [ "$(id -u)" -eq 0 ]; then chown postgres: "$DATA/pg_hba.conf"; fi

PORT=""
for _ in 1 2 3 4 5; do
  PORT="$(free_port)" || { log "no free port"; exit 71; }
  if as_owner "$BINDIR/pg_ctl" -D "$DATA" -l "$TMP/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $SOCK -c fsync=off -c max_connections=200" \
      start >/dev/null 2>&1; then
    started=1
    break
  fi
  PORT=""
done
if [ -z "$started" ]; then
  log "the server did not start:"; cat "$TMP/server.log" >&2 || true; exit 72
fi

for _ in $(seq 1 60); do
  if "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then break; fi
  sleep 0.5
done
"$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" || { log "the server is not ready"; exit 73; }
as_owner "$BINDIR/createdb" -h "$SOCK" -p "$PORT" -U postgres agent_mandate

export DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/agent_mandate"
log "PostgreSQL $("$BINDIR/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$PORT (DATABASE_URL exported)"
set +e
"$@"
rc=$?
set -e
exit "$rc"
