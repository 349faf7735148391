//! The naming rules every component shares: the worker checks a model name with the same rule
//! as the cluster's state machine, so a name one accepts the other never refuses. Checked when
//! a command is applied too, so that no replica ever holds a value the API would refuse.

/// A deployment or tenant name: a DNS label (1-63 of `a-z 0-9 -`, starting and ending with a
/// letter or digit), as Kubernetes names objects.
pub fn label(what: &str, s: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} name {s:?} is not a DNS label (1-63 of a-z, 0-9 and '-', starting and ending \
             with a letter or digit)"
        ))
    }
}

/// A model name: 1-128 of `A-Z a-z 0-9 . _ - : /`, as in "qwen2.5-0.5b" or "org/name:q8_0",
/// not starting with '/' or '.', with no empty or ".." path segment.
pub fn model(s: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b))
        && !s.starts_with(['/', '.'])
        && s.split('/').all(|seg| !seg.is_empty() && seg != "..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "model name {s:?} must be 1-128 of A-Z, a-z, 0-9, '.', '_', '-', ':' and '/', not \
             starting with '/' or '.'"
        ))
    }
}

/// A label (a worker's `--labels`, a deployment's selector): the key 1-63 and the value 0-63
/// of `A-Z a-z 0-9 . _ -`, each starting and ending with a letter or digit, as Kubernetes
/// labels are (a key may carry a `prefix/`).
pub fn label_value(what: &str, key: &str, value: &str) -> Result<(), String> {
    fn part(s: &str, empty_ok: bool) -> bool {
        if s.is_empty() {
            return empty_ok;
        }
        s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
    }
    let name = key.rsplit_once('/').map_or(key, |(prefix, n)| {
        if prefix.is_empty() || prefix.len() > 253 {
            ""
        } else {
            n
        }
    });
    if !part(name, false) {
        return Err(format!(
            "{what} key {key:?} must be 1-63 of A-Z, a-z, 0-9, '.', '_' and '-', starting and \
             ending with a letter or digit"
        ));
    }
    if !part(value, true) {
        return Err(format!(
            "{what} {key}={value:?}: a value must be 0-63 of A-Z, a-z, 0-9, '.', '_' and '-', \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Parses `k=v,k2=v2` (a worker's `--labels`), checking each.
pub fn parse_labels(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("label {item:?} is not KEY=VALUE"))?;
        label_value("label", k.trim(), v.trim())?;
        if out
            .insert(k.trim().to_string(), v.trim().to_string())
            .is_some()
        {
            return Err(format!("label {:?} is given twice", k.trim()));
        }
    }
    Ok(out)
}

/// A SHA-256 in lowercase hex.
pub fn sha256(what: &str, s: &str) -> Result<(), String> {
    if s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!("{what} must be a SHA-256: 64 lowercase hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_their_rules() {
        for ok in ["a", "team-7", &"x".repeat(63)] {
            label("tenant", ok).unwrap();
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a/b", &"x".repeat(64)] {
            assert!(label("tenant", bad).is_err(), "{bad:?}");
        }
        for ok in ["qwen2.5-0.5b", "org/name:q8_0", "Llama_3"] {
            model(ok).unwrap();
        }
        for bad in [
            "",
            "/abs",
            ".hidden",
            "a//b",
            "a/../b",
            "a/",
            "a b",
            "ü",
            &"m".repeat(129),
        ] {
            assert!(model(bad).is_err(), "{bad:?}");
        }
        label_value("l", "gpu", "p40").unwrap();
        label_value("l", "example.com/zone", "").unwrap();
        for (k, v) in [
            ("", "x"),
            ("-a", "x"),
            ("a", "-x"),
            ("a b", "x"),
            ("a", &"v".repeat(64)),
        ] {
            assert!(label_value("l", k, v).is_err(), "{k}={v}");
        }
        let l = parse_labels("gpu=p40, zone=a").unwrap();
        assert_eq!(l["gpu"], "p40");
        assert!(parse_labels("gpu").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_labels("a=1,a=2").unwrap_err().contains("twice"));
        sha256("k", &"ab".repeat(32)).unwrap();
        assert!(sha256("k", &"AB".repeat(32)).is_err());
        assert!(sha256("k", "abc").is_err());
    }
}
