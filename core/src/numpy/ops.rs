//! Operands, weak typing, type promotion, broadcasting, and the binary operations built on
//! them (methods and `std::ops` operators).

use super::{dtype_err, ok, rename, shape_err};
use crate::array::Array;
use crate::aval::broadcast_shapes;
use crate::dtype::DType;
use crate::error::Result;
use crate::lax;

/// A weakly typed Rust scalar operand: it takes the dtype of the array it meets (JAX's weak
/// types), except that a float scalar with an integer or bool array gives `f32` and an
/// integer scalar with a bool array gives `i32`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeakScalar {
    /// A `bool`.
    Bool(bool),
    /// Any Rust integer, widened.
    Int(i64),
    /// Any Rust float, widened.
    Float(f64),
}

impl WeakScalar {
    /// The value as `f64`.
    pub fn to_f64(self) -> f64 {
        match self {
            WeakScalar::Bool(b) => b as i32 as f64,
            WeakScalar::Int(v) => v as f64,
            WeakScalar::Float(v) => v,
        }
    }

    /// A 0-d array of `dtype` holding this value (integers wrap like `as` casts).
    pub fn to_array(self, dtype: DType) -> Array {
        match self {
            WeakScalar::Int(v) => match dtype {
                DType::Bool => Array::scalar(v != 0),
                DType::U8 => Array::scalar(v as u8),
                DType::U32 => Array::scalar(v as u32),
                DType::I32 => Array::scalar(v as i32),
                DType::I64 => Array::scalar(v),
                d => Array::scalar_of(v as f64, d),
            },
            WeakScalar::Float(v) => Array::scalar_of(v, dtype),
            WeakScalar::Bool(b) => Array::scalar_of(b as i32 as f64, dtype),
        }
    }
}

/// An operand of a numpy-style operation: an array, or a weakly typed scalar.
#[derive(Clone, Debug)]
pub enum ArrayOrScalar {
    /// An array (strongly typed).
    Array(Array),
    /// A Rust scalar (weakly typed).
    Scalar(WeakScalar),
}

impl ArrayOrScalar {
    fn array(&self) -> Option<&Array> {
        match self {
            ArrayOrScalar::Array(a) => Some(a),
            ArrayOrScalar::Scalar(_) => None,
        }
    }
}

/// Anything usable as an operand of a numpy-style operation: `Array`, `&Array`, and the
/// Rust scalars `f32`, `f64`, `i32`, `i64`, `u32`, `u8`, `bool` (weakly typed).
pub trait ArrayLike {
    /// Converts into an operand.
    fn into_array_or_scalar(self) -> ArrayOrScalar;
}

impl ArrayLike for Array {
    fn into_array_or_scalar(self) -> ArrayOrScalar {
        ArrayOrScalar::Array(self)
    }
}

impl ArrayLike for &Array {
    fn into_array_or_scalar(self) -> ArrayOrScalar {
        ArrayOrScalar::Array(self.clone())
    }
}

impl ArrayLike for &&Array {
    fn into_array_or_scalar(self) -> ArrayOrScalar {
        ArrayOrScalar::Array((*self).clone())
    }
}

impl ArrayLike for ArrayOrScalar {
    fn into_array_or_scalar(self) -> ArrayOrScalar {
        self
    }
}

impl ArrayLike for WeakScalar {
    fn into_array_or_scalar(self) -> ArrayOrScalar {
        ArrayOrScalar::Scalar(self)
    }
}

macro_rules! weak_scalars {
    ($($t:ty => $v:ident);*) => {$(
        impl ArrayLike for $t {
            fn into_array_or_scalar(self) -> ArrayOrScalar {
                ArrayOrScalar::Scalar(WeakScalar::$v(self.into()))
            }
        }
    )*};
}

weak_scalars!(f32 => Float; f64 => Float; i32 => Int; i64 => Int; u32 => Int; u8 => Int; bool => Bool);

// ---- promotion and broadcasting ----------------------------------------------------------

