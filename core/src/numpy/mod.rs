//! numpy-style operations on [`Array`]: broadcasting, type promotion, reductions, linear
//! algebra, shape manipulation, indexing and joining.
//!
//! Everything here is written with [`crate::lax`] operations only, so it works the same on
//! concrete arrays and on tracers: under `grad`, `jvp`, `vmap` and `jit`.
//!
//! # Conventions
//!
//! - **Binary operations** (`+ - * / %`, [`Array::add`], [`Array::maximum`], comparisons,
//!   [`where_`], ...) broadcast like numpy and promote dtypes with [`DType::promote`]
//!   (JAX's lattice). Rust scalars (`f32`, `f64`, `i32`, `i64`, `u32`, `u8`, `bool`) are
//!   *weakly typed*, as Python scalars are in JAX: `&x * 2.0` keeps `x`'s dtype, an integer
//!   scalar keeps an integer array's dtype, and a float scalar with an integer or bool array
//!   gives `f32`. Anything accepted as an operand implements [`ArrayLike`].
//! - `/` is true division (integers give `f32`) and `%` is numpy's `remainder` (the sign of
//!   the divisor), as in JAX; [`Array::floor_divide`] and [`Array::fmod`] give the others.
//! - **Reductions**: `x.sum()` reduces every axis to a 0-d array; `x.sum_axes(axes, keepdims)`
//!   reduces the listed axes (negative axes count from the end; an empty list reduces
//!   nothing). The same pair exists for `mean`, `max`, `min`, `prod`, `var`, `std`, `any`,
//!   `all` and `logsumexp`.
//! - **Axes, shapes and permutations** are taken as any list of integers ([`IntoIsizes`]):
//!   `&[0, -1]`, `[2, 3]`, `x.shape()`, a `Vec<usize>`. A single axis is any integer
//!   ([`IntoIsize`]); negative values count from the end.
//! - **Errors**: operations panic on programmer errors (shapes or dtypes that do not fit)
//!   with a message that names the operation and the operand shapes, located at the
//!   caller; the `try_` twin of each such operation returns [`Error`] instead.
//!
//! ```
//! use kiln::{Array, DType};
//! let x = Array::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]);
//! let b = Array::from_vec(vec![10.0f32, 20.0, 30.0], [3]);
//! let y = &x * 2.0 + &b; // broadcasting [2, 3] with [3]
//! assert_eq!(y.to_vec::<f32>(), vec![12.0, 24.0, 36.0, 18.0, 30.0, 42.0]);
//! assert_eq!(y.sum_axes(&[-1], false).to_vec::<f32>(), vec![72.0, 90.0]);
//! let i = Array::from_vec(vec![1i32, 2, 3], [3]);
//! assert_eq!((&i + 1).dtype(), DType::I32); // weak integer scalar
//! assert_eq!((&i * 0.5).dtype(), DType::F32); // weak float with an int array
//! ```

mod index;
mod join;
mod linalg;
mod math;
mod nn_helpers;
mod ops;
mod reduce;
mod shape;

pub use index::Idx;
pub use join::{
    SplitSpec, broadcast_arrays, concatenate, stack, try_broadcast_arrays, try_concatenate,
    try_stack,
};
pub use linalg::{TensordotAxes, einsum, try_einsum};
pub use nn_helpers::one_hot;
pub use ops::{ArrayLike, ArrayOrScalar, WeakScalar, try_where, where_};

use crate::array::Array;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Unwraps a result, panicking with the error and the caller's location.
#[track_caller]
pub(crate) fn ok<T>(r: Result<T>) -> T {
    crate::lax::ok(r)
}

/// A shape error naming `op` and the operands.
pub(crate) fn shape_err(op: &str, msg: impl Into<String>, xs: &[&Array]) -> Error {
    let avals: Vec<_> = xs.iter().map(|a| a.aval().clone()).collect();
    Error::shape(op, msg, &avals)
}

/// A dtype error naming `op` and the operands.
pub(crate) fn dtype_err(op: &str, msg: impl Into<String>, xs: &[&Array]) -> Error {
    let avals: Vec<_> = xs.iter().map(|a| a.aval().clone()).collect();
    Error::dtype(op, msg, &avals)
}

/// Renames the operation of a shape or dtype error raised by a `lax` call inside `op`.
pub(crate) fn rename(e: Error, op: &str) -> Error {
    match e {
        Error::Shape { msg, avals, .. } => Error::Shape { op: op.into(), msg, avals },
        Error::DType { msg, avals, .. } => Error::DType { op: op.into(), msg, avals },
        e => e,
    }
}

/// Normalizes a possibly negative axis of `x`.
pub(crate) fn norm_axis(op: &str, axis: isize, x: &Array) -> Result<usize> {
    norm_axis_n(op, axis, x.ndim(), x)
}

