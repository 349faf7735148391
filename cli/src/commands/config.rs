//! `config get-contexts | current-context | use-context | set-context | delete-context`, as
//! `kubectl config` has them. Tokens and keys are never printed: listings show whether one is
//! set. `set-context` keeps the TLS flags typed with it (`--certificate-authority`,
//! `--client-certificate`, `--client-key`, `--tls-server-name`; `--no-tls` forgets them) as
//! absolute paths, and writes nothing unless the files load as a whole.

use std::path::PathBuf;

use serde::Serialize;

use crate::args::{Cli, ConfigCmd};
use crate::connect;
use crate::context::{self, Config, Context};
use crate::render::{self, Format, Render};

/// A context as listings show it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    current: bool,
    name: String,
    servers: Vec<String>,
    gateway: String,
    token: &'static str,
    api_key: &'static str,
    tls: &'static str,
}

fn set(s: &str) -> &'static str {
    if s.is_empty() { "" } else { "(set)" }
}

impl Render for Row {
    fn headers(_: bool) -> Vec<&'static str> {
        vec![
            "CURRENT", "NAME", "SERVERS", "GATEWAY", "TOKEN", "API KEY", "TLS",
        ]
    }
    fn row(&self, _: bool) -> Vec<String> {
        vec![
            if self.current { "*" } else { "" }.into(),
            self.name.clone(),
            self.servers.join(","),
            self.gateway.clone(),
            self.token.into(),
            self.api_key.into(),
            self.tls.into(),
        ]
    }
}

pub fn run(cmd: &ConfigCmd, cli: &Cli, f: Format) -> anyhow::Result<()> {
    let p = context::path()?;
    // Secrets from standard input are read before the lock: a slow pipe must not hold it.
    let (token_in, key_in) = match cmd {
        ConfigCmd::SetContext { token, api_key, .. } => {
            let mut stdin_used = false;
            // `--token` shares its name with the global flag, whose JOULE_TOKEN clap hands
            // down: only a value typed here counts.
            let token = token
                .as_deref()
                .filter(|v| !context::from_env(v, "JOULE_TOKEN"));
            (
                token
                    .map(|t| secret(t, "--token", &mut stdin_used))
                    .transpose()?,
                api_key
                    .as_deref()
                    .map(|k| secret(k, "--api-key", &mut stdin_used))
                    .transpose()?,
            )
        }
        _ => (None, None),
    };
    let _lock = match cmd {
        ConfigCmd::GetContexts | ConfigCmd::CurrentContext => None,
        _ => Some(context::lock(&p)?),
    };
    let mut cfg = Config::load_from(&p)?;
    match cmd {
        ConfigCmd::GetContexts => {
            let rows: Vec<Row> = cfg
                .contexts
                .iter()
                .map(|c| Row {
                    current: c.name == cfg.current_context,
                    name: c.name.clone(),
                    servers: c.servers.clone(),
                    gateway: c.gateway.clone(),
                    token: set(&c.token),
                    api_key: set(&c.api_key),
                    tls: c.tls_mode(),
                })
                .collect();
            render::list(&rows, f)
        }
        ConfigCmd::CurrentContext => {
            if cfg.current_context.is_empty() {
                anyhow::bail!(
                    "current-context is not set in {} (run `joulectl config use-context NAME` \
                     or `joulectl cluster up`)",
                    p.display()
                );
            }
            println!("{}", cfg.current_context);
            Ok(())
        }
        ConfigCmd::UseContext { name } => {
            cfg.chosen(Some(name))?;
            cfg.current_context = name.clone();
            cfg.save_to(&p)?;
            println!("Switched to context {name:?}.");
            Ok(())
        }
        ConfigCmd::SetContext {
            name,
            server,
            gateway,
            no_tls,
            ..
        } => {
            let mut c = cfg.get(name).cloned().unwrap_or_else(|| Context {
                name: name.clone(),
                ..Default::default()
            });
            let created = cfg.get(name).is_none();
            // `--server` shares its name with the global flag, whose JOULE_SERVER clap hands
            // down: only a value typed here counts.
            let server = server
                .as_ref()
                .filter(|v| !context::from_env(v, "JOULE_SERVER"));
            if let Some(s) = server {
                c.servers = joule_client::address::parse_list(s)
                    .map_err(|e| anyhow::anyhow!("--server: {e}"))?;
            }
            if let Some(t) = token_in {
                c.token = t;
            }
            if let Some(g) = gateway {
                if !(g.starts_with("http://") || g.starts_with("https://")) {
                    anyhow::bail!("--gateway {g:?}: expected http://host:port/v1 or https://...");
                }
                c.gateway = g.trim_end_matches('/').to_string();
            }
            if let Some(k) = key_in {
                c.api_key = k;
            }
            set_tls(&mut c, cli, *no_tls)?;
            cfg.upsert(c);
            if cfg.current_context.is_empty() {
                cfg.current_context = name.clone();
            }
            cfg.save_to(&p)?;
            println!(
                "Context {name:?} {}.",
                if created { "created" } else { "modified" }
            );
            Ok(())
        }
        ConfigCmd::DeleteContext { name } => {
            if cfg.get(name).is_none() {
                cfg.chosen(Some(name))?;
            }
            cfg.contexts.retain(|c| &c.name != name);
            if &cfg.current_context == name {
                cfg.current_context.clear();
            }
            cfg.save_to(&p)?;
            println!("Deleted context {name:?} from {}.", p.display());
            Ok(())
        }
    }
}

