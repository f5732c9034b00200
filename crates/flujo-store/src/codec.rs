//! Row encoding for the SQL stores (SQLite, Postgres): how runs and journal records become column values and
//! back. Both stores keep the same columns, so a record reads back byte for byte the same from either.
//!
//! Encoding runs on the caller's task (it is pure CPU work proportional to what the caller is writing), so
//! the writer thread only executes SQL. Journal records are stored column by column; JSON-valued fields are
//! TEXT. Any output or patch-op value whose JSON is larger than [`INLINE_VALUE_LIMIT`] bytes is moved into
//! the content-addressed `blobs` table (keyed by the blake3 hash of its JSON bytes) and referenced from the
//! row, so a large value is stored once however many records carry it.
//!
//! Decoding must reproduce the record exactly, because the journal hash covers the record's canonical
//! bytes: JSON text is parsed with `serde_json`'s `preserve_order` (key order) and `float_roundtrip` (exact
//! f64) features, integers go through checked conversions, and a non-finite float (which SQLite stores as
//! NULL) reads back as NaN, which serializes exactly like the original (`null`).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use flujo_core::{
    ChainHead, Definition, JournalRecord, Map, PatchOp, PendingPause, RunError, RunOrigin, RunOwner, RunRecord,
    RunStatus, RunUpdate, StepStatus, StoreError, TokenUsage, Value,
};
use serde::{Deserialize, Deserializer, Serialize};

use crate::blob_hash;

/// Values whose JSON is larger than this many bytes are stored as blobs (see the module docs).
pub const INLINE_VALUE_LIMIT: usize = 4096;

/// Fixed per-row overhead counted by `bytes_written` (integer and float columns, row header).
const ROW_OVERHEAD: u64 = 64;

/// Fixed overhead of a journal row counted by `bytes_written`: SQLite's record header (one byte per column)
/// and the integer and float columns (a typical step: `seq`, `started_at_ms`, `latency_ms`, `hash_scheme`;
/// zero counts cost nothing). Measured with `dbstat`: a `linear_1000` record's payload is this plus its text
/// and the 32-byte hash, within a few bytes.
const JOURNAL_ROW_OVERHEAD: u64 = 40;

/// A blob to insert (if absent) together with the row that references it.
#[derive(Debug, Clone)]
pub(crate) struct NewBlob {
    pub hash: String,
    /// Shared: a pipeline definition's bytes are encoded once and given to every run of it.
    pub bytes: Arc<[u8]>,
}

/// The pipeline definition a store read last. Runs of one pipeline share one [`Definition`]: creating them
/// neither serializes nor hashes it again (its text is the blob, its hash the blob's address), and reading
/// them back (a resume, a listing) does not fetch the blob again (same blob hash, same content). The blob is
/// still given with every new run (the writer skips it when the store has it), so a retention pass that
/// deleted it in between cannot leave a run pointing at nothing.
#[derive(Debug, Default)]
pub(crate) struct DefinitionCache(std::sync::Mutex<Option<Arc<Definition>>>);

impl DefinitionCache {
    /// The definition whose blob has this hash, when it is the one held.
    pub(crate) fn value(&self, hash: &str) -> Option<Arc<Definition>> {
        let last = self.0.lock().ok()?;
        last.as_ref().filter(|d| d.hash() == hash).map(Arc::clone)
    }

    /// A definition blob read from the database (or the held one), checked against its address, and held.
    pub(crate) fn decode(&self, run_id: &str, hash: &str, bytes: &[u8]) -> Result<Arc<Definition>, StoreError> {
        if let Some(v) = self.value(hash) {
            return Ok(v);
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| StoreError::Corrupt(format!("run '{run_id}': definition blob {hash}: {e}")))?;
        let definition = Definition::from_json(text);
        if definition.hash() != hash {
            return Err(StoreError::Corrupt(format!(
                "run '{run_id}': definition blob {hash}: its content hashes to {}",
                definition.hash()
            )));
        }
        let definition = Arc::new(definition);
        if let Ok(mut last) = self.0.lock() {
            *last = Some(Arc::clone(&definition));
        }
        Ok(definition)
    }

    /// The blob of a definition: its text, addressed by its hash (nothing is serialized or hashed here).
    fn blob(definition: &Definition) -> NewBlob {
        NewBlob { hash: definition.hash().to_owned(), bytes: Arc::<[u8]>::from(definition.shared_json()) }
    }
}

