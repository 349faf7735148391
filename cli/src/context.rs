//! Contexts, as kubeconfig has them: `${JOULE_HOME:-~/.config/joule}/config.yaml` names
//! clusters (scheduler addresses, the admin token, the gateway's OpenAI URL and an API key) and
//! which one is current. This module owns reading, writing (atomically, mode 600: it holds
//! tokens) and choosing the context; it never prints a token, and it never writes a file it
//! could not read back. Whoever changes the file holds [`lock`] from load to save.
//!
//! Where a setting comes from, first match wins: the flag, its `JOULE_*` variable, the context
//! `--context` (or `JOULE_CONTEXT`) names, the current context.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The file: contexts and the current one.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_context: String,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

fn api_version() -> String {
    "joule/v1".into()
}
fn kind() -> String {
    "Config".into()
}

/// One cluster as this client reaches it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Context {
    pub name: String,
    /// Scheduler replicas, host:port.
    #[serde(default)]
    pub servers: Vec<String>,
    /// The admin token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// The gateway's OpenAI base URL (`http://host:port/v1`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// A tenant's API key for the gateway.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_key: String,
    /// PEM CA bundle the replicas' certificates must chain to: connections are TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<PathBuf>,
    /// PEM client certificate, for a cluster that demands one (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// The name to expect in the replicas' certificates, when it is not the host in `servers`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tls_server_name: String,
}

impl Context {
    /// The TLS settings connections to this context's replicas use; `None`: plain TCP.
    pub fn tls(&self) -> Option<joule_client::tls::TlsArgs> {
        if self.certificate_authority.is_none() && self.client_certificate.is_none() {
            return None;
        }
        Some(joule_client::tls::TlsArgs {
            tls_cert: self.client_certificate.clone(),
            tls_key: self.client_key.clone(),
            tls_ca: self.certificate_authority.clone(),
            tls_server_name: Some(self.tls_server_name.clone()).filter(|n| !n.is_empty()),
        })
    }

    /// What the listing's TLS column says: `mutual`, `ca` (server verified, no client
    /// certificate) or nothing (plain).
    pub fn tls_mode(&self) -> &'static str {
        match (&self.certificate_authority, &self.client_certificate) {
            (Some(_), Some(_)) => "mutual",
            (Some(_), None) => "ca",
            _ => "",
        }
    }

    /// The TLS settings are whole: a client certificate comes with its key and a CA to
    /// verify the servers with (as `--client-certificate` needs `--certificate-authority`).
    /// Checked where the context is written or used, not at load, so that `config
    /// set-context` can still mend a file edited by hand.
    pub fn check_tls(&self) -> anyhow::Result<()> {
        let missing = match (
            &self.certificate_authority,
            &self.client_certificate,
            &self.client_key,
        ) {
            (_, Some(_), None) => Some("a client-certificate and no client-key"),
            (_, None, Some(_)) => Some("a client-key and no client-certificate"),
            (None, Some(_), _) => Some(
                "a client-certificate and no certificate-authority (to verify the servers with)",
            ),
            (None, None, None) if !self.tls_server_name.is_empty() => {
                Some("a tls-server-name and no certificate-authority")
            }
            _ => None,
        };
        if let Some(what) = missing {
            anyhow::bail!(
                "context {:?} has {what}: run `joulectl config set-context {}` with \
                 --certificate-authority, --client-certificate and --client-key (or --no-tls)",
                self.name,
                self.name
            );
        }
        Ok(())
    }
}

/// `$JOULE_HOME`, else `$XDG_CONFIG_HOME/joule`, else `~/.config/joule`.
pub fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(h) = std::env::var_os("JOULE_HOME").filter(|h| !h.is_empty()) {
        return absolute(PathBuf::from(h));
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|h| !h.is_empty()) {
        return absolute(PathBuf::from(x).join("joule"));
    }
    Ok(home()?.join(".config").join("joule"))
}

/// `p` made absolute against the working directory (a relative `JOULE_HOME` would otherwise
/// mean another place to every daemon started elsewhere).
pub fn absolute(p: PathBuf) -> anyhow::Result<PathBuf> {
    std::path::absolute(&p).with_context(|| format!("{}: cannot make it absolute", p.display()))
}

/// `$HOME`, or an error that says to set it.
pub fn home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set: set HOME or JOULE_HOME")
}

/// The config file's path.
pub fn path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("config.yaml"))
}

