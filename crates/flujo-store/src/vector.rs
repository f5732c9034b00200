//! Vector stores without a database (SPEC §11): [`NullVectorStore`] (memory off: keeps nothing, finds
//! nothing) and [`MemoryVectorStore`] (exact cosine over every record, in this process).

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use flujo_core::memory::rank;
use flujo_core::{cosine, MemoryDelete, MemoryRecord, ScoredMemory, StoreError, VectorQuery, VectorStore};
use serde_json::{Map, Value};

/// Keeps nothing: adds are accepted and dropped, queries find nothing (the store when memory is off).
#[derive(Debug, Default)]
pub struct NullVectorStore;

#[async_trait]
impl VectorStore for NullVectorStore {
    async fn add(&self, _: &[MemoryRecord]) -> Result<(), StoreError> {
        Ok(())
    }
    async fn query(&self, _: &VectorQuery) -> Result<Vec<ScoredMemory>, StoreError> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: &MemoryDelete) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn count(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn describe(&self) -> String {
        "null".to_owned()
    }
}

/// Records kept in this process, queried by exact cosine similarity over all of them (a flat index: one contiguous `f32` array with the norms).
#[derive(Debug, Default)]
pub struct MemoryVectorStore {
    index: RwLock<FlatIndex<String>>,
}

impl MemoryVectorStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Refuses a batch whose dimensions differ from each other or from `existing` (the store's dimension).
pub(crate) fn check_dimensions(existing: Option<usize>, records: &[MemoryRecord]) -> Result<(), StoreError> {
    let mut dim = existing;
    for r in records {
        if r.embedding.is_empty() {
            return Err(StoreError::Unavailable(format!("memory '{}' has an empty embedding", r.id)));
        }
        if r.embedding.iter().any(|x| !x.is_finite()) {
            return Err(StoreError::Unavailable(format!("memory '{}' has a non-finite value in its embedding", r.id)));
        }
        match dim {
            Some(d) if d != r.embedding.len() => {
                return Err(StoreError::Unavailable(format!(
                    "memory '{}' has dimension {}, the store's is {d}",
                    r.id,
                    r.embedding.len()
                )))
            }
            _ => dim = Some(r.embedding.len()),
        }
    }
    Ok(())
}

/// Refuses a query whose embedding has another dimension than the store's `dim`.
pub(crate) fn check_query_dimension(dim: usize, query: &VectorQuery) -> Result<(), StoreError> {
    if query.embedding.len() == dim {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "the query embedding has dimension {}, the store's is {dim} (was the store filled by another embedder?)",
            query.embedding.len()
        )))
    }
}

/// The best `query.k` of `records` (exact cosine), as every store must answer.
#[allow(dead_code)]
pub(crate) fn exact_search<'a>(
    records: impl Iterator<Item = &'a MemoryRecord>,
    query: &VectorQuery,
) -> Vec<ScoredMemory> {
    let mut hits: Vec<ScoredMemory> = records
        .filter(|r| query.matches(&r.metadata))
        .map(|r| (r, cosine(&r.embedding, &query.embedding)))
        .filter(|(_, s)| query.min_score.is_none_or(|m| *s >= m))
        .map(|(r, score)| ScoredMemory::new(r.clone(), score))
        .collect();
    rank(&mut hits);
    hits.truncate(query.k);
    hits
}

/// An exact nearest-neighbour index: every embedding in one contiguous `f32` array with its norm, the ids and
/// metadata beside it, and a payload per record (the text, for stores that keep it in memory). A query scores
/// every record (one pass over the array, which the compiler vectorizes) and selects the best `k` without
/// sorting the rest; at 100 000 vectors of dimension 384 that is a few milliseconds.
#[derive(Debug)]
pub(crate) struct FlatIndex<P> {
    dim: Option<usize>,
    data: Vec<f32>,
    norms: Vec<f32>,
    ids: Vec<String>,
    metadata: Vec<Map<String, Value>>,
    payload: Vec<P>,
    pos: HashMap<String, usize>,
}

