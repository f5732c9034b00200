//! Group-commit throughput of the SQLite store: many concurrent runs each append a chain of journal records,
//! every `append` awaiting its commit, as the engine does between steps.
//!
//! ```text
//! cargo run --release -p flujo-store --example sqlite_append_throughput [-- RUNS APPENDS]
//! ```
//!
//! Defaults: 1000 runs × 10 appends, once per durability level, each in a fresh database file.

use std::sync::Arc;
use std::time::Instant;

use flujo_core::journal::GENESIS_HASH;
use flujo_core::{
    JournalRecord, JournalStore, Map, PatchOp, RunRecord, RunStatus, RunStore, StepStatus, Store, TokenUsage,
};
use flujo_store::{Durability, SqliteOptions, SqliteStore};
use serde_json::json;

fn run(run_id: &str) -> RunRecord {
    RunRecord {
        run_id: run_id.to_owned(),
        pipeline_name: "bench".to_owned(),
        pipeline_version: "1".to_owned(),
        pipeline_hash: flujo_store::blob_hash(b"bench"),
        definition: None,
        status: RunStatus::Running,
        input: json!({"q": "hello"}),
        initial_context: Map::new(),
        pending: vec![],
        output: None,
        error: None,
        generation: 0,
        total_cost_usd: 0.0,
        total_tokens: 0,
        created_at_ms: 0,
        updated_at_ms: 0,
        owner: None,
        lease_expires_at_ms: None,
        origin: None,
        journal_head: None,
        queue: None,
    }
}

fn record(run_id: &str, seq: u64, prev_hash: &str) -> JournalRecord {
    let mut r = JournalRecord {
        run_id: run_id.to_owned(),
        seq,
        generation: 0,
        path: seq.to_string(),
        step: format!("step_{seq}"),
        kind: "step".to_owned(),
        status: StepStatus::Completed,
        output: Arc::new(json!({"answer": format!("output of step {seq}"), "score": 0.5})),
        feedback: None,
        patch: vec![PatchOp::set(vec!["counter".to_owned()], json!(seq))],
        attempts: 1,
        tokens: TokenUsage::new(120, 40),
        cost_usd: 0.0004,
        started_at_ms: 1_700_000_000_000 + seq as i64,
        latency_ms: 12.5,
        metadata: Map::new(),
        prev_hash: String::new(),
        hash: String::new(),
        hash_scheme: flujo_core::HashScheme::CURRENT,
    };
    r.seal(prev_hash);
    r
}

async fn measure(durability: Durability, runs: usize, appends: u64) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open_async(dir.path().join("bench.db"), SqliteOptions { durability }).await?);
    for i in 0..runs {
        store.create_run(&run(&format!("run-{i}"))).await?;
    }
    let before = store.group_commit_stats();
    let bytes_before = store.bytes_written();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(runs);
    for i in 0..runs {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let run_id = format!("run-{i}");
            let mut prev = GENESIS_HASH.to_owned();
            for seq in 0..appends {
                let r = record(&run_id, seq, &prev);
                store.append(&r).await?;
                prev = r.hash;
            }
            Ok::<_, flujo_core::StoreError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed();
    let after = store.group_commit_stats();
    let total = runs as u64 * appends;
    let transactions = after.transactions - before.transactions;
    println!(
        "{durability:?}: {total} appends ({runs} runs x {appends}) in {:.3} s = {:.0} appends/s; {transactions} \
         transactions ({:.1} appends/commit); {} bytes written ({:.0} B/append)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        total as f64 / transactions.max(1) as f64,
        store.bytes_written() - bytes_before,
        (store.bytes_written() - bytes_before) as f64 / total as f64,
    );
    let stats = store.stats().await?;
    assert_eq!(stats.journal_records, total, "every append landed");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs = args.first().map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let appends = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
    for durability in [Durability::Normal, Durability::Strict] {
        measure(durability, runs, appends).await?;
    }
    Ok(())
}
