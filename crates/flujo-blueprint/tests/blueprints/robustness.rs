//! Robustness: malformed, huge, deeply nested and random input yields diagnostics — never a panic, a stack
//! overflow or unbounded memory.

use std::path::{Path, PathBuf};

use flujo_blueprint::{load_file, load_str, validate_str, Diagnostic, LoadOptions, MAX_BLUEPRINT_BYTES};
use flujo_skills::BuiltinRegistry;
use proptest::prelude::*;

fn rules_of(diags: &[Diagnostic]) -> Vec<&str> {
    diags.iter().map(|d| d.rule.as_str()).collect()
}

fn validate(yaml: &str) -> Vec<Diagnostic> {
    let registry = BuiltinRegistry::new();
    validate_str(yaml, Path::new("robust.yaml"), &LoadOptions { registry: Some(&registry), ..LoadOptions::default() })
}

/// `n` levels of steps: `n - 1` nested `cache` steps around a leaf (one YAML level per step level).
fn nested_cache(n: usize) -> String {
    let mut out = String::from("name: deep\nsteps:\n  - kind: cache\n    name: c0\n");
    let mut indent = "    ".to_owned();
    for i in 1..n - 1 {
        out.push_str(&format!("{indent}wrapped_step:\n"));
        indent.push_str("  ");
        out.push_str(&format!("{indent}kind: cache\n{indent}name: c{i}\n"));
    }
    out.push_str(&format!("{indent}wrapped_step: {{name: leaf}}\n"));
    out
}

/// `n` levels of steps: `n - 1` nested dynamic routers around a leaf (four YAML levels per step level: the
/// most verbose kind).
fn nested_routers(n: usize) -> String {
    let mut out = String::from("name: deep\nsteps:\n");
    let mut indent = "  ".to_owned();
    for i in 0..n - 1 {
        out.push_str(&format!("{indent}- kind: dynamic_router\n{indent}  name: r{i}\n{indent}  router:\n"));
        out.push_str(&format!("{indent}    router_agent: {{id: flujo.builtins.passthrough}}\n{indent}    branches:\n"));
        out.push_str(&format!("{indent}      b:\n"));
        indent.push_str("        ");
    }
    out.push_str(&format!("{indent}- name: leaf\n"));
    out
}

#[test]
fn step_nesting_limit_is_exact() {
    // 64 levels of steps (the top-level step is level 1) load; 65 are BP-LIMIT.
    assert_eq!(rules_of(&validate(&nested_cache(64))), Vec::<&str>::new());
    assert_eq!(rules_of(&validate(&nested_cache(65))), ["BP-LIMIT"]);
    assert_eq!(rules_of(&validate(&nested_routers(64))), Vec::<&str>::new());
    assert_eq!(rules_of(&validate(&nested_routers(65))), ["BP-LIMIT"]);
}

