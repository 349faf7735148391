//! The rules for names and hashes in the replicated state, checked when a command is applied so
//! that no replica ever holds a value the API would refuse.

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

/// A model name: 1-128 of `A-Z a-z 0-9 . _ - : /`, as in "qwen2.5-0.5b" or "org/name:q8_0".
pub fn model(s: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b))
        && !s.starts_with('/');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "model name {s:?} must be 1-128 of A-Z, a-z, 0-9, '.', '_', '-', ':' and '/'"
        ))
    }
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
        for bad in ["", "/abs", "a b", "ü", &"m".repeat(129)] {
            assert!(model(bad).is_err(), "{bad:?}");
        }
        sha256("k", &"ab".repeat(32)).unwrap();
        assert!(sha256("k", &"AB".repeat(32)).is_err());
        assert!(sha256("k", "abc").is_err());
    }
}
