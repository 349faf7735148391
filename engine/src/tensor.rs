//! Tensor element types as stored in model files, and a borrowed view of one stored tensor.
//! Owns block sizes and byte sizes per type; never does arithmetic on the data.

use std::fmt;
use std::sync::Arc;

/// Element types the engine reads. Discriminants are GGML's type ids as written in GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 8,
    Q4K = 12,
    Q6K = 14,
    BF16 = 30,
}

impl DType {
    /// Every type the engine reads.
    pub const ALL: [DType; 8] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q4K,
        DType::Q6K,
    ];

    /// Maps a GGML type id; `None` for types the engine does not implement.
    pub fn from_ggml(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            14 => Self::Q6K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// GGML's name for a type id, including the ones the engine does not implement.
    pub fn ggml_name(id: u32) -> &'static str {
        const NAMES: [&str; 31] = [
            "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
            "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
            "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
            "BF16",
        ];
        NAMES.get(id as usize).copied().unwrap_or("unknown")
    }

    /// Elements per block.
    pub const fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q8_0 => 32,
            Self::Q4K | Self::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q6K => 210,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::ggml_name(*self as u32))
    }
}

/// A stored 1-D or 2-D tensor: `rows` rows of `cols` elements (GGUF's ne0 is `cols`).
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

/// Bytes behind model data: a read-only memory map of a file, anonymous memory (tiled
/// matrices), or an owned buffer.
#[derive(Debug)]
pub enum Blob {
    Mapped(memmap2::Mmap),
    Anon(memmap2::MmapMut),
    Owned(Vec<u8>),
}

impl Blob {
    /// `len` zeroed bytes written by `fill`, in anonymous memory the kernel is asked to back
    /// with huge pages (fewer TLB misses while decode streams every matrix once per token); a
    /// plain buffer where that cannot be had.
    pub fn huge(len: usize, fill: impl FnOnce(&mut [u8])) -> Self {
        let map = (len > 0)
            .then(|| memmap2::MmapOptions::new().len(len).map_anon().ok())
            .flatten();
        let Some(mut m) = map else {
            let mut v = vec![0u8; len];
            fill(&mut v);
            return Blob::Owned(v);
        };
        #[cfg(target_os = "linux")]
        let _ = m.advise(memmap2::Advice::HugePage);
        fill(&mut m);
        Blob::Anon(m)
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Blob::Mapped(m) => m,
            Blob::Anon(m) => m,
            Blob::Owned(v) => v,
        }
    }
}

/// A stored weight matrix of `rows` rows of `cols` elements that owns (a share of) its bytes.
#[derive(Debug, Clone)]
pub struct Weight {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    /// Tiled by [`crate::quant::pack::tile_matrix`] for the SIMD kernels (16 rows interleaved,
    /// padded to whole tiles; single rows can no longer be read out).
    pub packed: bool,
    blob: Arc<Blob>,
    start: usize,
}

impl Weight {
    /// A weight whose data starts at `start` in `blob`; the caller checked the extent.
    pub fn mapped(dtype: DType, rows: usize, cols: usize, blob: Arc<Blob>, start: usize) -> Self {
        Self {
            dtype,
            rows,
            cols,
            packed: false,
            blob,
            start,
        }
    }

    pub fn owned(dtype: DType, rows: usize, cols: usize, bytes: Vec<u8>) -> Self {
        Self {
            dtype,
            rows,
            cols,
            packed: false,
            blob: Arc::new(Blob::Owned(bytes)),
            start: 0,
        }
    }

    pub fn row_bytes(&self) -> usize {
        self.cols / self.dtype.block_len() * self.dtype.block_bytes()
    }

    pub fn data(&self) -> &[u8] {
        &self.blob.as_slice()[self.start..self.start + self.nbytes()]
    }

    pub fn row(&self, r: usize) -> &[u8] {
        assert!(!self.packed, "rows of a tiled matrix are interleaved");
        let rb = self.row_bytes();
        &self.data()[r * rb..(r + 1) * rb]
    }

    /// This weight in the layout `k` computes fastest on (repacked into owned memory if needed).
    pub fn for_kernels(self, k: &crate::quant::Kernels) -> Self {
        use crate::quant::pack;
        if self.packed || k.tile(self.dtype).is_none() {
            return self;
        }
        let (rows, rb) = (self.rows, self.row_bytes());
        let len = pack::tiled_len(self.dtype, rows, rb);
        let blob = Blob::huge(len, |out| {
            pack::tile_into(self.dtype, rows, rb, self.data(), out)
        });
        Self {
            dtype: self.dtype,
            rows: self.rows,
            cols: self.cols,
            packed: true,
            blob: Arc::new(blob),
            start: 0,
        }
    }

    /// Bytes per row in this weight's layout: stored, or tiled (Q4_K's tiles carry unpacked
    /// scales).
    pub fn layout_row_bytes(&self) -> usize {
        if self.packed {
            crate::quant::pack::tiled_row_bytes(self.dtype, self.cols)
        } else {
            self.row_bytes()
        }
    }

    /// Total bytes (read once per token in decode); a tiled matrix counts its padding rows.
    pub fn nbytes(&self) -> usize {
        let rows = if self.packed {
            self.rows.next_multiple_of(crate::quant::pack::TILE)
        } else {
            self.rows
        };
        rows * self.layout_row_bytes()
    }
}
