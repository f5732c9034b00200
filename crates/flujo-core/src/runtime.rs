//! Injectable runtime parts: clock, id generator, quota, governance and telemetry. The engine's runtime
//! builder takes any implementation, so tests can use fakes (a fixed clock, sequential ids, …).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;

use crate::result::{PendingPause, RunError, RunStatus, StepResult, TokenUsage};
use crate::step::UsageLimits;

/// Wall-clock time source.
pub trait Clock: Send + Sync {
    /// The current time, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Default, Clone, Copy)]
/// The operating system's wall clock ([`std::time::SystemTime`]).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

/// A clock that returns a fixed, manually advanced time (tests).
#[derive(Debug, Default)]
pub struct FixedClock(pub AtomicU64);

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed) as i64
    }
}

/// Run id source.
pub trait IdGen: Send + Sync {
    /// A new run id; it must differ from every run id in the store, since the run is stored under it.
    fn new_run_id(&self) -> String;
}

/// Sequential ids `run-1`, `run-2`, … (tests).
#[derive(Debug, Default)]
pub struct SequentialIds(AtomicU64);

impl IdGen for SequentialIds {
    fn new_run_id(&self) -> String {
        format!("run-{}", self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// Usage of a call, planned or actual.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Cost, in USD.
    pub cost_usd: f64,
    /// Tokens, prompt and completion together.
    pub tokens: u64,
}

/// A reservation that did not fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{what} limit {limit} would be exceeded: spent {spent} + reserved {reserved} + requested {requested}")]
pub struct QuotaExceeded {
    /// Which limit: `cost` or `token`.
    pub what: &'static str,
    /// The limit (USD, or tokens).
    pub limit: f64,
    /// What was spent before the request (same unit).
    pub spent: f64,
    /// What other calls had reserved and not yet reconciled (same unit).
    pub reserved: f64,
    /// What the refused reservation asked for (same unit).
    pub requested: f64,
}

/// Held budget for one call; give it back to [`Quota::reconcile`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use = "a reservation must be reconciled"]
pub struct Reservation {
    /// The usage held for the call.
    pub planned: Usage,
}

#[derive(Debug, Default)]
struct QuotaState {
    spent: Usage,
    reserved: Usage,
}

/// A run's budget, shared atomically by concurrent branches: Reserve → Execute → Reconcile (SPEC §8).
#[derive(Debug)]
pub struct Quota {
    limits: UsageLimits,
    state: Mutex<QuotaState>,
}

impl Quota {
    /// A quota with `limits`, nothing spent and nothing reserved.
    pub fn new(limits: UsageLimits) -> Self {
        Quota { limits, state: Mutex::new(QuotaState::default()) }
    }

    /// A quota without limits (it still counts what is spent).
    pub fn unlimited() -> Self {
        Quota::new(UsageLimits::default())
    }

    /// The limits this quota enforces.
    pub fn limits(&self) -> UsageLimits {
        self.limits
    }

    /// Reserves `planned` if spent + reserved + planned fits every limit.
    pub fn reserve(&self, planned: Usage) -> Result<Reservation, QuotaExceeded> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(limit) = self.limits.total_cost_usd_limit {
            if st.spent.cost_usd + st.reserved.cost_usd + planned.cost_usd > limit + 1e-12 {
                return Err(QuotaExceeded {
                    what: "cost",
                    limit,
                    spent: st.spent.cost_usd,
                    reserved: st.reserved.cost_usd,
                    requested: planned.cost_usd,
                });
            }
        }
        if let Some(limit) = self.limits.total_tokens_limit {
            if st.spent.tokens + st.reserved.tokens + planned.tokens > limit {
                return Err(QuotaExceeded {
                    what: "token",
                    limit: limit as f64,
                    spent: st.spent.tokens as f64,
                    reserved: st.reserved.tokens as f64,
                    requested: planned.tokens as f64,
                });
            }
        }
        st.reserved.cost_usd += planned.cost_usd;
        st.reserved.tokens += planned.tokens;
        Ok(Reservation { planned })
    }

    /// Releases the reservation and records the actual usage.
    pub fn reconcile(&self, reservation: Reservation, actual: Usage) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.reserved.cost_usd = (st.reserved.cost_usd - reservation.planned.cost_usd).max(0.0);
        st.reserved.tokens = st.reserved.tokens.saturating_sub(reservation.planned.tokens);
        st.spent.cost_usd += actual.cost_usd;
        st.spent.tokens += actual.tokens;
    }

