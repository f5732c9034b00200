//! The memory skills (SPEC §11): `flujo.builtins.memory_search` and `flujo.builtins.memory_add`, over a
//! [`MemoryBackend`] (a vector store and an embedder) given with [`Skills::with_memory`].
//!
//! Both are always registered, so a blueprint that uses them validates anywhere; without a backend (memory
//! off) a call fails with a clear, non-retryable error. Like every skill call, their results are journaled
//! with the step: a resumed or replayed run reads what the search found then, instead of searching again.
//! Embedding spends the run's budget like a model call: [`Skill::estimate`] reserves the embedder's upper
//! bound before the call and the output reports the tokens and cost the embedder measured.
//!
//! | id | params | input | output |
//! |----|--------|-------|--------|
//! | `memory_search` | `query?` (template), `k?` (5), `filter?` (object), `min_score?` | the query text, or `{query, k?, filter?, min_score?}` (as an agent's tool) | `[{id, text, score, metadata}]`, best first |
//! | `memory_add` | `text?` (template), `id?` (template), `metadata?` (object), `chunk?` (true) | a text, `{text, id?, metadata?}`, or a list of either | `{added, ids}` |

use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::{
    chunk_text, Embedder, MemoryRecord, ResolveError, Skill, SkillCall, SkillError, SkillInfo, SkillOutput, TokenUsage,
    Usage, VectorQuery, VectorStore,
};
use flujo_template::{compile_template, CompiledTemplate, Scope, UndefinedMode};
use serde_json::{json, Map, Value};

use crate::builtins::BUILTIN_PREFIX;
use crate::registry::{SkillFactory, Skills};

/// Where memories are kept and how texts become vectors.
#[derive(Clone)]
#[non_exhaustive]
pub struct MemoryBackend {
    /// The vector store.
    pub store: Arc<dyn VectorStore>,
    /// The embedder (every record of a store must come from the same one).
    pub embedder: Arc<dyn Embedder>,
    /// Longest chunk `memory_add` stores, in characters.
    pub chunk_size: usize,
    /// Characters shared by neighbouring chunks.
    pub chunk_overlap: usize,
}

impl MemoryBackend {
    /// A backend with chunks of 1000 characters overlapping by 100.
    pub fn new(store: Arc<dyn VectorStore>, embedder: Arc<dyn Embedder>) -> Self {
        MemoryBackend { store, embedder, chunk_size: 1000, chunk_overlap: 100 }
    }

    /// The same backend with another chunking.
    pub fn with_chunking(mut self, size: usize, overlap: usize) -> Self {
        self.chunk_size = size.max(1);
        self.chunk_overlap = overlap;
        self
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("store", &self.store.describe())
            .field("embedder", &self.embedder.name())
            .field("chunk_size", &self.chunk_size)
            .field("chunk_overlap", &self.chunk_overlap)
            .finish()
    }
}

const SEARCH: &str = "memory_search";
const ADD: &str = "memory_add";

fn search_info() -> SkillInfo {
    SkillInfo::new(
        format!("{BUILTIN_PREFIX}{SEARCH}"),
        "Searches the memory (vector store) for the texts closest to a query; returns [{id, text, score, metadata}].",
    )
    .with_input_schema(json!({
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to look for."},
            "k": {"type": "integer", "minimum": 1, "description": "How many results at most (default 5)."},
            "filter": {"type": "object", "description": "Only memories whose metadata has these exact values."},
            "min_score": {"type": "number", "description": "Only results at least this similar (-1 to 1)."}
        },
        "required": ["query"]
    }))
}

fn add_info() -> SkillInfo {
    SkillInfo::new(
        format!("{BUILTIN_PREFIX}{ADD}"),
        "Adds texts to the memory (vector store), chunked and embedded; returns {added, ids}.",
    )
    .with_input_schema(json!({
        "type": "object",
        "properties": {
            "text": {"type": "string", "description": "The text to remember."},
            "id": {"type": "string", "description": "Its id (adding an existing id replaces it)."},
            "metadata": {"type": "object", "description": "Anything to filter on later."}
        },
        "required": ["text"]
    }))
    .with_side_effects(true)
}

/// Registers the memory skills without a backend: they resolve, and a call says memory is off.
pub(crate) fn register_memory_off(registry: &mut Skills) {
    for (info, name) in [(search_info(), SEARCH), (add_info(), ADD)] {
        let off: Arc<dyn Skill> = Arc::new(MemoryOff { info: info.clone(), name });
        let factory: SkillFactory = Arc::new(move |_params: &Value| Ok(off.clone()));
        registry.register(info.id.clone(), info, factory);
    }
}

