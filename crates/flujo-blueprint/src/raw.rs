//! The raw blueprint: the YAML's shape in Rust types, each reference still unresolved and each interesting
//! value still carrying its source location (the "low" side of parse-then-validate).
//!
//! [`crate::decode`] builds these from the YAML tree (reporting structural problems), [`crate::check`] runs
//! the semantic rules over them, and [`crate::lower`] resolves agents, imports and skills into the validated
//! [`flujo_core::Pipeline`].

use flujo_core::{
    InputTo, MergeStrategy, OnBranchFailure, OnImportFailure, OnMaxLoops, OutputMapping, ReduceMode, StepConfig,
    TransitionOn, UsageLimits, Validator,
};
use serde_json::{Map, Value};

use crate::yaml::Loc;

/// A value with the location it was written at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sp<T> {
    pub v: T,
    pub loc: Loc,
}

impl<T> Sp<T> {
    pub fn new(v: T, loc: Loc) -> Self {
        Sp { v, loc }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct RawBlueprint {
    pub name: Option<String>,
    pub version: Option<String>,
    pub context_schema: Option<Value>,
    pub agents: Vec<(Sp<String>, RawAgentDecl)>,
    /// alias → path as written.
    pub imports: Vec<(Sp<String>, Sp<String>)>,
    /// `memory:`, when given.
    pub memory: Option<RawMemory>,
    /// `mcp_servers:` (the servers that decoded without errors).
    pub mcp_servers: Vec<crate::decode::mcp::McpServerDecl>,
    pub steps: Vec<RawStep>,
}

/// The blueprint's `memory:` section: the settings, and the index's step names where they were written.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawMemory {
    pub settings: flujo_core::MemorySettings,
    pub index_names: Vec<Sp<String>>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct RawAgentDecl {
    pub model: Option<Sp<String>>,
    /// The rest of a fallback chain (`model: [a, b, c]`).
    pub fallback_models: Vec<Sp<String>>,
    pub system_prompt: Option<RawPrompt>,
    pub output_schema: Option<Value>,
    pub model_settings: Option<Value>,
    pub timeout_s: Option<f64>,
    pub max_retries: Option<u32>,
    pub tools: Vec<Sp<String>>,
    /// The whole declaration as written.
    pub json: Value,
}

#[derive(Debug, Clone)]
pub(crate) enum RawPrompt {
    Text(String),
    File { path: Sp<String>, variables: Map<String, Value> },
}

/// `agent:` / `uses: agents.X` / `router_agent:` / `exit_condition:` / `condition:`.
#[derive(Debug, Clone)]
pub(crate) enum RawAgent {
    Skill {
        id: Sp<String>,
        params: Value,
    },
    /// `uses: agents.NAME` (the NAME).
    Declared(Sp<String>),
}

#[derive(Debug, Clone)]
pub(crate) struct RawStep {
    pub name: Sp<String>,
    pub kind: RawKind,
    pub input: Option<Value>,
    pub config: StepConfig,
    pub fallback: Option<RawFallback>,
    pub validators: Vec<Validator>,
    pub updates_context: bool,
    pub sink_to: Option<Sp<String>>,
    pub input_keys: Vec<Sp<String>>,
    pub output_keys: Vec<Sp<String>>,
    pub usage_limits: Option<UsageLimits>,
    pub meta: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub(crate) enum RawFallback {
    Step(Box<RawStep>),
    Sibling(Sp<String>),
}

#[derive(Debug, Clone)]
pub(crate) struct RawBranch {
    pub name: Sp<String>,
    pub steps: Vec<RawStep>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct RawParallel {
    pub branches: Vec<RawBranch>,
    pub merge_strategy: MergeStrategy,
    pub on_branch_failure: OnBranchFailure,
    pub context_include_keys: Option<Vec<String>>,
    pub reduce: Option<ReduceMode>,
}

#[derive(Debug, Clone)]
pub(crate) struct RawTransition {
    pub from: Sp<String>,
    pub on: TransitionOn,
    pub to: Sp<String>,
    pub when: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum RawKind {
    Step {
        agent: Option<RawAgent>,
    },
    Import {
        alias: Sp<String>,
        inherit_context: bool,
        input_to: InputTo,
        outputs: Vec<OutputMapping>,
        on_failure: OnImportFailure,
        default_output: Value,
    },
    Loop {
        body: Vec<RawStep>,
        max_loops: u32,
        exit_expression: Option<Sp<String>>,
        exit_condition: Option<RawAgent>,
        iteration_input: Option<Value>,
        output: Option<Value>,
        on_max_loops: OnMaxLoops,
    },
    Map {
        iterable_input: Option<String>,
        body: Vec<RawStep>,
        concurrency: usize,
        max_items: Option<usize>,
    },
    Conditional {
        condition_expression: Option<String>,
        condition: Option<RawAgent>,
        branches: Vec<RawBranch>,
        default_branch: Option<Vec<RawStep>>,
    },
    Parallel(RawParallel),
    Router {
        router_agent: Option<RawAgent>,
        parallel: RawParallel,
    },
    Hitl {
        message: String,
        input_schema: Option<Value>,
    },
    Cache {
        wrapped: Option<Box<RawStep>>,
        ttl_s: Option<f64>,
    },
    AgenticLoop {
        planner: Option<RawAgent>,
        tools: Vec<Sp<String>>,
        max_turns: u32,
    },
    TreeSearch(Box<RawTreeSearch>),
    StateMachine {
        states: Vec<RawBranch>,
        start_state: Option<Sp<String>>,
        end_states: Vec<Sp<String>>,
        transitions: Vec<RawTransition>,
        max_hops: u32,
    },
    /// A kind registered by the user (see [`crate::LoadOptions::custom_kinds`]); `children` from its
    /// `children:` mapping.
    Custom {
        kind: String,
        spec: Value,
        children: Vec<RawBranch>,
    },
    /// A kind that could not be decoded (already reported).
    Invalid,
}

impl RawStep {
    /// The step's child sequences, in declaration order (fallback and wrapped step excluded).
    pub fn child_sequences(&self) -> Vec<&[RawStep]> {
        match &self.kind {
            RawKind::Loop { body, .. } | RawKind::Map { body, .. } => vec![body.as_slice()],
            RawKind::Conditional { branches, default_branch, .. } => {
                let mut v: Vec<&[RawStep]> = branches.iter().map(|b| b.steps.as_slice()).collect();
                if let Some(d) = default_branch {
                    v.push(d);
                }
                v
            }
            RawKind::Parallel(p) | RawKind::Router { parallel: p, .. } => {
                p.branches.iter().map(|b| b.steps.as_slice()).collect()
            }
            RawKind::StateMachine { states, .. } => states.iter().map(|b| b.steps.as_slice()).collect(),
            RawKind::Custom { children, .. } => children.iter().map(|b| b.steps.as_slice()).collect(),
            _ => Vec::new(),
        }
    }

    /// Steps nested directly inside this one that are not part of a sequence (the inline fallback, the cache's
    /// wrapped step).
    pub fn single_children(&self) -> Vec<&RawStep> {
        let mut v = Vec::new();
        if let Some(RawFallback::Step(fb)) = &self.fallback {
            v.push(&**fb);
        }
        if let RawKind::Cache { wrapped: Some(w), .. } = &self.kind {
            v.push(&**w);
        }
        v
    }
}

/// `tree_search` as written (defaults filled in).
#[derive(Debug, Clone)]
pub(crate) struct RawTreeSearch {
    pub proposer: Option<RawAgent>,
    pub evaluator: Option<RawAgent>,
    pub branching_factor: u32,
    pub beam_width: u32,
    pub max_depth: u32,
    pub max_iterations: Option<u32>,
    pub goal_score_threshold: f64,
    pub require_goal: bool,
    pub path_max_tokens: u32,
    pub static_invariants: Vec<String>,
}

impl Default for RawTreeSearch {
    fn default() -> Self {
        // The engine's defaults (one place: `TreeSearchSpec::new`).
        let d = flujo_core::TreeSearchSpec::new(
            flujo_core::AgentRef::skill("", Value::Null),
            flujo_core::AgentRef::skill("", Value::Null),
        );
        RawTreeSearch {
            proposer: None,
            evaluator: None,
            branching_factor: d.branching_factor,
            beam_width: d.beam_width,
            max_depth: d.max_depth,
            max_iterations: d.max_iterations,
            goal_score_threshold: d.goal_score_threshold,
            require_goal: d.require_goal,
            path_max_tokens: d.path_max_tokens,
            static_invariants: d.static_invariants,
        }
    }
}
