//! Random valid pipelines: every generated pipeline is a function of its seed.
//!
//! Leaves call the simulator's skill ([`crate::skills::SIM_SKILL`]): some make side effects, some fail their
//! first attempts (and are retried), some take simulated time; a few fail for good, so failed runs are
//! simulated too. Some leaves cost money and announce an upper bound of it. Simulated model agents (`sim:*`)
//! answer as steps, route dynamic routers and plan agentic loops that call a tool with a side effect.
//! Composites — loops, maps, conditionals, parallel steps, caches, routers — nest up to three levels, and human
//! steps (`hitl`) pause the run wherever they are, several at once inside parallel branches and maps. About a
//! third of the runs get a cost budget, often smaller than what the pipeline would spend.

use std::sync::Arc;

use flujo_core::{
    AgentRef, AgenticLoopSpec, Branch, CacheSpec, ImportSpec, OnMaxLoops, Pipeline, RouterSpec, Step, StepKind,
    TransitionOn, TreeSearchSpec, UsageLimits,
};
use serde_json::{json, Value};

use crate::rng::Rng;
use crate::skills::{usd, LeafParams, MODEL_MAX_COST, SIM_SKILL, SIM_TOOL, TOOL_MAX_COST};

/// A generated pipeline and its input.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub pipeline: Pipeline,
    pub input: Value,
    /// The run's cost budget, in micro-USD.
    pub limit: Option<u64>,
    /// Whether steps may run concurrently (parallel branches, maps over more than one item at once): then
    /// which call a budget refuses depends on timing.
    pub concurrent: bool,
    /// Whether a cache step may answer from its cache (which a new runner starts empty, so a resumed run may
    /// pay for a call the run straight through answered from the cache).
    pub cached: bool,
}

impl Scenario {
    /// The run's usage limits.
    pub fn usage_limits(&self) -> UsageLimits {
        match self.limit {
            Some(l) => UsageLimits::new().with_cost_limit(usd(l)),
            None => UsageLimits::new(),
        }
    }
}

/// Limits of the generator.
const MAX_DEPTH: u32 = 3;
const MAX_STEPS: u32 = 40;

/// The scenario of `seed`.
pub fn scenario(seed: u64) -> Scenario {
    let mut g = Gen { rng: Rng::new(seed, 1), steps: 0, announced: 0, concurrent: false, cached: false };
    let steps = g.sequence(0, 2, 6);
    let input = json!(g.rng.below(100));
    // A budget between a third of what the steps announce (counting each once) and a little more than all of it.
    let limit = g.rng.chance(330).then(|| (g.announced * g.rng.range(30, 120) / 100).max(1));
    Scenario {
        seed,
        pipeline: Pipeline::new(format!("sim_{seed}"), steps),
        input,
        limit,
        concurrent: g.concurrent,
        cached: g.cached,
    }
}

struct Gen {
    rng: Rng,
    /// Steps generated so far (bounded by [`MAX_STEPS`]).
    steps: u32,
    /// The upper bounds the generated calls announce, each counted once, in micro-USD.
    announced: u64,
    /// Some steps may run concurrently.
    concurrent: bool,
    /// Some step is cached.
    cached: bool,
}

impl Gen {
    fn name(&mut self, prefix: &str) -> String {
        self.steps += 1;
        format!("{prefix}{}", self.steps)
    }

