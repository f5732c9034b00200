//! `[shadow_eval]` in the CLI: builds the evaluator (the judge from the configured providers), tells it about
//! each finished run, takes over evaluations other processes left pending, and waits for its evaluations
//! before the process exits (up to their timeout). A judge that cannot be built is a warning: shadow
//! evaluations never change a run's outcome.

use std::sync::Arc;

use flujo_core::{ModelRegistry, RunResult, Store};
use flujo_engine::shadow::ShadowEvaluator;
use serde_json::Value;

use crate::config::Config;

/// The evaluator of `[shadow_eval]`, when it is enabled and its judge can be built.
pub(crate) fn evaluator(cfg: &Config, store: &Arc<dyn Store>) -> Option<Arc<ShadowEvaluator>> {
    let config = cfg.shadow.as_ref().filter(|c| c.enabled)?;
    let built = crate::commands::model_registry(cfg)
        .map_err(|e| e.message)
        .and_then(|models| models.resolve(&config.judge, &config.judge_settings()).map_err(|e| e.to_string()));
    match built {
        Ok(judge) => Some(Arc::new(ShadowEvaluator::new(config.clone(), judge, Some(store.clone())))),
        Err(e) => {
            errln!("warning: [shadow_eval] judge {}: {e}; no shadow evaluation is made", config.judge);
            None
        }
    }
}

/// After a run finished: schedule its evaluations (if sampled), take over orphaned ones, and wait for them
/// (up to their timeout) so that this process does not drop them.
pub(crate) async fn after_run(cfg: &Config, store: &Arc<dyn Store>, result: &RunResult) {
    let Some(ev) = evaluator(cfg, store) else { return };
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
