//! The fake server's Amazon Bedrock Converse shape: `POST /model/{modelId}/converse` answers Converse JSON,
//! `POST /model/{modelId}/converse-stream` the same reply as binary event-stream frames
//! (`application/vnd.amazon.eventstream`: prelude, `:event-type` / `:message-type` / `:content-type`
//! headers, JSON payload, CRC32s — encoded here, independently of the client's decoder).
//!
//! Every request's SigV4 signature is checked for real with an implementation of its own (HMAC-SHA256 over
//! the canonical request rebuilt from what arrived on the wire: path segments encoded twice, the signed
//! headers, the body's SHA-256), against the credentials and region the fake is told to expect
//! ([`FakeProvider::expect_aws_credentials`]; by default [`FakeProvider::AWS_ACCESS_KEY_ID`] /
//! [`FakeProvider::AWS_SECRET_ACCESS_KEY`] in [`FakeProvider::AWS_REGION`]). A bad signature gets 403
//! `InvalidSignatureException`, an unknown key or session token 403 `UnrecognizedClientException`, as
//! Bedrock answers. Errors are `{"message": …}` with `x-amzn-ErrorType` (429 is `ThrottlingException`);
//! every response carries an `x-amzn-RequestId`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use flujo_core::TokenUsage;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{frames_response, halves, lock, logged_headers, pieces, Content, RecordedCall, Req, Shared, WireShape};
use crate::config::{LlmConfig, ProviderConfig, ProviderKind};
use crate::error::LlmError;
use crate::pricing::PricingTable;
use crate::registry::LlmRegistry;

use super::FakeProvider;

/// The credentials a Bedrock request must be signed with.
#[derive(Debug, Clone)]
struct Expected {
    access_key_id: String,
    secret: String,
    session_token: Option<String>,
    region: String,
}

/// What a stream does wrong, once.
#[derive(Debug, Clone)]
enum StreamFault {
    /// A frame in the middle has one payload byte changed (its CRC no longer matches).
    CorruptFrame,
    /// After half the frames, an exception frame.
    Exception { kind: String, message: String },
}

/// The Bedrock part of the fake's state.
#[derive(Debug, Default)]
pub(crate) struct BedrockState {
    expected: Option<Expected>,
    faults: VecDeque<StreamFault>,
}

impl FakeProvider {
    /// The access key id Bedrock requests are expected to be signed with (unless told otherwise).
    pub const AWS_ACCESS_KEY_ID: &'static str = "AKIAFLUJOFAKE0000001";
    /// The secret access key that goes with [`FakeProvider::AWS_ACCESS_KEY_ID`].
    pub const AWS_SECRET_ACCESS_KEY: &'static str = "fAkE/sEcReT+kEy0123456789abcdefFLUJOxmpl";
    /// The region of the signatures the fake expects (unless told otherwise).
    pub const AWS_REGION: &'static str = "us-east-1";

    /// From now on, Bedrock requests must be signed with these credentials for `region` (a session token, when
    /// given, must come as `x-amz-security-token`, signed).
    pub fn expect_aws_credentials(&self, access_key_id: &str, secret: &str, session_token: Option<&str>, region: &str) {
        lock(&self.state).bedrock.expected = Some(Expected {
            access_key_id: access_key_id.to_owned(),
            secret: secret.to_owned(),
            session_token: session_token.map(str::to_owned),
            region: region.to_owned(),
        });
    }

    /// The next `converse-stream` reply has a corrupt frame in the middle (its CRC does not match).
    pub fn corrupt_next_bedrock_stream(&self) {
        lock(&self.state).bedrock.faults.push_back(StreamFault::CorruptFrame);
    }

    /// The next `converse-stream` reply breaks off halfway with an exception frame of `kind`
    /// (`throttlingException`, `validationException`, `modelStreamErrorException`, …).
    pub fn bedrock_stream_exception(&self, kind: &str, message: &str) {
        let fault = StreamFault::Exception { kind: kind.to_owned(), message: message.to_owned() };
        lock(&self.state).bedrock.faults.push_back(fault);
    }

    /// A `[providers.bedrock]` section pointing at this server (no region: it comes from the environment),
    /// retrying after 10 ms (3 attempts).
    pub fn bedrock_config(&self) -> ProviderConfig {
        ProviderConfig { api_key: None, ..self.provider_config(ProviderKind::Bedrock, "") }
    }

