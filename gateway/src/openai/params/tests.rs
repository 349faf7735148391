//! Bad input gets a 400 naming the parameter; good input becomes the job the engine expects.

use super::*;

fn chat_err(body: &str) -> (String, Option<String>) {
    match chat(body.as_bytes(), 64) {
        Err(Error::BadRequest { message, param }) => (message, param),
        other => panic!("{body}: expected a bad request, got {other:?}"),
    }
}

const OK: &str = r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]"#;

fn with(extra: &str) -> String {
    format!("{OK}, {extra}}}")
}

#[test]
fn a_plain_chat_becomes_a_job_with_the_default_budget() {
    let p = chat(format!("{OK}}}").as_bytes(), 64).unwrap();
    assert_eq!(p.job.model, "m");
    assert_eq!(p.job.sampling.max_tokens, Some(64));
    assert!(!p.stream && !p.include_usage);
    assert_eq!(p.logprobs, Logprobs::None);
    let Prompt::Chat(m) = &p.job.prompt else {
        panic!()
    };
    assert_eq!((m[0].role.as_str(), m[0].content.as_str()), ("user", "hi"));
}

#[test]
fn every_openai_sampling_field_is_carried_over() {
    let p = chat(
        with(
            r#""max_completion_tokens": 9, "temperature": 0.5, "top_p": 0.9, "seed": 42,
            "presence_penalty": 0.5, "frequency_penalty": -0.5, "stop": ["a", "b"],
            "logprobs": true, "top_logprobs": 3, "stream": true,
            "stream_options": {"include_usage": true}, "n": 1, "user": "u1",
            "top_k": 40, "min_p": 0.05, "store": false, "metadata": {"k": "v"}"#,
        )
        .as_bytes(),
        64,
    )
    .unwrap();
    let s = &p.job.sampling;
    assert_eq!(s.max_tokens, Some(9));
    assert_eq!(
        (s.temperature, s.top_p, s.seed),
        (Some(0.5), Some(0.9), Some(42))
    );
    assert_eq!(
        (s.presence_penalty, s.frequency_penalty),
        (Some(0.5), Some(-0.5))
    );
    assert_eq!(s.stop, ["a", "b"]);
    assert_eq!(
        (s.top_k, s.min_p, s.logprobs),
        (Some(40), Some(0.05), Some(3))
    );
    assert!(p.stream && p.include_usage);
    assert_eq!(p.logprobs, Logprobs::Chat(3));
    // `stop` as one string.
    let p = chat(with(r#""stop": "END""#).as_bytes(), 64).unwrap();
    assert_eq!(p.job.sampling.stop, ["END"]);
}

#[test]
fn bad_values_name_their_parameter() {
    let cases = [
        (r#""max_tokens": 0"#, "max_tokens"),
        (r#""max_tokens": -5"#, "max_tokens"),
        (r#""max_completion_tokens": 0"#, "max_completion_tokens"),
        (r#""temperature": 3"#, "temperature"),
        (r#""temperature": "hot""#, "temperature"),
        (r#""top_p": 1.5"#, "top_p"),
        (r#""presence_penalty": 9"#, "presence_penalty"),
        (r#""n": 2"#, "n"),
        (r#""n": 0"#, "n"),
        (r#""stop": 5"#, "stop"),
        (r#""stop": ["a","b","c","d","e"]"#, "stop"),
        (r#""logit_bias": {"1": 5}"#, "logit_bias"),
        (r#""top_logprobs": 3"#, "top_logprobs"),
        (r#""top_logprobs": 50, "logprobs": true"#, "top_logprobs"),
        (
            r#""stream_options": {"include_usage": true}"#,
            "stream_options",
        ),
        (r#""tools": [{"type": "function"}]"#, "tools"),
        (
            r#""response_format": {"type": "json_object"}"#,
            "response_format",
        ),
        (r#""frobnicate": 1"#, "frobnicate"),
        (r#""seed": 1.5"#, "seed"),
    ];
    for (extra, param) in cases {
        let (msg, p) = chat_err(&with(extra));
        assert_eq!(p.as_deref(), Some(param), "{extra}: {msg}");
        assert!(!msg.is_empty());
    }
}

#[test]
fn bad_messages_and_bodies_are_refused_clearly() {
    let (m, p) = chat_err(r#"{"model": "m", "messages": []}"#);
    assert_eq!(p.as_deref(), Some("messages"), "{m}");
    let (m, p) = chat_err(r#"{"model": "m"}"#);
    assert_eq!(p.as_deref(), Some("messages"), "{m}");
    let (m, p) = chat_err(r#"{"messages": [{"role": "user", "content": "x"}]}"#);
    assert_eq!(p.as_deref(), Some("model"), "{m}");
    let (m, p) = chat_err(r#"{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}"#);
    assert_eq!(p.as_deref(), Some("messages[0].role"), "{m}");
    let (m, p) = chat_err(
        r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}"#,
    );
    assert_eq!(p.as_deref(), Some("messages[0].content"), "{m}");
    let (m, p) =
        chat_err(r#"{"model": "m", "messages": [{"role": "user", "content": "x", "mood": 1}]}"#);
    assert!(
        p.as_deref().is_some_and(|p| p.contains("mood")),
        "{m} {p:?}"
    );
    let (m, p) = chat_err(r#"{"model": "m", "messages": [{"role": 1}]}"#);
    assert!(
        p.as_deref().is_some_and(|p| p.starts_with("messages[0]")),
        "{m} {p:?}"
    );
    // Not JSON at all; the wrong type at the top.
    let positional = format!(
        r#"["m", [{{"role": "user", "content": "hi"}}]{}]"#,
        ", null".repeat(36)
    );
    let (m, p) = chat_err(&positional);
    assert!(m.contains("object") && p.is_none(), "{m}");
    let (m, p) = chat_err(r#"{"model": "m", "messages": [["user", "hi"]]}"#);
    assert_eq!(p.as_deref(), Some("messages[0]"), "{m}");
    let (_, p) = chat_err(&with(r#""stream": true, "stream_options": [true]"#));
    assert_eq!(p.as_deref(), Some("stream_options"));
    for body in ["{not json", "[1, 2]", "", "null"] {
        let (m, _) = chat_err(body);
        assert!(!m.is_empty(), "{body}");
    }
    // Text parts are joined; a developer message is a system message.
    let p = chat(
        br#"{"model": "m", "messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}"#,
        8,
    )
    .unwrap();
    let Prompt::Chat(m) = &p.job.prompt else {
        panic!()
    };
    assert_eq!(
        (m[0].role.as_str(), m[1].content.as_str()),
        ("system", "ab")
    );
    assert!(p.job.prefix.is_some(), "the system prompt keys affinity");
}

#[test]
fn completions_take_text_or_token_ids() {
    let p = completion(
        br#"{"model": "m", "prompt": "Once", "max_tokens": 5, "logprobs": 2}"#,
        64,
    )
    .unwrap();
    assert_eq!(p.job.prompt, Prompt::Text("Once".into()));
    assert_eq!(p.logprobs, Logprobs::Completion(2));
    let p = completion(br#"{"model": "m", "prompt": [1, 2, 3]}"#, 64).unwrap();
    assert_eq!(p.job.prompt, Prompt::Ids(vec![1, 2, 3]));
    let p = completion(br#"{"model": "m", "prompt": ["one"]}"#, 64).unwrap();
    assert_eq!(p.job.prompt, Prompt::Text("one".into()));
    for (body, param) in [
        (r#"{"model": "m", "prompt": ""}"#, "prompt"),
        (r#"{"model": "m", "prompt": ["a", "b"]}"#, "prompt"),
        (r#"{"model": "m", "prompt": [1, -2]}"#, "prompt"),
        (r#"{"model": "m", "prompt": "x", "echo": true}"#, "echo"),
        (r#"{"model": "m", "prompt": "x", "best_of": 3}"#, "best_of"),
        (
            r#"{"model": "m", "prompt": "x", "logprobs": 99}"#,
            "logprobs",
        ),
        (
            r#"{"model": "m", "prompt": "x", "messages": []}"#,
            "messages",
        ),
        (r#"{"model": "", "prompt": "x"}"#, "model"),
    ] {
        match completion(body.as_bytes(), 8) {
            Err(Error::BadRequest { param: Some(p), .. }) => assert_eq!(p, param, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
}
