//! The shared data sets by name: `mnist`, `fashion-mnist`, `tinyshakespeare`.
//!
//! Each loader takes a directory and looks for the standard file names
//! either directly in it or in a subfolder named after the data set, so both
//! `mnist("/data/mnist", …)` and `mnist("/data", …)` work. The data
//! directory of a checkout can be given with the `KILN_DATA_DIR`
//! environment variable (see [`data_dir_from_env`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use crate::dataset::{ArrayDataset, Dataset};
use crate::error::{DataError, Result};
use crate::idx::idx_dataset;
use crate::text::{TextCorpus, Tokenizer};

/// Environment variable naming the directory that holds the shared data sets.
pub const DATA_DIR_ENV: &str = "KILN_DATA_DIR";

/// Number of classes of MNIST and Fashion-MNIST.
pub const MNIST_CLASSES: usize = 10;

/// Fraction of tinyshakespeare used for training (the rest is validation).
pub const TINYSHAKESPEARE_TRAIN_FRACTION: f64 = 0.9;

/// Context length used by [`open_builtin`] for tinyshakespeare windows.
pub const DEFAULT_CONTEXT: usize = 256;

/// A data set split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training split (`train-*` files; first 90% of a text).
    Train,
    /// The held-out split (`t10k-*` files; last 10% of a text).
    Test,
}

/// The built-in data sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// MNIST handwritten digits (IDX).
    Mnist,
    /// Fashion-MNIST (IDX).
    FashionMnist,
    /// The tiny-shakespeare text.
    TinyShakespeare,
}

impl Builtin {
    /// All built-in data sets.
    pub const ALL: [Builtin; 3] = [Builtin::Mnist, Builtin::FashionMnist, Builtin::TinyShakespeare];

    /// The canonical name (also the subfolder name searched).
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Mnist => "mnist",
            Builtin::FashionMnist => "fashion-mnist",
            Builtin::TinyShakespeare => "tinyshakespeare",
        }
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Builtin {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "mnist" => Ok(Builtin::Mnist),
            "fashion-mnist" | "fashionmnist" => Ok(Builtin::FashionMnist),
            "tinyshakespeare" | "tiny-shakespeare" => Ok(Builtin::TinyShakespeare),
            _ => Err(DataError::Config(format!(
                "unknown data set {s:?} (known: mnist, fashion-mnist, tinyshakespeare)"
            ))),
        }
    }
}

/// The directory named by `KILN_DATA_DIR`, if set and non-empty.
pub fn data_dir_from_env() -> Option<PathBuf> {
    std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn not_found(dir: &Path, what: &str, tried: &[PathBuf]) -> DataError {
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    DataError::io(
        dir,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no {what} found; tried {}", list.join(", ")),
        ),
    )
}

/// The first existing file among `names` in `dir` and `dir/subdir`.
fn find_file(dir: &Path, subdir: &str, names: &[String], what: &str) -> Result<PathBuf> {
    let mut tried = Vec::new();
    for base in [dir.to_path_buf(), dir.join(subdir)] {
        for name in names {
            let candidate = base.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
            tried.push(candidate);
        }
    }
    Err(not_found(dir, what, &tried))
}

fn idx_names(prefix: &str, kind: &str, dims: u8) -> Vec<String> {
    vec![
        format!("{prefix}-{kind}-idx{dims}-ubyte.gz"),
        format!("{prefix}-{kind}-idx{dims}-ubyte"),
        format!("{prefix}-{kind}.idx{dims}-ubyte"),
        format!("{prefix}-{kind}.idx{dims}-ubyte.gz"),
    ]
}

/// Paths of the image and label IDX files of a split.
pub fn idx_split_files(
    dir: impl AsRef<Path>,
    subdir: &str,
    split: Split,
) -> Result<(PathBuf, PathBuf)> {
    let dir = dir.as_ref();
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images = find_file(dir, subdir, &idx_names(prefix, "images", 3), "IDX image file")?;
    let labels = find_file(dir, subdir, &idx_names(prefix, "labels", 1), "IDX label file")?;
    Ok((images, labels))
}

/// MNIST: 60 000 train / 10 000 test examples with `image` (`u8`
/// `[28, 28]`) and `label` (`i32` scalar in `0..10`).
pub fn mnist(dir: impl AsRef<Path>, split: Split) -> Result<ArrayDataset> {
    let (images, labels) = idx_split_files(dir, Builtin::Mnist.name(), split)?;
    idx_dataset(images, labels, Some(MNIST_CLASSES))
}

/// Fashion-MNIST, with the same layout as [`mnist`].
pub fn fashion_mnist(dir: impl AsRef<Path>, split: Split) -> Result<ArrayDataset> {
    let (images, labels) = idx_split_files(dir, Builtin::FashionMnist.name(), split)?;
    idx_dataset(images, labels, Some(MNIST_CLASSES))
}

/// Finds the tinyshakespeare text: `path` itself if it is a file, else
/// `tinyshakespeare.txt` or `input.txt` in `path`, `path/text` or
/// `path/tinyshakespeare`.
pub fn find_tinyshakespeare(path: impl AsRef<Path>) -> Result<PathBuf> {
    let path = path.as_ref();
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let mut tried = Vec::new();
    for base in [path.to_path_buf(), path.join("text"), path.join("tinyshakespeare")] {
        for name in ["tinyshakespeare.txt", "input.txt"] {
            let candidate = base.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
            tried.push(candidate);
        }
    }
    Err(not_found(path, "tinyshakespeare text", &tried))
}

/// The tinyshakespeare text, tokenized (character level: 65 ids). Use
/// [`TextCorpus::split_windows`] with [`TINYSHAKESPEARE_TRAIN_FRACTION`]
/// for the usual train/validation windows.
pub fn tinyshakespeare(path: impl AsRef<Path>, tokenizer: Tokenizer) -> Result<TextCorpus> {
    TextCorpus::open(find_tinyshakespeare(path)?, tokenizer)
}

/// Opens a built-in data set by name as a shareable dataset. Text is
/// character-level windows of [`DEFAULT_CONTEXT`] tokens, split 90/10.
pub fn open_builtin(name: &str, dir: impl AsRef<Path>, split: Split) -> Result<Arc<dyn Dataset>> {
    let dir = dir.as_ref();
    Ok(match name.parse::<Builtin>()? {
        Builtin::Mnist => Arc::new(mnist(dir, split)?),
        Builtin::FashionMnist => Arc::new(fashion_mnist(dir, split)?),
        Builtin::TinyShakespeare => {
            let corpus = tinyshakespeare(dir, Tokenizer::Char)?;
            let (train, test) =
                corpus.split_windows(DEFAULT_CONTEXT, TINYSHAKESPEARE_TRAIN_FRACTION)?;
            match split {
                Split::Train => Arc::new(train),
                Split::Test => Arc::new(test),
            }
        }
    })
}
