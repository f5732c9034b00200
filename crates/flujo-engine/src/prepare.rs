//! Build-time preparation of a pipeline: resolves every agent and skill once, compiles every template,
//! expression and JSON Schema, and checks custom kinds have a policy. Errors surface when the runner is
//! built, not in the middle of a run.

use std::sync::Arc;

use flujo_core::{
    limits, AgentRef, Branch, FlujoError, ModelRegistry, Pipeline, Skill, SkillRegistry, Step, StepKind, Value,
};

use crate::policy::ExecutionDispatcher;

/// Resolved agents and compiled schemas, keyed by the address of their definition inside the (immutable,
/// `Arc`-held) pipeline.
#[derive(Default)]
pub struct Prepared {
    agents: foldhash::HashMap<usize, Arc<dyn Skill>>,
    schemas: foldhash::HashMap<usize, Arc<jsonschema::Validator>>,
    fingerprints: foldhash::HashMap<usize, blake3::Hash>,
    /// The tools an agent offers (an agentic loop's planner, or a model agent declaring `tools:`), keyed
    /// by the address of the agent reference.
    tool_sets: foldhash::HashMap<usize, Arc<ToolSet>>,
    /// Every resolved agent and tool, in pipeline order, each once (for the checks made before a run starts).
    order: Vec<Arc<dyn Skill>>,
    /// The addresses of the skills in `order` (building only).
    seen: foldhash::HashSet<usize>,
}

impl Prepared {
    /// Adds `skill` to the reachable ones unless it is there already.
    fn reach(&mut self, skill: &Arc<dyn Skill>) {
        if self.seen.insert(Arc::as_ptr(skill) as *const () as usize) {
            self.order.push(skill.clone());
        }
    }
}

/// The tools a model agent may call, and the bounds of its conversation.
pub struct ToolSet {
    /// Skill id → resolved skill, in declaration order.
    pub tools: Vec<(String, Arc<dyn Skill>)>,
    /// Model turns before the step fails without an answer.
    pub max_turns: u32,
    /// Re-asks of a final answer that violates the agent's `output_schema`.
    pub max_reasks: u32,
}

/// Model turns of a plain step whose agent offers tools, unless the agent sets `max_turns`.
pub const DEFAULT_TOOL_TURNS: u32 = 10;
/// Re-asks of a schema-violating answer, unless the agent sets `max_retries` (as `flujo_llm`'s default).
const DEFAULT_REASKS: u32 = 1;

fn settings_u32(settings: &Value, key: &str) -> Option<u32> {
    settings.get(key).and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok())
}

fn addr<T>(r: &T) -> usize {
    r as *const T as usize
}

impl Prepared {
    /// The skill or model agent `agent` resolved to when the runner was built (for an agent that offers tools,
    /// its chat-turn skill). Lookups are by address, so `agent` must be the reference inside the runner's own
    /// pipeline; `None` for any other.
    pub fn agent(&self, agent: &AgentRef) -> Option<&Arc<dyn Skill>> {
        self.agents.get(&addr(agent))
    }

    /// The compiled validator of a schema value inside the pipeline.
    pub fn schema(&self, schema: &Value) -> Option<&jsonschema::Validator> {
        self.schemas.get(&addr(schema)).map(|v| &**v)
    }

    /// The tools `agent` offers, when it offers any (then [`Prepared::agent`] is a chat-turn skill).
    pub fn tool_set(&self, agent: &AgentRef) -> Option<&Arc<ToolSet>> {
        self.tool_sets.get(&addr(agent))
    }

    /// Every agent and tool a run of the pipeline can reach, in pipeline order, each once.
    pub fn reachable(&self) -> impl Iterator<Item = &Arc<dyn Skill>> {
        self.order.iter()
    }

    /// The fingerprint of `step` (see [`Step::fingerprint`]), part of the `cache` step's key: computed when the
    /// runner was built for steps a `cache` step wraps, and on the spot for any other.
    pub fn fingerprint(&self, step: &Step) -> blake3::Hash {
        self.fingerprints.get(&addr(step)).copied().unwrap_or_else(|| step.fingerprint())
    }
}

