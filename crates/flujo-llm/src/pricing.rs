//! Prices per model and the cost of a call (SPEC §8), read from `flujo.toml`:
//!
//! ```toml
//! [cost]
//! strict = true
//! [cost.providers.openai."gpt-4o"]
//! prompt_tokens_per_1k = 0.0025
//! completion_tokens_per_1k = 0.01
//! [cost.providers.ollama."*"]          # every model of a provider (e.g. free local models)
//! prompt_tokens_per_1k = 0
//! completion_tokens_per_1k = 0
//! ```
//!
//! A model's price is its exact entry, else its provider's `"*"` entry. `mock:` models are free and always
//! priced. In strict mode a model without a price is [`PricingError::NotConfigured`], which the engine raises
//! as [`flujo_core::Interrupt::PricingNotConfigured`] *before* any request is sent; in lenient mode it costs 0.
//! Unknown keys are errors, never silently ignored.

use std::collections::BTreeMap;

use flujo_core::{Interrupt, TokenUsage};
use serde::{Deserialize, Serialize};

/// A pricing failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PricingError {
    /// Strict pricing and no price for `provider:model`.
    #[error("pricing not configured for {provider}:{model} (add [cost.providers.{provider}.\"{model}\"] to flujo.toml, or set [cost] strict = false)")]
    NotConfigured { provider: String, model: String },
    /// The `[cost]` section is malformed.
    #[error("invalid [cost] configuration: {0}")]
    Invalid(String),
}

impl PricingError {
    /// The run-level interrupt for this error: `PricingNotConfigured` (CLI exit 2), or `None` for a malformed
    /// table (a configuration error, reported when the runner is built).
    pub fn to_interrupt(&self) -> Option<Interrupt> {
        match self {
            PricingError::NotConfigured { provider, model } => {
                Some(Interrupt::PricingNotConfigured { provider: provider.clone(), model: model.clone() })
            }
            PricingError::Invalid(_) => None,
        }
    }
}

/// USD per 1000 tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub prompt_tokens_per_1k: f64,
    pub completion_tokens_per_1k: f64,
}

impl Price {
    /// A model that costs nothing.
    pub const FREE: Price = Price { prompt_tokens_per_1k: 0.0, completion_tokens_per_1k: 0.0 };

    /// The cost in USD of `usage`.
    pub fn cost(&self, usage: TokenUsage) -> f64 {
        usage.prompt as f64 / 1000.0 * self.prompt_tokens_per_1k
            + usage.completion as f64 / 1000.0 * self.completion_tokens_per_1k
    }
}

/// The `[cost]` section as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostConfig {
    #[serde(default)]
    pub strict: bool,
    /// provider → model (or `"*"`) → price.
    #[serde(default)]
    pub providers: BTreeMap<String, BTreeMap<String, Price>>,
}

/// The validated price list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PricingTable {
    strict: bool,
    providers: BTreeMap<String, BTreeMap<String, Price>>,
}

/// The provider whose models are always free.
pub const MOCK_PROVIDER: &str = "mock";

impl PricingTable {
    /// An empty, lenient table (every model costs 0).
    pub fn new() -> Self {
        PricingTable::default()
    }

    /// Validates a `[cost]` section: prices must be finite and non-negative.
    pub fn from_config(config: CostConfig) -> Result<Self, PricingError> {
        for (provider, models) in &config.providers {
            for (model, price) in models {
                for (what, v) in [
                    ("prompt_tokens_per_1k", price.prompt_tokens_per_1k),
                    ("completion_tokens_per_1k", price.completion_tokens_per_1k),
                ] {
                    if !v.is_finite() || v < 0.0 {
                        return Err(PricingError::Invalid(format!(
                            "cost.providers.{provider}.\"{model}\".{what} must be a non-negative number, got {v}"
                        )));
                    }
                }
            }
        }
        Ok(PricingTable { strict: config.strict, providers: config.providers })
    }

