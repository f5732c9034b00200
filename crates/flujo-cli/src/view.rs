//! Human-readable rendering: run summaries, live events, `dev explain` trees and Mermaid diagrams.

use std::fmt::Write;

use flujo_core::{Branch, Pipeline, RunEvent, RunResult, Step, StepKind, StepStatus};

fn children(step: &Step) -> Vec<(String, &[Step])> {
    match &step.kind {
        StepKind::Loop(l) => vec![("loop:i".into(), &l.body[..])],
        StepKind::Map(m) => vec![("map:i".into(), &m.body[..])],
        StepKind::Conditional(c) => {
            let mut v: Vec<(String, &[Step])> =
                c.branches.iter().map(|Branch { name: n, steps: s, .. }| (format!("branch:{n}"), &s[..])).collect();
            if let Some(d) = &c.default_branch {
                v.push(("default".into(), &d[..]));
            }
            v
        }
        StepKind::Parallel(p) => {
            p.branches.iter().map(|Branch { name: n, steps: s, .. }| (format!("branch:{n}"), &s[..])).collect()
        }
        StepKind::DynamicRouter(r) => {
            r.branches.iter().map(|Branch { name: n, steps: s, .. }| (format!("branch:{n}"), &s[..])).collect()
        }
        StepKind::Cache(c) => vec![("wrapped".into(), std::slice::from_ref(&*c.wrapped_step))],
        StepKind::Import(i) => vec![("import".into(), &i.pipeline.steps[..])],
        StepKind::StateMachine(sm) => {
            sm.states.iter().map(|Branch { name: n, steps: s, .. }| (format!("state:{n}@h"), &s[..])).collect()
        }
        _ => vec![],
    }
}

fn describe(step: &Step) -> String {
    match &step.kind {
        StepKind::Step { agent: Some(flujo_core::AgentRef::Skill { id, .. }) } => format!("step → {id}"),
        StepKind::Step { agent: Some(flujo_core::AgentRef::Model { model, .. }) } => format!("step → {model}"),
        StepKind::Step { agent: None } => "step (passthrough)".into(),
        StepKind::Loop(l) => format!(
            "loop (max_loops {}{})",
            l.max_loops,
            l.exit_expression.as_ref().map(|e| format!(", exit when {e}")).unwrap_or_default()
        ),
        StepKind::Map(m) => format!("map (concurrency {})", m.concurrency),
        StepKind::Conditional(c) => {
            format!("conditional on {}", c.condition_expression.as_deref().unwrap_or("the input"))
        }
        StepKind::Parallel(p) => {
            format!("parallel (merge {:?}, on failure {:?})", p.merge_strategy, p.on_branch_failure)
        }
        StepKind::Hitl(_) => "hitl (pauses for a human answer)".into(),
        other => other.name().to_owned(),
    }
}

fn explain_steps(out: &mut String, steps: &[Step], base: &str, depth: usize) {
    for (i, s) in steps.iter().enumerate() {
        let path = if base.is_empty() { i.to_string() } else { format!("{base}/{i}") };
        let _ = writeln!(out, "{}{} [{}] {}", "  ".repeat(depth), s.name, path, describe(s));
        for (seg, kids) in children(s) {
            explain_steps(out, kids, &format!("{path}/{seg}"), depth + 1);
        }
    }
}

/// A tree of the pipeline's steps with their kinds and path patterns.
pub fn explain(p: &Pipeline) -> String {
    let mut out = format!("pipeline {} (version {}), {} top-level steps\n", p.name, p.version, p.steps.len());
    explain_steps(&mut out, &p.steps, "", 1);
    out
}

fn mermaid_steps(out: &mut String, steps: &[Step], prefix: &str, counter: &mut usize) -> Option<(String, String)> {
    let mut first = None;
    let mut prev: Option<String> = None;
    for s in steps {
        *counter += 1;
        let id = format!("{prefix}n{counter}");
        let label = format!("{}\\n{}", s.name, s.kind.name()).replace('"', "'");
        let _ = writeln!(out, "    {id}[\"{label}\"]");
        if let Some(p) = &prev {
            let _ = writeln!(out, "    {p} --> {id}");
        }
        for (seg, kids) in children(s) {
            if let Some((a, _)) = mermaid_steps(out, kids, prefix, counter) {
                let _ = writeln!(out, "    {id} -. \"{seg}\" .-> {a}");
            }
        }
        first.get_or_insert_with(|| id.clone());
        prev = Some(id);
    }
    Some((first?, prev?))
}

