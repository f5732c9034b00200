//! The built-in price table: the vendors' public list prices (USD per 1000 tokens, standard on-demand tier)
//! of the current models of each built-in provider, as of [`BUILTIN_PRICES_AS_OF`].
//!
//! In lenient pricing a model without a `[cost]` entry takes its price from here, so a run shows what it
//! cost instead of $0 (see [`super::PricingTable::price`]); `[cost]` always wins, strict mode ignores this
//! table, and `[cost] builtin_prices = false` turns it off. List prices change: the table is a dated
//! snapshot, not a bill. What it does not express — long-context tiers (Gemini 2.5 Pro and Claude Sonnet 4.x
//! above 200k prompt tokens), batch and priority tiers, regional surcharges, Gemini cache storage, Anthropic's
//! 1-hour cache writes — is priced at the standard rate; set `[cost]` where that matters.
//!
//! Names are matched exactly first, then without a trailing date or version (`gpt-4o-2024-08-06` → `gpt-4o`,
//! `claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`, `claude-3-7-sonnet-latest` → `claude-3-7-sonnet`,
//! `gemini-2.0-flash-001` → `gemini-2.0-flash`), and Bedrock ids without a cross-region inference prefix
//! (`us.anthropic.claude-…` → `anthropic.claude-…`). A snapshot whose list price differs from its base name's
//! has its own entry (`gpt-4o-2024-05-13`).

use super::Price;

/// The date the list prices of this table were taken (ISO 8601).
pub const BUILTIN_PRICES_AS_OF: &str = "2025-12-01";

/// One entry of the built-in table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuiltinPrice {
    /// The provider name as a model id spells it (`openai`, `anthropic`, `bedrock`, …).
    pub provider: &'static str,
    /// The model name, or `"*"` for every model of the provider.
    pub model: &'static str,
    /// USD per 1000 tokens.
    pub price: Price,
}

/// USD per 1000 prompt and completion tokens, and per 1000 cache-read tokens (cache writes at the prompt
/// rate: OpenAI and Gemini charge nothing extra to write their caches).
const fn cached(prompt: f64, completion: f64, cache_read: f64) -> Price {
    Price::new(prompt, completion).with_cached_rate(cache_read)
}

/// An Anthropic price: cache reads at 0.1× and (5-minute) cache writes at 1.25× the prompt rate.
const fn anthropic(prompt: f64, completion: f64, cache_read: f64, cache_write: f64) -> Price {
    Price::new(prompt, completion).with_cache_rates(cache_read, cache_write)
}

/// OpenAI's models, for `openai`, `openai-responses` and `azure` (Azure OpenAI's list prices for the same
/// model names are OpenAI's; an Azure deployment matches when it is named after its model).
const OPENAI: &[(&str, Price)] = &[
    ("gpt-5.1", cached(0.001_25, 0.01, 0.000_125)),
    ("gpt-5", cached(0.001_25, 0.01, 0.000_125)),
    ("gpt-5-mini", cached(0.000_25, 0.002, 0.000_025)),
    ("gpt-5-nano", cached(0.000_05, 0.000_4, 0.000_005)),
    ("gpt-4.1", cached(0.002, 0.008, 0.000_5)),
    ("gpt-4.1-mini", cached(0.000_4, 0.001_6, 0.000_1)),
    ("gpt-4.1-nano", cached(0.000_1, 0.000_4, 0.000_025)),
    ("gpt-4o", cached(0.002_5, 0.01, 0.001_25)),
    // The first gpt-4o snapshot kept its launch price (and has no cached rate).
    ("gpt-4o-2024-05-13", Price::new(0.005, 0.015)),
    ("gpt-4o-mini", cached(0.000_15, 0.000_6, 0.000_075)),
    ("o3", cached(0.002, 0.008, 0.000_5)),
    ("o3-mini", cached(0.001_1, 0.004_4, 0.000_55)),
    ("o4-mini", cached(0.001_1, 0.004_4, 0.000_275)),
    ("o1", cached(0.015, 0.06, 0.007_5)),
];

