//! Memory for retrieval (SPEC §11): the records a vector store keeps, the queries it answers, and the
//! [`VectorStore`] and [`Embedder`] traits. No database and no network here: stores live in `flujo-store`,
//! embedders in `flujo-llm`.
//!
//! Scores are cosine similarities (−1 to 1, higher is closer). A query gives an embedding (or text, which the
//! caller embeds first), `k`, an optional metadata filter (every key must equal the given JSON value) and an
//! optional minimum score; results come best first, ties broken by id so that every store answers the same.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::StoreError;

/// One remembered piece of text with its embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemoryRecord {
    /// Unique within the store; adding a record with an existing id replaces it.
    pub id: String,
    /// The text.
    pub text: String,
    /// Its embedding (every record of a store has the same dimension).
    pub embedding: Vec<f32>,
    /// Anything to filter on or show: run id, step, pipeline, source file, …
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl MemoryRecord {
    /// A record of `text` with `embedding` and no metadata.
    pub fn new(id: impl Into<String>, text: impl Into<String>, embedding: Vec<f32>) -> Self {
        MemoryRecord { id: id.into(), text: text.into(), embedding, metadata: Map::new() }
    }

    /// The same record with `key` = `value` in its metadata.
    pub fn with_meta(mut self, key: impl Into<String>, value: Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }
}

/// A pipeline's own memory settings (the blueprint's `memory:`): which step outputs to index and how to
/// chunk them. Where memories are kept, and (by default) the embedder, are the deployment's (`[memory]` in
/// `flujo.toml`, or the runtime builder).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemorySettings {
    /// Which outputs are indexed: `all` (every completed leaf step) or step names (at any depth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<MemoryIndex>,
    /// Longest chunk, in characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<usize>,
    /// Characters shared by neighbouring chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_overlap: Option<usize>,
    /// The embedder the pipeline expects (`mock:hash`, `openai:text-embedding-3-small`), used when the
    /// deployment names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<String>,
}

/// `memory.index`: every output, or the named steps'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryIndex {
    /// Every completed leaf step.
    All,
    /// The steps with these names.
    Steps(Vec<String>),
}

/// A nearest-neighbour query.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct VectorQuery {
    /// The query's embedding.
    pub embedding: Vec<f32>,
    /// How many results at most.
    pub k: usize,
    /// Only records whose metadata has each of these keys with exactly this value.
    pub filter: Map<String, Value>,
    /// Only results scoring at least this.
    pub min_score: Option<f32>,
}

impl VectorQuery {
    /// The `k` records closest to `embedding`.
    pub fn new(embedding: Vec<f32>, k: usize) -> Self {
        VectorQuery { embedding, k, filter: Map::new(), min_score: None }
    }

    /// Only records whose metadata has `key` = `value`.
    pub fn with_filter(mut self, key: impl Into<String>, value: Value) -> Self {
        self.filter.insert(key.into(), value);
        self
    }

    /// Only results scoring at least `min`.
    pub fn with_min_score(mut self, min: f32) -> Self {
        self.min_score = Some(min);
        self
    }

    /// Whether `metadata` passes the filter.
    pub fn matches(&self, metadata: &Map<String, Value>) -> bool {
        self.filter.iter().all(|(k, v)| metadata.get(k) == Some(v))
    }
}

/// A query result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScoredMemory {
    /// The record.
    pub record: MemoryRecord,
    /// Its cosine similarity to the query.
    pub score: f32,
}

impl ScoredMemory {
    /// `record` with `score`.
    pub fn new(record: MemoryRecord, score: f32) -> Self {
        ScoredMemory { record, score }
    }
}

/// What a delete removes.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MemoryDelete {
    /// These ids.
    Ids(Vec<String>),
    /// Every record whose metadata matches (as [`VectorQuery::filter`]).
    Filter(Map<String, Value>),
}

/// The cosine similarity of two vectors of the same length (0 when either is all zeros or the lengths
/// differ).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// Orders results best first, ties by id (the order every store must give).
pub fn rank(results: &mut [ScoredMemory]) {
    results.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.record.id.cmp(&b.record.id)));
}

/// A store of [`MemoryRecord`]s answering nearest-neighbour queries.
#[async_trait]
pub trait VectorStore: Send + Sync {
    /// Adds the records; a record whose id exists replaces it. All records of a store share one dimension:
    /// another is refused (`StoreError::Unavailable` naming both) and nothing of the batch is written.
    async fn add(&self, records: &[MemoryRecord]) -> Result<(), StoreError>;
    /// The `query.k` records closest to the query that pass its filter and minimum score, best first.
    async fn query(&self, query: &VectorQuery) -> Result<Vec<ScoredMemory>, StoreError>;
    /// Removes records; returns how many.
    async fn delete(&self, what: &MemoryDelete) -> Result<u64, StoreError>;
    /// How many records there are.
    async fn count(&self) -> Result<u64, StoreError>;
    /// A description (`memory://`, `sqlite:///…`, `null`).
    fn describe(&self) -> String;
}

/// What one [`Embedder::embed`] call returns: one vector per text, and what the call used.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Embeddings {
    /// The embeddings, in the order of the texts.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the provider counted (0 for offline embedders).
    pub tokens: u64,
    /// What the call cost, in USD (0 for offline embedders).
    pub cost_usd: f64,
}