/// A Mermaid flowchart of the pipeline.
pub fn mermaid(p: &Pipeline) -> String {
    let mut out = String::from("flowchart TD\n");
    let mut n = 0;
    mermaid_steps(&mut out, &p.steps, "", &mut n);
    out
}

/// Prints live events to stderr; model answers streamed as token deltas appear as they are generated, on a
/// line of their own under the step's path (interleaved streams of parallel branches each get a new line
/// when the speaker changes). On a terminal, a structured (JSON) answer is shown as the object it is so far,
/// redrawn in place as it fills; elsewhere (a log file, a pipe) its text is written as it comes.
pub struct LivePrinter {
    /// The path whose tokens are being printed on the current line.
    streaming: Option<String>,
    /// The answer so far of the path being streamed.
    partial: flujo_llm::PartialJson,
    /// Redraw structured answers in place (stderr is a terminal).
    redraw: bool,
}

impl Default for LivePrinter {
    fn default() -> Self {
        use std::io::IsTerminal;
        LivePrinter::new(std::io::stderr().is_terminal())
    }
}

/// The widest partial object drawn on one line (its end is shown: that is where it fills).
const PARTIAL_WIDTH: usize = 160;

impl LivePrinter {
    pub fn new(redraw: bool) -> Self {
        LivePrinter { streaming: None, partial: flujo_llm::PartialJson::new(), redraw }
    }

    pub fn print(&mut self, ev: &RunEvent) {
        if let RunEvent::ModelAttempt { path, attempt, .. } = ev {
            // A re-ask or retry: its answer goes on a line of its own, not after the previous one.
            if self.streaming.is_some() {
                errln!();
            }
            err!("    ✎ {path} (attempt {attempt}) ");
            self.streaming = Some(path.clone());
            self.partial = flujo_llm::PartialJson::new();
            return;
        }
        if let RunEvent::TokenDelta { path, delta, .. } = ev {
            if self.streaming.as_deref() != Some(path.as_str()) {
                if self.streaming.is_some() {
                    errln!();
                }
                err!("    ✎ {path} ");
                self.streaming = Some(path.clone());
                self.partial = flujo_llm::PartialJson::new();
            }
            let changed = self.partial.push(delta).is_some();
            match self.partial_line(path) {
                Some(line) if self.redraw => {
                    if changed {
                        err!("\r\x1b[K{line}");
                    }
                }
                _ => err!("{delta}"),
            }
            return;
        }
        if self.streaming.take().is_some() {
            errln!();
        }
        print_event(ev);
    }

    /// The line showing a structured answer so far (`✎ PATH {partial object}`), cut to the last
    /// [`PARTIAL_WIDTH`] characters; `None` for prose.
    pub fn partial_line(&self, path: &str) -> Option<String> {
        if !self.partial.looks_structured() {
            return None;
        }
        let shown = self.partial.value().map(|v| v.to_string()).unwrap_or_default();
        let n = shown.chars().count();
        let tail: String = if n > PARTIAL_WIDTH {
            std::iter::once('…').chain(shown.chars().skip(n - PARTIAL_WIDTH + 1)).collect()
        } else {
            shown
        };
        Some(format!("    ✎ {path} {tail}"))
    }
}

fn print_event(ev: &RunEvent) {
    match ev {
        RunEvent::RunStarted { run_id, pipeline, resumed } => {
            errln!("▶ run {run_id} of {pipeline}{}", if *resumed { " (resumed)" } else { "" })
        }
        RunEvent::StepStarted { path, step, kind, .. } => errln!("  · {path} {step} ({kind})"),
        RunEvent::StepFinished { result, replayed, .. } => errln!(
            "  {} {} {} {:.1} ms{}",
            if result.status == StepStatus::Completed { "✓" } else { "✗" },
            result.path,
            result.name,
            result.latency_ms,
            if *replayed { " (replayed)" } else { "" }
        ),
        RunEvent::Paused { pending, .. } => {
            for p in pending {
                errln!("  ⏸ {} awaiting input: {}", p.pause_id, p.message)
            }
        }
        RunEvent::RunFinished { status, .. } => errln!("■ {}", status.as_str()),
        RunEvent::ToolCall { path, tool, arguments, .. } => errln!("    ⚒ {path} {tool} {arguments}"),
        RunEvent::ToolResult { path, tool, ok, .. } => {
            errln!("    {} {path} {tool} {}", if *ok { "↳" } else { "↯" }, if *ok { "ok" } else { "failed" })
        }
        _ => {}
    }
}

