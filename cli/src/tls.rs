//! The roots HTTPS clients of joulectl trust: the system's CA bundle (`SSL_CERT_FILE`, else
//! the Debian/Red Hat bundle paths), so a proxy or private CA the machine trusts is trusted
//! here as `pip` and `curl` trust it; Mozilla's roots (built in) when the system has none.
//! It owns nothing else and never turns verification off.

use std::sync::OnceLock;

use ureq::tls::{PemItem, RootCerts, TlsConfig};

const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

fn roots() -> RootCerts {
    static ROOTS: OnceLock<RootCerts> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let from_env = std::env::var("SSL_CERT_FILE")
                .ok()
                .filter(|p| !p.is_empty());
            let paths = from_env
                .iter()
                .map(String::as_str)
                .chain(BUNDLES.iter().copied());
            for p in paths {
                let Ok(pem) = std::fs::read(p) else { continue };
                let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                    .filter_map(|i| match i {
                        Ok(PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if !certs.is_empty() {
                    return RootCerts::new_with_certs(&certs);
                }
            }
            RootCerts::WebPki
        })
        .clone()
}

/// The TLS settings every joulectl HTTPS client uses.
pub fn config() -> TlsConfig {
    TlsConfig::builder().root_certs(roots()).build()
}
