//! The pgvector store (feature `postgres`): [`PostgresVectorStore`] keeps memories in a Postgres database with
//! the pgvector extension (0.5 or newer), beside or apart from the state store's tables.
//!
//! * **Tables.** `flujo_memory (id, text, embedding vector(D), metadata jsonb, created_at)` in the URI's
//!   `schema=` (default `public`), with a GIN index on `metadata` for filters and an HNSW index
//!   (`vector_cosine_ops`) on `embedding`. Its own versioned migrations (table `flujo_memory_schema`, which
//!   also records the dimension), independent from the state store's, so a server without pgvector still runs
//!   the state store. Opening runs `CREATE EXTENSION IF NOT EXISTS vector`; a server without pgvector is a
//!   [`StoreError::Unavailable`] saying so.
//! * **Dimension.** The embedding column is created untyped; the first add fixes `D` (the column becomes
//!   `vector(D)` and the HNSW index is built; pgvector indexes at most 2000 dimensions, more are searched
//!   exactly). A batch of another dimension is refused with the message every store gives
//!   (`check_dimensions`), nothing written — unless it replaces every record there is, as in the other
//!   stores. A query of another dimension is refused likewise.
//! * **Adds** are one `INSERT … SELECT FROM unnest(…) ON CONFLICT (id) DO UPDATE` per batch (one statement,
//!   hence one transaction; vectors travel in pgvector's binary format). In a batch, the last record of an id
//!   wins.
//! * **Queries are exact where it matters.** Scores are recomputed here from the returned embeddings with
//!   [`flujo_core::cosine`] and the candidates ranked as every store ranks them (best first, ties by id), so
//!   scores and zero vectors agree with the other stores (pgvector's `<=>` is NaN for a zero vector). The
//!   candidates (`k` + a small margin, for float differences at the boundary) come from
//!   - the HNSW index for unfiltered queries: approximate, with `hnsw.ef_search` at least the number of
//!     candidates (the URI's `ef_search=N`, default 100, set per connection; more per query with
//!     `SET LOCAL`, at most 1000), plus the records with a zero embedding, which the index leaves out (a
//!     partial index finds them);
//!   - an exact scan when the query has a metadata filter (pgvector 0.6 filters *after* the index scan, which
//!     could return fewer than `k` matches), when `k` is past 1000, or when the dimension is not indexed;
//!   - ids in order for a zero query vector (every score is 0).
//!
//!   With the HNSW index, a query may miss a true neighbour. How many it finds depends on the data: on
//!   clustered vectors (like real embeddings) the default finds all ten of the top 10 at 100 000 records; on
//!   uniform random vectors in 384 dimensions, the worst case, far fewer (flujo-bench, workload
//!   `vectors`); raise `ef_search` for more. Recall@10 ≥ 0.95 is tested on 10 000 random vectors.
//! * **Filters** are `metadata @> filter` (the GIN index) and, exactly, each key equal to its value (jsonb
//!   equality: `1` and `1.0` are equal there). Metadata comes back as jsonb keeps it (keys reordered).
//! * **Secrets.** As the state store: errors and [`VectorStore::describe`] never carry the password.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use flujo_core::{MemoryDelete, MemoryRecord, ScoredMemory, StoreError, VectorQuery, VectorStore};
use serde_json::{Map, Value};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, Row};

use super::config::PgConfig;
use super::{connect_error, pg_error, tls};
use crate::vector::{check_dimensions, check_query_dimension, exact_search};

/// The vector schema version this build reads and writes (table `flujo_memory_schema`).
pub const VECTOR_SCHEMA_VERSION: i32 = 1;

/// `VECTOR_MIGRATIONS[i]` upgrades version `i` to `i + 1`; `{s}` stands for the quoted schema name.
const VECTOR_MIGRATIONS: &[&str] = &[VECTOR_MIGRATION_1];

