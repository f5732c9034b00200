//! Structured output: the agent's `output_schema` is sent in the provider's native form (see
//! [`crate::ResponseSchema`]), the reply is validated with `jsonschema`, repaired deterministically when it is
//! not clean JSON ([`repair_json`]: code fences, leading and trailing prose, trailing commas, single quotes,
//! Python literals), and when it still violates the schema the model is asked again with the validation error
//! appended, at most `max_retries` times ([`chat_structured`]). The result is the validated JSON value, or
//! [`LlmError::SchemaViolation`] naming the last violation.

use std::sync::Arc;

use flujo_core::TokenUsage;
use serde_json::Value;

use crate::chat::{ChatMessage, ChatModel, ChatSettings, ResponseSchema};
use crate::error::LlmError;

/// A compiled output schema.
#[derive(Clone)]
pub struct StructuredOutput {
    response: ResponseSchema,
    validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for StructuredOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StructuredOutput").field("response", &self.response).finish_non_exhaustive()
    }
}

/// How many validation errors a re-ask or an error message lists.
const MAX_LISTED_ERRORS: usize = 5;

impl StructuredOutput {
    /// Compiles `schema`; an invalid schema is a configuration error.
    pub fn new(schema: Value) -> Result<Self, LlmError> {
        let validator =
            jsonschema::validator_for(&schema).map_err(|e| LlmError::Config(format!("invalid output_schema: {e}")))?;
        Ok(StructuredOutput { response: ResponseSchema::new(schema), validator: Arc::new(validator) })
    }

    pub fn schema(&self) -> &Value {
        &self.response.schema
    }

    /// The schema as sent to providers.
    pub fn response_schema(&self) -> &ResponseSchema {
        &self.response
    }

