//! `-l/--selector`: nodes by their labels, as kubectl selects: `key=value` (or `key==value`),
//! `key!=value` (the label is absent or has another value), `key` (present), `!key` (absent),
//! comma-separated, every one required. Set-based requirements (`key in (a,b)`) are not taken.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed selector; it prints as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    text: String,
    terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Is(String, String),
    IsNot(String, String),
    Has(String),
    HasNot(String),
}

/// A label key: `name` or `prefix/name` of letters, digits, `-`, `_`, `.` (at most 316 bytes).
fn key(k: &str) -> Result<String, String> {
    let k = k.trim();
    if k.is_empty() {
        return Err("a requirement without a key".into());
    }
    let ok = k.len() <= 253 + 1 + 63
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if ok {
        Ok(k.to_string())
    } else {
        Err(format!(
            "key {k:?} is not a label key (letters, digits, '-', '_', '.' and one '/')"
        ))
    }
}

/// A label value: empty, or at most 63 of letters, digits, `-`, `_`, `.`.
fn value(v: &str) -> Result<String, String> {
    let v = v.trim();
    let ok = v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!(
            "value {v:?} is not a label value (at most 63 letters, digits, '-', '_' and '.')"
        ))
    }
}

impl Selector {
    /// Parses `-l`'s text; the error says what is wrong and what a selector looks like.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: String| {
            format!(
                "{s:?}: {why}; a selector is key=value, key!=value, key or !key, \
                 comma-separated"
            )
        };
        if s.trim().is_empty() {
            return Err(bad("it is empty".into()));
        }
        let mut terms = Vec::new();
        for raw in s.split(',') {
            let t = raw.trim();
            if t.is_empty() {
                return Err(bad(
                    "an empty requirement (two commas, or a comma at an end)".into(),
                ));
            }
            let term = if let Some((k, v)) = t.split_once("!=") {
                Term::IsNot(key(k).map_err(&bad)?, value(v).map_err(&bad)?)
            } else if let Some((k, v)) = t.split_once("==") {
                Term::Is(key(k).map_err(&bad)?, value(v).map_err(&bad)?)
            } else if let Some((k, v)) = t.split_once('=') {
                Term::Is(key(k).map_err(&bad)?, value(v).map_err(&bad)?)
            } else if let Some(k) = t.strip_prefix('!') {
                Term::HasNot(key(k).map_err(&bad)?)
            } else {
                Term::Has(key(t).map_err(&bad)?)
            };
            terms.push(term);
        }
        Ok(Self {
            text: s.to_string(),
            terms,
        })
    }

    /// Whether `labels` meet every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|t| match t {
            Term::Is(k, v) => labels.get(k) == Some(v),
            Term::IsNot(k, v) => labels.get(k) != Some(v),
            Term::Has(k) => labels.contains_key(k),
            Term::HasNot(k) => !labels.contains_key(k),
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_requirement_must_hold() {
        let gpu = labels(&[("gpu", "h100"), ("zone", "a"), ("joule.dev/pool", "fast")]);
        let cpu = labels(&[("zone", "b")]);
        let none = labels(&[]);
        let m = |s: &str| {
            let sel = Selector::parse(s).unwrap();
            [&gpu, &cpu, &none].map(|l| sel.matches(l))
        };
        assert_eq!(m("gpu=h100"), [true, false, false]);
        assert_eq!(m("gpu==h100"), [true, false, false]);
        assert_eq!(m("gpu=h100,zone=a"), [true, false, false]);
        assert_eq!(m("gpu=h100,zone=b"), [false, false, false]);
        // != also matches nodes without the label, as kubectl's does.
        assert_eq!(m("zone!=a"), [false, true, true]);
        assert_eq!(m("gpu"), [true, false, false]);
        assert_eq!(m("!gpu"), [false, true, true]);
        assert_eq!(m(" zone = b , !gpu "), [false, true, false]);
        assert_eq!(m("joule.dev/pool=fast"), [true, false, false]);
        assert_eq!(
            Selector::parse("gpu=h100,!x").unwrap().to_string(),
            "gpu=h100,!x"
        );
    }

    #[test]
    fn bad_selectors_say_what_is_wrong() {
        for (s, why) in [
            ("", "empty"),
            ("gpu=h100,", "empty requirement"),
            ("a,,b", "empty requirement"),
            ("=h100", "without a key"),
            ("!", "without a key"),
            ("a=b=c", "value \"b=c\""),
            ("gpu in (a,b)", "key \"gpu in (a\""),
            ("a!b", "key \"a!b\""),
            ("zone=ä", "value \"ä\""),
        ] {
            let e = Selector::parse(s).unwrap_err();
            assert!(e.contains(why), "{s:?}: {e}");
            assert!(
                e.contains("key=value, key!=value, key or !key"),
                "{s:?}: {e}"
            );
        }
    }
}