/// Version 1: the memories. `embedding` has no dimension until the first add (see `fix_dimension`).
const VECTOR_MIGRATION_1: &str = r#"
CREATE TABLE {s}.flujo_memory (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    text       TEXT             NOT NULL,
    embedding  vector           NOT NULL,
    metadata   JSONB            NOT NULL,
    created_at TIMESTAMPTZ      NOT NULL DEFAULT now()
);
CREATE INDEX flujo_memory_metadata ON {s}.flujo_memory USING gin (metadata jsonb_path_ops);
CREATE INDEX flujo_memory_zero ON {s}.flujo_memory (id) WHERE vector_norm(embedding) = 0;
"#;

/// HNSW graph parameters: neighbours per node and the candidate list while building.
const HNSW_M: u32 = 16;
const HNSW_EF_CONSTRUCTION: u32 = 64;

/// `hnsw.ef_search` of every connection unless the URI says `ef_search=N` (pgvector's default is 40);
/// queries needing more candidates raise it for their transaction.
pub const DEFAULT_EF_SEARCH: usize = 100;

/// pgvector's largest `hnsw.ef_search`; a query needing more candidates scans exactly.
const MAX_EF_SEARCH: usize = 1000;

/// pgvector's HNSW indexes at most this many dimensions.
const MAX_INDEXED_DIMENSION: usize = 2000;

/// Candidates fetched beyond `k`, so that a float difference between pgvector's distance and
/// [`flujo_core::cosine`] at the boundary cannot change the answer.
const MARGIN: usize = 4;

/// The lowest pgvector version with HNSW.
const MIN_PGVECTOR: (u32, u32) = (0, 5);

/// An embedding sent to Postgres in pgvector's binary format (`int16 dim, int16 0, float4 × dim`).
struct Embedding<'a>(&'a [f32]);

impl fmt::Debug for Embedding<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vector({})", self.0.len())
    }
}

impl ToSql for Embedding<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_i16(i16::try_from(self.0.len())?);
        out.put_i16(0);
        for x in self.0 {
            out.put_f32(*x);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        ty.name() == "vector"
    }

    to_sql_checked!();
}

/// An embedding read from Postgres (binary format).
struct Fetched(Vec<f32>);

impl<'a> FromSql<'a> for Fetched {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let (head, body) = raw.split_at_checked(4).ok_or("a vector shorter than its header")?;
        let dim = usize::from(u16::from_be_bytes([head[0], head[1]]));
        if body.len() != dim * 4 {
            return Err(format!("a vector of dimension {dim} with {} bytes of values", body.len()).into());
        }
        Ok(Fetched(body.chunks_exact(4).map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect()))
    }

    fn accepts(ty: &Type) -> bool {
        ty.name() == "vector"
    }
}

/// The SQL text of every statement, with the schema name filled in.
struct VectorSql {
    /// The quoted schema name.
    schema: String,
    dimension: String,
    dimension_for_update: String,
    others: String,
    upsert: String,
    near: String,
    exact: String,
    exact_filtered: String,
    by_id: String,
    by_id_filtered: String,
    any: String,
    delete_ids: String,
    delete_filter: String,
    count: String,
}

/// Rows whose metadata has each key of the filter (`$n`, JSON text) with exactly its value.
fn filter_sql(n: usize) -> String {
    format!(
        "m.metadata @> ${n}::text::jsonb AND NOT EXISTS (SELECT 1 FROM jsonb_each(${n}::text::jsonb) f \
         WHERE m.metadata -> f.key IS DISTINCT FROM f.value)"
    )
}

