//! Primitive-level operations (JAX's `jax.lax`): one function per primitive, with no
//! implicit broadcasting or type promotion. Operand shapes and dtypes must already agree.
//!
//! Each function panics on bad operands with a message naming the operation, the operand
//! types and the caller's location; the `try_` twin returns the [`Error`](crate::Error).
//!
//! ```
//! use kiln::{Array, lax};
//! let x = Array::from_vec(vec![1.0f32, 2.0], [2]);
//! let y = lax::mul(&x, &x);
//! assert_eq!(y.to_vec::<f32>(), vec![1.0, 4.0]);
//! assert!(lax::try_mul(&x, &Array::ones([3])).is_err());
//! ```

use crate::array::Array;
use crate::dtype::DType;
use crate::error::Result;
use crate::prim::{Prim, WindowKind};
use crate::trace::{bind, bind1};

/// Unwraps a result, panicking with the error and the caller's location.
#[track_caller]
pub(crate) fn ok<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

macro_rules! unary_ops {
    ($($name:ident $try_name:ident $P:ident $doc:literal;)*) => {$(
        #[doc = $doc]
        #[track_caller]
        pub fn $name(x: &Array) -> Array {
            ok($try_name(x))
        }
        #[doc = concat!("Fallible [`", stringify!($name), "`].")]
        pub fn $try_name(x: &Array) -> Result<Array> {
            bind1(&Prim::$P, std::slice::from_ref(x))
        }
    )*};
}

macro_rules! binary_ops {
    ($($name:ident $try_name:ident $P:ident $doc:literal;)*) => {$(
        #[doc = $doc]
        #[track_caller]
        pub fn $name(x: &Array, y: &Array) -> Array {
            ok($try_name(x, y))
        }
        #[doc = concat!("Fallible [`", stringify!($name), "`].")]
        pub fn $try_name(x: &Array, y: &Array) -> Result<Array> {
            bind1(&Prim::$P, &[x.clone(), y.clone()])
        }
    )*};
}

unary_ops! {
    neg try_neg Neg "Elementwise `-x`.";
    exp try_exp Exp "Elementwise `e^x`.";
    log try_log Log "Elementwise natural logarithm.";
    log1p try_log1p Log1p "Elementwise `log(1 + x)`, accurate near 0.";
    expm1 try_expm1 Expm1 "Elementwise `e^x - 1`, accurate near 0.";
    sin try_sin Sin "Elementwise sine.";
    cos try_cos Cos "Elementwise cosine.";
    tanh try_tanh Tanh "Elementwise hyperbolic tangent.";
    logistic try_logistic Logistic "Elementwise logistic sigmoid `1 / (1 + e^-x)`.";
    sqrt try_sqrt Sqrt "Elementwise square root.";
    rsqrt try_rsqrt Rsqrt "Elementwise reciprocal square root.";
    abs try_abs Abs "Elementwise absolute value.";
    sign try_sign Sign "Elementwise sign (-1, 0, 1).";
    floor try_floor Floor "Elementwise floor.";
    ceil try_ceil Ceil "Elementwise ceiling.";
    round try_round Round "Elementwise rounding, half away from zero.";
    erf try_erf Erf "Elementwise error function.";
    erf_inv try_erf_inv ErfInv "Elementwise inverse error function.";
    is_finite try_is_finite IsFinite "True where the element is finite.";
    not try_not Not "Logical (bool) or bitwise (integer) not.";
    stop_gradient try_stop_gradient StopGradient "Identity whose derivative is zero.";
}

binary_ops! {
    add try_add Add "Elementwise `x + y`.";
    sub try_sub Sub "Elementwise `x - y`.";
    mul try_mul Mul "Elementwise `x * y`.";
    div try_div Div "Elementwise `x / y` (integers round toward zero).";
    rem try_rem Rem "Elementwise remainder with the sign of `x`.";
    pow try_pow Pow "Elementwise `x^y` (floats).";
    max try_max Max "Elementwise maximum.";
    min try_min Min "Elementwise minimum.";
    atan2 try_atan2 Atan2 "Elementwise `atan2(x, y)`.";
    and try_and And "Logical/bitwise and.";
    or try_or Or "Logical/bitwise or.";
    xor try_xor Xor "Logical/bitwise xor.";
    shift_left try_shift_left ShiftLeft "Left shift.";
    shift_right_logical try_shift_right_logical ShiftRightLogical "Logical right shift.";
    shift_right_arithmetic try_shift_right_arithmetic ShiftRightArithmetic "Arithmetic right shift.";
    eq try_eq Eq "Elementwise `x == y`.";
    ne try_ne Ne "Elementwise `x != y`.";
    lt try_lt Lt "Elementwise `x < y`.";
    le try_le Le "Elementwise `x <= y`.";
    gt try_gt Gt "Elementwise `x > y`.";
    ge try_ge Ge "Elementwise `x >= y`.";
}

