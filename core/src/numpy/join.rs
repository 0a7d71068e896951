//! Joining and splitting: concatenate, stack, split, pad, tile, repeat.

use super::ops::{ArrayLike, ArrayOrScalar, broadcast_shape_of, broadcast_to_shape, fmt_shapes};
use super::{IntoIsize, IntoIsizes, norm_axis, norm_axis_n, ok, rename, shape_err};
use crate::array::Array;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::lax;
use std::borrow::Borrow;

fn promote_all(xs: &[&Array]) -> Vec<Array> {
    let dtype = xs.iter().map(|x| x.dtype()).reduce(DType::promote).unwrap_or(DType::F32);
    xs.iter().map(|x| lax::convert_element_type(x, dtype)).collect()
}

/// Joins arrays along an existing `axis` (negative counts from the end), promoting their
/// dtypes. All dims but `axis` must agree.
///
/// ```
/// use kiln::{Array, numpy::{concatenate, stack}};
/// let a = Array::from_vec(vec![1.0f32, 2.0], [1, 2]);
/// let b = Array::from_vec(vec![3.0f32, 4.0, 5.0, 6.0], [2, 2]);
/// assert_eq!(concatenate(&[&a, &b], 0).shape(), &[3, 2]);
/// assert_eq!(stack(&[&b, &b], -1).shape(), &[2, 2, 2]);
/// ```
#[track_caller]
pub fn concatenate<A: Borrow<Array>>(xs: &[A], axis: impl IntoIsize) -> Array {
    ok(try_concatenate(xs, axis))
}

/// Fallible [`concatenate`].
pub fn try_concatenate<A: Borrow<Array>>(xs: &[A], axis: impl IntoIsize) -> Result<Array> {
    let xs: Vec<&Array> = xs.iter().map(|x| x.borrow()).collect();
    let Some(first) = xs.first() else {
        return Err(Error::shape("concatenate", "needs at least one array", &[]));
    };
    if first.ndim() == 0 {
        return Err(shape_err("concatenate", "cannot concatenate 0-d arrays", &xs));
    }
    let axis = axis.into_isize();
    let a = norm_axis("concatenate", axis, first)?;
    let fits = xs.iter().all(|x| {
        x.ndim() == first.ndim()
            && (0..x.ndim()).all(|d| d == a || x.shape()[d] == first.shape()[d])
    });
    if !fits {
        let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
        return Err(shape_err(
            "concatenate",
            format!("cannot join shapes {} along axis {axis}", fmt_shapes(&shapes)),
            &xs,
        ));
    }
    lax::try_concatenate(&promote_all(&xs), a).map_err(|e| rename(e, "concatenate"))
}

/// Joins arrays of one shape along a new `axis` (of the result; negative counts from the
/// end), promoting their dtypes.
#[track_caller]
pub fn stack<A: Borrow<Array>>(xs: &[A], axis: impl IntoIsize) -> Array {
    ok(try_stack(xs, axis))
}

/// Fallible [`stack`].
pub fn try_stack<A: Borrow<Array>>(xs: &[A], axis: impl IntoIsize) -> Result<Array> {
    let xs: Vec<&Array> = xs.iter().map(|x| x.borrow()).collect();
    let Some(first) = xs.first() else {
        return Err(Error::shape("stack", "needs at least one array", &[]));
    };
    if xs.iter().any(|x| x.shape() != first.shape()) {
        let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
        return Err(shape_err(
            "stack",
            format!("arrays must have one shape, got {}", fmt_shapes(&shapes)),
            &xs,
        ));
    }
    let a = norm_axis_n("stack", axis.into_isize(), first.ndim() + 1, first)?;
    let parts: Vec<Array> = promote_all(&xs).iter().map(|x| lax::expand_dims(x, &[a])).collect();
    lax::try_concatenate(&parts, a).map_err(|e| rename(e, "stack"))
}