/// The dtype operands are converted to: [`DType::promote`] over the arrays, then the weak
/// scalars (a float scalar lifts ints and bool to `f32`, an integer scalar lifts bool to
/// `i32`). Scalars alone give `f32`, `i32` or `bool`.
pub(crate) fn result_dtype(ops: &[&ArrayOrScalar]) -> DType {
    let mut strong: Option<DType> = None;
    let (mut weak_float, mut weak_int) = (false, false);
    for op in ops {
        match op {
            ArrayOrScalar::Array(a) => {
                strong = Some(strong.map_or(a.dtype(), |d| DType::promote(d, a.dtype())))
            }
            ArrayOrScalar::Scalar(WeakScalar::Float(_)) => weak_float = true,
            ArrayOrScalar::Scalar(WeakScalar::Int(_)) => weak_int = true,
            ArrayOrScalar::Scalar(WeakScalar::Bool(_)) => {}
        }
    }
    match strong {
        Some(d) if weak_float && !d.is_float() => DType::F32,
        Some(DType::Bool) if weak_int => DType::I32,
        Some(d) => d,
        None if weak_float => DType::F32,
        None if weak_int => DType::I32,
        None => DType::Bool,
    }
}

/// `A and B`, `A, B and C`, ... for error messages.
pub(crate) fn fmt_shapes(shapes: &[&[usize]]) -> String {
    let parts: Vec<String> = shapes.iter().map(|s| format!("{s:?}")).collect();
    match parts.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

/// The numpy broadcast of the shapes of `xs`, or an error naming `op` and every shape.
pub(crate) fn broadcast_shape_of(op: &str, xs: &[&Array]) -> Result<Vec<usize>> {
    let mut shape: Vec<usize> = vec![];
    for x in xs {
        match broadcast_shapes(&shape, x.shape()) {
            Some(s) => shape = s,
            None => {
                let shapes: Vec<&[usize]> = xs.iter().map(|a| a.shape()).collect();
                return Err(shape_err(
                    op,
                    format!("cannot broadcast shapes {}", fmt_shapes(&shapes)),
                    xs,
                ));
            }
        }
    }
    Ok(shape)
}

/// Broadcasts `x` to `shape` (numpy rules, right-aligned); the shapes must be compatible.
pub(crate) fn broadcast_to_shape(x: &Array, shape: &[usize]) -> Array {
    let off = shape.len() - x.ndim();
    let dims: Vec<usize> = (off..shape.len()).collect();
    lax::broadcast_in_dim(x, shape, &dims)
}

/// `x` converted to `dtype` and broadcast to `shape`.
pub(crate) fn materialize(x: &ArrayOrScalar, dtype: DType, shape: &[usize]) -> Array {
    match x {
        ArrayOrScalar::Array(a) => broadcast_to_shape(&lax::convert_element_type(a, dtype), shape),
        ArrayOrScalar::Scalar(s) => lax::broadcast_in_dim(&s.to_array(dtype), shape, &[]),
    }
}

/// Promotes operands to one dtype (`map` may adjust it, e.g. to a float) and broadcasts
/// them to one shape: the preparation of every numpy-style n-ary operation.
pub(crate) fn prepare(
    op: &str,
    ops: &[ArrayOrScalar],
    map: impl FnOnce(DType) -> DType,
) -> Result<Vec<Array>> {
    let refs: Vec<&ArrayOrScalar> = ops.iter().collect();
    let dtype = map(result_dtype(&refs));
    let arrays: Vec<&Array> = ops.iter().filter_map(|o| o.array()).collect();
    let shape = broadcast_shape_of(op, &arrays)?;
    Ok(ops.iter().map(|o| materialize(o, dtype, &shape)).collect())
}

/// [`prepare`] for two operands.
pub(crate) fn promote_pair(
    op: &str,
    a: ArrayOrScalar,
    b: ArrayOrScalar,
    map: impl FnOnce(DType) -> DType,
) -> Result<(Array, Array)> {
    let mut v = prepare(op, &[a, b], map)?;
    let b = v.pop().expect("two operands");
    let a = v.pop().expect("two operands");
    Ok((a, b))
}

/// `x != 0` (identity on bool).
pub(crate) fn to_bool(x: &Array) -> Array {
    if x.dtype() == DType::Bool { x.clone() } else { lax::ne(x, &lax::zeros_like(x)) }
}

fn same(d: DType) -> DType {
    d
}

fn inexact(d: DType) -> DType {
    if d.is_float() { d } else { DType::F32 }
}

fn non_bool(d: DType) -> DType {
    if d == DType::Bool { DType::I32 } else { d }
}

// ---- the binary operations ---------------------------------------------------------------

/// A numpy-style binary operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    FMod,
    FloorDiv,
    Pow,
    Max,
    Min,
    Atan2,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    LogicalAnd,
    LogicalOr,
    LogicalXor,
    BitAnd,
    BitOr,
    BitXor,
    Shl,
    Shr,
}

