#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60), one after the other. Not part of CI.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Installs cargo-fuzz if it is missing. Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets it use the
# nightly-only flags libFuzzer builds need. New corpus entries go to fuzz/corpus/TARGET (seeded from
# fuzz/seeds/TARGET), crashes to fuzz/artifacts/TARGET, the log of each run to fuzz/logs/TARGET.log.
# Exits non-zero if any target found something. See fuzz/README.md. FUZZ_TIMEOUT (seconds, default 10) is the
# time one input may take (the slowest known unit takes ~2 s under ASan; a loaded machine needs more);
# FUZZ_RSS_MB (default 2048) the memory limit (ASan's bookkeeping grows over hour-long runs: see fuzz/README.md).
set -uo pipefail

secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(blueprint_load template_render expression_eval resume_input)

cd "$(dirname "$0")/../fuzz" || exit 2
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked || exit 2
export RUSTC_BOOTSTRAP=1

dict_of() {
    case "$1" in
        blueprint_load) echo dicts/blueprint.dict ;;
        template_render) echo dicts/template.dict ;;
        expression_eval) echo dicts/expression.dict ;;
        resume_input) echo dicts/resume_input.dict ;;
    esac
}

cargo fuzz build || exit 2
mkdir -p logs
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== $t: ${secs}s"
    # stdin from /dev/null: a blueprint may name /dev/stdin as an import or prompt file
    cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -timeout="${FUZZ_TIMEOUT:-10}" \
        -dict="$(dict_of "$t")" -print_final_stats=1 </dev/null >"logs/$t.log" 2>&1
    rc=$?
    grep -E 'DONE|stat::number_of_executed_units|stat::peak_rss_mb' "logs/$t.log" | sed 's/^/   /'
    if [ $rc -ne 0 ]; then
        failed+=("$t")
        grep -E 'ERROR: libFuzzer|panicked at|Test unit written' "logs/$t.log" | sed 's/^/   /'
    fi
done

if [ ${#failed[@]} -ne 0 ]; then
    echo "found problems in: ${failed[*]} (see fuzz/logs/, fuzz/artifacts/)"
    exit 1
fi
echo "no crashes, hangs or OOMs"
