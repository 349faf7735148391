//! `get events [OBJECT]`: what happened in the cluster (nodes joined, lost, back, cordoned or
//! drained; deployments created; placements made, moved, ready or failed), oldest first.
//! OBJECT is `node/NAME`, `deployment/NAME` or a bare NAME.

use joule_proto::v1;

use super::get::watch::Keyed;
use crate::connect::Cluster;
use crate::views::events::Event;

impl Keyed for Event {
    fn key(&self) -> String {
        format!("{}/{}/{}", self.object, self.reason, self.message)
    }
}

/// The events about `object` (all when `None`).
pub async fn fetch(c: &Cluster, object: Option<&str>) -> anyhow::Result<Vec<Event>> {
    let req = v1::ListEventsRequest {
        object: object.unwrap_or_default().to_string(),
    };
    let v = c
        .call(|mut a| {
            let req = req.clone();
            async move { a.list_events(req).await }
        })
        .await?
        .events;
    Ok(v.into_iter().map(Event::from).collect())
}
