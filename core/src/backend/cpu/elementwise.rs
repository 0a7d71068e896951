//! Elementwise kernels: unary math, value and bit conversions, binary arithmetic,
//! comparisons, `select` and `clamp`.
//!
//! Every kernel is a tight loop over slices (one monomorphized loop per primitive and
//! dtype, with the `match` on the primitive hoisted out of the loop) and allocates nothing
//! but its output. Arrays of at least [`PAR_THRESHOLD`] elements are split into chunks
//! that rayon processes in parallel. `f16`/`bf16` are computed through `f32` and rounded
//! back (round-to-nearest-even) once per element; `IntegerPow` on halves rounds after
//! every multiplication, as JAX does.
//!
//! Semantic choices for integers (XLA leaves these implementation defined):
//! - `Add`, `Sub`, `Mul`, `Neg`, `Abs` and `IntegerPow` wrap around (two's complement).
//! - `Div` truncates toward zero; **division by zero gives 0** (JAX on CPU gives -1);
//!   `MIN / -1` wraps to `MIN`.
//! - `Rem` has the sign of the dividend; **remainder by zero gives 0** (JAX on CPU gives
//!   the dividend); `MIN % -1` is 0.
//! - `IntegerPow` with a negative exponent computes `1 / x^|y|` with the same integer
//!   division (so `1`, `-1` or `0`, and 0 for `x == 0`).
//! - Shift amounts are read as unsigned: shifting by at least the bit width gives 0
//!   (`ShiftRightArithmetic`: all sign bits). Arithmetic shifts of unsigned types shift in
//!   the top bit, like XLA.
//!
//! Floats: `Max`/`Min` (and `Clamp`) propagate NaN; `Sign` keeps ±0 and NaN; `Round`
//! rounds half away from zero; `Logistic` never overflows; `ErfInv` reproduces XLA's CPU
//! evaluation (Giles' approximations, `ErfInv32`/`ErfInv64`) bit for bit, with
//! `erf_inv(±1) = ±inf`. Subnormals are kept (XLA's CPU runtime flushes them to zero).
//! Conversions and the exactly rounded operations match JAX 0.10.2 on CPU bit for bit;
//! the other transcendentals use Rust's `std`/libm and are within a few ulp of XLA's
//! approximations.

use super::PAR_THRESHOLD;
use crate::backend::{Storage, StorageElement};
use crate::dtype::{DType, Element};
use crate::lax::{GELU_CUBIC, GELU_SCALE, INV_SQRT_2PI};
use crate::prim::Prim;
use crate::with_storage;
use half::{bf16, f16};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::{Add, BitAnd, BitOr, BitXor, Div, Mul, Neg, Not, Rem, Sub};

/// Elements per rayon task in the parallel elementwise paths.
pub(super) const CHUNK: usize = 1 << 12;

/// Elements from which the elementwise maps run their loop compiled for the CPU's
/// [`Simd`](super::Simd) level (serially below [`PAR_THRESHOLD`]); shorter inputs take a
/// plain loop, whose cost is already below the dispatch's. Before, every input shorter
/// than `PAR_THRESHOLD` ran the baseline (SSE2) loop: eager `tanh` over 4096 `f32` took
/// 5.2-5.4 us, now 2.0-2.8.
const SIMD_MIN: usize = 64;

/// Panics for a primitive/dtype pair that abstract evaluation rejects.
#[cold]
#[track_caller]
pub(super) fn unsupported(prim: &Prim, dtype: DType) -> ! {
    panic!("cpu kernel: `{prim}` is not defined for {dtype} (abstract_eval rejects this)")
}

// ---- output construction -----------------------------------------------------------------

/// Builds a vector of `n` elements by calling `fill(start, chunk)` on disjoint chunks of
/// the uninitialised output, where `chunk` covers positions `start..start + chunk.len()`.
/// Chunks hold `chunk` elements (the last may hold fewer) and run on rayon when
/// `n >= PAR_THRESHOLD`; otherwise `fill` is called once with the whole output.
///
/// # Safety
///
/// `fill` must initialise every element of each chunk it is given.
pub(super) unsafe fn build<U, F>(n: usize, chunk: usize, fill: F) -> Vec<U>
where
    U: Send,
    F: Fn(usize, &mut [MaybeUninit<U>]) + Sync + Send,
{
    let chunk = chunk.max(1);
    let mut out = Vec::with_capacity(n);
    let buf = &mut out.spare_capacity_mut()[..n];
    if n >= PAR_THRESHOLD && chunk < n {
        buf.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| fill(i * chunk, c));
    } else if n > 0 {
        fill(0, buf);
    }
    // SAFETY: the chunks above partition `buf`, and the caller guarantees that `fill`
    // initialised every element of each chunk, so the first `n` elements are initialised.
    unsafe { out.set_len(n) };
    out
}

/// `f` applied to every element.
pub(super) fn map1<T, U, F>(x: &[T], f: F) -> Vec<U>
where
    T: Copy + Sync,
    U: Send,
    F: Fn(T) -> U + Sync + Send,
{
    if x.len() < SIMD_MIN {
        return x.iter().map(|&v| f(v)).collect();
    }
    let level = super::simd();
    let fill = |x: &[T], o: &mut [MaybeUninit<U>]| {
        let f = &f;
        super::simd_dispatch!(
            level,
            [T: Copy, U, F: Fn(T) -> U],
            (x: &[T], o: &mut [MaybeUninit<U>], f: &F),
            {
                for (o, &v) in o.iter_mut().zip(x) {
                    o.write(f(v));
                }
            }
        )
    };
    // SAFETY: every chunk is written element by element, zipped with the input range of
    // the same length.
    unsafe { build(x.len(), CHUNK, |s, o: &mut [MaybeUninit<U>]| fill(&x[s..s + o.len()], o)) }
}

/// `f` applied to every pair of elements (the slices have one length).
pub(super) fn map2<A, B, U, F>(a: &[A], b: &[B], f: F) -> Vec<U>
where
    A: Copy + Sync,
    B: Copy + Sync,
    U: Send,
    F: Fn(A, B) -> U + Sync + Send,
{
    assert_eq!(a.len(), b.len(), "elementwise operands must have one length");
    if a.len() < SIMD_MIN {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    let level = super::simd();
    let fill = |a: &[A], b: &[B], o: &mut [MaybeUninit<U>]| {
        let f = &f;
        super::simd_dispatch!(
            level,
            [A: Copy, B: Copy, U, F: Fn(A, B) -> U],
            (a: &[A], b: &[B], o: &mut [MaybeUninit<U>], f: &F),
            {
                for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                    o.write(f(x, y));
                }
            }
        )
    };
    // SAFETY: every chunk is written element by element, zipped with input ranges of the
    // same length.
    unsafe {
        build(a.len(), CHUNK, |s, o: &mut [MaybeUninit<U>]| {
            fill(&a[s..s + o.len()], &b[s..s + o.len()], o)
        })
    }
}

/// `f` applied to every triple of elements (the slices have one length).
fn map3<A, B, C, U, F>(a: &[A], b: &[B], c: &[C], f: F) -> Vec<U>
where
    A: Copy + Sync,
    B: Copy + Sync,
    C: Copy + Sync,
    U: Send,
    F: Fn(A, B, C) -> U + Sync + Send,
{
    assert!(a.len() == b.len() && a.len() == c.len(), "elementwise operands must have one length");
    if a.len() < SIMD_MIN {
        return a.iter().zip(b).zip(c).map(|((&x, &y), &z)| f(x, y, z)).collect();
    }
    let level = super::simd();
    let fill = |a: &[A], b: &[B], c: &[C], o: &mut [MaybeUninit<U>]| {
        let f = &f;
        super::simd_dispatch!(
            level,
            [A: Copy, B: Copy, C: Copy, U, F: Fn(A, B, C) -> U],
            (a: &[A], b: &[B], c: &[C], o: &mut [MaybeUninit<U>], f: &F),
            {
                for (((o, &x), &y), &z) in o.iter_mut().zip(a).zip(b).zip(c) {
                    o.write(f(x, y, z));
                }
            }
        )
    };
    // SAFETY: every chunk is written element by element, zipped with input ranges of the
    // same length.
    unsafe {
        build(a.len(), CHUNK, |s, o: &mut [MaybeUninit<U>]| {
            let e = s + o.len();
            fill(&a[s..e], &b[s..e], &c[s..e], o)
        })
    }
}

// ---- scalar traits -------------------------------------------------------------------------

/// The float math the kernels need, implemented for `f32` and `f64` (halves go through
/// `f32`).
pub(super) trait Real:
    Element
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Rem<Output = Self>
    + Neg<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    const INFINITY: Self;
    const NEG_INFINITY: Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn ln_1p(self) -> Self;
    fn exp_m1(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn tanh(self) -> Self;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
    /// Half away from zero.
    fn round(self) -> Self;
    fn erf(self) -> Self;
    fn is_nan(self) -> bool;
    fn powf(self, y: Self) -> Self;
    fn atan2(self, y: Self) -> Self;
}

macro_rules! impl_real {
    ($t:ident, $erf:path, $ln:path, $tanh:path, $exp:path) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const INFINITY: Self = $t::INFINITY;
            const NEG_INFINITY: Self = $t::NEG_INFINITY;
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                $ln(self)
            }
            #[inline(always)]
            fn ln_1p(self) -> Self {
                $t::ln_1p(self)
            }
            #[inline(always)]
            fn exp_m1(self) -> Self {
                $t::exp_m1(self)
            }
            #[inline(always)]
            fn sin(self) -> Self {
                $t::sin(self)
            }
            #[inline(always)]
            fn cos(self) -> Self {
                $t::cos(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $tanh(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                $t::sqrt(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                $t::abs(self)
            }
            #[inline(always)]
            fn floor(self) -> Self {
                $t::floor(self)
            }
            #[inline(always)]
            fn ceil(self) -> Self {
                $t::ceil(self)
            }
            #[inline(always)]
            fn round(self) -> Self {
                $t::round(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                $t::is_nan(self)
            }
            #[inline(always)]
            fn powf(self, y: Self) -> Self {
                $t::powf(self, y)
            }
            #[inline(always)]
            fn atan2(self, y: Self) -> Self {
                $t::atan2(self, y)
            }
        }
    };
}

// f32 `log` follows XLA's CPU polynomial so that random streams built on it (gumbel,
// categorical) match JAX bit for bit.
// f32 `tanh` is the rational approximation XLA's CPU backend emits: it matches JAX more
// closely than libm's `tanhf` and is several times faster (no call, it vectorizes).
impl_real!(f32, libm::erff, xla_log_f32, fast_tanh_f32, fast_exp_f32);
impl_real!(f64, libm::erf, f64::ln, f64::tanh, f64::exp);

/// NaN-propagating maximum.
#[inline(always)]
pub(super) fn max_nan<T: Real>(a: T, b: T) -> T {
    if a > b || a.is_nan() { a } else { b }
}

/// NaN-propagating minimum.
#[inline(always)]
pub(super) fn min_nan<T: Real>(a: T, b: T) -> T {
    if a < b || a.is_nan() { a } else { b }
}

/// Integer arithmetic with kiln's (wrapping, division-by-zero-is-0) semantics.
pub(super) trait Int:
    Element
    + Ord
    + Not<Output = Self>
    + BitAnd<Output = Self>
    + BitOr<Output = Self>
    + BitXor<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    const MIN: Self;
    const MAX: Self;
    fn wadd(self, o: Self) -> Self;
    fn wsub(self, o: Self) -> Self;
    fn wmul(self, o: Self) -> Self;
    fn wneg(self) -> Self;
    fn wabs(self) -> Self;
    fn sign(self) -> Self;
    /// Truncating division; 0 when dividing by zero.
    fn div0(self, o: Self) -> Self;
    /// Remainder with the dividend's sign; 0 when dividing by zero.
    fn rem0(self, o: Self) -> Self;
    fn shl(self, o: Self) -> Self;
    fn shr_logical(self, o: Self) -> Self;
    fn shr_arith(self, o: Self) -> Self;
}

