//! Redaction of secrets in JSON values shown to people (SPEC §14): `flujo lens`, the HTTP API and logs
//! print values through [`redact`], which replaces the value of every object key that names a secret by
//! [`REDACTED`].
//!
//! A key names a secret when, compared case-insensitively and ignoring `-`, `_`, `.` and spaces, it contains
//! `token`, `secret`, `password`, `passwd`, `apikey`, `privatekey` or `authorization`. Usage counters are
//! not secrets: a key containing `tokens` or `tokencount` (`tokens`, `total_tokens`, `max_tokens`,
//! `prompt_token_count`, …) whose value is numeric — a number, or an object or array of numbers, like
//! `tokens: {prompt, completion}` — is kept. The same key with a string value is redacted.
//!
//! ```
//! use flujo_core::redact;
//! use serde_json::json;
//! let v = json!({"user": "ada", "api_key": "sk-1", "tokens": {"prompt": 3, "completion": 4}});
//! assert_eq!(redact(&v), json!({"user": "ada", "api_key": "[REDACTED]", "tokens": {"prompt": 3, "completion": 4}}));
//! ```

use serde_json::{Map, Value};

/// What a redacted value is replaced by.
pub const REDACTED: &str = "[REDACTED]";

/// Key fragments (normalized: lower case, without separators) that name a secret.
const SECRET_FRAGMENTS: &[&str] = &["token", "secret", "password", "passwd", "apikey", "privatekey", "authorization"];

/// Key fragments (normalized) of usage counters, exempt when their value is numeric.
const COUNTER_FRAGMENTS: &[&str] = &["tokens", "tokencount"];

/// Lower case, without `-`, `_`, `.` and whitespace.
fn normalize(key: &str) -> String {
    key.chars().filter(|c| !matches!(c, '-' | '_' | '.') && !c.is_whitespace()).flat_map(char::to_lowercase).collect()
}

/// True when the value of `key` must not be shown, whatever it is (see the module docs; usage counters are
/// decided by [`redact`], which also looks at the value).
pub fn is_secret_key(key: &str) -> bool {
    contains_fragment(key, SECRET_FRAGMENTS)
}

fn is_counter_key(key: &str) -> bool {
    contains_fragment(key, COUNTER_FRAGMENTS)
}

/// True when the normalized `key` contains one of `fragments`. Keys are checked for every step record
/// (its step name, its patch paths), so a short ASCII key is normalized on the stack; a key with other
/// characters goes through [`normalize`] (Unicode lower case: `K`, the Kelvin sign, is a `k`).
fn contains_fragment(key: &str, fragments: &[&str]) -> bool {
    const SHORTEST: usize = 5; // "token", the shortest fragment
    let mut buf = [0u8; 64];
    if key.len() <= buf.len() && key.is_ascii() {
        let mut n = 0;
        for b in key.bytes() {
            if !matches!(b, b'-' | b'_' | b'.') && !b.is_ascii_whitespace() && b != 0x0b {
                buf[n] = b.to_ascii_lowercase();
                n += 1;
            }
        }
        let k = &buf[..n];
        return n >= SHORTEST && fragments.iter().any(|f| k.windows(f.len()).any(|w| w == f.as_bytes()));
    }
    let k = normalize(key);
    fragments.iter().any(|f| k.contains(f))
}

/// A number, null, or an object/array made only of those.
fn is_numeric(v: &Value) -> bool {
    match v {
        Value::Number(_) | Value::Null => true,
        Value::Array(items) => items.iter().all(is_numeric),
        Value::Object(m) => m.values().all(is_numeric),
        Value::Bool(_) | Value::String(_) => false,
    }
}

fn keep(key: &str, value: &Value) -> bool {
    !is_secret_key(key) || (is_counter_key(key) && is_numeric(value))
}

/// [`redact`] for a value that sits under the object keys `path` (a context patch's path, `["steps", NAME]`
/// for a step's output): fully [`REDACTED`] when one of those keys names a secret.
pub fn redact_at<S: AsRef<str>>(path: &[S], value: &Value) -> Value {
    if path.iter().any(|k| !keep(k.as_ref(), value)) {
        Value::String(REDACTED.to_owned())
    } else {
        redact(value)
    }
}

/// True when [`redact_at`] would change `value` (a scan without copying: most values have no secrets).
pub fn needs_redaction<S: AsRef<str>>(path: &[S], value: &Value) -> bool {
    fn inner(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.iter().any(|(k, v)| !keep(k, v) || inner(v)),
            Value::Array(items) => items.iter().any(inner),
            _ => false,
        }
    }
    path.iter().any(|k| !keep(k.as_ref(), value)) || inner(value)
}

