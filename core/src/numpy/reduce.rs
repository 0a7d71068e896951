//! Reductions. `x.sum()` reduces every axis to a 0-d array; `x.sum_axes(axes, keepdims)`
//! reduces the listed axes (negative axes count from the end, an empty list reduces
//! nothing) and with `keepdims` leaves them as size-1 dims. The same pair exists for
//! `mean`, `max`, `min`, `prod`, `var`, `std`, `any`, `all` and `logsumexp`.
//!
//! Sums and products of bool give `i32` and of `u8` give `u32`; means and variances of
//! integers give `f32`; `f16`/`bf16` sums, means and variances accumulate in `f32`.

use super::ops::{broadcast_to_shape, to_bool};
use super::{IntoIsize, IntoIsizes, norm_axes, norm_axis, ok, shape_err, to_float};
use crate::array::Array;
use crate::dtype::DType;
use crate::error::Result;
use crate::lax;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Red {
    Sum,
    Prod,
    Max,
    Min,
}

/// The dtype a sum or product of `d` returns.
fn sum_result_dtype(d: DType) -> DType {
    match d {
        DType::Bool => DType::I32,
        DType::U8 => DType::U32,
        d => d,
    }
}

/// The dtype a sum or product of `d` accumulates in.
fn accumulate_dtype(d: DType) -> DType {
    match d {
        DType::F16 | DType::BF16 => DType::F32,
        d => sum_result_dtype(d),
    }
}

fn sorted_axes(op: &str, x: &Array, axes: impl IntoIsizes) -> Result<Vec<usize>> {
    let mut ax = norm_axes(op, &axes.into_isizes(), x)?;
    ax.sort_unstable();
    Ok(ax)
}

fn every_axis(x: &Array) -> Vec<usize> {
    (0..x.ndim()).collect()
}

fn keep(r: Array, axes: &[usize], keepdims: bool) -> Array {
    if keepdims { lax::expand_dims(&r, axes) } else { r }
}

/// Number of elements along `axes`.
fn count(x: &Array, axes: &[usize]) -> f64 {
    axes.iter().map(|&a| x.shape()[a]).product::<usize>() as f64
}

fn reduce(x: &Array, op: &str, kind: Red, axes: &[usize], keepdims: bool) -> Result<Array> {
    let r = match kind {
        Red::Sum | Red::Prod => {
            let xa = lax::convert_element_type(x, accumulate_dtype(x.dtype()));
            let r = if kind == Red::Sum {
                lax::reduce_sum(&xa, axes)
            } else {
                lax::reduce_prod(&xa, axes)
            };
            lax::convert_element_type(&r, sum_result_dtype(x.dtype()))
        }
        Red::Max | Red::Min => {
            if let Some(&a) = axes.iter().find(|&&a| x.shape()[a] == 0) {
                return Err(shape_err(
                    op,
                    format!("cannot reduce the empty axis {a} of shape {:?}", x.shape()),
                    &[x],
                ));
            }
            let xr = if x.dtype() == DType::Bool {
                lax::convert_element_type(x, DType::U8)
            } else {
                x.clone()
            };
            let r = if kind == Red::Max {
                lax::reduce_max(&xr, axes)
            } else {
                lax::reduce_min(&xr, axes)
            };
            if x.dtype() == DType::Bool { to_bool(&r) } else { r }
        }
    };
    Ok(keep(r, axes, keepdims))
}

fn mean(x: &Array, axes: &[usize], keepdims: bool) -> Array {
    let xf = to_float(x);
    let xa = lax::convert_element_type(&xf, accumulate_dtype(xf.dtype()));
    let s = lax::reduce_sum(&xa, axes);
    let m = lax::div(&s, &lax::full_like(&s, count(x, axes)));
    keep(lax::convert_element_type(&m, xf.dtype()), axes, keepdims)
}

fn var(x: &Array, axes: &[usize], keepdims: bool) -> Array {
    let xf = to_float(x);
    let xa = lax::convert_element_type(&xf, accumulate_dtype(xf.dtype()));
    let m = lax::expand_dims(&mean(&xa, axes, false), axes);
    let d = lax::sub(&xa, &broadcast_to_shape(&m, xa.shape()));
    let s = lax::reduce_sum(&lax::mul(&d, &d), axes);
    let v = lax::div(&s, &lax::full_like(&s, count(x, axes)));
    keep(lax::convert_element_type(&v, xf.dtype()), axes, keepdims)
}

fn logsumexp(x: &Array, axes: &[usize], keepdims: bool) -> Array {
    let xf = to_float(x);
    let m = lax::stop_gradient(&lax::reduce_max(&xf, axes));
    let m = lax::select(&lax::is_finite(&m), &m, &lax::zeros_like(&m));
    let mb = broadcast_to_shape(&lax::expand_dims(&m, axes), xf.shape());
    let s = lax::reduce_sum(&lax::exp(&lax::sub(&xf, &mb)), axes);
    keep(lax::add(&lax::log(&s), &m), axes, keepdims)
}

