//! `TaskClient` against a MemoryStore and a SQLite file: views of runs, prefix resolution, resume from the
//! stored definition, replay (no agent called), hash-chain verification, pruning and system state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::sync::Arc;

use flujo_core::journal::GENESIS_HASH;
use flujo_core::ClaimRequest;
use flujo_core::*;
use flujo_engine::{ClientError, Flujo, ResumeRequest, RunOptions, TaskClient};
use flujo_skills::BuiltinRegistry;
use flujo_store::{MemoryStore, SqliteOptions, SqliteStore};
use harness::{hitl, looped, tf};
use serde_json::json;
use tempfile::TempDir;

/// A store to test against; the temporary directory (if any) lives as long as the store is used.
struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    _dir: Option<TempDir>,
}

fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("state.db"), SqliteOptions::default()).unwrap();
    vec![
        Backend { name: "memory", store: Arc::new(MemoryStore::new()), _dir: None },
        Backend { name: "sqlite", store: Arc::new(sqlite), _dir: Some(dir) },
    ]
}

fn builtins() -> Arc<dyn SkillRegistry> {
    Arc::new(BuiltinRegistry::new())
}

fn approval() -> Pipeline {
    Pipeline::new(
        "approval",
        vec![
            tf("inc", "previous_step + 1"),
            hitl("approve", Some(json!({"enum": ["yes", "no"]}))),
            tf("done", "previous_step ~ '!'"),
        ],
    )
}

fn counting_loop() -> Pipeline {
    Pipeline::new(
        "looping",
        vec![
            tf("start", "previous_step + 1"),
            looped("loop", vec![tf("inc", "previous_step + 1")], 5, Some("previous_step >= 4")),
            tf("twice", "previous_step * 2"),
        ],
    )
}

async fn run(store: &Arc<dyn Store>, pipeline: Pipeline, run_id: &str, input: Value) -> RunResult {
    Flujo::builder(pipeline)
        .store(Arc::clone(store))
        .build()
        .unwrap()
        .run_with(RunOptions::new(input).run_id(run_id.to_owned()))
        .await
        .unwrap()
}

/// Copies a run into `to`, passing every record through `edit` first (and resealing the chain if asked).
async fn copy_run(
    from: &Arc<dyn Store>,
    to: &Arc<dyn Store>,
    run_id: &str,
    reseal: bool,
    edit: impl Fn(&mut JournalRecord),
) {
    to.create_run(&from.get_run(run_id).await.unwrap().unwrap()).await.unwrap();
    let mut prev = GENESIS_HASH.to_owned();
    for mut r in from.load_journal(run_id).await.unwrap() {
        edit(&mut r);
        if reseal {
            r.seal(&prev);
        }
        prev.clone_from(&r.hash);
        to.append(&r).await.unwrap();
    }
}

#[tokio::test]
async fn views_of_a_paused_run_and_resume_from_the_stored_definition() {
    for b in backends() {
        let paused = run(&b.store, approval(), "run-approval", json!(1)).await;
        assert_eq!(paused.status, RunStatus::Paused, "{}", b.name);
        let client = TaskClient::new(Arc::clone(&b.store), builtins());

        let view = client.get_run("run-approval").await.unwrap().unwrap();
        assert_eq!(view.status, RunStatus::Paused);
        assert_eq!((view.pipeline_name.as_str(), view.journal_len), ("approval", 1), "{}", b.name);
        assert_eq!(view.pending.len(), 1);
        assert_eq!(view.pending[0].pause_id, "1");
        assert!(view.pending[0].message.contains("approve"), "{:?}", view.pending[0]);
        assert_eq!(view.pending[0].input_schema, Some(json!({"enum": ["yes", "no"]})));
        assert_eq!(view.input, json!(1));
        let listed = client.list_runs(&RunFilter::default()).await.unwrap();
        assert_eq!(listed, vec![view]);

        let bad = client.resume("run-approval", ResumeRequest::answer(json!("maybe"))).await;
        let err = bad.unwrap_err();
        assert_eq!(err.kind(), "invalid_resume_input", "{}: {err}", b.name);

        let done = client.resume("run-approval", ResumeRequest::answer(json!("yes"))).await;
        let done = done.unwrap();
        assert_eq!(done.status, RunStatus::Completed, "{}", b.name);
        assert_eq!(done.output, Some(json!("yes!")));
        let view = client.get_run("run-approval").await.unwrap().unwrap();
        assert_eq!((view.status, view.journal_len, view.pending.len()), (RunStatus::Completed, 3, 0));
        assert_eq!(view.output, Some(json!("yes!")));
        assert!(client.verify("run-approval").await.unwrap().is_ok());
    }
}

