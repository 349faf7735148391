//! `create apikey --tenant NAME [--name LABEL] [--expires 30d]`: makes an API key here, from
//! the OS random source, sends the cluster only its id and SHA-256, and prints the key once.
//! A key is `jk-` and 43 base62 digits of 32 random bytes; its id is its first 11 characters.

use joule_client::calendar::format_ms;
use joule_proto::v1;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::connect::Cluster;
use crate::render::{self, Format};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Digits of a 256-bit number in base 62 (62^43 > 2^256 > 62^42).
const DIGITS: usize = 43;
/// `jk-` and 8 characters.
const ID_LEN: usize = 11;
/// The longest `--expires`: ten years.
const MAX_EXPIRES_S: u64 = 3650 * 86_400;

/// 32 bytes (a big-endian number) as 43 base62 digits, zero-padded on the left.
fn base62(bytes: &[u8; 32]) -> String {
    let mut n = *bytes;
    let mut out = [b'0'; DIGITS];
    for slot in out.iter_mut().rev() {
        // One long division of n by 62; the remainder is the next digit from the right.
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let acc = rem * 256 + u32::from(*b);
            *b = (acc / 62) as u8;
            rem = acc % 62;
        }
        *slot = BASE62[rem as usize];
    }
    debug_assert!(n.iter().all(|&b| b == 0));
    String::from_utf8(out.to_vec()).expect("base62 digits are ASCII")
}

/// A new key from 32 random bytes.
fn new_key() -> anyhow::Result<String> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf)
        .map_err(|e| anyhow::anyhow!("cannot read the OS random source: {e}"))?;
    Ok(format!("jk-{}", base62(&buf)))
}

/// Lowercase hex of the SHA-256 of the whole key.
fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `30d`, `12h`, `90m`, `3600s` as milliseconds: positive, at most 3650 days.
fn parse_expires(s: &str) -> anyhow::Result<i64> {
    let bad = || {
        anyhow::anyhow!(
            "--expires {s:?}: expected a positive whole number and a unit, like 30d, 12h, 90m or \
             3600s (at most 3650d)"
        )
    };
    let unit = match s.chars().last() {
        Some('d') => 86_400,
        Some('h') => 3600,
        Some('m') => 60,
        Some('s') => 1,
        _ => return Err(bad()),
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    match n.checked_mul(unit) {
        Some(secs) if secs > 0 && secs <= MAX_EXPIRES_S => Ok(secs as i64 * 1000),
        _ => Err(bad()),
    }
}

/// What `-o json|yaml` prints: the key, once.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    tenant: String,
    id: String,
    name: String,
    key: String,
    /// UTC; null: never.
    expires_at: Option<String>,
}

/// Makes a key of `tenant` here and registers its id and hash: the key and what the cluster
/// keeps.
pub async fn make_key(
    c: &Cluster,
    tenant: &str,
    name: &str,
    expires_at_ms: i64,
) -> anyhow::Result<(String, v1::ApiKeyInfo)> {
    let key = new_key()?;
    let req = v1::CreateApiKeyRequest {
        tenant: tenant.to_string(),
        name: name.to_string(),
        id: key_id(&key).to_string(),
        sha256: sha256_hex(&key),
        expires_at_ms,
    };
    let k = c
        .call(|mut a| {
            let req = req.clone();
            async move { a.create_api_key(req).await }
        })
        .await?;
    Ok((key, k))
}

/// A key's id: its first 11 characters.
pub fn key_id(key: &str) -> &str {
    key.get(..ID_LEN).unwrap_or(key)
}

pub async fn apikey(
    c: &Cluster,
    tenant: &str,
    name: Option<&str>,
    expires: Option<&str>,
    f: Format,
) -> anyhow::Result<()> {
    let name = name.unwrap_or_default();
    if name.chars().count() > 64 {
        anyhow::bail!(
            "--name: at most 64 characters (this one has {})",
            name.chars().count()
        );
    }
    let expires_at_ms = match expires {
        Some(s) => crate::views::now_ms() + parse_expires(s)?,
        None => 0,
    };
    let (key, k) = make_key(c, tenant, name, expires_at_ms).await?;
    if f.is_table() {
        println!("{key}");
        eprintln!(
            "apikey {} created for tenant {}; store it now: it is not shown again",
            k.id, k.tenant
        );
        return Ok(());
    }
    render::emit(
        &Created {
            tenant: k.tenant,
            id: k.id,
            name: k.name,
            key,
            expires_at: (k.expires_at_ms > 0).then(|| format_ms(k.expires_at_ms)),
        },
        f,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base62_is_fixed_width_big_number_conversion() {
        assert_eq!(base62(&[0; 32]), "0".repeat(43));
        let mut n = [0u8; 32];
        n[31] = 62;
        assert_eq!(base62(&n), format!("{}10", "0".repeat(41)));
        n[31] = 61;
        assert_eq!(base62(&n), format!("{}z", "0".repeat(42)));
        // 2^256 - 1, checked with arbitrary-precision arithmetic elsewhere.
        assert_eq!(
            base62(&[0xff; 32]),
            "yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1"
        );
    }

    #[test]
    fn keys_have_one_shape_and_differ() {
        let (a, b) = (new_key().unwrap(), new_key().unwrap());
        assert_ne!(a, b);
        for k in [&a, &b] {
            assert_eq!(k.len(), 46, "{k}");
            assert!(k.starts_with("jk-") && k[3..].bytes().all(|c| c.is_ascii_alphanumeric()));
            let h = sha256_hex(k);
            assert_eq!(h.len(), 64);
            assert!(
                h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
                "{h}"
            );
        }
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn expiry_takes_days_hours_minutes_seconds() {
        assert_eq!(parse_expires("30d").unwrap(), 30 * 86_400_000);
        assert_eq!(parse_expires("12h").unwrap(), 12 * 3_600_000);
        assert_eq!(parse_expires("90m").unwrap(), 90 * 60_000);
        assert_eq!(parse_expires("3600s").unwrap(), 3_600_000);
        assert_eq!(parse_expires("3650d").unwrap(), 3650 * 86_400_000);
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "3651d",
            "1.5h",
            "30",
            "30w",
            "ä",
            "99999999999999999999d",
        ] {
            let e = parse_expires(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("--expires ") && e.contains("30d"),
                "{bad}: {e}"
            );
        }
    }
}
