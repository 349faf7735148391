//! Test certificates, made with rcgen in a temporary directory: a cluster CA and one node
//! certificate (serverAuth and clientAuth, for `localhost` and 127.0.0.1), plus a second,
//! unrelated CA and a certificate it signed, which a cluster must refuse.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// PEM files of one CA and the node certificate it signed.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// Writes `NAME-ca.pem`, `NAME.pem` and `NAME-key.pem` into `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = p.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, format!("{name} node"));
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        let write = |file: String, pem: String| {
            let path = dir.join(file);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Self {
            ca: write(format!("{name}-ca.pem"), ca.pem()),
            cert: write(format!("{name}.pem"), cert.pem()),
            key: write(format!("{name}-key.pem"), key.serialize_pem()),
        }
    }

    /// The three files as `JOULE_TLS_*` environment variables.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("JOULE_TLS_CERT", self.cert.display().to_string()),
            ("JOULE_TLS_KEY", self.key.display().to_string()),
            ("JOULE_TLS_CA", self.ca.display().to_string()),
        ]
    }

    /// The three files as daemon flags.
    pub fn flags(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (flag, p) in [
            ("--tls-cert", &self.cert),
            ("--tls-key", &self.key),
            ("--tls-ca", &self.ca),
        ] {
            v.push(flag.to_string());
            v.push(p.display().to_string());
        }
        v
    }

    /// The tonic client setting: trusts this CA and presents this certificate.
    pub fn client(&self) -> tonic::transport::ClientTlsConfig {
        let read = |p: &PathBuf| std::fs::read(p).unwrap();
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(&self.ca)))
            .identity(tonic::transport::Identity::from_pem(
                read(&self.cert),
                read(&self.key),
            ))
    }
}
