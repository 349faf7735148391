//! `config get-contexts | current-context | use-context | set-context | delete-context`, as
//! `kubectl config` has them. Tokens and keys are never printed: listings show whether one is
//! set.

use serde::Serialize;

use crate::args::ConfigCmd;
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
}

fn set(s: &str) -> &'static str {
    if s.is_empty() { "" } else { "(set)" }
}

impl Render for Row {
    fn headers(_: bool) -> Vec<&'static str> {
        vec!["CURRENT", "NAME", "SERVERS", "GATEWAY", "TOKEN", "API KEY"]
    }
    fn row(&self, _: bool) -> Vec<String> {
        vec![
            if self.current { "*" } else { "" }.into(),
            self.name.clone(),
            self.servers.join(","),
            self.gateway.clone(),
            self.token.into(),
            self.api_key.into(),
        ]
    }
}

pub fn run(cmd: &ConfigCmd, f: Format) -> anyhow::Result<()> {
    let p = context::path()?;
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
            token,
            gateway,
            api_key,
        } => {
            let mut c = cfg.get(name).cloned().unwrap_or_else(|| Context {
                name: name.clone(),
                ..Default::default()
            });
            let created = cfg.get(name).is_none();
            // `--server` and `--token` share their names with the global flags, whose
            // JOULE_SERVER and JOULE_TOKEN clap hands down: only a value typed here counts.
            let server = server
                .as_ref()
                .filter(|v| !context::from_env(v, "JOULE_SERVER"));
            let token = token
                .as_ref()
                .filter(|v| !context::from_env(v, "JOULE_TOKEN"));
            if let Some(s) = server {
                c.servers = joule_client::address::parse_list(s)
                    .map_err(|e| anyhow::anyhow!("--server: {e}"))?;
            }
            if let Some(t) = token {
                c.token = t.clone();
            }
            if let Some(g) = gateway {
                if !(g.starts_with("http://") || g.starts_with("https://")) {
                    anyhow::bail!("--gateway {g:?}: expected http://host:port/v1 or https://...");
                }
                c.gateway = g.trim_end_matches('/').to_string();
            }
            if let Some(k) = api_key {
                c.api_key = k.clone();
            }
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
