//! Pseudo-random numbers with explicit keys, bit-compatible with `jax.random`.
//!
//! As in JAX there is no global generator state: every sampler takes a **key**, and new
//! independent keys are derived from old ones with [`split`] or [`fold_in`]. A key is an
//! ordinary [`Array`] of dtype `u32` and shape `[2]` (JAX's raw `PRNGKey` data), so keys
//! can be passed into and returned from `jit`/`grad`/`vmap`-transformed functions, and
//! every function here is written with [`lax`] operations only, so it works when the key is
//! a tracer.
//!
//! kiln implements JAX's **default** configuration (JAX 0.10.2): the `threefry2x32`
//! generator with `jax_threefry_partitionable=True` and 32-bit (no x64) seeds. For the
//! same seed, shape and dtype, [`key`], [`split`], [`fold_in`], [`bits`], [`uniform`],
//! [`randint`], [`bernoulli`] and [`permutation`] return bit-identical values to
//! `jax.random` on CPU; [`normal`], [`truncated_normal`], [`gumbel`] (and therefore
//! [`categorical`]) agree to within a couple of ulps, because they go through `erf_inv` /
//! `log`, whose last bit depends on the backend's implementation. The algorithm of every
//! function is described in `bench/golden/README.md`.
//!
//! ```
//! use kiln::{DType, random};
//!
//! let key = random::key(0);
//! assert_eq!(key.to_vec::<u32>(), vec![0, 0]);
//!
//! // Derive independent keys; never reuse a key for two draws.
//! let (k1, k2) = random::split2(&key);
//! let u = random::uniform(&k1, &[3], DType::F32);
//! assert!(u.to_vec::<f32>().iter().all(|&x| (0.0..1.0).contains(&x)));
//! let z = random::normal(&k2, &[2, 2], DType::F32);
//! assert_eq!(z.shape(), &[2, 2]);
//!
//! // Raw bits are the threefry hash of the element's index, like JAX's.
//! assert_eq!(random::bits(&key, &[], DType::U32).item::<u32>(), 0x6b20_0159 ^ 0x99ba_4efe);
//!
//! // A permutation of 0..5.
//! let mut p = random::permutation(&random::fold_in(&key, 7), 5).to_vec::<i32>();
//! p.sort();
//! assert_eq!(p, vec![0, 1, 2, 3, 4]);
//! ```
//!
//! Scalar parameters (`minval`, `maxval`, `p`, truncation bounds) are host numbers: they
//! are static, like shapes and dtypes. [`bernoulli_p`] and [`categorical`] take array
//! parameters, which may be tracers.

use crate::array::Array;
use crate::aval::normalize_axis;
use crate::dtype::DType;
use crate::lax;
use half::{bf16, f16};

// ---- keys ----------------------------------------------------------------------------------

/// A key from an integer seed, like `jax.random.key(seed)` / `jax.random.PRNGKey(seed)`.
///
/// As in JAX without x64, the seed is reduced modulo 2^32 (an `int32` that wraps) and the
/// key data is `[0, seed mod 2^32]`: `key(42)` is `[0, 42]`, `key(-1)` is
/// `[0, 0xFFFFFFFF]` and `key(2^32 + 5)` is `[0, 5]`.
///
/// ```
/// use kiln::random;
/// assert_eq!(random::key(42).to_vec::<u32>(), vec![0, 42]);
/// assert_eq!(random::key(-1).to_vec::<u32>(), vec![0, u32::MAX]);
/// ```
pub fn key(seed: i64) -> Array {
    Array::from_vec(vec![0u32, seed as u32], [2])
}

/// A key from a seed held in a scalar integer array (which may be a tracer); same
/// semantics as [`key`]: `[0, seed mod 2^32]`.
#[track_caller]
pub fn key_from_seed(seed: &Array) -> Array {
    assert!(
        seed.ndim() == 0 && seed.dtype().is_int(),
        "random::key_from_seed: the seed must be a scalar integer array, got {}",
        seed.aval()
    );
    let lo = lax::reshape(&lax::convert_element_type(seed, DType::U32), &[1]);
    let hi = fill(&[1], 0.0, DType::U32);
    lax::concatenate(&[hi, lo], 0)
}

/// A key with the given raw data (`jax.random.wrap_key_data` / a raw `PRNGKey`).
pub fn wrap_key_data(data: [u32; 2]) -> Array {
    Array::from_vec(data.to_vec(), [2])
}

/// `num` new keys, shape `[num, 2]` (`jax.random.split(key, num)`).
///
/// Key `i` is `threefry2x32(key, (0, i))`, so `split(key, n)[i]` does not depend on `n` and
/// equals `fold_in(key, i)`.
#[track_caller]
pub fn split(key: &Array, num: usize) -> Array {
    split_shape(key, &[num])
}

