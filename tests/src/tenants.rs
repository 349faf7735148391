//! Tenants, API keys and metered usage, end to end: `joulectl` against a test [`Cluster`]
//! ([`joulectl`], [`TenantYaml`], [`create_key`]), HTTP requests that carry headers and whose
//! response headers matter ([`post_json_with`], [`HttpResponse`]), the usage objects clients
//! received and the usage the cluster committed ([`Usage`], [`usage_rows`]), gRPC calls with a
//! key ([`keyed`]), and waits for a key to be taken or refused by gateways.
//!
//! What the tests rely on of the CLI (one place to change if it moves):
//! - `joulectl --server ADDRS --token TOKEN apply -f FILE` with `kind: Tenant` documents
//!   (`spec.weight`, `spec.deployments`, `spec.limits.{requestsPerMinute, tokensPerMinute,
//!   maxConcurrent}`, `spec.quota.{tokensPerMonth, joulesPerMonth}`);
//! - `create apikey --tenant NAME [--name LABEL] [--expires 30d]` prints the key, `jk-` and 43
//!   base62 characters, as the only line of stdout;
//! - `delete apikey ID --tenant NAME` (ID: the key's first 11 characters), `delete tenant NAME`;
//! - `get usage [--tenant T] -o json`: an array of rows (`tenant`, `day`, `model`, `requests`,
//!   `promptTokens`, `cachedPromptTokens`, `completionTokens`, `measuredJoules`,
//!   `estimatedJoules`; snake_case is read as well, and numbers may be strings);
//! - `get apikeys --tenant T -o json`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use joule_proto::v1;
use serde_json::{Value, json};

use crate::cluster::{Cluster, TOKEN};
use crate::gateway::{Collected, GatewayProc, collect};

// ------------------------------------------------------------------------------ joulectl

/// Runs `joulectl --server <every replica> --token <admin token> ARGS`: its exit code (-1 when
/// killed by a signal), stdout and stderr.
pub fn joulectl(c: &Cluster, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(crate::bin("joulectl"))
        .args(["--server", &c.live_addrs(), "--token", TOKEN])
        .args(args)
        .env_remove("JOULE_SERVER")
        .env_remove("JOULE_TOKEN")
        .output()
        .expect("run joulectl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`joulectl`] that must succeed; its stdout.
pub fn joulectl_ok(c: &Cluster, args: &[&str]) -> String {
    let (code, out, err) = joulectl(c, args);
    assert_eq!(
        code, 0,
        "joulectl {args:?} exited {code}\nstdout: {out}\nstderr: {err}"
    );
    out
}

/// A `kind: Tenant` document; every spec field optional. Integers are signed so a test can
/// write a negative one.
#[derive(Debug, Clone, Default)]
pub struct TenantYaml {
    pub name: String,
    pub weight: Option<f64>,
    pub deployments: Option<Vec<String>>,
    pub requests_per_minute: Option<i128>,
    pub tokens_per_minute: Option<i128>,
    pub max_concurrent: Option<i128>,
    pub tokens_per_month: Option<i128>,
    pub joules_per_month: Option<f64>,
}

impl TenantYaml {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ..Default::default()
        }
    }

    pub fn weight(mut self, w: f64) -> Self {
        self.weight = Some(w);
        self
    }

    pub fn deployments(mut self, d: &[&str]) -> Self {
        self.deployments = Some(d.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn rpm(mut self, n: i128) -> Self {
        self.requests_per_minute = Some(n);
        self
    }

    pub fn tpm(mut self, n: i128) -> Self {
        self.tokens_per_minute = Some(n);
        self
    }

    pub fn max_concurrent(mut self, n: i128) -> Self {
        self.max_concurrent = Some(n);
        self
    }

    pub fn tokens_per_month(mut self, n: i128) -> Self {
        self.tokens_per_month = Some(n);
        self
    }

    pub fn joules_per_month(mut self, j: f64) -> Self {
        self.joules_per_month = Some(j);
        self
    }

    /// The YAML `joulectl apply -f` takes.
    pub fn to_yaml(&self) -> String {
        let mut spec = String::new();
        if let Some(w) = self.weight {
            spec += &format!("  weight: {w:?}\n");
        }
        if let Some(d) = &self.deployments {
            spec += &format!("  deployments: [{}]\n", d.join(", "));
        }
        let limits: Vec<String> = [
            ("requestsPerMinute", self.requests_per_minute),
            ("tokensPerMinute", self.tokens_per_minute),
            ("maxConcurrent", self.max_concurrent),
        ]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("    {k}: {v}\n")))
        .collect();
        if !limits.is_empty() {
            spec += "  limits:\n";
            spec += &limits.concat();
        }
        let mut quota = String::new();
        if let Some(n) = self.tokens_per_month {
            quota += &format!("    tokensPerMonth: {n}\n");
        }
        if let Some(j) = self.joules_per_month {
            quota += &format!("    joulesPerMonth: {j:?}\n");
        }
        if !quota.is_empty() {
            spec += "  quota:\n";
            spec += &quota;
        }
        let spec = if spec.is_empty() {
            "spec: {}\n".to_string()
        } else {
            format!("spec:\n{spec}")
        };
        format!(
            "apiVersion: joule/v1\nkind: Tenant\nmetadata:\n  name: {}\n{spec}",
            self.name
        )
    }
}