impl VectorSql {
    fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        let t = format!("{s}.flujo_memory");
        // `embedding::vector`: the column's type without its dimension, so that the rows' description stays
        // the same when the dimension changes (a prepared statement would refuse a changed result type).
        let select = format!("SELECT m.id, m.text, m.embedding::vector, m.metadata::text FROM {t} m");
        // pgvector's `<=>` is NaN for a zero vector: order those as cosine 0 (distance 1).
        let exact_order = "ORDER BY coalesce(nullif(m.embedding <=> $1::vector, 'NaN'), 1), m.id";
        VectorSql {
            dimension: format!("SELECT dimension FROM {s}.flujo_memory_schema"),
            dimension_for_update: format!("SELECT dimension FROM {s}.flujo_memory_schema FOR UPDATE"),
            others: format!("SELECT count(*) FROM {t} WHERE NOT (id = ANY($1::text[]))"),
            upsert: format!(
                "INSERT INTO {t} (id, text, embedding, metadata) \
                 SELECT u.id, u.text, u.embedding, u.metadata::jsonb \
                 FROM unnest($1::text[], $2::text[], $3::vector[], $4::text[]) AS u(id, text, embedding, metadata) \
                 ON CONFLICT (id) DO UPDATE SET text = excluded.text, embedding = excluded.embedding, \
                 metadata = excluded.metadata, created_at = excluded.created_at"
            ),
            // Records with a zero embedding are not in the HNSW index: they come from their own index.
            near: format!(
                "({select} ORDER BY m.embedding <=> $1::vector LIMIT $2) UNION ALL \
                 ({select} WHERE vector_norm(m.embedding) = 0 ORDER BY m.id LIMIT $2)"
            ),
            exact: format!("{select} {exact_order} LIMIT $2"),
            exact_filtered: format!("{select} WHERE {} {exact_order} LIMIT $2", filter_sql(3)),
            by_id: format!("{select} ORDER BY m.id LIMIT $1"),
            by_id_filtered: format!("{select} WHERE {} ORDER BY m.id LIMIT $1", filter_sql(2)),
            any: format!("SELECT EXISTS (SELECT 1 FROM {t})"),
            delete_ids: format!("DELETE FROM {t} WHERE id = ANY($1::text[])"),
            delete_filter: format!("DELETE FROM {t} m WHERE {}", filter_sql(1)),
            count: format!("SELECT count(*) FROM {t}"),
            schema: s,
        }
    }

    /// Empties the table and gives its embeddings dimension `d`, with the HNSW index when pgvector can
    /// index `d` dimensions.
    fn set_dimension(&self, d: usize) -> String {
        let s = &self.schema;
        let mut sql = format!(
            "DELETE FROM {s}.flujo_memory; DROP INDEX IF EXISTS {s}.flujo_memory_embedding; \
             ALTER TABLE {s}.flujo_memory ALTER COLUMN embedding TYPE vector({d}); "
        );
        if d <= MAX_INDEXED_DIMENSION {
            sql.push_str(&format!(
                "CREATE INDEX flujo_memory_embedding ON {s}.flujo_memory USING hnsw (embedding vector_cosine_ops) \
                 WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}); "
            ));
        }
        sql.push_str(&format!("UPDATE {s}.flujo_memory_schema SET dimension = {d}"));
        sql
    }
}

/// A [`VectorStore`] in a Postgres database with pgvector. Share it as `Arc<dyn VectorStore>`.
pub struct PostgresVectorStore {
    pool: Pool,
    sql: VectorSql,
    config: PgConfig,
    /// The store's dimension as last seen (0: not known); the database has the last word.
    dimension: AtomicUsize,
    /// `hnsw.ef_search` of the pool's connections.
    ef_search: usize,
}

impl fmt::Debug for PostgresVectorStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresVectorStore")
            .field("uri", &self.config.describe)
            .field("ssl", &self.config.ssl)
            .field("pool_size", &self.config.pool_size)
            .field("ef_search", &self.ef_search)
            .finish()
    }
}

