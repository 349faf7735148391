//! One GPU opened for work: a context and stream on it, the kernels compiled for its
//! architecture and loaded, and a typed launcher per kernel. Buffers are cudarc `CudaSlice`s;
//! every launch checks its sizes on the host first, so a wrong size is an error, never an
//! out-of-bounds access on the device.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DriverError, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::{GpuInfo, KERNEL_SOURCE, arch, nvrtc, probe};
use crate::tensor::{DType, Weight};

/// Every kernel the module exports.
pub(crate) const KERNELS: &[&str] = &[
    "quantize_acts",
    "matvec_q8_0",
    "matvec_q4_0",
    "matvec_q4_1",
    "matvec_q4_k",
    "matvec_q6_k",
    "matvec_f32",
    "matvec_f16",
    "matvec_bf16",
    "rows_f32",
    "rows_f16",
    "rows_bf16",
    "rows_q8_0",
    "rows_q4_0",
    "rows_q4_1",
    "rows_q4_k",
    "rows_q6_k",
    "tile_f32",
    "tile_f16",
    "tile_bf16",
    "tile_q8_0",
    "tile_q4_0",
    "tile_q4_1",
    "tile_q4_k",
    "tile_q6_k",
    "split_acts",
    "add2",
    "rms_norm",
    "add",
    "add_bias",
    "swiglu",
    "rope",
    "kv_write_f32",
    "kv_write_f16",
    "attention_f32",
    "attention_f16",
];

pub(crate) fn err(e: DriverError) -> String {
    format!("CUDA: {e}")
}

pub(crate) fn suffix(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::Q8_0 => "q8_0",
        DType::Q4_0 => "q4_0",
        DType::Q4_1 => "q4_1",
        DType::Q4K => "q4_k",
        DType::Q6K => "q6_k",
    }
}

/// A weight matrix in device memory, in its stored (row-major, untiled) layout.
pub struct GpuWeight {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    data: CudaSlice<u8>,
}

impl GpuWeight {
    /// The stored bytes.
    pub fn data(&self) -> &CudaSlice<u8> {
        &self.data
    }
}

/// Activations quantized for the integer matrix-vector kernels: per value a hi and a lo byte,
/// per 32 values a scale and a scaled sum (see kernels/quant.cu).
pub struct GpuQActs {
    pub rows: usize,
    pub cols: usize,
    hi: CudaSlice<i8>,
    lo: CudaSlice<i8>,
    d: CudaSlice<f32>,
    s: CudaSlice<f32>,
}

/// Quantized activations copied back to the host: (hi, lo, d, s).
pub type HostQActs = (Vec<i8>, Vec<i8>, Vec<f32>, Vec<f32>);

/// One GPU with the kernels loaded.
pub struct Gpu {
    pub info: GpuInfo,
    pub compute: arch::ComputeType,
    stream: Arc<CudaStream>,
    fns: HashMap<&'static str, CudaFunction>,
    /// `None` when libcublas could not be loaded: every product then runs in the
    /// matrix-vector kernels.
    blas: Option<cudarc::cublas::CudaBlas>,
}

/// Launches an element-wise kernel: one thread per element; the kernel checks i < n and its
/// caller checked the buffers' sizes.
fn launch_elems(b: &mut cudarc::driver::LaunchArgs<'_>, n: usize) -> Result<(), String> {
    // SAFETY: see above.
    unsafe { b.launch(LaunchConfig::for_num_elems(n as u32)) }.map_err(err)?;
    Ok(())
}

pub(crate) fn grid(n: usize, per: usize) -> u32 {
    n.div_ceil(per) as u32
}

impl Gpu {
    /// Opens GPU `ordinal`, compiling the kernels for it (or reading them from `cache_dir`).
    pub fn open(ordinal: usize, cache_dir: &Path) -> Result<Self, String> {
        let gpus = probe().map_err(|e| e.to_string())?;
        let info = gpus.get(ordinal).cloned().ok_or_else(|| {
            let have: Vec<String> = gpus.iter().map(|g| format!("cuda:{}", g.ordinal)).collect();
            format!(
                "there is no GPU cuda:{ordinal}; this machine has {}",
                have.join(", ")
            )
        })?;
        let compute = arch::compute_type(info.compute_capability)?;
        let (cubin, _) =
            nvrtc::cached(KERNEL_SOURCE, &arch::sm(info.compute_capability), cache_dir)?;
        let ctx = CudaContext::new(ordinal).map_err(err)?;
        let module = ctx.load_module(Ptx::from_binary(cubin)).map_err(err)?;
        let mut fns = HashMap::new();
        for name in KERNELS {
            fns.insert(*name, module.load_function(name).map_err(err)?);
        }
        let stream = ctx.default_stream();
        let blas = super::gemm::open_blas(&stream)
            .inspect_err(
                |e| tracing::warn!(error = %e, "large batches will use the matrix-vector kernels"),
            )
            .ok();
        Ok(Self {
            info,
            compute,
            stream,
            fns,
            blas,
        })
    }

