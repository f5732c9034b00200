//! The vector conformance suite against [`PostgresVectorStore`] (pgvector), and what is particular to it:
//! persistence across reconnects, a server without the extension, recall of the HNSW index.
//!
//! The tests need a server with pgvector: `FLUJO_TEST_PGVECTOR_URL` (the test command, `scripts/test.sh`,
//! starts a throwaway one with `scripts/pgvector.sh` and sets it). Each test works in schemas of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flujo_core::{MemoryDelete, MemoryRecord, StoreError, VectorQuery, VectorStore};
use flujo_store::vector_conformance::{run_vector_checks, vectors};
use flujo_store::{postgres, MemoryVectorStore, PostgresVectorStore};
use serde_json::json;

/// The pgvector test server's URL, or `None` (and a note in the output) when there is none.
fn server() -> Option<String> {
    match std::env::var("FLUJO_TEST_PGVECTOR_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!(
                "FLUJO_TEST_PGVECTOR_URL is not set: skipping (scripts/test.sh starts a server with pgvector, \
                 scripts/pgvector.sh, and sets it)"
            );
            None
        }
    }
}

/// `url` with `schema=NAME` for a schema no other test uses.
fn fresh_schema(url: &str, tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}schema=v_{tag}_{}_{n}", std::process::id())
}

/// A direct client to the server, for reaching under the store.
async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

