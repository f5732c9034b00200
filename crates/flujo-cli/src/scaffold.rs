//! `flujo init`: scaffolds a project whose pipeline runs offline and shows a loop, a conditional, a parallel
//! step and a human approval.

use std::path::Path;

use crate::{CliError, EXIT_OK};

pub const PIPELINE_YAML: &str = r#"version: "0.1"
name: hello_flujo
# Runs offline: built-in skills only. Try:
#   flujo run                         (pauses at the approval, exit code 5; `--input-json 2` starts at 2)
#   flujo resume RUN_ID -i yes        (continues from the pause by replaying the journal)
agents:
  # An offline model: `mock:echo` answers with its input. Swap in `openai:gpt-4o-mini` (with
  # OPENAI_API_KEY, or [providers.openai] in flujo.toml) or `anthropic:...` for a real one.
  editor:
    model: "mock:echo"
    system_prompt: "Polish the report."
steps:
  - kind: loop
    name: count
    loop:
      max_loops: 10
      exit_expression: "previous_step >= 3"
      body:
        - name: inc
          # `or 0`: with no input (`flujo run`), the count starts from 0 too.
          agent: {id: flujo.builtins.transform, params: {expr: "(previous_step or 0) + 1"}}
    sink_to: counted

  - kind: conditional
    name: size
    condition_expression: "previous_step > 2"
    branches:
      "true":
        - name: say_big
          agent: {id: flujo.builtins.transform, params: {expr: "'a big number: ' ~ previous_step"}}
      "false":
        - name: say_small
          agent: {id: flujo.builtins.transform, params: {expr: "'a small number'"}}

  - kind: parallel
    name: fan_out
    branches:
      shout:
        - name: upper
          agent: {id: flujo.builtins.transform, params: {expr: "previous_step | upper"}}
      measure:
        - name: words
          agent: shout_words

  - kind: hitl
    name: approve
    message: "Publish '{{ previous_step.shout }}'? (yes/no)"
    input_schema: {type: string, enum: ["yes", "no"]}
    sink_to: decision

  - name: report
    agent: {id: flujo.builtins.transform, params: {expr: "'decision=' ~ context.decision ~ ', counted=' ~ context.counted"}}

  - name: polish
    uses: agents.editor
"#;

pub const SKILLS_YAML: &str = r#"# Skills for this project. A `command` skill runs a program in this folder: it reads the step input as
# JSON on stdin and writes its output as JSON on stdout.
skills:
  shout_words:
    description: Count the words of a string (a tiny command skill).
    command: ["sh", "-c", "tr -d '\"' | wc -w"]
    input_schema: {type: string}
    output_schema: {type: integer}
    timeout_s: 10
    side_effects: false
"#;

pub const FLUJO_TOML: &str = r#"# Flujo project configuration. Environment variables FLUJO_* override these values.
state_uri = "sqlite:///.flujo/state.db"

[templates]
strict = false
"#;

pub fn init(force: bool) -> Result<u8, CliError> {
    let files = [("flujo.toml", FLUJO_TOML), ("pipeline.yaml", PIPELINE_YAML), ("skills.yaml", SKILLS_YAML)];
    if !force {
        let existing: Vec<&str> = files.iter().map(|(n, _)| *n).filter(|n| Path::new(n).exists()).collect();
        if !existing.is_empty() {
            return Err(CliError::config(format!(
                "{} already exist(s); use --force to overwrite",
                existing.join(", ")
            )));
        }
    }
    std::fs::create_dir_all(".flujo").map_err(|e| CliError::config(format!("cannot create .flujo/: {e}")))?;
    for (name, text) in files {
        std::fs::write(name, text).map_err(|e| CliError::config(format!("cannot write {name}: {e}")))?;
        errln!("created {name}");
    }
    errln!("created .flujo/\nnext: flujo run");
    Ok(EXIT_OK)
}
