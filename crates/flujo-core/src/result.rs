//! Results: step and run outcomes as the API, the CLI's `--json` and the journal report them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Status of a run (SPEC §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The run waits in its queue ([`crate::store::RunRecord::queue`]) for a worker to claim it.
    Queued,
    /// A process is walking the run (or was, until it was killed: resume takes such a run over).
    Running,
    /// The run waits for answers to its pending pauses.
    Paused,
    /// The run finished and its steps succeeded; final.
    Completed,
    /// The run ended with a failed step or an interrupt (budget, pricing, …); resuming it runs the failed
    /// step again.
    Failed,
    /// The run was cancelled; final: it cannot be resumed.
    Cancelled,
}

impl RunStatus {
    /// The status as stored and printed: `queued`, `running`, `paused`, `completed`, `failed` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// The status named by `s` (the text [`RunStatus::as_str`] returns), or `None` for any other text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RunStatus::Queued,
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
            (Running, Paused | Completed | Failed | Cancelled | Queued)
                | (Queued, Running | Cancelled)
                | (Paused, Running | Cancelled | Queued)
                | (Failed, Running)
                | (Running, Running)
        )
    }
}

/// Status of one finished step execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// The execution succeeded.
    Completed,
    /// The execution failed; the result's `feedback` says why.
    Failed,
}

/// Token usage of a step or run.
///
/// `prompt` counts every input token, the cached ones included; `cached` (read from a provider's prompt
/// cache) and `cache_write` (written to it) are parts of `prompt`, priced at their own rates. `completion`
/// counts every output token; `reasoning` (a reasoning model's hidden thinking) is part of it. The detail
/// fields are 0 when the provider does not report them, and are left out of JSON when 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TokenUsage {
    /// Tokens of the prompts (input) sent to models.
    pub prompt: u64,
    /// Tokens of the completions (output) models generated.
    pub completion: u64,
    /// Of `prompt`: tokens read from the provider's prompt cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached: u64,
    /// Of `prompt`: tokens written to the provider's prompt cache (Anthropic, Bedrock).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write: u64,
    /// Of `completion`: reasoning ("thinking") tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TokenUsage {
    /// `prompt` prompt tokens and `completion` completion tokens.
    pub const fn new(prompt: u64, completion: u64) -> Self {
        TokenUsage { prompt, completion, cached: 0, cache_write: 0, reasoning: 0 }
    }
    /// These counts with `cached` cache-read and `cache_write` cache-write tokens (parts of `prompt`).
    pub const fn with_cache(mut self, cached: u64, cache_write: u64) -> Self {
        self.cached = cached;
        self.cache_write = cache_write;
        self
    }
    /// These counts with `reasoning` reasoning tokens (part of `completion`).
    pub const fn with_reasoning(mut self, reasoning: u64) -> Self {
        self.reasoning = reasoning;
        self
    }
    /// Prompt and completion tokens together.
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: TokenUsage) {
        self.prompt += other.prompt;
        self.completion += other.completion;
        self.cached += other.cached;
        self.cache_write += other.cache_write;
        self.reasoning += other.reasoning;
    }
    /// True when a detail count (cached, cache write, reasoning) is set.
    pub fn has_details(&self) -> bool {
        self.cached != 0 || self.cache_write != 0 || self.reasoning != 0
    }
}

/// One entry of `step_history` (SPEC §13).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepResult {
    /// The step's name.
    pub name: String,
    /// The path of the execution in the run (`2/loop:3/0`): the key of its journal record.
    pub path: String,
    /// The step's kind name ([`crate::step::StepKind::name`]): `step`, `loop`, …, or a custom kind.
    pub kind: String,
    /// Whether the execution succeeded.
    pub status: StepStatus,
    /// The step's output; on failure, whatever output it had (often `null`).
    pub output: Arc<Value>,
    /// Attempts made: up to `max_retries + 1` for a `step`, 1 for most other kinds; a fallback's attempts
    /// are added.
    pub attempts: u32,
    /// Wall-clock duration of the execution, in milliseconds.
    pub latency_ms: f64,
    /// Tokens the execution used (a composite: its children's, added up).
    pub tokens: TokenUsage,
    /// What the execution cost, in USD (a composite: its children's cost, added up).
    pub cost_usd: f64,
    /// Failure message (or validator feedback); `None` on success.
    pub feedback: Option<String>,
    /// Facts about the execution recorded by its policy and the engine (`fallback_triggered`, `cache_hit`,
    /// `iterations`, `model`, `finish_reason`, …).
    pub metadata: Map<String, Value>,
}

