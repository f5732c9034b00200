//! Memory for the command line (SPEC §11): the `[memory]` settings of `flujo.toml`, the backend (vector store
//! and embedder) runs get from them, and `flujo memory add|search|stats|delete`.
//!
//! Memory is on when `flujo.toml` has a `[memory]` section (unless `enabled = false`), when the blueprint has
//! a `memory:` section, or when `FLUJO_MEMORY_INDEXING_ENABLED` / `FLUJO_MEMORY_EMBEDDING_MODEL` (the Python
//! original's variables) are set. The store is `[memory] uri` (or `FLUJO_MEMORY_URI`), by default the state
//! store's URI — the same SQLite file, the same Postgres database. The embedder is `[memory] embedder`, else
//! the blueprint's `memory.embedder`; it is required (`mock:hash` offline).

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use clap::{Args, Subcommand};
use flujo_core::{Embedder, MemoryDelete, MemoryRecord, Pipeline, SkillRegistry, VectorQuery, VectorStore};
use flujo_engine::memory::{IndexSteps, MemoryIndexing};
use flujo_skills::{MemoryBackend, WithMemory};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::{CliError, EXIT_FAILED, EXIT_OK};

/// `[memory] index`: `true`/`"all"`, `false`, or step names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum IndexSetting {
    /// `true` (every output) or `false` (none).
    Flag(bool),
    /// `"all"`.
    Word(String),
    /// Step names.
    Steps(Vec<String>),
}

/// The `[memory]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryToml {
    /// `false` turns memory off even when the blueprint asks for it.
    pub enabled: Option<bool>,
    /// The vector store (default: the state store's URI).
    pub uri: Option<String>,
    /// The embedder (`mock:hash`, `mock:hash:384`, `openai:text-embedding-3-small`, `ollama:MODEL`, …).
    pub embedder: Option<String>,
    /// Which step outputs are indexed (the blueprint's `memory.index` takes precedence).
    pub index: Option<IndexSetting>,
    /// Longest chunk, in characters (default 1000).
    pub chunk_size: Option<usize>,
    /// Characters shared by neighbouring chunks (default 100).
    pub chunk_overlap: Option<usize>,
    /// Embedding dimensions to ask the server for.
    pub dimensions: Option<usize>,
    /// Texts per embeddings request.
    pub batch_size: Option<usize>,
    /// Characters per embeddings request.
    pub max_batch_chars: Option<usize>,
}

impl MemoryToml {
    /// Parses and checks the section.
    pub fn from_toml(value: &toml::Value) -> Result<Self, String> {
        let json = serde_json::to_value(value).map_err(|e| format!("[memory]: {e}"))?;
        let m: MemoryToml = serde_json::from_value(json).map_err(|e| format!("[memory]: {e}"))?;
        if let Some(IndexSetting::Word(w)) = &m.index {
            if w != "all" {
                return Err(format!(
                    "[memory] index: expected true, false, \"all\" or a list of step names, got \"{w}\""
                ));
            }
        }
        if m.chunk_size == Some(0) {
            return Err("[memory] chunk_size must be at least 1".into());
        }
        if let (Some(size), Some(overlap)) = (m.chunk_size, m.chunk_overlap) {
            if overlap * 2 > size {
                return Err("[memory] chunk_overlap must be at most half of chunk_size".into());
            }
        }
        Ok(m)
    }

    /// The section with the original's environment variables applied.
    pub fn with_env(mut self) -> Result<Self, String> {
        if let Ok(v) = std::env::var("FLUJO_MEMORY_URI") {
            self.uri = Some(v);
        }
        if let Ok(v) = std::env::var("FLUJO_MEMORY_EMBEDDING_MODEL") {
            self.embedder = Some(v);
        }
        if let Ok(v) = std::env::var("FLUJO_MEMORY_EMBEDDING_DIMENSIONS") {
            self.dimensions = Some(
                v.trim()
                    .parse()
                    .ok()
                    .filter(|d| *d > 0)
                    .ok_or(format!("FLUJO_MEMORY_EMBEDDING_DIMENSIONS: expected a positive integer, got '{v}'"))?,
            );
        }
        if let Ok(v) = std::env::var("FLUJO_MEMORY_INDEXING_ENABLED") {
            let on = matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on");
            self.enabled = Some(on);
            if on && self.index.is_none() {
                self.index = Some(IndexSetting::Flag(true));
            }
        }
        Ok(self)
    }

