//! Bounds on user-given names and numbers, shared by the blueprint loader (which reports them with a rule id
//! and a location) and the engine's build-time checks (which refuse a pipeline built in Rust).
//!
//! * Names that become segments of a journal path (step, branch, state names) are [`check_name`]d: 1 to
//!   [`MAX_NAME_LEN`] characters, no `/` (the path separator), no `:` (the segment-kind separator, as in
//!   `branch:NAME`), no control characters, no leading or trailing whitespace. With these rules a journal path
//!   names exactly one step execution (see the engine's path property test).
//! * Durations from user values go through [`duration_from_secs`]: never a panic for a NaN, negative, infinite
//!   or huge number (`Duration::from_secs_f64` panics on those), at most [`MAX_DURATION_S`] (7 days).
//! * Retries are at most [`MAX_RETRIES`]; loop iterations and state hops at most [`MAX_ITERATIONS`]; model turns
//!   at most [`MAX_TURNS`].
//! * Model ids are `provider:model` with a provider from [`BUILTIN_PROVIDERS`] (or one configured by the user).

use std::time::Duration;

/// Longest accepted step, branch, state or pipeline name, in characters.
pub const MAX_NAME_LEN: usize = 256;

/// Longest accepted timeout, TTL or sleep: 7 days, in seconds.
pub const MAX_DURATION_S: f64 = 7.0 * 24.0 * 3600.0;

/// Most retries a step or agent may ask for (`config.max_retries`, an agent's `max_retries`).
pub const MAX_RETRIES: u32 = 100;

/// Most iterations a loop (`max_loops`) or hops a state machine (`max_hops`) may ask for.
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// Most model turns a tool-using agent (`max_turns`) may ask for.
pub const MAX_TURNS: u32 = 1_000;

/// The model providers every build knows (`[providers.NAME]` in `flujo.toml` may add more).
pub const BUILTIN_PROVIDERS: &[&str] =
    &["openai", "openai-responses", "anthropic", "gemini", "azure", "bedrock", "ollama", "mock"];

/// Why a name cannot be a path segment (the message completes "the name …").
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".to_owned());
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(format!("is {len} characters long; the limit is {MAX_NAME_LEN}"));
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || *c == ':' || c.is_control()) {
        let shown = if c.is_control() { format!("control character U+{:04X}", u32::from(c)) } else { format!("`{c}`") };
        return Err(format!("contains {shown}; names may not contain `/`, `:` or control characters"));
    }
    if name.trim() != name {
        return Err("starts or ends with whitespace".to_owned());
    }
    Ok(())
}

/// A name made acceptable to [`check_name`] (for suggestions): `/` and `:` become `_`, control characters are
/// dropped, whitespace is trimmed, the length is cut to [`MAX_NAME_LEN`].
pub fn suggest_name(name: &str) -> String {
    let s: String =
        name.chars().filter(|c| !c.is_control()).map(|c| if c == '/' || c == ':' { '_' } else { c }).collect();
    let s: String = s.trim().chars().take(MAX_NAME_LEN).collect();
    let s = s.trim_end().to_owned();
    if s.is_empty() {
        "step".to_owned()
    } else {
        s
    }
}

/// A number for a message: huge and tiny values in exponent form (`1e300`, not 301 digits).
pub fn show_number(n: f64) -> String {
    if n.is_finite() && n != 0.0 && !(1e-6..1e9).contains(&n.abs()) {
        format!("{n:e}")
    } else {
        format!("{n}")
    }
}

/// Why `secs` is not an acceptable duration (the message completes "the value …"): it must be a finite
/// number, greater than 0 and at most [`MAX_DURATION_S`].
pub fn check_duration_secs(secs: f64) -> Result<(), String> {
    if !secs.is_finite() {
        return Err(format!("must be a finite number of seconds, got {secs}"));
    }
    if secs <= 0.0 {
        return Err(format!("must be greater than 0 seconds, got {}", show_number(secs)));
    }
    if secs > MAX_DURATION_S {
        return Err(format!("is {} seconds; the limit is {MAX_DURATION_S} seconds (7 days)", show_number(secs)));
    }
    Ok(())
}

/// A duration of `secs` seconds, checked by [`check_duration_secs`] (never panics).
pub fn duration_from_secs(secs: f64) -> Result<Duration, String> {
    check_duration_secs(secs)?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("is not a duration: {e}"))
}

/// A duration of `ms` milliseconds; 0 is allowed (a zero sleep), the upper bound is [`MAX_DURATION_S`].
pub fn duration_from_millis(ms: f64) -> Result<Duration, String> {
    if !ms.is_finite() || ms < 0.0 {
        return Err(format!("must be a non-negative number of milliseconds, got {}", show_number(ms)));
    }
    if ms / 1000.0 > MAX_DURATION_S {
        return Err(format!("is {} ms; the limit is {} ms (7 days)", show_number(ms), MAX_DURATION_S * 1000.0));
    }
    Duration::try_from_secs_f64(ms / 1000.0).map_err(|e| format!("is not a duration: {e}"))
}

/// Why `n` is not a count in `1..=max` (the message completes "the value …").
pub fn check_count(n: u64, max: u32) -> Result<(), String> {
    if n == 0 {
        return Err("must be at least 1".to_owned());
    }
    if n > u64::from(max) {
        return Err(format!("is {n}; the limit is {max}"));
    }
    Ok(())
}

/// Why `n` retries are too many.
pub fn check_retries(n: u64) -> Result<(), String> {
    if n > u64::from(MAX_RETRIES) {
        return Err(format!("is {n}; the limit is {MAX_RETRIES} retries"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("a b-c_d.e@1").is_ok());
        assert!(check_name("ünïcode ✓").is_ok());
        for bad in ["", "a/b", "a:b", "a\nb", "a\u{0}", " a", "a ", "\t"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(check_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert_eq!(suggest_name(" a/0/branch:b "), "a_0_branch_b");
        assert!(check_name(&suggest_name(&"/".repeat(1000))).is_ok());
    }

    #[test]
    fn durations_never_panic() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e20, 1e300, MAX_DURATION_S + 1.0] {
            assert!(duration_from_secs(bad).is_err(), "{bad}");
        }
        assert_eq!(duration_from_secs(1.5), Ok(Duration::from_millis(1500)));
        assert_eq!(duration_from_secs(MAX_DURATION_S), Ok(Duration::from_secs(604_800)));
        assert_eq!(duration_from_millis(0.0), Ok(Duration::ZERO));
        assert!(duration_from_millis(1e300).is_err());
        assert!(duration_from_millis(-1.0).is_err());
        assert!(check_retries(100).is_ok());
        assert_eq!(show_number(1e300), "1e300");
        assert_eq!(show_number(2.5), "2.5");
        assert!(check_retries(1_000_000_000).is_err());
    }
}
