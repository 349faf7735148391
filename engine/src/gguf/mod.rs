//! GGUF model files (versions 2 and 3): the header, metadata of every value type, tensor infos,
//! alignment, and the memory-mapped tensor data. Parsing works on a byte slice so it can be
//! fuzzed; every size and offset is checked against the file before it is used, so malformed
//! input gives an [`EngineError`] naming the field, never a panic or a huge allocation.
//! [`write`] produces GGUF files (tests and tools write small models with it).

mod parse;
pub mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::tensor::{Blob, DType, TensorView, Weight};

pub use parse::parse;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// GGUF's name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }
    /// Any integer value that fits `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// Any numeric value as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor lies in the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the contiguous (column) dimension.
    pub dims: Vec<u64>,
    pub dtype: DType,
    /// Absolute byte offset in the file.
    pub offset: usize,
    pub size: usize,
}

/// The parsed header of a GGUF file; tensor data stays in the caller's bytes.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub alignment: usize,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
}

/// An open GGUF file: header plus mapped data.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub path: PathBuf,
    pub header: Arc<Header>,
    bytes: Arc<Blob>,
    index: Arc<BTreeMap<String, usize>>,
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
        // SAFETY: the map is read-only; model files are not modified while they are served.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| EngineError::io(path, e))?;
        Self::from_bytes_inner(path, Blob::Mapped(map))
    }

    /// Parses a file held in memory; `path` is only used in error messages.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Self> {
        Self::from_bytes_inner(path.as_ref(), Blob::Owned(bytes))
    }

    fn from_bytes_inner(path: &Path, bytes: Blob) -> Result<Self> {
        let header = parse(path, bytes.as_slice())?;
        let index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            header: Arc::new(header),
            bytes: Arc::new(bytes),
            index: Arc::new(index),
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.header.metadata.get(key)
    }

    /// The metadata string at `key`, or an error naming the key.
    pub fn str(&self, key: &str) -> Result<&str> {
        self.required(key)?
            .as_str()
            .ok_or_else(|| self.wrong_type(key, "a string"))
    }

    /// The integer at `key`, or an error naming the key.
    pub fn u64(&self, key: &str) -> Result<u64> {
        self.required(key)?
            .as_u64()
            .ok_or_else(|| self.wrong_type(key, "a non-negative integer"))
    }

    /// The integer at `key` if present.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| self.wrong_type(key, "a non-negative integer"))
            })
            .transpose()
    }

    /// The number at `key` if present.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| self.wrong_type(key, "a number")))
            .transpose()
    }

    fn required(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| EngineError::format(&self.path, key, "missing metadata key"))
    }

    fn wrong_type(&self, key: &str, want: &str) -> EngineError {
        let got = self.get(key).map_or("nothing", Value::type_name);
        EngineError::format(&self.path, key, format!("expected {want}, found {got}"))
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.header.tensors[i])
    }

    /// A 1-D or 2-D view of tensor `name` (higher dimensions fold into rows).
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| EngineError::format(&self.path, name, "tensor missing from the file"))?;
        let cols = info.dims[0] as usize;
        let rows = info.dims[1..].iter().product::<u64>() as usize;
        Ok(TensorView {
            dtype: info.dtype,
            rows,
            cols,
            data: &self.bytes.as_slice()[info.offset..info.offset + info.size],
        })
    }

    /// Tensor `name` as a [`Weight`] that keeps the mapping alive.
    pub fn weight(&self, name: &str) -> Result<Weight> {
        let v = self.tensor(name)?;
        let start = self.header.tensors[self.index[name]].offset;
        Ok(Weight::mapped(
            v.dtype,
            v.rows,
            v.cols,
            self.bytes.clone(),
            start,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::write::GgufWriter;
    use super::*;

    fn every_type() -> Vec<(&'static str, Value)> {
        vec![
            ("u8", Value::U8(200)),
            ("i8", Value::I8(-100)),
            ("u16", Value::U16(60_000)),
            ("i16", Value::I16(-30_000)),
            ("u32", Value::U32(4_000_000_000)),
            ("i32", Value::I32(-2_000_000_000)),
            ("u64", Value::U64(u64::MAX)),
            ("i64", Value::I64(i64::MIN)),
            ("f32", Value::F32(1.5)),
            ("f64", Value::F64(-2.25)),
            ("bool", Value::Bool(true)),
            ("string", Value::String("héllo 🦀".into())),
            (
                "nested",
                Value::Array(vec![
                    Value::Array(vec![Value::I16(1), Value::I16(2)]),
                    Value::Array(vec![]),
                ]),
            ),
        ]
    }

    #[test]
    fn every_value_type_round_trips_in_v2_and_v3_with_custom_alignment() {
        for version in [2u32, 3] {
            let mut w = GgufWriter::new();
            for (k, v) in every_type() {
                w.meta(k, v);
            }
            w.tensor("t", &[32, 2], DType::Q8_0, vec![7u8; 68]);
            let mut bytes = w.to_bytes();
            bytes[4..8].copy_from_slice(&version.to_le_bytes());
            let f = GgufFile::from_bytes("x.gguf", bytes).expect("parse");
            assert_eq!(f.header.version, version);
            for (k, v) in every_type() {
                assert_eq!(f.get(k), Some(&v), "{k}");
            }
            let t = f.tensor("t").expect("tensor");
            assert_eq!(
                (t.dtype, t.rows, t.cols, t.data.len()),
                (DType::Q8_0, 2, 32, 68)
            );
            assert!(t.data.iter().all(|&b| b == 7));
        }
    }

    #[test]
    fn general_alignment_moves_the_data() {
        let mut w = GgufWriter::new();
        w.tensor("t", &[4], DType::F32, 1f32.to_le_bytes().repeat(4));
        let plain = w.to_bytes();
        // Re-align the same tensor to 64 bytes by hand: metadata first, then pad the data start.
        let mut w64 = GgufWriter::new();
        w64.meta("general.alignment", Value::U32(64));
        w64.tensor("t", &[4], DType::F32, 1f32.to_le_bytes().repeat(4));
        let mut bytes = w64.to_bytes();
        let data = bytes.split_off(bytes.len() - 16);
        bytes.resize(bytes.len().div_ceil(64) * 64, 0);
        bytes.extend_from_slice(&data);
        let f = GgufFile::from_bytes("a.gguf", bytes).expect("parse");
        assert_eq!(f.header.alignment, 64);
        assert_eq!(f.header.tensors[0].offset % 64, 0);
        assert_eq!(f.tensor("t").expect("t").data, &plain[plain.len() - 16..]);
        let mut bad = GgufWriter::new();
        bad.meta("general.alignment", Value::U32(48));
        let err = GgufFile::from_bytes("b.gguf", bad.to_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("general.alignment: expected a power-of-two u32"),
            "{err}"
        );
    }
}
