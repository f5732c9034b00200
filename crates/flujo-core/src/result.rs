//! Results: step and run outcomes as the API, the CLI's `--json` and the journal report them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Status of a run (SPEC §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "paused" => RunStatus::Paused,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }

    /// Allowed lifecycle transitions (an explicit state machine: anything else is an error value).
    pub fn can_become(self, next: RunStatus) -> bool {
        use RunStatus::*;
        matches!(
            (self, next),
            (Running, Paused | Completed | Failed | Cancelled)
                | (Paused, Running | Cancelled)
                | (Failed, Running)
                | (Running, Running)
        )
    }
}

/// Status of one finished step execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Completed,
    Failed,
}

/// Token usage of a step or run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt: u64,
    pub completion: u64,
}

impl TokenUsage {
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }
    pub fn add(&mut self, other: TokenUsage) {
        self.prompt += other.prompt;
        self.completion += other.completion;
    }
}

/// One entry of `step_history` (SPEC §13).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub name: String,
    pub path: String,
    pub kind: String,
    pub status: StepStatus,
    pub output: Arc<Value>,
    pub attempts: u32,
    pub latency_ms: f64,
    pub tokens: TokenUsage,
    pub cost_usd: f64,
    /// Failure message (or validator feedback); `None` on success.
    pub feedback: Option<String>,
    pub metadata: Map<String, Value>,
}

impl StepResult {
    pub fn succeeded(&self) -> bool {
        self.status == StepStatus::Completed
    }
}

/// A human-input request that is waiting for an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingPause {
    /// Stable id of the pause: the path of the hitl step execution.
    pub pause_id: String,
    pub step: String,
    pub message: String,
    pub input_schema: Option<Value>,
}

/// Error summary of a failed run: a stable machine-readable kind plus a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunError {
    pub kind: String,
    pub message: String,
}

/// The outcome of `run` / `resume` (also the CLI's `--json` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub run_id: String,
    pub pipeline: String,
    pub status: RunStatus,
    pub output: Option<Value>,
    pub error: Option<RunError>,
    pub pending: Vec<PendingPause>,
    /// Results of the top-level steps, in order (nested executions are in the journal).
    pub step_history: Vec<StepResult>,
    pub total_cost_usd: f64,
    pub total_tokens: u64,
    pub context: Value,
}
