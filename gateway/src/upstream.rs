//! Connections to workers (one lazily connected channel per address, reused by every request)
//! and this gateway's own count of requests in flight per worker, so routing never sees a load
//! staler than this gateway's last request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use joule_client::{Connect, Worker};

use crate::error::Error;

pub struct Upstreams {
    token: String,
    connect: Connect,
    clients: Mutex<HashMap<String, Worker>>,
    inflight: Mutex<HashMap<String, Arc<AtomicU32>>>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").finish_non_exhaustive()
    }
}

/// One request in flight on a node; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstreams {
    pub fn new(token: String) -> Self {
        Self {
            token,
            connect: Connect {
                connect_timeout: std::time::Duration::from_millis(1000),
                timeout: None,
            },
            clients: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The client of the worker at `addr`.
    pub fn client(&self, addr: &str) -> Result<Worker, Error> {
        let mut c = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = c.get(addr) {
            return Ok(w.clone());
        }
        let w = self
            .connect
            .worker(addr, &self.token)
            .map_err(|e| Error::Internal(format!("worker address {addr:?}: {e}")))?;
        c.insert(addr.to_string(), w.clone());
        Ok(w)
    }

    fn counter(&self, node: &str, model: &str) -> Arc<AtomicU32> {
        let mut m = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(format!("{node}\n{model}")).or_default().clone()
    }

    /// Requests of `model` this gateway has in flight on `node` (the same count the leader
    /// hears per model, so the two compare).
    pub fn inflight(&self, node: &str, model: &str) -> u32 {
        self.counter(node, model).load(Ordering::Relaxed)
    }

    /// Counts one more request of `model` on `node` until the guard drops.
    pub fn start(&self, node: &str, model: &str) -> InFlight {
        let c = self.counter(node, model);
        c.fetch_add(1, Ordering::Relaxed);
        InFlight(c)
    }
}
