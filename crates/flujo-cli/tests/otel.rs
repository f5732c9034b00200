//! OTLP export through the `flujo` binary, against a local OTLP receiver of this test (real servers on
//! 127.0.0.1 decoding real OTLP: `POST /v1/traces` with protobuf bodies on axum, the `TraceService` on
//! tonic) and the fake model provider: the run span with its id, the step spans under it (nested steps under
//! their composite's span), the model call's `gen_ai.chat` span under its step with the GenAI attributes, in
//! one trace; a resumed walk's own run span; an unreachable collector changing nothing but one warning; bad
//! configuration as exit 2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cmd, code, fake_project, json_out, stderr, stdout, FakeProject};
use flujo_core::TokenUsage;
use flujo_llm::testing::ScriptedReply;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{json, Value};

/// A parallel step around the model step (a nested step), then a pause, then one more step.
const PIPELINE: &str = r#"version: "0.1"
name: traced
agents:
  writer:
    model: "openai:gpt-test"
    system_prompt: "You write one line."
    model_settings: {max_tokens: 100}
steps:
  - kind: parallel
    name: fan_out
    branches:
      write:
        - name: draft
          uses: agents.writer
          config: {max_retries: 0}
      measure:
        - name: upper
          agent: {id: flujo.builtins.transform, params: {expr: "previous_step | upper"}}
PAUSE
  - name: report
    agent: {id: flujo.builtins.transform, params: {expr: "'done'"}}
"#;

const PAUSE: &str = r#"  - kind: hitl
    name: approve
    message: "Publish? (yes/no)"
    input_schema: {type: string, enum: ["yes", "no"]}
"#;

/// One received span, decoded.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    kind: i32,
    attrs: HashMap<String, Value>,
    /// The `service.name` of the resource it came with.
    service: Option<String>,
}

impl Span {
    fn attr(&self, key: &str) -> &Value {
        self.attrs.get(key).unwrap_or(&Value::Null)
    }
}

fn value_of(kv: &KeyValue) -> Value {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        other => json!(format!("{other:?}")),
    }
}

/// What a receiver got: the spans, and the request headers (http/protobuf) or metadata (gRPC).
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    headers: Arc<Mutex<Vec<(String, String)>>>,
    requests: Arc<Mutex<usize>>,
}