impl StepResult {
    /// A result of `kind` for the step `name` at `path` with `status` and `output`: one attempt, no
    /// latency, tokens, cost, feedback or metadata (set those fields after).
    pub fn new(
        name: impl Into<String>,
        path: impl Into<String>,
        kind: impl Into<String>,
        status: StepStatus,
        output: Arc<Value>,
    ) -> Self {
        StepResult {
            name: name.into(),
            path: path.into(),
            kind: kind.into(),
            status,
            output,
            attempts: 1,
            latency_ms: 0.0,
            tokens: TokenUsage::default(),
            cost_usd: 0.0,
            feedback: None,
            metadata: Map::new(),
        }
    }

    /// True when the status is [`StepStatus::Completed`].
    pub fn succeeded(&self) -> bool {
        self.status == StepStatus::Completed
    }
}

/// A human-input request that is waiting for an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PendingPause {
    /// Stable id of the pause: the path of the hitl step execution.
    pub pause_id: String,
    /// The name of the `hitl` step that paused.
    pub step: String,
    /// The step's message to the human, rendered.
    pub message: String,
    /// JSON Schema the answer must satisfy; `None` accepts any answer.
    pub input_schema: Option<Value>,
    /// The answer given while the run waits in its queue for a worker (a run with a queue goes back to it
    /// when a pause is answered; the worker that claims it takes the answer from here). `None`: unanswered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Value>,
}

impl PendingPause {
    /// A pause `pause_id` of the hitl step `step`, asking `message`; `input_schema` constrains the answer.
    pub fn new(
        pause_id: impl Into<String>,
        step: impl Into<String>,
        message: impl Into<String>,
        input_schema: Option<Value>,
    ) -> Self {
        PendingPause {
            pause_id: pause_id.into(),
            step: step.into(),
            message: message.into(),
            input_schema,
            answer: None,
        }
    }
}

/// Error summary of a failed run: a stable machine-readable kind plus a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunError {
    /// Stable machine-readable kind: `step_failed`, or the [`crate::error::Interrupt::kind`] that ended the run
    /// (`usage_limit_exceeded`, `pricing_not_configured`, …).
    pub kind: String,
    /// Human-readable description of the failure.
    pub message: String,
}

impl RunError {
    /// An error of the stable `kind` (`step_failed`, `usage_limit_exceeded`, …) saying `message`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        RunError { kind: kind.into(), message: message.into() }
    }
}

/// The outcome of `run` / `resume` (also the CLI's `--json` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunResult {
    /// The run's id.
    pub run_id: String,
    /// The name of the pipeline that ran.
    pub pipeline: String,
    /// The run's status after this walk: `completed`, `failed` or `paused`.
    pub status: RunStatus,
    /// The output of the last top-level step that ran (also when it failed); `None` while paused, and when
    /// the run was stopped before a step produced one.
    pub output: Option<Value>,
    /// Why the run failed; `None` unless the status is `failed`.
    pub error: Option<RunError>,
    /// The pauses awaiting answers when the status is `paused`; empty otherwise.
    pub pending: Vec<PendingPause>,
    /// Results of the top-level steps, in order (nested executions are in the journal).
    pub step_history: Vec<StepResult>,
    /// What the whole run has spent, in USD (replayed steps included).
    pub total_cost_usd: f64,
    /// Tokens the whole run has used, prompt and completion together (replayed steps included).
    pub total_tokens: u64,
    /// The run's context at the end of the walk, as JSON: its fields plus `steps`.
    pub context: Value,
}

impl RunResult {
    /// The result of run `run_id` of `pipeline` with `status`: no output, error, pauses or step history,
    /// nothing spent, and a `null` context (set those fields after).
    pub fn new(run_id: impl Into<String>, pipeline: impl Into<String>, status: RunStatus) -> Self {
        RunResult {
            run_id: run_id.into(),
            pipeline: pipeline.into(),
            status,
            output: None,
            error: None,
            pending: Vec::new(),
            step_history: Vec::new(),
            total_cost_usd: 0.0,
            total_tokens: 0,
            context: Value::Null,
        }
    }
}
