#!/usr/bin/env bash
# The project's test command (README and .ci/run call exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
# A throwaway Postgres for the Postgres store, worker and CLI tests, unless one is given.
if [[ -z "${FLUJO_TEST_POSTGRES_URL:-}" ]]; then
    pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/flujo-pg.XXXXXX")"
    trap 'scripts/postgres.sh stop "$pg_dir"' EXIT
    FLUJO_TEST_POSTGRES_URL="$(scripts/postgres.sh start "$pg_dir")"
    export FLUJO_TEST_POSTGRES_URL
fi
cargo test --workspace --all-targets
cargo test --workspace --doc
# The API documentation builds without a warning (broken or private links included).
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --all-features --quiet
# The public API of the `flujo` facade and the crates behind it matches the checked-in listing.
python3 scripts/public_api.py --check