/// Broadcasts arrays against each other (numpy's `broadcast_arrays`); dtypes are kept.
#[track_caller]
pub fn broadcast_arrays<A: Borrow<Array>>(xs: &[A]) -> Vec<Array> {
    ok(try_broadcast_arrays(xs))
}

/// Fallible [`broadcast_arrays`].
pub fn try_broadcast_arrays<A: Borrow<Array>>(xs: &[A]) -> Result<Vec<Array>> {
    let xs: Vec<&Array> = xs.iter().map(|x| x.borrow()).collect();
    let shape = broadcast_shape_of("broadcast_arrays", &xs)?;
    Ok(xs.iter().map(|x| broadcast_to_shape(x, &shape)).collect())
}

/// How [`Array::split`] cuts an axis: into `n` equal sections (`usize`), or at the given
/// indices (a list of `usize`), like numpy's `split`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitSpec {
    /// This many equal sections (must divide the axis).
    Sections(usize),
    /// Cut before each of these indices.
    Indices(Vec<usize>),
}

impl From<usize> for SplitSpec {
    fn from(n: usize) -> SplitSpec {
        SplitSpec::Sections(n)
    }
}

impl From<Vec<usize>> for SplitSpec {
    fn from(v: Vec<usize>) -> SplitSpec {
        SplitSpec::Indices(v)
    }
}

