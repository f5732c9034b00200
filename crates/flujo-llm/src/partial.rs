//! Partial structured output: the JSON value a streamed structured answer holds so far, for showing the
//! object as it fills (`flujo run --live`, a UI). [`PartialJson`] accumulates the text pieces a
//! [`flujo_core::DeltaSink`] receives and parses the longest prefix that makes sense as JSON: open strings
//! are closed, a dangling key or a half-written number or literal is left out, open objects and arrays are
//! closed. The final answer is still the validated whole reply; a partial value is only for display.

use serde_json::Value;

/// Accumulates a streamed JSON answer.
#[derive(Debug, Clone, Default)]
pub struct PartialJson {
    text: String,
    value: Option<Value>,
}

impl PartialJson {
    pub fn new() -> Self {
        PartialJson::default()
    }

    /// Adds a piece; returns the value when it changed (a new field, a longer string, a new item).
    pub fn push(&mut self, piece: &str) -> Option<&Value> {
        self.text.push_str(piece);
        let parsed = parse_partial_json(&self.text)?;
        if self.value.as_ref() == Some(&parsed) {
            return None;
        }
        self.value = Some(parsed);
        self.value.as_ref()
    }

    /// The value so far.
    pub fn value(&self) -> Option<&Value> {
        self.value.as_ref()
    }

    /// The text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when the text so far looks like a JSON object or array (after any leading whitespace or a code
    /// fence), i.e. a structured answer rather than prose.
    pub fn looks_structured(&self) -> bool {
        let t = self.text.trim_start();
        let t = t.strip_prefix("```json").or_else(|| t.strip_prefix("```")).unwrap_or(t).trim_start();
        t.starts_with('{') || t.starts_with('[')
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Frame {
    /// In an object; `true` while a key (not a value) comes next.
    Object {
        expect_key: bool,
    },
    Array,
}

/// The value of a JSON text cut off anywhere (`{"a": [1, 2`, `{"name": "Ad`), or `None` when not even a
/// container has begun. Complete JSON parses as itself.
pub fn parse_partial_json(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    let body = trimmed.strip_prefix("```json").or_else(|| trimmed.strip_prefix("```")).unwrap_or(trimmed);
    let body = body.trim_start();
    let start = body.find(['{', '['])?;
    let s = &body[start..];
    if let Ok(v) = serde_json::from_str::<Value>(s.trim_end().trim_end_matches("```").trim_end()) {
        return Some(v);
    }
    let mut stack: Vec<Frame> = Vec::new();
    // The last prefix length at which the text is a complete value point, with the open containers then.
    let mut checkpoint: Option<(usize, Vec<Frame>)> = None;
    let mut in_string = false;
    let mut string_is_key = false;
    let mut escaped = false;
    let mut scalar_start: Option<usize> = None;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
                if !string_is_key {
                    checkpoint = Some((i + 1, stack.clone()));
                }
            }
            i += 1;
            continue;
        }
        if let Some(_from) = scalar_start {
            if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                scalar_start = None;
                checkpoint = Some((i, stack.clone()));
            } else {
                i += 1;
                continue;
            }
        }
        match c {
            b'{' => {
                stack.push(Frame::Object { expect_key: true });
                checkpoint = Some((i + 1, stack.clone()));
            }
            b'[' => {
                stack.push(Frame::Array);
                checkpoint = Some((i + 1, stack.clone()));
            }
            b'}' | b']' => {
                stack.pop();
                checkpoint = Some((i + 1, stack.clone()));
                if stack.is_empty() {
                    break;
                }
            }
            b'"' => {
                in_string = true;
                string_is_key = matches!(stack.last(), Some(Frame::Object { expect_key: true }));
            }
            b':' => {
                if let Some(Frame::Object { expect_key }) = stack.last_mut() {
                    *expect_key = false;
                }
            }
            b',' => {
                if let Some(Frame::Object { expect_key }) = stack.last_mut() {
                    *expect_key = true;
                }
            }
            c if c.is_ascii_whitespace() => {}
            _ => scalar_start = Some(i),
        }
        i += 1;
    }
    let close = |mut out: String, frames: &[Frame]| {
        for f in frames.iter().rev() {
            out.push(if matches!(f, Frame::Array) { ']' } else { '}' });
        }
        out
    };
    // Inside a string value: close it, keeping what it holds so far (a dangling escape dropped).
    if in_string && !string_is_key {
        let mut cut = s.to_owned();
        if escaped {
            cut.pop();
        }
        // A cut inside a `\uXXXX` escape cannot be closed: fall back to the last checkpoint.
        let candidate = close(cut + "\"", &stack);
        if let Ok(v) = serde_json::from_str::<Value>(&candidate) {
            return Some(v);
        }
    }
    let (at, frames) = checkpoint?;
    let prefix = s[..at].trim_end().trim_end_matches(',');
    serde_json::from_str::<Value>(&close(prefix.to_owned(), &frames)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_prefix_of_an_answer_parses_to_a_growing_value() {
        let whole = json!({"name": "Ada \"the\" Countess", "tags": ["math", "poetry"], "born": 1815,
            "alive": false, "notes": {"a": null, "b": [1.5, {"c": "d\u{e9}"}]}});
        let text = serde_json::to_string_pretty(&whole).unwrap();
        let mut p = PartialJson::new();
        let mut seen = 0;
        for ch in text.chars() {
            if p.push(&ch.to_string()).is_some() {
                seen += 1;
            }
            // Every partial value is an object whose keys are a prefix of the final ones.
            if let Some(Value::Object(m)) = p.value() {
                let keys: Vec<&String> = m.keys().collect();
                let all: Vec<&String> = whole.as_object().unwrap().keys().collect();
                assert!(keys.iter().all(|k| all.contains(k)), "{keys:?}");
            }
        }
        assert_eq!(p.value(), Some(&whole));
        assert!(seen > 20, "the value grew {seen} times");
        assert!(p.looks_structured());
    }

    #[test]
    fn cut_points() {
        assert_eq!(parse_partial_json(r#"{"a": "hel"#), Some(json!({"a": "hel"})));
        assert_eq!(parse_partial_json(r#"{"a": 1, "b"#), Some(json!({"a": 1})));
        assert_eq!(parse_partial_json(r#"{"a": 1, "b":"#), Some(json!({"a": 1})));
        assert_eq!(parse_partial_json(r#"{"a": 12"#), Some(json!({})));
        assert_eq!(parse_partial_json(r#"{"a": [1, 2"#), Some(json!({"a": [1]})));
        assert_eq!(parse_partial_json(r#"{"a": [1, 2,"#), Some(json!({"a": [1, 2]})));
        assert_eq!(parse_partial_json(r#"{"a": tr"#), Some(json!({})));
        assert_eq!(parse_partial_json(r#"{"a": "x\"#), Some(json!({"a": "x"})));
        assert_eq!(parse_partial_json(r#"[{"a": "b"}, {"c"#), Some(json!([{"a": "b"}, {}])));
        assert_eq!(parse_partial_json("```json\n{\"a\": 1}\n```"), Some(json!({"a": 1})));
        assert_eq!(parse_partial_json("Sure, here"), None);
        assert_eq!(parse_partial_json(""), None);
        assert!(!PartialJson { text: "Hello".into(), value: None }.looks_structured());
    }
}
