//! The control plane's commit latency, throughput and failover, against etcd on the same
//! machine in the same run. Both run 3 members on 127.0.0.1 with fsync on, a 100 ms heartbeat
//! and a 500 ms minimum election timeout (etcd: `--heartbeat-interval 100
//! --election-timeout 500`; Joule: 50 ms ticks, heartbeat 2 ticks, election 10 ticks).
//!
//! - Commit latency: a write acknowledged once committed and applied (Joule `PutSetting` over
//!   gRPC; etcd `put` over its JSON gateway, `POST /v3/kv/put`, on kept-alive HTTP/1.1).
//!   p50/p99 and writes/s with 1 and with 64 concurrent proposers.
//! - Failover: kill -9 of the leader to the first write acknowledged by the new leader,
//!   `--kills` times; median and max. The killed member is restarted and caught up between
//!   kills.
//!
//! `cargo bench -p joule-scheduler --bench consensus -- [--seconds 5] [--kills 20] [--no-etcd]`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use joule_proto::v1;
use joule_proto::v1::admin_client::AdminClient;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
struct Opts {
    /// Seconds of load per proposer count.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Skip the etcd comparison.
    #[arg(long)]
    no_etcd: bool,
    #[arg(long)]
    json: bool,
    #[arg(long, hide = true)]
    bench: bool,
}

const TOKEN: &str = "bench";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

/// A 3-member cluster of either system.
trait System: Send + Sync {
    fn name(&self) -> &'static str;
    fn start(&mut self, i: usize);
    fn kill9(&mut self, i: usize);
    fn alive(&self, i: usize) -> bool;
    /// Index of the current leader among the members, if the live ones agree.
    fn leader(&self) -> Option<usize>;
    /// One write through member `i`; true when acknowledged.
    fn put(&self, i: usize, key: &str, value: &str) -> bool;
    /// Whether member `i` has caught up with the leader.
    fn caught_up(&self, i: usize) -> bool;
}

struct Proc {
    child: Option<Child>,
}

impl Proc {
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------- Joule ----------

struct Joule {
    rt: tokio::runtime::Handle,
    dir: PathBuf,
    addrs: Vec<String>,
    procs: Vec<Proc>,
    clients: Vec<std::sync::Mutex<Option<AdminClient<Channel>>>>,
}

impl Joule {
    fn new(rt: tokio::runtime::Handle, dir: &Path) -> Self {
        let addrs: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let mut j = Self {
            rt,
            dir: dir.join("joule"),
            addrs,
            procs: (0..3).map(|_| Proc { child: None }).collect(),
            clients: (0..3).map(|_| std::sync::Mutex::new(None)).collect(),
        };
        for i in 0..3 {
            j.start(i);
        }
        j
    }

    fn client(&self, i: usize) -> Option<AdminClient<Channel>> {
        let mut c = self.clients[i].lock().unwrap();
        if c.is_none() {
            let ep = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addrs[i]))
                .ok()?
                .connect_timeout(Duration::from_millis(200));
            *c = self.rt.block_on(ep.connect()).ok().map(AdminClient::new);
        }
        c.clone()
    }

    fn req<T>(m: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        // A client retries rather than wait on a leader that may be gone.
        r.set_timeout(Duration::from_millis(300));
        r.metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        r
    }

    fn status(&self, i: usize) -> Option<v1::ClusterStatusResponse> {
        let mut c = self.client(i)?;
        let r = self
            .rt
            .block_on(c.cluster_status(Self::req(v1::ClusterStatusRequest {})));
        match r {
            Ok(r) => Some(r.into_inner()),
            Err(_) => {
                *self.clients[i].lock().unwrap() = None;
                None
            }
        }
    }
}

impl System for Joule {
    fn name(&self) -> &'static str {
        "joule"
    }
    fn start(&mut self, i: usize) {
        let peers = self
            .addrs
            .iter()
            .enumerate()
            .map(|(k, a)| format!("{}={a}", k + 1))
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new(env!("CARGO_BIN_EXE_joule-scheduler"))
            .args(["--id", &(i + 1).to_string(), "--peers", &peers])
            .args(["--listen", &self.addrs[i]])
            .arg("--data-dir")
            .arg(self.dir.join(format!("r{i}")))
            .env("JOULE_ADMIN_TOKEN", TOKEN)
            .env("JOULE_PEER_TOKEN", "test-peer-token")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start joule-scheduler");
        self.procs[i].child = Some(child);
        *self.clients[i].lock().unwrap() = None;
    }
    fn kill9(&mut self, i: usize) {
        self.procs[i].kill9();
        *self.clients[i].lock().unwrap() = None;
    }
    fn alive(&self, i: usize) -> bool {
        self.procs[i].child.is_some()
    }
    fn leader(&self) -> Option<usize> {
        let ls: Vec<u64> = (0..3)
            .filter(|i| self.alive(*i))
            .map(|i| self.status(i).map_or(0, |s| s.leader))
            .collect();
        (ls[0] != 0 && ls.iter().all(|l| *l == ls[0]) && self.alive(ls[0] as usize - 1))
            .then(|| ls[0] as usize - 1)
    }
    fn put(&self, i: usize, key: &str, value: &str) -> bool {
        let Some(mut c) = self.client(i) else {
            return false;
        };
        let r = self
            .rt
            .block_on(c.put_setting(Self::req(v1::PutSettingRequest {
                key: key.into(),
                value: value.into(),
            })));
        if r.is_err() {
            *self.clients[i].lock().unwrap() = None;
        }
        r.is_ok()
    }
    fn caught_up(&self, i: usize) -> bool {
        let Some(l) = self.leader() else { return false };
        match (self.status(i), self.status(l)) {
            (Some(a), Some(b)) => a.applied_index >= b.commit_index,
            _ => false,
        }
    }
}