/// The column values of one `runs` row.
#[derive(Debug, Clone)]
pub(crate) struct RunRow {
    pub run_id: String,
    pub pipeline_name: String,
    pub pipeline_version: String,
    pub pipeline_hash: String,
    /// `blob:HASH`: definitions are stored once, as content-addressed blobs.
    pub definition: Option<String>,
    pub definition_blob: Option<NewBlob>,
    pub status: &'static str,
    pub input: String,
    pub initial_context: String,
    pub pending: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub generation: i64,
    pub total_cost_usd: f64,
    pub total_tokens: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub owner_id: Option<String>,
    pub owner: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    pub origin: Option<String>,
    pub journal_head: Option<String>,
    pub queue: Option<String>,
}

impl RunRow {
    pub fn payload_len(&self) -> u64 {
        ROW_OVERHEAD
            + text_len(&[&self.run_id, &self.pipeline_name, &self.pipeline_version, &self.pipeline_hash])
            + text_len(&[self.status, &self.input, &self.initial_context, &self.pending])
            + opt_len(&self.definition)
            + opt_len(&self.output)
            + opt_len(&self.error)
            + opt_len(&self.origin)
            + opt_len(&self.journal_head)
            + opt_len(&self.queue)
    }
}

/// A compare-and-set update of a `runs` row.
#[derive(Debug, Clone)]
pub(crate) struct UpdateRow {
    pub run_id: String,
    pub expected: Vec<RunStatus>,
    pub status: &'static str,
    pub pending: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub generation: i64,
    pub total_cost_usd: f64,
    pub total_tokens: i64,
    pub updated_at_ms: i64,
    pub owner_id: Option<String>,
    pub owner: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    pub expected_owner: Option<Option<String>>,
    /// `None` keeps the stored head.
    pub journal_head: Option<String>,
}

impl UpdateRow {
    pub fn payload_len(&self) -> u64 {
        ROW_OVERHEAD
            + text_len(&[&self.run_id, self.status, &self.pending])
            + opt_len(&self.output)
            + opt_len(&self.error)
    }
}

/// The column values of one `journal` row, plus the blobs it references that may be new.
#[derive(Debug, Clone)]
pub(crate) struct RecordRow {
    pub run_id: String,
    pub seq: i64,
    pub path: String,
    pub step: String,
    pub kind: String,
    pub status: &'static str,
    pub generation: i64,
    pub output: Option<String>,
    pub output_ref: Option<String>,
    pub patch: String,
    pub attempts: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: f64,
    pub started_at_ms: i64,
    pub latency_ms: f64,
    pub metadata: Option<String>,
    pub feedback: Option<String>,
    /// The record's hash as 32 bytes (see [`hash_to_column`]); the previous record's hash is not stored.
    pub hash: Vec<u8>,
    /// [`flujo_core::HashScheme::number`].
    pub hash_scheme: i64,
    /// Usage details ([`TokenUsage`]'s `cached`, `cache_write`, `reasoning`): 0 when not reported.
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    pub blobs: Vec<NewBlob>,
    /// For a fenced append: the owner the run must be `running` under (not a column).
    pub fence_owner: Option<String>,
}

impl RecordRow {
    /// Bytes of the row itself (blobs are counted separately, and only when actually inserted).
    pub fn payload_len(&self) -> u64 {
        JOURNAL_ROW_OVERHEAD
            + text_len(&[&self.run_id, &self.path, &self.step, &self.kind, &self.patch])
            + self.hash.len() as u64
            + opt_len(&self.output)
            + opt_len(&self.output_ref)
            + opt_len(&self.metadata)
            + opt_len(&self.feedback)
    }
}

fn text_len(parts: &[&str]) -> u64 {
    parts.iter().map(|s| s.len() as u64).sum()
}

fn opt_len(s: &Option<String>) -> u64 {
    s.as_ref().map_or(0, |s| s.len() as u64)
}

// ---------------------------------------------------------------------------------------------------------
// Scalars.

/// Converts an unsigned counter to a signed 64-bit database integer.
pub(crate) fn to_sql_int(what: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v)
        .map_err(|_| StoreError::Unavailable(format!("{what} = {v} does not fit a 64-bit database integer")))
}

pub(crate) fn step_status_str(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Completed => "completed",
        StepStatus::Failed => "failed",
    }
}

fn parse_step_status(s: &str) -> Option<StepStatus> {
    match s {
        "completed" => Some(StepStatus::Completed),
        "failed" => Some(StepStatus::Failed),
        _ => None,
    }
}

fn to_json<T: Serialize + ?Sized>(what: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Unavailable(format!("cannot serialize {what}: {e}")))
}

/// An `io::Write` that counts bytes and fails once more than `limit` were written, so that measuring a
/// large value stops early.
struct LimitedCounter {
    written: usize,
    limit: usize,
}