/// New keys for every index of `shape`, shape `[*shape, 2]` (`jax.random.split(key, shape)`).
#[track_caller]
pub fn split_shape(key: &Array, shape: &[usize]) -> Array {
    check_key("split", key);
    let (y0, y1) = hash(key, shape);
    stack_last(&y0, &y1)
}

/// Two new keys: `(split(key, 2)[0], split(key, 2)[1])` (JAX's `k1, k2 = split(key)`).
#[track_caller]
pub fn split2(key: &Array) -> (Array, Array) {
    let ks = split(key, 2);
    (row(&ks, 0), row(&ks, 1))
}

/// `num` new keys as separate `[2]` arrays (the rows of [`split`]).
#[track_caller]
pub fn split_n(key: &Array, num: usize) -> Vec<Array> {
    let ks = split(key, num);
    (0..num).map(|i| row(&ks, i)).collect()
}

/// A new key derived from `key` and an integer (`jax.random.fold_in`):
/// `threefry2x32(key, (0, data))`.
#[track_caller]
pub fn fold_in(key: &Array, data: u32) -> Array {
    fold_in_array(key, &Array::scalar(data))
}

/// [`fold_in`] with the data in a scalar integer array (which may be a tracer, e.g. a loop
/// counter under `jit`). The data is converted to `u32` (wrapping).
#[track_caller]
pub fn fold_in_array(key: &Array, data: &Array) -> Array {
    check_key("fold_in", key);
    assert!(
        data.ndim() == 0 && data.dtype().is_int(),
        "random::fold_in: data must be a scalar integer array, got {}",
        data.aval()
    );
    let (k0, k1) = key_words(key);
    let d = lax::convert_element_type(data, DType::U32);
    let (y0, y1) = lax::threefry2x32(&k0, &k1, &fill(&[], 0.0, DType::U32), &d);
    stack_last(&y0, &y1)
}

// ---- bits ----------------------------------------------------------------------------------

/// Uniformly random bits of `shape` (`jax.random.bits`). `dtype` is `U32` or `U8`.
///
/// Element `n` (flat row-major index) is `y0 ^ y1` with `(y0, y1) = threefry2x32(key,
/// (n >> 32, n mod 2^32))`, truncated to the low 8 bits for `U8` (JAX's `uint16` result is
/// the low 16 bits of the `U32` one; kiln has no 16-bit integer dtype).
#[track_caller]
pub fn bits(key: &Array, shape: &[usize], dtype: DType) -> Array {
    check_key("bits", key);
    match dtype {
        DType::U32 => random_bits32(key, shape),
        DType::U8 => lax::convert_element_type(&random_bits32(key, shape), DType::U8),
        other => panic!("random::bits: dtype must be u32 or u8, got {other}"),
    }
}

// ---- floats --------------------------------------------------------------------------------

/// Uniform floats in `[0, 1)` (`jax.random.uniform(key, shape, dtype)`).
///
/// `dtype` is any float type (`F32`, `F64`, `F16`, `BF16`).
#[track_caller]
pub fn uniform(key: &Array, shape: &[usize], dtype: DType) -> Array {
    uniform_range(key, shape, dtype, 0.0, 1.0)
}

/// Uniform floats in `[minval, maxval)` (`jax.random.uniform(key, shape, dtype, minval,
/// maxval)`). The bounds are first rounded to `dtype`.
///
/// The result is `max(minval, f * (maxval - minval) + minval)` with `f` uniform in `[0, 1)`
/// built from the top mantissa bits of [`bits`]. For `F32` the multiply-add is rounded once
/// (as XLA:CPU fuses it into an FMA), so results match JAX bit for bit; `F64`, `F16` and
/// `BF16` round after the multiply and after the add.
#[track_caller]
pub fn uniform_range(
    key: &Array,
    shape: &[usize],
    dtype: DType,
    minval: f64,
    maxval: f64,
) -> Array {
    check_key("uniform", key);
    check_float("uniform", dtype);
    let lo = round_to(minval, dtype);
    let hi = round_to(maxval, dtype);
    let span = sub_in(hi, lo, dtype);
    let f = unit_floats(key, shape, dtype);
    let out = scale(&f, span, lo, shape, dtype);
    lax::max(&fill(shape, lo, dtype), &out)
}

/// Standard normal samples (`jax.random.normal`): `sqrt(2) * erf_inv(u)` with `u` uniform in
/// `(-1, 1)`. `dtype` is any float type.
#[track_caller]
pub fn normal(key: &Array, shape: &[usize], dtype: DType) -> Array {
    check_key("normal", key);
    check_float("normal", dtype);
    let lo = next_after(-1.0, 0.0, dtype);
    let u = uniform_range(key, shape, dtype, lo, 1.0);
    lax::mul(&fill(shape, round_to(std::f64::consts::SQRT_2, dtype), dtype), &lax::erf_inv(&u))
}

