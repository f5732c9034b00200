//! `[governance]` settings: which policies, in which order, with which options — globally and per pipeline.
//!
//! ```toml
//! [governance]
//! policies = ["max_input_chars", "deny", "pii_scrub", "tool_allowlist", "model_allowlist", "command"]
//! command = ["./policy.py"]          # the `command` policy's program (appended to the chain if not listed)
//! timeout_s = 2                      # its time per decision (default 5)
//! send_context = false               # send it the run's context fields too
//! [governance.deny]
//! input_patterns = ["(?i)drop\\s+table"]
//! targets = ["shell.*"]              # skill and tool ids (globs)
//! models = ["openai:gpt-3.5*"]
//! [governance.pii_scrub]
//! kinds = ["email", "card"]          # default: every kind
//! replacement = "[REDACTED:{kind}]"  # default "[REDACTED]"
//! [governance.tool_allowlist]
//! tools = ["search"]
//! steps = { researcher = ["search", "fetch_*"] }
//! [governance.model_allowlist]
//! models = ["mock:*", "openai:gpt-4o-mini"]
//! [governance.max_input_chars]
//! limit = 20000
//! [governance.pipeline."support_*"]  # pipelines whose name matches: this chain instead
//! policies = ["pii_scrub"]           # option tables not given here are the global ones
//! ```
//!
//! Unknown policies, unknown keys and bad patterns are errors (the CLI exits 2), never silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flujo_core::GovernancePolicy;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::builtin::{AllowAll, Deny, DenyAll, MaxInputChars, ModelAllowlist, ToolAllowlist};
use super::command::{CommandPolicy, DEFAULT_TIMEOUT};
use super::glob_match;
use super::pii::PiiScrub;

