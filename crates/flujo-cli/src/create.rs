//! `flujo create`: the Architect — a model writes a blueprint for a goal, this project's own validator checks it,
//! the diagnostics go back to the model, and the repaired blueprint is written once it validates.
//!
//! The Architect is itself a pipeline run by this engine (`flujo_architect`): a loop of a model step (`write`)
//! and the `flujo.architect.check` skill (`check`), exiting when the draft validates. So it is journaled in the
//! project's state store (`flujo lens show RUN_ID`), budgeted like any pipeline (`[budgets.pipeline.
//! "flujo_architect"]`), and an interrupted `create` continues with `flujo create --resume RUN_ID` without
//! repeating the model calls already made. Everything the check needs (the target folder, `--strict`, the name,
//! whether side effects are allowed) travels in the run's context, so a resumed run checks the same way.

use std::io::{BufRead, IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use flujo_core::{RunResult, RunStatus, SkillCall, SkillError, SkillOutput};
use flujo_engine::{ResumeRequest, RunOptions};
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::*;

/// The id of the checking skill (registered with every registry the CLI builds, so `flujo resume` and
/// `flujo lens replay` of an Architect run find it too).
pub const CHECK_SKILL: &str = "flujo.architect.check";
/// The Architect pipeline's name (its budget section: `[budgets.pipeline."flujo_architect"]`).
pub const ARCHITECT_PIPELINE: &str = "flujo_architect";
const DEFAULT_MODEL: &str = "openai:gpt-4o";
const PROMPT: &str = include_str!("architect_prompt.md");

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// What the pipeline should do.
    #[arg(long)]
    pub goal: Option<String>,
    /// The pipeline's name (default: derived from the goal).
    #[arg(long)]
    pub name: Option<String>,
    /// Where to write pipeline.yaml (default: the project folder, else the current one).
    #[arg(long = "output-dir", value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Never ask: a blueprint using skills with side effects is repaired instead (unless --allow-side-effects).
    #[arg(long = "non-interactive")]
    pub non_interactive: bool,
    /// Let the blueprint use skills declared with `side_effects: true`.
    #[arg(long = "allow-side-effects")]
    pub allow_side_effects: bool,
    /// Overwrite an existing pipeline.yaml.
    #[arg(long)]
    pub force: bool,
    /// Warnings count too: the blueprint is repaired until `flujo validate --strict` accepts it.
    #[arg(long)]
    pub strict: bool,
    /// A budget for the new pipeline, in USD per run, written to flujo.toml (`[budgets.pipeline."NAME"]`).
    #[arg(long, value_name = "USD")]
    pub budget: Option<f64>,
    /// The model that writes the blueprint (default: `[architect] model`, FLUJO_ARCHITECT_MODEL, openai:gpt-4o).
    #[arg(long)]
    pub model: Option<String>,
    /// How many drafts the model may write (the first one and its repairs).
    #[arg(long = "max-rounds", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub max_rounds: u32,
    /// More context for the model: a JSON or YAML file (its content is given to the model as is).
    #[arg(long = "context-file", short = 'f', value_name = "FILE")]
    pub context_file: Option<PathBuf>,
    /// Continue an interrupted `flujo create` (its run id) without repeating the model calls it made.
    #[arg(long, value_name = "RUN_ID", conflicts_with_all = ["goal", "name", "model", "context_file"])]
    pub resume: Option<String>,
    /// State store URI (default: the project's).
    #[arg(long)]
    pub state: Option<String>,
    /// Print one JSON object: `{run_id, status, valid, path, name, rounds, diagnostics}`.
    #[arg(long)]
    pub json: bool,
}

/// Registers [`CHECK_SKILL`] with `reg`.
pub fn register_check(reg: &mut flujo_skills::BuiltinRegistry) {
    reg.register_fn(CHECK_SKILL, flujo_skills::SideEffects::No, |call: SkillCall| async move {
        let settings = call.context.field("architect").map(|v| (**v).clone()).unwrap_or(Value::Null);
        let input = call.input.clone();
        tokio::task::spawn_blocking(move || check_draft(&input, &settings))
            .await
            .map_err(|e| SkillError::fatal(format!("the blueprint check stopped: {e}")))
            .map(SkillOutput::value)
    });
}