    /// Records usage that was not reserved (e.g. replayed from the journal).
    pub fn record(&self, actual: Usage) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.spent.cost_usd += actual.cost_usd;
        st.spent.tokens += actual.tokens;
    }

    /// The usage recorded so far (reconciled calls and replayed records; open reservations not included).
    pub fn spent(&self) -> Usage {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).spent
    }

    /// Which limit the spending so far exceeds (`"cost 0.12 USD exceeds limit 0.1"`), or `None` while it
    /// fits every limit.
    pub fn exhausted(&self) -> Option<String> {
        let spent = self.spent();
        if let Some(l) = self.limits.total_cost_usd_limit {
            if spent.cost_usd > l + 1e-12 {
                return Some(format!("cost {:.6} USD exceeds limit {l}", spent.cost_usd));
            }
        }
        if let Some(l) = self.limits.total_tokens_limit {
            if spent.tokens > l {
                return Some(format!("{} tokens exceed limit {l}", spent.tokens));
            }
        }
        None
    }
}

/// Creates the quota of each run.
pub trait QuotaManager: Send + Sync {
    /// The quota of one walk of run `run_id` (a run, a resume or a replay), with that walk's `limits`.
    fn quota_for_run(&self, run_id: &str, limits: UsageLimits) -> Arc<Quota>;
}

/// One independent quota per run with the given limits.
#[derive(Debug, Default, Clone, Copy)]
pub struct PerRunQuotas;

impl QuotaManager for PerRunQuotas {
    fn quota_for_run(&self, _run_id: &str, limits: UsageLimits) -> Arc<Quota> {
        Arc::new(Quota::new(limits))
    }
}

/// What kind of call a governance policy is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallKind {
    /// A model agent (`provider:model`): a step's agent, an agentic loop's planner turn, a router or condition
    /// model.
    Model,
    /// A skill called as a step's agent (or as a router, condition or loop-exit skill).
    Skill,
    /// A tool an agent called (`tool_call` of an agentic loop).
    Tool,
}

impl CallKind {
    /// `model`, `skill` or `tool`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Model => "model",
            CallKind::Skill => "skill",
            CallKind::Tool => "tool",
        }
    }
}

/// What a governance policy is asked about (before every agent, tool and skill call): an immutable view.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GovernanceRequest<'a> {
    /// The run's id.
    pub run_id: &'a str,
    /// The path of the step execution (or journaled call) making the call.
    pub path: &'a str,
    /// The name of the step making the call (for a tool call: the agentic step whose agent called it).
    pub step: &'a str,
    /// The skill id, tool id or model (`provider:model`) being called.
    pub target: &'a str,
    /// What `target` is.
    pub kind: CallKind,
    /// The input the call would receive (rendered; as earlier policies in the chain left it).
    pub input: &'a Value,
    /// The run's context as the call sees it (read-only), when the engine has it.
    pub context: Option<&'a crate::ContextSnapshot>,
}

impl<'a> GovernanceRequest<'a> {
    /// A request about the call of `target` with `input` by step `step` at `path` of run `run_id`; its kind is
    /// [`CallKind::Model`] when `target` looks like `provider:model`, else [`CallKind::Skill`]
    /// ([`with_kind`](Self::with_kind) says otherwise).
    pub fn new(run_id: &'a str, path: &'a str, step: &'a str, target: &'a str, input: &'a Value) -> Self {
        let kind = if target.contains(':') { CallKind::Model } else { CallKind::Skill };
        GovernanceRequest { run_id, path, step, target, kind, input, context: None }
    }

    /// The same request about a call of another kind.
    pub fn with_kind(mut self, kind: CallKind) -> Self {
        self.kind = kind;
        self
    }

