//! The cost of API keys and per-tenant limits, against a real 3-replica scheduler cluster on
//! 127.0.0.1 with 1,000 tenants, each with a key and per-minute and concurrency limits:
//!
//! - hot path: the time a request spends in authentication and admission (key check, monthly
//!   quota, the limiter's stock, settling) at this gateway, p50 and p99, against the same
//!   requests with `--no-auth` (the same code with authentication off), measured in the same
//!   run, alternating.
//! - leader load: two gateways' limiters (in this process: the gateway's own `Limiter` and
//!   `Link`, leasing from the real leader) admitting 1,000 requests/s together, spread over the
//!   1,000 tenants: lease calls per second, asks per second, and the leader process's CPU time
//!   (from /proc) against an idle window of the same length.
//!
//! No model runs: this is the gateway's work before routing. Needs the debug or release
//! `joule-scheduler` next to the bench (`cargo build --release --workspace`), then
//! `cargo bench -p joule-gateway --bench tenancy [-- --quick]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use joule_gateway::tenancy::keys::Directory;
use joule_gateway::tenancy::limits::Limiter;
use joule_gateway::tenancy::link::Link;
use joule_gateway::tenancy::usage::Meter;
use joule_gateway::tenancy::{Tenancy, Ticket};
use joule_gateway::view::View;
use joule_proto::internal::v1 as pb;
use joule_proto::v1;
use joule_testkit::cluster::{Cluster, JOIN};
use sha2::{Digest as _, Sha256};

const TENANTS: usize = 1000;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A key of the right shape, deterministic per tenant.
fn key(i: usize) -> String {
    const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let body: String = (0..43)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            A[(x % 62) as usize] as char
        })
        .collect();
    format!("jk-{body}")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat; here indexed after the name.
    num(11) + num(12)
}

async fn admit_once(
    t: &Arc<Tenancy>,
    view: &View,
    header: &[u8],
    auth: bool,
) -> (f64, Option<Arc<Ticket>>) {
    let t0 = Instant::now();
    let caller = t
        .caller(view, auth.then_some(header))
        .expect("a configured key");
    let (ticket, _h) = t.admit(caller, "smollm2", 32).await.expect("admitted");
    let us = t0.elapsed().as_secs_f64() * 1e6;
    (us, Some(ticket))
}

