//! `flujo dev prices [--provider P] [--json]`: the price list runs are charged by — the built-in table of list
//! prices with its date (`flujo_llm::pricing::builtin`), and the `[cost]` prices of the project's
//! `flujo.toml`, each built-in entry marked when a `[cost]` entry overrides it — and whether the built-in
//! prices apply (lenient mode with `builtin_prices` on) or not (strict mode, or turned off).
//!
//! `--json` prints one object: `{as_of, currency, unit, strict, builtin_prices, builtin_applies, config,
//! entries: [{provider, model, source: "builtin" | "cost", price, overridden_by, applies}]}`, where `price`
//! holds the rates (`prompt_tokens_per_1k`, …; a detail rate that is not set is absent), `overridden_by`
//! names the `[cost]` entry (the model or `"*"`) that replaces a built-in entry, and `applies` says whether
//! a call would be charged by this entry.

use clap::Args;
use flujo_llm::pricing::builtin::{builtin_prices, BUILTIN_PRICES_AS_OF};
use flujo_llm::{Price, PricingTable};
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::lens::Table;
use crate::*;

#[derive(Args, Debug)]
pub struct PricesArgs {
    /// Only this provider's prices (`openai`, `anthropic`, `bedrock`, or one of `[providers]`).
    #[arg(long)]
    pub provider: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One row of the list.
struct Entry {
    provider: String,
    model: String,
    /// `builtin` or `cost`.
    source: &'static str,
    price: Price,
    /// For a built-in entry: the `[cost]` key (model or `"*"`) that replaces it.
    overridden_by: Option<String>,
    /// Whether a call to this model would be charged by this entry.
    applies: bool,
}

pub fn prices(args: PricesArgs, cfg: &Config) -> Result<u8, CliError> {
    let table = PricingTable::from_toml(&cfg.table).map_err(|e| CliError::config(format!("flujo.toml: {e}")))?;
    let strict = table.is_strict();
    let builtin_on = table.builtin_prices_on();
    let applies = table.uses_builtin_prices();
    let wanted = |provider: &str| args.provider.as_deref().is_none_or(|p| p == provider);

    let mut entries: Vec<Entry> = Vec::new();
    for b in builtin_prices().into_iter().filter(|b| wanted(b.provider)) {
        // An exact [cost] entry wins over the provider's "*": name the one a call would use.
        let keys: Vec<&str> = table.configured().filter(|(p, _, _)| *p == b.provider).map(|(_, m, _)| m).collect();
        let overridden_by = [b.model, "*"].into_iter().find(|k| keys.contains(k)).map(str::to_owned);
        entries.push(Entry {
            provider: b.provider.to_owned(),
            model: b.model.to_owned(),
            source: "builtin",
            price: b.price,
            applies: applies && overridden_by.is_none(),
            overridden_by,
        });
    }
    for (provider, model, price) in table.configured().filter(|(p, _, _)| wanted(p)) {
        entries.push(Entry {
            provider: provider.to_owned(),
            model: model.to_owned(),
            source: "cost",
            price: *price,
            overridden_by: None,
            applies: true,
        });
    }
    let config = cfg.file.as_ref().map(|f| f.display().to_string());

    if args.json {
        let list: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({
                    "provider": e.provider,
                    "model": e.model,
                    "source": e.source,
                    "price": rates_json(&e.price),
                    "overridden_by": e.overridden_by,
                    "applies": e.applies,
                })
            })
            .collect();
        outln!(
            "{}",
            json!({
                "as_of": BUILTIN_PRICES_AS_OF,
                "currency": "USD",
                "unit": "per_1k_tokens",
                "strict": strict,
                "builtin_prices": builtin_on,
                "builtin_applies": applies,
                "config": config,
                "entries": list,
            })
        );
        return Ok(EXIT_OK);
    }

    let mut out = String::new();
    out.push_str(&format!(
        "Built-in prices as of {BUILTIN_PRICES_AS_OF}: the vendors' list prices then, in USD per 1000 tokens \
         (list prices change; [cost] in flujo.toml overrides them).\n"
    ));
    let mode = match (strict, builtin_on) {
        (true, _) => "strict: only [cost] prices count; built-in prices do not apply, and a model without a \
                      [cost] price stops the run before its call"
            .to_owned(),
        (false, true) => {
            "lenient: models without a [cost] price take the built-in price (models in neither cost 0)".to_owned()
        }
        (false, false) => "lenient, built-in prices off ([cost] builtin_prices = false): models without a [cost] \
                           price cost 0"
            .to_owned(),
    };
    out.push_str(&format!("pricing: {mode}\n"));
    out.push_str(&format!("config: {}\n", config.as_deref().unwrap_or("no flujo.toml")));
    if entries.is_empty() {
        let which = args.provider.as_deref().unwrap_or("any provider");
        out.push_str(&format!("no prices for {which}\n"));
        out!("{out}");
        return Ok(EXIT_OK);
    }
    let mut t = Table::new(
        &["PROVIDER", "MODEL", "PROMPT", "COMPLETION", "CACHED", "CACHE WRITE", "REASONING", "SOURCE"],
        &[2, 3, 4, 5, 6],
    );
    for e in &entries {
        let source = match (e.source, &e.overridden_by) {
            ("cost", _) => "[cost]".to_owned(),
            (_, Some(key)) => format!("built-in, overridden by [cost] \"{key}\""),
            (_, None) if strict => "built-in (not used: strict)".to_owned(),
            (_, None) if !builtin_on => "built-in (off)".to_owned(),
            (_, None) => "built-in".to_owned(),
        };
        let rate = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |v| v.to_string());
        t.row(vec![
            e.provider.clone(),
            e.model.clone(),
            rate(Some(e.price.prompt_tokens_per_1k)),
            rate(Some(e.price.completion_tokens_per_1k)),
            rate(e.price.cached_prompt_tokens_per_1k),
            rate(e.price.cache_write_tokens_per_1k),
            rate(e.price.reasoning_tokens_per_1k),
            source,
        ]);
    }
    out.push_str(&t.render());
    out.push_str(
        "CACHED, CACHE WRITE and REASONING: rates of those parts of the prompt and completion; `-` means the \
         prompt (or completion) rate.\n",
    );
    out!("{out}");
    Ok(EXIT_OK)
}

/// A price's rates as a JSON object (detail rates only when set).
fn rates_json(p: &Price) -> Value {
    let mut m = Map::new();
    for (key, rate) in p.rates() {
        if let Some(r) = rate {
            m.insert(key.to_owned(), json!(r));
        }
    }
    Value::Object(m)
}