impl Received {
    fn add(&self, req: ExportTraceServiceRequest) {
        *self.requests.lock().unwrap() += 1;
        let mut out = self.spans.lock().unwrap();
        for rs in req.resource_spans {
            let service = rs.resource.as_ref().and_then(|r| {
                r.attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| value_of(kv).as_str().map(str::to_owned))
            });
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Span {
                        name: s.name,
                        trace_id: s.trace_id,
                        span_id: s.span_id,
                        parent_span_id: s.parent_span_id,
                        kind: s.kind,
                        attrs: s.attributes.iter().map(|kv| (kv.key.clone(), value_of(kv))).collect(),
                        service: service.clone(),
                    });
                }
            }
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.lock().unwrap().iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`. Returns its base URL.
fn start_http(rt: &tokio::runtime::Runtime, received: &Received) -> String {
    use axum::body::Bytes;
    use axum::http::{header, HeaderMap, StatusCode};
    let r = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let r = r.clone();
            async move {
                r.headers.lock().unwrap().extend(
                    headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned())),
                );
                match ExportTraceServiceRequest::decode(body) {
                    Ok(req) => {
                        r.add(req);
                        let reply = ExportTraceServiceResponse::default().encode_to_vec();
                        (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-protobuf")], reply)
                    }
                    Err(_) => (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/plain")], b"bad".to_vec()),
                }
            }
        }),
    );
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

struct GrpcReceiver(Received);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.headers.lock().unwrap().extend(request.metadata().iter().filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                Some((k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            }
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        }));
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver (the `TraceService` on tonic). Returns its URL.
fn start_grpc(rt: &tokio::runtime::Runtime, received: &Received) -> String {
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = TraceServiceServer::new(GrpcReceiver(received.clone()));
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    format!("http://{addr}")
}

fn setup(paused: bool) -> FakeProject {
    let bp = PIPELINE.replace("PAUSE\n", if paused { PAUSE } else { "" });
    let env = fake_project(&[("pipeline.yaml", &bp)], "state_uri = \"sqlite:///state.db\"\n");
    env.fake.push_reply_with_usage(ScriptedReply::Text("A fine line.".into()), TokenUsage::new(100, 50));
    env
}

/// `flujo ARGS` with none of the caller's OpenTelemetry settings, then `vars`.
fn flujo_with(env: &FakeProject, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut c: Command = cmd(env.dir.path(), args);
    for v in [
        "FLUJO_OTLP_ENDPOINT",
        "FLUJO_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_SERVICE_NAME",
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_RESOURCE_ATTRIBUTES",
    ] {
        c.env_remove(v);
    }
    c.envs(vars.iter().copied());
    c.output().expect("flujo runs")
}

/// The spans of run `run_id`'s walk (resumed or not), checked: one run span with its attributes, every step
/// span in the run's trace, the top-level ones under the run span, `draft` under `fan_out`, the model call under
/// `draft` with the GenAI attributes. Returns the run span and the steps by name.
fn check_walk(spans: &[Span], run_id: &str, resumed: bool) -> (Span, HashMap<String, Span>) {
    let runs: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "flujo.run" && s.attr("flujo.run_id") == run_id && s.attr("flujo.resumed") == resumed)
        .collect();
    assert_eq!(runs.len(), 1, "one run span (resumed={resumed}) of {run_id}: {spans:#?}");
    let run = runs[0].clone();
    assert!(run.parent_span_id.is_empty(), "the run span is a root: {run:?}");
    assert_eq!(run.attr("flujo.pipeline"), "traced");
    assert_eq!(run.service.as_deref(), Some("flujo"));
    let in_trace: Vec<&Span> = spans.iter().filter(|s| s.trace_id == run.trace_id).collect();
    let steps: HashMap<String, Span> = in_trace
        .iter()
        .filter(|s| s.attrs.contains_key("flujo.step.path"))
        .map(|s| (s.attr("flujo.step.name").as_str().unwrap().to_owned(), (*s).clone()))
        .collect();
    for s in steps.values() {
        assert_eq!(s.attr("flujo.run_id"), run_id, "{s:?}");
    }
    let others: Vec<&&Span> =
        in_trace.iter().filter(|s| s.name != "flujo.run" && !s.attrs.contains_key("flujo.step.path")).collect();
    assert!(others.iter().all(|s| s.attr("gen_ai.operation.name") == "chat"), "only flujo spans: {others:#?}");
    (run, steps)
}

fn check_model_call(spans: &[Span], run: &Span, steps: &HashMap<String, Span>) {
    let fan_out = &steps["fan_out"];
    assert_eq!(fan_out.parent_span_id, run.span_id, "a top-level step's parent is the run span");
    assert_eq!(fan_out.attr("flujo.step.kind"), "parallel");
    let draft = &steps["draft"];
    assert_eq!(draft.parent_span_id, fan_out.span_id, "a nested step's parent is its composite's span");
    assert_eq!(steps["upper"].parent_span_id, fan_out.span_id);
    assert_eq!(draft.name, "draft");
    assert_eq!(draft.attr("flujo.step.status"), "completed");
    assert_eq!(draft.attr("gen_ai.usage.input_tokens"), 100);
    let chats: Vec<&Span> =
        spans.iter().filter(|s| s.trace_id == run.trace_id && s.attr("gen_ai.operation.name") == "chat").collect();
    assert_eq!(chats.len(), 1, "{chats:#?}");
    let chat = chats[0];
    assert_eq!(chat.parent_span_id, draft.span_id, "the model call's parent is its step's span");
    assert_eq!(chat.name, "chat gpt-test");
    assert_eq!(chat.kind, SpanKind::Client as i32);
    assert_eq!(chat.attr("gen_ai.request.model"), "gpt-test");
    assert_eq!(chat.attr("gen_ai.provider.name"), "openai");
    assert_eq!(chat.attr("gen_ai.usage.input_tokens"), 100);
    assert_eq!(chat.attr("gen_ai.usage.output_tokens"), 50);
    assert_eq!(chat.attr("gen_ai.request.max_tokens"), 100);
}

fn run_and_check(protocol: &str) {
    let env = setup(false);
    let received = Received::default();
    let url = if protocol == "grpc" { start_grpc(&env.rt, &received) } else { start_http(&env.rt, &received) };
    let o = flujo_with(
        &env,
        &["run", "-i", "topic", "--json"],
        &[
            ("FLUJO_OTLP_ENDPOINT", url.as_str()),
            ("FLUJO_OTLP_PROTOCOL", protocol),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme,authorization=Bearer%20s3cret-token"),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    let run_id = v["run_id"].as_str().unwrap();
    // Delivered before the process exited: no waiting here.
    let spans = received.spans();
    let (run, steps) = check_walk(&spans, run_id, false);
    assert_eq!(run.attr("flujo.status"), "completed");
    assert_eq!(run.attr("flujo.total_tokens"), 150);
    check_model_call(&spans, &run, &steps);
    assert_eq!(steps["report"].parent_span_id, run.span_id);
    assert_eq!(received.header("x-tenant").as_deref(), Some("acme"));
    assert_eq!(received.header("authorization").as_deref(), Some("Bearer s3cret-token"));
    assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
}

#[test]
fn spans_are_exported_over_http_protobuf_with_their_parents_and_gen_ai_attributes() {
    run_and_check("http/protobuf");
}

#[test]
fn spans_are_exported_over_grpc_with_their_parents_and_gen_ai_attributes() {
    run_and_check("grpc");
}

/// The standard variables work too, with the per-signal endpoint used as it is, `[telemetry]` in flujo.toml
/// as the fallback, and `OTEL_SERVICE_NAME`.
#[test]
fn the_standard_variables_and_the_telemetry_table_configure_the_export() {
    let env = setup(false);
    let received = Received::default();
    let url = start_http(&env.rt, &received);
    let o = flujo_with(
        &env,
        &["run", "-i", "topic", "--json"],
        &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &format!("{url}/v1/traces")), ("OTEL_SERVICE_NAME", "billing")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let spans = received.spans();
    let run = spans.iter().find(|s| s.name == "flujo.run").expect("a run span");
    assert_eq!(run.service.as_deref(), Some("billing"));

    let toml = std::fs::read_to_string(env.dir.path().join("flujo.toml")).unwrap();
    let grpc = Received::default();
    let grpc_url = start_grpc(&env.rt, &grpc);
    std::fs::write(
        env.dir.path().join("flujo.toml"),
        format!("{toml}\n[telemetry]\notlp_endpoint = \"{grpc_url}\"\notlp_protocol = \"grpc\"\n"),
    )
    .unwrap();
    env.fake.push_reply(ScriptedReply::Text("Another line.".into()));
    let o = flujo_with(&env, &["run", "-i", "topic", "--json"], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let run_id = json_out(&o)["run_id"].as_str().unwrap().to_owned();
    check_walk(&grpc.spans(), &run_id, false);
    assert!(!stderr(&o).contains("telemetry"), "no note about [telemetry]: {}", stderr(&o));
}

/// A run that pauses exports its walk when the command exits with 5; the resumed walk exports a run span of
/// its own (`flujo.resumed = true`, same run id) with the steps that ran live in it.
#[test]
fn a_paused_run_and_its_resumed_walk_each_export_a_run_span() {
    let env = setup(true);
    let received = Received::default();
    let url = start_http(&env.rt, &received);
    let vars = [("FLUJO_OTLP_ENDPOINT", url.as_str())];
    let o = flujo_with(&env, &["run", "-i", "topic", "--json"], &vars);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    let run_id = json_out(&o)["run_id"].as_str().unwrap().to_owned();
    let first = received.spans();
    let (run, steps) = check_walk(&first, &run_id, false);
    assert_eq!(run.attr("flujo.status"), "paused");
    check_model_call(&first, &run, &steps);
    assert!(!steps.contains_key("report"), "{steps:?}");

    let o = flujo_with(&env, &["resume", &run_id, "-i", "yes", "--json"], &vars);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let all = received.spans();
    let (resumed, steps) = check_walk(&all, &run_id, true);
    assert_ne!(resumed.trace_id, run.trace_id, "each walk is a trace of its own");
    assert_eq!(resumed.attr("flujo.status"), "completed");
    assert_eq!(steps["report"].parent_span_id, resumed.span_id);
    assert!(!steps.contains_key("draft"), "replayed steps are not executed again: {steps:?}");
}

/// A collector nobody listens on changes neither the exit code nor the output; one warning on stderr, and no
/// noticeable delay.
#[test]
fn an_unreachable_collector_changes_nothing_but_a_warning() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for protocol in ["http/protobuf", "grpc"] {
        let env = setup(false);
        env.fake.push_reply_with_usage(ScriptedReply::Text("A fine line.".into()), TokenUsage::new(100, 50));
        let plain = flujo_with(&env, &["run", "-i", "topic", "--run-id", "r-plain"], &[]);
        let started = Instant::now();
        let url = format!("http://{closed}");
        let exported = flujo_with(
            &env,
            &["run", "-i", "topic", "--run-id", "r-export"],
            &[("FLUJO_OTLP_ENDPOINT", url.as_str()), ("FLUJO_OTLP_PROTOCOL", protocol)],
        );
        let took = started.elapsed();
        assert_eq!(code(&plain), 0, "{}", stderr(&plain));
        assert_eq!(code(&exported), code(&plain), "{}", stderr(&exported));
        assert_eq!(stdout(&exported).replace("r-export", "r-plain"), stdout(&plain));
        let err = stderr(&exported);
        assert_eq!(err.matches("cannot export traces").count(), 1, "{err}");
        assert!(err.contains(&closed.to_string()), "{err}");
        assert!(took < Duration::from_secs(4), "{protocol}: {took:?}");
    }
}

#[test]
fn bad_configuration_is_a_config_error() {
    let env = setup(false);
    for (vars, needle) in [
        (vec![("FLUJO_OTLP_ENDPOINT", "http://127.0.0.1:4318"), ("FLUJO_OTLP_PROTOCOL", "http/json")], "http/json"),
        (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318")], "OTEL_EXPORTER_OTLP_ENDPOINT"),
        (vec![("FLUJO_OTLP_ENDPOINT", "http://u:hunter22@:4318")], "FLUJO_OTLP_ENDPOINT"),
        (
            vec![("FLUJO_OTLP_ENDPOINT", "http://127.0.0.1:4318"), ("OTEL_EXPORTER_OTLP_HEADERS", "hunter22")],
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
    ] {
        let o = flujo_with(&env, &["run", "-i", "topic", "--json"], &vars);
        assert_eq!(code(&o), 2, "{vars:?}: {}", stderr(&o));
        let v = json_out(&o);
        assert_eq!(v["error"]["kind"], "config_error", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg}");
        assert!(!msg.contains("hunter22") && !stderr(&o).contains("hunter22"), "{msg}");
    }
    assert!(env.fake.calls().is_empty(), "nothing ran");
}
