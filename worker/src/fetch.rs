//! The model cache (`--cache-dir`/models): where a worker keeps the model files it downloads.
//!
//! A `file://` source is a path on this machine and is used where it is. An `http(s)://` source
//! is streamed into `<sha256>.partial` (progress in the log and to the caller), resumed with a
//! `Range` request after a failure where the server allows it (else restarted), checked against
//! its sha256 and only then renamed to `<sha256>.gguf`, so a half-written or wrong file is never
//! served, and one file serves every placement of that model on the node. Files are evicted
//! least recently used when the cache would exceed `--cache-budget`; a file in use is never
//! evicted.
//!
//! It owns files under its own directory and nothing else: it never deletes a `file://`
//! source, and never loads a model (the registry does).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Where a model file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path on this machine.
    File(PathBuf),
    /// A URL to download.
    Http(String),
}

impl Source {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("file://") {
            if !p.starts_with('/') {
                return Err(format!(
                    "source {s:?}: a file:// source needs an absolute path"
                ));
            }
            return Ok(Self::File(PathBuf::from(p)));
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            return Ok(Self::Http(s.to_string()));
        }
        if s.starts_with('/') {
            return Ok(Self::File(PathBuf::from(s)));
        }
        Err(format!(
            "source {s:?} is not file:///absolute/path, http:// or https://"
        ))
    }
}

/// Fetch settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dir: PathBuf,
    /// Bytes the cache may hold; 0: unlimited.
    pub budget: u64,
    /// How long to wait to connect, and for each read, before the fetch fails.
    pub timeout: Duration,
    /// Attempts per fetch (each resumes the last where the server allows it).
    pub attempts: u32,
}

/// The cache.
#[derive(Debug)]
pub struct Cache {
    s: Settings,
    /// Files in use, by sha256, with how many placements use each.
    pinned: Arc<Mutex<BTreeMap<String, usize>>>,
    /// One download at a time per file: two placements of one model share it.
    inflight: Mutex<BTreeMap<String, Arc<Mutex<()>>>>,
}

/// A file the caller uses; unpinned (evictable again) on drop.
#[derive(Debug)]
pub struct Pinned {
    pinned: Arc<Mutex<BTreeMap<String, usize>>>,
    sha256: String,
    pub path: PathBuf,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let mut p = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = p.get_mut(&self.sha256) {
            *n -= 1;
            if *n == 0 {
                p.remove(&self.sha256);
            }
        }
    }
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

