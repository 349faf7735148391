//! Loading and reloading the TLS files.

use super::*;

fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    write_pair(dir, name, &cert, &key)
}

/// Writes NAME.pem and NAME-key.pem into `dir`.
fn write_pair(
    dir: &Path,
    name: &str,
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
) -> (PathBuf, PathBuf) {
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn args(cert: Option<&Path>, key: Option<&Path>, ca: Option<&Path>) -> TlsArgs {
    TlsArgs {
        tls_cert: cert.map(Path::to_path_buf),
        tls_key: key.map(Path::to_path_buf),
        tls_ca: ca.map(Path::to_path_buf),
        tls_server_name: None,
    }
}

#[test]
fn good_files_load_and_say_what_they_turn_on() {
    let d = tempfile::tempdir().unwrap();
    let (c, k) = pair(d.path(), "a");
    let none = args(None, None, None).load().unwrap();
    assert!(!none.serves_tls() && none.grpc_internal().is_none() && none.http().is_none());
    let server = args(Some(&c), Some(&k), None).load().unwrap();
    assert!(server.serves_tls() && !server.mutual());
    assert!(server.http().is_some() && server.grpc_internal().is_some());
    let mutual = args(Some(&c), Some(&k), Some(&c)).load().unwrap();
    assert!(mutual.serves_tls() && mutual.mutual());
    let client_only = args(None, None, Some(&c)).load().unwrap();
    assert!(!client_only.serves_tls() && client_only.client.is_some());
}

#[test]
fn bad_files_are_refused_naming_the_flag_and_the_path() {
    let d = tempfile::tempdir().unwrap();
    let (c, k) = pair(d.path(), "a");
    let (c2, k2) = pair(d.path(), "b");
    let junk = d.path().join("junk.pem");
    std::fs::write(&junk, "not pem at all\n").unwrap();
    let missing = d.path().join("missing.pem");
    let cases: Vec<(TlsArgs, &str, &Path)> = vec![
        (args(Some(&missing), Some(&k), None), "--tls-cert", &missing),
        (args(Some(&c), Some(&missing), None), "--tls-key", &missing),
        (args(None, None, Some(&missing)), "--tls-ca", &missing),
        (args(Some(&junk), Some(&k), None), "--tls-cert", &junk),
        (args(Some(&c), Some(&junk), None), "--tls-key", &junk),
        (args(None, None, Some(&junk)), "--tls-ca", &junk),
        // A key that is not the certificate's.
        (args(Some(&c), Some(&k2), None), "--tls-key", &k2),
        (args(Some(&c2), Some(&k), None), "--tls-key", &k),
    ];
    for (a, flag, path) in cases {
        let e = a.load().unwrap_err().to_string();
        assert!(
            e.contains(flag) && e.contains(&path.display().to_string()),
            "{a:?}: {e}"
        );
    }
    let half = args(Some(&c), None, None).load().unwrap_err().to_string();
    assert!(
        half.contains("--tls-cert and --tls-key go together"),
        "{half}"
    );
}

#[test]
fn a_renewed_pair_is_picked_up_and_a_broken_one_is_not() {
    let d = tempfile::tempdir().unwrap();
    let (c, k) = pair(d.path(), "a");
    let first = std::fs::read(&c).unwrap();
    let files = KeyFiles::load(&c, &k, RELOAD_CHECK).unwrap();
    let der = |ck: &CertifiedKey| ck.cert[0].to_vec();
    let a = der(&files.current());
    let age = |files: &KeyFiles| {
        files.state.lock().unwrap().checked = Instant::now() - RELOAD_CHECK;
    };
    // Renewed in place (new files renamed over the old, as Kubernetes swaps a Secret's
    // symlink): served after the next check, not before it.
    let (c2, k2) = pair(d.path(), "b");
    std::fs::rename(&c2, &c).unwrap();
    std::fs::rename(&k2, &k).unwrap();
    assert_eq!(
        der(&files.current()),
        a,
        "checked before RELOAD_CHECK passed"
    );
    age(&files);
    let b = der(&files.current());
    assert_ne!(b, a, "the renewed certificate is served");
    // Caught half-written (a certificate whose key has not arrived): the previous pair stays.
    let tmp = d.path().join("tmp.pem");
    std::fs::write(&tmp, &first).unwrap();
    std::fs::rename(&tmp, &c).unwrap();
    age(&files);
    assert_eq!(der(&files.current()), b, "a mismatched pair is not loaded");
    std::fs::write(&c, "garbage").unwrap();
    age(&files);
    assert_eq!(
        der(&files.current()),
        b,
        "an unreadable certificate is not loaded"
    );
}

#[test]
fn daemons_take_all_three_files_or_none() {
    let p = Some(PathBuf::from("x"));
    let all = args(p.as_deref(), p.as_deref(), p.as_deref());
    assert!(all.check_all_or_none().is_ok());
    assert!(args(None, None, None).check_all_or_none().is_ok());
    for half in [
        args(p.as_deref(), p.as_deref(), None),
        args(None, None, p.as_deref()),
    ] {
        let e = half.check_all_or_none().unwrap_err().to_string();
        assert!(e.contains("--tls-cert, --tls-key and --tls-ca"), "{e}");
    }
}

/// A CA, and leaf certificates it signs for `localhost` (server and client auth).
struct Ca {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

impl Ca {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        Self { key, cert }
    }

    /// Writes NAME.pem and NAME-key.pem into `dir`.
    fn leaf(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        write_pair(dir, name, &cert, &key)
    }
}

/// One mutual-TLS handshake with the listener: the certificate the client saw, and the one
/// the server saw.
async fn handshake(
    l: &mut listener::Listener,
    addr: std::net::SocketAddr,
    client: &Client,
) -> (Vec<u8>, Vec<u8>) {
    use axum::serve::Listener as _;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let s = tokio_rustls::TlsConnector::from(client.config.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    let (seen_by_client, (conn, _)) = tokio::join!(connect, l.accept());
    let listener::Conn::Tls(s) = conn else {
        panic!("a plain connection on a TLS port")
    };
    let seen_by_server = s.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (seen_by_client, seen_by_server)
}

#[tokio::test]
async fn a_renewed_certificate_is_served_and_presented_on_the_next_handshake() {
    let d = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_file = d.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let (c, k) = ca.leaf(d.path(), "a");
    let a = CertificateDer::from_pem_file(&c).unwrap().to_vec();
    let tls = args(Some(&c), Some(&k), Some(&ca_file))
        .load_checking_every(Duration::ZERO)
        .unwrap();
    let client = tls.client.clone().unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let mut l = listener::Listener::new(tcp, tls.grpc_internal(), true).unwrap();
    assert_eq!(
        handshake(&mut l, addr, &client).await,
        (a.clone(), a.clone())
    );
    // Renewed in place: the server serves, and the client presents, the new one.
    let (c2, k2) = ca.leaf(d.path(), "b");
    let b = CertificateDer::from_pem_file(&c2).unwrap().to_vec();
    std::fs::rename(&c2, &c).unwrap();
    std::fs::rename(&k2, &k).unwrap();
    assert_ne!(a, b);
    assert_eq!(handshake(&mut l, addr, &client).await, (b.clone(), b));
}