/// Anthropic's models, by their API names and aliases (dated snapshots match by their base name).
const ANTHROPIC: &[(&str, Price)] = &[
    ("claude-opus-4-5", anthropic(0.005, 0.025, 0.000_5, 0.006_25)),
    ("claude-opus-4-1", anthropic(0.015, 0.075, 0.001_5, 0.018_75)),
    ("claude-opus-4", anthropic(0.015, 0.075, 0.001_5, 0.018_75)),
    ("claude-opus-4-0", anthropic(0.015, 0.075, 0.001_5, 0.018_75)),
    ("claude-sonnet-4-5", anthropic(0.003, 0.015, 0.000_3, 0.003_75)),
    ("claude-sonnet-4", anthropic(0.003, 0.015, 0.000_3, 0.003_75)),
    ("claude-sonnet-4-0", anthropic(0.003, 0.015, 0.000_3, 0.003_75)),
    ("claude-3-7-sonnet", anthropic(0.003, 0.015, 0.000_3, 0.003_75)),
    ("claude-haiku-4-5", anthropic(0.001, 0.005, 0.000_1, 0.001_25)),
    ("claude-3-5-haiku", anthropic(0.000_8, 0.004, 0.000_08, 0.001)),
];

/// Google's Gemini API (paid tier; Gemini 2.5 Pro at its rates for prompts up to 200k tokens).
const GEMINI: &[(&str, Price)] = &[
    ("gemini-2.5-pro", cached(0.001_25, 0.01, 0.000_125)),
    ("gemini-2.5-flash", cached(0.000_3, 0.002_5, 0.000_03)),
    ("gemini-2.5-flash-lite", cached(0.000_1, 0.000_4, 0.000_01)),
    ("gemini-2.0-flash", cached(0.000_1, 0.000_4, 0.000_025)),
    ("gemini-2.0-flash-lite", Price::new(0.000_075, 0.000_3)),
];

/// Amazon Bedrock on-demand prices (US East) by model id: Anthropic's models at Anthropic's list prices,
/// Amazon Nova, Meta Llama.
const BEDROCK: &[(&str, Price)] = &[
    ("anthropic.claude-opus-4-5-20251101-v1:0", anthropic(0.005, 0.025, 0.000_5, 0.006_25)),
    ("anthropic.claude-opus-4-1-20250805-v1:0", anthropic(0.015, 0.075, 0.001_5, 0.018_75)),
    ("anthropic.claude-opus-4-20250514-v1:0", anthropic(0.015, 0.075, 0.001_5, 0.018_75)),
    ("anthropic.claude-sonnet-4-5-20250929-v1:0", anthropic(0.003, 0.015, 0.000_3, 0.003_75)),
    ("anthropic.claude-sonnet-4-20250514-v1:0", anthropic(0.003, 0.015, 0.000_3, 0.003_75)),
    ("anthropic.claude-3-7-sonnet-20250219-v1:0", anthropic(0.003, 0.015, 0.000_3, 0.003_75)),
    ("anthropic.claude-haiku-4-5-20251001-v1:0", anthropic(0.001, 0.005, 0.000_1, 0.001_25)),
    ("anthropic.claude-3-5-haiku-20241022-v1:0", anthropic(0.000_8, 0.004, 0.000_08, 0.001)),
    ("amazon.nova-micro-v1:0", Price::new(0.000_035, 0.000_14)),
    ("amazon.nova-lite-v1:0", Price::new(0.000_06, 0.000_24)),
    ("amazon.nova-pro-v1:0", Price::new(0.000_8, 0.003_2)),
    ("meta.llama3-3-70b-instruct-v1:0", Price::new(0.000_72, 0.000_72)),
    ("meta.llama3-1-70b-instruct-v1:0", Price::new(0.000_72, 0.000_72)),
    ("meta.llama3-1-8b-instruct-v1:0", Price::new(0.000_22, 0.000_22)),
];

/// Local models cost nothing.
const OLLAMA: &[(&str, Price)] = &[("*", Price::FREE)];