impl Cache {
    pub fn new(s: Settings) -> Result<Self, String> {
        fs::create_dir_all(&s.dir)
            .map_err(|e| format!("cannot create the model cache {}: {e}", s.dir.display()))?;
        Ok(Self {
            s,
            pinned: Arc::new(Mutex::new(BTreeMap::new())),
            inflight: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.s.dir
    }

    fn final_path(&self, sha256: &str) -> PathBuf {
        self.s.dir.join(format!("{sha256}.gguf"))
    }

    fn partial_path(&self, sha256: &str) -> PathBuf {
        self.s.dir.join(format!("{sha256}.partial"))
    }

    fn pin(&self, sha256: &str, path: PathBuf) -> Pinned {
        *self
            .pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(sha256.to_string())
            .or_default() += 1;
        Pinned {
            pinned: Arc::clone(&self.pinned),
            sha256: sha256.to_string(),
            path,
        }
    }

    /// The local file for `source`, downloading it if needed; pinned until dropped. Blocking.
    /// `progress` gets the fraction done (0 to 1) as bytes arrive.
    pub fn fetch(
        &self,
        source: &Source,
        sha256: &str,
        size: u64,
        progress: &mut dyn FnMut(f64),
    ) -> Result<Pinned, String> {
        joule_proto::names::sha256("sha256", sha256)?;
        let url = match source {
            Source::File(p) => {
                if !p.is_file() {
                    return Err(format!("{}: no such file on this worker", p.display()));
                }
                return Ok(self.pin(sha256, p.clone()));
            }
            Source::Http(u) => u,
        };
        let done = self.final_path(sha256);
        // Pinned first, so that no eviction on another thread removes it after the check.
        let pin = self.pin(sha256, done.clone());
        let gate = Arc::clone(
            self.inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(sha256.to_string())
                .or_default(),
        );
        let _one_download = gate.lock().unwrap_or_else(|e| e.into_inner());
        if done.is_file() {
            touch(&done);
            return Ok(pin);
        }
        let partial = self.partial_path(sha256);
        let have = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        self.make_room(size.saturating_sub(have), sha256)?;
        let mut last = String::new();
        for attempt in 1..=self.s.attempts.max(1) {
            match self.download(url, &partial, size, progress) {
                Ok(()) => {
                    last.clear();
                    break;
                }
                Err(Failure::Final(e)) => {
                    let _ = fs::remove_file(&partial);
                    return Err(e);
                }
                Err(Failure::Retry(e)) => {
                    tracing::warn!(url, attempt, error = %e, "model download failed; resuming");
                    last = e;
                }
            }
        }
        if !last.is_empty() {
            let _ = fs::remove_file(&partial);
            return Err(last);
        }
        let got = crate::registry::sha256_file(&partial)
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        if got != sha256 {
            let _ = fs::remove_file(&partial);
            return Err(format!(
                "{url} served the wrong bytes: sha256 {got}, expected {sha256}; the partial file \
                 was removed"
            ));
        }
        fs::rename(&partial, &done).map_err(|e| format!("{}: {e}", done.display()))?;
        tracing::info!(url, file = %done.display(), "model downloaded and verified");
        Ok(pin)
    }

    /// Evicts least recently used files (not pinned, not `keep`) until `need` more bytes fit.
    fn make_room(&self, need: u64, keep: &str) -> Result<(), String> {
        if self.s.budget == 0 {
            return Ok(());
        }
        if need > self.s.budget {
            return Err(format!(
                "the model needs {}, more than the whole --cache-budget of {}",
                gib(need),
                gib(self.s.budget)
            ));
        }
        let pinned = self
            .pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut files: Vec<(SystemTime, u64, PathBuf, String)> = Vec::new();
        let mut used = 0u64;
        for e in fs::read_dir(&self.s.dir)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            let p = e.path();
            let Some(stem) = p.file_stem().and_then(|s| s.to_str()).map(str::to_string) else {
                continue;
            };
            let Ok(meta) = e.metadata() else { continue };
            if stem == keep {
                // This model's own partial download: `need` is what it still lacks.
                continue;
            }
            used += meta.len();
            if p.extension().is_some_and(|x| x == "gguf")
                && stem != keep
                && !pinned.contains_key(&stem)
            {
                let t = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                files.push((t, meta.len(), p, stem));
            }
        }
        files.sort();
        for (_, len, p, _) in files {
            if used + need <= self.s.budget {
                break;
            }
            match fs::remove_file(&p) {
                Ok(()) => {
                    used = used.saturating_sub(len);
                    tracing::info!(file = %p.display(), "evicted from the model cache (least recently used)");
                }
                Err(e) => tracing::warn!(file = %p.display(), error = %e, "cannot evict"),
            }
        }
        if used + need > self.s.budget {
            return Err(format!(
                "the model cache cannot make room for {}: {} of the {} budget is in use",
                gib(need),
                gib(used),
                gib(self.s.budget)
            ));
        }
        Ok(())
    }

    fn download(
        &self,
        url: &str,
        partial: &Path,
        size: u64,
        progress: &mut dyn FnMut(f64),
    ) -> Result<(), Failure> {
        let have = fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(self.s.timeout))
            .timeout_recv_response(Some(self.s.timeout))
            .timeout_per_read(Some(self.s.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent.get(url);
        if have > 0 {
            req = req.header("Range", &format!("bytes={have}-"));
        }
        let resp = req
            .call()
            .map_err(|e| Failure::Retry(format!("GET {url}: {e}")))?;
        let status = resp.status().as_u16();
        let (append, start) = match status {
            206 if have > 0 => (true, have),
            // Everything was there already (it broke off at the very end): check it.
            416 if have > 0 => {
                progress(1.0);
                return Ok(());
            }
            200 => (false, 0),
            404 | 410 => return Err(Failure::Final(format!("GET {url}: {status} Not Found"))),
            s if (400..500).contains(&s) => {
                return Err(Failure::Final(format!("GET {url}: HTTP {s}")));
            }
            s => return Err(Failure::Retry(format!("GET {url}: HTTP {s}"))),
        };
        let total = resp
            .body()
            .content_length()
            .map(|n| n + start)
            .or((size > 0).then_some(size))
            .unwrap_or(0);
        let mut out = if append {
            OpenOptions::new().append(true).open(partial)
        } else {
            File::create(partial)
        }
        .map_err(|e| Failure::Final(format!("{}: {e}", partial.display())))?;
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = start;
        let mut logged = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = out.flush();
                    return Err(Failure::Retry(format!(
                        "GET {url}: the download broke off after {got} bytes: {e}"
                    )));
                }
            };
            out.write_all(&buf[..n])
                .map_err(|e| Failure::Final(format!("{}: {e}", partial.display())))?;
            got += n as u64;
            if total > 0 {
                progress((got as f64 / total as f64).min(1.0));
                if got - logged >= total / 10 {
                    logged = got;
                    tracing::info!(
                        url,
                        done = got,
                        total,
                        "downloading model: {:.0}%",
                        100.0 * got as f64 / total as f64
                    );
                }
            }
        }
        out.sync_all()
            .map_err(|e| Failure::Final(format!("{}: {e}", partial.display())))?;
        progress(1.0);
        Ok(())
    }
}

enum Failure {
    /// Worth another attempt (resuming where it stopped).
    Retry(String),
    /// Not: the URL is wrong, or the disk refuses.
    Final(String),
}

fn touch(p: &Path) {
    if let Ok(f) = File::options().append(true).open(p) {
        let _ = f.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
#[path = "fetch_tests.rs"]
mod tests;
