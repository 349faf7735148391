//! Threaded products of stored weights with activations: `out[t][r] = dot(W[r], x[t])` for one
//! or several weights sharing the same input (Q/K/V, gate/up). Work is split over row ranges of
//! all weights at once so one parallel region covers the group; each task runs its block of rows
//! against every token, so the block is read from memory once per step and then hits the cache.
//! Tiled matrices (quantized ones, at every x86 level) run 16 rows against up to eight tokens
//! per pass, so a prompt chunk reads each weight block from memory once, not once per token.

use rayon::prelude::*;

use crate::quant::pack::TILE;
use crate::quant::{ActRow, Kernels, QActs, wants_q};
use crate::tensor::Weight;

/// `n` rows of activations of width `cols`, with their integer form when a weight needs it.
#[derive(Debug, Default)]
pub struct Acts {
    pub n: usize,
    pub cols: usize,
    pub f: Vec<f32>,
    pub q: QActs,
}

impl Acts {
    /// Takes `f` (`n * cols` values) and quantizes it if `need_q`.
    pub fn prepare(&mut self, n: usize, cols: usize, need_q: bool) {
        self.n = n;
        self.cols = cols;
        debug_assert_eq!(self.f.len(), n * cols);
        if need_q {
            self.q.quantize(&self.f, cols);
        } else {
            self.q.d.clear();
        }
    }

    fn row(&self, t: usize) -> ActRow<'_> {
        self.q
            .row(&self.f[t * self.cols..(t + 1) * self.cols], t, self.cols)
    }
}

/// Whether any of `ws` needs integer activations.
pub fn needs_q(ws: &[&Weight]) -> bool {
    ws.iter().any(|w| wants_q(w.dtype))
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint (token, row) cells of each output; see `matmul`.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `outs[i][t * ws[i].rows + r] = dot(ws[i] row r, x row t)` for every weight, row and token.
pub fn matmul(k: &Kernels, ws: &[&Weight], x: &Acts, outs: &mut [&mut [f32]]) {
    assert_eq!(ws.len(), outs.len());
    for (w, o) in ws.iter().zip(outs.iter()) {
        assert_eq!(w.cols, x.cols, "weight width and activation width differ");
        assert!(o.len() >= x.n * w.rows);
    }
    let ptrs: Vec<OutPtr> = outs.iter_mut().map(|o| OutPtr(o.as_mut_ptr())).collect();
    let total_rows: usize = ws.iter().map(|w| w.rows).sum();
    let threads = rayon::current_num_threads();
    // Enough tasks to balance, few enough that scheduling stays cheap; whole tiles.
    let chunk = (total_rows / (threads * 8)).clamp(TILE, 256) / TILE * TILE;
    let acts: Vec<ActRow<'_>> = (0..x.n).map(|t| x.row(t)).collect();
    let tasks: Vec<(usize, usize, usize)> = ws
        .iter()
        .enumerate()
        .flat_map(|(i, w)| {
            (0..w.rows)
                .step_by(chunk)
                .map(move |r| (i, r, (r + chunk).min(w.rows)))
        })
        .collect();
    tasks.par_iter().for_each(|&(i, r0, r1)| {
        let w = ws[i];
        if w.packed {
            let Some(tile) = k.tile(w.dtype) else {
                unreachable!("a matrix is tiled only for kernels that have tiled kernels")
            };
            let rb = w.layout_row_bytes();
            for r in (r0..r1).step_by(TILE) {
                let bytes = &w.data()[r * rb..(r + TILE) * rb];
                // SAFETY: rows r..r + lanes of every token lie inside `outs[i]` (checked above)
                // and belong to this task only.
                unsafe { tile(bytes, TILE.min(w.rows - r), &acts, ptrs[i].0.add(r), w.rows) };
            }
            return;
        }
        let rb = w.row_bytes();
        let dot = k.dot(w.dtype);
        let rows = &w.data()[r0 * rb..r1 * rb];
        for (t, a) in acts.iter().enumerate() {
            // SAFETY: row range r0..r1 of token t is written by this task only, and lies inside
            // `outs[i]` (checked above: len >= n * rows); distinct tokens are disjoint ranges.
            let out =
                unsafe { std::slice::from_raw_parts_mut(ptrs[i].0.add(t * w.rows + r0), r1 - r0) };
            dot(rows, rb, *a, out);
        }
    });
}
