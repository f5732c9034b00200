//! `http` skills and `flujo dev import-openapi` through the real `flujo` binary, against a small API server
//! the test runs on 127.0.0.1 (real HTTP): templates, encoding, environment headers that never reach the
//! output, the journal or stderr, retries (honoured for GET and for POST with an idempotency key, not for a
//! plain POST), error bodies, output schemas; then an OpenAPI document of that server imported into a
//! `skills.yaml` that keeps a hand-written entry, and an agent (fake provider) calling two imported operations
//! as tools.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::*;
use flujo_llm::testing::ScriptedReply;
use serde_json::{json, Value};

const SECRET: &str = "sk-live-SECRET-9f8e7d6c5b";

/// One request the API server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: String,
}

#[derive(Default)]
struct ApiState {
    seen: Vec<Seen>,
    hits: HashMap<String, usize>,
}

type Shared = Arc<Mutex<ApiState>>;

/// The API: `GET /pets/{id}` (needs `X-API-Key`), `POST /pets`, `GET /flaky` (503 with `Retry-After: 1`, then
/// 200), `POST /flaky-post` (always 503), `POST /flaky-idem` (503 once, then 201), `GET /missing` (404 with a
/// long body), `GET /bad-shape`.
struct Api {
    rt: tokio::runtime::Runtime,
    base: String,
    state: Shared,
}

impl Api {
    fn start() -> Api {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let state: Shared = Arc::default();
        let base = rt.block_on(serve_api(state.clone()));
        Api { rt, base, state }
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        self.state.lock().unwrap().seen.iter().filter(|s| s.path == path).cloned().collect()
    }

    fn hits(&self, path: &str) -> usize {
        self.state.lock().unwrap().hits.get(path).copied().unwrap_or(0)
    }
}

async fn serve_api(state: Shared) -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(handle).with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn json_reply(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(State(state): State<Shared>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let headers: HashMap<String, String> =
        req.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned())).collect();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let key = headers.get("x-api-key").cloned();
    let hit = {
        let mut s = state.lock().unwrap();
        s.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            headers,
            body: body.clone(),
        });
        let n = s.hits.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    match (method.as_str(), path.as_str()) {
        ("GET", p) if p.starts_with("/pets/") => {
            if key.as_deref() != Some(SECRET) {
                // as real APIs do: the key offered is echoed back
                return json_reply(StatusCode::UNAUTHORIZED, json!({"error": format!("bad key {key:?}")}));
            }
            let id = percent_decode(&p["/pets/".len()..]);
            json_reply(StatusCode::OK, json!({"id": id, "name": format!("pet {id}"), "query": query}))
        }
        ("POST", "/pets") => {
            let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            json_reply(StatusCode::CREATED, json!({"created": parsed, "id": 42}))
        }
        ("GET", "/flaky") if hit == 1 => {
            (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")], "busy").into_response()
        }
        ("GET", "/flaky") => json_reply(StatusCode::OK, json!({"ok": true, "hits": hit})),
        ("POST", "/flaky-post") => (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "0")], "busy").into_response(),
        ("POST", "/flaky-idem") if hit == 1 => {
            (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "0")], "busy").into_response()
        }
        ("POST", "/flaky-idem") => json_reply(StatusCode::CREATED, json!({"done": true})),
        ("GET", "/missing") => {
            (StatusCode::NOT_FOUND, format!("no such thing here. {}", "detail ".repeat(400))).into_response()
        }
        ("GET", "/bad-shape") => json_reply(StatusCode::OK, json!({"n": "not a number"})),
        ("GET", "/text") => {
            (StatusCode::OK, [("content-type", "text/plain")], Bytes::from_static(b"plain words")).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "unknown route").into_response(),
    }
}