// ---------- etcd ----------

struct Etcd {
    dir: PathBuf,
    client_ports: Vec<u16>,
    peer_ports: Vec<u16>,
    procs: Vec<Proc>,
}

impl Etcd {
    fn new(dir: &Path) -> Self {
        let mut e = Self {
            dir: dir.join("etcd"),
            client_ports: (0..3).map(|_| free_port()).collect(),
            peer_ports: (0..3).map(|_| free_port()).collect(),
            procs: (0..3).map(|_| Proc { child: None }).collect(),
        };
        for i in 0..3 {
            e.start(i);
        }
        e
    }

    /// One JSON gateway call on a kept-alive connection of this thread (each proposer has
    /// its own, as each would with HTTP/1.1); the response body.
    fn call(&self, i: usize, path: &str, body: &str) -> Option<String> {
        thread_local! {
            static CONNS: std::cell::RefCell<std::collections::HashMap<u16, TcpStream>> =
                Default::default();
        }
        let port = self.client_ports[i];
        let mut stream = CONNS.with(|c| c.borrow_mut().remove(&port));
        if stream.is_none() {
            let s = TcpStream::connect_timeout(
                &format!("127.0.0.1:{port}").parse().ok()?,
                Duration::from_millis(200),
            )
            .ok()?;
            s.set_nodelay(true).ok()?;
            // A client retries rather than wait on a leader that may be gone.
            s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
            stream = Some(s);
        }
        let mut slot = stream;
        let s = slot.as_mut()?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = (|| -> std::io::Result<Option<String>> {
            s.write_all(req.as_bytes())?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(h) = text.find("\r\n\r\n") {
                    let len = text[..h]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= h + 4 + len {
                        let ok = text.starts_with("HTTP/1.1 200");
                        let body = String::from_utf8_lossy(&buf[h + 4..h + 4 + len]).into_owned();
                        return Ok(ok.then_some(body));
                    }
                }
            }
        })();
        match r {
            Ok(Some(b)) => {
                let s = slot.take()?;
                CONNS.with(|c| c.borrow_mut().insert(port, s));
                Some(b)
            }
            _ => None,
        }
    }

    fn status(&self, i: usize) -> Option<(String, String, u64)> {
        let b = self.call(i, "/v3/maintenance/status", "{}")?;
        let field = |k: &str| -> Option<String> {
            let at = b.find(&format!("\"{k}\":"))? + k.len() + 3;
            let rest = &b[at..];
            let rest = rest.trim_start_matches('"');
            Some(rest.split(['"', ',', '}']).next()?.to_string())
        };
        Some((
            field("member_id")?,
            field("leader")?,
            field("raftAppliedIndex")
                .or_else(|| field("raftIndex"))?
                .parse()
                .ok()?,
        ))
    }
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(T[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl System for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }
    fn start(&mut self, i: usize) {
        let cluster = (0..3)
            .map(|k| format!("m{k}=http://127.0.0.1:{}", self.peer_ports[k]))
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new("etcd")
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(self.dir.join(format!("m{i}")))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", self.client_ports[i]),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", self.client_ports[i]),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", self.peer_ports[i]),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", self.peer_ports[i]),
                "--initial-cluster",
                &cluster,
                "--initial-cluster-state",
                "new",
                "--heartbeat-interval",
                "100",
                "--election-timeout",
                "500",
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (Debian: etcd-server)");
        self.procs[i].child = Some(child);
    }
    fn kill9(&mut self, i: usize) {
        self.procs[i].kill9();
    }
    fn alive(&self, i: usize) -> bool {
        self.procs[i].child.is_some()
    }
    fn leader(&self) -> Option<usize> {
        let st: Vec<(usize, (String, String, u64))> = (0..3)
            .filter(|i| self.alive(*i))
            .map(|i| self.status(i).map(|s| (i, s)))
            .collect::<Option<_>>()?;
        let leader = &st.first()?.1.1;
        if !st.iter().all(|(_, s)| &s.1 == leader) {
            return None;
        }
        st.iter().find(|(_, s)| &s.0 == leader).map(|(i, _)| *i)
    }
    fn put(&self, i: usize, key: &str, value: &str) -> bool {
        let body = format!(r#"{{"key":"{}","value":"{}"}}"#, b64(key), b64(value));
        self.call(i, "/v3/kv/put", &body).is_some()
    }
    fn caught_up(&self, i: usize) -> bool {
        let Some(l) = self.leader() else { return false };
        match (self.status(i), self.status(l)) {
            (Some(a), Some(b)) => a.2 >= b.2,
            _ => false,
        }
    }
}

