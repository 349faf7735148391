//! Cluster events: `get events`, as kubectl lists them (oldest first, the newest at the
//! bottom, next to the prompt).

use joule_proto::v1;
use serde::Serialize;

use crate::render::{Render, age};

#[derive(Debug, Serialize)]
pub struct Event {
    /// "Normal" or "Warning".
    #[serde(rename = "type")]
    pub kind: String,
    pub reason: String,
    /// "node/NAME" or "deployment/NAME".
    pub object: String,
    pub message: String,
    pub first_at_ms: i64,
    pub last_at_ms: i64,
    pub count: u32,
}

impl From<v1::Event> for Event {
    fn from(e: v1::Event) -> Self {
        Self {
            kind: e.r#type,
            reason: e.reason,
            object: e.object,
            message: e.message,
            first_at_ms: e.first_at_ms,
            last_at_ms: e.last_at_ms,
            count: e.count,
        }
    }
}

impl Render for Event {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"];
        if wide {
            h.extend(["FIRST SEEN", "COUNT"]);
        }
        h
    }

    fn row(&self, wide: bool) -> Vec<String> {
        let now = super::now_ms();
        let mut r = vec![
            age(self.last_at_ms, now),
            self.kind.clone(),
            self.reason.clone(),
            self.object.clone(),
            self.message.clone(),
        ];
        if wide {
            r.extend([age(self.first_at_ms, now), self.count.to_string()]);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_as_kubectl_lists_it() {
        let e = Event::from(v1::Event {
            r#type: "Warning".into(),
            reason: "Unreachable".into(),
            object: "node/w1".into(),
            message: "missed its heartbeats".into(),
            first_at_ms: 1,
            last_at_ms: super::super::now_ms() - 5_000,
            count: 2,
        });
        let row = e.row(true);
        assert_eq!(row.len(), Event::headers(true).len());
        assert_eq!(
            row[..5],
            [
                "5s",
                "Warning",
                "Unreachable",
                "node/w1",
                "missed its heartbeats"
            ]
        );
        assert_eq!(row[6], "2");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "Warning");
        assert_eq!(json["object"], "node/w1");
    }
}
