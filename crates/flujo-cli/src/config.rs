//! `flujo.toml` loading with `FLUJO_*` environment overrides. A malformed file is a configuration error
//! (exit 2); sections this version does not implement yet are reported on stderr, never silently ignored.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Sections of `flujo.toml` that later versions use; present ones are reported as not yet effective.
const FUTURE_SECTIONS: &[&str] = &["server", "telemetry"];

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(&'static str),
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Default => "default".into(),
            Source::File(p) => p.display().to_string(),
            Source::Env(v) => format!("env {v}"),
        }
    }
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_uri: (String, Source),
    pub strict_templates: (bool, Source),
    /// The largest run input accepted (`-i`, `-i -`, `--input-json`, `--context`), in bytes:
    /// `[limits] max_input_bytes` or FLUJO_MAX_INPUT_BYTES.
    pub max_input_bytes: (u64, Source),
    pub file: Option<PathBuf>,
    /// Notes for stderr (sections not used yet, …).
    pub notes: Vec<String>,
    /// The whole file, for the sections other crates read (`[cost]`, `[providers]`).
    pub table: toml::Table,
    /// `[budgets.default]` and `[budgets.pipeline."GLOB"]`, in file order.
    pub budgets: Vec<Budget>,
    /// `[run] json_output = true`: `flujo run` prints its JSON object as with `--json`.
    pub run_json_output: bool,
    /// `[validation.profiles.NAME]`: rule-id globs → `off` | `warning` | `error`, in file order.
    pub validation_profiles: Vec<Profile>,
    /// The variables `env_file` set (names only; the environment holds the values).
    pub env_file_vars: Vec<String>,
    /// The project folder (see [`project_root`]).
    pub project_root: Option<PathBuf>,
    /// `[lockfile]`: what `flujo lock` pins beyond the pipeline.
    pub lockfile: crate::lock::LockSettings,
    /// `[queues.NAME] concurrency = N`: at most N runs of the queue run at once, across every worker.
    pub queue_limits: std::collections::BTreeMap<String, u64>,
    /// `[queues.NAME] rate_limit = {runs = X, period_s = Y}`: at most X runs of the queue start per Y seconds.
    pub queue_rates: std::collections::BTreeMap<String, (u64, f64)>,
    /// `[governance]`: the policy chains (checked when the file loads), and the file they come from.
    pub governance: Option<(std::sync::Arc<flujo_engine::governance::GovernanceConfig>, PathBuf)>,
    /// `[shadow_eval]`: LLM-as-a-judge evaluations of sampled runs.
    pub shadow: Option<flujo_engine::shadow::ShadowConfig>,
    /// `[memory]`: the vector store, embedder and indexing (see `crate::memory`).
    pub memory: Option<crate::memory::MemoryToml>,
    /// `[sandbox]`: where `code_interpreter` runs code (see `crate::sandbox`).
    pub sandbox: Option<crate::sandbox::SandboxToml>,
}

/// The project folder: `explicit` (`--project`), else `FLUJO_PROJECT_ROOT`, else the nearest folder from the
/// current one up (the filesystem root excluded, as in the original) holding `flujo.toml`, `pipeline.yaml` or
/// `pipeline.yml`; `None` when there is none. The current folder is returned as `.`.
pub fn project_root(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    let given = explicit.map(|p| (p.to_path_buf(), "--project")).or_else(|| {
        std::env::var_os("FLUJO_PROJECT_ROOT")
            .filter(|v| !v.is_empty())
            .map(|v| (PathBuf::from(v), "FLUJO_PROJECT_ROOT"))
    });
    if let Some((dir, what)) = given {
        if !dir.is_dir() {
            return Err(ConfigError(format!("{what} '{}' does not exist or is not a folder", dir.display())));
        }
        return Ok(Some(dir));
    }
    let marked = |d: &Path| ["flujo.toml", "pipeline.yaml", "pipeline.yml"].iter().any(|m| d.join(m).exists());
    if marked(Path::new(".")) {
        return Ok(Some(PathBuf::from(".")));
    }
    let Ok(cwd) = std::env::current_dir() else { return Ok(None) };
    let mut dir = cwd.parent();
    while let Some(d) = dir {
        if d.parent().is_none() {
            break;
        }
        if marked(d) {
            return Ok(Some(d.to_path_buf()));
        }
        dir = d.parent();
    }
    Ok(None)
}

