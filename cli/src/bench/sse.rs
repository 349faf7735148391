//! OpenAI-style streams as they arrive: server-sent events ([`Parser`]: bytes in any pieces,
//! lines split across reads, `data:` lines joined until the blank line that ends an event,
//! comments skipped, llama.cpp's `error:` field), each event's JSON chunk ([`parse`]: text or
//! not, finish, usage with Joule's `joules` and `energy_source`, an error object, `[DONE]`),
//! and a whole stream ([`Reader`]) into a [`Done`] or a [`Failure`].
//!
//! It owns no I/O and no clock: callers hand it bytes and the instant they arrived.

use std::time::Instant;

use serde_json::Value;

use super::{Done, Energy, ErrorKind, Failure, Source, Timeline};

/// One event's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The `data:` lines, joined with newlines.
    Data(String),
    /// An `error:` field (llama.cpp's server sends these).
    Error(String),
}

/// Server-sent events from bytes in any pieces.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    data: Option<String>,
}

impl Parser {
    /// The events completed by `bytes`.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            self.line(line.trim_end_matches(['\n', '\r']), &mut out);
        }
        out
    }

    /// The stream ended: whatever event was still open.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let line = String::from_utf8_lossy(&rest);
            self.line(line.trim_end_matches('\r'), &mut out);
        }
        self.dispatch(&mut out);
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                self.data = Some(match self.data.take() {
                    Some(d) => format!("{d}\n{value}"),
                    None => value.to_string(),
                });
            }
            "error" => {
                self.dispatch(out);
                out.push(Event::Error(value.to_string()));
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        if let Some(d) = self.data.take() {
            out.push(Event::Data(d));
        }
    }
}

/// A usage object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub completion_tokens: Option<u64>,
    /// Joule's `joules` (and `energy_source`); `None` from servers that give no energy.
    pub energy: Option<Energy>,
}

/// One chunk of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Chunk {
    /// It carries output text (a token, or a few).
    pub text: bool,
    /// A choice has its `finish_reason`.
    pub finished: bool,
    pub usage: Option<Usage>,
}

/// What one event's data says.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// `[DONE]`.
    Done,
    Chunk(Chunk),
    /// An error object: its message.
    Error(String),
    /// Not JSON.
    Bad(String),
}

/// The message of an OpenAI error object (or of whatever `error` holds).
pub fn error_message(e: &Value) -> String {
    e.as_str()
        .or_else(|| e["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| e.to_string())
}

/// The message in an error response's body (an OpenAI error object, or the text itself).
pub fn error_text(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) if v.get("error").is_some() => error_message(&v["error"]),
        _ => clip(body.trim()),
    }
}

/// The message of an `error:` event: an error object, an object with a message, or text.
fn error_event(e: &str) -> String {
    match serde_json::from_str::<Value>(e) {
        Ok(v) if v.get("error").is_some() => error_message(&v["error"]),
        Ok(v) => error_message(&v),
        Err(_) => clip(e.trim()),
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() <= 300 {
        s.to_string()
    } else {
        s.chars().take(300).chain("…".chars()).collect()
    }
}

fn usage(u: &Value) -> Usage {
    let energy = u["joules"].as_f64().map(|joules| Energy {
        joules,
        source: match u["energy_source"].as_str() {
            Some("measured") => Source::Measured,
            Some("estimated") => Source::Estimated,
            _ => Source::Unknown,
        },
    });
    Usage {
        completion_tokens: u["completion_tokens"].as_u64(),
        energy,
    }
}

/// One event's data: a chat or completion chunk.
pub fn parse(data: &str) -> Parsed {
    let d = data.trim();
    if d == "[DONE]" {
        return Parsed::Done;
    }
    let v: Value = match serde_json::from_str(d) {
        Ok(v) => v,
        Err(e) => return Parsed::Bad(format!("a chunk is not JSON ({e}): {}", clip(d))),
    };
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        return Parsed::Error(error_message(e));
    }
    let mut c = Chunk::default();
    if let Some(choices) = v["choices"].as_array() {
        for ch in choices {
            let delta = &ch["delta"];
            c.text |= [&ch["text"], &delta["content"], &delta["reasoning_content"]]
                .iter()
                .any(|t| t.as_str().is_some_and(|s| !s.is_empty()));
            c.finished |= ch["finish_reason"].is_string();
        }
    }
    if v["usage"].is_object() {
        c.usage = Some(usage(&v["usage"]));
    }
    Parsed::Chunk(c)
}

