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
