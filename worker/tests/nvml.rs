//! The NVML power path on a real NVIDIA GPU: the worker opens every GPU as a sensor, reports
//! measured joules per request, and they add up to NVML's energy counter over the same
//! interval. Prints what NVML reads (run with `--nocapture`). The engine computes on the CPU
//! here; what is checked is the sensor and the attribution, not GPU compute.

mod common;

use std::time::{Duration, Instant};

use common::*;
use joule_proto::v1;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs an NVIDIA GPU"]
async fn nvml_joules_per_request_add_up_to_the_gpu_counter() {
    // A small random model (the default model does not travel to GPU machines without a
    // registry): the point is the power path.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, joule_engine::testkit::spm_vocab_gguf()).unwrap();
    let w = spawn(&[
        "--model",
        &format!("tiny={}", path.display()),
        "--power-sensor",
        "nvml",
        "--power-interval-ms",
        "50",
        "--threads",
        "4",
    ]);
    let mut c = w.ready().await;
    let st = stats(&mut c).await;
    let p = st.power.clone().unwrap();
    eprintln!(
        "NVML sensors {:?}: {:.1} W, {:.1} J since start",
        p.sensors, p.watts, p.joules
    );
    assert!(
        p.sensors.iter().all(|s| s.starts_with("nvml:")),
        "{:?}",
        p.sensors
    );
    assert_eq!(p.source, v1::EnergySource::Measured as i32);
    assert!(p.watts > 5.0, "an H100 idles above 5 W: {}", p.watts);

    // 32 closed-loop clients keep the engine busy for about 4 s (idle time is not charged to
    // requests, so the comparison is over busy time).
    let before = p.joules;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..32u32 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            let (mut joules, mut n) = (0.0, 0);
            while started.elapsed() < Duration::from_secs(4) {
                let r = v1::GenerateRequest {
                    model: "tiny".into(),
                    prompt: Some(v1::generate_request::Prompt::TokenIds(v1::TokenIds {
                        ids: (0..8).map(|j| 3 + (i * 7 + j + n) % 500).collect(),
                    })),
                    sampling: greedy(200),
                    ..Default::default()
                };
                let out = generate(&mut c, r).await.unwrap();
                assert!(out.error.is_none(), "{:?}", out.error);
                let u = out.finish.unwrap().usage.unwrap();
                assert_eq!(u.energy_source, v1::EnergySource::Measured as i32);
                joules += u.joules;
                n += 1;
            }
            (joules, n)
        }));
    }
    let (mut sum, mut requests) = (0.0, 0);
    for t in tasks {
        let (j, n) = t.await.unwrap();
        sum += j;
        requests += n;
    }
    let after = stats(&mut c).await;
    let total = after.power.clone().unwrap().joules - before;
    let err = (sum - total).abs() / total;
    eprintln!(
        "{requests} requests in {:.1}s: {sum:.1} J attributed, NVML {total:.1} J over the same \
         interval ({:.2}% apart); now {:.1} W",
        started.elapsed().as_secs_f64(),
        err * 100.0,
        after.power.unwrap().watts
    );
    for line in w
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with("joule_power_watts"))
    {
        eprintln!("{line}");
    }
    assert!(w.logged("NVML reading"), "the worker logs what NVML reads");
    assert!(err < 0.05, "attributed {sum} J vs NVML {total} J");
}
