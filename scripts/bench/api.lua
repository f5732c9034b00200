-- wrk script of scripts/bench_api.sh. With FLUJO_BENCH_BODY set, every request is a POST of that JSON body
-- (`POST /api/runs`); otherwise the URL is fetched with GET. At the end it prints one JSON line: requests,
-- non-2xx answers, socket errors, the rate and latency percentiles in ms (wrk's own, from all threads).
local body = os.getenv("FLUJO_BENCH_BODY")
if body ~= nil and body ~= "" then
    wrk.method = "POST"
    wrk.body = body
    wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
    local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
    io.write(string.format(
        '{"requests": %d, "non_2xx": %d, "socket_errors": %d, "duration_s": %.3f, "per_s": %.1f, ' ..
        '"p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}\n',
        summary.requests, summary.errors.status, errors, summary.duration / 1e6,
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
        latency.max / 1000))
end
