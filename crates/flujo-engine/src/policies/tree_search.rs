//! `kind: tree_search` (the original's `TreeSearchStep`): a best-first beam search over candidates.
//!
//! The step input is the root node. Repeatedly the best open node (lowest `f = g + h`, then `g`, depth, id) is
//! taken off the frontier; a node whose score reaches `goal_score_threshold` (and is not a hard failure) ends
//! the search; a node at `max_depth` is not expanded; otherwise the proposer is asked for `branching_factor`
//! candidates, and each new one (empty ones dropped, duplicates anywhere in the tree dropped, those violating a
//! static invariant dropped) is scored by the evaluator: `h = 1 - score` (infinite for a hard failure),
//! `g = depth`. The frontier then keeps its best `beam_width` nodes. The output is the winning candidate, or
//! the best one seen when no candidate reached the threshold (a failure with `require_goal`).
//!
//! Every proposer call is journaled at `P/node:N/propose` and every evaluator call at `P/node:N/eval:J` (`N`
//! the expanded node, `J` the candidate's index in the proposal). The search is a deterministic function of
//! those answers, so a run killed mid-search resumes by replaying them and no call is made twice.

use std::collections::HashSet;

use async_trait::async_trait;
use flujo_core::{AgentRef, Interrupt, StepKind, TokenUsage, TreeSearchSpec, Value};
use serde_json::json;

use crate::executor::child_path;
use crate::policy::{ExecutionFrame, PolicyOutcome, StepPolicy};

/// The policy of `kind: tree_search`: a best-first beam search in which a proposer agent suggests
/// candidates and an evaluator agent scores them, until a candidate reaches the goal score or the search
/// runs out; every call is journaled, so a resumed search makes no call twice.
pub struct TreeSearchPolicy;

/// How many invariant violations the proposer is told about (the latest ones), as in the original.
const VIOLATIONS_KEPT: usize = 5;

struct Node {
    parent: Option<usize>,
    depth: u32,
    candidate: Value,
    g: f64,
    f: f64,
    score: f64,
    hard: bool,
}

impl Node {
    fn key(&self, id: usize) -> (f64, f64, u32, usize) {
        (self.f, self.g, self.depth, id)
    }
}

fn cmp_key(a: (f64, f64, u32, usize), b: (f64, f64, u32, usize)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3))
}

/// JSON with object keys sorted (for prompts and for duplicate detection), a string as itself.
fn fmt(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    match v {
        Value::String(s) => s.clone(),
        other => sorted(other).to_string(),
    }
}

fn fingerprint(v: &Value) -> blake3::Hash {
    let canonical = match v {
        Value::String(s) => format!("s{s}"),
        other => format!("j{}", fmt(other)),
    };
    blake3::hash(canonical.as_bytes())
}

/// The original's path summary: the newest parts that fit `max_tokens` (a part costs `len / 2.5` tokens, at
/// least 1; the newest is always kept), oldest first, marked when parts were dropped.
fn summarize(parts: &[String], max_tokens: u32) -> String {
    let mut kept: Vec<&String> = Vec::new();
    let mut running = 0usize;
    for (i, part) in parts.iter().rev().enumerate() {
        let t = ((("assistant: ".len() + part.len()) as f64 / 2.5) as usize).max(1);
        if i > 0 && running + t > max_tokens as usize {
            break;
        }
        running += t;
        kept.push(part);
    }
    kept.reverse();
    let body = kept.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n");
    if kept.len() < parts.len() {
        format!("... (summarized) ...\n{body}")
    } else {
        body
    }
}

/// The candidates a proposer answered: a list; an object's `candidates`, `steps` or `proposals` list (else the
/// object itself); a string holding JSON, or else one candidate per non-empty line (list markers stripped).
fn extract_candidates(out: &Value) -> Vec<Value> {
    match out {
        Value::Null => Vec::new(),
        Value::Array(items) => items.clone(),
        Value::Object(m) => ["candidates", "steps", "proposals"]
            .iter()
            .find_map(|k| m.get(*k).and_then(Value::as_array).cloned())
            .unwrap_or_else(|| vec![out.clone()]),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(v @ (Value::Array(_) | Value::Object(_))) => extract_candidates(&v),
            _ => {
                let lines: Vec<Value> = s
                    .lines()
                    .map(|l| l.trim_matches(|c: char| c == ' ' || c == '-' || c == '*' || c == '\t'))
                    .filter(|l| !l.is_empty())
                    .map(|l| Value::String(l.to_owned()))
                    .collect();
                if lines.is_empty() {
                    vec![out.clone()]
                } else {
                    lines
                }
            }
        },
        other => vec![other.clone()],
    }
}