/// Normalizes a possibly negative axis against `ndim` (error mentions `x`).
pub(crate) fn norm_axis_n(op: &str, axis: isize, ndim: usize, x: &Array) -> Result<usize> {
    crate::aval::normalize_axis(axis, ndim).ok_or_else(|| {
        shape_err(
            op,
            format!("axis {axis} is out of bounds for {ndim} dimensions (shape {:?})", x.shape()),
            &[x],
        )
    })
}

/// Normalizes a list of distinct axes of `x` (order kept).
pub(crate) fn norm_axes(op: &str, axes: &[isize], x: &Array) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = norm_axis(op, a, x)?;
        if out.contains(&n) {
            return Err(shape_err(op, format!("axis {a} repeated in {axes:?}"), &[x]));
        }
        out.push(n);
    }
    Ok(out)
}

/// Converts `x` to a floating-point dtype (`f32` for integers and bool), as JAX does for
/// operations only defined on floats.
pub(crate) fn to_float(x: &Array) -> Array {
    if x.dtype().is_float() { x.clone() } else { crate::lax::convert_element_type(x, DType::F32) }
}

/// The integer dtype used for indices into an array of `n` elements.
pub(crate) fn index_dtype(n: usize) -> DType {
    if n <= i32::MAX as usize { DType::I32 } else { DType::I64 }
}

/// A single integer argument: an axis, a count or an index (negative values count from the
/// end where that makes sense).
///
/// Implemented for `i32`, `i64`, `isize`, `usize` and `u32`, so both `x.argmax(-1)` and
/// `x.argmax(axis)` with `axis: usize` work.
pub trait IntoIsize: Copy {
    /// The value as `isize`.
    fn into_isize(self) -> isize;
}

/// A list of integers: axes, a shape or a permutation.
///
/// Implemented for arrays, references to arrays, slices, vectors and references to vectors
/// of `i32`, `i64`, `isize`, `usize` and `u32`: `&[0, -1]`, `[2, 3]`, `x.shape()` and
/// `vec![1usize, 0]` all work.
pub trait IntoIsizes {
    /// The values as `isize`.
    fn into_isizes(self) -> Vec<isize>;
}

macro_rules! int_args {
    ($($t:ty),*) => {$(
        impl IntoIsize for $t {
            fn into_isize(self) -> isize {
                self as isize
            }
        }
        impl<const N: usize> IntoIsizes for [$t; N] {
            fn into_isizes(self) -> Vec<isize> {
                self.iter().map(|&v| v as isize).collect()
            }
        }
        impl<const N: usize> IntoIsizes for &[$t; N] {
            fn into_isizes(self) -> Vec<isize> {
                self.iter().map(|&v| v as isize).collect()
            }
        }
        impl IntoIsizes for &[$t] {
            fn into_isizes(self) -> Vec<isize> {
                self.iter().map(|&v| v as isize).collect()
            }
        }
        impl IntoIsizes for Vec<$t> {
            fn into_isizes(self) -> Vec<isize> {
                self.iter().map(|&v| v as isize).collect()
            }
        }
        impl IntoIsizes for &Vec<$t> {
            fn into_isizes(self) -> Vec<isize> {
                self.iter().map(|&v| v as isize).collect()
            }
        }
    )*};
}

int_args!(i32, i64, isize, usize, u32);

impl Array {
    /// True if `self` and `other` are equal within tolerance, elementwise after
    /// broadcasting: `|a - b| <= atol + rtol * |b|` (numpy's `allclose`; NaNs are never
    /// close). Reads both values back to the host, so it is meant for tests.
    ///
    /// Panics if the shapes do not broadcast or a value is abstract (a tracer under `jit`).
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::from_vec(vec![1.0f32, 2.0], [2]);
    /// assert!(x.allclose(&(&x + 1e-7), 1e-5, 1e-8));
    /// assert!(!x.allclose(&(&x + 1.0), 1e-5, 1e-8));
    /// ```
    #[track_caller]
    pub fn allclose(&self, other: impl ArrayLike, rtol: f64, atol: f64) -> bool {
        let other = match other.into_array_or_scalar() {
            ArrayOrScalar::Array(a) => a,
            ArrayOrScalar::Scalar(s) => Array::scalar_of(s.to_f64(), DType::F64),
        };
        let shape = match crate::aval::broadcast_shapes(self.shape(), other.shape()) {
            Some(s) => s,
            None => panic!(
                "{}",
                shape_err(
                    "allclose",
                    format!("cannot broadcast shapes {:?} and {:?}", self.shape(), other.shape()),
                    &[self, &other],
                )
            ),
        };
        let a = ops::broadcast_to_shape(self, &shape).to_f64_vec();
        let b = ops::broadcast_to_shape(&other, &shape).to_f64_vec();
        a.iter().zip(&b).all(|(&a, &b)| a == b || (a - b).abs() <= atol + rtol * b.abs())
    }
}