#[tokio::test]
async fn prefixes_resolve_exactly_uniquely_or_not_at_all() {
    for b in backends() {
        for id in ["ab", "abc-1", "abc-2", "abd-1"] {
            run(&b.store, counting_loop(), id, json!(0)).await;
        }
        let client = TaskClient::new(Arc::clone(&b.store), builtins());
        assert_eq!(client.resolve_prefix("abd").await.unwrap(), "abd-1", "{}", b.name);
        assert_eq!(client.resolve_prefix("abc-2").await.unwrap(), "abc-2");
        assert_eq!(client.resolve_prefix("ab").await.unwrap(), "ab", "an exact id wins over longer ids");
        match client.resolve_prefix("abc").await.unwrap_err() {
            ClientError::AmbiguousPrefix { prefix, candidates, more } => {
                assert_eq!((prefix.as_str(), more), ("abc", false));
                assert_eq!(candidates, vec!["abc-1".to_owned(), "abc-2".to_owned()]);
            }
            other => panic!("{}: expected AmbiguousPrefix, got {other:?}", b.name),
        }
        let err = client.resolve_prefix("abc").await.unwrap_err();
        assert_eq!(err.kind(), "ambiguous_run_id");
        assert!(err.to_string().contains("abc-1, abc-2"), "{err}");
        assert_eq!(client.resolve_prefix("zz").await.unwrap_err(), ClientError::RunNotFound("zz".to_owned()));
        assert_eq!(client.resolve_prefix("").await.unwrap_err().kind(), "run_not_found");
    }
}

#[tokio::test]
async fn many_candidates_are_capped() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    for i in 0..15 {
        run(&store, counting_loop(), &format!("r{i:02}"), json!(0)).await;
    }
    let client = TaskClient::new(store, builtins());
    let ClientError::AmbiguousPrefix { candidates, more, .. } = client.resolve_prefix("r").await.unwrap_err() else {
        panic!("ambiguous")
    };
    assert_eq!((candidates.len(), more), (flujo_engine::client::MAX_PREFIX_CANDIDATES, true));
    assert_eq!(candidates[0], "r00");
}

#[tokio::test]
async fn a_completed_run_replays_and_verifies() {
    for b in backends() {
        let done = run(&b.store, counting_loop(), "run-loop", json!(0)).await;
        assert_eq!(done.output, Some(json!(8)));
        let client = TaskClient::new(Arc::clone(&b.store), builtins());
        let replay = client.replay("run-loop").await.unwrap();
        assert!(replay.matches, "{}: {:?}", b.name, replay.mismatch);
        assert_eq!(replay.recorded_status, RunStatus::Completed);
        assert_eq!(replay.result.unwrap().output, Some(json!(8)));

        let journal = b.store.load_journal("run-loop").await.unwrap();
        let report = client.verify("run-loop").await.unwrap();
        assert!(report.is_ok(), "{:?}", report.broken);
        assert_eq!(report.records, journal.len());
        assert_eq!(report.last_hash.as_deref(), Some(journal.last().unwrap().hash.as_str()));
        assert_eq!(client.journal("run-loop").await.unwrap(), journal);
        // Replay wrote nothing.
        assert_eq!(b.store.load_journal("run-loop").await.unwrap(), journal);
    }
}