macro_rules! impl_int {
    ($t:ident, $u:ident, $s:ident, $signed:expr) => {
        impl Int for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            const MIN: Self = $t::MIN;
            const MAX: Self = $t::MAX;
            #[inline(always)]
            fn wadd(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            #[inline(always)]
            fn wsub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            #[inline(always)]
            fn wmul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            #[inline(always)]
            fn wneg(self) -> Self {
                self.wrapping_neg()
            }
            #[inline(always)]
            fn wabs(self) -> Self {
                if $signed && (self as $s) < 0 { self.wrapping_neg() } else { self }
            }
            #[inline(always)]
            fn sign(self) -> Self {
                if $signed && (self as $s) < 0 {
                    (0 as $t).wrapping_sub(1)
                } else {
                    (self != 0) as $t
                }
            }
            #[inline(always)]
            fn div0(self, o: Self) -> Self {
                if o == 0 { 0 } else { self.wrapping_div(o) }
            }
            #[inline(always)]
            fn rem0(self, o: Self) -> Self {
                if o == 0 { 0 } else { self.wrapping_rem(o) }
            }
            #[inline(always)]
            fn shl(self, o: Self) -> Self {
                let s = o as $u;
                if s < $t::BITS as $u { self.wrapping_shl(s as u32) } else { 0 }
            }
            #[inline(always)]
            fn shr_logical(self, o: Self) -> Self {
                let s = o as $u;
                if s < $t::BITS as $u { ((self as $u) >> s) as $t } else { 0 }
            }
            #[inline(always)]
            fn shr_arith(self, o: Self) -> Self {
                let s = (o as $u).min($t::BITS as $u - 1);
                ((self as $s) >> s) as $t
            }
        }
    };
}

impl_int!(u8, u8, i8, false);
impl_int!(u32, u32, i32, false);
impl_int!(i32, u32, i32, true);
impl_int!(i64, u64, i64, true);

/// NaN-propagating (floats) / ordinary (integers) / logical (bool) max and min, for every
/// storage element type.
pub(super) trait MinMax: Copy {
    fn max_p(self, o: Self) -> Self;
    fn min_p(self, o: Self) -> Self;
}

macro_rules! minmax_ord {
    ($($t:ty),*) => {$(
        impl MinMax for $t {
            #[inline(always)]
            fn max_p(self, o: Self) -> Self {
                Ord::max(self, o)
            }
            #[inline(always)]
            fn min_p(self, o: Self) -> Self {
                Ord::min(self, o)
            }
        }
    )*};
}
minmax_ord!(bool, u8, u32, i32, i64);

macro_rules! minmax_float {
    ($($t:ty),*) => {$(
        impl MinMax for $t {
            #[inline(always)]
            fn max_p(self, o: Self) -> Self {
                max_nan(self, o)
            }
            #[inline(always)]
            fn min_p(self, o: Self) -> Self {
                min_nan(self, o)
            }
        }
    )*};
}
minmax_float!(f32, f64);

macro_rules! minmax_half {
    ($($t:ty),*) => {$(
        impl MinMax for $t {
            #[inline(always)]
            fn max_p(self, o: Self) -> Self {
                let (a, b) = (self.to_f32(), o.to_f32());
                if a > b || a.is_nan() { self } else { o }
            }
            #[inline(always)]
            fn min_p(self, o: Self) -> Self {
                let (a, b) = (self.to_f32(), o.to_f32());
                if a < b || a.is_nan() { self } else { o }
            }
        }
    )*};
}
minmax_half!(f16, bf16);

// ---- special functions -------------------------------------------------------------------

// XLA's CPU backend evaluates `erf_inv` as `-log1p(-x * x)` followed by a polynomial, with
// every multiply that feeds only an add fused into an FMA (LLVM's fp-contract=fast). The
// functions below reproduce that arithmetic operation for operation (the FMAs as
// `mul_add`, which rounds once whether or not the CPU has an FMA unit), so that kiln's
// `erf_inv`, and with it the normal sampler, matches JAX on CPU bit for bit.

/// `log1p` as XLA's CPU backend computes it for `|a| < sqrt(2) - 1`: Cephes' rational
/// approximation `a - a^2/2 + a^3 * P(a)/Q(a)`. `$t` is f32 or f64, `num`/`den` the
/// coefficients (highest degree first, as rounded to `$t`).
macro_rules! log1p_small {
    ($a:expr, $num:expr, $den:expr) => {{
        let a = $a;
        let a2 = a * a;
        let z = a * 0.0;
        let mut den = z + $den[0];
        for &c in &$den[1..] {
            den = den.mul_add(a, c);
        }
        let mut num = z + $num[0];
        for &c in &$num[1..] {
            num = num.mul_add(a, c);
        }
        let t = (a * a2) * (num / den);
        a + a2.mul_add(-0.5, t)
    }};
}

/// `exp` for `f32` without a library call, so loops over it vectorize: Cody-Waite
/// reduction `x = n ln2 + r`, Cephes' degree-6 polynomial for `e^r`, and the scale `2^n`
/// applied as two exact power-of-two factors (so subnormal results round once).
/// Within 2 ulp of the true value; `inf` above `ln(f32::MAX)`, `0` below the smallest
/// subnormal, NaN for NaN.
///
/// Written for the vectorizer: the integer `n` is read off the bits of the rounding sum
/// (no saturating float-to-int conversion), halved by a shift, and every special case is a
/// select. Inputs below the range (the masked `-inf` entries of a softmax) are evaluated
/// at 0 and replaced by 0 afterwards: evaluated at the clamp they would make subnormal
/// products, each a microcode assist of ~100 cycles (measured: 5.8 ns per element on
/// such inputs vs 0.8 ns; the scalar-style version ran 2.2-2.5 ns on any input).
#[inline(always)]
pub(super) fn fast_exp_f32(x: f32) -> f32 {
    const HI: f32 = 88.722_84;
    const LO: f32 = -103.972_08;
    // 1.5 * 2^23: adding it rounds to the nearest integer `n`, which then sits in the low
    // mantissa bits (SSE2 has no `roundss`, so `f32::round` would be a library call).
    const ROUND: f32 = 12_582_912.0;
    let xc = if x < LO { 0.0 } else { x.min(HI) };
    let big = xc * std::f32::consts::LOG2_E + ROUND;
    let n = big - ROUND;
    let ni = big.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // `ni` is in [-150, 128]: both halves keep the factors normal.
    let (n1, n2) = (ni >> 1, ni - (ni >> 1));
    let scale = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    let out = y * scale(n1) * scale(n2);
    let out = if x > HI { f32::INFINITY } else { out };
    let out = if x < LO { 0.0 } else { out };
    if x.is_nan() { x } else { out }
}

/// `tanh` for `f32` as a 13/6 odd/even rational polynomial on `[-7.9053, 7.9053]` (the
/// approximation used by Eigen and XLA's CPU backend; a few ulp from the true value,
/// exactly `x` for tiny `x`, `±1` beyond the clamp, NaN for NaN).
#[inline(always)]
pub(super) fn fast_tanh_f32(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const A: [f32; 7] = [
        -2.760_768_5e-16,
        2.000_188e-13,
        -8.604_672e-11,
        5.122_297e-8,
        1.485_722_4e-5,
        6.372_619_3e-4,
        4.893_524_6e-3,
    ];
    const B: [f32; 4] = [1.198_258_4e-6, 1.185_347_1e-4, 2.268_434_6e-3, 4.893_525e-3];
    if x.abs() < 4e-4 {
        return x;
    }
    // `clamp` would turn NaN into a bound; `max`/`min` keep it NaN-free only for numbers.
    let c = if x.is_nan() { x } else { x.clamp(-CLAMP, CLAMP) };
    let x2 = c * c;
    // Plain multiply-adds: without a target FMA, `mul_add` is a library call.
    let mut p = A[0];
    for a in &A[1..] {
        p = p * x2 + *a;
    }
    let mut q = B[0];
    for b in &B[1..] {
        q = q * x2 + *b;
    }
    c * p / q
}

/// XLA's CPU `log` for `f32` (a Cephes-style polynomial on the mantissa), as compiled.
#[inline(always)]
fn xla_log_f32(v: f32) -> f32 {
    let x = if v > f32::MIN_POSITIVE { v } else { f32::MIN_POSITIVE };
    let bits = x.to_bits();
    let e = ((bits >> 23) as i32 - 127) as f32 + 1.0;
    let m = f32::from_bits((bits & 0x807F_FFFF) | 0x3F00_0000);
    let below = m < f32::from_bits(0x3F35_04F3); // sqrt(1/2)
    let xm = (m - 1.0) + if below { m } else { 0.0 };
    let e = e - if below { 1.0 } else { 0.0 };
    let z = xm * xm;
    let x3 = z * xm;
    let c = f32::from_bits;
    let pa = xm.mul_add(c(0x3D90_21BB), c(0xBDEB_D1B8)).mul_add(xm, c(0x3DEF_251A));
    let pb = xm.mul_add(c(0xBDFE_5D4F), c(0x3E11_E9BF)).mul_add(xm, c(0xBE2A_AE50));
    let pc = xm.mul_add(c(0x3E4C_CEAC), c(0xBE7F_FFFC)).mul_add(xm, c(0x3EAA_AAAA));
    let p = pa.mul_add(x3, pb).mul_add(x3, pc);
    let y = p.mul_add(x3, e * c(0xB95E_8083));
    let r = e.mul_add(c(0x3F31_8000), (-z).mul_add(0.5, xm) + y);
    if v == f32::INFINITY {
        f32::INFINITY
    } else if v == 0.0 {
        f32::NEG_INFINITY
    } else if v > 0.0 {
        r
    } else {
        f32::NAN
    }
}

/// XLA's CPU `log1p` for `f32`, as compiled.
#[inline(always)]
fn xla_log1p_f32(a: f32) -> f32 {
    const NUM: [u32; 7] =
        [0x383D_E04B, 0x3EFF_40C5, 0x40D2_84FA, 0x41EF_4B9C, 0x4273_CC76, 0x4264_73AD, 0x41A0_5101];
    const DEN: [u32; 7] =
        [0x3F80_0000, 0x4171_01AD, 0x42A6_185B, 0x435D_C32D, 0x439A_8CA3, 0x4358_6D8A, 0x4270_7982];
    if a.abs() < f32::from_bits(0x3ED4_13CD) {
        log1p_small!(a, NUM.map(f32::from_bits), DEN.map(f32::from_bits))
    } else {
        xla_log_f32(a + 1.0)
    }
}

/// XLA's CPU `log1p` for `f64`, as compiled (`log` itself is libm's).
#[inline(always)]
fn xla_log1p_f64(a: f64) -> f64 {
    const NUM: [u64; 7] = [
        0x3F07_BC09_62B3_95CA,
        0x3FDF_E818_A0FE_1A83,
        0x401A_509F_46F4_FA53,
        0x403D_E973_8B8C_B9C9,
        0x404E_798E_B86C_3351,
        0x404C_8E75_9747_9A10,
        0x4034_0A20_2D99_830A,
    ];
    const DEN: [u64; 7] = [
        0x3FF0_0000_0000_0000,
        0x402E_2035_9E90_3E37,
        0x4054_C30B_5221_3498,
        0x406B_B865_90FC_FB56,
        0x4073_5194_5DC9_08A5,
        0x406B_0DB1_3E48_E066,
        0x404E_0F30_4466_448E,
    ];
    if a.abs() < f64::from_bits(0x3FDA_8279_99FC_EF32) {
        log1p_small!(a, NUM.map(f64::from_bits), DEN.map(f64::from_bits))
    } else {
        (a + 1.0).ln()
    }
}