/// Normal samples truncated to `(lower, upper)` (`jax.random.truncated_normal`).
///
/// Samples `u` uniformly between `erf(lower / sqrt 2)` and `erf(upper / sqrt 2)`, returns
/// `sqrt(2) * erf_inv(u)` clipped into the open interval. The two `erf` values are static
/// and computed on the host with XLA:CPU's `f32` `erf` polynomial (libm's `erf` for `F64`).
#[track_caller]
pub fn truncated_normal(
    key: &Array,
    lower: f64,
    upper: f64,
    shape: &[usize],
    dtype: DType,
) -> Array {
    check_key("truncated_normal", key);
    check_float("truncated_normal", dtype);
    let sqrt2 = round_to(std::f64::consts::SQRT_2, dtype);
    let lower = round_to(lower, dtype);
    let upper = round_to(upper, dtype);
    let a = erf_in(div_in(lower, sqrt2, dtype), dtype);
    let b = erf_in(div_in(upper, sqrt2, dtype), dtype);
    let u = uniform_range(key, shape, dtype, a, b);
    let out = lax::mul(&fill(shape, sqrt2, dtype), &lax::erf_inv(&u));
    let lo = next_after(lower, f64::INFINITY, dtype);
    let hi = next_after(upper, f64::NEG_INFINITY, dtype);
    let out = lax::max(&fill(shape, lo, dtype), &out);
    lax::min(&fill(shape, hi, dtype), &out)
}

/// Standard Gumbel samples (`jax.random.gumbel`, mode `"low"`): `-log(-log(u))` with `u`
/// uniform in `[tiny, 1)`.
#[track_caller]
pub fn gumbel(key: &Array, shape: &[usize], dtype: DType) -> Array {
    check_key("gumbel", key);
    check_float("gumbel", dtype);
    let u = uniform_range(key, shape, dtype, tiny(dtype), 1.0);
    lax::neg(&lax::log(&lax::neg(&lax::log(&u))))
}

// ---- discrete ------------------------------------------------------------------------------

/// Bernoulli samples with probability `p` of `true` (`jax.random.bernoulli(key, p, shape)`):
/// `uniform(key, shape, F32) < p` with `p` rounded to `f32`. Output dtype `Bool`.
#[track_caller]
pub fn bernoulli(key: &Array, p: f64, shape: &[usize]) -> Array {
    check_key("bernoulli", key);
    let u = uniform(key, shape, DType::F32);
    lax::lt(&u, &fill(shape, round_to(p, DType::F32), DType::F32))
}

/// Bernoulli samples with an array of probabilities (float dtype; may be a tracer):
/// `uniform(key, shape, p.dtype) < p`, with `p` broadcast numpy-style to `shape`
/// (default: `p`'s shape).
#[track_caller]
pub fn bernoulli_p(key: &Array, p: &Array, shape: Option<&[usize]>) -> Array {
    check_key("bernoulli", key);
    assert!(p.dtype().is_float(), "random::bernoulli: p must have a float dtype, got {}", p.aval());
    let shape = shape.unwrap_or(p.shape()).to_vec();
    let u = uniform(key, &shape, p.dtype());
    lax::lt(&u, &broadcast_to("bernoulli", p, &shape))
}

/// Random integers in `[minval, maxval)` (`jax.random.randint`). `dtype` is `I32`, `U32` or
/// `U8`.
///
/// The bounds are clipped to `dtype`'s range (as in JAX, a `maxval` one past the largest
/// value still covers it, e.g. `randint(.., 0, 256, U8)`), and `maxval <= minval` always
/// gives `minval`. Like JAX's, the algorithm draws two words per element and is slightly
/// biased when the span is not a power of two.
#[track_caller]
pub fn randint(key: &Array, shape: &[usize], minval: i64, maxval: i64, dtype: DType) -> Array {
    check_key("randint", key);
    let (nbits, dmin, dmax, udtype) = match dtype {
        DType::I32 => (32u32, i32::MIN as i64, i32::MAX as i64, DType::U32),
        DType::U32 => (32, 0, u32::MAX as i64, DType::U32),
        DType::U8 => (8, 0, u8::MAX as i64, DType::U8),
        other => panic!("random::randint: dtype must be i32, u32 or u8, got {other}"),
    };
    let mask = (1u64 << nbits) - 1;
    let out_of_range = maxval > dmax;
    let lo = minval.clamp(dmin, dmax);
    let hi = maxval.clamp(dmin, dmax);
    // `maxval - minval` in the dtype (wrapping), reinterpreted as unsigned.
    let mut span = (hi.wrapping_sub(lo) as u64) & mask;
    if hi <= lo {
        span = 1;
    }
    if out_of_range && hi > lo {
        span = (span + 1) & mask;
    }
    // XLA: unsigned `x % 0 == x`.
    let rem = |x: u64, s: u64| if s == 0 { x } else { x % s };
    let mult = rem(1u64 << (nbits / 2), span);
    let mult = rem(mult.wrapping_mul(mult) & mask, span);

    let (k1, k2) = split2(key);
    let nbits_bits = |k: &Array| {
        let b = random_bits32(k, shape);
        lax::convert_element_type(&b, udtype)
    };
    let lower = nbits_bits(&k2);
    let offset = if span == 0 {
        // Every `% span` is the identity and the multiplier is 0.
        lower
    } else {
        let sp = fill(shape, span as f64, udtype);
        let lower = lax::rem(&lower, &sp);
        if mult == 0 {
            // `(higher % span) * 0 + lower % span`: the high word does not contribute.
            lower
        } else {
            let higher = lax::rem(&nbits_bits(&k1), &sp);
            let t = lax::add(&lax::mul(&higher, &fill(shape, mult as f64, udtype)), &lower);
            lax::rem(&t, &sp)
        }
    };
    lax::add(&fill(shape, lo as f64, dtype), &lax::convert_element_type(&offset, dtype))
}

