//! The `flujo` command. A thin binary: it parses arguments, loads configuration and the blueprint, wires the
//! store, skills and runner together, renders results and maps outcomes to the exit codes of SPEC §13:
//! `0` completed · `1` run failed / runtime error · `2` configuration error · `3` import or skill resolution
//! error · `4` validation failed · `5` paused · `130` interrupted. Logs and progress go to stderr; with
//! `--json`, stdout carries exactly one JSON object.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[macro_use]
mod out;
mod commands;
mod config;
mod create;
mod evals;
mod gen_context;
mod health;
mod lens;
mod lock;
mod mcp;
mod memory;
mod openapi;
mod otel;
mod prices;
mod sandbox;
mod scaffold;
mod schedule;
mod serve;
mod shadow;
mod view;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_RESOLUTION: u8 = 3;
pub const EXIT_VALIDATION: u8 = 4;
pub const EXIT_PAUSED: u8 = 5;
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser, Debug)]
#[command(name = "flujo", version, about = "Durable, type-safe workflows for AI agents", propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: the project's flujo.toml when present; env FLUJO_CONFIG).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// The project folder (env FLUJO_PROJECT_ROOT); by default the nearest folder, from the current one up,
    /// holding flujo.toml, pipeline.yaml or pipeline.yml. Its flujo.toml and pipeline.yaml are the defaults.
    #[arg(long, global = true, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Log debug events to stderr (as FLUJO_LOG=debug; FLUJO_LOG, when set, wins).
    #[arg(long, global = true)]
    pub debug: bool,
    /// Log informational events to stderr (as FLUJO_LOG=info; `--trace` is the original's other name).
    #[arg(short = 'v', long, global = true, alias = "trace")]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Scaffold a project: flujo.toml, pipeline.yaml (runs offline), skills.yaml, .flujo/.
    Init {
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Run a pipeline.
    Run(RunArgs),
    /// Answer a pause, or continue a crashed or failed run from its first unfinished step.
    Resume(ResumeArgs),
    /// Claim and run queued runs (`flujo run --queue NAME`) until stopped; take over runs of dead workers.
    Worker(crate::worker::WorkerArgs),
    /// The HTTP API, web UI and Prometheus metrics over a state store: runs, approvals, pipelines.
    Serve(crate::serve::ServeArgs),
    /// Cron schedules that put runs on a queue for the workers: add, list, remove.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Memory (the vector store runs search and index into): add, search, stats, delete.
    #[command(subcommand)]
    Memory(memory::MemoryCommand),
    /// Validate a blueprint and print every diagnostic.
    Validate(ValidateArgs),
    /// The model providers' readiness (API keys present), the state store and the latest runs.
    Status(StatusArgs),
    /// Inspect runs: list, show, get, trace, spans, replay, verify, stats, prune.
    #[command(subcommand)]
    Lens(lens::LensCommand),
    /// Developer tools.
    #[command(subcommand)]
    Dev(DevCommand),
    /// Pin a pipeline's blueprint, imports, skills, prompts, models and prices by content hash:
    /// generate, verify (exit 4 on drift), compare, show.
    #[command(subcommand)]
    Lock(lock::LockCommand),
    /// The Architect: a model writes a blueprint for a goal, repaired until `flujo validate` accepts it.
    Create(create::CreateArgs),
}

