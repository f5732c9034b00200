//! The `flujo` command. A thin binary: it parses arguments, loads configuration and the blueprint, wires the
//! store, skills and runner together, renders results and maps outcomes to the exit codes of SPEC §13:
//! `0` completed · `1` run failed / runtime error · `2` configuration error · `3` import or skill resolution
//! error · `4` validation failed · `5` paused · `130` interrupted. Logs and progress go to stderr; with
//! `--json`, stdout carries exactly one JSON object.

mod commands;
mod config;
mod lens;
mod scaffold;
mod view;

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
    /// Configuration file (default: ./flujo.toml when present; env FLUJO_CONFIG).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
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
    /// Validate a blueprint and print every diagnostic.
    Validate(ValidateArgs),
    /// Inspect runs: list, show, trace, spans, replay, verify, stats, prune.
    #[command(subcommand)]
    Lens(lens::LensCommand),
    /// Developer tools.
    #[command(subcommand)]
    Dev(DevCommand),
}

#[derive(Args, Debug)]
pub struct InputArgs {
    /// Input as text; `-` reads stdin.
    #[arg(short = 'i', long = "input", conflicts_with = "input_json")]
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
    /// Initial context fields, a JSON object.
    #[arg(long)]
    pub context: Option<String>,
    /// Use this run id.
    #[arg(long = "run-id")]
    pub run_id: Option<String>,
    /// State store URI (sqlite:///path.db, memory://).
    #[arg(long)]
    pub state: Option<String>,
    /// Print exactly one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Stream step events to stderr as they happen.
    #[arg(long)]
    pub live: bool,
    /// Allow imports outside the blueprint's folder (also `[imports] allow_outside = true` in flujo.toml).
    #[arg(long = "allow-imports-outside")]
    pub allow_imports_outside: bool,
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
    pub path: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Treat warnings as errors.
    #[arg(long)]
    pub strict: bool,
    /// Allow imports outside the blueprint's folder (also `[imports] allow_outside = true` in flujo.toml).
    #[arg(long = "allow-imports-outside")]
    pub allow_imports_outside: bool,
}

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Explain a pipeline: its steps as a tree with kinds and paths.
    Explain { pipeline: Option<PathBuf> },
    /// A Mermaid flowchart of a pipeline.
    Visualize { pipeline: Option<PathBuf> },
    /// The effective configuration and where each value came from.
    ShowConfig,
    /// The budget (usage limits) a pipeline runs under and where each limit came from.
    Budgets { pipeline: Option<PathBuf> },
}

/// A user-facing failure: a kind, a message and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub kind: &'static str,
    pub message: String,
    pub code: u8,
}

impl CliError {
    pub fn new(kind: &'static str, code: u8, message: impl Into<String>) -> Self {
        CliError { kind, message: message.into(), code }
    }
    pub fn config(message: impl Into<String>) -> Self {
        CliError::new("config_error", EXIT_CONFIG, message)
    }
}

/// `FLUJO_LOG=info` (or `FLUJO_LOG=flujo_engine=debug,info`, …) prints tracing events and closed spans —
/// `flujo.step` and `gen_ai.chat` with their attributes — to stderr. Unset: no subscriber, no cost.
fn init_logging() {
    let Ok(spec) = std::env::var("FLUJO_LOG") else { return };
    match spec.parse::<tracing_subscriber::filter::Targets>() {
        Ok(filter) => {
            use tracing_subscriber::layer::SubscriberExt;
            use tracing_subscriber::util::SubscriberInitExt;
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE);
            let _ = tracing_subscriber::registry().with(fmt).with(filter).try_init();
        }
        Err(e) => eprintln!("warning: FLUJO_LOG='{spec}' is not a valid filter ({e}); logging is off"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error[runtime_error]: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match rt.block_on(commands::dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error[{}]: {}", e.kind, e.message);
            ExitCode::from(e.code)
        }
    }
}
