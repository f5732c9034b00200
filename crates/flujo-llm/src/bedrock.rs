//! `bedrock:MODEL` — the Amazon Bedrock Converse API: `POST {endpoint}/model/{modelId}/converse` (and
//! `/converse-stream` for streamed replies, a binary event stream: see `bedrock/stream.rs`), every attempt signed
//! with AWS SigV4 (service `bedrock`; see `bedrock/sigv4.rs`) with credentials and region found as the AWS SDKs find
//! them (`bedrock/credentials.rs`). The endpoint is `base_url` when set (tests, VPC endpoints), else
//! `https://bedrock-runtime.{region}.amazonaws.com`. `MODEL` is a model id
//! (`anthropic.claude-3-5-sonnet-20240620-v1:0`), an inference profile (`us.anthropic.…`) or an ARN; it is
//! percent-encoded into the path.
//!
//! The request: system messages go to `system` (text blocks), the transcript to `messages` (user and
//! assistant turns alternating, adjacent turns of one role merged) made of `text`, `image` / `document`
//! (bytes: files are read and URLs fetched first), `toolUse` and `toolResult` blocks and the model's
//! `reasoningContent`; `inferenceConfig` holds `maxTokens`, `temperature`, `topP`; `toolConfig` the tools
//! and `toolChoice`. Structured output is a forced tool whose input schema is the schema (wrapped in
//! `{value: …}` for non-object schemas), as for Anthropic. Reasoning for Claude models and
//! `settings.extra` go to `additionalModelRequestFields`. `cache_prompt` adds `cachePoint`s after the system
//! prompt and the tools.

mod credentials;
mod sigv4;
mod stream;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use flujo_core::TokenUsage;
use flujo_http::reqwest::header::HeaderMap;
use serde_json::{json, Map, Value};

pub use self::credentials::AwsCredentials;
use self::credentials::AwsSetup;
use self::sigv4::SigV4Signer;
use self::stream::{BedrockStream, FrameReader};
use crate::chat::{ChatMessage, ChatModel, ChatReply, ChatSettings, ReasoningBlock, ResponseSchema, Role};
use crate::config::ResolvedProvider;
use crate::error::LlmError;
use crate::http::{HttpClient, JsonPost};
use crate::media::{ContentPart, Inline};
use crate::stream::StreamedReply;
use crate::tools::{anthropic_tools, ToolCall, ToolChoice, ToolSpec};

/// The SigV4 signing name of the Bedrock runtime.
pub const SIGNING_NAME: &str = "bedrock";

/// A Converse API model.
#[derive(Debug, Clone)]
pub struct BedrockModel {
    provider: Arc<ResolvedProvider>,
    model: String,
    http: HttpClient,
    aws: AwsSetup,
}

impl BedrockModel {
    /// A model signing with the credentials of the process environment and the AWS profile files.
    pub fn new(provider: Arc<ResolvedProvider>, model: impl Into<String>, http: HttpClient) -> Self {
        BedrockModel::with_env(provider, model, http, &|k| std::env::var(k).ok())
    }

    /// A model reading the "environment" (credentials, region, profile, file locations, `HOME`) through
    /// `env`; the profile files are read now. Problems are reported by [`ChatModel::check_ready`] and calls.
    pub fn with_env(
        provider: Arc<ResolvedProvider>,
        model: impl Into<String>,
        http: HttpClient,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let aws = AwsSetup::resolve(&provider.name, provider.region.as_deref(), provider.profile.as_deref(), env);
        BedrockModel { provider, model: model.into(), http, aws }
    }

    /// The region requests are signed for (and sent to, without `base_url`).
    pub fn region(&self) -> Result<&str, LlmError> {
        self.aws.region.as_deref().map_err(Clone::clone)
    }

    /// The endpoint: `base_url` when set, else the region's public one.
    pub fn endpoint(&self) -> Result<String, LlmError> {
        if !self.provider.base_url.is_empty() {
            return Ok(self.provider.base_url.clone());
        }
        let region = self.region()?;
        let domain = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
        Ok(format!("https://bedrock-runtime.{region}.{domain}"))
    }

