//! "Did you mean …?" suggestions: the closest candidate by edit distance, when it is close enough.

/// Case-insensitive edit distance (see [`flujo_core::suggest::edit_distance`]).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    flujo_core::suggest::edit_distance(&a.to_lowercase(), &b.to_lowercase())
}

/// The candidate closest to `word` (ties: the first), if within a third of its length (at least 1, at most
/// 4 edits), or if the candidate contains it (`on_max` → `on_max_loops`).
pub(crate) fn closest<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    if word.is_empty() || word.len() > 200 {
        return None;
    }
    let max = (word.chars().count() / 3).clamp(1, 4);
    let lower = word.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for cand in candidates {
        if cand == word {
            continue;
        }
        let mut d = edit_distance(word, cand);
        if d > max && lower.len() >= 4 && cand.to_lowercase().contains(&lower) {
            d = max;
        }
        if d <= max && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, cand));
        }
    }
    best.map(|(_, c)| c.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_and_suggestions() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("agnet", "agent"), 1);
        assert_eq!(closest("agnet", ["agent", "input"]).as_deref(), Some("agent"));
        assert_eq!(closest("paralel", ["parallel", "loop"]).as_deref(), Some("parallel"));
        assert_eq!(closest("statemachine", ["state_machine", "loop"]).as_deref(), Some("state_machine"));
        assert_eq!(closest("zzz", ["parallel", "loop"]), None);
    }
}