    /// (free, total) device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize), String> {
        self.stream.context().mem_get_info().map_err(err)
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// cuBLAS, when it could be loaded.
    pub fn blas(&self) -> Option<&cudarc::cublas::CudaBlas> {
        self.blas.as_ref()
    }

    pub(crate) fn f(&self, name: &str) -> &CudaFunction {
        &self.fns[name]
    }

    pub fn upload<T: cudarc::driver::DeviceRepr>(
        &self,
        host: &[T],
    ) -> Result<CudaSlice<T>, String> {
        self.stream.clone_htod(host).map_err(err)
    }

    pub fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(
        &self,
        dev: &CudaSlice<T>,
    ) -> Result<Vec<T>, String> {
        self.stream.clone_dtoh(dev).map_err(err)
    }

    pub fn zeros<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>, String> {
        self.stream.alloc_zeros(n.max(1)).map_err(err)
    }

    /// Copies a weight to the device (untiled: a CPU-tiled weight is refused).
    pub fn weight(&self, w: &Weight) -> Result<GpuWeight, String> {
        if w.packed {
            return Err("a weight tiled for the CPU kernels cannot go to the GPU".into());
        }
        Ok(GpuWeight {
            dtype: w.dtype,
            rows: w.rows,
            cols: w.cols,
            data: self.upload(w.data())?,
        })
    }

