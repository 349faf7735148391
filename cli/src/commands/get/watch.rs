//! `get -w`: the listing, then, every interval, the rows that changed (new, or different from
//! when they were last printed), as kubectl watches: the header once and later rows in the
//! first table's columns; `-o json` one object per line, `-o yaml` one document per change.
//! Rows that disappear are not printed. Ctrl-C ends it with exit code 0.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::render::{self, Format, Render};
use crate::views::{
    apikey::ApiKey, deployment::Deployment, model::Model, node::Node, placement::Placement,
    tenant::Tenant, usage::Usage,
};

/// What tells one row of a listing from another across polls.
pub trait Keyed {
    fn key(&self) -> String;
}

impl Keyed for Node {
    fn key(&self) -> String {
        self.name.clone()
    }
}

impl Keyed for Model {
    fn key(&self) -> String {
        self.name.clone()
    }
}

impl Keyed for Deployment {
    fn key(&self) -> String {
        self.name.clone()
    }
}

impl Keyed for Placement {
    fn key(&self) -> String {
        format!("{}/{}", self.deployment, self.node)
    }
}

impl Keyed for Tenant {
    fn key(&self) -> String {
        self.name.clone()
    }
}

impl Keyed for ApiKey {
    fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.id)
    }
}

impl Keyed for Usage {
    fn key(&self) -> String {
        format!("{}/{}/{}", self.tenant, self.day, self.model)
    }
}

/// `--watch-interval`: `2s`, `500ms` or plain seconds (`0.5`), from 10 ms to an hour.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let (num, per_second) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .map(|v| v / per_second)
        .filter(|v| (0.01..=3600.0).contains(v))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?}: a time from 10ms to 3600s, like 2s, 0.5 or 500ms"))
}

/// Prints what `fetch` lists, then what changes in it every `every`, until Ctrl-C.
pub async fn watch<T, F, Fut>(f: Format, every: Duration, mut fetch: F) -> anyhow::Result<()>
where
    T: Render + Keyed,
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<T>>>,
{
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let mut printer = Printer::new(f)?;
    loop {
        let items = tokio::select! {
            _ = &mut stop => return Ok(()),
            items = fetch() => items?,
        };
        render::print(&printer.changes(&items)?)?;
        tokio::select! {
            _ = &mut stop => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// What a watch has printed so far, and so what the next poll prints.
pub struct Printer {
    f: Format,
    /// Each row's JSON when it was last printed.
    seen: HashMap<String, serde_json::Value>,
    /// The columns of the first table (`None` until it is printed).
    widths: Option<Vec<usize>>,
}

impl Printer {
    pub fn new(f: Format) -> anyhow::Result<Self> {
        if f == Format::Csv {
            return Err(crate::exit::usage(
                "-w prints a table, wide, JSON or YAML, not CSV",
            ));
        }
        Ok(Self {
            f,
            seen: HashMap::new(),
            widths: None,
        })
    }

    /// The text of one poll: the first time, the whole table (header included); then only the
    /// rows that are new or changed.
    pub fn changes<T: Render + Keyed>(&mut self, items: &[T]) -> anyhow::Result<String> {
        let mut changed = Vec::new();
        let mut present = HashSet::new();
        for i in items {
            let k = i.key();
            let v = serde_json::to_value(i)?;
            if self.seen.get(&k) != Some(&v) {
                changed.push(i);
                self.seen.insert(k.clone(), v);
            }
            present.insert(k);
        }
        // A row that went and came back is printed again.
        self.seen.retain(|k, _| present.contains(k));
        let mut out = String::new();
        match self.f {
            Format::Table | Format::Wide => {
                let wide = self.f == Format::Wide;
                let rows: Vec<Vec<String>> = changed.iter().map(|i| i.row(wide)).collect();
                if self.widths.is_none() {
                    let header: Vec<String> =
                        T::headers(wide).iter().map(|h| h.to_string()).collect();
                    let w = render::widths(&header, &rows);
                    out.push_str(&render::lines_text(&w, &[header]));
                    self.widths = Some(w);
                }
                let w = self.widths.as_deref().unwrap_or_default();
                out.push_str(&render::lines_text(w, &rows));
            }
            Format::Json => {
                for i in changed {
                    out.push_str(&serde_json::to_string(i)?);
                    out.push('\n');
                }
            }
            Format::Yaml => {
                for i in changed {
                    out.push_str("---\n");
                    out.push_str(&serde_norway::to_string(i)?);
                }
            }
            Format::Csv => anyhow::bail!("-w does not print CSV"),
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use joule_proto::v1;

    use super::*;

    fn placement(node: &str, state: &str) -> Placement {
        Placement::from(v1::PlacementInfo {
            deployment: "smollm2".into(),
            node: node.into(),
            model: "smollm2".into(),
            state: state.into(),
            ..Default::default()
        })
    }

    #[test]
    fn the_header_prints_once_and_then_only_changed_rows() {
        let mut p = Printer::new(Format::Table).unwrap();
        let first = p
            .changes(&[placement("gpu-1", "Loading"), placement("gpu-22", "Ready")])
            .unwrap();
        assert_eq!(
            first,
            "DEPLOYMENT   NODE     STATE     AGE\n\
             smollm2      gpu-1    Loading   -\n\
             smollm2      gpu-22   Ready     -\n"
        );
        let same = [placement("gpu-1", "Loading"), placement("gpu-22", "Ready")];
        assert_eq!(p.changes(&same).unwrap(), "");
        let one_changed = [placement("gpu-1", "Ready"), placement("gpu-22", "Ready")];
        assert_eq!(
            p.changes(&one_changed).unwrap(),
            "smollm2      gpu-1    Ready     -\n"
        );
        // Gone, then back: printed again.
        assert_eq!(p.changes(&[placement("gpu-1", "Ready")]).unwrap(), "");
        assert_eq!(
            p.changes(&one_changed).unwrap(),
            "smollm2      gpu-22   Ready     -\n"
        );
    }

    #[test]
    fn json_prints_one_object_per_line_per_change() {
        let mut p = Printer::new(Format::Json).unwrap();
        let out = p
            .changes(&[placement("a", "Loading"), placement("b", "Ready")])
            .unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0]["node"].as_str(), lines[1]["state"].as_str()),
            (Some("a"), Some("Ready"))
        );
        let out = p
            .changes(&[placement("a", "Ready"), placement("b", "Ready")])
            .unwrap();
        assert_eq!(out.lines().count(), 1);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap()["node"],
            "a"
        );
        let mut y = Printer::new(Format::Yaml).unwrap();
        let out = y.changes(&[placement("a", "Ready")]).unwrap();
        assert!(out.starts_with("---\ndeployment: smollm2\n"), "{out}");
        assert!(Printer::new(Format::Csv).is_err());
    }

    #[test]
    fn intervals_take_seconds_and_milliseconds() {
        assert_eq!(parse_interval("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_interval("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_interval("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_interval("0.25").unwrap(), Duration::from_millis(250));
        for bad in ["", "0", "-1s", "1h", "soon", "5ms", "3601", "inf", "NaN"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