    /// The same request with the run's context.
    pub fn with_context(mut self, context: &'a crate::ContextSnapshot) -> Self {
        self.context = Some(context);
        self
    }
}

#[derive(Debug, Clone, PartialEq)]
/// What a governance policy decides about one call.
pub enum GovernanceDecision {
    /// The call goes ahead, with its input unchanged.
    Allow,
    /// The call is not made and the run stops (error kind `governance_denied`), with this reason; no retry,
    /// no fallback.
    Deny(String),
    /// The call goes ahead with `input` instead (e.g. PII scrubbed); `note` says what was changed, for the
    /// journal (never the values that were removed).
    Modify {
        /// The input the call receives instead.
        input: Value,
        /// What was changed (`scrubbed: email x2`).
        note: String,
    },
}

#[async_trait]
/// A check before every agent, tool and skill call (SPEC §11). The engine asks its policies in order; the
/// first denial ends the chain and stops the run.
pub trait GovernancePolicy: Send + Sync {
    /// The policy's name, quoted in the message of a denial and in the journal.
    fn name(&self) -> &str;
    /// Decides about one call.
    async fn evaluate(&self, request: &GovernanceRequest<'_>) -> GovernanceDecision;
}

/// Events of a run, in the order they happen (streamed to `--live`, telemetry, tests).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RunEvent {
    /// A walk of the run starts.
    RunStarted {
        /// The run's id.
        run_id: String,
        /// The pipeline's name.
        pipeline: String,
        /// True when the walk continues a stored run (a resume or a replay); false for a new run.
        resumed: bool,
    },
    /// A step execution starts running (a step replayed from its record sends only [`RunEvent::StepFinished`]).
    StepStarted {
        /// The run's id.
        run_id: String,
        /// The path of the step execution.
        path: String,
        /// The step's name.
        step: String,
        /// The step's kind name ([`crate::step::StepKind::name`]).
        kind: String,
    },
    /// A step execution finished, run live or replayed from its journal record.
    StepFinished {
        /// The run's id.
        run_id: String,
        /// The execution's result.
        result: StepResult,
        /// True when the result comes from the journal and nothing was executed.
        replayed: bool,
    },
    /// The walk ends with the run paused (followed by [`RunEvent::RunFinished`]).
    Paused {
        /// The run's id.
        run_id: String,
        /// The pauses awaiting answers.
        pending: Vec<PendingPause>,
    },
    /// The walk ended (completed, failed or paused): the last event of a walk. Not sent when the store
    /// fails.
    RunFinished {
        /// The run's id.
        run_id: String,
        /// The pipeline's name.
        pipeline: String,
        /// The run's status after the walk.
        status: RunStatus,
        /// Why the run failed (`status: failed`): the [`crate::result::RunError`] of its result, whose
        /// `kind` is `step_failed` or the interrupt that stopped it (`usage_limit_exceeded`,
        /// `governance_denied`, …); `None` otherwise.
        error: Option<RunError>,
        /// The tokens of the steps in the result's `step_history`, added up.
        tokens: TokenUsage,
        /// What the whole run has spent, in USD (the result's `total_cost_usd`).
        cost_usd: f64,
    },
    /// A piece of a model's answer as it is generated (only when the run asked for token streaming:
    /// `RunOptions::stream_tokens`). The answer itself still arrives whole in the step's result.
    TokenDelta {
        /// The run's id.
        run_id: String,
        /// The path of the step execution (or journaled call) the event belongs to.
        path: String,
        /// The step's name.
        step: String,
        /// The piece of text.
        delta: String,
    },
    /// A further request of the same model call starts (a re-ask of structured output, or a step-level
    /// retry): text deltas that follow belong to this attempt.
    ModelAttempt {
        /// The run's id.
        run_id: String,
        /// The path of the step execution (or journaled call) the event belongs to.
        path: String,
        /// The step's name.
        step: String,
        /// The attempt that starts: 2, 3, …
        attempt: u32,
    },
    /// A model asked for a tool call (`arguments`: compact JSON, possibly shortened).
    ToolCall {
        /// The run's id.
        run_id: String,
        /// The path of the step execution (or journaled call) the event belongs to.
        path: String,
        /// The step's name.
        step: String,
        /// The tool called: its skill id, or the name the model gave it.
        tool: String,
        /// The call's arguments, compact JSON (possibly shortened).
        arguments: String,
    },
    /// A tool call finished; `ok: false` when it failed (the error went back to the model).
    ToolResult {
        /// The run's id.
        run_id: String,
        /// The path of the step execution (or journaled call) the event belongs to.
        path: String,
        /// The step's name.
        step: String,
        /// The tool called: its skill id, or the name the model gave it.
        tool: String,
        /// False when the call failed.
        ok: bool,
    },
}