/// The policies `policies = [...]` may name.
pub const POLICIES: &[&str] =
    &["allow_all", "deny_all", "deny", "pii_scrub", "tool_allowlist", "model_allowlist", "max_input_chars", "command"];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyOpts {
    #[serde(default)]
    input_patterns: Vec<String>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PiiOpts {
    #[serde(default)]
    kinds: Vec<String>,
    #[serde(default)]
    replacement: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolOpts {
    #[serde(default)]
    tools: Vec<String>,
    #[serde(default)]
    steps: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelOpts {
    #[serde(default)]
    models: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaxOpts {
    limit: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    #[serde(default)]
    policies: Option<Vec<String>>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    timeout_s: Option<f64>,
    #[serde(default)]
    send_context: Option<bool>,
    #[serde(default)]
    deny: Option<DenyOpts>,
    #[serde(default)]
    pii_scrub: Option<PiiOpts>,
    #[serde(default)]
    tool_allowlist: Option<ToolOpts>,
    #[serde(default)]
    model_allowlist: Option<ModelOpts>,
    #[serde(default)]
    max_input_chars: Option<MaxOpts>,
    #[serde(default)]
    pipeline: BTreeMap<String, Section>,
}

/// The `[governance]` settings of a project.
#[derive(Debug, Clone, Default)]
pub struct GovernanceConfig {
    global: Section,
    /// Where relative program paths of `command` are found (the project folder).
    base_dir: Option<PathBuf>,
}

/// Where a pipeline's chain comes from, for `flujo dev governance`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainSource {
    /// The policies, in order.
    pub policies: Vec<String>,
    /// `[governance]`, `[governance.pipeline."GLOB"]`, or `none` when no policy is configured.
    pub section: String,
    /// Per policy, the table its options come from (`[governance.deny]`, …), or `defaults`.
    pub options: Vec<(String, String)>,
}

impl GovernanceConfig {
    /// Reads the `[governance]` table (as JSON); `base_dir` is the project folder. The error names the key.
    pub fn from_json(table: &Value, base_dir: Option<&Path>) -> Result<Self, String> {
        let global: Section = serde_json::from_value(table.clone()).map_err(|e| format!("[governance]: {e}"))?;
        for (glob, s) in &global.pipeline {
            if !s.pipeline.is_empty() {
                return Err(format!("[governance.pipeline.\"{glob}\"]: pipeline sections do not nest"));
            }
        }
        let cfg = GovernanceConfig { global, base_dir: base_dir.map(Path::to_path_buf) };
        // Check every chain now, so a mistake is reported when the project loads, not at the first call.
        cfg.build(&cfg.global, None)?;
        for glob in cfg.global.pipeline.keys() {
            cfg.chain_for_section(glob)?;
        }
        Ok(cfg)
    }

    /// True when no policy is configured anywhere.
    pub fn is_empty(&self) -> bool {
        self.global.policies.as_ref().is_none_or(Vec::is_empty)
            && self.global.command.is_none()
            && self.global.pipeline.is_empty()
    }

    /// The pipeline section that applies to `pipeline`: the matching glob with the longest pattern.
    fn section_for(&self, pipeline: &str) -> Option<&str> {
        self.global
            .pipeline
            .keys()
            .filter(|g| glob_match(g, pipeline))
            .max_by(|a, b| a.len().cmp(&b.len()).then_with(|| b.cmp(a)))
            .map(String::as_str)
    }

    fn chain_for_section(&self, glob: &str) -> Result<(Vec<Arc<dyn GovernancePolicy>>, ChainSource), String> {
        let section = self.global.pipeline.get(glob).cloned().unwrap_or_default();
        self.build(&section, Some(glob))
    }

    /// The chain of `pipeline`, and where it comes from.
    pub fn chain_for(&self, pipeline: &str) -> Result<(Vec<Arc<dyn GovernancePolicy>>, ChainSource), String> {
        match self.section_for(pipeline) {
            Some(glob) => self.chain_for_section(glob),
            None => self.build(&self.global, None),
        }
    }

    fn build(
        &self,
        section: &Section,
        glob: Option<&str>,
    ) -> Result<(Vec<Arc<dyn GovernancePolicy>>, ChainSource), String> {
        let g = &self.global;
        let where_ = match glob {
            Some(glob) => format!("[governance.pipeline.\"{glob}\"]"),
            None => "[governance]".to_owned(),
        };
        // A pipeline section inherits the global option tables it does not set.
        let pick = |own: bool, name: &str| -> String {
            match (own, glob) {
                (true, Some(glob)) => format!("[governance.pipeline.\"{glob}\".{name}]"),
                (true, None) => format!("[governance.{name}]"),
                (false, _) if glob.is_some() && global_has(g, name) => format!("[governance.{name}]"),
                _ => "defaults".to_owned(),
            }
        };
        let command = section.command.clone().or_else(|| g.command.clone());
        let mut names = section.policies.clone().unwrap_or_default();
        if (section.command.is_some() || (glob.is_none() && g.command.is_some()))
            && !names.iter().any(|n| n == "command")
        {
            names.push("command".to_owned());
        }
        let mut chain: Vec<Arc<dyn GovernancePolicy>> = Vec::new();
        let mut options = Vec::new();
        for name in &names {
            let policy: Arc<dyn GovernancePolicy> = match name.as_str() {
                "allow_all" => Arc::new(AllowAll),
                "deny_all" => Arc::new(DenyAll),
                "deny" => {
                    let o = section.deny.clone().or_else(|| g.deny.clone()).unwrap_or_default();
                    options.push((name.clone(), pick(section.deny.is_some(), name)));
                    let mut input_patterns = Vec::new();
                    for p in &o.input_patterns {
                        input_patterns.push(
                            Regex::new(p).map_err(|e| {
                                format!("{where_} deny.input_patterns: '{p}' is not a valid pattern: {e}")
                            })?,
                        );
                    }
                    Arc::new(Deny { input_patterns, targets: o.targets, models: o.models })
                }
                "pii_scrub" => {
                    let o = section.pii_scrub.clone().or_else(|| g.pii_scrub.clone()).unwrap_or_default();
                    options.push((name.clone(), pick(section.pii_scrub.is_some(), name)));
                    Arc::new(PiiScrub::new(&o.kinds, o.replacement).map_err(|e| format!("{where_} {e}"))?)
                }
                "tool_allowlist" => {
                    let o = section.tool_allowlist.clone().or_else(|| g.tool_allowlist.clone()).unwrap_or_default();
                    options.push((name.clone(), pick(section.tool_allowlist.is_some(), name)));
                    Arc::new(ToolAllowlist { tools: o.tools, steps: o.steps })
                }
                "model_allowlist" => {
                    let o = section.model_allowlist.clone().or_else(|| g.model_allowlist.clone()).unwrap_or_default();
                    options.push((name.clone(), pick(section.model_allowlist.is_some(), name)));
                    Arc::new(ModelAllowlist { models: o.models })
                }
                "max_input_chars" => {
                    let Some(o) = section.max_input_chars.clone().or_else(|| g.max_input_chars.clone()) else {
                        return Err(format!(
                            "{where_} lists max_input_chars; set its limit in [governance.max_input_chars] limit = N"
                        ));
                    };
                    options.push((name.clone(), pick(section.max_input_chars.is_some(), name)));
                    Arc::new(MaxInputChars { limit: o.limit })
                }
                "command" => {
                    let Some(argv) = command.clone() else {
                        return Err(format!("{where_} lists command; give the program: command = [\"./policy\", …]"));
                    };
                    let timeout_s = section.timeout_s.or(g.timeout_s);
                    let timeout = match timeout_s {
                        Some(t) => flujo_core::limits::duration_from_secs(t)
                            .map_err(|e| format!("{where_} timeout_s {t} {e}"))?,
                        None => DEFAULT_TIMEOUT,
                    };
                    options.push((name.clone(), format!("{} (timeout {:?})", argv.join(" "), timeout)));
                    let send = section.send_context.or(g.send_context).unwrap_or(false);
                    Arc::new(
                        CommandPolicy::new(argv, self.base_dir.clone(), timeout, send)
                            .map_err(|e| format!("{where_} {e}"))?,
                    )
                }
                other => {
                    return Err(format!(
                        "{where_} policies: unknown policy '{other}' (known: {})",
                        POLICIES.join(", ")
                    ));
                }
            };
            chain.push(policy);
        }
        let section_name = if names.is_empty() { "none".to_owned() } else { where_ };
        Ok((chain, ChainSource { policies: names, section: section_name, options }))
    }
}

fn global_has(g: &Section, name: &str) -> bool {
    match name {
        "deny" => g.deny.is_some(),
        "pii_scrub" => g.pii_scrub.is_some(),
        "tool_allowlist" => g.tool_allowlist.is_some(),
        "model_allowlist" => g.model_allowlist.is_some(),
        "max_input_chars" => g.max_input_chars.is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chains_per_pipeline_and_errors() {
        let cfg = GovernanceConfig::from_json(
            &json!({"policies": ["deny", "pii_scrub"], "deny": {"targets": ["shell.*"]},
                    "pipeline": {"support_*": {"policies": ["pii_scrub", "deny"]}, "support_vip*": {"policies": []}}}),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.chain_for("billing").map(|c| c.1.policies).unwrap_or_default(), vec!["deny", "pii_scrub"]);
        let (_, src) = cfg.chain_for("support_triage").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(src.policies, vec!["pii_scrub", "deny"]);
        assert_eq!(src.section, "[governance.pipeline.\"support_*\"]");
        assert!(src.options.contains(&("deny".to_owned(), "[governance.deny]".to_owned())), "{src:?}");
        assert!(cfg.chain_for("support_vip_1").map(|c| c.0.is_empty()).unwrap_or(false), "the longest glob wins");
        for (bad, says) in [
            (json!({"policies": ["nope"]}), "unknown policy 'nope'"),
            (json!({"policies": ["deny"], "deny": {"input_patterns": ["("]}}), "not a valid pattern"),
            (json!({"policies": ["max_input_chars"]}), "limit"),
            (json!({"policies": ["command"]}), "give the program"),
            (json!({"policies": [], "deny": {"typo": 1}}), "unknown field"),
            (json!({"policies": ["pii_scrub"], "pii_scrub": {"kinds": ["dna"]}}), "unknown kind"),
        ] {
            let err = GovernanceConfig::from_json(&bad, None).err().unwrap_or_default();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let cmd = GovernanceConfig::from_json(&json!({"command": ["./p"]}), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cmd.chain_for("x").map(|c| c.1.policies).unwrap_or_default(), vec!["command"]);
    }
}
