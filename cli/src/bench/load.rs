//! Load: sends a range of a workload's requests to one target and collects what each measured.
//! A closed loop (`--concurrency N`: N threads, each sends its next request when the last one
//! ends) or an open one (`--rate R`: Poisson arrivals, seeded, from a pool of `--max-inflight`
//! threads; an arrival that finds every thread busy waits for one, so the pool is the most in
//! flight). Requests are handed out in index order through a rendezvous channel, so a request
//! is sent exactly when a thread is free for it (or, open loop, when it is due).
//!
//! It owns the threads of one round and nothing else: it never interprets an outcome, and every
//! thread it starts has ended when [`segment`] returns.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde_json::{Value, json};

use super::workload::{Rng, Workload};
use super::{Outcome, Target};

/// How requests are sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// N requests in flight at all times.
    Closed { concurrency: usize },
    /// Poisson arrivals at `rate` per second, at most `max_inflight` in flight.
    Open {
        rate: f64,
        max_inflight: usize,
        seed: u64,
    },
}

impl Load {
    /// Threads (and so connections) it may use.
    pub fn threads(&self) -> usize {
        match self {
            Self::Closed { concurrency } => (*concurrency).max(1),
            Self::Open { max_inflight, .. } => (*max_inflight).max(1),
        }
    }

    pub fn describe(&self) -> Value {
        match self {
            Self::Closed { concurrency } => {
                json!({"mode": "concurrency", "concurrency": concurrency})
            }
            Self::Open {
                rate,
                max_inflight,
                seed,
            } => json!({"mode": "rate", "rate": rate, "max_inflight": max_inflight, "seed": seed}),
        }
    }
}

/// Seeded Poisson arrivals: offsets from the round's start.
#[derive(Debug, Clone)]
pub struct Arrivals {
    rng: Rng,
    rate: f64,
    t: f64,
}

impl Arrivals {
    /// Arrivals of the round starting at request `first`: the same for every target.
    pub fn new(rate: f64, seed: u64, first: u64) -> Self {
        Self {
            rng: Rng::for_index(seed, 3, first),
            rate,
            t: 0.0,
        }
    }

    /// The next arrival's offset (exponential gaps of mean 1/rate).
    pub fn next_offset(&mut self) -> Duration {
        self.t += -self.rng.unit().ln() / self.rate;
        Duration::try_from_secs_f64(self.t).unwrap_or(Duration::MAX)
    }
}

/// One round against one target: its wall time (start to the last request's end) and every
/// request's outcome.
#[derive(Debug, Clone)]
pub struct Segment {
    pub wall: Duration,
    pub outcomes: Vec<Outcome>,
}

/// Sends `work`'s requests `range` to `target` under `load`, stopping early (in-flight requests
/// finish) once `budget` has passed. `bar` counts finished requests.
pub fn segment(
    target: &dyn Target,
    work: &Workload,
    range: Range<u64>,
    load: &Load,
    budget: Option<Duration>,
    bar: Option<&ProgressBar>,
) -> Segment {
    let len = range.end.saturating_sub(range.start);
    let threads = load
        .threads()
        .min(usize::try_from(len).unwrap_or(usize::MAX))
        .max(1);
    let (tx, rx) = sync_channel::<u64>(0);
    let rx = Mutex::new(rx);
    let start = Instant::now();
    let deadline = budget.map(|b| start + b);
    let mut arrivals = match load {
        Load::Open { rate, seed, .. } => Some(Arrivals::new(*rate, *seed, range.start)),
        Load::Closed { .. } => None,
    };
    let outcomes = std::thread::scope(|s| {
        let rx = &rx;
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || worker(target, work, rx, bar)))
            .collect();
        for i in range {
            if let Some(a) = arrivals.as_mut() {
                let Some(due) = start.checked_add(a.next_offset()) else {
                    break;
                };
                let wake = deadline.map_or(due, |d| due.min(d));
                let now = Instant::now();
                if wake > now {
                    std::thread::sleep(wake - now);
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if tx.send(i).is_err() {
                break;
            }
        }
        // No more requests: each thread ends after its last one.
        drop(tx);
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Vec<Outcome>>()
    });
    Segment {
        wall: start.elapsed(),
        outcomes,
    }
}

