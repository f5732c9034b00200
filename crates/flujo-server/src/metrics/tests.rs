//! Unit tests of the registry and the text format, with a small parser of the exposition format that checks
//! the syntax of every line and the histogram invariants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use flujo_core::{RunError, RunEvent, RunStatus, StepResult, StepStatus, Telemetry, TokenUsage};
use serde_json::{json, Value};

use super::*;

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: the declared type of each family and every sample.
#[derive(Debug, Default)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == want).map(|s| s.value)
    }
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'));
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|e| format!("bad value {s:?}: {e}")),
    }
}

/// Parses the labels starting after `{`; returns them and the rest after `}`.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let name = &s[..eq];
        if !is_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        s = s[eq + 1..].strip_prefix('"').ok_or("label value without opening quote")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("raw line feed in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        s = &s[end + 1..];
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// Parses the text format strictly: HELP and TYPE before a family's samples, one TYPE per family, valid
/// names, labels and values, no duplicate series, histograms with cumulative buckets ending in `+Inf`
/// equal to `_count`.
fn parse(text: &str) -> Result<Exposition, String> {
    let mut exp = Exposition::default();
    let mut seen = std::collections::HashSet::new();
    if !text.ends_with('\n') {
        return Err("the exposition must end with a line feed".into());
    }
    for (n, line) in text.lines().enumerate() {
        let fail = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, arg) = (parts.next(), parts.next(), parts.next());
            let name = name.ok_or_else(|| fail("comment without a name".into()))?;
            if !is_name(name, true) {
                return Err(fail("bad metric name".into()));
            }
            match (kw, arg) {
                (Some("HELP"), Some(_)) => {}
                (Some("TYPE"), Some(t @ ("counter" | "gauge" | "histogram" | "summary" | "untyped"))) => {
                    if exp.types.insert(name.to_owned(), t.to_owned()).is_some() {
                        return Err(fail("TYPE given twice".into()));
                    }
                }
                _ => return Err(fail("bad comment".into())),
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            return Err(fail("empty or stray comment line".into()));
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| fail("no value".into()))?;
        let name = &line[..name_end];
        if !is_name(name, true) {
            return Err(fail("bad metric name".into()));
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(after) => parse_labels(after).map_err(fail)?,
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let value = rest.strip_prefix(' ').ok_or_else(|| fail("no space before the value".into()))?;
        let value = parse_value(value).map_err(fail)?;
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| exp.types.get(*f).map(String::as_str) == Some("histogram")))
            .unwrap_or(name);
        if !exp.types.contains_key(family) {
            return Err(fail(format!("sample of {family} before its TYPE")));
        }
        if !seen.insert(format!("{name}{labels:?}")) {
            return Err(fail("duplicate series".into()));
        }
        exp.samples.push(Sample { name: name.to_owned(), labels, value });
    }
    // Histogram invariants, per series (labels without `le`).
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in exp.samples.iter().filter(|s| s.name.ends_with("_bucket")) {
        let le = parse_value(s.labels.get("le").ok_or("bucket without le")?)?;
        let mut rest = s.labels.clone();
        rest.remove("le");
        series.entry(format!("{}{rest:?}", s.name.trim_end_matches("_bucket"))).or_default().push((le, s.value));
    }
    for (key, buckets) in &series {
        let mut prev = (f64::NEG_INFINITY, 0.0);
        for b in buckets {
            if b.0 <= prev.0 || b.1 < prev.1 {
                return Err(format!("{key}: buckets not ascending or not cumulative"));
            }
            prev = *b;
        }
        if prev.0 != f64::INFINITY {
            return Err(format!("{key}: no +Inf bucket"));
        }
        let (name, labels) = key.split_once('{').unwrap_or((key, ""));
        let count = exp
            .samples
            .iter()
            .find(|s| s.name == format!("{name}_count") && format!("{{{labels}") == format!("{:?}", s.labels))
            .ok_or(format!("{key}: no _count"))?;
        if count.value != prev.1 {
            return Err(format!("{key}: _count {} != +Inf bucket {}", count.value, prev.1));
        }
    }
    Ok(exp)
}

