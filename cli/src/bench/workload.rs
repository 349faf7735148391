//! Workloads: request number `i` of a run, the same for every target and every run with the
//! same seed. `fixed` (a prompt of about N tokens, N words from a list of common words, each
//! request's own; M output tokens), `sharegpt` (lognormal input and output lengths shaped like
//! ShareGPT's: medians of 100 input and 200 output tokens, means near 165 and 300, clamped) and
//! a JSONL file (`{"prompt": "...", "max_tokens": N}` or `{"messages": [...], "max_tokens": N}`
//! a line, used in order and then again from the top).
//!
//! It owns the seeded generator ([`Rng`], SplitMix64, so a seed means the same on every
//! platform and version). It must never do I/O beyond reading the file once, and never depend
//! on time or on which thread asks.

use anyhow::{anyhow, bail};
use serde_json::{Value, json};

use super::{Message, Prompt, Request};

/// SplitMix64: small, fast, and fixed forever (a seed's workload must not change).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The generator of item `i` of stream `stream` (workloads and arrivals draw from
    /// different streams of one seed).
    pub fn for_index(seed: u64, stream: u64, i: u64) -> Self {
        let mut base = Self::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let k = base.next_u64();
        Self::new(k ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1] (never 0, so its logarithm is finite).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Common English words that most tokenizers keep whole (with their leading space): a prompt of
/// N of them is about N tokens.
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "it", "that", "was", "for", "on", "are", "with", "as",
    "his", "they", "be", "at", "one", "have", "this", "from", "by", "hot", "word", "but", "what",
    "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your",
    "how", "said", "an", "each", "she", "which", "do", "their", "time", "if", "will", "way",
    "about", "many", "then", "them", "would", "like", "so", "these", "her", "long", "make",
    "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go", "come", "did",
    "number", "sound", "no", "most", "people", "my", "over", "know", "water", "than", "call",
    "first", "who", "may", "down", "side", "been", "now", "find", "any", "new", "work", "part",
    "take", "get", "place", "made", "live", "where", "after", "back", "little", "only", "man",
    "year", "came", "show", "every", "good", "me", "give", "our", "under", "name", "very",
    "through", "just", "great", "think", "say", "help", "low", "line", "turn", "much", "before",
    "move", "right", "old", "too", "same", "tell", "does", "set", "three", "want", "air", "well",
    "also", "play", "small", "end", "put", "home", "read", "hand", "large", "add", "even", "land",
    "here", "must", "big", "high", "such", "why", "ask", "men", "change", "went", "light", "off",
    "need", "house", "try", "us", "again", "point", "world", "near", "build", "earth", "father",
];

/// A prompt of `n` words drawn by `rng`.
fn words(rng: &mut Rng, n: u32) -> String {
    let mut s = String::with_capacity(n as usize * 6);
    for k in 0..n {
        if k > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len())]);
    }
    s
}

/// `median · e^(sigma · z)`, rounded and clamped to `lo..=hi`.
fn lognormal(rng: &mut Rng, median: f64, sigma: f64, lo: u32, hi: u32) -> u32 {
    let x = (median * (sigma * rng.normal()).exp()).round();
    (x.min(f64::from(u32::MAX)) as u32).clamp(lo, hi.max(lo))
}

/// ShareGPT-shaped lengths: lognormal medians and spreads (see the module's doc).
const SHAREGPT_INPUT: (f64, f64) = (100.0, 1.0);
const SHAREGPT_OUTPUT: (f64, f64) = (200.0, 0.9);

/// A run's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    Fixed {
        input_tokens: u32,
        output_tokens: u32,
        seed: u64,
    },
    ShareGpt {
        seed: u64,
        max_input: u32,
        max_output: u32,
    },
    File {
        path: String,
        requests: Vec<Request>,
    },
}

impl Workload {
    /// Request number `i` (a file's requests repeat from the top).
    pub fn request(&self, i: u64) -> Request {
        match self {
            Self::Fixed {
                input_tokens,
                output_tokens,
                seed,
            } => {
                let mut rng = Rng::for_index(*seed, 1, i);
                Request {
                    prompt: Prompt::Text(words(&mut rng, *input_tokens)),
                    max_tokens: *output_tokens,
                }
            }
            Self::ShareGpt {
                seed,
                max_input,
                max_output,
            } => {
                let mut rng = Rng::for_index(*seed, 2, i);
                let (mi, si) = SHAREGPT_INPUT;
                let (mo, so) = SHAREGPT_OUTPUT;
                let input = lognormal(&mut rng, mi, si, 4, *max_input);
                let output = lognormal(&mut rng, mo, so, 1, *max_output);
                Request {
                    prompt: Prompt::Text(words(&mut rng, input)),
                    max_tokens: output,
                }
            }
            Self::File { requests, .. } => {
                requests[(i % requests.len().max(1) as u64) as usize].clone()
            }
        }
    }

