//! The OpenAI-compatible HTTP target (Joule's gateway, llama.cpp's `llama-server`, vLLM, ...):
//! `GET {base}/models` for the default model, then each request as a stream, `POST
//! {base}/completions` (a raw prompt) or `{base}/chat/completions` (messages), with `stream:
//! true` and `stream_options.include_usage`, read with blocking `ureq` as the bytes arrive.
//!
//! It sends only fields OpenAI defines, plus `ignore_eos` when asked (Joule's gateway refuses
//! unknown fields, and takes `ignore_eos` as vLLM does). It must never retry a request (a retry
//! would hide a failure in the numbers) and never put the key anywhere but the header.

use std::io::Read as _;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::{Value, json};

use super::sse::{self, error_text};
use super::{Endpoint, ErrorKind, Failure, Outcome, Prompt, Request, Sampling, Target, TargetInfo};

/// `URL` as an OpenAI base: no trailing `/`, and `/v1` added to a URL without a path.
pub fn base_url(flag: &str, url: &str) -> anyhow::Result<String> {
    let u = url.trim().trim_end_matches('/');
    let Some(rest) = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
    else {
        bail!("{flag} {url:?}: expected an http:// or https:// URL, e.g. http://127.0.0.1:8080/v1");
    };
    if rest.is_empty() || rest.starts_with('/') {
        bail!("{flag} {url:?}: no host");
    }
    Ok(if rest.contains('/') {
        u.to_string()
    } else {
        format!("{u}/v1")
    })
}

/// How to reach one server.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// The flag that names it, for errors.
    pub flag: &'a str,
    /// The flag that names its model.
    pub model_flag: &'a str,
    pub url: &'a str,
    pub key: Option<&'a str>,
    /// `None`: the first model `GET /models` lists.
    pub model: Option<&'a str>,
    /// For each whole request, connect to last byte.
    pub timeout: Duration,
    /// Connections to keep open (the most in flight).
    pub conns: usize,
}

/// An OpenAI-compatible server.
pub struct OpenAi {
    agent: ureq::Agent,
    base: String,
    auth: Option<String>,
    model: String,
    sampling: Sampling,
}

impl OpenAi {
    /// The server at `s.url`; asks it for its first model when `s.model` is `None`.
    pub fn connect(s: Settings<'_>, sampling: Sampling) -> anyhow::Result<Self> {
        let base = base_url(s.flag, s.url)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(crate::tls::config())
            .timeout_global(Some(s.timeout))
            .timeout_connect(Some(s.timeout.min(Duration::from_secs(10))))
            .http_status_as_error(false)
            .max_idle_connections(s.conns.max(8))
            .max_idle_connections_per_host(s.conns.max(8))
            .build()
            .into();
        let auth = s
            .key
            .filter(|k| !k.is_empty())
            .map(|k| format!("Bearer {k}"));
        let mut t = Self {
            agent,
            base,
            auth,
            model: String::new(),
            sampling,
        };
        t.model = match s.model {
            Some(m) => m.to_string(),
            None => t.first_model(s.flag, s.model_flag)?,
        };
        Ok(t)
    }

    fn first_model(&self, flag: &str, model_flag: &str) -> anyhow::Result<String> {
        let url = format!("{}/models", self.base);
        let mut req = self.agent.get(url.as_str());
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a.as_str());
        }
        let mut resp = req
            .call()
            .map_err(|e| anyhow!("{flag}: GET {url}: {e} (pass {model_flag} to skip this)"))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        if status != 200 {
            bail!("{flag}: GET {url}: HTTP {status}: {}", error_text(&body));
        }
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| anyhow!("{flag}: GET {url}: not JSON ({e})"))?;
        v["data"]
            .as_array()
            .and_then(|d| d.first())
            .and_then(|m| m["id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("{flag}: {url} lists no model: pass {model_flag}"))
    }
}

/// The path and body of `r`.
pub fn body(model: &str, r: &Request, s: &Sampling) -> (&'static str, Value) {
    let (path, mut b) = match (&r.prompt, s.endpoint) {
        (Prompt::Text(t), Endpoint::Completions) => {
            ("/completions", json!({"model": model, "prompt": t}))
        }
        (Prompt::Text(t), Endpoint::Chat) => (
            "/chat/completions",
            json!({"model": model, "messages": [{"role": "user", "content": t}]}),
        ),
        (Prompt::Chat(m), _) => ("/chat/completions", json!({"model": model, "messages": m})),
    };
    b["max_tokens"] = json!(r.max_tokens);
    b["temperature"] = json!(s.temperature);
    b["stream"] = json!(true);
    b["stream_options"] = json!({"include_usage": true});
    if s.ignore_eos {
        b["ignore_eos"] = json!(true);
    }
    (path, b)
}

