//! Shape manipulation: reshape, transpose, axis moves, broadcasting, squeeze and expand.

use super::{IntoIsize, IntoIsizes, norm_axes, norm_axis, norm_axis_n, ok, shape_err};
use crate::array::Array;
use crate::error::Result;
use crate::lax;

impl Array {
    /// The same elements (row-major) in a new shape; one entry may be `-1` and is inferred.
    ///
    /// Panics if the element counts differ; see [`Array::try_reshape`].
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::arange(0.0, 6.0, 1.0);
    /// assert_eq!(x.reshape([2, -1]).shape(), &[2, 3]);
    /// assert_eq!(x.reshape([3usize, 2]).shape(), &[3, 2]);
    /// ```
    #[track_caller]
    pub fn reshape(&self, shape: impl IntoIsizes) -> Array {
        ok(self.try_reshape(shape))
    }

    /// Fallible [`Array::reshape`].
    pub fn try_reshape(&self, shape: impl IntoIsizes) -> Result<Array> {
        let spec = shape.into_isizes();
        let err = |msg: String| shape_err("reshape", msg, &[self]);
        if spec.iter().filter(|&&d| d == -1).count() > 1 {
            return Err(err(format!("can only infer one dimension of {spec:?}")));
        }
        if let Some(d) = spec.iter().find(|&&d| d < -1) {
            return Err(err(format!("invalid dimension {d} in {spec:?}")));
        }
        let known: usize = spec.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
        let size = self.size();
        let mut out: Vec<usize> = Vec::with_capacity(spec.len());
        for &d in &spec {
            if d == -1 {
                if known == 0 || !size.is_multiple_of(known) {
                    return Err(err(format!(
                        "cannot reshape array of shape {:?} ({size} elements) into shape {spec:?}",
                        self.shape()
                    )));
                }
                out.push(size / known);
            } else {
                out.push(d as usize);
            }
        }
        if out.iter().product::<usize>() != size {
            return Err(err(format!(
                "cannot reshape array of shape {:?} ({size} elements) into shape {spec:?}",
                self.shape()
            )));
        }
        lax::try_reshape(self, &out)
    }

    /// Permutes the dimensions: output dim `i` is input dim `perm[i]` (negative entries
    /// count from the end).
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::zeros([2, 3, 4]);
    /// assert_eq!(x.transpose([2, 0, 1]).shape(), &[4, 2, 3]);
    /// assert_eq!(x.t().shape(), &[4, 3, 2]);
    /// assert_eq!(x.mt().shape(), &[2, 4, 3]);
    /// ```
    #[track_caller]
    pub fn transpose(&self, perm: impl IntoIsizes) -> Array {
        ok(self.try_transpose(perm))
    }

    /// Fallible [`Array::transpose`].
    pub fn try_transpose(&self, perm: impl IntoIsizes) -> Result<Array> {
        let perm = perm.into_isizes();
        if perm.len() != self.ndim() {
            return Err(shape_err(
                "transpose",
                format!("permutation {perm:?} does not match shape {:?}", self.shape()),
                &[self],
            ));
        }
        let p = norm_axes("transpose", &perm, self)?;
        Ok(lax::transpose(self, &p))
    }

    /// Reverses the order of all dimensions (numpy's `.T`).
    pub fn t(&self) -> Array {
        let perm: Vec<usize> = (0..self.ndim()).rev().collect();
        lax::transpose(self, &perm)
    }

    /// Swaps the last two dimensions (a batched matrix transpose, numpy's `.mT`).
    ///
    /// Panics if the array has fewer than two dimensions.
    #[track_caller]
    pub fn mt(&self) -> Array {
        ok(self.try_mt())
    }

    /// Fallible [`Array::mt`].
    pub fn try_mt(&self) -> Result<Array> {
        if self.ndim() < 2 {
            return Err(shape_err(
                "mt",
                format!("needs at least 2 dimensions, got shape {:?}", self.shape()),
                &[self],
            ));
        }
        self.try_swapaxes(-1, -2)
    }

    /// Swaps two dimensions.
    #[track_caller]
    pub fn swapaxes(&self, a: impl IntoIsize, b: impl IntoIsize) -> Array {
        ok(self.try_swapaxes(a, b))
    }

    /// Fallible [`Array::swapaxes`].
    pub fn try_swapaxes(&self, a: impl IntoIsize, b: impl IntoIsize) -> Result<Array> {
        let a = norm_axis("swapaxes", a.into_isize(), self)?;
        let b = norm_axis("swapaxes", b.into_isize(), self)?;
        let mut perm: Vec<usize> = (0..self.ndim()).collect();
        perm.swap(a, b);
        Ok(lax::transpose(self, &perm))
    }