#[tokio::test]
async fn replay_reports_a_composite_that_does_not_match_its_children() {
    let source: Arc<dyn Store> = Arc::new(MemoryStore::new());
    run(&source, counting_loop(), "run-loop", json!(0)).await;
    for b in backends() {
        // The loop's own record claims another output; the chain is resealed, so the chain alone verifies —
        // but the run row still commits to the old last hash, and a replay recomputes the loop.
        copy_run(&source, &b.store, "run-loop", true, |r| {
            if r.path == "1" {
                r.output = Arc::new(json!(40));
            }
        })
        .await;
        let client = TaskClient::new(Arc::clone(&b.store), builtins());
        let records = b.store.load_journal("run-loop").await.unwrap();
        assert!(flujo_core::verify_chain(&records).is_ok(), "{}", b.name);
        let broken = client.verify("run-loop").await.unwrap().broken.expect("the run row no longer matches");
        assert!(broken.reason.contains("last hash"), "{}: {}", b.name, broken.reason);
        let replay = client.replay("run-loop").await.unwrap();
        assert!(!replay.matches, "{}", b.name);
        assert!(replay.result.is_none());
        let why = replay.mismatch.unwrap();
        assert!(why.contains("mismatch") && why.contains("loop") && why.contains("40"), "{why}");
    }
}

#[tokio::test]
async fn verify_names_the_first_broken_record() {
    let source: Arc<dyn Store> = Arc::new(MemoryStore::new());
    run(&source, counting_loop(), "run-loop", json!(0)).await;
    let journal = source.load_journal("run-loop").await.unwrap();
    for b in backends() {
        copy_run(&source, &b.store, "run-loop", false, |r| {
            if r.seq == 2 {
                r.output = Arc::new(json!(999));
            }
        })
        .await;
        let client = TaskClient::new(Arc::clone(&b.store), builtins());
        let report = client.verify("run-loop").await.unwrap();
        let broken = report.broken.expect("tampering is detected");
        assert_eq!((broken.seq, broken.path.as_str()), (2, journal[2].path.as_str()), "{}", b.name);
        assert!(broken.reason.contains("content"), "{}", broken.reason);
        assert_eq!(report.records, journal.len());
    }
}

#[tokio::test]
async fn replay_needs_no_skills_but_resume_does() {
    let mut custom = BuiltinRegistry::new();
    custom.register_fn("test.double", false, |call: SkillCall| async move {
        Ok(SkillOutput::value(json!(call.input.as_i64().unwrap_or(0) * 2)))
    });
    let custom: Arc<dyn SkillRegistry> = Arc::new(custom);
    let pipeline = Pipeline::new(
        "custom",
        vec![Step::skill("double", "test.double", json!({})), hitl("approve", None), tf("echo", "previous_step")],
    );
    for b in backends() {
        let flujo = Flujo::builder(pipeline.clone()).store(Arc::clone(&b.store)).skills(Arc::clone(&custom)).build();
        let flujo = flujo.unwrap();
        let paused = flujo.run_with(RunOptions::new(json!(21)).run_id("r")).await;
        assert_eq!(paused.unwrap().status, RunStatus::Paused);

        let plain = TaskClient::new(Arc::clone(&b.store), builtins());
        let replay = plain.replay("r").await.unwrap();
        assert!(replay.matches, "{}: {:?}", b.name, replay.mismatch);
        assert_eq!(replay.result.unwrap().status, RunStatus::Paused);
        let err = plain.resume("r", ResumeRequest::answer(json!("ok"))).await.unwrap_err();
        assert_eq!(err.kind(), "resolution_error", "{}: {err}", b.name);
        assert_eq!(
            plain.get_run("r").await.unwrap().unwrap().status,
            RunStatus::Paused,
            "a refused resume changes nothing"
        );

        let client = TaskClient::new(Arc::clone(&b.store), Arc::clone(&custom));
        let done = client.resume("r", ResumeRequest::answer(json!("ok")).pause_id("1")).await;
        let done = done.unwrap();
        assert_eq!((done.status, done.output), (RunStatus::Completed, Some(json!("ok"))));
        assert_eq!(done.step_history[0].output.as_ref(), &json!(42));
    }
}

