//! Small numerical helpers for neural networks: `one_hot`, `softmax`, `log_softmax`.

use super::ops::broadcast_to_shape;
use super::{IntoIsize, norm_axis, ok, to_float};
use crate::array::Array;
use crate::dtype::DType;
use crate::error::Result;
use crate::lax;

/// One-hot encoding: `labels` of shape `S` gives `S + [num_classes]` of `dtype`, with 1
/// where the last index equals the label (labels outside `0..num_classes` give all zeros).
///
/// ```
/// use kiln::{Array, DType, numpy::one_hot};
/// let y = one_hot(&Array::from_vec(vec![2i32, 0], [2]), 3, DType::F32);
/// assert_eq!(y.to_vec::<f32>(), vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
/// ```
pub fn one_hot(labels: &Array, num_classes: usize, dtype: DType) -> Array {
    let labels = if labels.dtype() == DType::Bool {
        lax::convert_element_type(labels, DType::I32)
    } else {
        labels.clone()
    };
    let mut shape = labels.shape().to_vec();
    let nd = shape.len();
    shape.push(num_classes);
    let classes = lax::iota(labels.dtype(), &shape, nd);
    let dims: Vec<usize> = (0..nd).collect();
    let l = lax::broadcast_in_dim(&labels, &shape, &dims);
    lax::convert_element_type(&lax::eq(&l, &classes), dtype)
}

impl Array {
    /// `exp(x) / sum(exp(x))` along `axis`, computed stably (shifted by the stop-gradient
    /// maximum). Integers give `f32`.
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::from_vec(vec![1.0f32, 2.0, 3.0, 1000.0, 1000.0, 1000.0], [2, 3]);
    /// let p = x.softmax(-1);
    /// assert!(p.sum_axes([-1], false).allclose(&Array::ones([2]), 1e-6, 1e-6));
    /// assert!(x.log_softmax(-1).exp().allclose(&p, 1e-6, 1e-6));
    /// ```
    #[track_caller]
    pub fn softmax(&self, axis: impl IntoIsize) -> Array {
        ok(self.try_softmax(axis))
    }

    /// Fallible [`Array::softmax`].
    pub fn try_softmax(&self, axis: impl IntoIsize) -> Result<Array> {
        let a = norm_axis("softmax", axis.into_isize(), self)?;
        let e = lax::exp(&shifted(&to_float(self), a));
        let s = lax::expand_dims(&lax::reduce_sum(&e, &[a]), &[a]);
        Ok(lax::div(&e, &broadcast_to_shape(&s, e.shape())))
    }

    /// `x - logsumexp(x)` along `axis`, computed stably. Integers give `f32`.
    #[track_caller]
    pub fn log_softmax(&self, axis: impl IntoIsize) -> Array {
        ok(self.try_log_softmax(axis))
    }

    /// Fallible [`Array::log_softmax`].
    pub fn try_log_softmax(&self, axis: impl IntoIsize) -> Result<Array> {
        let a = norm_axis("log_softmax", axis.into_isize(), self)?;
        let z = shifted(&to_float(self), a);
        let lse = lax::log(&lax::reduce_sum(&lax::exp(&z), &[a]));
        let lse = lax::expand_dims(&lse, &[a]);
        Ok(lax::sub(&z, &broadcast_to_shape(&lse, z.shape())))
    }
}

/// `x - stop_gradient(max(x, axis))` (the max replaced by 0 where it is not finite).
fn shifted(x: &Array, axis: usize) -> Array {
    let m = lax::stop_gradient(&lax::reduce_max(x, &[axis]));
    let m = lax::select(&lax::is_finite(&m), &m, &lax::zeros_like(&m));
    let m = lax::expand_dims(&m, &[axis]);
    lax::sub(x, &broadcast_to_shape(&m, x.shape()))
}