impl Bin {
    fn name(self) -> &'static str {
        use Bin::*;
        match self {
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "div",
            Rem => "rem",
            FMod => "fmod",
            FloorDiv => "floor_divide",
            Pow => "pow",
            Max => "maximum",
            Min => "minimum",
            Atan2 => "atan2",
            Eq => "eq",
            Ne => "ne",
            Lt => "lt",
            Le => "le",
            Gt => "gt",
            Ge => "ge",
            LogicalAnd => "logical_and",
            LogicalOr => "logical_or",
            LogicalXor => "logical_xor",
            BitAnd => "bitwise_and",
            BitOr => "bitwise_or",
            BitXor => "bitwise_xor",
            Shl => "shift_left",
            Shr => "shift_right",
        }
    }

    /// Applies the operation with broadcasting and promotion.
    pub(crate) fn apply(self, a: ArrayOrScalar, b: ArrayOrScalar) -> Result<Array> {
        use Bin::*;
        let op = self.name();
        if self == Pow {
            return pow(a, b);
        }
        let map: fn(DType) -> DType = match self {
            Div | Atan2 => inexact,
            Rem | FMod | FloorDiv => non_bool,
            _ => same,
        };
        let (x, y) = promote_pair(op, a, b, map)?;
        let r = match self {
            Add => lax::try_add(&x, &y),
            Sub => lax::try_sub(&x, &y),
            Mul => lax::try_mul(&x, &y),
            Div => lax::try_div(&x, &y),
            Rem => floor_mod(&x, &y),
            FMod => lax::try_rem(&x, &y),
            FloorDiv => floor_div(&x, &y),
            Max => lax::try_max(&x, &y),
            Min => lax::try_min(&x, &y),
            Atan2 => lax::try_atan2(&x, &y),
            Eq => lax::try_eq(&x, &y),
            Ne => lax::try_ne(&x, &y),
            Lt => lax::try_lt(&x, &y),
            Le => lax::try_le(&x, &y),
            Gt => lax::try_gt(&x, &y),
            Ge => lax::try_ge(&x, &y),
            LogicalAnd => lax::try_and(&to_bool(&x), &to_bool(&y)),
            LogicalOr => lax::try_or(&to_bool(&x), &to_bool(&y)),
            LogicalXor => lax::try_xor(&to_bool(&x), &to_bool(&y)),
            BitAnd => lax::try_and(&x, &y),
            BitOr => lax::try_or(&x, &y),
            BitXor => lax::try_xor(&x, &y),
            Shl => lax::try_shift_left(&x, &y),
            Shr if x.dtype().is_unsigned() => lax::try_shift_right_logical(&x, &y),
            Shr => lax::try_shift_right_arithmetic(&x, &y),
            Pow => unreachable!("handled above"),
        };
        r.map_err(|e| rename(e, op))
    }
}

/// Remainder with the sign of the divisor (numpy's `remainder`).
fn floor_mod(x: &Array, y: &Array) -> Result<Array> {
    let r = lax::try_rem(x, y)?;
    if x.dtype().is_unsigned() {
        return Ok(r);
    }
    let zero = lax::zeros_like(&r);
    let signs_differ = lax::ne(&lax::lt(&r, &zero), &lax::lt(y, &zero));
    let fix = lax::and(&lax::ne(&r, &zero), &signs_differ);
    Ok(lax::select(&fix, &lax::add(&r, y), &r))
}