    /// A leaf step; unless `may_fail`, it never fails for good (its output feeds the next step).
    fn leaf(&mut self, list_len: Option<u64>, may_fail: bool) -> Step {
        let retries = self.rng.below(3) as u32;
        let fail_attempts = if may_fail && self.rng.chance(30) {
            retries + 1 // fails for good: the step (and usually the run) fails
        } else if retries > 0 && self.rng.chance(250) {
            self.rng.range(1, u64::from(retries)) as u32 // transient: a retry succeeds
        } else {
            0
        };
        let cost = if self.rng.chance(500) { self.rng.range(100, 5000) } else { 0 };
        let max_cost = if cost > 0 { cost + self.rng.below(2000) } else { 0 };
        self.announced += max_cost;
        let params = LeafParams {
            k: self.rng.below(1000) as i64,
            list_len,
            effect: self.rng.chance(500),
            fail_attempts,
            sleep_ms: if self.rng.chance(150) { self.rng.range(1, 2000) } else { 0 },
            cost,
            max_cost,
            drift: false,
        };
        let sleep_ms = params.sleep_ms;
        let mut step = Step::skill(self.name("s"), SIM_SKILL, params.to_json());
        step.config.max_retries = retries;
        if sleep_ms > 1 && self.rng.chance(300) {
            // A timeout: shorter than the call when the step may fail (every attempt times out), else longer.
            let ms = if may_fail && self.rng.chance(500) { self.rng.range(1, sleep_ms - 1) } else { sleep_ms * 2 };
            step.config.timeout_s = Some(ms as f64 / 1000.0);
        }
        step
    }

    /// A simulated model agent with `settings`.
    fn model(settings: Value) -> AgentRef {
        AgentRef::Model { model: "sim:model".into(), settings }
    }

