//! "Did you mean": the known name nearest to a mistyped one ("nods" → "nodes"), by edit
//! distance with adjacent transpositions (optimal string alignment), ignoring case.

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`, ignoring case.
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let w = b.len() + 1;
    // d[i * w + j]: the distance between a[..i] and b[..j].
    let mut d = vec![0usize; (a.len() + 1) * w];
    for (j, cell) in d.iter_mut().take(w).enumerate() {
        *cell = j;
    }
    for (i, &ca) in a.iter().enumerate() {
        d[(i + 1) * w] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let (r, c) = (i + 1, j + 1);
            let mut v = (d[(r - 1) * w + c] + 1)
                .min(d[r * w + c - 1] + 1)
                .min(d[(r - 1) * w + c - 1] + usize::from(ca != cb));
            if i > 0 && j > 0 && ca == b[j - 1] && a[i - 1] == cb {
                v = v.min(d[(r - 2) * w + c - 2] + 1);
            }
            d[r * w + c] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// The candidate nearest to `input`, when it is near enough to be a typo of it (at most a
/// third of `input`'s length in edits, at least one); the first of equals wins.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let most = (input.chars().count() / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        let d = distance(input, c);
        if d <= most && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_count_edits_and_swaps() {
        assert_eq!(distance("nodes", "nodes"), 0);
        assert_eq!(distance("nods", "nodes"), 1);
        assert_eq!(distance("NODES", "nodes"), 0);
        assert_eq!(distance("modles", "models"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("ca", "abc"), 3);
    }

    #[test]
    fn the_closest_is_a_plausible_typo_or_nothing() {
        let names = ["nodes", "node", "no", "models", "deployments", "tenants"];
        assert_eq!(closest("nods", names), Some("nodes"));
        assert_eq!(closest("deploymnets", names), Some("deployments"));
        assert_eq!(closest("tenats", names), Some("tenants"));
        assert_eq!(closest("pods", names), None);
        assert_eq!(closest("xyzzy", names), None);
    }
}
