//! Every dot product against the dequantized f32 dot, every SIMD level (and packed layout)
//! against scalar.

use super::*;
use crate::rng::Rng;
use crate::testkit::random_data;

const ALL: [DType; 8] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q4K,
    DType::Q6K,
];

fn levels() -> Vec<Kernels> {
    let mut v = vec![Kernels::scalar(), *Kernels::detect()];
    #[cfg(target_arch = "x86_64")]
    v.extend(x86::kernels(false));
    v
}

#[test]
fn every_level_matches_the_f32_dot() {
    for k in &levels() {
        for dtype in ALL {
            let mut rng = Rng::new(dtype as u64 + 7);
            // Rows of 2, 3, 17, 18 and 19 blocks end in a packed pair and/or an odd stored block.
            for n in [64usize, 96, 256, 512, 544, 576, 608, 1536] {
                if n % dtype.block_len() != 0 {
                    continue;
                }
                let w = random_data(dtype, n, 1.0, &mut rng);
                let x: Vec<f32> = (0..n).map(|_| rng.symmetric(2.0)).collect();
                let mut q = QActs::default();
                q.quantize(&x, n);
                let a = q.row(&x, 0, n);
                let mut wf = vec![0f32; n];
                dequantize_row(dtype, &w, &mut wf);
                let exact: f64 = wf
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                let mag: f64 = wf
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
                    .sum();
                // 16-bit activations: ~1e-5 relative error per element; f32 accumulation.
                let tol = 1e-4 * mag + 1e-5;
                let one = |f: DotFn, w: &[u8]| {
                    let mut o = [0f32];
                    f(w, w.len(), a, &mut o);
                    f64::from(o[0])
                };
                let scalar = one(Kernels::scalar().dot(dtype, false), &w);
                assert!(
                    (scalar - exact).abs() <= tol,
                    "scalar {dtype} n={n}: {scalar} vs exact {exact}"
                );
                let got = one(k.dot(dtype, false), &w);
                assert!(
                    (got - exact).abs() <= tol,
                    "{} {dtype} n={n}: {got} vs exact {exact}",
                    k.level
                );
                if k.packs(dtype) {
                    let mut p = vec![0u8; w.len()];
                    pack::pack_row(dtype, &w, &mut p);
                    let got = one(k.dot(dtype, true), &p);
                    assert!(
                        (got - exact).abs() <= tol,
                        "{} packed {dtype} n={n}: {got} vs exact {exact}",
                        k.level
                    );
                }
            }
        }
    }
}

#[test]
fn activation_planes_round_trip_within_half_a_step() {
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..64).map(|_| rng.symmetric(5.0)).collect();
    let mut q = QActs::default();
    q.quantize(&x, 64);
    let a = q.row(&x, 0, 64);
    for (i, v) in x.iter().enumerate() {
        let d = a.d[i / QK];
        assert!((d * a.q(i) as f32 - v).abs() <= d * 0.5 + 1e-6);
        assert!(a.hi[i] != i8::MIN && a.lo[i] != i8::MIN);
    }
    let zero = vec![0f32; 32];
    q.quantize(&zero, 32);
    assert_eq!((q.d[0], q.s[0]), (0.0, 0.0));
}

#[test]
fn four_row_kernels_are_bit_identical_to_one_row_at_a_time() {
    for k in &levels() {
        for dtype in ALL {
            let Some(dot4) = k.dot4(dtype, true) else {
                continue;
            };
            let mut rng = Rng::new(dtype as u64 + 11);
            // Rows that end in a packed pair and/or an odd stored block.
            for n in [64usize, 96, 512, 544, 576, 608] {
                let rows = 5;
                let stored: Vec<u8> = (0..rows)
                    .flat_map(|_| random_data(dtype, n, 1.0, &mut rng))
                    .collect();
                let rb = stored.len() / rows;
                let mut w = vec![0u8; stored.len()];
                for (s, d) in stored.chunks(rb).zip(w.chunks_mut(rb)) {
                    pack::pack_row(dtype, s, d);
                }
                let x: Vec<f32> = (0..4 * n).map(|_| rng.symmetric(3.0)).collect();
                let mut q = QActs::default();
                q.quantize(&x, n);
                let acts: Vec<ActRow<'_>> = (0..4).map(|t| q.row(&x[t * n..], t, n)).collect();
                let mut four = vec![vec![0f32; rows]; 4];
                let [o0, o1, o2, o3] = &mut four[..] else {
                    unreachable!()
                };
                dot4(
                    &w,
                    rb,
                    [acts[0], acts[1], acts[2], acts[3]],
                    [o0, o1, o2, o3],
                );
                for (t, got) in four.iter().enumerate() {
                    let mut one = vec![0f32; rows];
                    k.dot(dtype, true)(&w, rb, acts[t], &mut one);
                    let same = got
                        .iter()
                        .zip(&one)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{} {dtype} n={n} row {t}: {got:?} vs {one:?}",
                        k.level
                    );
                }
            }
        }
    }
}
