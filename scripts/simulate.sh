#!/usr/bin/env bash
# Deterministic simulation testing, long run: fresh seeds for HOURS hours (default 1) on the memory and SQLite
# stores, on every core. Each seed is a random pipeline run over a store that injects faults and crashes;
# a seed that breaks an invariant is printed with its replay command and appended to
# crates/flujo-sim/regressions.txt, which the test command replays from then on.
#
#   scripts/simulate.sh            # one hour
#   scripts/simulate.sh 0.1        # six minutes
#   scripts/simulate.sh 8 --backend memory --start 42
set -euo pipefail
cd "$(dirname "$0")/.."
hours="${1:-1}"
shift || true
cargo build --release -p flujo-sim --bin flujo-sim --quiet
exec target/release/flujo-sim --hours "$hours" --regressions crates/flujo-sim/regressions.txt "$@"