    /// Steps of one sequence: between `min` and `max` of them, each possibly a composite.
    fn sequence(&mut self, depth: u32, min: u64, max: u64) -> Vec<Step> {
        let n = self.rng.range(min, max);
        let mut out = Vec::new();
        for _ in 0..n {
            if self.steps >= MAX_STEPS {
                break;
            }
            let composite = depth < MAX_DEPTH && self.rng.chance(350);
            let special = !composite && self.rng.chance(150);
            match if composite {
                self.rng.below(10)
            } else if special {
                self.rng.range(10, 11)
            } else {
                u64::MAX // a leaf
            } {
                0 => {
                    // A loop: its iterations feed each other; it stops on a condition or after `max_loops`.
                    let mut body = self.sequence(depth + 1, 1, 3);
                    body.push(self.leaf(None, false));
                    let modulus = self.rng.range(2, 5);
                    out.push(
                        Step::loop_(self.name("loop"), body)
                            .max_loops(self.rng.range(1, 3) as u32)
                            .exit_when(format!("previous_step % {modulus} == 0"))
                            .on_max_loops(OnMaxLoops::Succeed)
                            .build(),
                    );
                }
                1 => {
                    // A map over a list made by the step before it.
                    let len = self.rng.below(4);
                    out.push(self.leaf(Some(len), false));
                    let body = self.sequence(depth + 1, 1, 2);
                    let concurrency = self.rng.range(1, 3) as usize;
                    self.concurrent |= concurrency > 1 && len > 1;
                    out.push(Step::map(self.name("map"), body).concurrency(concurrency).build());
                }
                2 => {
                    // A conditional on the (numeric) output of the step before it.
                    out.push(self.leaf(None, false));
                    let yes = self.sequence(depth + 1, 1, 2);
                    let no = self.sequence(depth + 1, 1, 2);
                    out.push(
                        Step::conditional(self.name("cond"))
                            .when("previous_step % 2 == 0")
                            .branch("true", yes)
                            .branch("false", no)
                            .build(),
                    );
                }
                3 => {
                    self.concurrent = true;
                    let mut step = Step::parallel(self.name("par"));
                    for b in 0..self.rng.range(2, 3) {
                        let steps = self.sequence(depth + 1, 1, 2);
                        step = step.branch(format!("b{b}"), steps);
                    }
                    out.push(step.build());
                }
                4 => {
                    let name = self.name("ask");
                    out.push(Step::hitl(name, "a number, please", None));
                }
                5 => {
                    // A cached step: repeated inputs (loop iterations, map items) may be answered from the cache.
                    self.cached = true;
                    let inner = self.leaf(None, false);
                    out.push(Step::new(self.name("cache"), StepKind::Cache(CacheSpec::new(inner))));
                }
                6 => {
                    // A dynamic router: a simulated model picks one of the branches from the input.
                    let names: Vec<String> = (0..self.rng.range(2, 3)).map(|b| format!("r{b}")).collect();
                    let mut spec = RouterSpec::new(Self::model(json!({"sim_branches": names})));
                    self.announced += MODEL_MAX_COST;
                    for n in &names {
                        spec.branches.push(Branch::new(n.clone(), self.sequence(depth + 1, 1, 2)));
                    }
                    out.push(Step::new(self.name("route"), StepKind::DynamicRouter(spec)));
                }
                10 => {
                    // An agentic loop: the planner calls the tool a few times (each call a side effect), then
                    // answers; sometimes it keeps calling past `max_turns` and the step fails.
                    let calls = self.rng.below(4);
                    let mut spec =
                        AgenticLoopSpec::new(Self::model(json!({"sim_calls": calls, "sim_k": self.rng.below(50)})));
                    spec.tools = vec![SIM_TOOL.to_owned()];
                    spec.max_turns = if self.rng.chance(100) { calls as u32 } else { calls as u32 + 1 }.max(1);
                    self.announced += u64::from(spec.max_turns) * MODEL_MAX_COST + calls * TOOL_MAX_COST;
                    let mut step = Step::new(self.name("agent"), StepKind::AgenticLoop(spec));
                    step.config.max_retries = 0;
                    out.push(step);
                }
                11 => {
                    // A model agent as a plain step.
                    let agent = Self::model(json!({"sim_k": self.rng.below(1000)}));
                    self.announced += MODEL_MAX_COST;
                    out.push(Step::new(self.name("ask_model"), StepKind::Step { agent: Some(agent) }));
                }
                7 => {
                    // A state machine: a ⇄ b until b's output says stop (or the hops run out: a typed error),
                    // a failure in a goes to the end state.
                    let m = self.rng.range(2, 4);
                    let a = self.sequence(depth + 1, 1, 2);
                    let b = self.sequence(depth + 1, 1, 2);
                    let end = self.sequence(depth + 1, 1, 1);
                    let hops = self.rng.range(3, 8) as u32;
                    out.push(
                        Step::state_machine(self.name("machine"), "a")
                            .state("a", a)
                            .state("b", b)
                            .state("end", end)
                            .end_state("end")
                            .transition("a", TransitionOn::Success, "b")
                            .transition("a", TransitionOn::Failure, "end")
                            .transition_when("b", TransitionOn::Success, "a", format!("previous_step % {m} != 0"))
                            .transition("b", TransitionOn::Success, "end")
                            .max_hops(hops)
                            .build(),
                    );
                }
                8 => {
                    // A tree search: simulated models propose candidates and score them.
                    let mut spec = TreeSearchSpec::new(
                        Self::model(json!({"sim_role": "propose", "sim_k": self.rng.below(100)})),
                        Self::model(json!({"sim_role": "evaluate", "sim_k": self.rng.below(100)})),
                    );
                    spec.branching_factor = self.rng.range(1, 3) as u32;
                    spec.beam_width = 2;
                    spec.max_depth = 2;
                    let iterations = self.rng.range(1, 3) as u32;
                    spec.max_iterations = Some(iterations);
                    spec.goal_score_threshold = 0.9;
                    self.announced += u64::from(iterations * (1 + spec.branching_factor)) * MODEL_MAX_COST;
                    let mut step = Step::new(self.name("search"), StepKind::TreeSearch(spec));
                    step.config.max_retries = 0;
                    out.push(step);
                }
                9 => {
                    // A child pipeline, imported: it runs on a fresh context with this step's input.
                    let steps = self.sequence(depth + 1, 1, 3);
                    let child = Arc::new(Pipeline::new(self.name("child"), steps));
                    out.push(Step::new(self.name("import"), StepKind::Import(ImportSpec::new("child", child))));
                }
                _ => out.push(self.leaf(None, true)),
            }
        }
        if out.is_empty() {
            out.push(self.leaf(None, false));
        }
        out
    }
}

/// The answer a simulated human gives to the pause `pause_id`: the same every time it is asked.
pub fn answer_for(pause_id: &str) -> Value {
    json!(crate::rng::digest(pause_id) % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_one_pipeline() {
        assert_eq!(scenario(42).pipeline, scenario(42).pipeline);
        assert_ne!(scenario(42).pipeline, scenario(43).pipeline);
    }
}
