//! The `docker` sandbox against a fake Docker Engine API served on 127.0.0.1 (create, archive upload, start,
//! wait, logs, archive download, kill, remove), and against a real engine when one is reachable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use flujo_core::{ExecRequest, Limits, Protection, Sandbox, SandboxError, SandboxFile};
use flujo_sandbox::docker::{DockerSandbox, DockerSettings};
use serde_json::{json, Value};

/// What the fake engine saw and how it behaves.
#[derive(Default)]
struct Engine {
    calls: Vec<String>,
    create: Option<Value>,
    uploaded: Vec<u8>,
    /// Never answer the wait (the code "runs forever").
    hang: bool,
    warnings: Vec<String>,
    exit: i64,
}

type Shared = Arc<Mutex<Engine>>;

/// One frame of Docker's multiplexed log stream.
fn frame(stream: u8, text: &str) -> Vec<u8> {
    let mut f = vec![stream, 0, 0, 0];
    f.extend_from_slice(&(text.len() as u32).to_be_bytes());
    f.extend_from_slice(text.as_bytes());
    f
}

/// The archive of `/sandbox/work` after the "run": the uploaded input unchanged plus `out.txt`.
fn work_archive() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], kind: tar::EntryType| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, data).unwrap();
    };
    add("work/", b"", tar::EntryType::Directory);
    add("work/in.txt", b"input", tar::EntryType::Regular);
    add("work/out.txt", b"result", tar::EntryType::Regular);
    b.into_inner().unwrap()
}

async fn handle(engine: Shared, method: Method, uri: Uri, body: Bytes) -> Response {
    // strip the API version prefix (`/v1.52/containers/...`)
    let path = match uri.path().split('/').nth(1) {
        Some(v) if v.starts_with('v') && v[1..].starts_with(|c: char| c.is_ascii_digit()) => {
            uri.path()[v.len() + 1..].to_owned()
        }
        _ => uri.path().to_owned(),
    };
    let call = format!("{method} {path}");
    let hang = {
        let mut e = engine.lock().unwrap();
        e.calls.push(call.clone());
        e.hang
    };
    match (method.as_str(), path.as_str()) {
        ("POST", "/containers/create") => {
            let mut e = engine.lock().unwrap();
            e.create = serde_json::from_slice(&body).ok();
            (StatusCode::CREATED, axum::Json(json!({"Id": "c1", "Warnings": e.warnings}))).into_response()
        }
        ("PUT", "/containers/c1/archive") => {
            engine.lock().unwrap().uploaded = body.to_vec();
            StatusCode::OK.into_response()
        }
        ("POST", "/containers/c1/start") | ("POST", "/containers/c1/kill") | ("DELETE", "/containers/c1") => {
            StatusCode::NO_CONTENT.into_response()
        }
        ("POST", "/containers/c1/wait") => {
            if hang {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            }
            let exit = engine.lock().unwrap().exit;
            axum::Json(json!({"StatusCode": exit})).into_response()
        }
        ("GET", "/containers/c1/logs") => {
            let mut bytes = frame(1, "hello from the container\n");
            bytes.extend(frame(2, "a warning\n"));
            Response::builder()
                .header("content-type", "application/vnd.docker.multiplexed-stream")
                .body(Body::from(bytes))
                .unwrap()
        }
        ("GET", "/containers/c1/archive") => {
            Response::builder().header("content-type", "application/x-tar").body(Body::from(work_archive())).unwrap()
        }
        _ => (StatusCode::NOT_FOUND, axum::Json(json!({"message": format!("no route {call}")}))).into_response(),
    }
}

async fn fake_engine(engine: Shared) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(move |method: Method, uri: Uri, body: Bytes| handle(engine.clone(), method, uri, body));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn sandbox(url: &str) -> DockerSandbox {
    let mut s = DockerSettings::default();
    s.host = Some(url.to_owned());
    s.images.insert("node".into(), "node:22-slim".into());
    DockerSandbox::new(s).unwrap()
}

