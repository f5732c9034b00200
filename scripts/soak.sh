#!/usr/bin/env sh
# Soak test of the crash harness: kills `flujo run` with SIGKILL at random moments and resumes each run from a
# new process, for MINUTES minutes, checking outputs, the hash chain and exactly-once of committed steps.
#   ./scripts/soak.sh MINUTES [SEED]
# The seed is printed at the start; pass it back to reproduce a failure.
set -eu
minutes="${1:?usage: scripts/soak.sh MINUTES [SEED]}"
cd "$(dirname "$0")/.."
if [ -n "${2:-}" ]; then
    export FLUJO_CRASH_SEED="$2"
fi
FLUJO_CRASH_MINUTES="$minutes" exec cargo test --release -p flujo-cli --test crash sigkill_at_random_points_then_resume -- --nocapture
