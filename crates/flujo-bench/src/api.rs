//! `api_sse`: fan-out of a run's live events (`GET /api/runs/{id}/events` of `flujo serve`) to many
//! subscribers at once. Starts a run of a pipeline through `POST /api/runs`, opens N event streams to it,
//! reads every stream to its `end` event, then reads the run's journal and, for each step record that
//! finished after all N streams were open, compares each subscriber's receive time of its `step_finished`
//! event with the record's end (`started_at_ms` + `latency_ms`, so ±1 ms; the store commit follows it within a
//! fraction of a millisecond).
//! Prints one JSON line: latency to one subscriber (all pairs) and to all N (per step, the slowest), p50 and
//! p99, the spread between the first and the last subscriber, and how many deliveries were missing.
//!
//! Usage: `flujo-bench api_sse --base http://127.0.0.1:PORT --pipeline NAME [--subscribers 100] [--input JSON]`
//! (scripts/bench_api.sh runs it against a release `flujo serve`).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flujo_http::reqwest;
use futures::StreamExt;
use serde_json::{json, Value};

/// What one subscriber saw: when its stream delivered the first event, and when each record arrived.
#[derive(Debug, Default)]
struct Seen {
    /// Wall-clock ms (fractional) of the first event (`status`): the stream is open from then on.
    open_ms: f64,
    /// `seq` → wall-clock ms of its `step_finished` event.
    finished: HashMap<u64, f64>,
    /// Whether the stream ended with `end`.
    ended: bool,
}

fn wall_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Reads one event stream to its `end` (or until it closes).
async fn subscribe(http: reqwest::Client, url: String) -> Result<Seen, String> {
    let res = http.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    if !res.status().is_success() {
        return Err(format!("GET {url}: {}", res.status()));
    }
    let mut seen = Seen::default();
    let mut buf = String::new();
    let mut body = res.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("reading {url}: {e}"))?;
        let now = wall_ms();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut event, mut id) = ("", None::<u64>);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = if v.trim() == "step_finished" {
                        "step_finished"
                    } else if v.trim() == "end" {
                        "end"
                    } else {
                        "other"
                    };
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                }
            }
            if event.is_empty() {
                continue; // a keep-alive comment
            }
            if seen.open_ms == 0.0 {
                seen.open_ms = now;
            }
            match (event, id) {
                ("step_finished", Some(seq)) => {
                    seen.finished.entry(seq).or_insert(now);
                }
                ("end", _) => {
                    seen.ended = true;
                    return Ok(seen);
                }
                _ => {}
            }
        }
    }
    Ok(seen)
}

/// Runs the measurement; returns the JSON line or why it failed.
pub async fn api_sse(base: &str, pipeline: &str, subscribers: usize, input: Value) -> Result<Value, String> {
    let http = flujo_http::client_builder()
        .pool_max_idle_per_host(subscribers + 8)
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| e.to_string())?;
    let started: Value = http
        .post(format!("{base}/api/runs"))
        .json(&json!({"pipeline": pipeline, "input": input}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let run_id = started["run_id"].as_str().ok_or_else(|| format!("no run id in {started}"))?.to_owned();
    let url = format!("{base}/api/runs/{run_id}/events");
    let tasks: Vec<_> = (0..subscribers).map(|_| tokio::spawn(subscribe(http.clone(), url.clone()))).collect();
    let mut seen = Vec::with_capacity(subscribers);
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(300), t).await {
            Ok(Ok(Ok(s))) => seen.push(s),
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("a subscriber did not finish within 300 s".into()),
        }
    }
    let journal: Value = http
        .get(format!("{base}/api/runs/{run_id}/journal"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let run: Value = http
        .get(format!("{base}/api/runs/{run_id}"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let all_open = seen.iter().map(|s| s.open_ms).fold(0.0, f64::max);
    let records = journal["records"].as_array().cloned().unwrap_or_default();
    let (mut pairs, mut to_all, mut spread) = (Vec::new(), Vec::new(), Vec::new());
    let mut missing = 0usize;
    for r in &records {
        // A record has its start (ms) and its latency (fractional ms): its end is their sum.
        let (Some(seq), Some(began), Some(took)) =
            (r["seq"].as_u64(), r["started_at_ms"].as_f64(), r["latency_ms"].as_f64())
        else {
            continue;
        };
        let done = began + took;
        // Only records that finished once every stream was open (with 1 ms of clock resolution to spare).
        if done < all_open + 1.0 {
            continue;
        }
        let times: Vec<f64> = seen.iter().filter_map(|s| s.finished.get(&seq).copied()).collect();
        missing += subscribers - times.len();
        if times.is_empty() {
            continue;
        }
        let first = times.iter().copied().fold(f64::INFINITY, f64::min);
        let last = times.iter().copied().fold(0.0, f64::max);
        pairs.extend(times.iter().map(|t| t - done));
        to_all.push(last - done);
        spread.push(last - first);
    }
    for v in [&mut pairs, &mut to_all, &mut spread] {
        v.sort_by(f64::total_cmp);
    }
    let round = |x: f64| (x * 100.0).round() / 100.0;
    Ok(json!({
        "workload": "api_sse",
        "pipeline": pipeline,
        "subscribers": subscribers,
        "status": run["status"],
        "records": records.len(),
        "steps_measured": to_all.len(),
        "ended": seen.iter().filter(|s| s.ended).count(),
        "missing_deliveries": missing,
        "p50_one_ms": round(percentile(&pairs, 0.5)),
        "p99_one_ms": round(percentile(&pairs, 0.99)),
        "p50_all_ms": round(percentile(&to_all, 0.5)),
        "p99_all_ms": round(percentile(&to_all, 0.99)),
        "p50_spread_ms": round(percentile(&spread, 0.5)),
        "p99_spread_ms": round(percentile(&spread, 0.99)),
    }))
}

/// `flujo-bench api_sse ARGS`: parses the arguments, runs [`api_sse`], prints its line; false on failure.
pub fn main(args: &[String]) -> bool {
    let (mut base, mut pipeline, mut subscribers, mut input) = (None, None, 100usize, json!(0));
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--base" => base = it.next().cloned(),
            "--pipeline" => pipeline = it.next().cloned(),
            "--subscribers" => subscribers = it.next().and_then(|s| s.parse().ok()).unwrap_or(subscribers),
            "--input" => input = it.next().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(input),
            other => {
                eprintln!("api_sse: unknown argument '{other}'");
                return false;
            }
        }
    }
    let (Some(base), Some(pipeline)) = (base, pipeline) else {
        eprintln!("usage: flujo-bench api_sse --base URL --pipeline NAME [--subscribers N] [--input JSON]");
        return false;
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("api_sse: no runtime: {e}");
            return false;
        }
    };
    match rt.block_on(api_sse(&base, &pipeline, subscribers, input)) {
        Ok(line) => {
            println!("{line}");
            true
        }
        Err(e) => {
            eprintln!("api_sse: {e}");
            false
        }
    }
}
