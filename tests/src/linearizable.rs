//! A linearizability checker for one register (Wing & Gong's search with Lowe's memo): finds
//! an order of the operations that respects real time (an operation that returned before
//! another was called comes first) in which every read returns the latest write. A write
//! whose outcome is unknown (it failed or timed out) may take effect at any time after its
//! call, or never. Written values must be unique.

use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Write(String),
    /// What the read returned (`None`: the register was never written).
    Read(Option<String>),
}

#[derive(Debug, Clone)]
pub struct Op {
    /// Nanoseconds on one clock.
    pub call: u64,
    /// `None`: a write whose outcome is unknown.
    pub ret: Option<u64>,
    pub kind: Kind,
}

/// `Ok` or the reason no order exists.
pub fn check(history: &[Op]) -> Result<(), String> {
    // A write of unknown outcome that nobody read can be taken never to have happened.
    let read: HashSet<&str> = history
        .iter()
        .filter_map(|o| match &o.kind {
            Kind::Read(Some(v)) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    let ops: Vec<&Op> = history
        .iter()
        .filter(|o| {
            o.ret.is_some() || matches!(&o.kind, Kind::Write(v) if read.contains(v.as_str()))
        })
        .collect();
    for o in &ops {
        if let Kind::Read(Some(v)) = &o.kind
            && !ops
                .iter()
                .any(|w| w.kind == Kind::Write(v.clone()) && w.call < o.ret.unwrap_or(u64::MAX))
        {
            return Err(format!(
                "a read returned {v:?}, which no write before it wrote"
            ));
        }
    }
    let required = ops.iter().filter(|o| o.ret.is_some()).count();
    let mut s = Search {
        ops: &ops,
        seen: HashSet::new(),
        done: vec![false; ops.len()],
        steps: 0,
    };
    if s.dfs(None, required) {
        Ok(())
    } else {
        Err(format!(
            "no linearization of {} operations ({} search steps)",
            ops.len(),
            s.steps
        ))
    }
}

struct Search<'a> {
    ops: &'a [&'a Op],
    seen: HashSet<(Vec<bool>, Option<String>)>,
    done: Vec<bool>,
    steps: u64,
}

impl Search<'_> {
    fn dfs(&mut self, value: Option<String>, left: usize) -> bool {
        if left == 0 {
            return true;
        }
        self.steps += 1;
        if !self.seen.insert((self.done.clone(), value.clone())) {
            return false;
        }
        // Whatever comes next must have been called before every pending operation returned.
        let horizon = self
            .ops
            .iter()
            .zip(&self.done)
            .filter(|(_, d)| !**d)
            .filter_map(|(o, _)| o.ret)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..self.ops.len() {
            let o = self.ops[i];
            if self.done[i] || o.call > horizon {
                continue;
            }
            let next = match &o.kind {
                Kind::Write(v) => Some(v.clone()),
                Kind::Read(r) if *r == value => value.clone(),
                Kind::Read(_) => continue,
            };
            self.done[i] = true;
            let counts = usize::from(o.ret.is_some());
            if self.dfs(next, left - counts) {
                return true;
            }
            self.done[i] = false;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(call: u64, ret: Option<u64>, v: &str) -> Op {
        Op {
            call,
            ret,
            kind: Kind::Write(v.into()),
        }
    }
    fn r(call: u64, ret: u64, v: Option<&str>) -> Op {
        Op {
            call,
            ret: Some(ret),
            kind: Kind::Read(v.map(Into::into)),
        }
    }

    #[test]
    fn accepts_and_refuses_what_it_should() {
        // Sequential and right.
        assert!(check(&[w(0, Some(1), "a"), r(2, 3, Some("a"))]).is_ok());
        // A stale read after a completed write.
        assert!(check(&[w(0, Some(1), "a"), w(2, Some(3), "b"), r(4, 5, Some("a"))]).is_err());
        // Concurrent write: either value is fine.
        assert!(check(&[w(0, Some(10), "a"), r(1, 2, None), r(3, 4, Some("a"))]).is_ok());
        // Once a read saw the new value, a later read may not see the old one.
        assert!(
            check(&[
                w(0, Some(1), "a"),
                w(2, Some(20), "b"),
                r(3, 4, Some("b")),
                r(5, 6, Some("a")),
            ])
            .is_err()
        );
        // An unknown write that was read took effect; one never read did not.
        assert!(check(&[w(0, None, "a"), r(5, 6, Some("a"))]).is_ok());
        assert!(check(&[w(0, Some(1), "a"), w(2, None, "b"), r(5, 6, Some("a"))]).is_ok());
        // A value nobody wrote.
        assert!(check(&[r(0, 1, Some("z"))]).is_err());
    }
}