/// Receives run events. Must be cheap: it is called on the step hot path.
pub trait Telemetry: Send + Sync {
    /// Receives one event; called for every event of a run, in order.
    fn on_event(&self, event: &RunEvent);
}

#[cfg(test)]
mod quota_props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Call {
        planned_cost: f64,
        planned_tokens: u64,
        /// Actual usage as a fraction of the planned upper bound (reservations are upper bounds).
        actual_frac: f64,
    }

    fn call() -> impl Strategy<Value = Call> {
        (0.0f64..2.0, 0u64..500, 0.0f64..=1.0).prop_map(|(c, t, f)| Call {
            planned_cost: c,
            planned_tokens: t,
            actual_frac: f,
        })
    }

    proptest! {
        /// Reserve → Execute → Reconcile never spends more than the limit, whatever the interleaving of
        /// concurrent callers, as long as actual usage stays within the reservation.
        #[test]
        fn spend_never_exceeds_the_limit(
            limit_cost in 0.0f64..10.0,
            limit_tokens in 0u64..3000,
            calls in proptest::collection::vec(call(), 0..60),
            threads in 1usize..6,
        ) {
            let quota = Arc::new(Quota::new(UsageLimits {
                total_cost_usd_limit: Some(limit_cost),
                total_tokens_limit: Some(limit_tokens),
            }));
            let chunks: Vec<Vec<Call>> = (0..threads)
                .map(|t| calls.iter().skip(t).step_by(threads).cloned().collect())
                .collect();
            std::thread::scope(|s| {
                for chunk in &chunks {
                    let quota = quota.clone();
                    s.spawn(move || {
                        for c in chunk {
                            let planned = Usage { cost_usd: c.planned_cost, tokens: c.planned_tokens };
                            if let Ok(r) = quota.reserve(planned) {
                                let actual = Usage {
                                    cost_usd: c.planned_cost * c.actual_frac,
                                    tokens: (c.planned_tokens as f64 * c.actual_frac) as u64,
                                };
                                quota.reconcile(r, actual);
                            }
                        }
                    });
                }
            });
            let spent = quota.spent();
            prop_assert!(spent.cost_usd <= limit_cost + 1e-9, "cost {} > {}", spent.cost_usd, limit_cost);
            prop_assert!(spent.tokens <= limit_tokens, "tokens {} > {}", spent.tokens, limit_tokens);
            prop_assert!(quota.exhausted().is_none());
        }

        /// A reservation that fits is granted; one that does not is refused and changes nothing.
        #[test]
        fn refusal_leaves_the_quota_unchanged(limit in 0.0f64..5.0, first in 0.0f64..5.0, second in 0.0f64..5.0) {
            let quota = Quota::new(UsageLimits { total_cost_usd_limit: Some(limit), total_tokens_limit: None });
            let r1 = quota.reserve(Usage { cost_usd: first, tokens: 0 });
            prop_assert_eq!(r1.is_ok(), first <= limit + 1e-12);
            let before = quota.spent();
            let r2 = quota.reserve(Usage { cost_usd: second, tokens: 0 });
            let held = if r1.is_ok() { first } else { 0.0 };
            prop_assert_eq!(r2.is_ok(), held + second <= limit + 1e-12);
            prop_assert_eq!(quota.spent(), before);
        }
    }
}
