//! Stop strings matched across token boundaries. Text that could still be the start of a stop
//! string is held back until the next delta settles it, so a client never sees the part of a
//! stop string that arrived in an earlier token.

/// Filters a stream of text deltas for stop strings.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.to_vec(),
            held: String::new(),
        }
    }

    /// Takes the next delta; returns the text that is safe to release and whether a stop string
    /// was found (then the text ends just before it, and the stream should end).
    pub fn push(&mut self, delta: &str) -> (String, bool) {
        if self.stops.is_empty() {
            return (delta.to_string(), false);
        }
        self.held.push_str(delta);
        let text = std::mem::take(&mut self.held);
        let first = self
            .stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min();
        if let Some(at) = first {
            return (text[..at].to_string(), true);
        }
        // Hold the shortest tail that is a proper prefix of some stop string.
        let hold_from = (0..text.len())
            .filter(|&i| text.is_char_boundary(i))
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&text[i..])))
            .unwrap_or(text.len());
        self.held = text[hold_from..].to_string();
        (text[..hold_from].to_string(), false)
    }

    /// The text still held back, released when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], deltas: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for d in deltas {
            let (t, hit) = m.push(d);
            out.push_str(&t);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn stops_split_over_tokens_are_found_and_cut() {
        assert_eq!(
            run(&["END"], &["hello E", "N", "D more"]),
            ("hello ".into(), true)
        );
        assert_eq!(run(&["\n\n", "###"], &["a\n", "\nb"]), ("a".into(), true));
        assert_eq!(run(&["stop"], &["sto", "p"]), (String::new(), true));
    }

    #[test]
    fn near_misses_are_released_whole() {
        assert_eq!(run(&["END"], &["E", "N", "d!"]), ("ENd!".into(), false));
        assert_eq!(run(&["END"], &["xx E"]), ("xx E".into(), false));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        // Multi-byte text and stops.
        assert_eq!(run(&["é!"], &["café", "?"]), ("café?".into(), false));
        assert_eq!(run(&["é!"], &["caf", "é", "!"]), ("caf".into(), true));
    }

    #[test]
    fn held_text_is_only_a_possible_stop_prefix() {
        let mut m = StopMatcher::new(&["abc".to_string()]);
        assert_eq!(m.push("xab"), ("x".into(), false));
        assert_eq!(m.push("x"), ("abx".into(), false));
    }
}