impl PostgresVectorStore {
    /// Connects to the database `uri` names (the same `postgres://` URIs and options as
    /// [`PostgresStore`](super::PostgresStore)), creates the pgvector extension if needed and Flujo's memory
    /// tables, and returns the store.
    ///
    /// One more URI option: `ef_search=N` (1 to 1000, default [`DEFAULT_EF_SEARCH`]), the HNSW candidate
    /// list of queries: higher finds more of the true nearest neighbours, slower.
    ///
    /// A server without pgvector is [`StoreError::Unavailable`] saying so; connection errors name host, port,
    /// database and user, never the password.
    pub async fn connect(uri: &str) -> Result<Self, StoreError> {
        let (uri, ef_search) = ef_search_option(uri)?;
        let mut config = PgConfig::parse(&uri)?;
        // Every connection starts with our `hnsw.ef_search` (a placeholder until pgvector loads, then its value).
        let options = match config.pg.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} -c hnsw.ef_search={ef_search}"),
            _ => format!("-c hnsw.ef_search={ef_search}"),
        };
        config.pg.options(&options);
        let tls = tls::connector(config.ssl, config.root_cert.as_deref())?;
        let (mut client, connection) = config.pg.connect(tls.clone()).await.map_err(|e| connect_error(&config, e))?;
        let driver = tokio::spawn(connection);
        let sql = VectorSql::new(&config.schema);
        let migrated = migrate(&mut client, &config, &sql).await;
        drop(client);
        let _ = driver.await;
        let dimension = migrated?;
        let manager =
            Manager::from_config(config.pg.clone(), tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(60)))
            .create_timeout(config.pg.get_connect_timeout().copied())
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot build the connection pool: {e}")))?;
        Ok(PostgresVectorStore { pool, sql, config, dimension: AtomicUsize::new(dimension.unwrap_or(0)), ef_search })
    }

    /// [`PostgresVectorStore::connect`] for synchronous callers: connects on a helper thread with its own
    /// runtime, so it works inside and outside an async runtime.
    pub fn connect_blocking(uri: &str) -> Result<Self, StoreError> {
        let uri = uri.to_owned();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError::Unavailable(format!("cannot start a runtime to connect: {e}")))?;
            rt.block_on(PostgresVectorStore::connect(&uri))
        })
        .join()
        .unwrap_or_else(|_| Err(StoreError::Unavailable("the connecting thread panicked".to_owned())))
    }

    /// The Postgres schema holding the memory tables.
    pub fn schema(&self) -> &str {
        &self.config.schema
    }

    async fn conn(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => connect_error(&self.config, e),
            other => StoreError::Unavailable(format!(
                "no connection to {} (database {}): {other}",
                self.config.endpoint, self.config.database
            )),
        })
    }

    /// The store's dimension as the database has it (`None` before the first add).
    async fn read_dimension(&self, conn: &Object) -> Result<Option<usize>, StoreError> {
        let row = conn.query_one(&self.sql.dimension, &[]).await.map_err(|e| pg_error("memory: dimension", e))?;
        let d = row.get::<_, Option<i32>>(0).and_then(|d| usize::try_from(d).ok());
        self.dimension.store(d.unwrap_or(0), Ordering::Relaxed);
        Ok(d)
    }

    /// The batch as rows to insert: the last record of each id.
    fn upsert_params(records: &[MemoryRecord]) -> Result<UpsertParams<'_>, StoreError> {
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            last.insert(&r.id, i);
        }
        let mut p = UpsertParams::default();
        for (i, r) in records.iter().enumerate() {
            if last.get(r.id.as_str()) != Some(&i) {
                continue;
            }
            p.ids.push(&r.id);
            p.texts.push(&r.text);
            p.embeddings.push(Embedding(&r.embedding));
            p.metadata.push(
                serde_json::to_string(&r.metadata).map_err(|e| {
                    StoreError::Unavailable(format!("memory '{}': metadata cannot be encoded: {e}", r.id))
                })?,
            );
        }
        Ok(p)
    }

    /// The add of a batch of dimension `d` that may set or change the store's dimension: in one
    /// transaction, with the dimension row locked.
    async fn add_fixing_dimension(&self, records: &[MemoryRecord], d: usize) -> Result<(), StoreError> {
        let params = Self::upsert_params(records)?;
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| pg_error("memory add: begin", e))?;
        let row = tx
            .query_one(&self.sql.dimension_for_update, &[])
            .await
            .map_err(|e| pg_error("memory add: dimension", e))?;
        let stored = row.get::<_, Option<i32>>(0).and_then(|d| usize::try_from(d).ok());
        if stored != Some(d) {
            if let Some(stored) = stored {
                let row = tx
                    .query_one(&self.sql.others, &[&params.ids])
                    .await
                    .map_err(|e| pg_error("memory add: records", e))?;
                if row.get::<_, i64>(0) > 0 {
                    self.dimension.store(stored, Ordering::Relaxed);
                    return Err(check_dimensions(Some(stored), records).err().unwrap_or_else(|| {
                        StoreError::Unavailable(format!("a memory has dimension {d}, the store's is {stored}"))
                    }));
                }
            }
            // Nothing else is stored (or nothing would remain): the batch sets the dimension.
            tx.batch_execute(&self.sql.set_dimension(d))
                .await
                .map_err(|e| pg_error(&format!("memory add: setting the dimension to {d}"), e))?;
        }
        let st = tx.prepare_cached(&self.sql.upsert).await.map_err(|e| pg_error("memory add", e))?;
        tx.execute(&st, &params.as_params()).await.map_err(|e| pg_error("memory add", e))?;
        tx.commit().await.map_err(|e| pg_error("memory add: commit", e))?;
        self.dimension.store(d, Ordering::Relaxed);
        Ok(())
    }

    /// The candidate rows of a query of dimension `dim` (the store's), on `conn`.
    async fn candidates(
        &self,
        conn: &mut Object,
        query: &VectorQuery,
        dim: usize,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let limit = i64::try_from(query.k.saturating_add(MARGIN)).unwrap_or(i64::MAX);
        let embedding = Embedding(&query.embedding);
        let filter = (!query.filter.is_empty()).then(|| Value::Object(query.filter.clone()).to_string());
        if query.embedding.iter().all(|x| *x == 0.0) {
            // Cosine with a zero vector is 0 for every record: the first ids win.
            return match &filter {
                None => conn.query(&conn.prepare_cached(&self.sql.by_id).await?, &[&limit]).await,
                Some(f) => conn.query(&conn.prepare_cached(&self.sql.by_id_filtered).await?, &[&limit, f]).await,
            };
        }
        let candidates = usize::try_from(limit).unwrap_or(usize::MAX);
        if let Some(f) = &filter {
            let st = conn.prepare_cached(&self.sql.exact_filtered).await?;
            return conn.query(&st, &[&embedding, &limit, f]).await;
        }
        if candidates > MAX_EF_SEARCH || dim > MAX_INDEXED_DIMENSION {
            let st = conn.prepare_cached(&self.sql.exact).await?;
            return conn.query(&st, &[&embedding, &limit]).await;
        }
        if candidates <= self.ef_search {
            let st = conn.prepare_cached(&self.sql.near).await?;
            return conn.query(&st, &[&embedding, &limit]).await;
        }
        let tx = conn.transaction().await?;
        tx.batch_execute(&format!("SET LOCAL hnsw.ef_search = {candidates}")).await?;
        let st = tx.prepare_cached(&self.sql.near).await?;
        let rows = tx.query(&st, &[&embedding, &limit]).await?;
        tx.commit().await?;
        Ok(rows)
    }
}

