//! Dataset adapters and per-example transforms.
//!
//! [`DatasetExt`] adds combinators to every [`Dataset`]:
//! [`map`](DatasetExt::map) applies a deterministic function to each example,
//! [`map_random`](DatasetExt::map_random) a random one whose [`Rng`] is a
//! pure function of `(seed, epoch, example index)` (so augmentation is
//! reproducible and survives a loader restore), and
//! [`filter`](DatasetExt::filter) keeps the examples matching a predicate.
//!
//! The free functions build ready-made transforms to pass to `map` /
//! `map_random`: [`normalize`], [`cast`], [`cast_scaled`], [`one_hot`],
//! [`random_crop`], [`random_flip`], [`tokenize`], [`rename`] and [`select`].
//!
//! ```
//! use kiln_data::{ArrayDataset, Dataset, DatasetExt, DType, HostTensor};
//! use kiln_data::transform::{cast_scaled, normalize, one_hot, random_flip};
//!
//! let images = HostTensor::from_vec(vec![2, 2, 2], vec![0u8, 255, 0, 255, 255, 0, 255, 0])?;
//! let labels = HostTensor::vector(vec![0i32, 1]);
//! let ds = ArrayDataset::new([("image", images), ("label", labels)])?
//!     .map(cast_scaled("image", DType::F32, 1.0 / 255.0))
//!     .map(normalize("image", &[0.5], &[0.5])?)
//!     .map(one_hot("label", 2))
//!     .map_random(7, random_flip("image", 0.5));
//! let ex = ds.get_for_epoch(1, 3)?;
//! assert_eq!(ex.require("image")?.dtype(), DType::F32);
//! assert_eq!(ex.require("label")?.as_f32(), Some(&[0.0, 1.0][..]));
//! # Ok::<(), kiln_data::DataError>(())
//! ```

use std::sync::Arc;

use crate::dataset::{Dataset, check_index};
use crate::error::{DataError, Result};
use crate::example::Example;
use crate::rng::Rng;
use crate::tensor::{DType, Element, HostTensor, TensorData, with_vec};
use crate::text::Vocab;

/// Domain-separation tag for augmentation streams.
const AUGMENT_STREAM: u64 = 0x4155_474D_454E_5431; // "AUGMENT1"

/// Combinators available on every [`Dataset`].
pub trait DatasetExt: Dataset + Sized {
    /// Applies `f` to every example.
    fn map<F>(self, f: F) -> Map<Self, F>
    where
        F: Fn(Example) -> Result<Example> + Send + Sync,
    {
        Map { inner: self, f }
    }

    /// Applies a random transform. `f` receives an [`Rng`] derived from
    /// `(seed, epoch, index)`, so the same example in the same epoch is
    /// always transformed the same way, whatever the worker or the order.
    fn map_random<F>(self, seed: u64, f: F) -> MapRandom<Self, F>
    where
        F: Fn(Example, &mut Rng) -> Result<Example> + Send + Sync,
    {
        MapRandom { inner: self, f, seed }
    }

    /// Keeps the examples for which `predicate` holds.
    ///
    /// The kept index list is computed here, once, by scanning every example
    /// (as returned by [`Dataset::get`], i.e. before any epoch-dependent
    /// augmentation), so the filtered dataset has a fixed length and stays
    /// random-access, deterministic and resumable.
    fn filter<P>(self, predicate: P) -> Result<Filter<Self>>
    where
        P: Fn(&Example) -> bool,
    {
        let mut kept = Vec::new();
        for i in 0..self.len() {
            if predicate(&self.get(i)?) {
                kept.push(i);
            }
        }
        Ok(Filter { inner: self, kept: kept.into() })
    }

    /// Wraps the dataset in an [`Arc`] (cheap to clone and share).
    fn into_arc(self) -> Arc<Self> {
        Arc::new(self)
    }
}

impl<D: Dataset> DatasetExt for D {}

/// See [`DatasetExt::map`].
#[derive(Clone, Debug)]
pub struct Map<D, F> {
    inner: D,
    f: F,
}

impl<D, F> Dataset for Map<D, F>
where
    D: Dataset,
    F: Fn(Example) -> Result<Example> + Send + Sync,
{
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn get(&self, index: usize) -> Result<Example> {
        (self.f)(self.inner.get(index)?)
    }

    fn get_for_epoch(&self, index: usize, epoch: u64) -> Result<Example> {
        (self.f)(self.inner.get_for_epoch(index, epoch)?)
    }
}

/// See [`DatasetExt::map_random`].
#[derive(Clone, Debug)]
pub struct MapRandom<D, F> {
    inner: D,
    f: F,
    seed: u64,
}