#[tokio::test]
async fn unknown_runs_and_unreadable_definitions_are_typed_errors() {
    for b in backends() {
        let client = TaskClient::new(Arc::clone(&b.store), builtins());
        assert_eq!(client.get_run("nope").await.unwrap(), None);
        let not_found = ClientError::RunNotFound("nope".to_owned());
        assert_eq!(client.verify("nope").await.unwrap_err(), not_found);
        assert_eq!(client.replay("nope").await.unwrap_err(), not_found);
        assert_eq!(client.journal("nope").await.unwrap_err(), not_found);
        assert_eq!(client.resume("nope", ResumeRequest::default()).await.unwrap_err(), not_found);

        run(&b.store, counting_loop(), "real", json!(0)).await;
        let mut record = b.store.get_run("real").await.unwrap().unwrap();
        record.run_id = "no-def".into();
        record.definition = None;
        b.store.create_run(&record).await.unwrap();
        assert_eq!(client.replay("no-def").await.unwrap_err(), ClientError::NoDefinition("no-def".into()));
        record.run_id = "bad-def".into();
        record.definition = Some(Arc::new(flujo_core::Definition::from_json(json!({"name": 5}).to_string())));
        b.store.create_run(&record).await.unwrap();
        let err = client.resume("bad-def", ResumeRequest::default()).await.unwrap_err();
        assert_eq!(err.kind(), "bad_definition", "{}: {err}", b.name);
    }
}

#[tokio::test]
async fn prune_and_system_state() {
    for b in backends() {
        let client = TaskClient::new(Arc::clone(&b.store), builtins());
        run(&b.store, counting_loop(), "done", json!(0)).await;
        run(&b.store, approval(), "waiting", json!(0)).await;
        assert_eq!(client.prune(i64::MAX, None).await.unwrap(), 1, "{}", b.name);
        assert_eq!(client.get_run("done").await.unwrap(), None);
        assert!(client.get_run("waiting").await.unwrap().is_some(), "a paused run is kept");
        assert_eq!(client.prune(i64::MAX, Some(RunStatus::Paused)).await.unwrap(), 1);
        assert!(client.list_runs(&RunFilter::default()).await.unwrap().is_empty());

        assert_eq!(client.system_state_get("k").await.unwrap(), None);
        client.system_state_set("k", &json!({"v": [1, 2]})).await.unwrap();
        assert_eq!(client.system_state_get("k").await.unwrap(), Some(json!({"v": [1, 2]})));
    }
}

#[tokio::test]
async fn result_of_a_stored_run_and_cancel_of_a_paused_one() {
    for b in backends() {
        run(&b.store, approval(), "run-c", json!(1)).await;
        let client = TaskClient::new(Arc::clone(&b.store), builtins());
        let stored = client.result("run-c").await.unwrap();
        assert_eq!(stored.status, RunStatus::Paused, "{}", b.name);
        assert_eq!(stored.step_history.len(), 1);
        assert_eq!(*stored.step_history[0].output, json!(2));
        assert_eq!(stored.context["steps"]["inc"], json!(2), "{}", stored.context);
        assert_eq!(stored.pending.len(), 1);

        let view = client.cancel("run-c", "cancelled by a test").await.unwrap();
        assert_eq!(view.status, RunStatus::Cancelled, "{}", b.name);
        assert_eq!(view.error.as_ref().map(|e| e.kind.as_str()), Some("cancelled"));
        assert!(view.pending.is_empty());
        assert!(client.verify("run-c").await.unwrap().is_ok(), "{}", b.name);
        let again = client.cancel("run-c", "again").await.unwrap_err();
        assert_eq!(again.kind(), "not_cancellable");
        let resumed = client.resume("run-c", ResumeRequest::answer(json!("yes"))).await.unwrap_err();
        assert_eq!(resumed.kind(), "not_resumable", "{}: {resumed}", b.name);
        assert_eq!(client.cancel("nope", "x").await.unwrap_err().kind(), "run_not_found");
    }
}

