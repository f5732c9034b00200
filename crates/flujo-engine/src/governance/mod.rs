//! Governance (SPEC §11): the ordered chain of [`GovernancePolicy`]s every agent, tool and skill call passes
//! before it is made, the built-in policies, and their configuration (`[governance]` in `flujo.toml`).
//!
//! The chain ([`GovernanceChain`]) asks each policy in order with an immutable [`GovernanceRequest`]; a
//! `Modify` replaces the input the later policies (and the call) see; the first `Deny` stops: the call is not
//! made and the run ends with [`Interrupt::GovernanceDenied`] (no retry, no fallback). Every decision is
//! returned as a [`DecisionRecord`] that the engine puts in the step's journal record (`metadata.governance`),
//! sends as a `flujo::governance` tracing event, and counts ([`GovernanceStats`]). An empty chain costs one
//! length check per call.
//!
//! Built-in policies ([`builtin`]): `allow_all`, `deny_all`, `deny`, `pii_scrub` ([`pii`]), `tool_allowlist`,
//! `model_allowlist`, `max_input_chars`, and `command` ([`command`]: an external program, the same
//! JSON-lines contract for any language). [`GovernanceConfig`] reads their settings and picks the chain of a
//! pipeline (`[governance.pipeline."GLOB"]` overrides the global one).

pub mod builtin;
pub mod command;
mod config;
pub mod pii;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flujo_core::{CallKind, ContextSnapshot, GovernanceDecision, GovernancePolicy, GovernanceRequest, Interrupt};
use serde_json::{json, Value};

pub use config::{ChainSource, GovernanceConfig};

/// One policy's decision about one call, as journaled.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRecord {
    /// The policy's name.
    pub policy: String,
    /// `allow`, `deny` or `modify`.
    pub decision: &'static str,
    /// The reason of a denial, or the note of a modification.
    pub detail: Option<String>,
}

impl DecisionRecord {
    /// The record's JSON (`{policy, decision, reason | note}`).
    pub fn to_json(&self) -> Value {
        let mut v = json!({"policy": self.policy, "decision": self.decision});
        if let (Some(detail), Some(obj)) = (&self.detail, v.as_object_mut()) {
            let key = if self.decision == "deny" { "reason" } else { "note" };
            obj.insert(key.to_owned(), Value::String(detail.clone()));
        }
        v
    }
}

/// Decisions counted since the runner was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GovernanceStats {
    /// Calls every policy allowed (possibly modified).
    pub allowed: u64,
    /// Calls denied.
    pub denied: u64,
    /// Modifications made (one per modifying policy per call).
    pub modified: u64,
}

/// The ordered policies of a runner, with their counters.
#[derive(Default)]
pub struct GovernanceChain {
    policies: Vec<Arc<dyn GovernancePolicy>>,
    allowed: AtomicU64,
    denied: AtomicU64,
    modified: AtomicU64,
}

impl std::fmt::Debug for GovernanceChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GovernanceChain").field("policies", &self.names()).finish()
    }
}

/// What a call is, for the chain.
#[derive(Debug, Clone, Copy)]
pub struct CallView<'a> {
    /// The run's id.
    pub run_id: &'a str,
    /// The path of the step execution making the call.
    pub path: &'a str,
    /// The step's name.
    pub step: &'a str,
    /// The skill, tool or model.
    pub target: &'a str,
    /// What the target is.
    pub kind: CallKind,
    /// The run's context as the call sees it.
    pub context: &'a ContextSnapshot,
}

impl GovernanceChain {
    /// A chain of `policies`, asked in this order.
    pub fn new(policies: Vec<Arc<dyn GovernancePolicy>>) -> Self {
        GovernanceChain { policies, ..Default::default() }
    }

    /// True when there is no policy (every call is allowed as it is).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The policies' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.policies.iter().map(|p| p.name().to_owned()).collect()
    }

    /// The counters so far.
    pub fn stats(&self) -> GovernanceStats {
        GovernanceStats {
            allowed: self.allowed.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            modified: self.modified.load(Ordering::Relaxed),
        }
    }

    /// Asks every policy about the call of `view.target` with `input`: the input to call with and the
    /// decisions, or the interrupt of a denial (with the decisions made up to it).
    pub async fn check(&self, view: CallView<'_>, input: Value) -> Result<(Value, Vec<DecisionRecord>), Interrupt> {
        let mut input = input;
        let mut records = Vec::with_capacity(self.policies.len());
        for policy in &self.policies {
            let req = GovernanceRequest::new(view.run_id, view.path, view.step, view.target, &input)
                .with_kind(view.kind)
                .with_context(view.context);
            let decision = policy.evaluate(&req).await;
            match decision {
                GovernanceDecision::Allow => {
                    tracing::debug!(target: "flujo::governance", run_id = view.run_id, path = view.path,
                        policy = policy.name(), call = view.target, decision = "allow");
                    records.push(DecisionRecord { policy: policy.name().to_owned(), decision: "allow", detail: None });
                }
                GovernanceDecision::Modify { input: replaced, note } => {
                    tracing::info!(target: "flujo::governance", run_id = view.run_id, path = view.path,
                        policy = policy.name(), call = view.target, decision = "modify", note = note.as_str());
                    self.modified.fetch_add(1, Ordering::Relaxed);
                    input = replaced;
                    records.push(DecisionRecord {
                        policy: policy.name().to_owned(),
                        decision: "modify",
                        detail: Some(note),
                    });
                }
                GovernanceDecision::Deny(reason) => {
                    tracing::warn!(target: "flujo::governance", run_id = view.run_id, path = view.path,
                        policy = policy.name(), call = view.target, decision = "deny", reason = reason.as_str());
                    self.denied.fetch_add(1, Ordering::Relaxed);
                    return Err(Interrupt::GovernanceDenied {
                        path: view.path.to_owned(),
                        policy: policy.name().to_owned(),
                        target: view.target.to_owned(),
                        reason,
                    });
                }
            }
        }
        self.allowed.fetch_add(1, Ordering::Relaxed);
        Ok((input, records))
    }
}

/// `*` and `?` glob matching (no character classes), for skill, tool, model and pipeline names.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("openai:*", "openai:gpt-4o"));
        assert!(glob_match("*", ""));
        assert!(glob_match("shell.?un", "shell.run"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(!glob_match("openai:*", "anthropic:claude"));
        assert!(glob_match("support_*", "support_triage"));
    }
}
