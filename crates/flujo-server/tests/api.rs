//! The HTTP API of `flujo serve` over real HTTP on 127.0.0.1 and a real SQLite file: runs started, paused,
//! answered and cancelled through the API and walked by the server's pool; every error status with its
//! kind; keyset pages; live events (also for a run walked by another runner on the same file, as another
//! process would); the bearer token; the OpenAPI document.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flujo_core::{Pipeline, RunRecord, SkillCall, SkillOutput, Store, Telemetry};
use flujo_engine::Flujo;
use flujo_http::reqwest;
use flujo_server::{FactoryError, Observers, PipelineDetail, PipelineInfo, RunnerFactory, Server, ServerConfig};
use flujo_skills::Skills;
use flujo_store::{SqliteOptions, SqliteStore};
use serde_json::{json, Value};

const APPROVE: &str = r#"
version: "0.1"
name: approve
steps:
  - name: draft
    agent: {id: flujo.builtins.transform, params: {expr: "'draft: ' ~ previous_step"}}
  - name: review
    kind: hitl
    message: "Approve the draft?"
    input_schema:
      type: object
      properties:
        approved: {type: boolean}
        comment: {type: string}
      required: [approved]
  - name: done
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step"}}
"#;

const QUICK: &str = r#"
version: "0.1"
name: quick
steps:
  - name: one
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step ~ '!'"}}
"#;

/// Ten steps (from input 0) that each take ~30 ms (a skill that sleeps and adds one), so a subscriber sees
/// the run while it runs.
const SLOW: &str = r#"
version: "0.1"
name: slow
steps:
  - name: work
    kind: loop
    loop:
      max_loops: 20
      exit_expression: "previous_step >= 10"
      body:
        - name: tick
          agent: {id: test.sleepy}
"#;

fn skills() -> Arc<Skills> {
    let mut s = Skills::new();
    s.register_fn("test.sleepy", false, |call: SkillCall| async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        Ok(SkillOutput::value(json!(call.input.as_i64().unwrap_or(0) + 1)))
    });
    Arc::new(s)
}

fn load(yaml: &str) -> Pipeline {
    let reg = skills();
    let opts = flujo_blueprint::LoadOptions { registry: Some(reg.as_ref()), ..Default::default() };
    flujo_blueprint::load_str(yaml, std::path::Path::new("test.yaml"), &opts).expect("blueprint loads").pipeline
}