impl Skills {
    /// Gives `flujo.builtins.memory_search` and `memory_add` their store and embedder (without this, they fail
    /// with "memory is off").
    pub fn with_memory(&mut self, backend: MemoryBackend) -> &mut Self {
        let backend = Arc::new(backend);
        let b = backend.clone();
        let search: SkillFactory = Arc::new(move |params: &Value| build_search(b.clone(), params));
        let info = search_info();
        self.register(info.id.clone(), info, search);
        let add: SkillFactory = Arc::new(move |params: &Value| build_add(backend.clone(), params));
        let info = add_info();
        self.register(info.id.clone(), info, add);
        self
    }
}

struct MemoryOff {
    info: SkillInfo,
    name: &'static str,
}

#[async_trait]
impl Skill for MemoryOff {
    async fn call(&self, _call: SkillCall) -> Result<SkillOutput, SkillError> {
        Err(SkillError::fatal(format!(
            "{}: memory is off; configure it with a [memory] section in flujo.toml (an embedder such as \
             \"mock:hash\" or \"openai:text-embedding-3-small\", and optionally a store uri)",
            self.name
        )))
    }
    fn info(&self) -> SkillInfo {
        self.info.clone()
    }
}

fn bad(name: &str, message: impl Into<String>) -> ResolveError {
    ResolveError::BadParams { id: format!("{BUILTIN_PREFIX}{name}"), message: message.into() }
}

fn params_map<'a>(
    name: &str,
    params: &'a Value,
    keys: &[&str],
) -> Result<Option<&'a Map<String, Value>>, ResolveError> {
    let map = match params {
        Value::Null => return Ok(None),
        Value::Object(m) => m,
        other => return Err(bad(name, format!("params must be an object, got {other}"))),
    };
    if let Some(k) = map.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(bad(name, format!("unknown param '{k}' (expected one of {keys:?})")));
    }
    Ok(Some(map))
}

fn template(name: &str, map: Option<&Map<String, Value>>, key: &str) -> Result<Option<CompiledTemplate>, ResolveError> {
    match map.and_then(|m| m.get(key)).filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(Value::String(src)) => {
            compile_template(src).map(Some).map_err(|e| bad(name, format!("`{key}` does not compile: {e}")))
        }
        Some(other) => Err(bad(name, format!("`{key}` must be a string (a template), got {other}"))),
    }
}

fn object(name: &str, map: Option<&Map<String, Value>>, key: &str) -> Result<Map<String, Value>, ResolveError> {
    match map.and_then(|m| m.get(key)).filter(|v| !v.is_null()) {
        None => Ok(Map::new()),
        Some(Value::Object(o)) => Ok(o.clone()),
        Some(other) => Err(bad(name, format!("`{key}` must be an object, got {other}"))),
    }
}

fn render(t: &CompiledTemplate, call: &SkillCall, name: &str, key: &str) -> Result<String, SkillError> {
    let mut scope = Scope::new(&call.input).with_context(&call.context);
    scope.resume_input = call.context.resume_input();
    scope.this = call.this.as_deref();
    t.render(&scope, UndefinedMode::Lenient).map_err(|e| SkillError::fatal(format!("{name}: `{key}`: {e}")))
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What embedding `input` (plus a template's source) may cost, as the embedder bounds it.
fn estimate_for(embedder: &dyn Embedder, input: &Value, template_len: usize) -> Option<Usage> {
    let mut text = text_of(input);
    text.push_str(&" ".repeat(template_len));
    embedder.estimate(&[text])
}

struct MemorySearch {
    backend: Arc<MemoryBackend>,
    query: Option<CompiledTemplate>,
    query_len: usize,
    k: usize,
    filter: Map<String, Value>,
    min_score: Option<f32>,
}

fn build_search(backend: Arc<MemoryBackend>, params: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
    let map = params_map(SEARCH, params, &["query", "k", "filter", "min_score"])?;
    let k = match map.and_then(|m| m.get("k")).filter(|v| !v.is_null()) {
        None => 5,
        Some(v) => v
            .as_u64()
            .filter(|k| (1..=10_000).contains(k))
            .ok_or_else(|| bad(SEARCH, format!("`k` must be an integer from 1 to 10000, got {v}")))?
            as usize,
    };
    let min_score = match map.and_then(|m| m.get("min_score")).filter(|v| !v.is_null()) {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|s| (-1.0..=1.0).contains(s))
                .ok_or_else(|| bad(SEARCH, format!("`min_score` must be a number from -1 to 1, got {v}")))?
                as f32,
        ),
    };
    Ok(Arc::new(MemorySearch {
        backend,
        query: template(SEARCH, map, "query")?,
        query_len: map.and_then(|m| m.get("query")).and_then(Value::as_str).map_or(0, str::len),
        k,
        filter: object(SEARCH, map, "filter")?,
        min_score,
    }))
}