impl Config {
    /// The file at `p`; an empty config when there is none. A file that does not parse is an
    /// error naming it and what to do.
    pub fn load_from(p: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::empty()),
            Err(e) => anyhow::bail!("cannot read {}: {e}", p.display()),
        };
        if text.trim().is_empty() {
            return Ok(Self::empty());
        }
        let c: Self = serde_norway::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid joulectl config: {e} (fix it, or move it away and run \
                 `joulectl config set-context`)",
                p.display()
            )
        })?;
        c.check().with_context(|| p.display().to_string())?;
        Ok(c)
    }

    pub fn load() -> anyhow::Result<Self> {
        Self::load_from(&path()?)
    }

    fn empty() -> Self {
        Self {
            api_version: api_version(),
            kind: kind(),
            ..Default::default()
        }
    }

    /// Names are unique and non-empty, and the current context exists.
    fn check(&self) -> anyhow::Result<()> {
        if self.kind != "Config" {
            anyhow::bail!("kind is {:?}; a joulectl config has kind Config", self.kind);
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.contexts {
            if c.name.is_empty() {
                anyhow::bail!("a context has no name");
            }
            if !seen.insert(c.name.as_str()) {
                anyhow::bail!("context {:?} is listed twice", c.name);
            }
        }
        if !self.current_context.is_empty() && !seen.contains(self.current_context.as_str()) {
            anyhow::bail!(
                "current-context {:?} is not among the contexts (run `joulectl config \
                 use-context NAME`)",
                self.current_context
            );
        }
        Ok(())
    }

    /// Writes the file whole: a temporary file (mode 600) renamed over it.
    pub fn save_to(&self, p: &Path) -> anyhow::Result<()> {
        self.check()?;
        let dir = p.parent().context("the config path has no directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let text = serde_norway::to_string(self)?;
        let tmp = dir.join(format!(".config.yaml.{}", std::process::id()));
        write_private(&tmp, text.as_bytes())?;
        std::fs::rename(&tmp, p).with_context(|| format!("cannot write {}", p.display()))?;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name)
    }

    /// Adds or replaces the context of the same name.
    pub fn upsert(&mut self, c: Context) {
        match self.contexts.iter_mut().find(|x| x.name == c.name) {
            Some(x) => *x = c,
            None => self.contexts.push(c),
        }
    }

    /// The context `--context` names, or the current one; `None` when neither is set.
    pub fn chosen(&self, flag: Option<&str>) -> anyhow::Result<Option<&Context>> {
        match flag.filter(|n| !n.is_empty()) {
            Some(n) => self.get(n).map(Some).ok_or_else(|| {
                let names: Vec<&str> = self.contexts.iter().map(|c| c.name.as_str()).collect();
                anyhow::anyhow!(
                    "no context {n:?} (contexts: {}; see `joulectl config get-contexts`)",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )
            }),
            None if self.current_context.is_empty() => Ok(None),
            None => Ok(self.get(&self.current_context)),
        }
    }
}

/// How long a change to the config file waits for another joulectl changing it.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// An exclusive lock on the config file at `p` (on `.config.yaml.lock` beside it), held until
/// the returned file is dropped: take it before loading a config to change, so two joulectl
/// runs (`cluster up` and `config set-context`, say) cannot lose each other's change.
pub fn lock(p: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = p.parent().context("the config path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let lp = dir.join(".config.yaml.lock");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lp)
        .with_context(|| format!("cannot open {}", lp.display()))?;
    let until = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another joulectl has been changing {} for {} s (lock {}): try again",
                p.display(),
                LOCK_WAIT.as_secs(),
                lp.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lp.display()));
            }
        }
    }
}

