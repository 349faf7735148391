//! The memory behind the KV cache: for every layer, keys and values of `num_blocks` blocks.
//! Values are laid out `[block][kv_head][slot][head_dim]` (one value row per slot, added into the
//! output a row at a time); keys are laid out `[block][kv_head][head_dim][slot]`, transposed, so
//! the score kernel computes a whole block's worth of query·key products lane-parallel with no
//! horizontal sums. Either way one head's block is one contiguous `block_size x head_dim` run.
//! Stored as f16 (half the memory and bandwidth) or f32 (exact, for reference checks).

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::model::Config;
use crate::tensor::DType;

/// Element type of the stored keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvDType {
    #[default]
    F16,
    F32,
}

impl KvDType {
    pub fn bytes(self) -> usize {
        match self {
            KvDType::F16 => 2,
            KvDType::F32 => 4,
        }
    }
    /// The weight type whose dot kernel reads this storage.
    pub fn dtype(self) -> DType {
        match self {
            KvDType::F16 => DType::F16,
            KvDType::F32 => DType::F32,
        }
    }
}

impl std::str::FromStr for KvDType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(Self::F16),
            "f32" => Ok(Self::F32),
            _ => Err(format!("KV dtype must be f16 or f32, got {s:?}")),
        }
    }
}

/// The shape of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub dtype: KvDType,
}

impl KvLayout {
    pub fn for_model(c: &Config, block_size: usize, dtype: KvDType) -> Self {
        Self {
            layers: c.n_layers,
            kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            block_size,
            dtype,
        }
    }
    /// Elements of K (or V) of one block in one layer.
    fn block_elems(&self) -> usize {
        self.kv_heads * self.block_size * self.head_dim
    }
    /// Bytes one block takes over all layers, keys and values.
    pub fn block_bytes(&self) -> usize {
        2 * self.layers * self.block_elems() * self.dtype.bytes()
    }
}

#[derive(Debug)]
enum Data {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Data {
    fn zeroed(dtype: KvDType, n: usize) -> Self {
        // Zeroed vectors come from calloc: pages are only committed once written.
        match dtype {
            KvDType::F16 => Data::F16(vec![f16::ZERO; n]),
            KvDType::F32 => Data::F32(vec![0.0; n]),
        }
    }
    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Data::F16(d) => d[at..at + src.len()].convert_from_f32_slice(src),
            Data::F32(d) => d[at..at + src.len()].copy_from_slice(src),
        }
    }
    /// Writes `src[i]` to element `at + i * stride`.
    fn write_strided(&mut self, at: usize, stride: usize, src: &[f32]) {
        match self {
            Data::F16(d) => {
                for (i, &x) in src.iter().enumerate() {
                    d[at + i * stride] = f16::from_f32(x);
                }
            }
            Data::F32(d) => {
                for (i, &x) in src.iter().enumerate() {
                    d[at + i * stride] = x;
                }
            }
        }
    }
    fn bytes(&self, at: usize, n: usize) -> &[u8] {
        match self {
            Data::F16(d) => {
                let s = &d[at..at + n];
                // SAFETY: any initialized memory is valid as bytes; the length is in bytes.
                unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), n * 2) }
            }
            Data::F32(d) => {
                let s = &d[at..at + n];
                // SAFETY: as above.
                unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), n * 4) }
            }
        }
    }
}

/// Keys and values of every block, for every layer.
#[derive(Debug)]
pub struct KvStore {
    layout: KvLayout,
    num_blocks: usize,
    k: Vec<Data>,
    v: Vec<Data>,
}

impl KvStore {
    pub fn new(layout: KvLayout, num_blocks: usize) -> Self {
        let n = num_blocks * layout.block_elems();
        Self {
            layout,
            num_blocks,
            k: (0..layout.layers)
                .map(|_| Data::zeroed(layout.dtype, n))
                .collect(),
            v: (0..layout.layers)
                .map(|_| Data::zeroed(layout.dtype, n))
                .collect(),
        }
    }

    pub fn layout(&self) -> &KvLayout {
        &self.layout
    }
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Where one head's part of `block` starts (in elements), for keys and values alike.
    fn at(&self, block: u32, head: usize) -> usize {
        let l = &self.layout;
        debug_assert!((block as usize) < self.num_blocks && head < l.kv_heads);
        (block as usize * l.kv_heads + head) * l.block_size * l.head_dim
    }

    /// Stores the keys and values (`kv_heads * head_dim` each) of one token.
    pub fn write(&mut self, layer: usize, block: u32, slot: usize, k: &[f32], v: &[f32]) {
        let (hd, bs) = (self.layout.head_dim, self.layout.block_size);
        assert!(slot < bs);
        for h in 0..self.layout.kv_heads {
            let at = self.at(block, h);
            self.k[layer].write_strided(at + slot, bs, &k[h * hd..(h + 1) * hd]);
            self.v[layer].write(at + slot * hd, &v[h * hd..(h + 1) * hd]);
        }
    }

    /// The keys of `block` for one head, as raw stored data transposed: element `d` of slot `s`
    /// is at index `d * block_size + s`. Slots not yet written hold stale data.
    pub fn keys(&self, layer: usize, block: u32, head: usize) -> &[u8] {
        let l = &self.layout;
        self.k[layer].bytes(self.at(block, head), l.block_size * l.head_dim)
    }

    /// The values of the first `slots` slots of `block` for one head, as raw stored rows.
    pub fn values(&self, layer: usize, block: u32, head: usize, slots: usize) -> &[u8] {
        assert!(slots <= self.layout.block_size);
        self.v[layer].bytes(self.at(block, head), slots * self.layout.head_dim)
    }
}