/// The providers the table prices, in display order, with their models.
const PROVIDERS: &[(&str, &[(&str, Price)])] = &[
    ("openai", OPENAI),
    ("openai-responses", OPENAI),
    ("azure", OPENAI),
    ("anthropic", ANTHROPIC),
    ("gemini", GEMINI),
    ("bedrock", BEDROCK),
    ("ollama", OLLAMA),
];

/// Every entry of the table: provider by provider (in the order `openai`, `openai-responses`, `azure`,
/// `anthropic`, `gemini`, `bedrock`, `ollama`), models as listed.
pub fn builtin_prices() -> Vec<BuiltinPrice> {
    PROVIDERS
        .iter()
        .flat_map(|(provider, models)| {
            models.iter().map(|(model, price)| BuiltinPrice { provider, model, price: *price })
        })
        .collect()
}

/// The entry that prices `provider:model`, if any: the model's exact name, else its name without a trailing
/// date or version (and, on Bedrock, without a cross-region prefix), else the provider's `"*"` entry.
pub fn builtin_price(provider: &str, model: &str) -> Option<BuiltinPrice> {
    let (provider, models) = PROVIDERS.iter().find(|(p, _)| *p == provider)?;
    let entry = |name: &str| models.iter().find(|(m, _)| *m == name);
    let found = candidate_names(model).into_iter().find_map(entry).or_else(|| entry("*"))?;
    Some(BuiltinPrice { provider, model: found.0, price: found.1 })
}

/// Bedrock cross-region inference profile prefixes (`us.anthropic.claude-…`).
const REGION_PREFIXES: &[&str] = &["us.", "eu.", "apac.", "global.", "jp.", "au.", "ca.", "us-gov."];

/// `model`, then the names it reduces to: without each trailing date or version suffix in turn, then the
/// same from the name without a cross-region prefix.
fn candidate_names(model: &str) -> Vec<&str> {
    let unprefixed = REGION_PREFIXES.iter().find_map(|p| model.strip_prefix(p)).filter(|rest| !rest.is_empty());
    let mut names = Vec::new();
    for start in std::iter::once(model).chain(unprefixed) {
        let mut name = start;
        names.push(name);
        while let Some(shorter) = strip_version_suffix(name) {
            names.push(shorter);
            name = shorter;
        }
    }
    names
}

