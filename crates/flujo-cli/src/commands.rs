//! The subcommands: wiring of config, blueprint, store, skills and runner; rendering; exit codes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flujo_blueprint::{Diagnostic, LoadOptions, Loaded};
use flujo_core::{
    FlujoError, IdGen, PendingPause, Pipeline, RunEvent, RunResult, RunStatus, SkillRegistry, Store, StoreError,
};
use flujo_engine::{Flujo, ResumeRequest, RunOptions};
use flujo_skills::{BuiltinRegistry, CommandSkill, CommandSpec, HttpBody, HttpSkill, HttpSpec};
use serde_json::{Map, Value};

use crate::config::{Config, RuleLevel};
use crate::*;

/// Blueprint loading settings from `flujo.toml` and the command line, set once per process by [`dispatch`].
struct LoadSettings {
    allow_imports_outside: bool,
    providers: Vec<String>,
    /// `[mcp.servers.NAME]` of `flujo.toml`.
    mcp_servers: Vec<String>,
}

static LOAD_SETTINGS: std::sync::OnceLock<LoadSettings> = std::sync::OnceLock::new();

/// [`LoadOptions`] with the process's [`LoadSettings`].
pub(crate) fn load_options<'a>(registry: &'a BuiltinRegistry, strict: bool) -> LoadOptions<'a> {
    let settings = LOAD_SETTINGS.get();
    LoadOptions {
        registry: Some(registry),
        strict,
        allow_imports_outside: settings.is_some_and(|s| s.allow_imports_outside),
        providers: settings.map(|s| s.providers.clone()).unwrap_or_default(),
        mcp_servers: settings.map(|s| s.mcp_servers.clone()).unwrap_or_default(),
        // Only `flujo lock` and `flujo serve` read the canonical JSON; they ask for it.
        skip_canonical: true,
        ..Default::default()
    }
}

/// Runs a command with the configuration `main` loaded (before the async runtime started: `env_file` sets
/// environment variables).
/// The project's `pipeline.yaml` (set once by [`dispatch`]).
static DEFAULT_PIPELINE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

pub async fn dispatch(cli: Cli, config: Config) -> Result<u8, CliError> {
    let _ = DEFAULT_PIPELINE.set(config.default_pipeline());
    for note in &config.notes {
        errln!("warning: {note}");
    }
    let flag = match &cli.command {
        Command::Run(a) => a.allow_imports_outside,
        Command::Validate(a) => a.allow_imports_outside,
        _ => false,
    };
    let _ = LOAD_SETTINGS.set(LoadSettings {
        allow_imports_outside: flag || config.imports_allow_outside(),
        providers: config.provider_names(),
        mcp_servers: crate::mcp::configured_names(&config),
    });
    crate::mcp::configure(&config)?;
    match cli.command {
        Command::Init { force } => crate::scaffold::init(force),
        Command::Run(mut args) => {
            // `[run] json_output = true` (the original's CLI default)
            args.json |= config.run_json_output;
            run(args, &config).await
        }
        Command::Resume(args) => resume(args, &config).await,
        Command::Worker(args) => crate::worker::worker(args, &config).await,
        Command::Serve(args) => crate::serve::serve(args, &config).await,
        Command::Schedule(cmd) => crate::schedule::dispatch(cmd, &config).await,
        Command::Memory(cmd) => crate::memory::dispatch(cmd, &config).await,
        Command::Validate(args) => validate(args, &config),
        Command::Lens(cmd) => crate::lens::dispatch(cmd, &config).await,
        Command::Dev(DevCommand::Explain { pipeline }) => {
            let loaded = load(&pipeline_path(pipeline)?, false)?;
            out!("{}", crate::view::explain(&loaded.pipeline));
            Ok(EXIT_OK)
        }
        Command::Dev(DevCommand::Visualize { pipeline }) => {
            let loaded = load(&pipeline_path(pipeline)?, false)?;
            out!("{}", crate::view::mermaid(&loaded.pipeline));
            Ok(EXIT_OK)
        }
        Command::Dev(DevCommand::Budgets { args }) => {
            let name = match args.as_slice() {
                [show, name] if show == "show" => name.clone(),
                [show] if show == "show" => {
                    return Err(CliError::usage("usage_error", "`dev budgets show` needs a pipeline name"));
                }
                [file] => load(&pipeline_path(Some(PathBuf::from(file)))?, false)?.pipeline.name,
                [] => load(&pipeline_path(None)?, false)?.pipeline.name,
                _ => return Err(CliError::usage("usage_error", "use `dev budgets [FILE]` or `dev budgets show NAME`")),
            };
            let (limits, sources) = config.budget_for(&name);
            let v = serde_json::json!({
                "pipeline": name,
                "total_cost_usd_limit": limits.total_cost_usd_limit,
                "total_tokens_limit": limits.total_tokens_limit,
                "sources": sources,
            });
            outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(EXIT_OK)
        }
        Command::Dev(DevCommand::Governance { pipeline, name, json }) => {
            let pipeline_name = match (pipeline, name) {
                (Some(p), true) => p.display().to_string(),
                (None, true) => {
                    return Err(CliError::usage("usage_error", "`dev governance --name` needs a pipeline name"))
                }
                (p, false) => load(&pipeline_path(p)?, false)?.pipeline.name,
            };
            dev_governance(&config, &pipeline_name, json)
        }
        Command::Dev(DevCommand::Version) => {
            outln!("flujo version: {}", env!("CARGO_PKG_VERSION"));
            Ok(EXIT_OK)
        }
        Command::Dev(DevCommand::Validate(args)) => validate(args, &config),
        Command::Dev(DevCommand::GenContext(args)) => crate::gen_context::gen_context(args),
        Command::Dev(DevCommand::ImportOpenapi(args)) => crate::openapi::import_openapi(args),
        Command::Dev(DevCommand::Prices(args)) => crate::prices::prices(args, &config),
        Command::Dev(DevCommand::HealthCheck(args)) => crate::health::health_check(args, &config).await,
        Command::Dev(DevCommand::SandboxCheck { kind, json }) => crate::sandbox::check(&config, kind, json).await,
        Command::Dev(DevCommand::CompileYaml { src, out, no_normalize }) => {
            compile_yaml(&src, out.as_deref(), !no_normalize)
        }
        Command::Status(args) => crate::lens::status(args, &config).await,
        Command::Lock(cmd) => crate::lock::dispatch(cmd, &config).await,
        Command::Create(args) => crate::create::create(args, &config).await,
        Command::Dev(DevCommand::ShowConfig) => {
            outln!("{}", serde_json::to_string_pretty(&config.to_json()).unwrap_or_default());
            Ok(EXIT_OK)
        }
    }
}

