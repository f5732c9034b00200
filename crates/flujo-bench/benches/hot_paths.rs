//! criterion micro-benchmarks of the hot paths: template render, expression eval, context merge, journal
//! append (seal + store) and the verification replay of a 1000-record run.
//!
//! `cargo bench -p flujo-bench` (figures in BENCHMARKS.md). Under `cargo test --all-targets` each benchmark
//! runs once, as a smoke test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use flujo_core::*;
use flujo_engine::merge::merge_branches;
use flujo_engine::{Flujo, RunOptions};
use flujo_store::{MemoryStore, SqliteOptions, SqliteStore};
use flujo_template::{compile_expression, compile_template, Scope, UndefinedMode};
use serde_json::json;

fn context() -> Context {
    let user: Map<String, Value> = serde_json::from_value(json!({
        "count": 42,
        "status": "ok",
        "user": {"name": "Ada", "tags": ["admin", "ops"]},
        "items": (0..100).map(|i| json!({"id": i, "title": format!("item {i}")})).collect::<Vec<_>>(),
    }))
    .unwrap();
    Context::new("bench-run", json!("start"), user)
}

fn templates(c: &mut Criterion) {
    let ctx = context();
    let snap = ctx.snapshot();
    let prev = json!({"name": "report", "score": 0.75});
    let small =
        compile_template("Hello {{ context.user.name }}, {{ previous_step.name }} has {{ context.count }} items")
            .unwrap();
    let each = compile_template("{{#each context.items}}- {{ this.title }}\n{{/each}}").unwrap();
    let mut g = c.benchmark_group("template");
    g.bench_function("render_small", |b| {
        b.iter(|| {
            let scope = Scope::new(&prev).with_context(&snap);
            black_box(small.render(&scope, UndefinedMode::Lenient).unwrap())
        })
    });
    g.bench_function("render_each_100", |b| {
        b.iter(|| {
            let scope = Scope::new(&prev).with_context(&snap);
            black_box(each.render(&scope, UndefinedMode::Lenient).unwrap())
        })
    });
    g.bench_function("compile_cached", |b| {
        b.iter(|| black_box(compile_template("Hello {{ context.user.name }}").unwrap()))
    });
    g.finish();
}

fn expressions(c: &mut Criterion) {
    let ctx = context();
    let snap = ctx.snapshot();
    let prev = json!({"name": "report", "score": 0.75});
    let cond = compile_expression("previous_step.score > 0.5 and context.status == 'ok'").unwrap();
    let arith = compile_expression("previous_step.score * 100 + context.count").unwrap();
    let mut g = c.benchmark_group("expression");
    g.bench_function("eval_bool", |b| {
        b.iter(|| {
            let scope = Scope::new(&prev).with_context(&snap);
            black_box(cond.eval_bool(&scope, UndefinedMode::Lenient).unwrap())
        })
    });
    g.bench_function("eval_arith", |b| {
        b.iter(|| {
            let scope = Scope::new(&prev).with_context(&snap);
            black_box(arith.eval(&scope, UndefinedMode::Lenient).unwrap())
        })
    });
    g.finish();
}

fn set(path: &[&str], value: Value) -> PatchOp {
    PatchOp::set(path.iter().map(|s| (*s).to_owned()).collect(), value)
}