/// `x^y` for a static integer exponent.
#[track_caller]
pub fn integer_pow(x: &Array, y: i32) -> Array {
    ok(bind1(&Prim::IntegerPow { y }, std::slice::from_ref(x)))
}

/// `sqrt(2 / pi)`, the scale of GELU's tanh approximation.
pub(crate) const GELU_SCALE: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of GELU's tanh approximation.
pub(crate) const GELU_CUBIC: f64 = 0.044_715;
/// `1 / sqrt(2 pi)`, the standard normal density at 0 (exact GELU's derivatives).
pub(crate) const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// GELU ([`Prim::Gelu`], `jax.nn.gelu`): the tanh approximation when `approximate`, else
/// the exact erf form. Needs a floating-point operand.
///
/// ```
/// use kiln::{Array, lax};
/// let x = Array::from_vec(vec![-1.0f32, 0.0, 2.0], [3]);
/// let y = lax::gelu(&x, true);
/// assert!(y.allclose(&Array::from_vec(vec![-0.158_808f32, 0.0, 1.954_598], [3]), 1e-5, 1e-6));
/// ```
#[track_caller]
pub fn gelu(x: &Array, approximate: bool) -> Array {
    ok(try_gelu(x, approximate))
}

/// Fallible [`gelu`].
pub fn try_gelu(x: &Array, approximate: bool) -> Result<Array> {
    bind1(&Prim::Gelu { approximate }, std::slice::from_ref(x))
}

/// The derivative of [`gelu`] ([`Prim::GeluGrad`]).
#[track_caller]
pub fn gelu_grad(x: &Array, approximate: bool) -> Array {
    ok(try_gelu_grad(x, approximate))
}

/// Fallible [`gelu_grad`].
pub fn try_gelu_grad(x: &Array, approximate: bool) -> Result<Array> {
    bind1(&Prim::GeluGrad { approximate }, std::slice::from_ref(x))
}

/// `pred ? on_true : on_false`, elementwise.
#[track_caller]
pub fn select(pred: &Array, on_true: &Array, on_false: &Array) -> Array {
    ok(try_select(pred, on_true, on_false))
}

/// Fallible [`select`].
pub fn try_select(pred: &Array, on_true: &Array, on_false: &Array) -> Result<Array> {
    bind1(&Prim::Select, &[pred.clone(), on_true.clone(), on_false.clone()])
}

/// `min(max(x, lo), hi)`, elementwise.
#[track_caller]
pub fn clamp(lo: &Array, x: &Array, hi: &Array) -> Array {
    ok(bind1(&Prim::Clamp, &[lo.clone(), x.clone(), hi.clone()]))
}

/// Converts values to `dtype` (a no-op if already that dtype).
#[track_caller]
pub fn convert_element_type(x: &Array, dtype: DType) -> Array {
    if x.dtype() == dtype {
        return x.clone();
    }
    ok(bind1(&Prim::ConvertElementType { dtype }, std::slice::from_ref(x)))
}

/// Reinterprets the bits of `x` as `dtype` (same width).
#[track_caller]
pub fn bitcast_convert_type(x: &Array, dtype: DType) -> Array {
    ok(bind1(&Prim::BitcastConvertType { dtype }, std::slice::from_ref(x)))
}

/// Broadcasts `x` to `shape`, operand dim `i` going to output dim `dims[i]`.
#[track_caller]
pub fn broadcast_in_dim(x: &Array, shape: &[usize], dims: &[usize]) -> Array {
    ok(try_broadcast_in_dim(x, shape, dims))
}

/// Fallible [`broadcast_in_dim`].
pub fn try_broadcast_in_dim(x: &Array, shape: &[usize], dims: &[usize]) -> Result<Array> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    bind1(
        &Prim::BroadcastInDim { shape: shape.to_vec(), dims: dims.to_vec() },
        std::slice::from_ref(x),
    )
}

/// Reshapes (row-major).
#[track_caller]
pub fn reshape(x: &Array, shape: &[usize]) -> Array {
    ok(try_reshape(x, shape))
}