/// Samples indices from categorical distributions given by unnormalized log-probabilities
/// along `axis` of `logits` (`jax.random.categorical`). Output: `I32` of `logits`' shape
/// without `axis`.
#[track_caller]
pub fn categorical(key: &Array, logits: &Array, axis: isize) -> Array {
    categorical_impl(key, logits, axis, None)
}

/// [`categorical`] with an explicit output `shape`, which must end with (a broadcast of)
/// the batch shape of `logits` (the shape without `axis`); leading extra dims draw
/// independent samples.
#[track_caller]
pub fn categorical_shape(key: &Array, logits: &Array, axis: isize, shape: &[usize]) -> Array {
    categorical_impl(key, logits, axis, Some(shape))
}

/// A random permutation of `0..n` as `I32` (`jax.random.permutation(key, n)`).
#[track_caller]
pub fn permutation(key: &Array, n: usize) -> Array {
    check_key("permutation", key);
    shuffle(key, &lax::iota(DType::I32, &[n], 0), 0)
}

/// `x` with its slices along `axis` randomly permuted (`jax.random.permutation(key, x,
/// axis)`, `independent=False`): for a 1-D `x` the elements are shuffled; otherwise one
/// permutation of `x.shape[axis]` indices is applied to whole slices.
#[track_caller]
pub fn permutation_array(key: &Array, x: &Array, axis: usize) -> Array {
    check_key("permutation", key);
    assert!(
        x.ndim() >= 1 && axis < x.ndim(),
        "random::permutation_array: axis {axis} out of range for {}",
        x.aval()
    );
    if x.ndim() == 1 {
        return shuffle(key, x, axis);
    }
    let ind = shuffle(key, &lax::iota(DType::I32, &[x.shape()[axis]], 0), 0);
    lax::gather(x, &ind, axis, 0)
}

/// `x` shuffled independently along `axis` for every position of the other axes
/// (`jax.random.permutation(key, x, axis, independent=True)`).
#[track_caller]
pub fn permutation_independent(key: &Array, x: &Array, axis: usize) -> Array {
    check_key("permutation", key);
    assert!(
        x.ndim() >= 1 && axis < x.ndim(),
        "random::permutation_independent: axis {axis} out of range for {}",
        x.aval()
    );
    shuffle(key, x, axis)
}

// ---- internals -----------------------------------------------------------------------------

#[track_caller]
fn check_key(op: &str, key: &Array) {
    assert!(
        key.dtype() == DType::U32 && key.shape() == [2],
        "random::{op}: a key is a u32 array of shape [2] (from random::key or random::split), \
         got {}",
        key.aval()
    );
}

#[track_caller]
fn check_float(op: &str, dtype: DType) {
    assert!(dtype.is_float(), "random::{op}: dtype must be a float type, got {dtype}");
}

/// A scalar of `dtype` broadcast to `shape`.
fn fill(shape: &[usize], value: f64, dtype: DType) -> Array {
    lax::broadcast_in_dim(&Array::scalar_of(value, dtype), shape, &[])
}

/// The two words of a key, as `u32` scalars.
fn key_words(key: &Array) -> (Array, Array) {
    let k0 = lax::reshape(&lax::slice(key, &[0], &[1], None), &[]);
    let k1 = lax::reshape(&lax::slice(key, &[1], &[2], None), &[]);
    (k0, k1)
}

/// Row `i` of a `[n, 2]` array of keys.
fn row(keys: &Array, i: usize) -> Array {
    lax::reshape(&lax::slice(keys, &[i, 0], &[i + 1, 2], None), &[2])
}