impl<D, F> Dataset for MapRandom<D, F>
where
    D: Dataset,
    F: Fn(Example, &mut Rng) -> Result<Example> + Send + Sync,
{
    fn len(&self) -> usize {
        self.inner.len()
    }

    /// Same as `get_for_epoch(index, 0)`.
    fn get(&self, index: usize) -> Result<Example> {
        self.get_for_epoch(index, 0)
    }

    fn get_for_epoch(&self, index: usize, epoch: u64) -> Result<Example> {
        let mut rng = Rng::derive(self.seed, &[AUGMENT_STREAM, epoch, index as u64]);
        (self.f)(self.inner.get_for_epoch(index, epoch)?, &mut rng)
    }
}

/// See [`DatasetExt::filter`].
#[derive(Clone, Debug)]
pub struct Filter<D> {
    inner: D,
    kept: Arc<[usize]>,
}

impl<D> Filter<D> {
    /// Indices of the inner dataset that were kept, in order.
    pub fn kept_indices(&self) -> &[usize] {
        &self.kept
    }
}

impl<D: Dataset> Dataset for Filter<D> {
    fn len(&self) -> usize {
        self.kept.len()
    }

    fn get(&self, index: usize) -> Result<Example> {
        check_index(index, self.kept.len())?;
        self.inner.get(self.kept[index])
    }

    fn get_for_epoch(&self, index: usize, epoch: u64) -> Result<Example> {
        check_index(index, self.kept.len())?;
        self.inner.get_for_epoch(self.kept[index], epoch)
    }
}

fn field_dtype_error(name: &str, expected: DType, found: DType) -> DataError {
    DataError::DType { expected, found, context: format!("field `{name}`") }
}

/// Converts a field to `dtype` (`as`-like semantics).
pub fn cast(
    field: impl Into<String>,
    dtype: DType,
) -> impl Fn(Example) -> Result<Example> + Clone + Send + Sync + 'static {
    let field = field.into();
    move |mut ex: Example| {
        let t = ex.take(&field)?;
        if t.dtype() != dtype {
            ex.insert(field.clone(), t.cast(dtype));
        } else {
            ex.insert(field.clone(), t);
        }
        Ok(ex)
    }
}

/// Converts a field to `dtype`, multiplying by `scale` on the way (e.g.
/// `u8` pixels to `f32` in `[0, 1]` with `scale = 1.0 / 255.0`). The product
/// is computed in `f32` for `f32` targets and in `f64` otherwise.
pub fn cast_scaled(
    field: impl Into<String>,
    dtype: DType,
    scale: f64,
) -> impl Fn(Example) -> Result<Example> + Clone + Send + Sync + 'static {
    let field = field.into();
    move |mut ex: Example| {
        let t = ex.take(&field)?;
        let out = if dtype == DType::F32 {
            let s = scale as f32;
            let mut v = t.to_f32_vec();
            v.iter_mut().for_each(|x| *x *= s);
            HostTensor::from_vec(t.shape().to_vec(), v)?
        } else {
            let v: Vec<f64> =
                t.cast(DType::F64).into_vec::<f64>()?.into_iter().map(|x| x * scale).collect();
            HostTensor::from_vec(t.shape().to_vec(), v)?.cast(dtype)
        };
        ex.insert(field.clone(), out);
        Ok(ex)
    }
}

/// Normalizes a field to `(x - mean) / std` in `f32` (converting it first if
/// needed). `mean` and `std` hold either one value (applied to every
/// element) or one value per entry of the last dimension (per channel of an
/// HWC image, or per feature of a table row). Fails now if the lengths differ
/// or a `std` is not positive, and per example if the field does not fit.
pub fn normalize(
    field: impl Into<String>,
    mean: &[f32],
    std: &[f32],
) -> Result<impl Fn(Example) -> Result<Example> + Clone + Send + Sync + 'static> {
    let field = field.into();
    if mean.is_empty() || mean.len() != std.len() {
        return Err(DataError::Config(format!(
            "normalize `{field}`: mean has {} value(s) and std {}",
            mean.len(),
            std.len()
        )));
    }
    if std.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
        return Err(DataError::Config(format!(
            "normalize `{field}`: std values must be positive and finite"
        )));
    }
    let mean: Arc<[f32]> = mean.into();
    let inv_std: Arc<[f32]> = std.iter().map(|s| 1.0 / s).collect();
    Ok(move |mut ex: Example| {
        let t = ex.take(&field)?;
        let shape = t.shape().to_vec();
        let mut v = match t.dtype() {
            DType::F32 => t.into_f32_vec()?,
            _ => t.to_f32_vec(),
        };
        if mean.len() == 1 {
            let (m, s) = (mean[0], inv_std[0]);
            v.iter_mut().for_each(|x| *x = (*x - m) * s);
        } else {
            let last = shape.last().copied().unwrap_or(1);
            if last != mean.len() {
                return Err(DataError::Shape(format!(
                    "normalize `{field}`: last dimension {last} does not match {} mean/std values",
                    mean.len()
                )));
            }
            for row in v.chunks_exact_mut(last) {
                for ((x, m), s) in row.iter_mut().zip(mean.iter()).zip(inv_std.iter()) {
                    *x = (*x - m) * s;
                }
            }
        }
        ex.insert(field.clone(), HostTensor::from_vec(shape, v)?);
        Ok(ex)
    })
}