/// Division rounding toward negative infinity (numpy's `floor_divide`).
fn floor_div(x: &Array, y: &Array) -> Result<Array> {
    let q = lax::try_div(x, y)?;
    if x.dtype().is_float() {
        return Ok(lax::floor(&q));
    }
    if x.dtype().is_unsigned() {
        return Ok(q);
    }
    let r = lax::rem(x, y);
    let zero = lax::zeros_like(&r);
    let signs_differ = lax::ne(&lax::lt(&r, &zero), &lax::lt(y, &zero));
    let fix = lax::and(&lax::ne(&r, &zero), &signs_differ);
    Ok(lax::select(&fix, &lax::sub(&q, &lax::full_like(&q, 1.0)), &q))
}

/// `x ** y`: an integer scalar exponent uses `integer_pow`; float operands use `pow`;
/// integer arrays use exponentiation by squaring.
fn pow(a: ArrayOrScalar, b: ArrayOrScalar) -> Result<Array> {
    if let (ArrayOrScalar::Array(x), ArrayOrScalar::Scalar(WeakScalar::Int(n))) = (&a, &b)
        && let Ok(n32) = i32::try_from(*n)
    {
        let x = lax::convert_element_type(x, non_bool(x.dtype()));
        if !x.dtype().is_float() && n32 < 0 {
            return Err(dtype_err("pow", "integers cannot be raised to negative powers", &[&x]));
        }
        return Ok(lax::integer_pow(&x, n32));
    }
    let (x, y) = promote_pair("pow", a, b, non_bool)?;
    if x.dtype().is_float() {
        lax::try_pow(&x, &y).map_err(|e| rename(e, "pow"))
    } else {
        Ok(int_pow(&x, &y))
    }
}

/// Integer power by squaring over the exponent's bits; negative exponents give the
/// truncated reciprocal (0 unless the base is 1 or -1).
fn int_pow(x: &Array, y: &Array) -> Array {
    let one = lax::full_like(x, 1.0);
    let zero = lax::zeros_like(x);
    let (mut acc, mut base, mut e) = (one.clone(), x.clone(), y.clone());
    for _ in 0..x.dtype().size_in_bytes() * 8 {
        let bit = lax::ne(&lax::and(&e, &one), &zero);
        acc = lax::select(&bit, &lax::mul(&acc, &base), &acc);
        base = lax::mul(&base, &base);
        e = lax::shift_right_logical(&e, &one);
    }
    if x.dtype().is_unsigned() {
        return acc;
    }
    let minus_one = lax::neg(&one);
    let odd = lax::ne(&lax::and(y, &one), &zero);
    let neg_result = lax::select(
        &lax::eq(x, &one),
        &one,
        &lax::select(&lax::eq(x, &minus_one), &lax::select(&odd, &minus_one, &one), &zero),
    );
    lax::select(&lax::lt(y, &zero), &neg_result, &acc)
}

macro_rules! binary_methods {
    ($($name:ident $try_name:ident $B:ident $doc:literal;)*) => {
        impl Array {$(
            #[doc = $doc]
            ///
            /// Broadcasts and promotes like numpy/JAX; panics if the shapes do not broadcast
            /// or the dtype does not support the operation.
            #[track_caller]
            pub fn $name(&self, other: impl ArrayLike) -> Array {
                ok(self.$try_name(other))
            }

            #[doc = concat!("Fallible [`Array::", stringify!($name), "`].")]
            pub fn $try_name(&self, other: impl ArrayLike) -> Result<Array> {
                Bin::$B.apply(ArrayOrScalar::Array(self.clone()), other.into_array_or_scalar())
            }
        )*}
    };
}