impl<P> Default for FlatIndex<P> {
    fn default() -> Self {
        FlatIndex {
            dim: None,
            data: Vec::new(),
            norms: Vec::new(),
            ids: Vec::new(),
            metadata: Vec::new(),
            payload: Vec::new(),
            pos: HashMap::new(),
        }
    }
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators: the loop vectorizes without -ffast-math.
    let mut acc = [0.0f32; 8];
    let (ca, ra) = a.split_at(a.len() - a.len() % 8);
    let (cb, rb) = b.split_at(ca.len());
    for (x, y) in ca.chunks_exact(8).zip(cb.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

impl<P> FlatIndex<P> {
    /// How many records.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The dimension of the records (None when empty).
    pub(crate) fn dimension(&self) -> Option<usize> {
        if self.ids.is_empty() {
            None
        } else {
            self.dim
        }
    }

    /// The dimension a batch must have: the store's, unless the batch replaces every record there is.
    pub(crate) fn dimension_for(&self, records: &[MemoryRecord]) -> Option<usize> {
        let replaced = records.iter().filter(|r| self.pos.contains_key(&r.id)).count();
        self.dimension().filter(|_| self.len() > replaced)
    }

    /// Adds or replaces a record (its dimension already checked).
    pub(crate) fn upsert(&mut self, id: &str, embedding: &[f32], metadata: Map<String, Value>, payload: P) {
        if self.dim != Some(embedding.len()) {
            if self.dimension_for_len(embedding.len()) {
                // Every existing record is being replaced by one of a new dimension: start again.
                *self = FlatIndex::default();
            }
            self.dim = Some(embedding.len());
        }
        match self.pos.get(id) {
            Some(&i) => {
                let d = embedding.len();
                self.data[i * d..(i + 1) * d].copy_from_slice(embedding);
                self.norms[i] = norm(embedding);
                self.metadata[i] = metadata;
                self.payload[i] = payload;
            }
            None => {
                self.pos.insert(id.to_owned(), self.ids.len());
                self.data.extend_from_slice(embedding);
                self.norms.push(norm(embedding));
                self.ids.push(id.to_owned());
                self.metadata.push(metadata);
                self.payload.push(payload);
            }
        }
    }

    fn dimension_for_len(&self, len: usize) -> bool {
        self.dim.is_some_and(|d| d != len)
    }

    /// Removes a record; whether it was there.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let Some(i) = self.pos.remove(id) else { return false };
        let last = self.ids.len() - 1;
        let d = self.dim.unwrap_or(0);
        if i != last {
            self.data.copy_within(last * d..(last + 1) * d, i * d);
            if let Some(moved) = self.pos.get_mut(&self.ids[last]) {
                *moved = i;
            }
        }
        self.data.truncate(last * d);
        self.norms.swap_remove(i);
        self.ids.swap_remove(i);
        self.metadata.swap_remove(i);
        self.payload.swap_remove(i);
        true
    }

    /// The ids of the records whose metadata matches `filter`.
    pub(crate) fn matching(&self, filter: &Map<String, Value>) -> Vec<String> {
        self.ids
            .iter()
            .zip(&self.metadata)
            .filter(|(_, m)| filter.iter().all(|(k, v)| m.get(k) == Some(v)))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The best `query.k` records (positions and scores), best first, ties by id.
    pub(crate) fn search(&self, query: &VectorQuery) -> Result<Vec<(usize, f32)>, StoreError> {
        let Some(d) = self.dimension() else { return Ok(Vec::new()) };
        check_query_dimension(d, query)?;
        if query.k == 0 {
            return Ok(Vec::new());
        }
        let qn = norm(&query.embedding);
        let mut hits: Vec<(usize, f32)> = (0..self.ids.len())
            .filter(|&i| query.filter.is_empty() || query.matches(&self.metadata[i]))
            .map(|i| {
                let n = self.norms[i];
                let score = if n == 0.0 || qn == 0.0 {
                    0.0
                } else {
                    dot(&self.data[i * d..(i + 1) * d], &query.embedding) / (n * qn)
                };
                (i, score)
            })
            .filter(|(_, s)| query.min_score.is_none_or(|m| *s >= m))
            .collect();
        let order =
            |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then_with(|| self.ids[a.0].cmp(&self.ids[b.0]));
        if hits.len() > query.k {
            hits.select_nth_unstable_by(query.k, order);
            hits.truncate(query.k);
        }
        hits.sort_by(order);
        Ok(hits)
    }

    /// The id, embedding, metadata and payload of the record at `i`.
    pub(crate) fn get(&self, i: usize) -> (&str, &[f32], &Map<String, Value>, &P) {
        let d = self.dim.unwrap_or(0);
        (&self.ids[i], &self.data[i * d..(i + 1) * d], &self.metadata[i], &self.payload[i])
    }
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl VectorStore for MemoryVectorStore {
    async fn add(&self, records: &[MemoryRecord]) -> Result<(), StoreError> {
        let mut index = write(&self.index);
        check_dimensions(index.dimension_for(records), records)?;
        for r in records {
            index.upsert(&r.id, &r.embedding, r.metadata.clone(), r.text.clone());
        }
        Ok(())
    }

    async fn query(&self, query: &VectorQuery) -> Result<Vec<ScoredMemory>, StoreError> {
        let index = read(&self.index);
        Ok(index
            .search(query)?
            .into_iter()
            .map(|(i, score)| {
                let (id, embedding, metadata, text) = index.get(i);
                let mut record = MemoryRecord::new(id, text.clone(), embedding.to_vec());
                record.metadata = metadata.clone();
                ScoredMemory::new(record, score)
            })
            .collect())
    }

    async fn delete(&self, what: &MemoryDelete) -> Result<u64, StoreError> {
        let mut index = write(&self.index);
        let ids = match what {
            MemoryDelete::Ids(ids) => ids.clone(),
            MemoryDelete::Filter(filter) => index.matching(filter),
            other => return Err(StoreError::Unavailable(format!("this store cannot delete {other:?}"))),
        };
        Ok(ids.iter().filter(|id| index.remove(id)).count() as u64)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        Ok(read(&self.index).len() as u64)
    }

    fn describe(&self) -> String {
        "memory://".to_owned()
    }
}

#[cfg(all(test, feature = "test-suite"))]
mod tests {
    use std::sync::Arc;

    use crate::vector_conformance::{null_store_keeps_nothing, run_vector_checks};

    #[tokio::test]
    async fn memory_vector_store_passes_the_vector_suite() {
        let failed = run_vector_checks(|| async {
            Arc::new(super::MemoryVectorStore::new()) as Arc<dyn flujo_core::VectorStore>
        })
        .await;
        assert!(failed.is_empty(), "{failed:?}");
    }

    #[tokio::test]
    async fn null_vector_store_keeps_nothing() {
        null_store_keeps_nothing(Arc::new(super::NullVectorStore)).await.unwrap_or_else(|e| panic!("{e}"));
    }
}
