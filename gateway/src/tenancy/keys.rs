//! Who is asking: the tenants and their keys' SHA-256 hashes from the routing view, and the
//! check of a presented `Authorization: Bearer KEY`. A key is hashed and looked up by its hash;
//! the stored hash is then compared in constant time. No key, hash or part of either ever
//! reaches a log, a metric or an error message; a refusal only says what kind of key was wrong.

use std::collections::HashMap;
use std::sync::Arc;

use joule_proto::internal::v1 as pb;
use sha2::{Digest as _, Sha256};

use crate::error::Error;

/// What every key starts with.
pub const KEY_PREFIX: &str = "jk-";
/// `jk-` and 43 base62 characters (32 random bytes).
pub const KEY_LEN: usize = 46;
/// The longest `Authorization` value looked at (anything longer is refused unread).
const MAX_HEADER: usize = 256;

/// A tenant as the gateway admits and bills it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub name: Arc<str>,
    pub weight: f64,
    pub quota: pb::Quota,
    /// Deployments it may use (empty: all).
    pub deployments: Vec<String>,
    /// This month's committed usage, from the view.
    pub month_tokens: u64,
    pub month_mj: u64,
}

impl Tenant {
    /// The tenant every request is served as with `--no-auth`.
    pub fn anonymous() -> Arc<Tenant> {
        Arc::new(Tenant {
            name: Arc::from("default"),
            weight: 1.0,
            quota: pb::Quota::default(),
            deployments: Vec::new(),
            month_tokens: 0,
            month_mj: 0,
        })
    }

    pub fn may_use(&self, deployment: &str) -> bool {
        self.deployments.is_empty() || self.deployments.iter().any(|d| d == deployment)
    }
}

#[derive(Clone)]
struct Key {
    tenant: Arc<Tenant>,
    id: String,
    sha256: [u8; 32],
    expires_at_ms: i64,
}

/// A request's authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: Arc<Tenant>,
    /// The key's id (its first characters), for last-used records; empty with `--no-auth`.
    pub key_id: String,
}

/// Every key of every tenant, by hash.
#[derive(Default)]
pub struct Directory {
    keys: HashMap<[u8; 32], Key>,
    tenants: HashMap<String, Arc<Tenant>>,
}

/// Counts only: a hash never reaches a log through `{:?}`.
impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("tenants", &self.tenants.len())
            .field("keys", &self.keys.len())
            .finish()
    }
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Directory {
    pub fn from_proto(tenants: &[pb::RoutedTenant]) -> Self {
        let mut d = Directory::default();
        for t in tenants {
            let tenant = Arc::new(Tenant {
                name: Arc::from(t.name.as_str()),
                weight: if t.weight > 0.0 { t.weight } else { 1.0 },
                quota: t.quota.unwrap_or_default(),
                deployments: t.deployments.clone(),
                month_tokens: t.month_tokens,
                month_mj: t.month_mj,
            });
            for k in &t.keys {
                if let Some(h) = unhex(&k.sha256) {
                    d.keys.insert(
                        h,
                        Key {
                            tenant: tenant.clone(),
                            id: k.id.clone(),
                            sha256: h,
                            expires_at_ms: k.expires_at_ms,
                        },
                    );
                }
            }
            d.tenants.insert(t.name.clone(), tenant);
        }
        d
    }

    pub fn tenant(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(name)
    }

    pub fn len(&self) -> (usize, usize) {
        (self.tenants.len(), self.keys.len())
    }

    /// The caller an `Authorization` header value (`Bearer KEY`) stands for, at `now_ms`.
    pub fn authenticate(&self, header: Option<&[u8]>, now_ms: i64) -> Result<Caller, Error> {
        const HOW: &str = "send `Authorization: Bearer KEY` with a key from `joulectl create \
                           apikey`";
        let Some(h) = header else {
            return Err(Error::Unauthenticated(format!("no API key: {HOW}")));
        };
        if h.len() > MAX_HEADER {
            return Err(Error::Unauthenticated(format!(
                "the Authorization header is longer than any API key: {HOW}"
            )));
        }
        let Some(key) = h.strip_prefix(b"Bearer ") else {
            return Err(Error::Unauthenticated(format!(
                "the Authorization header is not `Bearer KEY`: {HOW}"
            )));
        };
        let key = key.trim_ascii();
        let shaped = key.len() == KEY_LEN
            && key.starts_with(KEY_PREFIX.as_bytes())
            && key[KEY_PREFIX.len()..]
                .iter()
                .all(u8::is_ascii_alphanumeric);
        if !shaped {
            return Err(Error::Unauthenticated(format!(
                "that is not a Joule API key (`{KEY_PREFIX}` and 43 letters or digits): {HOW}"
            )));
        }
        let hash: [u8; 32] = Sha256::digest(key).into();
        let found = self
            .keys
            .get(&hash)
            .filter(|k| joule_client::same_token(&k.sha256, &hash));
        let Some(k) = found else {
            return Err(Error::Unauthenticated(
                "invalid API key: it was revoked, or never existed in this cluster".into(),
            ));
        };
        if k.expires_at_ms != 0 && now_ms >= k.expires_at_ms {
            return Err(Error::Unauthenticated(format!(
                "this API key ({}) expired; create another with `joulectl create apikey`",
                k.id
            )));
        }
        Ok(Caller {
            tenant: k.tenant.clone(),
            key_id: k.id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "jk-0123456789abcdefghijABCDEFGHIJ0123456789abc";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn dir(expires: i64) -> Directory {
        Directory::from_proto(&[pb::RoutedTenant {
            name: "acme".into(),
            weight: 3.0,
            deployments: vec!["smollm2".into()],
            keys: vec![pb::RoutedKey {
                id: KEY[..11].into(),
                sha256: hex(&Sha256::digest(KEY.as_bytes())),
                expires_at_ms: expires,
            }],
            ..Default::default()
        }])
    }

    #[test]
    fn a_known_key_names_its_tenant_and_nothing_else_does() {
        assert_eq!(KEY.len(), KEY_LEN);
        let d = dir(0);
        let bearer = format!("Bearer {KEY}");
        let c = d.authenticate(Some(bearer.as_bytes()), 5).unwrap();
        assert_eq!((&*c.tenant.name, c.key_id.as_str()), ("acme", &KEY[..11]));
        assert!(c.tenant.may_use("smollm2") && !c.tenant.may_use("llama"));
        let other = KEY.replace('a', "b");
        let long = "x".repeat(300);
        for bad in [
            None,
            Some(KEY.to_string()),
            Some(format!("Bearer {other}")),
            Some("Bearer hello".to_string()),
            Some(format!("Basic {KEY}")),
            Some(format!("Bearer {long}")),
            Some(format!("Bearer jk-{}", "!".repeat(43))),
        ] {
            let e = d
                .authenticate(bad.as_deref().map(str::as_bytes), 5)
                .unwrap_err();
            assert!(matches!(e, Error::Unauthenticated(_)), "{bad:?}");
            assert!(
                !e.message().contains(&other[3..]) && !e.message().contains(&KEY[3..]),
                "a refusal echoed the key: {}",
                e.message()
            );
        }
    }

    #[test]
    fn an_expired_key_is_refused() {
        let d = dir(100);
        let bearer = format!("Bearer {KEY}");
        assert!(d.authenticate(Some(bearer.as_bytes()), 99).is_ok());
        let e = d.authenticate(Some(bearer.as_bytes()), 100).unwrap_err();
        assert!(e.message().contains("expired"), "{e}");
    }
}