/// Inverse error function in `f32`: XLA's `ErfInv32` (Giles, "Approximating the erfinv
/// function", single-precision branch) evaluated exactly as XLA's CPU backend does, so
/// that it matches JAX bit for bit. `erf_inv(±1) = ±inf`; NaN outside `[-1, 1]`.
#[inline(always)]
pub(super) fn erf_inv_f32(x: f32) -> f32 {
    // XLA's coefficients, verbatim (more digits than an f32 holds).
    #[allow(clippy::excessive_precision)] // kept verbatim so the f32 values match XLA's
    const W_LT_5: [f32; 9] = [
        2.81022636e-08,
        3.43273939e-07,
        -3.5233877e-06,
        -4.39150654e-06,
        0.00021858087,
        -0.00125372503,
        -0.00417768164,
        0.246640727,
        1.50140941,
    ];
    #[allow(clippy::excessive_precision)] // kept verbatim so the f32 values match XLA's
    const W_GE_5: [f32; 9] = [
        -0.000200214257,
        0.000100950558,
        0.00134934322,
        -0.00367342844,
        0.00573950773,
        -0.0076224613,
        0.00943887047,
        1.00167406,
        2.83297682,
    ];
    let w = -xla_log1p_f32(x * -x);
    let (c, w) = if w < 5.0 { (&W_LT_5, w - 2.5) } else { (&W_GE_5, w.sqrt() - 3.0) };
    let mut p = c[0];
    for &ci in &c[1..] {
        p = p.mul_add(w, ci);
    }
    x * if x.abs() == 1.0 { f32::INFINITY } else { p }
}

/// Inverse error function in `f64`: XLA's `ErfInv64` (Giles' double-precision
/// approximation with three branches), evaluated as XLA's CPU backend does (bit-identical
/// to JAX; like JAX's, the result can be ~10 ulp off near `|x| = 0.64`).
#[inline(always)]
pub(super) fn erf_inv_f64(x: f64) -> f64 {
    // Coefficients, highest degree first; the three polynomials have 23, 19 and 17 terms.
    #[allow(clippy::excessive_precision)] // the published coefficients, kept verbatim
    const W_LT_6_25: [f64; 23] = [
        -3.6444120640178196996e-21,
        -1.685059138182016589e-19,
        1.2858480715256400167e-18,
        1.115787767802518096e-17,
        -1.333171662854620906e-16,
        2.0972767875968561637e-17,
        6.6376381343583238325e-15,
        -4.0545662729752068639e-14,
        -8.1519341976054721522e-14,
        2.6335093153082322977e-12,
        -1.2975133253453532498e-11,
        -5.4154120542946279317e-11,
        1.051212273321532285e-09,
        -4.1126339803469836976e-09,
        -2.9070369957882005086e-08,
        4.2347877827932403518e-07,
        -1.3654692000834678645e-06,
        -1.3882523362786468719e-05,
        0.0001867342080340571352,
        -0.00074070253416626697512,
        -0.0060336708714301490533,
        0.24015818242558961693,
        1.6536545626831027356,
    ];
    #[allow(clippy::excessive_precision)] // the published coefficients, kept verbatim
    const W_LT_16: [f64; 19] = [
        2.2137376921775787049e-09,
        9.0756561938885390979e-08,
        -2.7517406297064545428e-07,
        1.8239629214389227755e-08,
        1.5027403968909827627e-06,
        -4.013867526981545969e-06,
        2.9234449089955446044e-06,
        1.2475304481671778723e-05,
        -4.7318229009055733981e-05,
        6.8284851459573175448e-05,
        2.4031110387097893999e-05,
        -0.0003550375203628474796,
        0.00095328937973738049703,
        -0.0016882755560235047313,
        0.0024914420961078508066,
        -0.0037512085075692412107,
        0.005370914553590063617,
        1.0052589676941592334,
        3.0838856104922207635,
    ];
    #[allow(clippy::excessive_precision)] // the published coefficients, kept verbatim
    const W_GE_16: [f64; 17] = [
        -2.7109920616438573243e-11,
        -2.5556418169965252055e-10,
        1.5076572693500548083e-09,
        -3.7894654401267369937e-09,
        7.6157012080783393804e-09,
        -1.4960026627149240478e-08,
        2.9147953450901080826e-08,
        -6.7711997758452339498e-08,
        2.2900482228026654717e-07,
        -9.9298272942317002539e-07,
        4.5260625972231537039e-06,
        -1.9681778105531670567e-05,
        7.5995277030017761139e-05,
        -0.00021503011930044477347,
        -0.00013871931833623122026,
        1.0103004648645343977,
        4.8499064014085844221,
    ];
    let w = -xla_log1p_f64(x * -x);
    let (c, w): (&[f64], f64) = if w < 6.25 {
        (&W_LT_6_25, w - 3.125)
    } else if w < 16.0 {
        (&W_LT_16, w.sqrt() - 3.25)
    } else {
        (&W_GE_16, w.sqrt() - 5.0)
    };
    let mut p = c[0];
    for &ci in &c[1..] {
        p = p.mul_add(w, ci);
    }
    x * if x.abs() == 1.0 { f64::INFINITY } else { p }
}

/// `erf_inv` over a slice, in parallel for large inputs. On x86-64 CPUs with FMA the loop
/// is compiled for that unit (`mul_add` is then one instruction instead of a libm call;
/// the results are the same).
macro_rules! erf_inv_slice {
    ($name:ident, $t:ty, $f:ident) => {
        fn $name(x: &[$t]) -> Vec<$t> {
            #[inline(always)]
            fn plain(x: &[$t], o: &mut [MaybeUninit<$t>]) {
                for (o, &v) in o.iter_mut().zip(x) {
                    o.write($f(v));
                }
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "fma")]
            fn with_fma(x: &[$t], o: &mut [MaybeUninit<$t>]) {
                plain(x, o)
            }
            #[cfg(target_arch = "x86_64")]
            let kernel: fn(&[$t], &mut [MaybeUninit<$t>]) = if std::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU supports FMA (checked just above).
                |x, o| unsafe { with_fma(x, o) }
            } else {
                plain
            };
            #[cfg(not(target_arch = "x86_64"))]
            let kernel: fn(&[$t], &mut [MaybeUninit<$t>]) = plain;
            // SAFETY: `plain` writes every element of the chunk, from the input range of
            // the same length.
            unsafe { build(x.len(), CHUNK, |s, o| kernel(&x[s..s + o.len()], o)) }
        }
    };
}
erf_inv_slice!(erf_inv_slice_f32, f32, erf_inv_f32);
erf_inv_slice!(erf_inv_slice_f64, f64, erf_inv_f64);

/// `1 / (1 + e^-x)` without overflow for large `|x|`.
#[inline(always)]
pub(super) fn logistic<T: Real>(x: T) -> T {
    let e = (-x.abs()).exp();
    let r = T::ONE / (T::ONE + e);
    if x >= T::ZERO { r } else { e * r }
}

/// GELU's tanh approximation, `x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`, with
/// the operations (and so the roundings) of the composite `(x + x^3 * 0.044715) * c`,
/// `x * 0.5 * (tanh(..) + 1)`.
#[inline(always)]
pub(super) fn gelu_tanh<T: Real>(x: T) -> T {
    gelu_tanh_pair(x).0
}

/// The derivative of [`gelu_tanh`]: with `t = tanh(u)`, `u = c (x + a x^3)`,
/// `(1 + t) / 2 + x/2 * (1 - t^2) * c (1 + 3 a x^2)`.
#[inline(always)]
pub(super) fn gelu_tanh_grad<T: Real>(x: T) -> T {
    gelu_tanh_pair(x).1
}

/// [`gelu_tanh`] and [`gelu_tanh_grad`] of `x` from one `tanh` (the single-value
/// functions are its halves, so either way gives the same bits; the unused half inlines
/// away).
#[inline(always)]
pub(super) fn gelu_tanh_pair<T: Real>(x: T) -> (T, T) {
    let (a, c, half) = (T::from_f64(GELU_CUBIC), T::from_f64(GELU_SCALE), T::from_f64(0.5));
    let x2 = x * x;
    let t = ((x + x * x2 * a) * c).tanh();
    let du = c * (T::ONE + T::from_f64(3.0) * a * x2);
    (x * half * (t + T::ONE), half * (T::ONE + t) + half * x * (T::ONE - t * t) * du)
}

/// Exact GELU, `x/2 * (1 + erf(x / sqrt 2))`, in the composite's order of operations.
#[inline(always)]
pub(super) fn gelu_erf<T: Real>(x: T) -> T {
    gelu_erf_pair(x).0
}

/// The derivative of [`gelu_erf`]: `(1 + erf(x / sqrt 2)) / 2 + x * exp(-x^2 / 2) / sqrt(2 pi)`.
#[inline(always)]
pub(super) fn gelu_erf_grad<T: Real>(x: T) -> T {
    gelu_erf_pair(x).1
}

