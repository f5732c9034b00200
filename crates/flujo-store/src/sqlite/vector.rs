//! The SQLite vector store: memories in the `memories` table of a Flujo database (by default the state file
//! itself), embeddings as little-endian `f32` blobs, searched exactly.
//!
//! Queries never scan the table: the store keeps every embedding, id and metadata in a flat index in
//! memory (loaded at the first use) and reads only the texts of the results from SQLite. Writes go to SQLite
//! first, in one transaction per batch, then to the index. Another process writing the same file is noticed
//! through the `memories_version` counter (which every write transaction increments) before each operation, and the index is loaded again. Every operation runs
//! on tokio's blocking pool, never on an async thread.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use flujo_core::{MemoryDelete, MemoryRecord, ScoredMemory, StoreError, VectorQuery, VectorStore};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};

use super::schema::{self, sql_error, Location};
use super::Durability;
use crate::vector::{check_dimensions, FlatIndex};

/// Memories in a SQLite file (see the module docs).
pub struct SqliteVectorStore {
    inner: Arc<Inner>,
    describe: String,
}

struct Inner {
    conn: Mutex<Connection>,
    index: RwLock<Loaded>,
}

#[derive(Default)]
struct Loaded {
    /// `memories_version` the index reflects (None: not loaded yet, or stale).
    version: Option<i64>,
    index: FlatIndex<()>,
}

impl std::fmt::Debug for SqliteVectorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteVectorStore").field("describe", &self.describe).finish()
    }
}

impl SqliteVectorStore {
    /// Opens (creating and migrating when needed) the Flujo database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let conn = schema::open_writer(Location::File(&path), Durability::Normal)?;
        Ok(Self::from_connection(conn, format!("sqlite:///{}", path.display())))
    }

    /// A store in a private in-memory database (tests).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = schema::open_writer(Location::Memory, Durability::Normal)?;
        Ok(Self::from_connection(conn, "sqlite://:memory:".to_owned()))
    }

    fn from_connection(conn: Connection, describe: String) -> Self {
        SqliteVectorStore {
            inner: Arc::new(Inner { conn: Mutex::new(conn), index: RwLock::new(Loaded::default()) }),
            describe,
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Unavailable(format!("the vector store's worker failed: {e}")))?
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn current_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("SELECT version FROM memories_version", [], |r| r.get(0))
        .map_err(|e| sql_error("cannot read the memories version", e))
}

/// Increments the version in a write transaction; `expected` is what the index reflects. Returns the
/// version the index will reflect after applying this transaction's changes (None when another
/// connection's writes came in between: the next operation reloads).
fn bump_version(conn: &Connection, expected: Option<i64>) -> Result<Option<i64>, StoreError> {
    let v: i64 = conn
        .query_row("UPDATE memories_version SET version = version + 1 RETURNING version", [], |r| r.get(0))
        .map_err(|e| sql_error("cannot update the memories version", e))?;
    Ok(expected.filter(|e| e + 1 == v).map(|_| v))
}

fn meta_from(text: &str) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("memory metadata is not a JSON object: {e}")))
}

impl Inner {
    /// Makes the index current (loading it when another connection changed the file), under the connection.
    fn sync(&self, conn: &Connection) -> Result<(), StoreError> {
        let version = current_version(conn)?;
        if self.index.read().unwrap_or_else(|p| p.into_inner()).version == Some(version) {
            return Ok(());
        }
        let mut index = FlatIndex::default();
        let mut stmt = conn
            .prepare("SELECT id, embedding, metadata FROM memories ORDER BY seq")
            .map_err(|e| sql_error("cannot read memories", e))?;
        let mut rows = stmt.query([]).map_err(|e| sql_error("cannot read memories", e))?;
        while let Some(row) = rows.next().map_err(|e| sql_error("cannot read memories", e))? {
            let id: String = row.get(0).map_err(|e| sql_error("memory id", e))?;
            let blob: Vec<u8> = row.get(1).map_err(|e| sql_error("memory embedding", e))?;
            let meta: String = row.get(2).map_err(|e| sql_error("memory metadata", e))?;
            index.upsert(&id, &from_blob(&blob), meta_from(&meta)?, ());
        }
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = Loaded { version: Some(version), index };
        Ok(())
    }

    fn add(&self, records: &[MemoryRecord]) -> Result<(), StoreError> {
        let mut conn = lock(&self.conn);
        self.sync(&conn)?;
        check_dimensions(self.index.read().unwrap_or_else(|p| p.into_inner()).index.dimension_for(records), records)?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| sql_error("cannot start adding memories", e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO memories (id, text, embedding, metadata, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (id) DO UPDATE SET text = excluded.text, embedding = excluded.embedding,
                                                    metadata = excluded.metadata",
                )
                .map_err(|e| sql_error("cannot add memories", e))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            for r in records {
                let meta = serde_json::to_string(&r.metadata)
                    .map_err(|e| StoreError::Unavailable(format!("memory '{}' metadata: {e}", r.id)))?;
                stmt.execute(params![r.id, r.text, to_blob(&r.embedding), meta, now])
                    .map_err(|e| sql_error("cannot add a memory", e))?;
            }
        }
        let expected = self.index.read().unwrap_or_else(|p| p.into_inner()).version;
        let next = bump_version(&tx, expected)?;
        tx.commit().map_err(|e| sql_error("cannot commit memories", e))?;
        let mut loaded = self.index.write().unwrap_or_else(|p| p.into_inner());
        loaded.version = next;
        for r in records {
            loaded.index.upsert(&r.id, &r.embedding, r.metadata.clone(), ());
        }
        Ok(())
    }

