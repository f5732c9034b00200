//! Prices per model and the cost of a call (SPEC §8), read from `flujo.toml`:
//!
//! ```toml
//! [cost]
//! strict = true                        # every model in use needs a [cost] price (default false)
//! builtin_prices = true                # lenient mode: unpriced models take the built-in list price (default)
//! [cost.providers.openai."gpt-4o"]
//! prompt_tokens_per_1k = 0.0025
//! completion_tokens_per_1k = 0.01
//! cached_prompt_tokens_per_1k = 0.00125   # optional detail rates (see [`Price`])
//! [cost.providers.ollama."*"]          # every model of a provider (e.g. free local models)
//! prompt_tokens_per_1k = 0
//! completion_tokens_per_1k = 0
//! ```
//!
//! A model's price is, in order: its `[cost]` entry, its provider's `[cost]` `"*"` entry, and — in lenient
//! mode with `builtin_prices` on — its entry in the dated built-in table of list prices ([`builtin`]).
//! `mock:` models are free and always priced. In strict mode only `[cost]` counts: a model without a price
//! there is [`PricingError::NotConfigured`], which the engine raises as
//! [`flujo_core::Interrupt::PricingNotConfigured`] *before* any request is sent; in lenient mode a model in
//! neither costs 0. Unknown keys are errors, never silently ignored.

pub mod builtin;

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

/// USD per 1000 tokens. The detail rates default to the main ones: cached and cache-write tokens are parts of
/// the prompt, priced at `prompt_tokens_per_1k` unless their own rate is set; reasoning tokens are part of the
/// completion, priced at `completion_tokens_per_1k` unless `reasoning_tokens_per_1k` is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub prompt_tokens_per_1k: f64,
    pub completion_tokens_per_1k: f64,
    /// Prompt tokens read from the provider's cache (OpenAI, Gemini: about a tenth to a half of the prompt
    /// price; Anthropic: a tenth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_prompt_tokens_per_1k: Option<f64>,
    /// Prompt tokens written to the cache (Anthropic: 1.25× the prompt price for the 5-minute cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens_per_1k: Option<f64>,
    /// Reasoning tokens (billed as completion tokens by every provider today).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens_per_1k: Option<f64>,
}

impl Price {
    /// A model that costs nothing.
    pub const FREE: Price = Price::new(0.0, 0.0);

    /// USD per 1000 prompt and completion tokens; detail rates follow them.
    pub const fn new(prompt_tokens_per_1k: f64, completion_tokens_per_1k: f64) -> Self {
        Price {
            prompt_tokens_per_1k,
            completion_tokens_per_1k,
            cached_prompt_tokens_per_1k: None,
            cache_write_tokens_per_1k: None,
            reasoning_tokens_per_1k: None,
        }
    }

    /// This price with the cache-read rate set (cache writes stay at the prompt rate).
    pub const fn with_cached_rate(mut self, cached_per_1k: f64) -> Self {
        self.cached_prompt_tokens_per_1k = Some(cached_per_1k);
        self
    }

    /// This price with the cache-read and cache-write rates set.
    pub const fn with_cache_rates(mut self, cached_per_1k: f64, cache_write_per_1k: f64) -> Self {
        self.cached_prompt_tokens_per_1k = Some(cached_per_1k);
        self.cache_write_tokens_per_1k = Some(cache_write_per_1k);
        self
    }

    /// This price with the reasoning rate set.
    pub const fn with_reasoning_rate(mut self, per_1k: f64) -> Self {
        self.reasoning_tokens_per_1k = Some(per_1k);
        self
    }

    /// The cost in USD of `usage`: plain prompt tokens, cached and cache-write tokens, plain completion tokens
    /// and reasoning tokens, each at its rate (details larger than their total are capped at it).
    pub fn cost(&self, usage: TokenUsage) -> f64 {
        let cached = usage.cached.min(usage.prompt);
        let written = usage.cache_write.min(usage.prompt - cached);
        let plain_prompt = usage.prompt - cached - written;
        let reasoning = usage.reasoning.min(usage.completion);
        let plain_completion = usage.completion - reasoning;
        let per = |n: u64, rate: f64| n as f64 / 1000.0 * rate;
        per(plain_prompt, self.prompt_tokens_per_1k)
            + per(cached, self.cached_prompt_tokens_per_1k.unwrap_or(self.prompt_tokens_per_1k))
            + per(written, self.cache_write_tokens_per_1k.unwrap_or(self.prompt_tokens_per_1k))
            + per(plain_completion, self.completion_tokens_per_1k)
            + per(reasoning, self.reasoning_tokens_per_1k.unwrap_or(self.completion_tokens_per_1k))
    }

