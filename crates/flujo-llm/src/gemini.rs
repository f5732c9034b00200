//! `gemini:MODEL` — Google AI `generateContent`. (Being built: see issue 18.)

use std::sync::Arc;

use async_trait::async_trait;

use crate::chat::{ChatMessage, ChatModel, ChatReply, ChatSettings};
use crate::config::ResolvedProvider;
use crate::error::LlmError;
use crate::http::HttpClient;
use crate::tools::ToolSpec;

/// A model of this provider.
#[derive(Debug, Clone)]
pub struct GeminiModel {
    provider: Arc<ResolvedProvider>,
    model: String,
    #[allow(dead_code)]
    http: HttpClient,
}

impl GeminiModel {
    pub fn new(provider: Arc<ResolvedProvider>, model: impl Into<String>, http: HttpClient) -> Self {
        GeminiModel { provider, model: model.into(), http }
    }
}

#[async_trait]
impl ChatModel for GeminiModel {
    fn provider(&self) -> &str {
        &self.provider.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn chat(&self, _: &[ChatMessage], _: &[ToolSpec], _: &ChatSettings) -> Result<ChatReply, LlmError> {
        Err(LlmError::Config(format!("provider kind of '{}' is not built yet", self.provider.name)))
    }
}
