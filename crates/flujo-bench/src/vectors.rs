//! The `vectors` workload (not in `all`): vector stores at 10 000 and 100 000 records of dimension 384
//! (issue 15). For each store and size, [`bench_store`] adds the records in batches of 1 000 (indexing
//! throughput), then runs 200 queries with `k = 10` one after another (median and p95 latency, queries per
//! second) and compares each answer with exact search computed here (recall@10). Two data sets, both
//! deterministic (`vector_conformance::vectors`): `uniform`, records and queries uniform in a cube — the
//! worst case for an approximate index (in 384 dimensions every record is about as far as any other) — and
//! `clustered`, points scattered around 1 000 centres (cosine ≈ 0.5 within a cluster, ≈ 0 across), closer
//! to real embeddings. `vectors` runs both; `vectors_uniform` or `vectors_clustered` one.
//!
//! Stores: `memory` ([`flujo_store::MemoryVectorStore`]), `sqlite` ([`flujo_store::SqliteVectorStore`], a
//! fresh file under the temporary folder per run) and `pgvector` ([`flujo_store::PostgresVectorStore`]
//! on `FLUJO_BENCH_PGVECTOR_URL`, or on a throwaway durable server started with `scripts/pgvector.sh`; a
//! fresh schema per run). For pgvector, the queries are also run at higher `ef_search` on the same table.
//! One JSON line per (data, store, n): `{"workload":"vectors","data","store","n","dim","runs","index_s",
//! "index_records_per_s","query_median_ms","query_p95_ms","qps","recall_at_10","correct"}` (medians over runs).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use flujo_core::{cosine, MemoryRecord, VectorQuery, VectorStore};
use flujo_store::vector_conformance::vectors;
use serde_json::{json, Value};

/// Records per `add`.
const BATCH: usize = 1_000;
/// Queries per measurement.
const QUERIES: usize = 200;
/// Results per query.
const K: usize = 10;
/// The dimension of the workload (a small sentence-embedding model's).
pub const DIM: usize = 384;
/// The sizes of the workload.
pub const SIZES: [usize; 2] = [10_000, 100_000];

/// Clusters of the `clustered` data set.
const CLUSTERS: usize = 1_000;

/// The data sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Data {
    /// Uniform in a cube.
    Uniform,
    /// Around [`CLUSTERS`] centres.
    Clustered,
}

impl Data {
    /// The name in the output.
    pub fn name(self) -> &'static str {
        match self {
            Data::Uniform => "uniform",
            Data::Clustered => "clustered",
        }
    }

    /// `n` vectors of dimension `dim`; `seed` picks the points (the centres of `Clustered` are always the same).
    fn vectors(self, n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        match self {
            Data::Uniform => vectors(n, dim, seed),
            Data::Clustered => {
                let centres = vectors(CLUSTERS, dim, 0xC1);
                let mut points = vectors(n, dim, seed);
                for (i, p) in points.iter_mut().enumerate() {
                    // Spread 1: the noise is as long as the centre, so cosine within a cluster is about 0.5.
                    for (x, c) in p.iter_mut().zip(&centres[(i * 7919) % CLUSTERS]) {
                        *x += c;
                    }
                }
                points
            }
        }
    }
}

/// A value computed once per (data set, n, dim).
type PerSize<T> = OnceLock<Mutex<HashMap<(Data, usize, usize), Arc<T>>>>;

/// The records of a size (ids `v000000…`), generated once.
fn dataset(data: Data, n: usize, dim: usize) -> Arc<Vec<MemoryRecord>> {
    static CACHE: PerSize<Vec<MemoryRecord>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    cache
        .entry((data, n, dim))
        .or_insert_with(|| {
            Arc::new(
                data.vectors(n, dim, 1)
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| {
                        MemoryRecord::new(format!("v{i:06}"), format!("record {i}"), e).with_meta("shard", json!(i % 8))
                    })
                    .collect(),
            )
        })
        .clone()
}

fn queries(data: Data, dim: usize) -> Vec<Vec<f32>> {
    data.vectors(QUERIES, dim, 2)
}

/// The exact top `K` ids of each query over the dataset, computed once per size (brute force, on every core).
fn truth(data: Data, n: usize, dim: usize) -> Arc<Vec<Vec<String>>> {
    static CACHE: PerSize<Vec<Vec<String>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    cache
        .entry((data, n, dim))
        .or_insert_with(|| {
            let records = dataset(data, n, dim);
            let qs = queries(data, dim);
            let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
            let chunk = qs.len().div_ceil(threads);
            let answers: Vec<Vec<String>> = std::thread::scope(|s| {
                let handles: Vec<_> = qs
                    .chunks(chunk)
                    .map(|part| {
                        let records = &records;
                        s.spawn(move || part.iter().map(|q| exact_top(records, q)).collect::<Vec<_>>())
                    })
                    .collect();
                handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
            });
            Arc::new(answers)
        })
        .clone()
}