/// Writes `yaml` to `<cluster tmp>/<stem>.yaml` and runs `joulectl apply -f` on it.
pub fn apply_yaml(c: &Cluster, stem: &str, yaml: &str) -> (i32, String, String) {
    let path = c.tmp.path().join(format!("{stem}.yaml"));
    std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    joulectl(
        c,
        &[
            "apply",
            "-f",
            path.to_str().expect("a UTF-8 temporary path"),
        ],
    )
}

/// Applies a tenant with `joulectl apply -f`; panics unless it succeeds.
pub fn apply_tenant(c: &Cluster, t: &TenantYaml) {
    let yaml = t.to_yaml();
    let (code, out, err) = apply_yaml(c, &format!("tenant-{}", t.name), &yaml);
    assert_eq!(
        code, 0,
        "joulectl apply of tenant {} exited {code}\n{yaml}\nstdout: {out}\nstderr: {err}",
        t.name
    );
}

/// Whether `s` is shaped like an API key: `jk-` and 43 base62 characters.
pub fn is_key_shape(s: &str) -> bool {
    s.len() == 46 && s.starts_with("jk-") && s[3..].bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A key's id, which listings show and `delete apikey` takes: its first 11 characters.
pub fn key_id(key: &str) -> &str {
    &key[..11]
}

/// `joulectl create apikey --tenant TENANT EXTRA...`: the key it printed (checked to be the
/// only line of stdout and shaped like a key).
pub fn create_key(c: &Cluster, tenant: &str, extra: &[&str]) -> String {
    let mut args = vec!["create", "apikey", "--tenant", tenant];
    args.extend_from_slice(extra);
    let out = joulectl_ok(c, &args);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "joulectl {args:?} printed {} lines, want the key alone: {out:?}",
        lines.len()
    );
    let key = lines[0].trim().to_string();
    assert!(
        is_key_shape(&key),
        "joulectl {args:?} printed {key:?}, not a key (jk- and 43 base62 characters)"
    );
    key
}

/// `joulectl delete apikey ID --tenant TENANT`; panics unless it succeeds.
pub fn delete_key(c: &Cluster, tenant: &str, key: &str) {
    joulectl_ok(c, &["delete", "apikey", key_id(key), "--tenant", tenant]);
}

/// `joulectl delete tenant NAME`; panics unless it succeeds.
pub fn delete_tenant(c: &Cluster, name: &str) {
    joulectl_ok(c, &["delete", "tenant", name]);
}

/// A key of the right shape that no tenant has (different on every call).
pub fn made_up_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::from("jk-");
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let mut x = 0u64;
    while out.len() < 46 {
        if x < 62 {
            h.write_u64(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as u64,
            );
            x = h.finish() | (1 << 63);
        }
        out.push(B62[(x % 62) as usize] as char);
        x /= 62;
    }
    out
}

// ------------------------------------------------------------------------------ HTTP