fn skills_yaml(base: &str) -> String {
    format!(
        r#"skills:
  api.get_pet:
    description: One pet by id.
    http:
      method: GET
      url: "{base}/pets/{{{{ input.id }}}}"
      query: {{verbose: "{{{{ input.verbose }}}}", absent: "{{{{ input.nothing }}}}", tag: "{{{{ input.tags }}}}"}}
      headers: {{X-API-Key: "${{PETS_TEST_KEY}}", X-Run: "{{{{ context.run_id }}}}"}}
    input_schema: {{type: object, properties: {{id: {{type: string}}}}, required: [id]}}
    output_schema: {{type: object, required: [id, name]}}
  api.add_pet:
    http:
      method: POST
      url: "{base}/pets"
      body: {{name: "{{{{ input.name }}}}", tags: "{{{{ input.tags }}}}"}}
  api.flaky:
    http: {{method: GET, url: "{base}/flaky", retries: 2}}
  api.flaky_post:
    http: {{method: POST, url: "{base}/flaky-post", retries: 3}}
  api.flaky_idem:
    http: {{method: POST, url: "{base}/flaky-idem", idempotent: true}}
  api.missing:
    http: {{method: GET, url: "{base}/missing"}}
  api.bad_shape:
    http: {{method: GET, url: "{base}/bad-shape"}}
    output_schema: {{type: object, properties: {{n: {{type: integer}}}}}}
  api.text:
    http: {{method: GET, url: "{base}/text"}}
"#
    )
}

const STEPS: &str = r#"version: "0.1"
name: http_demo
steps:
  - name: get
    agent: api.get_pet
    input: {id: "a b/c", verbose: true, tags: [x, y]}
  - name: add
    agent: api.add_pet
    input: {name: "{{ steps.get.name }}", tags: [x, y]}
  - name: flaky
    agent: api.flaky
    input: {}
  - name: text
    agent: api.text
"#;

fn one_step(skill: &str) -> String {
    format!("version: \"0.1\"\nname: one\nsteps:\n  - name: s\n    agent: {skill}\n    input: {{}}\n")
}

fn run_with_key(dir: &Path, args: &[&str]) -> std::process::Output {
    cmd(dir, args).env("PETS_TEST_KEY", SECRET).output().unwrap()
}

/// Every file under `dir` (the state database, its WAL, blobs) as text.
fn all_bytes_under(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out
}