/// A failure before any answer.
fn call_failure(e: ureq::Error) -> Failure {
    let msg = e.to_string();
    match e {
        ureq::Error::Timeout(_) => Failure::new(ErrorKind::Timeout, msg),
        ureq::Error::Protocol(_) => Failure::new(ErrorKind::BadResponse, msg),
        _ => Failure::new(ErrorKind::Connect, msg),
    }
}

/// A failure while the stream was read.
fn read_failure(e: std::io::Error, chunks: u64) -> Failure {
    match ureq::Error::from(e) {
        ureq::Error::Timeout(t) => Failure::new(
            ErrorKind::Timeout,
            format!("timed out ({t}) after {chunks} chunks"),
        ),
        other => Failure::new(
            ErrorKind::StreamBroken,
            format!("the stream broke off after {chunks} chunks: {other}"),
        ),
    }
}

impl Target for OpenAi {
    fn info(&self) -> TargetInfo {
        TargetInfo {
            api: "openai-http",
            address: self.base.clone(),
            model: self.model.clone(),
        }
    }

    fn send(&self, r: &Request) -> Outcome {
        let (path, b) = body(&self.model, r, &self.sampling);
        let url = format!("{}{path}", self.base);
        let post = || {
            let mut req = self
                .agent
                .post(url.as_str())
                .header("Content-Type", "application/json");
            if let Some(a) = &self.auth {
                req = req.header("Authorization", a.as_str());
            }
            req.send(b.to_string())
        };
        let sent = Instant::now();
        // A pooled connection the server closed while idle fails before any answer: once,
        // the request goes again on a new connection (the time lost counts in its TTFT).
        let mut resp = match post() {
            Err(ureq::Error::Io(_)) => post(),
            r => r,
        }
        .map_err(call_failure)?;
        let status = resp.status().as_u16();
        if status != 200 {
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            return Err(Failure::new(ErrorKind::Http(status), error_text(&text)));
        }
        let mut reader = resp.into_body().into_reader();
        let mut stream = sse::Reader::new(sent);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf) {
                // Read to the end (not just to [DONE]) so the connection goes back to the pool.
                Ok(0) => return stream.end(Instant::now()),
                Ok(n) => stream.feed(&buf[..n], Instant::now())?,
                Err(e) => return Err(read_failure(e, stream.chunks())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_get_v1_when_they_have_no_path_and_lose_trailing_slashes() {
        assert_eq!(
            base_url("--url", "http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080/v1"
        );
        assert_eq!(
            base_url("--url", "http://h:1/v1/").unwrap(),
            "http://h:1/v1"
        );
        assert_eq!(
            base_url("--url", "https://h/api/v1").unwrap(),
            "https://h/api/v1"
        );
        let e = base_url("--compare", "127.0.0.1:8080")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--compare"), "{e}");
        assert!(base_url("--url", "http:///v1").is_err());
    }

    #[test]
    fn bodies_stream_with_usage_and_send_ignore_eos_only_when_asked() {
        let r = Request {
            prompt: Prompt::Text("hi".into()),
            max_tokens: 7,
        };
        let mut s = Sampling {
            temperature: 0.0,
            ignore_eos: false,
            endpoint: Endpoint::Completions,
        };
        let (path, b) = body("m", &r, &s);
        assert_eq!(path, "/completions");
        assert_eq!(
            b,
            json!({"model": "m", "prompt": "hi", "max_tokens": 7, "temperature": 0.0,
                   "stream": true, "stream_options": {"include_usage": true}})
        );
        s.ignore_eos = true;
        s.endpoint = Endpoint::Chat;
        let (path, b) = body("m", &r, &s);
        assert_eq!(path, "/chat/completions");
        assert_eq!(b["messages"], json!([{"role": "user", "content": "hi"}]));
        assert_eq!(b["ignore_eos"], json!(true));
        let chat = Request {
            prompt: Prompt::Chat(vec![super::super::Message {
                role: "system".into(),
                content: "be brief".into(),
            }]),
            max_tokens: 1,
        };
        s.endpoint = Endpoint::Completions;
        let (path, b) = body("m", &chat, &s);
        assert_eq!(path, "/chat/completions");
        assert_eq!(b["messages"][0]["role"], "system");
    }
}