/// `[..., 2]` from two arrays of one shape.
fn stack_last(a: &Array, b: &Array) -> Array {
    let nd = a.ndim();
    lax::concatenate(&[lax::expand_dims(a, &[nd]), lax::expand_dims(b, &[nd])], nd)
}

/// The 64-bit counters `(hi, lo)` of the flat row-major indices of `shape`
/// (JAX's `iota_2x32_shape`).
fn counters(shape: &[usize]) -> (Array, Array) {
    let n: usize = shape.iter().product();
    if n as u64 <= 1u64 << 32 {
        let lo = lax::reshape(&lax::iota(DType::U32, &[n], 0), shape);
        (fill(shape, 0.0, DType::U32), lo)
    } else {
        let c = lax::iota(DType::I64, &[n], 0);
        let hi = lax::shift_right_logical(&c, &fill(&[n], 32.0, DType::I64));
        let lo = lax::and(&c, &fill(&[n], u32::MAX as f64, DType::I64));
        let word = |x: &Array| lax::reshape(&lax::convert_element_type(x, DType::U32), shape);
        (word(&hi), word(&lo))
    }
}

/// `threefry2x32(key, counter(n))` for every element `n` of `shape`.
fn hash(key: &Array, shape: &[usize]) -> (Array, Array) {
    let (k0, k1) = key_words(key);
    let (hi, lo) = counters(shape);
    let k0 = lax::broadcast_in_dim(&k0, shape, &[]);
    let k1 = lax::broadcast_in_dim(&k1, shape, &[]);
    lax::threefry2x32(&k0, &k1, &hi, &lo)
}

/// JAX's 32-bit `random_bits`: `y0 ^ y1` per element.
fn random_bits32(key: &Array, shape: &[usize]) -> Array {
    let (y0, y1) = hash(key, shape);
    lax::xor(&y0, &y1)
}

/// Uniform floats in `[0, 1)`: the top mantissa bits of the random bits (JAX's width
/// rules: 32 bits for `f32`, 64 for `f64`, 16 for `f16`, 8 for `bf16`).
fn unit_floats(key: &Array, shape: &[usize], dtype: DType) -> Array {
    match dtype {
        DType::F32 => {
            // bitcast((bits >> 9) | bits(1.0)) - 1.0
            let b = random_bits32(key, shape);
            let m = lax::shift_right_logical(&b, &fill(shape, 9.0, DType::U32));
            let fb = lax::or(&m, &fill(shape, f64::from(0x3F80_0000u32), DType::U32));
            lax::sub(&lax::bitcast_convert_type(&fb, DType::F32), &fill(shape, 1.0, DType::F32))
        }
        DType::F64 => {
            // 64 random bits are (y0 << 32) | y1 (no xor); (bits >> 12) | bits(1.0), built
            // in i64 (kiln has no u64).
            let (y0, y1) = hash(key, shape);
            let i64_of = |x: &Array| lax::convert_element_type(x, DType::I64);
            let top = lax::shift_left(&i64_of(&y0), &fill(shape, 20.0, DType::I64));
            let low = i64_of(&lax::shift_right_logical(&y1, &fill(shape, 12.0, DType::U32)));
            let one = fill(shape, 0x3FF0_0000_0000_0000_u64 as f64, DType::I64);
            let fb = lax::or(&lax::or(&top, &low), &one);
            lax::sub(&lax::bitcast_convert_type(&fb, DType::F64), &fill(shape, 1.0, DType::F64))
        }
        DType::F16 | DType::BF16 => {
            // f16: 16 random bits, mantissa = bits >> 6; bf16: 8 random bits, mantissa =
            // bits >> 1. kiln has no u16 to bitcast through, so build `mantissa * 2^-nmant`,
            // which is exactly `bitcast(mantissa | bits(1.0)) - 1`.
            let (width_mask, shift, nmant) =
                if dtype == DType::F16 { (0xFFFF, 6.0, 10) } else { (0xFF, 1.0, 7) };
            let b = random_bits32(key, shape);
            let b = lax::and(&b, &fill(shape, f64::from(width_mask), DType::U32));
            let m = lax::shift_right_logical(&b, &fill(shape, shift, DType::U32));
            let m = lax::convert_element_type(&m, dtype);
            lax::mul(&m, &fill(shape, (-(nmant as f64)).exp2(), dtype))
        }
        other => unreachable!("unit_floats: {other} is not a float type"),
    }
}