pub(crate) fn pipeline_path(p: Option<PathBuf>) -> Result<PathBuf, CliError> {
    let path = p.unwrap_or_else(|| DEFAULT_PIPELINE.get().cloned().unwrap_or_else(|| PathBuf::from("pipeline.yaml")));
    check_regular_file(&path, "pipeline file", " (give a path, or run `flujo init` to create pipeline.yaml)")
        .map_err(CliError::config)?;
    Ok(path)
}

/// Checks that `path` names a regular file without opening it (a FIFO would block): the error says what it
/// is instead ("not found", "is a directory", "is not a regular file"). `hint` is appended to "not found".
pub fn check_regular_file(path: &Path, what: &str, hint: &str) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) if m.is_dir() => Err(format!("{what} {} is a directory, not a file", path.display())),
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt;
            let ft = m.file_type();
            let kind = if ft.is_fifo() {
                "a FIFO (named pipe)"
            } else if ft.is_socket() {
                "a socket"
            } else if ft.is_char_device() || ft.is_block_device() {
                "a device"
            } else {
                "a special file"
            };
            Err(format!("{what} {} is not a regular file: it is {kind}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!("{what} {} not found{hint}", path.display())),
        Err(e) => Err(format!("cannot read {what} {}: {e}", path.display())),
    }
}

/// A run id given on the command line (`--run-id`, `resume RUN_ID`, `lens … RUN_ID`): bounded and
/// printable (see [`flujo_core::check_run_id`]); otherwise exit 2 with kind `invalid_run_id`.
pub fn check_run_id_arg(id: &str) -> Result<(), CliError> {
    flujo_core::check_run_id(id).map_err(|reason| {
        CliError::usage(
            "invalid_run_id",
            format!("invalid run id '{}': {reason}", flujo_core::shorten_for_display(id, 40)),
        )
    })
}

/// The longest `--pause-id` accepted (pause ids are step paths).
const MAX_PAUSE_ID_CHARS: usize = 4096;

fn check_pause_id_arg(id: &str) -> Result<(), CliError> {
    let bad = |reason: String| {
        CliError::usage(
            "invalid_resume_input",
            format!("invalid --pause-id '{}': {reason}", flujo_core::shorten_for_display(id, 40)),
        )
    };
    if id.is_empty() {
        return Err(bad("a pause id cannot be empty".into()));
    }
    let n = id.chars().count();
    if n > MAX_PAUSE_ID_CHARS {
        return Err(bad(format!("a pause id has at most {MAX_PAUSE_ID_CHARS} characters; this one has {n}")));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(bad(format!("a pause id cannot contain the control character U+{:04X}", u32::from(c))));
    }
    Ok(())
}

/// An unknown run id: a usage error (exit 2), like an unknown pause id.
pub fn run_not_found(id: &str, uri: &str) -> CliError {
    let note = if keeps_state(uri) { "" } else { " (this store keeps no runs after the process that ran them exits)" };
    CliError::usage(
        "run_not_found",
        format!("run '{}' not found in {uri}{note}", flujo_core::shorten_for_display(id, 80)),
    )
}

/// Whether a state store URI keeps runs after the process exits (`memory://` and SQLite `:memory:` do not).
pub fn keeps_state(uri: &str) -> bool {
    let uri = uri.trim();
    let lower = uri.to_ascii_lowercase();
    !(lower == "memory" || lower.starts_with("memory://") || lower.contains(":memory:"))
}

/// Rules whose failure is an import or skill resolution problem (exit 3) rather than invalid content (exit 4).
pub(crate) fn is_resolution_rule(rule: &str) -> bool {
    rule.starts_with("BP-IMPORT")
        || rule == "BP-SKILL-MISSING"
        || rule == "BP-AGENT-MISSING"
        || rule == "BP-MCP-SERVER"
        || rule == "BP-MCP-TOOL"
}

fn print_diagnostics(diags: &[Diagnostic]) {
    if !diags.is_empty() {
        err!("{}", flujo_blueprint::render_text(diags));
    }
}

/// Loads and validates a blueprint; warnings go to stderr, errors become exit 3 or 4 (with the diagnostics
/// in the `--json` object).
pub(crate) fn load(path: &Path, strict: bool) -> Result<Loaded, CliError> {
    let builtins = BuiltinRegistry::new();
    let opts = load_options(&builtins, strict);
    match flujo_blueprint::load_file(path, &opts) {
        Ok(loaded) => {
            print_diagnostics(&loaded.diagnostics);
            Ok(loaded)
        }
        Err(failure) => {
            print_diagnostics(&failure.diagnostics);
            let errors: Vec<&Diagnostic> = failure.diagnostics.iter().filter(|d| d.is_error()).collect();
            let resolution = errors.iter().any(|d| is_resolution_rule(&d.rule));
            let (kind, code) =
                if resolution { ("resolution_error", EXIT_RESOLUTION) } else { ("validation_failed", EXIT_VALIDATION) };
            let mut e =
                CliError::new(kind, code, format!("{} has {} error(s); see above", path.display(), errors.len()));
            e.diagnostics = serde_json::to_value(&failure.diagnostics).ok().map(Box::new);
            Err(e)
        }
    }
}

/// Built-in skills plus the command skills of the blueprint's catalog.
pub(crate) fn registry_for(
    loaded: Option<&Loaded>,
    extra_catalog_dir: Option<&Path>,
) -> Result<Arc<dyn SkillRegistry>, CliError> {
    let mut catalog = loaded.map(|l| l.catalog.clone()).unwrap_or_default();
    if let Some(dir) = extra_catalog_dir {
        let (c, diags) = flujo_blueprint::SkillCatalog::load_dir(dir);
        print_diagnostics(&diags);
        catalog.merge(&c);
    }
    // `mcp.NAME.TOOL` of the servers of flujo.toml and the blueprint (crate::mcp).
    let mcp = loaded.map(|l| l.mcp_servers.as_slice()).unwrap_or_default();
    registry_from(&catalog).map(|reg| crate::mcp::wrap(reg, mcp))
}