/// The warnings a finished step carries in its metadata (`metadata.warnings`, e.g. a model answer cut off at
/// `max_tokens`), printed to stderr whatever the output format.
pub fn print_step_warnings(ev: &RunEvent) {
    if let RunEvent::StepFinished { result, replayed: false, .. } = ev {
        for w in result.metadata.get("warnings").and_then(|w| w.as_array()).into_iter().flatten() {
            let text = w.as_str().map(str::to_owned).unwrap_or_else(|| w.to_string());
            errln!("warning: step '{}' ({}): {text}", result.name, result.path);
        }
    }
}

pub fn print_summary(r: &RunResult, hint: &crate::commands::ResumeHint) {
    outln!("run {} ({}): {}", r.run_id, r.pipeline, r.status.as_str());
    if r.status == flujo_core::RunStatus::Queued {
        outln!("the answer is recorded; a worker of the run's queue continues it (flujo worker --queue NAME)");
        return;
    }
    if let Some(o) = &r.output {
        outln!("output: {}", serde_json::to_string_pretty(o).unwrap_or_default());
    }
    if let Some(e) = &r.error {
        outln!("error [{}]: {}", e.kind, e.message);
    }
    for p in &r.pending {
        outln!("paused at {} ({}): {}", p.pause_id, p.step, p.message);
        if let Some(s) = &p.input_schema {
            outln!("  answer must match: {s}");
        }
        outln!("{}", hint.pause_lines(&r.run_id, p));
    }
    if r.total_tokens > 0 || r.total_cost_usd > 0.0 {
        outln!("usage: {} tokens, ${:.6}", r.total_tokens, r.total_cost_usd);
    }
}

/// The step tree of a pipeline as JSON for the web UI: `[{name, kind, describe, children: [{label, steps}]}]`.
pub fn tree(steps: &[Step]) -> serde_json::Value {
    serde_json::Value::Array(
        steps
            .iter()
            .map(|s| {
                let children: Vec<serde_json::Value> = children(s)
                    .into_iter()
                    .map(|(label, kids)| serde_json::json!({"label": label, "steps": tree(kids)}))
                    .collect();
                serde_json::json!({"name": s.name, "kind": s.kind.name(), "describe": describe(s), "children": children})
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(path: &str, piece: &str) -> RunEvent {
        RunEvent::TokenDelta { run_id: "r".into(), path: path.into(), step: "s".into(), delta: piece.into() }
    }

    /// A structured answer is drawn as the object so far; prose is not.
    #[test]
    fn structured_answers_are_shown_as_they_fill() {
        let mut p = LivePrinter::new(false);
        for piece in ["{\"title\": \"Ru", "st\", \"tags\": [\"fa", "st\"], \"stars\": 5", "}"] {
            p.print(&delta("0", piece));
        }
        assert_eq!(p.partial_line("0").unwrap(), r#"    ✎ 0 {"title":"Rust","tags":["fast"],"stars":5}"#);
        let mut p = LivePrinter::new(false);
        p.print(&delta("1", "{\"title\": \"Ru"));
        assert_eq!(p.partial_line("1").unwrap(), r#"    ✎ 1 {"title":"Ru"}"#);
        p.print(&delta("1", "st\", \"tags\": [\"fa"));
        assert_eq!(p.partial_line("1").unwrap(), r#"    ✎ 1 {"title":"Rust","tags":["fa"]}"#);
        let mut p = LivePrinter::new(false);
        p.print(&delta("2", "Once upon a time"));
        assert_eq!(p.partial_line("2"), None);
        // A long object shows its end, where it fills.
        let mut p = LivePrinter::new(false);
        p.print(&delta("3", &format!("{{\"text\": \"{}", "x".repeat(500))));
        let line = p.partial_line("3").unwrap();
        assert!(line.ends_with("xxx\"}") && line.contains('…') && line.chars().count() < 200, "{line}");
    }
}
