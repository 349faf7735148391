//! Every kernel against the CPU backend, on a real GPU (`#[ignore = "needs an NVIDIA GPU"]`;
//! run them with `cargo test -p joule-engine --features cuda -- --ignored gpu_`). Tolerances:
//! exact where both sides do the same float operations in the same order (activation
//! quantization, row expansion, KV writes); otherwise relative 1e-4 of the row's magnitude,
//! the order of float sums being the only difference. Products through cuBLAS on weights
//! dequantized to f16 tiles: relative 2e-3 (each weight rounded to f16, 2^-11).

use cudarc::driver::CudaSlice;

use super::runtime::{Gpu, KvShape};
use crate::kv::{KvDType, KvLayout, KvStore};
use crate::matmul::{Acts, matmul, needs_q};
use crate::quant::{Kernels, QActs, dequantize_row};
use crate::rng::Rng;
use crate::tensor::{DType, Weight};
use crate::testkit::random_data;

const TYPES: [DType; 8] = DType::ALL;

fn gpu() -> Gpu {
    let dir = std::env::temp_dir().join("joule-kernel-cache");
    Gpu::open(0, &dir).unwrap_or_else(|e| panic!("{e}"))
}

fn floats(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.symmetric(scale)).collect()
}

fn close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mag = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * mag,
            "{what}[{i}]: GPU {g} vs CPU {w} (scale {mag}, tolerance {rel})"
        );
    }
}

/// A random weight on the host and its copy on the GPU.
fn weight_pair(
    g: &Gpu,
    dtype: DType,
    rows: usize,
    cols: usize,
    rng: &mut Rng,
) -> (Weight, super::runtime::GpuWeight) {
    let w = Weight::owned(dtype, rows, cols, random_data(dtype, rows * cols, 0.5, rng));
    let gw = g.weight(&w).unwrap();
    (w, gw)
}