/// The columns of an upsert.
#[derive(Default)]
struct UpsertParams<'a> {
    ids: Vec<&'a str>,
    texts: Vec<&'a str>,
    embeddings: Vec<Embedding<'a>>,
    metadata: Vec<String>,
}

impl UpsertParams<'_> {
    fn as_params(&self) -> [&(dyn ToSql + Sync); 4] {
        [&self.ids, &self.texts, &self.embeddings, &self.metadata]
    }
}

/// `uri` without the option `ef_search=N`, and N (or the default).
fn ef_search_option(uri: &str) -> Result<(String, usize), StoreError> {
    let Some((base, query)) = uri.trim().split_once('?') else { return Ok((uri.to_owned(), DEFAULT_EF_SEARCH)) };
    let mut ef_search = DEFAULT_EF_SEARCH;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("ef_search", value)) => {
                ef_search = value.parse().ok().filter(|n| (1..=MAX_EF_SEARCH).contains(n)).ok_or_else(|| {
                    StoreError::Unavailable(format!(
                        "invalid postgres:// URI: ef_search `{value}` (expected 1 to {MAX_EF_SEARCH})"
                    ))
                })?;
            }
            _ => rest.push(pair),
        }
    }
    let uri = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
    Ok((uri, ef_search))
}

/// A row of `SELECT id, text, embedding, metadata` as a record.
fn record(row: &Row) -> Result<MemoryRecord, StoreError> {
    let corrupt = |what: &str, e: &dyn fmt::Display| StoreError::Corrupt(format!("flujo_memory: {what}: {e}"));
    let id: String = row.try_get(0).map_err(|e| corrupt("id", &e))?;
    let text: String = row.try_get(1).map_err(|e| corrupt("text", &e))?;
    let Fetched(embedding) = row.try_get(2).map_err(|e| corrupt("embedding", &e))?;
    let metadata: String = row.try_get(3).map_err(|e| corrupt("metadata", &e))?;
    let mut r = MemoryRecord::new(id, text, embedding);
    r.metadata = serde_json::from_str::<Map<String, Value>>(&metadata)
        .map_err(|e| corrupt(&format!("metadata of '{}'", r.id), &e))?;
    Ok(r)
}

