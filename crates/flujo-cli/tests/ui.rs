//! End-to-end test of the web UI in headless Chromium: a real `flujo serve` process on a SQLite state file,
//! a real browser driven through chromedriver (WebDriver, the `fantoccini` crate). A run that pauses at a
//! `hitl` step is started from the runs page's form, shows up in the runs list and the approvals inbox, is
//! answered through the form generated from the pause's `input_schema` (a wrong answer first: the API's 422
//! message appears beside the form), and the run page then shows it completed with its step tree. A PNG
//! screenshot of each page is saved under `target/ui-screenshots/`.
//!
//! Chromium and chromedriver come from Debian (`chromium`, `chromium-driver`; scripts/test.sh installs
//! them). Without them the test says it skipped, unless `CI` is set: then it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Waits of the test: generous, so a loaded CI machine does not make it flaky.
const PATIENCE: Duration = Duration::from_secs(60);

const REVIEW: &str = r#"name: review
description: "Doubles the input, asks a human, publishes with their comment."
steps:
  - name: draft
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step * 2"}}
  - kind: hitl
    name: approve
    message: "Publish draft {{ previous_step }}?"
    input_schema:
      type: object
      properties:
        approved: {type: boolean, description: "Tick to publish."}
        comment: {type: string, minLength: 3, description: "Why (three characters at least)."}
      required: [approved, comment]
  - name: publish
    agent: {id: flujo.builtins.transform, params: {expr: "{'published': previous_step.approved, 'note': previous_step.comment, 'draft': steps.draft}"}}
"#;

/// A child process killed (with its whole process group) and reaped when dropped.
struct Killed {
    child: Child,
    group: bool,
}

