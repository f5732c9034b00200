//! Memory indexing (SPEC §11): the outputs of chosen steps are chunked, embedded and added to a vector store
//! as part of the step's own execution.
//!
//! Indexing happens after a step completes and **before its journal record is committed**, and the record
//! says what was indexed (`metadata.memory = {indexed, ids}` or `{error}`) and includes the embedding's tokens
//! and cost. So the journal is the proof: a resumed run replays the step's record and never indexes it again,
//! and a crash between indexing and the commit re-runs the step, whose records get the same ids
//! (`RUN/PATH#CHUNK`) and replace themselves — nothing is indexed twice. Replays that only verify
//! (`lens replay`) never index.
//!
//! The embedding reserves the run's budget first, like a model call; a reservation that does not fit skips
//! the indexing (noted in the metadata) instead of overspending. An embedder or store failure never fails the
//! step: the output is already correct; the failure is recorded in the metadata and logged.
//!
//! A pipeline's own `memory:` settings (which steps, chunking) override the builder's
//! ([`MemoryIndexing::apply`]); the store and embedder are always the builder's.

use std::sync::Arc;

use flujo_core::{chunk_text, Embedder, MemoryRecord, Step, TokenUsage, Usage, Value, VectorStore};
use serde_json::{json, Map};

/// Which step outputs are indexed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IndexSteps {
    /// None (memory skills only).
    #[default]
    None,
    /// Every completed leaf step (composite outputs repeat their children's).
    All,
    /// The steps with these names (leaf or composite).
    Named(Vec<String>),
}

/// What [`FlujoRuntimeBuilder::memory`](crate::FlujoRuntimeBuilder::memory) indexes, and where.
#[derive(Clone)]
#[non_exhaustive]
pub struct MemoryIndexing {
    /// The vector store.
    pub store: Arc<dyn VectorStore>,
    /// The embedder.
    pub embedder: Arc<dyn Embedder>,
    /// Which steps.
    pub steps: IndexSteps,
    /// Longest chunk, in characters.
    pub chunk_size: usize,
    /// Characters shared by neighbouring chunks.
    pub chunk_overlap: usize,
    /// The pipeline's name (set by the builder), for the records' metadata.
    pub(crate) pipeline: Arc<str>,
}

impl std::fmt::Debug for MemoryIndexing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryIndexing")
            .field("store", &self.store.describe())
            .field("embedder", &self.embedder.name())
            .field("steps", &self.steps)
            .field("chunk_size", &self.chunk_size)
            .field("chunk_overlap", &self.chunk_overlap)
            .finish()
    }
}

/// What indexing one output did, for the step's record.
pub(crate) struct Indexed {
    pub(crate) metadata: Value,
    pub(crate) tokens: TokenUsage,
    pub(crate) cost_usd: f64,
}

impl MemoryIndexing {
    /// Indexes `steps` of `store` with `embedder`, in chunks of 1000 characters overlapping by 100.
    pub fn new(store: Arc<dyn VectorStore>, embedder: Arc<dyn Embedder>, steps: IndexSteps) -> Self {
        MemoryIndexing { store, embedder, steps, chunk_size: 1000, chunk_overlap: 100, pipeline: Arc::from("") }
    }

    /// The same indexing with another chunking.
    pub fn with_chunking(mut self, size: usize, overlap: usize) -> Self {
        self.chunk_size = size.max(1);
        self.chunk_overlap = overlap;
        self
    }

    /// The pipeline's own settings (a blueprint's `memory:`) take precedence: its `index` and chunking.
    pub fn apply(&mut self, own: &flujo_core::MemorySettings) {
        match &own.index {
            Some(flujo_core::MemoryIndex::All) => self.steps = IndexSteps::All,
            Some(flujo_core::MemoryIndex::Steps(names)) => self.steps = IndexSteps::Named(names.clone()),
            _ => {}
        }
        if let Some(size) = own.chunk_size {
            self.chunk_size = size.max(1);
        }
        if let Some(overlap) = own.chunk_overlap {
            self.chunk_overlap = overlap;
        }
    }

    pub(crate) fn selects(&self, step: &Step) -> bool {
        match &self.steps {
            IndexSteps::None => false,
            IndexSteps::All => !step.kind.is_composite(),
            IndexSteps::Named(names) => names.iter().any(|n| n == &step.name),
        }
    }

    /// Indexes one completed output (see the module docs); `None` when there is nothing to index.
    pub(crate) async fn index(
        &self,
        run: &crate::executor::RunState,
        step: &Step,
        path: &str,
        output: &Value,
    ) -> Option<Indexed> {
        let text = match output {
            Value::Null => return None,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let chunks = chunk_text(&text, self.chunk_size, self.chunk_overlap);
        if chunks.is_empty() {
            return None;
        }
        let failed = |why: String, tokens: TokenUsage, cost_usd: f64| {
            tracing::warn!(run_id = %run.run_id, path, step = %step.name, error = %why, "memory indexing failed");
            Some(Indexed { metadata: json!({"error": why}), tokens, cost_usd })
        };
        if let Err(interrupt) = self.embedder.preflight() {
            return failed(format!("not indexed: {interrupt}"), TokenUsage::default(), 0.0);
        }
        let reservation = match self.embedder.estimate(&chunks) {
            Some(planned) => match run.quota.reserve(planned) {
                Ok(r) => Some(r),
                Err(e) => {
                    return failed(
                        format!("not indexed: the budget does not cover it ({e})"),
                        TokenUsage::default(),
                        0.0,
                    )
                }
            },
            None => None,
        };
        let embedded = self.embedder.embed(&chunks).await;
        let (tokens, cost) = match &embedded {
            Ok(e) => (e.tokens, e.cost_usd),
            Err(e) => (e.tokens.total(), e.cost_usd),
        };
        let actual = Usage { cost_usd: cost, tokens };
        match reservation {
            Some(r) => run.quota.reconcile(r, actual),
            None => run.quota.record(actual),
        }
        let usage = TokenUsage::new(tokens, 0);
        let embedded = match embedded {
            Ok(e) if e.vectors.len() == chunks.len() => e,
            Ok(e) => {
                return failed(
                    format!("the embedder returned {} vectors for {} chunks", e.vectors.len(), chunks.len()),
                    usage,
                    cost,
                )
            }
            Err(e) => return failed(format!("embedding failed: {}", e.message), usage, cost),
        };
        let total = chunks.len();
        let records: Vec<MemoryRecord> = chunks
            .into_iter()
            .zip(embedded.vectors)
            .enumerate()
            .map(|(i, (text, embedding))| {
                let mut meta = Map::new();
                meta.insert("run_id".into(), json!(&*run.run_id));
                meta.insert("pipeline".into(), json!(&*self.pipeline));
                meta.insert("step".into(), json!(step.name));
                meta.insert("path".into(), json!(path));
                if total > 1 {
                    meta.insert("chunk".into(), json!(i));
                }
                let mut r = MemoryRecord::new(format!("{}/{path}#{i}", run.run_id), text, embedding);
                r.metadata = meta;
                r
            })
            .collect();
        if let Err(e) = self.store.add(&records).await {
            return failed(format!("{}: {e}", self.store.describe()), usage, cost);
        }
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        Some(Indexed { metadata: json!({"indexed": total, "ids": ids}), tokens: usage, cost_usd: cost })
    }
}
