//! Governance from Rust: a `GovernancePolicy` registered on the builder sees every skill call with its kind,
//! target, input and context; `Modify` changes what the skill receives (and is journaled with its note);
//! `Deny` stops the run with `governance_denied` before the call, without retry or fallback; the chain's
//! counters add up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flujo_core::*;
use flujo_engine::{Flujo, RunOptions};
use flujo_skills::{BuiltinRegistry, CallCounter, CountingSkill};
use serde_json::json;

/// What the policy was asked: target, kind, step, the context's `tenant`.
type Asked = (String, CallKind, String, Option<Value>);

/// Denies inputs containing "secret", upper-cases inputs containing "shout", allows the rest; remembers what
/// it was asked.
#[derive(Default)]
struct Gate {
    seen: Mutex<Vec<Asked>>,
}

#[async_trait]
impl GovernancePolicy for Gate {
    fn name(&self) -> &str {
        "gate"
    }
    async fn evaluate(&self, req: &GovernanceRequest<'_>) -> GovernanceDecision {
        let tenant = req.context.and_then(|c| c.field("tenant")).map(|v| (**v).clone());
        self.seen.lock().unwrap().push((req.target.to_owned(), req.kind, req.step.to_owned(), tenant));
        match req.input.as_str() {
            Some(s) if s.contains("secret") => GovernanceDecision::Deny("no secrets".into()),
            Some(s) if s.contains("shout") => {
                GovernanceDecision::Modify { input: json!(s.to_uppercase()), note: "upper-cased".into() }
            }
            _ => GovernanceDecision::Allow,
        }
    }
}

fn pipeline() -> Pipeline {
    let mut step = Step::skill("echo", "test.count", Value::Null);
    step.config.max_retries = 3;
    let step = step.with_fallback(Step::skill("fallback", "flujo.builtins.transform", json!({"expr": "'fell back'"})));
    Pipeline::new("governed", vec![step])
}

#[tokio::test]
async fn a_custom_policy_allows_modifies_and_denies() {
    let counter = CallCounter::default();
    let mut reg = BuiltinRegistry::new();
    CountingSkill::new(counter.clone()).register(&mut reg, "test.count");
    let gate = Arc::new(Gate::default());
    let flujo = Flujo::builder(pipeline())
        .skills(Arc::new(reg))
        .store(Arc::new(flujo_store::MemoryStore::new()))
        .governance(gate.clone())
        .build()
        .unwrap();
    assert_eq!(flujo.governance_policies(), vec!["gate"]);

    let mut ctx = Map::new();
    ctx.insert("tenant".into(), json!("acme"));
    let r = flujo.run_with(RunOptions::new(json!("hello")).context(ctx)).await.unwrap();
    assert_eq!(r.output, Some(json!("hello")));
    let seen = gate.seen.lock().unwrap().clone();
    assert_eq!(seen, vec![("test.count".to_owned(), CallKind::Skill, "echo".to_owned(), Some(json!("acme")))]);

    let r = flujo.run(json!("please shout")).await.unwrap();
    assert_eq!(r.output, Some(json!("PLEASE SHOUT")), "the skill received the modified input");
    assert_eq!(
        r.step_history[0].metadata["governance"],
        json!([{"policy": "gate", "decision": "modify", "note": "upper-cased"}])
    );

    let calls_before = CountingSkill::count(&counter, "0");
    let r = flujo.run(json!("my secret")).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    let err = r.error.unwrap();
    assert_eq!(err.kind, "governance_denied");
    assert!(err.message.contains("'gate'") && err.message.contains("no secrets"), "{}", err.message);
    assert_eq!(CountingSkill::count(&counter, "0"), calls_before, "the denied call was not made, nor retried");
    assert_ne!(r.output, Some(json!("fell back")), "a denial does not run the fallback");

    let stats = flujo.governance_stats();
    assert_eq!((stats.allowed, stats.denied, stats.modified), (2, 1, 1));
}

#[tokio::test]
async fn no_policy_means_no_governance_metadata() {
    let counter = CallCounter::default();
    let mut reg = BuiltinRegistry::new();
    CountingSkill::new(counter).register(&mut reg, "test.count");
    let flujo = Flujo::builder(pipeline()).skills(Arc::new(reg)).build().unwrap();
    let r = flujo.run(json!("my secret")).await.unwrap();
    assert_eq!(r.output, Some(json!("my secret")));
    assert!(r.step_history[0].metadata.get("governance").is_none());
    assert_eq!(flujo.governance_stats().allowed, 0);
}