    /// The URL of one call: `{endpoint}/model/{modelId}/converse` or `…/converse-stream`.
    pub fn url(&self, stream: bool) -> Result<String, LlmError> {
        let action = if stream { "converse-stream" } else { "converse" };
        Ok(format!("{}/model/{}/{action}", self.endpoint()?, encode_path_segment(&self.model)))
    }

    /// Claude models take Anthropic's extended-thinking settings.
    fn is_claude(&self) -> bool {
        let m = self.model.to_ascii_lowercase();
        m.contains("anthropic.") || m.contains("claude")
    }

    /// The request body for one turn.
    pub fn request_body(&self, messages: &[ChatMessage], tools: &[ToolSpec], settings: &ChatSettings) -> Value {
        let mut body = Map::new();
        body.insert("messages".into(), wire_messages(messages));
        let mut system: Vec<Value> = messages
            .iter()
            .filter(|m| m.role == Role::System && !m.content.is_empty())
            .map(|m| json!({"text": m.content}))
            .collect();
        if !system.is_empty() {
            if settings.cache_prompt {
                system.push(cache_point());
            }
            body.insert("system".into(), Value::Array(system));
        }
        let max_tokens = settings.effective_max_tokens();
        // Extended thinking (Claude): a budget below `maxTokens`, at least the 1,024 the model needs; sampling
        // settings and forced tool choices are refused alongside it.
        let thinking = settings
            .reasoning
            .budget()
            .filter(|_| self.is_claude())
            .map(|b| b.max(1024).min(max_tokens.saturating_sub(1)));
        let mut inference = Map::new();
        inference.insert("maxTokens".into(), json!(max_tokens));
        if thinking.is_none() {
            if let Some(t) = settings.temperature {
                inference.insert("temperature".into(), json!(t));
            }
            if let Some(p) = settings.top_p {
                inference.insert("topP".into(), json!(p));
            }
        }
        // Stop sequences belong to `inferenceConfig` (OpenAI's `stop` and Gemini's spelling too).
        let stop_keys = ["stopSequences", "stop_sequences", "stop"];
        if let Some(stop) = stop_keys.iter().find_map(|k| settings.extra.get(*k)) {
            let list = if stop.is_string() { json!([stop]) } else { stop.clone() };
            inference.insert("stopSequences".into(), list);
        }
        body.insert("inferenceConfig".into(), Value::Object(inference));
        let auto = || json!({"auto": {}});
        let (specs, choice): (Vec<Value>, Option<Value>) = match &settings.response_schema {
            Some(rs) => {
                let offered: &[ToolSpec] = if settings.tool_choice == ToolChoice::None { &[] } else { tools };
                let mut specs = tool_specs(offered);
                specs.push(
                    json!({"toolSpec": {"name": rs.name, "description": "Answer with a value matching this schema.",
                    "inputSchema": {"json": rs.wire_schema()}}}),
                );
                let choice = match &settings.tool_choice {
                    _ if thinking.is_some() => auto(),
                    _ if offered.is_empty() => json!({"tool": {"name": rs.name}}),
                    ToolChoice::Tool(name) => json!({"tool": {"name": name}}),
                    _ => json!({"any": {}}),
                };
                (specs, Some(choice))
            }
            None if !tools.is_empty() && settings.tool_choice != ToolChoice::None => {
                let choice = match &settings.tool_choice {
                    _ if thinking.is_some() => auto(),
                    ToolChoice::Required => json!({"any": {}}),
                    ToolChoice::Tool(name) => json!({"tool": {"name": name}}),
                    _ => auto(),
                };
                (tool_specs(tools), Some(choice))
            }
            // Bedrock refuses `toolUse`/`toolResult` blocks without a `toolConfig`: with no tools to offer,
            // the transcript's own tools are declared (no choice: the model may still call them).
            None if has_tool_blocks(messages) => {
                let specs = if tools.is_empty() { transcript_tool_specs(messages) } else { tool_specs(tools) };
                (specs, None)
            }
            None => (Vec::new(), None),
        };
        if !specs.is_empty() {
            let mut specs = specs;
            if settings.cache_prompt {
                specs.push(cache_point());
            }
            let mut config = json!({"tools": specs});
            if let Some(c) = choice {
                config["toolChoice"] = c;
            }
            body.insert("toolConfig".into(), config);
        }
        let mut additional = Map::new();
        if let Some(budget) = thinking {
            additional.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
        }
        for (k, v) in settings.extra.iter().filter(|(k, _)| !stop_keys.contains(&k.as_str())) {
            additional.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if !additional.is_empty() {
            body.insert("additionalModelRequestFields".into(), Value::Object(additional));
        }
        Value::Object(body)
    }
}

/// Percent-encodes everything but the unreserved characters (`A-Z a-z 0-9 - . _ ~`): `:` of versioned
/// model ids, `/` of ARNs.
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn cache_point() -> Value {
    json!({"cachePoint": {"type": "default"}})
}

/// Tools as `toolSpec`s (a description only when there is one: the API refuses an empty one).
fn tool_specs(tools: &[ToolSpec]) -> Vec<Value> {
    anthropic_tools(tools)
        .into_iter()
        .map(|t| {
            let mut spec = json!({"name": t["name"], "inputSchema": {"json": t["input_schema"]}});
            if t["description"].as_str().is_some_and(|d| !d.is_empty()) {
                spec["description"] = t["description"].clone();
            }
            json!({"toolSpec": spec})
        })
        .collect()
}

fn has_tool_blocks(messages: &[ChatMessage]) -> bool {
    messages.iter().any(|m| m.role == Role::Tool || !m.tool_calls.is_empty())
}

/// A spec for each tool the transcript called (open input schema).
fn transcript_tool_specs(messages: &[ChatMessage]) -> Vec<Value> {
    let mut names: Vec<&str> = messages.iter().flat_map(|m| m.tool_calls.iter().map(|c| c.name.as_str())).collect();
    names.sort_unstable();
    names.dedup();
    let tools: Vec<ToolSpec> = names.into_iter().map(|n| ToolSpec::new(n, "", json!({"type": "object"}))).collect();
    tool_specs(&tools)
}

fn wire_messages(messages: &[ChatMessage]) -> Value {
    let mut out: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in messages {
        let (role, blocks) = match m.role {
            Role::System => continue,
            Role::User if !m.parts.is_empty() => ("user", m.parts.iter().filter_map(wire_part).collect()),
            Role::User => ("user", text_block(&m.content)),
            Role::Assistant => {
                let mut blocks: Vec<Value> = m.reasoning.iter().map(reasoning_block).collect();
                blocks.extend(text_block(&m.content));
                blocks.extend(m.tool_calls.iter().map(tool_use_block));
                ("assistant", blocks)
            }
            Role::Tool => ("user", vec![tool_result_block(m)]),
        };
        crate::chat::push_turn(&mut out, role, blocks);
    }
    Value::Array(out.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect())
}

fn text_block(text: &str) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"text": text})]
    }
}

