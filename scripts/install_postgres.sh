#!/usr/bin/env bash
# Installs the distribution's PostgreSQL server (Debian: `postgresql`) for the tests that run Melt's storage, CLI and
# dashboard against a real PostgreSQL (tests/pgserver.py starts a throw-away server in a temp dir; nothing is
# configured system-wide and the package's own cluster is not needed). Skips when initdb/pg_ctl are already there.
set -euo pipefail

if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    echo "postgresql present: $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1 || command -v pg_ctl)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install_postgres.sh: need root (or sudo) to apt-get install postgresql" >&2; exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends: the server and its client tools, no extra locales or sysstat. The package also creates
# the `postgres` OS user, which the tests run the server as when they run as root (PostgreSQL refuses root).
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
echo "postgresql installed: $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
