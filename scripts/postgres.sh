#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests (and for trying Flujo on Postgres).
#
#   scripts/postgres.sh start DIR   # initdb + start in DIR (created); prints the URL, also written to DIR/url
#   scripts/postgres.sh stop DIR    # stop the server and delete DIR
#   scripts/postgres.sh restart DIR [S]  # crash it (`pg_ctl stop -m immediate`), wait S seconds, start it again
#
# The server listens on 127.0.0.1 on a free port, with password authentication over TCP for the user
# `flujo` (a random password, in the URL), and fsync off (a test server: fast, and a killed *client* still
# tests durability; `pg_ctl stop -m immediate` + start still tests crash recovery). `FLUJO_PG_DURABLE=1` keeps
# PostgreSQL's durable defaults (fsync on), for benchmarks. It uses the Debian
# PostgreSQL server binaries (`initdb`, `pg_ctl`), installing the `postgresql` package when they are missing
# and we are root. As root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).
#
# `FLUJO_PG_BINDIR=DIR` takes `initdb`, `pg_ctl` and `postgres` from DIR instead (no package is installed
# then): `scripts/pgvector.sh` uses it for a PostgreSQL with pgvector. `start` records the directory in
# DIR/bindir, so `stop` and `restart` use the same binaries without the variable.
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
if [[ -z "$cmd" || -z "$dir" ]]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi

find_bin() {
    local name="$1"
    if [[ -n "${FLUJO_PG_BINDIR:-}" ]]; then
        if [[ -x "$FLUJO_PG_BINDIR/$name" ]]; then
            echo "$FLUJO_PG_BINDIR/$name"
        fi
        return
    fi
    if [[ "$cmd" != start && -f "$dir/bindir" && -x "$(cat "$dir/bindir")/$name" ]]; then
        echo "$(cat "$dir/bindir")/$name"
        return
    fi
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return
    fi
    local candidate
    for candidate in /usr/lib/postgresql/*/bin/"$name"; do
        if [[ -x "$candidate" ]]; then
            echo "$candidate"
            return
        fi
    done
}

as_server_user() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "$cmd" in
start)
    initdb="$(find_bin initdb)"
    if [[ -z "$initdb" && -n "${FLUJO_PG_BINDIR:-}" ]]; then
        echo "postgres.sh: no initdb in FLUJO_PG_BINDIR=$FLUJO_PG_BINDIR" >&2
        exit 1
    fi
    if [[ -z "$initdb" ]]; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            echo "postgres.sh: installing the postgresql package" >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
                || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
            initdb="$(find_bin initdb)"
        fi
        if [[ -z "$initdb" ]]; then
            echo "postgres.sh: no initdb found (install the postgresql server package)" >&2
            exit 1
        fi
    fi
    pg_ctl="$(dirname "$initdb")/pg_ctl"
    [[ -x "$pg_ctl" ]] || pg_ctl="$(find_bin pg_ctl)"
    if [[ "$(id -u)" == 0 ]] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    if [[ "$(id -u)" == 0 ]] && ! runuser -u postgres -- test -x "$initdb"; then
        echo "postgres.sh: the postgres user cannot run $initdb (a parent directory is not readable by it?)" >&2
        exit 1
    fi
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    password="flujo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    printf '%s\n' "$password" > "$dir/pwfile"
    dirname "$initdb" > "$dir/bindir"
    if [[ "$(id -u)" == 0 ]]; then
        chown -R postgres "$dir"
    fi
    as_server_user "$initdb" -D "$dir/data" -U flujo --pwfile="$dir/pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    durability="-c fsync=off -c full_page_writes=off"
    if [[ "${FLUJO_PG_DURABLE:-}" == 1 ]]; then
        durability=""
    fi
    opts="-p $port -k $dir -c listen_addresses=127.0.0.1 $durability -c max_connections=300"
    echo "$opts" > "$dir/opts"
    as_server_user "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "$opts" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgres://flujo:$password@127.0.0.1:$port/postgres" > "$dir/url"
    cat "$dir/url"
    ;;
restart)
    initdb="$(find_bin initdb)"
    pg_ctl="$(dirname "$initdb")/pg_ctl"
    as_server_user "$pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
    sleep "${3:-0}"
    as_server_user "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "$(cat "$dir/opts")" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    ;;
stop)
    if [[ -d "$dir/data" ]]; then
        initdb="$(find_bin initdb)"
        pg_ctl="$(dirname "$initdb")/pg_ctl"
        as_server_user "$pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop|restart DIR" >&2
    exit 2
    ;;
esac
