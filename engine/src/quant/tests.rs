//! Every dot product against the dequantized f32 dot, every SIMD level (and packed layout)
//! against scalar.

use super::*;
use crate::rng::Rng;
use crate::testkit::random_data;

const ALL: [DType; 8] = DType::ALL;

/// Every level this CPU runs, lowest first (scalar always).
fn levels() -> Vec<Kernels> {
    let v: Vec<Kernels> = Level::supported()
        .into_iter()
        .map(|l| Kernels::at(l).expect("a supported level"))
        .collect();
    eprintln!(
        "kernel levels tested: {:?}",
        v.iter().map(|k| k.level).collect::<Vec<_>>()
    );
    v
}

#[test]
fn an_unsupported_level_is_refused_naming_what_is_missing() {
    for l in Level::ALL {
        match Kernels::at(l) {
            Ok(k) => assert_eq!((k.simd, k.level), (l, l.name())),
            Err(e) => assert!(e.contains("this CPU lacks"), "{e}"),
        }
    }
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
                let scalar = one(Kernels::scalar().dot(dtype), &w);
                assert!(
                    (scalar - exact).abs() <= tol,
                    "scalar {dtype} n={n}: {scalar} vs exact {exact}"
                );
                let got = one(k.dot(dtype), &w);
                assert!(
                    (got - exact).abs() <= tol,
                    "{} {dtype} n={n}: {got} vs exact {exact}",
                    k.level
                );
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
fn int8_activations_sit_on_the_8_bit_grid_with_consistent_sums() {
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..128).map(|_| rng.symmetric(5.0)).collect();
    let mut q = QActs {
        bits: ActBits::Int8,
        ..QActs::default()
    };
    q.quantize(&x, 128);
    let a = q.row(&x, 0, 128);
    assert!(a.coarse && a.lo.iter().all(|&l| l == 0));
    for (i, v) in x.iter().enumerate() {
        let d = a.d[i / QK];
        // Half an 8-bit step (255 units), plus the 16-bit rounding before it.
        assert!(
            (d * a.q(i) as f32 - v).abs() <= d * 128.0 + 1e-6,
            "{i}: {v}"
        );
    }
    for b in 0..128 / QK {
        let half = |h: usize| (0..16).map(|i| a.q(b * QK + 16 * h + i)).sum::<i32>();
        assert_eq!((a.h16[2 * b], a.h16[2 * b + 1]), (half(0), half(1)));
        assert_eq!(a.s[b], a.d[b] * (half(0) + half(1)) as f32);
    }
    assert_eq!(ActBits::parse("int8"), Ok(ActBits::Int8));
    let e = ActBits::parse("fp8").unwrap_err();
    assert!(e.contains("int16 or int8"), "{e}");
}

