//! The GGUF byte-level parser. Every count is checked against the bytes left before anything is
//! allocated, and every tensor's extent against the file, so hostile input cannot panic, loop
//! for long or allocate more than the file's own size.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Header, TensorInfo, Value};
use crate::error::{EngineError, Result};
use crate::tensor::DType;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: usize = 32;
const MAX_DIMS: u32 = 4;
const MAX_ARRAY_DEPTH: usize = 4;

struct Cursor<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, field: &str, msg: impl Into<String>) -> EngineError {
        EngineError::format(self.path, field, msg)
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                self.err(
                    field,
                    format!(
                        "file truncated: need {n} bytes at offset {}, file has {}",
                        self.pos,
                        self.buf.len()
                    ),
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, field: &str) -> Result<u32> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &str) -> Result<u64> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A count of items each at least `min_item` bytes long, checked against the bytes left.
    fn count(&mut self, field: &str, min_item: usize) -> Result<usize> {
        let n = self.u64(field)?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_item as u64) > left {
            return Err(self.err(
                field,
                format!("count {n} is larger than the {left} bytes left in the file"),
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, field: &str) -> Result<String> {
        let n = self.count(field, 1)?;
        let bytes = self.take(n, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err(field, "string is not valid UTF-8"))
    }

    fn value(&mut self, ty: u32, field: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(field)?[0]),
            1 => Value::I8(self.array::<1>(field)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(field)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(field)?)),
            4 => Value::U32(self.u32(field)?),
            5 => Value::I32(i32::from_le_bytes(self.array(field)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(field)?)),
            7 => match self.array::<1>(field)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(field, format!("bool must be 0 or 1, found {b}"))),
            },
            8 => Value::String(self.string(field)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(
                        field,
                        format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
                    ));
                }
                let elem = self.u32(field)?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => {
                        return Err(self.err(
                            field,
                            format!("unknown array element type {t} (expected 0..=12)"),
                        ));
                    }
                };
                let n = self.count(field, min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, field, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(field)?),
            11 => Value::I64(i64::from_le_bytes(self.array(field)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(field)?)),
            t => return Err(self.err(field, format!("unknown value type {t} (expected 0..=12)"))),
        })
    }
}

/// Parses the header of a GGUF file held in `buf`, checking every tensor against the data.
pub fn parse(path: &Path, buf: &[u8]) -> Result<Header> {
    let mut c = Cursor { path, buf, pos: 0 };
    let magic = c.array::<4>("magic")?;
    if &magic != MAGIC {
        return Err(c.err(
            "magic",
            format!("expected \"GGUF\", found {magic:02x?}: not a GGUF file"),
        ));
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(c.err(
            "version",
            format!("GGUF version {version} is not supported (expected 2 or 3)"),
        ));
    }
    // A tensor info is at least 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    let n_tensors = c.count("tensor_count", 24)?;
    // A key/value pair is at least 8 (key len) + 4 (type) + 1 bytes.
    let n_kv = c.count("metadata_kv_count", 13)?;

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key #{i}"))?;
        let ty = c.u32(&key)?;
        let value = c.value(ty, &key, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(c.err(&key, "metadata key appears twice"));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if a.is_power_of_two() => *a as usize,
        Some(v) => {
            return Err(c.err(
                "general.alignment",
                format!("expected a power-of-two u32, found {v:?}"),
            ));
        }
    };

    let mut raw = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = c.string(&format!("tensor #{i} name"))?;
        let n_dims = c.u32(&name)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(c.err(
                &name,
                format!("tensor has {n_dims} dimensions (expected 1..={MAX_DIMS})"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&name)?);
        }
        let ty = c.u32(&name)?;
        let offset = c.u64(&name)?;
        raw.push((name, dims, ty, offset));
    }
    let data_start = c.pos.div_ceil(alignment) * alignment;

    let mut tensors = Vec::with_capacity(raw.len());
    let mut seen = std::collections::HashSet::new();
    for (name, dims, ty, offset) in raw {
        if !seen.insert(name.clone()) {
            return Err(c.err(&name, "tensor name appears twice"));
        }
        let dtype = DType::from_ggml(ty).ok_or_else(|| {
            EngineError::unsupported(
                path,
                &name,
                format!(
                    "tensor type {} (id {ty}) is not supported (expected F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K or Q6_K)",
                    DType::ggml_name(ty)
                ),
            )
        })?;
        let elems = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n > 0 && n <= buf.len() as u64 * 2)
            .ok_or_else(|| {
                c.err(
                    &name,
                    format!("shape {dims:?} is empty or larger than the file"),
                )
            })?;
        if dims[0] % dtype.block_len() as u64 != 0 {
            return Err(c.err(
                &name,
                format!(
                    "row length {} is not a multiple of the {dtype} block size {}",
                    dims[0],
                    dtype.block_len()
                ),
            ));
        }
        let size = (elems / dtype.block_len() as u64) as usize * dtype.block_bytes();
        if offset % alignment as u64 != 0 {
            return Err(c.err(
                &name,
                format!("data offset {offset} is not aligned to {alignment}"),
            ));
        }
        let start = (data_start as u64)
            .checked_add(offset)
            .filter(|&s| s <= buf.len() as u64);
        let Some(start) = start.map(|s| s as usize) else {
            return Err(c.err(
                &name,
                format!("data offset {offset} lies past the end of the file"),
            ));
        };
        if buf.len() - start < size {
            return Err(c.err(
                &name,
                format!(
                    "tensor data needs {size} bytes for shape {dims:?} of {dtype}, but only {} remain in the file (truncated?)",
                    buf.len() - start
                ),
            ));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            dtype,
            offset: start,
            size,
        });
    }
    Ok(Header {
        version,
        alignment,
        metadata,
        tensors,
    })
}
