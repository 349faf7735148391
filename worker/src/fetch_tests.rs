//! The cache against a real HTTP server on 127.0.0.1 (a small one in the test, so that it can
//! break a download off halfway, serve the wrong bytes, or never answer).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use super::*;

#[derive(Clone, Copy)]
enum Mode {
    Serve,
    /// The first response sends only half the body, then closes.
    BreakOnce,
    NotFound,
    /// Accept, then never answer.
    Silent,
}

/// Serves `body` at any path; counts requests and the Range headers it saw.
fn server(body: Vec<u8>, mode: Mode) -> (String, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/m.gguf", l.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let (c, r) = (count.clone(), ranges.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let n = c.fetch_add(1, Ordering::SeqCst);
            let mut rd = BufReader::new(s.try_clone().unwrap());
            let mut range = None;
            loop {
                let mut line = String::new();
                if rd.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = v.trim().trim_end_matches('-').parse::<usize>().ok();
                    r.lock().unwrap().push(line.trim().to_string());
                }
            }
            match mode {
                Mode::Silent => {
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs(5));
                        drop(s);
                    });
                    continue;
                }
                Mode::NotFound => {
                    let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
                    continue;
                }
                _ => {}
            }
            let from = range.unwrap_or(0).min(body.len());
            let head = if range.is_some() {
                format!(
                    "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {from}-{}/{}\r\nconnection: close\r\n\r\n",
                    body.len() - from,
                    body.len() - 1,
                    body.len()
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                )
            };
            let _ = s.write_all(head.as_bytes());
            let part = if matches!(mode, Mode::BreakOnce) && n == 0 {
                &body[from..body.len() / 2]
            } else {
                &body[from..]
            };
            let _ = s.write_all(part);
        }
    });
    (url, count, ranges)
}

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

fn cache(dir: &Path, budget: u64) -> Cache {
    Cache::new(Settings {
        dir: dir.to_path_buf(),
        budget,
        timeout: Duration::from_millis(500),
        attempts: 3,
    })
    .unwrap()
}

#[test]
fn a_download_broken_off_is_resumed_verified_and_shared() {
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (url, count, ranges) = server(body.clone(), Mode::BreakOnce);
    let dir = tempfile::tempdir().unwrap();
    let c = cache(dir.path(), 0);
    let mut seen = Vec::new();
    let f = c
        .fetch(&Source::parse(&url).unwrap(), &sha(&body), 0, &mut |p| {
            seen.push(p)
        })
        .unwrap();
    assert_eq!(fs::read(&f.path).unwrap(), body);
    assert_eq!(
        count.load(Ordering::SeqCst),
        2,
        "one broken request, one resumed"
    );
    assert_eq!(
        ranges.lock().unwrap().len(),
        1,
        "the second asked for the rest"
    );
    assert_eq!(seen.last(), Some(&1.0));
    assert!(!c.partial_path(&sha(&body)).exists());
    // A second placement of the same model uses the same file, with no request.
    let g = c
        .fetch(&Source::parse(&url).unwrap(), &sha(&body), 0, &mut |_| {})
        .unwrap();
    assert_eq!(g.path, f.path);
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn wrong_bytes_a_404_and_a_silent_server_fail_with_the_reason_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = cache(dir.path(), 0);
    let (url, _, _) = server(b"not the model".to_vec(), Mode::Serve);
    let want = sha(b"the model");
    let e = c
        .fetch(&Source::parse(&url).unwrap(), &want, 0, &mut |_| {})
        .unwrap_err();
    assert!(e.contains("wrong bytes") && e.contains(&want), "{e}");
    let (url, _, _) = server(Vec::new(), Mode::NotFound);
    let e = c
        .fetch(&Source::parse(&url).unwrap(), &want, 0, &mut |_| {})
        .unwrap_err();
    assert!(e.contains("404"), "{e}");
    let (url, count, _) = server(Vec::new(), Mode::Silent);
    let e = c
        .fetch(&Source::parse(&url).unwrap(), &want, 0, &mut |_| {})
        .unwrap_err();
    assert!(e.contains("GET"), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 3, "each attempt timed out");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "partial files are removed"
    );
}

#[test]
fn the_least_recently_used_file_is_evicted_but_never_one_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let c = cache(dir.path(), 2500);
    let bodies: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 1000]).collect();
    let urls: Vec<String> = bodies
        .iter()
        .map(|b| server(b.clone(), Mode::Serve).0)
        .collect();
    let get = |i: usize| {
        c.fetch(
            &Source::parse(&urls[i]).unwrap(),
            &sha(&bodies[i]),
            1000,
            &mut |_| {},
        )
    };
    let a = get(0).unwrap();
    drop(get(1).unwrap());
    // The third needs room: the second (not in use) goes, the first (in use) stays.
    let _c = get(2).unwrap();
    assert!(a.path.exists());
    assert!(!c.final_path(&sha(&bodies[1])).exists());
    // Everything in use and no room: refused with the reason.
    let e = get(1).unwrap_err();
    assert!(e.contains("cannot make room"), "{e}");
    let small = tempfile::tempdir().unwrap();
    let e = Cache::new(Settings {
        dir: small.path().to_path_buf(),
        budget: 10,
        ..c.s.clone()
    })
    .unwrap()
    .fetch(
        &Source::parse(&urls[0]).unwrap(),
        &sha(&bodies[0]),
        1000,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.contains("--cache-budget"), "{e}");
}

#[test]
fn sources_parse_or_say_what_is_accepted() {
    assert_eq!(
        Source::parse("file:///m/a.gguf").unwrap(),
        Source::File("/m/a.gguf".into())
    );
    assert!(matches!(
        Source::parse("https://h/m").unwrap(),
        Source::Http(_)
    ));
    for bad in ["file://rel/a", "s3://b/k", "a.gguf"] {
        assert!(Source::parse(bad).is_err(), "{bad}");
    }
    let dir = tempfile::tempdir().unwrap();
    let e = cache(dir.path(), 0)
        .fetch(
            &Source::parse("file:///nonexistent/x.gguf").unwrap(),
            &"a".repeat(64),
            0,
            &mut |_| {},
        )
        .unwrap_err();
    assert!(e.contains("no such file"), "{e}");
}
