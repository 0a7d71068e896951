//! The random-access [`Dataset`] trait and generic in-memory datasets.

use std::sync::Arc;

use crate::error::{DataError, Result};
use crate::example::{Example, TensorMap};
use crate::tensor::HostTensor;

/// A finite, random-access collection of [`Example`]s.
///
/// `get` must be a pure function of the index (and `get_for_epoch` of index
/// and epoch): the loader relies on this to make iteration deterministic,
/// parallel and resumable. Implementations must be cheap to call from several
/// threads at once.
pub trait Dataset: Send + Sync {
    /// Number of examples.
    fn len(&self) -> usize;

    /// Example `index` (`0..len()`); out-of-range indices give
    /// [`DataError::IndexOutOfRange`].
    fn get(&self, index: usize) -> Result<Example>;

    /// Example `index` as seen in `epoch`.
    ///
    /// Deterministic sources ignore the epoch (the default calls
    /// [`get`](Self::get)); random augmentations (see
    /// [`DatasetExt::map_random`](crate::DatasetExt::map_random)) derive their
    /// randomness from it, so every epoch sees fresh but reproducible
    /// augmentations. The [`Loader`](crate::Loader) always calls this method.
    fn get_for_epoch(&self, index: usize, epoch: u64) -> Result<Example> {
        let _ = epoch;
        self.get(index)
    }

    /// Whether the dataset has no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

macro_rules! forward_dataset {
    ($($ptr:ty),*) => {$(
        impl<D: Dataset + ?Sized> Dataset for $ptr {
            fn len(&self) -> usize {
                (**self).len()
            }
            fn get(&self, index: usize) -> Result<Example> {
                (**self).get(index)
            }
            fn get_for_epoch(&self, index: usize, epoch: u64) -> Result<Example> {
                (**self).get_for_epoch(index, epoch)
            }
        }
    )*};
}

forward_dataset!(Arc<D>, Box<D>, &D);

/// Fails with [`DataError::IndexOutOfRange`] unless `index < len`.
pub fn check_index(index: usize, len: usize) -> Result<()> {
    if index < len { Ok(()) } else { Err(DataError::IndexOutOfRange { index, len }) }
}

/// A dataset whose fields are whole tensors held in memory; example `i` is
/// row `i` of every field.
///
/// This is what the file readers return once parsed (IDX, CSV, JSONL, NPZ),
/// and the easiest way to build a dataset in code.
#[derive(Clone, Debug)]
pub struct ArrayDataset {
    fields: TensorMap,
    len: usize,
}

impl ArrayDataset {
    /// Builds a dataset from named tensors that share their leading
    /// dimension (the number of examples).
    pub fn new<S: Into<String>>(fields: impl IntoIterator<Item = (S, HostTensor)>) -> Result<Self> {
        Self::from_map(fields.into_iter().collect())
    }

    /// Builds a dataset from a [`TensorMap`] of whole-dataset tensors.
    pub fn from_map(fields: TensorMap) -> Result<Self> {
        let mut len = None;
        for (name, t) in fields.iter() {
            let rows = *t.shape().first().ok_or_else(|| {
                DataError::Shape(format!(
                    "field `{name}` is a scalar; it needs a leading dimension"
                ))
            })?;
            match len {
                None => len = Some(rows),
                Some(l) if l != rows => {
                    return Err(DataError::Shape(format!(
                        "field `{name}` has {rows} row(s) but earlier fields have {l}"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(ArrayDataset { fields, len: len.unwrap_or(0) })
    }

    /// Borrows a whole-dataset field.
    pub fn field(&self, name: &str) -> Option<&HostTensor> {
        self.fields.get(name)
    }

    /// Borrows all whole-dataset fields.
    pub fn fields(&self) -> &TensorMap {
        &self.fields
    }

    /// Takes the whole-dataset fields.
    pub fn into_fields(self) -> TensorMap {
        self.fields
    }
}

impl Dataset for ArrayDataset {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize) -> Result<Example> {
        check_index(index, self.len)?;
        self.fields.iter().map(|(name, t)| Ok((name, t.row(index)?))).collect()
    }
}

/// A view of another dataset through a list of indices (which may repeat).
#[derive(Clone, Debug)]
pub struct Subset<D> {
    inner: D,
    indices: Arc<[usize]>,
}

impl<D: Dataset> Subset<D> {
    /// Selects `indices` of `inner`; fails if any is out of range.
    pub fn new(inner: D, indices: impl Into<Arc<[usize]>>) -> Result<Self> {
        let indices = indices.into();
        for &i in indices.iter() {
            check_index(i, inner.len())?;
        }
        Ok(Subset { inner, indices })
    }

    /// The selected indices of the inner dataset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The inner dataset.
    pub fn inner(&self) -> &D {
        &self.inner
    }
}

impl<D: Dataset> Dataset for Subset<D> {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn get(&self, index: usize) -> Result<Example> {
        check_index(index, self.indices.len())?;
        self.inner.get(self.indices[index])
    }

    fn get_for_epoch(&self, index: usize, epoch: u64) -> Result<Example> {
        check_index(index, self.indices.len())?;
        self.inner.get_for_epoch(self.indices[index], epoch)
    }
}