/// Whether a failed statement was refused for a dimension (pgvector: `expected 8 dimensions, not 9`,
/// `different vector dimensions 8 and 9`; SQLSTATE 22000).
fn dimension_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| db.code().code() == "22000" && db.message().contains("dimensions"))
}

#[async_trait]
impl VectorStore for PostgresVectorStore {
    async fn add(&self, records: &[MemoryRecord]) -> Result<(), StoreError> {
        check_dimensions(None, records)?;
        let Some(d) = records.first().map(|r| r.embedding.len()) else { return Ok(()) };
        if self.dimension.load(Ordering::Relaxed) == d {
            // The usual case: one statement (its own transaction). The column's type refuses another dimension.
            let params = Self::upsert_params(records)?;
            let conn = self.conn().await?;
            let st = conn.prepare_cached(&self.sql.upsert).await.map_err(|e| pg_error("memory add", e))?;
            match conn.execute(&st, &params.as_params()).await {
                Ok(_) => return Ok(()),
                // The dimension changed under us (another process): check it, in a transaction.
                Err(e) if dimension_error(&e) => {}
                Err(e) => return Err(pg_error("memory add", e)),
            }
        }
        self.add_fixing_dimension(records, d).await
    }

    async fn query(&self, query: &VectorQuery) -> Result<Vec<ScoredMemory>, StoreError> {
        if query.embedding.iter().any(|x| !x.is_finite()) {
            return Err(StoreError::Unavailable("the query embedding has a non-finite value".to_owned()));
        }
        for attempt in 0..2 {
            let mut conn = self.conn().await?;
            let known = self.dimension.load(Ordering::Relaxed);
            let dim = if known == query.embedding.len() && attempt == 0 {
                known
            } else {
                let Some(dim) = self.read_dimension(&conn).await? else { return Ok(Vec::new()) };
                if dim != query.embedding.len() {
                    // Like the other stores: a store with no record answers any query with nothing.
                    let any = conn.query_one(&self.sql.any, &[]).await.map_err(|e| pg_error("memory query", e))?;
                    if !any.get::<_, bool>(0) {
                        return Ok(Vec::new());
                    }
                    check_query_dimension(dim, query)?;
                }
                dim
            };
            if query.k == 0 {
                return Ok(Vec::new());
            }
            match self.candidates(&mut conn, query, dim).await {
                Ok(rows) => {
                    let records = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
                    return Ok(exact_search(records.iter(), query));
                }
                // The dimension changed under us: read it again.
                Err(e) if dimension_error(&e) && attempt == 0 => self.dimension.store(0, Ordering::Relaxed),
                Err(e) => return Err(pg_error("memory query", e)),
            }
        }
        Err(StoreError::Unavailable("memory query: the store's dimension keeps changing".to_owned()))
    }

    async fn delete(&self, what: &MemoryDelete) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let n = match what {
            MemoryDelete::Ids(ids) => conn.execute(&self.sql.delete_ids, &[ids]).await,
            MemoryDelete::Filter(filter) => {
                conn.execute(&self.sql.delete_filter, &[&Value::Object(filter.clone()).to_string()]).await
            }
            other => return Err(StoreError::Unavailable(format!("this store cannot delete {other:?}"))),
        };
        n.map_err(|e| pg_error("memory delete", e))
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let row = conn.query_one(&self.sql.count, &[]).await.map_err(|e| pg_error("memory count", e))?;
        Ok(row.get::<_, i64>(0).unsigned_abs())
    }

    fn describe(&self) -> String {
        self.config.describe.clone()
    }
}

