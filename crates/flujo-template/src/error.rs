//! Errors of template compilation and rendering.
//!
//! Every failure of the template layer is a [`TemplateError`]; minijinja's own errors are mapped onto it by
//! [`from_minijinja`] so that callers never see the engine's types.

use minijinja::ErrorKind;

/// A failed template compilation, rendering or expression evaluation.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum TemplateError {
    /// The source is not a valid template or expression (or uses a construct Flujo refuses, such as
    /// `{% include %}`). `line` is 1-based, in the original source.
    #[error("template syntax error: {message}")]
    Syntax { message: String, line: Option<usize> },
    /// Evaluation failed (type error, unknown filter, exhausted fuel, …).
    #[error("template render error: {message}")]
    Render { message: String },
    /// A name or attribute was undefined while rendering in [`UndefinedMode::Strict`](crate::UndefinedMode).
    #[error("undefined variable: {message}")]
    Undefined { message: String },
    /// The rendered text would exceed the output limit (see [`MAX_OUTPUT_BYTES`](crate::MAX_OUTPUT_BYTES)).
    #[error("template output exceeds {limit} bytes")]
    OutputTooLarge { limit: usize },
}

impl TemplateError {
    /// The 1-based source line of a syntax error, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            TemplateError::Syntax { line, .. } => *line,
            _ => None,
        }
    }

    pub(crate) fn syntax(message: impl Into<String>, line: Option<usize>) -> Self {
        TemplateError::Syntax { message: message.into(), line }
    }

    pub(crate) fn render(message: impl Into<String>) -> Self {
        TemplateError::Render { message: message.into() }
    }
}

/// Maps a minijinja error onto a [`TemplateError`].
pub(crate) fn from_minijinja(err: &minijinja::Error) -> TemplateError {
    match err.kind() {
        ErrorKind::SyntaxError => {
            let detail = err.detail().unwrap_or("invalid syntax");
            let message = match err.line() {
                Some(line) => format!("{detail} (line {line})"),
                None => detail.to_owned(),
            };
            TemplateError::Syntax { message, line: err.line() }
        }
        ErrorKind::UndefinedError => TemplateError::Undefined { message: describe(err) },
        _ => TemplateError::Render { message: describe(err) },
    }
}

/// `kind: detail (line N)` plus the chain of causes, without minijinja's internal template name.
fn describe(err: &minijinja::Error) -> String {
    let mut out = err.kind().to_string();
    if let Some(detail) = err.detail() {
        out.push_str(": ");
        out.push_str(detail);
    }
    if let Some(line) = err.line() {
        out.push_str(&format!(" (line {line})"));
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
