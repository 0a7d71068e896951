//! Named tensors: one [`Example`] per sample.

use std::fmt;

use crate::error::{DataError, Result};
use crate::tensor::HostTensor;

/// An ordered map from field names to [`HostTensor`]s.
///
/// Fields keep their insertion order (so batches list `image` before `label`
/// when the source inserted them that way); names are unique. Lookups are
/// linear, which is the fastest choice for the handful of fields an example
/// has.
#[derive(Clone, Default, PartialEq)]
pub struct TensorMap {
    entries: Vec<(String, HostTensor)>,
}

/// One sample: its fields by name (for example `image` and `label`).
pub type Example = TensorMap;

impl TensorMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder-style [`insert`](Self::insert).
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, tensor: HostTensor) -> Self {
        self.insert(name, tensor);
        self
    }

    /// Inserts or replaces a field; a replaced field keeps its position.
    /// Returns the previous tensor of that name.
    pub fn insert(&mut self, name: impl Into<String>, tensor: HostTensor) -> Option<HostTensor> {
        let name = name.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some((_, slot)) => Some(std::mem::replace(slot, tensor)),
            None => {
                self.entries.push((name, tensor));
                None
            }
        }
    }

    /// Borrows a field.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Mutably borrows a field.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut HostTensor> {
        self.entries.iter_mut().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Borrows a field, failing with [`DataError::MissingField`].
    pub fn require(&self, name: &str) -> Result<&HostTensor> {
        self.get(name).ok_or_else(|| DataError::MissingField(name.to_string()))
    }

    /// Removes a field and returns it.
    pub fn remove(&mut self, name: &str) -> Option<HostTensor> {
        let pos = self.entries.iter().position(|(n, _)| n == name)?;
        Some(self.entries.remove(pos).1)
    }

    /// Removes a field, failing with [`DataError::MissingField`].
    pub fn take(&mut self, name: &str) -> Result<HostTensor> {
        self.remove(name).ok_or_else(|| DataError::MissingField(name.to_string()))
    }

    /// Whether a field exists.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Field names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// `(name, tensor)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &HostTensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Stacks equally shaped examples field by field into tensors with a
    /// leading batch dimension. Field order follows the first example; every
    /// example must have exactly the same fields, dtypes and shapes.
    pub fn stack(examples: &[TensorMap]) -> Result<TensorMap> {
        let first = examples
            .first()
            .ok_or_else(|| DataError::Shape("cannot stack zero examples".into()))?;
        for (i, ex) in examples.iter().enumerate() {
            if ex.len() != first.len() {
                let names: Vec<&str> = ex.names().collect();
                let expected: Vec<&str> = first.names().collect();
                return Err(DataError::Shape(format!(
                    "example {i} has fields {names:?}, expected {expected:?}"
                )));
            }
        }
        let mut out = TensorMap::new();
        let mut column = Vec::with_capacity(examples.len());
        for (name, _) in first.iter() {
            column.clear();
            for ex in examples {
                column.push(ex.require(name)?);
            }
            let stacked = HostTensor::stack(&column).map_err(|e| match e {
                DataError::Shape(msg) => DataError::Shape(format!("field `{name}`: {msg}")),
                DataError::DType { expected, found, context } => DataError::DType {
                    expected,
                    found,
                    context: format!("field `{name}`, {context}"),
                },
                other => other,
            })?;
            out.insert(name, stacked);
        }
        Ok(out)
    }
}

impl fmt::Debug for TensorMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries.iter().map(|(n, t)| (n, t))).finish()
    }
}

impl<S: Into<String>> FromIterator<(S, HostTensor)> for TensorMap {
    fn from_iter<I: IntoIterator<Item = (S, HostTensor)>>(iter: I) -> Self {
        let mut map = TensorMap::new();
        for (name, tensor) in iter {
            map.insert(name, tensor);
        }
        map
    }
}

impl IntoIterator for TensorMap {
    type Item = (String, HostTensor);
    type IntoIter = std::vec::IntoIter<(String, HostTensor)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// A batch of examples stacked into tensors with a leading batch dimension,
/// plus where they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    tensors: TensorMap,
    indices: Vec<usize>,
    epoch: u64,
}

impl Batch {
    /// Stacks `examples` (which were dataset items `indices` in `epoch`).
    pub fn from_examples(examples: &[Example], indices: Vec<usize>, epoch: u64) -> Result<Self> {
        if examples.len() != indices.len() {
            return Err(DataError::Shape(format!(
                "{} example(s) but {} index(es)",
                examples.len(),
                indices.len()
            )));
        }
        Ok(Batch { tensors: TensorMap::stack(examples)?, indices, epoch })
    }

    /// Number of examples in the batch.
    pub fn size(&self) -> usize {
        self.indices.len()
    }

    /// Dataset indices of the examples, in batch order.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The epoch the batch belongs to.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Borrows a stacked field.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.get(name)
    }

    /// Borrows a stacked field, failing with [`DataError::MissingField`].
    pub fn require(&self, name: &str) -> Result<&HostTensor> {
        self.tensors.require(name)
    }

    /// Removes a stacked field (to move its vector out without copying).
    pub fn take(&mut self, name: &str) -> Result<HostTensor> {
        self.tensors.take(name)
    }

    /// Borrows all stacked fields.
    pub fn tensors(&self) -> &TensorMap {
        &self.tensors
    }

    /// Takes all stacked fields.
    pub fn into_tensors(self) -> TensorMap {
        self.tensors
    }
}
