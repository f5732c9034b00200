//! `kind: hitl`: pauses the run at its path until an answer addressed to that `pause_id` arrives.

use std::sync::Arc;

use async_trait::async_trait;
use flujo_core::{Interrupt, PatchOp, PendingPause, StepKind, Value};
use flujo_template::Scope;

use crate::executor::last_answer;
use crate::policy::{ExecutionFrame, PolicyOutcome, StepPolicy};

/// The policy of `kind: hitl`: pauses the run with the rendered message until an answer addressed to the
/// step's path (its `pause_id`) arrives; the answer becomes the step's output and is appended to
/// `hitl_history`.
pub struct HitlPolicy;

#[async_trait]
impl StepPolicy for HitlPolicy {
    async fn execute(&self, f: ExecutionFrame<'_>) -> Result<PolicyOutcome, Interrupt> {
        let StepKind::Hitl(spec) = &f.step.kind else {
            return Ok(PolicyOutcome::failure(Value::Null, "hitl policy used for another kind"));
        };
        let message = {
            let snap = f.ctx.snapshot();
            let resume = last_answer(&snap);
            let mut scope = Scope::new(&f.input);
            scope.context = Some(&snap);
            scope.resume_input = resume.as_ref();
            scope.this = f.lex.this;
            match flujo_template::compile_template(&spec.message)
                .and_then(|t| t.render(&scope, f.core.undefined_mode()))
            {
                Ok(m) => m,
                Err(e) => return Ok(PolicyOutcome::failure(Value::Null, format!("message template: {e}"))),
            }
        };
        match f.run.take_answer(f.path) {
            Some(answer) => {
                // The answer was validated against `input_schema` before the walk started; check again in case
                // it reached us another way (e.g. a custom resume path).
                if let Some(schema) = spec.input_schema.as_ref().and_then(|s| f.core.prepared.schema(s)) {
                    if let Err(e) = schema.validate(&answer) {
                        return Ok(PolicyOutcome::failure(
                            Value::Null,
                            format!("answer does not match input_schema: {e}"),
                        ));
                    }
                }
                let entry = serde_json::json!({
                    "pause_id": f.path,
                    "step": f.step.name,
                    "message": message,
                    "answer": answer,
                });
                let mut o = PolicyOutcome::success(answer);
                o.context_ops.push(PatchOp::Append { path: vec!["hitl_history".to_owned()], value: Arc::new(entry) });
                Ok(o)
            }
            None => Err(Interrupt::Paused(vec![PendingPause::new(
                f.path,
                &f.step.name,
                message,
                spec.input_schema.clone(),
            )])),
        }
    }
}