fn reasoning_block(r: &ReasoningBlock) -> Value {
    match &r.redacted {
        Some(data) => json!({"reasoningContent": {"redactedContent": data}}),
        None => {
            let mut text = json!({"text": r.text});
            if let Some(s) = &r.signature {
                text["signature"] = json!(s);
            }
            json!({"reasoningContent": {"reasoningText": text}})
        }
    }
}

fn tool_use_block(call: &ToolCall) -> Value {
    let input = if call.arguments.is_object() { call.arguments.clone() } else { json!({}) };
    json!({"toolUse": {"toolUseId": call.id, "name": call.name, "input": input}})
}

/// A tool result: a JSON object result as `{json}`, anything else as `{text}` (never empty: the API refuses
/// blank text).
fn tool_result_block(m: &ChatMessage) -> Value {
    let content = match serde_json::from_str::<Value>(&m.content) {
        Ok(v @ Value::Object(_)) => json!({"json": v}),
        _ if m.content.trim().is_empty() => json!({"text": "(no output)"}),
        _ => json!({"text": m.content}),
    };
    json!({"toolResult": {"toolUseId": m.tool_call_id.clone().unwrap_or_default(), "content": [content],
        "status": if m.is_error { "error" } else { "success" }}})
}

/// A content part as a block: `text`, `image` (`png`, `jpeg`, `gif`, `webp`) or `document` (`pdf`), from
/// bytes (parts are inlined before the request; one still a reference is sent as its description).
fn wire_part(part: &ContentPart) -> Option<Value> {
    let inline = part.inline();
    match (part, inline) {
        (ContentPart::Text { text }, _) => (!text.is_empty()).then(|| json!({"text": text})),
        (ContentPart::Image { .. }, Some((media_type, data))) => {
            let format = media_type.strip_prefix("image/").unwrap_or(&media_type).to_owned();
            Some(json!({"image": {"format": format, "source": {"bytes": data}}}))
        }
        (ContentPart::Document { name, .. }, Some((media_type, data))) => {
            let format = match media_type.as_str() {
                "application/pdf" => "pdf".to_owned(),
                other => other.rsplit('/').next().unwrap_or(other).to_owned(),
            };
            Some(json!({"document": {"format": format, "name": document_name(name.as_deref()),
                "source": {"bytes": data}}}))
        }
        _ => Some(json!({"text": part.describe()})),
    }
}

