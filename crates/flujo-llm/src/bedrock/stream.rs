//! `ConverseStream` replies: a binary `application/vnd.amazon.eventstream` body (frames with a prelude,
//! headers, a JSON payload and CRC32 checksums, decoded and checked by `aws-smithy-eventstream`), rebuilt
//! into the reply `Converse` returns so one parser reads both.
//!
//! Frames carry `:message-type` `event` with `:event-type` `messageStart`, `contentBlockStart`
//! (`start.toolUse`), `contentBlockDelta` (`delta.text`, `delta.toolUse.input` pieces of JSON,
//! `delta.reasoningContent`), `contentBlockStop`, `messageStop` (`stopReason`) and `metadata` (`usage`,
//! `metrics`); or `exception` with `:exception-type` (`throttlingException`, `validationException`, …) and
//! a `{message}` payload, mapped to the typed error. A corrupt frame, or a stream that ends before
//! `messageStop` and `metadata`, is [`LlmError::Malformed`].

use std::collections::BTreeMap;

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue, Message};
use flujo_core::DeltaSink;
use serde_json::{json, Map, Value};

use crate::error::LlmError;
use crate::stream::StreamedReply;

/// The largest frame accepted (the event-stream format's own limit is 16 MiB).
const MAX_FRAME: usize = 16 << 20;

fn malformed(provider: &str, message: impl Into<String>) -> LlmError {
    LlmError::Malformed { provider: provider.to_owned(), message: message.into() }
}

/// Splits a body into frames as its bytes arrive, and hands each event to a [`StreamedReply`].
#[derive(Default)]
pub(crate) struct FrameReader {
    decoder: MessageFrameDecoder,
    pending: Vec<u8>,
    /// Bytes of the current frame the decoder already took (its prelude).
    taken: usize,
}

impl FrameReader {
    /// Takes the next bytes of the body; every complete frame goes to `reply` (or ends the call with the
    /// error it carries).
    pub fn push(&mut self, provider: &str, bytes: &[u8], reply: &mut dyn StreamedReply) -> Result<(), LlmError> {
        self.pending.extend_from_slice(bytes);
        loop {
            let mut buf: &[u8] = &self.pending;
            let before = buf.len();
            let decoded = self
                .decoder
                .decode_frame(&mut buf)
                .map_err(|e| malformed(provider, format!("a stream frame is corrupt ({e})")))?;
            let used = before - buf.len();
            self.pending.drain(..used);
            self.taken += used;
            match decoded {
                DecodedFrame::Complete(message) => {
                    self.taken = 0;
                    dispatch(provider, &message, reply)?;
                }
                DecodedFrame::Incomplete => {
                    if self.taken + self.pending.len() > MAX_FRAME + 12 {
                        return Err(malformed(provider, format!("a stream frame is larger than {MAX_FRAME} bytes")));
                    }
                    return Ok(());
                }
            }
        }
    }

    /// The body ended: nothing may be left of an unfinished frame.
    pub fn finish(&self, provider: &str) -> Result<(), LlmError> {
        if self.taken > 0 || !self.pending.is_empty() {
            return Err(malformed(provider, "the stream ended inside a frame"));
        }
        Ok(())
    }
}

fn header<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    message.headers().iter().find(|h| h.name().as_str() == name).and_then(|h| match h.value() {
        HeaderValue::String(s) => Some(s.as_str()),
        _ => None,
    })
}

/// One frame: an event to `reply`, or the error of an exception or error frame.
fn dispatch(provider: &str, message: &Message, reply: &mut dyn StreamedReply) -> Result<(), LlmError> {
    let payload = std::str::from_utf8(message.payload())
        .map_err(|_| malformed(provider, "a stream frame's payload is not UTF-8"))?;
    match header(message, ":message-type") {
        Some("event") => {
            let event = header(message, ":event-type").unwrap_or_default();
            reply.on_event(event, payload)
        }
        Some("exception") => {
            let kind = header(message, ":exception-type").unwrap_or("exception");
            let text = serde_json::from_str::<Value>(payload)
                .ok()
                .and_then(|v| v.get("message").or_else(|| v.get("Message")).and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| payload.chars().take(200).collect());
            Err(exception(provider, kind, text))
        }
        Some("error") => {
            let code = header(message, ":error-code").unwrap_or("error");
            let text = header(message, ":error-message").unwrap_or_default();
            Err(LlmError::Server {
                provider: provider.to_owned(),
                status: 500,
                attempts: 1,
                message: format!("{code}: {text}"),
                retry_after: None,
            })
        }
        other => Err(malformed(provider, format!("a stream frame of unknown message type {other:?}"))),
    }
}