impl Drop for Joule {
    fn drop(&mut self) {
        self.procs.iter_mut().for_each(Proc::kill9);
    }
}
impl Drop for Etcd {
    fn drop(&mut self) {
        self.procs.iter_mut().for_each(Proc::kill9);
    }
}

// ---------- measurements ----------

fn wait_leader(s: &dyn System, within: Duration) -> usize {
    let end = Instant::now() + within;
    loop {
        if let Some(l) = s.leader() {
            return l;
        }
        assert!(Instant::now() < end, "{}: no leader", s.name());
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Load {
    p50_ms: f64,
    p99_ms: f64,
    per_s: f64,
}

/// `proposers` threads writing through the leader for `secs`.
fn load(s: &dyn System, proposers: usize, secs: f64) -> Load {
    let leader = wait_leader(s, Duration::from_secs(10));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let lats: Vec<Vec<f64>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..proposers)
            .map(|p| {
                let stop = stop.clone();
                sc.spawn(move || {
                    let mut v = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let t = Instant::now();
                        if s.put(leader, &format!("bench/{p}/{}", n % 100), "v") {
                            v.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                    v
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut all: Vec<f64> = lats.into_iter().flatten().collect();
    let n = all.len();
    Load {
        p50_ms: pct(&mut all, 0.5),
        p99_ms: pct(&mut all, 0.99),
        per_s: n as f64 / elapsed,
    }
}

/// kill -9 of the leader to the first write acknowledged after it, `kills` times (ms).
fn failovers(s: &mut dyn System, kills: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for k in 0..kills {
        let leader = wait_leader(s, Duration::from_secs(10));
        // Let the cluster settle so each kill starts from a steady state.
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        s.kill9(leader);
        let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        let mut n = 0;
        loop {
            n += 1;
            if s.put(others[n % 2], "failover", &format!("{k}")) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{}: no write after a kill",
                s.name()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        out.push(t.elapsed().as_secs_f64() * 1e3);
        s.start(leader);
        let end = Instant::now() + Duration::from_secs(30);
        while !s.caught_up(leader) {
            assert!(
                Instant::now() < end,
                "{}: member {leader} never caught up",
                s.name()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{}: kill {}: {:.0} ms", s.name(), k + 1, out[k]);
    }
    out
}

fn run(s: &mut dyn System, o: &Opts) -> serde_json::Value {
    wait_leader(s, Duration::from_secs(20));
    // Warm up connections and the log.
    load(s, 4, 1.0);
    let one = load(s, 1, o.seconds);
    let many = load(s, 64, o.seconds);
    let mut f = failovers(s, o.kills);
    let median = pct(&mut f.clone(), 0.5);
    let max = f.iter().cloned().fold(0.0, f64::max);
    f.sort_by(f64::total_cmp);
    serde_json::json!({
        "system": s.name(),
        "proposers_1": {"p50_ms": one.p50_ms, "p99_ms": one.p99_ms, "writes_per_s": one.per_s},
        "proposers_64": {"p50_ms": many.p50_ms, "p99_ms": many.p99_ms, "writes_per_s": many.per_s},
        "failover_ms": {"kills": o.kills, "median": median, "max": max},
    })
}

fn main() {
    let o = Opts::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    {
        let mut j = Joule::new(rt.handle().clone(), dir.path());
        results.push(run(&mut j, &o));
    }
    if !o.no_etcd {
        let mut e = Etcd::new(dir.path());
        results.push(run(&mut e, &o));
    }
    if o.json {
        println!("{}", serde_json::Value::Array(results));
        return;
    }
    println!(
        "3 members on 127.0.0.1, fsync on, heartbeat 100 ms, election timeout from 500 ms; {} s per load, {} kills",
        o.seconds, o.kills
    );
    println!(
        "{:<6} {:>10} {:>10} {:>9} {:>10} {:>10} {:>9} {:>15} {:>12}",
        "system",
        "1: p50 ms",
        "1: p99 ms",
        "1: w/s",
        "64: p50 ms",
        "64: p99 ms",
        "64: w/s",
        "failover p50 ms",
        "failover max"
    );
    for r in &results {
        let g = |a: &str, b: &str| r[a][b].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<6} {:>10.2} {:>10.2} {:>9.0} {:>10.2} {:>10.2} {:>9.0} {:>15.0} {:>12.0}",
            r["system"].as_str().unwrap_or(""),
            g("proposers_1", "p50_ms"),
            g("proposers_1", "p99_ms"),
            g("proposers_1", "writes_per_s"),
            g("proposers_64", "p50_ms"),
            g("proposers_64", "p99_ms"),
            g("proposers_64", "writes_per_s"),
            g("failover_ms", "median"),
            g("failover_ms", "max"),
        );
    }
}