/// A document name as the API accepts it: letters, digits, spaces (never two in a row), `-`, `(`, `)`,
/// `[`, `]`; the file extension dropped; `document` when nothing is left.
fn document_name(name: Option<&str>) -> String {
    let name = name.unwrap_or_default();
    let stem = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && ext.chars().all(|c| c.is_ascii_alphanumeric()) => stem,
        _ => name,
    };
    let mut out = String::new();
    for c in stem.chars() {
        let c = if c.is_alphanumeric() || matches!(c, '-' | '(' | ')' | '[' | ']') {
            c
        } else if c.is_whitespace() {
            ' '
        } else {
            '-'
        };
        if !(c == ' ' && out.ends_with(' ')) {
            out.push(c);
        }
    }
    let out = out.trim().chars().take(200).collect::<String>();
    if out.is_empty() {
        "document".into()
    } else {
        out
    }
}

/// Parses a Converse reply; with a response schema, the schema tool's input becomes the JSON content.
pub(crate) fn parse_reply(provider: &str, v: &Value, schema: Option<&ResponseSchema>) -> Result<ChatReply, LlmError> {
    let malformed = |what: &str| LlmError::Malformed { provider: provider.to_owned(), message: what.to_owned() };
    let blocks = v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("no `output.message.content` in the reply"))?;
    let mut text: Option<String> = None;
    let mut structured: Option<Value> = None;
    let mut tool_calls = Vec::new();
    let mut reasoning = Vec::new();
    for block in blocks {
        if let Some(t) = block.get("text") {
            let t = t.as_str().ok_or_else(|| malformed("a text block is not text"))?;
            text.get_or_insert_with(String::new).push_str(t);
        } else if let Some(u) = block.get("toolUse") {
            let field = |k: &str| u.get(k).and_then(Value::as_str).map(str::to_owned);
            let (Some(id), Some(name)) = (field("toolUseId"), field("name")) else {
                return Err(malformed("a toolUse block lacks toolUseId or name"));
            };
            let arguments = u.get("input").cloned().unwrap_or_else(|| json!({}));
            match schema {
                Some(rs) if name == rs.name => structured = Some(rs.unwrap_answer(arguments)),
                _ => tool_calls.push(ToolCall { id, name, arguments }),
            }
        } else if let Some(r) = block.get("reasoningContent") {
            if let Some(rt) = r.get("reasoningText") {
                reasoning.push(ReasoningBlock {
                    text: rt.get("text").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    signature: rt.get("signature").and_then(Value::as_str).map(str::to_owned),
                    redacted: None,
                });
            } else if let Some(d) = r.get("redactedContent").and_then(Value::as_str) {
                reasoning.push(ReasoningBlock { redacted: Some(d.to_owned()), ..Default::default() });
            }
        }
    }
    let count = |k: &str| v.get("usage").and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
    let (read, write) = (count("cacheReadInputTokens"), count("cacheWriteInputTokens"));
    let stop_reason = v.get("stopReason").and_then(Value::as_str).map(str::to_owned);
    let refusal = matches!(stop_reason.as_deref(), Some("content_filtered" | "guardrail_intervened")).then(|| {
        let why = stop_reason.as_deref().unwrap_or_default();
        text.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| format!("(blocked: {why})"))
    });
    if let Some(ms) = v.pointer("/metrics/latencyMs").and_then(Value::as_u64) {
        tracing::debug!(provider, latency_ms = ms, "bedrock reply");
    }
    Ok(ChatReply {
        refusal,
        requests: 0,
        content: structured.map(|s| s.to_string()).or(text),
        tool_calls,
        // `inputTokens` excludes the cached prefix (as Anthropic's): the prompt is all three.
        usage: TokenUsage::new(count("inputTokens") + read + write, count("outputTokens")).with_cache(read, write),
        stop_reason,
        reasoning,
        request_id: None,
        response_model: None,
    })
}