    /// A registry whose `bedrock:` provider is this server, reading the "environment" through `env` only
    /// (credentials, region, profile files).
    pub fn bedrock_registry_with_env(
        &self,
        pricing: PricingTable,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Result<LlmRegistry, LlmError> {
        let config = LlmConfig::default().with_pricing(pricing).with_provider("bedrock", self.bedrock_config());
        LlmRegistry::with_env(config, env)
    }

    /// A registry whose `bedrock:` provider is this server, with the credentials it expects by default
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_REGION` in its environment, nothing else).
    pub fn bedrock_registry(&self, pricing: PricingTable) -> Result<LlmRegistry, LlmError> {
        self.bedrock_registry_with_env(pricing, |k| {
            let v = match k {
                "AWS_ACCESS_KEY_ID" => FakeProvider::AWS_ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY" => FakeProvider::AWS_SECRET_ACCESS_KEY,
                "AWS_REGION" => FakeProvider::AWS_REGION,
                _ => return None,
            };
            Some(v.to_owned())
        })
    }
}

/// This shape's routes.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/model/{model}/converse", post(converse))
        .route("/model/{model}/converse-stream", post(converse))
}

async fn converse(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let expected = lock(&state).bedrock.expected.clone().unwrap_or_else(|| Expected {
        access_key_id: FakeProvider::AWS_ACCESS_KEY_ID.into(),
        secret: FakeProvider::AWS_SECRET_ACCESS_KEY.into(),
        session_token: None,
        region: FakeProvider::AWS_REGION.into(),
    });
    if let Err((kind, message)) = verify(&expected, method.as_str(), &uri, &headers, &body, SystemTime::now()) {
        let logged = serde_json::from_slice(&body).unwrap_or(Value::Null);
        lock(&state).calls.push(RecordedCall {
            path: uri.path().to_owned(),
            headers: logged_headers(&headers),
            body: logged,
        });
        return aws_headers(aws_error(StatusCode::FORBIDDEN, kind, &message));
    }
    let fault = if uri.path().ends_with("/converse-stream") { lock(&state).bedrock.faults.pop_front() } else { None };
    aws_headers(super::handle(&BedrockWire { fault }, state, uri, headers, body).await)
}

fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut resp = (status, axum::Json(json!({"message": message}))).into_response();
    if let Ok(v) = kind.parse() {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    resp
}

/// Adds what every Bedrock response has: `x-amzn-RequestId`, and on errors `x-amzn-ErrorType`.
fn aws_headers(mut resp: Response) -> Response {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = format!("fa4e0000-0000-4000-8000-{:012x}", NEXT.fetch_add(1, Ordering::Relaxed));
    let status = resp.status();
    let h = resp.headers_mut();
    if let Ok(v) = id.parse() {
        h.insert("x-amzn-requestid", v);
    }
    if !status.is_success() && !h.contains_key("x-amzn-errortype") {
        let kind = match status.as_u16() {
            400 => "ValidationException",
            403 => "AccessDeniedException",
            404 => "ResourceNotFoundException",
            408 => "ModelTimeoutException",
            424 => "ModelErrorException",
            429 => "ThrottlingException",
            503 => "ServiceUnavailableException",
            _ => "InternalServerException",
        };
        if let Ok(v) = kind.parse() {
            h.insert("x-amzn-errortype", v);
        }
    }
    resp
}

// --- SigV4, checked independently of the client's signer ----------------------------------------------------

type Refusal = (&'static str, String);

const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your \
                        AWS Secret Access Key and signing method. Consult the service documentation for details.";

fn invalid_token() -> Refusal {
    ("UnrecognizedClientException", "The security token included in the request is invalid.".into())
}

/// Checks the request's `Authorization` header against the expected credentials.
fn verify(
    expected: &Expected,
    method: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let incomplete = |what: &str| ("IncompleteSignatureException", format!("Authorization header {what}"));
    let auth = header("authorization")
        .ok_or_else(|| ("MissingAuthenticationTokenException", "Missing Authentication Token".to_owned()))?;
    let fields = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| incomplete("is not AWS4-HMAC-SHA256"))?;
    let field = |name: &str| {
        fields.split(',').map(str::trim).find_map(|f| f.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
    };
    let (Some(credential), Some(signed), Some(offered)) =
        (field("Credential"), field("SignedHeaders"), field("Signature"))
    else {
        return Err(incomplete("lacks Credential, SignedHeaders or Signature"));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = scope[..] else {
        return Err(incomplete("has a malformed Credential"));
    };
    if key_id != expected.access_key_id {
        return Err(invalid_token());
    }
    let amz_date = header("x-amz-date").ok_or_else(|| incomplete("is missing X-Amz-Date"))?;
    if !amz_date.starts_with(date) || terminator != "aws4_request" || service != "bedrock" {
        return Err(("InvalidSignatureException", format!("Credential should be scoped correctly: {credential}")));
    }
    if region != expected.region {
        return Err((
            "InvalidSignatureException",
            format!("Credential should be scoped to a valid region, not '{region}' (expected '{}')", expected.region),
        ));
    }
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| incomplete("has a malformed X-Amz-Date"))?;
    let skew = now.duration_since(signed_at).unwrap_or_else(|e| e.duration());
    if skew > Duration::from_secs(300) {
        return Err(("InvalidSignatureException", format!("Signature expired: {amz_date} is now earlier or later")));
    }
    let signed_list: Vec<&str> = signed.split(';').collect();
    if !signed_list.contains(&"host") || !signed_list.contains(&"x-amz-date") {
        return Err(incomplete("must sign host and x-amz-date"));
    }
    match (&expected.session_token, header("x-amz-security-token")) {
        (None, None) => {}
        (Some(t), Some(sent)) if t == sent && signed_list.contains(&"x-amz-security-token") => {}
        _ => return Err(invalid_token()),
    }
    let creq = canonical_request(method, uri.path(), uri.query().unwrap_or_default(), headers, &signed_list, body);
    let ours = signature(&expected.secret, amz_date, region, service, &creq);
    if ours != offered {
        return Err(("InvalidSignatureException", MISMATCH.into()));
    }
    Ok(())
}

/// `YYYYMMDDTHHMMSSZ` as a time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let secs = num(9..11)? * 3600 + num(11..13)? * 60 + num(13..15)?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + secs).ok().map(|t| UNIX_EPOCH + Duration::from_secs(t))
}

/// URI-encodes as SigV4 wants: everything but `A-Z a-z 0-9 - _ . ~` as `%XX`.
fn uri_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else { return Vec::new() };
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The canonical request of SigV4 for a service other than S3: the path as sent, each segment encoded once
/// more; the query sorted; the signed headers with trimmed values; the body's SHA-256.
fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    signed: &[&str],
    body: &[u8],
) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let uri: Vec<String> = path.split('/').map(uri_encode).collect();
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&percent_decode(k)), uri_encode(&percent_decode(v)))
        })
        .collect();
    params.sort();
    let query: Vec<String> = params.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut canonical_headers = String::new();
    for name in signed {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{}\n{}",
        uri.join("/"),
        query.join("&"),
        signed.join(";"),
        hex(&Sha256::digest(body))
    )
}

/// The signature of a canonical request.
fn signature(secret: &str, amz_date: &str, region: &str, service: &str, creq: &str) -> String {
    let date = amz_date.get(..8).unwrap_or_default();
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex(&Sha256::digest(creq.as_bytes())));
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [date, region, service, "aws4_request"] {
        key = hmac(&key, part);
    }
    hex(&hmac(&key, &string_to_sign))
}

// --- The wire shape ---------------------------------------------------------------------------------------

pub(crate) struct BedrockWire {
    fault: Option<StreamFault>,
}

/// A Converse usage object (cache counts only when there are some, as Bedrock reports them).
fn usage_json(usage: TokenUsage) -> Value {
    let input = usage.prompt.saturating_sub(usage.cached + usage.cache_write);
    let mut u = json!({"inputTokens": input, "outputTokens": usage.completion, "totalTokens": usage.total()});
    if usage.cached > 0 {
        u["cacheReadInputTokens"] = json!(usage.cached);
    }
    if usage.cache_write > 0 {
        u["cacheWriteInputTokens"] = json!(usage.cache_write);
    }
    u
}

impl WireShape for BedrockWire {
    fn offered_key(&self, _req: &Req<'_>) -> String {
        // Checked by the SigV4 verification before the shared handler runs.
        String::new()
    }

    fn wants_stream(&self, req: &Req<'_>) -> bool {
        req.uri.path().ends_with("/converse-stream")
    }

    fn model(&self, req: &Req<'_>) -> Value {
        let id = req.uri.path().strip_prefix("/model/").and_then(|r| r.split('/').next()).unwrap_or_default();
        Value::String(percent_decode(id))
    }

    fn forced_tool(&self, req: &Req<'_>) -> Option<String> {
        req.body.pointer("/toolConfig/toolChoice/tool/name").and_then(Value::as_str).map(str::to_owned)
    }

    fn wire_schema<'r>(&self, req: &'r Req<'_>, forced: Option<&str>) -> Option<&'r Value> {
        req.body
            .pointer("/toolConfig/tools")
            .and_then(Value::as_array)?
            .iter()
            .find(|t| t.pointer("/toolSpec/name").and_then(Value::as_str) == forced)
            .and_then(|t| t.pointer("/toolSpec/inputSchema/json"))
    }

    fn message(&self, req: &Req<'_>, id: u64, content: Content, usage: TokenUsage) -> Value {
        let mut blocks = Vec::new();
        // With thinking on, the model thinks first (a signed reasoning block).
        if req.body.pointer("/additionalModelRequestFields/thinking/type").and_then(Value::as_str) == Some("enabled") {
            blocks.push(json!({"reasoningContent": {"reasoningText": {"text": "Let me think about this.",
                "signature": format!("fake-signature-{id}")}}}));
        }
        let stop = match content {
            Content::Text(text) => {
                blocks.push(json!({"text": text}));
                "end_turn"
            }
            Content::Refusal(text) => {
                blocks.push(json!({"text": text}));
                "guardrail_intervened"
            }
            Content::Tool { name, arguments } => {
                blocks
                    .push(json!({"toolUse": {"toolUseId": format!("tooluse_{id}"), "name": name, "input": arguments}}));
                "tool_use"
            }
        };
        json!({"output": {"message": {"role": "assistant", "content": blocks}}, "stopReason": stop,
            "usage": usage_json(usage), "metrics": {"latencyMs": 12}})
    }

    fn cut_off(&self, body: &mut Value) {
        body["stopReason"] = json!("max_tokens");
    }

    fn stream(&self, body: &Value, truncated: bool) -> Response {
        // Bedrock pads payloads with a `p` field (against length side channels); clients ignore it.
        let event = |kind: &str, mut payload: Value| {
            payload["p"] = json!("abcdefghijklmnopqrstuvwxyzABCDEF");
            frame(&[(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")], &payload)
        };
        let mut frames = vec![event("messageStart", json!({"role": "assistant"}))];
        let blocks = body.pointer("/output/message/content").and_then(Value::as_array).cloned().unwrap_or_default();
        for (i, block) in blocks.iter().enumerate() {
            let delta = |d: Value| event("contentBlockDelta", json!({"contentBlockIndex": i, "delta": d}));
            if let Some(text) = block.get("text").and_then(Value::as_str) {
                frames.extend(pieces(text).into_iter().map(|p| delta(json!({"text": p}))));
            } else if let Some(u) = block.get("toolUse") {
                frames.push(event(
                    "contentBlockStart",
                    json!({"contentBlockIndex": i, "start": {"toolUse": {"toolUseId": u["toolUseId"], "name": u["name"]}}}),
                ));
                frames.extend(
                    halves(&u["input"].to_string()).into_iter().map(|p| delta(json!({"toolUse": {"input": p}}))),
                );
            } else if let Some(r) = block.pointer("/reasoningContent/reasoningText") {
                frames.push(delta(json!({"reasoningContent": {"text": r["text"]}})));
                frames.push(delta(json!({"reasoningContent": {"signature": r["signature"]}})));
            }
            frames.push(event("contentBlockStop", json!({"contentBlockIndex": i})));
        }
        frames.push(event("messageStop", json!({"stopReason": body["stopReason"]})));
        frames.push(event("metadata", json!({"usage": body["usage"], "metrics": body["metrics"]})));
        match &self.fault {
            None => {}
            Some(StreamFault::CorruptFrame) => {
                let mid = frames.len() / 2;
                let f = &mut frames[mid];
                let at = f.len() - 6;
                f[at] ^= 0x01;
            }
            Some(StreamFault::Exception { kind, message }) => {
                frames.truncate(frames.len() / 2);
                frames.push(frame(
                    &[(":exception-type", kind), (":content-type", "application/json"), (":message-type", "exception")],
                    &json!({"message": message}),
                ));
            }
        }
        frames_response("application/vnd.amazon.eventstream", frames.into_iter().map(Bytes::from).collect(), truncated)
    }

    fn error_body(&self, _code: u16, message: &str) -> Value {
        json!({"message": message})
    }
}

/// One event-stream frame: total length, headers length, prelude CRC, headers (string values, type 7),
/// payload, message CRC.
fn frame(headers: &[(&str, &str)], payload: &Value) -> Vec<u8> {
    let payload = payload.to_string().into_bytes();
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_frames_match_the_published_vectors() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        // The event-stream test suite's `empty_message`: prelude only.
        let mut empty = vec![0, 0, 0, 0x10, 0, 0, 0, 0];
        empty.extend(crc32(&empty).to_be_bytes());
        empty.extend(crc32(&empty).to_be_bytes());
        assert_eq!(empty, [0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff]);
    }

    /// The worked example of the AWS SigV4 documentation (IAM ListUsers, 2015-08-30T12:36:00Z).
    #[test]
    fn verifies_the_documented_example() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/x-www-form-urlencoded; charset=utf-8".parse().unwrap());
        headers.insert("host", "iam.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let signed = ["content-type", "host", "x-amz-date"];
        let creq = canonical_request("GET", "/", "Version=2010-05-08&Action=ListUsers", &headers, &signed, b"");
        let sig = signature("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830T123600Z", "us-east-1", "iam", &creq);
        assert_eq!(sig, "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(UNIX_EPOCH + Duration::from_secs(1_440_938_160)));
        // Paths are encoded once more: `%3A` of a model id is signed as `%253A`.
        let creq = canonical_request("POST", "/model/a%3A0/converse", "", &headers, &signed, b"{}");
        assert!(creq.starts_with("POST\n/model/a%253A0/converse\n\n"), "{creq}");
    }
}
