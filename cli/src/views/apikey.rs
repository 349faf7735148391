//! A tenant's API key as the cluster knows it (its id and dates; never the key itself, which
//! the cluster does not have): `get apikeys --tenant NAME`.

use joule_client::calendar::format_ms;
use joule_proto::v1;
use serde::Serialize;

use crate::render::Render;

#[derive(Debug, Serialize)]
pub struct ApiKey {
    pub tenant: String,
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
    /// 0: never.
    pub expires_at_ms: i64,
    /// 0: never used.
    pub last_used_ms: i64,
}

impl From<v1::ApiKeyInfo> for ApiKey {
    fn from(k: v1::ApiKeyInfo) -> Self {
        Self {
            tenant: k.tenant,
            id: k.id,
            name: k.name,
            created_at_ms: k.created_at_ms,
            expires_at_ms: k.expires_at_ms,
            last_used_ms: k.last_used_ms,
        }
    }
}

/// A time in UTC, or `zero` when there is none.
pub fn time_or(ms: i64, zero: &str) -> String {
    if ms <= 0 {
        zero.to_string()
    } else {
        format_ms(ms)
    }
}

impl Render for ApiKey {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["ID", "NAME", "CREATED", "EXPIRES", "LAST-USED"]
    }

    fn row(&self, _wide: bool) -> Vec<String> {
        vec![
            self.id.clone(),
            if self.name.is_empty() {
                "-".into()
            } else {
                self.name.clone()
            },
            time_or(self.created_at_ms, "-"),
            time_or(self.expires_at_ms, "never"),
            time_or(self.last_used_ms, "never"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_times_in_utc_and_never() {
        let k = ApiKey::from(v1::ApiKeyInfo {
            tenant: "acme".into(),
            id: "jk-AbCdEfGh".into(),
            name: String::new(),
            created_at_ms: 1_796_133_780_000,
            expires_at_ms: 0,
            last_used_ms: 0,
        });
        assert_eq!(
            k.row(false),
            ["jk-AbCdEfGh", "-", "2026-12-01T14:03:00Z", "never", "never"]
        );
    }
}