impl io::Write for LimitedCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        if self.written > self.limit {
            Err(io::Error::other("over the inline limit"))
        } else {
            Ok(buf.len())
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// True when the JSON of `value` is longer than `limit` bytes (costs at most `limit` bytes of serializing).
fn json_exceeds(value: &Value, limit: usize) -> bool {
    // Serializing a `Value` fails only when the writer does, i.e. when the limit was passed.
    serde_json::to_writer(&mut LimitedCounter { written: 0, limit }, value).is_err()
}

/// Moves `value` into `blobs` when it is large and returns its hash, or `None` when it stays inline.
fn externalize(value: &Value, blobs: &mut Vec<NewBlob>) -> Result<Option<String>, StoreError> {
    if !json_exceeds(value, INLINE_VALUE_LIMIT) {
        return Ok(None);
    }
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Unavailable(format!("cannot serialize: {e}")))?;
    let hash = blob_hash(&bytes);
    if !blobs.iter().any(|b| b.hash == hash) {
        blobs.push(NewBlob { hash: hash.clone(), bytes: bytes.into() });
    }
    Ok(Some(hash))
}

// ---------------------------------------------------------------------------------------------------------
// Patches.

/// A stored patch op: the value inline, or the hash of the blob holding it.
#[derive(Serialize)]
struct StoredOpOut<'a> {
    op: &'static str,
    path: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_ref: Option<String>,
}