/// `sqlite:///REL` → `sqlite:///BASE/REL` (absolute, relative and other URIs unchanged otherwise).
fn anchor_sqlite(uri: &str, base: &Path) -> String {
    match uri.strip_prefix("sqlite:///") {
        Some(rest) if !rest.starts_with('/') && !rest.is_empty() => {
            let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
            format!("sqlite:///{}", base.join(rest).display())
        }
        _ => uri.to_owned(),
    }
}

/// A validation profile: its name and its rule-id globs with their levels, in file order.
pub type Profile = (String, Vec<(String, RuleLevel)>);

/// One `KEY=VALUE` of a dotenv file and its line number.
pub type DotenvEntry = ((String, String), usize);

/// A severity override of a validation profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleLevel {
    Off,
    Warning,
    Error,
}

/// Settings of the original (Python) Flujo's `flujo.toml` that have no meaning here, with the reason; reported
/// once each when present (never as "unknown").
const NOT_APPLICABLE: &[(&str, &str)] = &[
    ("blueprint_allowed_imports", "it allow-lists Python modules a blueprint may import; Flujo (Rust) imports no Python code (YAML imports are confined by [imports])"),
    ("governance_policy_module", "it names a Python policy class; Flujo (Rust) runs policies in any language as a program: [governance] command = [\"./policy\", …]"),
    ("settings", "it overrides the Python Flujo's Settings (default models, reflection, sandbox, …); agents here name their model in the blueprint, and the other settings have no counterpart"),
    ("solve", "it configures the Python Flujo's `dev experimental solve`, which Flujo (Rust) does not have"),
    ("bench", "it configures the Python Flujo's `dev experimental bench`; the benchmarks here are `cargo run -p flujo-bench`"),
    ("aros", "it configures output coercion of the Python Flujo's agents; structured output here is the provider's JSON mode checked against `output_schema`"),
    ("blueprint", "its `enabled_filters` allow-lists Python template filters; the template filters here are a fixed, sandboxed set"),
];

/// One budget section.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// `None` for `[budgets.default]`, else the pipeline-name glob (`*` and `?`).
    pub glob: Option<String>,
    pub limits: flujo_core::UsageLimits,
    pub source: String,
}

/// `*` matches any run of characters, `?` one character.
pub fn glob_match(glob: &str, name: &str) -> bool {
    fn go(g: &[char], n: &[char]) -> bool {
        match g.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(&glob.chars().collect::<Vec<_>>(), &name.chars().collect::<Vec<_>>())
}

impl Config {
    /// The effective budget of `pipeline`: the strictest of `[budgets.default]` and every matching
    /// `[budgets.pipeline."GLOB"]`, with the sources each limit came from.
    pub fn budget_for(&self, pipeline: &str) -> (flujo_core::UsageLimits, Vec<String>) {
        let mut limits = flujo_core::UsageLimits::default();
        let mut sources = Vec::new();
        for b in &self.budgets {
            if b.glob.as_deref().is_some_and(|g| !glob_match(g, pipeline)) {
                continue;
            }
            if let Some(c) = b.limits.total_cost_usd_limit {
                if limits.total_cost_usd_limit.is_none_or(|cur| c < cur) {
                    limits.total_cost_usd_limit = Some(c);
                    sources.retain(|s: &String| !s.starts_with("total_cost_usd_limit"));
                    sources.push(format!("total_cost_usd_limit = {c} from {}", b.source));
                }
            }
            if let Some(t) = b.limits.total_tokens_limit {
                if limits.total_tokens_limit.is_none_or(|cur| t < cur) {
                    limits.total_tokens_limit = Some(t);
                    sources.retain(|s: &String| !s.starts_with("total_tokens_limit"));
                    sources.push(format!("total_tokens_limit = {t} from {}", b.source));
                }
            }
        }
        (limits, sources)
    }
}

fn parse_limits(t: &toml::Value, what: &str, file: &Path) -> Result<flujo_core::UsageLimits, ConfigError> {
    let Some(t) = t.as_table() else {
        return Err(ConfigError(format!("{}: [{what}] must be a table", file.display())));
    };
    let mut limits = flujo_core::UsageLimits::default();
    for (k, v) in t {
        match (k.as_str(), v) {
            ("total_cost_usd_limit", toml::Value::Float(f)) if *f >= 0.0 => limits.total_cost_usd_limit = Some(*f),
            ("total_cost_usd_limit", toml::Value::Integer(i)) if *i >= 0 => {
                limits.total_cost_usd_limit = Some(*i as f64)
            }
            ("total_tokens_limit", toml::Value::Integer(i)) if *i >= 0 => limits.total_tokens_limit = Some(*i as u64),
            ("total_cost_usd_limit" | "total_tokens_limit", other) => {
                return Err(ConfigError(format!(
                    "{}: {what}.{k} must be a non-negative number, got {other}",
                    file.display()
                )))
            }
            (other, _) => {
                return Err(ConfigError(format!(
                    "{}: unknown key {what}.{other} (known: total_cost_usd_limit, total_tokens_limit)",
                    file.display()
                )))
            }
        }
    }
    Ok(limits)
}

pub const DEFAULT_STATE_URI: &str = "sqlite:///.flujo/state.db";

/// The largest `flujo.toml` read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Default of `[limits] max_input_bytes`: 16 MiB.
pub const DEFAULT_MAX_INPUT_BYTES: u64 = 16 << 20;

/// `16777216` → `16 MiB`, `1500` → `1500 bytes`.
pub fn human_bytes(n: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

/// A byte size: a plain number of bytes, or a number with `KiB`/`MiB`/`GiB` (also `K`/`M`/`G`, `KB`/`MB`/`GB`
/// as powers of 1024).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse_bool(v: &str, what: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(ConfigError(format!("{what}: expected true or false, got '{other}'"))),
    }
}

