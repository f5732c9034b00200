//! A step kind of your own: `best_of_n` runs its `candidate` child `n` times and keeps the best candidate
//! (by a `score` expression) or, without `score`, the answer most candidates agree on (a majority vote).
//!
//! Here a closure skill drafts headlines and a human rates each one (a `hitl` step inside the child), so the
//! run pauses in the middle of the custom step three times. Each resume re-runs the policy from the top; the
//! children that finished replay from the journal, so no headline is drafted twice. The guide is
//! `docs/custom-step-kinds.md`; it shows this file.
//!
//! Run: `cargo run -p flujo --example custom_step_kind`. Its tests run with the test command
//! (`cargo test -p flujo --example custom_step_kind`).

use std::sync::{Arc, Mutex};

use flujo::prelude::*;

/// The kind `best_of_n`. Spec: `n` (1 to 100, default 3) and `score` (an expression over `output`, a
/// candidate; optional). Child `candidate` runs with `{"input": INPUT, "index": I}` under the key `I`.
pub struct BestOfN;

#[async_trait]
impl StepPolicy for BestOfN {
    async fn execute(&self, mut f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
        // The spec is data the policy reads; a bad one is a step failure, not a panic.
        let step = f.step;
        let flujo::core::StepKind::Custom { spec, .. } = &step.kind else {
            return Ok(PolicyOutcome::failure(Value::Null, "best_of_n used for another kind"));
        };
        let n = match spec.get("n").map(Value::as_u64) {
            None => 3,
            Some(Some(n @ 1..=100)) => n,
            Some(_) => return Ok(PolicyOutcome::failure(Value::Null, "best_of_n: `n` must be a number from 1 to 100")),
        };
        let score = spec.get("score").and_then(Value::as_str);

        // The children: key `i` is derived from the policy's own progress, so a resumed run asks for the
        // same keys in the same order and replays what was journaled. A pause or a budget stop inside a
        // child comes back as `Err`: `?` hands it to the engine.
        let input = std::mem::take(&mut f.input);
        let mut tokens = TokenUsage::default();
        let mut cost_usd = 0.0;
        let mut candidates = Vec::new();
        for i in 0..n {
            let seq = f.run_child("candidate", i, json!({"input": input, "index": i})).await?;
            tokens.add(seq.tokens);
            cost_usd += seq.cost_usd;
            if !seq.succeeded() {
                let feedback = format!("candidate {i}: {}", seq.feedback.unwrap_or_default());
                let mut o = PolicyOutcome::failure(seq.output, feedback);
                (o.tokens, o.cost_usd) = (tokens, cost_usd);
                return Ok(o);
            }
            candidates.push(seq.output);
        }

        // The choice is a pure function of the children's outputs (and the context): a replay recomputes
        // it from the journal and must get the same answer.
        let (winner, meta_key, marks) = match score {
            Some(expr) => {
                let mut scores = Vec::new();
                for c in &candidates {
                    match f.core.eval_expr(expr, c, f.ctx, f.lex, &[("output", c)]).map(|v| v.as_f64()) {
                        Ok(Some(s)) => scores.push(s),
                        Ok(None) => {
                            return Ok(PolicyOutcome::failure(c.clone(), format!("score `{expr}` is not a number")))
                        }
                        Err(e) => return Ok(PolicyOutcome::failure(c.clone(), format!("score `{expr}`: {e}"))),
                    }
                }
                (first_max(&scores), "scores", json!(scores))
            }
            None => {
                let votes: Vec<f64> =
                    candidates.iter().map(|c| candidates.iter().filter(|o| *o == c).count() as f64).collect();
                (first_max(&votes), "votes", json!(votes))
            }
        };

        // The outcome carries the children's usage: the step's record stands for them when it is replayed.
        let mut o = PolicyOutcome::success(candidates.swap_remove(winner))
            .with_meta("winner", json!(winner))
            .with_meta(meta_key, marks);
        (o.tokens, o.cost_usd) = (tokens, cost_usd);
        Ok(o)
    }
}

