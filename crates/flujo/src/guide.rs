//! A guide to the step kinds, one section per kind, each with an example that runs.
//!
//! Every example builds a small [`Pipeline`](crate::prelude::Pipeline) with the builders on
//! [`Step`](crate::prelude::Step), runs it, and checks the output. The skills are `flujo.builtins.transform`,
//! which evaluates its `expr` with the step's input as `previous_step`, so nothing needs a network.
//!
//! ## Paths and the journal
//!
//! Every step execution has a path, the key of its record in the journal. The top-level steps are `0`, `1`,
//! `2`, …. A step inside a composite adds a segment that names where it runs, then its index in that
//! sequence: `1/loop:2/0` is the first body step of the third iteration of the loop at top-level step `1`.
//! Calls a composite makes itself (a router's choice, a tree search's proposals) have paths of their own;
//! each section below gives them. A record is written when its step finishes, so children come before their
//! parent. With a store, a resumed run replays the records it finds and runs only what has none.
//!
//! A run's [`step_history`](crate::prelude::RunResult::step_history) holds the top-level steps; the nested
//! ones are in the journal ([`JournalStore::load_journal`](crate::prelude::JournalStore::load_journal), or
//! [`TaskClient::journal`](crate::prelude::TaskClient::journal)).
//!
//! ## Runs and handles
//!
//! [`Flujo::run`](crate::prelude::Flujo::run) runs to the end: completed, paused or failed (a failed step is
//! not an `Err`, the result's status says so). [`Flujo::start`](crate::prelude::Flujo::start) returns a
//! [`RunHandle`](crate::prelude::RunHandle) at once: read its events with `next_event` (or as a `Stream`),
//! then await it for the result. It must be called inside a Tokio runtime. `start_resume` does the same for a
//! resume.
//!
//! ```
//! use flujo::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let inc = Step::skill("inc", "flujo.builtins.transform", json!({"expr": "previous_step + 1"}));
//! let flujo = Flujo::builder(Pipeline::new("demo", vec![inc])).build()?;
//! let runtime = tokio::runtime::Runtime::new()?;
//! runtime.block_on(async {
//!     let mut handle = flujo.start(json!(1));
//!     let mut finished = Vec::new();
//!     while let Some(event) = handle.next_event().await {
//!         if let RunEvent::StepFinished { result, .. } = event {
//!             finished.push(result.path);
//!         }
//!     }
//!     assert_eq!(finished, ["0"]);
//!     let result = handle.await?;
//!     assert_eq!(result.output, Some(json!(2)));
//!     Ok::<_, FlujoError>(())
//! })?;
//! # Ok(())
//! # }
//! ```
//!
//! [`BlockingFlujo`](crate::prelude::BlockingFlujo) (`flujo.blocking()?`) is the same API for synchronous
//! code. It owns a runtime, so it needs nothing else; its `start` returns a handle whose events are an
//! iterator. It works outside any runtime and inside `spawn_blocking`; on an async task it returns
//! `FlujoError::BlockingInsideRuntime` (use the async API there).
//!
//! [`TaskClient`](crate::prelude::TaskClient) (`flujo.client()?`, which needs a store) lists, inspects,
//! resumes, replays and verifies stored runs, with the runner's skills and policies.
//!
//! ```
//! use std::sync::Arc;
//! use flujo::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let inc = Step::skill("inc", "flujo.builtins.transform", json!({"expr": "previous_step + 1"}));
//! let store = Arc::new(MemoryStore::new());
//! let flujo = Flujo::builder(Pipeline::new("demo", vec![inc])).store(store).build()?;
//! let result = flujo.blocking()?.run(json!(1))?;
//! assert_eq!(result.status, RunStatus::Completed);
//!
//! let client = flujo.client()?;
//! let runtime = tokio::runtime::Runtime::new()?;
//! let view = runtime.block_on(client.get_run(&result.run_id))?.expect("stored");
//! assert_eq!((view.output, view.journal_len), (Some(json!(2)), 1));
//! assert!(runtime.block_on(client.verify(&result.run_id))?.is_ok());
//! # Ok(())
//! # }
//! ```
//!
//! ## Skill steps
//!
//! [`Step::skill(name, id, params)`](crate::prelude::Step::skill) calls a registered skill with the step's
//! input and outputs what the skill returns. [`Step::passthrough`](crate::prelude::Step::passthrough) has no
//! skill: its output is its input. Both are journaled at their own path, one record whatever the number of
//! attempts.
//!
//! The common settings are methods on [`Step`](crate::prelude::Step), for every kind:
//!
//! * [`with_input`](crate::prelude::Step::with_input): the input, as a template (default: the previous step's
//!   output). A string that is exactly one `{{ expr }}` keeps the expression's type.
//! * [`with_sink_to`](crate::prelude::Step::with_sink_to): also write the output to a context path (default:
//!   none).
//! * [`with_retries`](crate::prelude::Step::with_retries): the retries after the first attempt (default 1, so
//!   2 attempts). A retry waits a short back-off first (from 100 ms, doubled each time, with jitter). A skill
//!   error made with `SkillError::fatal` is not retried.
//!
//! ```
//! use std::sync::Arc;
//! use flujo::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut skills = Skills::new();
//! skills.register_fn("demo.flaky", SideEffects::No, |call: SkillCall| async move {
//!     if call.attempt < 3 {
//!         return Err(SkillError::new("not yet"));
//!     }
//!     Ok(SkillOutput::value(call.input))
//! });
//! let pipeline = Pipeline::new("skills", vec![
//!     Step::skill("inc", "flujo.builtins.transform", json!({"expr": "previous_step + 1"})).with_sink_to("n"),
//!     Step::passthrough("same"),
//!     Step::skill("flaky", "demo.flaky", Value::Null).with_input(json!("{{ context.n * 10 }}")).with_retries(2),
//! ]);
//! let store = Arc::new(MemoryStore::new());
//! let flujo = Flujo::builder(pipeline).skills(Arc::new(skills)).store(store.clone()).build()?;
//! let result = flujo.blocking()?.run(json!(1))?;
//! assert_eq!(result.output, Some(json!(20)));
//! assert_eq!(result.context["n"], json!(2));
//! assert_eq!(result.step_history[2].attempts, 3);
//! # let journal = tokio::runtime::Runtime::new()?.block_on(store.load_journal(&result.run_id))?;
//! # let paths: Vec<&str> = journal.iter().map(|r| r.path.as_str()).collect();
//! # assert_eq!(paths, ["0", "1", "2"]);
//! # Ok(())
//! # }
//! ```
//!
//! ## Loop
//!
//! [`Step::loop_(name, body)`](crate::prelude::Step::loop_) runs its body again and again. The first
//! iteration gets the step's input, each later one the previous iteration's output. With
//! [`exit_when`](crate::prelude::LoopBuilder::exit_when) it stops after the first iteration whose output
//! (`previous_step`) makes the expression true; reaching [`max_loops`](crate::prelude::LoopBuilder::max_loops)
//! (default 5) first fails the step, unless `on_max_loops(OnMaxLoops::Succeed)`. Without an exit condition it
//! runs `max_loops` iterations and succeeds. The output is the last iteration's output. Iteration `i` runs at
//! `P/loop:i/…`.
//!
//! ```
//! use std::sync::Arc;
//! use flujo::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let double = Step::skill("x2", "flujo.builtins.transform", json!({"expr": "previous_step * 2"}));
//! let pipeline = Pipeline::new("loop", vec![
//!     Step::loop_("double", [double]).max_loops(10).exit_when("previous_step >= 20").into(),
//! ]);
//! let store = Arc::new(MemoryStore::new());
//! let flujo = Flujo::builder(pipeline).store(store.clone()).build()?;
//! let result = flujo.blocking()?.run(json!(3))?;
//! assert_eq!(result.output, Some(json!(24)));
//! assert_eq!(result.step_history[0].metadata["iterations"], json!(3));
//!
//! let journal = tokio::runtime::Runtime::new()?.block_on(store.load_journal(&result.run_id))?;
//! let paths: Vec<&str> = journal.iter().map(|r| r.path.as_str()).collect();
//! assert_eq!(paths, ["0/loop:0/0", "0/loop:1/0", "0/loop:2/0", "0"]);
//! # Ok(())
//! # }
//! ```
//!
//! ## Map
//!
//! [`Step::map(name, body)`](crate::prelude::Step::map) runs its body once per item of a list; the item is the
//! body's input and `this` in its templates. [`over`](crate::prelude::MapBuilder::over) names the list: a
//! context path (`context.items`) or a template (default: the step's input).
//! [`concurrency`](crate::prelude::MapBuilder::concurrency) is how many items run at once (default 1, one
//! after another); above 1 the items run on copies of the context, merged back in item order. The output is
//! the list of the items' outputs, in item order. Item `i` runs at `P/map:i/…`.
//!
//! ```
//! use flujo::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let square = Step::skill("square", "flujo.builtins.transform", json!({"expr": "this * this"}));
//! let pipeline = Pipeline::new("map", vec![
//!     Step::passthrough("items").with_sink_to("items"),
//!     Step::map("each", [square]).over("context.items").concurrency(2).into(),
//! ]);
//! let flujo = Flujo::builder(pipeline).build()?;
//! let result = flujo.blocking()?.run(json!([1, 2, 3]))?;
//! assert_eq!(result.output, Some(json!([1, 4, 9])));
//! # Ok(())
//! # }
//! ```
//!
//! ## Conditional
//!
//! [`Step::conditional(name)`](crate::prelude::Step::conditional) runs one branch. The value of
//! [`when`](crate::prelude::ConditionalBuilder::when) (an expression over the input, `previous_step`) is the
//! key: a string as it is, a boolean as `true` or `false`, another value as its JSON text. The branch of that
//! name runs with the step's input;
//! when no branch has the name, [`otherwise`](crate::prelude::ConditionalBuilder::otherwise) runs, and without
//! it the step fails. The output is the branch's output. Branch `NAME` runs at `P/branch:NAME/…`, the
//! `otherwise` branch at `P/default/…`.
//!
//! ```
//! use flujo::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pipeline = Pipeline::new("conditional", vec![
//!     Step::conditional("size")
//!         .when("'big' if previous_step > 10 else 'small'")
//!         .branch("big", [Step::skill("cut", "flujo.builtins.transform", json!({"expr": "previous_step - 10"}))])
//!         .otherwise([Step::passthrough("keep")])
//!         .into(),
//! ]);
//! let flujo = Flujo::builder(pipeline).build()?.blocking()?;
//! assert_eq!(flujo.run(json!(30))?.output, Some(json!(20)));
//! assert_eq!(flujo.run(json!(3))?.output, Some(json!(3)));
//! # Ok(())
//! # }
//! ```
//!
//! ## Parallel
//!
//! [`Step::parallel(name)`](crate::prelude::Step::parallel) runs every branch at once, each with the step's
//! input and a copy of the context. [`merge`](crate::prelude::ParallelBuilder::merge) says how the branches'
//! context writes reach the run's context (default `MergeStrategy::ContextUpdate`; `NoMerge` drops them). The
//! output is an object of branch name to output, or what [`reduce`](crate::prelude::ParallelBuilder::reduce)
//! makes of the outputs (`ReduceMode::Values`: the list of outputs, in declaration order). A failed branch
//! fails the step (default `OnBranchFailure::Propagate`). Branch `NAME` runs at `P/branch:NAME/…`. In the
//! example, the `seen` write of branch `a` would reach the context with the default merge; `NoMerge` drops
//! it.
//!
//! ```
//! use flujo::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tf = |name: &str, expr: &str| Step::skill(name, "flujo.builtins.transform", json!({ "expr": expr }));
//! let pipeline = Pipeline::new("parallel", vec![
//!     Step::parallel("both")
//!         .branch("a", [tf("plus", "previous_step + 1").with_sink_to("seen")])
//!         .branch("b", [tf("times", "previous_step * 10")])
//!         .merge(MergeStrategy::NoMerge)
//!         .reduce(ReduceMode::Values)
//!         .into(),
//! ]);
//! let result = Flujo::builder(pipeline).build()?.blocking()?.run(json!(2))?;
//! assert_eq!(result.output, Some(json!([3, 20])));
//! assert_eq!(result.context.get("seen"), None);
//! # Ok(())
//! # }
//! ```
//!
//! ## Dynamic router
//!
//! [`Step::router(name, agent)`](crate::prelude::Step::router) asks an agent (a skill here) which branches to
//! run: it returns a branch name or a list of names. The chosen branches then run as in a parallel step, with
//! the same `merge`, `reduce` and `on_branch_failure` settings and defaults, so the output is by default an
//! object of branch name to output. A name that is not a branch fails the step. The choice is journaled at
//! `P/router`, so a resumed run does not ask again; branch `NAME` runs at `P/branch:NAME/…`.
//!
//! ```
//! use flujo::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let expr = "'big' if previous_step > 10 else 'small'";
//! let pick = AgentRef::skill("flujo.builtins.transform", json!({ "expr": expr }));
//! let pipeline = Pipeline::new("router", vec![
//!     Step::router("route", pick)
//!         .branch("big", [Step::skill("cut", "flujo.builtins.transform", json!({"expr": "previous_step - 10"}))])
//!         .branch("small", [Step::passthrough("keep")])
//!         .into(),
//! ]);
//! let flujo = Flujo::builder(pipeline).build()?.blocking()?;
//! assert_eq!(flujo.run(json!(30))?.output, Some(json!({"big": 20})));
//! assert_eq!(flujo.run(json!(3))?.output, Some(json!({"small": 3})));
//! # Ok(())
//! # }
//! ```
//!
//! ## Cache
//!
//! [`Step::cache(name, step)`](crate::prelude::Step::cache) runs the wrapped step and keeps its output when it
//! succeeds, keyed by the wrapped step's definition and its input. A later execution with the same key, in
//! any run of the same runner, outputs the kept value without running the step (`metadata.cache_hit` is true).
//! [`ttl_s`](crate::prelude::CacheBuilder::ttl_s) is how long an entry stays valid (default: forever). The
//! cache is in memory, one per runner, unless the runner's builder is given another
//! (`FlujoRuntimeBuilder::cache`). The wrapped step runs at `P/wrapped`; a cache hit writes only the cache
//! step's own record.
//!
//! ```
//! use flujo::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let square = Step::skill("square", "flujo.builtins.transform", json!({"expr": "previous_step * previous_step"}));
//! let pipeline = Pipeline::new("cache", vec![Step::cache("cached", square).ttl_s(60.0).into()]);
//! let flujo = Flujo::builder(pipeline).build()?.blocking()?;
//! let first = flujo.run(json!(7))?;
//! let second = flujo.run(json!(7))?;
//! assert_eq!((first.output, second.output.clone()), (Some(json!(49)), Some(json!(49))));
//! assert_eq!(first.step_history[0].metadata["cache_hit"], json!(false));
//! assert_eq!(second.step_history[0].metadata["cache_hit"], json!(true));
//! # Ok(())
//! # }
//! ```
//!
//! ## State machine
//!
//! [`Step::state_machine(name, start)`](crate::prelude::Step::state_machine) runs the steps of the start
//! state, then follows the first transition (in declaration order) whose `from` (a state or `*`) and event
//! match and whose optional `when` holds
//! ([`transition_when`](crate::prelude::StateMachineBuilder::transition_when); `previous_step` is the state's
//! output). The events are `TransitionOn::Success`, `Failure`, and `Pause` (after a state in which a human
//! answered a pause). Each state's output is the next one's input. The machine finishes after an end state;
//! the output is that state's output (a state without steps passes its input on). A state that fails with no
//! `Failure` transition, or succeeds with no transition and is not an end state, fails the step. More than
//! [`max_hops`](crate::prelude::StateMachineBuilder::max_hops) transitions (default 100) stop the run. State
//! `NAME` on hop `H` runs at `P/state:NAME@H/…`.
//!
//! ```
//! use std::sync::Arc;
//! use flujo::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let inc = Step::skill("inc", "flujo.builtins.transform", json!({"expr": "previous_step + 1"}));
//! let pipeline = Pipeline::new("machine", vec![
//!     Step::state_machine("count", "work")
//!         .state("work", [inc])
//!         .end_state("done")
//!         .transition_when("work", TransitionOn::Success, "work", "previous_step < 3")
//!         .transition("work", TransitionOn::Success, "done")
//!         .into(),
//! ]);
//! let store = Arc::new(MemoryStore::new());
//! let result = Flujo::builder(pipeline).store(store.clone()).build()?.blocking()?.run(json!(0))?;
//! assert_eq!(result.output, Some(json!(3)));
//! assert_eq!(result.step_history[0].metadata["states"], json!(["work", "work", "work", "done"]));
//! # let journal = tokio::runtime::Runtime::new()?.block_on(store.load_journal(&result.run_id))?;
//! # let paths: Vec<&str> = journal.iter().map(|r| r.path.as_str()).collect();
//! # assert_eq!(paths, ["0/state:work@0/0", "0/state:work@1/0", "0/state:work@2/0", "0"]);
//! # Ok(())
//! # }
//! ```
//!
//! ## Human input (hitl)
//!
//! [`Step::hitl(name, message, schema)`](crate::prelude::Step::hitl) pauses the run: the result's status is
//! `Paused` and [`pending`](crate::prelude::RunResult::pending) holds the rendered message and a `pause_id`
//! (the step's path). [`Flujo::resume(run_id, answer)`](crate::prelude::Flujo::resume) continues the run: the
//! finished steps replay from the journal, the answer is the hitl step's output, and it is appended to the
//! context's `hitl_history`. With a schema, an answer that does not match it is refused: `resume` returns an
//! error and the run stays paused. Resuming needs a store. The hitl step's record is written when it is
//! answered, at the pause's path.
//!
//! ```
//! use std::sync::Arc;
//! use flujo::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let yes_no = json!({"type": "string", "enum": ["yes", "no"]});
//! let pipeline = Pipeline::new("approval", vec![
//!     Step::hitl("approve", "Ship {{ previous_step }}?", Some(yes_no)).with_sink_to("decision"),
//!     Step::skill("report", "flujo.builtins.transform", json!({"expr": "'answer: ' ~ previous_step"})),
//! ]);
//! let store = Arc::new(MemoryStore::new());
//! let flujo = Flujo::builder(pipeline).store(store).build()?.blocking()?;
//! let paused = flujo.run(json!("v2"))?;
//! assert_eq!(paused.status, RunStatus::Paused);
//! assert_eq!((paused.pending[0].pause_id.as_str(), paused.pending[0].message.as_str()), ("0", "Ship v2?"));
//! assert!(flujo.resume(&paused.run_id, json!("maybe")).is_err());
//! let done = flujo.resume(&paused.run_id, json!("yes"))?;
//! assert_eq!(done.output, Some(json!("answer: yes")));
//! assert_eq!(done.context["decision"], json!("yes"));
//! # assert_eq!(done.context["hitl_history"][0]["answer"], json!("yes"));
//! # Ok(())
//! # }
//! ```
//!
//! ## Tree search
//!
//! [`Step::tree_search(name, proposer, evaluator)`](crate::prelude::Step::tree_search) is a beam search. The
//! step's input is the root candidate. From the best open node, the proposer suggests up to
//! [`branching_factor`](crate::prelude::TreeSearchBuilder::branching_factor) new candidates (default 3); the
//! evaluator scores each from 0 to 1; the frontier keeps the best
//! [`beam_width`](crate::prelude::TreeSearchBuilder::beam_width) nodes (default 3). The search ends at a
//! candidate scoring at least `goal_score_threshold` (default 1.0), when no node is left to expand (nodes
//! [`max_depth`](crate::prelude::TreeSearchBuilder::max_depth) deep, default 5, are not expanded), or after
//! `max_iterations` expansions (default: no limit but the engine's). The output is the winning candidate,
//! or else the best one seen (with `require_goal(true)` the step then fails). Candidates that break an
//! [`invariant`](crate::prelude::TreeSearchBuilder::invariant) (an expression over `output`) are dropped.
//!
//! The agents are model agents or skills. A model gets a prompt; a skill gets an object with the `candidate`,
//! its `depth`, the `objective`, a `path_summary` and the `prompt`. The evaluator returns a number, or an
//! object with a `score`. Proposer calls are journaled at `P/node:N/propose`, evaluator calls at
//! `P/node:N/eval:J` (`N` the expanded node, `J` the candidate's index in the proposal).
//!
//! ```
//! use flujo::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tf = |expr: &str| AgentRef::skill("flujo.builtins.transform", json!({ "expr": expr }));
//! // The proposer appends "a" or "b"; the score is the number of "b"s out of three.
//! let proposer = tf("[previous_step.candidate ~ 'a', previous_step.candidate ~ 'b']");
//! let evaluator = tf("{'score': previous_step.candidate.count('b') / 3}");
//! let search = Step::tree_search("search", proposer, evaluator)
//!     .branching_factor(2)
//!     .beam_width(2)
//!     .max_depth(6)
//!     .invariant("output | length < 6");
//! let flujo = Flujo::builder(Pipeline::new("search", vec![search.into()])).build()?;
//! assert_eq!(flujo.blocking()?.run(json!("a"))?.output, Some(json!("abbb")));
//! # Ok(())
//! # }
//! ```
//!
//! ## Agentic loop
//!
//! [`Step::agentic_loop(name, planner)`](crate::prelude::Step::agentic_loop) gives a model agent (the planner,
//! an `AgentRef::Model`) the skills named with [`tool`](crate::prelude::AgenticLoopBuilder::tool) as tools.
//! Each turn the model answers or calls tools; the tool results go back to it; the loop ends when it answers
//! without calling a tool, and that answer is the output. A model still calling tools after
//! [`max_turns`](crate::prelude::AgenticLoopBuilder::max_turns) turns (default 10) fails the step. Each model
//! turn is journaled at `P/turn:N` and each tool call at `P/turn:N/tool:J`, so a resumed run makes no call
//! twice.
//!
//! A model agent needs a model registry, which comes with the `llm` feature
//! (`flujo = { version = "…", features = ["llm"] }`); without one, building the runner fails. The example
//! uses the offline `mock:echo` model, which answers with its input and calls no tool. It runs when the
//! `llm` feature is on.
//!
//! ```
//! use std::sync::Arc;
//! use flujo::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let planner = AgentRef::Model { model: "mock:echo".into(), settings: json!({"model": "mock:echo"}) };
//! let pipeline = Pipeline::new("agent", vec![
//!     Step::agentic_loop("plan", planner).tool("flujo.builtins.stringify").max_turns(4).into(),
//! ]);
//! # #[cfg(not(feature = "llm"))]
//! # assert!(Flujo::builder(pipeline).build().is_err());
//! # #[cfg(feature = "llm")]
//! # {
//! let models = flujo::llm::LlmRegistry::new(flujo::llm::LlmConfig::default())?;
//! let store = Arc::new(MemoryStore::new());
//! let flujo = Flujo::builder(pipeline).models(Arc::new(models)).store(store.clone()).build()?;
//! let result = flujo.blocking()?.run(json!("hello"))?;
//! assert_eq!(result.output, Some(json!("hello")));
//! # let journal = tokio::runtime::Runtime::new()?.block_on(store.load_journal(&result.run_id))?;
//! # let paths: Vec<&str> = journal.iter().map(|r| r.path.as_str()).collect();
//! # assert_eq!(paths, ["0/turn:0", "0"]);
//! # }
//! # Ok(())
//! # }
//! ```
//!
//! ## Custom kinds
//!
//! A kind of your own is a [`StepPolicy`](crate::prelude::StepPolicy) registered on the runner's builder with
//! `.policy("kind", Arc::new(policy))`, and steps made with
//! [`Step::custom(name, "kind", spec)`](crate::prelude::Step::custom). `spec` is the kind's own settings (any
//! JSON; the policy reads it from `StepKind::Custom` in `f.step.kind`). A custom step may hold named child sequences
//! ([`child`](crate::prelude::CustomBuilder::child)); the policy runs one with
//! [`run_child(name, key, input)`](crate::prelude::ExecutionFrame::run_child). Its steps run at
//! `P/NAME:KEY/0`, `P/NAME:KEY/1`, …, with the step's context, and are journaled like the steps of the
//! built-in composites: on a resumed run, the same key replays what was journaled. The policy's output is
//! the step's output. A pause or a stop inside a child comes back as `Err`: return it with `?`. A failed child
//! step comes back as `Ok` with a failed [`SeqOutcome`](crate::prelude::SeqOutcome): check
//! `succeeded()` before using its output (the example does not, to stay short).
//!
//! `docs/custom-step-kinds.md` in the repository is the full guide: what a policy receives and returns, the
//! YAML form, and the journaling and replay rules a policy must follow to stay durable (side effects only in
//! children or journaled calls, deterministic decisions, keys from its own progress, interrupts returned with
//! `?`). Its complete example, a `best_of_n` kind paused and resumed in the middle, is
//! `examples/custom_step_kind.rs` of this crate.
//!
//! ```
//! use std::sync::Arc;
//! use flujo::prelude::*;
//!
//! struct Twice;
//!
//! #[async_trait]
//! impl StepPolicy for Twice {
//!     async fn execute(&self, mut f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
//!         let first = f.run_child("body", 0, f.input.clone()).await?;
//!         let second = f.run_child("body", 1, first.output).await?;
//!         Ok(PolicyOutcome::success(second.output))
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let inc = Step::skill("inc", "flujo.builtins.transform", json!({"expr": "previous_step + 1"}));
//! let pipeline = Pipeline::new("custom", vec![Step::custom("t", "twice", Value::Null).child("body", [inc]).into()]);
//! let store = Arc::new(MemoryStore::new());
//! let flujo = Flujo::builder(pipeline).store(store.clone()).policy("twice", Arc::new(Twice)).build()?;
//! let result = flujo.blocking()?.run(json!(1))?;
//! assert_eq!(result.output, Some(json!(3)));
//!
//! let journal = tokio::runtime::Runtime::new()?.block_on(store.load_journal(&result.run_id))?;
//! let paths: Vec<&str> = journal.iter().map(|r| r.path.as_str()).collect();
//! assert_eq!(paths, ["0/body:0/0", "0/body:1/0", "0"]);
//! # Ok(())
//! # }
//! ```
//!
//! ## Governance
//!
//! A [`GovernancePolicy`](crate::prelude::GovernancePolicy) registered on the builder is asked before every
//! model, skill and tool call, and answers allow, modify (another input) or deny (the call is not made and the
//! run fails with `governance_denied`). The built-in policies (`pii_scrub`, `deny`, allowlists, a policy
//! program) are in [`flujo::engine::governance`](crate::engine::governance); `docs/governance.md` has the
//! `flujo.toml` form.
//!
//! ```
//! use std::sync::Arc;
//! use flujo::prelude::*;
//!
//! struct NoSecrets;
//!
//! #[async_trait]
//! impl GovernancePolicy for NoSecrets {
//!     fn name(&self) -> &str {
//!         "no_secrets"
//!     }
//!     async fn evaluate(&self, req: &GovernanceRequest<'_>) -> GovernanceDecision {
//!         match req.input.as_str() {
//!             Some(s) if s.contains("secret") => GovernanceDecision::Deny("no secrets".into()),
//!             _ => GovernanceDecision::Allow,
//!         }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pipeline = Pipeline::new("echo", vec![Step::skill("say", "flujo.builtins.stringify", Value::Null)]);
//! let flujo = Flujo::builder(pipeline).governance(Arc::new(NoSecrets)).build()?;
//! let ok = flujo.blocking()?.run(json!("hello"))?;
//! assert_eq!(ok.status, RunStatus::Completed);
//! let denied = flujo.blocking()?.run(json!("my secret"))?;
//! assert_eq!(denied.error.map(|e| e.kind), Some("governance_denied".to_owned()));
//! assert_eq!(flujo.governance_stats().denied, 1);
//! # Ok(())
//! # }
//! ```
//!
//! ## Specs, results and stability
//!
//! The step kinds' specs (`LoopSpec`, `ParallelSpec`, …), [`Branch`](crate::prelude::Branch), `StepConfig`,
//! [`UsageLimits`](crate::prelude::UsageLimits), the results and the skill types are `#[non_exhaustive]`: a new
//! field in a later release is not a breaking change, so they cannot be written as struct literals outside
//! Flujo. Make them with the builders above, their `new` constructors and `with_*` methods, or `Default` and
//! field assignment; read their fields as usual.
//!
//! ```
//! use flujo::prelude::*;
//!
//! let limits = UsageLimits::new().with_cost_limit(0.50).with_token_limit(20_000);
//! let mut config = flujo::core::StepConfig::default();
//! config.timeout_s = Some(30.0);
//! let step = Step::skill("fetch", "flujo.builtins.passthrough", Value::Null).with_config(config);
//! assert_eq!(step.config.max_retries, 1);
//! assert_eq!(limits.total_tokens_limit, Some(20_000));
//! let branch = Branch::new("fast", vec![step]);
//! assert_eq!(serde_json::to_value(&branch).unwrap()[0], "fast");
//! ```
