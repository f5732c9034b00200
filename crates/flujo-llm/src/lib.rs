//! Flujo's model layer (SPEC §6, §8): providers, agents, structured output, tool calling and pricing.
//!
//! - **Providers** implement one async trait, [`ChatModel`]: `openai:MODEL` (Chat Completions — OpenAI and
//!   every compatible server: vLLM, llama.cpp, …; `ollama:MODEL` with Ollama's defaults; `azure:DEPLOYMENT`
//!   for Azure OpenAI), `openai-responses:MODEL` (the Responses API), `anthropic:MODEL` (Messages API),
//!   `gemini:MODEL` (Google AI `generateContent`), `bedrock:MODEL` (the Converse API, SigV4-signed; cargo
//!   feature `bedrock`, on by default) and the offline `mock:echo` / `mock:json`. One pooled HTTP client
//!   (rustls), request timeouts, bounded retries with exponential backoff on 429/5xx honouring
//!   `Retry-After`, and typed [`LlmError`]s. API keys never appear in errors, logs or `Debug` output. Each
//!   provider's page is in `docs/providers/`.
//! - **Content** beyond text ([`media`]): images and PDF documents as [`ContentPart`]s, from a
//!   `{parts: […]}` step input or from Rust; reasoning ([`ReasoningSettings`]) and prompt-cache settings;
//!   usage with cached, cache-write and reasoning tokens, each priced at its own rate.
//! - **Fallback chains**: an agent whose `model` is a list answers with the first model whose provider
//!   does not fail ([`flujo_core::Skill::fallbacks`]).
//! - **Partial structured output** ([`partial`]): the object a streamed JSON answer holds so far.
//! - **Agents**: [`LlmRegistry`] implements [`flujo_core::ModelRegistry`]; it resolves `provider:model` plus
//!   the agent declaration into an [`LlmAgent`], a [`flujo_core::Skill`] that reports token usage and cost.
//! - **Structured output** ([`structured`]): the `output_schema` goes to the provider in its native form; the
//!   reply is validated, repaired deterministically, and re-asked with the validation error.
//! - **Tools** ([`tools`]): offered in each provider's format, calls parsed into [`ToolCall`]s; the engine
//!   drives the loop through [`ChatModel::chat`].
//! - **Embedders** ([`embed`]): [`LlmRegistry::embedder`] resolves `mock:hash[:DIM]` (offline) and
//!   `openai:MODEL` / `ollama:MODEL` / any OpenAI-compatible `[providers.NAME]` to a [`flujo_core::Embedder`]
//!   ([`OpenAiEmbedder`]: batched `/embeddings` requests over the same client, retries, keys and pricing).
//! - **Pricing** ([`pricing`]): `[cost]` of `flujo.toml`; strict mode refuses unpriced models before any call
//!   with the typed [`PricingError::NotConfigured`].
//!
//! What the engine calls:
//!
//! | when | call |
//! |---|---|
//! | building the runner | `builder.models(Arc::new(LlmRegistry::new(LlmConfig::from_toml(&file)?)?))`; an unknown provider is `ResolveError::UnknownModel` |
//! | before the first step | [`flujo_core::Skill::preflight`] of every agent ([`LlmAgent::check_ready`]: strict pricing, API key) → `Interrupt::PricingNotConfigured` / `Interrupt::MissingApiKey` |
//! | before a model call | [`flujo_core::Skill::estimate`] → `Quota::reserve` |
//! | the call | [`flujo_core::Skill::call`] (typed: [`LlmAgent::run_accounted`]) → `SkillOutput {output, tokens, cost_usd, metadata}`, or a `SkillError` carrying the usage billed before it failed ([`AgentFailure`]) → `Quota::reconcile` |
//! | an agentic loop turn | [`LlmRegistry::chat_model`] / [`LlmAgent::chat_model`] → [`ChatModel::chat`]`(messages, tools, settings)` → [`ChatReply`] |
//!
//! ```
//! use flujo_core::ModelRegistry;
//! use flujo_llm::{LlmConfig, LlmRegistry};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let file: toml::Table = "[cost]\nstrict = true\n".parse()?;
//! let registry = LlmRegistry::with_env(LlmConfig::from_toml(&file)?, |_| None)?;
//! let agent = registry.resolve_agent("mock:json", &json!({
//!     "output_schema": {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}
//! }))?;
//! assert_eq!(agent.run(&json!("what is 6 × 7?"), None).await?.output, json!({"answer": 0}));
//! // Strict pricing: an unpriced model is refused before any request.
//! assert!(registry.check_pricing("openai:gpt-4o").is_err());
//! # Ok(()) }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod agent;
pub mod anthropic;
#[cfg(feature = "bedrock")]
pub mod bedrock;
pub mod chat;
pub mod config;
pub mod embed;
pub mod error;
pub mod gemini;
pub mod http;
pub mod media;
pub mod mock;
pub mod openai;
pub mod partial;
pub mod pricing;
pub mod registry;
pub mod responses;
pub mod stream;
pub mod structured;
#[cfg(feature = "test-server")]
pub mod testing;
pub mod tools;
pub mod turn;

pub use agent::{
    render_input, AgentAnswer, AgentFailure, AgentSpec, LlmAgent, ModelSettings, DEFAULT_AGENT_MAX_RETRIES,
};
pub use anthropic::AnthropicModel;
#[cfg(feature = "bedrock")]
pub use bedrock::BedrockModel;
pub use chat::{
    traced_chat, ChatMessage, ChatModel, ChatReply, ChatSettings, ReasoningBlock, ReasoningEffort, ReasoningSettings,
    ResponseSchema, Role, TokenLimitParam, DEFAULT_MAX_TOKENS,
};
pub use config::{LlmConfig, ProviderConfig, ProviderKind, ResolvedProvider, BUILTIN_PROVIDERS};
pub use embed::{EmbedFailure, EmbedderSettings, HashEmbedder, OpenAiEmbedder};
pub use error::LlmError;
pub use gemini::GeminiModel;
pub use http::{parse_retry_after, ApiKey, HttpClient, RetryPolicy};
pub use media::{parts_from_input, ContentPart, MediaSource};
pub use mock::{example_for_schema, MockKind, MockModel};
pub use openai::OpenAiModel;
pub use partial::{parse_partial_json, PartialJson};
pub use pricing::{CostConfig, Price, PricingError, PricingTable};
pub use registry::{parse_model_id, LlmRegistry};
pub use responses::ResponsesModel;
pub use structured::{
    chat_structured, chat_structured_accounted, repair_json, StructuredFailure, StructuredOutput, StructuredReply,
};
pub use tools::{tool_name_for, ToolCall, ToolChoice, ToolSpec};
pub use turn::TurnSkill;
