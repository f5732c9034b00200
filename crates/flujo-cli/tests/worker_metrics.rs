//! `flujo worker --metrics-addr`, with the real binary over a SQLite state: runs enqueued with
//! `flujo run --queue` are walked by the worker, and its `/metrics` shows them finished, the step histograms
//! with one observation per step, one timed append per journal record, the depth of a queue it does not
//! serve and itself as the live worker of its queue. A non-loopback address is refused without
//! `FLUJO_API_TOKEN`, and served behind bearer auth with it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cmd, code, flujo, json_out, stderr};

const PIPELINE: &str = r#"name: counted
steps:
  - name: a
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step + 1"}}
  - name: b
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step + 1"}}
  - name: c
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step + 1"}}
"#;

/// The value of the series `series` (labels as rendered) in a scrape.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn enqueue(dir: &Path, state: &str, queue: &str) -> String {
    let o = flujo(dir, &["run", "p.yaml", "--queue", queue, "--input-json", "1", "--json", "--state", state]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    json_out(&o)["run_id"].as_str().unwrap().to_owned()
}

/// A worker with a metrics endpoint; returns it, the address it printed, and its stderr so far.
fn worker(dir: &Path, state: &str, queue: &str, token: Option<&str>) -> (Child, String, Arc<Mutex<String>>) {
    let mut c = cmd(
        dir,
        &["worker", "--queue", queue, "--state", state, "--poll-ms", "20", "--lease-s", "5", "--metrics-addr"],
    );
    c.arg(if token.is_some() { "0.0.0.0:0" } else { "127.0.0.1:0" });
    match token {
        Some(t) => c.env("FLUJO_API_TOKEN", t),
        None => c.env_remove("FLUJO_API_TOKEN"),
    };
    let mut child = c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("worker: metrics on http://").and_then(|l| l.strip_suffix("/metrics"))
            {
                let _ = tx.send(addr.to_owned());
            }
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("the worker never served metrics: {}", log.lock().unwrap())
    });
    (child, addr, log)
}

fn stop(mut child: Child) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0), "a stopped worker exits 0");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the worker did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_the_metrics_of_its_runs_and_queues() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), PIPELINE).unwrap();
    let state = format!("sqlite:///{}", dir.path().join("state.db").display());
    let runs: Vec<String> = (0..4).map(|_| enqueue(dir.path(), &state, "jobs")).collect();
    for _ in 0..2 {
        enqueue(dir.path(), &state, "later");
    }
    let (child, addr, log) = worker(dir.path(), &state, "jobs", None);
    let client = flujo_http::client_builder().build().unwrap();
    let url = format!("http://{addr}/metrics");
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
        let text = resp.text().await.unwrap();
        if value(&text, r#"flujo_runs_finished_total{pipeline="counted",status="completed"}"#) == Some(4.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "the runs did not finish: {text}\n{}", log.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v = |series: &str| value(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    // A claimed run is a walk that continues a stored run.
    assert_eq!(v(r#"flujo_runs_started_total{pipeline="counted"}"#), 4.0);
    assert_eq!(v(r#"flujo_runs_resumed_total{pipeline="counted"}"#), 4.0);
    assert_eq!(v(r#"flujo_steps_total{kind="step",status="completed"}"#), 12.0);
    assert_eq!(v(r#"flujo_step_duration_seconds_count{kind="step"}"#), 12.0);
    assert_eq!(v(r#"flujo_step_duration_seconds_bucket{kind="step",le="+Inf"}"#), 12.0);
    assert!(v(r#"flujo_step_duration_seconds_sum{kind="step"}"#) > 0.0);
    // One timed append per journal record of the runs the worker walked.
    let store = flujo_store::open_store(&state).unwrap();
    let mut records = 0;
    for run_id in &runs {
        let run = store.get_run(run_id).await.unwrap().unwrap();
        assert_eq!(run.output, Some(serde_json::json!(4)), "run {run_id}");
        records += store.load_journal(run_id).await.unwrap().len();
    }
    assert_eq!(records, 12);
    assert_eq!(v(r#"flujo_store_commit_seconds_count{op="append"}"#), records as f64);
    // The queue it does not serve keeps its runs; its own is drained; it is the one live worker of `jobs`.
    assert_eq!(v(r#"flujo_queue_depth{queue="later"}"#), 2.0);
    assert_eq!(value(&text, r#"flujo_queue_depth{queue="jobs"}"#), None);
    assert_eq!(v(r#"flujo_workers{queue="jobs"}"#), 1.0);
    assert_eq!(value(&text, r#"flujo_workers{queue="later"}"#), None);
    assert_eq!(v("flujo_store_scrape_ok"), 1.0);
    let health = client.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_metrics_address_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let state = format!("sqlite:///{}", dir.path().join("state.db").display());
    let o = cmd(dir.path(), &["worker", "--state", &state, "--metrics-addr", "0.0.0.0:0"])
        .env_remove("FLUJO_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("FLUJO_API_TOKEN"), "{}", stderr(&o));
    let o = cmd(dir.path(), &["worker", "--state", &state, "--metrics-addr", "localhost"]).output().unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--metrics-addr"), "{}", stderr(&o));

    let (child, addr, _log) = worker(dir.path(), &state, "jobs", Some("t0ken"));
    let port = addr.rsplit_once(':').unwrap().1;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let client = flujo_http::client_builder().build().unwrap();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(client.get(&url).bearer_auth("wrong").send().await.unwrap().status(), 401);
    let ok = client.get(&url).bearer_auth("t0ken").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("# TYPE flujo_runs_started_total counter"));
    assert_eq!(client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.unwrap().status(), 200);
    stop(child);
}