/// Fallible [`reshape`].
pub fn try_reshape(x: &Array, shape: &[usize]) -> Result<Array> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    bind1(&Prim::Reshape { shape: shape.to_vec() }, std::slice::from_ref(x))
}

/// Permutes dimensions: output dim `i` is input dim `perm[i]`.
#[track_caller]
pub fn transpose(x: &Array, perm: &[usize]) -> Array {
    if perm.iter().enumerate().all(|(i, &p)| i == p) && perm.len() == x.ndim() {
        return x.clone();
    }
    ok(bind1(&Prim::Transpose { perm: perm.to_vec() }, std::slice::from_ref(x)))
}

/// Reverses along `axes`.
#[track_caller]
pub fn rev(x: &Array, axes: &[usize]) -> Array {
    ok(bind1(&Prim::Rev { axes: axes.to_vec() }, std::slice::from_ref(x)))
}

/// Removes the size-1 dims `axes`.
#[track_caller]
pub fn squeeze(x: &Array, axes: &[usize]) -> Array {
    if axes.is_empty() {
        return x.clone();
    }
    ok(bind1(&Prim::Squeeze { axes: axes.to_vec() }, std::slice::from_ref(x)))
}

/// Inserts size-1 dims at output positions `axes`.
#[track_caller]
pub fn expand_dims(x: &Array, axes: &[usize]) -> Array {
    if axes.is_empty() {
        return x.clone();
    }
    ok(bind1(&Prim::ExpandDims { axes: axes.to_vec() }, std::slice::from_ref(x)))
}

macro_rules! reduce_ops {
    ($($name:ident $P:ident $doc:literal;)*) => {$(
        #[doc = $doc]
        #[track_caller]
        pub fn $name(x: &Array, axes: &[usize]) -> Array {
            if axes.is_empty() {
                return x.clone();
            }
            let mut axes = axes.to_vec();
            axes.sort_unstable();
            ok(bind1(&Prim::$P { axes }, std::slice::from_ref(x)))
        }
    )*};
}

reduce_ops! {
    reduce_sum ReduceSum "Sum over `axes`.";
    reduce_max ReduceMax "Maximum over `axes`.";
    reduce_min ReduceMin "Minimum over `axes`.";
    reduce_prod ReduceProd "Product over `axes`.";
}

/// Index of the first maximum along `axis`.
#[track_caller]
pub fn argmax(x: &Array, axis: usize, index_dtype: DType) -> Array {
    ok(bind1(&Prim::ArgMax { axis, index_dtype }, std::slice::from_ref(x)))
}

/// Index of the first minimum along `axis`.
#[track_caller]
pub fn argmin(x: &Array, axis: usize, index_dtype: DType) -> Array {
    ok(bind1(&Prim::ArgMin { axis, index_dtype }, std::slice::from_ref(x)))
}

/// Inclusive cumulative sum along `axis`.
#[track_caller]
pub fn cumsum(x: &Array, axis: usize, reverse: bool) -> Array {
    ok(bind1(&Prim::Cumsum { axis, reverse }, std::slice::from_ref(x)))
}

/// Dimension numbers of [`dot_general`]: `((lhs_contract, rhs_contract), (lhs_batch, rhs_batch))`.
pub type DotDims<'a> = ((&'a [usize], &'a [usize]), (&'a [usize], &'a [usize]));

/// Whether `perm`, applied to a `dot_general` result with `nb` batch, `nl` lhs-free and
/// `nr` rhs-free dims, only exchanges the two free groups (batch dims in front): then
/// `transpose(dot_general(a, b), perm)` is `dot_general(b, a)` with the roles swapped.
pub(crate) fn is_free_dim_swap(perm: &[usize], nb: usize, nl: usize, nr: usize) -> bool {
    perm.iter().copied().eq((0..nb).chain(nb + nl..nb + nl + nr).chain(nb..nb + nl))
}

/// General contraction (`lax.dot_general`); output dims are batch, lhs free, rhs free.
#[track_caller]
pub fn dot_general(lhs: &Array, rhs: &Array, dims: DotDims<'_>) -> Array {
    ok(try_dot_general(lhs, rhs, dims))
}

/// Fallible [`dot_general`].
pub fn try_dot_general(lhs: &Array, rhs: &Array, dims: DotDims<'_>) -> Result<Array> {
    let ((lc, rc), (lb, rb)) = dims;
    bind1(
        &Prim::DotGeneral {
            lhs_contract: lc.to_vec(),
            rhs_contract: rc.to_vec(),
            lhs_batch: lb.to_vec(),
            rhs_batch: rb.to_vec(),
        },
        &[lhs.clone(), rhs.clone()],
    )
}