#[derive(Deserialize)]
struct StoredOpIn {
    op: String,
    path: Vec<String>,
    /// `Some(Value::Null)` for a stored `null` (a plain `Option<Value>` would read it as absent).
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
    #[serde(default)]
    value_ref: Option<String>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn encode_patch(patch: &[PatchOp], blobs: &mut Vec<NewBlob>) -> Result<String, StoreError> {
    let mut ops = Vec::with_capacity(patch.len());
    for op in patch {
        let (name, path, value) = match op {
            PatchOp::Set { path, value } => ("set", path, value),
            PatchOp::Append { path, value } => ("append", path, value),
        };
        let stored = match externalize(value, blobs)? {
            Some(hash) => StoredOpOut { op: name, path, value: None, value_ref: Some(hash) },
            None => StoredOpOut { op: name, path, value: Some(value), value_ref: None },
        };
        ops.push(stored);
    }
    to_json("patch", &ops)
}

// ---------------------------------------------------------------------------------------------------------
// Encoding.

/// Prefix of a `runs.definition` value that references a blob.
pub(crate) const DEFINITION_REF: &str = "blob:";

pub(crate) fn encode_run(run: &RunRecord) -> Result<RunRow, StoreError> {
    let definition_blob = run.definition.as_deref().map(DefinitionCache::blob);
    Ok(RunRow {
        run_id: run.run_id.clone(),
        pipeline_name: run.pipeline_name.clone(),
        pipeline_version: run.pipeline_version.clone(),
        pipeline_hash: run.pipeline_hash.clone(),
        definition: definition_blob.as_ref().map(|b| format!("{DEFINITION_REF}{}", b.hash)),
        definition_blob,
        status: run.status.as_str(),
        input: to_json("input", &run.input)?,
        initial_context: to_json("initial_context", &run.initial_context)?,
        pending: to_json("pending", &run.pending)?,
        output: run.output.as_ref().map(|o| to_json("output", o)).transpose()?,
        error: run.error.as_ref().map(|e| to_json("error", e)).transpose()?,
        generation: i64::from(run.generation),
        total_cost_usd: run.total_cost_usd,
        total_tokens: to_sql_int("total_tokens", run.total_tokens)?,
        created_at_ms: run.created_at_ms,
        updated_at_ms: run.updated_at_ms,
        owner_id: run.owner.as_ref().map(|o| o.id.clone()),
        owner: run.owner.as_ref().map(|o| to_json("owner", o)).transpose()?,
        lease_expires_at_ms: run.lease_expires_at_ms,
        origin: run.origin.as_ref().map(|o| to_json("origin", o)).transpose()?,
        journal_head: run.journal_head.as_ref().map(|h| to_json("journal_head", h)).transpose()?,
        queue: run.queue.clone(),
    })
}

pub(crate) fn encode_update(update: &RunUpdate) -> Result<UpdateRow, StoreError> {
    Ok(UpdateRow {
        run_id: update.run_id.clone(),
        expected: update.expected.clone(),
        status: update.status.as_str(),
        pending: to_json("pending", &update.pending)?,
        output: update.output.as_ref().map(|o| to_json("output", o)).transpose()?,
        error: update.error.as_ref().map(|e| to_json("error", e)).transpose()?,
        generation: i64::from(update.generation),
        total_cost_usd: update.total_cost_usd,
        total_tokens: to_sql_int("total_tokens", update.total_tokens)?,
        updated_at_ms: update.updated_at_ms,
        owner_id: update.owner.as_ref().map(|o| o.id.clone()),
        owner: update.owner.as_ref().map(|o| to_json("owner", o)).transpose()?,
        lease_expires_at_ms: update.lease_expires_at_ms,
        expected_owner: update.expected_owner.clone(),
        journal_head: update.journal_head.as_ref().map(|h| to_json("journal_head", h)).transpose()?,
    })
}

pub(crate) fn encode_record(r: &JournalRecord) -> Result<RecordRow, StoreError> {
    let mut blobs = Vec::new();
    // Serialized once: inline when small, else the same text becomes the blob.
    let text = to_json("output", r.output.as_ref())?;
    let (output, output_ref) = if text.len() > INLINE_VALUE_LIMIT {
        let hash = blob_hash(text.as_bytes());
        blobs.push(NewBlob { hash: hash.clone(), bytes: text.into_bytes().into() });
        (None, Some(hash))
    } else {
        (Some(text), None)
    };
    let patch = encode_patch(&r.patch, &mut blobs)?;
    Ok(RecordRow {
        run_id: r.run_id.clone(),
        seq: to_sql_int("seq", r.seq)?,
        path: r.path.clone(),
        step: r.step.clone(),
        kind: r.kind.clone(),
        status: step_status_str(r.status),
        generation: i64::from(r.generation),
        output,
        output_ref,
        patch,
        attempts: i64::from(r.attempts),
        prompt_tokens: to_sql_int("prompt_tokens", r.tokens.prompt)?,
        completion_tokens: to_sql_int("completion_tokens", r.tokens.completion)?,
        cost_usd: r.cost_usd,
        started_at_ms: r.started_at_ms,
        latency_ms: r.latency_ms,
        metadata: if r.metadata.is_empty() { None } else { Some(to_json("metadata", &r.metadata)?) },
        feedback: r.feedback.clone(),
        hash: hash_to_column(&r.hash),
        hash_scheme: i64::from(r.hash_scheme.number()),
        cached_tokens: to_sql_int("cached_tokens", r.tokens.cached)?,
        cache_write_tokens: to_sql_int("cache_write_tokens", r.tokens.cache_write)?,
        reasoning_tokens: to_sql_int("reasoning_tokens", r.tokens.reasoning)?,
        blobs,
        fence_owner: None,
    })
}

/// The smallest string greater than every string that starts with `prefix` (`None`: no such bound, i.e.
/// every string at or after `prefix` starts with it). SQLite compares TEXT byte-wise (Postgres too, with the `C` collation of `run_id`), and UTF-8 byte order
/// is code point order, so `prefix <= id < upper` selects exactly the ids starting with `prefix`.
pub(crate) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The blob reference of a stored patch op (other fields are not needed here).
#[derive(Deserialize)]
struct OpRef {
    #[serde(default)]
    value_ref: Option<String>,
}

/// The blob hashes a stored `patch` column references. A patch that does not parse yields none (callers use
/// this to find blobs a deletion may free, so a missed reference keeps a blob rather than losing one).
pub(crate) fn patch_value_refs(patch: &str) -> Vec<String> {
    if !patch.contains("\"value_ref\"") {
        return Vec::new();
    }
    serde_json::from_str::<Vec<OpRef>>(patch)
        .map(|ops| ops.into_iter().filter_map(|op| op.value_ref).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------------
// Decoding.

/// Names the row and column a decoding error came from.
fn corrupt(row: impl std::fmt::Display, column: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{row}: column `{column}`: {why}"))
}

/// Names a journal row in decoding errors; formatted only when there is an error (decoding a journal must not
/// format a string per record).
#[derive(Clone, Copy)]
struct JournalRowName<'a> {
    run_id: &'a str,
    seq: i64,
}

impl std::fmt::Display for JournalRowName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "journal record of run '{}' seq {}", self.run_id, self.seq)
    }
}

fn from_json<T: for<'de> Deserialize<'de>>(
    row: impl std::fmt::Display,
    column: &str,
    text: &str,
) -> Result<T, StoreError> {
    parse_json(text.as_bytes()).map_err(|e| corrupt(row, column, e))
}

/// Parses JSON of any nesting depth. serde_json's default recursion limit (128 levels) would refuse values
/// the engine wrote without complaint — the definition of a pipeline nested a few dozen steps deep, a deep
/// step output — and make the run unreadable; without the limit, `serde_stacker` continues on a fresh stack
/// segment instead of overflowing.
pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> serde_json::Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let value = T::deserialize(serde_stacker::Deserializer::new(&mut de))?;
    de.end()?;
    Ok(value)
}