/// The blueprint in a model's answer: the first fenced block (```yaml, ```yml or ```), else the whole text.
pub fn extract_yaml(answer: &str) -> String {
    let mut rest = answer;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let Some(nl) = after.find('\n') else { break };
        let lang = after[..nl].trim();
        if lang.is_empty() || lang.eq_ignore_ascii_case("yaml") || lang.eq_ignore_ascii_case("yml") {
            let body = &after[nl + 1..];
            let end = body.find("\n```").map_or(body.len(), |e| e + 1);
            return body[..end].to_owned();
        }
        // Another language's block: skip past its closing fence.
        let body = &after[nl + 1..];
        match body.find("\n```") {
            Some(e) => rest = &body[e + 4..],
            None => break,
        }
    }
    answer.trim().to_owned() + "\n"
}

/// Validates a draft the way `flujo validate` would in the target folder, plus the Architect's own checks
/// (the name asked for, skills with side effects). Returns `{valid, yaml, report, errors, warnings, name,
/// side_effects}`.
fn check_draft(answer: &Value, settings: &Value) -> Value {
    let text = match answer {
        Value::String(s) => s.clone(),
        Value::Object(m) => {
            m.get("yaml").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| answer.to_string())
        }
        other => other.to_string(),
    };
    let yaml = extract_yaml(&text);
    let dir = settings.get("dir").and_then(Value::as_str).map_or_else(|| PathBuf::from("."), PathBuf::from);
    let strict = settings.get("strict").and_then(Value::as_bool).unwrap_or(false);
    let allow_side_effects = settings.get("allow_side_effects").and_then(Value::as_bool).unwrap_or(false);
    let want_name = settings.get("name").and_then(Value::as_str);
    let file = dir.join("pipeline.yaml");
    let builtins = flujo_skills::BuiltinRegistry::new();
    let opts = crate::commands::load_options(&builtins, strict);
    let (mut diags, name) = match flujo_blueprint::load_str(&yaml, &file, &opts) {
        Ok(loaded) => (loaded.diagnostics, Some(loaded.pipeline.name)),
        Err(failure) => (failure.diagnostics, None),
    };
    let mut problems = Vec::new();
    if let (Some(want), Some(got)) = (want_name, name.as_deref()) {
        if want != got {
            problems.push(format!("the pipeline must be named `{want}` (top-level `name: {want}`), not `{got}`"));
        }
    }
    let (catalog, _) = flujo_blueprint::SkillCatalog::load_dir(&dir);
    let side_effects: Vec<String> = catalog
        .ids()
        .filter(|id| catalog.get(id).is_some_and(|s| s.side_effects) && mentions(&yaml, id))
        .map(str::to_owned)
        .collect();
    if !side_effects.is_empty() && !allow_side_effects && !settings.get("ask").and_then(Value::as_bool).unwrap_or(false)
    {
        problems.push(format!(
            "skills with side effects are not allowed here: {}; do the job without them",
            side_effects.join(", ")
        ));
    }
    // Paths in the report are the target file's name only (the model never sees the machine's folders).
    for d in &mut diags {
        d.file = PathBuf::from("pipeline.yaml");
    }
    let errors = diags.iter().filter(|d| d.is_error()).count() + problems.len();
    let warnings = diags.len() - diags.iter().filter(|d| d.is_error()).count();
    let mut report = if diags.is_empty() { String::new() } else { flujo_blueprint::render_text(&diags) };
    for p in &problems {
        report.push_str(&format!("error[ARCHITECT]: {p}\n"));
    }
    json!({
        "valid": errors == 0,
        "yaml": yaml,
        "report": report,
        "errors": errors,
        "warnings": warnings,
        "name": name,
        "side_effects": side_effects,
        "diagnostics": diags,
    })
}

/// `id` occurs in `text` as a whole skill id.
fn mentions(text: &str, id: &str) -> bool {
    let is_id = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':');
    text.match_indices(id).any(|(b, _)| {
        !text[..b].chars().next_back().is_some_and(is_id) && !text[b + id.len()..].chars().next().is_some_and(is_id)
    })
}

