//! Errors of the trainer. Every variant prints as one line naming the file or key.

/// A trainer error.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration problem: `file`, then the key and what is wrong.
    #[error("config {file}: {msg}")]
    Config {
        /// The config file.
        file: String,
        /// The key and the problem.
        msg: String,
    },
    /// A data problem.
    #[error("data: {0}")]
    Data(String),
    /// A checkpoint problem.
    #[error("checkpoint {file}: {msg}")]
    Checkpoint {
        /// The checkpoint file.
        file: String,
        /// The problem.
        msg: String,
    },
    /// An I/O problem with a file.
    #[error("{file}: {msg}")]
    Io {
        /// The file.
        file: String,
        /// The problem.
        msg: String,
    },
    /// A numerical problem during training (e.g. a non-finite loss).
    #[error("training: {0}")]
    Numeric(String),
}

impl TrainError {
    /// An I/O error on `file`.
    pub fn io(file: &std::path::Path, e: impl std::fmt::Display) -> TrainError {
        TrainError::Io { file: file.display().to_string(), msg: e.to_string() }
    }
}

impl From<kiln_data::DataError> for TrainError {
    fn from(e: kiln_data::DataError) -> Self {
        TrainError::Data(e.to_string().lines().next().unwrap_or_default().to_string())
    }
}
