#!/usr/bin/env bash
# The `flujo serve` benchmark of BENCHMARKS.md ("flujo serve (HTTP API)"): a release `flujo serve` on loopback
# with a fresh SQLite state file, loaded with wrk (Debian package `wrk`).
#
#   scripts/bench_api.sh [ROUNDS] [SECONDS] [CONNECTIONS]     # defaults: 3 rounds, 10 s, 64 connections
#
# Each round starts a new server in a new temporary folder and prints JSON lines:
#   post    `POST /api/runs` of `linear_10` (10 `flujo.builtins.transform` steps, `previous_step + 1`, the shape
#           of shared/bench/gen.py) for SECONDS with CONNECTIONS connections: the POST rate and latency, the
#           runs completed within the window and after the queue drained (from /metrics), completed runs/s;
#   get     `GET /api/runs/{id}` of a completed run for SECONDS with 16 connections: rate, p50/p99;
#   sse     100 subscribers to `/api/runs/{id}/events` of a run whose 40 loop iterations each take ~50 ms
#           (a command skill), from each step record's finish to its delivery (`flujo-bench api_sse`).
# Then one `median` line per measurement over the rounds. Every line carries /proc/loadavg at its end.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
seconds="${2:-10}"
connections="${3:-64}"
command -v wrk >/dev/null || { echo "bench_api.sh: wrk is missing (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p flujo-cli -p flujo-bench
flujo="$PWD/target/release/flujo"
bench="$PWD/target/release/flujo-bench"
lua="$PWD/scripts/bench/api.lua"

server_pid=""
work=""
cleanup() {
    if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    if [[ -n "$work" ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
now() { date +%s.%N; }
# The sum of flujo_runs_finished_total{...status="completed"...} at $base/metrics.
completed() {
    curl -sf "$base/metrics" | awk '/^flujo_runs_finished_total\{/ && /status="completed"/ {s += $NF} END {printf "%d\n", s}'
}
# Runs queued or running now (at most 1 is listed: enough to tell).
live() {
    local q r
    q="$(curl -sf "$base/api/runs?status=queued&limit=1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["runs"]))')"
    r="$(curl -sf "$base/api/runs?status=running&limit=1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["runs"]))')"
    echo $((q + r))
}

write_project() {
    local dir="$1"
    {
        echo 'version: "0.1"'
        echo 'name: linear_10'
        echo 'steps:'
        for i in $(seq 0 9); do
            echo "  - name: s$i"
            echo '    agent: {id: flujo.builtins.transform, params: {expr: "previous_step + 1"}}'
        done
    } >"$dir/linear_10.yaml"
    cat >"$dir/ticks.yaml" <<'YAML'
version: "0.1"
name: ticks
steps:
  - kind: loop
    name: ticks
    loop:
      max_loops: 41
      exit_expression: "previous_step >= 40"
      body:
        - name: tick
          agent: tick
YAML
    cat >"$dir/skills.yaml" <<'YAML'
skills:
  tick:
    description: add one after 50 ms
    command: ["sh", "-c", "read n; sleep 0.05; echo $((n+1))"]
    timeout_s: 10
YAML
}

results="$(mktemp "${TMPDIR:-/tmp}/flujo-bench-api.XXXXXX")"
for round in $(seq 1 "$rounds"); do
    work="$(mktemp -d "${TMPDIR:-/tmp}/flujo-bench-api.XXXXXX")"
    write_project "$work"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    base="http://127.0.0.1:$port"
    (cd "$work" && exec "$flujo" serve --addr "127.0.0.1:$port" --state "sqlite:///$work/state.db" --pipelines "$work" \
        --project "$work") >"$work/serve.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
    curl -sf "$base/healthz" >/dev/null || { cat "$work/serve.log" >&2; exit 1; }

    # 1. Runs started through the API and walked by the server's pool.
    before="$(completed)"
    t0="$(now)"
    post="$(FLUJO_BENCH_BODY='{"pipeline": "linear_10", "input": 0}' \
        wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$lua" "$base/api/runs" | tail -n 1)"
    t1="$(now)"
    in_window="$(( $(completed) - before ))"
    while [[ "$(live)" != 0 ]]; do sleep 0.05; done
    t2="$(now)"
    total="$(( $(completed) - before ))"
    python3 - "$post" "$t0" "$t1" "$t2" "$in_window" "$total" "$connections" "$(loadavg)" >>"$results" <<'PY'
import json, sys
w = json.loads(sys.argv[1]); t0, t1, t2 = map(float, sys.argv[2:5]); in_window, total = int(sys.argv[5]), int(sys.argv[6])
accepted = w["requests"] - w["non_2xx"]
print(json.dumps({"measure": "post", "pipeline": "linear_10", "connections": int(sys.argv[7]),
    "accepted": accepted, "non_2xx": w["non_2xx"], "post_per_s": round(accepted / w["duration_s"], 1),
    "post_p50_ms": w["p50_ms"], "post_p99_ms": w["p99_ms"],
    "completed_in_window": in_window, "completed_per_s_in_window": round(in_window / (t1 - t0), 1),
    "completed": total, "drain_s": round(t2 - t1, 2), "completed_per_s": round(total / (t2 - t0), 1),
    "loadavg": sys.argv[8]}))
PY
    tail -n 1 "$results"

    # 2. One completed run, read again and again.
    run_id="$(curl -sf "$base/api/runs?status=completed&limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs"][0]["run_id"])')"
    get="$(wrk -t2 -c16 -d"${seconds}s" --latency -s "$lua" "$base/api/runs/$run_id" | tail -n 1)"
    python3 -c 'import json,sys; w=json.loads(sys.argv[1]); print(json.dumps({"measure": "get", "connections": 16, "per_s": w["per_s"], "non_2xx": w["non_2xx"], "p50_ms": w["p50_ms"], "p90_ms": w["p90_ms"], "p99_ms": w["p99_ms"], "loadavg": sys.argv[2]}))' \
        "$get" "$(loadavg)" >>"$results"
    tail -n 1 "$results"

    # 3. Fan-out of a running run's events to 100 subscribers.
    sse="$("$bench" api_sse --base "$base" --pipeline ticks --subscribers 100 --input 0)"
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["measure"]="sse"; d["loadavg"]=sys.argv[2]; print(json.dumps(d))' \
        "$sse" "$(loadavg)" >>"$results"
    tail -n 1 "$results"

    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    rm -rf "$work"
    work=""
done
python3 - "$results" <<'PY'
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for m in ("post", "get", "sse"):
    rows = [l for l in lines if l["measure"] == m]
    med = {"measure": m, "median_of": len(rows)}
    for k, v in rows[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("connections", "subscribers"):
            med[k] = statistics.median(r[k] for r in rows)
    med["loadavg"] = [r["loadavg"] for r in rows]
    print(json.dumps({"median": med}))
PY
rm -f "$results"
