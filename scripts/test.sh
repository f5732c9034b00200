#!/usr/bin/env bash
# The project's test command (README and .ci/run call exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets
cargo test --workspace --doc
