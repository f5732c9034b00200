//! `flujo serve`: the HTTP API, web UI and metrics of `flujo-server` over a state store, with the
//! pipelines of a folder. This module is the wiring: arguments, the bind check, and [`CliFactory`], which
//! builds runners the way `flujo run` and `flujo worker` do (skills, models, budgets, governance, memory,
//! sandbox from flujo.toml) and reports to the server's telemetry.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use flujo_core::{RunRecord, Store, Telemetry};
use flujo_engine::Flujo;
use flujo_server::{FactoryError, PipelineDetail, PipelineInfo, RunnerFactory};
use serde_json::Value;

use crate::commands::{build_error, load_options, open_store, registry_for, registry_for_stored_run, runner_builder};
use crate::config::Config;
use crate::{CliError, EXIT_OK};

/// `flujo serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Beyond loopback, FLUJO_API_TOKEN must be set (bearer auth on every route).
    #[arg(long, default_value = "127.0.0.1:8088")]
    pub addr: String,
    /// State store URI (default: flujo.toml's state_uri).
    #[arg(long)]
    pub state: Option<String>,
    /// Folder of the blueprints the API offers (default: the project folder).
    #[arg(long)]
    pub pipelines: Option<PathBuf>,
    /// Queue(s) the server's own pool claims from; `POST /api/runs` without a queue uses the first.
    #[arg(long = "queue", default_value = "default")]
    pub queues: Vec<String>,
    /// Runs the server walks at once (0: none — runs wait for `flujo worker`s).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Lease of a claimed run, in seconds (a crashed server's runs are taken over after it).
    #[arg(long, default_value_t = 30.0)]
    pub lease_s: f64,
    /// Origin allowed to call the API from a browser (CORS); repeatable. Default: none (CORS off).
    #[arg(long = "cors-origin")]
    pub cors_origins: Vec<String>,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1_048_576)]
    pub max_body_bytes: usize,
    /// Most event streams open at once.
    #[arg(long, default_value_t = 1024)]
    pub max_streams: usize,
    /// On SIGTERM/SIGINT, how long runs in flight may finish before they go back on their queue.
    #[arg(long, default_value_t = 10.0)]
    pub grace_s: f64,
}

fn usage(message: String) -> CliError {
    CliError::usage("usage_error", message)
}

pub(crate) async fn serve(args: ServeArgs, cfg: &Config) -> Result<u8, CliError> {
    let addr: SocketAddr = args
        .addr
        .parse()
        .map_err(|e| usage(format!("--addr {:?}: {e} (expected IP:PORT, e.g. 127.0.0.1:8088)", args.addr)))?;
    let token = std::env::var("FLUJO_API_TOKEN").ok().filter(|t| !t.is_empty());
    flujo_server::check_bind(&addr, token.as_deref()).map_err(CliError::config)?;
    for q in &args.queues {
        flujo_core::limits::check_name(q).map_err(|reason| usage(format!("--queue {q:?}: {reason}")))?;
    }
    if args.concurrency > 4096 {
        return Err(usage("--concurrency must be 0 to 4096".to_owned()));
    }
    let lease = flujo_core::limits::duration_from_secs(args.lease_s).map_err(|r| usage(format!("--lease-s: {r}")))?;
    let grace = flujo_core::limits::duration_from_secs(args.grace_s).map_err(|r| usage(format!("--grace-s: {r}")))?;
    if args.max_body_bytes == 0 || args.max_streams == 0 {
        return Err(usage("--max-body-bytes and --max-streams must be at least 1".to_owned()));
    }
    let dir = match &args.pipelines {
        Some(d) => d.clone(),
        None => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(CliError::config(format!("--pipelines {}: not a folder", dir.display())));
    }
    let uri = args.state.clone().unwrap_or_else(|| cfg.state_uri.0.clone());
    if !crate::commands::keeps_state(&uri) {
        return Err(CliError::config(format!(
            "flujo serve needs a state store that keeps runs; {} keeps nothing",
            crate::lens::mask_uri(&uri)
        )));
    }
    let store = open_store(&uri)?;
    let observers = flujo_server::Observers::new(store);
    let factory =
        Arc::new(CliFactory::new(dir.clone(), cfg.clone(), observers.store.clone(), observers.telemetry.clone()));
    let found = factory.pipelines();
    let config = flujo_server::ServerConfig {
        token: token.clone(),
        cors_origins: args.cors_origins.clone(),
        limits: flujo_server::Limits {
            max_body_bytes: args.max_body_bytes,
            max_sse: args.max_streams,
            ..Default::default()
        },
        pool: flujo_server::PoolConfig {
            queues: args.queues.clone(),
            concurrency: args.concurrency,
            lease,
            ..Default::default()
        },
        grace,
    };
    // `[shadow_eval]`: runs the pool finishes are judged, as `flujo run` and `flujo worker` do; evaluations
    // a killed process left pending are picked up.
    let shadow = crate::shadow::evaluator(cfg, &observers.store, None);
    let mut server = flujo_server::Server::new(observers, factory, config).map_err(CliError::config)?;
    if let Some(ev) = &shadow {
        ev.pick_up(64).await;
        server = server.with_shadow(ev.clone());
    }
    // Before the address is announced: a SIGTERM from now on stops the server cleanly.
    let stop = crate::worker::shutdown_signal();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::usage("addr_unavailable", format!("--addr {addr}: cannot listen: {e}")))?;
    let local = listener.local_addr().map_err(|e| CliError::config(e.to_string()))?;
    errln!(
        "flujo serve: http://{local}/ ({} pipeline(s) from {}; state {}; pool: {} on {}{})",
        found.len(),
        dir.display(),
        crate::lens::mask_uri(&uri),
        args.concurrency,
        args.queues.join(", "),
        if token.is_some() { "; bearer token required" } else { "" }
    );
    server.serve(listener, stop).await.map_err(|e| CliError::config(format!("serving on {local}: {e}")))?;
    if let Some(ev) = &shadow {
        crate::shadow::finish(ev).await;
    }
    errln!("flujo serve: stopped");
    Ok(EXIT_OK)
}