fn from_sql_u64(row: impl std::fmt::Display, column: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(row, column, format!("negative value {v}")))
}

fn from_sql_u32(row: impl std::fmt::Display, column: &str, v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(row, column, format!("value {v} out of range")))
}

/// A REAL column: SQLite stores NaN as NULL; NaN serializes as `null` like the value that was written.
pub(crate) fn real_or_nan(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

/// A `runs` row as read from the database.
#[derive(Debug, Clone)]
pub(crate) struct StoredRun {
    pub run_id: String,
    pub pipeline_name: String,
    pub pipeline_version: String,
    pub pipeline_hash: String,
    /// The definition's JSON, or a `blob:HASH` reference resolved into `definition_value`.
    pub definition: Option<String>,
    /// The definition, when it came from a blob (shared between runs of one pipeline).
    pub definition_value: Option<Arc<Definition>>,
    pub status: String,
    pub input: String,
    pub initial_context: String,
    pub pending: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub generation: i64,
    pub total_cost_usd: f64,
    pub total_tokens: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub owner: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    pub origin: Option<String>,
    pub journal_head: Option<String>,
    pub queue: Option<String>,
}

pub(crate) fn decode_run(s: StoredRun) -> Result<RunRecord, StoreError> {
    let row = format!("run '{}'", s.run_id);
    let row = row.as_str();
    Ok(RunRecord {
        // An inline definition (written before definitions became blobs) is its own text.
        definition: s.definition_value.or_else(|| s.definition.as_deref().map(|d| Arc::new(Definition::from_json(d)))),
        status: RunStatus::parse(&s.status).ok_or_else(|| corrupt(row, "status", format!("unknown `{}`", s.status)))?,
        input: from_json(row, "input", &s.input)?,
        initial_context: from_json::<Map<String, Value>>(row, "initial_context", &s.initial_context)?,
        pending: from_json::<Vec<PendingPause>>(row, "pending", &s.pending)?,
        output: s.output.as_deref().map(|o| from_json::<Value>(row, "output", o)).transpose()?,
        error: s.error.as_deref().map(|e| from_json::<RunError>(row, "error", e)).transpose()?,
        generation: from_sql_u32(row, "generation", s.generation)?,
        total_cost_usd: s.total_cost_usd,
        total_tokens: from_sql_u64(row, "total_tokens", s.total_tokens)?,
        created_at_ms: s.created_at_ms,
        updated_at_ms: s.updated_at_ms,
        owner: s.owner.as_deref().map(|o| from_json::<RunOwner>(row, "owner", o)).transpose()?,
        lease_expires_at_ms: s.lease_expires_at_ms,
        origin: s.origin.as_deref().map(|o| from_json::<RunOrigin>(row, "origin", o)).transpose()?,
        journal_head: s.journal_head.as_deref().map(|h| from_json::<ChainHead>(row, "journal_head", h)).transpose()?,
        queue: s.queue,
        pipeline_name: s.pipeline_name,
        pipeline_version: s.pipeline_version,
        pipeline_hash: s.pipeline_hash,
        run_id: s.run_id,
    })
}

/// A `journal` row as read from the database, borrowed from the row (decoding copies only what the record
/// keeps). The run id is not read back: the caller asked for it.
#[derive(Debug, Clone)]
pub(crate) struct StoredRecord<'a> {
    pub seq: i64,
    pub path: &'a str,
    pub step: &'a str,
    pub kind: &'a str,
    pub status: std::borrow::Cow<'a, str>,
    pub generation: i64,
    pub output: Option<&'a str>,
    pub output_ref: Option<&'a str>,
    pub patch: &'a str,
    pub attempts: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: f64,
    pub started_at_ms: i64,
    pub latency_ms: f64,
    pub metadata: Option<&'a str>,
    pub feedback: Option<&'a str>,
    pub hash: &'a [u8],
    pub hash_scheme: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
}

/// Resolves blob references while decoding one journal; each distinct blob is fetched and parsed once, and
/// records that reference the same blob share one `Arc<Value>`.
pub(crate) struct BlobResolver<F> {
    fetch: F,
    cache: HashMap<String, Arc<Value>>,
}

impl<F> BlobResolver<F>
where
    F: FnMut(&str) -> Result<Option<Vec<u8>>, StoreError>,
{
    pub fn new(fetch: F) -> Self {
        Self { fetch, cache: HashMap::new() }
    }

    fn resolve(
        &mut self,
        row: impl std::fmt::Display + Copy,
        column: &str,
        hash: &str,
    ) -> Result<Arc<Value>, StoreError> {
        if let Some(v) = self.cache.get(hash) {
            return Ok(Arc::clone(v));
        }
        let bytes = (self.fetch)(hash)?.ok_or_else(|| corrupt(row, column, format!("blob {hash} is missing")))?;
        let value: Value = parse_json(&bytes).map_err(|e| corrupt(row, column, e))?;
        let value = Arc::new(value);
        self.cache.insert(hash.to_owned(), Arc::clone(&value));
        Ok(value)
    }
}