    /// Reads the `[cost]` section of a parsed `flujo.toml` (the whole file's table); no section = lenient, empty.
    pub fn from_toml(file: &toml::Table) -> Result<Self, PricingError> {
        match file.get("cost") {
            None => Ok(PricingTable::new()),
            Some(toml::Value::Table(cost)) => {
                let config: CostConfig = toml::Value::Table(cost.clone())
                    .try_into()
                    .map_err(|e: toml::de::Error| PricingError::Invalid(e.message().to_owned()))?;
                PricingTable::from_config(config)
            }
            Some(other) => Err(PricingError::Invalid(format!("[cost] must be a table, got {}", other.type_str()))),
        }
    }

    /// Sets strict mode.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Adds (or replaces) a price; `model` may be `"*"`.
    pub fn with_price(mut self, provider: &str, model: &str, price: Price) -> Self {
        self.providers.entry(provider.to_owned()).or_default().insert(model.to_owned(), price);
        self
    }

    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// The price of `provider:model`: `Ok(None)` when unknown in lenient mode, [`PricingError::NotConfigured`]
    /// when unknown in strict mode.
    pub fn price(&self, provider: &str, model: &str) -> Result<Option<Price>, PricingError> {
        if provider == MOCK_PROVIDER {
            return Ok(Some(Price::FREE));
        }
        let found = self.providers.get(provider).and_then(|models| models.get(model).or_else(|| models.get("*")));
        match found {
            Some(p) => Ok(Some(*p)),
            None if self.strict => {
                Err(PricingError::NotConfigured { provider: provider.to_owned(), model: model.to_owned() })
            }
            None => Ok(None),
        }
    }

    /// `Ok` when a call to `provider:model` may proceed (priced, or lenient mode).
    pub fn check(&self, provider: &str, model: &str) -> Result<(), PricingError> {
        self.price(provider, model).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(src: &str) -> Result<PricingTable, PricingError> {
        PricingTable::from_toml(&src.parse::<toml::Table>().unwrap())
    }

    #[test]
    fn parses_flujo_toml_cost_section() {
        let t = table(
            r#"
            state_uri = "memory://"
            [cost]
            strict = true
            [cost.providers.openai."gpt-4o"]
            prompt_tokens_per_1k = 0.005
            completion_tokens_per_1k = 0.015
            [cost.providers.ollama."*"]
            prompt_tokens_per_1k = 0
            completion_tokens_per_1k = 0
            "#,
        )
        .unwrap();
        assert!(t.is_strict());
        let p = t.price("openai", "gpt-4o").unwrap().unwrap();
        assert_eq!(p.prompt_tokens_per_1k, 0.005);
        assert_eq!(t.price("ollama", "llama3").unwrap(), Some(Price::FREE));
        assert_eq!(t.price("mock", "echo").unwrap(), Some(Price::FREE));
        let err = t.price("openai", "gpt-5").unwrap_err();
        assert_eq!(err, PricingError::NotConfigured { provider: "openai".into(), model: "gpt-5".into() });
        assert!(matches!(err.to_interrupt(), Some(Interrupt::PricingNotConfigured { .. })));
    }

    #[test]
    fn lenient_unknown_is_none_and_missing_section_is_lenient() {
        let t = table("[cost]\nstrict = false\n").unwrap();
        assert_eq!(t.price("openai", "x").unwrap(), None);
        assert!(!table("").unwrap().is_strict());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_prices() {
        let e = table("[cost]\nstrikt = true\n").unwrap_err();
        assert!(e.to_string().contains("strikt"), "{e}");
        let e = table("[cost.providers.openai.\"m\"]\nprompt_tokens_per_1k = -1\ncompletion_tokens_per_1k = 0\n")
            .unwrap_err();
        assert!(e.to_string().contains("non-negative"), "{e}");
        let e = table("[cost.providers.openai.\"m\"]\nprompt_tokens_per_1k = 1\n").unwrap_err();
        assert!(e.to_string().contains("completion_tokens_per_1k"), "{e}");
        assert!(table("cost = 3").is_err());
    }

    #[test]
    fn cost_from_usage() {
        let p = Price { prompt_tokens_per_1k: 0.5, completion_tokens_per_1k: 2.0 };
        let c = p.cost(TokenUsage::new(2000, 500));
        assert!((c - 2.0).abs() < 1e-12);
    }
}
