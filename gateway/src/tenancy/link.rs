//! Unary calls from the gateway to the schedulers (leases, usage reports): one cached client
//! per replica, the replica that answered last tried first, the next one on a transport
//! error. Any replica takes these calls (followers pass leases on to the leader).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use joule_client::{Connect, Registry, Servers};
use tonic::Status;

pub struct Link {
    servers: Arc<Servers>,
    token: String,
    clients: Mutex<HashMap<String, Registry>>,
    connect: Connect,
}

impl Link {
    pub fn new(servers: Arc<Servers>, token: String, timeout: Duration) -> Self {
        Self {
            servers,
            token,
            clients: Mutex::new(HashMap::new()),
            connect: Connect {
                connect_timeout: Duration::from_millis(500),
                timeout: Some(timeout),
            },
        }
    }

    fn client(&self, addr: &str) -> Result<Registry, Status> {
        let mut c = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = c.get(addr) {
            return Ok(r.clone());
        }
        let r = self
            .connect
            .registry(addr, &self.token)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        c.insert(addr.to_string(), r.clone());
        Ok(r)
    }

    /// `call` on the first replica that answers.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(Registry) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.servers
            .call(|addr| {
                let c = self.client(&addr);
                let call = &call;
                async move { Ok(call(c?).await?.into_inner()) }
            })
            .await
    }
}
