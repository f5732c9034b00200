//! `pii_scrub`: redacts personal data and secrets in a call's input before the model (or skill) sees it.
//!
//! Kinds, in the order they are looked for (so that a card number is not half-taken as a phone number):
//! `api_key` (OpenAI/Anthropic `sk-…`, AWS `AKIA…`, GitHub `ghp_…`/`github_pat_…`, Slack `xox?-…`, Google
//! `AIza…`), `email`, `iban` (checked with ISO 13616 mod 97), `card` (13–19 digits, checked with Luhn),
//! `ssn` (US, `AAA-GG-SSSS` without the never-issued areas), `dni` (Spanish DNI/NIE with its check letter),
//! and `phone` (international or grouped local numbers of 7–15 digits). Candidates that fail their check
//! digit are left alone. Every string value of the input is scrubbed (object keys are not); the decision's
//! note names the kinds and counts, never the values.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use async_trait::async_trait;
use flujo_core::{GovernanceDecision, GovernancePolicy, GovernanceRequest};
use regex::Regex;
use serde_json::Value;

/// Every kind `pii_scrub` knows, in the order they are scrubbed.
pub const KINDS: &[&str] = &["api_key", "email", "iban", "card", "ssn", "dni", "phone"];

fn pattern(kind: &str) -> Option<&'static Regex> {
    static RES: OnceLock<Vec<(&'static str, Regex)>> = OnceLock::new();
    let all = RES.get_or_init(|| {
        let src: [(&str, &str); 7] = [
            (
                "api_key",
                r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})",
            ),
            ("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
            ("iban", r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b"),
            ("card", r"\b\d(?:[ -]?\d){12,18}\b"),
            ("ssn", r"\b\d{3}-\d{2}-\d{4}\b"),
            ("dni", r"\b[XYZ0-9]\d{7}-?[A-Za-z]\b"),
            ("phone", r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\b\d{2,4}(?:[ .-]\d{2,4}){1,4}\b"),
        ];
        src.iter().filter_map(|(k, re)| Regex::new(re).ok().map(|r| (*k, r))).collect()
    });
    all.iter().find(|(k, _)| *k == kind).map(|(_, r)| r)
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// The Luhn check of a card number's digits.
pub fn luhn(number: &str) -> bool {
    let d = digits(number);
    if !(13..=19).contains(&d.len()) {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                if x * 2 > 9 {
                    x * 2 - 9
                } else {
                    x * 2
                }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The ISO 13616 check of an IBAN (mod 97 = 1).
pub fn iban_ok(iban: &str) -> bool {
    let s: String = iban.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&s.len()) {
        return false;
    }
    let rearranged = format!("{}{}", &s[4..], &s[..4]);
    let mut rem: u64 = 0;
    for c in rearranged.chars() {
        let v = match c {
            '0'..='9' => u64::from(c as u8 - b'0'),
            'A'..='Z' => u64::from(c as u8 - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

fn ssn_ok(s: &str) -> bool {
    let d = digits(s);
    let area = d[0] * 100 + d[1] * 10 + d[2];
    let group = d[3] * 10 + d[4];
    let serial = d[5] * 1000 + d[6] * 100 + d[7] * 10 + d[8];
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

fn dni_ok(s: &str) -> bool {
    const LETTERS: &[u8] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    let s: String = s.chars().filter(|c| *c != '-').collect::<String>().to_ascii_uppercase();
    let (body, letter) = s.split_at(s.len() - 1);
    let body = body.replacen('X', "0", 1).replacen('Y', "1", 1).replacen('Z', "2", 1);
    let Ok(n) = body.parse::<u64>() else { return false };
    LETTERS.get((n % 23) as usize).map(|&c| c as char) == letter.chars().next()
}

fn phone_ok(s: &str) -> bool {
    (7..=15).contains(&digits(s).len())
}

fn valid(kind: &str, candidate: &str) -> bool {
    match kind {
        "card" => luhn(candidate),
        "iban" => iban_ok(candidate),
        "ssn" => ssn_ok(candidate),
        "dni" => dni_ok(candidate),
        "phone" => phone_ok(candidate),
        _ => true,
    }
}

/// The `pii_scrub` policy.
#[derive(Debug)]
pub struct PiiScrub {
    kinds: Vec<&'static str>,
    replacement: String,
}

impl PiiScrub {
    /// Scrubs `kinds` (all of [`KINDS`] when empty), replacing each finding with `replacement`, in which
    /// `{kind}` stands for the kind's name in capitals (default `[REDACTED]`).
    pub fn new(kinds: &[String], replacement: Option<String>) -> Result<Self, String> {
        let mut chosen = Vec::new();
        for k in kinds {
            match KINDS.iter().find(|known| **known == k.as_str()) {
                Some(known) => chosen.push(*known),
                None => return Err(format!("pii_scrub: unknown kind '{k}' (known: {})", KINDS.join(", "))),
            }
        }
        if chosen.is_empty() {
            chosen = KINDS.to_vec();
        }
        chosen.sort_by_key(|k| KINDS.iter().position(|x| x == k));
        Ok(PiiScrub { kinds: chosen, replacement: replacement.unwrap_or_else(|| "[REDACTED]".to_owned()) })
    }

    /// `text` with every finding replaced, and the count per kind.
    pub fn scrub_text(&self, text: &str, counts: &mut BTreeMap<&'static str, usize>) -> Option<String> {
        let mut out: Option<String> = None;
        for kind in &self.kinds {
            let Some(re) = pattern(kind) else { continue };
            let current = out.as_deref().unwrap_or(text);
            if !re.is_match(current) {
                continue;
            }
            let mut n = 0;
            let replaced = re.replace_all(current, |caps: &regex::Captures<'_>| {
                let m = caps.get(0).map_or("", |m| m.as_str());
                if valid(kind, m) {
                    n += 1;
                    self.replacement.replace("{kind}", &kind.to_ascii_uppercase())
                } else {
                    m.to_owned()
                }
            });
            if n > 0 {
                *counts.entry(kind).or_default() += n;
                out = Some(replaced.into_owned());
            }
        }
        out
    }

    fn scrub_value(&self, v: &Value, counts: &mut BTreeMap<&'static str, usize>) -> Option<Value> {
        match v {
            Value::String(s) => self.scrub_text(s, counts).map(Value::String),
            Value::Array(items) => {
                let mut changed = false;
                let new: Vec<Value> = items
                    .iter()
                    .map(|i| match self.scrub_value(i, counts) {
                        Some(n) => {
                            changed = true;
                            n
                        }
                        None => i.clone(),
                    })
                    .collect();
                changed.then_some(Value::Array(new))
            }
            Value::Object(map) => {
                let mut changed = false;
                let new = map
                    .iter()
                    .map(|(k, i)| match self.scrub_value(i, counts) {
                        Some(n) => {
                            changed = true;
                            (k.clone(), n)
                        }
                        None => (k.clone(), i.clone()),
                    })
                    .collect();
                changed.then_some(Value::Object(new))
            }
            _ => None,
        }
    }
}

#[async_trait]
impl GovernancePolicy for PiiScrub {
    fn name(&self) -> &str {
        "pii_scrub"
    }
    async fn evaluate(&self, req: &GovernanceRequest<'_>) -> GovernanceDecision {
        let mut counts = BTreeMap::new();
        match self.scrub_value(req.input, &mut counts) {
            Some(input) => {
                let note = counts.iter().map(|(k, n)| format!("{k} x{n}")).collect::<Vec<_>>().join(", ");
                GovernanceDecision::Modify { input, note: format!("scrubbed: {note}") }
            }
            None => GovernanceDecision::Allow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub(text: &str) -> (String, BTreeMap<&'static str, usize>) {
        let p = PiiScrub::new(&[], Some("[{kind}]".to_owned())).unwrap_or_else(|e| panic!("{e}"));
        let mut counts = BTreeMap::new();
        let out = p.scrub_text(text, &mut counts).unwrap_or_else(|| text.to_owned());
        (out, counts)
    }

    #[test]
    fn each_kind_is_found_and_checked() {
        let (out, c) = scrub("mail ana.gomez+x@correo.example.es now");
        assert_eq!(out, "mail [EMAIL] now");
        assert_eq!(c.get("email"), Some(&1));
        // A Luhn-valid card with spaces; a 16-digit number failing Luhn is kept.
        assert_eq!(scrub("card 4111 1111 1111 1111.").0, "card [CARD].");
        assert_eq!(scrub("order 4111111111111112").0, "order 4111111111111112");
        assert_eq!(scrub("iban ES91 2100 0418 4502 0005 1332 ok").0, "iban [IBAN] ok");
        assert!(!scrub("iban ES91 2100 0418 4502 0005 1333 ok").0.contains("[IBAN]"));
        assert_eq!(scrub("ssn 123-45-6789").0, "ssn [SSN]");
        // Never-issued SSN areas are not SSNs (the phone kind may still take the digits).
        let only_ssn = PiiScrub::new(&["ssn".to_owned()], None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(only_ssn.scrub_text("ssn 000-45-6789", &mut BTreeMap::new()), None);
        assert_eq!(only_ssn.scrub_text("ssn 666-45-6789", &mut BTreeMap::new()), None);
        assert_eq!(scrub("dni 12345678Z").0, "dni [DNI]");
        assert_eq!(scrub("dni 12345678A").0, "dni 12345678A");
        assert_eq!(scrub("call +34 612 345 678 today").0, "call [PHONE] today");
        assert_eq!(scrub("key sk-proj-abcdefghijklmnopqrstuvwxyz123456").0, "key [API_KEY]");
        assert_eq!(scrub("aws AKIAIOSFODNN7EXAMPLE").0, "aws [API_KEY]");
        // Plain numbers, dates and versions stay.
        assert_eq!(scrub("we sold 42 units in 2026, v1.2.3").0, "we sold 42 units in 2026, v1.2.3");
    }

    #[test]
    fn checks() {
        assert!(luhn("4242424242424242"));
        assert!(!luhn("4242424242424241"));
        assert!(iban_ok("GB82 WEST 1234 5698 7654 32"));
        assert!(!iban_ok("GB82 WEST 1234 5698 7654 33"));
    }
}
