//! Every dot product against the dequantized f32 dot, and every SIMD level against scalar.

use super::*;
use crate::rng::Rng;
use crate::testkit::random_data;

fn check(dtype: DType, k: &Kernels) {
    let mut rng = Rng::new(dtype as u64 + 7);
    for n in [256usize, 512, 1536] {
        let w = random_data(dtype, n, 1.0, &mut rng);
        let x: Vec<f32> = (0..n).map(|_| rng.symmetric(2.0)).collect();
        let mut q = vec![BlockQ8::default(); n / QK];
        quantize_row_q8(&x, &mut q);
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
        let got = f64::from(k.dot(dtype)(&w, ActRow { f: &x, q8: &q }));
        // int8 activations carry ~0.4% relative error per element; float weights are exact.
        let tol = if wants_q8(dtype) {
            0.01 * mag
        } else {
            1e-4 * mag
        } + 1e-4;
        assert!(
            (got - exact).abs() <= tol,
            "{} {dtype} n={n}: got {got}, want {exact} (tol {tol})",
            k.level
        );
        let scalar = f64::from(Kernels::scalar().dot(dtype)(&w, ActRow { f: &x, q8: &q }));
        assert!(
            (got - scalar).abs() <= 1e-4 * mag + 1e-4,
            "{} {dtype} n={n}: {got} vs scalar {scalar}",
            k.level
        );
    }
}

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

#[test]
fn every_level_matches_the_f32_dot() {
    let mut levels = vec![Kernels::scalar(), *Kernels::detect()];
    #[cfg(target_arch = "x86_64")]
    levels.extend(x86::kernels(false));
    for k in &levels {
        for t in ALL {
            check(t, k);
        }
    }
}

#[test]
fn q8_quantization_round_trips_within_half_a_step() {
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..64).map(|_| rng.symmetric(5.0)).collect();
    let mut q = vec![BlockQ8::default(); 2];
    quantize_row_q8(&x, &mut q);
    for (i, v) in x.iter().enumerate() {
        let b = &q[i / QK];
        assert!((b.d * f32::from(b.qs[i % QK]) - v).abs() <= b.d * 0.5 + 1e-6);
    }
    let zero = vec![0f32; 32];
    quantize_row_q8(&zero, &mut q[..1]);
    assert_eq!((q[0].d, q[0].s), (0.0, 0.0));
}