impl From<&[usize]> for SplitSpec {
    fn from(v: &[usize]) -> SplitSpec {
        SplitSpec::Indices(v.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for SplitSpec {
    fn from(v: [usize; N]) -> SplitSpec {
        SplitSpec::Indices(v.to_vec())
    }
}

impl<const N: usize> From<&[usize; N]> for SplitSpec {
    fn from(v: &[usize; N]) -> SplitSpec {
        SplitSpec::Indices(v.to_vec())
    }
}

impl Array {
    /// Splits along `axis` into equal sections (`x.split(3, 0)`) or at indices
    /// (`x.split([2, 5], 0)`), like numpy's `split`.
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::arange(0.0, 6.0, 1.0);
    /// let parts = x.split(3, 0);
    /// assert_eq!(parts[1].to_vec::<f32>(), vec![2.0, 3.0]);
    /// let parts = x.split([1, 4], 0);
    /// assert_eq!(parts.iter().map(|p| p.shape()[0]).collect::<Vec<_>>(), vec![1, 3, 2]);
    /// ```
    #[track_caller]
    pub fn split(&self, spec: impl Into<SplitSpec>, axis: impl IntoIsize) -> Vec<Array> {
        ok(self.try_split(spec, axis))
    }

    /// Fallible [`Array::split`].
    pub fn try_split(
        &self,
        spec: impl Into<SplitSpec>,
        axis: impl IntoIsize,
    ) -> Result<Vec<Array>> {
        let a = norm_axis("split", axis.into_isize(), self)?;
        let n = self.shape()[a];
        let cuts: Vec<usize> = match spec.into() {
            SplitSpec::Sections(k) => {
                if k == 0 || !n.is_multiple_of(k) {
                    return Err(shape_err(
                        "split",
                        format!(
                            "axis {a} of size {n} (shape {:?}) does not split into {k} equal sections",
                            self.shape()
                        ),
                        &[self],
                    ));
                }
                (1..k).map(|i| i * n / k).collect()
            }
            SplitSpec::Indices(v) => v,
        };
        let mut out = Vec::with_capacity(cuts.len() + 1);
        let mut start = 0;
        for end in cuts.into_iter().chain([n]) {
            let end = end.min(n);
            let s = start.min(end);
            let mut lo = vec![0; self.ndim()];
            let mut hi = self.shape().to_vec();
            lo[a] = s;
            hi[a] = end;
            out.push(lax::try_slice(self, &lo, &hi, None)?);
            start = end.max(start);
        }
        Ok(out)
    }

    /// Pads with a constant: `widths[d] = (before, after)` elements on dim `d` (one pair
    /// applies to every dim). The value is converted to this array's dtype.
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::from_vec(vec![1.0f32, 2.0], [2]);
    /// assert_eq!(x.pad(&[(1, 2)], 0.0).to_vec::<f32>(), vec![0.0, 1.0, 2.0, 0.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn pad(&self, widths: &[(usize, usize)], value: impl ArrayLike) -> Array {
        ok(self.try_pad(widths, value))
    }

    /// Fallible [`Array::pad`].
    pub fn try_pad(&self, widths: &[(usize, usize)], value: impl ArrayLike) -> Result<Array> {
        let nd = self.ndim();
        if widths.len() != nd && widths.len() != 1 {
            return Err(shape_err(
                "pad",
                format!("{} (before, after) pairs for shape {:?}", widths.len(), self.shape()),
                &[self],
            ));
        }
        let v = match value.into_array_or_scalar() {
            ArrayOrScalar::Scalar(s) => s.to_array(self.dtype()),
            ArrayOrScalar::Array(v) if v.ndim() == 0 => lax::convert_element_type(&v, self.dtype()),
            ArrayOrScalar::Array(v) => {
                return Err(shape_err("pad", "the padding value must be 0-d", &[self, &v]));
            }
        };
        let cfg: Vec<(i64, i64, usize)> = (0..nd)
            .map(|d| {
                let (lo, hi) = widths[if widths.len() == 1 { 0 } else { d }];
                (lo as i64, hi as i64, 0)
            })
            .collect();
        Ok(lax::pad(self, &v, &cfg))
    }

    /// Repeats the whole array `reps[d]` times along each dim (numpy's `tile`; shorter
    /// `reps` or shapes are padded with leading 1s).
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::from_vec(vec![1i32, 2], [2]);
    /// assert_eq!(x.tile([2]).to_vec::<i32>(), vec![1, 2, 1, 2]);
    /// assert_eq!(x.repeat(2, 0).to_vec::<i32>(), vec![1, 1, 2, 2]);
    /// ```
    #[track_caller]
    pub fn tile(&self, reps: impl IntoIsizes) -> Array {
        ok(self.try_tile(reps))
    }

    /// Fallible [`Array::tile`].
    pub fn try_tile(&self, reps: impl IntoIsizes) -> Result<Array> {
        let reps = reps.into_isizes();
        if reps.iter().any(|&r| r < 0) {
            return Err(shape_err("tile", format!("negative repetitions {reps:?}"), &[self]));
        }
        let d = self.ndim().max(reps.len());
        let mut shape = vec![1usize; d - self.ndim()];
        shape.extend_from_slice(self.shape());
        let mut r = vec![1usize; d - reps.len()];
        r.extend(reps.iter().map(|&v| v as usize));
        let x = lax::reshape(self, &shape);
        let mut big = Vec::with_capacity(2 * d);
        for i in 0..d {
            big.push(r[i]);
            big.push(shape[i]);
        }
        let dims: Vec<usize> = (0..d).map(|i| 2 * i + 1).collect();
        let b = lax::broadcast_in_dim(&x, &big, &dims);
        let out: Vec<usize> = (0..d).map(|i| r[i] * shape[i]).collect();
        Ok(lax::reshape(&b, &out))
    }

    /// Repeats each element `repeats` times along `axis` (numpy's `repeat` with a scalar
    /// count).
    #[track_caller]
    pub fn repeat(&self, repeats: usize, axis: impl IntoIsize) -> Array {
        ok(self.try_repeat(repeats, axis))
    }

    /// Fallible [`Array::repeat`].
    pub fn try_repeat(&self, repeats: usize, axis: impl IntoIsize) -> Result<Array> {
        let a = norm_axis("repeat", axis.into_isize(), self)?;
        let mut big = self.shape().to_vec();
        big.insert(a + 1, repeats);
        let dims: Vec<usize> = (0..self.ndim()).map(|i| if i <= a { i } else { i + 1 }).collect();
        let b = lax::broadcast_in_dim(self, &big, &dims);
        let mut out = self.shape().to_vec();
        out[a] *= repeats;
        Ok(lax::reshape(&b, &out))
    }
}
