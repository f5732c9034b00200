//! The CLI contract under hostile use (issue 10): one JSON object on stdout for every outcome of `--json`,
//! run ids named wherever the user needs them, unknown run ids and odd files as usage errors, bounded ids and
//! inputs, quiet exits on broken pipes, tables that survive any stored value, the initial context validated,
//! and usage of unfinished runs computed from their journals. Each test runs the real binary.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn no_panic(o: &Output, what: &str) {
    let err = stderr(o);
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
    assert_ne!(code(o), 101, "{what}: {err}");
    assert!(o.status.code().is_some(), "{what} died of a signal: {:?}", o.status);
}

fn error_object(o: &Output, kind: &str, exit: i32) -> Value {
    no_panic(o, kind);
    assert_eq!(code(o), exit, "{kind}: {}", stderr(o));
    let v = json_out(o);
    for k in KEYS {
        assert!(v.get(k).is_some(), "{kind}: the object lacks {k}: {v}");
    }
    assert_eq!(v["error"]["kind"], kind, "{v}");
    assert_eq!(v["error"]["exit_code"], exit, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v
}

const QUICK: &str = "version: '0.1'\nname: quick\nsteps:\n  - name: a\n    agent: {id: flujo.builtins.transform, params: {expr: 'previous_step'}}\n  - name: b\n    agent: {id: flujo.builtins.transform, params: {expr: '2'}}\n";

const HITL: &str = "version: '0.1'\nname: ask\nsteps:\n  - kind: hitl\n    name: approve\n    message: ok?\n  - name: after\n    agent: {id: flujo.builtins.transform, params: {expr: 'previous_step'}}\n";

const SLEEPY: &str = "version: '0.1'\nname: sleepy\nsteps:\n  - name: a\n    agent: {id: flujo.builtins.transform, params: {expr: '1'}}\n  - name: nap\n    agent: {id: flujo.builtins.sleep, params: {ms: 3000}}\n  - name: b\n    agent: {id: flujo.builtins.transform, params: {expr: 'previous_step + 1'}}\n";

fn db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(".flujo/state.db")).expect("open db")
}