#[test]
fn deep_yaml_is_a_limit_not_a_stack_overflow() {
    for text in [
        format!("name: x\nsteps: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        format!("name: x\nsteps: {}\n", "{a: ".repeat(5_000) + &"}".repeat(5_000)),
        (0..2_000).map(|i| format!("{}k:\n", "  ".repeat(i))).collect::<String>(),
        format!("name: x\nsteps: [{{name: a, input: {}1{}}}]\n", "[".repeat(5_000), "]".repeat(5_000)),
    ] {
        let diags = validate(&text);
        assert!(diags.iter().any(|d| d.rule == "BP-LIMIT"), "{diags:?}");
    }
    // Just under the limits, inside a step's input: loads (and converts to JSON) fine, even on this test
    // thread's 2 MiB stack.
    let text = format!("name: x\nsteps: [{{name: a, input: {}1{}}}]\n", "[".repeat(250), "]".repeat(250));
    assert_eq!(rules_of(&validate(&text)), Vec::<&str>::new());
    assert_eq!(rules_of(&validate(&block_nested_input(flujo_blueprint::MAX_YAML_DEPTH - 4))), Vec::<&str>::new());
    assert_eq!(rules_of(&validate(&block_nested_input(flujo_blueprint::MAX_YAML_DEPTH + 1))), ["BP-LIMIT"]);
}

/// A step whose `input` is `depth` nested block mappings (`k: k: … 1`); the document is `depth + 3` deep.
fn block_nested_input(depth: usize) -> String {
    let mut text = String::from("name: x\nsteps:\n  - name: a\n    input:\n");
    for i in 0..depth {
        text.push_str(&format!("{}k:\n", " ".repeat(6 + i)));
    }
    text.push_str(&format!("{}1\n", " ".repeat(6 + depth)));
    text
}

#[test]
fn too_many_steps_is_a_limit() {
    let mut text = String::from("name: many\nsteps:\n");
    for i in 0..=flujo_blueprint::MAX_STEPS {
        text.push_str(&format!("- {{name: s{i}}}\n"));
    }
    assert!(text.len() < MAX_BLUEPRINT_BYTES);
    let diags = validate(&text);
    assert_eq!(rules_of(&diags), ["BP-LIMIT"]);
    assert!(diags[0].message.contains("100000 steps"), "{}", diags[0].message);
}

#[test]
fn oversized_blueprints_are_a_limit() {
    let text = format!("name: big\nsteps: [{{name: a, input: \"{}\"}}]\n", "x".repeat(MAX_BLUEPRINT_BYTES));
    assert_eq!(rules_of(&validate(&text)), ["BP-LIMIT"]);
    let dir = temp_dir("oversized");
    let path = dir.join("big.yaml");
    std::fs::write(&path, &text).unwrap();
    let failure = load_file(&path, &LoadOptions::default()).unwrap_err();
    assert_eq!(rules_of(&failure.diagnostics), ["BP-LIMIT"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn alias_bombs_are_a_limit() {
    let mut text = String::from("name: lol\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
    }
    text.push_str("steps: [{name: s, input: *a11}]\n");
    let diags = validate(&text);
    assert_eq!(rules_of(&diags), ["BP-LIMIT"], "{diags:?}");
}

#[test]
fn import_chains_are_bounded() {
    let dir = temp_dir("chain");
    let n = flujo_blueprint::MAX_IMPORT_DEPTH + 3;
    for i in 0..n {
        let body = if i + 1 < n {
            format!("name: f{i}\nimports: {{next: ./f{}.yaml}}\nsteps: [{{name: s, uses: imports.next}}]\n", i + 1)
        } else {
            format!("name: f{i}\nsteps: [{{name: s}}]\n")
        };
        std::fs::write(dir.join(format!("f{i}.yaml")), body).unwrap();
    }
    let failure = load_file(&dir.join("f0.yaml"), &LoadOptions::default()).unwrap_err();
    assert!(failure.diagnostics.iter().any(|d| d.rule == "BP-LIMIT"), "{:?}", failure.diagnostics);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn wrong_types_everywhere_never_panic() {
    // Every field of every kind given a value of each wrong type.
    let values = ["null", "true", "-1", "1.5", "\"text\"", "[1, 2]", "{a: 1}", "[[{}]]"];
    let fields = [
        "name",
        "kind",
        "input",
        "config",
        "fallback",
        "validators",
        "updates_context",
        "sink_to",
        "input_keys",
        "output_keys",
        "usage_limits",
        "meta",
        "agent",
        "uses",
        "loop",
        "map",
        "condition_expression",
        "condition",
        "branches",
        "default_branch",
        "merge_strategy",
        "on_branch_failure",
        "context_include_keys",
        "reduce",
        "router",
        "router_agent",
        "message",
        "input_schema",
        "wrapped_step",
        "ttl_s",
        "states",
        "start_state",
        "end_states",
        "transitions",
        "max_hops",
    ];
    let kinds = ["step", "loop", "map", "conditional", "parallel", "dynamic_router", "hitl", "cache", "StateMachine"];
    for kind in kinds {
        for field in fields {
            for value in values {
                let text = format!("name: t\nsteps:\n  - kind: {kind}\n    name: s\n    {field}: {value}\n");
                if field == "name" || field == "kind" {
                    let _ = validate(&text.replacen(&format!("    {field}: {value}\n"), "", 0));
                }
                let _ = validate(&text);
            }
        }
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flujo-blueprint-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ok_sources() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/blueprints/ok");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let path = if path.is_dir() { path.join("main.yaml") } else { path };
        if let Ok(text) = std::fs::read_to_string(&path) {
            out.push((path, text));
        }
    }
    out.sort();
    out
}

/// A random edit of a text: delete a range, insert a snippet, duplicate or swap lines.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    DuplicateLine(usize),
    SwapLines(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let snippet = prop_oneof![
        Just(":".to_owned()),
        Just("- ".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("<<: *a\n".to_owned()),
        Just("\n  ".to_owned()),
        Just("kind: loop\n".to_owned()),
        Just("{{ previous_step.output | nope }}".to_owned()),
        Just("uses: imports.child\n".to_owned()),
        Just("!!binary ".to_owned()),
        Just("\"".to_owned()),
        "[ -~]{0,12}",
        "\\PC{0,4}",
    ];
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), snippet).prop_map(|(a, s)| Edit::Insert(a, s)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut lines: Vec<&str> = text.lines().collect();
    match edit {
        Edit::Delete(at, n) => {
            let at = at % (chars.len() + 1);
            let end = (at + n).min(chars.len());
            chars[..at].iter().chain(&chars[end..]).collect()
        }
        Edit::Insert(at, s) => {
            let at = at % (chars.len() + 1);
            chars[..at].iter().collect::<String>() + s + &chars[at..].iter().collect::<String>()
        }
        Edit::DuplicateLine(i) if !lines.is_empty() => {
            let i = i % lines.len();
            lines.insert(i, lines[i]);
            lines.join("\n")
        }
        Edit::SwapLines(a, b) if !lines.is_empty() => {
            let (a, b) = (a % lines.len(), b % lines.len());
            lines.swap(a, b);
            lines.join("\n")
        }
        _ => text.to_owned(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,300}") {
        let registry = BuiltinRegistry::new();
        let opts = LoadOptions { registry: Some(&registry), ..LoadOptions::default() };
        let _ = load_str(&text, Path::new("random.yaml"), &opts);
    }

    #[test]
    fn yaml_like_text_never_panics(text in "([a-z_]{1,8}: |- |  |\\{|\\}|\\[|\\]|, |\\n|&a |\\*a |\"|'|\\{\\{ |\\}\\}|true|1|-1|1.5|~){0,60}") {
        let _ = validate(&text);
    }

    #[test]
    fn mutated_ok_blueprints_never_panic(index in any::<usize>(), edits in prop::collection::vec(edit(), 1..6)) {
        let sources = ok_sources();
        let (path, text) = &sources[index % sources.len()];
        let mut mutated = text.clone();
        for e in &edits {
            mutated = apply(&mutated, e);
        }
        let registry = BuiltinRegistry::new();
        let opts = LoadOptions { registry: Some(&registry), ..LoadOptions::default() };
        match load_str(&mutated, path, &opts) {
            Ok(loaded) => prop_assert!(loaded.diagnostics.iter().all(|d| !d.is_error())),
            Err(failure) => prop_assert!(failure.diagnostics.iter().any(Diagnostic::is_error)),
        }
    }
}

/// An import, a prompt file or a `skills.yaml` that is not a regular file is refused before it is opened:
/// opening a FIFO blocks until something writes to it, and `/dev/stdin` waits for input, so the load used
/// to hang (found while writing the `blueprint_load` fuzz target, which points imports anywhere).
#[cfg(unix)]
#[test]
fn special_files_are_refused_not_read() {
    let dir = temp_dir("special");
    let fifo = dir.join("pipe.yaml");
    let made_fifo = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
    let mut targets = vec!["/dev/null".to_owned(), "/dev/stdin".to_owned(), "/dev/zero".to_owned()];
    if made_fifo {
        targets.push(fifo.display().to_string());
    }
    for target in &targets {
        let text = format!(
            "name: special\nimports: {{child: \"{target}\"}}\nagents:\n  w: {{model: \"mock:echo\", system_prompt: {{from_file: \"{target}\"}}}}\nsteps:\n  - {{name: a, uses: imports.child}}\n  - {{name: b, uses: agents.w}}\n"
        );
        let allow = LoadOptions { allow_imports_outside: true, ..LoadOptions::default() };
        let diags = validate_str(&text, &dir.join("main.yaml"), &allow);
        let rules = rules_of(&diags);
        assert!(rules.contains(&"BP-IMPORT-MISSING") && rules.contains(&"BP-PROMPT-FILE"), "{target}: {diags:?}");
        assert!(diags.iter().any(|d| d.message.contains("not a regular file")), "{target}: {diags:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The template crate's fuzz findings, seen through a blueprint: an expression with a stray `}}` made
/// minijinja panic, and a constant sequence repetition hung compilation — `flujo validate` crashed or hung on
/// such a blueprint. Both are diagnostics now (`TEMPLATE`, or `BP-SKILL-PARAMS` for a skill's `expr`).
#[test]
fn fuzz_template_findings_are_diagnostics_in_blueprints() {
    let text = r#"
name: fuzzed
steps:
  - kind: conditional
    name: c
    condition_expression: "n}}\n;"
    branches:
      true:
        - name: t
          agent: {id: flujo.builtins.transform, params: {expr: "10 ~ () * 25555555"}}
  - name: u
    agent: {id: flujo.builtins.transform, params: {expr: "previous_step"}}
    input: "{{ ([0] * 10 ** 9) | join }}"
"#;
    let diags = validate(text);
    assert_eq!(rules_of(&diags), ["TEMPLATE", "BP-SKILL-PARAMS", "TEMPLATE"], "{diags:?}");
}

/// `system_prompt.from_file` reads only inside the blueprint's folder: `..` that climbs out, an absolute path
/// and a symbolic link that points out are refused (`BP-PROMPT-FILE`) without reading the file; a path that
/// stays inside (even through `..`) is read.
#[cfg(unix)]
#[test]
fn prompt_files_are_confined_to_the_blueprint_folder() {
    let root = temp_dir("confined");
    let project = root.join("project");
    std::fs::create_dir_all(project.join("prompts/sub")).unwrap();
    std::fs::write(root.join("secret.md"), "TOP SECRET").unwrap();
    std::fs::write(project.join("prompts/p.md"), "You write {{ tone }} haiku.").unwrap();
    std::os::unix::fs::symlink(root.join("secret.md"), project.join("prompts/link.md")).unwrap();
    let secret = root.join("secret.md").display().to_string();
    for (from_file, allowed) in [
        ("prompts/p.md", true),
        ("prompts/sub/../p.md", true),
        ("./prompts/p.md", true),
        ("../secret.md", false),
        ("prompts/../../secret.md", false),
        (secret.as_str(), false),
        ("prompts/link.md", false),
    ] {
        let text = format!(
            "name: confined\nagents:\n  w: {{model: \"mock:echo\", system_prompt: {{from_file: \"{from_file}\", variables: {{tone: calm}}}}}}\nsteps:\n  - {{name: a, uses: agents.w}}\n"
        );
        let main = project.join("main.yaml");
        std::fs::write(&main, &text).unwrap();
        let diags = validate_str(&text, &main, &LoadOptions::default());
        let refused: Vec<&Diagnostic> = diags.iter().filter(|d| d.rule == "BP-PROMPT-FILE").collect();
        if allowed {
            assert!(refused.is_empty(), "{from_file}: {diags:?}");
            let loaded = load_file(&main, &LoadOptions::default()).unwrap();
            let agent = &loaded.agents["w"];
            assert_eq!(agent.system_prompt.as_deref(), Some("You write {{ tone }} haiku."), "{from_file}");
        } else {
            assert_eq!(refused.len(), 1, "{from_file}: {diags:?}");
            assert!(refused[0].message.contains("outside the blueprint's folder"), "{from_file}: {diags:?}");
            assert!(diags.iter().all(|d| !d.message.contains("TOP SECRET")), "{diags:?}");
        }
    }
    let _ = std::fs::remove_dir_all(root);
}