/// Parameters of [`conv_general_dilated`] (channels-last layout; see [`Prim::Conv`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvParams {
    /// Window strides per spatial dim.
    pub strides: Vec<usize>,
    /// `(low, high)` padding per spatial dim.
    pub padding: Vec<(i64, i64)>,
    /// Input dilation per spatial dim.
    pub lhs_dilation: Vec<usize>,
    /// Kernel dilation per spatial dim.
    pub rhs_dilation: Vec<usize>,
    /// Feature groups.
    pub feature_group_count: usize,
}

impl ConvParams {
    /// Stride 1, no padding, no dilation, one group, for `n` spatial dims.
    pub fn new(n: usize) -> ConvParams {
        ConvParams {
            strides: vec![1; n],
            padding: vec![(0, 0); n],
            lhs_dilation: vec![1; n],
            rhs_dilation: vec![1; n],
            feature_group_count: 1,
        }
    }
    pub(crate) fn prim(&self) -> Prim {
        Prim::Conv {
            strides: self.strides.clone(),
            padding: self.padding.clone(),
            lhs_dilation: self.lhs_dilation.clone(),
            rhs_dilation: self.rhs_dilation.clone(),
            feature_group_count: self.feature_group_count,
        }
    }
}

/// N-d convolution: lhs `[N, spatial.., C_in]`, rhs `[spatial.., C_in/G, C_out]`.
#[track_caller]
pub fn conv_general_dilated(lhs: &Array, rhs: &Array, params: &ConvParams) -> Array {
    ok(try_conv_general_dilated(lhs, rhs, params))
}

/// Fallible [`conv_general_dilated`].
pub fn try_conv_general_dilated(lhs: &Array, rhs: &Array, params: &ConvParams) -> Result<Array> {
    bind1(&params.prim(), &[lhs.clone(), rhs.clone()])
}

/// Reduction over sliding windows (pooling).
#[track_caller]
pub fn reduce_window(
    x: &Array,
    kind: WindowKind,
    window: &[usize],
    strides: &[usize],
    padding: &[(i64, i64)],
) -> Array {
    ok(bind1(
        &Prim::ReduceWindow {
            kind,
            window: window.to_vec(),
            strides: strides.to_vec(),
            padding: padding.to_vec(),
        },
        std::slice::from_ref(x),
    ))
}

/// Picks `t` at each window's argmax of `x` (max-pool JVP).
#[track_caller]
pub fn select_and_gather_add(
    t: &Array,
    x: &Array,
    window: &[usize],
    strides: &[usize],
    padding: &[(i64, i64)],
) -> Array {
    ok(bind1(
        &Prim::SelectAndGatherAdd {
            window: window.to_vec(),
            strides: strides.to_vec(),
            padding: padding.to_vec(),
        },
        &[t.clone(), x.clone()],
    ))
}

/// Scatters `source` to each window's argmax of `x` (max-pool gradient).
#[track_caller]
pub fn select_and_scatter_add(
    source: &Array,
    x: &Array,
    window: &[usize],
    strides: &[usize],
    padding: &[(i64, i64)],
) -> Array {
    ok(bind1(
        &Prim::SelectAndScatterAdd {
            window: window.to_vec(),
            strides: strides.to_vec(),
            padding: padding.to_vec(),
        },
        &[source.clone(), x.clone()],
    ))
}

/// Static strided slice.
#[track_caller]
pub fn slice(x: &Array, start: &[usize], limit: &[usize], strides: Option<&[usize]>) -> Array {
    ok(try_slice(x, start, limit, strides))
}

/// Fallible [`slice()`].
pub fn try_slice(
    x: &Array,
    start: &[usize],
    limit: &[usize],
    strides: Option<&[usize]>,
) -> Result<Array> {
    let strides = strides.map(|s| s.to_vec()).unwrap_or_else(|| vec![1; start.len()]);
    if start.iter().all(|&s| s == 0) && limit == x.shape() && strides.iter().all(|&s| s == 1) {
        return Ok(x.clone());
    }
    bind1(
        &Prim::Slice { start: start.to_vec(), limit: limit.to_vec(), strides },
        std::slice::from_ref(x),
    )
}

