//! The closed set of primitives (JAX's `lax` level) and their parameters.
//!
//! Every operation kiln can perform is one of these. Each primitive has an abstract
//! evaluation rule (shapes and dtypes, [`crate::rules`]), a JVP rule, a transpose rule if it
//! is linear, and an eager CPU kernel ([`crate::backend::cpu`]). Because the enum is
//! closed, a missing rule is a compile error (`match` is exhaustive).
//!
//! Operand conventions (all shapes must already agree; numpy-style broadcasting and type
//! promotion live in the [`Array`](crate::Array) methods, not here):
//! - unary elementwise: one operand; output has the operand's aval (predicates: bool).
//! - binary elementwise: two operands of identical shape and dtype.
//! - comparisons: like binary, output bool.

use crate::dtype::DType;
use std::fmt;

/// The reduction performed by a [`Prim::ReduceWindow`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WindowKind {
    /// Sum over the window (average pooling divides afterwards).
    Sum,
    /// Maximum over the window (max pooling).
    Max,
    /// Minimum over the window.
    Min,
}

/// A primitive operation with its static parameters.
///
/// Parameters are plain data (`Hash + Eq`) so that jitted programs can be cached by them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Prim {
    // ---- unary elementwise -------------------------------------------------------------
    /// `-x`.
    Neg,
    /// `e^x`.
    Exp,
    /// Natural logarithm.
    Log,
    /// `log(1 + x)`.
    Log1p,
    /// `e^x - 1`.
    Expm1,
    /// Sine.
    Sin,
    /// Cosine.
    Cos,
    /// Hyperbolic tangent.
    Tanh,
    /// `1 / (1 + e^-x)`.
    Logistic,
    /// Square root.
    Sqrt,
    /// `1 / sqrt(x)`.
    Rsqrt,
    /// Absolute value.
    Abs,
    /// `-1`, `0` or `1` (NaN stays NaN).
    Sign,
    /// Round toward negative infinity.
    Floor,
    /// Round toward positive infinity.
    Ceil,
    /// Round half away from zero.
    Round,
    /// Error function.
    Erf,
    /// Inverse error function.
    ErfInv,
    /// True where finite (bool output).
    IsFinite,
    /// Logical not (bool) or bitwise not (integers).
    Not,
    /// `x^y` for a static integer `y`.
    IntegerPow {
        /// The exponent.
        y: i32,
    },
    /// GELU (`jax.nn.gelu`): `x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))` when
    /// `approximate`, else `x/2 * (1 + erf(x / sqrt 2))`.
    ///
    /// JAX writes GELU as a composite and relies on XLA to fuse it; kiln's CPU backend
    /// interprets fused programs one instruction at a time, so GELU and its derivative are
    /// primitives that run as one vectorized loop each (a composite GELU backward was
    /// eighteen instructions).
    Gelu {
        /// The tanh approximation (`true`) or the exact erf form.
        approximate: bool,
    },
    /// The derivative of [`Prim::Gelu`], `d gelu(x) / dx` (the factor of its JVP).
    GeluGrad {
        /// As in [`Prim::Gelu`].
        approximate: bool,
    },

    // ---- binary elementwise ------------------------------------------------------------
    /// `x + y`.
    Add,
    /// `x - y`.
    Sub,
    /// `x * y`.
    Mul,
    /// `x / y` (integers round toward zero).
    Div,
    /// Remainder with the sign of the dividend (C `fmod`).
    Rem,
    /// `x^y` (floats).
    Pow,
    /// Elementwise maximum (NaN-propagating).
    Max,
    /// Elementwise minimum (NaN-propagating).
    Min,
    /// `atan2(x, y)`.
    Atan2,
    /// Logical/bitwise and.
    And,
    /// Logical/bitwise or.
    Or,
    /// Logical/bitwise xor.
    Xor,
    /// Left shift (integers; shifts of at least the bit width give 0).
    ShiftLeft,
    /// Logical right shift.
    ShiftRightLogical,
    /// Arithmetic right shift.
    ShiftRightArithmetic,
    /// `x == y` (bool output).
    Eq,
    /// `x != y` (bool output).
    Ne,
    /// `x < y` (bool output).
    Lt,
    /// `x <= y` (bool output).
    Le,
    /// `x > y` (bool output).
    Gt,
    /// `x >= y` (bool output).
    Ge,

    // ---- selection and conversion ------------------------------------------------------
    /// `select(pred, on_true, on_false)`: `pred` is bool of the same shape.
    Select,
    /// `clamp(lo, x, hi)`: all three the same shape and dtype.
    Clamp,
    /// Value conversion to another dtype (`as`-cast semantics; float to int truncates).
    ConvertElementType {
        /// Target dtype.
        dtype: DType,
    },
    /// Reinterprets the bits as another dtype of the same width.
    BitcastConvertType {
        /// Target dtype.
        dtype: DType,
    },
    /// Identity whose tangent is zero.
    StopGradient,

    // ---- shape -------------------------------------------------------------------------
    /// Broadcasts the operand into `shape`; operand dim `i` maps to output dim `dims[i]`
    /// (sizes equal or 1).
    BroadcastInDim {
        /// Output shape.
        shape: Vec<usize>,
        /// For each operand dim, the output dim it maps to (strictly increasing).
        dims: Vec<usize>,
    },
    /// Same elements, new shape (row-major order).
    Reshape {
        /// The new shape (same element count).
        shape: Vec<usize>,
    },
    /// Permutes dimensions: output dim `i` is operand dim `perm[i]`.
    Transpose {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// Reverses the order of elements along `axes`.
    Rev {
        /// Axes to reverse.
        axes: Vec<usize>,
    },
    /// Removes size-1 dimensions `axes`.
    Squeeze {
        /// Axes to remove (sorted, each of size 1).
        axes: Vec<usize>,
    },
    /// Inserts size-1 dimensions so that they sit at `axes` of the output.
    ExpandDims {
        /// Output positions of the new dims (sorted).
        axes: Vec<usize>,
    },

    // ---- reductions --------------------------------------------------------------------
    /// Sum over `axes` (removed from the shape).
    ReduceSum {
        /// Axes to reduce (sorted, unique).
        axes: Vec<usize>,
    },
    /// Maximum over `axes`.
    ReduceMax {
        /// Axes to reduce.
        axes: Vec<usize>,
    },
    /// Minimum over `axes`.
    ReduceMin {
        /// Axes to reduce.
        axes: Vec<usize>,
    },
    /// Product over `axes`.
    ReduceProd {
        /// Axes to reduce.
        axes: Vec<usize>,
    },
    /// Index of the (first) maximum along `axis` (removed from the shape).
    ArgMax {
        /// Axis to search.
        axis: usize,
        /// Integer dtype of the result.
        index_dtype: DType,
    },
    /// Index of the (first) minimum along `axis`.
    ArgMin {
        /// Axis to search.
        axis: usize,
        /// Integer dtype of the result.
        index_dtype: DType,
    },
    /// Inclusive cumulative sum along `axis`.
    Cumsum {
        /// Axis to scan.
        axis: usize,
        /// Scan from the end.
        reverse: bool,
    },

    // ---- contractions ------------------------------------------------------------------
    /// General tensor contraction (`lax.dot_general`). Output dims: batch dims, then lhs
    /// free dims, then rhs free dims. Operands have the same dtype.
    DotGeneral {
        /// Contracting dims of the lhs.
        lhs_contract: Vec<usize>,
        /// Contracting dims of the rhs (paired with `lhs_contract`).
        rhs_contract: Vec<usize>,
        /// Batch dims of the lhs.
        lhs_batch: Vec<usize>,
        /// Batch dims of the rhs (paired with `lhs_batch`).
        rhs_batch: Vec<usize>,
    },
    /// N-d convolution (`lax.conv_general_dilated`) in channels-last layout:
    /// lhs `[N, spatial..., C_in]`, rhs `[spatial..., C_in / groups, C_out]`,
    /// out `[N, spatial..., C_out]`. Computes cross-correlation like XLA.
    Conv {
        /// Window strides per spatial dim.
        strides: Vec<usize>,
        /// `(low, high)` padding per spatial dim (may be negative).
        padding: Vec<(i64, i64)>,
        /// Input (lhs) dilation per spatial dim (transposed convolution).
        lhs_dilation: Vec<usize>,
        /// Kernel (rhs) dilation per spatial dim (atrous convolution).
        rhs_dilation: Vec<usize>,
        /// Number of feature groups (`C_in` and `C_out` divisible by it).
        feature_group_count: usize,
    },

    // ---- windows -----------------------------------------------------------------------
    /// Reduction over sliding windows (pooling). One operand; padding uses the reduction's
    /// identity (0, -inf, +inf).
    ReduceWindow {
        /// The reduction.
        kind: WindowKind,
        /// Window size per operand dim.
        window: Vec<usize>,
        /// Stride per operand dim.
        strides: Vec<usize>,
        /// `(low, high)` padding per operand dim.
        padding: Vec<(i64, i64)>,
    },
    /// Operands `(tangent, operand)`: for every window of `operand`, picks the tangent at
    /// the position of the window's maximum. Output has the `ReduceWindow` output shape.
    /// Linear in `tangent` (the JVP of max pooling).
    SelectAndGatherAdd {
        /// Window size per dim.
        window: Vec<usize>,
        /// Stride per dim.
        strides: Vec<usize>,
        /// Padding per dim.
        padding: Vec<(i64, i64)>,
    },
    /// Operands `(source, operand)`: adds each `source` element (one per window) into the
    /// position of that window's maximum in `operand`. Output has the operand's shape.
    /// Linear in `source` (the gradient of max pooling); transpose of `SelectAndGatherAdd`.
    SelectAndScatterAdd {
        /// Window size per dim.
        window: Vec<usize>,
        /// Stride per dim.
        strides: Vec<usize>,
        /// Padding per dim.
        padding: Vec<(i64, i64)>,
    },

    // ---- slicing and indexing ----------------------------------------------------------
    /// Static strided slice `operand[start:limit:stride]` per dim.
    Slice {
        /// Start per dim.
        start: Vec<usize>,
        /// Limit (exclusive) per dim.
        limit: Vec<usize>,
        /// Stride per dim (>= 1).
        strides: Vec<usize>,
    },
    /// Operands `(operand, start_0, ..., start_{n-1})` with scalar integer starts: the
    /// slice of `sizes` at those starts, clamped so it stays in bounds (as XLA does).
    DynamicSlice {
        /// Slice size per dim.
        sizes: Vec<usize>,
    },
    /// Operands `(operand, update, start_0, ..., start_{n-1})`: `operand` with `update`
    /// written at the (clamped) starts.
    DynamicUpdateSlice,
    /// Joins operands along `axis`.
    Concatenate {
        /// The axis.
        axis: usize,
    },
    /// Operands `(operand, padding_value)` (scalar): pads with `lo`/`hi` elements (negative
    /// crops) and `interior` elements between neighbours, per dim.
    Pad {
        /// Low padding per dim.
        lo: Vec<i64>,
        /// High padding per dim.
        hi: Vec<i64>,
        /// Interior padding per dim.
        interior: Vec<usize>,
    },
    /// Operands `(operand, indices)`. With `b = batch_dims`: operand
    /// `[B_0..B_b, rest_before.., N (at axis), rest_after..]`, indices `[B_0..B_b, I...]`
    /// (integer). Output: `operand.shape[..axis]` with the dim at `axis` replaced by `I...`
    /// i.e. `[B.., rest_before.., I.., rest_after..]`, taking `operand[.., idx, ..]` along
    /// `axis` where the leading `b` dims are shared (like `tf.gather(batch_dims=b)`).
    /// Indices are clamped into range (as XLA does). Requires `batch_dims <= axis`.
    Gather {
        /// The gathered axis of the operand.
        axis: usize,
        /// Number of leading dims shared by operand and indices.
        batch_dims: usize,
    },
    /// Operands `(operand, indices, updates)`, the transpose of [`Prim::Gather`]: `updates`
    /// has the gather output shape and is added into `operand` at the indexed positions
    /// (duplicates accumulate; out-of-range indices are dropped).
    ScatterAdd {
        /// The scattered axis of the operand.
        axis: usize,
        /// Number of leading dims shared by operand and indices.
        batch_dims: usize,
    },
    /// Like [`Prim::ScatterAdd`] but overwrites (`x.at[idx].set(v)`); with duplicate
    /// indices the last update wins.
    Scatter {
        /// The scattered axis of the operand.
        axis: usize,
        /// Number of leading dims shared by operand and indices.
        batch_dims: usize,
    },

    // ---- creation, sorting, randomness -------------------------------------------------
    /// `0, 1, 2, ...` along `dim` of `shape`, broadcast along the others. No operands.
    Iota {
        /// Element type.
        dtype: DType,
        /// Output shape.
        shape: Vec<usize>,
        /// The counting dim.
        dim: usize,
    },
    /// Sorts all operands (same shape) along `axis` by the lexicographic order of the first
    /// `num_keys` operands (stable, ascending; NaNs last). Outputs one array per operand.
    Sort {
        /// Axis to sort along.
        axis: usize,
        /// How many leading operands are keys.
        num_keys: usize,
    },
    /// The threefry-2x32 block cipher: operands `(k0, k1, x0, x1)`, all `u32` of one shape;
    /// outputs `(y0, y1)`. The basis of [`crate::random`].
    Threefry2x32,

    // ---- higher-order --------------------------------------------------------------------
    /// A call of a staged program ([`jit`](mod@crate::jit)): the operands are the program's inputs,
    /// the results its outputs. Differentiation and batching transform the program.
    Call {
        /// The program and its compiled executable.
        callee: crate::jit::Callee,
    },
}

