//! The subcommands: wiring of config, blueprint, store, skills and runner; rendering; exit codes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flujo_blueprint::{Diagnostic, LoadOptions, Loaded};
use flujo_core::{FlujoError, Pipeline, RunEvent, RunResult, RunStatus, SkillRegistry, Store};
use flujo_engine::{Flujo, ResumeRequest, RunOptions};
use flujo_skills::{BuiltinRegistry, CommandSkill, CommandSpec};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::*;

pub async fn dispatch(cli: Cli) -> Result<u8, CliError> {
    let config = Config::load(cli.config.as_deref()).map_err(|e| CliError::config(e.0))?;
    for note in &config.notes {
        eprintln!("warning: {note}");
    }
    match cli.command {
        Command::Init { force } => crate::scaffold::init(force),
        Command::Run(args) => run(args, &config).await,
        Command::Resume(args) => resume(args, &config).await,
        Command::Validate(args) => validate(args),
        Command::Lens(cmd) => crate::lens::dispatch(cmd, &config).await,
        Command::Dev(DevCommand::Explain { pipeline }) => {
            let loaded = load(&pipeline_path(pipeline)?, false)?;
            print!("{}", crate::view::explain(&loaded.pipeline));
            Ok(EXIT_OK)
        }
        Command::Dev(DevCommand::Visualize { pipeline }) => {
            let loaded = load(&pipeline_path(pipeline)?, false)?;
            print!("{}", crate::view::mermaid(&loaded.pipeline));
            Ok(EXIT_OK)
        }
        Command::Dev(DevCommand::Budgets { pipeline }) => {
            let loaded = load(&pipeline_path(pipeline)?, false)?;
            let (limits, sources) = config.budget_for(&loaded.pipeline.name);
            let v = serde_json::json!({
                "pipeline": loaded.pipeline.name,
                "total_cost_usd_limit": limits.total_cost_usd_limit,
                "total_tokens_limit": limits.total_tokens_limit,
                "sources": sources,
            });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(EXIT_OK)
        }
        Command::Dev(DevCommand::ShowConfig) => {
            println!("{}", serde_json::to_string_pretty(&config.to_json()).unwrap_or_default());
            Ok(EXIT_OK)
        }
    }
}

fn pipeline_path(p: Option<PathBuf>) -> Result<PathBuf, CliError> {
    let path = p.unwrap_or_else(|| PathBuf::from("pipeline.yaml"));
    if !path.is_file() {
        return Err(CliError::config(format!(
            "pipeline file {} not found (give a path, or run `flujo init` to create pipeline.yaml)",
            path.display()
        )));
    }
    Ok(path)
}

/// Rules whose failure is an import or skill resolution problem (exit 3) rather than invalid content (exit 4).
fn is_resolution_rule(rule: &str) -> bool {
    rule.starts_with("BP-IMPORT") || rule == "BP-SKILL-MISSING" || rule == "BP-AGENT-MISSING"
}

fn print_diagnostics(diags: &[Diagnostic]) {
    if !diags.is_empty() {
        eprint!("{}", flujo_blueprint::render_text(diags));
    }
}

/// Loads and validates a blueprint; warnings go to stderr, errors become exit 3 or 4.
fn load(path: &Path, strict: bool) -> Result<Loaded, CliError> {
    let builtins = BuiltinRegistry::new();
    let opts = LoadOptions { registry: Some(&builtins), strict, ..Default::default() };
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
            Err(CliError::new(kind, code, format!("{} has {} error(s); see above", path.display(), errors.len())))
        }
    }
}

/// Built-in skills plus the command skills of the blueprint's catalog.
fn registry_for(loaded: Option<&Loaded>, extra_catalog_dir: Option<&Path>) -> Result<Arc<dyn SkillRegistry>, CliError> {
    let mut catalog = loaded.map(|l| l.catalog.clone()).unwrap_or_default();
    if let Some(dir) = extra_catalog_dir {
        let (c, diags) = flujo_blueprint::SkillCatalog::load_dir(dir);
        print_diagnostics(&diags);
        catalog.merge(&c);
    }
    registry_from(&catalog)
}