/// [`gelu_erf`] and [`gelu_erf_grad`] of `x` from one `erf` (as [`gelu_tanh_pair`]).
#[inline(always)]
pub(super) fn gelu_erf_pair<T: Real>(x: T) -> (T, T) {
    let half = T::from_f64(0.5);
    let e = (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf();
    let pdf = (-(x * x) * half).exp() * T::from_f64(INV_SQRT_2PI);
    (x * half * (e + T::ONE), half * (e + T::ONE) + x * pdf)
}

/// `-1`, `±0` or `1`; NaN stays NaN.
#[inline(always)]
pub(super) fn sign_float<T: Real>(x: T) -> T {
    if x > T::ZERO {
        T::ONE
    } else if x < T::ZERO {
        -T::ONE
    } else {
        x
    }
}

/// `x^y` by repeated squaring, multiplying in the same order as JAX's `integer_pow`
/// lowering; negative `y` takes the reciprocal at the end. `rnd` rounds each product to
/// the storage type (the identity for `f32`/`f64`; for halves it makes every step round
/// to the half type, as JAX's evaluation in that type does).
#[inline(always)]
pub(super) fn powi_float<T: Real>(x: T, y: i32, rnd: impl Fn(T) -> T) -> T {
    let mut n = y.unsigned_abs();
    let mut base = x;
    let mut acc: Option<T> = None;
    while n > 0 {
        if n & 1 == 1 {
            acc = Some(match acc {
                None => base,
                Some(a) => rnd(a * base),
            });
        }
        n >>= 1;
        if n > 0 {
            base = rnd(base * base);
        }
    }
    match acc {
        None => T::ONE,
        Some(a) if y < 0 => T::ONE / a,
        Some(a) => a,
    }
}

/// Integer `x^y` with wrapping multiplication; negative `y` is `1 / x^|y|` in integer
/// division (0 for `x == 0`).
#[inline(always)]
fn powi_int<T: Int>(x: T, y: i32) -> T {
    let mut n = y.unsigned_abs();
    let mut base = x;
    let mut acc = T::ONE;
    while n > 0 {
        if n & 1 == 1 {
            acc = acc.wmul(base);
        }
        n >>= 1;
        if n > 0 {
            base = base.wmul(base);
        }
    }
    if y < 0 { T::ONE.div0(acc) } else { acc }
}

// ---- unary ---------------------------------------------------------------------------------

/// Runs the unary elementwise primitive `prim` on `x`.
///
/// Handles `Neg, Exp, Log, Log1p, Expm1, Sin, Cos, Tanh, Logistic, Sqrt, Rsqrt, Abs, Sign,
/// Floor, Ceil, Round, Erf, ErfInv, IsFinite` (bool output), `Not` (logical for bool,
/// bitwise for integers), `IntegerPow` and `StopGradient` (a copy). The output has `x`'s
/// dtype except for `IsFinite`.
pub fn unary(prim: &Prim, x: &Storage) -> Storage {
    match prim {
        Prim::StopGradient => return x.clone(),
        Prim::IsFinite => {
            return Storage::Bool(match x {
                Storage::F32(v) => map1(v, f32::is_finite),
                Storage::F64(v) => map1(v, f64::is_finite),
                Storage::F16(v) => map1(v, |h| h.is_finite()),
                Storage::BF16(v) => map1(v, |h| h.is_finite()),
                other => unsupported(prim, other.dtype()),
            });
        }
        Prim::ErfInv => {
            return match x {
                Storage::F32(v) => Storage::F32(erf_inv_slice_f32(v)),
                Storage::F64(v) => Storage::F64(erf_inv_slice_f64(v)),
                Storage::F16(v) => {
                    Storage::F16(map1(&erf_inv_slice_f32(&map1(v, f16::to_f32)), f16::from_f32))
                }
                Storage::BF16(v) => {
                    Storage::BF16(map1(&erf_inv_slice_f32(&map1(v, bf16::to_f32)), bf16::from_f32))
                }
                other => unsupported(prim, other.dtype()),
            };
        }
        _ => {}
    }
    match x {
        Storage::F32(v) => Storage::F32(unary_float(prim, v, |a| a, |a| a)),
        Storage::F64(v) => Storage::F64(unary_float(prim, v, |a| a, |a| a)),
        Storage::F16(v) => Storage::F16(unary_float(prim, v, f16::to_f32, f16::from_f32)),
        Storage::BF16(v) => Storage::BF16(unary_float(prim, v, bf16::to_f32, bf16::from_f32)),
        Storage::U8(v) => Storage::U8(unary_int(prim, v)),
        Storage::U32(v) => Storage::U32(unary_int(prim, v)),
        Storage::I32(v) => Storage::I32(unary_int(prim, v)),
        Storage::I64(v) => Storage::I64(unary_int(prim, v)),
        Storage::Bool(v) => match prim {
            Prim::Not => Storage::Bool(map1(v, |b| !b)),
            _ => unsupported(prim, DType::Bool),
        },
    }
}

/// Float unary ops on storage elements `S`, computed in `T` (`ld`/`st` convert).
fn unary_float<S, T, L, W>(prim: &Prim, x: &[S], ld: L, st: W) -> Vec<S>
where
    S: Element,
    T: Real,
    L: Fn(S) -> T + Copy + Sync + Send,
    W: Fn(T) -> S + Copy + Sync + Send,
{
    macro_rules! m {
        (|$a:ident| $e:expr) => {
            map1(x, move |s| {
                let $a: T = ld(s);
                st($e)
            })
        };
    }
    match prim {
        Prim::Neg => m!(|a| -a),
        Prim::Exp => m!(|a| a.exp()),
        Prim::Log => m!(|a| a.ln()),
        Prim::Log1p => m!(|a| a.ln_1p()),
        Prim::Expm1 => m!(|a| a.exp_m1()),
        Prim::Sin => m!(|a| a.sin()),
        Prim::Cos => m!(|a| a.cos()),
        Prim::Tanh => m!(|a| a.tanh()),
        Prim::Logistic => m!(|a| logistic(a)),
        Prim::Sqrt => m!(|a| a.sqrt()),
        Prim::Rsqrt => m!(|a| T::ONE / a.sqrt()),
        Prim::Abs => m!(|a| a.abs()),
        Prim::Sign => m!(|a| sign_float(a)),
        Prim::Floor => m!(|a| a.floor()),
        Prim::Ceil => m!(|a| a.ceil()),
        Prim::Round => m!(|a| a.round()),
        Prim::Erf => m!(|a| a.erf()),
        Prim::Gelu { approximate: true } => m!(|a| gelu_tanh(a)),
        Prim::Gelu { approximate: false } => m!(|a| gelu_erf(a)),
        Prim::GeluGrad { approximate: true } => m!(|a| gelu_tanh_grad(a)),
        Prim::GeluGrad { approximate: false } => m!(|a| gelu_erf_grad(a)),
        // Straight-line squares and cubes (the same roundings as `powi_float`).
        Prim::IntegerPow { y: 2 } => m!(|a| ld(st(a * a))),
        Prim::IntegerPow { y: 3 } => m!(|a| ld(st(a * ld(st(a * a))))),
        Prim::IntegerPow { y } => {
            let y = *y;
            m!(|a| powi_float(a, y, |v| ld(st(v))))
        }
        _ => unsupported(prim, S::DTYPE),
    }
}

fn unary_int<T: Int>(prim: &Prim, x: &[T]) -> Vec<T> {
    match prim {
        Prim::Neg => map1(x, T::wneg),
        Prim::Abs => map1(x, T::wabs),
        Prim::Sign => map1(x, T::sign),
        Prim::Not => map1(x, |a| !a),
        Prim::IntegerPow { y } => {
            let y = *y;
            map1(x, move |a| powi_int(a, y))
        }
        _ => unsupported(prim, T::DTYPE),
    }
}

// ---- conversions -----------------------------------------------------------------------

/// `Self` from `S` with XLA's `convert_element_type` semantics.
trait CastFrom<S>: Sized {
    fn cast_from(s: S) -> Self;
}

// Primitive numeric pairs: Rust's `as` is exactly the wanted semantics (float to int
// truncates toward zero and saturates, NaN gives 0; int to float and f64 to f32 round to
// nearest even; int to int truncates or extends the two's complement bits).
macro_rules! cast_as {
    ($($d:ty),*) => { $( cast_as!(@to $d; u8, u32, i32, i64, f32, f64); )* };
    (@to $d:ty; $($s:ty),*) => {$(
        impl CastFrom<$s> for $d {
            #[inline(always)]
            fn cast_from(s: $s) -> $d {
                s as $d
            }
        }
    )*};
}
cast_as!(u8, u32, i32, i64, f32, f64);

// bool <-> numbers: false/true <-> 0/1; a number is true when it is nonzero (NaN too).
macro_rules! cast_bool {
    ($($t:ty),*) => {$(
        impl CastFrom<bool> for $t {
            #[inline(always)]
            fn cast_from(s: bool) -> $t {
                s as u8 as $t
            }
        }
        impl CastFrom<$t> for bool {
            #[inline(always)]
            fn cast_from(s: $t) -> bool {
                s != 0 as $t
            }
        }
    )*};
}
cast_bool!(u8, u32, i32, i64, f32, f64);

impl CastFrom<bool> for bool {
    #[inline(always)]
    fn cast_from(s: bool) -> bool {
        s
    }
}

/// `x` rounded to `f32` with round-to-odd (truncate, then set the last bit if inexact).
/// Rounding that result to a format with at most 22 significant bits (f16, bf16) equals
/// rounding `x` directly, which plain `f64 -> f32 -> half` (double rounding) does not.
#[inline]
fn f64_to_f32_odd(x: f64) -> f32 {
    let f = x as f32;
    if f as f64 == x || x.is_nan() {
        return f;
    }
    let mut bits = f.to_bits();
    if f.is_infinite() || (f as f64).abs() > x.abs() {
        bits -= 1; // one step toward zero: the truncated value
    }
    f32::from_bits(bits | 1)
}

/// `v` rounded to `f32` with round-to-odd (see [`f64_to_f32_odd`]).
#[inline]
fn i64_to_f32_odd(v: i64) -> f32 {
    let f = v as f32;
    let (fi, vi) = (f as i128, v as i128);
    if fi == vi {
        return f;
    }
    let mut bits = f.to_bits();
    if fi.abs() > vi.abs() {
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}

macro_rules! cast_half {
    ($h:ident, $other:ident) => {
        impl CastFrom<$h> for $h {
            #[inline(always)]
            fn cast_from(s: $h) -> $h {
                s
            }
        }
        impl CastFrom<$other> for $h {
            #[inline(always)]
            fn cast_from(s: $other) -> $h {
                $h::from_f32(s.to_f32())
            }
        }
        impl CastFrom<bool> for $h {
            #[inline(always)]
            fn cast_from(s: bool) -> $h {
                if s { $h::ONE } else { $h::ZERO }
            }
        }
        impl CastFrom<$h> for bool {
            #[inline(always)]
            fn cast_from(s: $h) -> bool {
                s.to_f32() != 0.0
            }
        }
        impl CastFrom<f32> for $h {
            #[inline(always)]
            fn cast_from(s: f32) -> $h {
                $h::from_f32(s)
            }
        }
        impl CastFrom<f64> for $h {
            #[inline(always)]
            fn cast_from(s: f64) -> $h {
                $h::from_f32(f64_to_f32_odd(s))
            }
        }
        impl CastFrom<u8> for $h {
            #[inline(always)]
            fn cast_from(s: u8) -> $h {
                $h::from_f32(s as f32)
            }
        }
        cast_half!(@ints $h; u32, i32, i64);
        cast_half!(@from $h; u8, u32, i32, i64, f32, f64);
    };
    (@ints $h:ident; $($i:ty),*) => {$(
        impl CastFrom<$i> for $h {
            #[inline(always)]
            fn cast_from(s: $i) -> $h {
                $h::from_f32(i64_to_f32_odd(s as i64))
            }
        }
    )*};
    (@from $h:ident; $($d:ty),*) => {$(
        impl CastFrom<$h> for $d {
            #[inline(always)]
            fn cast_from(s: $h) -> $d {
                <$d>::cast_from(s.to_f32())
            }
        }
    )*};
}
cast_half!(f16, bf16);
cast_half!(bf16, f16);

/// Converts every element of `x` to `dtype` (`ConvertElementType`).
///
/// Semantics follow XLA: float to integer truncates toward zero and saturates (NaN gives
/// 0); integer to float rounds to nearest even; integer to integer wraps; bool converts
/// to and from 0/1 (any nonzero value, NaN included, is true); narrowing between floats
/// rounds to nearest even, and `f64`/large integers to `f16`/`bf16` round once (no double
/// rounding).
pub fn convert(x: &Storage, dtype: DType) -> Storage {
    if x.dtype() == dtype {
        return x.clone();
    }
    with_storage!(x, v, S => match dtype {
        DType::Bool => Storage::Bool(map1(v, <bool as CastFrom<S>>::cast_from)),
        DType::U8 => Storage::U8(map1(v, <u8 as CastFrom<S>>::cast_from)),
        DType::U32 => Storage::U32(map1(v, <u32 as CastFrom<S>>::cast_from)),
        DType::I32 => Storage::I32(map1(v, <i32 as CastFrom<S>>::cast_from)),
        DType::I64 => Storage::I64(map1(v, <i64 as CastFrom<S>>::cast_from)),
        DType::F16 => Storage::F16(map1(v, <f16 as CastFrom<S>>::cast_from)),
        DType::BF16 => Storage::BF16(map1(v, <bf16 as CastFrom<S>>::cast_from)),
        DType::F32 => Storage::F32(map1(v, <f32 as CastFrom<S>>::cast_from)),
        DType::F64 => Storage::F64(map1(v, <f64 as CastFrom<S>>::cast_from)),
    })
}

/// Reinterprets the bits of every element as `dtype` (`BitcastConvertType`); both types
/// have the same width (`u32`/`i32`/`f32`, `i64`/`f64`, `f16`/`bf16`, `u8`).
pub fn bitcast(x: &Storage, dtype: DType) -> Storage {
    let bytes: &[u8] = match x {
        Storage::Bool(_) => unsupported(&Prim::BitcastConvertType { dtype }, DType::Bool),
        Storage::U8(v) => v,
        Storage::U32(v) => bytemuck::cast_slice(v),
        Storage::I32(v) => bytemuck::cast_slice(v),
        Storage::I64(v) => bytemuck::cast_slice(v),
        Storage::F16(v) => bytemuck::cast_slice(v),
        Storage::BF16(v) => bytemuck::cast_slice(v),
        Storage::F32(v) => bytemuck::cast_slice(v),
        Storage::F64(v) => bytemuck::cast_slice(v),
    };
    assert!(
        dtype != DType::Bool && dtype.size_in_bytes() == x.dtype().size_in_bytes(),
        "bitcast from {} to {dtype} needs numeric types of one width",
        x.dtype()
    );
    Storage::from_bytes(dtype, bytes).expect("bitcast between types of one width")
}

// ---- binary --------------------------------------------------------------------------------

/// Runs the binary elementwise primitive `prim` on `a` and `b` (same length and dtype).
///
/// Arithmetic (`Add, Sub, Mul, Div, Rem, Pow, Max, Min, Atan2`), logic (`And, Or, Xor`:
/// logical for bool, bitwise for integers), shifts (integers) and comparisons
/// (`Eq, Ne, Lt, Le, Gt, Ge`, bool output). For bool, `Add`/`Max` are `or` and
/// `Mul`/`Min` are `and`. See the module docs for the integer edge cases.
pub fn binary(prim: &Prim, a: &Storage, b: &Storage) -> Storage {
    if prim.is_comparison() {
        return Storage::Bool(compare(prim, a, b));
    }
    match (a, b) {
        (Storage::F32(a), Storage::F32(b)) => Storage::F32(binary_float(prim, a, b, |x| x, |x| x)),
        (Storage::F64(a), Storage::F64(b)) => Storage::F64(binary_float(prim, a, b, |x| x, |x| x)),
        (Storage::F16(a), Storage::F16(b)) => {
            Storage::F16(binary_float(prim, a, b, f16::to_f32, f16::from_f32))
        }
        (Storage::BF16(a), Storage::BF16(b)) => {
            Storage::BF16(binary_float(prim, a, b, bf16::to_f32, bf16::from_f32))
        }
        (Storage::U8(a), Storage::U8(b)) => Storage::U8(binary_int(prim, a, b)),
        (Storage::U32(a), Storage::U32(b)) => Storage::U32(binary_int(prim, a, b)),
        (Storage::I32(a), Storage::I32(b)) => Storage::I32(binary_int(prim, a, b)),
        (Storage::I64(a), Storage::I64(b)) => Storage::I64(binary_int(prim, a, b)),
        (Storage::Bool(a), Storage::Bool(b)) => Storage::Bool(binary_bool(prim, a, b)),
        _ => {
            panic!("cpu kernel: `{prim}` operands differ in dtype ({} vs {})", a.dtype(), b.dtype())
        }
    }
}

fn binary_float<S, T, L, W>(prim: &Prim, a: &[S], b: &[S], ld: L, st: W) -> Vec<S>
where
    S: Element,
    T: Real,
    L: Fn(S) -> T + Copy + Sync + Send,
    W: Fn(T) -> S + Copy + Sync + Send,
{
    macro_rules! m {
        (|$x:ident, $y:ident| $e:expr) => {
            map2(a, b, move |p, q| {
                let ($x, $y): (T, T) = (ld(p), ld(q));
                st($e)
            })
        };
    }
    match prim {
        Prim::Add => m!(|x, y| x + y),
        Prim::Sub => m!(|x, y| x - y),
        Prim::Mul => m!(|x, y| x * y),
        Prim::Div => m!(|x, y| x / y),
        Prim::Rem => m!(|x, y| x % y),
        Prim::Pow => m!(|x, y| x.powf(y)),
        Prim::Max => m!(|x, y| max_nan(x, y)),
        Prim::Min => m!(|x, y| min_nan(x, y)),
        Prim::Atan2 => m!(|x, y| x.atan2(y)),
        _ => unsupported(prim, S::DTYPE),
    }
}

fn binary_int<T: Int>(prim: &Prim, a: &[T], b: &[T]) -> Vec<T> {
    match prim {
        Prim::Add => map2(a, b, T::wadd),
        Prim::Sub => map2(a, b, T::wsub),
        Prim::Mul => map2(a, b, T::wmul),
        Prim::Div => map2(a, b, T::div0),
        Prim::Rem => map2(a, b, T::rem0),
        Prim::Max => map2(a, b, Ord::max),
        Prim::Min => map2(a, b, Ord::min),
        Prim::And => map2(a, b, |x, y| x & y),
        Prim::Or => map2(a, b, |x, y| x | y),
        Prim::Xor => map2(a, b, |x, y| x ^ y),
        Prim::ShiftLeft => map2(a, b, T::shl),
        Prim::ShiftRightLogical => map2(a, b, T::shr_logical),
        Prim::ShiftRightArithmetic => map2(a, b, T::shr_arith),
        _ => unsupported(prim, T::DTYPE),
    }
}

fn binary_bool(prim: &Prim, a: &[bool], b: &[bool]) -> Vec<bool> {
    match prim {
        Prim::Add | Prim::Max | Prim::Or => map2(a, b, |x, y| x | y),
        Prim::Mul | Prim::Min | Prim::And => map2(a, b, |x, y| x & y),
        Prim::Xor => map2(a, b, |x, y| x ^ y),
        _ => unsupported(prim, DType::Bool),
    }
}

fn compare(prim: &Prim, a: &Storage, b: &Storage) -> Vec<bool> {
    fn go<S, K, F>(prim: &Prim, a: &[S], b: &[S], k: F) -> Vec<bool>
    where
        S: Copy + Sync,
        K: PartialOrd,
        F: Fn(S) -> K + Copy + Sync + Send,
    {
        match prim {
            Prim::Eq => map2(a, b, move |x, y| k(x) == k(y)),
            Prim::Ne => map2(a, b, move |x, y| k(x) != k(y)),
            Prim::Lt => map2(a, b, move |x, y| k(x) < k(y)),
            Prim::Le => map2(a, b, move |x, y| k(x) <= k(y)),
            Prim::Gt => map2(a, b, move |x, y| k(x) > k(y)),
            Prim::Ge => map2(a, b, move |x, y| k(x) >= k(y)),
            _ => unreachable!("not a comparison: {prim}"),
        }
    }
    match (a, b) {
        (Storage::F16(a), Storage::F16(b)) => go(prim, a, b, f16::to_f32),
        (Storage::BF16(a), Storage::BF16(b)) => go(prim, a, b, bf16::to_f32),
        _ => with_storage!(a, a, T => {
            let b = <T as StorageElement>::slice(b).unwrap_or_else(|| {
                panic!("cpu kernel: `{prim}` operands differ in dtype ({} vs {})", T::DTYPE, b.dtype())
            });
            go(prim, a, b, |x: T| x)
        }),
    }
}

// ---- select and clamp ------------------------------------------------------------------

/// `select(pred, on_true, on_false)`: element `i` is `on_true[i]` where `pred[i]` and
/// `on_false[i]` elsewhere. `pred` is bool; the branches have one dtype and length.
pub fn select(p: &Storage, t: &Storage, f: &Storage) -> Storage {
    let Storage::Bool(p) = p else {
        panic!("cpu kernel: select predicate must be bool, got {}", p.dtype())
    };
    with_storage!(t, t, T => {
        let f = <T as StorageElement>::slice(f).expect("select branches must have one dtype");
        T::into_storage(map3(p, t, f, |c, x, y| if c { x } else { y }))
    })
}

/// `clamp(lo, x, hi)` = `min(max(x, lo), hi)` elementwise, NaN-propagating for floats
/// (bool: `max` is `or`, `min` is `and`). All three have one dtype and length.
pub fn clamp(lo: &Storage, x: &Storage, hi: &Storage) -> Storage {
    fn go<T: MinMax + Sync + Send>(lo: &[T], x: &[T], hi: &[T]) -> Vec<T> {
        map3(lo, x, hi, |l, v, h| v.max_p(l).min_p(h))
    }
    with_storage!(x, x, T => {
        let lo = <T as StorageElement>::slice(lo).expect("clamp operands must have one dtype");
        let hi = <T as StorageElement>::slice(hi).expect("clamp operands must have one dtype");
        T::into_storage(go(lo, x, hi))
    })
}

#[cfg(test)]
mod tests {
    /// The eager elementwise kernels compute the same bits at every SIMD level this CPU
    /// has (arrays for the chunked parallel path and for the serial dispatched one; f32,
    /// f64 and bf16).
    #[test]
    fn every_simd_level_computes_the_same_bits() {
        use crate::DType;
        use crate::backend::cpu::{FORCED_SIMD, Simd};
        let key = crate::random::key(9);
        let ks = crate::random::split_n(&key, 2);
        let run = |level: Simd, dtype: DType, n: usize| {
            FORCED_SIMD.with(|f| f.set(Some(level)));
            let x = (crate::random::normal(&ks[0], &[n], DType::F32) * 5.0f32).astype(dtype);
            let y = crate::random::normal(&ks[1], &[n], DType::F32).astype(dtype);
            let outs = [
                x.exp(),
                x.tanh(),
                crate::lax::logistic(&x),
                x.abs().sqrt(),
                x.sin(),
                &x / &y,
                x.maximum(&y) - &y * &x,
                crate::lax::integer_pow(&x, 3),
                crate::lax::clamp(&y, &x, &(&y + 1.0)),
                // Column reductions (the kept axis vectorized): n / 17 x 17.
                x.reshape([-1, 17]).sum_axes([0], false),
                x.reshape([-1, 17]).max_axes([0], false),
            ];
            FORCED_SIMD.with(|f| f.set(None));
            outs.iter().map(|a| a.astype(DType::F64).to_vec::<f64>()).collect::<Vec<_>>()
        };
        let bits = |v: &[Vec<f64>]| -> Vec<Vec<u64>> {
            v.iter().map(|o| o.iter().map(|x| x.to_bits()).collect()).collect()
        };
        for n in [3 * super::PAR_THRESHOLD + 7, 17 * 61] {
            for dtype in [DType::F32, DType::F64, DType::BF16] {
                let base = bits(&run(Simd::Base, dtype, n));
                for l in [Simd::Avx2, Simd::Avx512] {
                    assert_eq!(bits(&run(l, dtype, n)), base, "{l:?} {dtype:?} n={n}");
                }
            }
        }
    }

    use super::*;

    const BIG: usize = PAR_THRESHOLD + 1234;

    fn f32s(s: Storage) -> Vec<f32> {
        s.as_slice::<f32>().expect("f32 storage").to_vec()
    }

    fn ulps(a: f32, b: f32) -> u32 {
        let key = |x: f32| {
            let b = x.to_bits() as i32;
            if b < 0 { i32::MIN.wrapping_sub(b) } else { b }
        };
        key(a).abs_diff(key(b))
    }

    #[test]
    fn unary_f32_basic_ops() {
        let x = Storage::F32(vec![-2.0, -0.5, 0.0, 1.5, 2.5]);
        let u = |p: Prim| f32s(unary(&p, &x));
        assert_eq!(u(Prim::Neg), vec![2.0, 0.5, -0.0, -1.5, -2.5]);
        assert_eq!(u(Prim::Abs), vec![2.0, 0.5, 0.0, 1.5, 2.5]);
        assert_eq!(u(Prim::Sign), vec![-1.0, -1.0, 0.0, 1.0, 1.0]);
        assert_eq!(u(Prim::Floor), vec![-2.0, -1.0, 0.0, 1.0, 2.0]);
        assert_eq!(u(Prim::Ceil), vec![-2.0, -0.0, 0.0, 2.0, 3.0]);
        assert_eq!(u(Prim::Round), vec![-2.0, -1.0, 0.0, 2.0, 3.0]);
        assert_eq!(u(Prim::IntegerPow { y: 3 }), vec![-8.0, -0.125, 0.0, 3.375, 15.625]);
        assert_eq!(u(Prim::IntegerPow { y: 0 }), vec![1.0; 5]);
        assert_eq!(u(Prim::IntegerPow { y: -2 }), vec![0.25, 4.0, f32::INFINITY, 1.0 / 2.25, 0.16]);
        assert_eq!(u(Prim::StopGradient), vec![-2.0, -0.5, 0.0, 1.5, 2.5]);
        let e = u(Prim::Exp);
        for (got, x) in e.iter().zip([-2.0f32, -0.5, 0.0, 1.5, 2.5]) {
            assert_eq!(*got, x.exp());
        }
        let s = f32s(unary(&Prim::Sign, &Storage::F32(vec![-0.0, f32::NAN])));
        assert!(s[0] == 0.0 && s[0].is_sign_negative() && s[1].is_nan());
    }

    #[test]
    fn unary_f32_transcendental() {
        let x = Storage::F32(vec![0.25, 1.0, 4.0]);
        let close = |p: Prim, f: fn(f64) -> f64| {
            for (got, x) in f32s(unary(&p, &x)).iter().zip([0.25f64, 1.0, 4.0]) {
                let want = f(x) as f32;
                assert!(ulps(*got, want) <= 1, "{p}({x}) = {got}, want {want}");
            }
        };
        close(Prim::Log, f64::ln);
        close(Prim::Log1p, f64::ln_1p);
        close(Prim::Expm1, f64::exp_m1);
        close(Prim::Sin, f64::sin);
        close(Prim::Cos, f64::cos);
        close(Prim::Tanh, f64::tanh);
        close(Prim::Sqrt, f64::sqrt);
        close(Prim::Rsqrt, |x| 1.0 / x.sqrt());
        close(Prim::Logistic, |x| 1.0 / (1.0 + (-x).exp()));
        close(Prim::Erf, libm::erf);
    }

    #[test]
    fn fast_exp_f32_is_within_2_ulp() {
        let mut worst = (0u32, 0.0f32);
        let mut x = -104.5f32;
        while x < 89.5 {
            let u = ulps(fast_exp_f32(x), (x as f64).exp() as f32);
            if u > worst.0 {
                worst = (u, x);
            }
            x += 7.1e-4;
        }
        assert!(worst.0 <= 2, "fast_exp_f32 is {} ulp off at {}", worst.0, worst.1);
        assert!(fast_exp_f32(f32::NAN).is_nan());
        assert_eq!(fast_exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(fast_exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(fast_exp_f32(0.0), 1.0);
        assert_eq!(fast_exp_f32(1.0), std::f32::consts::E);
        // Below the range (evaluated at 0, then replaced) and just inside it (subnormal).
        assert_eq!(fast_exp_f32(-1e30), 0.0);
        assert_eq!(fast_exp_f32(-104.0), 0.0);
        assert!(fast_exp_f32(-103.0) > 0.0 && fast_exp_f32(-103.0) < f32::MIN_POSITIVE);
    }

    #[test]
    fn fast_tanh_f32_is_accurate() {
        // Measured: at most 7 ulp (relative error below 5e-7, near |x| = 6) on this sweep.
        let mut worst = (0.0f64, 0.0f32);
        let mut x = -10.0f32;
        while x < 10.0 {
            let want = (x as f64).tanh();
            let rel = ((fast_tanh_f32(x) as f64 - want) / want).abs();
            if rel > worst.0 {
                worst = (rel, x);
            }
            x += 1.3e-4;
        }
        assert!(worst.0 < 5e-7, "fast_tanh_f32 is {:e} off (relative) at {}", worst.0, worst.1);
        assert!(fast_tanh_f32(f32::NAN).is_nan());
        assert_eq!(fast_tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(fast_tanh_f32(f32::NEG_INFINITY), -1.0);
        assert_eq!(fast_tanh_f32(1e-30), 1e-30);
        assert_eq!(fast_tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn logistic_is_stable() {
        let y = f32s(unary(&Prim::Logistic, &Storage::F32(vec![-200.0, -30.0, 0.0, 30.0, 200.0])));
        assert_eq!(y[0], 0.0);
        assert!((y[1] - 9.357623e-14).abs() < 1e-19);
        assert_eq!(y[2], 0.5);
        assert_eq!(y[3], 1.0);
        assert_eq!(y[4], 1.0);
        assert!(f32s(unary(&Prim::Logistic, &Storage::F32(vec![f32::NAN])))[0].is_nan());
    }

    #[test]
    fn erf_inv_f32_inverts_erf() {
        // Round trip through f64 erf; the polynomial is good to a few ulp in f32.
        for i in -99..=99 {
            let y = i as f32 / 100.0;
            let x = erf_inv_f32(y);
            let back = libm::erf(x as f64) as f32;
            assert!((back - y).abs() <= 2e-7 + 2e-7 * y.abs(), "erf(erf_inv({y})) = {back}");
        }
        // Tiny inputs: erf_inv(y) ~ y * sqrt(pi) / 2.
        for y in [1e-30f32, 1e-10] {
            let want = y as f64 * std::f64::consts::PI.sqrt() / 2.0;
            assert!(ulps(erf_inv_f32(y), want as f32) <= 2, "{y}");
        }
        // The tail (w >= 5 branch): check through erfc, relative to 1 - |y|.
        for y in [0.999_999f32, -0.999_999_9] {
            let x = erf_inv_f32(y).abs() as f64;
            let tail = 1.0 - y.abs() as f64;
            assert!((libm::erfc(x) - tail).abs() / tail < 1e-4, "{y}");
        }
        assert_eq!(erf_inv_f32(0.0), 0.0);
        assert_eq!(erf_inv_f32(1.0), f32::INFINITY);
        assert_eq!(erf_inv_f32(-1.0), f32::NEG_INFINITY);
        assert!(erf_inv_f32(1.5).is_nan() && erf_inv_f32(f32::NAN).is_nan());
        // A known value: erfinv(0.5) = 0.4769362762044699.
        assert!(ulps(erf_inv_f32(0.5), 0.476_936_28) <= 1);
    }

    #[test]
    fn erf_inv_matches_jax_bit_for_bit() {
        // (x, lax.erf_inv(x)) bit patterns from JAX 0.10.2 on CPU, including the tails
        // (w >= 5 for f32; 6.25 <= w < 16 and w >= 16 for f64) and inputs where a plain
        // mul/add evaluation or libm's log1p would differ in the last bits.
        let f32_cases: [(u32, u32); 15] = [
            (0x3E8C3FAF, 0x3E7DAE13),
            (0xBEEBBD08, 0xBEDE187A),
            (0xBF6B0585, 0xBF9D7104),
            (0xBF7789B1, 0xBFC0E9D4),
            (0x3F5354B3, 0x3F75CF58),
            (0x3DB2B01E, 0x3D9EACCD),
            (0xBF6ECDDF, 0xBFA5AE2E),
            (0xBF405DF1, 0xBF50DDF4),
            (0x3D4FB3DE, 0x3D38321B),
            (0xBF330E92, 0xBF3B65CB),
            (0x3F7FFFFF, 0x407547CA),
            (0x3F7FFE08, 0x403CDAF9),
            (0x3F7FFC10, 0x40359593),
            (0x3F7FF823, 0x402E0E7D),
            (0x3F2064F5, 0x3F211BFD),
        ];
        let x = Storage::F32(f32_cases.iter().map(|c| f32::from_bits(c.0)).collect());
        let got: Vec<u32> = f32s(unary(&Prim::ErfInv, &x)).iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, f32_cases.map(|c| c.1));
        let f64_cases: [(u64, u64); 12] = [
            (0xBFDCFAAF4790E610, 0xBFDB3DDF78A08B89),
            (0xBFDF6F74AB6C24E4, 0xBFDDE60C9F1BD910),
            (0x3FDFF44D03488E5C, 0x3FDE791CD0A3FEF2),
            (0x3FE76D4EEB3936A8, 0x3FE9119E998C54E0),
            (0xBFD09B0810344BE0, 0xBFCDF8B48533EA57),
            (0xBFDBC11091F989B8, 0xBFD9F38897CF3A25),
            (0x3FEFFFFF180A1BD0, 0x400C975A1996084E),
            (0x3FEFFFFE918FEC4D, 0x400C17EBD5BF7F9B),
            (0x3FEFFFFE2F60E6AA, 0x400BD4ED3B8FF091),
            (0x3FEFFFFFFFFB82EA, 0x4012C3917DF475FE),
            (0x3FEFFFFF227CED68, 0x400CA414F1F74FA4),
            (0x3FE4981973E80CC0, 0x3FE4DDDAA0F8F613),
        ];
        let x = Storage::F64(f64_cases.iter().map(|c| f64::from_bits(c.0)).collect());
        let y = unary(&Prim::ErfInv, &x);
        let got: Vec<u64> = y.as_slice::<f64>().unwrap().iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, f64_cases.map(|c| c.1));
        // The parallel path gives the same bits.
        let big: Vec<f32> = (0..BIG).map(|i| f32::from_bits(f32_cases[i % 15].0)).collect();
        let y = f32s(unary(&Prim::ErfInv, &Storage::F32(big)));
        assert!(y.iter().enumerate().all(|(i, v)| v.to_bits() == f32_cases[i % 15].1));
        // Halves go through f32.
        let h = unary(&Prim::ErfInv, &Storage::BF16(vec![bf16::from_f32(0.5), bf16::ONE]));
        let want = [bf16::from_f32(erf_inv_f32(bf16::from_f32(0.5).to_f32())), bf16::INFINITY];
        assert_eq!(h, Storage::BF16(want.to_vec()));
    }

    #[test]
    fn xla_log_matches_ln() {
        // XLA's f32 log polynomial is within a couple of ulp of the correctly rounded log.
        for i in 1..2000 {
            let v = i as f32 * 0.37;
            assert!(ulps(xla_log_f32(v), v.ln()) <= 2, "{v}");
            let a = -(i as f32) / 2001.0;
            assert!(ulps(xla_log1p_f32(a), a.ln_1p()) <= 2, "{a}");
        }
        assert_eq!(xla_log_f32(0.0), f32::NEG_INFINITY);
        assert_eq!(xla_log_f32(f32::INFINITY), f32::INFINITY);
        assert!(xla_log_f32(-1.0).is_nan() && xla_log_f32(f32::NAN).is_nan());
        assert!((xla_log1p_f64(-0.25) - (-0.25f64).ln_1p()).abs() < 1e-16);
    }

    #[test]
    fn erf_inv_f64_inverts_erf() {
        for i in -999..=999 {
            let y = i as f64 / 1000.0;
            let back = libm::erf(erf_inv_f64(y));
            // XLA's evaluation (which kiln reproduces) loses up to ~1e-15 to cancellation
            // in the 23-term polynomial near |y| = 0.64.
            assert!((back - y).abs() <= 1e-14 * y.abs(), "erf(erf_inv({y})) = {back}");
        }
        // Exercise the w >= 6.25 and w >= 16 branches.
        for y in [0.9999, 1.0 - 1e-12] {
            let x = erf_inv_f64(y);
            assert!((libm::erfc(x) - (1.0 - y)).abs() / (1.0 - y) < 1e-9, "{y}");
        }
        assert!((erf_inv_f64(0.5) - 0.476_936_276_204_469_9).abs() < 2e-16);
        assert_eq!(erf_inv_f64(-1.0), f64::NEG_INFINITY);
        let s = unary(&Prim::ErfInv, &Storage::F64(vec![0.5, 1.0, 2.0]));
        let s = s.as_slice::<f64>().unwrap();
        assert!(s[0] == erf_inv_f64(0.5) && s[1] == f64::INFINITY && s[2].is_nan());
    }

    #[test]
    fn unary_f64_and_halves() {
        let y = unary(&Prim::Sqrt, &Storage::F64(vec![4.0, 2.0]));
        assert_eq!(y, Storage::F64(vec![2.0, 2f64.sqrt()]));
        let h = Storage::F16(vec![f16::from_f32(2.0), f16::from_f32(-3.0)]);
        assert_eq!(
            unary(&Prim::Neg, &h),
            Storage::F16(vec![f16::from_f32(-2.0), f16::from_f32(3.0)])
        );
        assert_eq!(
            unary(&Prim::Exp, &Storage::BF16(vec![bf16::from_f32(1.0)])),
            Storage::BF16(vec![bf16::from_f32(std::f32::consts::E)])
        );
        let fin = Storage::BF16(vec![bf16::ONE, bf16::INFINITY, bf16::NAN]);
        assert_eq!(unary(&Prim::IsFinite, &fin), Storage::Bool(vec![true, false, false]));
        let fin = Storage::F32(vec![1.0, f32::NEG_INFINITY, f32::NAN]);
        assert_eq!(unary(&Prim::IsFinite, &fin), Storage::Bool(vec![true, false, false]));
    }

    #[test]
    fn integer_pow_halves_round_every_step() {
        // Values from JAX 0.10.2: 300^2 overflows f16 before the reciprocal, so the
        // result is 0; bf16 products round after each multiplication.
        let h = Storage::F16(vec![f16::from_f32(300.0), f16::from_f32(1.1)]);
        let y = unary(&Prim::IntegerPow { y: -2 }, &h);
        assert_eq!(y, Storage::F16(vec![f16::ZERO, f16::from_bits(15006)]));
        let b = Storage::BF16([0x3F84, 0x3F89, 0x3F8D].map(bf16::from_bits).to_vec());
        let y = unary(&Prim::IntegerPow { y: 5 }, &b);
        assert_eq!(y, Storage::BF16([0x3F94, 0x3FB5, 0x3FCF].map(bf16::from_bits).to_vec()));
    }

    #[test]
    fn unary_ints_and_bool() {
        let x = Storage::I32(vec![-3, 0, 5, i32::MIN]);
        assert_eq!(unary(&Prim::Neg, &x), Storage::I32(vec![3, 0, -5, i32::MIN]));
        assert_eq!(unary(&Prim::Abs, &x), Storage::I32(vec![3, 0, 5, i32::MIN]));
        assert_eq!(unary(&Prim::Sign, &x), Storage::I32(vec![-1, 0, 1, -1]));
        assert_eq!(unary(&Prim::Not, &x), Storage::I32(vec![2, -1, -6, i32::MAX]));
        assert_eq!(unary(&Prim::IntegerPow { y: 2 }, &x), Storage::I32(vec![9, 0, 25, 0]));
        assert_eq!(
            unary(&Prim::IntegerPow { y: -1 }, &Storage::I64(vec![1, -1, 2, 0])),
            Storage::I64(vec![1, -1, 0, 0])
        );
        let u = Storage::U8(vec![0, 1, 200]);
        assert_eq!(unary(&Prim::Neg, &u), Storage::U8(vec![0, 255, 56]));
        assert_eq!(unary(&Prim::Sign, &u), Storage::U8(vec![0, 1, 1]));
        assert_eq!(unary(&Prim::Abs, &u), u);
        assert_eq!(unary(&Prim::Not, &Storage::U32(vec![0])), Storage::U32(vec![u32::MAX]));
        assert_eq!(
            unary(&Prim::IntegerPow { y: 3 }, &Storage::U32(vec![3])),
            Storage::U32(vec![27])
        );
        assert_eq!(
            unary(&Prim::Not, &Storage::Bool(vec![true, false])),
            Storage::Bool(vec![false, true])
        );
    }

    #[test]
    fn unary_parallel_path() {
        let x: Vec<f32> = (0..BIG).map(|i| i as f32 * 1e-3).collect();
        let y = f32s(unary(&Prim::Exp, &Storage::F32(x.clone())));
        assert_eq!(y.len(), BIG);
        for (a, b) in y.iter().zip(&x) {
            assert_eq!(*a, fast_exp_f32(*b));
        }
        let xi: Vec<i64> = (0..BIG as i64).collect();
        let n = unary(&Prim::Neg, &Storage::I64(xi));
        assert_eq!(n.as_slice::<i64>().unwrap()[BIG - 1], -(BIG as i64 - 1));
    }

    #[test]
    fn convert_float_to_int_truncates_and_saturates() {
        let x = Storage::F32(vec![1.7, -1.7, 3e9, -3e9, f32::NAN, f32::INFINITY, -0.5]);
        assert_eq!(
            convert(&x, DType::I32),
            Storage::I32(vec![1, -1, i32::MAX, i32::MIN, 0, i32::MAX, 0])
        );
        assert_eq!(convert(&x, DType::U8), Storage::U8(vec![1, 0, 255, 0, 0, 255, 0]));
        assert_eq!(
            convert(&x, DType::Bool),
            Storage::Bool(vec![true, true, true, true, true, true, true])
        );
        let h = Storage::BF16(vec![bf16::from_f32(-2.75), bf16::from_f32(300.0)]);
        assert_eq!(convert(&h, DType::I64), Storage::I64(vec![-2, 300]));
        assert_eq!(convert(&h, DType::U8), Storage::U8(vec![0, 255]));
    }

    #[test]
    fn convert_ints_bool_and_floats() {
        let x = Storage::I32(vec![-1, 0, 256, 16_777_217]);
        assert_eq!(convert(&x, DType::U8), Storage::U8(vec![255, 0, 0, 1]));
        assert_eq!(convert(&x, DType::U32), Storage::U32(vec![u32::MAX, 0, 256, 16_777_217]));
        assert_eq!(convert(&x, DType::F32), Storage::F32(vec![-1.0, 0.0, 256.0, 16_777_216.0]));
        assert_eq!(convert(&x, DType::Bool), Storage::Bool(vec![true, false, true, true]));
        let b = Storage::Bool(vec![true, false]);
        assert_eq!(convert(&b, DType::F64), Storage::F64(vec![1.0, 0.0]));
        assert_eq!(convert(&b, DType::I64), Storage::I64(vec![1, 0]));
        assert_eq!(convert(&b, DType::BF16), Storage::BF16(vec![bf16::ONE, bf16::ZERO]));
        assert_eq!(convert(&b, DType::Bool), b);
        let f = Storage::F64(vec![0.1, 1e300]);
        assert_eq!(convert(&f, DType::F32), Storage::F32(vec![0.1, f32::INFINITY]));
        assert_eq!(
            convert(&Storage::I64(vec![i64::MAX]), DType::F32),
            Storage::F32(vec![9.223_372e18])
        );
    }

    #[test]
    fn convert_to_halves_rounds_once_to_nearest_even() {
        // 1 + 2^-8 is a bf16 tie: rounds to even (1.0); 1 + 3*2^-9 rounds up.
        let x = Storage::F32(vec![1.0 + 1.0 / 256.0, 1.0 + 3.0 / 512.0, 65520.0]);
        assert_eq!(
            convert(&x, DType::BF16),
            Storage::BF16(vec![bf16::ONE, bf16::from_bits(0x3F81), bf16::from_f32(65536.0)])
        );
        // f16: 65520 is the overflow tie and goes to infinity.
        assert_eq!(convert(&x, DType::F16).as_slice::<f16>().unwrap()[2], f16::INFINITY);
        // Just above a bf16 tie in f64 (not representable in f32): must round up, which
        // double rounding through f32 would not.
        let y = Storage::F64(vec![1.0 + 1.0 / 256.0 + 1e-12, -(1.0 + 1.0 / 256.0 + 1e-12)]);
        assert_eq!(
            convert(&y, DType::BF16),
            Storage::BF16(vec![bf16::from_bits(0x3F81), bf16::from_bits(0xBF81)])
        );
        // Same for an i64 just above a bf16 tie.
        let z = Storage::I64(vec![(1 << 40) + (1 << 32) + 1, 3]);
        assert_eq!(
            convert(&z, DType::BF16),
            Storage::BF16(vec![
                bf16::from_f32((1u64 << 40) as f32 + (1u64 << 33) as f32),
                bf16::from_f32(3.0)
            ])
        );
        let h = Storage::F16(vec![f16::from_f32(0.333)]);
        assert_eq!(convert(&h, DType::F32), Storage::F32(vec![f16::from_f32(0.333).to_f32()]));
        assert_eq!(
            convert(&h, DType::BF16),
            Storage::BF16(vec![bf16::from_f32(f16::from_f32(0.333).to_f32())])
        );
        assert!(
            convert(&Storage::F64(vec![f64::NAN]), DType::F16).as_slice::<f16>().unwrap()[0]
                .is_nan()
        );
        assert_eq!(convert(&Storage::F64(vec![1e-30]), DType::F16), Storage::F16(vec![f16::ZERO]));
        assert_eq!(
            convert(&Storage::F64(vec![-1e300]), DType::BF16),
            Storage::BF16(vec![-bf16::INFINITY])
        );
    }

    #[test]
    fn convert_parallel_path() {
        let x: Vec<i32> = (0..BIG as i32).collect();
        let y = convert(&Storage::I32(x), DType::F64);
        let y = y.as_slice::<f64>().unwrap();
        assert_eq!(y.len(), BIG);
        assert!(y.iter().enumerate().all(|(i, &v)| v == i as f64));
    }

    #[test]
    fn bitcast_same_width() {
        let x = Storage::F32(vec![1.0, -0.0]);
        assert_eq!(bitcast(&x, DType::U32), Storage::U32(vec![0x3F80_0000, 0x8000_0000]));
        assert_eq!(bitcast(&x, DType::I32), Storage::I32(vec![0x3F80_0000, i32::MIN]));
        assert_eq!(bitcast(&Storage::U32(vec![0x4000_0000]), DType::F32), Storage::F32(vec![2.0]));
        assert_eq!(bitcast(&Storage::F64(vec![1.0]), DType::I64), Storage::I64(vec![0x3FF0 << 48]));
        assert_eq!(
            bitcast(&Storage::F16(vec![f16::ONE]), DType::BF16),
            Storage::BF16(vec![bf16::from_bits(0x3C00)])
        );
        assert_eq!(bitcast(&Storage::U8(vec![7]), DType::U8), Storage::U8(vec![7]));
    }

    #[test]
    fn binary_float_ops() {
        let a = Storage::F32(vec![7.0, -7.0, 1.0, f32::NAN]);
        let b = Storage::F32(vec![2.0, 2.0, f32::NAN, 1.0]);
        let bin = |p: Prim| f32s(binary(&p, &a, &b));
        assert_eq!(bin(Prim::Add)[..2], [9.0, -5.0]);
        assert_eq!(bin(Prim::Sub)[..2], [5.0, -9.0]);
        assert_eq!(bin(Prim::Mul)[..2], [14.0, -14.0]);
        assert_eq!(bin(Prim::Div)[..2], [3.5, -3.5]);
        assert_eq!(bin(Prim::Rem)[..2], [1.0, -1.0]);
        assert_eq!(bin(Prim::Pow)[..2], [49.0, 49.0]);
        let mx = bin(Prim::Max);
        assert_eq!(mx[..2], [7.0, 2.0]);
        assert!(mx[2].is_nan() && mx[3].is_nan());
        let mn = bin(Prim::Min);
        assert_eq!(mn[..2], [2.0, -7.0]);
        assert!(mn[2].is_nan() && mn[3].is_nan());
        let at = f32s(binary(&Prim::Atan2, &Storage::F32(vec![1.0]), &Storage::F32(vec![-1.0])));
        assert_eq!(at, vec![1.0f32.atan2(-1.0)]);
        let h = binary(
            &Prim::Add,
            &Storage::F16(vec![f16::from_f32(1.5)]),
            &Storage::F16(vec![f16::from_f32(2.25)]),
        );
        assert_eq!(h, Storage::F16(vec![f16::from_f32(3.75)]));
        let d = binary(&Prim::Div, &Storage::F64(vec![1.0]), &Storage::F64(vec![0.0]));
        assert_eq!(d, Storage::F64(vec![f64::INFINITY]));
        let m = binary(
            &Prim::Max,
            &Storage::BF16(vec![bf16::NAN, bf16::ONE]),
            &Storage::BF16(vec![bf16::ONE, bf16::ZERO]),
        );
        let m = m.as_slice::<bf16>().unwrap();
        assert!(m[0].is_nan() && m[1] == bf16::ONE);
    }

    #[test]
    fn binary_int_ops() {
        let a = Storage::I32(vec![7, -7, i32::MAX, i32::MIN, 5]);
        let b = Storage::I32(vec![2, 2, 1, -1, 0]);
        let bin = |p: Prim| binary(&p, &a, &b);
        assert_eq!(bin(Prim::Add), Storage::I32(vec![9, -5, i32::MIN, i32::MAX, 5]));
        assert_eq!(bin(Prim::Sub), Storage::I32(vec![5, -9, i32::MAX - 1, i32::MIN + 1, 5]));
        assert_eq!(bin(Prim::Mul), Storage::I32(vec![14, -14, i32::MAX, i32::MIN, 0]));
        assert_eq!(bin(Prim::Div), Storage::I32(vec![3, -3, i32::MAX, i32::MIN, 0]));
        assert_eq!(bin(Prim::Rem), Storage::I32(vec![1, -1, 0, 0, 0]));
        assert_eq!(bin(Prim::Max), Storage::I32(vec![7, 2, i32::MAX, -1, 5]));
        assert_eq!(bin(Prim::Min), Storage::I32(vec![2, -7, 1, i32::MIN, 0]));
        assert_eq!(bin(Prim::And), Storage::I32(vec![2, 0, 1, i32::MIN, 0]));
        assert_eq!(bin(Prim::Or), Storage::I32(vec![7, -5, i32::MAX, -1, 5]));
        assert_eq!(bin(Prim::Xor), Storage::I32(vec![5, -5, i32::MAX - 1, i32::MAX, 5]));
        let u = binary(&Prim::Div, &Storage::U8(vec![200, 9]), &Storage::U8(vec![0, 4]));
        assert_eq!(u, Storage::U8(vec![0, 2]));
        let r = binary(&Prim::Rem, &Storage::I64(vec![-7, 7]), &Storage::I64(vec![3, -3]));
        assert_eq!(r, Storage::I64(vec![-1, 1]));
        let w = binary(&Prim::Add, &Storage::U32(vec![u32::MAX]), &Storage::U32(vec![2]));
        assert_eq!(w, Storage::U32(vec![1]));
    }

    #[test]
    fn shifts() {
        let a = Storage::I32(vec![1, -8, -8, 5, -1]);
        let s = Storage::I32(vec![3, 1, 31, 32, -1]);
        assert_eq!(binary(&Prim::ShiftLeft, &a, &s), Storage::I32(vec![8, -16, 0, 0, 0]));
        assert_eq!(
            binary(&Prim::ShiftRightLogical, &a, &s),
            Storage::I32(vec![0, 0x7FFF_FFFC, 1, 0, 0])
        );
        assert_eq!(
            binary(&Prim::ShiftRightArithmetic, &a, &s),
            Storage::I32(vec![0, -4, -1, 0, -1])
        );
        let u = Storage::U8(vec![0x80, 0x80, 0x40]);
        let su = Storage::U8(vec![1, 9, 200]);
        assert_eq!(binary(&Prim::ShiftRightLogical, &u, &su), Storage::U8(vec![0x40, 0, 0]));
        assert_eq!(binary(&Prim::ShiftRightArithmetic, &u, &su), Storage::U8(vec![0xC0, 0xFF, 0]));
        assert_eq!(binary(&Prim::ShiftLeft, &u, &su), Storage::U8(vec![0, 0, 0]));
        let l = binary(&Prim::ShiftLeft, &Storage::I64(vec![1, 1]), &Storage::I64(vec![63, 64]));
        assert_eq!(l, Storage::I64(vec![i64::MIN, 0]));
        let r = binary(
            &Prim::ShiftRightLogical,
            &Storage::U32(vec![u32::MAX]),
            &Storage::U32(vec![28]),
        );
        assert_eq!(r, Storage::U32(vec![15]));
    }

    #[test]
    fn binary_bool_ops() {
        let a = Storage::Bool(vec![true, true, false, false]);
        let b = Storage::Bool(vec![true, false, true, false]);
        let or = Storage::Bool(vec![true, true, true, false]);
        let and = Storage::Bool(vec![true, false, false, false]);
        assert_eq!(binary(&Prim::Or, &a, &b), or);
        assert_eq!(binary(&Prim::Add, &a, &b), or);
        assert_eq!(binary(&Prim::Max, &a, &b), or);
        assert_eq!(binary(&Prim::And, &a, &b), and);
        assert_eq!(binary(&Prim::Mul, &a, &b), and);
        assert_eq!(binary(&Prim::Min, &a, &b), and);
        assert_eq!(binary(&Prim::Xor, &a, &b), Storage::Bool(vec![false, true, true, false]));
        assert_eq!(binary(&Prim::Lt, &a, &b), Storage::Bool(vec![false, false, true, false]));
    }

    #[test]
    fn comparisons() {
        let a = Storage::F32(vec![1.0, 2.0, f32::NAN, -0.0]);
        let b = Storage::F32(vec![2.0, 2.0, f32::NAN, 0.0]);
        let c = |p: Prim| binary(&p, &a, &b);
        assert_eq!(c(Prim::Eq), Storage::Bool(vec![false, true, false, true]));
        assert_eq!(c(Prim::Ne), Storage::Bool(vec![true, false, true, false]));
        assert_eq!(c(Prim::Lt), Storage::Bool(vec![true, false, false, false]));
        assert_eq!(c(Prim::Le), Storage::Bool(vec![true, true, false, true]));
        assert_eq!(c(Prim::Gt), Storage::Bool(vec![false, false, false, false]));
        assert_eq!(c(Prim::Ge), Storage::Bool(vec![false, true, false, true]));
        let i = binary(&Prim::Lt, &Storage::U32(vec![1, u32::MAX]), &Storage::U32(vec![2, 0]));
        assert_eq!(i, Storage::Bool(vec![true, false]));
        let h = binary(
            &Prim::Ge,
            &Storage::F16(vec![f16::from_f32(-1.0), f16::NAN]),
            &Storage::F16(vec![f16::from_f32(-2.0), f16::ONE]),
        );
        assert_eq!(h, Storage::Bool(vec![true, false]));
    }

    #[test]
    fn binary_parallel_path() {
        let a: Vec<f32> = (0..BIG).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..BIG).map(|i| (BIG - i) as f32).collect();
        let s = f32s(binary(&Prim::Add, &Storage::F32(a.clone()), &Storage::F32(b.clone())));
        assert!(s.iter().all(|&v| v == BIG as f32));
        let lt = binary(&Prim::Lt, &Storage::F32(a), &Storage::F32(b));
        let lt = lt.as_slice::<bool>().unwrap();
        assert!(lt.iter().enumerate().all(|(i, &v)| v == (2 * i < BIG)));
        let ai: Vec<i32> = (0..BIG as i32).collect();
        let d = binary(&Prim::Div, &Storage::I32(ai.clone()), &Storage::I32(vec![3; BIG]));
        assert!(d.as_slice::<i32>().unwrap().iter().zip(&ai).all(|(q, x)| *q == x / 3));
    }

    #[test]
    fn select_all_dtypes() {
        let p = Storage::Bool(vec![true, false, true]);
        let t = Storage::F32(vec![1.0, 2.0, 3.0]);
        let f = Storage::F32(vec![-1.0, -2.0, -3.0]);
        assert_eq!(select(&p, &t, &f), Storage::F32(vec![1.0, -2.0, 3.0]));
        let t = Storage::I64(vec![1, 2, 3]);
        let f = Storage::I64(vec![4, 5, 6]);
        assert_eq!(select(&p, &t, &f), Storage::I64(vec![1, 5, 3]));
        let t = Storage::Bool(vec![false, false, false]);
        let f = Storage::Bool(vec![true, true, true]);
        assert_eq!(select(&p, &t, &f), Storage::Bool(vec![false, true, false]));
        let p = Storage::Bool((0..BIG).map(|i| i % 2 == 0).collect());
        let t = Storage::U32(vec![1; BIG]);
        let f = Storage::U32(vec![0; BIG]);
        let s = select(&p, &t, &f);
        assert!(
            s.as_slice::<u32>().unwrap().iter().enumerate().all(|(i, &v)| v == (i % 2 == 0) as u32)
        );
    }

    #[test]
    fn clamp_all_dtypes() {
        let lo = Storage::F32(vec![0.0, 0.0, 0.0, 0.0]);
        let x = Storage::F32(vec![-1.0, 0.5, 2.0, f32::NAN]);
        let hi = Storage::F32(vec![1.0, 1.0, 1.0, 1.0]);
        let c = f32s(clamp(&lo, &x, &hi));
        assert_eq!(c[..3], [0.0, 0.5, 1.0]);
        assert!(c[3].is_nan());
        let c = clamp(
            &Storage::I32(vec![-2, -2]),
            &Storage::I32(vec![-5, 9]),
            &Storage::I32(vec![3, 3]),
        );
        assert_eq!(c, Storage::I32(vec![-2, 3]));
        let c = clamp(
            &Storage::BF16(vec![bf16::ZERO]),
            &Storage::BF16(vec![bf16::from_f32(5.0)]),
            &Storage::BF16(vec![bf16::ONE]),
        );
        assert_eq!(c, Storage::BF16(vec![bf16::ONE]));
        let c = clamp(
            &Storage::Bool(vec![true, false]),
            &Storage::Bool(vec![false, true]),
            &Storage::Bool(vec![true, false]),
        );
        assert_eq!(c, Storage::Bool(vec![true, false]));
        let c = clamp(
            &Storage::U8(vec![10; BIG]),
            &Storage::U8(vec![5; BIG]),
            &Storage::U8(vec![20; BIG]),
        );
        assert!(c.as_slice::<u8>().unwrap().iter().all(|&v| v == 10));
    }
}