/// The skills a stored run was started with, from the catalogs its origin recorded (wherever we are now).
/// A catalog or a program it runs that changed since the run started is a `pipeline_mismatch`; a changed
/// prompt file is only a note (its text is part of the stored definition). Runs stored without an origin
/// (older versions, pipelines built in code) read `skills.yaml` of the current folder, as before.
pub(crate) fn registry_for_stored_run(run: &flujo_core::RunRecord) -> Result<Arc<dyn SkillRegistry>, CliError> {
    let Some(origin) = &run.origin else {
        return registry_for(None, Some(Path::new(".")));
    };
    let mut blocking = Vec::new();
    for changed in flujo_blueprint::origin::changed_files(origin) {
        match changed.role {
            flujo_core::OriginRole::Prompt => {
                errln!("note: {changed}; the run goes on with the prompt text stored with it")
            }
            _ => blocking.push(changed.to_string()),
        }
    }
    if !blocking.is_empty() {
        return Err(CliError::new(
            "pipeline_mismatch",
            EXIT_CONFIG,
            format!(
                "run '{}' cannot be resumed with the skills it started with: {}; restore them, or pass \
                 --pipeline FILE to resume with the current files",
                run.run_id,
                blocking.join("; ")
            ),
        ));
    }
    let (catalog, diags) = flujo_blueprint::origin::catalog_of(origin);
    print_diagnostics(&diags);
    registry_from(&catalog).map(|reg| crate::mcp::wrap(reg, &crate::mcp::servers_of_stored_run(run)))
}

fn registry_from(catalog: &flujo_blueprint::SkillCatalog) -> Result<Arc<dyn SkillRegistry>, CliError> {
    let mut reg = BuiltinRegistry::new();
    // `flujo resume` and `lens replay` of a `flujo create` run find the Architect's check.
    crate::create::register_check(&mut reg);
    for id in catalog.ids().map(str::to_owned).collect::<Vec<_>>() {
        let Some(skill) = catalog.get(&id) else { continue };
        match (&skill.command, &skill.http) {
            (Some(command), _) => CommandSkill::register(
                CommandSpec {
                    id: id.clone(),
                    command: command.clone(),
                    cwd: skill.dir.clone(),
                    timeout_s: skill.timeout_s,
                    input_schema: skill.input_schema.clone(),
                    output_schema: skill.output_schema.clone(),
                    side_effects: skill.side_effects,
                    description: skill.description.clone(),
                    env: skill.env.clone(),
                    max_output_bytes: skill.max_output_bytes,
                    max_input_bytes: skill.max_input_bytes,
                },
                &mut reg,
            ),
            (None, Some(op)) => HttpSkill::register(http_spec(&id, skill, op), &mut reg),
            (None, None) => {
                return Err(CliError::new(
                    "resolution_error",
                    EXIT_RESOLUTION,
                    format!("skill '{id}' in {} has neither `command` nor `http`", skill.file.display()),
                ))
            }
        }
    }
    Ok(Arc::new(reg))
}

/// The skills crate's form of a catalog's `http` skill.
fn http_spec(id: &str, skill: &flujo_blueprint::CatalogSkill, op: &flujo_blueprint::HttpOperation) -> HttpSpec {
    let mut spec = HttpSpec::default();
    spec.id = id.to_owned();
    spec.method = op.method.clone();
    spec.url = op.url.clone();
    spec.headers = op.headers.clone();
    spec.query = op.query.clone();
    spec.body = match &op.body {
        flujo_blueprint::HttpBodyDecl::Default => HttpBody::Default,
        flujo_blueprint::HttpBodyDecl::Empty => HttpBody::Empty,
        flujo_blueprint::HttpBodyDecl::Template(t) => HttpBody::Template(t.clone()),
        flujo_blueprint::HttpBodyDecl::Json(v) => HttpBody::Json(v.clone()),
    };
    spec.timeout_s = op.timeout_s;
    spec.retries = op.retries;
    spec.idempotent = op.idempotent;
    spec.max_response_bytes = op.max_response_bytes;
    spec.input_schema = skill.input_schema.clone();
    spec.output_schema = skill.output_schema.clone();
    spec.side_effects = skill.side_effects;
    spec.description = skill.description.clone();
    spec
}

pub(crate) fn open_store(uri: &str) -> Result<Arc<dyn Store>, CliError> {
    if let Some(file) = crate::lens::sqlite_file(uri) {
        let path = Path::new(&file);
        if path.exists() {
            check_regular_file(path, "state store", "").map_err(CliError::config)?;
        }
    }
    flujo_store::open_store(uri)
        .map_err(|e| CliError::config(format!("state store '{}': {e}", crate::lens::mask_uri(uri))))
}

/// The error of an input over the size limit.
fn too_large(what: &str, limit: u64, src: &str) -> CliError {
    CliError::usage(
        "input_too_large",
        format!(
            "{what} is larger than the input limit of {}{} (from {src}); raise `max_input_bytes` under [limits] in \
             flujo.toml or FLUJO_MAX_INPUT_BYTES",
            crate::config::human_bytes(limit),
            if limit >= 1024 { format!(" = {limit} bytes") } else { String::new() }
        ),
    )
}

/// `-i TEXT`, `-i -` (stdin) or `--input-json JSON`, each at most `max_input_bytes`.
pub(crate) fn read_input(args: &InputArgs, default: Option<Value>, cfg: &Config) -> Result<Option<Value>, CliError> {
    let (limit, src) = (cfg.max_input_bytes.0, cfg.max_input_bytes.1.describe());
    if let Some(json) = &args.input_json {
        if json.len() as u64 > limit {
            return Err(too_large("--input-json", limit, &src));
        }
        return serde_json::from_str(json)
            .map(Some)
            .map_err(|e| CliError::config(format!("--input-json is not valid JSON: {e}")));
    }
    match args.input.as_deref() {
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .take(limit.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(|e| CliError::config(format!("cannot read stdin: {e}")))?;
            if bytes.len() as u64 > limit {
                return Err(too_large("the input on stdin (-i -)", limit, &src));
            }
            let s = String::from_utf8(bytes)
                .map_err(|e| CliError::config(format!("the input on stdin (-i -) is not UTF-8 text: {e}")))?;
            Ok(Some(Value::String(s.trim_end_matches('\n').to_owned())))
        }
        Some(text) if text.len() as u64 > limit => Err(too_large("-i TEXT", limit, &src)),
        Some(text) => Ok(Some(Value::String(text.to_owned()))),
        None => Ok(default),
    }
}

/// The input of `run` without `-i`/`--input-json`, as the original reads it: `FLUJO_INPUT` when set and not
/// empty, else stdin when it is a pipe or a file (trailing whitespace trimmed), else the empty string.
fn implicit_input(cfg: &Config) -> Result<Value, CliError> {
    use std::io::IsTerminal;
    use std::os::unix::fs::FileTypeExt;
    if let Some(v) = std::env::var_os("FLUJO_INPUT").filter(|v| !v.is_empty()) {
        let text = v.into_string().map_err(|_| CliError::config("FLUJO_INPUT is not UTF-8 text"))?;
        if text.len() as u64 > cfg.max_input_bytes.0 {
            return Err(too_large("FLUJO_INPUT", cfg.max_input_bytes.0, &cfg.max_input_bytes.1.describe()));
        }
        return Ok(Value::String(text));
    }
    let stdin = std::io::stdin();
    let piped = !stdin.is_terminal()
        && std::fs::metadata("/dev/stdin").is_ok_and(|m| m.file_type().is_fifo() || m.file_type().is_file());
    if !piped {
        return Ok(Value::String(String::new()));
    }
    let dash = InputArgs { input: Some("-".to_owned()), input_json: None };
    let text = read_input(&dash, None, cfg)?.unwrap_or(Value::String(String::new()));
    Ok(match text {
        Value::String(s) => Value::String(s.trim().to_owned()),
        other => other,
    })
}

