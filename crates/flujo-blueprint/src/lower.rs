//! Lowering: the raw blueprint → the validated [`flujo_core::Pipeline`] (the "high" side of
//! parse-then-validate), resolving every reference on the way.
//!
//! `uses: agents.X` becomes [`AgentRef::Model`] with the agent's declaration as settings (`BP-AGENT-MISSING`
//! when undeclared); `uses: imports.X` becomes [`StepKind::Import`] holding the loaded child pipeline
//! (`BP-IMPORT-MISSING`); every skill id is checked against the skills catalog and the registry
//! (`BP-SKILL-MISSING`, `BP-SKILL-PARAMS`). Lowering always produces a pipeline; the loader discards it when
//! any error was reported.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use flujo_core::{
    AgentRef, AgenticLoopSpec, Branch, CacheSpec, ConditionalSpec, Fallback, HitlSpec, ImportSpec, LoopSpec, MapSpec,
    ParallelSpec, Pipeline, ResolveError, RouterSpec, SkillRegistry, StateMachineSpec, Step, StepKind, Transition,
    TreeSearchSpec,
};
use serde_json::Value;

use crate::catalog::SkillCatalog;
use crate::decode::{looks_like_python_path, Decoder, PYTHON_REPLACEMENT};
use crate::raw::{RawAgent, RawBlueprint, RawBranch, RawFallback, RawKind, RawParallel, RawStep, Sp};
use crate::rules;
use crate::suggest::closest;
use crate::AgentDecl;

pub(crate) struct Lowerer<'a, 'b> {
    pub d: &'b mut Decoder<'a>,
    pub agents: &'b BTreeMap<String, AgentDecl>,
    /// alias → the loaded child pipeline (a placeholder when loading failed, already reported).
    pub imports: &'b HashMap<String, Arc<Pipeline>>,
    pub registry: Option<&'b dyn SkillRegistry>,
    pub catalog: &'b SkillCatalog,
    /// The MCP servers `mcp.NAME.TOOL` ids may name (see `decode::mcp`).
    pub mcp: &'b crate::decode::mcp::McpScope<'b>,
}

impl Lowerer<'_, '_> {
    pub fn pipeline(&mut self, bp: &RawBlueprint, default_name: &str) -> Pipeline {
        let mut p = Pipeline::new(bp.name.clone().unwrap_or_else(|| default_name.to_owned()), self.steps(&bp.steps));
        if let Some(v) = &bp.version {
            p.version = v.clone();
        }
        p.context_schema = bp.context_schema.clone();
        if let Some(m) = &bp.memory {
            let names = p.step_names();
            for n in &m.index_names {
                if !names.contains(&n.v) {
                    let hint = closest(&n.v, names.iter().map(String::as_str)).map(|c| format!("did you mean `{c}`?"));
                    self.d.report_with(
                        rules::BP_MEMORY_STEP,
                        n.loc,
                        format!("`memory.index` names step `{}`, which this pipeline does not have", n.v),
                        hint,
                    );
                }
            }
            p.memory = Some(m.settings.clone());
        }
        p
    }

    fn steps(&mut self, steps: &[RawStep]) -> Vec<Step> {
        steps.iter().map(|s| self.step(s)).collect()
    }

    fn branches(&mut self, branches: &[RawBranch]) -> Vec<Branch> {
        branches.iter().map(|b| Branch::new(b.name.v.clone(), self.steps(&b.steps))).collect()
    }

