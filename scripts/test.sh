#!/usr/bin/env bash
# The project's test command (README and .ci/run call exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets
cargo test --workspace --doc
# The API documentation builds without a warning (broken or private links included).
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --all-features --quiet
# The public API of the `flujo` facade and the crates behind it matches the checked-in listing.
python3 scripts/public_api.py --check