    /// Quantizes `rows` rows of `cols` activations (cols a multiple of 32).
    pub fn quantize(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<GpuQActs, String> {
        if !cols.is_multiple_of(32) || x.len() < rows * cols {
            return Err(format!(
                "cannot quantize {rows} x {cols} activations from {} values",
                x.len()
            ));
        }
        let nb = rows * cols / 32;
        let mut q = GpuQActs {
            rows,
            cols,
            hi: self.zeros(rows * cols)?,
            lo: self.zeros(rows * cols)?,
            d: self.zeros(nb)?,
            s: self.zeros(nb)?,
        };
        let cols_i = cols as i32;
        let cfg = LaunchConfig {
            grid_dim: ((cols / 32) as u32, rows as u32, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(self.f("quantize_acts"));
        b.arg(x)
            .arg(&cols_i)
            .arg(&mut q.hi)
            .arg(&mut q.lo)
            .arg(&mut q.d)
            .arg(&mut q.s);
        // SAFETY: grid covers rows x cols/32 blocks of 32 threads; every buffer holds what the
        // kernel indexes (checked above).
        unsafe { b.launch(cfg) }.map_err(err)?;
        Ok(q)
    }

    /// out[t * rows + r] = dot(w row r, activation row t) for t < ntok. Quantized weights take
    /// `q` (quantized activations), float weights take `x`.
    pub fn matvec(
        &self,
        w: &GpuWeight,
        x: &CudaSlice<f32>,
        q: Option<&GpuQActs>,
        ntok: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), String> {
        if out.len() < ntok * w.rows || x.len() < ntok * w.cols {
            return Err(format!(
                "matvec {}x{} over {ntok} tokens: buffers of {} and {} values are too small",
                w.rows,
                w.cols,
                x.len(),
                out.len()
            ));
        }
        let cfg = LaunchConfig {
            grid_dim: (grid(w.rows, 4), grid(ntok, 8), 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let (rows, cols, n) = (w.rows as i32, w.cols as i32, ntok as i32);
        let name = format!("matvec_{}", suffix(w.dtype));
        let mut b = self.stream.launch_builder(self.f(&name));
        b.arg(&w.data).arg(&rows).arg(&cols);
        match w.dtype {
            DType::F32 | DType::F16 | DType::BF16 => {
                b.arg(x);
            }
            _ => {
                let q = q.ok_or("a quantized weight needs quantized activations")?;
                if q.cols != w.cols || q.rows < ntok {
                    return Err(format!(
                        "activations of {} x {} for a weight of {} columns over {ntok} tokens",
                        q.rows, q.cols, w.cols
                    ));
                }
                b.arg(&q.hi).arg(&q.lo).arg(&q.d).arg(&q.s);
            }
        }
        b.arg(out).arg(&n);
        // SAFETY: one warp per weight row, up to 8 tokens per block row; sizes checked above.
        unsafe { b.launch(cfg) }.map_err(err)?;
        Ok(())
    }

    /// Rows `ids` of `w` expanded to floats into `out` (embedding lookup).
    pub fn rows(
        &self,
        w: &GpuWeight,
        ids: &CudaSlice<i32>,
        n: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), String> {
        if ids.len() < n || out.len() < n * w.cols {
            return Err("rows: buffers too small".into());
        }
        let row_bytes = (w.cols / w.dtype.block_len() * w.dtype.block_bytes()) as i64;
        let (first, n_i, cols) = (0i32, n as i32, w.cols as i32);
        let cfg = LaunchConfig {
            grid_dim: (grid(w.cols, 256), n as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let name = format!("rows_{}", suffix(w.dtype));
        let mut b = self.stream.launch_builder(self.f(&name));
        b.arg(&w.data)
            .arg(&row_bytes)
            .arg(ids)
            .arg(&first)
            .arg(&n_i)
            .arg(&cols)
            .arg(out);
        // SAFETY: ids are checked by the caller to be < w.rows; sizes checked above.
        unsafe { b.launch(cfg) }.map_err(err)?;
        Ok(())
    }

    /// out = rms_norm(x) * weight, per row of `dim`.
    pub fn rms_norm(
        &self,
        x: &CudaSlice<f32>,
        weight: &CudaSlice<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), String> {
        if x.len() < rows * dim || out.len() < rows * dim || weight.len() < dim {
            return Err("rms_norm: buffers too small".into());
        }
        let dim_i = dim as i32;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(self.f("rms_norm"));
        b.arg(x).arg(weight).arg(&eps).arg(&dim_i).arg(out);
        // SAFETY: one block per row; sizes checked above.
        unsafe { b.launch(cfg) }.map_err(err)?;
        Ok(())
    }

    /// x += y over the first `n` values.
    pub fn add(&self, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>, n: usize) -> Result<(), String> {
        if x.len() < n || y.len() < n {
            return Err("add: buffers too small".into());
        }
        let n64 = n as i64;
        let mut b = self.stream.launch_builder(self.f("add"));
        b.arg(x).arg(y).arg(&n64);
        launch_elems(&mut b, n)
    }

    /// Adds `bias` to every row of width `bias.len()` in the first `n` values of x.
    pub fn add_bias(
        &self,
        x: &mut CudaSlice<f32>,
        bias: &CudaSlice<f32>,
        n: usize,
    ) -> Result<(), String> {
        if x.len() < n || bias.is_empty() {
            return Err("add_bias: buffers too small".into());
        }
        let (w, n64) = (bias.len() as i32, n as i64);
        let mut b = self.stream.launch_builder(self.f("add_bias"));
        b.arg(x).arg(bias).arg(&w).arg(&n64);
        launch_elems(&mut b, n)
    }

    /// out = silu(gate) * up over the first `n` values.
    pub fn swiglu(
        &self,
        gate: &CudaSlice<f32>,
        up: &CudaSlice<f32>,
        n: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), String> {
        if gate.len() < n || up.len() < n || out.len() < n {
            return Err("swiglu: buffers too small".into());
        }
        let n64 = n as i64;
        let mut b = self.stream.launch_builder(self.f("swiglu"));
        b.arg(gate).arg(up).arg(out).arg(&n64);
        launch_elems(&mut b, n)
    }

    /// Rotates the first 2 * half dims of every head of `rows` rows. `table`: per row, `half`
    /// cosines then `half` sines. `halves`: NeoX layout (pairs i, i + half), else interleaved.
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        x: &mut CudaSlice<f32>,
        rows: usize,
        heads: usize,
        head_dim: usize,
        half: usize,
        table: &CudaSlice<f32>,
        halves: bool,
    ) -> Result<(), String> {
        if x.len() < rows * heads * head_dim || table.len() < rows * 2 * half || 2 * half > head_dim
        {
            return Err("rope: buffers too small".into());
        }
        let (h, hd, hf, layout) = (
            heads as i32,
            head_dim as i32,
            half as i32,
            i32::from(halves),
        );
        let cfg = LaunchConfig {
            grid_dim: (grid(heads * half, 128), rows as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(self.f("rope"));
        b.arg(x).arg(&h).arg(&hd).arg(&hf).arg(table).arg(&layout);
        // SAFETY: sizes checked above.
        unsafe { b.launch(cfg) }.map_err(err)?;
        Ok(())
    }
}

/// One layer's KV cache on the device, f16 or f32 (see kernels/attention.cu for the layout).
pub enum GpuKv {
    F32 {
        k: CudaSlice<f32>,
        v: CudaSlice<f32>,
    },
    F16 {
        k: CudaSlice<u16>,
        v: CudaSlice<u16>,
    },
}

/// The most floats attention's scores scratch takes (128 MiB).
pub const ATTENTION_SCRATCH: usize = 32 << 20;

/// The shape every KV launch needs.
#[derive(Debug, Clone, Copy)]
pub struct KvShape {
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub num_blocks: usize,
}

impl KvShape {
    pub fn elems(&self) -> usize {
        self.num_blocks * self.kv_heads * self.block_size * self.head_dim
    }
}

impl Gpu {
    pub fn kv(&self, shape: KvShape, f16: bool) -> Result<GpuKv, String> {
        let n = shape.elems();
        Ok(if f16 {
            GpuKv::F16 {
                k: self.zeros(n)?,
                v: self.zeros(n)?,
            }
        } else {
            GpuKv::F32 {
                k: self.zeros(n)?,
                v: self.zeros(n)?,
            }
        })
    }

    /// Writes `rows` new keys and values (rows of kv_heads * head_dim) into their slots.
    #[allow(clippy::too_many_arguments)]
    pub fn kv_write(
        &self,
        kv: &mut GpuKv,
        shape: KvShape,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        slot_block: &CudaSlice<i32>,
        slot_index: &CudaSlice<i32>,
        rows: usize,
    ) -> Result<(), String> {
        let kvd = shape.kv_heads * shape.head_dim;
        if k.len() < rows * kvd
            || v.len() < rows * kvd
            || slot_block.len() < rows
            || slot_index.len() < rows
        {
            return Err("kv_write: buffers too small".into());
        }
        let (kh, hd, bs) = (
            shape.kv_heads as i32,
            shape.head_dim as i32,
            shape.block_size as i32,
        );
        let cfg = LaunchConfig {
            grid_dim: (grid(kvd, 128), rows as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let name = if matches!(kv, GpuKv::F16 { .. }) {
            "kv_write_f16"
        } else {
            "kv_write_f32"
        };
        let mut b = self.stream.launch_builder(self.f(name));
        b.arg(k)
            .arg(v)
            .arg(slot_block)
            .arg(slot_index)
            .arg(&kh)
            .arg(&hd)
            .arg(&bs);
        match kv {
            GpuKv::F32 { k, v } => b.arg(k).arg(v),
            GpuKv::F16 { k, v } => b.arg(k).arg(v),
        };
        // SAFETY: the caller's slots lie inside the cache (block < num_blocks, slot < bs).
        unsafe { b.launch(cfg) }.map_err(err)?;
        Ok(())
    }

    /// Causal attention of `rows` new tokens over their sequences' cached keys and values.
    /// `tables`: every sequence's block table, concatenated; `table_start[t]` where row t's
    /// starts; `pos[t]` its position. `max_len`: the longest pos + 1. `scratch`: the most
    /// floats the scores may take ([`ATTENTION_SCRATCH`]; tests pass less).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        q: &CudaSlice<f32>,
        kv: &GpuKv,
        shape: KvShape,
        heads: usize,
        tables: &CudaSlice<i32>,
        table_start: &CudaSlice<i32>,
        pos: &CudaSlice<i32>,
        rows: usize,
        max_len: usize,
        out: &mut CudaSlice<f32>,
        scratch: usize,
    ) -> Result<(), String> {
        let qd = heads * shape.head_dim;
        if q.len() < rows * qd
            || out.len() < rows * qd
            || table_start.len() < rows
            || pos.len() < rows
            || !heads.is_multiple_of(shape.kv_heads)
        {
            return Err("attention: buffers too small or heads not a multiple of kv heads".into());
        }
        // The scores scratch holds max_len floats per (row, head); long prefill chunks run in
        // groups of rows so that it stays under `scratch` floats.
        let per = (scratch / (heads * max_len).max(1)).clamp(1, rows.max(1));
        let mut scores = self.zeros::<f32>(per * heads * max_len)?;
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        let (h, kh, hd, bs, ml) = (
            heads as i32,
            shape.kv_heads as i32,
            shape.head_dim as i32,
            shape.block_size as i32,
            max_len as i32,
        );
        let name = if matches!(kv, GpuKv::F16 { .. }) {
            "attention_f16"
        } else {
            "attention_f32"
        };
        for r0 in (0..rows).step_by(per) {
            let n = per.min(rows - r0);
            let cfg = LaunchConfig {
                grid_dim: (heads as u32, n as u32, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            let (q_rows, starts, positions) =
                (q.slice(r0 * qd..), table_start.slice(r0..), pos.slice(r0..));
            let mut o = out.slice_mut(r0 * qd..);
            let mut b = self.stream.launch_builder(self.f(name));
            b.arg(&q_rows);
            match kv {
                GpuKv::F32 { k, v } => b.arg(k).arg(v),
                GpuKv::F16 { k, v } => b.arg(k).arg(v),
            };
            b.arg(tables)
                .arg(&starts)
                .arg(&positions)
                .arg(&h)
                .arg(&kh)
                .arg(&hd)
                .arg(&bs)
                .arg(&scale)
                .arg(&ml)
                .arg(&mut scores)
                .arg(&mut o);
            // SAFETY: pos[t] < max_len and every table entry < num_blocks (the caller's block
            // tables come from the KV pool); rows r0..r0 + n exist in every buffer (sizes
            // checked above) and the scratch holds n * heads * max_len floats.
            unsafe { b.launch(cfg) }.map_err(err)?;
        }
        Ok(())
    }
}

impl Gpu {
    /// Quantized activations back on the host: (hi, lo, d, s).
    pub fn download_q(&self, q: &GpuQActs) -> Result<HostQActs, String> {
        Ok((
            self.download(&q.hi)?,
            self.download(&q.lo)?,
            self.download(&q.d)?,
            self.download(&q.s)?,
        ))
    }

    /// A layer's cache back on the host as little-endian bytes: (keys, values).
    pub fn download_kv(&self, kv: &GpuKv) -> Result<(Vec<u8>, Vec<u8>), String> {
        Ok(match kv {
            GpuKv::F32 { k, v } => (
                self.download(k)?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                self.download(v)?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
            GpuKv::F16 { k, v } => (
                self.download(k)?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                self.download(v)?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
        })
    }
}

impl Gpu {
    /// Copies `len` values from `src[from..]` to `dst[to..]` on the device.
    pub fn copy_rows(
        &self,
        src: &CudaSlice<f32>,
        from: usize,
        dst: &mut CudaSlice<f32>,
        to: usize,
        len: usize,
    ) -> Result<(), String> {
        if src.len() < from + len || dst.len() < to + len {
            return Err("copy_rows: out of range".into());
        }
        self.stream
            .memcpy_dtod(
                &src.slice(from..from + len),
                &mut dst.slice_mut(to..to + len),
            )
            .map_err(err)
    }
}

impl Gpu {
    /// Device-to-device copy bandwidth in bytes per second (bytes read plus bytes written),
    /// the median of `runs` copies of `bytes` after one warm-up.
    pub fn copy_bandwidth(&self, bytes: usize, runs: usize) -> Result<f64, String> {
        let src = self.zeros::<u8>(bytes)?;
        let mut dst = self.zeros::<u8>(bytes)?;
        let mut secs = Vec::with_capacity(runs);
        for i in 0..=runs {
            self.stream.synchronize().map_err(err)?;
            let t = std::time::Instant::now();
            self.stream.memcpy_dtod(&src, &mut dst).map_err(err)?;
            self.stream.synchronize().map_err(err)?;
            if i > 0 {
                secs.push(t.elapsed().as_secs_f64());
            }
        }
        secs.sort_by(f64::total_cmp);
        let median = secs.get(secs.len() / 2).copied().ok_or("no runs")?;
        Ok(2.0 * bytes as f64 / median)
    }
}