#[async_trait]
impl Skill for MemorySearch {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let (mut k, mut filter, mut min_score) = (self.k, self.filter.clone(), self.min_score);
        let query =
            match (&self.query, &call.input) {
                (Some(t), _) => render(t, &call, SEARCH, "query")?,
                (None, Value::Object(o)) if o.contains_key("query") => {
                    if let Some(n) = o.get("k").and_then(Value::as_u64) {
                        k = (n as usize).clamp(1, 10_000);
                    }
                    if let Some(f) = o.get("filter").and_then(Value::as_object) {
                        filter.extend(f.clone());
                    }
                    if let Some(m) = o.get("min_score").and_then(Value::as_f64) {
                        min_score = Some(m as f32);
                    }
                    text_of(&o["query"])
                }
                (None, Value::Null) => return Err(SkillError::fatal(
                    "memory_search: no query (give the step a text input, an input {query: …}, or the `query` param)",
                )),
                (None, other) => text_of(other),
            };
        let embedded = self.backend.embedder.embed(std::slice::from_ref(&query)).await.map_err(|e| {
            let mut e = e;
            e.message = format!("memory_search: embedding the query: {}", e.message);
            e
        })?;
        let Some(embedding) = embedded.vectors.into_iter().next() else {
            return Err(SkillError::fatal("memory_search: the embedder returned no vector"));
        };
        let mut q = VectorQuery::new(embedding, k);
        q.filter = filter;
        q.min_score = min_score;
        let hits = self.backend.store.query(&q).await.map_err(|e| {
            SkillError::new(format!("memory_search: {}: {e}", self.backend.store.describe()))
                .with_usage(TokenUsage::new(embedded.tokens, 0), embedded.cost_usd)
        })?;
        let out: Vec<Value> = hits
            .into_iter()
            .map(|h| json!({"id": h.record.id, "text": h.record.text, "score": h.score, "metadata": h.record.metadata}))
            .collect();
        Ok(SkillOutput::value(Value::Array(out)).with_usage(TokenUsage::new(embedded.tokens, 0), embedded.cost_usd))
    }

    fn info(&self) -> SkillInfo {
        search_info()
    }

    fn preflight(&self) -> Result<(), flujo_core::Interrupt> {
        self.backend.embedder.preflight()
    }

    fn estimate(&self, input: &Value) -> Option<Usage> {
        estimate_for(&*self.backend.embedder, input, self.query_len)
    }
}

struct MemoryAdd {
    backend: Arc<MemoryBackend>,
    text: Option<CompiledTemplate>,
    text_len: usize,
    id: Option<CompiledTemplate>,
    metadata: Map<String, Value>,
    chunk: bool,
}

fn build_add(backend: Arc<MemoryBackend>, params: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
    let map = params_map(ADD, params, &["text", "id", "metadata", "chunk"])?;
    let chunk = match map.and_then(|m| m.get("chunk")).filter(|v| !v.is_null()) {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(bad(ADD, format!("`chunk` must be a boolean, got {other}"))),
    };
    Ok(Arc::new(MemoryAdd {
        backend,
        text: template(ADD, map, "text")?,
        text_len: map.and_then(|m| m.get("text")).and_then(Value::as_str).map_or(0, str::len),
        id: template(ADD, map, "id")?,
        metadata: object(ADD, map, "metadata")?,
        chunk,
    }))
}

/// One text to add: its text, id (when given) and metadata.
struct Item {
    text: String,
    id: Option<String>,
    metadata: Map<String, Value>,
}