fn is_empty_candidate(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// An evaluator's answer as `(score in 0..=1, hard failure)`: a number (or a string holding one, or a boolean);
/// an object's first number among `score`, `rubric_score`, `ratio`, a hard failure when `hard_fail` is true or
/// one of `hard_check_passed`, `objective_passed`, `passed` is false; a string holding such JSON. Anything
/// else scores 0.
fn score_evaluation(out: &Value) -> (f64, bool) {
    let clamp = |x: f64| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
    match out {
        Value::Number(n) => (clamp(n.as_f64().unwrap_or(0.0)), false),
        Value::Bool(b) => (if *b { 1.0 } else { 0.0 }, false),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(x) => (clamp(x), false),
            Err(_) => match serde_json::from_str::<Value>(s) {
                Ok(v @ Value::Object(_)) => score_evaluation(&v),
                _ => (0.0, false),
            },
        },
        Value::Object(m) => {
            let score = ["score", "rubric_score", "ratio"]
                .iter()
                .find_map(|k| m.get(*k).and_then(|v| v.as_f64().or_else(|| v.as_str()?.trim().parse().ok())))
                .map_or(0.0, clamp);
            let hard = m.get("hard_fail") == Some(&Value::Bool(true))
                || ["hard_check_passed", "objective_passed", "passed"]
                    .iter()
                    .any(|k| m.get(*k) == Some(&Value::Bool(false)));
            (score, hard)
        }
        _ => (0.0, false),
    }
}

struct Search<'s> {
    spec: &'s TreeSearchSpec,
    nodes: Vec<Node>,
    open: Vec<usize>,
    closed: HashSet<blake3::Hash>,
    violations: Vec<Value>,
    tokens: TokenUsage,
    cost: f64,
}