pub(crate) struct Preparer<'a> {
    pub skills: &'a dyn SkillRegistry,
    pub models: Option<&'a dyn ModelRegistry>,
    pub dispatcher: &'a ExecutionDispatcher,
    pub out: Prepared,
    depth: usize,
    nesting: usize,
}

const MAX_IMPORT_DEPTH: usize = 32;

/// The deepest nesting of steps (composites, imported pipelines and fallbacks all count) a runner accepts.
/// Execution itself is safe at any depth (`executor::GrowStack`); the bound keeps the build's own recursion,
/// the definition's serialization and the per-level path strings small.
pub const MAX_NESTING_DEPTH: usize = 256;

fn err(step: &Step, message: impl Into<String>) -> FlujoError {
    // A name over the limit is itself the error: keep the message readable.
    let name = if step.name.chars().count() > limits::MAX_NAME_LEN {
        format!("{}…", step.name.chars().take(60).collect::<String>())
    } else {
        step.name.clone()
    };
    FlujoError::Resolution { step: name, message: message.into() }
}

/// An unknown model provider is a configuration problem (a provider is added in the configuration), reported
/// before anything runs; other failures to resolve a model are resolution errors.
fn model_err(step: &Step, e: flujo_core::ResolveError) -> FlujoError {
    match e {
        flujo_core::ResolveError::UnknownModel { .. } => FlujoError::Config(format!("step '{}': {e}", step.name)),
        other => err(step, other.to_string()),
    }
}

impl<'a> Preparer<'a> {
    pub fn new(
        skills: &'a dyn SkillRegistry,
        models: Option<&'a dyn ModelRegistry>,
        dispatcher: &'a ExecutionDispatcher,
    ) -> Self {
        Preparer { skills, models, dispatcher, out: Prepared::default(), depth: 0, nesting: 0 }
    }

    pub fn pipeline(&mut self, p: &Pipeline) -> Result<(), FlujoError> {
        if p.name.chars().count() > limits::MAX_NAME_LEN || p.name.chars().any(char::is_control) {
            return Err(FlujoError::Config(format!(
                "the pipeline name must be at most {} characters without control characters",
                limits::MAX_NAME_LEN
            )));
        }
        if let Some(schema) = &p.context_schema {
            self.schema(schema, &p.name)?;
        }
        self.steps(&p.steps)
    }

    fn schema(&mut self, schema: &Value, owner: &str) -> Result<(), FlujoError> {
        let v = jsonschema::validator_for(schema)
            .map_err(|e| FlujoError::Config(format!("invalid JSON Schema in '{owner}': {e}")))?;
        self.out.schemas.insert(addr(schema), Arc::new(v));
        Ok(())
    }

    fn steps(&mut self, steps: &[Step]) -> Result<(), FlujoError> {
        steps.iter().try_for_each(|s| self.step(s))
    }

    /// The bounds of a model agent's declaration: `max_retries` (re-asks), `timeout`, `max_turns`.
    fn model_bounds(step: &Step, settings: &Value) -> Result<(), FlujoError> {
        if let Some(n) = settings.get("max_retries").and_then(Value::as_u64) {
            limits::check_retries(n).map_err(|e| err(step, format!("agent max_retries {e}")))?;
        }
        for key in ["timeout", "timeout_s"] {
            if let Some(t) = settings.get(key).and_then(Value::as_f64) {
                limits::check_duration_secs(t).map_err(|e| err(step, format!("agent {key} {e}")))?;
            }
        }
        if let Some(n) = settings.get("max_turns").and_then(Value::as_u64) {
            limits::check_count(n, limits::MAX_TURNS).map_err(|e| err(step, format!("agent max_turns {e}")))?;
        }
        Ok(())
    }

    fn agent(&mut self, step: &Step, agent: &AgentRef) -> Result<(), FlujoError> {
        if let AgentRef::Model { settings, .. } = agent {
            Self::model_bounds(step, settings)?;
        }
        let skill = match agent {
            AgentRef::Skill { id, params } => self.skills.resolve(id, params).map_err(|e| err(step, e.to_string()))?,
            AgentRef::Model { model, settings } => match self.models {
                Some(m) => m.resolve(model, &with_step_sampling(settings, step)).map_err(|e| model_err(step, e))?,
                None => return Err(err(step, format!("model '{model}' needs a model registry; none is configured"))),
            },
            other => return Err(err(step, format!("agent '{}' is of a kind this engine cannot call", other.target()))),
        };
        self.out.reach(&skill);
        self.out.agents.insert(addr(agent), skill);
        Ok(())
    }