/// Replaces an integer field of shape `S` (usually a scalar label) by its
/// one-hot encoding, `f32` of shape `S + [num_classes]`. A value outside
/// `0..num_classes` is a [`DataError::LabelOutOfRange`].
pub fn one_hot(
    field: impl Into<String>,
    num_classes: usize,
) -> impl Fn(Example) -> Result<Example> + Clone + Send + Sync + 'static {
    let field = field.into();
    move |mut ex: Example| {
        let t = ex.take(&field)?;
        if !t.dtype().is_int() {
            return Err(DataError::DType {
                expected: DType::I32,
                found: t.dtype(),
                context: format!("one_hot `{field}` needs an integer field"),
            });
        }
        let mut out = vec![0.0f32; t.numel() * num_classes];
        for i in 0..t.numel() {
            let label = t.get_i64(i).unwrap_or(-1);
            if label < 0 || label as u64 >= num_classes as u64 {
                return Err(DataError::LabelOutOfRange {
                    label,
                    num_classes,
                    context: format!("one_hot of field `{field}`"),
                });
            }
            out[i * num_classes + label as usize] = 1.0;
        }
        let mut shape = t.shape().to_vec();
        shape.push(num_classes);
        ex.insert(field.clone(), HostTensor::from_vec(shape, out)?);
        Ok(ex)
    }
}

/// `(height, width, channels)` of an `[H, W]` or `[H, W, C]` tensor.
fn hwc(t: &HostTensor, field: &str) -> Result<(usize, usize, usize)> {
    match *t.shape() {
        [h, w] => Ok((h, w, 1)),
        [h, w, c] => Ok((h, w, c)),
        ref s => Err(DataError::Shape(format!(
            "field `{field}` must be an [H, W] or [H, W, C] image, found shape {s:?}"
        ))),
    }
}

struct CropGeometry {
    src_h: usize,
    src_w: usize,
    channels: usize,
    out_h: usize,
    out_w: usize,
    /// Top-left corner of the window, in padded coordinates.
    top: usize,
    left: usize,
    pad: usize,
}

fn crop_hwc<T: Element>(src: &[T], g: &CropGeometry) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let c = g.channels;
    let mut out = Vec::with_capacity(g.out_h * g.out_w * c);
    for y in 0..g.out_h {
        let sy = (g.top + y).checked_sub(g.pad).filter(|&sy| sy < g.src_h);
        for x in 0..g.out_w {
            let sx = (g.left + x).checked_sub(g.pad).filter(|&sx| sx < g.src_w);
            match (sy, sx) {
                (Some(sy), Some(sx)) => {
                    let at = (sy * g.src_w + sx) * c;
                    out.extend_from_slice(&src[at..at + c]);
                }
                _ => out.extend(std::iter::repeat_n(zero, c)),
            }
        }
    }
    out
}

/// Random crop of an `[H, W]` or `[H, W, C]` image: zero-pads every side by
/// `padding`, then cuts a `height × width` window at a uniformly random
/// position (the classic CIFAR augmentation is `random_crop("image", 32,
/// 32, 4)`). Works for any dtype. Use with [`DatasetExt::map_random`].
pub fn random_crop(
    field: impl Into<String>,
    height: usize,
    width: usize,
    padding: usize,
) -> impl Fn(Example, &mut Rng) -> Result<Example> + Clone + Send + Sync + 'static {
    let field = field.into();
    move |mut ex: Example, rng: &mut Rng| {
        let t = ex.take(&field)?;
        let (h, w, c) = hwc(&t, &field)?;
        let (ph, pw) = (h + 2 * padding, w + 2 * padding);
        if height > ph || width > pw {
            return Err(DataError::Shape(format!(
                "cannot crop {height}x{width} from a {h}x{w} image padded by {padding}"
            )));
        }
        let g = CropGeometry {
            src_h: h,
            src_w: w,
            channels: c,
            out_h: height,
            out_w: width,
            top: rng.below_usize(ph - height + 1),
            left: rng.below_usize(pw - width + 1),
            pad: padding,
        };
        let data = with_vec!(t.data(), v => TensorData::from(crop_hwc(v, &g)));
        let shape = if t.rank() == 2 { vec![height, width] } else { vec![height, width, c] };
        ex.insert(field.clone(), HostTensor::new(shape, data)?);
        Ok(ex)
    }
}