    /// `Err` lists the violations (`at /path: message; …`).
    pub fn validate(&self, value: &Value) -> Result<(), String> {
        let errors: Vec<String> = self
            .validator
            .iter_errors(value)
            .take(MAX_LISTED_ERRORS)
            .map(|e| {
                let path = e.instance_path.to_string();
                if path.is_empty() {
                    e.to_string()
                } else {
                    format!("at {path}: {e}")
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Reads a reply: JSON as is, else repaired, else (when the schema accepts strings) the text itself;
    /// then validates. `Err` says what is wrong, for the re-ask.
    pub fn parse(&self, text: &str) -> Result<Value, String> {
        let value = match serde_json::from_str::<Value>(text) {
            Ok(v) => v,
            Err(parse_error) => match repair_json(text) {
                Some(v) => v,
                None => {
                    let as_text = Value::String(text.trim().to_owned());
                    if self.validator.is_valid(&as_text) {
                        return Ok(as_text);
                    }
                    return Err(format!("the reply is not valid JSON ({parse_error})"));
                }
            },
        };
        self.validate(&value).map(|()| value)
    }
}

/// A validated structured answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StructuredReply {
    pub value: Value,
    /// Usage summed over every attempt.
    pub usage: TokenUsage,
    /// Model calls made (1 + re-asks).
    pub attempts: u32,
    /// The stop reason of the accepted answer.
    pub finish_reason: Option<String>,
    /// The provider's id of the accepted answer.
    pub request_id: Option<String>,
    /// The model as the provider named it.
    pub response_model: Option<String>,
}

/// A failed structured call with what it consumed before failing.
#[derive(Debug, Clone, PartialEq)]
pub struct StructuredFailure {
    pub error: LlmError,
    /// Usage of every billed answer before the failure.
    pub usage: TokenUsage,
    /// HTTP requests sent (retries included).
    pub requests: u32,
    /// The stop reason of the last answer received, if any.
    pub finish_reason: Option<String>,
}

/// Asks `model` for a value satisfying `output`, re-asking with the validation error up to `max_retries` times.
pub async fn chat_structured(
    model: &dyn ChatModel,
    messages: Vec<ChatMessage>,
    settings: &ChatSettings,
    output: &StructuredOutput,
    max_retries: u32,
) -> Result<StructuredReply, LlmError> {
    chat_structured_accounted(model, messages, settings, output, max_retries).await.map_err(|f| f.error)
}

/// [`chat_structured`], with the usage of the billed answers kept when it fails. A refusal and an answer cut
/// off at `max_tokens` end the call at once (re-asking would only repeat them).
pub async fn chat_structured_accounted(
    model: &dyn ChatModel,
    mut messages: Vec<ChatMessage>,
    settings: &ChatSettings,
    output: &StructuredOutput,
    max_retries: u32,
) -> Result<StructuredReply, StructuredFailure> {
    let mut settings = settings.clone();
    settings.response_schema = Some(output.response.clone());
    let attempts = max_retries.saturating_add(1);
    let mut usage = TokenUsage::default();
    let mut requests = 0u32;
    let mut violation = String::new();
    let mut finish_reason = None;
    let provider = model.provider().to_owned();
    for attempt in 1..=attempts {
        if attempt > 1 {
            if let Some(sink) = &settings.stream {
                sink.attempt(attempt);
            }
        }
        let reply = match crate::chat::traced_chat(model, &messages, &[], &settings).await {
            Ok(r) => r,
            Err(error) => {
                requests = requests.saturating_add(error_requests(&error));
                return Err(StructuredFailure { error, usage, requests, finish_reason });
            }
        };
        usage.add(reply.usage);
        requests = requests.saturating_add(reply.requests.max(1));
        finish_reason.clone_from(&reply.stop_reason);
        if let Some(message) = reply.refusal.clone() {
            let error = LlmError::Refused { provider, message, usage };
            return Err(StructuredFailure { error, usage, requests, finish_reason });
        }
        if reply.truncated() {
            let error = LlmError::Truncated { provider, max_tokens: settings.effective_max_tokens(), usage };
            return Err(StructuredFailure { error, usage, requests, finish_reason });
        }
        let text = reply.content.unwrap_or_default();
        match output.parse(&text) {
            Ok(value) => {
                return Ok(StructuredReply {
                    value,
                    usage,
                    attempts: attempt,
                    finish_reason,
                    request_id: reply.request_id,
                    response_model: reply.response_model,
                })
            }
            Err(v) => {
                tracing::debug!(attempt, violation = %v, "structured output rejected");
                if attempt < attempts {
                    messages.push(ChatMessage::assistant(text));
                    messages.push(ChatMessage::user(reask_message(&v)));
                }
                violation = v;
            }
        }
    }
    let error = LlmError::SchemaViolation { attempts: requests, violation, usage };
    Err(StructuredFailure { error, usage, requests, finish_reason })
}

/// The requests a failed model call sent (transport errors name them; others sent one, or none).
pub(crate) fn error_requests(e: &LlmError) -> u32 {
    match e {
        LlmError::Server { attempts, .. } | LlmError::RateLimited { attempts, .. } => *attempts,
        LlmError::MissingApiKey { .. } | LlmError::Pricing(_) | LlmError::Config(_) => 0,
        _ => 1,
    }
}

/// The user message of a re-ask.
pub fn reask_message(violation: &str) -> String {
    format!(
        "Your previous reply does not satisfy the required JSON Schema: {violation}\n\
         Reply again with only the corrected JSON value, no prose and no code fences."
    )
}

/// Deterministic repair of almost-JSON: strips code fences and prose around the first object or array, drops
/// trailing commas, turns single-quoted strings into double-quoted ones and `True`/`False`/`None` into JSON.
/// Returns the first candidate that parses, or `None`.
pub fn repair_json(text: &str) -> Option<Value> {
    let mut candidates: Vec<&str> = Vec::new();
    let trimmed = text.trim();
    let unfenced = strip_fence(trimmed);
    for base in [unfenced, trimmed] {
        candidates.push(base);
        for open in ['{', '['] {
            if let Some(start) = base.find(open) {
                candidates.push(balanced(&base[start..]));
            }
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    for c in candidates {
        if c.is_empty() || seen.contains(&c) {
            continue;
        }
        seen.push(c);
        if let Ok(v) = serde_json::from_str(c) {
            return Some(v);
        }
        if let Ok(v) = serde_json::from_str(&normalize(c, false)) {
            return Some(v);
        }
        if let Ok(v) = serde_json::from_str(&normalize(c, true)) {
            return Some(v);
        }
    }
    None
}

/// The body of the first ```` ``` ```` fence (language tag dropped), or the text itself.
fn strip_fence(text: &str) -> &str {
    let Some(start) = text.find("```") else {
        return text;
    };
    let after = &text[start + 3..];
    let body = match after.find('\n') {
        Some(nl) if after[..nl].trim().chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') => {
            &after[nl + 1..]
        }
        _ => after,
    };
    match body.find("```") {
        Some(end) => body[..end].trim(),
        None => body.trim(),
    }
}

/// The prefix of `text` (which starts with `{` or `[`) up to its matching close, honouring strings.
fn balanced(text: &str) -> &str {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &text[..i + c.len_utf8()];
                }
            }
            _ => {}
        }
    }
    text
}