fn items_of(input: &Value) -> Result<Vec<Item>, SkillError> {
    let one = |v: &Value| -> Result<Item, SkillError> {
        match v {
            Value::Object(o) if o.contains_key("text") => Ok(Item {
                text: text_of(&o["text"]),
                id: o.get("id").and_then(Value::as_str).map(str::to_owned),
                metadata: o.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default(),
            }),
            Value::Null => Err(SkillError::fatal("memory_add: nothing to add (the input is null)")),
            other => Ok(Item { text: text_of(other), id: None, metadata: Map::new() }),
        }
    };
    match input {
        Value::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

#[async_trait]
impl Skill for MemoryAdd {
    async fn call(&self, call: SkillCall) -> Result<SkillOutput, SkillError> {
        let mut items = match &self.text {
            Some(t) => vec![Item { text: render(t, &call, ADD, "text")?, id: None, metadata: Map::new() }],
            None => items_of(&call.input)?,
        };
        if let (Some(t), [item]) = (&self.id, items.as_mut_slice()) {
            item.id = Some(render(t, &call, ADD, "id")?);
        }
        let mut records = Vec::new();
        for (n, item) in items.into_iter().enumerate() {
            let chunks = if self.chunk {
                chunk_text(&item.text, self.backend.chunk_size, self.backend.chunk_overlap)
            } else if item.text.trim().is_empty() {
                Vec::new()
            } else {
                vec![item.text.clone()]
            };
            let base = item.id.unwrap_or_else(|| format!("{}#{n}", call.idempotency_key));
            let total = chunks.len();
            for (c, text) in chunks.into_iter().enumerate() {
                let id = if total == 1 { base.clone() } else { format!("{base}#{c}") };
                let mut metadata = self.metadata.clone();
                metadata.extend(item.metadata.clone());
                metadata.entry("run_id").or_insert_with(|| json!(&*call.run_id));
                metadata.entry("step").or_insert_with(|| json!(&*call.step));
                if total > 1 {
                    metadata.insert("chunk".into(), json!(c));
                }
                records.push((id, text, metadata));
            }
        }
        let texts: Vec<String> = records.iter().map(|(_, t, _)| t.clone()).collect();
        let embedded = if texts.is_empty() {
            flujo_core::Embeddings::default()
        } else {
            self.backend.embedder.embed(&texts).await.map_err(|e| {
                let mut e = e;
                e.message = format!("memory_add: embedding: {}", e.message);
                e
            })?
        };
        if embedded.vectors.len() != records.len() {
            return Err(SkillError::fatal(format!(
                "memory_add: the embedder returned {} vectors for {} texts",
                embedded.vectors.len(),
                records.len()
            )));
        }
        let ids: Vec<String> = records.iter().map(|(id, _, _)| id.clone()).collect();
        let records: Vec<MemoryRecord> = records
            .into_iter()
            .zip(embedded.vectors)
            .map(|((id, text, metadata), embedding)| {
                let mut r = MemoryRecord::new(id, text, embedding);
                r.metadata = metadata;
                r
            })
            .collect();
        self.backend.store.add(&records).await.map_err(|e| {
            SkillError::new(format!("memory_add: {}: {e}", self.backend.store.describe()))
                .with_usage(TokenUsage::new(embedded.tokens, 0), embedded.cost_usd)
        })?;
        Ok(SkillOutput::value(json!({"added": ids.len(), "ids": ids}))
            .with_usage(TokenUsage::new(embedded.tokens, 0), embedded.cost_usd))
    }

    fn info(&self) -> SkillInfo {
        add_info()
    }

    fn preflight(&self) -> Result<(), flujo_core::Interrupt> {
        self.backend.embedder.preflight()
    }

    fn estimate(&self, input: &Value) -> Option<Usage> {
        estimate_for(&*self.backend.embedder, input, self.text_len)
    }
}

/// A [`SkillRegistry`](flujo_core::SkillRegistry) that answers the memory skills with `backend` and every
/// other id from `inner` — how a runner built from any registry gets memory.
pub struct WithMemory {
    inner: Arc<dyn flujo_core::SkillRegistry>,
    backend: Arc<MemoryBackend>,
}

impl WithMemory {
    /// `inner`, with the memory skills over `backend`.
    pub fn new(inner: Arc<dyn flujo_core::SkillRegistry>, backend: MemoryBackend) -> Self {
        WithMemory { inner, backend: Arc::new(backend) }
    }
}

fn memory_name(id: &str) -> Option<&str> {
    let short = id.strip_prefix(BUILTIN_PREFIX).unwrap_or(id);
    [SEARCH, ADD].into_iter().find(|n| *n == short)
}

impl flujo_core::SkillRegistry for WithMemory {
    fn resolve(&self, id: &str, params: &Value) -> Result<Arc<dyn Skill>, ResolveError> {
        match memory_name(id) {
            Some(SEARCH) => build_search(self.backend.clone(), params),
            Some(_) => build_add(self.backend.clone(), params),
            None => self.inner.resolve(id, params),
        }
    }
    fn list(&self) -> Vec<SkillInfo> {
        self.inner.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flujo_core::{Embeddings, SkillRegistry};

    /// Counts letters a–z: texts sharing letters are close. Reports 1 token per text and $0.001 per text.
    struct Letters;

    #[async_trait]
    impl Embedder for Letters {
        async fn embed(&self, texts: &[String]) -> Result<Embeddings, SkillError> {
            let vectors = texts
                .iter()
                .map(|t| {
                    let mut v = vec![0.0f32; 26];
                    for c in t.to_lowercase().chars().filter(char::is_ascii_lowercase) {
                        v[(c as u8 - b'a') as usize] += 1.0;
                    }
                    v[0] += 0.01;
                    v
                })
                .collect();
            Ok(Embeddings::new(vectors).with_usage(texts.len() as u64, 0.001 * texts.len() as f64))
        }
        fn dimension(&self) -> Option<usize> {
            Some(26)
        }
        fn name(&self) -> &str {
            "test:letters"
        }
        fn estimate(&self, texts: &[String]) -> Option<Usage> {
            Some(Usage { cost_usd: 0.001 * texts.len() as f64, tokens: texts.len() as u64 })
        }
    }

    fn skills() -> (Skills, Arc<flujo_store::MemoryVectorStore>) {
        let store = Arc::new(flujo_store::MemoryVectorStore::new());
        let mut skills = Skills::new();
        skills.with_memory(MemoryBackend::new(store.clone(), Arc::new(Letters)).with_chunking(20, 4));
        (skills, store)
    }

    #[tokio::test]
    async fn add_then_search_finds_the_closest_with_usage() {
        let (skills, store) = skills();
        let add = skills.resolve("memory_add", &json!({"metadata": {"source": "faq"}})).unwrap();
        assert!(add.info().side_effects);
        let out = add
            .call(SkillCall::new(json!(["zzz zzz", {"text": "aaa bbb", "id": "ab", "metadata": {"lang": "en"}}])))
            .await
            .unwrap();
        assert_eq!(out.output["added"], json!(2));
        assert_eq!(out.output["ids"], json!(["run/0#0", "ab"]));
        assert_eq!(out.tokens.prompt, 2);
        assert!((out.cost_usd - 0.002).abs() < 1e-9);
        assert_eq!(store.count().await.unwrap(), 2);

        let search = skills.resolve("flujo.builtins.memory_search", &json!({"k": 1})).unwrap();
        let hits = search.call(SkillCall::new(json!("zz"))).await.unwrap();
        assert_eq!(hits.output[0]["id"], json!("run/0#0"));
        assert_eq!(hits.output[0]["metadata"]["source"], json!("faq"));
        assert_eq!(hits.output[0]["metadata"]["step"], json!("step"));
        // As a tool: {query, k, filter}.
        let hits = search.call(SkillCall::new(json!({"query": "zz", "k": 5, "filter": {"lang": "en"}}))).await.unwrap();
        assert_eq!(hits.output.as_array().unwrap().len(), 1);
        assert_eq!(hits.output[0]["text"], json!("aaa bbb"));
        assert!(search.estimate(&json!("zz")).is_some_and(|u| u.cost_usd > 0.0));
    }

    #[tokio::test]
    async fn long_texts_are_chunked_and_a_retry_replaces_instead_of_duplicating() {
        let (skills, store) = skills();
        let add = skills.resolve("memory_add", &Value::Null).unwrap();
        let long = "alpha beta gamma delta epsilon zeta eta theta iota kappa";
        let first = add.call(SkillCall::new(json!(long))).await.unwrap();
        let n = first.output["added"].as_u64().unwrap();
        assert!(n >= 3, "{first:?}");
        add.call(SkillCall::new(json!(long))).await.unwrap();
        assert_eq!(store.count().await.unwrap(), n, "the same call (same idempotency key) upserts");
    }

    #[tokio::test]
    async fn bad_params_and_memory_off_are_clear() {
        let (skills, _) = skills();
        for (id, params) in [
            ("memory_search", json!({"k": 0})),
            ("memory_search", json!({"min_score": 3})),
            ("memory_search", json!({"nope": 1})),
            ("memory_search", json!({"query": "{{ unclosed"})),
            ("memory_add", json!({"chunk": "yes"})),
        ] {
            assert!(matches!(skills.resolve(id, &params), Err(ResolveError::BadParams { .. })), "{id} {params}");
        }
        let off = Skills::new().resolve("memory_search", &Value::Null).unwrap();
        let e = off.call(SkillCall::new(json!("q"))).await.unwrap_err();
        assert!(!e.retryable && e.message.contains("memory is off"), "{e}");
    }
}