impl Search<'_> {
    fn accept(&self, id: usize) -> bool {
        let n = &self.nodes[id];
        !n.hard && n.score >= self.spec.goal_score_threshold
    }

    fn pop_best(&mut self) -> Option<usize> {
        let (pos, _) = self
            .open
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| cmp_key(self.nodes[**a].key(**a), self.nodes[**b].key(**b)))?;
        Some(self.open.swap_remove(pos))
    }

    fn path(&self, mut id: usize) -> Vec<String> {
        let mut parts = vec![fmt(&self.nodes[id].candidate)];
        while let Some(p) = self.nodes[id].parent {
            parts.push(fmt(&self.nodes[p].candidate));
            id = p;
        }
        parts.reverse();
        parts
    }

    /// The better of two nodes: the higher score, then the lower `f`.
    fn better(&self, best: Option<usize>, id: usize) -> Option<usize> {
        match best {
            None => Some(id),
            Some(b) => {
                let (nb, ni) = (&self.nodes[b], &self.nodes[id]);
                if ni.score > nb.score || (ni.score == nb.score && ni.f < nb.f) {
                    Some(id)
                } else {
                    Some(b)
                }
            }
        }
    }

    fn prompt(&self, objective: &str, path_summary: &str, candidate: &Value, proposer: bool) -> String {
        let mut sections = vec![format!("Primary Objective: {objective}")];
        if !path_summary.is_empty() {
            sections.push(format!("Path Summary:\n{path_summary}"));
        }
        if proposer && !self.violations.is_empty() {
            let lines: Vec<String> = self
                .violations
                .iter()
                .map(|v| {
                    format!(
                        "- {} ({})",
                        v["rule"].as_str().unwrap_or_default(),
                        v["reason"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            sections.push(format!("Invariant Violations:\n{}", lines.join("\n")));
        }
        sections.push(format!("Candidate:\n{}", fmt(candidate)));
        if proposer {
            sections.push(format!("Propose {} next steps.", self.spec.branching_factor));
        }
        sections.join("\n\n")
    }
}

/// What an agent receives: the prompt text for a model; for a skill, the parts as JSON (and the prompt).
fn agent_input(agent: &AgentRef, prompt: String, parts: Value) -> Value {
    match agent {
        AgentRef::Skill { .. } => {
            let mut parts = parts;
            parts["prompt"] = Value::String(prompt);
            parts
        }
        _ => Value::String(prompt),
    }
}

#[async_trait]
impl StepPolicy for TreeSearchPolicy {
    async fn execute(&self, f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
        let StepKind::TreeSearch(spec) = &f.step.kind else {
            return Ok(PolicyOutcome::failure(Value::Null, "tree_search policy used for another kind"));
        };
        let (Some(proposer), Some(evaluator)) =
            (f.core.prepared.agent(&spec.proposer), f.core.prepared.agent(&spec.evaluator))
        else {
            return Ok(PolicyOutcome::failure(Value::Null, "the agents were not resolved when the runner was built"));
        };
        let p_target = crate::executor::agent_target(&spec.proposer);
        let e_target = crate::executor::agent_target(&spec.evaluator);
        let objective = match f.ctx.field("initial_prompt").map(|v| fmt(v)) {
            Some(p) if !p.trim().is_empty() && p != "null" => p,
            _ => fmt(&f.input),
        };
        let mut s = Search {
            spec,
            nodes: vec![Node {
                parent: None,
                depth: 0,
                candidate: f.input.clone(),
                g: 0.0,
                f: 1.0,
                score: 0.0,
                hard: false,
            }],
            open: vec![0],
            closed: HashSet::from([fingerprint(&f.input)]),
            violations: Vec::new(),
            tokens: TokenUsage::default(),
            cost: 0.0,
        };
        let max_iterations = spec.max_iterations.unwrap_or(flujo_core::limits::MAX_ITERATIONS);
        let (mut iterations, mut expansions) = (0u32, 0u32);
        let mut best: Option<usize> = None;
        let mut winner: Option<usize> = None;
        let ctx: &flujo_core::Context = f.ctx;
        'search: while iterations < max_iterations {
            let Some(cur) = s.pop_best() else { break };
            iterations += 1;
            if cur > 0 && s.accept(cur) {
                winner = Some(cur);
                break;
            }
            if s.nodes[cur].depth >= spec.max_depth {
                continue;
            }
            let path_summary = summarize(&s.path(cur), spec.path_max_tokens);
            let node_path = child_path(f.path, format_args!("node:{cur}"));
            let candidate = s.nodes[cur].candidate.clone();
            let prompt = s.prompt(&objective, &path_summary, &candidate, true);
            let input = agent_input(
                &spec.proposer,
                prompt,
                json!({"purpose": "proposer", "objective": objective, "path_summary": path_summary,
                       "candidate": candidate, "k": spec.branching_factor, "depth": s.nodes[cur].depth}),
            );
            let proposal_path = child_path(&node_path, "propose");
            let proposal = match call(&f, &mut s, proposer, p_target, "proposer", input, proposal_path).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    return Ok(finish(
                        &s,
                        PolicyOutcome::failure(Value::Null, format!("the proposer failed at node {cur}: {e}")),
                        iterations,
                        expansions,
                        best,
                        false,
                    ));
                }
                Err(e) => return stopped(&f, &s, e, best),
            };
            let mut candidates = extract_candidates(&proposal);
            candidates.truncate(spec.branching_factor as usize);
            for (j, c) in candidates.into_iter().enumerate() {
                if is_empty_candidate(&c) {
                    continue;
                }
                let h = fingerprint(&c);
                if !s.closed.insert(h) {
                    continue;
                }
                let mut violated = None;
                for rule in &spec.static_invariants {
                    match f.core.eval_bool_with(rule, &c, ctx, f.lex, &[("output", &c)]) {
                        Ok(true) => {}
                        Ok(false) => violated = Some((rule, "violated".to_owned())),
                        Err(e) => violated = Some((rule, format!("expression error: {e}"))),
                    }
                    if violated.is_some() {
                        break;
                    }
                }
                if let Some((rule, reason)) = violated {
                    s.violations.push(json!({"rule": rule, "reason": reason, "node": cur, "candidate": c}));
                    if s.violations.len() > VIOLATIONS_KEPT {
                        s.violations.remove(0);
                    }
                    continue;
                }
                let prompt = s.prompt(&objective, &path_summary, &c, false);
                let input = agent_input(
                    &spec.evaluator,
                    prompt,
                    json!({"purpose": "evaluator", "objective": objective, "path_summary": path_summary,
                           "candidate": c, "depth": s.nodes[cur].depth + 1}),
                );
                let eval_path = child_path(&node_path, format_args!("eval:{j}"));
                let verdict = match call(&f, &mut s, evaluator, e_target, "evaluator", input, eval_path).await {
                    Ok(Ok(v)) => v,
                    Ok(Err(e)) => {
                        return Ok(finish(
                            &s,
                            PolicyOutcome::failure(
                                Value::Null,
                                format!("the evaluator failed on candidate {j} of node {cur}: {e}"),
                            ),
                            iterations,
                            expansions,
                            best,
                            false,
                        ));
                    }
                    Err(e) => return stopped(&f, &s, e, best),
                };
                let (score, hard) = score_evaluation(&verdict);
                let depth = s.nodes[cur].depth + 1;
                let g = f64::from(depth);
                let h_cost = if hard { f64::INFINITY } else { (1.0 - score).max(0.0) };
                s.nodes.push(Node { parent: Some(cur), depth, candidate: c, g, f: g + h_cost, score, hard });
                let id = s.nodes.len() - 1;
                s.open.push(id);
                best = s.better(best, id);
                if s.accept(id) {
                    winner = Some(id);
                    expansions += 1;
                    break 'search;
                }
            }
            expansions += 1;
            let nodes = &s.nodes;
            s.open.sort_by(|a, b| cmp_key(nodes[*a].key(*a), nodes[*b].key(*b)));
            s.open.truncate(spec.beam_width as usize);
        }
        let goal = winner.is_some();
        let Some(chosen) = winner.or(best) else {
            let o = PolicyOutcome::failure(Value::Null, "tree_search produced no viable candidate");
            return Ok(finish(&s, o, iterations, expansions, None, false));
        };
        let output = s.nodes[chosen].candidate.clone();
        let o = if goal || !spec.require_goal {
            PolicyOutcome::success(output)
        } else {
            PolicyOutcome::failure(
                output,
                format!(
                    "no candidate reached goal_score_threshold {} (best score {})",
                    spec.goal_score_threshold, s.nodes[chosen].score
                ),
            )
        };
        Ok(finish(&s, o, iterations, expansions, Some(chosen), goal))
    }
}