/// The typed error of a `ConverseStream` exception.
pub(crate) fn exception(provider: &str, kind: &str, message: String) -> LlmError {
    let provider = provider.to_owned();
    let message = format!("{kind}: {message}");
    let server = |status| LlmError::Server {
        provider: provider.clone(),
        status,
        attempts: 1,
        message: message.clone(),
        retry_after: None,
    };
    match kind {
        "throttlingException" => LlmError::RateLimited { provider, attempts: 1, retry_after: None },
        "validationException" => LlmError::BadRequest { provider, status: 400, message },
        "accessDeniedException" => LlmError::Auth { provider, status: 403 },
        "serviceUnavailableException" => server(503),
        "modelStreamErrorException" => server(424),
        "modelTimeoutException" => server(408),
        _ => server(500),
    }
}

/// A block being rebuilt from its deltas.
#[derive(Default)]
struct Block {
    text: Option<String>,
    tool_use: Option<(Value, Value)>,
    tool_input: String,
    reasoning_text: Option<String>,
    signature: Option<String>,
    redacted: Option<String>,
}

/// Rebuilds a `Converse` reply from `ConverseStream` events; text (and the JSON of the structured-output
/// tool) goes to the sink as it arrives.
pub(crate) struct BedrockStream<'a> {
    provider: &'a str,
    sink: &'a DeltaSink,
    schema_tool: Option<&'a str>,
    blocks: BTreeMap<u64, Block>,
    stop_reason: Option<Value>,
    usage: Option<Value>,
    metrics: Option<Value>,
}

impl<'a> BedrockStream<'a> {
    pub fn new(provider: &'a str, sink: &'a DeltaSink, schema_tool: Option<&'a str>) -> Self {
        BedrockStream {
            provider,
            sink,
            schema_tool,
            blocks: BTreeMap::new(),
            stop_reason: None,
            usage: None,
            metrics: None,
        }
    }
}

fn append(slot: &mut Option<String>, piece: &str) {
    slot.get_or_insert_with(String::new).push_str(piece);
}