fn finish(ticket: Option<Arc<Ticket>>) {
    if let Some(t) = ticket {
        t.finish(&v1::Usage {
            prompt_tokens: 16,
            completion_tokens: 8,
            ..Default::default()
        });
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 4 } else { 10 };
    let c = Cluster::new(3);
    let leader = c.leader(Duration::from_secs(15), 0).await;
    let pid = c.replicas[(leader - 1) as usize]
        .child
        .as_ref()
        .map(|ch| ch.id())
        .expect("the leader runs");
    // 1,000 tenants with a key each, as the view carries them.
    let mut routed = Vec::with_capacity(TENANTS);
    for i in 0..TENANTS {
        let name = format!("tenant-{i}");
        let quota = pb::Quota {
            requests_per_minute: 600,
            tokens_per_minute: 100_000,
            max_concurrent: 16,
            ..Default::default()
        };
        c.admin(Duration::from_secs(10), |mut a| {
            let name = name.clone();
            async move {
                a.apply_tenant(v1::TenantSpec {
                    name,
                    requests_per_minute: quota.requests_per_minute,
                    tokens_per_minute: quota.tokens_per_minute,
                    max_concurrent: quota.max_concurrent,
                    ..Default::default()
                })
                .await
            }
        })
        .await
        .expect("apply tenant");
        let k = key(i);
        routed.push(pb::RoutedTenant {
            name,
            weight: 1.0,
            quota: Some(quota),
            keys: vec![pb::RoutedKey {
                id: k[..11].to_string(),
                sha256: hex(&Sha256::digest(k.as_bytes())),
                expires_at_ms: 0,
            }],
            ..Default::default()
        });
    }
    let view = View {
        synced: true,
        tenants: Arc::new(Directory::from_proto(&routed)),
        ..Default::default()
    };
    let headers: Vec<Vec<u8>> = (0..TENANTS)
        .map(|i| format!("Bearer {}", key(i)).into_bytes())
        .collect();
    let servers = Arc::new(joule_client::Servers::new(
        c.live_addrs().split(',').map(String::from).collect(),
    ));
    let link = Arc::new(Link::new(servers, JOIN.into(), Duration::from_secs(2)));
    let metrics = Arc::new(joule_gateway::metrics::Metrics::new());
    let gateway = |name: &str, auth: bool| {
        let limiter = Limiter::new(name.to_string());
        tokio::spawn(limiter.clone().run(link.clone()));
        Arc::new(Tenancy::new(
            auth,
            limiter,
            Meter::new(name.to_string()),
            metrics.clone(),
        ))
    };
    let gw_a = gateway("bench-a", true);
    let gw_b = gateway("bench-b", true);
    let open = gateway("bench-open", false);

    // Idle leader CPU over the same window.
    let hz = 100.0;
    let t0 = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let idle_cpu = (cpu_ticks(pid) - t0) as f64 / hz / secs as f64;

    println!(
        "tenancy bench: {TENANTS} tenants with keys and limits, 2 gateways' limiters at 1000 req/s, {secs} s; leader replica {leader}"
    );
    // 1,000 requests/s: one every millisecond, alternating gateways, tenants in turn; every
    // other request also goes through the open (--no-auth) path for the baseline.
    let with = Arc::new(std::sync::Mutex::new(Vec::new()));
    let without = Arc::new(std::sync::Mutex::new(Vec::new()));
    let view = Arc::new(view);
    let headers = Arc::new(headers);
    let warmup = Duration::from_secs(3);
    let start = Instant::now();
    let t0 = cpu_ticks(pid);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut i = 0usize;
    let mut measured_from = None;
    let mut tasks = Vec::new();
    // Each request is its own task, as each is at a gateway: one starts every millisecond.
    while start.elapsed() < warmup + Duration::from_secs(secs) {
        tick.tick().await;
        let measured = start.elapsed() >= warmup;
        if measured {
            measured_from.get_or_insert_with(|| (Instant::now(), cpu_ticks(pid)));
        }
        let gw = if i.is_multiple_of(2) {
            gw_a.clone()
        } else {
            gw_b.clone()
        };
        let (open, view, headers) = (open.clone(), view.clone(), headers.clone());
        let (with, without) = (with.clone(), without.clone());
        tasks.push(tokio::spawn(async move {
            let h = &headers[i % TENANTS];
            let (us, ticket) = admit_once(&gw, &view, h, true).await;
            finish(ticket);
            let (us0, ticket0) = admit_once(&open, &view, h, false).await;
            finish(ticket0);
            if measured {
                with.lock().unwrap().push(us);
                without.lock().unwrap().push(us0);
            }
        }));
        i += 1;
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut with = std::mem::take(&mut *with.lock().unwrap());
    let mut without = std::mem::take(&mut *without.lock().unwrap());
    let (m0, c0) = measured_from.unwrap_or((start, t0));
    let _ = t0;
    let window = m0.elapsed().as_secs_f64();
    let busy_cpu = (cpu_ticks(pid) - c0) as f64 / hz / window;
    let rate = with.len() as f64 / window;
    let (p50, p99) = (pct(&mut with, 0.5), pct(&mut with, 0.99));
    let (q50, q99) = (pct(&mut without, 0.5), pct(&mut without, 0.99));
    println!(
        "requests admitted with keys and limits: {} ({rate:.0}/s)",
        with.len()
    );
    println!(
        "hot path (key check + quota + limiter + settle), µs: auth p50 {p50:.1} p99 {p99:.1} | no-auth p50 {q50:.1} p99 {q99:.1} | added p50 {:.1} p99 {:.1}",
        p50 - q50,
        p99 - q99
    );
    let (rounds_a, asks_a) = gw_a.limiter.sent();
    let (rounds_b, asks_b) = gw_b.limiter.sent();
    let total_s = start.elapsed().as_secs_f64();
    println!(
        "leasing: {:.1} lease calls/s, {:.0} tenant asks/s (both gateways, over {total_s:.1} s)",
        (rounds_a + rounds_b) as f64 / total_s,
        (asks_a + asks_b) as f64 / total_s
    );
    println!(
        "leader CPU: {:.1}% of a core while leasing vs {:.1}% idle (added {:.1}%)",
        busy_cpu * 100.0,
        idle_cpu * 100.0,
        (busy_cpu - idle_cpu) * 100.0
    );
}
