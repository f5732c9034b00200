//! The vector store conformance suite (feature `test-suite`): every [`VectorStore`] that keeps records must
//! pass [`run_vector_checks`]; [`NullVectorStore`](crate::NullVectorStore) passes [`null_store_keeps_nothing`].
//! Results are compared with exact cosine similarity computed here, best first with ties broken by id.

use std::future::Future;
use std::sync::Arc;

use flujo_core::memory::rank;
use flujo_core::{cosine, MemoryDelete, MemoryRecord, ScoredMemory, VectorQuery, VectorStore};
use serde_json::{json, Map};

/// One check's outcome: `Err` says what went wrong.
pub type VectorCheckResult = Result<(), String>;

/// Deterministic pseudo-random vectors (a linear congruential generator), so a failure reproduces.
pub fn vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    (0..n)
        .map(|_| {
            (0..dim)
                .map(|_| {
                    state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
                })
                .collect()
        })
        .collect()
}

fn records(n: usize, dim: usize) -> Vec<MemoryRecord> {
    vectors(n, dim, 7)
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            MemoryRecord::new(format!("m{i:03}"), format!("text {i}"), e)
                .with_meta("parity", json!(if i % 2 == 0 { "even" } else { "odd" }))
                .with_meta("i", json!(i))
        })
        .collect()
}

fn expected(all: &[MemoryRecord], q: &VectorQuery) -> Vec<(String, f32)> {
    let mut hits: Vec<ScoredMemory> = all
        .iter()
        .filter(|r| q.matches(&r.metadata))
        .map(|r| ScoredMemory::new(r.clone(), cosine(&r.embedding, &q.embedding)))
        .filter(|s| q.min_score.is_none_or(|m| s.score >= m))
        .collect();
    rank(&mut hits);
    hits.truncate(q.k);
    hits.into_iter().map(|s| (s.record.id, s.score)).collect()
}

fn same(got: &[ScoredMemory], want: &[(String, f32)], what: &str) -> VectorCheckResult {
    let ids: Vec<&str> = got.iter().map(|s| s.record.id.as_str()).collect();
    let want_ids: Vec<&str> = want.iter().map(|(id, _)| id.as_str()).collect();
    if ids != want_ids {
        return Err(format!("{what}: got {ids:?}, want {want_ids:?}"));
    }
    for (g, (_, w)) in got.iter().zip(want) {
        if (g.score - w).abs() > 1e-4 {
            return Err(format!("{what}: '{}' scored {}, exact cosine is {w}", g.record.id, g.score));
        }
    }
    Ok(())
}

fn ctx<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Adds 60 records, then: `count`; queries (several `k`, a filter, a minimum score) against exact cosine;
/// each returned record exactly as added.
pub async fn add_count_and_query_match_exact_cosine(store: Arc<dyn VectorStore>) -> VectorCheckResult {
    let all = records(60, 16);
    ctx(store.add(&all[..30]).await, "add")?;
    ctx(store.add(&all[30..]).await, "add a second batch")?;
    if ctx(store.count().await, "count")? != 60 {
        return Err("count after 60 adds is not 60".into());
    }
    for (i, q) in vectors(4, 16, 99).into_iter().enumerate() {
        for k in [1, 5, 60, 100] {
            let query = VectorQuery::new(q.clone(), k);
            same(&ctx(store.query(&query).await, "query")?, &expected(&all, &query), &format!("query {i} k={k}"))?;
        }
        let filtered = VectorQuery::new(q.clone(), 10).with_filter("parity", json!("odd"));
        same(&ctx(store.query(&filtered).await, "query")?, &expected(&all, &filtered), "filtered query")?;
        let min = VectorQuery::new(q.clone(), 60).with_min_score(0.2);
        same(&ctx(store.query(&min).await, "query")?, &expected(&all, &min), "min_score query")?;
    }
    let hit = ctx(store.query(&VectorQuery::new(all[7].embedding.clone(), 1)).await, "query")?;
    if hit.first().map(|h| &h.record) != Some(&all[7]) {
        return Err(format!("a record's own embedding finds it, unchanged: {hit:?}"));
    }
    Ok(())
}

/// Adding a record with an existing id replaces its text, embedding and metadata; the count is unchanged.
pub async fn add_upserts_by_id(store: Arc<dyn VectorStore>) -> VectorCheckResult {
    let all = records(10, 8);
    ctx(store.add(&all).await, "add")?;
    let mut changed = all[3].clone();
    changed.text = "replaced ✓".into();
    changed.embedding = vectors(1, 8, 5).remove(0);
    changed.metadata = Map::new();
    changed.metadata.insert("new".into(), json!(true));
    ctx(store.add(std::slice::from_ref(&changed)).await, "upsert")?;
    if ctx(store.count().await, "count")? != 10 {
        return Err("an upsert changed the count".into());
    }
    let hit = ctx(store.query(&VectorQuery::new(changed.embedding.clone(), 1)).await, "query")?;
    if hit.first().map(|h| &h.record) != Some(&changed) {
        return Err(format!("the upserted record is not as added: {hit:?}"));
    }
    Ok(())
}