fn finish(
    s: &Search<'_>,
    mut o: PolicyOutcome,
    iterations: u32,
    expansions: u32,
    best: Option<usize>,
    goal: bool,
) -> PolicyOutcome {
    o.tokens = s.tokens;
    o.cost_usd = s.cost;
    o.metadata.insert("goal_reached".into(), goal.into());
    o.metadata.insert("iterations".into(), iterations.into());
    o.metadata.insert("expansions".into(), expansions.into());
    o.metadata.insert("nodes".into(), s.nodes.len().into());
    if let Some(b) = best {
        o.metadata.insert("best_node".into(), b.into());
        o.metadata.insert("best_score".into(), json!(s.nodes[b].score));
    }
    if !s.violations.is_empty() {
        o.metadata.insert("invariant_violations".into(), Value::Array(s.violations.clone()));
    }
    o
}

/// One journaled proposer or evaluator call, its usage added to the search's: the output, or the failure's
/// message; `Err` when the run is stopped (budget, cancellation).
async fn call(
    f: &ExecutionFrame<'_>,
    s: &mut Search<'_>,
    skill: &std::sync::Arc<dyn flujo_core::Skill>,
    target: &str,
    kind: &str,
    input: Value,
    path: String,
) -> Result<Result<Value, String>, Interrupt> {
    let ctx: &flujo_core::Context = f.ctx;
    let r = f.core.journaled_call(f.step, skill, target, kind, input, ctx, f.lex.this, path, f.run).await?;
    let ((t, c), out) = match r {
        Ok((v, usage)) => (usage, Ok(v)),
        Err((e, usage)) => (usage, Err(e)),
    };
    s.tokens.add(t);
    s.cost += c;
    Ok(out)
}

/// The budget (or a cancellation) stopped the search: the calls already paid for stay in the step's figures.
fn stopped(
    f: &ExecutionFrame<'_>,
    s: &Search<'_>,
    e: Interrupt,
    best: Option<usize>,
) -> Result<PolicyOutcome, Interrupt> {
    let output = best.map_or(Value::Null, |b| s.nodes[b].candidate.clone());
    crate::executor::stopped_outcome(f.run, e, output, s.tokens, s.cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_and_scores_are_read_like_the_original() {
        assert_eq!(extract_candidates(&json!(["a", "b"])), vec![json!("a"), json!("b")]);
        assert_eq!(extract_candidates(&json!({"steps": [1, 2]})), vec![json!(1), json!(2)]);
        assert_eq!(extract_candidates(&json!({"x": 1})), vec![json!({"x": 1})]);
        assert_eq!(extract_candidates(&json!("- first\n* second\n\n")), vec![json!("first"), json!("second")]);
        assert_eq!(extract_candidates(&json!("[\"a\"]")), vec![json!("a")]);
        assert!(extract_candidates(&Value::Null).is_empty());
        assert_eq!(score_evaluation(&json!(0.25)), (0.25, false));
        assert_eq!(score_evaluation(&json!(7)), (1.0, false));
        assert_eq!(score_evaluation(&json!("0.8")), (0.8, false));
        assert_eq!(score_evaluation(&json!({"rubric_score": 0.5, "hard_fail": false})), (0.5, false));
        assert_eq!(score_evaluation(&json!({"score": 0.9, "passed": false})), (0.9, true));
        assert_eq!(score_evaluation(&json!("{\"score\": 0.4, \"hard_fail\": true}")), (0.4, true));
        assert_eq!(score_evaluation(&json!("great")), (0.0, false));
    }

    #[test]
    fn path_summaries_keep_the_newest_parts() {
        let parts: Vec<String> = (0..5).map(|i| format!("{i}{}", "x".repeat(500))).collect();
        let s = summarize(&parts, 450);
        assert!(s.starts_with("... (summarized) ...\n3"), "{s}");
        assert!(s.ends_with(&parts[4]));
        assert_eq!(summarize(&parts[..1], 10), parts[0]);
    }
}