#[tokio::test]
async fn cancel_stops_a_walk_in_flight_and_nothing_commits_after_it() {
    for b in backends() {
        let long = Pipeline::new(
            "long",
            vec![looped("loop", vec![tf("inc", "previous_step + 1")], 100_000, Some("previous_step >= 100000"))],
        );
        let flujo = Flujo::builder(long).store(Arc::clone(&b.store)).build().unwrap();
        let handle = flujo.start_with(RunOptions::new(json!(0)).run_id("run-long".to_owned()));
        let client = TaskClient::new(Arc::clone(&b.store), builtins());
        // Wait until the walk has committed something, then cancel it mid-flight.
        for _ in 0..500 {
            if b.store.load_journal("run-long").await.unwrap().len() >= 5 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let view = client.cancel("run-long", "stop").await.unwrap();
        assert_eq!(view.status, RunStatus::Cancelled, "{}", b.name);
        let _ = handle.await;
        let after = b.store.load_journal("run-long").await.unwrap();
        let run = b.store.get_run("run-long").await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Cancelled, "{}", b.name);
        assert_eq!(run.journal_head.as_ref().map(|h| h.len), Some(after.len() as u64), "{}", b.name);
        assert!(after.len() < 100_000, "{}: the walk went on after the cancellation", b.name);
        assert!(client.verify("run-long").await.unwrap().is_ok(), "{}", b.name);
    }
}

/// A run started (not enqueued) with `RunOptions::queue` belongs to the queue: when the process walking it
/// dies (here: its runtime is shut down mid-step, heartbeat and all), a worker of the queue claims it after
/// the lease and finishes it by replay, without running the committed step again.
#[test]
fn a_started_run_with_a_queue_is_taken_over_by_its_queue_after_the_walker_dies() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let first_calls = Arc::new(AtomicUsize::new(0));
    let blocked_once = Arc::new(AtomicBool::new(false));
    let skills = {
        let (calls, blocked) = (first_calls.clone(), blocked_once.clone());
        let mut s = BuiltinRegistry::new();
        s.register_fn("test.count", false, move |call: SkillCall| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(SkillOutput::value(call.input))
            }
        });
        s.register_fn("test.hang_once", false, move |_call: SkillCall| {
            let first = !blocked.swap(true, Ordering::SeqCst);
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                Ok(SkillOutput::value(json!("done")))
            }
        });
        Arc::new(s)
    };
    let pipeline = Pipeline::new(
        "queued-start",
        vec![Step::skill("count", "test.count", json!({})), Step::skill("hang", "test.hang_once", json!({}))],
    );
    // The walker: its own runtime, shut down while the second step hangs (as if the process died).
    let dying = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db, SqliteOptions::default()).unwrap());
    let walker = Flujo::builder(pipeline.clone())
        .store(store.clone())
        .skills(skills.clone())
        .lease(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    dying.block_on(async {
        let _handle = walker.start_with(RunOptions::new(json!(1)).run_id("qs-1").queue("jobs"));
        for _ in 0..500 {
            if store.load_journal("qs-1").await.unwrap().len() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    dying.shutdown_timeout(std::time::Duration::from_millis(100));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let run = store.get_run("qs-1").await.unwrap().unwrap();
        assert_eq!((run.status, run.queue.as_deref()), (RunStatus::Running, Some("jobs")));
        let other = flujo_engine::ownership::new_owner();
        let mut claimed = Vec::new();
        for _ in 0..200 {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
            claimed = store
                .claim_runs(&ClaimRequest::new(vec!["jobs".into()], other.clone(), now, now + 30_000, 10))
                .await
                .unwrap();
            if !claimed.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(claimed, vec!["qs-1".to_owned()], "claimed once the dead walker's lease expired");
        let worker = Flujo::builder(pipeline).store(store.clone()).skills(skills).build().unwrap();
        let done = worker.resume_with("qs-1", ResumeRequest::default()).await.unwrap();
        assert_eq!((done.status, done.output), (RunStatus::Completed, Some(json!("done"))));
        assert_eq!(first_calls.load(Ordering::SeqCst), 1, "the committed step is replayed, not run again");
    });
}