/// `f * span + lo` in `dtype` (`f` in `[0, 1)` with the dtype's mantissa resolution).
fn scale(f: &Array, span: f64, lo: f64, shape: &[usize], dtype: DType) -> Array {
    if span == 1.0 && lo == 0.0 {
        return f.clone();
    }
    if dtype != DType::F32 {
        let p = lax::mul(f, &fill(shape, span, dtype));
        return if lo == 0.0 { p } else { lax::add(&p, &fill(shape, lo, dtype)) };
    }
    let (span, lo) = (span as f32, lo as f32);
    if lo == 0.0 && span > 0.0 {
        // fma(f, span, 0) is the rounded product.
        return lax::mul(f, &fill(shape, f64::from(span), DType::F32));
    }
    if span == 1.0 && lo > 0.0 && f64::from(lo) < (-47f64).exp2() {
        // fma(f, 1, lo) == f for every nonzero f (>= 2^-23: lo is below half an ulp) and
        // lo for f == 0; the caller's max(lo, .) turns f == 0 into lo. (gumbel.)
        return f.clone();
    }
    fma_f32(f, span, lo, shape)
}

/// `fma(f, span, lo)` on `f32` with one rounding, like XLA:CPU's fused multiply-add: the
/// product is exact in `f64`, the sum is rounded to `f64`, and where the sum may be
/// inexact it is made round-to-odd (TwoSum) so that the final rounding to `f32` is correct.
fn fma_f32(f: &Array, span: f32, lo: f32, shape: &[usize]) -> Array {
    let f64_ = DType::F64;
    let p = lax::mul(&lax::convert_element_type(f, f64_), &fill(shape, f64::from(span), f64_));
    let c = fill(shape, f64::from(lo), f64_);
    let s = lax::add(&p, &c);
    if f64_sum_is_exact(span, lo) {
        return lax::convert_element_type(&s, DType::F32);
    }
    let zero = fill(shape, 0.0, f64_);
    let bb = lax::sub(&s, &p);
    let err = lax::add(&lax::sub(&p, &lax::sub(&s, &bb)), &lax::sub(&c, &bb));
    let sbits = lax::bitcast_convert_type(&s, DType::I64);
    let even =
        lax::eq(&lax::and(&sbits, &fill(shape, 1.0, DType::I64)), &fill(shape, 0.0, DType::I64));
    let inexact = lax::ne(&err, &zero);
    let fix = lax::and(&lax::and(&even, &inexact), &lax::is_finite(&s));
    // Step one ulp toward the exact value: away from zero when err has s's sign.
    let away = lax::eq(&lax::lt(&err, &zero), &lax::lt(&s, &zero));
    let step = lax::select(&away, &fill(shape, 1.0, DType::I64), &fill(shape, -1.0, DType::I64));
    let nudged = lax::bitcast_convert_type(&lax::add(&sbits, &step), f64_);
    lax::convert_element_type(&lax::select(&fix, &nudged, &s), DType::F32)
}

/// Whether `f * span + lo` is exact in `f64` for every `f = k * 2^-23`, `0 <= k < 2^23`
/// (all its bits fit in 53 consecutive positions).
fn f64_sum_is_exact(span: f32, lo: f32) -> bool {
    let (Some((s_lo, s_hi)), Some((c_lo, c_hi))) = (bit_range(span), bit_range(lo)) else {
        // A zero term: the sum is the exact (at most 47-bit) product, or `lo`.
        return true;
    };
    // The product has bits in [s_lo - 23, s_hi] (f < 1), the sum one more on top.
    let top = s_hi.max(c_hi) + 1;
    let bottom = (s_lo - 23).min(c_lo);
    top - bottom < 53
}

/// Positions `(lowest, highest)` of the set bits of `|x|`'s significand, as powers of two
/// (`None` for zero and non-finite values).
fn bit_range(x: f32) -> Option<(i32, i32)> {
    if x == 0.0 || !x.is_finite() {
        return None;
    }
    let b = x.abs().to_bits();
    let exp = (b >> 23) as i32;
    let frac = b & 0x007F_FFFF;
    let (m, e) = if exp == 0 { (frac, -149) } else { (frac | 0x0080_0000, exp - 150) };
    let low = e + m.trailing_zeros() as i32;
    let high = e + 31 - m.leading_zeros() as i32;
    Some((low, high))
}

/// `x` broadcast numpy-style (trailing alignment) to `shape`.
#[track_caller]
fn broadcast_to(op: &str, x: &Array, shape: &[usize]) -> Array {
    let (nd, n) = (x.ndim(), shape.len());
    let ok = nd <= n && x.shape().iter().zip(&shape[n - nd..]).all(|(&a, &b)| a == b || a == 1);
    assert!(ok, "random::{op}: cannot broadcast {} to shape {shape:?}", x.aval());
    let dims: Vec<usize> = (n - nd..n).collect();
    lax::broadcast_in_dim(x, shape, &dims)
}

