//! HF checkpoints: `config.json` plus `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), memory-mapped, F32/F16/BF16. Every header entry is checked
//! against its file before a tensor is handed out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::tensor::{Blob, DType, Weight};

#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    start: usize,
}

/// An opened HF model directory.
#[derive(Debug)]
pub struct SafetensorsDir {
    pub dir: PathBuf,
    pub config: serde_json::Value,
    files: Vec<(PathBuf, Arc<Blob>)>,
    entries: HashMap<String, Entry>,
}

impl SafetensorsDir {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let config_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| EngineError::io(&config_path, e))?;
        let config = serde_json::from_str(&text).map_err(|e| {
            EngineError::format(&config_path, "config.json", format!("invalid JSON: {e}"))
        })?;
        let index_path = dir.join("model.safetensors.index.json");
        let shards: Vec<String> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| EngineError::io(&index_path, e))?;
            let index: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                EngineError::format(&index_path, "index", format!("invalid JSON: {e}"))
            })?;
            let map = index
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    EngineError::format(&index_path, "weight_map", "missing or not an object")
                })?;
            let mut names: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            names.sort();
            names.dedup();
            names
        } else {
            vec!["model.safetensors".to_string()]
        };
        let mut files = Vec::new();
        let mut entries = HashMap::new();
        for (i, shard) in shards.iter().enumerate() {
            let path = dir.join(shard);
            let file = std::fs::File::open(&path).map_err(|e| EngineError::io(&path, e))?;
            // SAFETY: read-only mapping of a model file that is not modified while served.
            let map =
                unsafe { memmap2::Mmap::map(&file) }.map_err(|e| EngineError::io(&path, e))?;
            let blob = Arc::new(Blob::Mapped(map));
            for (name, e) in parse_header(&path, blob.as_slice())? {
                entries.insert(name, Entry { file: i, ..e });
            }
            files.push((path, blob));
        }
        Ok(Self {
            dir,
            config,
            files,
            entries,
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Tensor `name` as a 2-D weight (1-D tensors have one row).
    pub fn weight(&self, name: &str) -> Result<Weight> {
        let e = self.entries.get(name).ok_or_else(|| {
            EngineError::format(
                &self.files.first().map_or(self.dir.clone(), |f| f.0.clone()),
                name,
                "tensor missing",
            )
        })?;
        let cols = e.shape.last().copied().unwrap_or(1);
        let rows = e.shape.iter().rev().skip(1).product();
        Ok(Weight::mapped(
            e.dtype,
            rows,
            cols,
            self.files[e.file].1.clone(),
            e.start,
        ))
    }
}

/// Parses one safetensors file's header and checks each tensor against the file.
fn parse_header(path: &Path, buf: &[u8]) -> Result<Vec<(String, Entry)>> {
    let err = |field: &str, msg: String| EngineError::format(path, field, msg);
    let n = buf
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        .ok_or_else(|| {
            err(
                "header",
                "file shorter than the 8-byte header length".into(),
            )
        })?;
    let header_end = 8u64
        .checked_add(n)
        .filter(|&e| e <= buf.len() as u64)
        .ok_or_else(|| {
            err(
                "header",
                format!("header length {n} runs past the end of the file"),
            )
        })? as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&buf[8..header_end])
            .map_err(|e| err("header", format!("invalid JSON header: {e}")))?;
    let data = buf.len() - header_end;
    let mut out = Vec::new();
    for (name, v) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = match v.get("dtype").and_then(|d| d.as_str()) {
            Some("F32") => DType::F32,
            Some("F16") => DType::F16,
            Some("BF16") => DType::BF16,
            other => {
                return Err(EngineError::unsupported(
                    path,
                    &name,
                    format!("dtype {other:?} is not supported (expected F32, F16 or BF16)"),
                ));
            }
        };
        let shape: Vec<usize> = v
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
            .ok_or_else(|| err(&name, "missing or invalid `shape`".into()))?;
        let offs: Vec<usize> = v
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
            .filter(|o: &Vec<usize>| o.len() == 2 && o[0] <= o[1] && o[1] <= data)
            .ok_or_else(|| {
                err(
                    &name,
                    format!("`data_offsets` missing or outside the {data} data bytes"),
                )
            })?;
        let elems = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let want = elems.and_then(|e| e.checked_mul(dtype.block_bytes()));
        if want != Some(offs[1] - offs[0]) {
            return Err(err(
                &name,
                format!(
                    "shape {shape:?} of {dtype} needs {want:?} bytes, but the data holds {}",
                    offs[1] - offs[0]
                ),
            ));
        }
        out.push((
            name,
            Entry {
                file: 0,
                dtype,
                shape,
                start: header_end + offs[0],
            },
        ));
    }
    Ok(out)
}
