//! Flujo templates and expressions: Jinja semantics (via minijinja) over a step's scope.
//!
//! Templates (`"Hello {{ context.user.name | upper }}"`) render step inputs and prompts; expressions
//! (`previous_step >= 10`) drive conditions. Both see the names of a [`Scope`]: `previous_step`, `context`,
//! `steps` (`steps.NAME` and `steps.NAME.output` alike), `initial_prompt`, `resume_input`, `this` and extra
//! names. Flujo's Handlebars-style helpers `{{#if}}…{{else}}…{{/if}}`, `{{#unless}}`, `{{#each xs}}…{{/each}}`
//! (with `this` as the item) are translated to Jinja. Python string methods (`startswith`, `strip`, …) work.
//!
//! Compile once, render many times: [`compile_template`] and [`compile_expression`] return cheap, shareable
//! handles and cache them by source. Rendering converts only the data a template reads: context values are
//! exposed through lazy views into the shared JSON, and a plain lookup path such as `{{ steps.fetch }}` is
//! resolved without running the template VM at all. Templates are sandboxed: no file, network or environment access, bounded
//! output ([`MAX_OUTPUT_BYTES`]) and bounded work ([`MAX_FUEL`], [`MAX_RECURSION`]).
//!
//! Undefined names render as empty in [`UndefinedMode::Lenient`] (chained lookups such as `a.b.c` on a missing
//! `a` too) and are errors in [`UndefinedMode::Strict`].

mod compiled;
mod convert;
mod env;
mod error;
mod fast;
mod guard;
mod lexer;
mod paths;
mod scope;

pub use compiled::{
    compile_expression, compile_json, compile_template, render_json, unknown_expression_filters, unknown_filters,
    CompiledExpr, CompiledJson, CompiledTemplate,
};
pub use env::{
    KNOWN_FILTERS, MAX_BUILT_BYTES, MAX_FUEL, MAX_ITEMS, MAX_ITERATIONS, MAX_OUTPUT_BYTES, MAX_RECURSION,
    MAX_STRING_BYTES,
};
pub use error::TemplateError;
pub use lexer::is_template;
pub use paths::{dotted, expression_reads, template_reads, PathSegment, ReadUse, VarRead};
pub use scope::Scope;

/// How undefined names and attributes behave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UndefinedMode {
    /// Undefined renders as an empty string (and is `null` as a value, false as a condition); looking up an
    /// attribute of something undefined is undefined too.
    #[default]
    Lenient,
    /// Using an undefined value is a [`TemplateError::Undefined`] (testing it with `is defined` or giving it a
    /// `default` is still allowed).
    Strict,
}

#[cfg(test)]
mod tests;