/// A name from a goal: lowercase words joined by `_`, at most 40 characters.
fn name_from_goal(goal: &str) -> String {
    let words: Vec<String> = goal
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let mut name = String::new();
    for w in words {
        if name.len() + w.len() + 1 > 40 {
            break;
        }
        if !name.is_empty() {
            name.push('_');
        }
        name.push_str(&w);
    }
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("pipeline_{name}").trim_end_matches('_').to_owned()
    } else {
        name
    }
}

/// The skills the model may use: the built-ins and the target folder's `skills.yaml` (side-effect skills only
/// when allowed or when the user will be asked).
fn skills_text(dir: &Path, offer_side_effects: bool) -> String {
    let mut out = String::new();
    for (id, description, keys) in flujo_skills::builtin_catalog() {
        let params = if keys.is_empty() { String::new() } else { format!(" params: {}.", keys.join(", ")) };
        out.push_str(&format!("- `{id}`: {description}{params}\n"));
    }
    let (catalog, _) = flujo_blueprint::SkillCatalog::load_dir(dir);
    for id in catalog.ids() {
        let Some(s) = catalog.get(id) else { continue };
        if s.side_effects && !offer_side_effects {
            continue;
        }
        let mut line =
            format!("- `{id}`: {}", if s.description.is_empty() { "(no description)" } else { &s.description });
        if let Some(schema) = &s.input_schema {
            line.push_str(&format!(" Input schema: {schema}."));
        }
        if let Some(schema) = &s.output_schema {
            line.push_str(&format!(" Output schema: {schema}."));
        }
        if s.side_effects {
            line.push_str(" Has side effects.");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The Architect pipeline for `model` and `rounds`, as a blueprint (so it is validated like any other).
fn architect_blueprint(model: &str, rounds: u32, skills: &str) -> String {
    // The system prompt is rendered as a template: its `{{ … }}` examples are kept verbatim.
    let prompt = format!(
        "{{% raw %}}{}{{% endraw %}}",
        PROMPT.replace("{SKILLS}", skills.trim_end()).replace("{% endraw %}", "")
    );
    let write_input = "{{ context.request }}\
{% if previous_step.report is defined and previous_step.report %}\n\nYour previous blueprint:\n```yaml\n{{ previous_step.yaml }}```\n\n\
`flujo validate` reported these problems:\n{{ previous_step.report }}\nWrite the whole corrected blueprint.{% endif %}";
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    [
        "version: \"0.1\"".to_owned(),
        format!("name: {ARCHITECT_PIPELINE}"),
        "context_schema:".to_owned(),
        "  type: object".to_owned(),
        "  properties:".to_owned(),
        "    request: {type: string}".to_owned(),
        "    architect: {type: object}".to_owned(),
        "agents:".to_owned(),
        "  architect:".to_owned(),
        format!("    model: {}", q(model)),
        format!("    system_prompt: {}", q(&prompt)),
        "steps:".to_owned(),
        "  - kind: loop".to_owned(),
        "    name: rounds".to_owned(),
        "    loop:".to_owned(),
        format!("      max_loops: {rounds}"),
        "      on_max_loops: succeed".to_owned(),
        "      exit_expression: \"previous_step.valid\"".to_owned(),
        "      body:".to_owned(),
        "        - name: write".to_owned(),
        "          uses: agents.architect".to_owned(),
        format!("          input: {}", q(write_input)),
        "        - name: check".to_owned(),
        format!("          agent: {{id: {CHECK_SKILL}}}"),
    ]
    .join("\n")
        + "\n"
}

fn ask(question: &str) -> bool {
    errln!("{question} [y/N] ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes" | "Yes")
}

pub async fn create(args: CreateArgs, cfg: &Config) -> Result<u8, CliError> {
    let interactive = !args.non_interactive && std::io::stdin().is_terminal();
    let uri = args.state.clone().unwrap_or_else(|| cfg.state_uri.0.clone());
    let store = crate::commands::open_store(&uri)?;
    // The Architect runs only built-ins and the check (the drafts it checks are never run).
    let mut reg = flujo_skills::BuiltinRegistry::new();
    register_check(&mut reg);
    let reg: Arc<dyn flujo_core::SkillRegistry> = Arc::new(reg);

    let (result, settings) = if let Some(run_id) = &args.resume {
        crate::commands::check_run_id_arg(run_id)?;
        let run = store
            .get_run(run_id)
            .await
            .map_err(|e| CliError::new("store_error", EXIT_FAILED, e.to_string()))?
            .ok_or_else(|| {
                CliError::new(
                    "run_not_found",
                    EXIT_CONFIG,
                    format!("no run '{run_id}' in {}", crate::lens::mask_uri(&uri)),
                )
            })?;
        if run.pipeline_name != ARCHITECT_PIPELINE {
            return Err(CliError::config(format!(
                "run '{run_id}' is a run of `{}`, not of `flujo create`; continue it with `flujo resume {run_id}`",
                run.pipeline_name
            )));
        }
        let def = run
            .definition
            .clone()
            .ok_or_else(|| CliError::config(format!("run '{run_id}' has no stored definition")))?;
        let pipeline = flujo_engine::pipeline_from_definition(&def)
            .map_err(|e| CliError::config(format!("the stored Architect pipeline cannot be read: {e}")))?;
        let settings = run.initial_context.get("architect").cloned().unwrap_or(Value::Null);
        let flujo = crate::commands::runner(pipeline, store.clone(), reg, cfg, None)?;
        let result = flujo.resume_with(run_id, ResumeRequest::default()).await.map_err(|e| {
            CliError::new("run_failed", EXIT_FAILED, e.to_string()).with_run(Some(run_id), Some(ARCHITECT_PIPELINE))
        })?;
        (result, settings)
    } else {
        let goal = match args.goal.clone().filter(|g| !g.trim().is_empty()) {
            Some(g) => g,
            None if interactive => {
                errln!("What is your goal for this pipeline?");
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .map_err(|e| CliError::config(format!("cannot read the goal: {e}")))?;
                let g = line.trim().to_owned();
                if g.is_empty() {
                    return Err(CliError::usage("usage_error", "a goal is needed: flujo create --goal \"…\""));
                }
                g
            }
            None => return Err(CliError::usage("usage_error", "--goal is required (flujo create --goal \"…\")")),
        };
        let dir = args.output_dir.clone().or_else(|| cfg.project_root.clone()).unwrap_or_else(|| PathBuf::from("."));
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| CliError::config(format!("cannot create the output folder {}: {e}", dir.display())))?;
        }
        let target = dir.join("pipeline.yaml");
        if target.exists() && !args.force {
            return Err(CliError::config(format!(
                "{} already exists (use --force to overwrite it, or --output-dir DIR)",
                target.display()
            )));
        }
        let name = args.name.clone().unwrap_or_else(|| name_from_goal(&goal));
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') || name.len() > 128 {
            return Err(CliError::usage(
                "usage_error",
                format!("--name '{name}' must be letters, digits, `_` or `-` (at most 128)"),
            ));
        }
        let extra = match &args.context_file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| CliError::config(format!("cannot read {}: {e}", f.display())))?;
                format!("\n\nMore context ({}):\n{}", f.display(), text.trim_end())
            }
            None => String::new(),
        };
        let model = args
            .model
            .clone()
            .or_else(|| {
                cfg.table.get("architect").and_then(|a| a.get("model")).and_then(|m| m.as_str()).map(str::to_owned)
            })
            .or_else(|| std::env::var("FLUJO_ARCHITECT_MODEL").ok().filter(|m| !m.is_empty()))
            .unwrap_or_else(|| DEFAULT_MODEL.to_owned());
        let ask_side_effects = interactive && !args.allow_side_effects;
        let blueprint = architect_blueprint(
            &model,
            args.max_rounds,
            &skills_text(&dir, args.allow_side_effects || ask_side_effects),
        );
        let mut with_check = flujo_skills::BuiltinRegistry::new();
        register_check(&mut with_check);
        let loaded = flujo_blueprint::load_str(
            &blueprint,
            Path::new("flujo_architect.yaml"),
            &crate::commands::load_options(&with_check, false),
        )
        .map_err(|f| {
            CliError::config(format!(
                "the Architect pipeline does not load (is the model id `{model}` right?):\n{}",
                flujo_blueprint::render_text(&f.diagnostics).trim_end()
            ))
        })?;
        let abs_dir = std::fs::canonicalize(&dir).unwrap_or(dir.clone());
        let settings = json!({
            "dir": abs_dir.to_string_lossy(),
            "name": name,
            "strict": args.strict,
            "allow_side_effects": args.allow_side_effects,
            "ask": ask_side_effects,
            "budget": args.budget,
        });
        let request = format!("Goal: {goal}\nPipeline name: {name}{extra}");
        let mut context = Map::new();
        context.insert("request".into(), json!(request));
        context.insert("architect".into(), settings.clone());
        let run_id = {
            use flujo_core::IdGen as _;
            flujo_engine::UuidIds.new_run_id()
        };
        let flujo = crate::commands::runner(loaded.pipeline, store.clone(), reg, cfg, None)?;
        errln!("architect run {run_id}: {model} writes {name} (at most {} round(s))", args.max_rounds);
        let result =
            flujo.run_with(RunOptions::new(json!({})).run_id(run_id.clone()).context(context)).await.map_err(|e| {
                CliError::new("run_failed", EXIT_FAILED, e.to_string())
                    .with_run(Some(&run_id), Some(ARCHITECT_PIPELINE))
            })?;
        (result, settings)
    };
    finish(&result, &settings, &args)
}