/// Tiled kernels: every output against the exact dot, bit-identical to the portable definition
/// ([`tiled::portable`]) at every level, and bit-identical whatever else runs with it (alone or
/// with up to 11 other activation rows) and whichever lane or tile its row is in.
#[test]
fn tiled_kernels_match_the_exact_dot_and_never_depend_on_the_batch() {
    let mut tested = 0;
    for k in &levels() {
        for dtype in ALL {
            let portable = tiled::portable(dtype);
            let Some(tile) = k.tile(dtype).or(portable) else {
                continue;
            };
            let portable = portable.expect("every tiled type has a portable kernel");
            tested += 1;
            let mut rng = Rng::new(dtype as u64 + 11);
            let shapes = [
                (64usize, 1usize),
                (96, 5),
                (256, 3),
                (512, 17),
                (576, 16),
                (608, 21),
                (1536, 35),
            ];
            // Both activation precisions: at int8 the kernels skip the zero `lo` plane.
            let cases = shapes
                .into_iter()
                .flat_map(|(n, rows)| ActBits::ALL.map(|bits| (n, rows, bits)));
            for (n, rows, bits) in cases {
                if n % dtype.block_len() != 0 {
                    continue;
                }
                let mut stored: Vec<u8> = (0..rows)
                    .flat_map(|_| random_data(dtype, n, 1.0, &mut rng))
                    .collect();
                let rb = stored.len() / rows;
                // Row 0 at the format's largest magnitudes (nibbles of 15, 6-bit 63, 8-bit 127)
                // meets token 0 at the largest activations (hi = 127): the 16-bit partial sums
                // at their bound, where a saturating step would break bit identity.
                let extreme: Vec<f32> = (0..n)
                    .map(|i| if i % QK == 0 { -1.0001 } else { 1.0 })
                    .collect();
                stored[..rb].copy_from_slice(&quantize::quantize_row(dtype, &extreme));
                // The last row repeats the first: same value in another lane (and tile).
                stored.extend_from_within(..rb);
                let rows = rows + 1;
                let w = pack::tile_matrix(dtype, rows, rb, &stored);
                let trb = pack::tiled_row_bytes(dtype, n);
                assert_eq!(w.len(), rows.div_ceil(pack::TILE) * pack::TILE * trb);
                let tokens = 12;
                let mut x: Vec<f32> = (0..tokens * n).map(|_| rng.symmetric(3.0)).collect();
                x[..n].fill(3.0);
                let mut q = QActs {
                    bits,
                    ..QActs::default()
                };
                q.quantize(&x, n);
                let acts: Vec<ActRow<'_>> = (0..tokens)
                    .map(|t| q.row(&x[t * n..(t + 1) * n], t, n))
                    .collect();
                let run_with = |tile: TileFn, acts: &[ActRow<'_>]| {
                    let mut out = vec![f32::NAN; acts.len() * rows];
                    for r in (0..rows).step_by(pack::TILE) {
                        let bytes = &w[r * trb..(r + pack::TILE) * trb];
                        let lanes = pack::TILE.min(rows - r);
                        // SAFETY: out has tokens * rows values; row r + j < rows.
                        unsafe { tile(bytes, lanes, acts, out.as_mut_ptr().add(r), rows) };
                    }
                    out
                };
                let run = |acts: &[ActRow<'_>]| run_with(tile, acts);
                let all = run(&acts);
                let reference = run_with(portable, &acts);
                assert!(
                    all.iter()
                        .zip(&reference)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{} tiled {dtype} n={n} {bits}: not bit-identical to the portable definition",
                    k.level
                );
                let mut wf = vec![0f32; n];
                for r in 0..rows {
                    dequantize_row(dtype, &stored[r * rb..(r + 1) * rb], &mut wf);
                    for (t, xt) in x.chunks(n).enumerate() {
                        let exact: f64 = wf
                            .iter()
                            .zip(xt)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum();
                        let mag: f64 = wf
                            .iter()
                            .zip(xt)
                            .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
                            .sum();
                        let got = f64::from(all[t * rows + r]);
                        // int8: each activation moves by up to half an 8-bit step of its block.
                        let coarse = match bits {
                            ActBits::Int16 => 0.0,
                            ActBits::Int8 => {
                                let amax = xt.iter().fold(0f32, |m, v| m.max(v.abs()));
                                let wsum: f64 = wf.iter().map(|w| f64::from(w.abs())).sum();
                                wsum * f64::from(amax) / 254.0 * 1.01
                            }
                        };
                        assert!(
                            (got - exact).abs() <= 1e-4 * mag + 1e-5 + coarse,
                            "{} tiled {dtype} n={n} {bits} row {r} token {t}: {got} vs {exact}",
                            k.level
                        );
                    }
                }
                for t in 0..tokens {
                    assert_eq!(all[t * rows].to_bits(), all[t * rows + rows - 1].to_bits());
                    for len in [1, 3, 8] {
                        let start = t.min(tokens - len);
                        let part = run(&acts[start..start + len]);
                        let i = t - start;
                        assert!(
                            (0..rows).all(
                                |r| part[i * rows + r].to_bits() == all[t * rows + r].to_bits()
                            ),
                            "{} {dtype} n={n} {bits}: token {t} differs in a batch of {len}",
                            k.level
                        );
                    }
                }
            }
        }
    }
    // Five tiled types at every level (the portable kernel stands in at the scalar level).
    assert_eq!(tested, 5 * levels().len());
}
