//! A tour of the engine, offline: a loop, a conditional, a parallel step and a human approval, run with a
//! durable (in-memory) store; the approval is answered by this program, then the run resumes by replay.
//!
//! Run: `cargo run --release -p flujo --example tour`

use std::sync::Arc;

use flujo::prelude::*;

fn tf(name: &str, expr: &str) -> Step {
    Step::skill(name, "flujo.builtins.transform", json!({ "expr": expr }))
}

fn pipeline() -> Pipeline {
    Pipeline::new(
        "tour",
        vec![
            // Count up to 3 in a loop.
            Step::loop_("count", [tf("inc", "previous_step + 1")])
                .max_loops(10)
                .exit_when("previous_step >= 3")
                .build()
                .with_sink_to("counted"),
            // Branch on the result.
            Step::conditional("size")
                .when("'big' if previous_step > 2 else 'small'")
                .branch("big", [tf("say_big", "'a big number: ' ~ previous_step")])
                .branch("small", [tf("say_small", "'a small number'")])
                .into(),
            // Two things at once.
            Step::parallel("fan_out")
                .branch("shout", [tf("upper", "previous_step | upper")])
                .branch("measure", [tf("len", "previous_step | length")])
                .into(),
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
    let store = Arc::new(MemoryStore::new());
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