/// One request's stream, fed as it arrives.
#[derive(Debug)]
pub struct Reader {
    parser: Parser,
    timeline: Timeline,
    usage: Option<Usage>,
    finished: bool,
    done: bool,
}

impl Reader {
    /// A stream whose request was sent at `sent`.
    pub fn new(sent: Instant) -> Self {
        Self {
            parser: Parser::default(),
            timeline: Timeline::new(sent),
            usage: None,
            finished: false,
            done: false,
        }
    }

    /// Chunks with output so far.
    pub fn chunks(&self) -> u64 {
        self.timeline.chunks()
    }

    /// Bytes that arrived at `at`; an error object in them fails the request.
    pub fn feed(&mut self, bytes: &[u8], at: Instant) -> Result<(), Failure> {
        let events = self.parser.push(bytes);
        self.events(events, at)
    }

    fn events(&mut self, events: Vec<Event>, at: Instant) -> Result<(), Failure> {
        for ev in events {
            let data = match ev {
                Event::Data(d) => d,
                Event::Error(e) => {
                    return Err(Failure::new(ErrorKind::StreamError, error_event(&e)));
                }
            };
            match parse(&data) {
                Parsed::Done => {
                    self.done = true;
                    self.timeline.end(at);
                }
                Parsed::Error(m) => return Err(Failure::new(ErrorKind::StreamError, m)),
                Parsed::Bad(m) => return Err(Failure::new(ErrorKind::BadResponse, m)),
                Parsed::Chunk(c) => {
                    if c.text {
                        self.timeline.token(at);
                    }
                    self.finished |= c.finished;
                    if c.usage.is_some() {
                        self.usage = c.usage;
                    }
                }
            }
        }
        Ok(())
    }