    /// Resolves a model agent that offers `tools` as a chat-turn skill plus its [`ToolSet`].
    fn tool_agent(
        &mut self,
        step: &Step,
        agent: &AgentRef,
        tools: &[String],
        max_turns: u32,
    ) -> Result<(), FlujoError> {
        let AgentRef::Model { model, settings } = agent else {
            return Err(err(step, "only model agents can call tools"));
        };
        Self::model_bounds(step, settings)?;
        limits::check_count(u64::from(max_turns), limits::MAX_TURNS)
            .map_err(|e| err(step, format!("max_turns {e}")))?;
        let Some(models) = self.models else {
            return Err(err(step, format!("model '{model}' needs a model registry; none is configured")));
        };
        let turn = models.resolve_turn(model, settings).map_err(|e| model_err(step, e))?;
        self.out.reach(&turn);
        self.out.agents.insert(addr(agent), turn);
        let mut resolved = Vec::with_capacity(tools.len());
        for id in tools {
            let skill = self.skills.resolve(id, &Value::Null).map_err(|e| err(step, format!("tool: {e}")))?;
            self.out.reach(&skill);
            resolved.push((id.clone(), skill));
        }
        let max_reasks = settings_u32(settings, "max_retries").unwrap_or(DEFAULT_REASKS);
        self.out.tool_sets.insert(addr(agent), Arc::new(ToolSet { tools: resolved, max_turns, max_reasks }));
        Ok(())
    }

    fn expr(&self, step: &Step, src: &str) -> Result<(), FlujoError> {
        flujo_template::compile_expression(src).map(|_| ()).map_err(|e| err(step, format!("expression '{src}': {e}")))
    }

    fn template_value(&self, step: &Step, v: &Value) -> Result<(), FlujoError> {
        match v {
            Value::String(s) if flujo_template::is_template(s) => {
                flujo_template::compile_template(s).map(|_| ()).map_err(|e| err(step, format!("template '{s}': {e}")))
            }
            Value::Array(items) => items.iter().try_for_each(|i| self.template_value(step, i)),
            Value::Object(m) => m.values().try_for_each(|i| self.template_value(step, i)),
            _ => Ok(()),
        }
    }