/// Deleting by ids and by filter removes exactly those and says how many; unknown ids count nothing.
pub async fn delete_by_ids_and_filter(store: Arc<dyn VectorStore>) -> VectorCheckResult {
    let all = records(20, 8);
    ctx(store.add(&all).await, "add")?;
    let n = ctx(store.delete(&MemoryDelete::Ids(vec!["m000".into(), "m001".into(), "nope".into()])).await, "delete")?;
    if n != 2 {
        return Err(format!("delete of two ids and an unknown one removed {n}"));
    }
    let mut filter = Map::new();
    filter.insert("parity".into(), json!("even"));
    let n = ctx(store.delete(&MemoryDelete::Filter(filter)).await, "delete by filter")?;
    if n != 9 {
        return Err(format!("delete of the 9 remaining even records removed {n}"));
    }
    let left = ctx(store.query(&VectorQuery::new(all[5].embedding.clone(), 100)).await, "query")?;
    if left.len() != 9 || left.iter().any(|s| s.record.metadata["parity"] != json!("odd")) {
        return Err(format!("after deletes, want the 9 odd records: {} left", left.len()));
    }
    Ok(())
}

/// A record of another dimension (or with an empty or non-finite embedding) is refused, and nothing of its
/// batch is written.
pub async fn other_dimensions_are_refused_whole(store: Arc<dyn VectorStore>) -> VectorCheckResult {
    ctx(store.add(&records(3, 8)).await, "add")?;
    let mut batch = records(2, 8);
    batch[0].id = "fresh".into();
    batch.push(MemoryRecord::new("wrong", "x", vec![0.1; 9]));
    if store.add(&batch).await.is_ok() {
        return Err("a batch with a record of another dimension was accepted".into());
    }
    if store.add(&[MemoryRecord::new("nan", "x", vec![f32::NAN; 8])]).await.is_ok() {
        return Err("a NaN embedding was accepted".into());
    }
    let n = ctx(store.count().await, "count")?;
    if n != 3 {
        return Err(format!("a refused batch left {} records instead of 3", n));
    }
    Ok(())
}

/// A query of another dimension than the store's is refused; a zero query vector scores 0 everywhere.
pub async fn query_dimension_is_checked(store: Arc<dyn VectorStore>) -> VectorCheckResult {
    ctx(store.add(&records(4, 8)).await, "add")?;
    if store.query(&VectorQuery::new(vec![0.5; 7], 3)).await.is_ok() {
        return Err("a query of dimension 7 against a store of dimension 8 was answered".into());
    }
    let hits = ctx(store.query(&VectorQuery::new(vec![0.0; 8], 4)).await, "query with a zero vector")?;
    if hits.len() != 4 || hits.iter().any(|h| h.score.abs() > 1e-6) {
        return Err(format!("a zero query vector should score 0 for all 4 records: {hits:?}"));
    }
    Ok(())
}

/// An empty store finds nothing and counts zero.
pub async fn an_empty_store_finds_nothing(store: Arc<dyn VectorStore>) -> VectorCheckResult {
    let hits = ctx(store.query(&VectorQuery::new(vec![1.0, 0.0], 5)).await, "query")?;
    let n = ctx(store.count().await, "count")?;
    if !hits.is_empty() || n != 0 {
        return Err(format!("an empty store found {} and counted {n}", hits.len()));
    }
    Ok(())
}

/// [`crate::NullVectorStore`]: accepts adds, keeps nothing.
pub async fn null_store_keeps_nothing(store: Arc<dyn VectorStore>) -> VectorCheckResult {
    ctx(store.add(&records(5, 4)).await, "add")?;
    let hits = ctx(store.query(&VectorQuery::new(vec![1.0; 4], 5)).await, "query")?;
    if !hits.is_empty() || ctx(store.count().await, "count")? != 0 {
        return Err("the null store kept something".into());
    }
    Ok(())
}

type Check =
    (&'static str, fn(Arc<dyn VectorStore>) -> std::pin::Pin<Box<dyn Future<Output = VectorCheckResult> + Send>>);

/// Every check for stores that keep records.
pub fn vector_checks() -> Vec<Check> {
    vec![
        ("add_count_and_query_match_exact_cosine", |s| Box::pin(add_count_and_query_match_exact_cosine(s))),
        ("add_upserts_by_id", |s| Box::pin(add_upserts_by_id(s))),
        ("delete_by_ids_and_filter", |s| Box::pin(delete_by_ids_and_filter(s))),
        ("other_dimensions_are_refused_whole", |s| Box::pin(other_dimensions_are_refused_whole(s))),
        ("an_empty_store_finds_nothing", |s| Box::pin(an_empty_store_finds_nothing(s))),
        ("query_dimension_is_checked", |s| Box::pin(query_dimension_is_checked(s))),
    ]
}

/// Runs [`vector_checks`], each on a fresh store from `make`; returns the failures (`(check, why)`).
pub async fn run_vector_checks<F, Fut>(make: F) -> Vec<(&'static str, String)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn VectorStore>>,
{
    let mut failed = Vec::new();
    for (name, check) in vector_checks() {
        if let Err(why) = check(make().await).await {
            failed.push((name, why));
        }
    }
    failed
}