    fn env_asks() -> bool {
        ["FLUJO_MEMORY_INDEXING_ENABLED", "FLUJO_MEMORY_EMBEDDING_MODEL", "FLUJO_MEMORY_URI"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
    }
}

/// What a run's memory is made of.
#[derive(Clone)]
pub struct Backend {
    pub store: Arc<dyn VectorStore>,
    pub embedder: Arc<dyn Embedder>,
    pub steps: IndexSteps,
    pub chunk_size: usize,
    pub chunk_overlap: usize,
    pub uri: String,
}

type Opened = (Arc<dyn VectorStore>, Arc<dyn Embedder>);

/// Stores and embedders opened by this process, by (uri, embedder, settings): a worker running many runs
/// opens each once.
fn opened() -> &'static Mutex<HashMap<String, Opened>> {
    static OPENED: OnceLock<Mutex<HashMap<String, Opened>>> = OnceLock::new();
    OPENED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The memory backend for `pipeline` (or for the `flujo memory` commands when `None`); `None` when memory
/// is off.
pub fn backend(cfg: &Config, pipeline: Option<&Pipeline>) -> Result<Option<Backend>, CliError> {
    let own = pipeline.and_then(|p| p.memory.as_ref());
    let section = match &cfg.memory {
        Some(m) => Some(m.clone()),
        None if own.is_some() || MemoryToml::env_asks() => Some(MemoryToml::default()),
        None => None,
    };
    let Some(section) = section else { return Ok(None) };
    let section = section.with_env().map_err(CliError::config)?;
    if section.enabled == Some(false) {
        if own.and_then(|o| o.index.as_ref()).is_some() {
            crate::errln!("note: the blueprint indexes step outputs into memory, but [memory] enabled = false");
        }
        return Ok(None);
    }
    let Some(embedder_id) = section.embedder.clone().or_else(|| own.and_then(|o| o.embedder.clone())) else {
        return Err(CliError::config(
            "memory needs an embedder: set `embedder` under [memory] in flujo.toml (\"mock:hash\" offline, \
             \"openai:text-embedding-3-small\", \"ollama:nomic-embed-text\", …) or `memory.embedder` in the blueprint",
        ));
    };
    let uri = section.uri.clone().unwrap_or_else(|| cfg.state_uri.0.clone());
    let mut settings = flujo_llm::embed::EmbedderSettings::new();
    if let Some(d) = section.dimensions {
        settings = settings.with_dimensions(d);
    }
    if let Some(b) = section.batch_size {
        settings = settings.with_batch_size(b);
    }
    if let Some(c) = section.max_batch_chars {
        settings = settings.with_max_batch_chars(c);
    }
    let key = format!("{uri}\u{0}{embedder_id}\u{0}{settings:?}");
    let cached = opened().lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
    let (store, embedder) = match cached {
        Some(o) => o,
        None => {
            if let Some(file) = crate::lens::sqlite_file(&uri) {
                let path = Path::new(&file);
                if path.exists() {
                    crate::commands::check_regular_file(path, "memory store", "").map_err(CliError::config)?;
                }
            }
            let store = flujo_store::open_vector_store(&uri)
                .map_err(|e| CliError::config(format!("memory store '{}': {e}", crate::lens::mask_uri(&uri))))?;
            let embedder = crate::commands::models(cfg)?
                .embedder(&embedder_id, &settings)
                .map_err(|e| CliError::config(format!("[memory] embedder: {e}")))?;
            opened().lock().unwrap_or_else(|p| p.into_inner()).insert(key, (store.clone(), embedder.clone()));
            (store, embedder)
        }
    };
    let steps = match &section.index {
        None | Some(IndexSetting::Flag(false)) => IndexSteps::None,
        Some(IndexSetting::Flag(true)) | Some(IndexSetting::Word(_)) => IndexSteps::All,
        Some(IndexSetting::Steps(names)) => IndexSteps::Named(names.clone()),
    };
    Ok(Some(Backend {
        store,
        embedder,
        steps,
        chunk_size: section.chunk_size.unwrap_or(1000),
        chunk_overlap: section.chunk_overlap.unwrap_or(100),
        uri,
    }))
}

/// The runner's skills and indexing with memory `b`.
pub fn wire(
    builder: flujo_engine::FlujoRuntimeBuilder,
    reg: Arc<dyn SkillRegistry>,
    b: Backend,
) -> (flujo_engine::FlujoRuntimeBuilder, Arc<dyn SkillRegistry>) {
    let skills = MemoryBackend::new(b.store.clone(), b.embedder.clone()).with_chunking(b.chunk_size, b.chunk_overlap);
    let reg: Arc<dyn SkillRegistry> = Arc::new(WithMemory::new(reg, skills));
    let indexing = MemoryIndexing::new(b.store, b.embedder, b.steps).with_chunking(b.chunk_size, b.chunk_overlap);
    (builder.memory(indexing), reg)
}

// ---------------------------------------------------------------------------------------------------------
// flujo memory …

/// `flujo memory` subcommands.
#[derive(Subcommand, Debug)]
pub enum MemoryCommand {
    /// Add texts: files (each chunked; metadata `source` = the path), `--text`, or JSON lines
    /// (`{"text", "id"?, "metadata"?}` per line) with `--jsonl FILE` (`-` for stdin).
    Add(AddArgs),
    /// Search: the closest memories to a query, with their scores.
    Search(SearchArgs),
    /// How many memories there are, where, and with which embedder.
    Stats(CommonArgs),
    /// Delete memories by id, or all matching `--where KEY=VALUE` (at least one of them).
    Delete(DeleteArgs),
}

impl MemoryCommand {
    /// Whether the command prints JSON.
    pub fn json(&self) -> bool {
        match self {
            MemoryCommand::Add(a) => a.common.json,
            MemoryCommand::Search(a) => a.common.json,
            MemoryCommand::Stats(a) => a.json,
            MemoryCommand::Delete(a) => a.common.json,
        }
    }
}

/// Where memories are and the output format.
#[derive(Args, Debug)]
pub struct CommonArgs {
    /// The vector store URI (default: `[memory] uri`, else the state store).
    #[arg(long)]
    pub uri: Option<String>,
    /// The embedder (default: `[memory] embedder`).
    #[arg(long)]
    pub embedder: Option<String>,
    /// Print exactly one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `flujo memory add` arguments.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// Files to add (text; each chunked).
    pub files: Vec<PathBuf>,
    /// A text to add.
    #[arg(long)]
    pub text: Option<String>,
    /// JSON lines to add (`-`: stdin).
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    /// Metadata for every added memory, `KEY=VALUE` (VALUE as JSON when it parses, else a string).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Longest chunk, in characters (default: `[memory] chunk_size`, else 1000).
    #[arg(long)]
    pub chunk_size: Option<usize>,
    /// Characters shared by neighbouring chunks (default: `[memory] chunk_overlap`, else 100).
    #[arg(long)]
    pub chunk_overlap: Option<usize>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `flujo memory search` arguments.
#[derive(Args, Debug)]
pub struct SearchArgs {
    /// What to look for.
    pub query: String,
    /// How many results.
    #[arg(short = 'k', long, default_value_t = 5)]
    pub k: usize,
    /// Only memories whose metadata has KEY = VALUE (repeatable).
    #[arg(long = "where", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Only results scoring at least this (-1 to 1).
    #[arg(long)]
    pub min_score: Option<f32>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `flujo memory delete` arguments.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Ids to delete.
    pub ids: Vec<String>,
    /// Delete every memory whose metadata has KEY = VALUE (repeatable; all must match).
    #[arg(long = "where", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub(crate) async fn dispatch(cmd: MemoryCommand, cfg: &Config) -> Result<u8, CliError> {
    match cmd {
        MemoryCommand::Add(a) => add(a, cfg).await,
        MemoryCommand::Search(a) => search(a, cfg).await,
        MemoryCommand::Stats(a) => stats(a, cfg).await,
        MemoryCommand::Delete(a) => delete(a, cfg).await,
    }
}

fn usage(kind: &'static str, message: impl Into<String>) -> CliError {
    CliError::usage(kind, message.into())
}

fn store_error(e: impl std::fmt::Display) -> CliError {
    CliError::new("store_error", EXIT_FAILED, format!("memory store: {e}"))
}

fn embed_error(e: impl std::fmt::Display) -> CliError {
    CliError::new("embedding_failed", EXIT_FAILED, format!("embedding failed: {e}"))
}

/// The backend of a `flujo memory` command: the configuration with `--uri` / `--embedder` applied; memory
/// need not be switched on in `flujo.toml` for these commands.
fn command_backend(common: &CommonArgs, cfg: &Config) -> Result<Backend, CliError> {
    let mut cfg = cfg.clone();
    let mut section = cfg.memory.clone().unwrap_or_default();
    section.enabled = Some(true);
    if let Some(u) = &common.uri {
        section.uri = Some(u.clone());
    }
    if let Some(e) = &common.embedder {
        section.embedder = Some(e.clone());
    }
    if let Some(uri) = section.uri.as_deref().or(Some(cfg.state_uri.0.as_str())) {
        if !crate::commands::keeps_state(uri) {
            return Err(CliError::config(format!(
                "{} keeps nothing after this command exits; give --uri (or [memory] uri / state_uri) a sqlite:// \
                 or postgres:// store",
                crate::lens::mask_uri(uri)
            )));
        }
    }
    cfg.memory = Some(section);
    backend(&cfg, None)?.ok_or_else(|| CliError::config("memory is off"))
}

fn key_value(kv: &str, flag: &str) -> Result<(String, Value), CliError> {
    let Some((k, v)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
        return Err(usage("invalid_argument", format!("{flag} {kv}: expected KEY=VALUE")));
    };
    let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
    Ok((k.to_owned(), value))
}

fn filter_of(pairs: &[String]) -> Result<Map<String, Value>, CliError> {
    pairs.iter().map(|kv| key_value(kv, "--where")).collect()
}

/// Embeds and stores `items` (id, text, metadata) in batches, checking the embedder's preflight first.
async fn store_items(b: &Backend, items: Vec<(String, String, Map<String, Value>)>) -> Result<(u64, f64), CliError> {
    b.embedder.preflight().map_err(|e| CliError::config(format!("[memory] embedder: {e}")))?;
    let (mut tokens, mut cost) = (0u64, 0.0f64);
    for batch in items.chunks(256) {
        let texts: Vec<String> = batch.iter().map(|(_, t, _)| t.clone()).collect();
        let embedded = b.embedder.embed(&texts).await.map_err(embed_error)?;
        tokens += embedded.tokens;
        cost += embedded.cost_usd;
        if embedded.vectors.len() != batch.len() {
            return Err(embed_error(format!("{} vectors for {} texts", embedded.vectors.len(), batch.len())));
        }
        let records: Vec<MemoryRecord> = batch
            .iter()
            .zip(embedded.vectors)
            .map(|((id, text, meta), e)| {
                let mut r = MemoryRecord::new(id.clone(), text.clone(), e);
                r.metadata = meta.clone();
                r
            })
            .collect();
        b.store.add(&records).await.map_err(store_error)?;
    }
    Ok((tokens, cost))
}

fn read_limited(path: &Path, limit: u64) -> Result<String, CliError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| usage("input_unreadable", format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(usage("input_unreadable", format!("{} is not a regular file", path.display())));
    }
    if meta.len() > limit {
        return Err(usage(
            "input_too_large",
            format!("{} is larger than the input limit of {} bytes ([limits] max_input_bytes)", path.display(), limit),
        ));
    }
    let bytes =
        std::fs::read(path).map_err(|e| usage("input_unreadable", format!("cannot read {}: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|_| usage("input_unreadable", format!("{} is not UTF-8 text", path.display())))
}

async fn add(a: AddArgs, cfg: &Config) -> Result<u8, CliError> {
    if a.files.is_empty() && a.text.is_none() && a.jsonl.is_none() {
        return Err(usage("invalid_argument", "nothing to add: give FILES, --text TEXT or --jsonl FILE"));
    }
    let b = command_backend(&a.common, cfg)?;
    let size = a.chunk_size.unwrap_or(b.chunk_size).max(1);
    let overlap = a.chunk_overlap.unwrap_or(b.chunk_overlap);
    if overlap * 2 > size {
        return Err(usage("invalid_argument", "--chunk-overlap must be at most half of --chunk-size"));
    }
    let mut base = Map::new();
    for kv in &a.meta {
        let (k, v) = key_value(kv, "--meta")?;
        base.insert(k, v);
    }
    let limit = cfg.max_input_bytes.0;
    let mut items: Vec<(String, String, Map<String, Value>)> = Vec::new();
    let chunked = |id: String, text: &str, meta: Map<String, Value>, items: &mut Vec<_>| {
        let chunks = flujo_core::chunk_text(text, size, overlap);
        let total = chunks.len();
        for (i, c) in chunks.into_iter().enumerate() {
            let mut m = base.clone();
            m.extend(meta.clone());
            if total > 1 {
                m.insert("chunk".into(), json!(i));
            }
            items.push((if total > 1 { format!("{id}#{i}") } else { id.clone() }, c, m));
        }
    };
    for f in &a.files {
        let text = read_limited(f, limit)?;
        let mut meta = Map::new();
        meta.insert("source".into(), json!(f.display().to_string()));
        chunked(f.display().to_string(), &text, meta, &mut items);
    }
    if let Some(t) = &a.text {
        let id = format!("text-{}", &blake3::hash(t.as_bytes()).to_hex()[..16]);
        chunked(id, t, Map::new(), &mut items);
    }
    if let Some(path) = &a.jsonl {
        let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(std::io::BufReader::new(std::io::stdin()))
        } else {
            let text = read_limited(path, limit)?;
            Box::new(std::io::Cursor::new(text.into_bytes()))
        };
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| usage("input_unreadable", format!("{}: {e}", path.display())))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| usage("invalid_input", format!("{} line {}: not JSON: {e}", path.display(), n + 1)))?;
            let Some(text) = v.get("text").and_then(Value::as_str) else {
                return Err(usage(
                    "invalid_input",
                    format!("{} line {}: expected an object with a string `text`", path.display(), n + 1),
                ));
            };
            let id = match v.get("id") {
                None | Some(Value::Null) => format!("{}:{}", path.display(), n + 1),
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(other) => {
                    return Err(usage(
                        "invalid_input",
                        format!("{} line {}: `id` must be a non-empty string, got {other}", path.display(), n + 1),
                    ))
                }
            };
            let meta = match v.get("metadata") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m.clone(),
                Some(other) => {
                    return Err(usage(
                        "invalid_input",
                        format!("{} line {}: `metadata` must be an object, got {other}", path.display(), n + 1),
                    ))
                }
            };
            chunked(id, text, meta, &mut items);
        }
    }
    let n = items.len();
    let ids: Vec<String> = items.iter().map(|(id, _, _)| id.clone()).collect();
    let (tokens, cost) = store_items(&b, items).await?;
    let total = b.store.count().await.map_err(store_error)?;
    if a.common.json {
        crate::outln!(
            "{}",
            json!({"added": n, "ids": ids, "tokens": tokens, "cost_usd": cost, "count": total,
                   "store": crate::lens::mask_uri(&b.uri), "embedder": b.embedder.name()})
        );
    } else {
        crate::outln!(
            "added {n} memor{} to {} ({} in all; embedder {}, {tokens} tokens, ${cost:.6})",
            if n == 1 { "y" } else { "ies" },
            crate::lens::mask_uri(&b.uri),
            total,
            b.embedder.name()
        );
    }
    Ok(EXIT_OK)
}