impl Config {
    /// Loads `path`, else the project's `flujo.toml` (`root`, see [`project_root`]; the current folder
    /// without one), then applies the environment. A relative `sqlite:///` path in the file is relative to the
    /// file's folder, and the default state lives in the project folder.
    pub fn load_in(path: Option<&Path>, root: Option<&Path>) -> Result<Config, ConfigError> {
        let mut cfg = Config::load_at(path, root)?;
        cfg.project_root = root.map(Path::to_path_buf);
        let here = |p: &Path| p.as_os_str().is_empty() || p == Path::new(".");
        match (&cfg.state_uri.1, &cfg.file, root) {
            (Source::File(_), Some(file), _) => {
                if let Some(dir) = file.parent().filter(|d| !here(d)) {
                    cfg.state_uri.0 = anchor_sqlite(&cfg.state_uri.0, dir);
                }
            }
            (Source::Default, _, Some(root)) if !here(root) => {
                cfg.state_uri.0 = anchor_sqlite(&cfg.state_uri.0, root);
            }
            _ => {}
        }
        // `[memory] uri` is relative to the file too.
        if let (Some(file), Some(m)) = (&cfg.file, cfg.memory.as_mut()) {
            if let (Some(dir), Some(uri)) = (file.parent().filter(|d| !here(d)), m.uri.as_mut()) {
                *uri = anchor_sqlite(uri, dir);
            }
        }
        Ok(cfg)
    }

    /// The default blueprint: the project's `pipeline.yaml`.
    pub fn default_pipeline(&self) -> PathBuf {
        match &self.project_root {
            Some(root) if root != Path::new(".") => root.join("pipeline.yaml"),
            _ => PathBuf::from("pipeline.yaml"),
        }
    }