#[async_trait]
impl ChatModel for BedrockModel {
    fn provider(&self) -> &str {
        &self.provider.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    /// [`LlmError::MissingApiKey`] without credentials, [`LlmError::Config`] without a region (or with a
    /// profile Flujo cannot read).
    fn check_ready(&self) -> Result<(), LlmError> {
        self.aws.credentials.as_ref().map_err(Clone::clone)?;
        self.region().map(|_| ())
    }

    async fn chat(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
        settings: &ChatSettings,
    ) -> Result<ChatReply, LlmError> {
        let p = &self.provider;
        let credentials = self.aws.credentials.as_ref().map_err(Clone::clone)?;
        let region = self.region()?;
        let url = self.url(settings.stream.is_some())?;
        let messages = crate::openai::inline_files(messages, Inline::FilesAndUrls, &self.http).await?;
        let body = self.request_body(&messages, tools, settings);
        let signer = SigV4Signer { credentials, region, service: SIGNING_NAME, now: SystemTime::now };
        let post = JsonPost {
            provider: &p.name,
            url: &url,
            headers: HeaderMap::new(),
            body: &body,
            timeout: settings.timeout.unwrap_or(p.timeout),
            retry: p.retry,
            secret: Some(&credentials.secret_access_key),
        };
        let (reply, headers, requests) = match &settings.stream {
            None => self.http.post_json_with_headers(post, Some(&signer)).await?,
            Some(sink) => {
                let schema_tool = settings.response_schema.as_ref().map(|rs| rs.name.as_str());
                let mut rebuilt = BedrockStream::new(&p.name, sink, schema_tool);
                let mut frames = FrameReader::default();
                let provider = p.name.as_str();
                let (headers, requests) = self
                    .http
                    .post_byte_stream(post, Some(&signer), &mut |chunk| frames.push(provider, chunk, &mut rebuilt))
                    .await?;
                frames.finish(provider)?;
                (rebuilt.finish()?, headers, requests)
            }
        };
        let mut reply = parse_reply(&p.name, &reply, settings.response_schema.as_ref())?;
        reply.requests = requests;
        reply.request_id = headers.get("x-amzn-requestid").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ReasoningSettings;
    use crate::config::ProviderConfig;

    fn model(id: &str) -> BedrockModel {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AKIDTEST".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret-test-key".to_owned()),
            "AWS_REGION" => Some("eu-west-3".to_owned()),
            _ => None,
        };
        let p = ProviderConfig::default().resolve("bedrock", &env).unwrap();
        BedrockModel::with_env(Arc::new(p), id, HttpClient::new().unwrap(), &env)
    }

    #[test]
    fn urls_encode_model_ids_and_follow_the_region() {
        let m = model("anthropic.claude-3-5-sonnet-20240620-v1:0");
        assert_eq!(
            m.url(false).unwrap(),
            "https://bedrock-runtime.eu-west-3.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
        );
        let arn = model("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-x");
        assert!(arn.url(true).unwrap().ends_with(
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-x/converse-stream"
        ));
        assert!(m.check_ready().is_ok());
        assert!(!format!("{m:?}").contains("secret-test-key") && !format!("{m:?}").contains("AKIDTEST"));
    }