    fn query(&self, query: &VectorQuery) -> Result<Vec<ScoredMemory>, StoreError> {
        let conn = lock(&self.conn);
        self.sync(&conn)?;
        let loaded = self.index.read().unwrap_or_else(|p| p.into_inner());
        let hits = loaded.index.search(query)?;
        let mut stmt = conn
            .prepare_cached("SELECT text FROM memories WHERE id = ?1")
            .map_err(|e| sql_error("cannot read a memory", e))?;
        let mut out = Vec::with_capacity(hits.len());
        for (i, score) in hits {
            let (id, embedding, metadata, ()) = loaded.index.get(i);
            let text: Option<String> =
                stmt.query_row([id], |r| r.get(0)).optional().map_err(|e| sql_error("cannot read a memory", e))?;
            let Some(text) = text else { continue };
            let mut record = MemoryRecord::new(id, text, embedding.to_vec());
            record.metadata = metadata.clone();
            out.push(ScoredMemory::new(record, score));
        }
        Ok(out)
    }

    fn delete(&self, what: &MemoryDelete) -> Result<u64, StoreError> {
        let mut conn = lock(&self.conn);
        self.sync(&conn)?;
        let ids = match what {
            MemoryDelete::Ids(ids) => ids.clone(),
            MemoryDelete::Filter(filter) => self.index.read().unwrap_or_else(|p| p.into_inner()).index.matching(filter),
            other => return Err(StoreError::Unavailable(format!("this store cannot delete {other:?}"))),
        };
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| sql_error("cannot start deleting memories", e))?;
        let mut n = 0u64;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM memories WHERE id = ?1")
                .map_err(|e| sql_error("cannot delete memories", e))?;
            for id in &ids {
                n += stmt.execute([id]).map_err(|e| sql_error("cannot delete a memory", e))? as u64;
            }
        }
        let expected = self.index.read().unwrap_or_else(|p| p.into_inner()).version;
        let next = bump_version(&tx, expected)?;
        tx.commit().map_err(|e| sql_error("cannot commit the delete", e))?;
        let mut loaded = self.index.write().unwrap_or_else(|p| p.into_inner());
        loaded.version = next;
        for id in &ids {
            loaded.index.remove(id);
        }
        Ok(n)
    }

    fn count(&self) -> Result<u64, StoreError> {
        let conn = lock(&self.conn);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM memories", [], |r| r.get(0))
            .map_err(|e| sql_error("cannot count memories", e))?;
        Ok(n.max(0) as u64)
    }
}

#[async_trait]
impl VectorStore for SqliteVectorStore {
    async fn add(&self, records: &[MemoryRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let records = records.to_vec();
        self.blocking(move |inner| inner.add(&records)).await
    }

    async fn query(&self, query: &VectorQuery) -> Result<Vec<ScoredMemory>, StoreError> {
        let query = query.clone();
        self.blocking(move |inner| inner.query(&query)).await
    }

    async fn delete(&self, what: &MemoryDelete) -> Result<u64, StoreError> {
        let what = what.clone();
        self.blocking(move |inner| inner.delete(&what)).await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.blocking(|inner| inner.count()).await
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(all(test, feature = "test-suite"))]
mod tests {
    use std::sync::Arc;

    use flujo_core::{MemoryRecord, VectorQuery, VectorStore};
    use serde_json::json;

    use super::SqliteVectorStore;
    use crate::vector_conformance::{run_vector_checks, vectors};

    #[tokio::test]
    async fn sqlite_vector_store_passes_the_vector_suite() {
        let failed = run_vector_checks(|| async {
            Arc::new(SqliteVectorStore::open_in_memory().unwrap()) as Arc<dyn VectorStore>
        })
        .await;
        assert!(failed.is_empty(), "{failed:?}");
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        let failed = run_vector_checks(|| {
            let path = dir.path().join(format!("v{}.db", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
            async move { Arc::new(SqliteVectorStore::open(path).unwrap()) as Arc<dyn VectorStore> }
        })
        .await;
        assert!(failed.is_empty(), "{failed:?}");
    }

    #[tokio::test]
    async fn memories_persist_and_a_second_connection_sees_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let vs = vectors(50, 16, 3);
        let a = SqliteVectorStore::open(&path).unwrap();
        let records: Vec<MemoryRecord> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| MemoryRecord::new(format!("r{i}"), format!("text {i}"), v.clone()).with_meta("i", json!(i)))
            .collect();
        a.add(&records).await.unwrap();
        let b = SqliteVectorStore::open(&path).unwrap();
        let hit = b.query(&VectorQuery::new(vs[7].clone(), 1)).await.unwrap();
        assert_eq!(hit[0].record, records[7]);
        // `a` changes the file after `b` loaded its index: `b` notices.
        a.delete(&flujo_core::MemoryDelete::Ids(vec!["r7".into()])).await.unwrap();
        let hit = b.query(&VectorQuery::new(vs[7].clone(), 1)).await.unwrap();
        assert_ne!(hit[0].record.id, "r7");
        assert_eq!(b.count().await.unwrap(), 49);
        drop((a, b));
        let c = SqliteVectorStore::open(&path).unwrap();
        assert_eq!(c.count().await.unwrap(), 49);
        assert_eq!(c.query(&VectorQuery::new(vs[8].clone(), 1)).await.unwrap()[0].record, records[8]);
    }
}
