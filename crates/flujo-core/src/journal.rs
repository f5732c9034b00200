//! Journal records: one per finished step execution, hash-chained for tamper evidence (SPEC §2.2, §2.5).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::patch::PatchOp;
use crate::result::{StepResult, StepStatus, TokenUsage};

/// The genesis `prev_hash` of a run's first record.
pub const GENESIS_HASH: &str = "";

/// Metadata key on a failed record whose step goes on with its fallback (the primary is not re-run on replay).
pub const META_FALLBACK_PENDING: &str = "fallback_pending";

/// One committed step execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    /// The run the record belongs to.
    pub run_id: String,
    /// Position in the run's journal, from 0, gapless.
    pub seq: u64,
    /// The run's resume generation when this was written (incremented when a failed run is resumed).
    pub generation: u32,
    /// The path of the step execution (`2/loop:3/0`); replay looks records up by it.
    pub path: String,
    /// The step's name (for a call journaled inside a step, `STEP#KIND`, e.g. `plan#model_turn`).
    pub step: String,
    /// The step's kind name ([`crate::step::StepKind::name`]), or the kind of a journaled call inside a step:
    /// `decision` (a router, condition or exit skill), `model_turn`, `tool_call`, `proposer`, `evaluator`.
    pub kind: String,
    /// Whether the execution succeeded.
    pub status: StepStatus,
    /// The execution's output (values under secret-named keys are `[REDACTED]`).
    pub output: Arc<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Why the execution failed (or a validator's message); `None` on success.
    pub feedback: Option<String>,
    /// Context changes made by this execution (for composite steps: by its children, compacted). The
    /// `steps.NAME` entry of the step itself is implied by `output` and not repeated here.
    pub patch: Vec<PatchOp>,
    /// Attempts made (see [`StepResult::attempts`]).
    pub attempts: u32,
    /// Tokens the execution used (a composite: its children's, added up).
    pub tokens: TokenUsage,
    /// What the execution cost, in USD (a composite: its children's cost, added up).
    pub cost_usd: f64,
    /// When the execution started, in milliseconds since the Unix epoch (the runner's [`crate::runtime::Clock`]).
    pub started_at_ms: i64,
    /// Wall-clock duration of the execution, in milliseconds.
    pub latency_ms: f64,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    /// Facts about the execution (see [`StepResult::metadata`]); [`META_FALLBACK_PENDING`] marks a failure
    /// whose fallback runs next. Empty maps are not serialized.
    pub metadata: Map<String, Value>,
    /// The hash of the run's previous record ([`GENESIS_HASH`] for the first). Stores do not keep it: it is
    /// the previous record's `hash`, filled in when a journal is loaded (and covered by this record's hash).
    pub prev_hash: String,
    /// The record's hash, hex: blake3 over `prev_hash` and [`JournalRecord::canonical_bytes`], in the
    /// encoding `hash_scheme` names; set by [`JournalRecord::seal`].
    pub hash: String,
    /// How `hash` was computed. Records written before schemes were versioned (and JSON without the field)
    /// are [`HashScheme::V1`]; [`JournalRecord::seal`] writes [`HashScheme::CURRENT`].
    #[serde(default)]
    pub hash_scheme: HashScheme,
}

/// How a journal record's hash is computed. Every scheme is blake3 over the previous record's hash and every
/// other field; they differ in how the fields are encoded. A journal may mix schemes (a run started by an
/// older Flujo and resumed by a newer one); each record names its own, so old journals keep verifying.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
#[non_exhaustive]
pub enum HashScheme {
    /// `blake3(prev_hash ‖ canonical JSON of the fields)` (Flujo before schema 10 of the SQLite store).
    #[default]
    V1,
    /// `blake3("flujo.journal.v2" ‖ prev_hash ‖ compact binary encoding of the fields)`: every string and
    /// JSON value length-prefixed, integers fixed-width little-endian, floats by their bits (non-finite
    /// floats as one NaN and -0 as 0, so that stores which cannot keep them still verify). About a third of
    /// the work of V1 for a typical step.
    V2,
}

impl HashScheme {
    /// The scheme new records are sealed with.
    pub const CURRENT: HashScheme = HashScheme::V2;

    /// The scheme's number (1, 2, …), as stored.
    pub const fn number(self) -> u8 {
        match self {
            HashScheme::V1 => 1,
            HashScheme::V2 => 2,
        }
    }

