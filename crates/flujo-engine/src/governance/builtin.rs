//! The built-in governance policies that decide from the call alone: `allow_all`, `deny_all`, `deny`
//! (patterns on the input, on skill and tool ids, on models), `tool_allowlist`, `model_allowlist` and
//! `max_input_chars`. `pii_scrub` is in [`super::pii`], `command` in [`super::command`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use flujo_core::{CallKind, GovernanceDecision, GovernancePolicy, GovernanceRequest};
use regex::Regex;
use serde_json::Value;

use super::glob_match;

/// Allows every call (the default when no policy is configured).
#[derive(Debug, Default)]
pub struct AllowAll;

#[async_trait]
impl GovernancePolicy for AllowAll {
    fn name(&self) -> &str {
        "allow_all"
    }
    async fn evaluate(&self, _: &GovernanceRequest<'_>) -> GovernanceDecision {
        GovernanceDecision::Allow
    }
}

/// Denies every call (a kill switch).
#[derive(Debug, Default)]
pub struct DenyAll;

#[async_trait]
impl GovernancePolicy for DenyAll {
    fn name(&self) -> &str {
        "deny_all"
    }
    async fn evaluate(&self, _: &GovernanceRequest<'_>) -> GovernanceDecision {
        GovernanceDecision::Deny("every call is denied (deny_all)".to_owned())
    }
}

/// Calls every string in `v` (values, not keys) until it returns `Some`.
pub(crate) fn find_in_strings<T>(v: &Value, f: &mut impl FnMut(&str) -> Option<T>) -> Option<T> {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().find_map(|i| find_in_strings(i, f)),
        Value::Object(map) => map.values().find_map(|i| find_in_strings(i, f)),
        _ => None,
    }
}

/// `deny`: denies a call whose input (any string in it) matches one of `input_patterns` (regular
/// expressions), a skill or tool call whose id matches one of `targets` (globs), or a model call whose model
/// matches one of `models` (globs).
#[derive(Debug, Default)]
pub struct Deny {
    /// Regular expressions searched in every string of the input.
    pub input_patterns: Vec<Regex>,
    /// Globs on skill and tool ids.
    pub targets: Vec<String>,
    /// Globs on models (`provider:model`).
    pub models: Vec<String>,
}

#[async_trait]
impl GovernancePolicy for Deny {
    fn name(&self) -> &str {
        "deny"
    }
    async fn evaluate(&self, req: &GovernanceRequest<'_>) -> GovernanceDecision {
        let names = if req.kind == CallKind::Model { &self.models } else { &self.targets };
        if let Some(g) = names.iter().find(|g| glob_match(g, req.target)) {
            return GovernanceDecision::Deny(format!(
                "{} '{}' matches the denied pattern '{g}'",
                req.kind.as_str(),
                req.target
            ));
        }
        let hit = find_in_strings(req.input, &mut |s| self.input_patterns.iter().find(|re| re.is_match(s)));
        match hit {
            Some(re) => GovernanceDecision::Deny(format!("the input matches the denied pattern '{}'", re.as_str())),
            None => GovernanceDecision::Allow,
        }
    }
}

/// `tool_allowlist`: a tool call is allowed only when the tool's id matches `tools` (every agent) or the
/// list of its step in `steps` (the agentic step whose agent calls it). Other calls are not its concern.
#[derive(Debug, Default)]
pub struct ToolAllowlist {
    /// Globs of tools any agent may call.
    pub tools: Vec<String>,
    /// Step name → globs of tools that step's agent may call (in addition to `tools`).
    pub steps: BTreeMap<String, Vec<String>>,
}

#[async_trait]
impl GovernancePolicy for ToolAllowlist {
    fn name(&self) -> &str {
        "tool_allowlist"
    }
    async fn evaluate(&self, req: &GovernanceRequest<'_>) -> GovernanceDecision {
        if req.kind != CallKind::Tool {
            return GovernanceDecision::Allow;
        }
        let step = self.steps.get(req.step).map(Vec::as_slice).unwrap_or_default();
        if self.tools.iter().chain(step).any(|g| glob_match(g, req.target)) {
            GovernanceDecision::Allow
        } else {
            GovernanceDecision::Deny(format!("tool '{}' is not allowed for step '{}'", req.target, req.step))
        }
    }
}

/// `model_allowlist`: a model call is allowed only when the model matches one of `models` (globs).
#[derive(Debug, Default)]
pub struct ModelAllowlist {
    /// Globs of the models that may be called.
    pub models: Vec<String>,
}

#[async_trait]
impl GovernancePolicy for ModelAllowlist {
    fn name(&self) -> &str {
        "model_allowlist"
    }
    async fn evaluate(&self, req: &GovernanceRequest<'_>) -> GovernanceDecision {
        if req.kind != CallKind::Model || self.models.iter().any(|g| glob_match(g, req.target)) {
            GovernanceDecision::Allow
        } else {
            GovernanceDecision::Deny(format!("model '{}' is not in the allowlist", req.target))
        }
    }
}

/// `max_input_chars`: denies a call whose input is longer than `limit` characters (a string's characters;
/// another value's JSON text).
#[derive(Debug)]
pub struct MaxInputChars {
    /// The most characters an input may have.
    pub limit: usize,
}

#[async_trait]
impl GovernancePolicy for MaxInputChars {
    fn name(&self) -> &str {
        "max_input_chars"
    }
    async fn evaluate(&self, req: &GovernanceRequest<'_>) -> GovernanceDecision {
        let n = match req.input {
            Value::String(s) => s.chars().count(),
            other => serde_json::to_string(other).map(|t| t.chars().count()).unwrap_or(0),
        };
        if n > self.limit {
            GovernanceDecision::Deny(format!("the input has {n} characters; the limit is {}", self.limit))
        } else {
            GovernanceDecision::Allow
        }
    }
}