    /// Every rate with its key, for validation and display.
    pub fn rates(&self) -> [(&'static str, Option<f64>); 5] {
        [
            ("prompt_tokens_per_1k", Some(self.prompt_tokens_per_1k)),
            ("completion_tokens_per_1k", Some(self.completion_tokens_per_1k)),
            ("cached_prompt_tokens_per_1k", self.cached_prompt_tokens_per_1k),
            ("cache_write_tokens_per_1k", self.cache_write_tokens_per_1k),
            ("reasoning_tokens_per_1k", self.reasoning_tokens_per_1k),
        ]
    }
}

/// The `[cost]` section as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostConfig {
    /// Only `[cost]` prices count; a model without one halts the run before its call.
    #[serde(default)]
    pub strict: bool,
    /// In lenient mode, price models missing from `[cost]` with the built-in table (default `true`).
    #[serde(default = "default_builtin_prices")]
    pub builtin_prices: bool,
    /// provider → model (or `"*"`) → price.
    #[serde(default)]
    pub providers: BTreeMap<String, BTreeMap<String, Price>>,
}

fn default_builtin_prices() -> bool {
    true
}

impl Default for CostConfig {
    /// Lenient, built-in prices on, no `[cost]` prices: what a `flujo.toml` without `[cost]` means.
    fn default() -> Self {
        CostConfig { strict: false, builtin_prices: true, providers: BTreeMap::new() }
    }
}

/// Where a model's price came from ([`PricingTable::lookup`]).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum PriceSource<'a> {
    /// `mock:` models: always free.
    Mock,
    /// A `[cost.providers.PROVIDER."MODEL"]` entry; `model` is the entry's key (the model, or `"*"`).
    Configured { model: &'a str },
    /// The built-in table's entry named `model` (the model, its base name, or `"*"`).
    Builtin { model: &'static str },
}

/// The validated price list: the `[cost]` prices, strict or lenient, with or without the built-in table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PricingTable {
    strict: bool,
    builtin: bool,
    providers: BTreeMap<String, BTreeMap<String, Price>>,
}

/// The provider whose models are always free.
pub const MOCK_PROVIDER: &str = "mock";

impl PricingTable {
    /// An empty, lenient table without the built-in prices: every model costs 0 until priced with
    /// [`PricingTable::with_price`] (turn the built-in table on with [`PricingTable::builtin_prices`]).
    pub fn new() -> Self {
        PricingTable::default()
    }

    /// What a `flujo.toml` without `[cost]` gives: lenient, priced by the built-in table.
    pub fn with_builtin_prices() -> Self {
        PricingTable::new().builtin_prices(true)
    }

    /// Validates a `[cost]` section: prices must be finite and non-negative.
    pub fn from_config(config: CostConfig) -> Result<Self, PricingError> {
        for (provider, models) in &config.providers {
            for (model, price) in models {
                for (what, v) in price.rates().into_iter().filter_map(|(k, v)| v.map(|v| (k, v))) {
                    if !v.is_finite() || v < 0.0 {
                        return Err(PricingError::Invalid(format!(
                            "cost.providers.{provider}.\"{model}\".{what} must be a non-negative number, got {v}"
                        )));
                    }
                }
            }
        }
        Ok(PricingTable { strict: config.strict, builtin: config.builtin_prices, providers: config.providers })
    }