fn merges(c: &mut Criterion) {
    // 4 parallel branches × 25 disjoint writes, plus each branch's `steps.*` record.
    let branches: Vec<(String, Vec<PatchOp>)> = (0..4)
        .map(|b| {
            let mut ops: Vec<PatchOp> =
                (0..25).map(|i| set(&["results", &format!("b{b}"), &format!("k{i}")], json!(i * b))).collect();
            ops.push(set(&["steps", &format!("step{b}")], json!({"output": b})));
            (format!("b{b}"), ops)
        })
        .collect();
    let mut g = c.benchmark_group("context");
    for strategy in [MergeStrategy::ContextUpdate, MergeStrategy::Overwrite, MergeStrategy::KeepFirst] {
        g.bench_function(format!("merge_4x25_{strategy:?}"), |b| {
            b.iter(|| black_box(merge_branches(strategy, &branches).unwrap()))
        });
    }
    // A concurrent map of 10,000 items, each writing its own key (merged with `Overwrite`): linear in items.
    let items: Vec<(String, Vec<PatchOp>)> =
        (0..10_000).map(|i| (format!("item {i}"), vec![set(&["seen", &format!("k{i}")], json!(i))])).collect();
    g.bench_function("merge_10000_map_items", |b| {
        b.iter(|| black_box(merge_branches(MergeStrategy::Overwrite, &items).unwrap()))
    });
    let ctx = context();
    let ops = merge_branches(MergeStrategy::ContextUpdate, &branches).unwrap();
    g.bench_function("apply_merged_ops", |b| {
        b.iter_batched(
            || ctx.isolated(None),
            |mut c| {
                for op in &ops {
                    c.apply(op.clone()).unwrap();
                }
                black_box(c)
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("isolate_copy", |b| b.iter(|| black_box(ctx.isolated(None))));
    g.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn inc(name: &str) -> Step {
    Step::skill(name, "flujo.builtins.transform", json!({"expr": "previous_step + 1"}))
}

/// A run of `n` steps in `store`, completed; returns the runner.
fn completed_run(rt: &tokio::runtime::Runtime, store: Arc<dyn Store>, n: usize, run_id: &str) -> Flujo {
    let p = Pipeline::new(format!("bench_{n}"), (0..n).map(|i| inc(&format!("s{i}"))).collect());
    let flujo = Flujo::builder(p).store(store).build().unwrap();
    let opts = RunOptions::new(json!(0)).run_id(run_id);
    let r = rt.block_on(flujo.run_with(opts)).unwrap();
    assert_eq!(r.output, Some(json!(n)));
    flujo
}

fn journal(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("journal");
    let template = JournalRecord {
        run_id: "append".into(),
        seq: 0,
        generation: 0,
        path: "0".into(),
        step: "s".into(),
        kind: "step".into(),
        status: StepStatus::Completed,
        output: Arc::new(json!({"n": 1, "text": "a short output of a typical step"})),
        feedback: None,
        patch: vec![set(&["steps", "s"], json!({"output": 1}))],
        attempts: 1,
        tokens: TokenUsage::default(),
        cost_usd: 0.0,
        started_at_ms: 0,
        latency_ms: 0.1,
        metadata: Map::new(),
        prev_hash: String::new(),
        hash: String::new(),
        hash_scheme: flujo_core::HashScheme::CURRENT,
    };
    g.bench_function("seal", |b| {
        b.iter(|| {
            let mut r = template.clone();
            r.seal("0000000000000000000000000000000000000000000000000000000000000000");
            black_box(r.hash)
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<(&str, Arc<dyn Store>)> = vec![
        ("memory", Arc::new(MemoryStore::new())),
        ("sqlite", Arc::new(SqliteStore::open(dir.path().join("bench.db"), SqliteOptions::default()).unwrap())),
    ];
    for (name, store) in stores {
        // A one-step run gives the journal its run row and first record; appends continue its chain.
        completed_run(&rt, store.clone(), 1, "append");
        let first = rt.block_on(store.load_journal("append")).unwrap();
        let mut seq = first.len() as u64;
        let mut prev = first.last().unwrap().hash.clone();
        g.bench_function(format!("append_{name}"), |b| {
            b.iter(|| {
                let mut r = template.clone();
                r.seq = seq;
                r.path = seq.to_string();
                r.seal(&prev);
                rt.block_on(store.append(&r)).unwrap();
                seq += 1;
                prev = r.hash;
            })
        });
    }
    g.finish();
}

fn replay(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("replay");
    g.sample_size(20);
    let stores: Vec<(&str, Arc<dyn Store>)> = vec![
        ("memory", Arc::new(MemoryStore::new())),
        ("sqlite", Arc::new(SqliteStore::open(dir.path().join("replay.db"), SqliteOptions::default()).unwrap())),
    ];
    for (name, store) in stores {
        let flujo = completed_run(&rt, store, 1000, "replay-1000");
        g.bench_function(format!("verify_1000_records_{name}"), |b| {
            b.iter(|| {
                let r = rt.block_on(flujo.replay("replay-1000")).unwrap();
                black_box(r.output)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, templates, expressions, merges, journal, replay);
criterion_main!(benches);