impl Embeddings {
    /// `vectors`, free of charge.
    pub fn new(vectors: Vec<Vec<f32>>) -> Self {
        Embeddings { vectors, tokens: 0, cost_usd: 0.0 }
    }

    /// The same embeddings with their usage.
    pub fn with_usage(mut self, tokens: u64, cost_usd: f64) -> Self {
        self.tokens = tokens;
        self.cost_usd = cost_usd;
        self
    }
}

/// Turns texts into embeddings.
///
/// Callers that spend a run's budget reserve [`Embedder::estimate`] before [`Embedder::embed`] and reconcile
/// to the reported usage afterwards (Reserve → Execute → Reconcile, SPEC §8), exactly as for chat models.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// The embeddings of `texts`, in order, with the usage of the call(s).
    async fn embed(&self, texts: &[String]) -> Result<Embeddings, crate::SkillError>;
    /// The dimension of the embeddings, when known before the first call.
    fn dimension(&self) -> Option<usize>;
    /// The embedder's name (`mock:hash`, `openai:text-embedding-3-small`).
    fn name(&self) -> &str;
    /// An upper bound of what embedding `texts` may spend, or `None` when it is free or unknown.
    fn estimate(&self, texts: &[String]) -> Option<crate::Usage> {
        let _ = texts;
        None
    }
    /// Checks made before any call and before reserving budget (e.g. a model without a price under strict
    /// pricing: `Interrupt::PricingNotConfigured`).
    fn preflight(&self) -> Result<(), crate::error::Interrupt> {
        Ok(())
    }
}

/// Splits `text` into chunks of at most `size` characters, each starting `size - overlap` characters after
/// the previous one, preferring to end a chunk at a paragraph, sentence or word boundary in its last third, and starting the next chunk at a word.
/// Text of at most `size` characters is one chunk; blank text gives none. `size` is at least 1 and `overlap`
/// at most `size / 2`.
pub fn chunk_text(text: &str, size: usize, overlap: usize) -> Vec<String> {
    let size = size.max(1);
    let overlap = overlap.min(size / 2);
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    if text.trim().is_empty() {
        return Vec::new();
    }
    if chars.len() <= size {
        return vec![text.trim().to_owned()];
    }
    let byte_at = |i: usize| chars.get(i).map_or(text.len(), |(b, _)| *b);
    let mut out = Vec::new();
    let mut start = 0usize;
    while start < chars.len() {
        let hard_end = (start + size).min(chars.len());
        let mut end = hard_end;
        if hard_end < chars.len() {
            let floor = start + size - size / 3;
            let boundary = |pred: &dyn Fn(usize) -> bool| (floor..hard_end).rev().find(|&i| pred(i)).map(|i| i + 1);
            let is = |i: usize, c: char| chars.get(i).is_some_and(|(_, x)| *x == c);
            end = boundary(&|i| is(i, '\n') && i > 0 && is(i - 1, '\n'))
                .or_else(|| {
                    boundary(&|i| {
                        matches!(chars[i].1, '.' | '!' | '?')
                            && chars.get(i + 1).is_some_and(|(_, c)| c.is_whitespace())
                    })
                })
                .or_else(|| boundary(&|i| chars[i].1.is_whitespace()))
                .unwrap_or(hard_end);
        }
        let piece = text[byte_at(start)..byte_at(end)].trim();
        if !piece.is_empty() {
            out.push(piece.to_owned());
        }
        if end >= chars.len() {
            break;
        }
        let mut next = end.saturating_sub(overlap).max(start + 1);
        // Start at a word when one begins within the overlap.
        if let Some(w) = (next..end).find(|&i| i > 0 && chars[i - 1].1.is_whitespace() && !chars[i].1.is_whitespace()) {
            next = w;
        }
        start = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_text_with_overlap_and_prefer_boundaries() {
        assert!(chunk_text("  \n ", 10, 2).is_empty());
        assert_eq!(chunk_text("short text", 100, 10), ["short text"]);
        let text = "One sentence here. Another sentence follows it. A third one ends the paragraph.\n\nNew paragraph with more words in it.";
        let chunks = chunk_text(text, 50, 12);
        assert!(chunks.len() >= 3, "{chunks:?}");
        assert!(chunks.iter().all(|c| c.chars().count() <= 50), "{chunks:?}");
        for c in &chunks {
            let at = text.find(c.as_str()).unwrap();
            assert!(at == 0 || text[..at].ends_with(char::is_whitespace), "{c:?} starts mid-word");
        }
        assert!(chunks[0].ends_with('.'), "ends at a sentence: {chunks:?}");
        // Every word of the text is in some chunk.
        for w in text.split_whitespace() {
            assert!(chunks.iter().any(|c| c.contains(w)), "{w} lost: {chunks:?}");
        }
        // Multi-byte text and no boundaries at all.
        let cjk = "日本語".repeat(50);
        let chunks = chunk_text(&cjk, 30, 5);
        assert!(chunks.iter().all(|c| c.chars().count() <= 30));
        assert_eq!(chunks[0].chars().count(), 30);
        assert_eq!(chunk_text(&"x".repeat(10), 3, 100).len(), 5, "overlap is capped at size/2");
    }

    #[test]
    fn cosine_basics() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-6);
        assert!((cosine(&[1.0, 1.0], &[-1.0, -1.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
    }
}
