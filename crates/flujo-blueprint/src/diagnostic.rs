//! Diagnostics: what validation reports (rule id, severity, message, file:line:col, suggestion) and its three
//! renderings — human text, JSON, and SARIF 2.1.0 for code-scanning tools.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::rules;
use crate::yaml::Loc;

/// How bad a diagnostic is. Any `Error` makes loading fail; `strict` turns warnings into errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    /// The SARIF `level` of this severity.
    pub fn sarif_level(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "note",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding about a blueprint. `line`/`column` are 1-based; `0` means the position is unknown (for
/// example a file that cannot be read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// A stable rule id from [`crate::RULES`].
    pub rule: String,
    /// The id the finding is reported under: the original project's catalogue id where this project's rule
    /// checks the same thing under its own id (`BP-SKILL-MISSING` → `V-A6`, see [`rules::original_id`]),
    /// otherwise `rule`. The original's JSON calls its ids `rule_id`.
    #[serde(default)]
    pub rule_id: String,
    pub severity: Severity,
    pub message: String,
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

impl Diagnostic {
    /// A diagnostic of `rule` with the rule's default severity.
    pub fn new(rule: &str, file: &Path, line: usize, column: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            rule: rule.to_owned(),
            rule_id: rules::original_id(rule).unwrap_or(rule).to_owned(),
            severity: rules::default_severity(rule),
            message: message.into(),
            file: file.to_owned(),
            line,
            column,
            suggestion: None,
        }
    }

    pub(crate) fn at(rule: &str, file: &Path, loc: Loc, message: impl Into<String>) -> Self {
        Diagnostic::new(rule, file, loc.line, loc.col, message)
    }

    pub fn with_suggestion(mut self, suggestion: impl Into<String>) -> Self {
        self.suggestion = Some(suggestion.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The rule ids as shown: `V-A6/BP-SKILL-MISSING` when the finding is reported under the original's id,
    /// else the one id.
    pub fn ids(&self) -> String {
        if self.rule_id.is_empty() || self.rule_id == self.rule {
            self.rule.clone()
        } else {
            format!("{}/{}", self.rule_id, self.rule)
        }
    }

    /// True when the finding answers to `id` (its own rule id or the original's id it is reported under).
    pub fn answers_to(&self, id: &str) -> bool {
        self.rule == id || self.rule_id == id
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {}[{}]: {}", self.severity, self.ids(), self.message)?;
        if let Some(s) = &self.suggestion {
            write!(f, "\n  = help: {s}")?;
        }
        Ok(())
    }
}

/// Loading failed: at least one diagnostic is an error. All diagnostics (warnings too) are kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", summary(&self.diagnostics))]
pub struct LoadFailure {
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadFailure {
    /// The error diagnostics only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

fn summary(diags: &[Diagnostic]) -> String {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    match diags.iter().find(|d| d.is_error()) {
        Some(first) if errors == 1 => format!("invalid blueprint: {first}"),
        Some(first) => format!("invalid blueprint ({errors} errors); first: {first}"),
        None => "invalid blueprint".to_owned(),
    }
}

fn counts(diags: &[Diagnostic]) -> (usize, usize, usize) {
    let n = |s: Severity| diags.iter().filter(|d| d.severity == s).count();
    (n(Severity::Error), n(Severity::Warning), n(Severity::Info))
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Human-readable text: one `file:line:col: severity[RULE]: message` line per diagnostic (plus a
/// `= help:` line for suggestions) and a summary line.
pub fn render_text(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    let (errors, warnings, infos) = counts(diags);
    if diags.is_empty() {
        out.push_str("ok: no problems found\n");
    } else {
        let mut parts = vec![plural(errors, "error"), plural(warnings, "warning")];
        if infos > 0 {
            parts.push(plural(infos, "note"));
        }
        out.push_str(&parts.join(", "));
        out.push('\n');
    }
    out
}

/// JSON: `{ok, errors, warnings, infos, diagnostics: [{rule, rule_id, severity, message, file, line, column,
/// suggestion?}]}` (`rule_id` is the original's catalogue id where there is one, else `rule`).
pub fn render_json(diags: &[Diagnostic]) -> Value {
    let (errors, warnings, infos) = counts(diags);
    json!({
        "ok": errors == 0,
        "errors": errors,
        "warnings": warnings,
        "infos": infos,
        "diagnostics": diags,
    })
}

/// A file path as a SARIF artifact URI (relative paths stay relative, separators become `/`).
fn artifact_uri(path: &Path) -> String {
    let text = path.to_string_lossy().replace('\\', "/");
    if path.is_absolute() {
        format!("file://{}", if text.starts_with('/') { text } else { format!("/{text}") })
    } else {
        text
    }
}

/// SARIF 2.1.0: one run of the `flujo` tool, every rule of [`crate::RULES`] in the driver, one result per
/// diagnostic with its level and `physicalLocation` (region `startLine`/`startColumn` when known);
/// suggestions are appended to the message text and kept in `properties.suggestion`.
pub fn render_sarif(diags: &[Diagnostic]) -> Value {
    // The project's rules, then the original's ids that findings are reported under.
    let mut all: Vec<(&str, &str)> = rules::RULES.to_vec();
    for (id, _) in rules::RULES {
        if let Some(orig) = rules::original_id(id) {
            if !all.iter().any(|(i, _)| *i == orig) {
                all.push((orig, rules::describe(orig).unwrap_or("")));
            }
        }
    }
    let rule_list: Vec<Value> = all
        .iter()
        .map(|(id, description)| {
            json!({
                "id": id,
                "name": id,
                "shortDescription": {"text": description},
                "defaultConfiguration": {"level": rules::default_severity(
                    rules::RULES.iter().map(|(r, _)| *r).find(|r| rules::original_id(r) == Some(id)).unwrap_or(id)
                ).sarif_level()},
            })
        })
        .collect();
    let results: Vec<Value> = diags
        .iter()
        .map(|d| {
            let mut physical = json!({"artifactLocation": {"uri": artifact_uri(&d.file)}});
            if d.line > 0 {
                physical["region"] = json!({"startLine": d.line, "startColumn": d.column.max(1)});
            }
            let text = match &d.suggestion {
                Some(s) => format!("{} (help: {s})", d.message),
                None => d.message.clone(),
            };
            let rule_id = if d.rule_id.is_empty() { &d.rule } else { &d.rule_id };
            let mut result = json!({
                "ruleId": rule_id,
                "level": d.severity.sarif_level(),
                "message": {"text": text},
                "locations": [{"physicalLocation": physical}],
            });
            if let Some(index) = all.iter().position(|(id, _)| id == rule_id) {
                result["ruleIndex"] = json!(index);
            }
            let mut properties = serde_json::Map::new();
            if let Some(s) = &d.suggestion {
                properties.insert("suggestion".into(), json!(s));
            }
            if *rule_id != d.rule {
                properties.insert("flujo_rule".into(), json!(d.rule));
            }
            if !properties.is_empty() {
                result["properties"] = Value::Object(properties);
            }
            result
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "flujo",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rule_list,
            }},
            "results": results,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Diagnostic> {
        vec![
            Diagnostic::new(rules::BP_UNKNOWN_FIELD, Path::new("p.yaml"), 3, 5, "unknown field `agnt`")
                .with_suggestion("did you mean `agent`?"),
            Diagnostic::new(rules::YAML_PARSE, Path::new("p.yaml"), 0, 0, "cannot read"),
        ]
    }

    #[test]
    fn text_rendering() {
        let text = render_text(&sample());
        assert!(text.contains("p.yaml:3:5: warning[BP-UNKNOWN-FIELD]: unknown field `agnt`\n  = help: did you mean"));
        assert!(text.contains("p.yaml: error[YAML-PARSE]: cannot read"));
        assert!(text.ends_with("1 error, 1 warning\n"));
        assert_eq!(render_text(&[]), "ok: no problems found\n");
    }

    #[test]
    fn json_and_sarif_rendering() {
        let j = render_json(&sample());
        assert_eq!(j["ok"], false);
        assert_eq!(j["diagnostics"][0]["rule"], "BP-UNKNOWN-FIELD");
        assert_eq!(j["diagnostics"][0]["severity"], "warning");
        let s = render_sarif(&sample());
        assert_eq!(s["version"], "2.1.0");
        let r = &s["runs"][0]["results"][0];
        assert_eq!(r["level"], "warning");
        assert_eq!(r["locations"][0]["physicalLocation"]["region"]["startLine"], 3);
        assert_eq!(r["locations"][0]["physicalLocation"]["region"]["startColumn"], 5);
        assert_eq!(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], "p.yaml");
        let idx = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(s["runs"][0]["tool"]["driver"]["rules"][idx]["id"], "BP-UNKNOWN-FIELD");
        assert!(s["runs"][0]["results"][1]["locations"][0]["physicalLocation"].get("region").is_none());
    }

    #[test]
    fn findings_travel_under_the_original_id() {
        let d = Diagnostic::new(rules::BP_SKILL_MISSING, Path::new("p.yaml"), 2, 3, "unknown skill `x`");
        assert_eq!(d.rule_id, "V-A6");
        assert!(d.answers_to("V-A6") && d.answers_to("BP-SKILL-MISSING") && !d.answers_to("V-A5"));
        assert!(d.to_string().contains("error[V-A6/BP-SKILL-MISSING]: unknown skill"));
        let j = render_json(std::slice::from_ref(&d));
        assert_eq!(j["diagnostics"][0]["rule"], "BP-SKILL-MISSING");
        assert_eq!(j["diagnostics"][0]["rule_id"], "V-A6");
        let s = render_sarif(std::slice::from_ref(&d));
        let r = &s["runs"][0]["results"][0];
        assert_eq!(r["ruleId"], "V-A6");
        assert_eq!(r["properties"]["flujo_rule"], "BP-SKILL-MISSING");
        let idx = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(s["runs"][0]["tool"]["driver"]["rules"][idx]["id"], "V-A6");
        assert_eq!(s["runs"][0]["tool"]["driver"]["rules"][idx]["defaultConfiguration"]["level"], "error");
        // A rule that is the original's own id is shown once.
        let t = Diagnostic::new(rules::V_T1, Path::new("p.yaml"), 1, 1, "m");
        assert!(t.to_string().contains("warning[V-T1]: m"));
    }

    #[test]
    fn failure_summary() {
        let f = LoadFailure { diagnostics: sample() };
        assert!(f.to_string().starts_with("invalid blueprint: p.yaml: error[YAML-PARSE]"));
        assert_eq!(f.errors().count(), 1);
    }
}
