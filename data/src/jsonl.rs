//! JSON Lines files with numeric fields.
//!
//! Each non-empty line is a JSON object. The chosen fields must be numbers,
//! booleans (for [`DType::Bool`]) or rectangular nested arrays of them; a
//! field's shape is taken from the first line and must be the same on every
//! line. Integer dtypes require integral values that fit the type. Other
//! keys are ignored.

use std::path::Path;

use serde_json::Value;

use crate::dataset::{ArrayDataset, Dataset};
use crate::error::{DataError, Result};
use crate::example::Example;
use crate::gzip::read_maybe_gzip;
use crate::tensor::{DType, Element, HostTensor, TensorData, with_vec};

#[derive(Clone, Copy, Debug)]
enum Scalar {
    Float(f64),
    Int(i128),
    Bool(bool),
}

/// The shape of a (possibly nested) JSON array, read along first elements.
fn shape_of(mut value: &Value) -> Vec<usize> {
    let mut shape = Vec::new();
    while let Value::Array(items) = value {
        shape.push(items.len());
        match items.first() {
            Some(first) => value = first,
            None => break,
        }
    }
    shape
}

/// Appends the scalars of `value` in row-major order, checking that it is
/// rectangular with the given shape.
fn flatten(
    value: &Value,
    shape: &[usize],
    out: &mut Vec<Scalar>,
) -> std::result::Result<(), String> {
    match (value, shape.split_first()) {
        (Value::Array(items), Some((&len, rest))) if items.len() == len => {
            items.iter().try_for_each(|item| flatten(item, rest, out))
        }
        (Value::Array(_), _) => Err("ragged nested array".into()),
        (_, Some(_)) => Err("ragged nested array".into()),
        (Value::Number(n), None) => {
            out.push(if let Some(i) = n.as_i64() {
                Scalar::Int(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Scalar::Int(i128::from(u))
            } else {
                Scalar::Float(n.as_f64().unwrap_or(f64::NAN))
            });
            Ok(())
        }
        (Value::Bool(b), None) => {
            out.push(Scalar::Bool(*b));
            Ok(())
        }
        (other, None) => Err(format!("expected a number or an array, found {other}")),
    }
}

/// Converts `values` to the element type of `acc` and appends them.
fn extend_converted(acc: &mut TensorData, values: &[Scalar]) -> std::result::Result<(), String> {
    with_vec!(acc, v => {
        for &s in values {
            v.push(convert(s)?);
        }
        Ok(())
    })
}

fn convert<T: Element>(s: Scalar) -> std::result::Result<T, String> {
    match (T::DTYPE, s) {
        (DType::Bool, Scalar::Bool(b)) => Ok(T::from_f64(if b { 1.0 } else { 0.0 })),
        (DType::Bool, _) => Err("expected true or false".into()),
        (_, Scalar::Bool(_)) => Err(format!("a boolean cannot be a {} value", T::DTYPE)),
        (d, Scalar::Float(x)) if d.is_float() => Ok(T::from_f64(x)),
        (d, Scalar::Int(i)) if d.is_float() => Ok(T::from_f64(i as f64)),
        (d, Scalar::Float(x)) => {
            if x.fract() != 0.0 || !x.is_finite() {
                return Err(format!("{x} is not an integer ({d} field)"));
            }
            convert::<T>(Scalar::Int(x as i128))
        }
        (d, Scalar::Int(i)) => {
            let v = T::from_i128(i);
            if v.to_i128() == i { Ok(v) } else { Err(format!("{i} does not fit in {d}")) }
        }
    }
}

/// A JSON Lines file loaded into memory (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct JsonlDataset {
    inner: ArrayDataset,
}

impl JsonlDataset {
    /// Reads `path` (gzip detected by magic bytes), extracting `fields` as
    /// `(name, dtype)` pairs.
    pub fn open(path: impl AsRef<Path>, fields: &[(&str, DType)]) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_maybe_gzip(path)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
            DataError::parse(path, line, "invalid UTF-8")
        })?;
        Self::parse(text, path, fields)
    }

    /// Parses JSON Lines text; `path` names the source in errors.
    pub fn parse(text: &str, path: &Path, fields: &[(&str, DType)]) -> Result<Self> {
        let mut shapes: Vec<Option<Vec<usize>>> = vec![None; fields.len()];
        let mut columns: Vec<TensorData> =
            fields.iter().map(|&(_, dtype)| TensorData::zeros(dtype, 0)).collect();
        let mut values = Vec::new();
        let mut rows = 0usize;
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let err = |m: String| DataError::parse(path, line_no, m);
            let value: Value =
                serde_json::from_str(line).map_err(|e| err(format!("invalid JSON: {e}")))?;
            let object = value.as_object().ok_or_else(|| err("expected a JSON object".into()))?;
            for (k, &(name, _)) in fields.iter().enumerate() {
                let v = object.get(name).ok_or_else(|| err(format!("missing field `{name}`")))?;
                let shape = shapes[k].get_or_insert_with(|| shape_of(v));
                values.clear();
                flatten(v, shape, &mut values)
                    .map_err(|m| err(format!("field `{name}`: {m} (expected shape {shape:?})")))?;
                extend_converted(&mut columns[k], &values)
                    .map_err(|m| err(format!("field `{name}`: {m}")))?;
            }
            rows += 1;
        }
        let mut tensors = Vec::with_capacity(fields.len());
        for ((&(name, _), shape), data) in fields.iter().zip(shapes).zip(columns) {
            let mut full_shape = vec![rows];
            full_shape.extend(shape.unwrap_or_default());
            tensors.push((name, HostTensor::new(full_shape, data)?));
        }
        Ok(JsonlDataset { inner: ArrayDataset::new(tensors)? })
    }

    /// The whole file as an [`ArrayDataset`].
    pub fn as_arrays(&self) -> &ArrayDataset {
        &self.inner
    }
}

impl Dataset for JsonlDataset {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn get(&self, index: usize) -> Result<Example> {
        self.inner.get(index)
    }
}
