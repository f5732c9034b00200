#!/usr/bin/env bash
# The project's test command (README and .ci/run call exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Chromium and chromedriver for the web UI's browser test (crates/flujo-cli/tests/ui.rs), from
# Debian, when missing. In CI (`CI` set) a failed install fails the run; elsewhere the test says it skips.
if [[ ! -x /usr/bin/chromedriver || ! -x /usr/bin/chromium ]]; then
    apt_log="$(mktemp "${TMPDIR:-/tmp}/flujo-apt.XXXXXX")"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >"$apt_log" 2>&1; then
        tail -n 20 "$apt_log" >&2
        rm -f "$apt_log"
        if [[ -n "${CI:-}" ]]; then
            echo "test.sh: cannot install chromium and chromium-driver (apt-get) for the UI test" >&2
            exit 1
        fi
        echo "test.sh: WARNING: chromium/chromium-driver not installed; the UI browser test will skip" >&2
    fi
    rm -f "$apt_log"
fi
# Schemathesis (PyPI, in its own venv) for the API's property-based test (crates/flujo-cli/tests/api_schema.rs),
# when missing. In CI (`CI` set) a failed install fails the run; elsewhere the test says it skips.
if ! scripts/schemathesis.sh install >/dev/null; then
    if [[ -n "${CI:-}" ]]; then
        echo "test.sh: cannot install schemathesis (scripts/schemathesis.sh, see above) for the API schema test" >&2
        exit 1
    fi
    echo "test.sh: WARNING: schemathesis not installed; the API schema test will skip" >&2
fi
# Throwaway servers are stopped on exit, whatever happens.
pg_dir=""
pgvector_dir=""
stop_servers() {
    if [[ -n "$pg_dir" ]]; then scripts/postgres.sh stop "$pg_dir"; fi
    if [[ -n "$pgvector_dir" ]]; then scripts/pgvector.sh stop "$pgvector_dir"; fi
}
trap stop_servers EXIT
# A throwaway Postgres for the Postgres store, worker and CLI tests, unless one is given.
if [[ -z "${FLUJO_TEST_POSTGRES_URL:-}" ]]; then
    pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/flujo-pg.XXXXXX")"
    FLUJO_TEST_POSTGRES_URL="$(scripts/postgres.sh start "$pg_dir")"
    export FLUJO_TEST_POSTGRES_URL
fi
# A second one with pgvector (PostgreSQL 16 from the PyPI package `pgserver`, installed on first use) for the
# pgvector store's tests, unless one is given. In CI (`CI` set) a failure to install or start it fails the
# run; elsewhere (no PyPI at hand) it is reported and the pgvector tests say they skip.
if [[ -z "${FLUJO_TEST_PGVECTOR_URL:-}" ]]; then
    pgvector_dir="$(mktemp -d "${TMPDIR:-/tmp}/flujo-pgvector.XXXXXX")"
    if FLUJO_TEST_PGVECTOR_URL="$(scripts/pgvector.sh start "$pgvector_dir")"; then
        export FLUJO_TEST_PGVECTOR_URL
    elif [[ -n "${CI:-}" ]]; then
        echo "test.sh: cannot start a Postgres with pgvector (scripts/pgvector.sh, see above)" >&2
        exit 1
    else
        echo "test.sh: WARNING: no Postgres with pgvector (scripts/pgvector.sh failed); its tests will skip" >&2
        rm -rf "$pgvector_dir"
        pgvector_dir=""
    fi
fi
cargo test --workspace --all-targets
cargo test --workspace --doc
# The API documentation builds without a warning (broken or private links included).
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --all-features --quiet
# The public API of the `flujo` facade and the crates behind it matches the checked-in listing.
python3 scripts/public_api.py --check