/// Runners for the test pipelines, with the server's store and telemetry.
struct TestFactory {
    pipelines: BTreeMap<String, (Pipeline, &'static str)>,
    store: Arc<dyn Store>,
    telemetry: Arc<dyn Telemetry>,
    built: Mutex<BTreeMap<String, Arc<Flujo>>>,
}

impl TestFactory {
    fn build(&self, pipeline: Pipeline) -> Result<Arc<Flujo>, FactoryError> {
        Flujo::builder(pipeline)
            .store(self.store.clone())
            .skills(skills())
            .telemetry(self.telemetry.clone())
            .build()
            .map(Arc::new)
            .map_err(|e| FactoryError::new("config_error", e.to_string()))
    }
}

impl RunnerFactory for TestFactory {
    fn pipelines(&self) -> Vec<PipelineInfo> {
        self.pipelines.keys().filter_map(|n| self.pipeline(n).map(|d| d.info)).collect()
    }
    fn pipeline(&self, name: &str) -> Option<PipelineDetail> {
        let (p, src) = self.pipelines.get(name)?;
        Some(PipelineDetail {
            info: PipelineInfo {
                name: name.to_owned(),
                file: format!("{name}.yaml"),
                steps: p.steps.len(),
                description: None,
            },
            source: (*src).to_owned(),
            mermaid: String::new(),
            tree: json!([]),
        })
    }
    fn runner(&self, name: &str) -> Result<Arc<Flujo>, FactoryError> {
        if let Some(f) = self.built.lock().unwrap().get(name) {
            return Ok(f.clone());
        }
        let (p, _) = self
            .pipelines
            .get(name)
            .ok_or_else(|| FactoryError::new("pipeline_not_found", format!("no pipeline named '{name}'")))?;
        let f = self.build(p.clone())?;
        self.built.lock().unwrap().insert(name.to_owned(), f.clone());
        Ok(f)
    }
    fn runner_for(&self, run: &RunRecord) -> Result<Arc<Flujo>, FactoryError> {
        let def = run.definition.clone().ok_or_else(|| FactoryError::new("no_definition", "none"))?;
        let p = flujo_engine::pipeline_from_definition(&def)
            .map_err(|e| FactoryError::new("bad_definition", e.to_string()))?;
        self.build(p)
    }
    fn validate(&self, yaml: &str) -> Value {
        let reg = skills();
        let opts = flujo_blueprint::LoadOptions { registry: Some(reg.as_ref()), ..Default::default() };
        flujo_blueprint::render_json(&flujo_blueprint::validate_str(yaml, std::path::Path::new("request.yaml"), &opts))
    }
}

struct TestServer {
    base: String,
    http: reqwest::Client,
    db: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start(config: ServerConfig) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db, SqliteOptions::default()).unwrap());
        let observers = Observers::with_poll(store, Duration::from_millis(50));
        let mut pipelines = BTreeMap::new();
        for src in [APPROVE, QUICK, SLOW] {
            let p = load(src);
            pipelines.insert(p.name.clone(), (p, src));
        }
        let factory = Arc::new(TestFactory {
            pipelines,
            store: observers.store.clone(),
            telemetry: observers.telemetry.clone(),
            built: Mutex::default(),
        });
        let server = Server::new(observers, factory, config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        let http = flujo_http::client_builder().build().unwrap();
        TestServer { base, http, db, stop: Some(tx), task: Some(task), _dir: dir }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.base)).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls the run until its status is `want` (10 s at most).
    async fn wait_status(&self, run_id: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (code, run) = self.get(&format!("/api/runs/{run_id}")).await;
            if code == 200 && run["status"] == want {
                return run;
            }
            assert!(Instant::now() < deadline, "run {run_id} never became {want}: {run}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

fn kind(body: &Value) -> &str {
    body["error"]["kind"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_pauses_is_answered_through_the_api_and_completes() {
    let s = TestServer::start(ServerConfig::default()).await;
    let (code, accepted) = s
        .post(
            "/api/runs",
            &json!({"pipeline": "approve", "input": "hello", "run_id": "r-1",
            "context": {"api_token": "tok-123", "user": "ann"}}),
        )
        .await;
    assert_eq!(
        (code, accepted["status"].as_str(), accepted["queue"].as_str()),
        (202, Some("running"), Some("default"))
    );
    let paused = s.wait_status("r-1", "paused").await;
    assert_eq!(paused["pending"][0]["pause_id"], "1");
    assert_eq!(paused["step_history"][0]["output"], "draft: hello");
    assert_eq!(paused["context"]["user"], "ann");
    assert!(!paused.to_string().contains("tok-123"), "a secret-named context value never leaves the server: {paused}");

    let (code, inbox) = s.get("/api/approvals").await;
    assert_eq!(code, 200);
    let mine: Vec<&Value> = inbox["approvals"].as_array().unwrap().iter().filter(|a| a["run_id"] == "r-1").collect();
    assert_eq!(mine.len(), 1, "{inbox}");
    assert_eq!(mine[0]["message"], "Approve the draft?");
    assert_eq!(mine[0]["input_schema"]["required"], json!(["approved"]));

    let (code, err) = s.post("/api/runs/r-1/resume", &json!({"pause_id": "1", "answer": {"approved": "yes"}})).await;
    assert_eq!((code, kind(&err)), (422, "invalid_answer"), "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("/approved"), "{err}");
    let (code, err) = s.post("/api/runs/r-1/resume", &json!({"pause_id": "7", "answer": {"approved": true}})).await;
    assert_eq!((code, kind(&err)), (409, "unknown_pause"), "{err}");
    let (code, err) = s.post("/api/runs/r-1/resume", &json!({"answer": {"approved": true}, "extra": 1})).await;
    assert_eq!((code, kind(&err)), (400, "bad_request"), "{err}");

    let (code, ok) = s.post("/api/runs/r-1/resume", &json!({"answer": {"approved": true, "comment": "fine"}})).await;
    assert_eq!(code, 202, "{ok}");
    let done = s.wait_status("r-1", "completed").await;
    assert_eq!(done["output"], json!({"approved": true, "comment": "fine"}));
    assert_eq!(done["step_history"].as_array().unwrap().len(), 3);
    assert_eq!(done["context"]["steps"]["draft"], "draft: hello");
    assert_eq!((done["input"].as_str(), done["journal_len"].as_u64()), (Some("hello"), Some(3)));

    let (code, err) = s.post("/api/runs/r-1/resume", &json!({"pause_id": "1", "answer": {"approved": false}})).await;
    assert_eq!((code, kind(&err)), (409, "already_answered"), "{err}");
    let (code, verify) = s.get("/api/runs/r-1/verify").await;
    assert_eq!((code, verify["ok"].as_bool(), verify["records"].as_u64()), (200, Some(true), Some(3)), "{verify}");
    let (code, journal) = s.get("/api/runs/r-1/journal").await;
    let paths: Vec<&str> = journal["records"].as_array().unwrap().iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!((code, paths), (200, vec!["0", "1", "2"]));
    let (_, inbox) = s.get("/api/approvals").await;
    assert!(inbox["approvals"].as_array().unwrap().iter().all(|a| a["run_id"] != "r-1"), "{inbox}");
    // The pool is registered like a worker of its queue.
    let (_, metrics) = s.get_text("/metrics").await;
    assert!(metrics.contains("flujo_workers{queue=\"default\"} 1"), "{metrics}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_has_its_status_and_kind() {
    let mut config = ServerConfig::default();
    config.limits.max_body_bytes = 4096;
    let s = TestServer::start(config).await;
    let (code, err) = s.get("/api/runs/nope").await;
    assert_eq!((code, kind(&err)), (404, "run_not_found"));
    for path in ["/api/runs/nope/journal", "/api/runs/nope/verify", "/api/runs/nope/events"] {
        let (code, err) = s.get(path).await;
        assert_eq!((code, kind(&err)), (404, "run_not_found"), "{path}: {err}");
    }
    let (code, err) = s.post("/api/runs/nope/resume", &json!({"answer": 1})).await;
    assert_eq!((code, kind(&err)), (404, "run_not_found"));
    let (code, err) = s.post("/api/runs/nope/cancel", &json!({})).await;
    assert_eq!((code, kind(&err)), (404, "run_not_found"));
    let (code, err) = s.post("/api/runs", &json!({"pipeline": "nope"})).await;
    assert_eq!((code, kind(&err)), (404, "pipeline_not_found"));
    let (code, err) = s.get("/api/pipelines/nope").await;
    assert_eq!((code, kind(&err)), (404, "pipeline_not_found"));
    let (code, err) = s.get("/api/nothing/here").await;
    assert_eq!((code, kind(&err)), (404, "not_found"));

    let r = s
        .http
        .post(format!("{}/api/runs", s.base))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(kind(&r.json().await.unwrap()), "bad_request");
    let r = s.http.post(format!("{}/api/runs", s.base)).body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400, "no content type");
    let (code, err) = s.post("/api/runs", &json!({"pipeline": "quick", "bogus": true})).await;
    assert_eq!((code, kind(&err)), (400, "bad_request"), "unknown fields are refused: {err}");
    let (code, err) = s.post("/api/runs", &json!({"pipeline": "quick", "input": "x".repeat(5000)})).await;
    assert_eq!((code, kind(&err)), (413, "payload_too_large"), "{err}");
    let (code, err) = s.post("/api/runs", &json!({"pipeline": "quick", "run_id": "bad id/with slash"})).await;
    assert_eq!((code, kind(&err)), (400, "invalid_run_id"), "{err}");
    let (code, _) = s.post("/api/runs", &json!({"pipeline": "quick", "run_id": "twice"})).await;
    assert_eq!(code, 202);
    let (code, err) = s.post("/api/runs", &json!({"pipeline": "quick", "run_id": "twice"})).await;
    assert_eq!((code, kind(&err)), (409, "run_exists"), "{err}");
    let (code, err) = s.get("/api/runs?status=sleeping").await;
    assert_eq!((code, kind(&err)), (400, "bad_request"), "{err}");
    let (code, err) = s.get("/api/runs?cursor=garbage").await;
    assert_eq!((code, kind(&err)), (400, "bad_request"), "{err}");
    let (code, _) = s.get("/api/runs?limit=abc").await;
    assert_eq!(code, 400);

    let done = s.wait_status("twice", "completed").await;
    assert_eq!(done["output"], "!");
    let (code, err) = s.post("/api/runs/twice/resume", &json!({"answer": 1})).await;
    assert_eq!((code, kind(&err)), (409, "not_paused"), "{err}");
    let (code, err) = s.post("/api/runs/twice/cancel", &json!({})).await;
    assert_eq!((code, kind(&err)), (409, "not_cancellable"), "{err}");

    let (code, v) =
        s.post("/api/validate", &json!({"yaml": "version: '0.1'\nsteps:\n  - name: a\n    kind: nope\n"})).await;
    assert_eq!((code, v["ok"].as_bool()), (200, Some(false)), "{v}");
    let (code, v) = s.post("/api/validate", &json!({"yaml": QUICK})).await;
    assert_eq!((code, v["ok"].as_bool()), (200, Some(true)), "{v}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_list_in_keyset_pages_with_filters() {
    let s = TestServer::start(ServerConfig::default()).await;
    for i in 0..7 {
        let (code, _) = s
            .post("/api/runs", &json!({"pipeline": "quick", "input": format!("{i}"), "run_id": format!("q-{i}")}))
            .await;
        assert_eq!(code, 202);
    }
    s.post("/api/runs", &json!({"pipeline": "approve", "run_id": "a-1"})).await;
    for i in 0..7 {
        s.wait_status(&format!("q-{i}"), "completed").await;
    }
    s.wait_status("a-1", "paused").await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let (code, page) = s.get(&format!("/api/runs?limit=3&cursor={cursor}")).await;
        assert_eq!(code, 200, "{page}");
        let runs = page["runs"].as_array().unwrap();
        assert!(runs.len() <= 3);
        seen.extend(runs.iter().map(|r| r["run_id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (8, 8), "every run exactly once: {seen:?}");
    let (_, completed) = s.get("/api/runs?status=completed&pipeline=quick").await;
    assert_eq!(completed["runs"].as_array().unwrap().len(), 7);
    assert!(completed["runs"].as_array().unwrap().iter().all(|r| r["duration_ms"].is_number()));
    let (_, paused) = s.get("/api/runs?status=paused").await;
    assert_eq!(paused["runs"][0]["run_id"], "a-1");
    assert_eq!(paused["runs"][0]["pending"], 1);
    let (_, none) = s.get("/api/runs?since=99999999999999").await;
    assert_eq!(none["runs"], json!([]));
    s.stop().await;
}

/// Reads server-sent events until `end` (or the deadline): `(event, data, id)` triples.
async fn read_events(http: &reqwest::Client, url: &str) -> Vec<(String, Value, Option<String>)> {
    let mut resp = http.get(url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await.expect("events keep coming");
        let Some(chunk) = chunk.unwrap() else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find("\n\n") {
            let block: String = buf.drain(..i + 2).collect();
            let (mut ev, mut data, mut id) = (String::new(), String::new(), None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    ev = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                }
            }
            if ev.is_empty() {
                continue;
            }
            let end = ev == "end";
            out.push((ev, serde_json::from_str(&data).unwrap_or(Value::Null), id));
            if end {
                return out;
            }
        }
    }
    out
}

fn finished_paths(events: &[(String, Value, Option<String>)]) -> Vec<String> {
    events
        .iter()
        .filter(|(e, _, _)| e == "step_finished")
        .map(|(_, d, _)| d["path"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_reach_every_subscriber_once_and_in_order() {
    let s = TestServer::start(ServerConfig::default()).await;
    let (code, _) = s.post("/api/runs", &json!({"pipeline": "slow", "input": 0, "run_id": "s-1"})).await;
    assert_eq!(code, 202);
    s.wait_status("s-1", "running").await;
    let url = format!("{}/api/runs/s-1/events?after_seq=0", s.base);
    let subs: Vec<_> = (0..5).map(|_| tokio::spawn(read_events_owned(s.http.clone(), url.clone()))).collect();
    let mut all = Vec::new();
    for h in subs {
        all.push(h.await.unwrap());
    }
    let expected: Vec<String> = (0..10).map(|i| format!("0/loop:{i}/0")).chain(["0".to_owned()]).collect();
    for events in &all {
        assert_eq!(events.first().map(|e| e.0.as_str()), Some("status"));
        assert_eq!(events.last().map(|e| (e.0.as_str(), e.1["status"].as_str())), Some(("end", Some("completed"))));
        // after_seq=0: the first record is known to the client; every later one arrives once, in order.
        let paths = finished_paths(events);
        assert_eq!(paths, expected[1..].to_vec(), "{events:?}");
        let ids: Vec<u64> = events.iter().filter_map(|e| e.2.as_ref()).map(|i| i.parse().unwrap()).collect();
        assert_eq!(ids, (1..=10).collect::<Vec<u64>>());
    }
    // A finished run: its status, then `end` at once.
    let events = read_events(&s.http, &format!("{}/api/runs/s-1/events", s.base)).await;
    let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, vec!["status", "end"]);
    s.stop().await;
}

async fn read_events_owned(http: reqwest::Client, url: String) -> Vec<(String, Value, Option<String>)> {
    read_events(&http, &url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_run_walked_by_another_process_on_the_same_store() {
    let s = TestServer::start(ServerConfig::default()).await;
    // Another "process": its own store over the same file, its own runner; the server only reads.
    let other: Arc<dyn Store> = Arc::new(SqliteStore::open(&s.db, SqliteOptions::default()).unwrap());
    let flujo = Flujo::builder(load(SLOW)).store(other).skills(skills()).build().unwrap();
    let handle = flujo.start_with(flujo_engine::RunOptions::new(json!(0)).run_id("ext-1".to_owned()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.get("/api/runs/ext-1").await.0 != 200 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let events = read_events(&s.http, &format!("{}/api/runs/ext-1/events?after_seq=0", s.base)).await;
    let result = handle.await.unwrap();
    assert_eq!(result.status, flujo_core::RunStatus::Completed);
    let paths = finished_paths(&events);
    let expected: Vec<String> = (1..10).map(|i| format!("0/loop:{i}/0")).chain(["0".to_owned()]).collect();
    assert_eq!(paths, expected, "{events:?}");
    assert_eq!(events.last().map(|e| e.1["status"].as_str()), Some(Some("completed")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_run_and_a_paused_one() {
    let s = TestServer::start(ServerConfig::default()).await;
    s.post("/api/runs", &json!({"pipeline": "slow", "run_id": "c-1"})).await;
    s.wait_status("c-1", "running").await;
    let (code, v) = s.post("/api/runs/c-1/cancel", &json!({})).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("cancelled")), "{v}");
    let run = s.wait_status("c-1", "cancelled").await;
    assert_eq!(run["error"]["kind"], "cancelled");
    let (_, journal) = s.get("/api/runs/c-1/journal").await;
    let len = journal["records"].as_array().unwrap().len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, journal) = s.get("/api/runs/c-1/journal").await;
    assert_eq!(journal["records"].as_array().unwrap().len(), len, "nothing commits after the cancellation");
    assert!(len < 11, "the loop did not finish: {len}");
    let (_, verify) = s.get("/api/runs/c-1/verify").await;
    assert_eq!(verify["ok"], true, "{verify}");

    s.post("/api/runs", &json!({"pipeline": "approve", "run_id": "c-2"})).await;
    s.wait_status("c-2", "paused").await;
    let (code, _) = s.post("/api/runs/c-2/cancel", &json!({})).await;
    assert_eq!(code, 200);
    let (code, err) = s.post("/api/runs/c-2/resume", &json!({"answer": {"approved": true}})).await;
    assert_eq!((code, kind(&err)), (409, "not_paused"), "{err}");
    let (code, err) = s.post("/api/runs/c-2/cancel", &json!({})).await;
    assert_eq!((code, kind(&err)), (409, "not_cancellable"));
    let (_, metrics) = s.get_text("/metrics").await;
    assert!(metrics.contains("flujo_runs_finished_total{pipeline=\"approve\",status=\"cancelled\"} 1"), "{metrics}");
    s.stop().await;
}

impl TestServer {
    async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route_but_healthz_and_the_ui_files() {
    let config = ServerConfig { token: Some("s3cret-token".to_owned()), ..ServerConfig::default() };
    let s = TestServer::start(config).await;
    assert_eq!(s.get("/healthz").await.0, 200);
    assert_eq!(s.get_text("/").await.0, 200);
    for path in ["/api/runs", "/api/approvals", "/api/pipelines", "/api/openapi.json", "/metrics", "/api/runs/x/events"]
    {
        let (code, body) = s.get_text(path).await;
        assert_eq!(code, 401, "{path}");
        assert!(!body.contains("s3cret"), "the token is never echoed");
        let r = s.http.get(format!("{}{path}", s.base)).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} with a wrong token");
    }
    let r = s.http.get(format!("{}/api/runs", s.base)).bearer_auth("s3cret-token").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = s
        .http
        .post(format!("{}/api/runs", s.base))
        .bearer_auth("s3cret-token")
        .json(&json!({"pipeline": "quick", "run_id": "t-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // EventSource cannot send headers: the event stream alone takes ?token=.
    let r = s.http.get(format!("{}/api/runs/t-1/events?token=s3cret-token", s.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = s.http.get(format!("{}/api/runs?token=s3cret-token", s.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "?token= works only for event streams");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_with_its_errors() {
    let s = TestServer::start(ServerConfig::default()).await;
    let (code, doc) = s.get("/api/openapi.json").await;
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/api/runs", "post"),
        ("/api/runs", "get"),
        ("/api/runs/{id}", "get"),
        ("/api/runs/{id}/journal", "get"),
        ("/api/runs/{id}/verify", "get"),
        ("/api/runs/{id}/events", "get"),
        ("/api/runs/{id}/resume", "post"),
        ("/api/runs/{id}/cancel", "post"),
        ("/api/approvals", "get"),
        ("/api/pipelines", "get"),
        ("/api/pipelines/{name}", "get"),
        ("/api/validate", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing");
    }
    let resume = &doc["paths"]["/api/runs/{id}/resume"]["post"]["responses"];
    for code in ["202", "400", "404", "409", "413", "422"] {
        assert!(resume[code].is_object(), "resume documents {code}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    s.stop().await;
}

#[test]
fn beyond_loopback_a_token_is_required() {
    let lo: std::net::SocketAddr = "127.0.0.1:8088".parse().unwrap();
    let any: std::net::SocketAddr = "0.0.0.0:8088".parse().unwrap();
    let v6: std::net::SocketAddr = "[::1]:8088".parse().unwrap();
    assert!(flujo_server::check_bind(&lo, None).is_ok());
    assert!(flujo_server::check_bind(&v6, None).is_ok());
    let err = flujo_server::check_bind(&any, None).unwrap_err();
    assert!(err.contains("FLUJO_API_TOKEN"), "{err}");
    assert!(flujo_server::check_bind(&any, Some("")).is_err());
    assert!(flujo_server::check_bind(&any, Some("t")).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_start_at_once_while_slots_are_free_then_wait_in_the_queue() {
    let mut config = ServerConfig::default();
    config.pool.concurrency = 1;
    config.pool.poll = Duration::from_millis(50);
    let s = TestServer::start(config).await;
    let (code, first) = s.post("/api/runs", &json!({"pipeline": "slow", "input": 0, "run_id": "p-1"})).await;
    assert_eq!((code, first["status"].as_str()), (202, Some("running")), "{first}");
    let (code, second) = s.post("/api/runs", &json!({"pipeline": "quick", "input": "x", "run_id": "p-2"})).await;
    assert_eq!((code, second["status"].as_str()), (202, Some("queued")), "the only slot is taken: {second}");
    let (_, now) = s.get("/api/runs/p-2").await;
    assert_eq!(now["status"], "queued", "it waits while the slot is busy");
    assert_eq!(s.wait_status("p-1", "completed").await["output"], 10);
    assert_eq!(s.wait_status("p-2", "completed").await["output"], "x!");
    s.stop().await;

    // Without a pool, runs wait for workers of their queue.
    let mut config = ServerConfig::default();
    config.pool.concurrency = 0;
    let s = TestServer::start(config).await;
    let (code, v) = s.post("/api/runs", &json!({"pipeline": "quick", "run_id": "w-1"})).await;
    assert_eq!((code, v["status"].as_str()), (202, Some("queued")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.get("/api/runs/w-1").await.1["status"], "queued");
    s.stop().await;
}