impl Prim {
    /// The primitive's name as it appears in printed jaxprs (JAX's names).
    pub fn name(&self) -> &'static str {
        use Prim::*;
        match self {
            Neg => "neg",
            Exp => "exp",
            Log => "log",
            Log1p => "log1p",
            Expm1 => "expm1",
            Sin => "sin",
            Cos => "cos",
            Tanh => "tanh",
            Logistic => "logistic",
            Sqrt => "sqrt",
            Rsqrt => "rsqrt",
            Abs => "abs",
            Sign => "sign",
            Floor => "floor",
            Ceil => "ceil",
            Round => "round",
            Erf => "erf",
            ErfInv => "erf_inv",
            IsFinite => "is_finite",
            Not => "not",
            IntegerPow { .. } => "integer_pow",
            Gelu { .. } => "gelu",
            GeluGrad { .. } => "gelu_grad",
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "div",
            Rem => "rem",
            Pow => "pow",
            Max => "max",
            Min => "min",
            Atan2 => "atan2",
            And => "and",
            Or => "or",
            Xor => "xor",
            ShiftLeft => "shift_left",
            ShiftRightLogical => "shift_right_logical",
            ShiftRightArithmetic => "shift_right_arithmetic",
            Eq => "eq",
            Ne => "ne",
            Lt => "lt",
            Le => "le",
            Gt => "gt",
            Ge => "ge",
            Select => "select_n",
            Clamp => "clamp",
            ConvertElementType { .. } => "convert_element_type",
            BitcastConvertType { .. } => "bitcast_convert_type",
            StopGradient => "stop_gradient",
            BroadcastInDim { .. } => "broadcast_in_dim",
            Reshape { .. } => "reshape",
            Transpose { .. } => "transpose",
            Rev { .. } => "rev",
            Squeeze { .. } => "squeeze",
            ExpandDims { .. } => "expand_dims",
            ReduceSum { .. } => "reduce_sum",
            ReduceMax { .. } => "reduce_max",
            ReduceMin { .. } => "reduce_min",
            ReduceProd { .. } => "reduce_prod",
            ArgMax { .. } => "argmax",
            ArgMin { .. } => "argmin",
            Cumsum { .. } => "cumsum",
            DotGeneral { .. } => "dot_general",
            Conv { .. } => "conv_general_dilated",
            ReduceWindow { kind, .. } => match kind {
                WindowKind::Sum => "reduce_window_sum",
                WindowKind::Max => "reduce_window_max",
                WindowKind::Min => "reduce_window_min",
            },
            SelectAndGatherAdd { .. } => "select_and_gather_add",
            SelectAndScatterAdd { .. } => "select_and_scatter_add",
            Slice { .. } => "slice",
            DynamicSlice { .. } => "dynamic_slice",
            DynamicUpdateSlice => "dynamic_update_slice",
            Concatenate { .. } => "concatenate",
            Pad { .. } => "pad",
            Gather { .. } => "gather",
            ScatterAdd { .. } => "scatter_add",
            Scatter { .. } => "scatter",
            Iota { .. } => "iota",
            Sort { .. } => "sort",
            Threefry2x32 => "threefry2x32",
            Call { .. } => "jit",
        }
    }

    /// True for unary elementwise primitives.
    pub fn is_unary_elementwise(&self) -> bool {
        use Prim::*;
        matches!(
            self,
            Neg | Exp
                | Log
                | Log1p
                | Expm1
                | Sin
                | Cos
                | Tanh
                | Logistic
                | Sqrt
                | Rsqrt
                | Abs
                | Sign
                | Floor
                | Ceil
                | Round
                | Erf
                | ErfInv
                | IsFinite
                | Not
                | IntegerPow { .. }
                | Gelu { .. }
                | GeluGrad { .. }
                | ConvertElementType { .. }
                | BitcastConvertType { .. }
                | StopGradient
        )
    }

    /// True for binary elementwise primitives (including comparisons).
    pub fn is_binary_elementwise(&self) -> bool {
        use Prim::*;
        matches!(
            self,
            Add | Sub
                | Mul
                | Div
                | Rem
                | Pow
                | Max
                | Min
                | Atan2
                | And
                | Or
                | Xor
                | ShiftLeft
                | ShiftRightLogical
                | ShiftRightArithmetic
                | Eq
                | Ne
                | Lt
                | Le
                | Gt
                | Ge
        )
    }

    /// True for the comparisons (bool output).
    pub fn is_comparison(&self) -> bool {
        use Prim::*;
        matches!(self, Eq | Ne | Lt | Le | Gt | Ge)
    }

    /// The parameters in `key=value` form for printing (empty for parameter-free prims).
    pub fn params(&self) -> String {
        use Prim::*;
        fn l<T: fmt::Debug>(v: &[T]) -> String {
            format!("{v:?}").replace(' ', "")
        }
        match self {
            IntegerPow { y } => format!("y={y}"),
            Gelu { approximate } | GeluGrad { approximate } => format!("approximate={approximate}"),
            ConvertElementType { dtype } | BitcastConvertType { dtype } => {
                format!("new_dtype={dtype}")
            }
            BroadcastInDim { shape, dims } => {
                format!("shape={} broadcast_dimensions={}", l(shape), l(dims))
            }
            Reshape { shape } => format!("new_sizes={}", l(shape)),
            Transpose { perm } => format!("permutation={}", l(perm)),
            Rev { axes } | Squeeze { axes } | ExpandDims { axes } => {
                format!("dimensions={}", l(axes))
            }
            ReduceSum { axes } | ReduceMax { axes } | ReduceMin { axes } | ReduceProd { axes } => {
                format!("axes={}", l(axes))
            }
            ArgMax { axis, index_dtype } | ArgMin { axis, index_dtype } => {
                format!("axes=[{axis}] index_dtype={index_dtype}")
            }
            Cumsum { axis, reverse } => format!("axis={axis} reverse={reverse}"),
            DotGeneral { lhs_contract, rhs_contract, lhs_batch, rhs_batch } => format!(
                "dimension_numbers=(({}, {}), ({}, {}))",
                l(lhs_contract),
                l(rhs_contract),
                l(lhs_batch),
                l(rhs_batch)
            ),
            Conv { strides, padding, lhs_dilation, rhs_dilation, feature_group_count } => {
                format!(
                    "window_strides={} padding={} lhs_dilation={} rhs_dilation={} feature_group_count={}",
                    l(strides),
                    l(padding),
                    l(lhs_dilation),
                    l(rhs_dilation),
                    feature_group_count
                )
            }
            ReduceWindow { window, strides, padding, .. }
            | SelectAndGatherAdd { window, strides, padding }
            | SelectAndScatterAdd { window, strides, padding } => format!(
                "window_dimensions={} window_strides={} padding={}",
                l(window),
                l(strides),
                l(padding)
            ),
            Slice { start, limit, strides } => format!(
                "start_indices={} limit_indices={} strides={}",
                l(start),
                l(limit),
                l(strides)
            ),
            DynamicSlice { sizes } => format!("slice_sizes={}", l(sizes)),
            Concatenate { axis } => format!("dimension={axis}"),
            Pad { lo, hi, interior } => {
                let cfg: Vec<_> = (0..lo.len()).map(|i| (lo[i], hi[i], interior[i])).collect();
                format!("padding_config={}", l(&cfg))
            }
            Gather { axis, batch_dims }
            | ScatterAdd { axis, batch_dims }
            | Scatter { axis, batch_dims } => {
                format!("axis={axis} batch_dims={batch_dims}")
            }
            Iota { dtype, shape, dim } => {
                format!("dtype={dtype} shape={} dimension={dim}", l(shape))
            }
            Sort { axis, num_keys } => format!("dimension={axis} num_keys={num_keys}"),
            Call { callee } => {
                let body = callee.jaxpr().to_string().replace('\n', "\n      ");
                format!("name={} jaxpr={body}", callee.name())
            }
            _ => String::new(),
        }
    }
}

impl fmt::Display for Prim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.params();
        if p.is_empty() { f.write_str(self.name()) } else { write!(f, "{}[{}]", self.name(), p) }
    }
}
