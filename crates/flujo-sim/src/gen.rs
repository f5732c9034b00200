//! Random valid pipelines: every generated pipeline is a function of its seed.
//!
//! Leaves call the simulator's skill ([`crate::skills::SIM_SKILL`]): some make side effects, some fail their
//! first attempts (and are retried), some take simulated time; a few fail for good, so failed runs are
//! simulated too. Composites — loops, maps, conditionals, parallel steps — nest up to three levels, and human
//! steps (`hitl`) pause the run wherever they are, several at once inside parallel branches and maps.

use flujo_core::{OnMaxLoops, Pipeline, Step};
use serde_json::{json, Value};

use crate::rng::Rng;
use crate::skills::{LeafParams, SIM_SKILL};

/// A generated pipeline and its input.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub pipeline: Pipeline,
    pub input: Value,
}

/// Limits of the generator.
const MAX_DEPTH: u32 = 3;
const MAX_STEPS: u32 = 40;

/// The scenario of `seed`.
pub fn scenario(seed: u64) -> Scenario {
    let mut g = Gen { rng: Rng::new(seed, 1), steps: 0 };
    let steps = g.sequence(0, 2, 6);
    Scenario { seed, pipeline: Pipeline::new(format!("sim_{seed}"), steps), input: json!(g.rng.below(100)) }
}

struct Gen {
    rng: Rng,
    /// Steps generated so far (bounded by [`MAX_STEPS`]).
    steps: u32,
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
        let params = LeafParams {
            k: self.rng.below(1000) as i64,
            list_len,
            effect: self.rng.chance(500),
            fail_attempts,
            sleep_ms: if self.rng.chance(150) { self.rng.range(1, 2000) } else { 0 },
            drift: false,
        };
        let mut step = Step::skill(self.name("s"), SIM_SKILL, params.to_json());
        step.config.max_retries = retries;
        step
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
            match if composite { self.rng.below(5) } else { 5 } {
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
                    out.push(Step::map(self.name("map"), body).concurrency(self.rng.range(1, 3) as usize).build());
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
