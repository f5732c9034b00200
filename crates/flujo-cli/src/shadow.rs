//! `[shadow_eval]` in the CLI: builds the evaluator (the judge from the configured providers), tells it about
//! each finished run, takes over evaluations other processes left pending, and waits for its evaluations
//! before the process exits (up to their timeout). A judge that cannot be built is a warning: shadow
//! evaluations never change a run's outcome.

use std::collections::BTreeMap;
use std::sync::Arc;

use flujo_core::{ModelRegistry, RunResult, Store};
use flujo_engine::shadow::ShadowEvaluator;
use serde_json::Value;

use crate::config::Config;

/// The evaluator of `[shadow_eval]`, when it is enabled and its judge can be built. A judge named
/// `agents.NAME` is the agent of that name in `agents` (the blueprint being run), else in the project's
/// `pipeline.yaml`.
pub(crate) fn evaluator(
    cfg: &Config,
    store: &Arc<dyn Store>,
    agents: Option<&BTreeMap<String, flujo_blueprint::AgentDecl>>,
) -> Option<Arc<ShadowEvaluator>> {
    let config = cfg.shadow.as_ref().filter(|c| c.enabled)?;
    let (model, settings) = match config.judge_agent() {
        None => (config.judge.clone(), config.judge_settings()),
        Some(name) => {
            let project = if agents.is_none() { project_agents(cfg) } else { None };
            match agents.or(project.as_ref()).and_then(|a| a.get(name)) {
                Some(decl) => (decl.model.clone(), config.judge_settings_over(&decl.settings())),
                None => {
                    errln!(
                        "warning: [shadow_eval] judge {}: no agent `{name}` in the blueprint; no shadow evaluation is made",
                        config.judge
                    );
                    return None;
                }
            }
        }
    };
    let built = crate::commands::model_registry(cfg)
        .map_err(|e| e.message)
        .and_then(|models| models.resolve(&model, &settings).map_err(|e| e.to_string()));
    match built {
        Ok(judge) => Some(Arc::new(ShadowEvaluator::new(config.clone(), judge, Some(store.clone())))),
        Err(e) => {
            errln!("warning: [shadow_eval] judge {}: {e}; no shadow evaluation is made", config.judge);
            None
        }
    }
}

/// The agents of the project's `pipeline.yaml`, when it loads.
fn project_agents(cfg: &Config) -> Option<BTreeMap<String, flujo_blueprint::AgentDecl>> {
    let path = cfg.default_pipeline();
    path.is_file().then(|| crate::commands::load(&path, false).ok().map(|l| l.agents)).flatten()
}

/// After a run finished: schedule its evaluations (if sampled), take over orphaned ones, and wait for them
/// (up to their timeout) so that this process does not drop them.
pub(crate) async fn after_run(
    cfg: &Config,
    store: &Arc<dyn Store>,
    result: &RunResult,
    agents: Option<&BTreeMap<String, flujo_blueprint::AgentDecl>>,
) {
    let Some(ev) = evaluator(cfg, store, agents) else { return };
    let input = match store.get_run(&result.run_id).await {
        Ok(Some(run)) => run.input,
        _ => Value::Null,
    };
    ev.pick_up(16).await;
    ev.observe(result, &input).await;
    finish(&ev).await;
}

/// Waits for `ev`'s evaluations, and says when some had to be left pending.
pub(crate) async fn finish(ev: &ShadowEvaluator) {
    let left = ev.drain(ev.drain_limit()).await;
    if left > 0 {
        errln!("note: {left} shadow evaluation(s) did not finish in time; they stay pending and the next flujo process takes them over");
    }
}