    /// The scheme with this number, if this build knows it.
    pub const fn from_number(n: u8) -> Option<HashScheme> {
        match n {
            1 => Some(HashScheme::V1),
            2 => Some(HashScheme::V2),
            _ => None,
        }
    }
}

impl From<HashScheme> for u8 {
    fn from(s: HashScheme) -> u8 {
        s.number()
    }
}

impl TryFrom<u8> for HashScheme {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, String> {
        HashScheme::from_number(n).ok_or_else(|| format!("unknown journal hash scheme {n}"))
    }
}

/// Domain tag of [`HashScheme::V2`] hashes.
const V2_TAG: &[u8] = b"flujo.journal.v2";

#[derive(Serialize)]
struct RecordBody<'a> {
    run_id: &'a str,
    seq: u64,
    generation: u32,
    path: &'a str,
    step: &'a str,
    kind: &'a str,
    status: StepStatus,
    output: &'a Value,
    feedback: &'a Option<String>,
    patch: &'a [PatchOp],
    attempts: u32,
    tokens: TokenUsage,
    cost_usd: f64,
    started_at_ms: i64,
    latency_ms: f64,
    metadata: &'a Map<String, Value>,
}

impl JournalRecord {
    /// The canonical bytes the hash covers (every field except `prev_hash`, `hash` and `hash_scheme`), in
    /// the encoding of the record's `hash_scheme`.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        match self.hash_scheme {
            HashScheme::V1 => self.canonical_json(),
            HashScheme::V2 => {
                let mut out = Vec::with_capacity(256);
                self.encode_v2(&mut out);
                out
            }
        }
    }

    /// [`HashScheme::V1`]'s canonical bytes: the fields as one JSON object.
    fn canonical_json(&self) -> Vec<u8> {
        let body = RecordBody {
            run_id: &self.run_id,
            seq: self.seq,
            generation: self.generation,
            path: &self.path,
            step: &self.step,
            kind: &self.kind,
            status: self.status,
            output: &self.output,
            feedback: &self.feedback,
            patch: &self.patch,
            attempts: self.attempts,
            tokens: self.tokens,
            cost_usd: self.cost_usd,
            started_at_ms: self.started_at_ms,
            latency_ms: self.latency_ms,
            metadata: &self.metadata,
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// [`HashScheme::V2`]'s canonical bytes, appended to `out`.
    fn encode_v2(&self, out: &mut Vec<u8>) {
        put_str(out, &self.run_id);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        put_str(out, &self.path);
        put_str(out, &self.step);
        put_str(out, &self.kind);
        out.push(match self.status {
            StepStatus::Completed => 0,
            StepStatus::Failed => 1,
        });
        put_json(out, self.output.as_ref());
        match &self.feedback {
            None => out.push(0),
            Some(f) => {
                out.push(1);
                put_str(out, f);
            }
        }
        put_json(out, &self.patch);
        out.extend_from_slice(&self.attempts.to_le_bytes());
        let t = &self.tokens;
        for n in [t.prompt, t.completion, t.cached, t.cache_write, t.reasoning] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        put_f64(out, self.cost_usd);
        out.extend_from_slice(&self.started_at_ms.to_le_bytes());
        put_f64(out, self.latency_ms);
        put_json(out, &self.metadata);
    }

    /// The record's hash under its `hash_scheme`, hex (see [`HashScheme`]).
    pub fn compute_hash(&self) -> String {
        let digest = match self.hash_scheme {
            HashScheme::V1 => {
                let mut h = blake3::Hasher::new();
                h.update(self.prev_hash.as_bytes());
                h.update(&self.canonical_json());
                h.finalize()
            }
            HashScheme::V2 => {
                let mut buf = Vec::with_capacity(256);
                buf.extend_from_slice(V2_TAG);
                put_str(&mut buf, &self.prev_hash);
                self.encode_v2(&mut buf);
                blake3::hash(&buf)
            }
        };
        digest.to_hex().to_string()
    }

    /// Sets `prev_hash`, `hash_scheme` ([`HashScheme::CURRENT`]) and `hash`.
    pub fn seal(&mut self, prev_hash: &str) {
        self.seal_with(prev_hash, HashScheme::CURRENT);
    }

    /// Sets `prev_hash`, `hash_scheme` and `hash` under an explicit scheme (tests of journals written by
    /// older versions; new records use [`JournalRecord::seal`]).
    pub fn seal_with(&mut self, prev_hash: &str, scheme: HashScheme) {
        self.prev_hash = prev_hash.to_owned();
        self.hash_scheme = scheme;
        self.hash = self.compute_hash();
    }

    /// True when the record is a primary's failure whose fallback runs next (metadata
    /// [`META_FALLBACK_PENDING`] is `true`): on replay the primary is not run again.
    pub fn is_fallback_pending(&self) -> bool {
        self.metadata.get(META_FALLBACK_PENDING).and_then(Value::as_bool).unwrap_or(false)
    }

    /// The record as a [`StepResult`] (what a replayed execution reports).
    pub fn to_step_result(&self) -> StepResult {
        StepResult {
            name: self.step.clone(),
            path: self.path.clone(),
            kind: self.kind.clone(),
            status: self.status,
            output: self.output.clone(),
            attempts: self.attempts,
            latency_ms: self.latency_ms,
            tokens: self.tokens,
            cost_usd: self.cost_usd,
            feedback: self.feedback.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

/// A length-prefixed string.
fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A length-prefixed JSON value (the same text `serde_json` writes everywhere else: key order kept).
fn put_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let at = out.len();
    out.extend_from_slice(&[0; 8]);
    // Writing JSON into a Vec cannot fail for these types (string keys only); an error would leave a
    // truncated value, which still hashes deterministically.
    let _ = serde_json::to_writer(&mut *out, value);
    let len = (out.len() - at - 8) as u64;
    out[at..at + 8].copy_from_slice(&len.to_le_bytes());
}

/// A float by its bits, canonical: every non-finite value as one NaN (stores keep them as NULL), -0 as 0.
fn put_f64(out: &mut Vec<u8>, x: f64) {
    let x = if !x.is_finite() {
        f64::NAN
    } else if x == 0.0 {
        0.0
    } else {
        x
    };
    out.extend_from_slice(&x.to_bits().to_le_bytes());
}

/// The first broken link found by [`verify_chain`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("journal record seq {seq} (path {path}) is broken: {reason}")]
pub struct ChainError {
    /// The broken record's position in the journal.
    pub seq: u64,
    /// The broken record's path.
    pub path: String,
    /// What is wrong: an unexpected `seq`, a `prev_hash` that does not match, or content that does not
    /// match its hash.
    pub reason: String,
}

/// Recomputes the hash chain of a run's records (in seq order) and names the first broken record.
pub fn verify_chain(records: &[JournalRecord]) -> Result<(), ChainError> {
    let mut prev = GENESIS_HASH.to_owned();
    for (i, r) in records.iter().enumerate() {
        let broken = |reason: String| ChainError { seq: r.seq, path: r.path.clone(), reason };
        if r.seq != i as u64 {
            return Err(broken(format!("expected seq {i}, found {}", r.seq)));
        }
        if r.prev_hash != prev {
            return Err(broken("prev_hash does not match the previous record's hash".to_owned()));
        }
        if r.compute_hash() != r.hash {
            return Err(broken("content does not match its hash".to_owned()));
        }
        prev = r.hash.clone();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(seq: u64, out: Value) -> JournalRecord {
        JournalRecord {
            run_id: "r".into(),
            seq,
            generation: 0,
            path: seq.to_string(),
            step: format!("s{seq}"),
            kind: "step".into(),
            status: StepStatus::Completed,
            output: Arc::new(out),
            feedback: None,
            patch: vec![],
            attempts: 1,
            tokens: TokenUsage::default(),
            cost_usd: 0.0,
            started_at_ms: 0,
            latency_ms: 0.5,
            metadata: Map::new(),
            prev_hash: String::new(),
            hash: String::new(),
            hash_scheme: HashScheme::CURRENT,
        }
    }

    fn chain(n: u64) -> Vec<JournalRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        (0..n)
            .map(|i| {
                let mut r = rec(i, json!(i));
                r.seal(&prev);
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies_and_survives_json_round_trip() {
        let c = chain(5);
        verify_chain(&c).unwrap();
        let text = serde_json::to_string(&c).unwrap();
        let back: Vec<JournalRecord> = serde_json::from_str(&text).unwrap();
        verify_chain(&back).unwrap();
    }

    #[test]
    fn tampered_output_names_the_record() {
        let mut c = chain(5);
        c[2].output = Arc::new(json!("evil"));
        let err = verify_chain(&c).unwrap_err();
        assert_eq!(err.seq, 2);
        assert!(err.reason.contains("content"));
    }

    #[test]
    fn schemes_mix_in_one_chain_and_each_record_verifies_under_its_own() {
        let mut c = chain(4);
        let mut prev = GENESIS_HASH.to_owned();
        for (i, r) in c.iter_mut().enumerate() {
            let scheme = if i < 2 { HashScheme::V1 } else { HashScheme::V2 };
            r.seal_with(&prev, scheme);
            prev.clone_from(&r.hash);
        }
        verify_chain(&c).unwrap();
        // The same content hashes differently under each scheme, and a record claiming the other scheme fails.
        let mut other = c[1].clone();
        other.hash_scheme = HashScheme::V2;
        assert_ne!(other.compute_hash(), c[1].hash);
        c[1].hash_scheme = HashScheme::V2;
        assert!(verify_chain(&c).unwrap_err().reason.contains("content"));
    }

    #[test]
    fn v2_covers_every_field_and_canonicalizes_floats() {
        let mut base = rec(0, json!({"a": 1}));
        base.seal(GENESIS_HASH);
        let h = base.hash.clone();
        type Change = Box<dyn Fn(&mut JournalRecord)>;
        let changes: Vec<Change> = vec![
            Box::new(|r| r.run_id.push('x')),
            Box::new(|r| r.seq += 1),
            Box::new(|r| r.generation += 1),
            Box::new(|r| r.path.push('x')),
            Box::new(|r| r.step.push('x')),
            Box::new(|r| r.kind.push('x')),
            Box::new(|r| r.status = StepStatus::Failed),
            Box::new(|r| r.output = Arc::new(json!({"a": 2}))),
            Box::new(|r| r.feedback = Some(String::new())),
            Box::new(|r| r.patch.push(PatchOp::set(vec!["k".into()], json!(1)))),
            Box::new(|r| r.attempts += 1),
            Box::new(|r| r.tokens = TokenUsage::new(1, 0)),
            Box::new(|r| r.tokens = TokenUsage::new(0, 0).with_cache(1, 0)),
            Box::new(|r| r.tokens = TokenUsage::new(0, 0).with_cache(0, 1)),
            Box::new(|r| r.tokens = TokenUsage::new(0, 0).with_reasoning(1)),
            Box::new(|r| r.cost_usd = 0.5),
            Box::new(|r| r.started_at_ms = 1),
            Box::new(|r| r.latency_ms = 0.25),
            Box::new(|r| {
                r.metadata.insert("k".into(), json!(true));
            }),
            Box::new(|r| r.prev_hash.push('0')),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut r = base.clone();
            change(&mut r);
            assert_ne!(r.compute_hash(), h, "change {i} is not covered");
        }
        // Length prefixes: moving a byte from one string to the next changes the hash.
        let (mut a, mut b) = (base.clone(), base.clone());
        a.path = "ab".into();
        a.step = "c".into();
        b.path = "a".into();
        b.step = "bc".into();
        assert_ne!(a.compute_hash(), b.compute_hash());
        // What a store cannot keep exactly hashes the same: every non-finite float, and -0.
        let (mut inf, mut nan) = (base.clone(), base.clone());
        inf.latency_ms = f64::INFINITY;
        nan.latency_ms = f64::NAN;
        assert_eq!(inf.compute_hash(), nan.compute_hash());
        let (mut neg, mut pos) = (base.clone(), base.clone());
        neg.cost_usd = -0.0;
        pos.cost_usd = 0.0;
        assert_eq!(neg.compute_hash(), pos.compute_hash());
    }

    #[test]
    fn the_scheme_round_trips_through_json_and_defaults_to_v1() {
        let c = chain(2);
        let text = serde_json::to_value(&c[0]).unwrap();
        assert_eq!(text["hash_scheme"], json!(2));
        let mut old = text.clone();
        old.as_object_mut().unwrap().remove("hash_scheme");
        let back: JournalRecord = serde_json::from_value(old).unwrap();
        assert_eq!(back.hash_scheme, HashScheme::V1);
        let mut bad = text;
        bad["hash_scheme"] = json!(9);
        assert!(serde_json::from_value::<JournalRecord>(bad).is_err());
    }

    #[test]
    fn removed_record_breaks_the_chain() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(verify_chain(&c).unwrap_err().seq, 2);
    }
}