#[tokio::test]
async fn a_run_creates_a_locked_down_container_copies_files_and_removes_it() {
    let engine = Shared::default();
    engine.lock().unwrap().exit = 3;
    let url = fake_engine(engine.clone()).await;
    let mut limits = Limits::default().with_wall_s(5.0);
    limits.memory_bytes = 256 << 20;
    limits.processes = 16;
    let req = ExecRequest::new("python", "print('hi')")
        .with_files(vec![SandboxFile::new("in.txt", b"input".to_vec())])
        .with_limits(limits);
    let r = sandbox(&url).exec(req).await.unwrap();
    assert_eq!(
        (r.stdout.as_str(), r.stderr.as_str(), r.exit_code, r.timed_out),
        ("hello from the container\n", "a warning\n", 3, false)
    );
    assert_eq!(
        r.artifacts,
        [SandboxFile::new("out.txt", b"result".to_vec())],
        "the unchanged input is not an artifact"
    );

    let e = engine.lock().unwrap();
    let calls: Vec<&str> = e.calls.iter().map(String::as_str).collect();
    assert_eq!(
        calls,
        [
            "POST /containers/create",
            "PUT /containers/c1/archive",
            "POST /containers/c1/start",
            "POST /containers/c1/wait",
            "GET /containers/c1/logs",
            "GET /containers/c1/archive",
            "DELETE /containers/c1",
        ]
    );
    let create = e.create.clone().unwrap();
    assert_eq!(create["Image"], json!("python:3.12-slim"));
    assert_eq!(create["User"], json!("65534:65534"));
    assert_eq!(create["Cmd"], json!(["python3", "-B", "/sandbox/code.py"]));
    assert_eq!(create["NetworkDisabled"], json!(true));
    let host = &create["HostConfig"];
    assert_eq!(host["NetworkMode"], json!("none"));
    assert_eq!(host["Memory"], json!(256 << 20));
    assert_eq!(host["MemorySwap"], json!(256 << 20));
    assert_eq!(host["PidsLimit"], json!(16));
    assert_eq!(host["CapDrop"], json!(["ALL"]));
    assert_eq!(host["SecurityOpt"], json!(["no-new-privileges"]));
    assert!(host["Ulimits"].as_array().unwrap().iter().any(|u| u["Name"] == json!("cpu") && u["Hard"] == json!(6)));
    // the upload is a tar with the code and the input file
    let mut tar = tar::Archive::new(e.uploaded.as_slice());
    let names: Vec<String> = tar.entries().unwrap().map(|x| x.unwrap().path().unwrap().display().to_string()).collect();
    assert!(
        names.contains(&"sandbox/code.py".to_owned()) && names.contains(&"sandbox/work/in.txt".to_owned()),
        "{names:?}"
    );
}

#[tokio::test]
async fn a_timeout_kills_and_removes_the_container() {
    let engine = Shared::default();
    engine.lock().unwrap().hang = true;
    let url = fake_engine(engine.clone()).await;
    let t = std::time::Instant::now();
    let r = sandbox(&url)
        .exec(ExecRequest::new("sh", "sleep 1000").with_limits(Limits::default().with_wall_s(0.5)))
        .await
        .unwrap();
    assert!(r.timed_out && r.exit_code == 137, "{r:?}");
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    let calls = engine.lock().unwrap().calls.clone();
    assert!(calls.contains(&"POST /containers/c1/kill".to_owned()), "{calls:?}");
    assert_eq!(calls.last().map(String::as_str), Some("DELETE /containers/c1"));
}

#[tokio::test]
async fn an_engine_warning_about_a_required_limit_refuses() {
    let engine = Shared::default();
    engine.lock().unwrap().warnings = vec![
        "Your kernel does not support memory limit capabilities or the cgroup is not mounted. Limitation discarded."
            .into(),
    ];
    let url = fake_engine(engine.clone()).await;
    let e = sandbox(&url).exec(ExecRequest::new("python", "print(1)")).await.unwrap_err();
    assert!(matches!(e, SandboxError::Unavailable { protection: Protection::Memory, .. }), "{e}");
    // the container was never started, and is removed
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let calls = engine.lock().unwrap().calls.clone();
    assert!(!calls.iter().any(|c| c.ends_with("/start")), "{calls:?}");
    assert!(calls.contains(&"DELETE /containers/c1".to_owned()), "{calls:?}");
}

#[tokio::test]
async fn languages_images_and_an_unreachable_engine() {
    let engine = Shared::default();
    let url = fake_engine(engine.clone()).await;
    sandbox(&url).exec(ExecRequest::new("node", "console.log(1)")).await.unwrap();
    assert_eq!(engine.lock().unwrap().create.as_ref().unwrap()["Image"], json!("node:22-slim"));
    let e = sandbox(&url).exec(ExecRequest::new("cobol", "x")).await.unwrap_err();
    assert!(matches!(e, SandboxError::UnsupportedLanguage { .. }), "{e}");
    let e = sandbox("http://127.0.0.1:9").exec(ExecRequest::new("python", "1")).await.unwrap_err();
    assert!(e.retryable() && e.to_string().contains("docker"), "{e}");
    assert!(matches!(
        DockerSandbox::new({
            let mut s = DockerSettings::default();
            s.host = Some("ftp://x".into());
            s
        }),
        Err(SandboxError::InvalidRequest(_))
    ));
}

/// A real engine, where one is reachable (`DOCKER_HOST` or the local socket) and has the image; otherwise
/// the sandbox must fail clearly (retryable: the engine may come back).
#[tokio::test]
async fn a_real_engine_when_reachable() {
    let mut s = DockerSettings::default();
    s.host = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
    let sb = DockerSandbox::new(s).unwrap();
    match sb.exec(ExecRequest::new("python", "print(6 * 7)")).await {
        Ok(r) => assert_eq!(r.stdout, "42\n", "{r:?}"),
        Err(e) => {
            eprintln!("no usable Docker engine here: {e}");
            assert!(matches!(e, SandboxError::Backend { .. }), "{e}");
        }
    }
}