/// `name` without one trailing snapshot suffix: `-YYYY-MM-DD` (OpenAI), `-YYYYMMDD` (Anthropic), `-latest`,
/// `-NNN` (Gemini's `-001`), `-vN:M` / `-vN` (Bedrock).
fn strip_version_suffix(name: &str) -> Option<&str> {
    let (head, last) = name.rsplit_once('-')?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if head.is_empty() {
        return None;
    }
    if last == "latest" || digits(last, 8) || digits(last, 3) {
        return Some(head);
    }
    if let Some(v) = last.strip_prefix('v') {
        let (major, minor) = v.split_once(':').unwrap_or((v, "0"));
        if !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()) && minor.bytes().all(|b| b.is_ascii_digit()) {
            return Some(head);
        }
    }
    // `-YYYY-MM-DD`: the last three dash-separated parts.
    if digits(last, 2) {
        let (head2, month) = head.rsplit_once('-')?;
        let (head3, year) = head2.rsplit_once('-')?;
        if digits(month, 2) && digits(year, 4) && !head3.is_empty() {
            return Some(head3);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(provider: &str, model: &str) -> Option<(&'static str, Price)> {
        builtin_price(provider, model).map(|b| (b.model, b.price))
    }

    #[test]
    fn the_table_is_dated_and_well_formed() {
        assert_eq!(BUILTIN_PRICES_AS_OF.len(), 10);
        assert!(BUILTIN_PRICES_AS_OF.starts_with("20"), "{BUILTIN_PRICES_AS_OF}");
        let all = builtin_prices();
        assert!(all.len() > 50, "{}", all.len());
        for b in &all {
            for (key, rate) in b.price.rates() {
                if let Some(r) = rate {
                    assert!(r.is_finite() && r >= 0.0, "{}:{} {key} = {r}", b.provider, b.model);
                    // Per 1000 tokens: no list price reaches $1 per 1000 tokens.
                    assert!(r < 0.1, "{}:{} {key} = {r}", b.provider, b.model);
                }
            }
            // Each entry is found under its own name.
            assert_eq!(builtin_price(b.provider, b.model), Some(*b), "{}:{}", b.provider, b.model);
        }
        let mut names: Vec<(&str, &str)> = all.iter().map(|b| (b.provider, b.model)).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "duplicate entries");
    }

    #[test]
    fn every_provider_of_the_brief_is_priced() {
        for model in [
            "gpt-5",
            "gpt-5-mini",
            "gpt-5-nano",
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-4.1-nano",
            "gpt-4o",
            "gpt-4o-mini",
            "o3",
            "o3-mini",
            "o4-mini",
            "o1",
        ] {
            for provider in ["openai", "openai-responses", "azure"] {
                assert_eq!(price(provider, model).map(|p| p.0), Some(model), "{provider}:{model}");
            }
        }
        for model in [
            "claude-opus-4-1",
            "claude-opus-4",
            "claude-sonnet-4-5",
            "claude-sonnet-4",
            "claude-3-7-sonnet",
            "claude-haiku-4-5",
            "claude-3-5-haiku",
        ] {
            assert!(price("anthropic", model).is_some(), "{model}");
        }
        for model in ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash"] {
            let (_, p) = price("gemini", model).unwrap();
            assert!(p.cached_prompt_tokens_per_1k.is_some(), "{model} has a cached rate");
        }
        assert_eq!(price("ollama", "llama3.2"), Some(("*", Price::FREE)));
        assert_eq!(price("local", "gpt-4o"), None, "a provider of the user's own is not priced");
        assert_eq!(price("mock", "echo"), None);
    }

    #[test]
    fn known_list_prices() {
        let gpt4o = price("openai", "gpt-4o").unwrap().1;
        assert_eq!((gpt4o.prompt_tokens_per_1k, gpt4o.completion_tokens_per_1k), (0.0025, 0.01));
        assert_eq!(gpt4o.cached_prompt_tokens_per_1k, Some(0.001_25));
        assert_eq!(gpt4o.cache_write_tokens_per_1k, None, "OpenAI does not charge for cache writes");
        assert_eq!(gpt4o.reasoning_tokens_per_1k, None, "reasoning tokens are completion tokens");
        let sonnet = price("anthropic", "claude-sonnet-4-5").unwrap().1;
        assert_eq!(sonnet, Price::new(0.003, 0.015).with_cache_rates(0.000_3, 0.003_75));
        let pro = price("gemini", "gemini-2.5-pro").unwrap().1;
        assert_eq!((pro.prompt_tokens_per_1k, pro.completion_tokens_per_1k), (0.001_25, 0.01));
    }

    #[test]
    fn anthropic_cache_rates_are_a_tenth_and_five_quarters_of_the_prompt_rate() {
        for b in builtin_prices().iter().filter(|b| b.model.contains("claude")) {
            let p = b.price;
            let read = p.cached_prompt_tokens_per_1k.unwrap();
            let write = p.cache_write_tokens_per_1k.unwrap();
            assert!((read - 0.1 * p.prompt_tokens_per_1k).abs() < 1e-12, "{}:{}", b.provider, b.model);
            assert!((write - 1.25 * p.prompt_tokens_per_1k).abs() < 1e-12, "{}:{}", b.provider, b.model);
        }
    }

    #[test]
    fn bedrock_prices_anthropic_models_as_anthropic_does() {
        for b in builtin_prices().iter().filter(|b| b.provider == "bedrock" && b.model.starts_with("anthropic.")) {
            let api_name = b.model.trim_start_matches("anthropic.").trim_end_matches("-v1:0");
            let (base, p) = price("anthropic", api_name).unwrap();
            assert_eq!(p, b.price, "bedrock {} vs anthropic {base}", b.model);
        }
    }

    #[test]
    fn snapshots_and_aliases_match_their_base_entry() {
        assert_eq!(price("openai", "gpt-4o-2024-08-06").map(|p| p.0), Some("gpt-4o"));
        assert_eq!(price("openai", "gpt-4o-mini-2024-07-18").map(|p| p.0), Some("gpt-4o-mini"));
        assert_eq!(price("azure", "gpt-4.1-2025-04-14").map(|p| p.0), Some("gpt-4.1"));
        assert_eq!(price("openai", "o3-mini-2025-01-31").map(|p| p.0), Some("o3-mini"));
        // A snapshot with a price of its own keeps it.
        assert_eq!(price("openai", "gpt-4o-2024-05-13").map(|p| p.1), Some(Price::new(0.005, 0.015)));
        assert_eq!(price("anthropic", "claude-sonnet-4-5-20250929").map(|p| p.0), Some("claude-sonnet-4-5"));
        assert_eq!(price("anthropic", "claude-opus-4-1-20250805").map(|p| p.0), Some("claude-opus-4-1"));
        assert_eq!(price("anthropic", "claude-opus-4-20250514").map(|p| p.0), Some("claude-opus-4"));
        assert_eq!(price("anthropic", "claude-3-7-sonnet-latest").map(|p| p.0), Some("claude-3-7-sonnet"));
        assert_eq!(price("gemini", "gemini-2.0-flash-001").map(|p| p.0), Some("gemini-2.0-flash"));
        assert_eq!(
            price("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0").map(|p| p.0),
            Some("anthropic.claude-sonnet-4-5-20250929-v1:0")
        );
        assert_eq!(
            price("bedrock", "global.anthropic.claude-haiku-4-5-20251001-v1:0").map(|p| p.0),
            Some("anthropic.claude-haiku-4-5-20251001-v1:0")
        );
    }

    #[test]
    fn a_name_never_reduces_to_a_different_model() {
        // Not suffixes: these are other models (or unknown ones), never priced as their neighbours.
        assert_eq!(price("gemini", "gemini-2.5-flash-lite").map(|p| p.0), Some("gemini-2.5-flash-lite"));
        assert_eq!(price("anthropic", "claude-opus-4-6"), None);
        assert_eq!(price("anthropic", "claude-sonnet-4-7-20260101"), None);
        assert_eq!(price("openai", "gpt-5-pro"), None);
        assert_eq!(price("openai", "gpt-4o-audio-preview"), None);
        assert_eq!(price("gemini", "gemini-2.5-flash-preview-09-2025"), None);
        assert_eq!(price("bedrock", "us.amazon.nova-premier-v1:0"), None);
        assert_eq!(price("openai", ""), None);
        assert_eq!(price("openai", "-2024-08-06"), None);
    }

    #[test]
    fn suffixes() {
        assert_eq!(strip_version_suffix("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(strip_version_suffix("claude-3-5-haiku-20241022"), Some("claude-3-5-haiku"));
        assert_eq!(strip_version_suffix("x-v1:0"), Some("x"));
        assert_eq!(strip_version_suffix("x-v2"), Some("x"));
        assert_eq!(strip_version_suffix("gemini-2.0-flash-001"), Some("gemini-2.0-flash"));
        assert_eq!(strip_version_suffix("claude-opus-4-1"), None);
        assert_eq!(strip_version_suffix("gpt-4.1-mini"), None);
        assert_eq!(strip_version_suffix("o3"), None);
        assert_eq!(strip_version_suffix("-latest"), None);
        assert_eq!(strip_version_suffix("09-2025"), None);
        let names = candidate_names("us.anthropic.claude-sonnet-4-5-20250929-v1:0");
        assert_eq!(
            names,
            [
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                "us.anthropic.claude-sonnet-4-5-20250929",
                "us.anthropic.claude-sonnet-4-5",
                "anthropic.claude-sonnet-4-5-20250929-v1:0",
                "anthropic.claude-sonnet-4-5-20250929",
                "anthropic.claude-sonnet-4-5",
            ]
        );
    }
}