    fn step(&mut self, step: &Step) -> Result<(), FlujoError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING_DEPTH {
            return Err(err(step, format!("steps are nested deeper than {MAX_NESTING_DEPTH} levels")));
        }
        let r = self.step_inner(step);
        self.nesting -= 1;
        r
    }

    /// Names that become journal path segments (branch and state names) must be valid and unique, so that a
    /// path names exactly one step execution.
    fn segment_names<'n>(
        &self,
        step: &Step,
        what: &str,
        names: impl Iterator<Item = &'n str>,
    ) -> Result<(), FlujoError> {
        let mut seen = std::collections::HashSet::new();
        for name in names {
            let shown: String = name.chars().take(60).collect();
            limits::check_name(name).map_err(|e| err(step, format!("{what} name {shown:?} {e}")))?;
            if !seen.insert(name) {
                return Err(err(step, format!("{what} name {shown:?} is used twice")));
            }
        }
        Ok(())
    }

    /// The step's own bounds: its name, retries and timeout.
    fn step_bounds(&self, step: &Step) -> Result<(), FlujoError> {
        limits::check_name(&step.name).map_err(|e| err(step, format!("the step name {e}")))?;
        limits::check_retries(u64::from(step.config.max_retries))
            .map_err(|e| err(step, format!("config.max_retries {e}")))?;
        if let Some(t) = step.config.timeout_s {
            limits::check_duration_secs(t).map_err(|e| err(step, format!("config.timeout_s {e}")))?;
        }
        Ok(())
    }

    fn step_inner(&mut self, step: &Step) -> Result<(), FlujoError> {
        self.step_bounds(step)?;
        if let Some(input) = &step.input {
            self.template_value(step, input)?;
        }
        for v in &step.validators {
            self.expr(step, &v.expression)?;
        }
        if let Some(flujo_core::Fallback::Step(fb)) = &step.fallback {
            self.step(fb)?;
        }
        if self.dispatcher.get(step.kind.name()).is_none() {
            return Err(err(step, format!("no policy registered for step kind '{}'", step.kind.name())));
        }
        match &step.kind {
            StepKind::Step { agent: Some(agent) } => match agent {
                AgentRef::Model { settings, .. }
                    if settings.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) =>
                {
                    let ids: Vec<String> = settings
                        .get("tools")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|t| {
                            t.as_str().map(str::to_owned).ok_or_else(|| err(step, "agent tools must be skill ids"))
                        })
                        .collect::<Result<_, _>>()?;
                    let max_turns = settings_u32(settings, "max_turns").unwrap_or(DEFAULT_TOOL_TURNS);
                    self.tool_agent(step, agent, &ids, max_turns)?;
                }
                _ => self.agent(step, agent)?,
            },
            StepKind::Step { agent: None } => {}
            StepKind::Loop(l) => {
                limits::check_count(u64::from(l.max_loops), limits::MAX_ITERATIONS)
                    .map_err(|e| err(step, format!("loop max_loops {e}")))?;
                if let Some(e) = &l.exit_expression {
                    self.expr(step, e)?;
                }
                if let Some(a) = &l.exit_condition {
                    self.agent(step, a)?;
                }
                for t in [&l.iteration_input, &l.output].into_iter().flatten() {
                    self.template_value(step, t)?;
                }
                self.steps(&l.body)?;
            }
            StepKind::Map(m) => {
                if m.concurrency == 0 {
                    return Err(err(step, "map concurrency must be at least 1"));
                }
                if m.max_items == Some(0) {
                    return Err(err(step, "map max_items must be at least 1"));
                }
                if let Some(src) = &m.iterable_input {
                    if flujo_template::is_template(src) {
                        self.template_value(step, &Value::String(src.clone()))?;
                    }
                }
                self.steps(&m.body)?;
            }
            StepKind::Conditional(c) => {
                self.segment_names(step, "branch", c.branches.iter().map(|Branch { name: n, .. }| n.as_str()))?;
                if let Some(e) = &c.condition_expression {
                    self.expr(step, e)?;
                }
                if let Some(a) = &c.condition {
                    self.agent(step, a)?;
                }
                for Branch { steps: b, .. } in &c.branches {
                    self.steps(b)?;
                }
                if let Some(d) = &c.default_branch {
                    self.steps(d)?;
                }
            }
            StepKind::Parallel(p) => {
                self.segment_names(step, "branch", p.branches.iter().map(|Branch { name: n, .. }| n.as_str()))?;
                for Branch { steps: b, .. } in &p.branches {
                    self.steps(b)?;
                }
            }
            StepKind::DynamicRouter(r) => {
                self.segment_names(step, "branch", r.branches.iter().map(|Branch { name: n, .. }| n.as_str()))?;
                self.agent(step, &r.router_agent)?;
                for Branch { steps: b, .. } in &r.branches {
                    self.steps(b)?;
                }
            }
            StepKind::Hitl(h) => {
                flujo_template::compile_template(&h.message)
                    .map_err(|e| err(step, format!("message template: {e}")))?;
                if let Some(s) = &h.input_schema {
                    self.schema(s, &step.name)?;
                }
            }
            StepKind::Cache(c) => {
                if let Some(t) = c.ttl_s {
                    limits::check_duration_secs(t).map_err(|e| err(step, format!("cache ttl_s {e}")))?;
                }
                self.step(&c.wrapped_step)?;
                self.out.fingerprints.insert(addr(&*c.wrapped_step), c.wrapped_step.fingerprint());
            }
            StepKind::Import(i) => {
                self.depth += 1;
                if self.depth > MAX_IMPORT_DEPTH {
                    return Err(err(step, format!("imports nested deeper than {MAX_IMPORT_DEPTH} levels")));
                }
                self.pipeline(&i.pipeline)?;
                self.depth -= 1;
            }
            StepKind::StateMachine(sm) => {
                self.segment_names(step, "state", sm.states.iter().map(|Branch { name: n, .. }| n.as_str()))?;
                limits::check_count(u64::from(sm.max_hops), limits::MAX_ITERATIONS)
                    .map_err(|e| err(step, format!("state machine max_hops {e}")))?;
                let names: Vec<&str> = sm.states.iter().map(|Branch { name: n, .. }| n.as_str()).collect();
                if !names.contains(&sm.start_state.as_str()) {
                    return Err(err(step, format!("start_state '{}' is not a state", sm.start_state)));
                }
                for t in &sm.transitions {
                    for s in [&t.from, &t.to] {
                        if s != "*" && !names.contains(&s.as_str()) {
                            return Err(err(step, format!("transition names unknown state '{s}'")));
                        }
                    }
                    if let Some(w) = &t.when {
                        self.expr(step, w)?;
                    }
                }
                for Branch { steps: b, .. } in &sm.states {
                    self.steps(b)?;
                }
            }
            StepKind::TreeSearch(t) => {
                for (what, n, max) in [
                    ("branching_factor", t.branching_factor, 100),
                    ("beam_width", t.beam_width, 100),
                    ("max_depth", t.max_depth, 1_000),
                ] {
                    limits::check_count(u64::from(n), max).map_err(|e| err(step, format!("tree_search {what} {e}")))?;
                }
                if let Some(n) = t.max_iterations {
                    limits::check_count(u64::from(n), limits::MAX_ITERATIONS)
                        .map_err(|e| err(step, format!("tree_search max_iterations {e}")))?;
                }
                if !(0.0..=1.0).contains(&t.goal_score_threshold) {
                    return Err(err(step, "tree_search goal_score_threshold must be between 0 and 1"));
                }
                self.agent(step, &t.proposer)?;
                self.agent(step, &t.evaluator)?;
                for e in &t.static_invariants {
                    self.expr(step, e)?;
                }
            }
            StepKind::AgenticLoop(a) => {
                if !matches!(a.planner, AgentRef::Model { .. }) {
                    return Err(err(step, "the planner of an agentic_loop must be a model agent (uses: agents.NAME)"));
                }
                // The loop offers its own `tools:` and those the planner agent declares (union, in that order).
                let mut tools = a.tools.clone();
                if let AgentRef::Model { settings, .. } = &a.planner {
                    for t in settings.get("tools").and_then(Value::as_array).into_iter().flatten() {
                        let id = t.as_str().ok_or_else(|| err(step, "agent tools must be skill ids"))?;
                        if !tools.iter().any(|x| x == id) {
                            tools.push(id.to_owned());
                        }
                    }
                }
                self.tool_agent(step, &a.planner, &tools, a.max_turns)?;
            }
            StepKind::Custom { children, .. } => {
                self.segment_names(step, "child", children.iter().map(|Branch { name: n, .. }| n.as_str()))?;
                for Branch { steps: c, .. } in children {
                    self.steps(c)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A model agent's settings with the step's own sampling settings (`config: {temperature, top_p, max_tokens}`,
/// SPEC §3) over the agent's `model_settings`: the step is the more specific place.
fn with_step_sampling(settings: &Value, step: &Step) -> Value {
    let c = &step.config;
    let overrides: [(&str, Option<Value>); 3] = [
        ("temperature", c.temperature.map(Value::from)),
        ("top_p", c.top_p.map(Value::from)),
        ("max_tokens", c.max_tokens.map(Value::from)),
    ];
    if overrides.iter().all(|(_, v)| v.is_none()) {
        return settings.clone();
    }
    let mut out = settings.clone();
    if !out.is_object() {
        out = Value::Object(serde_json::Map::new());
    }
    if let Some(obj) = out.as_object_mut() {
        let ms = obj.entry("model_settings").or_insert_with(|| Value::Object(serde_json::Map::new()));
        if !ms.is_object() {
            *ms = Value::Object(serde_json::Map::new());
        }
        if let Some(ms) = ms.as_object_mut() {
            for (key, value) in overrides {
                if let Some(v) = value {
                    // `max_completion_tokens` and `max_tokens` cannot both be set: the step's bound replaces it.
                    if key == "max_tokens" {
                        ms.remove("max_completion_tokens");
                    }
                    ms.insert(key.to_owned(), v);
                }
            }
        }
    }
    out
}