/// An HTTP response: status, headers (names lowercased, in order) and the body (de-chunked).
#[derive(Debug, Clone, Default)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// `error.code` of an OpenAI error object.
    pub fn error_code(&self) -> Option<String> {
        self.json()["error"]["code"].as_str().map(str::to_string)
    }

    /// `error.type` of an OpenAI error object.
    pub fn error_type(&self) -> Option<String> {
        self.json()["error"]["type"].as_str().map(str::to_string)
    }

    /// Whether the body is a server-sent event stream.
    pub fn is_sse(&self) -> bool {
        self.header("content-type")
            .is_some_and(|t| t.contains("text/event-stream"))
            || self.body.trim_start().starts_with("data:")
    }

    /// The JSON chunks of an event stream (not `[DONE]`).
    pub fn events(&self) -> Vec<Value> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect()
    }

    /// The `usage` object the client received: the whole response's, or a stream's usage
    /// chunk's (`stream_options.include_usage`).
    pub fn usage(&self) -> Option<Usage> {
        if self.is_sse() {
            self.events()
                .iter()
                .rev()
                .find(|e| e["usage"].is_object())
                .and_then(|e| Usage::from_openai(&e["usage"]))
        } else {
            Usage::from_openai(&self.json()["usage"])
        }
    }

    /// The finish reason of the (only) choice, whole or streamed.
    pub fn finish_reason(&self) -> Option<String> {
        let pick = |v: &Value| {
            v["choices"][0]["finish_reason"]
                .as_str()
                .map(str::to_string)
        };
        if self.is_sse() {
            self.events().iter().find_map(pick)
        } else {
            pick(&self.json())
        }
    }

    /// One line for a failing test's message: status, rate-limit headers, the body's start.
    pub fn summary(&self) -> String {
        let heads: Vec<String> = self
            .headers
            .iter()
            .filter(|(k, _)| k.starts_with("x-ratelimit") || k.starts_with("retry-after"))
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let body: String = self.body.chars().take(400).collect();
        format!("HTTP {} [{}] {body}", self.status, heads.join(", "))
    }
}

/// `POST path` with a JSON body and extra request headers: status, headers and body.
pub fn post_json_with(
    addr: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: \
         application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    Ok(parse_response(&raw))
}

/// `POST path` with `body`, and `Authorization: Bearer KEY` when there is a key.
pub fn post_keyed(
    addr: &str,
    path: &str,
    body: &Value,
    key: Option<&str>,
) -> std::io::Result<HttpResponse> {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    post_json_with(addr, path, &body.to_string(), &headers)
}

/// A chat completion with `key`: greedy, `max_tokens` tokens (EOS ignored).
pub fn chat(addr: &str, key: &str, model: &str, max_tokens: u32) -> std::io::Result<HttpResponse> {
    post_keyed(
        addr,
        "/v1/chat/completions",
        &chat_body(model, "Say hello.", max_tokens, false),
        Some(key),
    )
}

