//! # kiln-data: deterministic, resumable, sharded data loading
//!
//! `kiln-data` reads training data into plain host tensors. It depends on no
//! other kiln crate: a trainer converts a [`Batch`]'s tensors into device
//! arrays by moving out their vectors ([`HostTensor::into_f32_vec`],
//! [`HostTensor::into_vec`]) or borrowing their bytes
//! ([`HostTensor::as_bytes`]) together with [`HostTensor::shape`] and
//! [`HostTensor::dtype`].
//!
//! ## The pieces
//!
//! - **Tensors.** [`HostTensor`] (dtype, shape, typed `Vec`) for `bool`,
//!   `u8`…`u64`, `i8`…`i64`, `f16`, `bf16`, `f32`, `f64`. An [`Example`] is
//!   an ordered map of named tensors; a [`Batch`] stacks examples along a new
//!   leading dimension and records their dataset indices and epoch.
//! - **Datasets.** [`Dataset`] is random access (`len`, `get`). Sources:
//!   IDX ([`idx`], MNIST-style, raw or gzip), CSV ([`CsvDataset`]), NPY/NPZ
//!   ([`npy`]), safetensors ([`SafetensorsDataset`], memory-mapped), text
//!   ([`TextCorpus`] → [`TokenWindows`] for language modelling, with a
//!   character or byte [`Vocab`]; [`TextLines`]), image folders
//!   ([`ImageFolder`]) and JSON Lines ([`JsonlDataset`]). In-memory data:
//!   [`ArrayDataset`]. Built-in names: [`mnist`], [`fashion_mnist`],
//!   [`tinyshakespeare`], [`open_builtin`].
//! - **Transforms.** [`DatasetExt::map`], [`DatasetExt::map_random`] (random
//!   augmentation seeded by `(seed, epoch, index)`) and
//!   [`DatasetExt::filter`], with ready-made transforms in [`transform`]:
//!   normalize, cast, one-hot, random crop and flip, tokenize.
//! - **Loading.** [`Loader`] batches a dataset with seeded shuffling (a pure
//!   function of `(seed, epoch)`), `drop_last`, sharding by
//!   [`Shard`] (process, device), and worker threads that prefetch into a
//!   bounded queue while keeping the batch order fixed.
//! - **Checkpointing.** [`LoaderIter::state`] returns a small serializable
//!   [`LoaderState`]; [`LoaderIter::restore`] / [`Loader::iter_from`] resume
//!   exactly after the last batch returned, mid-epoch or not, with or without
//!   workers.
//! - **Errors.** Every failure is a [`DataError`] naming the file and the
//!   byte offset or line; readers never panic on malformed input and never
//!   return silently short data.
//!
//! ## Example
//!
//! ```
//! use kiln_data::{ArrayDataset, DType, DatasetExt, HostTensor, Loader, LoaderConfig};
//! use kiln_data::transform::{cast_scaled, one_hot};
//!
//! // Ten 2x2 grayscale "images" with labels 0..5.
//! let pixels: Vec<u8> = (0..40).collect();
//! let images = HostTensor::from_vec(vec![10, 2, 2], pixels)?;
//! let labels = HostTensor::vector((0..10).map(|i| i % 5).collect::<Vec<i32>>());
//! let dataset = ArrayDataset::new([("image", images), ("label", labels)])?
//!     .map(cast_scaled("image", DType::F32, 1.0 / 255.0))
//!     .map(one_hot("label", 5));
//!
//! let config = LoaderConfig::new(4).shuffle(42).drop_last(true).epochs(2).workers(2);
//! let loader = Loader::new(dataset, config)?;
//! assert_eq!(loader.batches_per_epoch(), 2);
//!
//! let mut it = loader.iter();
//! let mut batch = it.next().unwrap()?;
//! assert_eq!(batch.require("image")?.shape(), &[4, 2, 2]);
//! assert_eq!(batch.require("label")?.shape(), &[4, 5]);
//! let pixels: Vec<f32> = batch.take("image")?.into_f32_vec()?; // no copy
//! assert_eq!(pixels.len(), 16);
//!
//! // Checkpoint mid-epoch, then resume elsewhere: same remaining batches.
//! let saved = it.state().to_json();
//! let rest: Vec<Vec<usize>> = it.map(|b| b.map(|b| b.indices().to_vec())).collect::<Result<_, _>>()?;
//! let state = kiln_data::LoaderState::from_json(&saved)?;
//! let resumed: Vec<Vec<usize>> = loader
//!     .iter_from(&state)?
//!     .map(|b| b.map(|b| b.indices().to_vec()))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(rest, resumed);
//! assert_eq!(rest.len(), 3); // one more in epoch 0, two in epoch 1
//! # Ok::<(), kiln_data::DataError>(())
//! ```
//!
//! ## Determinism contract
//!
//! A batch is a pure function of the dataset, the [`LoaderConfig`] fields
//! that shape the order (`batch_size`, `drop_last`, `shuffle`, `seed`,
//! `shard`) and its position. Datasets must therefore be deterministic in
//! `get(i)` (and `get_for_epoch(i, epoch)`); all built-in sources and
//! transforms are. Worker count and prefetch depth never change the output.

#![warn(missing_docs)]

pub mod builtin;
pub mod csv;
pub mod dataset;
pub mod error;
pub mod example;
pub mod gzip;
pub mod idx;
pub mod image_folder;
pub mod jsonl;
pub mod loader;
pub mod npy;
pub mod rng;
pub mod safetensors;
pub mod shuffle;
pub mod state;
pub mod tensor;
pub mod text;
pub mod transform;

pub use builtin::{
    Builtin, Split, data_dir_from_env, fashion_mnist, mnist, open_builtin, tinyshakespeare,
};
pub use csv::{Column, CsvDataset, CsvOptions};
pub use dataset::{ArrayDataset, Dataset, Subset};
pub use error::{DataError, Result};
pub use example::{Batch, Example, TensorMap};
pub use image_folder::{ColorMode, ImageFolder, ImageFolderOptions};
pub use jsonl::JsonlDataset;
pub use loader::{Loader, LoaderConfig, LoaderIter};
pub use rng::Rng;
pub use safetensors::{SafetensorsDataset, SafetensorsFile};
pub use shuffle::{ShuffleBuffer, permutation};
pub use state::{LoaderState, Shard};
pub use tensor::{DType, Element, Endian, HostTensor, TensorData};
pub use text::{TextCorpus, TextLines, TokenWindows, Tokenizer, Vocab};
pub use transform::DatasetExt;