    fn step(&mut self, s: &RawStep) -> Step {
        let label = format!("step `{}`", s.name.v);
        let kind = match &s.kind {
            RawKind::Step { agent } => StepKind::Step { agent: agent.as_ref().and_then(|a| self.agent(a, &label)) },
            RawKind::Import { alias, inherit_context, input_to, outputs, on_failure, default_output } => {
                let mut spec = ImportSpec::new(alias.v.clone(), self.import(alias, &label));
                spec.inherit_context = *inherit_context;
                spec.input_to = *input_to;
                spec.outputs = outputs.clone();
                spec.on_failure = *on_failure;
                spec.default_output = default_output.clone();
                StepKind::Import(spec)
            }
            RawKind::Loop {
                body,
                max_loops,
                exit_expression,
                exit_condition,
                iteration_input,
                output,
                on_max_loops,
            } => {
                let mut spec = LoopSpec::default();
                spec.body = self.steps(body);
                spec.max_loops = *max_loops;
                spec.exit_expression = exit_expression.as_ref().map(|e| e.v.clone());
                spec.exit_condition = exit_condition.as_ref().and_then(|a| self.agent(a, &label));
                spec.iteration_input = iteration_input.clone();
                spec.output = output.clone();
                spec.on_max_loops = *on_max_loops;
                StepKind::Loop(spec)
            }
            RawKind::Map { iterable_input, body, concurrency, max_items } => {
                let mut spec = MapSpec::default();
                spec.iterable_input = iterable_input.clone();
                spec.body = self.steps(body);
                spec.concurrency = *concurrency;
                spec.max_items = *max_items;
                StepKind::Map(spec)
            }
            RawKind::Conditional { condition_expression, condition, branches, default_branch } => {
                let mut spec = ConditionalSpec::default();
                spec.condition_expression = condition_expression.clone();
                spec.condition = condition.as_ref().and_then(|a| self.agent(a, &label));
                spec.branches = self.branches(branches);
                spec.default_branch = default_branch.as_ref().map(|d| self.steps(d));
                StepKind::Conditional(spec)
            }
            RawKind::Parallel(p) => StepKind::Parallel(self.parallel(p)),
            RawKind::Router { router_agent, parallel } => {
                let p = self.parallel(parallel);
                let agent = router_agent.as_ref().and_then(|a| self.agent(a, &label));
                let mut spec = RouterSpec::new(agent.unwrap_or_else(|| AgentRef::skill("", Value::Null)));
                spec.branches = p.branches;
                spec.merge_strategy = p.merge_strategy;
                spec.on_branch_failure = p.on_branch_failure;
                spec.context_include_keys = p.context_include_keys;
                spec.reduce = p.reduce;
                StepKind::DynamicRouter(spec)
            }
            RawKind::Hitl { message, input_schema } => {
                StepKind::Hitl(HitlSpec::new(message.clone(), input_schema.clone()))
            }
            RawKind::AgenticLoop { planner, tools, max_turns } => {
                let planner = planner.as_ref().and_then(|a| self.agent(a, &label));
                if matches!(planner, Some(AgentRef::Skill { .. })) {
                    self.d.report_with(
                        rules::BP_TYPE,
                        s.name.loc,
                        format!("the planner of {label} must be a model agent (`agents.NAME`), not a skill"),
                        None,
                    );
                }
                for t in tools {
                    self.check_skill(t, &Value::Null, &label, false);
                }
                let mut spec = AgenticLoopSpec::new(planner.unwrap_or_else(|| AgentRef::skill("", Value::Null)));
                spec.tools = tools.iter().map(|t| t.v.clone()).collect();
                spec.max_turns = *max_turns;
                StepKind::AgenticLoop(spec)
            }
            RawKind::TreeSearch(t) => {
                let proposer = t.proposer.as_ref().and_then(|a| self.agent(a, &label));
                let evaluator = t.evaluator.as_ref().and_then(|a| self.agent(a, &label));
                let mut spec = TreeSearchSpec::new(
                    proposer.unwrap_or_else(|| AgentRef::skill("", Value::Null)),
                    evaluator.unwrap_or_else(|| AgentRef::skill("", Value::Null)),
                );
                spec.branching_factor = t.branching_factor;
                spec.beam_width = t.beam_width;
                spec.max_depth = t.max_depth;
                spec.max_iterations = t.max_iterations;
                spec.goal_score_threshold = t.goal_score_threshold;
                spec.require_goal = t.require_goal;
                spec.path_max_tokens = t.path_max_tokens;
                spec.static_invariants = t.static_invariants.clone();
                StepKind::TreeSearch(spec)
            }
            RawKind::Cache { wrapped, ttl_s } => {
                let mut spec = CacheSpec::new(match wrapped {
                    Some(w) => self.step(w),
                    None => Step::passthrough(""),
                });
                spec.ttl_s = *ttl_s;
                StepKind::Cache(spec)
            }
            RawKind::StateMachine { states, start_state, end_states, transitions, max_hops } => {
                let mut spec = StateMachineSpec::default();
                spec.states = self.branches(states);
                // an end state only named in `end_states` is a state without steps
                for e in end_states {
                    if !spec.states.iter().any(|b| b.name == e.v) {
                        spec.states.push(Branch::new(e.v.clone(), Vec::new()));
                    }
                }
                spec.start_state = start_state.as_ref().map(|s| s.v.clone()).unwrap_or_default();
                spec.end_states = end_states.iter().map(|e| e.v.clone()).collect();
                spec.transitions = transitions
                    .iter()
                    .map(|t| {
                        let rule = Transition::new(t.from.v.clone(), t.on, t.to.v.clone());
                        match &t.when {
                            Some(w) => rule.with_when(w.clone()),
                            None => rule,
                        }
                    })
                    .collect();
                spec.max_hops = *max_hops;
                StepKind::StateMachine(spec)
            }
            RawKind::Custom { kind, spec, children } => {
                StepKind::Custom { custom_kind: kind.clone(), spec: spec.clone(), children: self.branches(children) }
            }
            RawKind::Invalid => StepKind::Step { agent: None },
        };
        let mut step = Step::new(s.name.v.clone(), kind);
        step.input = s.input.clone();
        step.config = s.config.clone();
        step.fallback = s.fallback.as_ref().map(|f| match f {
            RawFallback::Step(fb) => Fallback::Step(Box::new(self.step(fb))),
            RawFallback::Sibling(name) => Fallback::Sibling(name.v.clone()),
        });
        step.validators = s.validators.clone();
        step.updates_context = s.updates_context;
        step.sink_to = s.sink_to.as_ref().map(|x| x.v.clone());
        step.input_keys = s.input_keys.iter().map(|k| k.v.clone()).collect();
        step.output_keys = s.output_keys.iter().map(|k| k.v.clone()).collect();
        step.usage_limits = s.usage_limits;
        step.meta = s.meta.clone();
        step
    }

