//! Memory and RAG through the `flujo` binary: documents ingested with `flujo memory add`, retrieved by a
//! `memory_search` step or by an agent's tool, the answer indexed into memory by the blueprint's `memory:`;
//! offline with `mock:hash` and `mock:echo`, then against the local fake provider (real HTTP) with an
//! OpenAI-compatible embeddings endpoint whose cost lands in the run's totals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{code, fake_project, flujo, json_out, project, stderr, stdout};
use flujo_llm::testing::ScriptedReply;
use serde_json::json;

const RETURNS: &str = "# Returns\nYou can return any item within 30 days of delivery for a full refund. Refunds are \
                       issued to the original payment method within 5 business days.\n";
const SHIPPING: &str = "# Shipping\nStandard shipping takes 3 to 5 business days. Express shipping delivers the \
                        next business day.\n";
const WARRANTY: &str = "# Warranty\nAll electronics carry a two-year warranty. It does not cover water damage.\n";

const RAG: &str = r#"version: "0.1"
name: support_rag
memory:
  index: [answer]
agents:
  support:
    model: "MODEL"
    system_prompt: "Answer using only the documents given."
steps:
  - name: retrieve
    agent:
      id: flujo.builtins.memory_search
      params: {k: 1, filter: {collection: help}}
  - name: answer
    uses: agents.support
    input: |
      Question: {{ context.initial_prompt }}
      Documents:
      {% for d in previous_step %}- {{ d.text }}
      {% endfor %}
"#;

fn docs() -> Vec<(&'static str, &'static str)> {
    vec![("returns.md", RETURNS), ("shipping.md", SHIPPING), ("warranty.md", WARRANTY)]
}