/// Waits until the state file holds a run, so that a signal lands while the run is in progress.
fn wait_for_run(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if dir.join(".flujo/state.db").is_file() {
            if let Ok(conn) = rusqlite::Connection::open(dir.join(".flujo/state.db")) {
                let n: i64 = conn.query_row("SELECT count(*) FROM journal", [], |r| r.get(0)).unwrap_or(0);
                if n > 0 {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the run never recorded a step");
}

fn wait_with_timeout(mut child: Child, secs: u64) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("flujo did not finish within {secs}s");
}

// ---------------------------------------------------------------------------------------------------------
// 1. `--json`: exactly one object for every outcome.

#[test]
fn json_carries_one_object_for_every_failure_of_run_and_resume() {
    let dir = project(&[
        ("ok.yaml", QUICK),
        ("invalid.yaml", "name: x\nsteps:\n  - name: a\n    kind: paralel\n"),
        ("unresolved.yaml", "name: x\nsteps:\n  - name: a\n    agent: {id: flujo.builtins.transfrom}\n"),
        ("bad/flujo.toml", "state_uri = 5\n"),
    ]);
    let d = dir.path();

    let v = error_object(&flujo(d, &["run", "invalid.yaml", "--json"]), "validation_failed", 4);
    let diags = v["error"]["diagnostics"].as_array().expect("diagnostics in the object");
    assert!(diags.iter().any(|x| x["rule"].as_str().is_some_and(|r| !r.is_empty())), "{v}");
    assert_eq!(v["status"], "error");
    assert_eq!(v["run_id"], Value::Null);

    let v = error_object(&flujo(d, &["run", "unresolved.yaml", "--json"]), "resolution_error", 3);
    assert!(!v["error"]["diagnostics"].as_array().unwrap().is_empty());

    let o = cmd(&d.join("bad"), &["run", "../ok.yaml", "--json"]).output().unwrap();
    error_object(&o, "config_error", 2);
    error_object(&flujo(d, &["run", "missing.yaml", "--json"]), "config_error", 2);
    error_object(&flujo(d, &["run", "ok.yaml", "--json", "--input-json", "{oops"]), "config_error", 2);
    error_object(&flujo(d, &["run", "ok.yaml", "--json", "--state", "nosuch://x"]), "config_error", 2);
    error_object(&flujo(d, &["run", "ok.yaml", "--json", "--no-such-flag"]), "usage_error", 2);
    error_object(&flujo(d, &["resume", "--json"]), "usage_error", 2);

    assert_eq!(code(&flujo(d, &["run", "ok.yaml"])), 0, "creates the state store");
    let v = error_object(&flujo(d, &["resume", "no-such-run", "--json", "-i", "x"]), "run_not_found", 2);
    assert!(v["error"]["message"].as_str().unwrap().contains("no-such-run"));

    // lens and validate answer errors with the same object.
    error_object(&flujo(d, &["lens", "show", "no-such-run", "--json"]), "run_not_found", 2);
    error_object(&flujo(d, &["lens", "list", "--json", "--status", "nope"]), "config_error", 2);
    error_object(&flujo(d, &["validate", "missing.yaml", "--format", "json"]), "config_error", 2);
}

#[test]
fn a_store_failure_mid_run_names_the_run_and_it_resumes_later() {
    let dir = project(&[
        (
            "p.yaml",
            "version: '0.1'\nname: locked\nsteps:\n  - name: a\n    agent: {id: mark}\n  - name: b\n    agent: {id: flujo.builtins.transform, params: {expr: '2'}}\n",
        ),
        (
            "skills.yaml",
            "skills:\n  mark:\n    command: [sh, -c, \"cat >/dev/null; touch marker; sleep 2; echo 1\"]\n    timeout_s: 30\n",
        ),
    ]);
    let d = dir.path();
    let child = cmd(d, &["run", "p.yaml", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.join("marker").exists() {
        assert!(Instant::now() < deadline, "the skill never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another process holds the database's write lock longer than the store waits for it.
    let conn = db(d);
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let o = wait_with_timeout(child, 60);
    conn.execute_batch("ROLLBACK").unwrap();
    drop(conn);
    let v = error_object(&o, "store_error", 1);
    let id = v["run_id"].as_str().expect("the generated run id is in the object").to_owned();
    assert_eq!(v["pipeline"], "locked");
    assert!(stderr(&o).contains(&id), "stderr names the run: {}", stderr(&o));
    assert!(stderr(&o).contains(&format!("flujo resume {id}")), "{}", stderr(&o));

    let o = flujo(d, &["resume", &id, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["output"], 2);

    // Locked before the run could be recorded: no run exists, and the message says so instead of offering a
    // resume.
    let conn = db(d);
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let o = flujo(d, &["run", "p.yaml", "--json"]);
    conn.execute_batch("ROLLBACK").unwrap();
    let v = error_object(&o, "store_error", 1);
    assert_eq!(v["run_id"], Value::Null, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("could not be recorded"), "{v}");
    assert!(!stderr(&o).contains("flujo resume"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------------------------
// 2. Ctrl-C names the real run id; 3. a pause under memory:// says the state is not kept.

#[test]
fn sigint_names_the_generated_run_id_and_the_run_resumes() {
    let dir = project(&[("p.yaml", SLEEPY)]);
    let d = dir.path();
    for json in [true, false] {
        let args: &[&str] = if json { &["run", "p.yaml", "--json"] } else { &["run", "p.yaml"] };
        let child = cmd(d, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        wait_for_run(d);
        std::thread::sleep(Duration::from_millis(200));
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
        let o = wait_with_timeout(child, 30);
        no_panic(&o, "sigint");
        assert_eq!(code(&o), 130, "{}", stderr(&o));
        let err = stderr(&o);
        assert!(!err.contains("RUN_ID"), "a placeholder instead of the id: {err}");
        let id: String = if json {
            let v = error_object(&o, "interrupted", 130);
            assert_eq!(v["status"], "interrupted");
            v["run_id"].as_str().unwrap().to_owned()
        } else {
            assert!(stdout(&o).is_empty(), "{}", stdout(&o));
            db(d)
                .query_row("SELECT run_id FROM runs WHERE status = 'running'", [], |r| r.get(0))
                .expect("one running run")
        };
        assert!(err.contains(&format!("flujo resume {id}")), "{err}");
        // The interrupted run is a real, resumable run.
        let o = flujo(d, &["lens", "show", &id, "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(json_out(&o)["status"], "running");
        if json {
            let o = flujo(d, &["resume", &id, "--json"]);
            assert_eq!(code(&o), 0, "{}", stderr(&o));
            assert_eq!(json_out(&o)["output"], 2);
        } else {
            db(d).execute("DELETE FROM journal WHERE run_id = ?1", [&id]).unwrap();
            db(d).execute("DELETE FROM runs WHERE run_id = ?1", [&id]).unwrap();
        }
    }
}

#[test]
fn sigint_under_memory_says_the_run_is_lost() {
    let dir = project(&[("p.yaml", SLEEPY)]);
    let d = dir.path();
    let child = cmd(d, &["run", "p.yaml", "--json", "--state", "memory://"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let o = wait_with_timeout(child, 30);
    let v = error_object(&o, "interrupted", 130);
    let id = v["run_id"].as_str().unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(id) && msg.contains("keeps no state") && !msg.contains("flujo resume"), "{msg}");
}

#[test]
fn a_pause_under_memory_does_not_offer_a_resume_that_cannot_work() {
    let dir = project(&[("p.yaml", HITL)]);
    let d = dir.path();
    let o = flujo(d, &["run", "p.yaml", "--state", "memory://"]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!all.contains("flujo resume"), "{all}");
    assert!(all.contains("keeps no state"), "{all}");

    let o = flujo(d, &["run", "p.yaml", "--state", "memory://", "--json"]);
    assert_eq!(code(&o), 5);
    assert_eq!(json_out(&o)["status"], "paused");
    assert!(stderr(&o).contains("keeps no state"), "{}", stderr(&o));

    // With a durable store given by --state, the printed command repeats it and works.
    let o = flujo(d, &["run", "p.yaml", "--state", "sqlite:///other.db"]);
    assert_eq!(code(&o), 5);
    let line = stdout(&o).lines().find(|l| l.contains("answer with:")).unwrap().to_owned();
    assert!(line.contains("--state sqlite:///other.db"), "{line}");
    let command = line.split("answer with: ").nth(1).unwrap().replace("ANSWER", "yes");
    let argv: Vec<&str> = command.split_whitespace().skip(1).collect();
    let o = flujo(d, &argv);
    assert_eq!(code(&o), 0, "{command}: {}", stderr(&o));
}

// ---------------------------------------------------------------------------------------------------------
// 4. Unknown run ids exit 2; directories and FIFOs are named as what they are.

#[test]
fn unknown_run_ids_are_usage_errors_everywhere() {
    let dir = project(&[("p.yaml", QUICK)]);
    let d = dir.path();
    // No state file yet: still run_not_found, and nothing is created.
    for args in [&["resume", "ghost"][..], &["lens", "show", "ghost"], &["lens", "verify", "ghost"]] {
        let o = flujo(d, args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("run_not_found"), "{args:?}: {}", stderr(&o));
    }
    assert!(!d.join(".flujo/state.db").exists(), "looking a run up must not create a store");
    assert_eq!(code(&flujo(d, &["run", "p.yaml"])), 0);
    for sub in ["show", "trace", "spans", "replay", "verify"] {
        let o = flujo(d, &["lens", sub, "ghost"]);
        assert_eq!(code(&o), 2, "{sub}: {}", stderr(&o));
        assert!(stderr(&o).contains("error[run_not_found]") && stderr(&o).contains("ghost"), "{sub}: {}", stderr(&o));
        error_object(&flujo(d, &["lens", sub, "ghost", "--json"]), "run_not_found", 2);
    }
    for args in [&["resume", "ghost", "-i", "x"][..], &["resume", "ghost", "--state", "memory://"]] {
        let o = flujo(d, args);
        assert_eq!(code(&o), 2, "{args:?}");
        assert!(stderr(&o).contains("run_not_found"), "{}", stderr(&o));
    }
}

#[test]
fn directories_and_fifos_are_reported_as_what_they_are_without_hanging() {
    let dir = project(&[("p.yaml", QUICK)]);
    let d = dir.path();
    assert_eq!(code(&flujo(d, &["run", "p.yaml", "--run-id", "r1"])), 0);
    std::fs::create_dir(d.join("adir")).unwrap();
    assert!(Command::new("mkfifo").arg(d.join("afifo")).status().unwrap().success());
    let cases: &[(&[&str], &str)] = &[
        (&["run", "adir"], "is a directory"),
        (&["run", "afifo"], "not a regular file"),
        (&["validate", "adir"], "is a directory"),
        (&["validate", "afifo"], "not a regular file"),
        (&["dev", "explain", "afifo"], "not a regular file"),
        (&["--config", "adir", "run", "p.yaml"], "is a directory"),
        (&["--config", "afifo", "run", "p.yaml"], "not a regular file"),
        (&["run", "p.yaml", "--state", "sqlite:///adir"], "is a directory"),
        (&["run", "p.yaml", "--state", "sqlite:///afifo"], "not a regular file"),
        (&["resume", "r1", "--pipeline", "afifo"], "not a regular file"),
        (&["resume", "r1", "--pipeline", "adir"], "is a directory"),
    ];
    for (args, needle) in cases {
        let child = cmd(d, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let o = wait_with_timeout(child, 30);
        no_panic(&o, &format!("{args:?}"));
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("not found"), "{args:?}: {}", stderr(&o));
    }
    // A configuration file over 1 MiB is refused before it is read.
    std::fs::write(d.join("big.toml"), format!("# {}\n", "x".repeat(2 << 20))).unwrap();
    let o = flujo(d, &["--config", "big.toml", "run", "p.yaml", "--json"]);
    error_object(&o, "config_error", 2);
    assert!(stderr(&o).contains("at most 1 MiB"), "{}", stderr(&o));
    // A directory named flujo.toml in the project is an error, not silently skipped.
    std::fs::create_dir(d.join("flujo.toml")).unwrap();
    let o = flujo(d, &["run", "p.yaml"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("flujo.toml is a directory"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------------------------
// 5. Run ids (and pause ids) are bounded and printable.

#[test]
fn bad_run_ids_are_refused_with_a_clear_message() {
    let dir = project(&[("p.yaml", QUICK), ("h.yaml", HITL)]);
    let d = dir.path();
    let long = "x".repeat(129);
    let cases: &[(&str, &str)] = &[
        ("", "cannot be empty"),
        ("a\nb", "U+000A"),
        ("a\u{1b}[31mred", "U+001B"),
        ("tab\there", "U+0009"),
        ("with space", "a space"),
        ("rtl\u{202e}txt", "U+202E"),
        (&long, "at most 128"),
    ];
    for (id, needle) in cases {
        for args in [
            vec!["run", "p.yaml", "--run-id", id],
            vec!["resume", id, "-i", "x"],
            vec!["lens", "show", id],
            vec!["lens", "verify", id],
        ] {
            let o = flujo(d, &args);
            no_panic(&o, id);
            assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
            let err = stderr(&o);
            assert!(err.contains("invalid_run_id") && err.contains(needle), "{args:?}: {err}");
            assert!(!err.contains('\u{1b}'), "control characters are escaped: {err:?}");
        }
    }
    assert!(
        !d.join(".flujo/state.db").exists() || {
            let n: i64 = db(d).query_row("SELECT count(*) FROM runs", [], |r| r.get(0)).unwrap();
            n == 0
        }
    );
    // The bound itself is accepted, and a run id cannot be used twice.
    let max = "y".repeat(128);
    assert_eq!(code(&flujo(d, &["run", "p.yaml", "--run-id", &max])), 0);
    let o = flujo(d, &["run", "p.yaml", "--run-id", &max, "--json"]);
    error_object(&o, "run_exists", 2);
    // Pause ids: empty or with control characters are refused before anything runs.
    assert_eq!(code(&flujo(d, &["run", "h.yaml", "--run-id", "h1"])), 5);
    for bad in ["", "0\n"] {
        let o = flujo(d, &["resume", "h1", "--pause-id", bad, "-i", "x"]);
        assert_eq!(code(&o), 2, "{bad:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("--pause-id"), "{}", stderr(&o));
    }
}

// ---------------------------------------------------------------------------------------------------------
// 6. Broken pipes: quiet exits.

#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = project(&[("p.yaml", QUICK)]);
    let d = dir.path();
    assert_eq!(code(&flujo(d, &["run", "p.yaml", "--run-id", "r1"])), 0);
    let cases: &[(&[&str], i32)] = &[
        (&["run", "p.yaml"], 0),
        (&["run", "p.yaml", "--json"], 0),
        (&["run", "p.yaml", "--live"], 0),
        (&["lens", "show", "r1"], 0),
        (&["lens", "show", "r1", "--json", "--verbose"], 0),
        (&["lens", "list"], 0),
        (&["lens", "spans", "r1"], 0),
        (&["lens", "trace", "r1"], 0),
        (&["lens", "stats"], 0),
        (&["validate", "p.yaml"], 0),
        (&["validate", "p.yaml", "--format", "sarif"], 0),
        (&["dev", "explain", "p.yaml"], 0),
        (&["resume", "r1"], 0),
        (&["--help"], 0),
        (&["lens", "show", "ghost", "--json"], 2),
    ];
    for (args, want) in cases {
        let mut child = cmd(d, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take()); // the reader goes away before anything is written
        let o = wait_with_timeout(child, 60);
        no_panic(&o, &format!("{args:?}"));
        assert_eq!(code(&o), *want, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("Broken pipe"), "quiet: {args:?}: {}", stderr(&o));
    }
    // Stderr closed as well (`2>&1 | true`): the run still finishes and is recorded.
    let mut child = cmd(d, &["run", "p.yaml", "--live", "--run-id", "r2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(code(&flujo(d, &["lens", "show", "r2"])), 0);
}

// ---------------------------------------------------------------------------------------------------------
// 7. Tables survive any stored value.

#[test]
fn huge_stored_names_do_not_break_lens_tables() {
    let dir = project(&[("p.yaml", QUICK)]);
    let d = dir.path();
    assert_eq!(code(&flujo(d, &["run", "p.yaml", "--run-id", "r1"])), 0);
    let huge = "s".repeat(70_000);
    let conn = db(d);
    conn.execute("UPDATE journal SET step = ?1, path = ?1 WHERE seq = 0", [&huge]).unwrap();
    conn.execute("UPDATE runs SET pipeline_name = ?1", [&format!("p{huge}\u{1b}[2J")]).unwrap();
    // Times and totals at the ends of their ranges (a corrupt or hostile row) are shown, not overflowed.
    conn.execute(
        "UPDATE runs SET created_at_ms = -9223372036854775808, updated_at_ms = 9223372036854775807, \
         total_tokens = 9223372036854775807",
        [],
    )
    .unwrap();
    conn.execute("UPDATE journal SET started_at_ms = 9223372036854775807 WHERE seq = 1", []).unwrap();
    // A stored run whose id is far over today's bound (written by an older version).
    let cols: Vec<String> = {
        let mut st = conn.prepare("SELECT name FROM pragma_table_info('runs')").unwrap();
        st.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
    };
    let select: Vec<String> = cols.iter().map(|c| if c == "run_id" { "?1".to_owned() } else { c.clone() }).collect();
    conn.execute(
        &format!("INSERT INTO runs ({}) SELECT {} FROM runs WHERE run_id = 'r1'", cols.join(", "), select.join(", ")),
        [&format!("r{huge}")],
    )
    .unwrap();
    drop(conn);
    for args in [
        &["lens", "list"][..],
        &["lens", "show", "r1"],
        &["lens", "show", "r1", "--verbose"],
        &["lens", "spans", "r1"],
        &["lens", "trace", "r1"],
        &["lens", "stats"],
        &["lens", "list", "--json"],
        &["lens", "show", "r1", "--json"],
    ] {
        let o = flujo(d, args);
        no_panic(&o, &format!("{args:?}"));
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        let out = stdout(&o);
        if !args.contains(&"--json") {
            assert!(out.contains('…'), "{args:?}: long cells are cut");
            assert!(!out.contains('\u{1b}'), "{args:?}: control characters are escaped");
            assert!(out.lines().all(|l| l.chars().count() < 4_000), "{args:?}: lines stay bounded");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// 8. Inputs are bounded.

#[test]
fn stdin_and_inline_inputs_are_bounded() {
    let dir = project(&[
        ("p.yaml", QUICK),
        ("small/flujo.toml", "[limits]\nmax_input_bytes = 50\n"),
        ("small/p.yaml", QUICK),
    ]);
    let d = dir.path();
    // /dev/zero never ends: the default limit (16 MiB) stops it.
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let child = cmd(d, &["run", "p.yaml", "-i", "-", "--json"])
        .stdin(Stdio::from(zero))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_with_timeout(child, 60);
    let v = error_object(&o, "input_too_large", 2);
    assert!(v["error"]["message"].as_str().unwrap().contains("16 MiB"), "{v}");

    let feed = |dir: &Path, args: &[&str], env: &[(&str, &str)], input: &[u8]| {
        let mut c = cmd(dir, args);
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input);
        drop(stdin);
        wait_with_timeout(child, 60)
    };
    let env = [("FLUJO_MAX_INPUT_BYTES", "100")];
    let o = feed(d, &["run", "p.yaml", "-i", "-"], &env, &[b'a'; 101]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("100 bytes") && stderr(&o).contains("FLUJO_MAX_INPUT_BYTES"), "{}", stderr(&o));
    let o = feed(d, &["run", "p.yaml", "-i", "-", "--json"], &env, &[b'a'; 100]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["step_history"][0]["output"], "a".repeat(100));
    let o = feed(d, &["run", "p.yaml", "-i", "-"], &[], &[0xff, 0xfe]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("UTF-8"), "{}", stderr(&o));

    let small = d.join("small");
    let big = "b".repeat(51);
    for args in [
        vec!["run", "p.yaml", "-i", big.as_str()],
        vec!["run", "p.yaml", "--input-json", "\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\""],
        vec!["run", "p.yaml", "--context", "{\"k\": \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"}"],
    ] {
        let o = flujo(&small, &args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("input_too_large") && stderr(&o).contains("flujo.toml"), "{}", stderr(&o));
    }
    assert_eq!(code(&flujo(&small, &["run", "p.yaml", "-i", "short"])), 0);
    for bad in ["[limits]\nmax_input_bytes = -1\n", "[limits]\nmax_input_bytes = \"lots\"\n"] {
        std::fs::write(small.join("flujo.toml"), bad).unwrap();
        let o = flujo(&small, &["run", "p.yaml"]);
        assert_eq!(code(&o), 2, "{bad}");
        assert!(stderr(&o).contains("max_input_bytes"), "{}", stderr(&o));
    }
    let o = feed(d, &["run", "p.yaml"], &[("FLUJO_MAX_INPUT_BYTES", "zero")], b"");
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("FLUJO_MAX_INPUT_BYTES"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------------------------
// 9. The initial context is validated like every update.

#[test]
fn the_initial_context_is_validated_before_any_step_runs() {
    let schema = "version: '0.1'\nname: ctx\ncontext_schema:\n  type: object\n  properties:\n    n: {type: integer}\n    name: {type: string}\n  required: [name]\nsteps:\n  - name: side_effect\n    agent: {id: touch}\n  - name: a\n    agent: {id: flujo.builtins.transform, params: {expr: \"context.name ~ '-' ~ context.n\"}}\n";
    let dir = project(&[
        ("c.yaml", schema),
        ("skills.yaml", "skills:\n  touch:\n    command: [sh, -c, \"cat >/dev/null; touch touched; echo 1\"]\n"),
        ("free.yaml", QUICK),
    ]);
    let d = dir.path();
    let cases: &[(&str, &str)] =
        &[(r#"{"name": "x", "n": "three"}"#, "integer"), (r#"{"n": 3}"#, "required"), (r#"{"name": 5}"#, "string")];
    for (ctx, needle) in cases {
        let o = flujo(d, &["run", "c.yaml", "--context", ctx, "--json"]);
        let v = error_object(&o, "context_validation", 2);
        assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{ctx}: {v}");
        assert_eq!(v["run_id"], Value::Null, "no run was recorded");
    }
    let o = flujo(d, &["run", "c.yaml"]);
    assert_eq!(code(&o), 2, "no context at all lacks the required key: {}", stderr(&o));
    assert!(!d.join("touched").exists(), "no step ran");
    for key in ["run_id", "steps", "status", "initial_prompt", "hitl_history", "import_artifacts"] {
        let ctx = format!(r#"{{"{key}": "mine"}}"#);
        for file in ["c.yaml", "free.yaml"] {
            let o = flujo(d, &["run", file, "--context", &ctx]);
            assert_eq!(code(&o), 2, "{key} in {file}: {}", stderr(&o));
            let err = stderr(&o);
            assert!(err.contains("context_validation") && err.contains(&format!("'{key}'")), "{err}");
        }
    }
    let o = flujo(d, &["run", "free.yaml", "--context", "[1, 2]"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("JSON object"), "{}", stderr(&o));
    if d.join(".flujo/state.db").exists() {
        let o = flujo(d, &["lens", "list", "--json"]);
        assert_eq!(json_out_array(&o).len(), 0, "nothing was recorded: {}", stdout(&o));
    }

    let o = flujo(d, &["run", "c.yaml", "--context", r#"{"name": "x", "n": 3}"#, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["output"], "x-3");
    assert!(d.join("touched").exists());
}

fn json_out_array(o: &Output) -> Vec<Value> {
    match serde_json::from_str::<Value>(stdout(o).trim()) {
        Ok(Value::Array(a)) => a,
        other => panic!("not an array: {other:?}: {}", stderr(o)),
    }
}

// ---------------------------------------------------------------------------------------------------------
// 10. A killed run's totals come from its journal.

#[test]
fn totals_of_an_unfinished_run_are_computed_from_its_records() {
    let p = "version: '0.1'\nname: tally\nsteps:\n  - kind: loop\n    name: twice\n    loop:\n      max_loops: 5\n      exit_expression: 'previous_step >= 2'\n      body:\n        - name: inc\n          agent: {id: flujo.builtins.transform, params: {expr: 'previous_step + 1'}}\n  - name: last\n    agent: {id: flujo.builtins.transform, params: {expr: 'previous_step'}}\n";
    let dir = project(&[("p.yaml", p)]);
    let d = dir.path();
    let o = flujo(d, &["run", "p.yaml", "--input-json", "0", "--run-id", "k1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // As a SIGKILL leaves it: still `running`, no totals recorded, but its records carry usage. The loop's
    // record carries its two iterations' usage (10 + 10), so the run used 20 + 30 = 50, not 70.
    let conn = db(d);
    conn.execute("UPDATE runs SET status = 'running', total_tokens = 0, total_cost_usd = 0", []).unwrap();
    conn.execute(
        "UPDATE journal SET prompt_tokens = 8, completion_tokens = 2, cost_usd = 0.01 WHERE path LIKE '0/%'",
        [],
    )
    .unwrap();
    conn.execute("UPDATE journal SET prompt_tokens = 16, completion_tokens = 4, cost_usd = 0.02 WHERE path = '0'", [])
        .unwrap();
    conn.execute("UPDATE journal SET prompt_tokens = 20, completion_tokens = 10, cost_usd = 0.03 WHERE path = '1'", [])
        .unwrap();
    drop(conn);
    let o = flujo(d, &["lens", "show", "k1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("tokens 50"), "{}", stdout(&o));
    let v = json_out(&flujo(d, &["lens", "show", "k1", "--json"]));
    assert_eq!(v["total_tokens"], 50, "{v}");
    assert!((v["total_cost_usd"].as_f64().unwrap() - 0.05).abs() < 1e-9, "{v}");
    let list = json_out_array(&flujo(d, &["lens", "list", "--json"]));
    assert_eq!(list[0]["total_tokens"], 50);
    let stats = json_out(&flujo(d, &["lens", "stats", "--json"]));
    assert_eq!(stats["total"]["total_tokens"], 50, "{stats}");
    // Without the loop's record (killed before it was written) the iterations count on their own.
    db(d).execute("DELETE FROM journal WHERE path = '0'", []).unwrap();
    let v = json_out(&flujo(d, &["lens", "show", "k1", "--json"]));
    assert_eq!(v["total_tokens"], 50, "10 + 10 + 30: {v}");
}