    /// What the report says about it.
    pub fn describe(&self) -> Value {
        match self {
            Self::Fixed {
                input_tokens,
                output_tokens,
                seed,
            } => json!({
                "kind": "fixed",
                "input_tokens_about": input_tokens,
                "output_tokens": output_tokens,
                "seed": seed,
            }),
            Self::ShareGpt {
                seed,
                max_input,
                max_output,
            } => json!({
                "kind": "sharegpt",
                "input_tokens_median": SHAREGPT_INPUT.0,
                "output_tokens_median": SHAREGPT_OUTPUT.0,
                "max_input_tokens": max_input,
                "max_output_tokens": max_output,
                "seed": seed,
            }),
            Self::File { path, requests } => json!({
                "kind": "file",
                "path": path,
                "lines": requests.len(),
            }),
        }
    }
}

/// The workload in a JSONL file; `default_max` for lines without `max_tokens`. Errors name the
/// file and the line.
pub fn from_file(path: &str, default_max: u32) -> anyhow::Result<Workload> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow!("--workload {path}: not fixed or sharegpt, and cannot read it as a file: {e}")
    })?;
    Ok(Workload::File {
        path: path.to_string(),
        requests: parse_lines(path, &text, default_max)?,
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The requests of a JSONL text (blank lines skipped).
pub fn parse_lines(path: &str, text: &str, default_max: u32) -> anyhow::Result<Vec<Request>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let ln = n + 1;
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(l).map_err(|e| anyhow!("{path}:{ln}: not JSON: {e}"))?;
        let Some(o) = v.as_object() else {
            bail!(
                "{path}:{ln}: a line must be a JSON object, not {}",
                kind(&v)
            );
        };
        let max_tokens = match o.get("max_tokens") {
            None | Some(Value::Null) => default_max,
            Some(x) => x
                .as_u64()
                .filter(|m| (1..=u64::from(u32::MAX)).contains(m))
                .ok_or_else(|| {
                    anyhow!("{path}:{ln}: max_tokens must be an integer >= 1, not {x}")
                })? as u32,
        };
        let prompt = match (o.get("prompt"), o.get("messages")) {
            (Some(Value::String(p)), None) => Prompt::Text(p.clone()),
            (None, Some(Value::Array(ms))) => Prompt::Chat(messages(path, ln, ms)?),
            (Some(_), Some(_)) => {
                bail!("{path}:{ln}: has both \"prompt\" and \"messages\"; give one")
            }
            (Some(p), None) => {
                bail!("{path}:{ln}: \"prompt\" must be a string, not {}", kind(p))
            }
            (None, Some(m)) => bail!(
                "{path}:{ln}: \"messages\" must be an array of {{\"role\", \"content\"}}, not {}",
                kind(m)
            ),
            (None, None) => bail!(
                "{path}:{ln}: needs \"prompt\" (a string) or \"messages\" (an array of \
                 {{\"role\", \"content\"}})"
            ),
        };
        out.push(Request { prompt, max_tokens });
    }
    if out.is_empty() {
        bail!("--workload {path}: no requests in it (one JSON object a line)");
    }
    Ok(out)
}