fn flip_hwc<T: Copy>(data: &mut [T], w: usize, c: usize) {
    if w == 0 || c == 0 {
        return;
    }
    for row in data.chunks_exact_mut(w * c) {
        for x in 0..w / 2 {
            let (a, b) = (x * c, (w - 1 - x) * c);
            for k in 0..c {
                row.swap(a + k, b + k);
            }
        }
    }
}

/// Mirrors an `[H, W]` or `[H, W, C]` image left–right with probability
/// `p`. Use with [`DatasetExt::map_random`].
pub fn random_flip(
    field: impl Into<String>,
    p: f64,
) -> impl Fn(Example, &mut Rng) -> Result<Example> + Clone + Send + Sync + 'static {
    let field = field.into();
    move |mut ex: Example, rng: &mut Rng| {
        if !rng.bernoulli(p) {
            return Ok(ex);
        }
        let t = ex.take(&field)?;
        let (_, w, c) = hwc(&t, &field)?;
        let (shape, mut data) = t.into_parts();
        with_vec!(&mut data, v => flip_hwc(v, w, c));
        ex.insert(field.clone(), HostTensor::new(shape, data)?);
        Ok(ex)
    }
}

/// Tokenizes a text field (UTF-8 bytes, as produced by
/// [`TextLines`](crate::TextLines)) with `vocab` into a fixed-length `i32`
/// field `output` of shape `[max_len]`: truncated, or padded with `pad_id`.
/// Also writes `{output}_len`, the number of real tokens (`i32` scalar).
pub fn tokenize(
    field: impl Into<String>,
    output: impl Into<String>,
    vocab: Vocab,
    max_len: usize,
    pad_id: u32,
) -> impl Fn(Example) -> Result<Example> + Clone + Send + Sync + 'static {
    let field = field.into();
    let output = output.into();
    let vocab = Arc::new(vocab);
    move |mut ex: Example| {
        let t = ex.take(&field)?;
        let bytes =
            t.as_slice::<u8>().ok_or_else(|| field_dtype_error(&field, DType::U8, t.dtype()))?;
        let mut ids = vocab.encode_bytes(bytes)?;
        ids.truncate(max_len);
        let len = ids.len();
        ids.resize(max_len, pad_id);
        let ids: Vec<i32> = ids
            .into_iter()
            .map(|id| {
                i32::try_from(id).map_err(|_| DataError::Vocab(format!("id {id} exceeds i32")))
            })
            .collect::<Result<_>>()?;
        ex.insert(output.clone(), HostTensor::vector(ids));
        // `len <= max_len`, which came from a usize; saturate rather than wrap.
        ex.insert(
            format!("{output}_len"),
            HostTensor::scalar(i32::try_from(len).unwrap_or(i32::MAX)),
        );
        Ok(ex)
    }
}

/// Renames a field.
pub fn rename(
    from: impl Into<String>,
    to: impl Into<String>,
) -> impl Fn(Example) -> Result<Example> + Clone + Send + Sync + 'static {
    let (from, to) = (from.into(), to.into());
    move |mut ex: Example| {
        let t = ex.take(&from)?;
        ex.insert(to.clone(), t);
        Ok(ex)
    }
}

/// Keeps only the named fields, in the given order.
pub fn select<S: Into<String>>(
    fields: impl IntoIterator<Item = S>,
) -> impl Fn(Example) -> Result<Example> + Clone + Send + Sync + 'static {
    let fields: Arc<[String]> = fields.into_iter().map(Into::into).collect();
    move |mut ex: Example| fields.iter().map(|f| Ok((f.clone(), ex.take(f)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_mirrors_pixels_not_channels() {
        let mut v = vec![1, 2, 3, 4, 5, 6]; // one row, 3 pixels of 2 channels
        flip_hwc(&mut v, 3, 2);
        assert_eq!(v, vec![5, 6, 3, 4, 1, 2]);
    }

    #[test]
    fn crop_with_padding_fills_zeros() {
        // 2x2 single channel, padded by 1, crop 2x2 at the padded origin.
        let g = CropGeometry {
            src_h: 2,
            src_w: 2,
            channels: 1,
            out_h: 2,
            out_w: 2,
            top: 0,
            left: 0,
            pad: 1,
        };
        assert_eq!(crop_hwc(&[1u8, 2, 3, 4], &g), vec![0, 0, 0, 1]);
    }
}
