use super::*;

fn logits() -> Vec<f32> {
    (0..50).map(|i| ((i * 37) % 50) as f32 / 10.0).collect()
}

fn sampler(p: SamplingParams) -> Sampler {
    Sampler::new(p, 7, &[]).expect("valid")
}

fn draws(p: &SamplingParams, seed: u64, n: usize) -> Vec<u32> {
    let mut s = Sampler::new(p.clone(), seed, &[]).expect("valid");
    (0..n).map(|_| s.sample(&logits()).token).collect()
}

#[test]
fn the_same_seed_gives_the_same_tokens_and_another_seed_others() {
    let p = SamplingParams {
        temperature: 1.0,
        top_p: 0.9,
        ..Default::default()
    };
    assert_eq!(draws(&p, 42, 30), draws(&p, 42, 30));
    assert_ne!(draws(&p, 42, 30), draws(&p, 43, 30));
}

#[test]
fn greedy_and_top_k_bound_the_choice() {
    let l = logits();
    let best = argmax(&l);
    assert_eq!(l[best as usize], 4.9);
    assert_eq!(sampler(SamplingParams::default()).sample(&l).token, best);
    let k1 = SamplingParams {
        temperature: 2.0,
        top_k: Some(1),
        ..Default::default()
    };
    assert_eq!(sampler(k1).sample(&l).token, best);
    let k3 = SamplingParams {
        temperature: 5.0,
        top_k: Some(3),
        ..Default::default()
    };
    let got = draws(&k3, 1, 300);
    assert!(got.iter().all(|&t| l[t as usize] >= 4.7));
    assert_eq!(
        got.iter().collect::<std::collections::HashSet<_>>().len(),
        3
    );
    assert_eq!(argmax(&[f32::NAN, 1.0, 3.0, 3.0]), 2);
}

#[test]
fn top_p_and_min_p_cut_the_tail() {
    // Token 0 holds ~88% of the mass, token 1 ~12%, the rest almost nothing.
    let mut l = vec![-20.0f32; 1000];
    l[0] = 4.0;
    l[1] = 2.0;
    let top_p = SamplingParams {
        temperature: 1.0,
        top_p: 0.95,
        ..Default::default()
    };
    let mut s = sampler(top_p);
    let got: Vec<u32> = (0..400).map(|_| s.sample(&l).token).collect();
    assert!(got.iter().all(|&t| t < 2) && got.contains(&1) && got.contains(&0));
    let top_p_small = SamplingParams {
        temperature: 1.0,
        top_p: 0.5,
        ..Default::default()
    };
    let mut s = sampler(top_p_small);
    assert!((0..100).all(|_| s.sample(&l).token == 0));
    let min_p = SamplingParams {
        temperature: 1.0,
        min_p: 0.2,
        ..Default::default()
    };
    let mut s = sampler(min_p);
    assert!((0..200).all(|_| s.sample(&l).token == 0));
}

#[test]
fn penalties_steer_away_from_repeats() {
    let l = vec![1.0f32, 0.9, 0.0];
    let mut plain = sampler(SamplingParams::default());
    assert_eq!((plain.sample(&l).token, plain.sample(&l).token), (0, 0));
    let presence = SamplingParams {
        presence_penalty: 0.5,
        ..Default::default()
    };
    let mut s = sampler(presence);
    assert_eq!((s.sample(&l).token, s.sample(&l).token), (0, 1));
    let freq = SamplingParams {
        frequency_penalty: 0.06,
        ..Default::default()
    };
    let mut s = sampler(freq);
    let got: Vec<u32> = (0..4).map(|_| s.sample(&l).token).collect();
    assert_eq!(got, [0, 0, 1, 0]);
    // Repetition penalty also counts the prompt.
    let rep = SamplingParams {
        repetition_penalty: 1.2,
        ..Default::default()
    };
    let mut s = Sampler::new(rep, 0, &[0]).expect("valid");
    assert_eq!(s.sample(&l).token, 1);
}

#[test]
fn logprobs_are_those_of_the_raw_distribution() {
    let l = vec![0.0f32, (2.0f32).ln(), (5.0f32).ln()];
    let p = SamplingParams {
        logprobs: Some(2),
        ..Default::default()
    };
    let got = sampler(p).sample(&l).logprobs.expect("asked for");
    assert_eq!(got.token, 2);
    assert!((got.logprob - (5.0f32 / 8.0).ln()).abs() < 1e-5);
    assert_eq!(got.top.iter().map(|t| t.0).collect::<Vec<_>>(), [2, 1]);
    assert!((got.top[1].1 - (2.0f32 / 8.0).ln()).abs() < 1e-5);
    assert!(
        sampler(SamplingParams::default())
            .sample(&l)
            .logprobs
            .is_none()
    );
}

#[test]
fn bad_parameters_are_refused_with_the_field_named() {
    let cases: Vec<(SamplingParams, &str)> = vec![
        (
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            "temperature",
        ),
        (
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            "temperature",
        ),
        (
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            "top_p",
        ),
        (
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            "top_p",
        ),
        (
            SamplingParams {
                top_k: Some(0),
                ..Default::default()
            },
            "top_k",
        ),
        (
            SamplingParams {
                min_p: -0.1,
                ..Default::default()
            },
            "min_p",
        ),
        (
            SamplingParams {
                repetition_penalty: 0.0,
                ..Default::default()
            },
            "repetition_penalty",
        ),
        (
            SamplingParams {
                presence_penalty: 3.0,
                ..Default::default()
            },
            "presence_penalty",
        ),
        (
            SamplingParams {
                frequency_penalty: f32::NAN,
                ..Default::default()
            },
            "frequency_penalty",
        ),
        (
            SamplingParams {
                max_tokens: 0,
                ..Default::default()
            },
            "max_tokens",
        ),
        (
            SamplingParams {
                stop: vec![String::new()],
                ..Default::default()
            },
            "stop",
        ),
        (
            SamplingParams {
                logprobs: Some(21),
                ..Default::default()
            },
            "logprobs",
        ),
    ];
    for (p, field) in cases {
        let err = Sampler::new(p, 0, &[]).expect_err(field).to_string();
        assert!(err.contains(field), "{err:?} does not name {field}");
    }
}
