//! "Did you mean …?" suggestions: the closest candidate by edit distance, when it is close enough.

/// Edit distance (optimal string alignment: insertion, deletion, substitution and adjacent transposition
/// each cost 1), case-insensitive.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j - 1] + cost).min(prev[j] + 1).min(cur[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
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