binary_methods! {
    add try_add Add "Elementwise `self + other` (`+`).";
    sub try_sub Sub "Elementwise `self - other` (`-`).";
    mul try_mul Mul "Elementwise `self * other` (`*`).";
    div try_div Div "Elementwise true division `self / other` (`/`); integers and bool give `f32`.";
    rem try_rem Rem "Elementwise remainder with the sign of the divisor (`%`, numpy's `remainder`).";
    fmod try_fmod FMod "Elementwise remainder with the sign of the dividend (C's `fmod`, Rust's `%` on scalars).";
    floor_divide try_floor_divide FloorDiv "Elementwise division rounded toward negative infinity (numpy's `//`).";
    pow try_pow Pow "Elementwise `self ** exponent`. An integer Rust scalar exponent uses `lax::integer_pow` (exact, any numeric dtype); float operands use `lax::pow`; integer arrays use exponentiation by squaring.";
    maximum try_maximum Max "Elementwise maximum (NaN-propagating).";
    minimum try_minimum Min "Elementwise minimum (NaN-propagating).";
    atan2 try_atan2 Atan2 "Elementwise `atan2(self, other)`; integers give `f32`.";
    eq try_eq Eq "Elementwise `self == other` (bool).";
    ne try_ne Ne "Elementwise `self != other` (bool).";
    lt try_lt Lt "Elementwise `self < other` (bool).";
    le try_le Le "Elementwise `self <= other` (bool).";
    gt try_gt Gt "Elementwise `self > other` (bool).";
    ge try_ge Ge "Elementwise `self >= other` (bool).";
    logical_and try_logical_and LogicalAnd "Elementwise logical and of the truth values (nonzero is true).";
    logical_or try_logical_or LogicalOr "Elementwise logical or of the truth values.";
    logical_xor try_logical_xor LogicalXor "Elementwise logical xor of the truth values.";
    bitwise_and try_bitwise_and BitAnd "Elementwise bitwise (integers) or logical (bool) and (`&`).";
    bitwise_or try_bitwise_or BitOr "Elementwise bitwise (integers) or logical (bool) or (`|`).";
    bitwise_xor try_bitwise_xor BitXor "Elementwise bitwise (integers) or logical (bool) xor (`^`).";
    shift_left try_shift_left Shl "Elementwise left shift of integers (`<<`).";
    shift_right try_shift_right Shr "Elementwise right shift of integers (`>>`): arithmetic for signed, logical for unsigned.";
}

impl Array {
    /// Clips to `[lo, hi]`: `minimum(maximum(self, lo), hi)`, with broadcasting.
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::from_vec(vec![-2.0f32, 0.5, 3.0], [3]);
    /// assert_eq!(x.clip(0.0, 1.0).to_vec::<f32>(), vec![0.0, 0.5, 1.0]);
    /// ```
    #[track_caller]
    pub fn clip(&self, lo: impl ArrayLike, hi: impl ArrayLike) -> Array {
        ok(self.try_clip(lo, hi))
    }

    /// Fallible [`Array::clip`].
    pub fn try_clip(&self, lo: impl ArrayLike, hi: impl ArrayLike) -> Result<Array> {
        let r = Bin::Max.apply(ArrayOrScalar::Array(self.clone()), lo.into_array_or_scalar());
        let r = r.map_err(|e| rename(e, "clip"))?;
        Bin::Min
            .apply(ArrayOrScalar::Array(r), hi.into_array_or_scalar())
            .map_err(|e| rename(e, "clip"))
    }

    /// Elementwise logical not of the truth values (nonzero is true).
    pub fn logical_not(&self) -> Array {
        lax::not(&to_bool(self))
    }
}

/// `x` where `cond` is true, else `y`, elementwise with broadcasting of all three and
/// promotion of `x` with `y` (numpy's `where`). A non-bool `cond` is compared with zero.
///
/// ```
/// use kiln::{Array, numpy::where_};
/// let x = Array::from_vec(vec![-1.0f32, 2.0, -3.0], [3]);
/// let y = where_(x.gt(0.0), &x, 0.0);
/// assert_eq!(y.to_vec::<f32>(), vec![0.0, 2.0, 0.0]);
/// ```
#[track_caller]
pub fn where_(cond: impl ArrayLike, x: impl ArrayLike, y: impl ArrayLike) -> Array {
    ok(try_where(cond, x, y))
}