#[track_caller]
fn categorical_impl(key: &Array, logits: &Array, axis: isize, shape: Option<&[usize]>) -> Array {
    check_key("categorical", key);
    let nd = logits.ndim();
    assert!(
        logits.dtype().is_float(),
        "random::categorical: logits must have a float dtype, got {}",
        logits.aval()
    );
    let Some(ax) = normalize_axis(axis, nd) else {
        panic!("random::categorical: axis {axis} out of range for logits {}", logits.aval())
    };
    let batch: Vec<usize> =
        logits.shape().iter().enumerate().filter(|&(i, _)| i != ax).map(|(_, &d)| d).collect();
    let shape = shape.map(<[usize]>::to_vec).unwrap_or_else(|| batch.clone());
    let compatible = shape.len() >= batch.len()
        && batch.iter().zip(&shape[shape.len() - batch.len()..]).all(|(&b, &s)| b == s || b == 1);
    assert!(
        compatible,
        "random::categorical: shape {shape:?} does not end with the logits' batch shape {batch:?}"
    );
    let prefix = shape.len() - batch.len();
    let mut gshape = shape.clone();
    gshape.insert(prefix + ax, logits.shape()[ax]);
    let g = gumbel(key, &gshape, logits.dtype());
    let dims: Vec<usize> = (prefix..prefix + nd).collect();
    let l = lax::broadcast_in_dim(logits, &gshape, &dims);
    lax::argmax(&lax::add(&g, &l), prefix + ax, DType::I32)
}

/// Number of sort rounds of JAX's `_shuffle`: `ceil(3 ln(max(1, n)) / ln(2^32 - 1))`.
fn shuffle_rounds(n: usize) -> usize {
    (3.0 * (n.max(1) as f64).ln() / f64::from(u32::MAX).ln()).ceil() as usize
}

/// JAX's `_shuffle`: rounds of stable sorts along `axis` by random `u32` keys, where the
/// number of rounds depends on `x.size`.
fn shuffle(key: &Array, x: &Array, axis: usize) -> Array {
    let mut key = key.clone();
    let mut x = x.clone();
    for _ in 0..shuffle_rounds(x.size()) {
        let (k, sub) = split2(&key);
        key = k;
        let sort_keys = random_bits32(&sub, x.shape());
        x = lax::sort(&[sort_keys, x], axis, 1).swap_remove(1);
    }
    x
}

// ---- host float helpers (static parameters) ------------------------------------------------

/// `v` rounded to `dtype` (to nearest), as `f64`.
fn round_to(v: f64, dtype: DType) -> f64 {
    match dtype {
        DType::F32 => f64::from(v as f32),
        DType::F16 => f16::from_f64(v).to_f64(),
        DType::BF16 => bf16::from_f64(v).to_f64(),
        _ => v,
    }
}

/// `a - b` rounded to `dtype` (halves: through `f32`, as the CPU kernels compute them).
fn sub_in(a: f64, b: f64, dtype: DType) -> f64 {
    match dtype {
        DType::F64 => a - b,
        _ => round_to(f64::from(a as f32 - b as f32), dtype),
    }
}

/// `a / b` rounded to `dtype`.
fn div_in(a: f64, b: f64, dtype: DType) -> f64 {
    match dtype {
        DType::F64 => a / b,
        _ => round_to(f64::from(a as f32 / b as f32), dtype),
    }
}

/// `erf(x)` rounded to `dtype`: XLA:CPU's `f32` polynomial (halves through `f32`), libm for
/// `f64`.
fn erf_in(x: f64, dtype: DType) -> f64 {
    match dtype {
        DType::F64 => libm::erf(x),
        _ => round_to(f64::from(xla_erf_f32(x as f32)), dtype),
    }
}

/// XLA:CPU's `f32` error function (a rational polynomial, with its fused multiply-adds).
fn xla_erf_f32(x: f32) -> f32 {
    let h = f32::from_bits;
    let x2 = x * x;
    let mut p = x2.mul_add(h(0x3970_2D51), h(0x3B5F_5DA2));
    for c in [0x3D50_B6EB, 0x3E3D_A740, 0x3F90_6EBA] {
        p = x2.mul_add(p, h(c));
    }
    let mut q = x2.mul_add(h(0xB3FD_3906), h(0x37C5_88DF));
    for c in [0x3A85_6D28, 0x3C66_87D4, 0x3DE3_4C21, 0x3EFE_B44A, 0x3F80_0000] {
        q = x2.mul_add(q, h(c));
    }
    if x.abs() >= h(0x4075_47CB) { 1f32.copysign(x) } else { (x * p) / q }
}

/// The smallest positive normal number of `dtype` (`finfo(dtype).tiny`).
fn tiny(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => f64::from(f32::MIN_POSITIVE),
        DType::F16 => f16::MIN_POSITIVE.to_f64(),
        DType::BF16 => bf16::MIN_POSITIVE.to_f64(),
        _ => f64::MIN_POSITIVE,
    }
}