    fn load_at(path: Option<&Path>, root: Option<&Path>) -> Result<Config, ConfigError> {
        let mut cfg = Config {
            state_uri: (DEFAULT_STATE_URI.into(), Source::Default),
            strict_templates: (false, Source::Default),
            max_input_bytes: (DEFAULT_MAX_INPUT_BYTES, Source::Default),
            file: None,
            notes: Vec::new(),
            table: toml::Table::new(),
            budgets: Vec::new(),
            run_json_output: false,
            validation_profiles: Vec::new(),
            env_file_vars: Vec::new(),
            project_root: None,
            lockfile: crate::lock::LockSettings::default(),
            queue_limits: Default::default(),
            governance: None,
            shadow: None,
            memory: None,
            sandbox: None,
            queue_rates: Default::default(),
        };
        // FLUJO_CONFIG_PATH is the original's name of FLUJO_CONFIG
        let env_path =
            std::env::var_os("FLUJO_CONFIG").or_else(|| std::env::var_os("FLUJO_CONFIG_PATH")).map(PathBuf::from);
        let candidate = path.map(Path::to_path_buf).or(env_path);
        let file = match candidate {
            Some(p) => {
                crate::commands::check_regular_file(&p, "config file", "").map_err(ConfigError)?;
                Some(p)
            }
            None => {
                let default = match root {
                    Some(r) if r != Path::new(".") => r.join("flujo.toml"),
                    _ => PathBuf::from("flujo.toml"),
                };
                match std::fs::symlink_metadata(&default) {
                    Err(_) => None,
                    Ok(_) => {
                        crate::commands::check_regular_file(&default, "config file", "").map_err(ConfigError)?;
                        Some(default)
                    }
                }
            }
        };
        if let Some(file) = &file {
            cfg.apply_file(file)?;
            cfg.table = std::fs::read_to_string(file).ok().and_then(|t| t.parse().ok()).unwrap_or_default();
            cfg.file = Some(file.clone());
        }
        if let Ok(v) = std::env::var("FLUJO_STATE_URI") {
            cfg.state_uri = (v, Source::Env("FLUJO_STATE_URI"));
        }
        if let Ok(v) = std::env::var("FLUJO_MAX_INPUT_BYTES") {
            let n = parse_bytes(&v).filter(|n| *n > 0).ok_or_else(|| {
                ConfigError(format!(
                    "FLUJO_MAX_INPUT_BYTES: expected a positive size such as 16777216 or 64MiB, got '{v}'"
                ))
            })?;
            cfg.max_input_bytes = (n, Source::Env("FLUJO_MAX_INPUT_BYTES"));
        }
        if let Ok(v) = std::env::var("FLUJO_STRICT_TEMPLATES") {
            cfg.strict_templates = (parse_bool(&v, "FLUJO_STRICT_TEMPLATES")?, Source::Env("FLUJO_STRICT_TEMPLATES"));
        }
        Ok(cfg)
    }

