//! A tour of the engine, offline: a loop, a conditional, a parallel step and a human approval, run with a
//! durable (in-memory) store; the approval is answered by this program, then the run resumes by replay.
//!
//! Run: `cargo run --release -p flujo-engine --example tour`

use std::sync::Arc;

use flujo_core::*;
use flujo_engine::Flujo;
use serde_json::json;

fn tf(name: &str, expr: &str) -> Step {
    Step::skill(name, "flujo.builtins.transform", json!({ "expr": expr }))
}

fn pipeline() -> Pipeline {
    Pipeline::new(
        "tour",
        vec![
            // Count up to 3 in a loop.
            Step::new(
                "count",
                StepKind::Loop(LoopSpec {
                    body: vec![tf("inc", "previous_step + 1")],
                    max_loops: 10,
                    exit_expression: Some("previous_step >= 3".into()),
                    exit_condition: None,
                    iteration_input: None,
                    output: None,
                    on_max_loops: OnMaxLoops::Fail,
                }),
            )
            .with_sink_to("counted"),
            // Branch on the result.
            Step::new(
                "size",
                StepKind::Conditional(ConditionalSpec {
                    condition_expression: Some("'big' if previous_step > 2 else 'small'".into()),
                    condition: None,
                    branches: vec![
                        ("big".into(), vec![tf("say_big", "'a big number: ' ~ previous_step")]),
                        ("small".into(), vec![tf("say_small", "'a small number'")]),
                    ],
                    default_branch: None,
                }),
            ),
            // Two things at once.
            Step::new(
                "fan_out",
                StepKind::Parallel(ParallelSpec {
                    branches: vec![
                        ("shout".into(), vec![tf("upper", "previous_step | upper")]),
                        ("measure".into(), vec![tf("len", "previous_step | length")]),
                    ],
                    merge_strategy: MergeStrategy::ContextUpdate,
                    on_branch_failure: OnBranchFailure::Propagate,
                    context_include_keys: None,
                    reduce: None,
                }),
            ),
            // Ask a human.
            Step::hitl(
                "approve",
                "Publish '{{ previous_step.shout }}'? (yes/no)",
                Some(json!({"type": "string", "enum": ["yes", "no"]})),
            )
            .with_sink_to("decision"),
            tf("report", "'decision=' ~ context.decision ~ ', counted=' ~ context.counted"),
        ],
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(flujo_store::MemoryStore::new());
    let flujo = Flujo::builder(pipeline()).store(store.clone()).build()?;
    let first = flujo.run(json!(0)).await?;
    println!("status: {}", first.status.as_str());
    for p in &first.pending {
        println!("pending pause {}: {}", p.pause_id, p.message);
    }
    let done = flujo.resume(&first.run_id, json!("yes")).await?;
    println!("status: {}", done.status.as_str());
    println!("output: {}", done.output.clone().unwrap_or_default());
    let journal = store.load_journal(&done.run_id).await?;
    verify_chain(&journal)?;
    println!("journal: {} records, hash chain verified", journal.len());
    for r in &journal {
        println!("  #{:<2} {:<28} {:<12} {}", r.seq, r.path, r.kind, r.output);
    }
    Ok(())
}