/// Decodes a run's stored records, in seq order; `prev_hash` is the hash of the record before the first
/// ([`flujo_core::journal::GENESIS_HASH`] when the first is seq 0). Each record's `prev_hash` is its
/// predecessor's hash: stores keep only `hash`. (SQLite decodes its rows one by one as it reads them.)
#[cfg(feature = "postgres")]
pub(crate) fn decode_journal<'a, F>(
    run_id: &str,
    stored: impl ExactSizeIterator<Item = Result<StoredRecord<'a>, StoreError>>,
    mut prev_hash: String,
    blobs: &mut BlobResolver<F>,
) -> Result<Vec<JournalRecord>, StoreError>
where
    F: FnMut(&str) -> Result<Option<Vec<u8>>, StoreError>,
{
    let mut records = Vec::with_capacity(stored.len());
    for s in stored {
        let record = decode_record(run_id, s?, prev_hash, blobs)?;
        prev_hash = record.hash.clone();
        records.push(record);
    }
    Ok(records)
}

/// The stored form of a record's hash: a hash as Flujo writes it (64 lowercase hex digits) becomes its 32
/// bytes; anything else (a damaged or hand-edited journal) is kept as its own bytes, so that it reads back
/// unchanged and `lens verify` reports it rather than the store refusing the journal.
pub(crate) fn hash_to_column(hash: &str) -> Vec<u8> {
    // `from_hex` also takes upper case, which Flujo never writes: such a hash stays as it is (and stays broken).
    let lower_hex = hash.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    match blake3::Hash::from_hex(hash) {
        Ok(h) if lower_hex => h.as_bytes().to_vec(),
        _ => hash.as_bytes().to_vec(),
    }
}