#[derive(Args, Debug)]
pub struct InputArgs {
    /// Input as text; `-` reads stdin (`--input-data` is the original's name). Without an input, `run` reads
    /// FLUJO_INPUT, else piped stdin.
    #[arg(short = 'i', long = "input", alias = "input-data", conflicts_with = "input_json")]
    pub input: Option<String>,
    /// Input as any JSON value.
    #[arg(long = "input-json")]
    pub input_json: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The blueprint (default: pipeline.yaml).
    pub pipeline: Option<PathBuf>,
    #[command(flatten)]
    pub input: InputArgs,
    /// Initial context fields, a JSON object (`-d`/`--context-data` as in the original).
    #[arg(long, short = 'd', alias = "context-data", conflicts_with = "context_file")]
    pub context: Option<String>,
    /// Initial context fields from a file: a JSON object, or YAML for `.yaml`/`.yml`.
    #[arg(long = "context-file", short = 'f', value_name = "FILE")]
    pub context_file: Option<PathBuf>,
    /// Use this run id.
    #[arg(long = "run-id")]
    pub run_id: Option<String>,
    /// State store URI (sqlite:///path.db, memory://).
    #[arg(long)]
    pub state: Option<String>,
    /// Print exactly one JSON object on stdout (`--json-output` is the original's name).
    #[arg(long, alias = "json-output")]
    pub json: bool,
    /// Stream step events to stderr as they happen (`--progress` is the original's name).
    #[arg(long, alias = "progress")]
    pub live: bool,
    /// Load, check and resolve everything (skills, models, budget), print the plan, and call nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Print only the run id, status, output and totals.
    #[arg(long)]
    pub summary: bool,
    /// The original's `-p/--pipeline-name` (which pipeline variable of a Python file to run). A blueprint holds
    /// one pipeline: accepted, and a name other than the blueprint's is noted and ignored.
    #[arg(short = 'p', long = "pipeline-name", value_name = "NAME")]
    pub pipeline_name: Option<String>,
    /// Allow imports outside the blueprint's folder (also `[imports] allow_outside = true` in flujo.toml).
    #[arg(long = "allow-imports-outside")]
    pub allow_imports_outside: bool,
    /// Put the run on this queue and return its id at once; a `flujo worker --queue NAME` runs it.
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// `text` or `json` (one line).
    #[arg(long, value_enum, default_value = "text")]
    pub format: StatusFormat,
    /// Accepted for the original's scripts: providers are never contacted (their keys are checked only).
    #[arg(long = "no-network")]
    pub no_network: bool,
    /// State store URI (default: the configured one).
    #[arg(long)]
    pub state: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum StatusFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    pub run_id: String,
    #[command(flatten)]
    pub input: InputArgs,
    /// The pause to answer (needed when several are pending).
    #[arg(long = "pause-id")]
    pub pause_id: Option<String>,
    /// The blueprint the run was started from (default: the stored definition).
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub live: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Format {
    Text,
    Json,
    Sarif,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The blueprint (default: the project's pipeline.yaml).
    pub path: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text", alias = "output-format")]
    pub format: Format,
    /// Treat warnings as errors (`--fail-on-warn` is the original's name).
    #[arg(long, alias = "fail-on-warn")]
    pub strict: bool,
    /// Severity overrides: a profile `[validation.profiles.NAME]` of flujo.toml (env FLUJO_RULES_PROFILE), or a
    /// TOML/JSON file of `"RULE-OR-GLOB" = "off" | "warning" | "error"` (`--rules` is the original's name).
    #[arg(long, alias = "rules", value_name = "NAME_OR_FILE")]
    pub profile: Option<String>,
    /// After the findings, explain each rule id that occurs (text format).
    #[arg(long)]
    pub explain: bool,
    /// Findings recorded in this baseline file (rule id and message) are not reported again.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write the current findings to the `--baseline` file (and report none of them).
    #[arg(long = "update-baseline", requires = "baseline")]
    pub update_baseline: bool,
    /// Allow imports outside the blueprint's folder (also `[imports] allow_outside = true` in flujo.toml).
    #[arg(long = "allow-imports-outside")]
    pub allow_imports_outside: bool,
    /// Apply the mechanical fixes (misspelt keys and filters, `previous_step.output`, the original's mapping
    /// forms) to the file, keeping a `.bak` copy, then validate again.
    #[arg(long)]
    pub fix: bool,
    /// Show the fixes as a diff without writing anything.
    #[arg(long = "fix-dry-run")]
    pub fix_dry_run: bool,
    /// Only the fixers of these rule ids (comma-separated, globs allowed: `V-T*,FORM-*`).
    #[arg(long = "fix-rules", value_name = "RULES")]
    pub fix_rules: Option<String>,
    /// Accepted for the original's scripts: `--fix` never asks.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Explain a pipeline: its steps as a tree with kinds and paths.
    Explain { pipeline: Option<PathBuf> },
    /// A Mermaid flowchart of a pipeline.
    Visualize { pipeline: Option<PathBuf> },
    /// The effective configuration and where each value came from.
    ShowConfig,
    /// The budget (usage limits) a pipeline runs under and where each limit came from: `dev budgets [FILE]`, or
    /// `dev budgets show NAME` by pipeline name (the original's form).
    Budgets {
        #[arg(num_args = 0..=2, value_name = "FILE | show NAME")]
        args: Vec<String>,
    },
    /// The version of flujo.
    Version,
    /// The governance chain a pipeline runs under (`[governance]` in flujo.toml): its policies in order and
    /// where each one's options come from.
    Governance {
        /// The blueprint (default: pipeline.yaml), or a pipeline name with `--name`.
        pipeline: Option<PathBuf>,
        /// Take PIPELINE as a pipeline name rather than a file.
        #[arg(long)]
        name: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Where recent runs struggle: failures, retries, repaired structured outputs and cut-off answers by step
    /// and by model, from the journal.
    HealthCheck(health::HealthArgs),
    /// A blueprint as plain, normalized YAML (anchors and merges expanded, comments dropped, the original's
    /// alternative forms rewritten); it must validate first.
    CompileYaml {
        /// The blueprint.
        src: PathBuf,
        /// Write here instead of stdout.
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
        /// Keep the original's alternative forms as written.
        #[arg(long = "no-normalize")]
        no_normalize: bool,
    },
    /// The same as `flujo validate`.
    Validate(ValidateArgs),
    /// What the sandbox of `code_interpreter` (`[sandbox]` in flujo.toml) enforces on this machine: each
    /// protection, active or not, required or not. Exits 1 when it would refuse to run code.
    SandboxCheck {
        /// Check this kind instead of the configured one.
        #[arg(long, value_enum)]
        kind: Option<sandbox::Kind>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The context fields a pipeline writes and reads, with their types: a `context_schema:` block to paste
    /// into the blueprint (default), the JSON Schema, or a Rust struct; warnings with locations on stderr.
    GenContext(gen_context::GenContextArgs),
    /// One `http` skill per operation of an OpenAPI 3.0/3.1 document, merged into skills.yaml (entries it
    /// wrote before are replaced, hand-written ones kept).
    ImportOpenapi(openapi::ImportOpenApiArgs),
    /// The price list runs are charged by: the dated built-in list prices and the `[cost]` prices of
    /// flujo.toml (which override them), and whether the built-in prices apply (lenient) or not (strict).
    Prices(prices::PricesArgs),
}

/// A user-facing failure: a kind, a message and the exit code, with the run and pipeline it concerns when
/// there are some (so that `--json` and the message can name them).
#[derive(Debug)]
pub struct CliError {
    pub kind: &'static str,
    pub message: String,
    pub code: u8,
    /// The run the failure concerns (e.g. a generated id the user needs to resume it).
    pub run_id: Option<String>,
    /// The pipeline's name, once known.
    pub pipeline: Option<String>,
    /// Blueprint diagnostics (validation and resolution failures), as `flujo validate --format json` gives them.
    pub diagnostics: Option<Box<serde_json::Value>>,
    /// `error` (the command failed without a run result) or `interrupted`.
    pub status: &'static str,
}

impl CliError {
    pub fn new(kind: &'static str, code: u8, message: impl Into<String>) -> Self {
        CliError {
            kind,
            message: message.into(),
            code,
            run_id: None,
            pipeline: None,
            diagnostics: None,
            status: "error",
        }
    }
    pub fn config(message: impl Into<String>) -> Self {
        CliError::new("config_error", EXIT_CONFIG, message)
    }
    /// A usage error (exit 2) of another kind than `config_error`.
    pub fn usage(kind: &'static str, message: impl Into<String>) -> Self {
        CliError::new(kind, EXIT_CONFIG, message)
    }
    pub fn with_run(mut self, run_id: Option<&str>, pipeline: Option<&str>) -> Self {
        if self.run_id.is_none() {
            self.run_id = run_id.map(str::to_owned);
        }
        if self.pipeline.is_none() {
            self.pipeline = pipeline.map(str::to_owned);
        }
        self
    }

    /// The one JSON object `--json` prints for a failure: the keys of SPEC §13's result object, with
    /// `status` `error` (or `interrupted`), `error: {kind, message, exit_code[, diagnostics]}` and empty
    /// results.
    pub fn to_json(&self) -> serde_json::Value {
        let mut error = serde_json::json!({"kind": self.kind, "message": self.message, "exit_code": self.code});
        if let (Some(d), Some(obj)) = (&self.diagnostics, error.as_object_mut()) {
            obj.insert("diagnostics".into(), (**d).clone());
        }
        serde_json::json!({
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "status": self.status,
            "output": null,
            "error": error,
            "pending": [],
            "step_history": [],
            "total_cost_usd": 0.0,
            "total_tokens": 0,
            "context": null,
        })
    }

    /// Prints the failure: the message on stderr and, with `--json`, the object on stdout.
    pub fn report(&self, json: bool) {
        errln!("error[{}]: {}", self.kind, self.message);
        if json {
            outln!("{}", self.to_json());
        }
    }
}

impl Cli {
    /// Whether the command was asked for JSON on stdout (`--json`, or `validate --format json|sarif`).
    pub fn wants_json(&self) -> bool {
        match &self.command {
            Command::Run(a) => a.json,
            Command::Resume(a) => a.json,
            Command::Validate(a) => a.format != Format::Text,
            Command::Lens(l) => l.opts().json,
            Command::Status(a) => a.format == StatusFormat::Json,
            Command::Dev(DevCommand::Validate(a)) => a.format != Format::Text,
            Command::Dev(DevCommand::Governance { json, .. }) => *json,
            Command::Dev(DevCommand::SandboxCheck { json, .. }) => *json,
            Command::Dev(DevCommand::GenContext(a)) => a.json,
            Command::Dev(DevCommand::Prices(a)) => a.json,
            Command::Lock(lock::LockCommand::Verify(a)) => matches!(a.format, lock::DiffFormat::Json),
            Command::Lock(lock::LockCommand::Compare(a)) => matches!(a.format, lock::DiffFormat::Json),
            Command::Lock(lock::LockCommand::Show(a)) => matches!(a.format, lock::ShowFormat::Json),
            Command::Create(a) => a.json,
            Command::Worker(a) => a.json,
            Command::Serve(_) => false,
            Command::Schedule(s) => s.json(),
            Command::Memory(m) => m.json(),
            Command::Dev(DevCommand::HealthCheck(a)) => a.export == Some(health::Export::Json) && a.output.is_none(),
            Command::Init { .. } | Command::Dev(_) | Command::Lock(_) => false,
        }
    }
}

/// Whether the raw arguments ask for JSON (used when they cannot be parsed).
fn args_want_json() -> bool {
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let args = args.iter().take_while(|a| *a != "--");
    let mut prev_format = false;
    for a in args {
        if a == "--json"
            || a == "--format=json"
            || a == "--format=sarif"
            || (prev_format && (a == "json" || a == "sarif"))
        {
            return true;
        }
        prev_format = a == "--format";
    }
    false
}

/// `FLUJO_LOG=info` (or `FLUJO_LOG=flujo_engine=debug,info`, …) prints tracing events and closed spans —
/// `flujo.step` and `gen_ai.chat` with their attributes — to stderr; an OTLP endpoint (`crate::otel`) gets the
/// run, step and model-call spans. Neither: no subscriber, no cost. Errors are configuration errors.
fn init_logging(
    debug: bool,
    verbose: bool,
    config: &config::Config,
    rt: &tokio::runtime::Runtime,
) -> Result<Option<otel::Exporter>, String> {
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    let spec = match std::env::var("FLUJO_LOG") {
        Ok(spec) => Some(spec),
        Err(_) if debug => Some("debug".to_owned()),
        Err(_) if verbose => Some("info".to_owned()),
        Err(_) => None,
    };
    let fmt = spec.and_then(|spec| match spec.parse::<tracing_subscriber::filter::Targets>() {
        Ok(filter) => Some(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
                .with_filter(filter),
        ),
        Err(e) => {
            errln!("warning: FLUJO_LOG='{spec}' is not a valid filter ({e}); logging is off");
            None
        }
    });
    let (otel, exporter) = {
        let _rt = rt.enter();
        otel::from_config(&config.table)?.unzip()
    };
    if fmt.is_some() || otel.is_some() {
        let _ = tracing_subscriber::registry().with(otel).with(fmt).try_init();
    }
    Ok(exporter)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout, usage errors to stderr (exit 2); a closed pipe is not an error.
            let _ = e.print();
            let code = u8::try_from(e.exit_code()).unwrap_or(EXIT_CONFIG);
            if code != EXIT_OK && args_want_json() {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
                outln!("{}", CliError::usage("usage_error", first).to_json());
            }
            return ExitCode::from(out::final_code(code));
        }
    };
    let json = cli.wants_json();
    let root = match config::project_root(cli.project.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            CliError::config(e.0).report(json);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Loaded while the process is single-threaded: `env_file` may set environment variables.
    let config = match config::Config::load_in(cli.config.as_deref(), root.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            CliError::config(e.0).report(json);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            CliError::new("runtime_error", EXIT_FAILED, format!("cannot start the async runtime: {e}")).report(json);
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let exporter = match init_logging(cli.debug, cli.verbose, &config, &rt) {
        Ok(e) => e,
        Err(e) => {
            CliError::config(e).report(json);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let code = match rt.block_on(commands::dispatch(cli, config)) {
        Ok(code) => code,
        Err(e) => {
            e.report(json);
            e.code
        }
    };
    // MCP servers started by this command: stdin closed, process groups killed, children reaped.
    mcp::shutdown();
    // The spans still buffered are delivered (a bounded wait), whatever the exit code.
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    ExitCode::from(out::final_code(code))
}