#[test]
fn http_skills_run_as_steps_and_keep_secrets_out_of_everything() {
    let api = Api::start();
    let dir = project(&[("skills.yaml", &skills_yaml(&api.base)), ("pipeline.yaml", STEPS)]);
    let o = flujo(dir.path(), &["validate", "pipeline.yaml"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));

    let started = std::time::Instant::now();
    let o = run_with_key(dir.path(), &["run", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    let steps = v["step_history"].as_array().unwrap();
    // GET: the path value percent-encoded, the query rendered (a list repeats, an undefined value is left out)
    assert_eq!(steps[0]["output"]["id"], "a b/c");
    assert_eq!(steps[0]["output"]["name"], "pet a b/c");
    let get = &api.seen("/pets/a%20b%2Fc")[0];
    assert_eq!(get.query, "verbose=true&tag=x&tag=y", "{get:?}");
    assert_eq!(get.headers["x-api-key"], SECRET);
    assert_eq!(get.headers["x-run"], v["run_id"].as_str().unwrap(), "templates see the context");
    assert_eq!(steps[0]["metadata"]["http_status"], 200);
    // POST: a JSON mapping body whose leaves are templates (types kept)
    let post = &api.seen("/pets")[0];
    assert_eq!(serde_json::from_str::<Value>(&post.body).unwrap(), json!({"name": "pet a b/c", "tags": ["x", "y"]}));
    assert_eq!(post.headers["content-type"], "application/json");
    assert!(!post.headers.contains_key("idempotency-key"), "no key unless `idempotent: true`");
    assert_eq!(steps[1]["output"]["id"], 42);
    // a 503 with Retry-After: 1 is waited out and retried (GET is idempotent)
    assert_eq!(api.hits("/flaky"), 2);
    assert_eq!(steps[2]["output"], json!({"ok": true, "hits": 2}));
    assert_eq!(steps[2]["metadata"]["http_attempts"], 2);
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "Retry-After was honoured");
    // a text response is the output as a string
    assert_eq!(v["output"], "plain words");

    // the key never reaches the result, stderr, `lens show`, or the state database
    assert!(!stdout(&o).contains(SECRET) && !stderr(&o).contains(SECRET));
    let run_id = v["run_id"].as_str().unwrap();
    let shown = flujo(dir.path(), &["lens", "show", run_id, "--json", "--verbose"]);
    assert_eq!(code(&shown), 0, "{}", stderr(&shown));
    assert!(stdout(&shown).contains("pet a b/c") && !stdout(&shown).contains(SECRET), "{}", stdout(&shown));
    let trace = flujo(dir.path(), &["lens", "trace", run_id, "--json"]);
    assert!(!stdout(&trace).contains(SECRET));
    let stored = all_bytes_under(&dir.path().join(".flujo"));
    assert!(stored.contains("pet a b/c"), "the journal is where we look");
    assert!(!stored.contains(SECRET), "the key is in the state database");

    // a wrong key: the server's echo of it is masked in the error
    let o = cmd(dir.path(), &["run", "--json"]).env("PETS_TEST_KEY", "sk-wrong-key-0000").output().unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let msg = json_out(&o)["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("returned HTTP 401") && msg.contains("bad key") && msg.contains("***"), "{msg}");
    assert!(!stdout(&o).contains("sk-wrong-key-0000") && !stderr(&o).contains("sk-wrong-key-0000"), "{msg}");
    // no key at all: a clear error before anything is sent
    let before = api.hits("/pets/a%20b%2Fc");
    let o = flujo(dir.path(), &["run", "--json"]);
    assert_eq!(code(&o), 1);
    let msg = json_out(&o)["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("environment variable PETS_TEST_KEY") && msg.contains("not set"), "{msg}");
    assert_eq!(api.hits("/pets/a%20b%2Fc"), before);
    drop(api.rt);
}

#[test]
fn retries_only_when_safe_and_failures_are_clear() {
    let api = Api::start();
    let dir = project(&[
        ("skills.yaml", &skills_yaml(&api.base)),
        ("post.yaml", &one_step("api.flaky_post")),
        ("idem.yaml", &one_step("api.flaky_idem")),
        ("missing.yaml", &one_step("api.missing")),
        ("shape.yaml", &one_step("api.bad_shape")),
        (
            "schema.yaml",
            "version: \"0.1\"\nname: s\nsteps:\n  - name: s\n    agent: api.get_pet\n    input: {idd: 1}\n",
        ),
    ]);
    // a POST that fails with 503 is not sent again (it may have taken effect), however many retries
    let o = run_with_key(dir.path(), &["run", "post.yaml", "--json"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(v["error"]["kind"], "step_failed");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("POST {}/flaky-post returned HTTP 503", api.base)), "{msg}");
    assert!(msg.contains("not retried") && msg.contains("idempotent: true"), "{msg}");
    assert_eq!(api.hits("/flaky-post"), 1, "the step's retries do not send it again either");

    // `idempotent: true`: an Idempotency-Key (the same on both requests) and a retry
    let o = run_with_key(dir.path(), &["run", "idem.yaml", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["output"], json!({"done": true}));
    let seen = api.seen("/flaky-idem");
    assert_eq!(seen.len(), 2);
    let key = &seen[0].headers["idempotency-key"];
    assert!(!key.is_empty() && seen[1].headers["idempotency-key"] == *key, "{seen:?}");
    assert!(key.contains(json_out(&o)["run_id"].as_str().unwrap()), "derived from the run: {key}");
    // as a POST without a declared body, it sends the input as JSON
    assert_eq!(seen[0].body, "{}");

    // 404: method, URL, status and the start of the body, bounded
    let o = run_with_key(dir.path(), &["run", "missing.yaml", "--json"]);
    assert_eq!(code(&o), 1);
    let msg = json_out(&o)["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains(&format!("GET {}/missing returned HTTP 404 Not Found: no such thing here.", api.base)),
        "{msg}"
    );
    assert!(msg.len() < 800, "the body excerpt is bounded: {} bytes", msg.len());
    assert_eq!(api.hits("/missing"), 1, "a 404 is not retried");

    // a response that breaks output_schema
    let o = run_with_key(dir.path(), &["run", "shape.yaml", "--json"]);
    assert_eq!(code(&o), 1);
    let msg = json_out(&o)["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("does not match output_schema") && msg.contains("not a number"), "{msg}");

    // an input that breaks input_schema: nothing is sent
    let before = api.state.lock().unwrap().seen.len();
    let o = run_with_key(dir.path(), &["run", "schema.yaml", "--json"]);
    assert_eq!(code(&o), 1);
    let msg = json_out(&o)["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("input does not match input_schema") && msg.contains("id"), "{msg}");
    assert_eq!(api.state.lock().unwrap().seen.len(), before);
}

#[test]
fn bad_http_declarations_are_validation_errors() {
    let dir = project(&[
        (
            "skills.yaml",
            "skills:\n  a.x:\n    http:\n      method: GTE\n      url: \"http://x/{{ input.id\"\n      retires: 2\n      headers: {X-N: 5}\n      timeout_s: -1\n",
        ),
        ("pipeline.yaml", &one_step("a.x")),
    ]);
    let o = flujo(dir.path(), &["validate", "--format", "json"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let text = stdout(&o);
    for part in [
        "BP-TYPE",
        "not an HTTP method",
        "did you mean `GET`?",
        "TEMPLATE",
        "BP-FIELD-TYPO",
        "did you mean `retries`?",
        "`http.headers.X-N` of skill `a.x` must be a string",
        "BP-RANGE",
    ] {
        assert!(text.contains(part), "{part} missing from {text}");
    }
    let o = flujo(dir.path(), &["run", "--json"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
}

/// The API's OpenAPI document: three operations under two tags, a `$ref` cycle, an API key in a header.
fn openapi_doc(base: &str) -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Pet Store", "version": "1.0"},
        "servers": [{"url": base}],
        "security": [{"api_key": []}],
        "paths": {
            "/pets/{petId}": {
                "get": {
                    "operationId": "getPet",
                    "tags": ["pets"],
                    "summary": "Find a pet by id",
                    "parameters": [
                        {"name": "petId", "in": "path", "required": true, "schema": {"type": "string"}},
                        {"name": "verbose", "in": "query", "schema": {"type": "boolean"}}
                    ],
                    "responses": {
                        "200": {"description": "the pet", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}},
                        "404": {"description": "no such pet"}
                    }
                }
            },
            "/pets": {
                "post": {
                    "operationId": "addPet",
                    "tags": ["pets"],
                    "summary": "Add a pet",
                    "security": [],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewPet"}}}},
                    "responses": {"201": {"description": "created", "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"id": {"type": "integer"}, "created": {"$ref": "#/components/schemas/NewPet"}}
                    }}}}}
                }
            },
            "/flaky": {
                "get": {"operationId": "flaky", "tags": ["ops"], "responses": {"200": {"description": "ok"}}}
            }
        },
        "components": {
            "securitySchemes": {"api_key": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": {
                "Pet": {
                    "type": "object",
                    "required": ["id", "name"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "parent": {"$ref": "#/components/schemas/Pet"},
                        "friends": {"type": "array", "items": {"$ref": "#/components/schemas/Pet"}}
                    }
                },
                "NewPet": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
            }
        }
    })
}

const HAND_WRITTEN: &str = "# my own skills\nskills:\n  # shouts its input\n  mine.shout:\n    command: [sh, -c, \"tr a-z A-Z\"]   # no JSON needed\n    description: Shouts.\n";

const AGENT: &str = r#"version: "0.1"
name: pet_clerk
agents:
  clerk:
    model: "openai:gpt-test"
    system_prompt: "Use the pet tools."
    tools: [petstore.getPet, petstore.addPet]
    max_turns: 4
    max_retries: 0
steps:
  - name: ask
    uses: agents.clerk
    max_retries: 0
"#;

#[test]
fn openapi_import_then_an_agent_calls_two_operations() {
    let api = Api::start();
    let env = fake_project(&[("skills.yaml", HAND_WRITTEN), ("pipeline.yaml", AGENT)], "");
    let dir = env.dir.path();
    std::fs::write(dir.join("openapi.json"), serde_json::to_string_pretty(&openapi_doc(&api.base)).unwrap()).unwrap();

    let o = flujo(dir, &["dev", "import-openapi", "openapi.json", "--prefix", "petstore."]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "petstore.getPet\tGET /pets/{petId}\npetstore.addPet\tPOST /pets\npetstore.flaky\tGET /flaky\n"
    );
    assert!(stderr(&o).contains("note: petstore.getPet: schema `Pet` is recursive"), "{}", stderr(&o));
    let written = std::fs::read_to_string(dir.join("skills.yaml")).unwrap();
    assert!(written.starts_with(HAND_WRITTEN), "the hand-written entry is kept byte for byte:\n{written}");
    for part in [
        "  petstore.getPet:\n    # GET /pets/{petId}\n",
        "x-generated-by: flujo import-openapi",
        "x-openapi-source: openapi.json",
        "X-API-Key: \"${PETSTORE_API_KEY}\"",
        &format!("url: \"{}/pets/{{{{ input.petId }}}}\"", api.base),
        "verbose: \"{{ input.verbose }}\"",
        "body: \"{{ input.body }}\"",
        "recursive `Pet`",
    ] {
        assert!(written.contains(part), "{part:?} missing from:\n{written}");
    }
    // addPet declares `security: []`: no key header
    let add = written.split("petstore.addPet:").nth(1).unwrap().split("petstore.flaky:").next().unwrap();
    assert!(!add.contains("X-API-Key"), "{add}");
    // the catalog validates, and so does a pipeline using it
    let o = flujo(dir, &["validate", "pipeline.yaml"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));

    // again, only the `pets` tag: generated entries are replaced (the untagged one is gone), the hand-written
    // one stays as written
    let o = flujo(
        dir,
        &["dev", "import-openapi", "openapi.json", "--prefix", "petstore.", "--tag", "pets", "-o", "skills.yaml"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("removed, no longer imported: petstore.flaky"), "{}", stderr(&o));
    let again = std::fs::read_to_string(dir.join("skills.yaml")).unwrap();
    assert!(again.starts_with(HAND_WRITTEN), "{again}");
    assert_eq!(again.matches("petstore.getPet:").count(), 1, "{again}");
    assert!(!again.contains("petstore.flaky"), "{again}");
    // the same import twice writes the same file
    let o = flujo(dir, &["dev", "import-openapi", "openapi.json", "--prefix", "petstore.", "--tag", "pets"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(dir.join("skills.yaml")).unwrap(), again);
    // the hand-written command skill still works
    std::fs::write(dir.join("shout.yaml"), "name: s\nsteps:\n  - name: s\n    agent: mine.shout\n").unwrap();
    let o = flujo(dir, &["run", "shout.yaml", "--input-json", "\"hi\"", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["output"], "HI");

    // the agent calls two imported operations as tools against the live server
    env.fake.push_reply(ScriptedReply::ToolCall {
        name: "petstore_getPet".into(),
        arguments: json!({"petId": "7", "verbose": true}),
    });
    env.fake.push_reply(ScriptedReply::ToolCall {
        name: "petstore_addPet".into(),
        arguments: json!({"body": {"name": "Rex"}}),
    });
    env.fake.push_reply(ScriptedReply::Text("Pet 7 found; Rex added.".into()));
    let o =
        cmd(dir, &["run", "-i", "find pet 7 and add Rex", "--json"]).env("PETSTORE_API_KEY", SECRET).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(v["output"], "Pet 7 found; Rex added.");
    assert_eq!(v["step_history"][0]["metadata"]["tool_calls"], 2);
    let get = &api.seen("/pets/7")[0];
    assert_eq!((get.method.as_str(), get.query.as_str()), ("GET", "verbose=true"));
    assert_eq!(get.headers["x-api-key"], SECRET);
    let add = api.seen("/pets").into_iter().find(|s| s.body.contains("Rex")).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&add.body).unwrap(), json!({"name": "Rex"}));
    assert!(!add.headers.contains_key("x-api-key"));
    let calls = env.fake.calls();
    assert_eq!(calls.len(), 3);
    let offered = calls[0].body.to_string();
    assert!(
        offered.contains("petstore_getPet") && offered.contains("Find a pet by id") && offered.contains("petId"),
        "{offered}"
    );
    assert!(calls[1].body.to_string().contains("pet 7"), "the GET's result goes back to the model: {}", calls[1].body);
    assert!(calls[2].body.to_string().contains("created"), "the POST's result goes back: {}", calls[2].body);
    assert!(!stdout(&o).contains(SECRET) && !stderr(&o).contains(SECRET));
    assert!(!all_bytes_under(&dir.join(".flujo")).contains(SECRET));
    drop(api.rt);
}

#[test]
fn import_refuses_what_it_cannot_read() {
    let dir = project(&[
        ("swagger.json", r#"{"swagger": "2.0", "info": {"title": "old"}, "paths": {}}"#),
        ("broken.yaml", "openapi: 3.0.0\npaths: [\n"),
        ("api.yaml", "openapi: 3.0.3\ninfo: {title: t}\nservers: [{url: \"https://api.example.com\"}]\npaths:\n  /a:\n    get:\n      operationId: listA\n      responses:\n        200: {description: ok}\n"),
        ("skills.yaml", "skills: [not, a, mapping]\n"),
    ]);
    let o = flujo(dir.path(), &["dev", "import-openapi", "swagger.json", "-o", "out.yaml"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("Swagger 2.0") && stderr(&o).contains("validation_failed"), "{}", stderr(&o));
    let o = flujo(dir.path(), &["dev", "import-openapi", "broken.yaml", "-o", "out.yaml"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("not valid YAML"), "{}", stderr(&o));
    let o = flujo(dir.path(), &["dev", "import-openapi", "nope.json"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let o = flujo(dir.path(), &["dev", "import-openapi", "api.yaml", "--operation", "listB", "-o", "out.yaml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("did you mean `listA`?"), "{}", stderr(&o));
    assert!(!dir.path().join("out.yaml").exists());
    // a catalog that is not a mapping is not overwritten
    let o = flujo(dir.path(), &["dev", "import-openapi", "api.yaml"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(dir.path().join("skills.yaml")).unwrap(), "skills: [not, a, mapping]\n");
    // YAML with unquoted status codes, into a folder given with -o
    std::fs::create_dir(dir.path().join("skills")).unwrap();
    let o = flujo(dir.path(), &["dev", "import-openapi", "api.yaml", "-o", "skills/"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = std::fs::read_to_string(dir.path().join("skills/skills.yaml")).unwrap();
    assert!(text.contains("listA:") && text.contains("x-openapi-source: \"../api.yaml\""), "{text}");
    assert!(text.contains("url: \"https://api.example.com/a\""), "{text}");
}
