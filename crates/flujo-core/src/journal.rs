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
    pub run_id: String,
    /// Position in the run's journal, from 0, gapless.
    pub seq: u64,
    /// The run's resume generation when this was written (incremented when a failed run is resumed).
    pub generation: u32,
    pub path: String,
    pub step: String,
    pub kind: String,
    pub status: StepStatus,
    pub output: Arc<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// Context changes made by this execution (for composite steps: by its children, compacted). The
    /// `steps.NAME` entry of the step itself is implied by `output` and not repeated here.
    pub patch: Vec<PatchOp>,
    pub attempts: u32,
    pub tokens: TokenUsage,
    pub cost_usd: f64,
    pub started_at_ms: i64,
    pub latency_ms: f64,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    pub prev_hash: String,
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

    pub fn is_fallback_pending(&self) -> bool {
        self.metadata.get(META_FALLBACK_PENDING).and_then(Value::as_bool).unwrap_or(false)
    }

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
    pub seq: u64,
    pub path: String,
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