    /// The connection ended at `at`: the measurements, or why the stream is incomplete. A
    /// stream is complete with `[DONE]`, or with a finish reason.
    pub fn end(mut self, at: Instant) -> Result<Done, Failure> {
        let rest = self.parser.finish();
        self.events(rest, at)?;
        if !self.done && !self.finished {
            return Err(Failure::new(
                ErrorKind::StreamBroken,
                format!(
                    "the stream ended without a finish or [DONE] after {} chunks",
                    self.chunks()
                ),
            ));
        }
        self.timeline.end(at);
        let u = self.usage.unwrap_or(Usage {
            completion_tokens: None,
            energy: None,
        });
        Ok(self.timeline.done(u.completion_tokens, u.energy))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::Counted;

    /// Joule's gateway's stream of a two-token chat, with usage (as `response.rs` writes it).
    const JOULE: &str = concat!(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,",
        "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}],",
        "\"usage\":null}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}],",
        "\"usage\":null}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}],\"usage\":null}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,",
        "\"joules\":0.25,\"energy_source\":\"estimated\"}}\n\n",
        "data: [DONE]\n\n",
    );

    fn feed_in(pieces: &[&[u8]]) -> Result<Done, Failure> {
        let t0 = Instant::now();
        let mut r = Reader::new(t0);
        for (k, p) in pieces.iter().enumerate() {
            r.feed(p, t0 + Duration::from_millis(10 * (k as u64 + 1)))?;
        }
        r.end(t0 + Duration::from_secs(1))
    }

    #[test]
    fn a_joule_stream_gives_tokens_usage_and_joules_however_it_is_split() {
        let whole = JOULE.as_bytes();
        let d = feed_in(&[whole]).unwrap();
        assert_eq!(d.output_tokens, 2);
        assert_eq!(d.counted, Counted::Usage);
        assert_eq!(
            d.energy,
            Some(Energy {
                joules: 0.25,
                source: Source::Estimated
            })
        );
        assert_eq!(d.ttft, Some(Duration::from_millis(10)));
        // The end is [DONE], not the connection's close.
        assert_eq!(d.e2e, Duration::from_millis(10));
        // Split at every byte: the same counts (lines and UTF-8 broken across reads).
        for cut in 1..whole.len() {
            let d = feed_in(&[&whole[..cut], &whole[cut..]]).unwrap();
            assert_eq!((d.output_tokens, d.itl.len()), (2, 1), "cut at {cut}");
        }
        // One byte at a time, CRLF line ends.
        let crlf = JOULE.replace('\n', "\r\n");
        let bytes: Vec<&[u8]> = crlf.as_bytes().chunks(1).collect();
        let d = feed_in(&bytes).unwrap();
        assert_eq!(d.output_tokens, 2);
        assert_eq!(d.itl.len(), 1);
    }

    #[test]
    fn a_server_without_usage_or_energy_counts_chunks_and_knows_no_joules() {
        // llama-server's completion chunks: usage without joules.
        let s = concat!(
            "data: {\"choices\":[{\"text\":\"a\",\"index\":0,\"finish_reason\":null}]}\n\n",
            ": keep-alive\n\n",
            "data: {\"choices\":[{\"text\":\"b\",\"index\":0,\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"text\":\"\",\"index\":0,\"finish_reason\":\"length\"}],",
            "\"usage\":{\"completion_tokens\":2,\"prompt_tokens\":3}}\n\n",
            "data: [DONE]\n\n",
        );
        let d = feed_in(&[s.as_bytes()]).unwrap();
        assert_eq!(
            (d.output_tokens, d.counted, d.energy),
            (2, Counted::Usage, None)
        );
        // No usage at all: chunks with text are the count.
        let s = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: \
                 {\"choices\":[{\"delta\":{\"content\":\"y\"},\"finish_reason\":\"stop\"}]}\n\n";
        let d = feed_in(&[s.as_bytes()]).unwrap();
        assert_eq!((d.output_tokens, d.counted), (2, Counted::Chunks));
    }

    #[test]
    fn errors_mid_stream_and_streams_cut_short_fail_with_their_kind() {
        let s = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
            "data: {\"error\":{\"message\":\"the worker went away\",\"type\":\"server_error\"}}\n\n",
        );
        let e = feed_in(&[s.as_bytes()]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::StreamError);
        assert_eq!(e.message, "the worker went away");
        let e = feed_in(&[b"error: {\"message\":\"slot unavailable\"}\n\n"]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::StreamError);
        assert_eq!(e.message, "slot unavailable");
        let e =
            feed_in(&[b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n"]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::StreamBroken);
        assert!(e.message.contains("after 1 chunks"), "{}", e.message);
        let e = feed_in(&[b"data: {\"choi\n\n"]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadResponse);
        // The last event without its blank line still counts at the end.
        let d = feed_in(&[b"data: {\"choices\":[{\"text\":\"z\"}]}\n\ndata: [DONE]"]).unwrap();
        assert_eq!(d.output_tokens, 1);
    }

    #[test]
    fn multi_line_data_is_one_event_and_error_bodies_give_their_message() {
        let mut p = Parser::default();
        let ev = p.push(b"data: {\"a\":\ndata: 1}\n\n");
        assert_eq!(ev, vec![Event::Data("{\"a\":\n1}".into())]);
        assert_eq!(
            error_text("{\"error\":{\"message\":\"no such model\",\"code\":\"model_not_found\"}}"),
            "no such model"
        );
        assert_eq!(error_text(" plain text "), "plain text");
    }
}