/// Drops trailing commas; with `aggressive`, also rewrites single-quoted strings and Python literals.
fn normalize(text: &str, aggressive: bool) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            // Copy a double-quoted string verbatim.
            out.push(c);
            i += 1;
            while i < chars.len() {
                out.push(chars[i]);
                if chars[i] == '\\' && i + 1 < chars.len() {
                    out.push(chars[i + 1]);
                    i += 2;
                    continue;
                }
                i += 1;
                if chars[i - 1] == '"' {
                    break;
                }
            }
            continue;
        }
        if c == '\'' && aggressive {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                match chars[i] {
                    '\\' if i + 1 < chars.len() && chars[i + 1] == '\'' => {
                        out.push('\'');
                        i += 2;
                        continue;
                    }
                    '\\' if i + 1 < chars.len() => {
                        out.push('\\');
                        out.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    '"' => out.push_str("\\\""),
                    other => out.push(other),
                }
                i += 1;
            }
            out.push('"');
            i += 1;
            continue;
        }
        if c == ',' {
            let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
            if matches!(next, Some('}') | Some(']')) {
                i += 1;
                continue;
            }
        }
        if aggressive && c.is_ascii_alphabetic() && (i == 0 || !is_word(chars[i - 1])) {
            let end = chars[i..].iter().position(|c| !is_word(*c)).map_or(chars.len(), |p| i + p);
            let word: String = chars[i..end].iter().collect();
            out.push_str(match word.as_str() {
                "True" => "true",
                "False" => "false",
                "None" => "null",
                w => w,
            });
            i = end;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repairs_common_mistakes() {
        let cases = [
            ("```json\n{\"a\": 1}\n```", json!({"a": 1})),
            ("Here you go:\n```\n[1, 2]\n```\nAnything else?", json!([1, 2])),
            (
                "Sure! The answer is {\"a\": [1, 2,], \"b\": \"x, }\",}. Hope it helps",
                json!({"a": [1, 2], "b": "x, }"}),
            ),
            (
                "{'name': 'O\\'Brien', 'ok': True, 'n': None, 'q': 'say \"hi\"'}",
                json!({"name": "O'Brien", "ok": true, "n": null, "q": "say \"hi\""}),
            ),
            ("Result [draft] follows: {\"k\": \"v\"}", json!({"k": "v"})),
        ];
        for (text, want) in cases {
            assert_eq!(repair_json(text), Some(want), "{text}");
        }
        assert_eq!(repair_json("no json here"), None);
        assert_eq!(repair_json("{\"a\": "), None);
    }

    #[test]
    fn parse_validates_and_accepts_plain_strings() {
        let s = StructuredOutput::new(
            json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}),
        )
        .unwrap();
        assert_eq!(s.parse("```json\n{\"n\": 3}\n```").unwrap(), json!({"n": 3}));
        let err = s.parse("{\"n\": \"three\"}").unwrap_err();
        assert!(err.contains("at /n") && err.contains("integer"), "{err}");
        assert!(s.parse("nope").unwrap_err().contains("not valid JSON"));
        let text = StructuredOutput::new(json!({"type": "string"})).unwrap();
        assert_eq!(text.parse("hello world").unwrap(), json!("hello world"));
        assert!(matches!(StructuredOutput::new(json!({"type": 12})), Err(LlmError::Config(_))));
    }
}