/// A blueprint of the folder, as last read.
struct Entry {
    file: PathBuf,
    modified: Option<SystemTime>,
    loaded: Result<Arc<flujo_blueprint::Loaded>, String>,
    source: String,
    runner: Option<Arc<Flujo>>,
}

#[derive(Default)]
struct Catalog {
    /// By pipeline name (the first file, by file name, that defines a name wins).
    by_name: BTreeMap<String, Entry>,
    /// Files that do not load, with why.
    broken: Vec<(PathBuf, String)>,
    /// File → modification time at the last scan.
    seen: BTreeMap<PathBuf, Option<SystemTime>>,
    scanned_at: Option<Instant>,
}

/// Runners for `flujo serve` (see the module docs).
pub struct CliFactory {
    dir: PathBuf,
    cfg: Config,
    store: Arc<dyn Store>,
    telemetry: Arc<dyn Telemetry>,
    catalog: Mutex<Catalog>,
    /// Runners of stored runs, by pipeline hash, with when their skills were last checked.
    stored: Mutex<HashMap<String, (Instant, Arc<Flujo>)>>,
}

/// How long a stored run's runner is used before its recorded skill files are checked again.
const RECHECK: Duration = Duration::from_secs(2);

fn blueprint_files(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<(PathBuf, Option<SystemTime>)> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            (name.ends_with(".yaml") || name.ends_with(".yml"))
                && !name.starts_with('.')
                && !matches!(name, "skills.yaml" | "skills.yml" | "flujo.lock.yaml")
                && p.is_file()
        })
        .map(|p| {
            let m = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
            (p, m)
        })
        .collect();
    files.sort();
    files
}

/// True when the YAML text looks like a pipeline blueprint (has top-level `steps:`), not another YAML file.
fn looks_like_blueprint(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("steps:"))
}

impl CliFactory {
    /// A factory over the blueprints of `dir`.
    pub fn new(dir: PathBuf, cfg: Config, store: Arc<dyn Store>, telemetry: Arc<dyn Telemetry>) -> Self {
        CliFactory {
            dir,
            cfg,
            store,
            telemetry,
            catalog: Mutex::new(Catalog::default()),
            stored: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the folder when a file was added, removed or changed (checked at most once a second).
    fn refresh(&self) {
        let mut cat = self.lock();
        if cat.scanned_at.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        let files = blueprint_files(&self.dir);
        let now: BTreeMap<PathBuf, Option<SystemTime>> = files.iter().cloned().collect();
        cat.scanned_at = Some(Instant::now());
        if now == cat.seen {
            return;
        }
        let mut old: HashMap<PathBuf, Entry> =
            std::mem::take(&mut cat.by_name).into_values().map(|e| (e.file.clone(), e)).collect();
        cat.broken.clear();
        for (file, modified) in files {
            let entry = match old.remove(&file) {
                Some(e) if e.modified == modified => e,
                _ => match std::fs::read_to_string(&file) {
                    Ok(source) if !looks_like_blueprint(&source) => continue,
                    Ok(source) => {
                        let builtins = flujo_skills::BuiltinRegistry::new();
                        let opts =
                            flujo_blueprint::LoadOptions { skip_canonical: false, ..load_options(&builtins, false) };
                        let loaded = flujo_blueprint::load_file(&file, &opts).map(Arc::new).map_err(|f| {
                            let errors: Vec<String> = f
                                .diagnostics
                                .iter()
                                .filter(|d| d.is_error())
                                .map(|d| format!("{}: {}", d.rule, d.message))
                                .collect();
                            errors.join("; ")
                        });
                        Entry { file: file.clone(), modified, loaded, source, runner: None }
                    }
                    Err(e) => {
                        cat.broken.push((file.clone(), e.to_string()));
                        continue;
                    }
                },
            };
            match &entry.loaded {
                Ok(l) => {
                    let name = l.pipeline.name.clone();
                    match cat.by_name.entry(name) {
                        std::collections::btree_map::Entry::Occupied(o) => errln!(
                            "warning: {} defines pipeline `{}` again; the first file wins",
                            file.display(),
                            o.key()
                        ),
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert(entry);
                        }
                    }
                }
                Err(why) => {
                    errln!("warning: {} does not load: {why}", file.display());
                    cat.broken.push((file.clone(), why.clone()));
                }
            }
        }
        cat.seen = now;
    }

    /// The summary of a pipeline; its file relative to the pipelines folder.
    fn info(&self, name: &str, e: &Entry) -> PipelineInfo {
        let (steps, description) = match &e.loaded {
            Ok(l) => {
                (l.pipeline.steps.len(), l.canonical.get("description").and_then(Value::as_str).map(str::to_owned))
            }
            Err(_) => (0, None),
        };
        let file = e.file.strip_prefix(&self.dir).unwrap_or(&e.file).display().to_string();
        PipelineInfo { name: name.to_owned(), file, steps, description }
    }
}

fn factory_error(e: CliError) -> FactoryError {
    FactoryError::new(e.kind, e.message)
}

impl RunnerFactory for CliFactory {
    fn pipelines(&self) -> Vec<PipelineInfo> {
        self.refresh();
        self.lock().by_name.iter().map(|(n, e)| self.info(n, e)).collect()
    }