/// Opens the pgvector store a `postgres://` (or `postgresql://`) URI names, for synchronous callers
/// (`open_vector_store`): [`PostgresVectorStore::connect_blocking`].
pub fn open_vector_store_blocking(uri: &str) -> Result<Arc<dyn VectorStore>, StoreError> {
    Ok(Arc::new(PostgresVectorStore::connect_blocking(uri)?))
}

/// Creates the pgvector extension if needed (refusing a server without it, or with one too old for HNSW).
async fn ensure_extension(client: &mut Client, config: &PgConfig) -> Result<(), StoreError> {
    let place = format!("the Postgres server at {} (database {})", config.endpoint, config.database);
    let tx = client.transaction().await.map_err(|e| pg_error("cannot begin the memory migration", e))?;
    // Concurrent openers (of any schema) would race on `CREATE EXTENSION`.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('flujo-pgvector-extension'))", &[])
        .await
        .map_err(|e| pg_error("cannot lock the pgvector extension", e))?;
    let row = tx
        .query_one(
            "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector'), \
             EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')",
            &[],
        )
        .await
        .map_err(|e| pg_error("cannot read the server's extensions", e))?;
    let (mut version, available): (Option<String>, bool) = (row.get(0), row.get(1));
    if version.is_none() {
        if !available {
            return Err(StoreError::Unavailable(format!(
                "pgvector is not installed on {place}: the `vector` extension is not available there. Install \
                 pgvector for that server (e.g. the postgresql-NN-pgvector package), or keep memory in another \
                 store (memory://, sqlite://)"
            )));
        }
        tx.batch_execute("CREATE EXTENSION IF NOT EXISTS vector").await.map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create the pgvector extension on {place}: {}; a superuser can run `CREATE EXTENSION \
                 vector` in that database once",
                e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_owned())
            ))
        })?;
        let row = tx
            .query_one("SELECT extversion FROM pg_extension WHERE extname = 'vector'", &[])
            .await
            .map_err(|e| pg_error("cannot read the pgvector version", e))?;
        version = row.get(0);
    }
    let version = version.unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    if (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < MIN_PGVECTOR {
        return Err(StoreError::Unavailable(format!(
            "pgvector {version} on {place} has no HNSW index: Flujo needs pgvector {}.{} or newer \
             (`ALTER EXTENSION vector UPDATE`)",
            MIN_PGVECTOR.0, MIN_PGVECTOR.1
        )));
    }
    tx.commit().await.map_err(|e| pg_error("cannot commit the pgvector extension", e))
}

