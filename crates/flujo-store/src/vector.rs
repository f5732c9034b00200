//! Vector stores without a database (SPEC §11): [`NullVectorStore`] (memory off: keeps nothing, finds
//! nothing) and [`MemoryVectorStore`] (exact cosine over every record, in this process).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use flujo_core::memory::rank;
use flujo_core::{cosine, MemoryDelete, MemoryRecord, ScoredMemory, StoreError, VectorQuery, VectorStore};

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

/// Records in a map, queried by exact cosine similarity over all of them.
#[derive(Debug, Default)]
pub struct MemoryVectorStore {
    records: Mutex<BTreeMap<String, MemoryRecord>>,
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

/// The best `query.k` of `records` (exact cosine), as every store must answer.
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl VectorStore for MemoryVectorStore {
    async fn add(&self, records: &[MemoryRecord]) -> Result<(), StoreError> {
        let mut all = lock(&self.records);
        let existing = all.values().next().map(|r| r.embedding.len());
        // A batch that replaces every record may change the dimension only if nothing else remains.
        check_dimensions(
            existing.filter(|_| all.len() > records.iter().filter(|r| all.contains_key(&r.id)).count()),
            records,
        )?;
        for r in records {
            all.insert(r.id.clone(), r.clone());
        }
        Ok(())
    }

    async fn query(&self, query: &VectorQuery) -> Result<Vec<ScoredMemory>, StoreError> {
        Ok(exact_search(lock(&self.records).values(), query))
    }

    async fn delete(&self, what: &MemoryDelete) -> Result<u64, StoreError> {
        let mut all = lock(&self.records);
        let before = all.len();
        match what {
            MemoryDelete::Ids(ids) => {
                for id in ids {
                    all.remove(id);
                }
            }
            MemoryDelete::Filter(filter) => {
                all.retain(|_, r| !filter.iter().all(|(k, v)| r.metadata.get(k) == Some(v)));
            }
            other => return Err(StoreError::Unavailable(format!("this store cannot delete {other:?}"))),
        }
        Ok((before - all.len()) as u64)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        Ok(lock(&self.records).len() as u64)
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
