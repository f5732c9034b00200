#!/usr/bin/env bash
# The main job: build `flujo`, scaffold a project with `flujo init`, run its pipeline (a loop, a conditional,
# a parallel step with a command skill, and a human approval) with the default durable SQLite store, then
# answer the approval from a new process: the run resumes by replaying its journal. Offline.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p flujo-cli --quiet
FLUJO="${CARGO_TARGET_DIR:-$PWD/target}/release/flujo"
DEMO="${CARGO_TARGET_DIR:-$PWD/target}/demo"
rm -rf "$DEMO" && mkdir -p "$DEMO" && cd "$DEMO"
RUN_ID="demo-$(date +%s)"

echo "== flujo init"
"$FLUJO" init

echo; echo "== flujo run --input-json 0   (pauses for a human: exit code 5)"
set +e
"$FLUJO" run --input-json 0 --run-id "$RUN_ID" --live
code=$?
set -e
if [ "$code" -ne 5 ]; then echo "expected exit code 5 (paused), got $code" >&2; exit 1; fi

echo; echo "== flujo resume $RUN_ID -i yes   (a new process; the journal is replayed)"
"$FLUJO" resume "$RUN_ID" -i yes --live

if "$FLUJO" lens --help >/dev/null 2>&1; then
  echo; echo "== flujo lens verify $RUN_ID"
  "$FLUJO" lens verify "$RUN_ID"
fi
echo; echo "project left in $DEMO (state in .flujo/state.db)"
