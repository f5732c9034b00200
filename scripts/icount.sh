#!/usr/bin/env bash
# Instruction counts of the engine's hot paths, compared with the committed baseline
# (crates/flujo-bench/icount.json). Each workload of `flujo-bench icount` (a runner built once, then RUNS
# runs of SIZE units) runs under `valgrind --tool=callgrind` with RUNS and 2×RUNS; the difference divided by
# RUNS × SIZE is the instructions of one unit (a durable step, an iteration, a branch, a paused-and-resumed
# step, a loaded step), free of start-up and of building the runner. Instruction counts do
# not depend on the machine's load, so the check is a regression guard noise cannot fool.
#
#   scripts/icount.sh            # measure and compare; exit 1 when a unit costs more than the baseline + TOLERANCE
#   scripts/icount.sh --update   # measure and write the baseline
#   ICOUNT_TOLERANCE=5 …         # percent (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."

update=0
[[ "${1:-}" == "--update" ]] && update=1
tolerance="${ICOUNT_TOLERANCE:-5}"
baseline=crates/flujo-bench/icount.json

if ! command -v valgrind >/dev/null 2>&1; then
  if [[ "${CI:-}" == "1" ]] && command -v apt-get >/dev/null 2>&1; then
    echo "icount: installing valgrind" >&2
    (apt-get install -y -qq valgrind >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq valgrind >/dev/null 2>&1)) \
      || { echo "icount: cannot install valgrind" >&2; exit 1; }
  else
    echo "icount: valgrind is not installed; skipping the instruction-count check (CI installs it)" >&2
    exit 0
  fi
fi

# The same optimized build the figures come from (the `icount` profile: release with symbols kept, so a
# callgrind profile of a regression can be read).
cargo build --profile icount -p flujo-bench --quiet
bin=target/icount/flujo-bench

# workload:SIZE:RUNS — small enough for valgrind (≈50× slower), large enough for stable differences, and
# under 1000 writes per process even at 2×RUNS, so the SQLite store's background checkpoint (work whose
# amount depends on timing) never starts.
workloads=(linear_none:100:20 linear_sqlite:100:4 loop_sqlite:100:4 parallel_sqlite:20:5 resume_sqlite:50:4 load_yaml:100:8)

# The SQLite writer polls briefly for its next command before it sleeps; under valgrind those polls would
# count instructions that depend on the clock, so it sleeps at once here.
export FLUJO_SQLITE_WRITER_SPIN_US=0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ir_of() { # workload size runs → total instructions
  local out="$tmp/cg.$1.$3"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" icount "$1" "$2" "$3" >/dev/null 2>"$tmp/err" \
    || { cat "$tmp/err" >&2; echo "icount: $1 $2 $3 failed" >&2; exit 1; }
  awk '/^summary:/ {print $2}' "$out"
}

results="{"
sep=""
for w in "${workloads[@]}"; do
  IFS=: read -r name size runs <<<"$w"
  a=$(ir_of "$name" "$size" "$runs")
  b=$(ir_of "$name" "$size" $((2 * runs)))
  per=$(( (b - a) / (runs * size) ))
  echo "icount: $name $per instructions per unit ($runs runs of $size: $a, twice as many: $b)" >&2
  results+="$sep\"$name\": $per"
  sep=", "
done
results+="}"

if [[ $update == 1 ]]; then
  python3 -c "import json,sys; json.dump(json.loads(sys.argv[1]), open(sys.argv[2], 'w'), indent=2, sort_keys=True); open(sys.argv[2], 'a').write('\n')" "$results" "$baseline"
  echo "icount: baseline written to $baseline" >&2
  exit 0
fi

python3 - "$results" "$baseline" "$tolerance" <<'EOF'
import json, sys
now = json.loads(sys.argv[1])
base = json.load(open(sys.argv[2]))
tol = float(sys.argv[3])
bad = []
for name, per in sorted(now.items()):
    if name not in base:
        print(f"icount: {name}: no baseline (run scripts/icount.sh --update)", file=sys.stderr)
        bad.append(name)
        continue
    change = (per - base[name]) / base[name] * 100
    print(f"icount: {name:16} {per:>10} vs baseline {base[name]:>10} ({change:+.1f}%)", file=sys.stderr)
    if change > tol:
        bad.append(name)
if bad:
    print(f"icount: more than {tol}% above the baseline: {', '.join(bad)} (profile with valgrind --tool=callgrind; "
          "after a deliberate change, scripts/icount.sh --update and commit the baseline)", file=sys.stderr)
    sys.exit(1)
EOF
