//! The tiled kernels, written once over [`Isa`] and instantiated per x86 level. A pass runs up
//! to `Isa::MAXN` activation rows against the whole tile: each block's weights are decoded
//! into registers once and then dotted with every row of the pass. A 256-bit level runs the
//! tile's two halves (rows 0..8 and 8..16) one after the other inside the same block loop, so
//! the tile is still streamed from memory once.
//!
//! Where every row's `lo` plane is zero (int8 activations, [`ActRow::coarse`]) a pass skips it:
//! the same sums, half the products.
//!
//! Integer sums stay exact: without VNNI the `vpmaddubsw` pairs are summed in 16 bits only as
//! far as they cannot overflow (eight 4-bit weights' pairs, two 6-bit ones', one 8-bit one's).

use super::isa::{Avx2, Avx512, Isa, Vnni};
use super::{Q4_0, Q4_1, Q4K, Q6K, Q8_0, check, dtype_of};
use crate::quant::pack::{TILE, layout::*, tile_block_bytes};
use crate::quant::{ActRow, QK, TileFn};
use crate::tensor::DType;

macro_rules! level {
    ($name:ident, $isa:ty, $feat:literal) => {
        /// The tiled kernel for `dtype` at this level (the caller detected its features).
        pub(in crate::quant) fn $name(dtype: DType) -> Option<TileFn> {
            #[target_feature(enable = $feat)]
            unsafe fn entry<const T: u8>(
                tile: &[u8],
                lanes: usize,
                acts: &[ActRow<'_>],
                out: *mut f32,
                stride: usize,
            ) {
                // SAFETY: the features are enabled; see TileFn for `out`.
                unsafe { rows::<$isa, T>(tile, lanes, acts, out, stride) }
            }
            Some(match dtype {
                DType::Q4_0 => entry::<Q4_0>,
                DType::Q4_1 => entry::<Q4_1>,
                DType::Q8_0 => entry::<Q8_0>,
                DType::Q4K => entry::<Q4K>,
                DType::Q6K => entry::<Q6K>,
                _ => return None,
            })
        }
    };
}
level!(avx2, Avx2, "avx2,fma,f16c");
level!(avx512, Avx512, "avx2,fma,f16c,avx512f,avx512bw");
level!(vnni, Vnni, "avx2,fma,f16c,avx512f,avx512bw,avx512vnni");

#[inline(always)]
unsafe fn rows<S: Isa, const T: u8>(
    tile: &[u8],
    lanes: usize,
    acts: &[ActRow<'_>],
    out: *mut f32,
    stride: usize,
) {
    let nk = check(T, tile, lanes, acts);
    // SAFETY: as for `rows_at`.
    unsafe {
        if acts.iter().all(|a| a.coarse) {
            rows_at::<S, T, true>(tile, nk, lanes, acts, out, stride)
        } else {
            rows_at::<S, T, false>(tile, nk, lanes, acts, out, stride)
        }
    }
}

/// [`rows`] once checked; `C`: every row's `lo` plane is zero ([`ActRow::coarse`]) and is
/// skipped.
#[inline(always)]
unsafe fn rows_at<S: Isa, const T: u8, const C: bool>(
    tile: &[u8],
    nk: usize,
    lanes: usize,
    acts: &[ActRow<'_>],
    out: *mut f32,
    stride: usize,
) {
    let mut t = 0;
    while t < acts.len() {
        let a = &acts[t..];
        // SAFETY: lengths checked; the caller vouches for `out` (see TileFn).
        unsafe {
            let o = out.add(t * stride);
            let p = tile.as_ptr();
            // Only the first pass streams the tile from memory; later ones find it in cache.
            let f = t == 0;
            t += match a.len().min(S::MAXN) {
                1 => pass::<S, T, C, 1>(p, nk, lanes, a, o, stride, f),
                2 => pass::<S, T, C, 2>(p, nk, lanes, a, o, stride, f),
                3 => pass::<S, T, C, 3>(p, nk, lanes, a, o, stride, f),
                4 => pass::<S, T, C, 4>(p, nk, lanes, a, o, stride, f),
                5 => pass::<S, T, C, 5>(p, nk, lanes, a, o, stride, f),
                6 => pass::<S, T, C, 6>(p, nk, lanes, a, o, stride, f),
                7 => pass::<S, T, C, 7>(p, nk, lanes, a, o, stride, f),
                _ => pass::<S, T, C, 8>(p, nk, lanes, a, o, stride, f),
            };
        }
    }
}

/// The tile against the first `N` activation rows, prefetching ahead if `fetch`; returns `N`.
#[inline(always)]
unsafe fn pass<S: Isa, const T: u8, const C: bool, const N: usize>(
    tile: *const u8,
    nk: usize,
    lanes: usize,
    acts: &[ActRow<'_>],
    out: *mut f32,
    stride: usize,
    fetch: bool,
) -> usize {
    let tb = tile_block_bytes(dtype_of(T));
    let parts = TILE / S::L;
    let acts: [Act; N] = std::array::from_fn(|t| Act::of(&acts[t]));
    let ahead = prefetch_ahead();
    // SAFETY (all loads): tile-block k is tile[k * tb..][..tb], within the length checked by
    // the caller; part p reads its lanes' share of each array in it.
    unsafe {
        let mut acc = [[S::zero_f(); N]; 2];
        for k in 0..nk {
            let base = tile.add(k * tb);
            if fetch && ahead != 0 {
                prefetch(base.wrapping_add(ahead), tb);
            }
            for (p, acc) in acc.iter_mut().enumerate().take(parts) {
                block::<S, T, C, N>(base, p * S::L, k, &acts, acc);
            }
        }
        for (p, acc) in acc.iter().enumerate().take(parts) {
            let n = lanes.saturating_sub(p * S::L).min(S::L);
            if n == 0 {
                continue;
            }
            for (t, v) in acc.iter().enumerate() {
                S::store(out.add(t * stride + p * S::L), n, *v);
            }
        }
    }
    N
}

/// One activation row's arrays as raw pointers, their lengths checked by [`check`]: the block
/// loop reads them without bounds checks, which would cost a compare and branch per token and
/// block on the ports the vector work needs.
#[derive(Clone, Copy)]
struct Act {
    hi: *const i8,
    lo: *const i8,
    d: *const f32,
    s: *const f32,
    h16: *const i32,
}

impl Act {
    fn of(a: &ActRow<'_>) -> Self {
        Self {
            hi: a.hi.as_ptr(),
            lo: a.lo.as_ptr(),
            d: a.d.as_ptr(),
            s: a.s.as_ptr(),
            h16: a.h16.as_ptr(),
        }
    }
}

/// How far ahead of the block being computed its successors are asked for, in bytes: 4 KiB
/// on Intel, where it measured faster (Sapphire Rapids); none on AMD, whose hardware
/// prefetchers keep a tile stream fed by themselves and where the prefetch instructions only
/// took issue slots (Zen 3, AVX2: batch-1 decode of a 1B Q4_K_M model on 2 threads ran a
/// median 1.14x faster without them, alternating binaries in one run).
fn prefetch_ahead() -> usize {
    static AHEAD: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *AHEAD.get_or_init(|| if is_amd() { 0 } else { 4096 })
}

/// The CPU's vendor string is AMD's (or Hygon's, the same cores).
fn is_amd() -> bool {
    let r = std::arch::x86_64::__cpuid(0);
    let mut v = [0u8; 12];
    for (i, w) in [r.ebx, r.edx, r.ecx].into_iter().enumerate() {
        v[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    &v == b"AuthenticAMD" || &v == b"HygonGenuine"
}

/// Asks for the `len` bytes at `p` to be brought into the cache (a hint: it never faults, so
/// `p` may lie past the end of the tile).
#[inline(always)]
unsafe fn prefetch(p: *const u8, len: usize) {
    for off in (0..len).step_by(64) {
        // SAFETY: a prefetch is a hint that never faults, whatever the address.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(off).cast(),
            )
        };
    }
}

/// One tile-block (stored block `k` of 16 rows), lanes `l0..l0 + L`, against `N` rows.
#[inline(always)]
unsafe fn block<S: Isa, const T: u8, const C: bool, const N: usize>(
    base: *const u8,
    l0: usize,
    k: usize,
    acts: &[Act; N],
    acc: &mut [S::F; N],
) {
    // SAFETY (all activation reads): block indices stay below the block count `check` saw.
    unsafe {
        let d = S::f16s(base.add(2 * l0));
        match T {
            Q4_0 => {
                let w = group::<S>(base.add(Q4_0_Q + 4 * l0));
                for (acc, a) in acc.iter_mut().zip(acts) {
                    let sum = *a.h16.add(2 * k) + *a.h16.add(2 * k + 1);
                    let x = S::sub32(u4dot::<S, C>(&w, a, k), S::set1_32(8 * sum));
                    *acc = S::fma(S::cvt(x), S::mul(d, S::set1_f(*a.d.add(k))), *acc);
                }
            }
            Q4_1 => {
                let m = S::f16s(base.add(Q4_1_M + 2 * l0));
                let w = group::<S>(base.add(Q4_1_Q + 4 * l0));
                for (acc, a) in acc.iter_mut().zip(acts) {
                    let x = u4dot::<S, C>(&w, a, k);
                    *acc = S::fma(S::cvt(x), S::mul(d, S::set1_f(*a.d.add(k))), *acc);
                    *acc = S::fma(m, S::set1_f(*a.s.add(k)), *acc);
                }
            }
            Q8_0 => {
                let q = base.add(Q8_0_Q + 4 * l0);
                let mut w = [S::zero_i(); 8];
                for (c, w) in w.iter_mut().enumerate() {
                    *w = S::load(q.add(64 * c));
                }
                q8::<S, C, N>(&w, d, k, acts, acc);
            }
            Q4K => {
                let dmin = S::f16s(base.add(Q4K_DMIN + 2 * l0));
                for s in 0..8 {
                    let b = 8 * k + s;
                    let sc = S::mul(d, S::u8s(base.add(Q4K_SC + TILE * s + l0)));
                    let m = S::neg(S::mul(dmin, S::u8s(base.add(Q4K_MIN + TILE * s + l0))));
                    let w = group::<S>(base.add(Q4K_Q + GROUP * s + 4 * l0));
                    for (acc, a) in acc.iter_mut().zip(acts) {
                        let x = u4dot::<S, C>(&w, a, b);
                        *acc = S::fma(S::cvt(x), S::mul(sc, S::set1_f(*a.d.add(b))), *acc);
                        *acc = S::fma(m, S::set1_f(*a.s.add(b)), *acc);
                    }
                }
            }
            _ => {
                for s in 0..8 {
                    let b = 8 * k + s;
                    let sc0 = S::mul(d, S::i8s(base.add(Q6K_SC + TILE * 2 * s + l0)));
                    let sc1 = S::mul(d, S::i8s(base.add(Q6K_SC + TILE * (2 * s + 1) + l0)));
                    let sub = base.add(Q6K_Q + Q6K_SUB * s);
                    let mut w = group::<S>(sub.add(4 * l0));
                    let m30 = S::set1_8(0x30);
                    for h in 0..2 {
                        let hb = S::load(sub.add(GROUP + 64 * h + 4 * l0));
                        let up = [S::slli16(hb, 4), S::slli16(hb, 2), hb, S::srli16(hb, 2)];
                        for (i, v) in up.into_iter().enumerate() {
                            w[4 * h + i] = S::or(w[4 * h + i], S::and(v, m30));
                        }
                    }
                    for (acc, a) in acc.iter_mut().zip(acts) {
                        for h in 0..2 {
                            let at = QK * b + 16 * h;
                            let ws = &w[4 * h..4 * h + 4];
                            let x = planes::<S, C, 2>(ws, a, at);
                            let x = S::sub32(x, S::times32(S::bcast(a.h16.add(2 * b + h).cast())));
                            let sc = if h == 0 { sc0 } else { sc1 };
                            *acc = S::fma(S::cvt(x), S::mul(sc, S::set1_f(*a.d.add(b))), *acc);
                        }
                    }
                }
            }
        }
    }
}

/// A nibble group's 32 weights per lane: `w[c]` holds weights `4c..4c + 4`.
#[inline(always)]
unsafe fn group<S: Isa>(q: *const u8) -> [S::I; 8] {
    unsafe {
        let m4 = S::set1_8(0x0F);
        let mut w = [S::zero_i(); 8];
        for c in 0..4 {
            let v = S::load(q.add(64 * c));
            w[c] = S::and(v, m4);
            w[c + 4] = S::and(S::srli16(v, 4), m4);
        }
        w
    }
}

/// `sum(w * q)` of 4-bit weights against one activation block, exact.
#[inline(always)]
unsafe fn u4dot<S: Isa, const C: bool>(w: &[S::I; 8], a: &Act, b: usize) -> S::I {
    unsafe { planes::<S, C, 8>(w, a, QK * b) }
}

/// `255 * (w . hi) + (w . lo)` over the activation elements from `at`, exact; `C`: `lo` is
/// zero and not read. Without VNNI the factor 255 rides on the `vpmaddwd` that widens the hi
/// plane's 16-bit sums, so the two planes meet in one add.
#[inline(always)]
unsafe fn planes<S: Isa, const C: bool, const G: usize>(w: &[S::I], a: &Act, at: usize) -> S::I {
    unsafe {
        let (hi, lo) = (a.hi.add(at), a.lo.add(at));
        if S::VNNI {
            let z = S::zero_i();
            let l = if C { z } else { udot::<S, G>(w, lo, z) };
            return S::combine(udot::<S, G>(w, hi, z), l);
        }
        let h = udot::<S, G>(w, hi, S::set1_16(255));
        if C {
            return h;
        }
        S::add32(h, udot::<S, G>(w, lo, S::set1_16(1)))
    }
}

/// `sum over c of w[c] . a[4c..4c + 4]` per lane: unsigned weights, signed activations.
/// Without VNNI, `G` consecutive `vpmaddubsw` results are summed in 16 bits first, and the
/// 16-bit sums are widened times `m` (16-bit lanes; VNNI ignores it).
#[inline(always)]
unsafe fn udot<S: Isa, const G: usize>(w: &[S::I], a: *const i8, m: S::I) -> S::I {
    unsafe {
        let mut acc = S::zero_i();
        if S::VNNI {
            for (c, &w) in w.iter().enumerate() {
                acc = S::dpbusd(acc, w, S::bcast(a.add(4 * c)));
            }
            return acc;
        }
        for (g, ws) in w.chunks(G).enumerate() {
            let mut s = S::maddubs(ws[0], S::bcast(a.add(4 * G * g)));
            for (i, &w) in ws.iter().enumerate().skip(1) {
                s = S::add16(s, S::maddubs(w, S::bcast(a.add(4 * (G * g + i)))));
            }
            acc = S::add32(acc, S::madd(s, m));
        }
        acc
    }
}

/// Q8_0: signed weights. With VNNI they are offset to unsigned and the offset taken off as
/// `128 * sum(q)`; without, the sign moves onto the activations.
#[inline(always)]
unsafe fn q8<S: Isa, const C: bool, const N: usize>(
    w: &[S::I; 8],
    d: S::F,
    b: usize,
    acts: &[Act; N],
    acc: &mut [S::F; N],
) {
    unsafe {
        if S::VNNI {
            let flip = S::set1_8(i8::MIN);
            let mut u = [S::zero_i(); 8];
            for (u, &w) in u.iter_mut().zip(w) {
                *u = S::xor(w, flip);
            }
            for (acc, a) in acc.iter_mut().zip(acts) {
                let sum = *a.h16.add(2 * b) + *a.h16.add(2 * b + 1);
                let x = planes::<S, C, 1>(&u, a, QK * b);
                let x = S::sub32(x, S::set1_32(128 * sum));
                *acc = S::fma(S::cvt(x), S::mul(d, S::set1_f(*a.d.add(b))), *acc);
            }
            return;
        }
        let mut aw = [S::zero_i(); 8];
        for (aw, &w) in aw.iter_mut().zip(w) {
            *aw = S::abs8(w);
        }
        for (acc, a) in acc.iter_mut().zip(acts) {
            let mut x = sdot::<S>(w, &aw, a.hi.add(QK * b), S::set1_16(255));
            if !C {
                x = S::add32(x, sdot::<S>(w, &aw, a.lo.add(QK * b), S::set1_16(1)));
            }
            *acc = S::fma(S::cvt(x), S::mul(d, S::set1_f(*a.d.add(b))), *acc);
        }
    }
}

/// `m * sum(w * a)` of signed weights `w` (`aw` their magnitudes) without VNNI (`m` in every
/// 16-bit lane). A plain function,
/// not a closure: a closure would not inherit the caller's target features, and its
/// intrinsics would become calls.
#[inline(always)]
unsafe fn sdot<S: Isa>(w: &[S::I; 8], aw: &[S::I; 8], p: *const i8, m: S::I) -> S::I {
    unsafe {
        let mut x = S::zero_i();
        for c in 0..8 {
            let s = S::sign8(S::bcast(p.add(4 * c)), w[c]);
            x = S::add32(x, S::madd(S::maddubs(aw[c], s), m));
        }
        x
    }
}
