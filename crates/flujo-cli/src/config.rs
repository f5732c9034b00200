//! `flujo.toml` loading with `FLUJO_*` environment overrides. A malformed file is a configuration error
//! (exit 2); sections this version does not implement yet are reported on stderr, never silently ignored.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Sections of `flujo.toml` that later versions use; present ones are reported as not yet effective.
const FUTURE_SECTIONS: &[&str] =
    &["cost", "budgets", "providers", "governance", "shadow_eval", "memory", "sandbox", "server", "telemetry"];

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(&'static str),
}

impl Source {
    fn describe(&self) -> String {
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
    pub file: Option<PathBuf>,
    /// Notes for stderr (sections not used yet, …).
    pub notes: Vec<String>,
}

pub const DEFAULT_STATE_URI: &str = "sqlite:///.flujo/state.db";

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
    /// Loads `path` (or `flujo.toml` in the current folder when it exists), then applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut cfg = Config {
            state_uri: (DEFAULT_STATE_URI.into(), Source::Default),
            strict_templates: (false, Source::Default),
            file: None,
            notes: Vec::new(),
        };
        let env_path = std::env::var_os("FLUJO_CONFIG").map(PathBuf::from);
        let candidate = path.map(Path::to_path_buf).or(env_path);
        let file = match candidate {
            Some(p) => {
                if !p.is_file() {
                    return Err(ConfigError(format!("config file {} not found", p.display())));
                }
                Some(p)
            }
            None => Some(PathBuf::from("flujo.toml")).filter(|p| p.is_file()),
        };
        if let Some(file) = &file {
            cfg.apply_file(file)?;
            cfg.file = Some(file.clone());
        }
        if let Ok(v) = std::env::var("FLUJO_STATE_URI") {
            cfg.state_uri = (v, Source::Env("FLUJO_STATE_URI"));
        }
        if let Ok(v) = std::env::var("FLUJO_STRICT_TEMPLATES") {
            cfg.strict_templates = (parse_bool(&v, "FLUJO_STRICT_TEMPLATES")?, Source::Env("FLUJO_STRICT_TEMPLATES"));
        }
        Ok(cfg)
    }

    fn apply_file(&mut self, file: &Path) -> Result<(), ConfigError> {
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
                s if FUTURE_SECTIONS.contains(&s) => self.notes.push(format!(
                    "{}: [{s}] is not supported by this version of flujo yet; it has no effect",
                    file.display()
                )),
                other => self.notes.push(format!(
                    "{}: unknown setting '{other}' (known: state_uri, [templates]); it is ignored",
                    file.display()
                )),
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        json!({
            "file": self.file.as_ref().map(|f| f.display().to_string()),
            "state_uri": {"value": self.state_uri.0, "source": self.state_uri.1.describe()},
            "templates": {"strict": {"value": self.strict_templates.0, "source": self.strict_templates.1.describe()}},
            "notes": self.notes,
        })
    }
}