/// Creates the pgvector extension if needed and brings the memory tables to [`VECTOR_SCHEMA_VERSION`];
/// returns the store's dimension.
async fn migrate(client: &mut Client, config: &PgConfig, sql: &VectorSql) -> Result<Option<usize>, StoreError> {
    ensure_extension(client, config).await?;
    let (s, schema) = (&sql.schema, &config.schema);
    let tx = client.transaction().await.map_err(|e| pg_error("cannot begin the memory migration", e))?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('flujo-memory-schema:' || $1))", &[schema])
        .await
        .map_err(|e| pg_error("cannot lock the schema for the memory migration", e))?;
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
        .await
        .map_err(|e| pg_error(&format!("cannot create schema {schema}"), e))?;
    let has = |table: &'static str| {
        let tx = &tx;
        async move {
            tx.query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("{s}.{table}")])
                .await
                .map(|row| row.get::<_, bool>(0))
                .map_err(|e| pg_error("cannot read the schema", e))
        }
    };
    let version: i32 = if has("flujo_memory_schema").await? {
        let row = tx
            .query_opt(&format!("SELECT version FROM {s}.flujo_memory_schema"), &[])
            .await
            .map_err(|e| pg_error("cannot read the memory schema version", e))?;
        row.map(|r| r.get(0)).unwrap_or(0)
    } else {
        if has("flujo_memory").await? {
            return Err(StoreError::Unavailable(format!(
                "schema {schema} has a `flujo_memory` table that Flujo did not make; use another schema \
                 (`?schema=NAME`)"
            )));
        }
        tx.batch_execute(&format!(
            "CREATE TABLE {s}.flujo_memory_schema (version INTEGER NOT NULL, dimension INTEGER); \
             INSERT INTO {s}.flujo_memory_schema VALUES (0, NULL)"
        ))
        .await
        .map_err(|e| pg_error("cannot create the memory schema version table", e))?;
        0
    };
    if version > VECTOR_SCHEMA_VERSION {
        return Err(StoreError::Unavailable(format!(
            "the memory tables of schema {schema} are at version {version}, newer than this Flujo reads \
             ({VECTOR_SCHEMA_VERSION}); upgrade Flujo"
        )));
    }
    for (i, migration) in VECTOR_MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        tx.batch_execute(&migration.replace("{s}", s))
            .await
            .map_err(|e| pg_error(&format!("memory migration to version {} failed", i + 1), e))?;
    }
    if version < VECTOR_SCHEMA_VERSION {
        tx.execute(&format!("UPDATE {s}.flujo_memory_schema SET version = $1"), &[&VECTOR_SCHEMA_VERSION])
            .await
            .map_err(|e| pg_error("cannot record the memory schema version", e))?;
    }
    let row = tx
        .query_one(&format!("SELECT dimension FROM {s}.flujo_memory_schema"), &[])
        .await
        .map_err(|e| pg_error("cannot read the memory dimension", e))?;
    let dimension = row.get::<_, Option<i32>>(0).and_then(|d| usize::try_from(d).ok());
    tx.commit().await.map_err(|e| pg_error("cannot commit the memory migration", e))?;
    Ok(dimension)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ef_search_is_read_from_the_uri_and_taken_out() {
        let (uri, ef) = ef_search_option("postgres://a:pw@h/db?schema=x&ef_search=400&pool_size=2").unwrap();
        assert_eq!((uri.as_str(), ef), ("postgres://a:pw@h/db?schema=x&pool_size=2", 400));
        let (uri, ef) = ef_search_option("postgres://a:pw@h/db?ef_search=7").unwrap();
        assert_eq!((uri.as_str(), ef), ("postgres://a:pw@h/db", 7));
        assert_eq!(ef_search_option("postgres://h/db").unwrap().1, DEFAULT_EF_SEARCH);
        let Err(StoreError::Unavailable(m)) = ef_search_option("postgres://a:pw@h/db?ef_search=0") else { panic!() };
        assert!(m.contains("ef_search `0`") && !m.contains("pw"), "{m}");
    }

    #[test]
    fn embeddings_round_trip_in_pgvector_binary_format() {
        let v = [1.0f32, -0.5, 3.25e-7, 0.0];
        let mut out = BytesMut::new();
        let ty = Type::FLOAT4; // `to_sql` ignores the type; `accepts` checks it by name.
        assert!(matches!(Embedding(&v).to_sql(&ty, &mut out), Ok(IsNull::No)));
        assert_eq!(&out[..4], &[0, 4, 0, 0]);
        let Fetched(back) = Fetched::from_sql(&ty, &out).unwrap();
        assert_eq!(back, v);
        assert!(Fetched::from_sql(&ty, &out[..7]).is_err());
    }

    #[test]
    fn a_new_dimension_empties_the_table_and_indexes_when_pgvector_can() {
        let sql = VectorSql::new("team_a");
        let small = sql.set_dimension(384);
        assert!(small.contains("vector(384)") && small.contains("USING hnsw"), "{small}");
        assert!(small.starts_with("DELETE FROM \"team_a\".flujo_memory;"), "{small}");
        let big = sql.set_dimension(3072);
        assert!(big.contains("vector(3072)") && !big.contains("USING hnsw"), "{big}");
    }
}