/// The skills a stored run was started with, from the catalogs its origin recorded (wherever we are now).
/// A catalog or a program it runs that changed since the run started is a `pipeline_mismatch`; a changed
/// prompt file is only a note (its text is part of the stored definition). Runs stored without an origin
/// (older versions, pipelines built in code) read `skills.yaml` of the current folder, as before.
fn registry_for_stored_run(run: &flujo_core::RunRecord) -> Result<Arc<dyn SkillRegistry>, CliError> {
    let Some(origin) = &run.origin else {
        return registry_for(None, Some(Path::new(".")));
    };
    let mut blocking = Vec::new();
    for changed in flujo_blueprint::origin::changed_files(origin) {
        match changed.role {
            flujo_core::OriginRole::Prompt => {
                eprintln!("note: {changed}; the run goes on with the prompt text stored with it")
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
    registry_from(&catalog)
}

fn registry_from(catalog: &flujo_blueprint::SkillCatalog) -> Result<Arc<dyn SkillRegistry>, CliError> {
    let mut reg = BuiltinRegistry::new();
    for id in catalog.ids().map(str::to_owned).collect::<Vec<_>>() {
        let Some(skill) = catalog.get(&id) else { continue };
        match &skill.command {
            Some(command) => CommandSkill::register(
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
            None => {
                return Err(CliError::new(
                    "resolution_error",
                    EXIT_RESOLUTION,
                    format!(
                        "skill '{id}' in {}: only `command` skills are supported by this version",
                        skill.file.display()
                    ),
                ))
            }
        }
    }
    Ok(Arc::new(reg))
}

fn open_store(uri: &str) -> Result<Arc<dyn Store>, CliError> {
    flujo_store::open_store(uri).map_err(|e| CliError::config(format!("state store '{uri}': {e}")))
}

fn read_input(args: &InputArgs, default: Option<Value>) -> Result<Option<Value>, CliError> {
    if let Some(json) = &args.input_json {
        return serde_json::from_str(json)
            .map(Some)
            .map_err(|e| CliError::config(format!("--input-json is not valid JSON: {e}")));
    }
    match args.input.as_deref() {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| CliError::config(format!("cannot read stdin: {e}")))?;
            Ok(Some(Value::String(s.trim_end_matches('\n').to_owned())))
        }
        Some(text) => Ok(Some(Value::String(text.to_owned()))),
        None => Ok(default),
    }
}

fn build_error(e: FlujoError) -> CliError {
    match e {
        FlujoError::Resolution { .. } => CliError::new("resolution_error", EXIT_RESOLUTION, e.to_string()),
        FlujoError::Config(_) => CliError::config(e.to_string()),
        other => CliError::new(other.kind(), EXIT_FAILED, other.to_string()),
    }
}

/// The model registry from `[providers]` and `[cost]` (providers' keys from config or environment).
fn models(cfg: &Config) -> Result<Arc<flujo_llm::LlmRegistry>, CliError> {
    let llm = flujo_llm::LlmConfig::from_toml(&cfg.table).map_err(|e| CliError::config(format!("flujo.toml: {e}")))?;
    flujo_llm::LlmRegistry::new(llm).map(Arc::new).map_err(|e| CliError::config(format!("flujo.toml: {e}")))
}

fn runner(
    pipeline: Pipeline,
    store: Arc<dyn Store>,
    reg: Arc<dyn SkillRegistry>,
    cfg: &Config,
    origin: Option<flujo_core::RunOrigin>,
) -> Result<Flujo, CliError> {
    let (limits, _) = cfg.budget_for(&pipeline.name);
    let builder = match origin {
        Some(o) => Flujo::builder(pipeline).origin(o),
        None => Flujo::builder(pipeline),
    };
    builder
        .store(store)
        .skills(reg)
        .models(models(cfg)?)
        .usage_limits(limits)
        .strict_templates(cfg.strict_templates.0)
        .build()
        .map_err(build_error)
}

async fn run(args: RunArgs, cfg: &Config) -> Result<u8, CliError> {
    let path = pipeline_path(args.pipeline.clone())?;
    let input = read_input(&args.input, Some(Value::String(String::new())))?.unwrap_or(Value::Null);
    let context: Map<String, Value> = match &args.context {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(CliError::config("--context must be a JSON object")),
            Err(e) => return Err(CliError::config(format!("--context is not valid JSON: {e}"))),
        },
    };
    let loaded = load(&path, false)?;
    let reg = registry_for(Some(&loaded), None)?;
    let uri = args.state.clone().unwrap_or_else(|| cfg.state_uri.0.clone());
    let store = open_store(&uri)?;
    let origin = flujo_blueprint::origin::origin_of(&loaded, &path);
    let flujo = runner(loaded.pipeline, store, reg, cfg, Some(origin))?;
    let opts = RunOptions { input, run_id: args.run_id.clone(), context, usage_limits: None, stream_tokens: args.live };
    let (events, fut) = flujo.run_streaming(opts).await;
    let result = drive(fut, events, args.live, args.json).await?;
    Ok(finish(&result, args.json))
}

async fn resume(args: ResumeArgs, cfg: &Config) -> Result<u8, CliError> {
    let uri = args.state.clone().unwrap_or_else(|| cfg.state_uri.0.clone());
    let store = open_store(&uri)?;
    let run = store
        .get_run(&args.run_id)
        .await
        .map_err(|e| CliError::new("store_error", EXIT_FAILED, e.to_string()))?
        .ok_or_else(|| {
            CliError::new("run_not_found", EXIT_FAILED, format!("run '{}' not found in {uri}", args.run_id))
        })?;
    let (pipeline, reg) = match &args.pipeline {
        Some(p) => {
            let loaded = load(&pipeline_path(Some(p.clone()))?, false)?;
            let reg = registry_for(Some(&loaded), None)?;
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
            (pipeline, registry_for_stored_run(&run)?)
        }
    };
    let flujo = runner(pipeline, store, reg, cfg, None)?;
    let answer = read_input(&args.input, None)?;
    let req = ResumeRequest { pause_id: args.pause_id.clone(), answer, stream_tokens: args.live };
    let (events, fut) = flujo.resume_streaming(&args.run_id, req);
    let result = drive(fut, events, args.live, args.json).await?;
    Ok(finish(&result, args.json))
}

/// Awaits a run while printing live events and progress to stderr; Ctrl-C exits 130 (the run stays
/// resumable from its last committed step).
async fn drive(
    fut: impl std::future::Future<Output = Result<RunResult, FlujoError>>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<RunEvent>,
    live: bool,
    json: bool,
) -> Result<RunResult, CliError> {
    let started = Instant::now();
    let mut done_steps = 0u64;
    let mut last_progress = Instant::now();
    tokio::pin!(fut);
    let mut events_open = true;
    let mut printer = crate::view::LivePrinter::default();
    loop {
        tokio::select! {
            res = &mut fut => {
                while let Ok(ev) = events.try_recv() {
                    if live {
                        printer.print(&ev);
                    }
                }
                return res.map_err(|e| match e {
                    FlujoError::InvalidResumeInput { .. } | FlujoError::NotResumable { .. } | FlujoError::PipelineMismatch { .. } => {
                        CliError::new(e.kind(), EXIT_CONFIG, e.to_string())
                    }
                    FlujoError::RunNotFound(_) => CliError::new(e.kind(), EXIT_FAILED, e.to_string()),
                    other => CliError::new(other.kind(), EXIT_FAILED, other.to_string()),
                });
            }
            ev = events.recv(), if events_open => {
                match ev {
                    None => events_open = false,
                    Some(ev) => {
                        if let RunEvent::StepFinished { .. } = ev {
                            done_steps += 1;
                        }
                        if live {
                            printer.print(&ev);
                        } else if !json && started.elapsed() > Duration::from_secs(2) && last_progress.elapsed() > Duration::from_secs(2) {
                            eprintln!("… running: {done_steps} steps finished ({:.0}s)", started.elapsed().as_secs_f64());
                            last_progress = Instant::now();
                        }
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: the run can be continued with `flujo resume RUN_ID`");
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        }
    }
}

/// Prints the result and returns the exit code of its status.
fn finish(result: &RunResult, json: bool) -> u8 {
    if json {
        println!("{}", serde_json::to_string(result).unwrap_or_else(|_| "{}".into()));
    } else {
        crate::view::print_summary(result);
    }
    match result.status {
        RunStatus::Completed => EXIT_OK,
        RunStatus::Paused => EXIT_PAUSED,
        RunStatus::Failed if result.error.as_ref().is_some_and(|e| e.kind == "pricing_not_configured") => EXIT_CONFIG,
        _ => EXIT_FAILED,
    }
}

fn validate(args: ValidateArgs) -> Result<u8, CliError> {
    if !args.path.is_file() {
        return Err(CliError::config(format!("{} not found", args.path.display())));
    }
    let builtins = BuiltinRegistry::new();
    let opts = LoadOptions { registry: Some(&builtins), strict: args.strict, ..Default::default() };
    let mut diags = flujo_blueprint::validate_file(&args.path, &opts);
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
                println!("{}: ok", args.path.display());
            } else {
                print!("{}", flujo_blueprint::render_text(&diags));
            }
        }
        Format::Json => println!("{}", flujo_blueprint::render_json(&diags)),
        Format::Sarif => println!("{}", flujo_blueprint::render_sarif(&diags)),
    }
    Ok(if diags.iter().any(Diagnostic::is_error) { EXIT_VALIDATION } else { EXIT_OK })
}
