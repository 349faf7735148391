//! The engine's one error type. Every error names what the user must look at: the file, the
//! field or tensor, and what was expected. Nothing in the engine panics on bad input.

use std::path::PathBuf;

/// Errors from loading models and tokenizers and from running them.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The OS refused to read a file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model file is malformed: `field` names the header field, metadata key or tensor.
    #[error("{path}: {field}: {msg}")]
    Format {
        path: PathBuf,
        field: String,
        msg: String,
    },
    /// The file is well formed but describes something the engine does not run.
    #[error("{path}: {field}: {msg}")]
    Unsupported {
        path: PathBuf,
        field: String,
        msg: String,
    },
    /// The tokenizer could not be built or could not encode/decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to render.
    #[error("chat template: {0}")]
    Template(String),
    /// A request that cannot run as asked (prompt too long, bad sampling parameters, ...).
    #[error("{0}")]
    InvalidRequest(String),
    /// The prompt alone does not fit the model's context window.
    #[error("{0}")]
    ContextExceeded(String),
    /// The device (a GPU, its driver or a library on it) failed: the server's problem, never
    /// the request's.
    #[error("device: {0}")]
    Device(String),
    /// No memory for what was asked (weights or a KV cache that do not fit the device).
    #[error("out of memory: {0}")]
    OutOfMemory(String),
}

/// Shorthand used across the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub(crate) fn format(
        path: &std::path::Path,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Self::Format {
            path: path.to_path_buf(),
            field: field.into(),
            msg: msg.into(),
        }
    }
    pub(crate) fn unsupported(
        path: &std::path::Path,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Self::Unsupported {
            path: path.to_path_buf(),
            field: field.into(),
            msg: msg.into(),
        }
    }
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