/// Fallible [`where_`].
pub fn try_where(cond: impl ArrayLike, x: impl ArrayLike, y: impl ArrayLike) -> Result<Array> {
    let cond = match cond.into_array_or_scalar() {
        ArrayOrScalar::Array(c) => to_bool(&c),
        ArrayOrScalar::Scalar(s) => Array::scalar(s.to_f64() != 0.0),
    };
    let (x, y) = (x.into_array_or_scalar(), y.into_array_or_scalar());
    let dtype = result_dtype(&[&x, &y]);
    let mut arrays = vec![&cond];
    arrays.extend(x.array());
    arrays.extend(y.array());
    let shape = broadcast_shape_of("where", &arrays)?;
    let c = broadcast_to_shape(&cond, &shape);
    let x = materialize(&x, dtype, &shape);
    let y = materialize(&y, dtype, &shape);
    lax::try_select(&c, &x, &y).map_err(|e| rename(e, "where"))
}

// ---- std::ops ----------------------------------------------------------------------------

macro_rules! std_binops {
    ($($Trait:ident $method:ident $B:ident;)*) => {$(
        impl<T: ArrayLike> std::ops::$Trait<T> for &Array {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: T) -> Array {
                ok(Bin::$B.apply(ArrayOrScalar::Array(self.clone()), rhs.into_array_or_scalar()))
            }
        }
        impl<T: ArrayLike> std::ops::$Trait<T> for Array {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: T) -> Array {
                ok(Bin::$B.apply(ArrayOrScalar::Array(self), rhs.into_array_or_scalar()))
            }
        }
    )*};
}

std_binops! {
    Add add Add;
    Sub sub Sub;
    Mul mul Mul;
    Div div Div;
    Rem rem Rem;
    BitAnd bitand BitAnd;
    BitOr bitor BitOr;
    BitXor bitxor BitXor;
    Shl shl Shl;
    Shr shr Shr;
}

macro_rules! std_assign_ops {
    ($($Trait:ident $method:ident $B:ident;)*) => {$(
        impl<T: ArrayLike> std::ops::$Trait<T> for Array {
            #[track_caller]
            fn $method(&mut self, rhs: T) {
                let lhs = ArrayOrScalar::Array(self.clone());
                *self = ok(Bin::$B.apply(lhs, rhs.into_array_or_scalar()));
            }
        }
    )*};
}

std_assign_ops! {
    AddAssign add_assign Add;
    SubAssign sub_assign Sub;
    MulAssign mul_assign Mul;
    DivAssign div_assign Div;
    RemAssign rem_assign Rem;
}

macro_rules! scalar_lhs_ops {
    ($($t:ty),*) => {$(
        scalar_lhs_ops!(@one $t, Add add Add);
        scalar_lhs_ops!(@one $t, Sub sub Sub);
        scalar_lhs_ops!(@one $t, Mul mul Mul);
        scalar_lhs_ops!(@one $t, Div div Div);
        scalar_lhs_ops!(@one $t, Rem rem Rem);
    )*};
    (@one $t:ty, $Trait:ident $method:ident $B:ident) => {
        impl std::ops::$Trait<&Array> for $t {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: &Array) -> Array {
                ok(Bin::$B.apply(self.into_array_or_scalar(), ArrayOrScalar::Array(rhs.clone())))
            }
        }
        impl std::ops::$Trait<Array> for $t {
            type Output = Array;
            #[track_caller]
            fn $method(self, rhs: Array) -> Array {
                ok(Bin::$B.apply(self.into_array_or_scalar(), ArrayOrScalar::Array(rhs)))
            }
        }
    };
}

scalar_lhs_ops!(f32, f64, i32, i64, u32, u8);

impl std::ops::Neg for &Array {
    type Output = Array;
    #[track_caller]
    fn neg(self) -> Array {
        lax::neg(self)
    }
}

impl std::ops::Neg for Array {
    type Output = Array;
    #[track_caller]
    fn neg(self) -> Array {
        lax::neg(&self)
    }
}

impl std::ops::Not for &Array {
    type Output = Array;
    /// Logical not of a bool array, bitwise not of an integer array.
    #[track_caller]
    fn not(self) -> Array {
        lax::not(self)
    }
}

impl std::ops::Not for Array {
    type Output = Array;
    /// Logical not of a bool array, bitwise not of an integer array.
    #[track_caller]
    fn not(self) -> Array {
        lax::not(&self)
    }
}