    fn apply_file(&mut self, file: &Path) -> Result<(), ConfigError> {
        let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        if len > MAX_CONFIG_BYTES {
            return Err(ConfigError(format!(
                "{} has {len} bytes; a configuration file has at most {}",
                file.display(),
                human_bytes(MAX_CONFIG_BYTES)
            )));
        }
        let text =
            std::fs::read_to_string(file).map_err(|e| ConfigError(format!("cannot read {}: {e}", file.display())))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError(format!("{} is not valid TOML: {e}", file.display())))?;
        let src = Source::File(file.to_path_buf());
        for (key, value) in &table {
            match key.as_str() {
                "state_uri" => match value {
                    toml::Value::String(s) => self.state_uri = (s.clone(), src.clone()),
                    other => {
                        return Err(ConfigError(format!(
                            "{}: state_uri must be a string, got {}",
                            file.display(),
                            other.type_str()
                        )))
                    }
                },
                "env_file" => {
                    let Some(name) = value.as_str() else {
                        return Err(ConfigError(format!(
                            "{}: env_file must be a string (a dotenv file, relative to flujo.toml's folder), got {}",
                            file.display(),
                            value.type_str()
                        )));
                    };
                    let base = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                    self.load_env_file(&base.join(name), file)?;
                }
                // The original's spelling: `[template] undefined_variables = "strict" | "warn" | "ignore"`.
                "template" => {
                    let Some(t) = value.as_table() else {
                        return Err(ConfigError(format!("{}: [template] must be a table", file.display())));
                    };
                    for (k, v) in t {
                        match (k.as_str(), v.as_str()) {
                            ("undefined_variables", Some("strict")) => self.strict_templates = (true, src.clone()),
                            ("undefined_variables", Some("warn" | "ignore")) => {
                                self.strict_templates = (false, src.clone())
                            }
                            ("undefined_variables", _) => {
                                return Err(ConfigError(format!(
                                    "{}: template.undefined_variables must be \"strict\", \"warn\" or \"ignore\", got {v}",
                                    file.display()
                                )))
                            }
                            ("log_resolution", _) => self.notes.push(format!(
                                "{}: template.log_resolution has no effect here (template resolution is not logged; `flujo lens show` has each step's rendered input)",
                                file.display()
                            )),
                            (other, _) => self.notes.push(format!(
                                "{}: unknown key template.{other} (known: undefined_variables); it is ignored",
                                file.display()
                            )),
                        }
                    }
                }
                "run" => {
                    let Some(t) = value.as_table() else {
                        return Err(ConfigError(format!("{}: [run] must be a table", file.display())));
                    };
                    for (k, v) in t {
                        match (k.as_str(), v) {
                            ("json_output", toml::Value::Boolean(b)) => self.run_json_output = *b,
                            ("json_output", other) => {
                                return Err(ConfigError(format!(
                                    "{}: run.json_output must be true or false, got {}",
                                    file.display(),
                                    other.type_str()
                                )))
                            }
                            ("pipeline_name", _) => self.notes.push(format!(
                                "{}: run.pipeline_name has no effect here (it names the pipeline variable of a Python file; blueprints are YAML)",
                                file.display()
                            )),
                            (other, _) => self.notes.push(format!(
                                "{}: unknown key run.{other} (known: json_output, pipeline_name); it is ignored",
                                file.display()
                            )),
                        }
                    }
                }
                "validation" => self.validation_profiles = parse_profiles(value, file)?,
                "architect" => {
                    let Some(t) = value.as_table() else {
                        return Err(ConfigError(format!("{}: [architect] must be a table", file.display())));
                    };
                    for (k, v) in t {
                        match (k.as_str(), v) {
                            ("model", toml::Value::String(_)) => {}
                            ("model", other) => {
                                return Err(ConfigError(format!(
                                    "{}: architect.model must be a \"provider:model\" string, got {}",
                                    file.display(),
                                    other.type_str()
                                )))
                            }
                            ("state_machine_default", _) => self.notes.push(format!(
                                "{}: architect.state_machine_default has no effect here: the Architect is one write-validate-repair loop",
                                file.display()
                            )),
                            (other, _) => self.notes.push(format!(
                                "{}: unknown key architect.{other} (known: model, state_machine_default); it is ignored",
                                file.display()
                            )),
                        }
                    }
                }
                "queues" => {
                    let Some(t) = value.as_table() else {
                        return Err(ConfigError(format!("{}: [queues] must be a table", file.display())));
                    };
                    for (queue, settings) in t {
                        let Some(settings) = settings.as_table() else {
                            return Err(ConfigError(format!(
                                "{}: [queues.{queue}] must be a table (e.g. `concurrency = 4`)",
                                file.display()
                            )));
                        };
                        for (k, v) in settings {
                            match (k.as_str(), v) {
                                ("concurrency", toml::Value::Integer(n)) if *n > 0 => {
                                    self.queue_limits.insert(queue.clone(), *n as u64);
                                }
                                ("concurrency", other) => {
                                    return Err(ConfigError(format!(
                                        "{}: queues.{queue}.concurrency must be a positive integer, got {other}",
                                        file.display()
                                    )))
                                }
                                ("rate_limit", toml::Value::Table(rate)) => {
                                    let runs = rate.get("runs").and_then(toml::Value::as_integer).filter(|n| *n > 0);
                                    let period = rate.get("period_s").and_then(|v| {
                                        v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
                                    });
                                    match (runs, period.filter(|p| p.is_finite() && *p > 0.0 && *p <= 86_400.0)) {
                                        (Some(runs), Some(period)) => {
                                            self.queue_rates.insert(queue.clone(), (runs as u64, period));
                                        }
                                        _ => {
                                            return Err(ConfigError(format!(
                                                "{}: queues.{queue}.rate_limit must be {{runs = N, period_s = S}} with N \
                                                 a positive integer and S seconds (0 < S <= 86400)",
                                                file.display()
                                            )))
                                        }
                                    }
                                }
                                (other, _) => self.notes.push(format!(
                                    "{}: unknown key queues.{queue}.{other} (known: concurrency, rate_limit); it is \
                                     ignored",
                                    file.display()
                                )),
                            }
                        }
                    }
                }
                "lockfile" => {
                    let Some(t) = value.as_table() else {
                        return Err(ConfigError(format!("{}: [lockfile] must be a table", file.display())));
                    };
                    for (k, v) in t {
                        match (k.as_str(), v) {
                            ("external_files", toml::Value::Array(items)) => {
                                let globs: Option<Vec<String>> =
                                    items.iter().map(|i| i.as_str().map(str::to_owned)).collect();
                                self.lockfile.external_files = globs.ok_or_else(|| {
                                    ConfigError(format!("{}: lockfile.external_files must be a list of globs", file.display()))
                                })?;
                            }
                            ("include_model_info", toml::Value::Boolean(b)) => self.lockfile.include_model_info = *b,
                            ("enabled" | "auto_generate_on_run", _) => self.notes.push(format!(
                                "{}: lockfile.{k} has no effect here: runs do not write the lockfile; `flujo lock generate` does",
                                file.display()
                            )),
                            // Skills are always pinned with their schemas (the whole catalog entry is hashed).
                            ("include_tool_schemas", toml::Value::Boolean(_)) => {}
                            ("external_files" | "include_model_info" | "include_tool_schemas", other) => {
                                return Err(ConfigError(format!(
                                    "{}: lockfile.{k} has the wrong type ({})",
                                    file.display(),
                                    other.type_str()
                                )))
                            }
                            (other, _) => self.notes.push(format!(
                                "{}: unknown key lockfile.{other} (known: enabled, external_files, include_model_info, include_tool_schemas, auto_generate_on_run); it is ignored",
                                file.display()
                            )),
                        }
                    }
                }
                s if NOT_APPLICABLE.iter().any(|(k, _)| *k == s) => {
                    let why = NOT_APPLICABLE.iter().find(|(k, _)| *k == s).map_or("", |(_, w)| *w);
                    let shown = if value.is_table() { format!("[{s}]") } else { s.to_owned() };
                    self.notes.push(format!("{}: {shown} has no effect here: {why}", file.display()));
                }
                "templates" => {
                    let Some(t) = value.as_table() else {
                        return Err(ConfigError(format!("{}: [templates] must be a table", file.display())));
                    };
                    for (k, v) in t {
                        match (k.as_str(), v) {
                            ("strict", toml::Value::Boolean(b)) => self.strict_templates = (*b, src.clone()),
                            ("strict", other) => {
                                return Err(ConfigError(format!(
                                    "{}: templates.strict must be true or false, got {}",
                                    file.display(),
                                    other.type_str()
                                )))
                            }
                            (other, _) => self.notes.push(format!(
                                "{}: unknown key templates.{other} (known: strict); it is ignored",
                                file.display()
                            )),
                        }
                    }
                }
                "limits" => {
                    let Some(t) = value.as_table() else {
                        return Err(ConfigError(format!("{}: [limits] must be a table", file.display())));
                    };
                    for (k, v) in t {
                        match (k.as_str(), v) {
                            ("max_input_bytes", toml::Value::Integer(n)) if *n > 0 => {
                                self.max_input_bytes = (*n as u64, src.clone())
                            }
                            ("max_input_bytes", toml::Value::String(text)) if parse_bytes(text).is_some_and(|n| n > 0) => {
                                self.max_input_bytes = (parse_bytes(text).unwrap_or(DEFAULT_MAX_INPUT_BYTES), src.clone())
                            }
                            ("max_input_bytes", other) => {
                                return Err(ConfigError(format!(
                                    "{}: limits.max_input_bytes must be a positive number of bytes (or a size such as \"64MiB\"), got {other}",
                                    file.display()
                                )))
                            }
                            (other, _) => self.notes.push(format!(
                                "{}: unknown key limits.{other} (known: max_input_bytes); it is ignored",
                                file.display()
                            )),
                        }
                    }
                }
                // Read by flujo-llm (`LlmConfig::from_toml`), which reports their own errors.
                "cost" | "providers" => {}
                // `[imports] allow_outside = true`: imports may leave the blueprint's folder.
                "imports" => {
                    let Some(t) = value.as_table() else {
                        return Err(ConfigError(format!("{}: [imports] must be a table", file.display())));
                    };
                    for (k, v) in t {
                        match (k.as_str(), v) {
                            ("allow_outside", toml::Value::Boolean(_)) => {}
                            ("allow_outside", other) => {
                                return Err(ConfigError(format!(
                                    "{}: imports.allow_outside must be true or false, got {}",
                                    file.display(),
                                    other.type_str()
                                )))
                            }
                            (other, _) => {
                                return Err(ConfigError(format!(
                                    "{}: unknown key imports.{other} (known: allow_outside)",
                                    file.display()
                                )))
                            }
                        }
                    }
                }
                "budgets" => {
                    let Some(b) = value.as_table() else {
                        return Err(ConfigError(format!("{}: [budgets] must be a table", file.display())));
                    };
                    for (k, v) in b {
                        match k.as_str() {
                            "default" => self.budgets.push(Budget {
                                glob: None,
                                limits: parse_limits(v, "budgets.default", file)?,
                                source: format!("{} [budgets.default]", file.display()),
                            }),
                            "pipeline" => {
                                let Some(globs) = v.as_table() else {
                                    return Err(ConfigError(format!("{}: [budgets.pipeline] must be a table", file.display())));
                                };
                                for (glob, limits) in globs {
                                    let what = format!("budgets.pipeline.\"{glob}\"");
                                    self.budgets.push(Budget {
                                        glob: Some(glob.clone()),
                                        limits: parse_limits(limits, &what, file)?,
                                        source: format!("{} [{what}]", file.display()),
                                    });
                                }
                            }
                            other => {
                                return Err(ConfigError(format!(
                                    "{}: unknown section budgets.{other} (known: default, pipeline)",
                                    file.display()
                                )))
                            }
                        }
                    }
                }
                "governance" => {
                    let json = serde_json::to_value(value)
                        .map_err(|e| ConfigError(format!("{}: [governance]: {e}", file.display())))?;
                    let base = file.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
                    let cfg = flujo_engine::governance::GovernanceConfig::from_json(&json, base)
                        .map_err(|e| ConfigError(format!("{}: {e}", file.display())))?;
                    self.governance = Some((std::sync::Arc::new(cfg), file.to_path_buf()));
                }
                "shadow_eval" => {
                    let json = serde_json::to_value(value)
                        .map_err(|e| ConfigError(format!("{}: [shadow_eval]: {e}", file.display())))?;
                    let cfg = flujo_engine::shadow::ShadowConfig::from_json(&json)
                        .map_err(|e| ConfigError(format!("{}: {e}", file.display())))?;
                    self.shadow = Some(cfg);
                }
                "memory" => {
                    let m = crate::memory::MemoryToml::from_toml(value)
                        .map_err(|e| ConfigError(format!("{}: {e}", file.display())))?;
                    self.memory = Some(m);
                }
                "sandbox" => {
                    let mut sb = crate::sandbox::SandboxToml::from_toml(value)
                        .map_err(|e| ConfigError(format!("{}: {e}", file.display())))?;
                    // `temp_dir` is relative to the file
                    if let (Some(dir), Some(t)) = (file.parent(), sb.temp_dir.as_mut()) {
                        if t.is_relative() {
                            *t = dir.join(&*t);
                        }
                    }
                    self.sandbox = Some(sb);
                }
                // `[telemetry]`: checked and read from `table` by `crate::otel` (feature `otel`).
                "telemetry" if cfg!(feature = "otel") => {}
                // `[mcp.servers.NAME]`: checked here, read from `table` by `crate::mcp`.
                "mcp" => crate::mcp::check_toml(value, file).map_err(|e| ConfigError(format!("{}: {e}", file.display())))?,
                s if FUTURE_SECTIONS.contains(&s) => self.notes.push(format!(
                    "{}: [{s}] is not supported by this version of flujo yet; it has no effect",
                    file.display()
                )),
                other => self.notes.push(format!(
                    "{}: unknown setting '{other}' (known: state_uri, env_file, [templates] or [template], [run], [validation], [limits], [cost], [providers], [budgets], [imports], [queues], [governance], [shadow_eval], [memory], [sandbox]); it is ignored",
                    file.display()
                )),
            }
        }
        Ok(())
    }

    /// Loads a dotenv file: `KEY=VALUE` lines (`export ` prefix, `#` comments, single or double quotes; `\n`
    /// in double quotes). A variable already in the environment is kept (as the original's
    /// `load_dotenv(override=False)`). A missing file is a note; a malformed line an error naming it.
    fn load_env_file(&mut self, path: &Path, file: &Path) -> Result<(), ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.notes.push(format!(
                    "{}: env_file {} does not exist; nothing loaded",
                    file.display(),
                    path.display()
                ));
                return Ok(());
            }
            Err(e) => {
                return Err(ConfigError(format!("{}: cannot read env_file {}: {e}", file.display(), path.display())))
            }
        };
        let pairs = parse_dotenv(&text).map_err(|(line, why)| {
            ConfigError(format!("{}:{line}: {why} (env_file of {})", path.display(), file.display()))
        })?;
        for ((key, value), _) in pairs {
            if std::env::var_os(&key).is_none() {
                // Single-threaded here: the configuration is loaded before the async runtime starts.
                std::env::set_var(&key, &value);
                self.env_file_vars.push(key);
            }
        }
        Ok(())
    }

    /// `[imports] allow_outside` (default false).
    pub fn imports_allow_outside(&self) -> bool {
        self.table.get("imports").and_then(|t| t.get("allow_outside")).and_then(toml::Value::as_bool).unwrap_or(false)
    }

    /// The names of the `[providers.NAME]` sections (model providers besides the built-in ones).
    pub fn provider_names(&self) -> Vec<String> {
        self.table
            .get("providers")
            .and_then(toml::Value::as_table)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "file": self.file.as_ref().map(|f| f.display().to_string()),
            // The password of a database URI is never printed.
            "state_uri": {"value": flujo_store::mask_uri(&self.state_uri.0), "source": self.state_uri.1.describe()},
            "templates": {"strict": {"value": self.strict_templates.0, "source": self.strict_templates.1.describe()}},
            "limits": {"max_input_bytes": {"value": self.max_input_bytes.0, "source": self.max_input_bytes.1.describe()}},
            "notes": self.notes,
            "env_file_vars": self.env_file_vars,
            "run": {"json_output": self.run_json_output},
            "validation_profiles": self.validation_profiles.iter().map(|(name, levels)| json!({
                "name": name,
                "rules": levels.iter().map(|(glob, level)| json!({
                    "rule": glob,
                    "level": match level { RuleLevel::Off => "off", RuleLevel::Warning => "warning", RuleLevel::Error => "error" },
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "budgets": self.budgets.iter().map(|b| json!({
                "pipeline_glob": b.glob,
                "total_cost_usd_limit": b.limits.total_cost_usd_limit,
                "total_tokens_limit": b.limits.total_tokens_limit,
                "source": b.source,
            })).collect::<Vec<_>>(),
        })
    }
}

/// `KEY=VALUE` pairs of a dotenv file with their line numbers, or the first malformed line and why.
pub fn parse_dotenv(text: &str) -> Result<Vec<DotenvEntry>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err((line_no, "expected KEY=VALUE".to_owned()));
        };
        let key = key.trim();
        if key.is_empty()
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || key.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err((line_no, format!("'{key}' is not a variable name (letters, digits, _)")));
        }
        let value = value.trim();
        let value = if let Some(rest) = value.strip_prefix('"') {
            let Some(end) = rest.rfind('"') else {
                return Err((line_no, "unterminated double quote".to_owned()));
            };
            rest[..end].replace("\\n", "\n").replace("\\\"", "\"")
        } else if let Some(rest) = value.strip_prefix('\'') {
            let Some(end) = rest.rfind('\'') else {
                return Err((line_no, "unterminated single quote".to_owned()));
            };
            rest[..end].to_owned()
        } else {
            // an unquoted value ends at ` #` (a comment)
            value.split(" #").next().unwrap_or_default().trim_end().to_owned()
        };
        if value.contains('\0') {
            return Err((line_no, "a value may not contain a NUL byte".to_owned()));
        }
        out.push(((key.to_owned(), value), line_no));
    }
    Ok(out)
}