/// The index of the first largest value.
fn first_max(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// The headlines the drafting skill proposes, by candidate index.
const STYLES: [&str; 3] = ["{}: what you need to know", "Why {} matters", "{}, explained in five minutes"];

/// The pipeline: three drafts, each rated by a human, the best one published.
pub fn pipeline() -> Pipeline {
    let rating = json!({"type": "integer", "minimum": 0, "maximum": 10});
    Pipeline::new(
        "headline",
        vec![
            Step::custom("headline", "best_of_n", json!({"n": 3, "score": "output.score"}))
                .child(
                    "candidate",
                    [
                        Step::skill("draft", "demo.draft", Value::Null),
                        Step::hitl("rate", "Rate '{{ previous_step }}' from 0 to 10", Some(rating)),
                        Step::skill(
                            "rated",
                            "flujo.builtins.transform",
                            json!({"expr": "{'headline': steps.draft, 'score': previous_step}"}),
                        ),
                    ],
                )
                .into(),
            Step::skill(
                "publish",
                "flujo.builtins.transform",
                json!({"expr": "'Published: ' ~ previous_step.headline"}),
            ),
        ],
    )
}

/// The skills: `demo.draft` writes a headline and records its idempotency key in `sent` (standing for a
/// call to the outside world that must not be repeated).
pub fn skills(sent: Arc<Mutex<Vec<String>>>) -> Skills {
    let mut skills = Skills::new();
    skills.register_fn("demo.draft", SideEffects::Yes, move |call: SkillCall| {
        let sent = sent.clone();
        async move {
            let topic = call.input["input"].as_str().unwrap_or("Rust");
            let index = call.input["index"].as_u64().unwrap_or(0) as usize;
            sent.lock().map_err(|_| SkillError::new("log poisoned"))?.push(call.idempotency_key.to_string());
            Ok(SkillOutput::value(json!(STYLES[index % STYLES.len()].replace("{}", topic))))
        }
    });
    skills
}

/// A runner of [`pipeline`] on `store`, with the `best_of_n` policy registered.
pub fn runner(store: Arc<dyn Store>, sent: Arc<Mutex<Vec<String>>>) -> Result<Flujo, FlujoError> {
    Flujo::builder(pipeline())
        .store(store)
        .skills(Arc::new(skills(sent)))
        .policy("best_of_n", Arc::new(BestOfN))
        .build()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::new(MemoryStore::new());
    let flujo = runner(store.clone(), sent.clone())?;
    let mut result = flujo.run(json!("Durable workflows")).await?;
    // The "human": rates the shortest headline best.
    while result.status == RunStatus::Paused {
        let pause = &result.pending[0];
        let rating = (80usize.saturating_sub(pause.message.len()) / 4).min(10);
        println!("{} -> {}: {rating}", pause.pause_id, pause.message);
        result = flujo.resume(&result.run_id, json!(rating)).await?;
    }
    println!("status: {}", result.status.as_str());
    println!("output: {}", result.output.clone().unwrap_or_default());
    println!("drafts sent: {:?}", sent.lock().map(|s| s.clone()).unwrap_or_default());
    for r in store.load_journal(&result.run_id).await? {
        println!("  #{:<2} {:<22} {:<10} {}", r.seq, r.path, r.kind, r.output);
    }
    let replay = flujo.client()?.replay(&result.run_id).await?;
    println!("replay matches the journal: {}", replay.matches);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts how often the policy body runs: once per walk that reaches the step live.
    struct Counted(BestOfN, Arc<AtomicUsize>);

    #[async_trait]
    impl StepPolicy for Counted {
        async fn execute(&self, f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.execute(f).await
        }
    }

    fn sqlite(dir: &std::path::Path) -> Arc<dyn Store> {
        open_store(&format!("sqlite:///{}", dir.join("state.db").display())).unwrap()
    }

    fn counts(sent: &Mutex<Vec<String>>) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for key in sent.lock().unwrap().iter() {
            *counts.entry(key.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Paused three times inside the custom step and resumed each time by a new runner on a newly opened
    /// store (as another process would): the policy body runs again on every walk, every draft is made
    /// exactly once, the journal holds each child at `0/candidate:I/J` and the custom step once at `0`, and
    /// a verification replay recomputes the step from its children's records.
    #[tokio::test]
    async fn a_paused_best_of_n_resumes_without_drafting_twice() {
        let dir = tempfile::tempdir().unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(AtomicUsize::new(0));
        let build = || {
            let policy = Arc::new(Counted(BestOfN, bodies.clone()));
            Flujo::builder(pipeline())
                .store(sqlite(dir.path()))
                .skills(Arc::new(skills(sent.clone())))
                .policy("best_of_n", policy)
                .build()
                .unwrap()
        };
        let mut result = build().run(json!("Rust")).await.unwrap();
        let run_id = result.run_id.clone();
        for (i, rating) in [7, 9, 4].into_iter().enumerate() {
            assert_eq!(result.status, RunStatus::Paused, "{:?}", result.error);
            assert_eq!(result.pending[0].pause_id, format!("0/candidate:{i}/1"));
            assert_eq!(result.pending[0].message, format!("Rate '{}' from 0 to 10", STYLES[i].replace("{}", "Rust")));
            // Drafts 0..=i are made, each once.
            let drafts = counts(&sent);
            assert_eq!(drafts.len(), i + 1, "{drafts:?}");
            assert!(drafts.values().all(|n| *n == 1), "a draft was made twice: {drafts:?}");
            result = build().resume(&run_id, json!(rating)).await.unwrap();
        }
        assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
        assert_eq!(result.output, Some(json!("Published: Why Rust matters")));
        assert_eq!(bodies.load(Ordering::SeqCst), 4, "the first walk and three resumes");
        let drafts = counts(&sent);
        let expected: HashMap<String, usize> = (0..3).map(|i| (format!("{run_id}:0/candidate:{i}/0"), 1)).collect();
        assert_eq!(drafts, expected, "each draft exactly once, keyed by run and path");

        let flujo = build();
        let journal = flujo.client().unwrap().journal(&run_id).await.unwrap();
        let paths: Vec<&str> = journal.iter().map(|r| r.path.as_str()).collect();
        let mut expected_paths: Vec<String> =
            (0..3).flat_map(|i| (0..3).map(move |j| format!("0/candidate:{i}/{j}"))).collect();
        expected_paths.extend(["0".to_owned(), "1".to_owned()]);
        assert_eq!(paths, expected_paths, "children first, then the custom step, then the next step");
        let own = &journal[9];
        assert_eq!((own.kind.as_str(), own.metadata["winner"].clone()), ("best_of_n", json!(1)));
        assert_eq!(own.metadata["scores"], json!([7.0, 9.0, 4.0]));

        // `lens replay`: the policy runs once more over the journal (no skill is called) and must reproduce
        // the step's recorded output; `lens verify`: the hash chain holds.
        let client = flujo.client().unwrap();
        let replay = client.replay(&run_id).await.unwrap();
        assert!(replay.matches, "{replay:?}");
        assert_eq!(bodies.load(Ordering::SeqCst), 5);
        assert!(client.verify(&run_id).await.unwrap().is_ok());
        assert_eq!(counts(&sent), expected, "a replay calls nothing");
    }

    /// Without `score`, the answer most candidates give wins (ties: the earliest).
    #[tokio::test]
    async fn without_score_the_majority_wins() {
        let mut skills = Skills::new();
        skills.register_fn("demo.answer", SideEffects::No, |call: SkillCall| async move {
            let answers = ["blue", "green", "green", "blue", "green"];
            Ok(SkillOutput::value(json!(answers[call.input["index"].as_u64().unwrap_or(0) as usize % 5])))
        });
        let vote = |n: u64| {
            Step::custom("vote", "best_of_n", json!({ "n": n }))
                .child("candidate", [Step::skill("ask", "demo.answer", Value::Null)])
                .into()
        };
        for (n, winner, votes) in [(5, "green", json!([2.0, 3.0, 3.0, 2.0, 3.0])), (2, "blue", json!([1.0, 1.0]))] {
            let flujo = Flujo::builder(Pipeline::new("vote", vec![vote(n)]))
                .skills(Arc::new(skills.clone()))
                .policy("best_of_n", Arc::new(BestOfN))
                .build()
                .unwrap();
            let result = flujo.run(Value::Null).await.unwrap();
            assert_eq!(result.output, Some(json!(winner)));
            assert_eq!(result.step_history[0].metadata["votes"], votes);
        }
        let bad = Flujo::builder(Pipeline::new("vote", vec![vote(0)]))
            .skills(Arc::new(skills))
            .policy("best_of_n", Arc::new(BestOfN))
            .build()
            .unwrap();
        let result = bad.run(Value::Null).await.unwrap();
        assert_eq!(result.status, RunStatus::Failed);
        assert!(result.step_history[0].feedback.as_deref().unwrap_or_default().contains("from 1 to 100"));
    }

    /// The same pipeline in YAML: the kind is named in `LoadOptions::custom_kinds`, its own keys become the
    /// spec and `children:` its child sequences.
    #[test]
    fn the_yaml_form_is_the_same_pipeline() {
        let yaml = r#"
version: "0.1"
name: headline
steps:
  - name: headline
    kind: best_of_n
    n: 3
    score: output.score
    children:
      candidate:
        - name: draft
          agent: {id: demo.draft}
        - name: rate
          kind: hitl
          message: "Rate '{{ previous_step }}' from 0 to 10"
          input_schema: {type: integer, minimum: 0, maximum: 10}
        - name: rated
          agent:
            id: flujo.builtins.transform
            params: {expr: "{'headline': steps.draft, 'score': previous_step}"}
  - name: publish
    agent: {id: flujo.builtins.transform, params: {expr: "'Published: ' ~ previous_step.headline"}}
"#;
        let skills = skills(Arc::default());
        let opts = flujo::blueprint::LoadOptions {
            registry: Some(&skills),
            custom_kinds: vec!["best_of_n".to_owned()],
            ..Default::default()
        };
        let loaded = flujo::blueprint::load_str(yaml, std::path::Path::new("headline.yaml"), &opts).unwrap();
        assert_eq!(loaded.pipeline, pipeline());
        // Without the kind registered, the blueprint is refused (what `flujo run` does).
        let plain = flujo::blueprint::LoadOptions { registry: Some(&skills), ..Default::default() };
        let err = flujo::blueprint::load_str(yaml, std::path::Path::new("headline.yaml"), &plain).unwrap_err();
        assert_eq!(err.diagnostics[0].rule, "BP-UNKNOWN-KIND");
    }

    /// A kind that makes one call itself, with no child step: `journaled_call` at a path under the step's own
    /// (`P/ask`) journals the answer, so when the policy body runs again after the pause in its child, the
    /// recorded answer comes back and the skill is not called again.
    struct AskThenReview(Arc<dyn Skill>);

    #[async_trait]
    impl StepPolicy for AskThenReview {
        async fn execute(&self, mut f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
            let path = format!("{}/ask", f.path);
            let (core, step, run, this) = (f.core, f.step, f.run, f.lex.this);
            let input = std::mem::take(&mut f.input);
            let call = core.journaled_call(step, &self.0, "demo.ask", "ask", input, f.ctx, this, path, run).await?;
            let (answer, (tokens, cost_usd)) = match call {
                Ok(answered) => answered,
                Err((message, _usage)) => return Ok(PolicyOutcome::failure(Value::Null, message)),
            };
            let review = f.run_child("review", 0, answer).await?;
            let mut o = PolicyOutcome::success(review.output);
            o.tokens = tokens;
            o.tokens.add(review.tokens);
            o.cost_usd = cost_usd + review.cost_usd;
            Ok(o)
        }
    }

    #[tokio::test]
    async fn a_policy_call_is_journaled_and_replayed() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut skills = Skills::new();
        let counter = calls.clone();
        skills.register_fn("demo.ask", SideEffects::Yes, move |call: SkillCall| {
            counter.fetch_add(1, Ordering::SeqCst);
            let draft = format!("draft of {}", call.input.as_str().unwrap_or_default());
            async move { Ok(SkillOutput::value(json!(draft))) }
        });
        let ask = skills.resolve("demo.ask", &Value::Null).unwrap();
        let step = Step::custom("ask", "ask_then_review", Value::Null)
            .child("review", [Step::hitl("approve", "Approve {{ previous_step }}?", None)])
            .into();
        let flujo = Flujo::builder(Pipeline::new("ask", vec![step]))
            .store(Arc::new(MemoryStore::new()))
            .skills(Arc::new(skills))
            .policy("ask_then_review", Arc::new(AskThenReview(ask)))
            .build()
            .unwrap();
        let paused = flujo.run(json!("x")).await.unwrap();
        assert_eq!(paused.pending[0].message, "Approve draft of x?");
        let done = flujo.resume(&paused.run_id, json!("ok")).await.unwrap();
        assert_eq!(done.output, Some(json!("ok")));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the body ran twice, the call once");
        let journal = flujo.client().unwrap().journal(&done.run_id).await.unwrap();
        let paths: Vec<(&str, &str)> = journal.iter().map(|r| (r.path.as_str(), r.kind.as_str())).collect();
        assert_eq!(paths, [("0/ask", "ask"), ("0/review:0/0", "hitl"), ("0", "ask_then_review")]);
        assert!(flujo.client().unwrap().replay(&done.run_id).await.unwrap().matches);
    }

    /// The guide shows this file as it is.
    #[test]
    fn the_guide_shows_this_file() {
        let guide = include_str!("../../../docs/custom-step-kinds.md");
        let this = include_str!("custom_step_kind.rs");
        assert!(
            guide.contains(&format!("```rust\n{this}```\n")),
            "docs/custom-step-kinds.md must hold this file verbatim"
        );
    }
}