async fn search(a: SearchArgs, cfg: &Config) -> Result<u8, CliError> {
    if a.k == 0 || a.k > 10_000 {
        return Err(usage("invalid_argument", "-k must be from 1 to 10000"));
    }
    if a.min_score.is_some_and(|m| !(-1.0..=1.0).contains(&m)) {
        return Err(usage("invalid_argument", "--min-score must be from -1 to 1"));
    }
    let b = command_backend(&a.common, cfg)?;
    b.embedder.preflight().map_err(|e| CliError::config(format!("[memory] embedder: {e}")))?;
    let embedded = b.embedder.embed(std::slice::from_ref(&a.query)).await.map_err(embed_error)?;
    let Some(embedding) = embedded.vectors.into_iter().next() else {
        return Err(embed_error("no vector for the query"));
    };
    let mut q = VectorQuery::new(embedding, a.k);
    q.filter = filter_of(&a.filter)?;
    q.min_score = a.min_score;
    let hits = b.store.query(&q).await.map_err(store_error)?;
    if a.common.json {
        let results: Vec<Value> = hits
            .iter()
            .map(|h| json!({"id": h.record.id, "score": h.score, "text": h.record.text, "metadata": h.record.metadata}))
            .collect();
        crate::outln!("{}", json!({"query": a.query, "results": results, "cost_usd": embedded.cost_usd}));
        return Ok(EXIT_OK);
    }
    if hits.is_empty() {
        crate::outln!("no memories found");
    }
    for h in &hits {
        let text: String = h.record.text.chars().take(200).collect::<String>().replace('\n', " ");
        let more = if h.record.text.chars().count() > 200 { "…" } else { "" };
        crate::outln!("{:.4}  {}  {text}{more}", h.score, h.record.id);
    }
    Ok(EXIT_OK)
}