/// Writes `bytes` to a new file only its owner can read.
pub fn write_private(p: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(p);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .with_context(|| format!("cannot create {}", p.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", p.display()))
}

/// Where the cluster's admin API is and its token, resolved from the flags and the context.
#[derive(Debug)]
pub struct Target {
    pub servers: String,
    pub token: String,
}

/// What to do when no cluster is named anywhere.
pub const NO_CONTEXT: &str =
    "no context: run `joulectl cluster up` or pass --server (or set JOULE_SERVER)";

/// Resolves the admin API. `--server` (or `JOULE_SERVER`) wins over the context and then takes
/// its token from `--token`/`JOULE_TOKEN` only, so a context's token never goes to a server it
/// was not made for.
pub fn admin_target(
    server: Option<&str>,
    token: Option<&str>,
    context: Option<&str>,
) -> anyhow::Result<Target> {
    // A context named on purpose wins over the environment's JOULE_SERVER and JOULE_TOKEN
    // (though not over the flags).
    let named = context.is_some_and(|c| !c.is_empty());
    let token = token.filter(|t| !(t.is_empty() || named && from_env(t, "JOULE_TOKEN")));
    if let Some(s) = server.filter(|_| !replicas_from_context(server, context)) {
        let token = token.with_context(|| {
            format!("--server {s} needs --token (or JOULE_TOKEN): the cluster's admin token")
        })?;
        return Ok(Target {
            servers: s.to_string(),
            token: token.to_string(),
        });
    }
    let cfg = Config::load()?;
    let c = cfg.chosen(context)?.context(NO_CONTEXT)?;
    if c.servers.is_empty() {
        anyhow::bail!(
            "context {:?} has no servers: run `joulectl config set-context {} --server ADDRS`",
            c.name,
            c.name
        );
    }
    let token = match token {
        Some(t) => t.to_string(),
        None if !c.token.is_empty() => c.token.clone(),
        None => anyhow::bail!(
            "context {:?} has no token: pass --token or run `joulectl config set-context {} \
             --token TOKEN`",
            c.name,
            c.name
        ),
    };
    Ok(Target {
        servers: c.servers.join(","),
        token,
    })
}

/// Whether the replicas come from a context rather than `--server` (or `JOULE_SERVER`, which a
/// context `--context` names wins over), as [`admin_target`] decides.
pub fn replicas_from_context(server: Option<&str>, context: Option<&str>) -> bool {
    let named = context.is_some_and(|c| !c.is_empty());
    server.is_none_or(|s| s.is_empty() || named && from_env(s, "JOULE_SERVER"))
}

/// The TLS settings of the context `--context` names, or the current one: its name and
/// settings; `None` where no context is chosen or it has no TLS; an error where its settings
/// are not whole ([`Context::check_tls`]). A config that cannot be read is left to
/// [`admin_target`] to report.
pub fn context_tls(
    context: Option<&str>,
) -> anyhow::Result<Option<(String, joule_client::tls::TlsArgs)>> {
    let Ok(cfg) = Config::load() else {
        return Ok(None);
    };
    let Ok(Some(c)) = cfg.chosen(context) else {
        return Ok(None);
    };
    c.check_tls()?;
    Ok(c.tls().map(|t| (c.name.clone(), t)))
}

/// Whether `value` is what the environment variable `var` holds (clap gives a flag and its
/// variable alike; where the source matters, this tells them apart).
pub fn from_env(value: &str, var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == value)
}

/// The gateway URL and API key: the flags, else the chosen context's. A context's gateway
/// gets the context's key (never one from the environment, such as `OPENAI_API_KEY`, meant for
/// another server).
pub fn gateway_target(
    url: Option<&str>,
    key: Option<&str>,
    context: Option<&str>,
) -> anyhow::Result<(String, String)> {
    let from_flags = url.filter(|u| !u.is_empty());
    let cfg = if from_flags.is_some() && key.is_some() {
        Config::empty()
    } else {
        Config::load()?
    };
    let ctx = cfg.chosen(context)?;
    let url = match from_flags {
        Some(u) => u.to_string(),
        None => match ctx.filter(|c| !c.gateway.is_empty()) {
            Some(c) => c.gateway.clone(),
            None => anyhow::bail!(
                "no gateway: pass --url (the gateway's OpenAI base URL) or run `joulectl \
                 cluster up`"
            ),
        },
    };
    let ctx_key = ctx
        .filter(|c| c.gateway == url && !c.api_key.is_empty())
        .map(|c| c.api_key.clone());
    let key = match (from_flags, ctx_key) {
        // The URL came from the context: its key.
        (None, Some(k)) => k,
        (_, ctx_key) => key
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .or(ctx_key)
            .unwrap_or_default(),
    };
    Ok((url, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Config {
        Config {
            current_context: "local".into(),
            contexts: vec![Context {
                name: "local".into(),
                servers: vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into()],
                token: "t0k".into(),
                gateway: "http://127.0.0.1:8080/v1".into(),
                api_key: String::new(),
                certificate_authority: Some("/etc/joule/ca.pem".into()),
                client_certificate: Some("/etc/joule/me.pem".into()),
                client_key: Some("/etc/joule/me-key.pem".into()),
                tls_server_name: "scheduler.joule".into(),
            }],
            ..Config::empty()
        }
    }

    #[test]
    fn round_trips_privately_and_atomically() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub").join("config.yaml");
        assert_eq!(Config::load_from(&p).unwrap(), Config::empty());
        sample().save_to(&p).unwrap();
        assert_eq!(Config::load_from(&p).unwrap(), sample());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left");
    }

    #[test]
    fn a_server_flag_takes_the_replicas_and_their_tls_from_the_context() {
        assert!(!replicas_from_context(Some("10.0.0.1:7001"), None));
        assert!(!replicas_from_context(Some("10.0.0.1:7001"), Some("prod")));
        assert!(replicas_from_context(None, None));
        assert!(replicas_from_context(Some(""), Some("prod")));
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.yaml");
        let held = lock(&p).unwrap();
        // A second open file description of the same lock file is refused while it is held.
        let other = std::fs::File::open(d.path().join(".config.yaml.lock")).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(held);
        other.try_lock().unwrap();
        other.unlock().unwrap();
        drop(lock(&p).unwrap());
    }

    #[test]
    fn a_broken_file_names_itself_and_what_to_do() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.yaml");
        std::fs::write(&p, "contexts: [name: {").unwrap();
        let e = format!("{:#}", Config::load_from(&p).unwrap_err());
        assert!(
            e.contains("config.yaml") && e.contains("set-context"),
            "{e}"
        );
        std::fs::write(&p, "current-context: gone\ncontexts: []\n").unwrap();
        let e = format!("{:#}", Config::load_from(&p).unwrap_err());
        assert!(e.contains("gone") && e.contains("use-context"), "{e}");
        std::fs::write(&p, "contexts: [{name: a, colour: red}]\n").unwrap();
        let e = format!("{:#}", Config::load_from(&p).unwrap_err());
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn half_a_tls_setting_is_refused_naming_what_is_missing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.yaml");
        for (ctx, missing) in [
            (
                "{name: a, client-certificate: /c.pem, certificate-authority: /ca.pem}",
                "client-key",
            ),
            (
                "{name: a, client-key: /k.pem, certificate-authority: /ca.pem}",
                "client-certificate",
            ),
            (
                "{name: a, client-certificate: /c.pem, client-key: /k.pem}",
                "certificate-authority",
            ),
            ("{name: a, tls-server-name: s}", "certificate-authority"),
        ] {
            // The file loads (so `set-context` can mend it); the context is refused where it
            // is written or used.
            std::fs::write(&p, format!("contexts: [{ctx}]\n")).unwrap();
            let c = Config::load_from(&p).unwrap();
            let e = format!("{:#}", c.get("a").unwrap().check_tls().unwrap_err());
            assert!(e.contains(missing) && e.contains("\"a\""), "{ctx}: {e}");
        }
        std::fs::write(
            &p,
            "contexts: [{name: a, certificate-authority: /ca.pem}]\n",
        )
        .unwrap();
        let c = Config::load_from(&p).unwrap();
        let a = c.get("a").unwrap();
        a.check_tls().unwrap();
        assert_eq!(a.tls_mode(), "ca");
        let t = a.tls().unwrap();
        assert_eq!(t.tls_ca.as_deref(), Some(Path::new("/ca.pem")));
        assert!(t.tls_cert.is_none() && t.tls_server_name.is_none());
        sample().contexts[0].check_tls().unwrap();
        assert_eq!(sample().contexts[0].tls_mode(), "mutual");
        assert!(Context::default().tls().is_none());
    }

    #[test]
    fn chosen_context_and_unknown_names() {
        let c = sample();
        assert_eq!(c.chosen(None).unwrap().unwrap().name, "local");
        assert_eq!(c.chosen(Some("local")).unwrap().unwrap().name, "local");
        let e = c.chosen(Some("prod")).unwrap_err().to_string();
        assert!(e.contains("prod") && e.contains("local"), "{e}");
        assert!(Config::empty().chosen(None).unwrap().is_none());
    }

    #[test]
    fn an_explicit_server_needs_its_own_token() {
        let e = admin_target(Some("10.0.0.1:7001"), None, None).unwrap_err();
        assert!(e.to_string().contains("--token"), "{e}");
        let t = admin_target(Some("10.0.0.1:7001"), Some("x"), None).unwrap();
        assert_eq!(
            (t.servers.as_str(), t.token.as_str()),
            ("10.0.0.1:7001", "x")
        );
    }
}