fn finish(result: &RunResult, settings: &Value, args: &CreateArgs) -> Result<u8, CliError> {
    let run_id = result.run_id.clone();
    if result.status != RunStatus::Completed {
        let why = result
            .error
            .as_ref()
            .map_or_else(|| format!("{:?}", result.status), |e| format!("{}: {}", e.kind, e.message));
        return Err(CliError::new(
            "run_failed",
            EXIT_FAILED,
            format!("the Architect run did not complete: {why} (continue it with `flujo create --resume {run_id}`)"),
        )
        .with_run(Some(&run_id), Some(ARCHITECT_PIPELINE)));
    }
    let out = result.output.clone().unwrap_or(Value::Null);
    let rounds = result
        .step_history
        .iter()
        .find(|s| s.name == "rounds")
        .and_then(|s| s.metadata.get("iterations"))
        .and_then(Value::as_u64);
    let dir = settings.get("dir").and_then(Value::as_str).map_or_else(|| PathBuf::from("."), PathBuf::from);
    let target = dir.join("pipeline.yaml");
    let valid = out.get("valid").and_then(Value::as_bool).unwrap_or(false);
    let report = out.get("report").and_then(Value::as_str).unwrap_or("");
    let yaml = out.get("yaml").and_then(Value::as_str).unwrap_or("");
    let name = out
        .get("name")
        .and_then(Value::as_str)
        .or_else(|| settings.get("name").and_then(Value::as_str))
        .unwrap_or("pipeline");
    let summary = |written: bool| {
        json!({"run_id": run_id, "status": if written { "written" } else { "invalid" }, "valid": valid,
               "path": written.then(|| target.display().to_string()), "name": name, "rounds": rounds,
               "diagnostics": out.get("diagnostics").cloned().unwrap_or(Value::Null)})
    };
    if !valid {
        if args.json {
            outln!("{}", summary(false));
        }
        errln!("the last draft still does not validate (architect run {run_id}):\n{}", report.trim_end());
        errln!("nothing was written; try again with more --max-rounds, a clearer --goal, or another --model");
        return Ok(EXIT_VALIDATION);
    }
    let side_effects: Vec<&str> = out
        .get("side_effects")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let allowed = settings.get("allow_side_effects").and_then(Value::as_bool).unwrap_or(false);
    if !side_effects.is_empty()
        && !allowed
        && !ask(&format!("The blueprint uses skills with side effects: {}. Write it?", side_effects.join(", ")))
    {
        errln!("nothing was written (skills with side effects were not allowed)");
        return Ok(EXIT_VALIDATION);
    }
    if target.exists() && !args.force && args.resume.is_none() {
        return Err(CliError::config(format!("{} appeared meanwhile; use --force to overwrite it", target.display())));
    }
    let tmp = dir.join(".pipeline.yaml.tmp");
    std::fs::write(&tmp, yaml)
        .and_then(|()| std::fs::rename(&tmp, &target))
        .map_err(|e| CliError::config(format!("cannot write {}: {e}", target.display())))?;
    if let Some(usd) = settings.get("budget").and_then(Value::as_f64) {
        write_budget(&dir.join("flujo.toml"), name, usd)?;
    }
    if args.json {
        outln!("{}", summary(true));
    } else {
        let warnings = out.get("warnings").and_then(Value::as_u64).unwrap_or(0);
        outln!(
            "wrote {} ({name}; it validates{})",
            target.display(),
            if warnings > 0 { format!(", with {warnings} warning(s)") } else { String::new() }
        );
        if !report.is_empty() {
            out!("{report}");
        }
        outln!("architect run {run_id}{}", rounds.map(|r| format!(", {r} round(s)")).unwrap_or_default());
        outln!("run it with: flujo run {}", target.display());
    }
    Ok(EXIT_OK)
}