/// The inverse of [`hash_to_column`].
pub(crate) fn hash_from_column(bytes: &[u8]) -> String {
    match <[u8; 32]>::try_from(bytes) {
        Ok(b) => blake3::Hash::from_bytes(b).to_hex().to_string(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

pub(crate) fn decode_record<F>(
    run_id: &str,
    s: StoredRecord<'_>,
    prev_hash: String,
    blobs: &mut BlobResolver<F>,
) -> Result<JournalRecord, StoreError>
where
    F: FnMut(&str) -> Result<Option<Vec<u8>>, StoreError>,
{
    let row = JournalRowName { run_id, seq: s.seq };
    let output = match (s.output, s.output_ref) {
        (Some(text), None) => Arc::new(from_json::<Value>(row, "output", text)?),
        (None, Some(hash)) => blobs.resolve(row, "output_ref", hash)?,
        _ => return Err(corrupt(row, "output", "exactly one of `output` and `output_ref` must be set")),
    };
    let stored_ops: Vec<StoredOpIn> = from_json(row, "patch", s.patch)?;
    let mut patch = Vec::with_capacity(stored_ops.len());
    for op in stored_ops {
        let value = match (op.value, op.value_ref) {
            (Some(v), None) => Arc::new(v),
            (None, Some(hash)) => blobs.resolve(row, "patch", &hash)?,
            _ => return Err(corrupt(row, "patch", "an op needs exactly one of `value` and `value_ref`")),
        };
        patch.push(match op.op.as_str() {
            "set" => PatchOp::Set { path: op.path, value },
            "append" => PatchOp::Append { path: op.path, value },
            other => return Err(corrupt(row, "patch", format!("unknown op `{other}`"))),
        });
    }
    Ok(JournalRecord {
        seq: from_sql_u64(row, "seq", s.seq)?,
        generation: from_sql_u32(row, "generation", s.generation)?,
        status: parse_step_status(&s.status)
            .ok_or_else(|| corrupt(row, "status", format!("unknown `{}`", s.status)))?,
        output,
        patch,
        attempts: from_sql_u32(row, "attempts", s.attempts)?,
        tokens: TokenUsage::new(
            from_sql_u64(row, "prompt_tokens", s.prompt_tokens)?,
            from_sql_u64(row, "completion_tokens", s.completion_tokens)?,
        )
        .with_cache(
            from_sql_u64(row, "cached_tokens", s.cached_tokens)?,
            from_sql_u64(row, "cache_write_tokens", s.cache_write_tokens)?,
        )
        .with_reasoning(from_sql_u64(row, "reasoning_tokens", s.reasoning_tokens)?),
        cost_usd: s.cost_usd,
        started_at_ms: s.started_at_ms,
        latency_ms: s.latency_ms,
        metadata: match s.metadata {
            Some(m) => from_json::<Map<String, Value>>(row, "metadata", m)?,
            None => Map::new(),
        },
        feedback: s.feedback.map(str::to_owned),
        prev_hash,
        hash: hash_from_column(s.hash),
        hash_scheme: u8::try_from(s.hash_scheme)
            .ok()
            .and_then(flujo_core::HashScheme::from_number)
            .ok_or_else(|| corrupt(row, "hash_scheme", format!("unknown scheme {}", s.hash_scheme)))?,
        run_id: run_id.to_owned(),
        path: s.path.to_owned(),
        step: s.step.to_owned(),
        kind: s.kind.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(output: Value, patch: Vec<PatchOp>) -> JournalRecord {
        let mut metadata = Map::new();
        metadata.insert("note".into(), json!(["m", 1]));
        let mut r = JournalRecord {
            run_id: "r".into(),
            seq: 0,
            generation: 1,
            path: "0".into(),
            step: "s".into(),
            kind: "step".into(),
            status: StepStatus::Failed,
            output: Arc::new(output),
            feedback: Some("boom".into()),
            patch,
            attempts: 2,
            tokens: TokenUsage::new(3, 4).with_cache(2, 1).with_reasoning(1),
            cost_usd: 0.1,
            started_at_ms: 1_700_000_000_000,
            latency_ms: 0.25,
            metadata,
            prev_hash: String::new(),
            hash: String::new(),
            hash_scheme: flujo_core::HashScheme::CURRENT,
        };
        r.seal("");
        r
    }

    /// The row as the database would give it back.
    fn stored(row: &RecordRow) -> StoredRecord<'_> {
        StoredRecord {
            seq: row.seq,
            path: &row.path,
            step: &row.step,
            kind: &row.kind,
            status: row.status.into(),
            generation: row.generation,
            output: row.output.as_deref(),
            output_ref: row.output_ref.as_deref(),
            patch: &row.patch,
            attempts: row.attempts,
            prompt_tokens: row.prompt_tokens,
            completion_tokens: row.completion_tokens,
            cost_usd: row.cost_usd,
            started_at_ms: row.started_at_ms,
            latency_ms: row.latency_ms,
            metadata: row.metadata.as_deref(),
            feedback: row.feedback.as_deref(),
            hash: &row.hash,
            hash_scheme: row.hash_scheme,
            cached_tokens: row.cached_tokens,
            cache_write_tokens: row.cache_write_tokens,
            reasoning_tokens: row.reasoning_tokens,
        }
    }

    fn try_decode(row: RecordRow) -> Result<JournalRecord, StoreError> {
        let blobs: HashMap<String, Vec<u8>> = row.blobs.iter().map(|b| (b.hash.clone(), b.bytes.to_vec())).collect();
        decode_record(
            &row.run_id,
            stored(&row),
            String::new(),
            &mut BlobResolver::new(|h: &str| Ok(blobs.get(h).cloned())),
        )
    }

    fn decode(row: RecordRow) -> JournalRecord {
        try_decode(row).unwrap()
    }

    #[test]
    fn small_values_stay_inline_and_round_trip() {
        let r = record(
            json!({"a": [1, 2.5, null], "z": "é"}),
            vec![PatchOp::set(vec!["x".into()], json!(null)), PatchOp::set(vec!["y".into()], json!({"k": null}))],
        );
        let row = encode_record(&r).unwrap();
        assert!(row.blobs.is_empty());
        assert!(row.output.is_some() && row.output_ref.is_none());
        let back = decode(row);
        assert_eq!(back, r);
        assert_eq!(back.compute_hash(), r.hash);
    }

    #[test]
    fn large_values_become_one_blob_each_and_round_trip() {
        let big = json!({"text": "x".repeat(INLINE_VALUE_LIMIT)});
        let r = record(
            big.clone(),
            vec![
                PatchOp::set(vec!["doc".into()], big.clone()),
                PatchOp::Append { path: vec!["log".into()], value: Arc::new(json!([big.clone(), 1])) },
                PatchOp::set(vec!["small".into()], json!(1)),
            ],
        );
        let row = encode_record(&r).unwrap();
        assert_eq!(row.blobs.len(), 2, "the same large value is one blob");
        assert!(row.output.is_none() && row.output_ref.is_some());
        assert!(row.payload_len() < 1024, "{}", row.payload_len());
        let back = decode(row);
        assert_eq!(back, r);
        assert!(Arc::ptr_eq(
            &back.output,
            match &back.patch[0] {
                PatchOp::Set { value, .. } => value,
                PatchOp::Append { value, .. } => value,
            }
        ));
    }

    #[test]
    fn the_inline_limit_is_exact() {
        // A JSON string of exactly the limit stays inline; one byte more is a blob.
        let at = Value::String("a".repeat(INLINE_VALUE_LIMIT - 2));
        assert!(!json_exceeds(&at, INLINE_VALUE_LIMIT));
        let over = Value::String("a".repeat(INLINE_VALUE_LIMIT - 1));
        assert!(json_exceeds(&over, INLINE_VALUE_LIMIT));
    }

    #[test]
    fn awkward_floats_round_trip_bit_for_bit() {
        let floats = [0.1 + 0.2, 1e-300, 5e-324, f64::MAX, 2.225_073_858_507_201_4e-308, -0.0, 1.0 / 3.0];
        let r = record(json!(floats), vec![]);
        let back = decode(encode_record(&r).unwrap());
        assert_eq!(back.compute_hash(), r.hash);
        let got: Vec<f64> = serde_json::from_value(back.output.as_ref().clone()).unwrap();
        for (g, w) in got.iter().zip(floats) {
            assert_eq!(g.to_bits(), w.to_bits());
        }
    }

    #[test]
    fn hashes_are_stored_as_bytes_and_damaged_ones_verbatim() {
        let h = blake3::hash(b"x").to_hex().to_string();
        assert_eq!(hash_to_column(&h).len(), 32);
        assert_eq!(hash_from_column(&hash_to_column(&h)), h);
        for damaged in ["not a hash", "", &h.to_uppercase(), &h[..63]] {
            assert_eq!(hash_from_column(&hash_to_column(damaged)), damaged);
        }
    }

    #[test]
    fn corrupt_rows_are_named() {
        let r = record(json!(1), vec![]);
        let mut row = encode_record(&r).unwrap();
        row.patch = "[{\"op\":\"delete\",\"path\":[],\"value\":1}]".into();
        let err = try_decode(row).unwrap_err();
        let StoreError::Corrupt(m) = err else { panic!("{err:?}") };
        assert!(m.contains("seq 0") && m.contains("unknown op `delete`"), "{m}");
    }

    #[test]
    fn missing_blob_is_corrupt() {
        let mut row = encode_record(&record(json!("y".repeat(2 * INLINE_VALUE_LIMIT)), vec![])).unwrap();
        row.blobs.clear();
        let err = try_decode(row).unwrap_err();
        assert!(matches!(&err, StoreError::Corrupt(m) if m.contains("is missing")), "{err:?}");
    }

    #[test]
    fn out_of_range_counters_are_refused() {
        let mut r = record(json!(1), vec![]);
        r.tokens.prompt = u64::MAX;
        assert!(matches!(encode_record(&r), Err(StoreError::Unavailable(m)) if m.contains("prompt_tokens")));
        let mut r = record(json!(1), vec![]);
        r.tokens.reasoning = u64::MAX;
        assert!(matches!(encode_record(&r), Err(StoreError::Unavailable(m)) if m.contains("reasoning_tokens")));
    }

    #[test]
    fn usage_details_round_trip_and_a_negative_one_is_corrupt() {
        let r = record(json!(1), vec![]);
        let row = encode_record(&r).unwrap();
        assert_eq!((row.cached_tokens, row.cache_write_tokens, row.reasoning_tokens), (2, 1, 1));
        let back = decode(row.clone());
        assert_eq!(back.tokens, r.tokens);
        assert_eq!(back.compute_hash(), r.hash);
        let mut bad = row;
        bad.cache_write_tokens = -1;
        let err = try_decode(bad).unwrap_err();
        assert!(matches!(&err, StoreError::Corrupt(m) if m.contains("cache_write_tokens")), "{err:?}");
    }
}

/// An evaluation as the SQL stores keep it: the columns claims and filters read, and the whole record as JSON.
#[derive(Debug)]
pub(crate) struct EvaluationRow {
    pub id: String,
    pub run_id: String,
    pub pipeline: String,
    pub status: &'static str,
    pub lease_expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub record: String,
}

impl EvaluationRow {
    pub(crate) fn of(e: &flujo_core::EvaluationRecord) -> Result<Self, StoreError> {
        let record = serde_json::to_string(e).map_err(|err| {
            StoreError::Unavailable(format!("cannot serialize evaluation '{}': {err}", e.evaluation_id))
        })?;
        Ok(EvaluationRow {
            id: e.evaluation_id.clone(),
            run_id: e.run_id.clone(),
            pipeline: e.pipeline.clone(),
            status: e.status.as_str(),
            lease_expires_at_ms: e.lease_expires_at_ms,
            created_at_ms: e.created_at_ms,
            record,
        })
    }
}