/// The next value of `dtype` after `x` (a `dtype` value) toward `y` (`np.nextafter`).
fn next_after(x: f64, y: f64, dtype: DType) -> f64 {
    if x.is_nan() || y.is_nan() {
        return f64::NAN;
    }
    if x == y {
        return y;
    }
    // Sign-magnitude bit patterns: (bits of |x|, sign mask, from_bits).
    let (bits, sign, from): (u64, u64, fn(u64) -> f64) = match dtype {
        DType::F32 => {
            ((x as f32).to_bits().into(), 1 << 31, |b| f64::from(f32::from_bits(b as u32)))
        }
        DType::F16 => {
            (f16::from_f64(x).to_bits().into(), 1 << 15, |b| f16::from_bits(b as u16).to_f64())
        }
        DType::BF16 => {
            (bf16::from_f64(x).to_bits().into(), 1 << 15, |b| bf16::from_bits(b as u16).to_f64())
        }
        _ => (x.to_bits(), 1 << 63, f64::from_bits),
    };
    if x == 0.0 {
        // The smallest subnormal, with y's sign.
        return from(1 | if y < 0.0 { sign } else { 0 });
    }
    // Moving away from zero increases the magnitude bits.
    if (x < y) == (x > 0.0) { from(bits + 1) } else { from(bits - 1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_rounds_match_jax_thresholds() {
        assert_eq!(shuffle_rounds(0), 0);
        assert_eq!(shuffle_rounds(1), 0);
        assert_eq!(shuffle_rounds(2), 1);
        assert_eq!(shuffle_rounds(1625), 1);
        assert_eq!(shuffle_rounds(1626), 2);
        assert_eq!(shuffle_rounds(2_642_245), 2);
        assert_eq!(shuffle_rounds(2_642_246), 3);
    }

    #[test]
    fn next_after_per_dtype() {
        assert_eq!(next_after(-1.0, 0.0, DType::F32), f64::from(f32::from_bits(0xBF7F_FFFF)));
        assert_eq!(next_after(-1.0, 0.0, DType::F16), -1.0 + 2f64.powi(-11));
        assert_eq!(next_after(-1.0, 0.0, DType::BF16), -1.0 + 2f64.powi(-8));
        assert_eq!(next_after(-1.0, 0.0, DType::F64), -1.0 + 2f64.powi(-53));
        assert_eq!(next_after(2.0, f64::INFINITY, DType::F32), 2.0 + 2f64.powi(-22));
        assert_eq!(next_after(2.0, f64::NEG_INFINITY, DType::F32), 2.0 - 2f64.powi(-23));
        assert_eq!(next_after(f64::NEG_INFINITY, 0.0, DType::F32), -f64::from(f32::MAX));
        assert_eq!(next_after(0.0, -1.0, DType::F32), -f64::from(f32::from_bits(1)));
    }

    #[test]
    fn xla_erf_known_values() {
        // erf(-2/sqrt 2) and erf(3/sqrt 2), as XLA:CPU computes them in f32.
        assert!((xla_erf_f32(-std::f32::consts::SQRT_2) + 0.954_499_7).abs() < 1e-6);
        assert!((xla_erf_f32(3.0 / std::f32::consts::SQRT_2) - 0.997_300_2).abs() < 1e-6);
        assert_eq!(xla_erf_f32(10.0), 1.0);
        assert_eq!(xla_erf_f32(-10.0), -1.0);
    }

    #[test]
    fn f64_exactness_analysis() {
        assert!(f64_sum_is_exact(5.0, -2.0));
        assert!(f64_sum_is_exact(2.0, f32::from_bits(0xBF7F_FFFF)));
        assert!(!f64_sum_is_exact(1.0 + f32::EPSILON, -(2f32.powi(-60))));
        assert!(f64_sum_is_exact(0.0, 1e-30));
    }

    /// The round-to-odd path gives the correctly rounded fma where a plain f64 sum would
    /// double-round: f = 0.75, span = 1 + 2^-23, lo = -2^-60 puts the exact result just
    /// below an f32 midpoint.
    #[test]
    fn fma_f32_round_to_odd() {
        let span = 1.0 + f32::EPSILON;
        let lo = -(2f32.powi(-60));
        let fs = vec![0.75f32, 0.5, 0.0, 0.999_999_9, 2f32.powi(-23), 0.375, 0.625];
        let n = fs.len();
        let got = fma_f32(&Array::from_vec(fs.clone(), [n]), span, lo, &[n]).to_vec::<f32>();
        for (i, &f) in fs.iter().enumerate() {
            assert_eq!(got[i].to_bits(), f.mul_add(span, lo).to_bits(), "f = {f}");
        }
        // The exact path is a plain f64 sum rounded once.
        let got = fma_f32(&Array::from_vec(fs.clone(), [n]), 5.0, -2.0, &[n]).to_vec::<f32>();
        for (i, &f) in fs.iter().enumerate() {
            assert_eq!(got[i].to_bits(), f.mul_add(5.0, -2.0).to_bits(), "f = {f}");
        }
    }
}