    /// Moves dimension `source` to position `destination`, keeping the others in order.
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::zeros([2, 3, 4]);
    /// assert_eq!(x.moveaxis(0, -1).shape(), &[3, 4, 2]);
    /// ```
    #[track_caller]
    pub fn moveaxis(&self, source: impl IntoIsize, destination: impl IntoIsize) -> Array {
        ok(self.try_moveaxis(source, destination))
    }

    /// Fallible [`Array::moveaxis`].
    pub fn try_moveaxis(
        &self,
        source: impl IntoIsize,
        destination: impl IntoIsize,
    ) -> Result<Array> {
        let s = norm_axis("moveaxis", source.into_isize(), self)?;
        let d = norm_axis("moveaxis", destination.into_isize(), self)?;
        let mut perm: Vec<usize> = (0..self.ndim()).filter(|&i| i != s).collect();
        perm.insert(d, s);
        Ok(lax::transpose(self, &perm))
    }

    /// Broadcasts to `shape` with numpy's rules (dims aligned from the right; size-1 dims
    /// stretch; new leading dims are added).
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::from_vec(vec![1.0f32, 2.0, 3.0], [3]);
    /// assert_eq!(x.broadcast_to([2, 3]).to_vec::<f32>(), vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    /// ```
    #[track_caller]
    pub fn broadcast_to(&self, shape: impl IntoIsizes) -> Array {
        ok(self.try_broadcast_to(shape))
    }

    /// Fallible [`Array::broadcast_to`].
    pub fn try_broadcast_to(&self, shape: impl IntoIsizes) -> Result<Array> {
        let spec = shape.into_isizes();
        let err = || {
            shape_err(
                "broadcast_to",
                format!("cannot broadcast shape {:?} to {spec:?}", self.shape()),
                &[self],
            )
        };
        if spec.iter().any(|&d| d < 0) || spec.len() < self.ndim() {
            return Err(err());
        }
        let shape: Vec<usize> = spec.iter().map(|&d| d as usize).collect();
        let off = shape.len() - self.ndim();
        if self.shape().iter().enumerate().any(|(i, &d)| d != 1 && d != shape[off + i]) {
            return Err(err());
        }
        Ok(super::ops::broadcast_to_shape(self, &shape))
    }

    /// Removes the size-1 dimensions `axes`.
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::zeros([1, 3, 1]);
    /// assert_eq!(x.squeeze([0]).shape(), &[3, 1]);
    /// assert_eq!(x.squeeze_all().shape(), &[3]);
    /// assert_eq!(x.expand_dims(-1).shape(), &[1, 3, 1, 1]);
    /// ```
    #[track_caller]
    pub fn squeeze(&self, axes: impl IntoIsizes) -> Array {
        ok(self.try_squeeze(axes))
    }

    /// Fallible [`Array::squeeze`].
    pub fn try_squeeze(&self, axes: impl IntoIsizes) -> Result<Array> {
        let mut ax = norm_axes("squeeze", &axes.into_isizes(), self)?;
        ax.sort_unstable();
        if let Some(&a) = ax.iter().find(|&&a| self.shape()[a] != 1) {
            return Err(shape_err(
                "squeeze",
                format!(
                    "cannot squeeze axis {a} of size {} (shape {:?})",
                    self.shape()[a],
                    self.shape()
                ),
                &[self],
            ));
        }
        Ok(lax::squeeze(self, &ax))
    }

    /// Removes every size-1 dimension.
    pub fn squeeze_all(&self) -> Array {
        let ax: Vec<usize> = (0..self.ndim()).filter(|&a| self.shape()[a] == 1).collect();
        lax::squeeze(self, &ax)
    }

    /// Inserts a size-1 dimension at position `axis` of the result (negative counts from
    /// the end of the result, so `-1` appends).
    #[track_caller]
    pub fn expand_dims(&self, axis: impl IntoIsize) -> Array {
        ok(self.try_expand_dims(axis))
    }

    /// Fallible [`Array::expand_dims`].
    pub fn try_expand_dims(&self, axis: impl IntoIsize) -> Result<Array> {
        let a = norm_axis_n("expand_dims", axis.into_isize(), self.ndim() + 1, self)?;
        Ok(lax::expand_dims(self, &[a]))
    }

    /// The elements as a 1-D array (row-major).
    pub fn flatten(&self) -> Array {
        lax::reshape(self, &[self.size()])
    }

    /// The elements as a 1-D array (row-major); the same as [`Array::flatten`].
    pub fn ravel(&self) -> Array {
        self.flatten()
    }
}