/// A copy of `value` in which the value of every secret-named key, at any depth, is [`REDACTED`].
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                let v = if keep(k, v) { redact(v) } else { Value::String(REDACTED.to_owned()) };
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The stack path for short ASCII keys decides exactly as normalizing the key does: every ASCII
    /// character spliced into every fragment, keys around the 64-byte boundary, and non-ASCII keys.
    #[test]
    fn the_ascii_fast_path_agrees_with_normalizing() {
        let slow = |key: &str, fragments: &[&str]| {
            let k = normalize(key);
            fragments.iter().any(|f| k.contains(f))
        };
        let mut keys: Vec<String> = vec![String::new(), "s0".into(), "steps".into(), "tok".into()];
        for fragment in SECRET_FRAGMENTS.iter().chain(COUNTER_FRAGMENTS) {
            for b in 0u8..128 {
                let c = char::from(b);
                for at in 0..=fragment.len() {
                    let mut k = fragment.to_uppercase();
                    k.insert(at, c);
                    keys.push(k);
                }
                keys.push(format!("{c}{fragment}s"));
            }
            for pad in 55..70 {
                keys.push(format!("{}{fragment}", "x".repeat(pad)));
                keys.push(format!("{}{}", "-".repeat(pad), fragment.to_uppercase()));
            }
            // Unicode: the Kelvin sign lower-cases to `k`, a non-breaking space is whitespace.
            keys.push(fragment.replace('k', "\u{212a}"));
            keys.push(format!("{}\u{a0}{}", &fragment[..2], &fragment[2..]));
        }
        for key in &keys {
            for fragments in [SECRET_FRAGMENTS, COUNTER_FRAGMENTS] {
                assert_eq!(contains_fragment(key, fragments), slow(key, fragments), "key {key:?}");
            }
        }
        assert!(is_secret_key("API-\u{212a}EY") && is_secret_key("Pass word") && !is_secret_key("s0"));
    }

    #[test]
    fn secret_keys_are_redacted_at_any_depth() {
        let v = json!({
            "name": "ada",
            "password": "hunter2",
            "nested": {"API_KEY": "sk-123", "list": [{"Authorization": "Bearer x"}, {"ok": 1}]},
            "github-token": "ghp_1",
            "refresh_token": {"value": "r"},
            "client.secret": 42,
            "db_passwd": "p",
            "private_key": "-----BEGIN",
        });
        let r = redact(&v);
        assert_eq!(
            r,
            json!({
                "name": "ada",
                "password": REDACTED,
                "nested": {"API_KEY": REDACTED, "list": [{"Authorization": REDACTED}, {"ok": 1}]},
                "github-token": REDACTED,
                "refresh_token": REDACTED,
                "client.secret": REDACTED,
                "db_passwd": REDACTED,
                "private_key": REDACTED,
            })
        );
        assert!(!r.to_string().contains("hunter2") && !r.to_string().contains("sk-123"));
    }

    #[test]
    fn usage_counters_are_kept_but_not_when_they_hold_text() {
        let v = json!({
            "tokens": {"prompt": 10, "completion": 5},
            "total_tokens": 15,
            "max_tokens": null,
            "prompt_token_count": [1, 2],
            "token": 7,
            "tokens_text": "sk-secret",
        });
        assert_eq!(
            redact(&v),
            json!({
                "tokens": {"prompt": 10, "completion": 5},
                "total_tokens": 15,
                "max_tokens": null,
                "prompt_token_count": [1, 2],
                "token": REDACTED,
                "tokens_text": REDACTED,
            })
        );
    }

    #[test]
    fn values_without_secret_keys_are_unchanged() {
        let v = json!([1, "password", {"a": {"b": [true, null, "token"]}}, "x"]);
        assert_eq!(redact(&v), v, "only keys decide, never string contents");
        assert_eq!(redact(&json!("secret")), json!("secret"));
    }

    #[test]
    fn values_under_a_secret_path_are_redacted_whole() {
        let v = json!({"a": 1});
        assert_eq!(redact_at(&["creds", "github_token"], &v), json!(REDACTED));
        assert_eq!(redact_at(&["steps", "password"], &json!("x")), json!(REDACTED));
        assert_eq!(redact_at(&["usage", "total_tokens"], &json!(12)), json!(12));
        assert_eq!(
            redact_at(&["user"], &json!({"name": "a", "secret": "s"})),
            json!({"name": "a", "secret": REDACTED})
        );
        assert_eq!(redact_at::<&str>(&[], &json!({"token": "t"})), json!({"token": REDACTED}));
    }

    #[test]
    fn key_matching_ignores_case_and_separators() {
        for k in ["Api-Key", "APIKEY", "x_api_key", "AUTHORIZATION", "Session Token", "MY.SECRET"] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["name", "api", "key", "author", "pass"] {
            assert!(!is_secret_key(k), "{k}");
        }
    }
}