impl Drop for Killed {
    fn drop(&mut self) {
        if self.group {
            // chromedriver leads its own process group: Chromium and its helpers go with it.
            if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether Chromium and chromedriver are installed; when they are not, says so (and fails under CI).
fn browser_present() -> bool {
    let missing: Vec<&str> = [CHROMEDRIVER, CHROMIUM].into_iter().filter(|p| !Path::new(p).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    let what = format!(
        "{} not installed (Debian packages chromium and chromium-driver; scripts/test.sh installs them)",
        missing.join(" and ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and the UI test cannot run: {what}");
    }
    println!("skipped: the web UI's browser test: {what}");
    eprintln!("skipped: the web UI's browser test: {what}");
    false
}

/// Polls `check` every 200 ms until it gives a value, or fails the test after `PATIENCE` with `what` and
/// the last state seen.
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() > PATIENCE => panic!("timed out waiting for {what}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The text of the first element matching `css`, or an error naming it.
async fn text_of(c: &Client, css: &str) -> Result<String, String> {
    let el = c.find(Locator::Css(css)).await.map_err(|e| format!("{css}: {e}"))?;
    el.text().await.map_err(|e| format!("{css}: {e}"))
}

/// Waits until the first element matching `css` has a text containing `needle`; returns the text.
async fn wait_text(c: &Client, css: &str, needle: &str) -> String {
    until(&format!("{css} to contain {needle:?}"), || async {
        let t = text_of(c, css).await?;
        if t.contains(needle) {
            Ok(t)
        } else {
            Err(format!("text {t:?}"))
        }
    })
    .await
}

/// The screenshots folder, `target/ui-screenshots`.
fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("..").join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves a screenshot of the page as `NAME.png` and checks it is a non-empty PNG.
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}: not a PNG ({} bytes)", png.len());
    let path = screenshots_dir().join(format!("{name}.png"));
    std::fs::write(&path, &png).unwrap();
    let back = std::fs::read(&path).unwrap();
    assert_eq!(back.len(), png.len(), "{}", path.display());
}

/// `flujo serve` on a free port over `state`, serving the pipelines of `pipelines`; returns it and its base URL
/// once `/healthz` answers.
async fn serve(dir: &Path, state: &str, pipelines: &Path) -> (Killed, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = common::cmd(dir, &["serve", "--addr", &addr, "--state", state, "--pipelines"])
        .arg(pipelines)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("flujo serve starts");
    let mut server = Killed { child, group: false };
    let base = format!("http://{addr}");
    let http = flujo_http::client_builder().build().unwrap();
    let start = Instant::now();
    loop {
        if let Ok(res) = http.get(format!("{base}/healthz")).send().await {
            if res.status().is_success() {
                break;
            }
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "flujo serve exited ({status}): {}",
                std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
            );
        }
        assert!(start.elapsed() < PATIENCE, "flujo serve did not answer /healthz");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (server, base)
}

/// chromedriver on a free port (in its own process group) and a WebDriver session of headless Chromium with
/// a fresh profile in `profile`.
async fn browser(profile: &Path, log: &Path) -> (Killed, Client) {
    use std::os::unix::process::CommandExt;
    let port = free_port();
    let log_file = std::fs::File::create(log).unwrap();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .expect("chromedriver starts");
    let driver = Killed { child, group: true };
    let url = format!("http://127.0.0.1:{port}");
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1366,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let Value::Object(caps) = caps else { unreachable!("a JSON object") };
    let start = Instant::now();
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
            Ok(c) => break c,
            Err(e) if start.elapsed() > PATIENCE => {
                panic!("no WebDriver session: {e}\n{}", std::fs::read_to_string(log).unwrap_or_default())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    (driver, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_is_answered_in_the_approvals_inbox_and_completes() {
    if !browser_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(pipelines.join("review.yaml"), REVIEW).unwrap();
    let state = format!("sqlite:///{}", dir.path().join("state.db").display());
    let (_server, base) = serve(dir.path(), &state, &pipelines).await;
    let (_driver, c) = browser(&dir.path().join("profile"), &dir.path().join("chromedriver.log")).await;

    let result = walk_through(&c, &base).await;
    let closed = c.close().await;
    if let Err(msg) = result {
        panic!(
            "{msg}\nflujo serve log:\n{}",
            std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
        );
    }
    closed.unwrap();
}

/// The browser part; returns an error message (with the page's text) instead of panicking halfway, so the
/// caller can close the session and show the server's log.
async fn walk_through(c: &Client, base: &str) -> Result<(), String> {
    let run_id = start_and_approve(c, base).await?;
    // The API agrees: the answer reached the step after the pause.
    let http = flujo_http::client_builder().build().unwrap();
    let run: Value = http.get(format!("{base}/api/runs/{run_id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["output"], json!({"published": true, "note": "ship it", "draft": 42}), "{run}");

    // Pipelines: the list, then the blueprint and its graph.
    c.goto(&format!("{base}/#/pipelines")).await.map_err(|e| e.to_string())?;
    wait_text(c, "#pipelines", "review").await;
    c.find(Locator::Css("#pipelines a[href='#/pipelines/review']"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    let graph = wait_text(c, "#pipeline-graph", "approve").await;
    for step in ["draft", "publish", "hitl"] {
        assert!(graph.contains(step), "graph lacks {step}: {graph}");
    }
    wait_text(c, "#pipeline-source", "kind: hitl").await;
    screenshot(c, "pipelines").await;
    Ok(())
}

async fn start_and_approve(c: &Client, base: &str) -> Result<String, String> {
    let e = |e: fantoccini::error::CmdError| e.to_string();
    // Runs page: start a run from the form.
    c.goto(&format!("{base}/#/runs")).await.map_err(e)?;
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("#start-run > summary"))
        .await
        .map_err(e)?
        .click()
        .await
        .map_err(e)?;
    let select = until("the pipeline choice in the start form", || async {
        let s = c.find(Locator::Css("#start-pipeline")).await.map_err(|e| e.to_string())?;
        s.find(Locator::Css("option[value='review']")).await.map_err(|e| e.to_string())?;
        Ok(s)
    })
    .await;
    select.select_by_value("review").await.map_err(e)?;
    c.find(Locator::Css("#start-input")).await.map_err(e)?.send_keys("21").await.map_err(e)?;
    c.find(Locator::Css("#start-submit")).await.map_err(e)?.click().await.map_err(e)?;

    // The run page opens; its event stream brings it to `paused`.
    let run_id = until("the run page after starting", || async {
        let url = c.current_url().await.map_err(|e| e.to_string())?;
        match url.fragment().and_then(|f| f.strip_prefix("/runs/")) {
            Some(id) if !id.is_empty() => Ok(id.to_owned()),
            _ => Err(url.to_string()),
        }
    })
    .await;
    wait_text(c, "#run-status", "paused").await;
    wait_text(c, "#step-tree", "draft").await;

    // Runs list: the run is there, paused, with one pending pause.
    c.goto(&format!("{base}/#/runs")).await.map_err(e)?;
    let row = wait_text(c, &format!("tr[data-run='{run_id}']"), "paused").await;
    assert!(row.contains("review"), "{row}");
    screenshot(c, "runs").await;

    // Approvals: the pause with a form generated from its schema.
    c.goto(&format!("{base}/#/approvals")).await.map_err(e)?;
    let card_css = format!("article[data-run='{run_id}']");
    let text = wait_text(c, &card_css, "Publish draft 42?").await;
    assert!(text.contains("approved") && text.contains("comment") && text.contains("Tick to publish."), "{text}");
    let card = c.find(Locator::Css(&card_css)).await.map_err(e)?;
    let approved = card.find(Locator::Css("input[type='checkbox'][name='approved']")).await.map_err(e)?;
    let comment = card.find(Locator::Css("[name='comment']")).await.map_err(e)?;
    // Every field has a label.
    for field in [&approved, &comment] {
        let id = field.attr("id").await.map_err(e)?.unwrap_or_default();
        card.find(Locator::Css(&format!("label[for='{id}']"))).await.map_err(e)?;
    }
    approved.click().await.map_err(e)?;
    // Too short a comment: the API refuses it (422) and the form shows why.
    comment.send_keys("no").await.map_err(e)?;
    card.find(Locator::Css("button[type='submit']")).await.map_err(e)?.click().await.map_err(e)?;
    let refusal = wait_text(c, &format!("{card_css} .form-error"), "422").await;
    assert!(refusal.contains("invalid_answer"), "{refusal}");
    screenshot(c, "approvals").await;
    comment.clear().await.map_err(e)?;
    comment.send_keys("ship it").await.map_err(e)?;
    card.find(Locator::Css("button[type='submit']")).await.map_err(e)?.click().await.map_err(e)?;
    wait_text(c, &card_css, "Answered").await;

    // The run page: completed, with every step in the tree and a verified journal.
    card.find(Locator::LinkText("Open the run")).await.map_err(e)?.click().await.map_err(e)?;
    wait_text(c, "#run-status", "completed").await;
    let tree = wait_text(c, "#step-tree", "publish").await;
    for step in ["draft", "approve", "publish"] {
        assert!(tree.contains(step), "step tree lacks {step}: {tree}");
    }
    wait_text(c, "#verify-result", "verified").await;
    wait_text(c, "main", "ship it").await;
    screenshot(c, "run").await;
    Ok(run_id)
}
