//! Embedders ([`flujo_core::Embedder`]) for memory and retrieval: the offline `mock:hash` ([`HashEmbedder`])
//! and [`OpenAiEmbedder`], a client of any OpenAI-compatible `POST {base_url}/embeddings` server (OpenAI,
//! Ollama, vLLM, LM Studio, llama.cpp), resolved by [`crate::LlmRegistry::embedder`] from an id:
//!
//! | id | embedder |
//! |---|---|
//! | `mock:hash`, `mock:hash:DIM` | [`HashEmbedder`] of dimension 256 (or `DIM`): no network, no cost |
//! | `openai:MODEL` | OpenAI, or whatever `[providers.openai]` / `OPENAI_BASE_URL` points at |
//! | `NAME:MODEL` | a `[providers.NAME]` of `kind = "openai"` (vLLM, LM Studio, …) |
//! | `ollama:MODEL` | `[providers.ollama]` if configured, else `OLLAMA_BASE_URL`, else `http://localhost:11434/v1` |
//!
//! The OpenAI embedder shares everything with the chat models of the same provider: the `[providers.NAME]`
//! section (base URL, key and its environment variable, timeout, attempts), the pooled HTTP client with its
//! retries (429/5xx/connection failures, `Retry-After` honoured) and typed [`crate::LlmError`]s, and the
//! `[cost]` table: an embedding model is priced by `prompt_tokens_per_1k` of
//! `[cost.providers.NAME."MODEL"]` (or the provider's `"*"`), and under strict pricing an unpriced model is
//! refused by [`flujo_core::Embedder::preflight`] with `Interrupt::PricingNotConfigured` before anything is
//! sent. Texts go in batches ([`EmbedderSettings`]: at most `batch_size` texts and `max_batch_chars`
//! characters per request), one request after the other; the reply is checked (one finite vector per text, all
//! of one dimension) and its `usage.prompt_tokens` priced. [`flujo_core::Embedder::estimate`] bounds what a
//! call may spend (for the run's budget reservation).
//!
//! ```
//! use flujo_llm::{EmbedderSettings, LlmConfig, LlmRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = LlmRegistry::with_env(LlmConfig::default(), |_| None)?;
//! let embedder = registry.embedder("mock:hash:64", &EmbedderSettings::default())?;
//! let out = embedder.embed(&["reset my password".to_owned()]).await?;
//! assert_eq!((embedder.dimension(), out.vectors[0].len()), (Some(64), 64));
//! // Anthropic has no embeddings API: the error lists the usable providers.
//! assert!(registry.embedder("anthropic:claude", &EmbedderSettings::default()).is_err());
//! # Ok(()) }
//! ```

mod hash;
mod openai;
mod resolve;

pub use hash::{HashEmbedder, HASH_DIMENSION, MIN_HASH_DIMENSION};
pub use openai::{EmbedFailure, OpenAiEmbedder, DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_CHARS};
pub(crate) use resolve::{resolve_embedder, resolve_openai_embedder};
pub use resolve::{EmbedderSettings, OLLAMA_BASE_URL};

#[cfg(all(test, feature = "test-server"))]
mod tests;