/// A greedy chat request body; `stream` asks for the usage chunk too.
pub fn chat_body(model: &str, prompt: &str, max_tokens: u32, stream: bool) -> Value {
    let mut b = json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": true,
    });
    if stream {
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

/// A greedy `/v1/completions` request body; `stream` asks for the usage chunk too.
pub fn completion_body(model: &str, prompt: &str, max_tokens: u32, stream: bool) -> Value {
    let mut b = json!({
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": true,
    });
    if stream {
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or("").trim();
        let n = usize::from_str_radix(size, 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Whether `s` reads as a rate-limit reset the way OpenAI writes them: `250ms`, `1s`, `1.5s`,
/// `6m0s`, `1h2m3s`.
pub fn is_reset_duration(s: &str) -> bool {
    let num = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if let Some(ms) = s.strip_suffix("ms") {
        return num(ms);
    }
    let (mut rest, mut any) = (s, false);
    for unit in ['h', 'm', 's'] {
        if let Some((n, r)) = rest.split_once(unit) {
            if !num(n) {
                return false;
            }
            rest = r;
            any = true;
        }
    }
    any && rest.is_empty()
}

/// A `Retry-After` that is a whole number of seconds, at least 1, with a numeric
/// `retry-after-ms` beside it; the problem otherwise.
pub fn check_retry_after(r: &HttpResponse) -> Result<u64, String> {
    let ra = r
        .header("retry-after")
        .ok_or_else(|| format!("no Retry-After: {}", r.summary()))?;
    let secs: u64 = ra
        .parse()
        .map_err(|_| format!("Retry-After {ra:?} is not whole seconds: {}", r.summary()))?;
    if secs < 1 {
        return Err(format!("Retry-After {secs} < 1: {}", r.summary()));
    }
    let ms = r
        .header("retry-after-ms")
        .ok_or_else(|| format!("no retry-after-ms: {}", r.summary()))?;
    if !ms.parse::<f64>().is_ok_and(|m| m >= 0.0) {
        return Err(format!(
            "retry-after-ms {ms:?} is not a number: {}",
            r.summary()
        ));
    }
    Ok(secs)
}

// ------------------------------------------------------------------------------ usage

/// Metered usage: what clients received (summed `usage` objects) or what the cluster committed
/// (summed rows). `joules` is measured and estimated together.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Usage {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_prompt_tokens: u64,
    pub completion_tokens: u64,
    pub joules: f64,
}

impl Usage {
    /// One request's OpenAI `usage` object (`prompt_tokens_details.cached_tokens`, and the
    /// gateway's `joules`).
    pub fn from_openai(u: &Value) -> Option<Self> {
        if !u.is_object() {
            return None;
        }
        Some(Self {
            requests: 1,
            prompt_tokens: u["prompt_tokens"].as_u64()?,
            cached_prompt_tokens: u["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0),
            completion_tokens: u["completion_tokens"].as_u64()?,
            joules: u["joules"].as_f64().unwrap_or(0.0),
        })
    }

    pub fn add(&mut self, o: &Usage) {
        self.requests += o.requests;
        self.prompt_tokens += o.prompt_tokens;
        self.cached_prompt_tokens += o.cached_prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.joules += o.joules;
    }

    /// `self - o`, each field floored at 0.
    pub fn minus(&self, o: &Usage) -> Usage {
        Usage {
            requests: self.requests.saturating_sub(o.requests),
            prompt_tokens: self.prompt_tokens.saturating_sub(o.prompt_tokens),
            cached_prompt_tokens: self
                .cached_prompt_tokens
                .saturating_sub(o.cached_prompt_tokens),
            completion_tokens: self.completion_tokens.saturating_sub(o.completion_tokens),
            joules: (self.joules - o.joules).max(0.0),
        }
    }

    /// Prompt plus completion tokens.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// One row of `joulectl get usage -o json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageRow {
    pub tenant: String,
    /// As printed (days since the epoch, or a date).
    pub day: String,
    pub model: String,
    /// `joules` is `measured_joules + estimated_joules`.
    pub usage: Usage,
    pub measured_joules: f64,
    pub estimated_joules: f64,
}

fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `v[name]` by its snake_case or camelCase spelling.
fn field<'a>(v: &'a Value, snake: &str) -> Option<&'a Value> {
    v.get(snake)
        .or_else(|| v.get(camel(snake)))
        .filter(|x| !x.is_null())
}

/// A number, or a string holding one (proto3 JSON writes 64-bit integers as strings).
fn number(v: Option<&Value>) -> f64 {
    match v {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn count(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .unwrap_or_else(|| n.as_f64().unwrap_or(0.0) as u64),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(x) => x.to_string(),
        None => String::new(),
    }
}

/// Parses `get usage -o json`: an array of rows (or an object holding one under `rows`,
/// `items` or `usage`; empty output is no rows).
pub fn parse_usage_rows(out: &str) -> Result<Vec<UsageRow>, String> {
    if out.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(out).map_err(|e| format!("not JSON ({e}): {out:?}"))?;
    let rows = match &v {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        Value::Object(_) => match ["rows", "items", "usage"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_array))
        {
            Some(a) => a.clone(),
            None => return Err(format!("no array of rows in {out:?}")),
        },
        _ => return Err(format!("not an array of rows: {out:?}")),
    };
    Ok(rows
        .iter()
        .map(|r| {
            let measured = number(field(r, "measured_joules"));
            let estimated = number(field(r, "estimated_joules"));
            UsageRow {
                tenant: text(field(r, "tenant")),
                day: text(field(r, "day")),
                model: text(field(r, "model")),
                usage: Usage {
                    requests: count(field(r, "requests")),
                    prompt_tokens: count(field(r, "prompt_tokens")),
                    cached_prompt_tokens: count(field(r, "cached_prompt_tokens")),
                    completion_tokens: count(field(r, "completion_tokens")),
                    joules: measured + estimated,
                },
                measured_joules: measured,
                estimated_joules: estimated,
            }
        })
        .collect())
}

/// `joulectl get usage [--tenant T] -o json`, parsed; panics when it fails.
pub fn usage_rows(c: &Cluster, tenant: Option<&str>) -> Vec<UsageRow> {
    let mut args = vec!["get", "usage"];
    if let Some(t) = tenant {
        args.extend(["--tenant", t]);
    }
    args.extend(["-o", "json"]);
    let out = joulectl_ok(c, &args);
    parse_usage_rows(&out).unwrap_or_else(|e| panic!("joulectl {args:?}: {e}"))
}

/// Rows summed per tenant (over days and models).
pub fn usage_by_tenant(rows: &[UsageRow]) -> BTreeMap<String, Usage> {
    let mut m: BTreeMap<String, Usage> = BTreeMap::new();
    for r in rows {
        m.entry(r.tenant.clone()).or_default().add(&r.usage);
    }
    m
}

/// Every tenant's committed usage now (`get usage -o json`, summed per tenant).
pub fn committed(c: &Cluster) -> BTreeMap<String, Usage> {
    usage_by_tenant(&usage_rows(c, None))
}

// ------------------------------------------------------------------------------ gRPC

/// `msg` as a gRPC request carrying `authorization: Bearer KEY`.
pub fn keyed<T>(msg: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("an ASCII key"),
    );
    r
}

/// A greedy `Generate` of `max_tokens` tokens (EOS ignored) of `model`.
pub fn generate_request(model: &str, max_tokens: u32) -> v1::GenerateRequest {
    v1::GenerateRequest {
        model: model.into(),
        prompt: Some(v1::generate_request::Prompt::Text(
            "Once upon a time, in a lighthouse by the sea,".into(),
        )),
        sampling: Some(v1::SamplingParams {
            temperature: Some(0.0),
            max_tokens: Some(max_tokens),
            ignore_eos: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `Generate` through the gateway's gRPC API with `key` (none: no metadata), read to its end;
/// the status it failed with, whether at the call or in the stream.
pub async fn grpc_generate(
    g: &GatewayProc,
    key: Option<&str>,
    req: v1::GenerateRequest,
) -> Result<Collected, tonic::Status> {
    let mut c = g.client();
    let r = match key {
        Some(k) => keyed(req, k),
        None => tonic::Request::new(req),
    };
    let s = tokio::time::timeout(Duration::from_secs(60), c.generate(r))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no answer in 60 s"))??;
    let got = collect(s.into_inner()).await;
    match got.error {
        Some(e) => Err(e),
        None => Ok(got),
    }
}

// ------------------------------------------------------------------------------ waits

/// Polls a one-token chat with `key` every 50 ms until `g` answers 200 (the gateway has the key
/// and a ready replica): when that request was sent, and its response. Panics after `within`
/// with the last answer and the gateway's log.
pub fn wait_serving(
    g: &GatewayProc,
    key: &str,
    model: &str,
    within: Duration,
) -> (Instant, HttpResponse) {
    let end = Instant::now() + within;
    loop {
        let sent = Instant::now();
        let r = chat(&g.http, key, model, 1);
        match r {
            Ok(r) if r.status == 200 => return (sent, r),
            other => {
                assert!(
                    Instant::now() < end,
                    "gateway {} does not serve {model} with the key after {within:?}: last {}\n\
                     log:\n{}",
                    g.name,
                    match other {
                        Ok(r) => r.summary(),
                        Err(e) => e.to_string(),
                    },
                    g.log_tail()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls each gateway (one thread each, a one-token chat every 50 ms) until it refuses `key`
/// with 401; per gateway, how long after `since` the first 401 came (None: not by
/// `since + give_up`), and the last response before it.
pub fn time_until_refused(
    gws: &[&GatewayProc],
    key: &str,
    model: &str,
    since: Instant,
    give_up: Duration,
) -> Vec<(Option<Duration>, String)> {
    let handles: Vec<_> = gws
        .iter()
        .map(|g| {
            let (addr, key, model) = (g.http.clone(), key.to_string(), model.to_string());
            std::thread::spawn(move || {
                let mut last = String::from("no request");
                loop {
                    let t = Instant::now();
                    match chat(&addr, &key, &model, 1) {
                        Ok(r) if r.status == 401 => return (Some(since.elapsed()), last),
                        Ok(r) => last = r.summary(),
                        Err(e) => last = e.to_string(),
                    }
                    if since.elapsed() > give_up {
                        return (None, last);
                    }
                    std::thread::sleep(Duration::from_millis(50).saturating_sub(t.elapsed()));
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a polling thread"))
        .collect()
}

/// Files under `dir` (recursively, skipping files over 16 MiB such as model copies) whose bytes
/// contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file()
                && meta.len() <= 16 << 20
                && let Ok(bytes) = std::fs::read(&p)
                && bytes
                    .windows(needle.len().max(1))
                    .any(|w| w == needle.as_bytes())
            {
                found.push(p);
            }
        }
    }
    found
}