/// The `K` best ids for `q` by exact cosine, ties by id (as every store ranks).
fn exact_top(records: &[MemoryRecord], q: &[f32]) -> Vec<String> {
    let mut scored: Vec<(f32, &str)> = records.iter().map(|r| (cosine(&r.embedding, q), r.id.as_str())).collect();
    let order = |a: &(f32, &str), b: &(f32, &str)| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1));
    if scored.len() > K {
        scored.select_nth_unstable_by(K, order);
        scored.truncate(K);
    }
    scored.sort_by(order);
    scored.into_iter().map(|(_, id)| id.to_owned()).collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Adds `n` records of dimension `dim` to `store` (which must be empty) in batches of 1 000, then measures
/// queries ([`bench_queries`]). One JSON object (not printed).
pub async fn bench_store(
    name: &str,
    store: Arc<dyn VectorStore>,
    data: Data,
    n: usize,
    dim: usize,
) -> Result<Value, String> {
    let records = dataset(data, n, dim);
    let t = Instant::now();
    for batch in records.chunks(BATCH) {
        store.add(batch).await.map_err(|e| format!("{name}: add: {e}"))?;
    }
    let index_s = t.elapsed().as_secs_f64();
    let count = store.count().await.map_err(|e| format!("{name}: count: {e}"))?;
    let mut line = bench_queries(name, store, data, n, dim).await?;
    line["index_s"] = json!(index_s);
    line["index_records_per_s"] = json!(n as f64 / index_s);
    line["correct"] = json!(line["correct"] == json!(true) && count == n as u64);
    Ok(line)
}

/// Runs 200 queries (`k = 10`) one after another on a store holding the `n` records of [`bench_store`]:
/// latency, queries per second, recall@10 against exact search.
pub async fn bench_queries(
    name: &str,
    store: Arc<dyn VectorStore>,
    data: Data,
    n: usize,
    dim: usize,
) -> Result<Value, String> {
    let qs = queries(data, dim);
    let truth = truth(data, n, dim);
    // One query to warm connections and caches (not measured).
    store.query(&VectorQuery::new(qs[0].clone(), K)).await.map_err(|e| format!("{name}: query: {e}"))?;
    let mut latencies = Vec::with_capacity(qs.len());
    let (mut found, mut wanted) = (0usize, 0usize);
    let mut ordered = true;
    let t = Instant::now();
    for (q, want) in qs.iter().zip(truth.iter()) {
        let start = Instant::now();
        let got = store.query(&VectorQuery::new(q.clone(), K)).await.map_err(|e| format!("{name}: query: {e}"))?;
        latencies.push(start.elapsed().as_secs_f64());
        wanted += want.len();
        found += want.iter().filter(|id| got.iter().any(|g| &g.record.id == *id)).count();
        ordered &= got.len() == K && got.windows(2).all(|w| w[0].score >= w[1].score);
    }
    let total = t.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(json!({
        "workload": "vectors",
        "data": data.name(),
        "store": name,
        "n": n,
        "dim": dim,
        "query_median_ms": percentile(&latencies, 0.5) * 1e3,
        "query_p95_ms": percentile(&latencies, 0.95) * 1e3,
        "qps": qs.len() as f64 / total,
        "recall_at_10": found as f64 / wanted.max(1) as f64,
        "correct": ordered,
    }))
}

/// A throwaway Postgres with pgvector (`scripts/pgvector.sh`), stopped when dropped.
struct Server {
    dir: PathBuf,
}

impl Server {
    fn script() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pgvector.sh"))
    }

    fn start() -> Result<(Server, String), String> {
        let dir = std::env::temp_dir().join(format!("flujo-bench-pgvector-{}", std::process::id()));
        let out = std::process::Command::new(Self::script())
            .arg("start")
            .arg(&dir)
            .env("FLUJO_PG_DURABLE", "1")
            .output()
            .map_err(|e| format!("cannot run scripts/pgvector.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!("scripts/pgvector.sh start failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok((Server { dir }, url))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::script()).arg("stop").arg(&self.dir).status();
    }
}

/// The stores of the workload.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Memory,
    Pgvector,
    Sqlite,
}