/// The TLS flags typed with `set-context` (not their `JOULE_TLS_*` variables, which clap hands
/// down alike), applied to `c` after `forget` (`--no-tls`) cleared its settings;
/// then the settings must be whole and their files load.
fn set_tls(c: &mut Context, cli: &Cli, forget: bool) -> anyhow::Result<()> {
    if forget {
        c.certificate_authority = None;
        c.client_certificate = None;
        c.client_key = None;
        c.tls_server_name.clear();
    }
    let typed = |v: &Option<PathBuf>, var: &str| -> anyhow::Result<Option<PathBuf>> {
        match v.as_ref() {
            Some(p) if !context::from_env(&p.to_string_lossy(), var) => {
                Ok(Some(context::absolute(p.clone())?))
            }
            _ => Ok(None),
        }
    };
    if let Some(p) = typed(&cli.certificate_authority, "JOULE_TLS_CA")? {
        c.certificate_authority = Some(p);
    }
    if let Some(p) = typed(&cli.client_certificate, "JOULE_TLS_CERT")? {
        c.client_certificate = Some(p);
    }
    if let Some(p) = typed(&cli.client_key, "JOULE_TLS_KEY")? {
        c.client_key = Some(p);
    }
    if let Some(n) = cli
        .tls_server_name
        .as_ref()
        .filter(|n| !context::from_env(n, "JOULE_TLS_SERVER_NAME"))
    {
        c.tls_server_name = n.clone();
    }
    c.check_tls()
        .map_err(|e| crate::exit::usage(format!("{e:#}")))?;
    if let Some(t) = c.tls() {
        connect::load_tls(&t, &connect::TlsNames::context(&c.name))?;
    }
    Ok(())
}

/// A token or key as given, or read from standard input for `-` (its first line, so it stays
/// out of the process list and the shell's history). Only one setting can take stdin.
fn secret(v: &str, flag: &str, stdin_used: &mut bool) -> anyhow::Result<String> {
    if v != "-" {
        return Ok(v.to_string());
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(crate::exit::usage(format!(
            "{flag} -: standard input is a terminal; pipe the value in (`echo \"$TOKEN\" | \
             joulectl config set-context NAME {flag} -`)"
        )));
    }
    if std::mem::replace(stdin_used, true) {
        return Err(crate::exit::usage(format!(
            "{flag} -: standard input is already read for another setting"
        )));
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| anyhow::anyhow!("{flag} -: cannot read standard input: {e}"))?;
    let t = line.trim_end_matches(['\r', '\n']).to_string();
    if t.is_empty() {
        return Err(crate::exit::usage(format!(
            "{flag} -: standard input held no value (pipe it in: `echo \"$TOKEN\" | joulectl \
             config set-context NAME {flag} -`)"
        )));
    }
    Ok(t)
}