/// `--context-file FILE`: a JSON object, or YAML for `.yaml`/`.yml`, of at most `max_input_bytes`.
fn read_context_file(file: &Path, cfg: &Config) -> Result<Map<String, Value>, CliError> {
    check_regular_file(file, "context file", "").map_err(CliError::config)?;
    let limit = cfg.max_input_bytes.0;
    if std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) > limit {
        return Err(too_large("--context-file", limit, &cfg.max_input_bytes.1.describe()));
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::config(format!("cannot read context file {}: {e}", file.display())))?;
    let yaml = file.extension().is_some_and(|e| e == "yaml" || e == "yml");
    let value: Value = if yaml {
        flujo_blueprint::yaml_to_json(&text)
            .map_err(|e| CliError::config(format!("context file {} is not valid YAML: {e}", file.display())))?
    } else {
        serde_json::from_str(&text)
            .map_err(|e| CliError::config(format!("context file {} is not valid JSON: {e}", file.display())))?
    };
    match value {
        Value::Object(m) => Ok(m),
        other => Err(CliError::usage(
            "context_validation",
            format!("context file {} must hold an object, got {}", file.display(), flujo_core::json_type_name(&other)),
        )),
    }
}

/// `--context JSON`: a JSON object of at most `max_input_bytes`.
pub(crate) fn read_context(text: Option<&str>, cfg: &Config) -> Result<Map<String, Value>, CliError> {
    let Some(text) = text else { return Ok(Map::new()) };
    if text.len() as u64 > cfg.max_input_bytes.0 {
        return Err(too_large("--context", cfg.max_input_bytes.0, &cfg.max_input_bytes.1.describe()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(CliError::usage(
            "context_validation",
            format!("--context must be a JSON object, got {}", flujo_core::json_type_name(&other)),
        )),
        Err(e) => Err(CliError::config(format!("--context is not valid JSON: {e}"))),
    }
}

pub(crate) fn build_error(e: FlujoError) -> CliError {
    match e {
        FlujoError::Resolution { .. } => CliError::new("resolution_error", EXIT_RESOLUTION, e.to_string()),
        FlujoError::Config(_) => CliError::config(e.to_string()),
        other => CliError::new(other.kind(), EXIT_FAILED, other.to_string()),
    }
}

/// The model registry from `[providers]` and `[cost]` (providers' keys from config or environment).
pub(crate) fn model_registry(cfg: &Config) -> Result<Arc<flujo_llm::LlmRegistry>, CliError> {
    models(cfg)
}

pub(crate) fn models(cfg: &Config) -> Result<Arc<flujo_llm::LlmRegistry>, CliError> {
    let llm = flujo_llm::LlmConfig::from_toml(&cfg.table).map_err(|e| CliError::config(format!("flujo.toml: {e}")))?;
    flujo_llm::LlmRegistry::new(llm).map(Arc::new).map_err(|e| CliError::config(format!("flujo.toml: {e}")))
}

pub(crate) fn runner(
    pipeline: Pipeline,
    store: Arc<dyn Store>,
    reg: Arc<dyn SkillRegistry>,
    cfg: &Config,
    origin: Option<flujo_core::RunOrigin>,
) -> Result<Flujo, CliError> {
    runner_builder(pipeline, store, reg, cfg, origin)?.build().map_err(build_error)
}

/// The runner's builder with the configuration of `cfg` (skills, models, budget, templates).
pub(crate) fn runner_builder(
    pipeline: Pipeline,
    store: Arc<dyn Store>,
    reg: Arc<dyn SkillRegistry>,
    cfg: &Config,
    origin: Option<flujo_core::RunOrigin>,
) -> Result<flujo_engine::FlujoRuntimeBuilder, CliError> {
    let (limits, _) = cfg.budget_for(&pipeline.name);
    let policies = governance_for(cfg, &pipeline.name)?;
    let memory = crate::memory::backend(cfg, Some(&pipeline))?;
    let mut builder = match origin {
        Some(o) => Flujo::builder(pipeline).origin(o),
        None => Flujo::builder(pipeline),
    };
    let reg = match memory {
        Some(b) => {
            let (with, reg) = crate::memory::wire(builder, reg, b);
            builder = with;
            reg
        }
        None => reg,
    };
    let reg = crate::sandbox::wire(reg, &store, cfg)?;
    for policy in policies {
        builder = builder.governance(policy);
    }
    Ok(builder
        .store(store)
        .skills(reg)
        .models(models(cfg)?)
        .usage_limits(limits)
        .strict_templates(cfg.strict_templates.0))
}

/// `flujo dev governance`: the chain of `pipeline`, its section and each policy's options' source.
fn dev_governance(cfg: &Config, pipeline: &str, json: bool) -> Result<u8, CliError> {
    let (source, file) = match &cfg.governance {
        Some((g, file)) => {
            let (_, src) = g.chain_for(pipeline).map_err(|e| CliError::config(format!("{}: {e}", file.display())))?;
            (Some(src), Some(file.display().to_string()))
        }
        None => (None, None),
    };
    let policies = source.as_ref().map(|s| s.policies.clone()).unwrap_or_default();
    let section = source.as_ref().map_or("none".to_owned(), |s| s.section.clone());
    let options: Vec<(String, String)> = source.map(|s| s.options).unwrap_or_default();
    if json {
        let opts: serde_json::Map<String, Value> =
            options.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        outln!(
            "{}",
            serde_json::json!({"pipeline": pipeline, "policies": policies, "section": section, "file": file,
                "options": opts})
        );
        return Ok(EXIT_OK);
    }
    if policies.is_empty() {
        outln!("pipeline {pipeline}: no governance policy (every call is allowed)");
        return Ok(EXIT_OK);
    }
    outln!("pipeline {pipeline}: {} from {section} in {}", policies.join(" -> "), file.unwrap_or_default());
    for (i, p) in policies.iter().enumerate() {
        let from = options.iter().find(|(k, _)| k == p).map_or("no options", |(_, v)| v.as_str());
        outln!("  {}. {p}: {from}", i + 1);
    }
    Ok(EXIT_OK)
}

/// The governance chain of `pipeline` from `[governance]` (empty when none is configured).
pub(crate) fn governance_for(
    cfg: &Config,
    pipeline: &str,
) -> Result<Vec<Arc<dyn flujo_core::GovernancePolicy>>, CliError> {
    match &cfg.governance {
        Some((g, file)) => g
            .chain_for(pipeline)
            .map(|(chain, _)| chain)
            .map_err(|e| CliError::config(format!("{}: {e}", file.display()))),
        None => Ok(Vec::new()),
    }
}

async fn run(args: RunArgs, cfg: &Config) -> Result<u8, CliError> {
    let path = pipeline_path(args.pipeline.clone())?;
    if let Some(id) = &args.run_id {
        check_run_id_arg(id)?;
    }
    let input = match read_input(&args.input, None, cfg)? {
        Some(v) => v,
        None => implicit_input(cfg)?,
    };
    let context = match &args.context_file {
        Some(file) => read_context_file(file, cfg)?,
        None => read_context(args.context.as_deref(), cfg)?,
    };
    let loaded = load(&path, false)?;
    let name = loaded.pipeline.name.clone();
    if let Some(wanted) = args.pipeline_name.as_deref().filter(|w| *w != name) {
        errln!("note: --pipeline-name {wanted} is ignored: {} holds one pipeline, `{name}`", path.display());
    }
    let on_err = |e: CliError| e.with_run(None, Some(&name));
    let reg = registry_for(Some(&loaded), None).map_err(on_err)?;
    let origin = flujo_blueprint::origin::origin_of(&loaded, &path);
    if args.dry_run {
        // Everything is resolved (the runner is built: skills, models, prices, budget), nothing is called.
        let plan = crate::view::explain(&loaded.pipeline);
        let (limits, _) = cfg.budget_for(&name);
        runner(loaded.pipeline, Arc::new(flujo_store::MemoryStore::new()), reg, cfg, Some(origin)).map_err(on_err)?;
        if args.json {
            outln!(
                "{}",
                serde_json::json!({"pipeline": name, "status": "dry_run", "input": input, "context": context,
                    "budget": {"total_cost_usd_limit": limits.total_cost_usd_limit, "total_tokens_limit": limits.total_tokens_limit},
                    "plan": plan})
            );
        } else {
            outln!("dry run of {name}: everything resolves; nothing was called");
            out!("{plan}");
        }
        return Ok(EXIT_OK);
    }
    let uri = args.state.clone().unwrap_or_else(|| cfg.state_uri.0.clone());
    if args.queue.is_some() && !keeps_state(&uri) {
        return Err(on_err(CliError::config(format!(
            "--queue needs a state store that workers share; {} keeps nothing after this process exits",
            crate::lens::mask_uri(&uri)
        ))));
    }
    let store = open_store(&uri).map_err(on_err)?;
    let flujo = runner(loaded.pipeline, store.clone(), reg, cfg, Some(origin)).map_err(on_err)?;
    // The id is chosen here, so that every message (an interruption, a store failure) can name it.
    let run_id = args.run_id.clone().unwrap_or_else(|| flujo_engine::UuidIds.new_run_id());
    if let Some(queue) = &args.queue {
        let opts = RunOptions::new(input).run_id(run_id.clone()).context(context);
        let id = flujo.enqueue(opts, queue).await.map_err(|e| on_err(crate::worker::flujo_error(e)))?;
        if args.json {
            outln!(
                "{}",
                serde_json::json!({"run_id": id, "pipeline": name, "status": "queued", "queue": queue,
                    "output": null, "error": null, "pending": [], "step_history": [], "total_cost_usd": 0.0,
                    "total_tokens": 0, "context": null})
            );
        } else {
            outln!("run {id} ({name}): queued on `{queue}`; a worker runs it (flujo worker --queue {queue})");
        }
        return Ok(EXIT_OK);
    }
    let opts = RunOptions::new(input).run_id(run_id.clone()).context(context).stream_tokens(args.live);
    let watch = RunWatch {
        run_id,
        pipeline: name,
        store,
        hint: ResumeHint::new(&uri, args.state.is_some()),
        json: args.json,
        live: args.live,
        resuming: false,
        summary: args.summary,
    };
    let (events, fut) = flujo.run_streaming(opts).await;
    let result = drive(fut, events, &watch).await?;
    let code = finish(&result, &watch);
    crate::shadow::after_run(cfg, &watch.store, &result, Some(&loaded.agents)).await;
    Ok(code)
}

async fn resume(args: ResumeArgs, cfg: &Config) -> Result<u8, CliError> {
    check_run_id_arg(&args.run_id)?;
    if let Some(p) = &args.pause_id {
        check_pause_id_arg(p)?;
    }
    let uri = args.state.clone().unwrap_or_else(|| cfg.state_uri.0.clone());
    if let Some(file) = crate::lens::sqlite_file(&uri) {
        // Opening a SQLite store creates its file: an unknown run must not leave one behind.
        if !Path::new(&file).exists() {
            return Err(run_not_found(&args.run_id, &crate::lens::mask_uri(&uri)));
        }
    }
    let store = open_store(&uri)?;
    let run = store
        .get_run(&args.run_id)
        .await
        .map_err(|e| CliError::new("store_error", EXIT_FAILED, e.to_string()).with_run(Some(&args.run_id), None))?
        .ok_or_else(|| run_not_found(&args.run_id, &crate::lens::mask_uri(&uri)))?;
    let name = run.pipeline_name.clone();
    let on_err = |e: CliError| e.with_run(Some(&args.run_id), Some(&name));
    let (pipeline, reg) = match &args.pipeline {
        Some(p) => {
            let loaded = load(&pipeline_path(Some(p.clone())).map_err(on_err)?, false).map_err(on_err)?;
            let reg = registry_for(Some(&loaded), None).map_err(on_err)?;
            (loaded.pipeline, reg)
        }
        None => {
            let def = run.definition.clone().ok_or_else(|| {
                CliError::config(format!(
                    "run '{}' has no stored pipeline definition; pass --pipeline FILE",
                    run.run_id
                ))
            })?;
            let pipeline: Pipeline = flujo_engine::pipeline_from_definition(&def).map_err(|e| {
                CliError::config(format!("the stored pipeline definition cannot be read ({e}); pass --pipeline FILE"))
            })?;
            (pipeline, registry_for_stored_run(&run).map_err(on_err)?)
        }
    };
    let flujo = runner(pipeline, store.clone(), reg, cfg, None).map_err(on_err)?;
    let answer = read_input(&args.input, None, cfg).map_err(on_err)?;
    let mut req = match answer {
        Some(a) => ResumeRequest::answer(a),
        None => ResumeRequest::default(),
    }
    .stream_tokens(args.live);
    if let Some(p) = &args.pause_id {
        req = req.pause_id(p.clone());
    }
    let watch = RunWatch {
        run_id: args.run_id.clone(),
        pipeline: name.clone(),
        store,
        hint: ResumeHint::new(&uri, args.state.is_some()),
        json: args.json,
        live: args.live,
        resuming: true,
        summary: false,
    };
    let (events, fut) = flujo.resume_streaming(&args.run_id, req);
    let result = drive(fut, events, &watch).await?;
    let code = finish(&result, &watch);
    crate::shadow::after_run(cfg, &watch.store, &result, None).await;
    Ok(code)
}

/// How to tell the user to continue a run: whether the store keeps runs, and the `--state` to repeat.
pub struct ResumeHint {
    durable: bool,
    /// The `--state URI` argument to repeat (only when it was given explicitly), password masked.
    state_arg: Option<String>,
    uri: String,
}

impl ResumeHint {
    pub fn new(uri: &str, explicit: bool) -> Self {
        let masked = crate::lens::mask_uri(uri);
        ResumeHint { durable: keeps_state(uri), state_arg: explicit.then(|| masked.clone()), uri: masked }
    }

    /// `flujo resume RUN_ID[ --state URI]`.
    fn resume(&self, run_id: &str) -> String {
        let mut cmd = format!("flujo resume {}", crate::lens::shell_quote(run_id));
        if let Some(s) = &self.state_arg {
            cmd.push_str(" --state ");
            cmd.push_str(&crate::lens::shell_quote(s));
        }
        cmd
    }

    /// The command that answers `pause` of `run_id`.
    pub fn answer(&self, run_id: &str, pause: &PendingPause) -> String {
        resume_command(run_id, &pause.pause_id, pause.input_schema.as_ref(), self.state_arg.as_deref())
    }

    /// Why nothing can be resumed from a store that keeps no state.
    fn not_kept(&self) -> String {
        format!(
            "the state store {} keeps no state after this process exits, so this run cannot be resumed; use a durable \
             store (for example --state sqlite:///.flujo/state.db)",
            self.uri
        )
    }
}

/// The `flujo resume` command that answers a pause (`-i ANSWER` for text answers, `--input-json JSON`
/// otherwise), repeating `--state` when given.
pub fn resume_command(run_id: &str, pause_id: &str, schema: Option<&Value>, state: Option<&str>) -> String {
    use crate::lens::shell_quote;
    let mut cmd = format!("flujo resume {} --pause-id {}", shell_quote(run_id), shell_quote(pause_id));
    let text_answer = match schema {
        None => true,
        Some(s) => {
            s.get("type").and_then(Value::as_str) == Some("string")
                || s.get("enum").and_then(Value::as_array).is_some_and(|e| e.iter().all(Value::is_string))
        }
    };
    cmd.push_str(if text_answer { " -i ANSWER" } else { " --input-json JSON" });
    if let Some(state) = state {
        cmd.push_str(" --state ");
        cmd.push_str(&shell_quote(state));
    }
    cmd
}

/// What [`drive`] needs to report on a run it does not get a result for.
struct RunWatch {
    run_id: String,
    pipeline: String,
    store: Arc<dyn Store>,
    hint: ResumeHint,
    json: bool,
    live: bool,
    /// `flujo resume` (the run is recorded already).
    resuming: bool,
    /// `run --summary`: the totals line always.
    summary: bool,
}

impl RunWatch {
    /// A run error as a CLI error naming the run where the user needs it (`started`: the run was recorded
    /// and began walking).
    fn error(&self, e: FlujoError, started: bool) -> CliError {
        let err = match e {
            FlujoError::InvalidResumeInput { .. }
            | FlujoError::NotResumable { .. }
            | FlujoError::PipelineMismatch { .. }
            | FlujoError::RunNotFound(_) => CliError::usage(e.kind(), e.to_string()),
            FlujoError::Store(StoreError::RunNotFound(id)) => run_not_found(&id, &self.hint.uri),
            FlujoError::ContextValidation(_) | FlujoError::InvalidRunId { .. } => {
                // Refused before the run was recorded: there is no run to name.
                return CliError::usage(e.kind(), e.to_string()).with_run(None, Some(&self.pipeline));
            }
            FlujoError::Store(StoreError::RunExists(_)) => CliError::usage(
                "run_exists",
                format!("a run with id '{}' exists already; choose another --run-id", self.run_id),
            ),
            FlujoError::Store(e) if !started && !self.resuming => {
                return CliError::new(
                    "store_error",
                    EXIT_FAILED,
                    format!("run {} could not be recorded, and no step ran: {e}", self.run_id),
                )
                .with_run(None, Some(&self.pipeline));
            }
            FlujoError::Store(e) => {
                let next = if self.hint.durable {
                    format!(
                        "the run stopped at its last committed step; once the store works again, continue it with `{}`",
                        self.hint.resume(&self.run_id)
                    )
                } else {
                    self.hint.not_kept()
                };
                CliError::new("store_error", EXIT_FAILED, format!("run {}: {e}; {next}", self.run_id))
            }
            other => build_error(other),
        };
        err.with_run(Some(&self.run_id), Some(&self.pipeline))
    }

    /// Ctrl-C: say what became of the run (naming its id), print the `--json` object, exit 130.
    async fn interrupted(&self, started: bool) -> ! {
        let recorded = self.resuming
            || started
            || matches!(
                tokio::time::timeout(Duration::from_secs(2), self.store.get_run(&self.run_id)).await,
                Ok(Ok(Some(_)))
            );
        let message = if !self.hint.durable {
            format!("run {} is lost: {}", self.run_id, self.hint.not_kept())
        } else if recorded {
            format!(
                "run {} stopped after its last committed step; continue it with `{}`",
                self.run_id,
                self.hint.resume(&self.run_id)
            )
        } else {
            format!("before run {} was recorded; there is nothing to resume", self.run_id)
        };
        let mut e =
            CliError::new("interrupted", EXIT_INTERRUPTED, message).with_run(Some(&self.run_id), Some(&self.pipeline));
        e.status = "interrupted";
        e.report(self.json);
        std::process::exit(i32::from(EXIT_INTERRUPTED));
    }
}

/// Awaits a run while printing live events and progress to stderr; Ctrl-C exits 130 naming the run (it stays
/// resumable from its last committed step).
async fn drive(
    fut: impl std::future::Future<Output = Result<RunResult, FlujoError>>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<RunEvent>,
    watch: &RunWatch,
) -> Result<RunResult, CliError> {
    let started = Instant::now();
    let mut done_steps = 0u64;
    let mut last_progress = Instant::now();
    tokio::pin!(fut);
    // One listener for the whole run, so that a Ctrl-C between two events is not missed.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut events_open = true;
    let mut run_started = false;
    let mut printer = crate::view::LivePrinter::default();
    loop {
        tokio::select! {
            res = &mut fut => {
                while let Ok(ev) = events.try_recv() {
                    run_started |= matches!(ev, RunEvent::RunStarted { .. });
                    if watch.live {
                        printer.print(&ev);
                    }
                    crate::view::print_step_warnings(&ev);
                }
                return res.map_err(|e| watch.error(e, run_started));
            }
            ev = events.recv(), if events_open => {
                match ev {
                    None => events_open = false,
                    Some(ev) => {
                        match ev {
                            RunEvent::StepFinished { .. } => done_steps += 1,
                            RunEvent::RunStarted { .. } => run_started = true,
                            _ => {}
                        }
                        crate::view::print_step_warnings(&ev);
                        if watch.live {
                            printer.print(&ev);
                        } else if !watch.json && started.elapsed() > Duration::from_secs(2) && last_progress.elapsed() > Duration::from_secs(2) {
                            errln!("… running: {done_steps} steps finished ({:.0}s)", started.elapsed().as_secs_f64());
                            last_progress = Instant::now();
                        }
                    }
                }
            }
            _ = &mut ctrl_c => {
                while let Ok(ev) = events.try_recv() {
                    run_started |= matches!(ev, RunEvent::RunStarted { .. });
                }
                watch.interrupted(run_started).await;
            }
        }
    }
}

/// Prints the result and returns the exit code of its status.
fn finish(result: &RunResult, watch: &RunWatch) -> u8 {
    if watch.json {
        outln!("{}", serde_json::to_string(result).unwrap_or_else(|_| "{}".into()));
        if result.status == RunStatus::Paused && !watch.hint.durable {
            errln!("note: {}", watch.hint.not_kept());
        }
    } else {
        crate::view::print_summary(result, &watch.hint);
        if watch.summary && result.total_tokens == 0 && result.total_cost_usd == 0.0 {
            outln!("usage: 0 tokens, $0.000000");
        }
    }
    match result.status {
        // Answered and back on its queue: a worker continues it.
        RunStatus::Completed | RunStatus::Queued => EXIT_OK,
        RunStatus::Paused => EXIT_PAUSED,
        // A model the run can reach cannot be called (found before the first step): a configuration error.
        RunStatus::Failed
            if result
                .error
                .as_ref()
                .is_some_and(|e| matches!(e.kind.as_str(), "pricing_not_configured" | "missing_api_key")) =>
        {
            EXIT_CONFIG
        }
        _ => EXIT_FAILED,
    }
}

impl ResumeHint {
    /// The lines under a pending pause in a run summary: how to answer it, or why it cannot be answered.
    pub fn pause_lines(&self, run_id: &str, pause: &PendingPause) -> String {
        if self.durable {
            format!("  answer with: {}", self.answer(run_id, pause))
        } else {
            format!("  cannot be answered: {}", self.not_kept())
        }
    }
}

/// The severity overrides `validate --profile` names: a profile of flujo.toml, or a TOML/JSON file of them.
fn rule_levels(name: &str, config: &Config) -> Result<Vec<(String, RuleLevel)>, CliError> {
    if let Some((_, levels)) = config.validation_profiles.iter().find(|(n, _)| n == name) {
        return Ok(levels.clone());
    }
    let path = Path::new(name);
    if !path.is_file() {
        let known: Vec<&str> = config.validation_profiles.iter().map(|(n, _)| n.as_str()).collect();
        return Err(CliError::config(format!(
            "no validation profile '{name}' ([validation.profiles.{name}] in flujo.toml; known: {}) and no rules file of that name",
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        )));
    }
    check_regular_file(path, "rules file", "").map_err(CliError::config)?;
    let text = std::fs::read_to_string(path).map_err(|e| CliError::config(format!("cannot read {name}: {e}")))?;
    // `{"RULE": "level"}` (JSON) or `"RULE" = "level"`, optionally under `[validation.rules]` (TOML)
    let table: toml::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str::<Value>(&text)
            .map_err(|e| CliError::config(format!("{name} is not valid JSON: {e}")))
            .and_then(|v| toml::Value::try_from(v).map_err(|e| CliError::config(format!("{name}: {e}"))))?
    } else {
        let t: toml::Table =
            text.parse().map_err(|e: toml::de::Error| CliError::config(format!("{name} is not valid TOML: {e}")))?;
        match t.get("validation").and_then(|v| v.get("rules")) {
            Some(rules) => rules.clone(),
            None => toml::Value::Table(t),
        }
    };
    let wrapped = toml::Value::Table(toml::Table::from_iter([(
        "profiles".to_owned(),
        toml::Value::Table(toml::Table::from_iter([("file".to_owned(), table)])),
    )]));
    crate::config::parse_profiles(&wrapped, path)
        .map(|mut p| p.pop().map(|(_, l)| l).unwrap_or_default())
        .map_err(|e| CliError::config(e.0))
}

/// The `(rule, message)` pairs of a baseline file written by `validate --update-baseline`.
fn read_baseline(file: &Path) -> Result<std::collections::HashSet<(String, String)>, CliError> {
    check_regular_file(file, "baseline", " (create it with --update-baseline)").map_err(CliError::config)?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::config(format!("cannot read baseline {}: {e}", file.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::config(format!("baseline {} is not valid JSON: {e}", file.display())))?;
    let Some(findings) = v.get("findings").and_then(Value::as_array) else {
        return Err(CliError::config(format!("baseline {} has no `findings` list", file.display())));
    };
    findings
        .iter()
        .map(|f| match (f.get("rule").and_then(Value::as_str), f.get("message").and_then(Value::as_str)) {
            (Some(r), Some(m)) => Ok((r.to_owned(), m.to_owned())),
            _ => Err(CliError::config(format!(
                "baseline {}: each finding needs a `rule` and a `message`",
                file.display()
            ))),
        })
        .collect()
}

/// Applies severity overrides: an exact rule id wins over globs, then the first matching glob; `off` drops.
fn apply_levels(diags: &mut Vec<Diagnostic>, levels: &[(String, RuleLevel)]) {
    diags.retain_mut(|d| {
        // A finding answers to its own id and to the original's id it is reported under (`V-A6`).
        let glob = |g: &str| crate::config::glob_match(g, &d.rule) || crate::config::glob_match(g, &d.rule_id);
        let level = levels
            .iter()
            .find(|(g, _)| d.answers_to(g))
            .or_else(|| levels.iter().find(|(g, _)| glob(g)))
            .map(|(_, l)| *l);
        match level {
            Some(RuleLevel::Off) => false,
            Some(RuleLevel::Warning) => {
                d.severity = flujo_blueprint::Severity::Warning;
                true
            }
            Some(RuleLevel::Error) => {
                d.severity = flujo_blueprint::Severity::Error;
                true
            }
            None => true,
        }
    });
}

/// `dev compile-yaml`: validates, then prints (or writes) the blueprint as plain normalized YAML.
fn compile_yaml(src: &Path, out: Option<&Path>, normalize: bool) -> Result<u8, CliError> {
    let builtins = BuiltinRegistry::new();
    let diags = flujo_blueprint::validate_file(src, &load_options(&builtins, false));
    if diags.iter().any(Diagnostic::is_error) {
        err!("{}", flujo_blueprint::render_text(&diags));
        return Ok(EXIT_VALIDATION);
    }
    let text =
        std::fs::read_to_string(src).map_err(|e| CliError::config(format!("cannot read {}: {e}", src.display())))?;
    let yaml = flujo_blueprint::fix::compile_yaml(&text, src, normalize)
        .map_err(|e| CliError::config(format!("{}: {e}", src.display())))?;
    match out {
        Some(file) => {
            std::fs::write(file, &yaml)
                .map_err(|e| CliError::config(format!("cannot write {}: {e}", file.display())))?;
            errln!("wrote {}", file.display());
        }
        None => out!("{yaml}"),
    }
    Ok(EXIT_OK)
}

/// `validate --fix` / `--fix-dry-run`: plans the mechanical fixes, prints them (stderr), and with `--fix`
/// writes the fixed file after keeping `FILE.bak`. Returns true when the file changed.
fn fix_file(path: &Path, diags: &[Diagnostic], args: &ValidateArgs) -> Result<bool, CliError> {
    use flujo_blueprint::fix;
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::config(format!("cannot read {} to fix it: {e}", path.display())))?;
    let mut fixes = fix::plan_fixes(&text, path, diags);
    if let Some(only) = &args.fix_rules {
        let globs: Vec<&str> = only.split(',').map(str::trim).filter(|g| !g.is_empty()).collect();
        fixes.retain(|f| globs.iter().any(|g| crate::config::glob_match(g, f.rule)));
    }
    if fixes.is_empty() {
        errln!("No fixable issues found.");
        return Ok(false);
    }
    errln!("Auto-fix {}:", if args.fix_dry_run { "preview" } else { "plan" });
    for f in &fixes {
        errln!("  - {}: {} change(s) — {}", f.rule, f.edits.len(), f.title);
    }
    let (fixed, applied) = fix::apply_fixes(&text, &fixes);
    if args.fix_dry_run || applied == 0 {
        errln!("{}", fix::diff_lines(&path.display().to_string(), &text, &fixed).trim_end());
        return Ok(false);
    }
    let backup = {
        let mut name = path.as_os_str().to_owned();
        name.push(".bak");
        PathBuf::from(name)
    };
    std::fs::write(&backup, &text)
        .map_err(|e| CliError::config(format!("cannot write the backup {}: {e}", backup.display())))?;
    // Write next to the file and rename over it: an interrupted fix never leaves half a blueprint.
    let tmp = {
        let mut name = path.as_os_str().to_owned();
        name.push(".fix.tmp");
        PathBuf::from(name)
    };
    std::fs::write(&tmp, &fixed)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| CliError::config(format!("cannot write {}: {e}", path.display())))?;
    errln!("fixed {}: {applied} change(s) applied (backup: {})", path.display(), backup.display());
    Ok(true)
}