#[test]
fn offline_rag_ingests_retrieves_answers_and_indexes_the_answer() {
    let mut files = docs();
    let rag = RAG.replace("MODEL", "mock:echo");
    files.push(("pipeline.yaml", &rag));
    files.push(("flujo.toml", "state_uri = \"sqlite:///state.db\"\n[memory]\nembedder = \"mock:hash\"\n"));
    let dir = project(&files);
    let d = dir.path();

    let o =
        flujo(d, &["memory", "add", "returns.md", "shipping.md", "warranty.md", "--meta", "collection=help", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let added = json_out(&o);
    assert_eq!((added["added"].as_u64(), added["count"].as_u64()), (Some(3), Some(3)), "{added}");
    assert_eq!(added["embedder"], "mock:hash");

    let o = flujo(d, &["run", "-i", "How many days until my refund is issued?", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    let answer = v["output"].as_str().unwrap();
    assert!(answer.contains("Refunds are issued to the original payment method"), "{answer}");
    assert!(!answer.contains("water damage"), "k = 1 retrieves one document: {answer}");
    let hits = &v["step_history"][0]["output"];
    assert_eq!(hits[0]["id"], "returns.md");
    assert!(hits[0]["score"].as_f64().unwrap() > 0.0);
    assert_eq!(v["step_history"][1]["metadata"]["memory"]["indexed"], 1, "the answer is indexed: {v}");
    assert!(v["step_history"][0]["metadata"].get("memory").is_none(), "only `answer` is chosen");

    // The indexed answer is searchable, with its run, pipeline and step.
    let o = flujo(
        d,
        &["memory", "search", "refund issued original payment", "-k", "5", "--where", "step=answer", "--json"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let found = json_out(&o);
    let r = &found["results"][0];
    assert_eq!(
        (r["metadata"]["pipeline"].as_str(), r["metadata"]["run_id"].as_str()),
        (Some("support_rag"), v["run_id"].as_str())
    );
    assert_eq!(found["results"].as_array().unwrap().len(), 1);
    let o = flujo(d, &["memory", "search", "water damage warranty", "-k", "1"]);
    let text = stdout(&o);
    assert!(text.contains("warranty.md") && text.contains("water damage"), "{text}");

    // `lens show` says what was indexed; stats and delete.
    let o = flujo(d, &["lens", "show", v["run_id"].as_str().unwrap()]);
    assert!(stdout(&o).contains("indexed 1 chunk"), "{}", stdout(&o));
    assert_eq!(json_out(&flujo(d, &["memory", "stats", "--json"]))["count"], 4);
    let o = flujo(d, &["memory", "delete", "--where", "collection=help", "--json"]);
    assert_eq!(json_out(&o)["deleted"], 3);
    let o = flujo(d, &["memory", "delete", "nope", "--json"]);
    assert_eq!((code(&o), json_out(&o)["deleted"].as_u64()), (0, Some(0)));
    assert_eq!(json_out(&flujo(d, &["memory", "stats", "--json"]))["count"], 1);
}

#[test]
fn json_lines_and_chunking_and_bad_input() {
    let long = "Paragraph one talks about apples and pears. ".repeat(20);
    let lines = format!(
        "{}\n\n{}\n",
        json!({"text": "Our office is in Madrid.", "id": "office", "metadata": {"kind": "fact"}}),
        json!({"text": long})
    );
    let dir = project(&[
        ("facts.jsonl", &lines),
        ("bad.jsonl", "{\"text\": 1}\n"),
        ("flujo.toml", "state_uri = \"sqlite:///state.db\"\n[memory]\nembedder = \"mock:hash:64\"\nchunk_size = 200\nchunk_overlap = 20\n"),
    ]);
    let d = dir.path();
    let o = flujo(d, &["memory", "add", "--jsonl", "facts.jsonl", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let added = json_out(&o);
    let n = added["added"].as_u64().unwrap();
    assert!(n >= 5, "the long line is chunked: {added}");
    assert_eq!(added["ids"][0], "office");
    assert_eq!(added["ids"][1], "facts.jsonl:3#0", "ids name the line (blank lines count)");
    let o = flujo(d, &["memory", "search", "where is the office", "-k", "1", "--json"]);
    assert_eq!(json_out(&o)["results"][0]["id"], "office");
    let o = flujo(d, &["memory", "stats", "--json"]);
    assert_eq!(json_out(&o)["dimension"], 64);

    let o = flujo(d, &["memory", "add", "--jsonl", "bad.jsonl"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("bad.jsonl line 1: expected an object with a string `text`"), "{}", stderr(&o));
    // Another embedder's dimension is refused by the store, nothing written.
    let o = flujo(d, &["memory", "add", "--text", "x", "--embedder", "mock:hash:32"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("dimension 32, the store's is 64"), "{}", stderr(&o));
    let o = flujo(d, &["memory", "search", "x", "--embedder", "mock:hash:32"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("query embedding has dimension 32"), "{}", stderr(&o));
    for args in [
        &["memory", "add"][..],
        &["memory", "search", "q", "-k", "0"],
        &["memory", "delete"],
        &["memory", "add", "--text", "x", "--meta", "novalue"],
        &["memory", "add", "missing.txt"],
    ] {
        let o = flujo(d, args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn memory_settings_are_checked() {
    let step = "version: \"0.1\"\nname: m\nsteps:\n  - name: s\n    agent: {id: flujo.builtins.memory_search}\n";
    // No [memory]: the step fails with a clear message, the run exits 1.
    let dir = project(&[("pipeline.yaml", step), ("flujo.toml", "state_uri = \"sqlite:///state.db\"\n")]);
    let o = flujo(dir.path(), &["run", "-i", "q", "--json"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(json_out(&o)["step_history"][0]["feedback"].as_str().unwrap().contains("memory is off"));
    // [memory] without an embedder, an unknown key, a bad index: configuration errors (exit 2).
    for (toml, says) in [
        ("[memory]\nuri = \"memory://\"\n", "memory needs an embedder"),
        ("[memory]\nembedder = \"mock:hash\"\nembeder = 1\n", "unknown field `embeder`"),
        ("[memory]\nembedder = \"mock:hash\"\nindex = \"some\"\n", "[memory] index"),
        ("[memory]\nembedder = \"mock:hash\"\nchunk_size = 10\nchunk_overlap = 6\n", "chunk_overlap"),
        ("[memory]\nembedder = \"anthropic:claude\"\n", "embedder"),
    ] {
        std::fs::write(dir.path().join("flujo.toml"), format!("state_uri = \"sqlite:///state.db\"\n{toml}")).unwrap();
        let o = flujo(dir.path(), &["run", "-i", "q"]);
        assert_eq!(code(&o), 2, "{toml}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{toml}: {}", stderr(&o));
    }
    // `memory:` in the blueprint alone turns memory on; its embedder is used when flujo.toml names none.
    std::fs::write(dir.path().join("flujo.toml"), "state_uri = \"sqlite:///state.db\"\n").unwrap();
    let own = step.replace("steps:", "memory:\n  embedder: \"mock:hash\"\n  index: all\nsteps:");
    std::fs::write(dir.path().join("pipeline.yaml"), own).unwrap();
    let o = flujo(dir.path(), &["run", "-i", "q", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["output"], json!([]), "nothing remembered yet");
    // `[memory] enabled = false` wins.
    std::fs::write(dir.path().join("flujo.toml"), "state_uri = \"sqlite:///state.db\"\n[memory]\nenabled = false\n")
        .unwrap();
    let o = flujo(dir.path(), &["run", "-i", "q"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("[memory] enabled = false"), "{}", stderr(&o));
}

const PRICES: &str =
    "[cost.providers.openai.\"gpt-test\"]\nprompt_tokens_per_1k = 1.0\ncompletion_tokens_per_1k = 2.0\n\
                      [cost.providers.openai.\"text-embedding-3-small\"]\nprompt_tokens_per_1k = 0.5\n\
                      completion_tokens_per_1k = 0\n";

#[test]
fn rag_against_the_fake_provider_shows_the_retrieved_text_and_prices_the_embeddings() {
    let mut files = docs();
    let rag = RAG.replace("MODEL", "openai:gpt-test");
    files.push(("pipeline.yaml", &rag));
    let env = fake_project(
        &files,
        &format!(
            "state_uri = \"sqlite:///state.db\"\n[memory]\nembedder = \"openai:text-embedding-3-small\"\n{PRICES}"
        ),
    );
    let d = env.dir.path();
    let o =
        flujo(d, &["memory", "add", "returns.md", "shipping.md", "warranty.md", "--meta", "collection=help", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let added = json_out(&o);
    assert!(added["cost_usd"].as_f64().unwrap() > 0.0, "ingestion is priced: {added}");
    let sent = env.fake.embedding_inputs();
    assert_eq!(sent.len(), 1, "one batch");
    assert!(sent[0][0].contains("Refunds are issued"), "{sent:?}");

    env.fake.push_reply(ScriptedReply::Text("Within 5 business days.".into()));
    let o = flujo(d, &["run", "-i", "When is my refund issued to my payment method?", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(v["output"], "Within 5 business days.");
    let chat: Vec<_> = env.fake.calls().into_iter().filter(|c| c.path.ends_with("/chat/completions")).collect();
    assert_eq!(chat.len(), 1);
    let body = chat[0].body.to_string();
    assert!(
        body.contains("Refunds are issued to the original payment method"),
        "the retrieved text reaches the model: {body}"
    );
    // The query embedding and the answer's indexing were both embedded through the server and priced.
    let sent = env.fake.embedding_inputs();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[1], vec!["When is my refund issued to my payment method?".to_owned()]);
    assert_eq!(sent[2], vec!["Within 5 business days.".to_owned()]);
    let retrieve_cost = v["step_history"][0]["cost_usd"].as_f64().unwrap();
    let answer_cost = v["step_history"][1]["cost_usd"].as_f64().unwrap();
    assert!(retrieve_cost > 0.0, "the search's embedding is the step's cost: {v}");
    let total = v["total_cost_usd"].as_f64().unwrap();
    assert!((total - retrieve_cost - answer_cost).abs() < 1e-9, "{v}");
    assert!(v["step_history"][1]["metadata"]["memory"]["indexed"] == 1, "{v}");
}

#[test]
fn an_agent_searches_memory_as_a_tool() {
    const TOOL: &str = r#"version: "0.1"
name: tool_rag
agents:
  helper:
    model: "openai:gpt-test"
    system_prompt: "Search the memory, then answer."
    tools: [flujo.builtins.memory_search]
    max_turns: 3
steps:
  - name: ask
    uses: agents.helper
"#;
    let mut files = docs();
    files.push(("pipeline.yaml", TOOL));
    let env = fake_project(&files, "state_uri = \"sqlite:///state.db\"\n[memory]\nembedder = \"mock:hash\"\n");
    let d = env.dir.path();
    assert_eq!(code(&flujo(d, &["memory", "add", "returns.md", "warranty.md"])), 0);
    env.fake.push_reply(ScriptedReply::ToolCall {
        name: "flujo_builtins_memory_search".into(),
        arguments: json!({"query": "warranty water damage", "k": 1}),
    });
    env.fake.push_reply(ScriptedReply::Text("Water damage is not covered.".into()));
    let o = flujo(d, &["run", "-i", "Is water damage covered?", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["output"], "Water damage is not covered.");
    let calls = env.fake.calls();
    assert_eq!(calls.len(), 2);
    let first = calls[0].body.to_string();
    assert!(first.contains("flujo_builtins_memory_search"), "the tool is offered: {first}");
    let second = calls[1].body.to_string();
    assert!(second.contains("It does not cover water damage"), "the tool result goes back: {second}");
    assert!(!second.contains("Refunds are issued"), "k = 1");
}

/// `examples/rag` (docs/memory-and-rag.md) does what the page says, offline; the page shows the example's
/// files as they are.
#[test]
fn the_documented_rag_example_runs_offline_as_described() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/rag");
    let page = std::fs::read_to_string(src.join("../../docs/memory-and-rag.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("docs")).unwrap();
    for f in ["flujo.toml", "pipeline.yaml", "docs/returns.md", "docs/shipping.md", "docs/warranty.md"] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
    }
    let yaml = std::fs::read_to_string(src.join("pipeline.yaml")).unwrap();
    assert!(page.contains(&yaml), "the page shows pipeline.yaml as it is");
    let toml = std::fs::read_to_string(src.join("flujo.toml")).unwrap();
    let settings = &toml[toml.find("state_uri").unwrap()..];
    assert!(page.contains(settings), "the page shows flujo.toml's settings as they are");

    let o = flujo(
        d,
        &["memory", "add", "docs/returns.md", "docs/shipping.md", "docs/warranty.md", "--meta", "collection=help"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = flujo(d, &["memory", "search", "how long do refunds take", "-k", "2"]);
    let first = stdout(&o).lines().next().unwrap_or_default().to_owned();
    assert!(first.contains("docs/returns.md"), "{}", stdout(&o));
    let o = flujo(d, &["run", "-i", "How long do refunds take?", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    let answer = v["output"].as_str().unwrap();
    assert!(answer.contains("(docs/returns.md, score") && answer.contains("within 5 business days"), "{answer}");
    assert_eq!(json_out(&flujo(d, &["memory", "stats", "--json"]))["count"], 4);
    let o = flujo(d, &["lens", "show", v["run_id"].as_str().unwrap()]);
    assert!(stdout(&o).contains("[1] 1: indexed 1 chunk"), "{}", stdout(&o));
}

/// A relative `[memory] uri` is relative to flujo.toml, wherever `flujo` runs from.
#[test]
fn a_relative_memory_uri_is_relative_to_flujo_toml() {
    let dir = project(&[("flujo.toml", "[memory]\nembedder = \"mock:hash\"\nuri = \"sqlite:///mem/memory.db\"\n")]);
    let elsewhere = tempfile::tempdir().unwrap();
    let p = dir.path().to_str().unwrap();
    let o =
        common::cmd(elsewhere.path(), &["--project", p, "memory", "add", "--text", "remember me"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(dir.path().join("mem/memory.db").is_file());
    assert!(!elsewhere.path().join("mem").exists());
}