/// `[validation.profiles.NAME]` tables: `"RULE-OR-GLOB" = "off" | "warning" | "error"`.
pub fn parse_profiles(value: &toml::Value, file: &Path) -> Result<Vec<Profile>, ConfigError> {
    let Some(t) = value.as_table() else {
        return Err(ConfigError(format!("{}: [validation] must be a table", file.display())));
    };
    let mut out = Vec::new();
    for (k, v) in t {
        if k != "profiles" {
            return Err(ConfigError(format!("{}: unknown key validation.{k} (known: profiles)", file.display())));
        }
        let Some(profiles) = v.as_table() else {
            return Err(ConfigError(format!("{}: [validation.profiles] must be a table", file.display())));
        };
        for (name, rules) in profiles {
            let Some(rules) = rules.as_table() else {
                return Err(ConfigError(format!(
                    "{}: [validation.profiles.{name}] must be a table of rule ids (or globs) and levels",
                    file.display()
                )));
            };
            let mut levels = Vec::new();
            for (glob, level) in rules {
                let level = match level.as_str().map(str::to_ascii_lowercase).as_deref() {
                    Some("off" | "ignore") => RuleLevel::Off,
                    Some("warning" | "warn") => RuleLevel::Warning,
                    Some("error") => RuleLevel::Error,
                    _ => {
                        return Err(ConfigError(format!(
                            "{}: validation.profiles.{name}.\"{glob}\" must be \"off\", \"warning\" or \"error\", got {level}",
                            file.display()
                        )))
                    }
                };
                levels.push((glob.clone(), level));
            }
            out.push((name.clone(), levels));
        }
    }
    Ok(out)
}