    fn parallel(&mut self, p: &RawParallel) -> ParallelSpec {
        let mut spec = ParallelSpec::default();
        spec.branches = self.branches(&p.branches);
        spec.merge_strategy = p.merge_strategy;
        spec.on_branch_failure = p.on_branch_failure;
        spec.context_include_keys = p.context_include_keys.clone();
        spec.reduce = p.reduce;
        spec
    }

    fn agent(&mut self, a: &RawAgent, label: &str) -> Option<AgentRef> {
        match a {
            RawAgent::Skill { id, params } => {
                self.check_skill(id, params, label, false);
                Some(AgentRef::Skill { id: id.v.clone(), params: params.clone() })
            }
            RawAgent::Declared(name) => match self.agents.get(&name.v) {
                Some(decl) => Some(AgentRef::Model { model: decl.model.clone(), settings: decl.settings() }),
                None => {
                    let suggestion = closest(&name.v, self.agents.keys().map(String::as_str))
                        .map(|c| format!("did you mean `agents.{c}`?"))
                        .or_else(|| {
                            Some(format!(
                                "declare it under `agents:` (`agents: {{{}: {{model: \"provider:model\"}}}}`)",
                                name.v
                            ))
                        });
                    self.d.report_with(
                        rules::BP_AGENT_MISSING,
                        name.loc,
                        format!("{label} uses `agents.{}`, which is not declared under `agents:`", name.v),
                        suggestion,
                    );
                    None
                }
            },
        }
    }

    fn import(&mut self, alias: &Sp<String>, label: &str) -> Arc<Pipeline> {
        if let Some(p) = self.imports.get(&alias.v) {
            return p.clone();
        }
        let suggestion = closest(&alias.v, self.imports.keys().map(String::as_str))
            .map(|c| format!("did you mean `imports.{c}`?"))
            .or_else(|| Some(format!("declare it under `imports:` (`imports: {{{}: ./{}.yaml}}`)", alias.v, alias.v)));
        self.d.report_with(
            rules::BP_IMPORT_MISSING,
            alias.loc,
            format!("{label} uses `imports.{}`, which is not declared under `imports:`", alias.v),
            suggestion,
        );
        Arc::new(Pipeline::new(alias.v.clone(), Vec::new()))
    }