const BACKENDS: &[Backend] = &[Backend::Memory, Backend::Sqlite, Backend::Pgvector];

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Pgvector => "pgvector",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// `url` with `schema=NAME` for a schema no other run uses, and `extra` options.
fn with_schema(url: &str, schema: &str, extra: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}schema={schema}{extra}")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The per-run lines of one (store, n) as one line: the median of each number, `correct` if every run was.
fn summarize(lines: &[Value]) -> Value {
    let Some(first) = lines.first() else { return Value::Null };
    let mut out = first.clone();
    out["runs"] = json!(lines.len());
    if let Some(obj) = first.as_object() {
        for (key, value) in obj {
            if value.is_f64() {
                out[key] = json!(median(lines.iter().filter_map(|l| l[key].as_f64()).collect()));
            }
        }
    }
    out["correct"] = json!(lines.iter().all(|l| l["correct"] == json!(true)));
    out
}

/// Runs the workload `runs` times for every store and size; prints one line per (store, n) and, for
/// pgvector, per higher `ef_search`. Returns whether every run was correct.
pub async fn run(sets: &[Data], runs: usize) -> bool {
    let mut server = None;
    let pg_url = match std::env::var("FLUJO_BENCH_PGVECTOR_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => match Server::start() {
            Ok((s, url)) => {
                server = Some(s);
                Some(url)
            }
            Err(e) => {
                eprintln!("vectors: no pgvector server ({e}); set FLUJO_BENCH_PGVECTOR_URL");
                None
            }
        },
    };
    let mut ok = true;
    for (&data, n) in sets.iter().flat_map(|d| SIZES.iter().map(move |n| (d, *n))) {
        for &backend in BACKENDS {
            let mut lines = Vec::new();
            // pgvector only: the same table queried at higher `ef_search` (ef → lines).
            let mut wider: Vec<(usize, Vec<Value>)> = vec![(400, Vec::new()), (1000, Vec::new())];
            for run in 0..runs {
                let (store, uri): (Arc<dyn VectorStore>, Option<String>) = match backend {
                    Backend::Memory => (Arc::new(flujo_store::MemoryVectorStore::new()), None),
                    Backend::Sqlite => {
                        // A fresh file per run (the store's durable writes, WAL at synchronous=NORMAL).
                        let dir = std::env::temp_dir().join(format!("flujo-bench-vec-{}", std::process::id()));
                        let _ = std::fs::create_dir_all(&dir);
                        let path = dir.join(format!("{}_{n}_{run}.db", data.name()));
                        let _ = std::fs::remove_file(&path);
                        match flujo_store::SqliteVectorStore::open(&path) {
                            Ok(s) => (Arc::new(s), None),
                            Err(e) => {
                                eprintln!("vectors: cannot open sqlite: {e}");
                                ok = false;
                                break;
                            }
                        }
                    }
                    Backend::Pgvector => {
                        let Some(url) = &pg_url else { break };
                        let schema = format!("bench_vec_{}_{}_{n}_{run}", data.name(), std::process::id());
                        let uri = with_schema(url, &schema, "");
                        match flujo_store::PostgresVectorStore::connect(&uri).await {
                            Ok(s) => (Arc::new(s), Some(schema)),
                            Err(e) => {
                                eprintln!("vectors: cannot open pgvector: {e}");
                                ok = false;
                                break;
                            }
                        }
                    }
                };
                let result = bench_store(backend.name(), store, data, n, DIM).await;
                if backend == Backend::Sqlite {
                    let _ = std::fs::remove_dir_all(
                        std::env::temp_dir().join(format!("flujo-bench-vec-{}", std::process::id())),
                    );
                }
                match result {
                    Ok(line) => lines.push(line),
                    Err(e) => {
                        eprintln!("vectors: {e}");
                        ok = false;
                        continue;
                    }
                }
                if let (Some(schema), Some(url)) = (uri, &pg_url) {
                    for (ef, lines) in &mut wider {
                        let name = format!("pgvector(ef_search={ef})");
                        let uri = with_schema(url, &schema, &format!("&ef_search={ef}"));
                        let result = match flujo_store::PostgresVectorStore::connect(&uri).await {
                            Ok(s) => bench_queries(&name, Arc::new(s), data, n, DIM).await,
                            Err(e) => Err(e.to_string()),
                        };
                        match result {
                            Ok(line) => lines.push(line),
                            Err(e) => {
                                eprintln!("vectors: {e}");
                                ok = false;
                            }
                        }
                    }
                }
            }
            for lines in std::iter::once(&lines).chain(wider.iter().map(|(_, l)| l)) {
                if lines.is_empty() {
                    continue;
                }
                let line = summarize(lines);
                ok &= line["correct"] == json!(true);
                println!("{line}");
            }
        }
    }
    drop(server);
    ok
}