impl StreamedReply for BedrockStream<'_> {
    fn on_event(&mut self, event: &str, data: &str) -> Result<(), LlmError> {
        let v: Value = serde_json::from_str(data)
            .map_err(|e| malformed(self.provider, format!("a stream event is not JSON ({e})")))?;
        let index = v.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
        match event {
            "contentBlockStart" => {
                if let Some(t) = v.pointer("/start/toolUse") {
                    let id = t.get("toolUseId").cloned().unwrap_or(Value::Null);
                    let name = t.get("name").cloned().unwrap_or(Value::Null);
                    self.blocks.entry(index).or_default().tool_use = Some((id, name));
                }
            }
            "contentBlockDelta" => {
                let Some(delta) = v.get("delta") else { return Ok(()) };
                let block = self.blocks.entry(index).or_default();
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    self.sink.send(text);
                    append(&mut block.text, text);
                }
                if let Some(piece) = delta.pointer("/toolUse/input").and_then(Value::as_str) {
                    let name = block.tool_use.as_ref().and_then(|(_, n)| n.as_str());
                    if name.is_some() && name == self.schema_tool {
                        self.sink.send(piece);
                    }
                    block.tool_input.push_str(piece);
                }
                if let Some(r) = delta.get("reasoningContent") {
                    if let Some(t) = r.get("text").and_then(Value::as_str) {
                        append(&mut block.reasoning_text, t);
                    }
                    if let Some(s) = r.get("signature").and_then(Value::as_str) {
                        append(&mut block.signature, s);
                    }
                    if let Some(d) = r.get("redactedContent").and_then(Value::as_str) {
                        append(&mut block.redacted, d);
                    }
                }
            }
            "messageStop" => self.stop_reason = Some(v.get("stopReason").cloned().unwrap_or(Value::Null)),
            "metadata" => {
                self.usage = Some(v.get("usage").cloned().unwrap_or(Value::Null));
                self.metrics = v.get("metrics").cloned();
            }
            // `messageStart`, `contentBlockStop` and future events.
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Value, LlmError> {
        let (Some(stop_reason), Some(usage)) = (self.stop_reason.take(), self.usage.take()) else {
            return Err(malformed(self.provider, "the stream ended before the reply was complete"));
        };
        let mut content = Vec::new();
        for (_, b) in std::mem::take(&mut self.blocks) {
            if b.reasoning_text.is_some() || b.signature.is_some() {
                let mut text = json!({"text": b.reasoning_text.unwrap_or_default()});
                if let Some(s) = b.signature {
                    text["signature"] = json!(s);
                }
                content.push(json!({"reasoningContent": {"reasoningText": text}}));
            }
            if let Some(d) = b.redacted {
                content.push(json!({"reasoningContent": {"redactedContent": d}}));
            }
            if let Some(t) = b.text {
                content.push(json!({"text": t}));
            }
            if let Some((id, name)) = b.tool_use {
                let raw = b.tool_input;
                let input = if raw.trim().is_empty() {
                    json!({})
                } else {
                    serde_json::from_str::<Value>(&raw)
                        .ok()
                        .or_else(|| crate::structured::repair_json(&raw))
                        .unwrap_or(Value::String(raw))
                };
                content.push(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}));
            }
        }
        let mut reply = Map::new();
        reply.insert("output".into(), json!({"message": {"role": "assistant", "content": content}}));
        reply.insert("stopReason".into(), stop_reason);
        reply.insert("usage".into(), usage);
        if let Some(m) = self.metrics.take() {
            reply.insert("metrics".into(), m);
        }
        Ok(Value::Object(reply))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::Header;

    use super::*;

    fn frame(message_type: &str, kind: &str, payload: Value) -> Vec<u8> {
        let type_header = if message_type == "event" { ":event-type" } else { ":exception-type" };
        let m = Message::new(payload.to_string().into_bytes())
            .add_header(Header::new(":message-type", HeaderValue::String(message_type.to_owned().into())))
            .add_header(Header::new(type_header, HeaderValue::String(kind.to_owned().into())))
            .add_header(Header::new(":content-type", HeaderValue::String("application/json".into())));
        let mut out = Vec::new();
        write_message_to(&m, &mut out).unwrap();
        out
    }

    fn events() -> Vec<u8> {
        [
            frame("event", "messageStart", json!({"role": "assistant"})),
            frame("event", "contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}})),
            frame("event", "contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "lo"}})),
            frame("event", "contentBlockStop", json!({"contentBlockIndex": 0})),
            frame(
                "event",
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "add"}}}),
            ),
            frame(
                "event",
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":"}}}),
            ),
            frame("event", "contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}})),
            frame("event", "messageStop", json!({"stopReason": "tool_use"})),
            frame(
                "event",
                "metadata",
                json!({"usage": {"inputTokens": 3, "outputTokens": 2}, "metrics": {"latencyMs": 5}}),
            ),
        ]
        .concat()
    }

    fn rebuild(chunks: &[&[u8]]) -> (Result<Value, LlmError>, Vec<String>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let sink = DeltaSink::new(move |d| s.lock().unwrap().push(d.to_owned()));
        let mut reply = BedrockStream::new("bedrock", &sink, None);
        let mut reader = FrameReader::default();
        let result = chunks
            .iter()
            .try_for_each(|c| reader.push("bedrock", c, &mut reply))
            .and_then(|()| reader.finish("bedrock"))
            .and_then(|()| reply.finish());
        let seen = seen.lock().unwrap().clone();
        (result, seen)
    }

    #[test]
    fn frames_rebuild_the_reply_at_every_split() {
        let bytes = events();
        let (whole, seen) = rebuild(&[&bytes]);
        let whole = whole.unwrap();
        assert_eq!(seen, ["Hel", "lo"]);
        assert_eq!(whole["output"]["message"]["content"][0], json!({"text": "Hello"}));
        assert_eq!(whole["output"]["message"]["content"][1]["toolUse"]["input"], json!({"a": 1}));
        assert_eq!(whole["stopReason"], "tool_use");
        for i in (0..bytes.len()).step_by(7) {
            assert_eq!(rebuild(&[&bytes[..i], &bytes[i..]]).0.unwrap(), whole, "split at {i}");
        }
    }

    #[test]
    fn corrupt_truncated_and_exception_streams() {
        let mut bytes = events();
        let cut = bytes.len() - 10;
        assert!(matches!(rebuild(&[&bytes[..cut]]).0, Err(LlmError::Malformed { .. })), "ends inside a frame");
        let first = frame("event", "messageStart", json!({"role": "assistant"})).len();
        assert!(matches!(rebuild(&[&bytes[..first]]).0, Err(LlmError::Malformed { .. })), "ends between frames");
        bytes[first + 20] ^= 0x20;
        let (r, _) = rebuild(&[&bytes]);
        assert!(matches!(&r, Err(LlmError::Malformed { message, .. }) if message.contains("corrupt")), "{r:?}");
        let mut bytes = events()[..first].to_vec();
        bytes.extend(frame("exception", "throttlingException", json!({"message": "slow down"})));
        assert!(matches!(rebuild(&[&bytes]).0, Err(LlmError::RateLimited { .. })));
        let bytes = frame("exception", "validationException", json!({"message": "bad input"}));
        let (r, _) = rebuild(&[&bytes]);
        assert!(matches!(&r, Err(LlmError::BadRequest { message, .. }) if message.contains("bad input")), "{r:?}");
    }
}
