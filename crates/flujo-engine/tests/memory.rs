//! Memory indexing from Rust: chosen step outputs are chunked, embedded and stored with run, pipeline, step
//! and path as metadata; the step's journal record says what was indexed and carries the embedding's usage;
//! a resumed run never indexes a step again; a budget that cannot cover the embedding skips it; a failing
//! store never fails the step; `memory_search` in the same run finds what an earlier step indexed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::*;
use flujo_engine::memory::{IndexSteps, MemoryIndexing};
use flujo_engine::{Flujo, RunOptions};
use flujo_llm::embed::HashEmbedder;
use flujo_skills::{BuiltinRegistry, MemoryBackend};
use serde_json::json;

/// `mock:hash`, counting texts embedded and charging $0.01 per text.
#[derive(Default)]
struct Counting {
    texts: AtomicUsize,
}

#[async_trait]
impl Embedder for Counting {
    async fn embed(&self, texts: &[String]) -> Result<Embeddings, SkillError> {
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        let e = HashEmbedder::default().embed(texts).await?;
        Ok(Embeddings::new(e.vectors).with_usage(texts.len() as u64 * 10, 0.01 * texts.len() as f64))
    }
    fn dimension(&self) -> Option<usize> {
        Some(256)
    }
    fn name(&self) -> &str {
        "test:counting"
    }
    fn estimate(&self, texts: &[String]) -> Option<Usage> {
        Some(Usage { cost_usd: 0.01 * texts.len() as f64, tokens: texts.len() as u64 * 10 })
    }
}

fn text_step(name: &str, text: &str) -> Step {
    Step::skill(name, "flujo.builtins.transform", json!({ "expr": format!("'{text}'") }))
}

fn pipeline() -> Pipeline {
    Pipeline::new(
        "notes",
        vec![
            text_step("first", "The capital of France is Paris. It lies on the Seine."),
            text_step("skipped", "This output is not chosen for indexing."),
            Step::hitl("approve", "ok?", None),
            text_step("second", "Madrid is the capital of Spain."),
            Step::skill("recall", "flujo.builtins.memory_search", json!({"query": "capital of France", "k": 1})),
        ],
    )
}

fn runner(
    store: Arc<dyn Store>,
    vectors: Arc<dyn VectorStore>,
    embedder: Arc<Counting>,
    limits: Option<UsageLimits>,
) -> Flujo {
    let mut skills = BuiltinRegistry::new();
    skills.with_memory(MemoryBackend::new(vectors.clone(), embedder.clone()));
    let steps = IndexSteps::Named(vec!["first".into(), "second".into()]);
    let mut b = Flujo::builder(pipeline())
        .store(store)
        .skills(Arc::new(skills))
        .memory(MemoryIndexing::new(vectors, embedder, steps).with_chunking(40, 5));
    if let Some(l) = limits {
        b = b.usage_limits(l);
    }
    b.build().unwrap()
}

#[tokio::test]
async fn chosen_outputs_are_indexed_once_across_pause_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let store: Arc<dyn Store> = Arc::new(flujo_store::SqliteStore::open(&db, Default::default()).unwrap());
    let vectors: Arc<dyn VectorStore> = Arc::new(flujo_store::SqliteVectorStore::open(&db).unwrap());
    let embedder = Arc::new(Counting::default());
    let flujo = runner(store.clone(), vectors.clone(), embedder.clone(), None);

    let paused = flujo.run_with(RunOptions::new(json!(null)).run_id("r1")).await.unwrap();
    assert_eq!(paused.status, RunStatus::Paused);
    let first_chunks = vectors.count().await.unwrap();
    assert!(first_chunks >= 2, "the first output is chunked");
    assert_eq!(embedder.texts.load(Ordering::SeqCst) as u64, first_chunks);
    let rec = store.load_journal("r1").await.unwrap().into_iter().find(|r| r.step == "first").unwrap();
    assert_eq!(rec.metadata["memory"]["indexed"], json!(first_chunks));
    assert_eq!(rec.metadata["memory"]["ids"][0], json!("r1/0#0"));
    assert!((rec.cost_usd - 0.01 * first_chunks as f64).abs() < 1e-9, "the embedding's cost is the step's");
    let skipped = store.load_journal("r1").await.unwrap().into_iter().find(|r| r.step == "skipped").unwrap();
    assert!(!skipped.metadata.contains_key("memory"));

    // Resume in a fresh runner (a new process): nothing indexed before is embedded again.
    let embedder2 = Arc::new(Counting::default());
    let vectors2: Arc<dyn VectorStore> = Arc::new(flujo_store::SqliteVectorStore::open(&db).unwrap());
    let again = runner(store.clone(), vectors2.clone(), embedder2.clone(), None);
    let done = again.resume("r1", json!("yes")).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.error);
    // `second` (one chunk) and the search query: nothing of `first` again.
    assert_eq!(embedder2.texts.load(Ordering::SeqCst), 2);
    assert_eq!(vectors2.count().await.unwrap(), first_chunks + 1);
    let hits = done.output.unwrap();
    assert!(hits[0]["text"].as_str().unwrap().contains("Paris"), "{hits}");
    assert_eq!(hits[0]["metadata"]["pipeline"], json!("notes"));
    assert_eq!(hits[0]["metadata"]["step"], json!("first"));
    assert_eq!(hits[0]["metadata"]["run_id"], json!("r1"));
    // The run's cost includes every embedding, replayed ones included.
    assert!((done.total_cost_usd - 0.01 * (first_chunks + 2) as f64).abs() < 1e-9, "{}", done.total_cost_usd);
}

#[tokio::test]
async fn a_budget_too_small_skips_indexing_and_a_broken_store_never_fails_the_step() {
    let store: Arc<dyn Store> = Arc::new(flujo_store::MemoryStore::new());
    let vectors: Arc<dyn VectorStore> = Arc::new(flujo_store::MemoryVectorStore::new());
    let embedder = Arc::new(Counting::default());
    let mut limits = UsageLimits::default();
    limits.total_cost_usd_limit = Some(0.001);
    let flujo = runner(store.clone(), vectors.clone(), embedder.clone(), Some(limits));
    let paused = flujo.run_with(RunOptions::new(json!(null)).run_id("r2")).await.unwrap();
    assert_eq!(paused.status, RunStatus::Paused);
    assert_eq!(embedder.texts.load(Ordering::SeqCst), 0, "nothing embedded over the budget");
    assert_eq!(vectors.count().await.unwrap(), 0);
    let rec = store.load_journal("r2").await.unwrap().into_iter().find(|r| r.step == "first").unwrap();
    let why = rec.metadata["memory"]["error"].as_str().unwrap();
    assert!(why.contains("budget"), "{why}");

    /// Refuses every add.
    struct Broken;
    #[async_trait]
    impl VectorStore for Broken {
        async fn add(&self, _: &[MemoryRecord]) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("disk on fire".into()))
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
            "broken://".into()
        }
    }
    let flujo = runner(store.clone(), Arc::new(Broken), Arc::new(Counting::default()), None);
    let paused = flujo.run_with(RunOptions::new(json!(null)).run_id("r3")).await.unwrap();
    assert_eq!(paused.status, RunStatus::Paused, "the step completed anyway");
    let rec = store.load_journal("r3").await.unwrap().into_iter().find(|r| r.step == "first").unwrap();
    assert!(rec.metadata["memory"]["error"].as_str().unwrap().contains("disk on fire"));
    assert_eq!(rec.status, StepStatus::Completed);
}