/// Adds `[budgets.pipeline."NAME"] total_cost_usd_limit = USD` to flujo.toml (created when missing); an existing
/// section for the name is left as it is.
fn write_budget(file: &Path, name: &str, usd: f64) -> Result<(), CliError> {
    let existing = std::fs::read_to_string(file).unwrap_or_default();
    let header = format!("[budgets.pipeline.\"{name}\"]");
    if existing.contains(&header) {
        errln!("note: {} already has {header}; the budget was left as it is", file.display());
        return Ok(());
    }
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("\n# Written by `flujo create --budget`.\n{header}\ntotal_cost_usd_limit = {usd}\n"));
    let mut f =
        std::fs::File::create(file).map_err(|e| CliError::config(format!("cannot write {}: {e}", file.display())))?;
    f.write_all(text.as_bytes()).map_err(|e| CliError::config(format!("cannot write {}: {e}", file.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_is_taken_from_the_fence() {
        assert_eq!(extract_yaml("Here:\n```yaml\nname: a\n```\nbye"), "name: a\n");
        assert_eq!(extract_yaml("```\nname: b\n```"), "name: b\n");
        assert_eq!(extract_yaml("```python\nx\n```\n```yml\nname: c\n```"), "name: c\n");
        assert_eq!(extract_yaml("name: d"), "name: d\n");
    }

    #[test]
    fn names_from_goals() {
        assert_eq!(
            name_from_goal("Summarise a web page, then translate it!"),
            "summarise_a_web_page_then_translate_it"
        );
        assert_eq!(name_from_goal("42 things"), "pipeline_42_things");
        assert_eq!(name_from_goal("¿?"), "pipeline");
    }

    #[test]
    fn the_architect_pipeline_loads() {
        let text = architect_blueprint("mock:echo", 3, "- `x`: y");
        let builtins = flujo_skills::BuiltinRegistry::new();
        let mut reg = flujo_skills::BuiltinRegistry::new();
        register_check(&mut reg);
        let opts = flujo_blueprint::LoadOptions { registry: Some(&builtins), ..Default::default() };
        let loaded = flujo_blueprint::load_str(&text, Path::new("a.yaml"), &opts);
        // The check skill is registered by the CLI, not among the built-ins the loader sees here.
        let diags = match loaded {
            Ok(l) => l.diagnostics,
            Err(f) => f.diagnostics,
        };
        assert!(diags.iter().all(|d| d.rule == "BP-SKILL-MISSING" || !d.is_error()), "{diags:?}");
        let opts = flujo_blueprint::LoadOptions { registry: Some(&reg), ..Default::default() };
        assert!(flujo_blueprint::load_str(&text, Path::new("a.yaml"), &opts).is_ok());
    }
}