async fn stats(a: CommonArgs, cfg: &Config) -> Result<u8, CliError> {
    let b = command_backend(&a, cfg)?;
    let n = b.store.count().await.map_err(store_error)?;
    let dim = b.embedder.dimension();
    if a.json {
        crate::outln!(
            "{}",
            json!({"count": n, "store": crate::lens::mask_uri(&b.uri), "embedder": b.embedder.name(), "dimension": dim})
        );
    } else {
        crate::outln!("memories: {n}");
        crate::outln!("store:    {}", crate::lens::mask_uri(&b.uri));
        crate::outln!(
            "embedder: {}{}",
            b.embedder.name(),
            dim.map(|d| format!(" (dimension {d})")).unwrap_or_default()
        );
    }
    Ok(EXIT_OK)
}

async fn delete(a: DeleteArgs, cfg: &Config) -> Result<u8, CliError> {
    let what = match (a.ids.is_empty(), a.filter.is_empty()) {
        (true, true) => {
            return Err(usage("invalid_argument", "nothing to delete: give ids or --where KEY=VALUE"));
        }
        (false, false) => return Err(usage("invalid_argument", "give ids or --where, not both")),
        (false, true) => MemoryDelete::Ids(a.ids.clone()),
        (true, false) => MemoryDelete::Filter(filter_of(&a.filter)?),
    };
    let b = command_backend(&a.common, cfg)?;
    let n = b.store.delete(&what).await.map_err(store_error)?;
    if a.common.json {
        crate::outln!("{}", json!({"deleted": n}));
    } else {
        crate::outln!("deleted {n} memor{}", if n == 1 { "y" } else { "ies" });
    }
    Ok(EXIT_OK)
}