fn messages(path: &str, ln: usize, ms: &[Value]) -> anyhow::Result<Vec<Message>> {
    if ms.is_empty() {
        bail!("{path}:{ln}: \"messages\" is empty");
    }
    ms.iter()
        .enumerate()
        .map(|(k, m)| {
            let role = m["role"].as_str();
            let content = m["content"].as_str();
            match (role, content) {
                (Some(r), Some(c)) => Ok(Message {
                    role: r.to_string(),
                    content: c.to_string(),
                }),
                _ => Err(anyhow!(
                    "{path}:{ln}: messages[{k}] needs \"role\" and \"content\", both strings"
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(w: &Workload, n: u64) -> Vec<Request> {
        (0..n).map(|i| w.request(i)).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_requests_and_another_seed_others() {
        let fixed = |seed| Workload::Fixed {
            input_tokens: 50,
            output_tokens: 7,
            seed,
        };
        assert_eq!(list(&fixed(1), 20), list(&fixed(1), 20));
        assert_ne!(list(&fixed(1), 20), list(&fixed(2), 20));
        // Asking out of order (as threads do) changes nothing.
        let w = fixed(3);
        assert_eq!(w.request(17), list(&w, 18)[17]);
        // Each request has its own prompt (no prefix cache can serve them all), of N words.
        let reqs = list(&w, 10);
        for r in &reqs {
            let Prompt::Text(t) = &r.prompt else {
                panic!("a fixed prompt is text")
            };
            assert_eq!(t.split(' ').count(), 50);
            assert_eq!(r.max_tokens, 7);
        }
        assert_ne!(reqs[0].prompt, reqs[1].prompt);

        let share = |seed| Workload::ShareGpt {
            seed,
            max_input: 1024,
            max_output: 512,
        };
        assert_eq!(list(&share(9), 50), list(&share(9), 50));
        assert_ne!(list(&share(9), 50), list(&share(10), 50));
    }

    #[test]
    fn sharegpt_lengths_have_sharegpt_medians_and_stay_within_the_clamps() {
        let w = Workload::ShareGpt {
            seed: 0,
            max_input: 1024,
            max_output: 512,
        };
        let mut ins = Vec::new();
        let mut outs = Vec::new();
        for r in list(&w, 2000) {
            let Prompt::Text(t) = &r.prompt else {
                panic!("text")
            };
            ins.push(t.split(' ').count() as u32);
            outs.push(r.max_tokens);
        }
        assert!(ins.iter().all(|&n| (4..=1024).contains(&n)));
        assert!(outs.iter().all(|&n| (1..=512).contains(&n)));
        ins.sort_unstable();
        outs.sort_unstable();
        let (mi, mo) = (ins[1000], outs[1000]);
        assert!((80..=125).contains(&mi), "input median {mi}");
        assert!((165..=245).contains(&mo), "output median {mo}");
        // Spread: lognormal, not constant.
        assert!(
            ins[100] < mi / 2 && ins[1900] > mi * 2,
            "{} {}",
            ins[100],
            ins[1900]
        );
    }

    #[test]
    fn a_file_gives_prompts_and_chats_in_order_and_bad_lines_name_file_and_line() {
        let text = "{\"prompt\": \"hi\", \"max_tokens\": 5}\n\n{\"messages\": [{\"role\": \
                    \"user\", \"content\": \"yo\"}]}\n";
        let r = parse_lines("w.jsonl", text, 9).unwrap();
        assert_eq!(
            r,
            vec![
                Request {
                    prompt: Prompt::Text("hi".into()),
                    max_tokens: 5
                },
                Request {
                    prompt: Prompt::Chat(vec![Message {
                        role: "user".into(),
                        content: "yo".into()
                    }]),
                    max_tokens: 9
                },
            ]
        );
        let w = Workload::File {
            path: "w.jsonl".into(),
            requests: r.clone(),
        };
        assert_eq!(w.request(2), r[0]);
        for (bad, want) in [
            ("{\"prompt\": \"a\"}\nnot json\n", "w.jsonl:2: not JSON"),
            ("{\"prompt\": 3}", "w.jsonl:1: \"prompt\" must be a string"),
            (
                "{\"prompt\": \"a\", \"max_tokens\": 0}",
                "w.jsonl:1: max_tokens",
            ),
            ("{\"max_tokens\": 4}", "w.jsonl:1: needs \"prompt\""),
            ("[1]", "w.jsonl:1: a line must be a JSON object"),
            (
                "\n{\"messages\": [{\"role\": \"user\"}]}",
                "w.jsonl:2: messages[0]",
            ),
            ("\n\n", "no requests"),
        ] {
            let e = parse_lines("w.jsonl", bad, 9).unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        let e = from_file("/nonexistent/w.jsonl", 9)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--workload /nonexistent/w.jsonl"), "{e}");
    }

    #[test]
    fn the_generator_is_fixed_forever() {
        // SplitMix64's published first output for seed 0.
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut r = Rng::new(5);
        for _ in 0..1000 {
            let u = r.unit();
            assert!(u > 0.0 && u <= 1.0);
        }
    }
}