fn password(url: &str) -> String {
    url.split("://").nth(1).and_then(|r| r.split('@').next()).and_then(|u| u.split(':').nth(1)).unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgvector_store_passes_the_vector_suite() {
    let Some(url) = server() else { return };
    let failed = run_vector_checks(|| {
        let uri = fresh_schema(&url, "conf");
        async move { Arc::new(PostgresVectorStore::connect(&uri).await.unwrap()) as Arc<dyn VectorStore> }
    })
    .await;
    assert!(failed.is_empty(), "{failed:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn open_vector_store_blocking_works_inside_a_runtime_and_hides_the_password() {
    let Some(url) = server() else { return };
    let failed = run_vector_checks(|| {
        let uri = fresh_schema(&url, "open");
        async move { postgres::open_vector_store_blocking(&uri).unwrap() }
    })
    .await;
    assert!(failed.is_empty(), "{failed:?}");
    let store = postgres::open_vector_store_blocking(&fresh_schema(&url, "desc")).unwrap();
    assert!(store.describe().starts_with("postgres://flujo@127.0.0.1:"), "{}", store.describe());
    assert!(!store.describe().contains(&password(&url)), "{}", store.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_dimension_survive_reconnecting() {
    let Some(url) = server() else { return };
    let uri = fresh_schema(&url, "persist");
    let records: Vec<MemoryRecord> = vectors(30, 12, 3)
        .into_iter()
        .enumerate()
        .map(|(i, e)| MemoryRecord::new(format!("r{i:02}"), format!("text {i} ✓"), e).with_meta("i", json!(i)))
        .collect();
    {
        let store = PostgresVectorStore::connect(&uri).await.unwrap();
        store.add(&records).await.unwrap();
    }
    let store = PostgresVectorStore::connect(&uri).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 30);
    let hit = store.query(&VectorQuery::new(records[17].embedding.clone(), 1)).await.unwrap();
    assert_eq!(hit[0].record, records[17]);
    // The dimension is the stored one: another is refused, with the message every store gives.
    let Err(StoreError::Unavailable(m)) = store.add(&[MemoryRecord::new("x", "x", vec![1.0; 5])]).await else {
        panic!("a record of dimension 5 was accepted by a store of dimension 12")
    };
    assert_eq!(m, "memory 'x' has dimension 5, the store's is 12");
    let Err(StoreError::Unavailable(m)) = store.query(&VectorQuery::new(vec![1.0; 5], 3)).await else {
        panic!("a query of dimension 5 was answered")
    };
    assert!(m.contains("dimension 5, the store's is 12"), "{m}");
    // A third process opening the schema finds the same.
    let other = postgres::open_vector_store_blocking(&uri).unwrap();
    assert_eq!(other.count().await.unwrap(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_store_or_a_batch_replacing_everything_may_change_the_dimension() {
    let Some(url) = server() else { return };
    let store = PostgresVectorStore::connect(&fresh_schema(&url, "redim")).await.unwrap();
    store
        .add(&[MemoryRecord::new("a", "a", vec![1.0, 0.0]), MemoryRecord::new("b", "b", vec![0.0, 1.0])])
        .await
        .unwrap();
    // Replaces both records: allowed, as in the memory store.
    store
        .add(&[MemoryRecord::new("a", "a3", vec![1.0, 0.0, 0.0]), MemoryRecord::new("b", "b3", vec![0.0, 0.0, 1.0])])
        .await
        .unwrap();
    let hits = store.query(&VectorQuery::new(vec![0.0, 0.0, 2.0], 5)).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.record.text.as_str()).collect::<Vec<_>>(), ["b3", "a3"]);
    assert_eq!(store.delete(&MemoryDelete::Ids(vec!["a".into(), "b".into()])).await.unwrap(), 2);
    // Empty: any query finds nothing, any dimension may come.
    assert!(store.query(&VectorQuery::new(vec![1.0; 7], 3)).await.unwrap().is_empty());
    store.add(&[MemoryRecord::new("c", "c", vec![0.5; 7])]).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 1);
    // A batch whose ids repeat keeps the last record of each id.
    store
        .add(&[MemoryRecord::new("d", "first", vec![0.1; 7]), MemoryRecord::new("d", "last", vec![0.2; 7])])
        .await
        .unwrap();
    let hits = store.query(&VectorQuery::new(vec![0.2; 7], 5).with_filter("missing", json!(null))).await.unwrap();
    assert!(hits.is_empty(), "{hits:?}");
    let hits = store.query(&VectorQuery::new(vec![0.2; 7], 5)).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.record.text.as_str()).collect::<Vec<_>>(), ["c", "last"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_vectors_and_exact_filters_agree_with_the_memory_store() {
    let Some(url) = server() else { return };
    let store = PostgresVectorStore::connect(&fresh_schema(&url, "zero")).await.unwrap();
    let memory = MemoryVectorStore::new();
    let mut records = vec![
        MemoryRecord::new("zero", "z", vec![0.0; 4]).with_meta("tags", json!(["a", "b"])),
        MemoryRecord::new("neg", "n", vec![-1.0, 0.0, 0.0, 0.0]).with_meta("tags", json!(["a"])),
        MemoryRecord::new("pos", "p", vec![1.0, 0.1, 0.0, 0.0]).with_meta("tags", json!(["a"])),
    ];
    records[0].metadata.insert("nested".into(), json!({"x": 1, "y": [1, 2]}));
    store.add(&records).await.unwrap();
    memory.add(&records).await.unwrap();
    let queries = [
        // The zero record scores 0: between `pos` and `neg` (pgvector's distance is NaN).
        VectorQuery::new(vec![1.0, 0.0, 0.0, 0.0], 3).with_filter("tags", json!(["a"])),
        VectorQuery::new(vec![1.0, 0.0, 0.0, 0.0], 3).with_filter("tags", json!(["a", "b"])),
        VectorQuery::new(vec![1.0, 0.0, 0.0, 0.0], 3).with_filter("nested", json!({"x": 1})),
        VectorQuery::new(vec![1.0, 0.0, 0.0, 0.0], 3).with_filter("nested", json!({"x": 1, "y": [1, 2]})),
        VectorQuery::new(vec![0.0; 4], 2),
        VectorQuery::new(vec![0.0; 4], 3).with_min_score(0.0),
        VectorQuery::new(vec![0.0; 4], 3).with_min_score(0.1),
        VectorQuery::new(vec![1.0, 0.0, 0.0, 0.0], 3).with_min_score(-0.5),
    ];
    for q in &queries {
        let got: Vec<(String, f32)> =
            store.query(q).await.unwrap().into_iter().map(|h| (h.record.id, h.score)).collect();
        let want: Vec<(String, f32)> =
            memory.query(q).await.unwrap().into_iter().map(|h| (h.record.id, h.score)).collect();
        assert_eq!(got.len(), want.len(), "{q:?}: {got:?} vs {want:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(g.0 == w.0 && (g.1 - w.1).abs() < 1e-6, "{q:?}: {got:?} vs {want:?}");
        }
    }
    let mut filter = serde_json::Map::new();
    filter.insert("tags".into(), json!(["a"]));
    assert_eq!(store.delete(&MemoryDelete::Filter(filter)).await.unwrap(), 2, "array values are matched exactly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_pgvector_is_named_clearly() {
    let Ok(url) = std::env::var("FLUJO_TEST_POSTGRES_URL") else {
        eprintln!("FLUJO_TEST_POSTGRES_URL is not set: skipping (the Debian server, which has no pgvector)");
        return;
    };
    let available = admin(&url)
        .await
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')", &[])
        .await
        .unwrap()
        .get::<_, bool>(0);
    if available {
        eprintln!("the server at FLUJO_TEST_POSTGRES_URL has pgvector: skipping the test of a server without it");
        return;
    }
    let Err(StoreError::Unavailable(m)) = PostgresVectorStore::connect(&fresh_schema(&url, "nopgv")).await else {
        panic!("a server without pgvector opened a vector store")
    };
    assert!(m.starts_with("pgvector is not installed on the Postgres server at 127.0.0.1:"), "{m}");
    assert!(!m.contains(&password(&url)), "{m}");
    // The state store on that server is unaffected.
    flujo_store::PostgresStore::connect(&fresh_schema(&url, "nopgv_state")).await.unwrap();
}

/// 10 000 random records: the HNSW index answers (checked with `EXPLAIN`), its recall@10 against exact
/// search is at least 0.95, and filtered queries and `k` past 1000 are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hnsw_recall_at_10_is_at_least_095_on_10000_random_vectors() {
    let Some(url) = server() else { return };
    const N: usize = 10_000;
    const DIM: usize = 128;
    // Uniform random vectors are the hard case for HNSW (every record is about as far as any other): the
    // default `ef_search` finds about 0.85 of the true neighbours here, 200 about 0.96, 400 about 0.99 (the
    // graph is random, so the figure varies from run to run).
    let uri = format!("{}&ef_search=400", fresh_schema(&url, "recall"));
    let store = PostgresVectorStore::connect(&uri).await.unwrap();
    let exact = MemoryVectorStore::new();
    let records: Vec<MemoryRecord> = vectors(N, DIM, 11)
        .into_iter()
        .enumerate()
        .map(|(i, e)| MemoryRecord::new(format!("r{i:05}"), String::new(), e).with_meta("bucket", json!(i % 10)))
        .collect();
    for batch in records.chunks(1000) {
        store.add(batch).await.unwrap();
    }
    exact.add(&records).await.unwrap();
    assert_eq!(store.count().await.unwrap(), N as u64);

    // The planner uses the HNSW index for a query like the store's.
    let admin = admin(&url).await;
    let schema = store.schema().to_owned();
    let q = format!("[{}]", vectors(1, DIM, 5)[0].iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","));
    let plan: String = admin
        .query(&format!("EXPLAIN SELECT id FROM {schema}.flujo_memory ORDER BY embedding <=> '{q}' LIMIT 14"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(plan.contains("flujo_memory_embedding"), "the HNSW index is not used:\n{plan}");

    let queries = vectors(100, DIM, 12);
    let (mut found, mut total) = (0usize, 0usize);
    for q in &queries {
        let query = VectorQuery::new(q.clone(), 10);
        let got = store.query(&query).await.unwrap();
        let want = exact.query(&query).await.unwrap();
        assert_eq!(got.len(), 10);
        total += want.len();
        found += want.iter().filter(|w| got.iter().any(|g| g.record.id == w.record.id)).count();
        // Whatever is returned is scored exactly and ranked as every store ranks.
        for g in &got {
            assert!((g.score - flujo_core::cosine(&g.record.embedding, q)).abs() < 1e-6);
        }
        assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
    }
    let recall = found as f64 / total as f64;
    eprintln!("HNSW recall@10 on {N} random vectors of dimension {DIM}: {recall:.4}");
    assert!(recall >= 0.95, "recall@10 is {recall}");

    // Filtered queries and k past 1000 scan exactly: the same answer as exact search.
    for (i, q) in queries.iter().take(10).enumerate() {
        for query in
            [VectorQuery::new(q.clone(), 10).with_filter("bucket", json!(i % 10)), VectorQuery::new(q.clone(), 1200)]
        {
            let got = store.query(&query).await.unwrap();
            let want = exact.query(&query).await.unwrap();
            if let Err(why) = same_answer(&got, &want) {
                panic!("k={} filter={:?}: {why}", query.k, query.filter);
            }
        }
    }
}

/// Whether two answers are the same up to float noise: the same scores position by position, and the same
/// ids except where two scores are within noise of each other (exact stores may order those either way).
fn same_answer(got: &[flujo_core::ScoredMemory], want: &[flujo_core::ScoredMemory]) -> Result<(), String> {
    const NOISE: f32 = 1e-5;
    if got.len() != want.len() {
        return Err(format!("{} results, exact search has {}", got.len(), want.len()));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if (g.score - w.score).abs() > NOISE {
            return Err(format!(
                "#{i}: '{}' scores {}, exact search has '{}' at {}",
                g.record.id, g.score, w.record.id, w.score
            ));
        }
        if g.record.id != w.record.id {
            let near = |id: &str| want.iter().find(|x| x.record.id == id).map(|x| (x.score - g.score).abs() <= NOISE);
            if near(&g.record.id) == Some(false) || (near(&g.record.id).is_none() && i + 1 < got.len()) {
                return Err(format!("#{i}: '{}', exact search has '{}'", g.record.id, w.record.id));
            }
        }
    }
    Ok(())
}