/// Slice of `sizes` at dynamic (array) start indices, clamped into bounds.
#[track_caller]
pub fn dynamic_slice(x: &Array, starts: &[Array], sizes: &[usize]) -> Array {
    let mut args = vec![x.clone()];
    args.extend_from_slice(starts);
    ok(bind1(&Prim::DynamicSlice { sizes: sizes.to_vec() }, &args))
}

/// `x` with `update` written at dynamic start indices (clamped).
#[track_caller]
pub fn dynamic_update_slice(x: &Array, update: &Array, starts: &[Array]) -> Array {
    let mut args = vec![x.clone(), update.clone()];
    args.extend_from_slice(starts);
    ok(bind1(&Prim::DynamicUpdateSlice, &args))
}

/// Joins arrays along `axis`.
#[track_caller]
pub fn concatenate(xs: &[Array], axis: usize) -> Array {
    ok(try_concatenate(xs, axis))
}

/// Fallible [`concatenate`].
pub fn try_concatenate(xs: &[Array], axis: usize) -> Result<Array> {
    if xs.len() == 1 {
        return Ok(xs[0].clone());
    }
    bind1(&Prim::Concatenate { axis }, xs)
}

/// Pads with `value` (a scalar of `x`'s dtype): `(lo, hi, interior)` per dim.
#[track_caller]
pub fn pad(x: &Array, value: &Array, config: &[(i64, i64, usize)]) -> Array {
    ok(bind1(
        &Prim::Pad {
            lo: config.iter().map(|c| c.0).collect(),
            hi: config.iter().map(|c| c.1).collect(),
            interior: config.iter().map(|c| c.2).collect(),
        },
        &[x.clone(), value.clone()],
    ))
}

/// Gathers along `axis` with `batch_dims` leading shared dims (see [`Prim::Gather`]).
#[track_caller]
pub fn gather(x: &Array, indices: &Array, axis: usize, batch_dims: usize) -> Array {
    ok(bind1(&Prim::Gather { axis, batch_dims }, &[x.clone(), indices.clone()]))
}

/// Adds `updates` into `x` at `indices` (transpose of [`gather`]).
#[track_caller]
pub fn scatter_add(
    x: &Array,
    indices: &Array,
    updates: &Array,
    axis: usize,
    batch_dims: usize,
) -> Array {
    ok(bind1(
        &Prim::ScatterAdd { axis, batch_dims },
        &[x.clone(), indices.clone(), updates.clone()],
    ))
}

/// Writes `updates` into `x` at `indices`.
#[track_caller]
pub fn scatter(
    x: &Array,
    indices: &Array,
    updates: &Array,
    axis: usize,
    batch_dims: usize,
) -> Array {
    ok(bind1(&Prim::Scatter { axis, batch_dims }, &[x.clone(), indices.clone(), updates.clone()]))
}

/// `0, 1, 2, ...` along `dim` of `shape`.
#[track_caller]
pub fn iota(dtype: DType, shape: &[usize], dim: usize) -> Array {
    ok(bind1(&Prim::Iota { dtype, shape: shape.to_vec(), dim }, &[]))
}

/// Sorts `xs` together along `axis` by the first `num_keys` of them.
#[track_caller]
pub fn sort(xs: &[Array], axis: usize, num_keys: usize) -> Vec<Array> {
    ok(bind(&Prim::Sort { axis, num_keys }, xs))
}

/// The threefry-2x32 block cipher on `u32` arrays of one shape.
#[track_caller]
pub fn threefry2x32(k0: &Array, k1: &Array, x0: &Array, x1: &Array) -> (Array, Array) {
    let mut out = ok(bind(&Prim::Threefry2x32, &[k0.clone(), k1.clone(), x0.clone(), x1.clone()]));
    let y1 = out.pop().expect("two outputs");
    let y0 = out.pop().expect("two outputs");
    (y0, y1)
}

// ---- small helpers used by rules ---------------------------------------------------------

/// A scalar of `x`'s dtype broadcast to `x`'s shape.
pub fn full_like(x: &Array, value: f64) -> Array {
    let s = Array::scalar_of(value, x.dtype());
    broadcast_in_dim(&s, x.shape(), &[])
}

/// Zeros shaped like `x`.
pub fn zeros_like(x: &Array) -> Array {
    full_like(x, 0.0)
}

/// Multiplies by a constant of `x`'s dtype.
pub fn mul_scalar(x: &Array, c: f64) -> Array {
    mul(x, &full_like(x, c))
}

/// Adds a constant of `x`'s dtype.
pub fn add_scalar(x: &Array, c: f64) -> Array {
    add(x, &full_like(x, c))
}