    /// Reads the `[cost]` section of a parsed `flujo.toml` (the whole file's table); no section = lenient,
    /// no `[cost]` prices, built-in prices on.
    pub fn from_toml(file: &toml::Table) -> Result<Self, PricingError> {
        match file.get("cost") {
            None => Ok(PricingTable::with_builtin_prices()),
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

    /// Turns the built-in table (used in lenient mode for models without a `[cost]` price) on or off.
    pub fn builtin_prices(mut self, on: bool) -> Self {
        self.builtin = on;
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

    /// Whether the built-in table is on (`[cost] builtin_prices`); it applies only in lenient mode.
    pub fn builtin_prices_on(&self) -> bool {
        self.builtin
    }

    /// Whether models without a `[cost]` price take the built-in one: lenient mode with the table on.
    pub fn uses_builtin_prices(&self) -> bool {
        self.builtin && !self.strict
    }

    /// The `[cost]` prices: `(provider, model or "*", price)`, sorted.
    pub fn configured(&self) -> impl Iterator<Item = (&str, &str, &Price)> + '_ {
        self.providers
            .iter()
            .flat_map(|(provider, models)| models.iter().map(move |(model, p)| (provider.as_str(), model.as_str(), p)))
    }

    /// The price of `provider:model`, in order: free for `mock:`; its `[cost]` entry; the provider's `[cost]`
    /// `"*"` entry; then, in lenient mode with built-in prices on, the built-in table
    /// ([`builtin::builtin_price`]). `Ok(None)` when unknown in lenient mode (the call costs 0),
    /// [`PricingError::NotConfigured`] when unknown to `[cost]` in strict mode (the built-in table never
    /// satisfies strict mode).
    pub fn price(&self, provider: &str, model: &str) -> Result<Option<Price>, PricingError> {
        self.lookup(provider, model).map(|found| found.map(|(p, _)| p))
    }

    /// [`PricingTable::price`] with where the price came from.
    pub fn lookup(&self, provider: &str, model: &str) -> Result<Option<(Price, PriceSource<'_>)>, PricingError> {
        if provider == MOCK_PROVIDER {
            return Ok(Some((Price::FREE, PriceSource::Mock)));
        }
        let configured = self
            .providers
            .get(provider)
            .and_then(|models| models.get_key_value(model).or_else(|| models.get_key_value("*")));
        if let Some((key, p)) = configured {
            return Ok(Some((*p, PriceSource::Configured { model: key.as_str() })));
        }
        if self.strict {
            return Err(PricingError::NotConfigured { provider: provider.to_owned(), model: model.to_owned() });
        }
        if self.builtin {
            if let Some(b) = builtin::builtin_price(provider, model) {
                return Ok(Some((b.price, PriceSource::Builtin { model: b.model })));
            }
        }
        Ok(None)
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
    fn lenient_mode_takes_builtin_prices_for_models_missing_from_cost() {
        let builtin_gpt4o = builtin::builtin_price("openai", "gpt-4o").unwrap().price;
        // No [cost] section at all: lenient, built-in prices on.
        let t = table("").unwrap();
        assert!(t.uses_builtin_prices());
        assert_eq!(t.price("openai", "gpt-4o").unwrap(), Some(builtin_gpt4o));
        assert_eq!(
            t.lookup("anthropic", "claude-sonnet-4-5-20250929").unwrap().map(|(_, s)| s),
            Some(PriceSource::Builtin { model: "claude-sonnet-4-5" })
        );
        // A model in neither costs 0 as before.
        assert_eq!(t.price("openai", "gpt-test").unwrap(), None);
        assert_eq!(t.price("local", "gpt-4o").unwrap(), None);
        // [cost] always wins: an exact entry, then the provider's "*".
        let t = table(
            "[cost.providers.openai.\"gpt-4o\"]\nprompt_tokens_per_1k = 1\ncompletion_tokens_per_1k = 2\n\
             [cost.providers.anthropic.\"*\"]\nprompt_tokens_per_1k = 0\ncompletion_tokens_per_1k = 0\n",
        )
        .unwrap();
        assert_eq!(t.price("openai", "gpt-4o").unwrap(), Some(Price::new(1.0, 2.0)));
        assert_eq!(
            t.lookup("openai", "gpt-4o").unwrap().map(|(_, s)| s),
            Some(PriceSource::Configured { model: "gpt-4o" })
        );
        assert_eq!(
            t.lookup("anthropic", "claude-haiku-4-5").unwrap(),
            Some((Price::FREE, PriceSource::Configured { model: "*" }))
        );
        assert_eq!(
            t.price("openai", "gpt-4o-mini").unwrap(),
            builtin::builtin_price("openai", "gpt-4o-mini").map(|b| b.price)
        );
        // Turned off: as before the table existed.
        let t = table("[cost]\nbuiltin_prices = false\n").unwrap();
        assert!(!t.uses_builtin_prices());
        assert_eq!(t.price("openai", "gpt-4o").unwrap(), None);
        // PricingTable::new() is empty; with_builtin_prices() is what no [cost] section gives.
        assert_eq!(PricingTable::new().price("openai", "gpt-4o").unwrap(), None);
        assert_eq!(PricingTable::with_builtin_prices(), table("").unwrap());
        assert_eq!(CostConfig::default(), toml::from_str::<CostConfig>("").unwrap());
    }

    #[test]
    fn strict_mode_counts_only_cost_prices() {
        let t = table("[cost]\nstrict = true\nbuiltin_prices = true\n").unwrap();
        assert!(!t.uses_builtin_prices() && t.builtin_prices_on());
        let err = t.price("openai", "gpt-4o").unwrap_err();
        assert_eq!(err, PricingError::NotConfigured { provider: "openai".into(), model: "gpt-4o".into() });
        assert!(t.check("anthropic", "claude-sonnet-4-5").is_err());
        assert!(t.check("mock", "echo").is_ok());
        assert_eq!(t.lookup("mock", "echo").unwrap(), Some((Price::FREE, PriceSource::Mock)));
        let t = t.with_price("openai", "gpt-4o", Price::new(0.5, 0.5));
        assert_eq!(t.price("openai", "gpt-4o").unwrap(), Some(Price::new(0.5, 0.5)));
        assert_eq!(t.configured().collect::<Vec<_>>(), [("openai", "gpt-4o", &Price::new(0.5, 0.5))]);
    }

    #[test]
    fn builtin_detail_rates_price_cached_and_reasoning_tokens() {
        let t = PricingTable::with_builtin_prices();
        // Claude Sonnet 4.5: $3 / $15 per million, cache reads $0.30, cache writes $3.75.
        let p = t.price("anthropic", "claude-sonnet-4-5").unwrap().unwrap();
        let usage = TokenUsage::new(10_000, 2_000).with_cache(6_000, 2_000).with_reasoning(1_500);
        let want = 2.0 * 0.003 + 6.0 * 0.000_3 + 2.0 * 0.003_75 + 2.0 * 0.015;
        assert!((p.cost(usage) - want).abs() < 1e-12, "{} vs {want}", p.cost(usage));
        // gpt-4o: cached prompt tokens at half the prompt rate; cache writes at the prompt rate.
        let p = t.price("openai", "gpt-4o-2024-08-06").unwrap().unwrap();
        let usage = TokenUsage::new(4_000, 1_000).with_cache(2_000, 0);
        let want = 2.0 * 0.002_5 + 2.0 * 0.001_25 + 0.01;
        assert!((p.cost(usage) - want).abs() < 1e-12, "{} vs {want}", p.cost(usage));
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
        let p = Price::new(0.5, 2.0);
        let c = p.cost(TokenUsage::new(2000, 500));
        assert!((c - 2.0).abs() < 1e-12);
        // Details default to the main rates: the same usage with details costs the same.
        let detailed = TokenUsage::new(2000, 500).with_cache(1000, 500).with_reasoning(100);
        assert!((p.cost(detailed) - 2.0).abs() < 1e-12);
        // With their own rates: 500 plain + 1000 cached at 0.05 + 500 written at 1.0; 400 + 100 reasoning at 4.
        let p = p.with_cache_rates(0.05, 1.0).with_reasoning_rate(4.0);
        let want = 0.25 + 0.05 + 0.5 + 0.8 + 0.4;
        assert!((p.cost(detailed) - want).abs() < 1e-12, "{}", p.cost(detailed));
        // Inconsistent details never make the cost negative or count a token twice.
        let odd = TokenUsage::new(10, 10).with_cache(50, 50).with_reasoning(99);
        assert!((p.cost(odd) - (10.0 * 0.05 + 10.0 * 4.0) / 1000.0).abs() < 1e-12);
    }
}