macro_rules! reductions {
    ($($all:ident $axes:ident $try_axes:ident $op:literal $doc:literal |$x:ident, $ax:ident, $kd:ident| $body:expr;)*) => {
        impl Array {$(
            #[doc = concat!($doc, " over every axis (a 0-d array).")]
            #[track_caller]
            pub fn $all(&self) -> Array {
                ok(self.$try_axes(every_axis(self), false))
            }

            #[doc = concat!($doc, " over `axes` (negative axes count from the end; an empty ",
                "list reduces nothing); `keepdims` keeps them as size-1 dims.")]
            ///
            /// Panics if an axis is out of range or repeated.
            #[track_caller]
            pub fn $axes(&self, axes: impl IntoIsizes, keepdims: bool) -> Array {
                ok(self.$try_axes(axes, keepdims))
            }

            #[doc = concat!("Fallible [`Array::", stringify!($axes), "`].")]
            pub fn $try_axes(&self, axes: impl IntoIsizes, keepdims: bool) -> Result<Array> {
                let $ax = sorted_axes($op, self, axes)?;
                let ($x, $kd) = (self, keepdims);
                $body
            }
        )*}
    };
}

reductions! {
    sum sum_axes try_sum_axes "sum" "Sum"
        |x, ax, kd| reduce(x, "sum", Red::Sum, &ax, kd);
    prod prod_axes try_prod_axes "prod" "Product"
        |x, ax, kd| reduce(x, "prod", Red::Prod, &ax, kd);
    max max_axes try_max_axes "max" "Maximum (NaN-propagating; empty axes are an error)"
        |x, ax, kd| reduce(x, "max", Red::Max, &ax, kd);
    min min_axes try_min_axes "min" "Minimum (NaN-propagating; empty axes are an error)"
        |x, ax, kd| reduce(x, "min", Red::Min, &ax, kd);
    mean mean_axes try_mean_axes "mean" "Arithmetic mean"
        |x, ax, kd| Ok(mean(x, &ax, kd));
    var var_axes try_var_axes "var" "Population variance (numpy's default `ddof=0`)"
        |x, ax, kd| Ok(var(x, &ax, kd));
    std std_axes try_std_axes "std" "Population standard deviation (`ddof=0`)"
        |x, ax, kd| Ok(lax::sqrt(&var(x, &ax, kd)));
    any any_axes try_any_axes "any" "Logical or of the truth values (bool)"
        |x, ax, kd| reduce(&to_bool(x), "any", Red::Sum, &ax, kd)
            .map(|r| to_bool(&r));
    all all_axes try_all_axes "all" "Logical and of the truth values (bool)"
        |x, ax, kd| {
            let not_x = lax::not(&to_bool(x));
            reduce(&not_x, "all", Red::Sum, &ax, kd).map(|r| lax::not(&to_bool(&r)))
        };
    logsumexp logsumexp_axes try_logsumexp_axes "logsumexp"
        "`log(sum(exp(x)))`, computed stably (shifted by the stop-gradient maximum)"
        |x, ax, kd| Ok(logsumexp(x, &ax, kd));
}

impl Array {
    /// Index of the first maximum along `axis`, as `i32` (the axis is removed).
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::from_vec(vec![1.0f32, 5.0, 2.0, 7.0, 0.0, 7.0], [2, 3]);
    /// assert_eq!(x.argmax(-1).to_vec::<i32>(), vec![1, 0]);
    /// ```
    #[track_caller]
    pub fn argmax(&self, axis: impl IntoIsize) -> Array {
        ok(self.try_argmax(axis))
    }

    /// Fallible [`Array::argmax`].
    pub fn try_argmax(&self, axis: impl IntoIsize) -> Result<Array> {
        self.arg_reduce("argmax", axis.into_isize(), true)
    }

    /// Index of the first minimum along `axis`, as `i32` (the axis is removed).
    #[track_caller]
    pub fn argmin(&self, axis: impl IntoIsize) -> Array {
        ok(self.try_argmin(axis))
    }

    /// Fallible [`Array::argmin`].
    pub fn try_argmin(&self, axis: impl IntoIsize) -> Result<Array> {
        self.arg_reduce("argmin", axis.into_isize(), false)
    }

    fn arg_reduce(&self, op: &str, axis: isize, is_max: bool) -> Result<Array> {
        let a = norm_axis(op, axis, self)?;
        if self.shape()[a] == 0 {
            return Err(shape_err(
                op,
                format!("cannot take {op} of the empty axis {a} of shape {:?}", self.shape()),
                &[self],
            ));
        }
        let x = if self.dtype() == DType::Bool {
            lax::convert_element_type(self, DType::U8)
        } else {
            self.clone()
        };
        Ok(if is_max { lax::argmax(&x, a, DType::I32) } else { lax::argmin(&x, a, DType::I32) })
    }

    /// Inclusive cumulative sum along `axis` (bool gives `i32`, `u8` gives `u32`).
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::from_vec(vec![1i32, 2, 3, 4], [2, 2]);
    /// assert_eq!(x.cumsum(-1).to_vec::<i32>(), vec![1, 3, 3, 7]);
    /// ```
    #[track_caller]
    pub fn cumsum(&self, axis: impl IntoIsize) -> Array {
        ok(self.try_cumsum(axis))
    }

    /// Fallible [`Array::cumsum`].
    pub fn try_cumsum(&self, axis: impl IntoIsize) -> Result<Array> {
        let a = norm_axis("cumsum", axis.into_isize(), self)?;
        let xa = lax::convert_element_type(self, accumulate_dtype(self.dtype()));
        let r = lax::cumsum(&xa, a, false);
        let out = match self.dtype() {
            DType::F16 | DType::BF16 => self.dtype(),
            d => sum_result_dtype(d),
        };
        Ok(lax::convert_element_type(&r, out))
    }
}
