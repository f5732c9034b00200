//! Gemini streams (`streamGenerateContent?alt=sse`) rebuilt into the reply `generateContent` gives.

use flujo_core::DeltaSink;
use serde_json::{json, Map, Value};

use super::api_error;
use crate::error::LlmError;
use crate::stream::StreamedReply;

/// Rebuilds a `GenerateContentResponse` from the chunks of `streamGenerateContent?alt=sse`: text pieces are
/// joined (thought text apart from answer text) and passed to the sink as they arrive, function calls kept
/// whole, the last `usageMetadata` kept. A stream without a `finishReason` (or a blocked prompt) is cut off.
pub(crate) struct GeminiStream<'a> {
    provider: &'a str,
    sink: &'a DeltaSink,
    secret: Option<&'a str>,
    parts: Vec<Value>,
    /// The candidate's other fields (`finishReason`, `safetyRatings`, `finishMessage`, …), last value wins.
    candidate: Map<String, Value>,
    /// `usageMetadata`, `responseId`, `modelVersion`, `promptFeedback`.
    top: Map<String, Value>,
    done: bool,
}

impl<'a> GeminiStream<'a> {
    pub fn new(provider: &'a str, sink: &'a DeltaSink, secret: Option<&'a str>) -> Self {
        GeminiStream { provider, sink, secret, parts: Vec::new(), candidate: Map::new(), top: Map::new(), done: false }
    }

    fn add_part(&mut self, part: &Value) {
        let thought = part.get("thought") == Some(&Value::Bool(true));
        if let Some(piece) = part.get("text").and_then(Value::as_str) {
            if !thought && !piece.is_empty() {
                self.sink.send(piece);
            }
            if let Some(last) = self.parts.last_mut() {
                let same_kind = (last.get("thought") == Some(&Value::Bool(true))) == thought;
                if same_kind && last.get("thoughtSignature").is_none() {
                    if let Some(prev) = last.get("text").and_then(Value::as_str) {
                        last["text"] = json!(format!("{prev}{piece}"));
                        if let Some(s) = part.get("thoughtSignature") {
                            last["thoughtSignature"] = s.clone();
                        }
                        return;
                    }
                }
            }
        }
        self.parts.push(part.clone());
    }
}

impl StreamedReply for GeminiStream<'_> {
    fn on_event(&mut self, _event: &str, data: &str) -> Result<(), LlmError> {
        let v: Value = serde_json::from_str(data).map_err(|e| LlmError::Malformed {
            provider: self.provider.to_owned(),
            message: format!("a stream chunk is not JSON ({e})"),
        })?;
        if let Some(e) = v.get("error") {
            return Err(api_error(self.provider, e, self.secret));
        }
        for key in ["usageMetadata", "responseId", "modelVersion", "promptFeedback"] {
            if let Some(x) = v.get(key).filter(|x| !x.is_null()) {
                self.top.insert(key.into(), x.clone());
            }
        }
        if v.pointer("/promptFeedback/blockReason").is_some() {
            self.done = true;
        }
        let Some(candidate) = v.get("candidates").and_then(|c| c.get(0)).and_then(Value::as_object) else {
            return Ok(());
        };
        for part in
            candidate.get("content").and_then(|c| c.get("parts")).and_then(Value::as_array).into_iter().flatten()
        {
            self.add_part(part);
        }
        for (k, x) in candidate {
            if k != "content" && !x.is_null() {
                self.candidate.insert(k.clone(), x.clone());
            }
        }
        if self.candidate.contains_key("finishReason") {
            self.done = true;
        }
        Ok(())
    }

    /// The reply as `generateContent` returns it.
    fn finish(&mut self) -> Result<Value, LlmError> {
        if !self.done {
            return Err(LlmError::Malformed {
                provider: self.provider.to_owned(),
                message: "the stream ended before the reply was complete".into(),
            });
        }
        let mut out = std::mem::take(&mut self.top);
        if !self.parts.is_empty() || !self.candidate.is_empty() {
            let mut candidate = std::mem::take(&mut self.candidate);
            candidate.insert("content".into(), json!({"role": "model", "parts": std::mem::take(&mut self.parts)}));
            out.insert("candidates".into(), json!([candidate]));
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use flujo_core::TokenUsage;

    use super::*;
    use crate::gemini::parse_reply;

    #[test]
    fn streams_rebuild_the_reply() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let sink = DeltaSink::new(move |d| s.lock().unwrap().push(d.to_owned()));
        let mut st = GeminiStream::new("gemini", &sink, Some("sk-secret-key"));
        for chunk in [
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hmm", "thought": true}]}}], "responseId": "r"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}], "usageMetadata": {"promptTokenCount": 4}}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}]}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "", "thoughtSignature": "sig"}]},
                "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "thoughtsTokenCount": 1},
                "modelVersion": "m1"}),
        ] {
            st.on_event("message", &chunk.to_string()).unwrap();
        }
        let r = parse_reply("gemini", &st.finish().unwrap(), None).unwrap();
        assert_eq!(r.content.as_deref(), Some("Hello"));
        assert_eq!(*seen.lock().unwrap(), ["Hel", "lo"]);
        assert_eq!(r.reasoning.len(), 2, "{:?}", r.reasoning);
        assert_eq!(r.reasoning[0].text, "Hmm");
        assert_eq!(r.reasoning[1].signature.as_deref(), Some("sig"));
        assert_eq!(r.usage, TokenUsage::new(4, 3).with_reasoning(1));
        assert_eq!((r.request_id.as_deref(), r.response_model.as_deref()), (Some("r"), Some("m1")));

        let mut st = GeminiStream::new("gemini", &sink, None);
        st.on_event("message", r#"{"candidates": [{"content": {"parts": [{"text": "x"}]}}]}"#).unwrap();
        assert!(matches!(st.finish(), Err(LlmError::Malformed { .. })));
        let mut st = GeminiStream::new("gemini", &sink, None);
        st.on_event("message", r#"{"promptFeedback": {"blockReason": "OTHER"}}"#).unwrap();
        let r = parse_reply("gemini", &st.finish().unwrap(), None).unwrap();
        assert!(r.refusal.unwrap().contains("blockReason OTHER"));
        let mut st = GeminiStream::new("gemini", &sink, Some("sk-secret-key"));
        let e = st
            .on_event(
                "message",
                r#"{"error": {"code": 503, "message": "overloaded sk-secret-key", "status": "UNAVAILABLE"}}"#,
            )
            .unwrap_err();
        assert!(matches!(&e, LlmError::Server { status: 503, message, .. } if !message.contains("secret")), "{e:?}");
        assert!(st.on_event("message", "not json").is_err());
    }
}
