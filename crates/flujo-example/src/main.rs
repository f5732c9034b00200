//! An application written against the `flujo` crate alone (`use flujo::prelude::*`): a pipeline with every step
//! kind, a closure skill with side effects, and a composite custom kind (`retry_until`: runs its `attempt` child
//! until an expression holds, each attempt journaled at its own path), durable on SQLite.
//!
//! ```text
//! flujo-example run DB            # runs until the approval; prints the run id (exit 5 when paused)
//! flujo-example resume DB RUN_ID  # answers the approval and finishes (exit 0)
//! flujo-example show DB RUN_ID    # the journal
//! ```
//!
//! Every call of the `example.stamp` skill appends its idempotency key to `DB.stamps`, so a test can check that
//! a run killed and resumed never repeats a finished step. `FLUJO_EXAMPLE_SLOW_MS` makes the custom kind's
//! attempts slow (so a test can kill the process in the middle of them).

use std::io::Write as _;
use std::sync::Arc;

use flujo::prelude::*;

/// `retry_until`: runs the `attempt` child with the step's input, then with each attempt's output, until
/// `spec.until` (an expression over `output`) is true or `spec.max_attempts` attempts were made.
struct RetryUntil;

#[async_trait]
impl StepPolicy for RetryUntil {
    async fn execute(&self, mut f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
        let flujo::core::StepKind::Custom { spec, .. } = &f.step.kind else {
            return Ok(PolicyOutcome::failure(Value::Null, "retry_until used for another kind"));
        };
        let max = spec.get("max_attempts").and_then(Value::as_u64).unwrap_or(3);
        let until = spec.get("until").and_then(Value::as_str).unwrap_or("true").to_owned();
        let mut value = f.input.clone();
        for attempt in 0..max {
            let seq = f.run_child("attempt", attempt, value).await?;
            if !seq.succeeded() {
                return Ok(PolicyOutcome::failure(seq.output, seq.feedback.unwrap_or_default()));
            }
            value = seq.output;
            match f.core.eval_bool(&until.replace("output", "previous_step"), &value, f.ctx, f.lex) {
                Ok(true) => return Ok(PolicyOutcome::success(value).with_meta("attempts", json!(attempt + 1))),
                Ok(false) => {}
                Err(e) => return Ok(PolicyOutcome::failure(value, format!("retry_until `{until}`: {e}"))),
            }
        }
        Ok(PolicyOutcome::failure(value, format!("retry_until: `{until}` still false after {max} attempts")))
    }
}

fn tf(name: &str, expr: &str) -> Step {
    Step::skill(name, "flujo.builtins.transform", json!({ "expr": expr }))
}

/// The pipeline: every step kind once.
pub fn pipeline() -> Pipeline {
    let planner = AgentRef::Model { model: "mock:echo".into(), settings: json!({"model": "mock:echo"}) };
    Pipeline::new(
        "example",
        vec![
            tf("start", "previous_step + 1"),
            Step::loop_("count", [tf("inc", "previous_step + 1")]).max_loops(10).exit_when("previous_step >= 4").into(),
            Step::map("each", [tf("times_ten", "this * 10")]).over("{{ [previous_step, previous_step + 1] }}").into(),
            Step::conditional("pick")
                .when("'two' if previous_step | length == 2 else 'other'")
                .branch("two", [tf("sum", "previous_step | sum")])
                .otherwise([Step::passthrough("other")])
                .into(),
            Step::parallel("fan_out")
                .branch("half", [tf("half", "previous_step / 2")])
                .branch("stamp", [Step::skill("stamp", "example.stamp", Value::Null)])
                .merge(MergeStrategy::NoMerge)
                .into(),
            Step::router("route", AgentRef::skill("flujo.builtins.transform", json!({"expr": "['keep']"})))
                .branch("keep", [tf("keep_half", "previous_step.half")])
                .branch("drop", [tf("dropped", "0")])
                .into(),
            Step::cache("cached", tf("square", "previous_step.keep * previous_step.keep")).ttl_s(60.0).into(),
            Step::custom("grow", "retry_until", json!({"until": "output >= 100000", "max_attempts": 10}))
                .child("attempt", [tf("double", "previous_step * 2"), Step::skill("stamp_attempt", "example.stamp", Value::Null)])
                .into(),
            Step::state_machine("review", "check")
                .state("check", [tf("big", "previous_step >= 100000")])
                .end_state("done")
                .transition("check", TransitionOn::Success, "done")
                .into(),
            Step::tree_search(
                "search",
                AgentRef::skill("flujo.builtins.transform", json!({"expr": "[previous_step.candidate ~ 'a', previous_step.candidate ~ 'b']"})),
                AgentRef::skill(
                    "flujo.builtins.transform",
                    json!({"expr": "{'score': ((previous_step.candidate | length) - (previous_step.candidate | replace('b', '') | length)) / 2}"}),
                ),
            )
            .branching_factor(2)
            .beam_width(2)
            .max_depth(4)
            .build()
            .with_input(json!("x")),
            Step::agentic_loop("plan", planner).max_turns(2).into(),
            Step::hitl("approve", "Publish {{ previous_step }}?", Some(json!({"type": "string", "enum": ["yes", "no"]})))
                .with_sink_to("decision"),
            tf("report", "'decision=' ~ context.decision"),
        ],
    )
}

fn runner(db: &str) -> Result<BlockingFlujo, Box<dyn std::error::Error>> {
    let mut skills = Skills::new();
    let stamps = format!("{db}.stamps");
    skills.register_fn("example.stamp", SideEffects::Yes, move |call: SkillCall| {
        let stamps = stamps.clone();
        async move {
            if let Ok(ms) = std::env::var("FLUJO_EXAMPLE_SLOW_MS").unwrap_or_default().parse::<u64>() {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&stamps)
                .map_err(|e| SkillError::new(format!("cannot open {stamps}: {e}")))?;
            writeln!(file, "{}", call.idempotency_key).map_err(|e| SkillError::new(e.to_string()))?;
            Ok(SkillOutput::value(call.input))
        }
    });
    let models = flujo::llm::LlmRegistry::new(flujo::llm::LlmConfig::default())?;
    let flujo = Flujo::builder(pipeline())
        .store(open_store(&format!("sqlite:///{db}"))?)
        .skills(Arc::new(skills))
        .models(Arc::new(models))
        .policy("retry_until", Arc::new(RetryUntil))
        .build()?;
    Ok(flujo.blocking()?)
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["run", db] => runner(db).and_then(|f| {
            let handle = f.start(json!(0))?;
            println!("run {}", handle.run_id());
            for event in handle.events() {
                if let RunEvent::StepFinished { result, .. } = &event {
                    println!("finished {}", result.path);
                }
            }
            Ok(handle.wait()?)
        }),
        ["resume", db, run_id] => runner(db).and_then(|f| Ok(f.resume(run_id, json!("yes"))?)),
        ["continue", db, run_id] => runner(db).and_then(|f| Ok(f.resume_with(run_id, ResumeRequest::default())?)),
        _ => {
            eprintln!("usage: flujo-example run DB | resume DB RUN_ID | continue DB RUN_ID");
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(r) => {
            println!("status {}", r.status.as_str());
            println!("output {}", r.output.clone().unwrap_or_default());
            if let Some(e) = &r.error {
                println!("error {}: {}", e.kind, e.message);
            }
            std::process::ExitCode::from(match r.status {
                RunStatus::Completed => 0,
                RunStatus::Paused => 5,
                _ => 1,
            })
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
