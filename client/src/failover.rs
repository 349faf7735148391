//! Failover across replicas: a call goes to one replica of a list and moves on to the next
//! only when the error proves the call did nothing there (the replica cannot be reached, or says
//! it is not serving: UNAVAILABLE before any write). The replica that answered last is tried
//! first next time.

use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::{Code, Status};

/// A list of replicas' addresses and which one answered last.
#[derive(Debug)]
pub struct Servers {
    addrs: Vec<String>,
    preferred: AtomicUsize,
}

impl Servers {
    /// `addrs` must not be empty (see [`crate::address::parse_list`]).
    pub fn new(addrs: Vec<String>) -> Self {
        Self {
            addrs,
            preferred: AtomicUsize::new(0),
        }
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The addresses in the order to try them: the last one that answered first.
    pub fn order(&self) -> Vec<&str> {
        let n = self.addrs.len();
        let start = self.preferred.load(Ordering::Relaxed) % n.max(1);
        (0..n)
            .map(|i| self.addrs[(start + i) % n].as_str())
            .collect()
    }

    /// Runs `call` against each replica in turn until one gives an answer that is not
    /// "unreachable": its result (success or a real error) is returned. When every replica
    /// is unreachable, the last error is returned, naming every address tried.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut tried = Vec::new();
        let mut last = None;
        for (i, addr) in self.order().into_iter().enumerate() {
            match call(addr.to_string()).await {
                Err(e) if retryable(&e) => {
                    tried.push(format!("{addr}: {}", e.message()));
                    last = Some(e);
                }
                other => {
                    let n = self.addrs.len().max(1);
                    let start = self.preferred.load(Ordering::Relaxed) % n;
                    self.preferred.store((start + i) % n, Ordering::Relaxed);
                    return other;
                }
            }
        }
        let code = last.as_ref().map_or(Code::Unavailable, Status::code);
        Err(Status::new(
            code,
            format!("no replica answered: {}", tried.join("; ")),
        ))
    }
}

/// Whether `e` proves the call did nothing: the replica could not be reached or is not serving.
/// A timeout is not retried: the call may have been applied.
pub fn retryable(e: &Status) -> bool {
    e.code() == Code::Unavailable && !e.message().contains("may or may not")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn moves_on_only_past_unreachable_replicas_and_remembers_who_answered() {
        let s = Servers::new(vec!["a".into(), "b".into(), "c".into()]);
        let r = s
            .call(|a| async move {
                match a.as_str() {
                    "a" => Err(Status::unavailable("connection refused")),
                    _ => Ok(a),
                }
            })
            .await;
        assert_eq!(r.unwrap(), "b");
        assert_eq!(s.order(), ["b", "c", "a"]);
        // A real error is the answer: no other replica is tried.
        let mut calls = 0;
        let r: Result<(), _> = s
            .call(|_| {
                calls += 1;
                async { Err(Status::not_found("no model named x")) }
            })
            .await;
        assert_eq!(r.unwrap_err().code(), Code::NotFound);
        assert_eq!(calls, 1);
        // An outcome that is unknown is not retried elsewhere.
        let mut calls = 0;
        let _ = s
            .call(|_| {
                calls += 1;
                async { Err::<(), _>(Status::unavailable("it may or may not have been applied")) }
            })
            .await;
        assert_eq!(calls, 1);
        let all_down: Result<(), _> = s
            .call(|a| async move { Err(Status::unavailable(format!("{a} refused"))) })
            .await;
        let e = all_down.unwrap_err();
        assert!(e.message().contains("a: a refused") && e.message().contains("c: c refused"));
    }
}
