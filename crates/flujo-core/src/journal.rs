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
    /// The hash of the run's previous record ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// blake3(`prev_hash` ‖ [`JournalRecord::canonical_bytes`]), hex; set by [`JournalRecord::seal`].
    pub hash: String,
}

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
    /// The canonical bytes the hash covers (every field except `prev_hash` and `hash`).
    pub fn canonical_bytes(&self) -> Vec<u8> {
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

    /// blake3(prev_hash ‖ canonical bytes), hex.
    pub fn compute_hash(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(self.prev_hash.as_bytes());
        h.update(&self.canonical_bytes());
        h.finalize().to_hex().to_string()
    }

    /// Sets `prev_hash` and `hash`.
    pub fn seal(&mut self, prev_hash: &str) {
        self.prev_hash = prev_hash.to_owned();
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
    fn removed_record_breaks_the_chain() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(verify_chain(&c).unwrap_err().seq, 2);
    }
}