fn up(g: &Gpu, v: &[f32]) -> CudaSlice<f32> {
    g.upload(v).unwrap()
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_quantized_activations_are_the_cpus_bit_for_bit() {
    let g = gpu();
    let mut rng = Rng::new(7);
    let (rows, cols) = (3, 512);
    let mut x = floats(&mut rng, rows * cols, 3.0);
    x[5] = 0.0;
    x[40..72].fill(0.0); // a block of zeros: scale 0
    let q = g.quantize(&up(&g, &x), rows, cols).unwrap();
    let (hi, lo, d, s) = g.download_q(&q).unwrap();
    let mut cpu = QActs::default();
    cpu.quantize(&x, cols);
    assert_eq!(hi, cpu.hi);
    assert_eq!(lo, cpu.lo);
    assert_eq!(d, cpu.d);
    assert_eq!(s, cpu.s);
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_matvec_matches_the_cpu_for_every_type_and_batch() {
    let g = gpu();
    let mut rng = Rng::new(11);
    let (rows, cols) = (72, 512);
    for dtype in TYPES {
        let (w, gw) = weight_pair(&g, dtype, rows, cols, &mut rng);
        for n in [1, 5, 11] {
            let x = floats(&mut rng, n * cols, 2.0);
            let mut acts = Acts {
                f: x.clone(),
                ..Default::default()
            };
            acts.prepare(n, cols, needs_q(&[&w]));
            let mut want = vec![0f32; n * rows];
            matmul(&Kernels::scalar(), &[&w], &acts, &mut [&mut want]);
            let gx = up(&g, &x);
            let q = g.quantize(&gx, n, cols).unwrap();
            let mut out = g.zeros::<f32>(n * rows).unwrap();
            g.matvec(&gw, &gx, Some(&q), n, &mut out).unwrap();
            close(
                &format!("{dtype:?} x {n}"),
                &g.download(&out).unwrap(),
                &want,
                1e-4,
            );
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_gemm_matches_the_cpu_for_every_type_in_whole_and_ragged_tiles() {
    let g = gpu();
    assert!(g.blas().is_some(), "cuBLAS did not load");
    let mut rng = Rng::new(12);
    let (rows, cols) = (200, 512);
    for dtype in TYPES {
        let (w, gw) = weight_pair(&g, dtype, rows, cols, &mut rng);
        let kind = super::gemm::Kind::for_weight(g.compute, dtype);
        // Weights rounded into a 16-bit tile (quantized ones, and BF16 on f16-only cards).
        let rounded = !kind.stored_as(dtype) && kind != super::gemm::Kind::F32;
        let tol = if rounded { 2e-3 } else { 1e-4 };
        for n in [1, 64, 129] {
            let x = floats(&mut rng, n * cols, 2.0);
            let mut want = vec![0f32; n * rows];
            let mut row = vec![0f32; cols];
            for r in 0..rows {
                dequantize_row(dtype, w.row(r), &mut row);
                for t in 0..n {
                    let xt = &x[t * cols..(t + 1) * cols];
                    want[t * rows + r] = row.iter().zip(xt).map(|(a, b)| a * b).sum();
                }
            }
            let gx = up(&g, &x);
            // One tile of every row, and tiles of 7 rows with a ragged last one.
            for tile in [super::gemm::TILE_ELEMS, 7 * cols] {
                let mut out = g.zeros::<f32>(n * rows).unwrap();
                g.gemm_tiled(&gw, &gx, n, &mut out, tile).unwrap();
                close(
                    &format!("{dtype:?} ({kind:?}) x {n}, tile {tile}"),
                    &g.download(&out).unwrap(),
                    &want,
                    tol,
                );
            }
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_rows_expand_exactly_like_the_cpu() {
    let g = gpu();
    let mut rng = Rng::new(13);
    let (rows, cols) = (40, 512);
    for dtype in TYPES {
        let w = Weight::owned(
            dtype,
            rows,
            cols,
            random_data(dtype, rows * cols, 1.0, &mut rng),
        );
        let ids = [3i32, 0, 39, 3];
        let mut out = g.zeros::<f32>(ids.len() * cols).unwrap();
        g.rows(
            &g.weight(&w).unwrap(),
            &g.upload(&ids).unwrap(),
            ids.len(),
            &mut out,
        )
        .unwrap();
        let mut want = vec![0f32; ids.len() * cols];
        for (i, &r) in ids.iter().enumerate() {
            dequantize_row(
                dtype,
                w.row(r as usize),
                &mut want[i * cols..(i + 1) * cols],
            );
        }
        assert_eq!(g.download(&out).unwrap(), want, "{dtype:?}");
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_norm_residual_bias_swiglu_and_both_rope_layouts_match() {
    let g = gpu();
    let mut rng = Rng::new(17);
    let (rows, dim) = (4, 576);
    let x = floats(&mut rng, rows * dim, 2.0);
    let w = floats(&mut rng, dim, 1.0);
    let mut out = g.zeros::<f32>(rows * dim).unwrap();
    g.rms_norm(&up(&g, &x), &up(&g, &w), 1e-5, rows, dim, &mut out)
        .unwrap();
    let mut want = vec![0f32; rows * dim];
    for r in 0..rows {
        let row = &x[r * dim..(r + 1) * dim];
        let s = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / dim as f32 + 1e-5).sqrt();
        for i in 0..dim {
            want[r * dim + i] = row[i] * s * w[i];
        }
    }
    close("rms_norm", &g.download(&out).unwrap(), &want, 1e-5);

    let y = floats(&mut rng, rows * dim, 1.0);
    let mut gx = up(&g, &x);
    g.add(&mut gx, &up(&g, &y), rows * dim).unwrap();
    let sum: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
    assert_eq!(g.download(&gx).unwrap(), sum, "add is exact");
    let bias = floats(&mut rng, dim, 1.0);
    g.add_bias(&mut gx, &up(&g, &bias), rows * dim).unwrap();
    let biased: Vec<f32> = sum
        .iter()
        .enumerate()
        .map(|(i, v)| v + bias[i % dim])
        .collect();
    assert_eq!(g.download(&gx).unwrap(), biased, "bias is exact");

    let mut sw = g.zeros::<f32>(rows * dim).unwrap();
    g.swiglu(&up(&g, &x), &up(&g, &y), rows * dim, &mut sw)
        .unwrap();
    let want: Vec<f32> = x
        .iter()
        .zip(&y)
        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
        .collect();
    close("swiglu", &g.download(&sw).unwrap(), &want, 1e-5);

    let (heads, hd, half) = (3, 64, 32);
    let table: Vec<f32> = (0..rows)
        .flat_map(|p| {
            let ang: Vec<f64> = (0..half)
                .map(|i| p as f64 * 10000f64.powf(-(i as f64) / half as f64))
                .collect();
            ang.iter()
                .map(|a| a.cos() as f32)
                .chain(ang.iter().map(|a| a.sin() as f32))
                .collect::<Vec<_>>()
        })
        .collect();
    for halves in [false, true] {
        let q = floats(&mut rng, rows * heads * hd, 1.0);
        let mut gq = up(&g, &q);
        g.rope(&mut gq, rows, heads, hd, half, &up(&g, &table), halves)
            .unwrap();
        let mut want = q.clone();
        for r in 0..rows {
            let (cos, sin) = table[r * 2 * half..(r + 1) * 2 * half].split_at(half);
            for h in 0..heads {
                let head = &mut want[(r * heads + h) * hd..][..hd];
                for i in 0..half {
                    let (a, b) = if halves {
                        (i, i + half)
                    } else {
                        (2 * i, 2 * i + 1)
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos[i] - x1 * sin[i];
                    head[b] = x0 * sin[i] + x1 * cos[i];
                }
            }
        }
        assert_eq!(
            g.download(&gq).unwrap(),
            want,
            "rope (halves: {halves}) is exact"
        );
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_kv_writes_land_where_the_cpu_store_puts_them_and_attention_matches() {
    let g = gpu();
    let mut rng = Rng::new(19);
    let shape = KvShape {
        kv_heads: 2,
        head_dim: 64,
        block_size: 16,
        num_blocks: 8,
    };
    let kvd = shape.kv_heads * shape.head_dim;
    let heads = 6;
    for f16 in [false, true] {
        // Two sequences: one decoding at position 20 (blocks 5, 2), one prefilling positions
        // 0..=9 (block 7), written in one step.
        let mut rows_pos: Vec<(usize, usize)> = (0..=20).map(|p| (0, p)).collect();
        rows_pos.extend((0..10).map(|p| (1, p)));
        let tables: [&[u32]; 2] = [&[5, 2], &[7]];
        let n = rows_pos.len();
        let k = floats(&mut rng, n * kvd, 1.0);
        let v = floats(&mut rng, n * kvd, 1.0);
        let slot_block: Vec<i32> = rows_pos
            .iter()
            .map(|&(s, p)| tables[s][p / 16] as i32)
            .collect();
        let slot_index: Vec<i32> = rows_pos.iter().map(|&(_, p)| (p % 16) as i32).collect();
        let mut kv = g.kv(shape, f16).unwrap();
        g.kv_write(
            &mut kv,
            shape,
            &up(&g, &k),
            &up(&g, &v),
            &g.upload(&slot_block).unwrap(),
            &g.upload(&slot_index).unwrap(),
            n,
        )
        .unwrap();

        let dtype = if f16 { KvDType::F16 } else { KvDType::F32 };
        let layout = KvLayout {
            layers: 1,
            kv_heads: 2,
            head_dim: 64,
            block_size: 16,
            dtype,
        };
        let mut store = KvStore::new(layout, shape.num_blocks);
        for (t, _) in rows_pos.iter().enumerate() {
            store.write(
                0,
                slot_block[t] as u32,
                slot_index[t] as usize,
                &k[t * kvd..(t + 1) * kvd],
                &v[t * kvd..(t + 1) * kvd],
            );
        }
        let (gk, gv) = g.download_kv(&kv).unwrap();
        let per = shape.block_size * shape.head_dim * dtype.bytes();
        for b in 0..shape.num_blocks as u32 {
            for h in 0..shape.kv_heads {
                let at = (b as usize * shape.kv_heads + h) * per;
                assert_eq!(
                    &gk[at..at + per],
                    store.keys(0, b, h),
                    "keys of block {b} head {h}"
                );
                assert_eq!(
                    &gv[at..at + per],
                    store.values(0, b, h, 16),
                    "values of block {b} head {h}"
                );
            }
        }

        // Attention of every row over its own sequence, against a direct computation from
        // what the CPU store holds.
        let q = floats(&mut rng, n * heads * 64, 1.0);
        let flat: Vec<i32> = tables
            .iter()
            .flat_map(|t| t.iter().map(|&b| b as i32))
            .collect();
        let start: Vec<i32> = rows_pos
            .iter()
            .map(|&(s, _)| if s == 0 { 0 } else { 2 })
            .collect();
        let pos: Vec<i32> = rows_pos.iter().map(|&(_, p)| p as i32).collect();
        // All rows in one launch, and in groups of 3 (a ragged last one) under a small scratch.
        let mut outs = Vec::new();
        for scratch in [super::runtime::ATTENTION_SCRATCH, 3 * heads * 21] {
            let mut out = g.zeros::<f32>(n * heads * 64).unwrap();
            g.attention(
                &up(&g, &q),
                &kv,
                shape,
                heads,
                &g.upload(&flat).unwrap(),
                &g.upload(&start).unwrap(),
                &g.upload(&pos).unwrap(),
                n,
                21,
                &mut out,
                scratch,
            )
            .unwrap();
            outs.push(g.download(&out).unwrap());
        }
        assert_eq!(outs[0], outs[1], "grouped rows compute the same");
        let elem = |bytes: &[u8], i: usize| -> f32 {
            if f16 {
                half::f16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32()
            } else {
                f32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap())
            }
        };
        let mut want = vec![0f32; n * heads * 64];
        for (t, &(s, p)) in rows_pos.iter().enumerate() {
            for h in 0..heads {
                let kvh = h / (heads / shape.kv_heads);
                let qh = &q[(t * heads + h) * 64..][..64];
                let scores: Vec<f32> = (0..=p)
                    .map(|j| {
                        let keys = store.keys(0, tables[s][j / 16], kvh);
                        (0..64).map(|d| qh[d] * elem(keys, d * 16 + j % 16)).sum()
                    })
                    .collect();
                let scale = 1.0 / 8.0;
                let m = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) * scale;
                let e: Vec<f32> = scores.iter().map(|x| (x * scale - m).exp()).collect();
                let sum: f32 = e.iter().sum();
                for d in 0..64 {
                    want[(t * heads + h) * 64 + d] = (0..=p)
                        .map(|j| {
                            e[j] / sum
                                * elem(
                                    store.values(0, tables[s][j / 16], kvh, 16),
                                    (j % 16) * 64 + d,
                                )
                        })
                        .sum();
                }
            }
        }
        close(
            &format!("attention (f16 cache: {f16})"),
            &outs[0],
            &want,
            1e-4,
        );
    }
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy tokens after `prompt` on the CPU backend, one sequence alone.
fn greedy_cpu(model: &crate::Model, prompt: &[u32], steps: usize) -> Vec<u32> {
    use crate::model::Logits;
    let mut cache = model.new_cache(prompt.len() + steps + 1);
    let mut logits = model.forward(prompt, &mut cache, Logits::Last).unwrap();
    let mut out = Vec::new();
    for _ in 0..steps {
        let t = argmax(&logits);
        out.push(t);
        logits = model.forward(&[t], &mut cache, Logits::Last).unwrap();
    }
    out
}

/// The default model on GPU 0 with an f32 KV cache of `blocks` blocks.
fn default_model_on_gpu(blocks: usize) -> super::forward::CudaModel {
    super::forward::CudaModel::load(
        &crate::testkit::default_model_path(),
        0,
        &std::env::temp_dir().join("joule-kernel-cache"),
        crate::kv::DEFAULT_BLOCK_SIZE,
        KvDType::F32,
        super::forward::KvSize::Blocks(blocks),
    )
    .unwrap()
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_prefill_through_cublas_and_through_the_matvec_kernels_agree() {
    use crate::kv::DEFAULT_BLOCK_SIZE;
    use crate::model::{Logits, SeqChunk};
    let mut gm = default_model_on_gpu(16);
    let prompt: Vec<u32> = (0..100).map(|i| (i * 37 + 11) % 2000).collect();
    let blocks: Vec<u32> = (0..prompt.len().div_ceil(DEFAULT_BLOCK_SIZE) as u32).collect();
    let mut logits = Vec::new();
    for rows in [None, Some(1)] {
        gm.set_gemm_rows(rows);
        let chunk = SeqChunk {
            tokens: &prompt,
            start: 0,
            blocks: &blocks,
            logits: Logits::Last,
        };
        logits.push(gm.forward_batch(&[chunk]).unwrap());
    }
    close(
        "last logits, cuBLAS vs matvec",
        &logits[1],
        &logits[0],
        2e-2,
    );
    assert_eq!(argmax(&logits[1]), argmax(&logits[0]));
}

/// Greedy tokens after each prompt on the GPU, every sequence in one batch per step.
fn greedy_gpu(
    gm: &mut super::forward::CudaModel,
    prompts: &[Vec<u32>],
    steps: usize,
) -> Vec<Vec<u32>> {
    use crate::model::{Logits, SeqChunk};
    let bs = gm.layout().block_size;
    let longest = prompts.iter().map(|p| p.len()).max().unwrap() + steps + 1;
    let per = longest.div_ceil(bs);
    let tables: Vec<Vec<u32>> = (0..prompts.len())
        .map(|i| ((i * per) as u32..((i + 1) * per) as u32).collect())
        .collect();
    let vocab = gm.config.vocab;
    let chunks: Vec<SeqChunk<'_>> = prompts
        .iter()
        .zip(&tables)
        .map(|(p, t)| SeqChunk {
            tokens: p,
            start: 0,
            blocks: t,
            logits: Logits::Last,
        })
        .collect();
    let mut logits = gm.forward_batch(&chunks).unwrap();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    for step in 0..steps {
        let next: Vec<[u32; 1]> = (0..prompts.len())
            .map(|i| [argmax(&logits[i * vocab..(i + 1) * vocab])])
            .collect();
        for (o, t) in out.iter_mut().zip(&next) {
            o.push(t[0]);
        }
        let chunks: Vec<SeqChunk<'_>> = next
            .iter()
            .zip(prompts)
            .zip(&tables)
            .map(|((t, p), b)| SeqChunk {
                tokens: t,
                start: p.len() + step,
                blocks: b,
                logits: Logits::Last,
            })
            .collect();
        logits = gm.forward_batch(&chunks).unwrap();
    }
    out
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_greedy_continuations_of_the_default_model_match_the_cpu_alone_and_in_a_batch_of_32() {
    use crate::gguf::GgufFile;
    use crate::tokenizer::Tokenizer;
    let path = crate::testkit::default_model_path();
    let file = GgufFile::open(&path).expect("the default model (deploy/fetch-default-model.sh)");
    let cpu = crate::Model::from_gguf(&file, &crate::LoadOptions::default()).unwrap();
    let tk = Tokenizer::from_gguf(&file).unwrap();
    let prompts: Vec<Vec<u32>> = [
        "The capital of France is",
        "def fibonacci(n):",
        "Once upon a time, in a small village by the sea,",
        "Water boils at a temperature of",
        "List three primary colors:",
    ]
    .iter()
    .map(|p| tk.encode(p).unwrap())
    .collect();
    const STEPS: usize = 32;
    let want: Vec<Vec<u32>> = prompts.iter().map(|p| greedy_cpu(&cpu, p, STEPS)).collect();
    let mut gm = default_model_on_gpu(32 * 8);
    for (i, p) in prompts.iter().enumerate() {
        let got = greedy_gpu(&mut gm, std::slice::from_ref(p), STEPS);
        assert_eq!(got[0], want[i], "prompt {i} alone");
    }
    let batch: Vec<Vec<u32>> = (0..32).map(|i| prompts[i % 5].clone()).collect();
    let got = greedy_gpu(&mut gm, &batch, STEPS);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &want[i % 5], "sequence {i} of 32");
    }
}