    #[test]
    fn body_merges_turns_and_carries_tool_blocks() {
        let call = ToolCall { id: "tu1".into(), name: "add".into(), arguments: json!({"a": 1}) };
        let msgs = [
            ChatMessage::system("be brief"),
            ChatMessage::user("hi"),
            ChatMessage::assistant_tool_calls("", vec![call]),
            ChatMessage::tool_result("tu1", "{\"sum\": 3}"),
            ChatMessage::tool_error("tu1", "boom"),
            ChatMessage::user("and?"),
        ];
        let tools = [ToolSpec::new("add", "", json!({"type": "object"}))];
        let settings = ChatSettings { cache_prompt: true, temperature: Some(0.2), ..Default::default() };
        let b = model("meta.llama3-70b-instruct-v1:0").request_body(&msgs, &tools, &settings);
        assert_eq!(b["system"], json!([{"text": "be brief"}, {"cachePoint": {"type": "default"}}]));
        assert_eq!(
            b["messages"][1]["content"][0]["toolUse"],
            json!({"toolUseId": "tu1", "name": "add", "input": {"a": 1}})
        );
        let user = &b["messages"][2];
        assert_eq!(user["role"], "user");
        assert_eq!(user["content"][0]["toolResult"]["content"], json!([{"json": {"sum": 3}}]));
        assert_eq!(user["content"][1]["toolResult"]["status"], "error");
        assert_eq!(user["content"][2], json!({"text": "and?"}));
        assert_eq!(b["toolConfig"]["toolChoice"], json!({"auto": {}}));
        assert_eq!(
            b["toolConfig"]["tools"][0],
            json!({"toolSpec": {"name": "add", "inputSchema": {"json": {"type": "object"}}}})
        );
        assert_eq!(b["toolConfig"]["tools"][1], json!({"cachePoint": {"type": "default"}}));
        assert_eq!(b["inferenceConfig"], json!({"maxTokens": 4096, "temperature": 0.2}));
        // No tools offered now, but the transcript has tool blocks: they are declared.
        let none = ChatSettings { tool_choice: ToolChoice::None, ..Default::default() };
        let b = model("m").request_body(&msgs, &tools, &none);
        assert!(b["toolConfig"].get("toolChoice").is_none());
        let b = model("m").request_body(&msgs[..2], &tools, &none);
        assert!(b.get("toolConfig").is_none());
    }

    #[test]
    fn thinking_only_for_claude_and_extra_fields() {
        let mut settings = ChatSettings {
            reasoning: ReasoningSettings { budget_tokens: Some(2000), effort: None },
            temperature: Some(0.5),
            ..Default::default()
        };
        settings.extra.insert("top_k".into(), json!(40));
        settings.extra.insert("stop".into(), json!("END"));
        let b =
            model("us.anthropic.claude-sonnet-4-20250514-v1:0").request_body(&[ChatMessage::user("x")], &[], &settings);
        assert_eq!(
            b["additionalModelRequestFields"],
            json!({"thinking": {"type": "enabled", "budget_tokens": 2000}, "top_k": 40})
        );
        assert_eq!(b["inferenceConfig"], json!({"maxTokens": 4096, "stopSequences": ["END"]}));
        let b = model("amazon.nova-pro-v1:0").request_body(&[ChatMessage::user("x")], &[], &settings);
        assert_eq!(b["additionalModelRequestFields"], json!({"top_k": 40}));
        assert_eq!(b["inferenceConfig"]["temperature"], 0.5);
    }

    #[test]
    fn document_names_are_made_acceptable() {
        assert_eq!(document_name(Some("Q3 report (final).pdf")), "Q3 report (final)");
        assert_eq!(document_name(Some("a_b  c.v2.pdf")), "a-b c-v2");
        assert_eq!(document_name(None), "document");
    }

    #[test]
    fn replies_with_reasoning_refusals_and_usage() {
        let rs = ResponseSchema::new(json!({"type": "array"}));
        let v = json!({"output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "sig"}}},
            {"toolUse": {"toolUseId": "t", "name": "output", "input": {"value": [1]}}}]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 5, "outputTokens": 2, "cacheReadInputTokens": 7, "cacheWriteInputTokens": 1}});
        let r = parse_reply("bedrock", &v, Some(&rs)).unwrap();
        assert_eq!(r.content.as_deref(), Some("[1]"));
        assert_eq!(r.reasoning[0].signature.as_deref(), Some("sig"));
        assert_eq!(r.usage, TokenUsage::new(13, 2).with_cache(7, 1));
        let v = json!({"output": {"message": {"content": []}}, "stopReason": "guardrail_intervened"});
        assert_eq!(
            parse_reply("bedrock", &v, None).unwrap().refusal.as_deref(),
            Some("(blocked: guardrail_intervened)")
        );
        assert!(matches!(parse_reply("bedrock", &json!({}), None), Err(LlmError::Malformed { .. })));
    }
}