fn step(kind: &str, status: StepStatus, latency_ms: f64) -> StepResult {
    let mut r = StepResult::new("s", "0", kind, status, Arc::new(Value::Null));
    r.latency_ms = latency_ms;
    r
}

fn model_step(model: &str, prompt: u64, completion: u64, cost: f64) -> StepResult {
    let mut r = step("step", StepStatus::Completed, 30.0);
    r.metadata.insert("model".into(), json!(model));
    r.tokens = TokenUsage::new(prompt, completion);
    r.cost_usd = cost;
    r
}

fn finished(pipeline: &str, status: RunStatus, error: Option<&str>) -> RunEvent {
    RunEvent::RunFinished {
        run_id: "r".into(),
        pipeline: pipeline.into(),
        status,
        error: error.map(|k| RunError::new(k, "m")),
        tokens: TokenUsage::default(),
        cost_usd: 0.0,
    }
}

fn live(result: StepResult) -> RunEvent {
    RunEvent::StepFinished { run_id: "r".into(), result, replayed: false }
}

fn render(m: &Metrics) -> String {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(m.render(None))
}

#[test]
fn events_become_the_documented_series() {
    let m = Metrics::new();
    m.on_event(&RunEvent::RunStarted { run_id: "r".into(), pipeline: "p".into(), resumed: false });
    m.on_event(&RunEvent::RunStarted { run_id: "r".into(), pipeline: "p".into(), resumed: true });
    m.on_event(&live(step("loop", StepStatus::Completed, 2.0)));
    m.on_event(&live(step("step", StepStatus::Failed, 2000.0)));
    m.on_event(&RunEvent::StepFinished {
        run_id: "r".into(),
        result: step("step", StepStatus::Completed, 1.0),
        replayed: true,
    });
    m.on_event(&live(model_step("openai:gpt-4o", 100, 20, 0.25)));
    m.on_event(&live(model_step("openai:gpt-4o", 1, 2, 0.5)));
    m.on_event(&live(model_step("mock:echo", 3, 4, 0.0)));
    // A step whose fallback ran: its usage is the fallback's, counted by the fallback's own event.
    let mut fell = model_step("openai:gpt-4o", 1000, 1000, 9.0);
    fell.metadata.insert("fallback_triggered".into(), json!(true));
    m.on_event(&live(fell));
    m.on_event(&finished("p", RunStatus::Paused, None));
    m.on_event(&finished("p", RunStatus::Completed, None));
    m.on_event(&finished("p", RunStatus::Failed, Some("usage_limit_exceeded")));
    m.on_event(&finished("q", RunStatus::Failed, Some("governance_denied")));
    m.on_event(&finished("q", RunStatus::Failed, Some("step_failed")));
    m.run_cancelled("q");
    m.observe_commit(CommitOp::Append, Duration::from_micros(300), true);
    m.observe_commit(CommitOp::Append, Duration::from_millis(3), false);

    let text = render(&m);
    let e = parse(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
    assert_eq!(e.types["flujo_runs_started_total"], "counter");
    assert_eq!(e.types["flujo_step_duration_seconds"], "histogram");
    assert_eq!(e.value("flujo_runs_started_total", &[("pipeline", "p")]), Some(2.0));
    assert_eq!(e.value("flujo_runs_resumed_total", &[("pipeline", "p")]), Some(1.0));
    for (p, status, n) in [("p", "paused", 1.0), ("p", "completed", 1.0), ("p", "failed", 1.0), ("q", "failed", 2.0)] {
        assert_eq!(
            e.value("flujo_runs_finished_total", &[("pipeline", p), ("status", status)]),
            Some(n),
            "{p} {status}"
        );
    }
    assert_eq!(e.value("flujo_runs_finished_total", &[("pipeline", "q"), ("status", "cancelled")]), Some(1.0));
    assert_eq!(e.value("flujo_budget_refusals_total", &[("pipeline", "p")]), Some(1.0));
    assert_eq!(e.value("flujo_budget_refusals_total", &[("pipeline", "q")]), None);
    assert_eq!(e.value("flujo_governance_denials_total", &[("pipeline", "q")]), Some(1.0));
    assert_eq!(e.value("flujo_run_errors_total", &[("pipeline", "q"), ("kind", "step_failed")]), Some(1.0));
    // Replayed steps are not counted.
    assert_eq!(e.value("flujo_steps_total", &[("kind", "step"), ("status", "completed")]), Some(4.0));
    assert_eq!(e.value("flujo_steps_total", &[("kind", "step"), ("status", "failed")]), Some(1.0));
    assert_eq!(e.value("flujo_step_duration_seconds_count", &[("kind", "step")]), Some(5.0));
    assert_eq!(e.value("flujo_step_duration_seconds_count", &[("kind", "loop")]), Some(1.0));
    assert_eq!(e.value("flujo_step_duration_seconds_bucket", &[("kind", "loop"), ("le", "0.0025")]), Some(1.0));
    assert_eq!(e.value("flujo_step_duration_seconds_bucket", &[("kind", "loop"), ("le", "0.001")]), Some(0.0));
    let sum = e.value("flujo_step_duration_seconds_sum", &[("kind", "step")]).unwrap();
    assert!((sum - 2.12).abs() < 1e-9, "{sum}");
    let tokens = |p, model, t| e.value("flujo_model_tokens_total", &[("provider", p), ("model", model), ("type", t)]);
    assert_eq!(tokens("openai", "gpt-4o", "prompt"), Some(101.0));
    assert_eq!(tokens("openai", "gpt-4o", "completion"), Some(22.0));
    assert_eq!(tokens("mock", "echo", "completion"), Some(4.0));
    assert_eq!(e.value("flujo_model_cost_usd_total", &[("provider", "openai"), ("model", "gpt-4o")]), Some(0.75));
    assert_eq!(e.value("flujo_store_commit_seconds_count", &[("op", "append")]), Some(2.0));
    assert_eq!(e.value("flujo_store_commit_seconds_bucket", &[("op", "append"), ("le", "0.0005")]), Some(1.0));
    assert_eq!(e.value("flujo_store_commit_errors_total", &[("op", "append")]), Some(1.0));
    assert_eq!(e.value("flujo_store_commit_seconds_count", &[("op", "update_run")]), Some(0.0));
    assert_eq!(e.value("flujo_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    assert!(e.value("process_start_time_seconds", &[]).unwrap() > 1.6e9);
}

#[test]
fn histogram_buckets_are_upper_inclusive_and_cumulative() {
    let h = Histogram::new(&[0.1, 1.0, 10.0]);
    for v in [0.0, 0.1, 0.10000001, 1.0, 5.0, 10.0, 11.0, f64::INFINITY, -3.0, f64::NAN] {
        h.observe(v);
    }
    let (buckets, sum) = h.snapshot();
    // le=0.1: 0, 0.1, -3 (as 0), NaN (as 0); le=1: +0.10000001, 1; le=10: +5, 10; +Inf: +11, inf.
    assert_eq!(buckets, vec![(0.1, 4), (1.0, 6), (10.0, 8), (f64::INFINITY, 10)]);
    assert_eq!(h.count(), 10);
    assert!((sum - 27.200_000_01).abs() < 1e-9, "an infinite value is not added to the sum: {sum}");
    let mut out = String::new();
    header(&mut out, "h", "histogram", "help");
    histogram(&mut out, "h", &[("a", "b")], &h);
    let e = parse(&out).unwrap();
    assert_eq!(e.value("h_bucket", &[("a", "b"), ("le", "+Inf")]), Some(10.0));
    assert_eq!(e.value("h_count", &[("a", "b")]), Some(10.0));
}

#[test]
fn label_values_are_escaped_and_read_back_unchanged() {
    let m = Metrics::new();
    let nasty = "we\"ird\\name\nwith line";
    m.on_event(&RunEvent::RunStarted { run_id: "r".into(), pipeline: nasty.into(), resumed: false });
    m.on_event(&live(model_step("weird:mo\"del{x}", 1, 1, 0.0)));
    let text = render(&m);
    assert!(text.contains(r#"pipeline="we\"ird\\name\nwith line""#), "{text}");
    let e = parse(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
    assert_eq!(e.value("flujo_runs_started_total", &[("pipeline", nasty)]), Some(1.0));
    assert_eq!(
        e.value("flujo_model_tokens_total", &[("provider", "weird"), ("model", "mo\"del{x}"), ("type", "prompt")]),
        Some(1.0)
    );
    assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
}

#[test]
fn the_parser_rejects_malformed_lines() {
    let ok = "# HELP a x\n# TYPE a counter\na{b=\"c\"} 1\n";
    assert!(parse(ok).is_ok());
    for bad in [
        "a 1\n",                                                                          // no TYPE
        "# TYPE a counter\na{b=\"c} 1\n",                                                 // unterminated
        "# TYPE a counter\na{b=\"c\"}1\n",                                                // no space
        "# TYPE a counter\na{1b=\"c\"} 1\n",                                              // bad label name
        "# TYPE a counter\na one\n",                                                      // bad value
        "# TYPE a counter\na 1\na 2\n",                                                   // duplicate series
        "# TYPE a counter\na{b=\"\\x\"} 1\n",                                             // bad escape
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", // not cumulative
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\n",                       // count mismatch
        "# TYPE a counter\na 1",                                                          // no final line feed
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn a_family_keeps_its_cap_of_label_sets_and_counts_the_rest_as_other() {
    let f: Family<Counter> = Family::new(&["pipeline"], 3, Counter::default);
    for i in 0..10 {
        f.get(&[&format!("p{i}")]).inc();
    }
    f.get(&["p0"]).inc();
    let entries: Vec<(Vec<String>, u64)> =
        f.entries().into_iter().map(|(l, c)| (l.iter().map(|s| s.to_string()).collect(), c.get())).collect();
    assert_eq!(
        entries,
        vec![
            (vec!["p0".to_owned()], 2),
            (vec!["p1".to_owned()], 1),
            (vec!["p2".to_owned()], 1),
            (vec!["_other".to_owned()], 7)
        ]
    );
}

#[test]
fn concurrent_updates_are_all_counted() {
    let m = Arc::new(Metrics::new());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    let kind = ["step", "loop", "parallel", "map"][(t + i) % 4];
                    m.on_event(&live(step(kind, StepStatus::Completed, 1.0)));
                    m.on_event(&live(model_step("openai:gpt-4o", 1, 2, 0.5)));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let e = parse(&render(&m)).unwrap();
    let total: f64 = ["loop", "parallel", "map"]
        .iter()
        .map(|k| e.value("flujo_step_duration_seconds_count", &[("kind", k)]).unwrap())
        .sum();
    assert_eq!(total + e.value("flujo_step_duration_seconds_count", &[("kind", "step")]).unwrap(), 32_000.0);
    assert_eq!(
        e.value("flujo_model_tokens_total", &[("provider", "openai"), ("model", "gpt-4o"), ("type", "completion")]),
        Some(32_000.0)
    );
    assert_eq!(e.value("flujo_model_cost_usd_total", &[("provider", "openai"), ("model", "gpt-4o")]), Some(8000.0));
}

#[test]
fn tee_sends_every_event_to_both() {
    let (a, b) = (Arc::new(Metrics::new()), Arc::new(Metrics::new()));
    let t = tee(a.clone(), b.clone());
    t.on_event(&RunEvent::RunStarted { run_id: "r".into(), pipeline: "p".into(), resumed: false });
    assert_eq!((a.runs_started("p"), b.runs_started("p")), (1, 1));
}

#[test]
fn liveness_and_token_comparison() {
    assert!(worker_is_live(&json!({"heartbeat_at_ms": 1000, "lease_ms": 500}), 1499));
    assert!(!worker_is_live(&json!({"heartbeat_at_ms": 1000, "lease_ms": 500}), 1500));
    assert!(!worker_is_live(&json!({}), 0));
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
    assert_eq!(format_value(f64::INFINITY), "+Inf");
    assert_eq!(format_value(0.0001), "0.0001");
    assert_eq!(format_value(2.0), "2");
}