    fn pipeline(&self, name: &str) -> Option<PipelineDetail> {
        self.refresh();
        let cat = self.lock();
        let e = cat.by_name.get(name)?;
        let loaded = e.loaded.as_ref().ok()?;
        Some(PipelineDetail {
            info: self.info(name, e),
            source: e.source.clone(),
            mermaid: crate::view::mermaid(&loaded.pipeline),
            tree: crate::view::tree(&loaded.pipeline.steps),
        })
    }

    fn runner(&self, name: &str) -> Result<Arc<Flujo>, FactoryError> {
        self.refresh();
        let (loaded, file) = {
            let cat = self.lock();
            let Some(e) = cat.by_name.get(name) else {
                let known: Vec<&str> = cat.by_name.keys().map(String::as_str).collect();
                return Err(FactoryError::new(
                    "pipeline_not_found",
                    format!("no pipeline named '{name}' in {} (known: {})", self.dir.display(), known.join(", ")),
                ));
            };
            if let Some(r) = &e.runner {
                return Ok(r.clone());
            }
            let loaded = e.loaded.clone().map_err(|why| FactoryError::new("validation_failed", why))?;
            (loaded, e.file.clone())
        };
        let reg = registry_for(Some(&loaded), None).map_err(factory_error)?;
        let origin = flujo_blueprint::origin::origin_of(&loaded, &file);
        let flujo = runner_builder(loaded.pipeline.clone(), self.store.clone(), reg, &self.cfg, Some(origin))
            .and_then(|b| b.telemetry(self.telemetry.clone()).build().map_err(build_error))
            .map(Arc::new)
            .map_err(factory_error)?;
        let mut cat = self.lock();
        if let Some(e) = cat.by_name.get_mut(name) {
            e.runner = Some(flujo.clone());
        }
        Ok(flujo)
    }

    fn runner_for(&self, run: &RunRecord) -> Result<Arc<Flujo>, FactoryError> {
        if let Some((at, f)) = self.stored.lock().unwrap_or_else(|p| p.into_inner()).get(&run.pipeline_hash) {
            if at.elapsed() < RECHECK {
                return Ok(f.clone());
            }
        }
        let def = run.definition.clone().ok_or_else(|| {
            FactoryError::new("no_definition", format!("run '{}' has no stored pipeline definition", run.run_id))
        })?;
        let pipeline = flujo_engine::pipeline_from_definition(&def).map_err(|e| {
            FactoryError::new("bad_definition", format!("the stored pipeline definition cannot be read: {e}"))
        })?;
        let reg = registry_for_stored_run(run).map_err(factory_error)?;
        let flujo = runner_builder(pipeline, self.store.clone(), reg, &self.cfg, None)
            .and_then(|b| b.telemetry(self.telemetry.clone()).build().map_err(build_error))
            .map(Arc::new)
            .map_err(factory_error)?;
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        if stored.len() > 256 {
            stored.retain(|_, (at, _)| at.elapsed() < RECHECK);
        }
        stored.insert(run.pipeline_hash.clone(), (Instant::now(), flujo.clone()));
        Ok(flujo)
    }

    fn validate(&self, yaml: &str) -> Value {
        let builtins = flujo_skills::BuiltinRegistry::new();
        let opts = load_options(&builtins, false);
        let diags = flujo_blueprint::validate_str(yaml, &self.dir.join("request.yaml"), &opts);
        flujo_blueprint::render_json(&diags)
    }
}