fn validate(mut args: ValidateArgs, config: &Config) -> Result<u8, CliError> {
    let path = pipeline_path(args.path.take())?;
    let profile = args.profile.clone().or_else(|| std::env::var("FLUJO_RULES_PROFILE").ok().filter(|p| !p.is_empty()));
    let levels = match &profile {
        Some(name) => rule_levels(name, config)?,
        None => Vec::new(),
    };
    let builtins = BuiltinRegistry::new();
    // Validation asks MCP servers for their tools (BP-MCP-TOOL; BP-MCP-UNREACHABLE when offline).
    let mcp_tools = crate::mcp::ToolCheck::default();
    let opts = flujo_blueprint::LoadOptions { mcp_tools: Some(&mcp_tools), ..load_options(&builtins, args.strict) };
    let mut diags = flujo_blueprint::validate_file(&path, &opts);
    if (args.fix || args.fix_dry_run) && fix_file(&path, &diags, &args)? {
        diags = flujo_blueprint::validate_file(&path, &opts);
    }
    apply_levels(&mut diags, &levels);
    let mut known = 0usize;
    if let Some(file) = &args.baseline {
        let key = |d: &Diagnostic| (d.rule.clone(), d.message.clone());
        if args.update_baseline {
            let findings: Vec<Value> =
                diags.iter().map(|d| serde_json::json!({"rule": d.rule, "message": d.message})).collect();
            let text = serde_json::to_string_pretty(&serde_json::json!({"version": 1, "findings": findings}))
                .unwrap_or_default();
            std::fs::write(file, text + "\n")
                .map_err(|e| CliError::config(format!("cannot write baseline {}: {e}", file.display())))?;
            errln!("baseline {}: {} finding(s) recorded", file.display(), diags.len());
            known = diags.len();
            diags.clear();
        } else {
            let baseline = read_baseline(file)?;
            let before = diags.len();
            diags.retain(|d| !baseline.contains(&key(d)));
            known = before - diags.len();
        }
    }
    if args.strict {
        for d in &mut diags {
            if d.severity == flujo_blueprint::Severity::Warning {
                d.severity = flujo_blueprint::Severity::Error;
            }
        }
    }
    match args.format {
        Format::Text => {
            if diags.is_empty() {
                outln!("{}: ok", path.display());
            } else {
                out!("{}", flujo_blueprint::render_text(&diags));
            }
            if known > 0 {
                outln!("({known} finding(s) of the baseline not shown)");
            }
            if args.explain {
                let mut ids: Vec<&str> = diags
                    .iter()
                    .flat_map(|d| [d.rule_id.as_str(), d.rule.as_str()])
                    .filter(|i| !i.is_empty())
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                for id in ids {
                    outln!("{id}: {}", flujo_blueprint::describe_rule(id).unwrap_or("(no description)"));
                }
            }
        }
        Format::Json => outln!("{}", flujo_blueprint::render_json(&diags)),
        Format::Sarif => outln!("{}", flujo_blueprint::render_sarif(&diags)),
    }
    Ok(if diags.iter().any(Diagnostic::is_error) { EXIT_VALIDATION } else { EXIT_OK })
}