/// One sending thread: takes the next index until there are none.
fn worker(
    target: &dyn Target,
    work: &Workload,
    rx: &Mutex<Receiver<u64>>,
    bar: Option<&ProgressBar>,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    loop {
        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(i) = next else {
            return out;
        };
        out.push(target.send(&work.request(i)));
        if let Some(b) = bar {
            b.inc(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::bench::{Counted, Done, Request, TargetInfo};

    /// A target that takes `work` per request and records how many were in flight at most.
    struct Sleeper {
        work: Duration,
        now: AtomicUsize,
        most: AtomicUsize,
        sent: Mutex<Vec<u32>>,
    }

    impl Target for Sleeper {
        fn info(&self) -> TargetInfo {
            TargetInfo {
                api: "test",
                address: String::new(),
                model: String::new(),
            }
        }

        fn send(&self, r: &Request) -> Outcome {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            self.sent.lock().unwrap().push(r.max_tokens);
            std::thread::sleep(self.work);
            self.now.fetch_sub(1, Ordering::SeqCst);
            Ok(Done {
                ttft: Some(self.work),
                itl: Vec::new(),
                e2e: self.work,
                output_tokens: 1,
                counted: Counted::Chunks,
                energy: None,
            })
        }
    }

    fn sleeper(ms: u64) -> Sleeper {
        Sleeper {
            work: Duration::from_millis(ms),
            now: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            sent: Mutex::new(Vec::new()),
        }
    }

    /// Request i asks for i+1 tokens, so what was sent shows which requests went.
    fn numbered(n: u32) -> Workload {
        Workload::File {
            path: "t".into(),
            requests: (1..=n)
                .map(|m| Request {
                    prompt: crate::bench::Prompt::Text("x".into()),
                    max_tokens: m,
                })
                .collect(),
        }
    }

    #[test]
    fn a_closed_loop_keeps_n_in_flight_and_sends_each_request_once() {
        let t = sleeper(20);
        let seg = segment(
            &t,
            &numbered(12),
            0..12,
            &Load::Closed { concurrency: 3 },
            None,
            None,
        );
        assert_eq!(seg.outcomes.len(), 12);
        assert_eq!(t.most.load(Ordering::SeqCst), 3);
        let mut sent = t.sent.lock().unwrap().clone();
        sent.sort_unstable();
        assert_eq!(sent, (1..=12).collect::<Vec<u32>>());
        // 12 requests of 20 ms, 3 at a time: at least 4 rounds of 20 ms.
        assert!(seg.wall >= Duration::from_millis(80), "{:?}", seg.wall);
    }

    #[test]
    fn a_budget_stops_sending_and_lets_the_ones_in_flight_finish() {
        let t = sleeper(30);
        let seg = segment(
            &t,
            &numbered(1000),
            0..u64::MAX,
            &Load::Closed { concurrency: 2 },
            Some(Duration::from_millis(100)),
            None,
        );
        let n = seg.outcomes.len();
        assert!((4..=10).contains(&n), "{n} requests in a 100 ms budget");
        assert!(seg.outcomes.iter().all(Result::is_ok));
    }

    #[test]
    fn poisson_arrivals_are_seeded_and_have_the_asked_rate() {
        let offsets = |seed, first| {
            let mut a = Arrivals::new(50.0, seed, first);
            (0..2000).map(|_| a.next_offset()).collect::<Vec<_>>()
        };
        assert_eq!(offsets(1, 0), offsets(1, 0));
        assert_ne!(offsets(1, 0), offsets(2, 0));
        assert_ne!(offsets(1, 0), offsets(1, 1000));
        let o = offsets(7, 0);
        assert!(o.windows(2).all(|w| w[0] <= w[1]));
        // 2000 arrivals at 50/s: about 40 s (the sum's sd is under 1 s).
        let last = o[1999].as_secs_f64();
        assert!((37.0..43.0).contains(&last), "{last}");
    }

    #[test]
    fn an_open_loop_sends_at_the_rate_not_as_fast_as_it_can() {
        let t = sleeper(1);
        let seg = segment(
            &t,
            &numbered(10),
            0..10,
            &Load::Open {
                rate: 100.0,
                max_inflight: 8,
                seed: 3,
            },
            None,
            None,
        );
        assert_eq!(seg.outcomes.len(), 10);
        // 10 arrivals at 100/s take their seeded time: the 10th arrival's offset.
        let mut a = Arrivals::new(100.0, 3, 0);
        let mut tenth = Duration::ZERO;
        for _ in 0..10 {
            tenth = a.next_offset();
        }
        assert!(seg.wall >= tenth, "{:?} < {tenth:?}", seg.wall);
    }
}
