#!/usr/bin/env bash
# A throwaway PostgreSQL server with the pgvector extension, for the pgvector store's tests and benchmarks.
#
#   scripts/pgvector.sh start DIR   # as `scripts/postgres.sh start DIR`: prints the URL, also written to DIR/url
#   scripts/pgvector.sh stop DIR    # stop the server and delete DIR
#   scripts/pgvector.sh restart DIR [S]
#   scripts/pgvector.sh bindir      # install if needed; print the directory of the server binaries
#
# Debian's PostgreSQL has no pgvector package. The PyPI package `pgserver` (pinned below) ships PostgreSQL
# 16.2 binaries with pgvector 0.6.2; this script installs it, when missing, into a virtualenv at
# `FLUJO_PGVECTOR_VENV` (default /opt/flujo-pgvector-venv: about 60 MB, a few seconds from PyPI), then runs
# `scripts/postgres.sh` with `FLUJO_PG_BINDIR` pointing at its binaries. The venv must be readable by the
# `postgres` user, which runs the server when we are root (a venv under /root would not be). Installs are
# serialized by a lock, so concurrent test runs share one venv. Any failure (no PyPI, no python3 venv module)
# exits non-zero with the reason on stderr.
set -euo pipefail

cmd="${1:-}"
here="$(cd "$(dirname "$0")" && pwd)"
venv="${FLUJO_PGVECTOR_VENV:-/opt/flujo-pgvector-venv}"
pgserver_version="0.1.4"

find_bindir() {
    local candidate
    for candidate in "$venv"/lib/python3*/site-packages/pgserver/pginstall/bin; do
        if [[ -x "$candidate/initdb" && -x "$candidate/postgres" ]]; then
            echo "$candidate"
            return
        fi
    done
}

ensure_installed() {
    local bindir
    bindir="$(find_bindir)"
    if [[ -n "$bindir" ]]; then
        echo "$bindir"
        return
    fi
    mkdir -p "$(dirname "$venv")"
    (
        flock 9
        if [[ -z "$(find_bindir)" ]]; then
            echo "pgvector.sh: installing pgserver==$pgserver_version (PostgreSQL 16 + pgvector) into $venv" >&2
            rm -rf "$venv"
            if ! python3 -m venv "$venv" >&2; then
                # Debian's python3 needs its venv package; install it when we may.
                if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
                    rm -rf "$venv"
                    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >&2 \
                        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >&2; }
                fi
                python3 -m venv "$venv" >&2 || { echo "pgvector.sh: python3 -m venv $venv failed" >&2; exit 1; }
            fi
            "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input "pgserver==$pgserver_version" >&2 \
                || { echo "pgvector.sh: pip install pgserver==$pgserver_version failed (is PyPI reachable?)" >&2; exit 1; }
        fi
    ) 9>"$venv.lock" || exit 1
    bindir="$(find_bindir)"
    if [[ -z "$bindir" ]]; then
        echo "pgvector.sh: pgserver is installed in $venv but has no pginstall/bin with initdb and postgres" >&2
        exit 1
    fi
    echo "$bindir"
}

case "$cmd" in
start)
    [[ -n "${2:-}" ]] || { echo "usage: $0 start DIR" >&2; exit 2; }
    bindir="$(ensure_installed)"
    FLUJO_PG_BINDIR="$bindir" exec "$here/postgres.sh" start "$2"
    ;;
stop | restart)
    # postgres.sh finds the binaries in DIR/bindir, written at start.
    exec "$here/postgres.sh" "$@"
    ;;
bindir)
    ensure_installed
    ;;
*)
    echo "usage: $0 start|stop|restart DIR | bindir" >&2
    exit 2
    ;;
esac