    /// Checks that skill `id` exists (in the catalog or the registry) and, for registry skills, accepts
    /// `params`. `existence_only` skips the params check (agent `tools`).
    pub fn check_skill(&mut self, id: &Sp<String>, params: &Value, label: &str, existence_only: bool) {
        if self.catalog.contains(&id.v) {
            return;
        }
        if id.v.starts_with("mcp.") {
            // The tools of MCP servers are not in the registry the blueprint is loaded with.
            self.mcp.check_id(self.d, id, label);
            return;
        }
        let model =
            model_id_used_as_skill(&id.v).filter(|_| self.registry.is_none_or(|r| r.resolve(&id.v, params).is_err()));
        if let Some(model) = model {
            // `agent: "mock:echo"`: a model id where a skill id belongs (models are declared under `agents:`).
            self.d.report_with(
                rules::BP_SKILL_MISSING,
                id.loc,
                format!("{label}: `{}` is a model id, not a skill", id.v),
                Some(format!(
                    "declare the model under `agents:` and use it with `uses: agents.NAME`, e.g. \
                     `agents: {{writer: {{model: \"{model}\"}}}}` and `uses: agents.writer`"
                )),
            );
            return;
        }
        let python = || {
            (
                format!("{label}: skill `{}` is a Python import path; Flujo (Rust) cannot import Python code", id.v),
                Some(PYTHON_REPLACEMENT.to_owned()),
            )
        };
        let Some(registry) = self.registry else {
            if looks_like_python_path(&id.v) {
                let (message, suggestion) = python();
                self.d.report_with(rules::BP_SKILL_MISSING, id.loc, message, suggestion);
            }
            return;
        };
        match registry.resolve(&id.v, params) {
            Ok(_) => {}
            Err(ResolveError::BadParams { message, .. }) => {
                if !existence_only {
                    self.d.report(
                        rules::BP_SKILL_PARAMS,
                        id.loc,
                        format!("{label}: invalid params for skill `{}`: {message}", id.v),
                    );
                }
            }
            Err(_) if looks_like_python_path(&id.v) => {
                let (message, suggestion) = python();
                self.d.report_with(rules::BP_SKILL_MISSING, id.loc, message, suggestion);
            }
            Err(err) => {
                // `Unknown`, or `PythonPath` for a dotted id such as `pkg.module.func` (which may be either).
                let dotted_python = matches!(err, ResolveError::PythonPath { .. });
                let suggestion = match err {
                    ResolveError::Unknown { suggestion, .. } => suggestion,
                    _ => None,
                };
                let suggestion = suggestion
                    .or_else(|| closest(&id.v, self.catalog.ids()))
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| {
                        Some(if dotted_python {
                            "if this names Python code, declare a `command` skill in skills.yaml next to the blueprint \
                             (`skills: {my.skill: {command: [\"python3\", \"my_skill.py\"]}}`)"
                                .to_owned()
                        } else {
                            "register it, or declare it in skills.yaml next to the blueprint".to_owned()
                        })
                    });
                self.d.report_with(
                    rules::BP_SKILL_MISSING,
                    id.loc,
                    format!("{label}: unknown skill `{}` (neither registered nor declared in skills.yaml)", id.v),
                    suggestion,
                );
            }
        }
    }
}

/// `provider:model` with a known provider (or a near miss of one, corrected), when a skill id was expected.
fn model_id_used_as_skill(id: &str) -> Option<String> {
    let (provider, model) = id.split_once(':')?;
    if model.is_empty() || model.contains(':') {
        return None;
    }
    let providers = flujo_core::limits::BUILTIN_PROVIDERS;
    if providers.contains(&provider) {
        return Some(id.to_owned());
    }
    closest(provider, providers.iter().copied()).map(|p| format!("{p}:{model}"))
}
