//! The crate's error type.
//!
//! Every failure is reported as a [`DataError`]. Errors that come from a file
//! name the file and, where it makes sense, the byte offset (binary formats)
//! or the 1-based line (text formats) at which the problem was found.

use std::path::{Path, PathBuf};

use crate::tensor::DType;

/// Result alias used throughout the crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Everything that can go wrong while reading, transforming or loading data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// An I/O operation on `path` failed (missing file, permission, ...).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The file ended before all the data its header announces.
    #[error(
        "{}: truncated at byte offset {offset}: needed {needed} more byte(s) for {what}",
        path.display()
    )]
    Truncated {
        /// The file involved.
        path: PathBuf,
        /// Byte offset (in the decompressed stream for gzip files) where data ran out.
        offset: u64,
        /// How many more bytes were required.
        needed: u64,
        /// What was being read.
        what: String,
    },

    /// A binary file is malformed (bad magic, bad header, trailing bytes, ...).
    #[error("{}: corrupt data at byte offset {offset}: {msg}", path.display())]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// Byte offset (in the decompressed stream for gzip files) of the problem.
        offset: u64,
        /// What is wrong.
        msg: String,
    },

    /// A text file (CSV, JSONL, ...) has a malformed line.
    #[error("{}:{line}: {msg}", path.display())]
    Parse {
        /// The file involved.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },

    /// An image could not be decoded.
    #[error("{}: cannot decode image: {source}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },

    /// A class label is outside `0..num_classes`.
    #[error("label {label} out of range 0..{num_classes} ({context})")]
    LabelOutOfRange {
        /// The offending label.
        label: i64,
        /// The number of classes.
        num_classes: usize,
        /// Where the label came from (file and offset/line, or field name).
        context: String,
    },

    /// An example index is outside `0..len`.
    #[error("index {index} out of range for a dataset of {len} example(s)")]
    IndexOutOfRange {
        /// The requested index.
        index: usize,
        /// The dataset length.
        len: usize,
    },

    /// A tensor has a different element type than required.
    #[error("dtype mismatch{}: expected {expected}, found {found}", fmt_context(context))]
    DType {
        /// The required dtype.
        expected: DType,
        /// The actual dtype.
        found: DType,
        /// Field name or operation, if known.
        context: String,
    },

    /// A tensor has an incompatible shape, or shapes disagree.
    #[error("shape error: {0}")]
    Shape(String),

    /// An example lacks a field that a transform or the loader needs.
    #[error("missing field `{0}`")]
    MissingField(String),

    /// A data type that this crate cannot represent or read.
    #[error("unsupported dtype {0}")]
    UnsupportedDType(String),

    /// Text that a [`Vocab`](crate::Vocab) cannot encode, or ids it cannot decode.
    #[error("vocabulary: {0}")]
    Vocab(String),

    /// Invalid options (batch size 0, empty shard, bad split fraction, ...).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A saved [`LoaderState`](crate::LoaderState) does not fit this loader.
    #[error("cannot restore loader state: {0}")]
    StateMismatch(String),

    /// A loader worker thread panicked while building a batch.
    #[error("loader worker panicked while building a batch: {0}")]
    WorkerPanic(String),
}

fn fmt_context(context: &str) -> String {
    if context.is_empty() { String::new() } else { format!(" ({context})") }
}

impl DataError {
    /// An [`DataError::Io`] error for `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        DataError::Io { path: path.as_ref().to_path_buf(), source }
    }

    /// A [`DataError::Corrupt`] error for `path` at `offset`.
    pub fn corrupt(path: impl AsRef<Path>, offset: u64, msg: impl Into<String>) -> Self {
        DataError::Corrupt { path: path.as_ref().to_path_buf(), offset, msg: msg.into() }
    }

    /// A [`DataError::Truncated`] error for `path`.
    pub fn truncated(
        path: impl AsRef<Path>,
        offset: u64,
        needed: u64,
        what: impl Into<String>,
    ) -> Self {
        DataError::Truncated {
            path: path.as_ref().to_path_buf(),
            offset,
            needed,
            what: what.into(),
        }
    }

    /// A [`DataError::Parse`] error for `path` at 1-based `line`.
    pub fn parse(path: impl AsRef<Path>, line: usize, msg: impl Into<String>) -> Self {
        DataError::Parse { path: path.as_ref().to_path_buf(), line, msg: msg.into() }
    }

    /// The file this error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            DataError::Io { path, .. }
            | DataError::Truncated { path, .. }
            | DataError::Corrupt { path, .. }
            | DataError::Parse { path, .. }
            | DataError::Image { path, .. } => Some(path),
            _ => None,
        }
    }
}
