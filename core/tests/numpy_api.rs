//! Tests of the numpy-style API (`kiln::numpy`): broadcasting, weak typing and promotion,
//! math, reductions, linear algebra and einsum, shapes, indexing, joining, ML helpers and
//! error messages. Expected values come from direct loops over host vectors.

use kiln::numpy::{
    Idx, concatenate, einsum, one_hot, stack, try_concatenate, try_einsum, try_where, where_,
};
use kiln::{Array, DType, idx};
use std::panic::{AssertUnwindSafe, catch_unwind};

// ---- helpers -----------------------------------------------------------------------------

/// Deterministic pseudo-random f32 values in [-1, 1).
fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn rand(shape: &[usize], seed: u64) -> Array {
    Array::from_vec(rand_vec(shape.iter().product(), seed), shape.to_vec())
}

fn f(v: &[f32], shape: &[usize]) -> Array {
    Array::from_vec(v.to_vec(), shape.to_vec())
}

fn i(v: &[i32], shape: &[usize]) -> Array {
    Array::from_vec(v.to_vec(), shape.to_vec())
}

fn iota(shape: &[usize]) -> Array {
    let n: usize = shape.iter().product();
    Array::arange(0.0, n as f32, 1.0).reshape(shape)
}

#[track_caller]
fn assert_close(a: &Array, expected: &[f64], tol: f64) {
    let got = a.to_f64_vec();
    assert_eq!(got.len(), expected.len(), "length: got {got:?}, expected {expected:?}");
    for (k, (g, e)) in got.iter().zip(expected).enumerate() {
        let ok = (g.is_nan() && e.is_nan()) || g == e || (g - e).abs() <= tol * (1.0 + e.abs());
        assert!(ok, "element {k}: got {g}, expected {e} (all: {got:?})");
    }
}

#[track_caller]
fn assert_arr(a: &Array, shape: &[usize], expected: &[f64]) {
    assert_eq!(a.shape(), shape, "shape");
    assert_close(a, expected, 1e-5);
}

/// Row-major strides.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * shape[k + 1];
    }
    s
}

/// Multi-index of flat position `p` in `shape`.
fn unravel(mut p: usize, shape: &[usize]) -> Vec<usize> {
    let mut out = vec![0; shape.len()];
    for k in (0..shape.len()).rev() {
        out[k] = p % shape[k];
        p /= shape[k];
    }
    out
}

/// The panic message of `f`.
fn panic_message(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    if let Some(s) = err.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = err.downcast_ref::<&str>() {
        s.to_string()
    } else {
        String::from("<non-string panic>")
    }
}

// ---- broadcasting and promotion ----------------------------------------------------------

#[test]
fn broadcasting_shapes_and_values() {
    let x = iota(&[2, 3]);
    let b = f(&[10.0, 20.0, 30.0], &[3]);
    assert_arr(&(&x + &b), &[2, 3], &[10.0, 21.0, 32.0, 13.0, 24.0, 35.0]);
    let col = f(&[1.0, 2.0], &[2, 1]);
    let row = f(&[1.0, 10.0, 100.0], &[1, 3]);
    assert_arr(&(&col * &row), &[2, 3], &[1.0, 10.0, 100.0, 2.0, 20.0, 200.0]);
    let a = iota(&[4, 1, 3]);
    let c = f(&[0.5, 1.5], &[2, 1]);
    let d = &a - &c;
    assert_eq!(d.shape(), &[4, 2, 3]);
    let av = a.to_f64_vec();
    let dv = d.to_f64_vec();
    assert_eq!(dv.len(), 24);
    for (p, &got) in dv.iter().enumerate() {
        let m = unravel(p, &[4, 2, 3]);
        assert_eq!(got, av[m[0] * 3 + m[2]] - [0.5, 1.5][m[1]]);
    }
    let s = Array::scalar(2.0f32);
    assert_arr(&(&s * &b), &[3], &[20.0, 40.0, 60.0]);
    // Owned and borrowed operands in every combination.
    let y = x.clone() + b.clone();
    let z = &x + b.clone();
    let w = x.clone() + &b;
    assert!(y.allclose(&z, 0.0, 0.0) && z.allclose(&w, 0.0, 0.0));
}

#[test]
fn weak_typing_of_rust_scalars() {
    let x = f(&[1.0, 2.0], &[2]);
    assert_eq!((&x * 2.0).dtype(), DType::F32);
    assert_eq!((&x + 1).dtype(), DType::F32);
    assert_eq!((&x * 2.0f64).dtype(), DType::F32);
    let y: Array = 2.0 * &x;
    assert_arr(&y, &[2], &[2.0, 4.0]);
    let y: Array = 1.0 - &x;
    assert_arr(&y, &[2], &[0.0, -1.0]);
    let y: Array = 6.0f32 / &x;
    assert_arr(&y, &[2], &[6.0, 3.0]);
    let k = i(&[1, 2, 3], &[3]);
    assert_eq!((&k + 1).dtype(), DType::I32);
    assert_eq!((&k * 2i64).dtype(), DType::I32);
    let y: Array = 10 - &k;
    assert_eq!(y.to_vec::<i32>(), vec![9, 8, 7]);
    // A float scalar with an integer array gives the default float.
    let h = &k * 0.5;
    assert_eq!(h.dtype(), DType::F32);
    assert_arr(&h, &[3], &[0.5, 1.0, 1.5]);
    let u = Array::from_vec(vec![1u8, 2], [2]);
    assert_eq!((&u + 1).dtype(), DType::U8);
    let bools = Array::from_vec(vec![true, false], [2]);
    assert_eq!((&bools + 1).dtype(), DType::I32);
    assert_eq!((&bools * 1.5).dtype(), DType::F32);
    let half = Array::from_f64_vec(&[1.0, 2.0], [2], DType::F16);
    assert_eq!((&half + 2.0).dtype(), DType::F16);
    let dbl = Array::from_f64_vec(&[1.0, 2.0], [2], DType::F64);
    assert_eq!((&dbl * 0.1f32).dtype(), DType::F64);
    let big = Array::from_vec(vec![1i64, 2], [2]);
    assert_eq!((&big + 1).dtype(), DType::I64);
    // Assignment operators.
    let mut acc = x.clone();
    acc += 1.0;
    acc *= &x;
    assert_arr(&acc, &[2], &[2.0, 6.0]);
}

#[test]
fn promotion_rules() {
    let k = i(&[1, 2], &[2]);
    let x = f(&[0.5, 0.25], &[2]);
    assert_eq!((&k + &x).dtype(), DType::F32);
    assert_arr(&(&k + &x), &[2], &[1.5, 2.25]);
    let h = Array::from_f64_vec(&[1.0, 2.0], [2], DType::F16);
    let bh = Array::from_f64_vec(&[1.0, 2.0], [2], DType::BF16);
    assert_eq!((&h + &bh).dtype(), DType::F32);
    let b = Array::from_vec(vec![true, false], [2]);
    let sum = &b + &k;
    assert_eq!(sum.dtype(), DType::I32);
    assert_eq!(sum.to_vec::<i32>(), vec![2, 2]);
    let u = Array::from_vec(vec![1u8, 2], [2]);
    assert_eq!((&u + &k).dtype(), DType::I32);
    let u32s = Array::from_vec(vec![1u32, 2], [2]);
    assert_eq!((&u32s + &k).dtype(), DType::I64);
    let d = Array::from_f64_vec(&[1.0, 2.0], [2], DType::F64);
    assert_eq!((&x * &d).dtype(), DType::F64);
    // Comparisons give bool whatever the operand dtypes.
    assert_eq!(k.lt(&x).dtype(), DType::Bool);
}

// ---- binary operations -------------------------------------------------------------------

#[test]
fn arithmetic_division_and_remainder() {
    let a = i(&[7, -7, 7, -7], &[4]);
    let b = i(&[2, 2, -2, -2], &[4]);
    let q = &a / &b;
    assert_eq!(q.dtype(), DType::F32);
    assert_arr(&q, &[4], &[3.5, -3.5, -3.5, 3.5]);
    assert_eq!((&a % &b).to_vec::<i32>(), vec![1, 1, -1, -1]);
    assert_eq!(a.fmod(&b).to_vec::<i32>(), vec![1, -1, 1, -1]);
    assert_eq!(a.floor_divide(&b).to_vec::<i32>(), vec![3, -4, -4, 3]);
    let x = f(&[7.5, -7.5], &[2]);
    assert_arr(&(&x % 2.0), &[2], &[1.5, 0.5]);
    assert_arr(&x.floor_divide(2.0), &[2], &[3.0, -4.0]);
    assert_arr(&(-&x), &[2], &[-7.5, 7.5]);
    assert_arr(&x.neg(), &[2], &[-7.5, 7.5]);
    let y: Array = 1.0 % &x;
    assert_arr(&y, &[2], &[1.0, -6.5]);
}

#[test]
fn powers_extrema_and_clip() {
    let x = f(&[-2.0, 0.5, 3.0], &[3]);
    assert_arr(&x.pow(2), &[3], &[4.0, 0.25, 9.0]);
    assert_arr(&x.pow(-1), &[3], &[-0.5, 2.0, 1.0 / 3.0]);
    assert_arr(&x.abs().pow(0.5), &[3], &[2f64.sqrt(), 0.5f64.sqrt(), 3f64.sqrt()]);
    assert_arr(&x.abs().pow(f(&[1.0, 2.0, 3.0], &[3])), &[3], &[2.0, 0.25, 27.0]);
    let k = i(&[2, -3, 5, 1], &[4]);
    assert_eq!(k.pow(3).to_vec::<i32>(), vec![8, -27, 125, 1]);
    assert_eq!(k.pow(i(&[0, 3, 2, 7], &[4])).to_vec::<i32>(), vec![1, -27, 25, 1]);
    assert!(k.try_pow(-1).is_err());
    assert_arr(&x.maximum(0.0), &[3], &[0.0, 0.5, 3.0]);
    assert_arr(&x.minimum(f(&[0.0], &[1])), &[3], &[-2.0, 0.0, 0.0]);
    assert_arr(&x.clip(-1.0, 1.0), &[3], &[-1.0, 0.5, 1.0]);
    assert_arr(&x.relu(), &[3], &[0.0, 0.5, 3.0]);
    let t = f(&[1.0, -1.0], &[2]).atan2(f(&[1.0, 1.0], &[2]));
    assert_arr(&t, &[2], &[std::f64::consts::FRAC_PI_4, -std::f64::consts::FRAC_PI_4]);
}

/// `relu` has `jax.nn.relu`'s derivative (0 at 0, where `maximum` splits 1/2 and 1/2),
/// keeps NaN, works on integers, and its compiled gradient matches the eager one.
#[test]
fn relu_derivative_is_zero_at_zero_as_in_jax() {
    let x = Array::from_vec(vec![-1.5f32, 0.0, 2.0, f32::NAN], [4]);
    let y = x.relu().to_vec::<f32>();
    assert_eq!(&y[..3], &[0.0, 0.0, 2.0]);
    assert!(y[3].is_nan());
    let g = kiln::grad(|x: &Array| (x.relu() * 3.0f32).sum());
    let x3 = Array::from_vec(vec![-1.5f32, 0.0, 2.0], [3]);
    assert_eq!(g(&x3).to_vec::<f32>(), vec![0.0, 0.0, 3.0]);
    let gm = kiln::grad(|x: &Array| (x.maximum(0.0) * 3.0f32).sum());
    assert_eq!(gm(&x3).to_vec::<f32>(), vec![0.0, 1.5, 3.0]);
    let jg = kiln::jit::Jit::new(move |x: &Array| g(x));
    assert_eq!(jg.call(&x3).to_vec::<f32>(), vec![0.0, 0.0, 3.0]);
    assert_eq!(i(&[-2, 0, 7], &[3]).relu().to_vec::<i32>(), vec![0, 0, 7]);
}

#[test]
fn comparisons_logical_and_bitwise() {
    let x = f(&[1.0, 2.0, 3.0], &[3]);
    let col = f(&[2.0, 0.0], &[2, 1]);
    let lt = x.lt(&col);
    assert_eq!(lt.shape(), &[2, 3]);
    assert_eq!(lt.to_vec::<bool>(), vec![true, false, false, false, false, false]);
    assert_eq!(x.eq(2.0).to_vec::<bool>(), vec![false, true, false]);
    assert_eq!(x.ne(2).to_vec::<bool>(), vec![true, false, true]);
    assert_eq!(x.le(2.0).to_vec::<bool>(), vec![true, true, false]);
    assert_eq!(x.gt(2.0).to_vec::<bool>(), vec![false, false, true]);
    assert_eq!(x.ge(2.0).to_vec::<bool>(), vec![false, true, true]);
    let p = Array::from_vec(vec![true, true, false, false], [4]);
    let q = Array::from_vec(vec![true, false, true, false], [4]);
    assert_eq!(p.logical_and(&q).to_vec::<bool>(), vec![true, false, false, false]);
    assert_eq!(p.logical_or(&q).to_vec::<bool>(), vec![true, true, true, false]);
    assert_eq!(p.logical_xor(&q).to_vec::<bool>(), vec![false, true, true, false]);
    assert_eq!(p.logical_not().to_vec::<bool>(), vec![false, false, true, true]);
    assert_eq!((!&p).to_vec::<bool>(), vec![false, false, true, true]);
    assert_eq!((&p & &q).to_vec::<bool>(), vec![true, false, false, false]);
    assert_eq!(f(&[0.0, 2.0], &[2]).logical_or(0).to_vec::<bool>(), vec![false, true]);
    let a = i(&[0b1100, 0b1010, -8], &[3]);
    assert_eq!((&a & 0b0110).to_vec::<i32>(), vec![0b0100, 0b0010, 0]);
    assert_eq!((&a | 1).to_vec::<i32>(), vec![0b1101, 0b1011, -7]);
    assert_eq!((&a ^ &i(&[0b1111], &[1])).to_vec::<i32>(), vec![0b0011, 0b0101, -8 ^ 0b1111]);
    assert_eq!((!&a).to_vec::<i32>(), vec![!0b1100, !0b1010, 7]);
    assert_eq!((&a << 2).to_vec::<i32>(), vec![0b110000, 0b101000, -32]);
    assert_eq!((&a >> 1).to_vec::<i32>(), vec![0b110, 0b101, -4]);
    let u = Array::from_vec(vec![0x8000_0000u32], [1]);
    assert_eq!((&u >> 31).to_vec::<u32>(), vec![1]);
    assert!(x.try_bitwise_and(1).is_err());
}

#[test]
fn where_broadcasts_and_promotes() {
    let x = f(&[-1.0, 2.0, -3.0], &[3]);
    assert_arr(&where_(x.gt(0.0), &x, 0.0), &[3], &[0.0, 2.0, 0.0]);
    let cond = Array::from_vec(vec![true, false], [2, 1]);
    let r = where_(&cond, &x, f(&[10.0], &[1]));
    assert_arr(&r, &[2, 3], &[-1.0, 2.0, -3.0, 10.0, 10.0, 10.0]);
    let k = where_(&cond, 1, 2.5);
    assert_eq!(k.dtype(), DType::F32);
    assert_arr(&k, &[2, 1], &[1.0, 2.5]);
    let ints = where_(i(&[0, 3], &[2]), i(&[1, 1], &[2]), 7);
    assert_eq!(ints.to_vec::<i32>(), vec![7, 1]);
    assert!(try_where(&cond, &x, f(&[1.0, 2.0], &[2])).is_err());
}

// ---- math --------------------------------------------------------------------------------

#[test]
fn elementwise_math() {
    let v = [0.1f32, 0.5, 1.0, 2.5];
    let x = f(&v, &[4]);
    let e = |g: fn(f64) -> f64| v.iter().map(|&a| g(a as f64)).collect::<Vec<_>>();
    assert_close(&x.exp(), &e(f64::exp), 1e-6);
    assert_close(&x.log(), &e(f64::ln), 1e-6);
    assert_close(&x.log1p(), &e(f64::ln_1p), 1e-6);
    assert_close(&x.expm1(), &e(f64::exp_m1), 1e-6);
    assert_close(&x.sin(), &e(f64::sin), 1e-6);
    assert_close(&x.cos(), &e(f64::cos), 1e-6);
    assert_close(&x.tan(), &e(f64::tan), 1e-5);
    assert_close(&x.tanh(), &e(f64::tanh), 1e-6);
    assert_close(&x.sqrt(), &e(f64::sqrt), 1e-6);
    assert_close(&x.rsqrt(), &e(|a| 1.0 / a.sqrt()), 1e-6);
    assert_close(&x.square(), &e(|a| a * a), 1e-6);
    assert_close(&x.recip(), &e(|a| 1.0 / a), 1e-6);
    assert_close(&x.sigmoid(), &e(|a| 1.0 / (1.0 + (-a).exp())), 1e-6);
    assert_close(&x.exp2(), &e(f64::exp2), 1e-6);
    assert_close(&x.log2(), &e(f64::log2), 1e-6);
    assert_close(&x.log10(), &e(f64::log10), 1e-6);
    assert_close(&f(&[0.5], &[1]).erf(), &[0.5204998778130465], 1e-6);
    assert_close(&f(&[0.520_499_9], &[1]).erf_inv(), &[0.5], 1e-5);
    let s = f(&[-3.0, 0.0, 2.0], &[3]);
    assert_arr(&s.sign(), &[3], &[-1.0, 0.0, 1.0]);
    assert_arr(&s.abs(), &[3], &[3.0, 0.0, 2.0]);
    // Integers are converted to f32 by float-only functions.
    let k = i(&[0, 1], &[2]);
    assert_eq!(k.exp().dtype(), DType::F32);
    assert_close(&k.exp(), &[1.0, std::f64::consts::E], 1e-6);
    // softplus is stable for large inputs.
    let big = f(&[-100.0, 0.0, 100.0], &[3]);
    assert_close(&big.softplus(), &[(-100f64).exp(), 2f64.ln(), 100.0], 1e-6);
}

#[test]
fn rounding_and_predicates() {
    let x = f(&[0.5, 1.5, 2.5, -0.5, -1.5, -1.7, 1.2], &[7]);
    assert_arr(&x.round(), &[7], &[0.0, 2.0, 2.0, 0.0, -2.0, -2.0, 1.0]);
    assert_arr(&x.floor(), &[7], &[0.0, 1.0, 2.0, -1.0, -2.0, -2.0, 1.0]);
    assert_arr(&x.ceil(), &[7], &[1.0, 2.0, 3.0, -0.0, -1.0, -1.0, 2.0]);
    assert_arr(&x.trunc(), &[7], &[0.0, 1.0, 2.0, -0.0, -1.0, -1.0, 1.0]);
    let k = i(&[3], &[1]);
    assert_eq!(k.round().to_vec::<i32>(), vec![3]);
    let special = f(&[f32::NAN, f32::INFINITY, -f32::INFINITY, 1.0], &[4]);
    assert_eq!(special.is_nan().to_vec::<bool>(), vec![true, false, false, false]);
    assert_eq!(special.is_finite().to_vec::<bool>(), vec![false, false, false, true]);
    assert_eq!(special.is_inf().to_vec::<bool>(), vec![false, true, true, false]);
    assert_eq!(k.is_finite().to_vec::<bool>(), vec![true]);
    let c = f(&[1.7, -1.7, 0.0], &[3]).astype(DType::I32);
    assert_eq!(c.to_vec::<i32>(), vec![1, -1, 0]);
    let b = f(&[1.7, 0.0, f32::NAN], &[3]).astype(DType::Bool);
    assert_eq!(b.to_vec::<bool>(), vec![true, false, true]);
    assert_eq!(k.astype(DType::F64).dtype(), DType::F64);
}

// ---- reductions --------------------------------------------------------------------------

/// Reduces a `[2, 3, 4]` array over `axes` with `g` on the host.
fn host_reduce(
    x: &[f64],
    shape: &[usize],
    axes: &[usize],
    init: f64,
    g: fn(f64, f64) -> f64,
) -> Vec<f64> {
    let out_shape: Vec<usize> =
        (0..shape.len()).map(|d| if axes.contains(&d) { 1 } else { shape[d] }).collect();
    let n: usize = out_shape.iter().product();
    let mut out = vec![init; n];
    let os = strides(&out_shape);
    for (p, &v) in x.iter().enumerate() {
        let m = unravel(p, shape);
        let q: usize =
            (0..shape.len()).map(|d| if axes.contains(&d) { 0 } else { m[d] * os[d] }).sum();
        out[q] = g(out[q], v);
    }
    out
}

#[test]
fn reductions_over_every_axis_combination() {
    let shape = [2usize, 3, 4];
    let x = rand(&shape, 7);
    let xv = x.to_f64_vec();
    let combos: Vec<Vec<isize>> =
        vec![vec![0], vec![1], vec![2], vec![-1], vec![-2], vec![0, 2], vec![-1, 0], vec![0, 1, 2]];
    for axes in &combos {
        let norm: Vec<usize> =
            axes.iter().map(|&a| if a < 0 { (a + 3) as usize } else { a as usize }).collect();
        let kept: Vec<usize> =
            (0..3).map(|d| if norm.contains(&d) { 1 } else { shape[d] }).collect();
        let dropped: Vec<usize> = (0..3).filter(|d| !norm.contains(d)).map(|d| shape[d]).collect();
        let count: f64 = norm.iter().map(|&d| shape[d] as f64).product();
        let sum = host_reduce(&xv, &shape, &norm, 0.0, |a, b| a + b);
        let prod = host_reduce(&xv, &shape, &norm, 1.0, |a, b| a * b);
        let max = host_reduce(&xv, &shape, &norm, f64::NEG_INFINITY, f64::max);
        let min = host_reduce(&xv, &shape, &norm, f64::INFINITY, f64::min);
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let sq = host_reduce(
            &xv.iter().map(|v| v * v).collect::<Vec<_>>(),
            &shape,
            &norm,
            0.0,
            |a, b| a + b,
        );
        let var: Vec<f64> = sq.iter().zip(&mean).map(|(s, m)| s / count - m * m).collect();
        let std: Vec<f64> = var.iter().map(|v| v.sqrt()).collect();
        let expsum = host_reduce(
            &xv.iter().map(|v| v.exp()).collect::<Vec<_>>(),
            &shape,
            &norm,
            0.0,
            |a, b| a + b,
        );
        let lse: Vec<f64> = expsum.iter().map(|s| s.ln()).collect();
        for keepdims in [false, true] {
            let want_shape = if keepdims { kept.clone() } else { dropped.clone() };
            let cases: Vec<(&str, Array, &Vec<f64>)> = vec![
                ("sum", x.sum_axes(axes, keepdims), &sum),
                ("prod", x.prod_axes(axes, keepdims), &prod),
                ("max", x.max_axes(axes, keepdims), &max),
                ("min", x.min_axes(axes, keepdims), &min),
                ("mean", x.mean_axes(axes, keepdims), &mean),
                ("var", x.var_axes(axes, keepdims), &var),
                ("std", x.std_axes(axes, keepdims), &std),
                ("logsumexp", x.logsumexp_axes(axes, keepdims), &lse),
            ];
            for (name, got, want) in cases {
                assert_eq!(
                    got.shape(),
                    want_shape.as_slice(),
                    "{name} over {axes:?} keepdims={keepdims}"
                );
                assert_eq!(got.dtype(), DType::F32, "{name}");
                assert_close(&got, want, 1e-4);
            }
        }
    }
    // Whole-array forms are 0-d.
    assert_eq!(x.sum().shape(), &[] as &[usize]);
    assert_close(&x.sum(), &[xv.iter().sum()], 1e-5);
    assert_close(&x.mean(), &[xv.iter().sum::<f64>() / 24.0], 1e-5);
    assert_close(&x.max(), &[xv.iter().copied().fold(f64::NEG_INFINITY, f64::max)], 0.0);
    assert_close(&x.min(), &[xv.iter().copied().fold(f64::INFINITY, f64::min)], 0.0);
    assert_close(&x.logsumexp(), &[xv.iter().map(|v| v.exp()).sum::<f64>().ln()], 1e-5);
    assert!(x.var().item::<f32>() > 0.0);
    assert_close(&x.std().square(), &[x.var().item::<f32>() as f64], 1e-5);
    // An empty axis list reduces nothing.
    let none: &[isize] = &[];
    assert!(x.sum_axes(none, false).allclose(&x, 0.0, 0.0));
}

#[test]
fn reduction_dtypes_and_logical_reductions() {
    let b = Array::from_vec(vec![true, false, true, true], [2, 2]);
    assert_eq!(b.sum().dtype(), DType::I32);
    assert_eq!(b.sum().item::<i32>(), 3);
    assert_eq!(b.any_axes([1], false).to_vec::<bool>(), vec![true, true]);
    assert_eq!(b.all_axes([-1], false).to_vec::<bool>(), vec![false, true]);
    assert_eq!(b.all_axes([0], true).shape(), &[1, 2]);
    assert!(b.any().item::<bool>());
    assert!(!b.all().item::<bool>());
    assert!(b.max().item::<bool>());
    let k = i(&[1, 2, 3, 4], &[2, 2]);
    assert_eq!(k.sum_axes([0], false).to_vec::<i32>(), vec![4, 6]);
    assert_eq!(k.prod().item::<i32>(), 24);
    assert_eq!(k.mean().dtype(), DType::F32);
    assert_close(&k.mean_axes([1], false), &[1.5, 3.5], 0.0);
    let u = Array::from_vec(vec![200u8, 100], [2]);
    assert_eq!(u.sum().dtype(), DType::U32);
    assert_eq!(u.sum().item::<u32>(), 300);
    let h = Array::from_f64_vec(&[1.0, 2.0, 3.0], [3], DType::F16);
    assert_eq!(h.sum().dtype(), DType::F16);
    assert_eq!(h.mean().dtype(), DType::F16);
    assert_close(&h.mean(), &[2.0], 0.0);
}

#[test]
fn arg_reductions_and_cumsum() {
    let x = f(&[1.0, 5.0, 5.0, 7.0, 0.0, -1.0], &[2, 3]);
    assert_eq!(x.argmax(1).to_vec::<i32>(), vec![1, 0]);
    assert_eq!(x.argmax(-1).dtype(), DType::I32);
    assert_eq!(x.argmin(-1).to_vec::<i32>(), vec![0, 2]);
    assert_eq!(x.argmax(0).to_vec::<i32>(), vec![1, 0, 0]);
    assert!(x.try_argmax(2).is_err());
    assert_arr(&x.cumsum(1), &[2, 3], &[1.0, 6.0, 11.0, 7.0, 7.0, 6.0]);
    assert_arr(&x.cumsum(-2), &[2, 3], &[1.0, 5.0, 5.0, 8.0, 5.0, 4.0]);
    let b = Array::from_vec(vec![true, true, false], [3]);
    assert_eq!(b.cumsum(0).to_vec::<i32>(), vec![1, 2, 2]);
}

#[test]
fn reduction_axis_errors() {
    let x = Array::zeros([2, 3]);
    assert!(x.try_sum_axes([2], false).is_err());
    assert!(x.try_sum_axes([-3], false).is_err());
    assert!(x.try_mean_axes([0, -2], false).is_err());
    let msg = panic_message(|| {
        x.max_axes([5], false);
    });
    assert!(msg.contains("max") && msg.contains("[2, 3]"), "{msg}");
    let empty = Array::zeros([0, 3]);
    assert!(empty.try_max_axes([0], false).is_err());
    assert_eq!(empty.sum_axes([0], false).to_vec::<f32>(), vec![0.0; 3]);
}

// ---- linear algebra ----------------------------------------------------------------------

/// Reference batched matmul over explicit (already broadcast) operands.
fn host_matmul(a: &[f64], b: &[f64], batch: usize, m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; batch * m * n];
    for bi in 0..batch {
        for r in 0..m {
            for c in 0..n {
                out[(bi * m + r) * n + c] =
                    (0..k).map(|j| a[(bi * m + r) * k + j] * b[(bi * k + j) * n + c]).sum();
            }
        }
    }
    out
}

#[test]
fn matmul_shapes_and_values() {
    let v = rand(&[3], 1);
    let w = rand(&[3], 2);
    let m = rand(&[2, 3], 3);
    let n = rand(&[3, 4], 4);
    let (vv, wv, mv, nv) = (v.to_f64_vec(), w.to_f64_vec(), m.to_f64_vec(), n.to_f64_vec());
    // 1-D x 1-D
    let d = v.matmul(&w);
    assert_eq!(d.shape(), &[] as &[usize]);
    assert_close(&d, &[vv.iter().zip(&wv).map(|(a, b)| a * b).sum()], 1e-5);
    // 2-D x 1-D and 1-D x 2-D
    assert_arr(&m.matmul(&v), &[2], &host_matmul(&mv, &vv, 1, 2, 3, 1));
    assert_arr(&v.matmul(&n), &[4], &host_matmul(&vv, &nv, 1, 1, 3, 4));
    // 2-D x 2-D
    assert_arr(&m.matmul(&n), &[2, 4], &host_matmul(&mv, &nv, 1, 2, 3, 4));
    // batched x unbatched, and the other way round
    let bm = rand(&[5, 2, 3], 5);
    let bmv = bm.to_f64_vec();
    let r = bm.matmul(&n);
    let want: Vec<f64> =
        (0..5).flat_map(|b| host_matmul(&bmv[b * 6..b * 6 + 6], &nv, 1, 2, 3, 4)).collect();
    assert_arr(&r, &[5, 2, 4], &want);
    let bn = rand(&[5, 3, 4], 6);
    let bnv = bn.to_f64_vec();
    let r = m.matmul(&bn);
    let want: Vec<f64> =
        (0..5).flat_map(|b| host_matmul(&mv, &bnv[b * 12..b * 12 + 12], 1, 2, 3, 4)).collect();
    assert_arr(&r, &[5, 2, 4], &want);
    // both batched with broadcasting: [5,1,2,3] @ [4,3,2] -> [5,4,2,2]
    let a = rand(&[5, 1, 2, 3], 8);
    let b = rand(&[4, 3, 2], 9);
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    let r = a.matmul(&b);
    assert_eq!(r.shape(), &[5, 4, 2, 2]);
    let mut want = vec![];
    for p in 0..5 {
        for q in 0..4 {
            want.extend(host_matmul(&av[p * 6..p * 6 + 6], &bv[q * 6..q * 6 + 6], 1, 2, 3, 2));
        }
    }
    assert_close(&r, &want, 1e-5);
    // matching batch dims: [2,3,2,3] @ [2,3,3,1]
    let a = rand(&[2, 3, 2, 3], 10);
    let b = rand(&[2, 3, 3, 1], 11);
    let want = host_matmul(&a.to_f64_vec(), &b.to_f64_vec(), 6, 2, 3, 1);
    assert_arr(&a.matmul(&b), &[2, 3, 2, 1], &want);
    // batched matrix x vector and vector x batched matrix
    assert_eq!(bm.matmul(&v).shape(), &[5, 2]);
    assert_eq!(v.matmul(&bn).shape(), &[5, 4]);
    // ints and promotion
    let ki = i(&[1, 2, 3, 4], &[2, 2]);
    assert_eq!(ki.matmul(&ki).to_vec::<i32>(), vec![7, 10, 15, 22]);
    assert_eq!(ki.matmul(&Array::eye(2)).dtype(), DType::F32);
}

#[test]
fn dot_outer_tensordot() {
    let a = rand(&[2, 3], 1);
    let b = rand(&[4, 3, 5], 2);
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    let d = a.dot(&b);
    assert_eq!(d.shape(), &[2, 4, 5]);
    let dv = d.to_f64_vec();
    assert_eq!(dv.len(), 40);
    for (p, &got) in dv.iter().enumerate() {
        let m = unravel(p, &[2, 4, 5]);
        let want: f64 = (0..3).map(|k| av[m[0] * 3 + k] * bv[(m[1] * 3 + k) * 5 + m[2]]).sum();
        assert!((got - want).abs() < 1e-5);
    }
    assert_arr(
        &a.dot(&Array::scalar(2.0f32)),
        &[2, 3],
        &av.iter().map(|v| v * 2.0).collect::<Vec<_>>(),
    );
    let o = f(&[1.0, 2.0], &[2]).outer(&f(&[1.0, 10.0, 100.0], &[3]));
    assert_arr(&o, &[2, 3], &[1.0, 10.0, 100.0, 2.0, 20.0, 200.0]);
    let x = rand(&[2, 3, 4], 3);
    let y = rand(&[3, 4, 5], 4);
    let (xv, yv) = (x.to_f64_vec(), y.to_f64_vec());
    let t = x.tensordot(&y, 2);
    assert_eq!(t.shape(), &[2, 5]);
    let mut want = vec![0.0; 10];
    for p in 0..2 {
        for q in 0..5 {
            for j in 0..3 {
                for k in 0..4 {
                    want[p * 5 + q] += xv[(p * 3 + j) * 4 + k] * yv[(j * 4 + k) * 5 + q];
                }
            }
        }
    }
    assert_close(&t, &want, 1e-5);
    let t2 = x.tensordot(&y, ([1, 2], [0, 1]));
    assert_close(&t2, &want, 1e-5);
    let t3 = x.tensordot(&y, ([-2], [0]));
    assert_eq!(t3.shape(), &[2, 4, 4, 5]);
    assert!(x.try_tensordot(&y, ([0], [0])).is_err());
    let sq = iota(&[3, 3]);
    assert_arr(&sq.diagonal(), &[3], &[0.0, 4.0, 8.0]);
    assert_arr(&sq.trace(), &[], &[12.0]);
    assert_arr(&iota(&[2, 3]).diagonal(), &[2], &[0.0, 4.0]);
}

#[test]
fn einsum_against_loops() {
    let a = rand(&[3, 4], 1);
    let b = rand(&[4, 5], 2);
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    // matrix multiply (explicit and implicit output)
    let want = host_matmul(&av, &bv, 1, 3, 4, 5);
    assert_arr(&einsum("ij,jk->ik", &[&a, &b]), &[3, 5], &want);
    assert_arr(&einsum("ij,jk", &[&a, &b]), &[3, 5], &want);
    assert_arr(&einsum(" ij , jk -> ik ", &[a.clone(), b.clone()]), &[3, 5], &want);
    // batch matmul
    let x = rand(&[2, 3, 4], 3);
    let y = rand(&[2, 4, 5], 4);
    let want = host_matmul(&x.to_f64_vec(), &y.to_f64_vec(), 2, 3, 4, 5);
    assert_arr(&einsum("bij,bjk->bik", &[&x, &y]), &[2, 3, 5], &want);
    // batch dim in a different position on each side, and an output permutation
    let yt = y.transpose([1, 0, 2]); // [4, 2, 5]
    let r = einsum("bij,jbk->kbi", &[&x, &yt]);
    assert_eq!(r.shape(), &[5, 2, 3]);
    let rv = r.to_f64_vec();
    assert_eq!(rv.len(), 30);
    for (p, &got) in rv.iter().enumerate() {
        let m = unravel(p, &[5, 2, 3]);
        let (k, b_, i_) = (m[0], m[1], m[2]);
        assert!((got - want[(b_ * 3 + i_) * 5 + k]).abs() < 1e-5);
    }
    // trace, diagonal, transpose, sum, outer
    let s = rand(&[4, 4], 5);
    let sv = s.to_f64_vec();
    assert_arr(&einsum("ii->", &[&s]), &[], &[(0..4).map(|k| sv[k * 5]).sum()]);
    assert_arr(&einsum("ii", &[&s]), &[], &[(0..4).map(|k| sv[k * 5]).sum()]);
    assert_arr(&einsum("ii->i", &[&s]), &[4], &(0..4).map(|k| sv[k * 5]).collect::<Vec<_>>());
    let tr: Vec<f64> = (0..12).map(|p| av[(p % 3) * 4 + p / 3]).collect();
    assert_arr(&einsum("ij->ji", &[&a]), &[4, 3], &tr);
    assert_arr(&einsum("ij->", &[&a]), &[], &[av.iter().sum()]);
    assert_arr(
        &einsum("ij->j", &[&a]),
        &[4],
        &(0..4).map(|j| (0..3).map(|r| av[r * 4 + j]).sum()).collect::<Vec<_>>(),
    );
    let u = rand(&[3], 6);
    let v = rand(&[4], 7);
    let (uv, vv) = (u.to_f64_vec(), v.to_f64_vec());
    let outer: Vec<f64> = (0..12).map(|p| uv[p / 4] * vv[p % 4]).collect();
    assert_arr(&einsum("i,j->ij", &[&u, &v]), &[3, 4], &outer);
    assert_arr(&einsum("i,i->", &[&u, &u]), &[], &[uv.iter().map(|x| x * x).sum()]);
    // bilinear form over a batch: three operands
    let l = rand(&[2, 3], 8);
    let w = rand(&[3, 4], 9);
    let rr = rand(&[2, 4], 10);
    let (lv, wv, rv) = (l.to_f64_vec(), w.to_f64_vec(), rr.to_f64_vec());
    let want: Vec<f64> = (0..2)
        .map(|b_| {
            let mut s = 0.0;
            for i_ in 0..3 {
                for j in 0..4 {
                    s += lv[b_ * 3 + i_] * wv[i_ * 4 + j] * rv[b_ * 4 + j];
                }
            }
            s
        })
        .collect();
    assert_arr(&einsum("bi,ij,bj->b", &[&l, &w, &rr]), &[2], &want);
    // a chain of four matrices
    let m1 = rand(&[2, 3], 11);
    let m2 = rand(&[3, 4], 12);
    let m3 = rand(&[4, 5], 13);
    let m4 = rand(&[5, 2], 14);
    let chain = m1.matmul(&m2).matmul(&m3).matmul(&m4);
    let e = einsum("ab,bc,cd,de->ae", &[&m1, &m2, &m3, &m4]);
    assert!(e.allclose(&chain, 1e-5, 1e-5));
    // repeated index across operands and a diagonal on one of them
    let d = einsum("ii,i->i", &[&s, &rand(&[4], 15)]);
    assert_eq!(d.shape(), &[4]);
    // ellipsis with broadcasting of batch dims
    let p = rand(&[5, 1, 2, 3], 16);
    let q = rand(&[4, 3, 2], 17);
    let e = einsum("...ij,...jk->...ik", &[&p, &q]);
    assert!(e.allclose(p.matmul(&q), 1e-5, 1e-5));
    assert_eq!(einsum("...ij->...ji", &[&p]).shape(), &[5, 1, 3, 2]);
    assert_eq!(einsum("i...->...", &[&p]).shape(), &[1, 2, 3]);
    // integer operands
    let k = i(&[1, 2, 3, 4], &[2, 2]);
    assert_eq!(einsum("ij,jk->ik", &[&k, &k]).to_vec::<i32>(), vec![7, 10, 15, 22]);
}

#[test]
fn einsum_errors() {
    let a = Array::zeros([2, 3]);
    let b = Array::zeros([4, 5]);
    assert!(try_einsum("ij,jk->ik", &[&a, &b]).is_err());
    assert!(try_einsum("ij->ik", &[&a]).is_err());
    assert!(try_einsum("ijk->i", &[&a]).is_err());
    assert!(try_einsum("ij,jk->ik", &[&a]).is_err());
    assert!(try_einsum("i1->i", &[&a]).is_err());
    assert!(try_einsum("ij->ii", &[&a]).is_err());
    let msg = panic_message(|| {
        einsum("ij,jk->ik", &[&a, &b]);
    });
    assert!(msg.contains("einsum") && msg.contains("'j'"), "{msg}");
}

// ---- shapes ------------------------------------------------------------------------------

#[test]
fn reshape_transpose_and_friends() {
    let x = iota(&[2, 3, 4]);
    assert_eq!(x.reshape([6, -1]).shape(), &[6, 4]);
    assert_eq!(x.reshape([-1]).shape(), &[24]);
    assert_eq!(x.reshape(vec![4usize, 6]).shape(), &[4, 6]);
    assert_eq!(x.reshape(x.shape()).shape(), &[2, 3, 4]);
    assert!(x.try_reshape([5, -1]).is_err());
    assert!(x.try_reshape([-1, -1]).is_err());
    assert!(x.try_reshape([7]).is_err());
    let t = x.transpose([2, 0, 1]);
    assert_eq!(t.shape(), &[4, 2, 3]);
    let tv = t.to_f64_vec();
    assert_eq!(tv.len(), 24);
    for (p, &got) in tv.iter().enumerate() {
        let m = unravel(p, &[4, 2, 3]);
        assert_eq!(got, (m[1] * 12 + m[2] * 4 + m[0]) as f64);
    }
    assert!(x.transpose([-1, 0, 1]).allclose(&t, 0.0, 0.0));
    assert!(x.try_transpose([0, 0, 1]).is_err());
    assert!(x.try_transpose([0, 1]).is_err());
    assert_eq!(x.t().shape(), &[4, 3, 2]);
    assert_eq!(x.mt().shape(), &[2, 4, 3]);
    assert!(x.mt().mt().allclose(&x, 0.0, 0.0));
    assert!(Array::zeros([3]).try_mt().is_err());
    assert_eq!(x.swapaxes(0, -1).shape(), &[4, 3, 2]);
    assert_eq!(x.moveaxis(0, -1).shape(), &[3, 4, 2]);
    assert_eq!(x.moveaxis(-1, 0).shape(), &[4, 2, 3]);
    assert!(x.moveaxis(-1, 0).allclose(&t, 0.0, 0.0));
    let r = f(&[1.0, 2.0, 3.0], &[3]).broadcast_to([2, 3]);
    assert_arr(&r, &[2, 3], &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    assert_eq!(f(&[1.0], &[1, 1]).broadcast_to([2, 3, 4]).shape(), &[2, 3, 4]);
    assert!(Array::zeros([3]).try_broadcast_to([4]).is_err());
    assert!(Array::zeros([2, 3]).try_broadcast_to([3]).is_err());
    let y = Array::zeros([1, 3, 1]);
    assert_eq!(y.squeeze([0]).shape(), &[3, 1]);
    assert_eq!(y.squeeze([-1, 0]).shape(), &[3]);
    assert_eq!(y.squeeze_all().shape(), &[3]);
    assert!(y.try_squeeze([1]).is_err());
    assert_eq!(y.expand_dims(0).shape(), &[1, 1, 3, 1]);
    assert_eq!(y.expand_dims(-1).shape(), &[1, 3, 1, 1]);
    assert_eq!(y.expand_dims(3).shape(), &[1, 3, 1, 1]);
    assert!(y.try_expand_dims(5).is_err());
    assert_eq!(x.flatten().shape(), &[24]);
    assert_eq!(x.ravel().to_f64_vec(), x.to_f64_vec());
}

// ---- indexing ----------------------------------------------------------------------------

/// numpy's `range(*slice(start, stop, step).indices(n))`.
fn py_slice(start: Option<isize>, stop: Option<isize>, step: isize, n: usize) -> Vec<usize> {
    let n = n as isize;
    let (s, e) = if step > 0 {
        let c = |v: isize| if v < 0 { (v + n).max(0) } else { v.min(n) };
        (start.map_or(0, c), stop.map_or(n, c))
    } else {
        let c = |v: isize| if v < 0 { (v + n).max(-1) } else { v.min(n - 1) };
        (start.map_or(n - 1, c), stop.map_or(-1, c))
    };
    let mut out = vec![];
    let mut k = s;
    while (step > 0 && k < e) || (step < 0 && k > e) {
        out.push(k as usize);
        k += step;
    }
    out
}

#[test]
fn basic_indexing_with_steps() {
    let x = iota(&[5, 6]);
    let slices: Vec<(Option<isize>, Option<isize>, isize)> = vec![
        (None, None, 1),
        (None, None, -1),
        (Some(1), Some(4), 1),
        (Some(-2), None, 1),
        (None, None, 2),
        (None, None, -2),
        (Some(4), Some(0), -1),
        (Some(-1), Some(-10), -3),
        (Some(3), Some(1), 1),
        (Some(10), None, -2),
    ];
    for &(s0, e0, st0) in &slices {
        for &(s1, e1, st1) in &slices {
            let r = x.index([Idx::slice(s0, e0, st0), Idx::slice(s1, e1, st1)]);
            let rows = py_slice(s0, e0, st0, 5);
            let cols = py_slice(s1, e1, st1, 6);
            assert_eq!(r.shape(), &[rows.len(), cols.len()]);
            let want: Vec<f64> =
                rows.iter().flat_map(|&a| cols.iter().map(move |&b| (a * 6 + b) as f64)).collect();
            assert_close(&r, &want, 0.0);
        }
    }
    assert_arr(&x.index(idx![2]), &[6], &[12.0, 13.0, 14.0, 15.0, 16.0, 17.0]);
    assert_arr(&x.index(idx![-1, -1]), &[], &[29.0]);
    assert_arr(&x.index(idx![1..3, 2]), &[2], &[8.0, 14.0]);
    assert_arr(&x.index(idx![..2, 4..]), &[2, 2], &[4.0, 5.0, 10.0, 11.0]);
    assert_arr(&x.index(idx![0, ..=1]), &[2], &[0.0, 1.0]);
    assert_eq!(x.index(idx![Idx::NewAxis, .., Idx::NewAxis, 1]).shape(), &[1, 5, 1]);
    assert_eq!(x.index(idx![Idx::Ellipsis, 0]).shape(), &[5]);
    assert_eq!(x.index(idx![Idx::Ellipsis, Idx::NewAxis]).shape(), &[5, 6, 1]);
    assert_eq!(x.index(idx![1, Idx::Ellipsis]).shape(), &[6]);
    assert_arr(
        &x.slice_axis(1, 1, -1, 2),
        &[5, 2],
        &[1.0, 3.0, 7.0, 9.0, 13.0, 15.0, 19.0, 21.0, 25.0, 27.0],
    );
    assert_arr(
        &x.slice_axis(0, None, None, -2).slice_axis(1, 0, 1, 1),
        &[3, 1],
        &[24.0, 12.0, 0.0],
    );
    assert!(x.try_index(idx![5]).is_err());
    assert!(x.try_index(idx![0, 0, 0]).is_err());
    assert!(x.try_index([Idx::step(0)]).is_err());
    assert!(x.try_index([Idx::Ellipsis, Idx::Ellipsis]).is_err());
}

#[test]
fn integer_array_indexing() {
    let x = iota(&[4, 5]);
    let rows = i(&[3, -1, 0], &[3]);
    assert_arr(
        &x.index(idx![&rows]),
        &[3, 5],
        &[15., 16., 17., 18., 19., 15., 16., 17., 18., 19., 0., 1., 2., 3., 4.],
    );
    assert_arr(
        &x.index(idx![.., &i(&[4, 0], &[2])]),
        &[4, 2],
        &[4., 0., 9., 5., 14., 10., 19., 15.],
    );
    // 2-D index array
    let g = x.index(idx![&i(&[0, 1, 2, 3], &[2, 2]), 1..3]);
    assert_eq!(g.shape(), &[2, 2, 2]);
    assert_close(&g, &[1., 2., 6., 7., 11., 12., 16., 17.], 0.0);
    // two arrays broadcast together (pointwise pairs)
    let p = x.index(idx![&i(&[0, 3], &[2]), &i(&[1, -1], &[2])]);
    assert_arr(&p, &[2], &[1.0, 19.0]);
    let q = x.index(idx![&i(&[0, 3], &[2, 1]), &i(&[1, 2, 3], &[3])]);
    assert_arr(&q, &[2, 3], &[1., 2., 3., 16., 17., 18.]);
    // an integer next to an array: both are array indices (numpy)
    assert_arr(&x.index(idx![2, &i(&[0, 4], &[2])]), &[2], &[10.0, 14.0]);
    // non-adjacent array indices put their dims first (numpy)
    let y = iota(&[2, 3, 4]);
    let r = y.index(idx![&i(&[1, 0], &[2]), .., &i(&[3, 0], &[2])]);
    assert_eq!(r.shape(), &[2, 3]);
    assert_close(&r, &[15., 19., 23., 0., 4., 8.], 0.0);
    let r = y.index(idx![0, .., &i(&[1, 2], &[2])]);
    assert_eq!(r.shape(), &[2, 3]);
    assert_close(&r, &[1., 5., 9., 2., 6., 10.], 0.0);
    // adjacent array indices stay in place
    let r = y.index(idx![.., &i(&[0, 2], &[2]), &i(&[1, 3], &[2])]);
    assert_arr(&r, &[2, 2], &[1., 11., 13., 23.]);
    // with a new axis
    assert_eq!(x.index(idx![Idx::NewAxis, &rows]).shape(), &[1, 3, 5]);
    // out-of-range indices are clamped when reading
    assert_arr(&x.index(idx![0, &i(&[7], &[1])]), &[1], &[4.0]);
    // bool and float indices are rejected
    let mask = Array::from_vec(vec![true, false, true, false], [4]);
    assert!(x.try_index(idx![&mask]).is_err());
    assert!(x.try_index(idx![&f(&[0.0], &[1])]).is_err());
}

#[test]
fn take_and_take_along_axis() {
    let table = iota(&[4, 3]);
    let ids = i(&[2, 0, -1, 2], &[2, 2]);
    let t = table.take(&ids, 0);
    assert_eq!(t.shape(), &[2, 2, 3]);
    assert_close(&t, &[6., 7., 8., 0., 1., 2., 9., 10., 11., 6., 7., 8.], 0.0);
    let t = table.take(&i(&[2, 0], &[2]), -1);
    assert_arr(&t, &[4, 2], &[2., 0., 5., 3., 8., 6., 11., 9.]);
    let x = f(&[10.0, 30.0, 20.0, 5.0, 1.0, 3.0], &[2, 3]);
    let am = x.argmax(-1).expand_dims(-1);
    assert_arr(&x.take_along_axis(&am, -1), &[2, 1], &[30.0, 5.0]);
    let order = i(&[2, 0, 1, 1, 2, 0], &[2, 3]);
    assert_arr(&x.take_along_axis(&order, 1), &[2, 3], &[20., 10., 30., 1., 3., 5.]);
    // indices broadcast along the other dims
    let first = i(&[0, 2], &[1, 2]);
    assert_arr(&x.take_along_axis(&first, 1), &[2, 2], &[10., 20., 5., 3.]);
    assert!(x.try_take_along_axis(&i(&[0], &[1]), 1).is_err());
    assert!(x.try_take(&f(&[0.0], &[1]), 0).is_err());
}

#[test]
fn functional_updates() {
    let x = Array::zeros([3, 4]);
    // basic box
    let y = x.at_set(idx![1, 1..3], 5.0);
    assert_close(&y, &[0., 0., 0., 0., 0., 5., 5., 0., 0., 0., 0., 0.], 0.0);
    // the original is unchanged
    assert_eq!(x.sum().item::<f32>(), 0.0);
    // broadcast value over a column
    let y = x.at_set(idx![.., -1], f(&[1.0, 2.0, 3.0], &[3]));
    assert_close(&y, &[0., 0., 0., 1., 0., 0., 0., 2., 0., 0., 0., 3.], 0.0);
    // strided and reversed ranges
    let y = x.at_set(idx![0, Idx::step(2)], f(&[7.0, 8.0], &[2]));
    assert_close(&y.index(idx![0]), &[7., 0., 8., 0.], 0.0);
    let y = x.at_set(idx![2, Idx::rev()], f(&[1.0, 2.0, 3.0, 4.0], &[4]));
    assert_close(&y.index(idx![2]), &[4., 3., 2., 1.], 0.0);
    // at_add on a box and with a step
    let y = iota(&[3, 4]).at_add(idx![1..], 100.0);
    assert_close(&y, &[0., 1., 2., 3., 104., 105., 106., 107., 108., 109., 110., 111.], 0.0);
    let y = iota(&[3, 4]).at_add(idx![.., Idx::slice(Some(3), None, -2)], 1.0);
    assert_close(&y.index(idx![0]), &[0., 2., 2., 4.], 0.0);
    // integer arrays: repeated indices accumulate in at_add
    let v = Array::zeros([5]);
    let idx = i(&[0, 2, 2, -1], &[4]);
    let y = v.at_add(idx![&idx], 1.0);
    assert_close(&y, &[1., 0., 2., 0., 1.], 0.0);
    let y = v.at_set(idx![&idx], f(&[1.0, 2.0, 2.0, 3.0], &[4]));
    assert_close(&y, &[1., 0., 2., 0., 3.], 0.0);
    // out-of-range array indices are dropped
    let y = v.at_set(idx![&i(&[1, 9], &[2])], 4.0);
    assert_close(&y, &[0., 4., 0., 0., 0.], 0.0);
    // two array indices (pointwise) plus a value per point
    let y = x.at_add(idx![&i(&[0, 2], &[2]), &i(&[3, 1], &[2])], f(&[5.0, 6.0], &[2]));
    assert_close(&y, &[0., 0., 0., 5., 0., 0., 0., 0., 0., 6., 0., 0.], 0.0);
    // values are converted to the array's dtype
    let k = Array::zeros_of([3], DType::I32).at_set(idx![1], 2.7);
    assert_eq!(k.to_vec::<i32>(), vec![0, 2, 0]);
    // shape errors
    assert!(x.try_at_set(idx![0], f(&[1.0, 2.0], &[2])).is_err());
    assert!(x.try_at_add(idx![5], 1.0).is_err());
}

#[test]
fn dynamic_slices() {
    let x = iota(&[4, 5]);
    let s = x.dynamic_slice(&[Array::scalar(1i32), Array::scalar(2i32)], [2, 3]);
    assert_arr(&s, &[2, 3], &[7., 8., 9., 12., 13., 14.]);
    // starts are clamped so the slice stays in bounds
    let s = x.dynamic_slice(&[Array::scalar(3i32), Array::scalar(4i64)], [2, 2]);
    assert_arr(&s, &[2, 2], &[13., 14., 18., 19.]);
    let u =
        x.dynamic_update_slice(&Array::ones([1, 2]), &[Array::scalar(0i32), Array::scalar(3i32)]);
    assert_close(&u.index(idx![0]), &[0., 1., 2., 1., 1.], 0.0);
    assert!(x.try_dynamic_slice(&[Array::scalar(0i32)], [1, 1]).is_err());
    assert!(x.try_dynamic_slice(&[Array::scalar(0i32), Array::scalar(0i32)], [5, 1]).is_err());
    assert!(x.try_dynamic_slice(&[Array::scalar(0.0f32), Array::scalar(0i32)], [1, 1]).is_err());
    assert!(
        x.try_dynamic_update_slice(
            &Array::ones([5, 1]),
            &[Array::scalar(0i32), Array::scalar(0i32)]
        )
        .is_err()
    );
}

// ---- joining -----------------------------------------------------------------------------

#[test]
fn concatenate_stack_split() {
    let a = iota(&[2, 3]);
    let b = &iota(&[1, 3]) + 100.0;
    let c = concatenate(&[&a, &b], 0);
    assert_arr(&c, &[3, 3], &[0., 1., 2., 3., 4., 5., 100., 101., 102.]);
    let d = concatenate(&[a.clone(), a.clone()], -1);
    assert_arr(&d, &[2, 6], &[0., 1., 2., 0., 1., 2., 3., 4., 5., 3., 4., 5.]);
    // promotion
    let k = i(&[7, 8, 9], &[1, 3]);
    assert_eq!(concatenate(&[&a, &k], 0).dtype(), DType::F32);
    assert!(try_concatenate(&[&a, &iota(&[2, 2])], 0).is_err());
    assert!(try_concatenate(&[&a, &iota(&[6])], 0).is_err());
    let s = stack(&[&a, &a, &a], 1);
    assert_eq!(s.shape(), &[2, 3, 3]);
    assert_close(&s.index(idx![.., 2]), &a.to_f64_vec(), 0.0);
    assert_eq!(stack(&[&a, &a], -1).shape(), &[2, 3, 2]);
    assert_eq!(stack(&[&a, &a], 0).shape(), &[2, 2, 3]);
    let x = iota(&[6, 2]);
    let parts = x.split(3, 0);
    assert_eq!(parts.len(), 3);
    assert_arr(&parts[2], &[2, 2], &[8., 9., 10., 11.]);
    let parts = x.split([1, 4], 0);
    let lens: Vec<usize> = parts.iter().map(|p| p.shape()[0]).collect();
    assert_eq!(lens, vec![1, 3, 2]);
    assert!(concatenate(&parts, 0).allclose(&x, 0.0, 0.0));
    let cols = x.split(2, -1);
    assert_arr(&cols[1], &[6, 1], &[1., 3., 5., 7., 9., 11.]);
    assert!(x.try_split(4, 0).is_err());
}

#[test]
fn pad_tile_repeat() {
    let x = f(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let p = x.pad(&[(1, 0), (0, 2)], -1.0);
    assert_arr(&p, &[3, 4], &[-1., -1., -1., -1., 1., 2., -1., -1., 3., 4., -1., -1.]);
    assert_eq!(x.pad(&[(1, 1)], 0.0).shape(), &[4, 4]);
    assert!(x.try_pad(&[(1, 1), (1, 1), (1, 1)], 0.0).is_err());
    assert_arr(&x.tile([2]), &[2, 4], &[1., 2., 1., 2., 3., 4., 3., 4.]);
    assert_arr(&x.tile([2, 1]), &[4, 2], &[1., 2., 3., 4., 1., 2., 3., 4.]);
    assert_eq!(x.tile([3, 1, 1]).shape(), &[3, 2, 2]);
    assert_arr(&x.repeat(2, 1), &[2, 4], &[1., 1., 2., 2., 3., 3., 4., 4.]);
    assert_arr(&x.repeat(2, 0), &[4, 2], &[1., 2., 1., 2., 3., 4., 3., 4.]);
}

// ---- ML helpers --------------------------------------------------------------------------

#[test]
fn one_hot_softmax_log_softmax() {
    let labels = i(&[0, 2, 1, 5, -1], &[5]);
    let oh = one_hot(&labels, 3, DType::F32);
    assert_arr(&oh, &[5, 3], &[1., 0., 0., 0., 0., 1., 0., 1., 0., 0., 0., 0., 0., 0., 0.]);
    let oh2 = one_hot(&i(&[1, 0], &[2, 1]), 2, DType::I32);
    assert_eq!(oh2.shape(), &[2, 1, 2]);
    assert_eq!(oh2.to_vec::<i32>(), vec![0, 1, 1, 0]);
    let x = rand(&[4, 7], 3);
    for axis in [-1isize, 0, 1] {
        let p = x.softmax(axis);
        let sums = p.sum_axes([axis], false);
        assert!(sums.allclose(1.0, 1e-6, 1e-6), "softmax over {axis} sums to {sums}");
        assert!(x.log_softmax(axis).exp().allclose(&p, 1e-5, 1e-6));
    }
    let xv = x.to_f64_vec();
    let row0: Vec<f64> = xv[..7].to_vec();
    let z: f64 = row0.iter().map(|v| v.exp()).sum();
    assert_close(
        &x.softmax(-1).index(idx![0]),
        &row0.iter().map(|v| v.exp() / z).collect::<Vec<_>>(),
        1e-5,
    );
    // stable for large inputs
    let big = f(&[1000.0, 1000.0, -1000.0], &[3]);
    assert_close(&big.softmax(0), &[0.5, 0.5, 0.0], 1e-6);
    assert_close(&big.log_softmax(0), &[-(2f64.ln()), -(2f64.ln()), -2000.0 - 2f64.ln()], 1e-5);
    assert_close(&big.logsumexp(), &[1000.0 + 2f64.ln()], 1e-6);
    assert!(x.try_softmax(2).is_err());
}

// ---- errors ------------------------------------------------------------------------------

#[test]
fn error_messages_name_the_op_and_shapes() {
    let a = Array::zeros([2, 3]);
    let b = Array::zeros([4]);
    let msg = panic_message(|| {
        let _ = &a + &b;
    });
    assert!(msg.contains("add") && msg.contains("[2, 3]") && msg.contains("[4]"), "{msg}");
    assert!(msg.contains("cannot broadcast shapes [2, 3] and [4]"), "{msg}");
    let e = a.try_add(&b).unwrap_err().to_string();
    assert!(e.starts_with("add: cannot broadcast shapes [2, 3] and [4]"), "{e}");
    for (name, r) in [
        ("sub", a.try_sub(&b)),
        ("mul", a.try_mul(&b)),
        ("div", a.try_div(&b)),
        ("maximum", a.try_maximum(&b)),
        ("lt", a.try_lt(&b)),
    ] {
        let e = r.unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("[2, 3]") && e.contains("[4]"), "{e}");
    }
    let msg = panic_message(|| {
        let _ = a.matmul(&Array::zeros([4, 5]));
    });
    assert!(msg.contains("matmul") && msg.contains("[2, 3]") && msg.contains("[4, 5]"), "{msg}");
    assert!(a.try_matmul(&Array::zeros([4, 5])).is_err());
    assert!(Array::zeros([2, 2, 3]).try_matmul(&Array::zeros([3, 3, 1])).is_err());
    let msg = panic_message(|| {
        let _ = a.reshape([4, 2]);
    });
    assert!(msg.contains("reshape") && msg.contains("[2, 3]") && msg.contains("[4, 2]"), "{msg}");
    let msg = panic_message(|| {
        let _ = concatenate(&[&a, &b], 0);
    });
    assert!(msg.contains("concatenate") && msg.contains("[2, 3]") && msg.contains("[4]"), "{msg}");
    let msg = panic_message(|| {
        let _ = where_(Array::from_vec(vec![true, false], [2]), &a, 0.0);
    });
    assert!(msg.contains("where") && msg.contains("[2]") && msg.contains("[2, 3]"), "{msg}");
    let msg = panic_message(|| {
        let _ = a.sum_axes([3], false);
    });
    assert!(msg.contains("sum") && msg.contains("axis 3"), "{msg}");
    let msg = panic_message(|| {
        let _ = a.index(idx![2]);
    });
    assert!(msg.contains("index") && msg.contains("out of bounds"), "{msg}");
    // dtype errors are reported with the user-facing op name too
    let e = f(&[1.0], &[1]).try_shift_left(1).unwrap_err().to_string();
    assert!(e.starts_with("shift_left"), "{e}");
}

#[test]
fn panics_point_at_the_caller() {
    use std::sync::{Arc, Mutex};
    let me = std::thread::current().id();
    let seen: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let record = seen.clone();
    let prev = std::panic::take_hook();
    // Records the panic locations of this thread only (tests run in parallel).
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == me
            && let Some(l) = info.location()
        {
            record.lock().unwrap().push((l.file().to_string(), l.line()));
        }
    }));
    let a = Array::zeros([2, 3]);
    let b = Array::zeros([4]);
    let line_method = line!() + 1;
    let r1 = catch_unwind(AssertUnwindSafe(|| a.add(&b)));
    let line_operator = line!() + 1;
    let r2 = catch_unwind(AssertUnwindSafe(|| &a * &b));
    let line_matmul = line!() + 1;
    let r3 = catch_unwind(AssertUnwindSafe(|| a.matmul(&b)));
    std::panic::set_hook(prev);
    assert!(r1.is_err() && r2.is_err() && r3.is_err());
    let seen = seen.lock().unwrap().clone();
    let lines: Vec<u32> = seen.iter().map(|(_, l)| *l).collect();
    assert!(seen.iter().all(|(f, _)| f.ends_with("numpy_api.rs")), "{seen:?}");
    assert_eq!(lines, vec![line_method, line_operator, line_matmul]);
}

// ---- transformations ---------------------------------------------------------------------

/// Central finite differences of a scalar function of one f64 array.
fn numeric_grad(g: impl Fn(&Array) -> Array, x: &Array) -> Vec<f64> {
    let xv = x.to_f64_vec();
    let eps = 1e-6;
    (0..xv.len())
        .map(|k| {
            let mut hi = xv.clone();
            let mut lo = xv.clone();
            hi[k] += eps;
            lo[k] -= eps;
            let at = |v: &[f64]| g(&Array::from_f64_vec(v, x.shape(), DType::F64)).item::<f64>();
            (at(&hi) - at(&lo)) / (2.0 * eps)
        })
        .collect()
}

#[track_caller]
fn check_grad(g: impl Fn(&Array) -> Array, x: &Array) {
    let analytic = kiln::grad(&g)(x);
    assert_eq!(analytic.shape(), x.shape());
    assert_close(&analytic, &numeric_grad(&g, x), 1e-6);
}

#[test]
fn numpy_ops_are_differentiable() {
    let x = rand(&[3, 4], 21).astype(DType::F64);
    let w = rand(&[4, 2], 22).astype(DType::F64);
    let v = rand(&[2, 3], 23).astype(DType::F64);
    check_grad(|x| x.logsumexp(), &x);
    let g = kiln::grad(|x: &Array| x.logsumexp())(&x);
    assert!(g.allclose(x.reshape([-1]).softmax(0).reshape([3, 4]), 1e-10, 1e-12));
    check_grad(|x| (x * x * 0.5 + x.exp() / 3).sum(), &x);
    check_grad(|x| x.softmax(-1).index(idx![.., 0]).sum(), &x);
    check_grad(|x| x.log_softmax(0).mean(), &x);
    check_grad(|x| x.var_axes([1], false).sum() + x.std(), &x);
    check_grad(|x| x.max_axes([-1], false).sum(), &x);
    check_grad(|x| x.softplus().sum() + x.sigmoid().prod(), &x);
    check_grad(|x| x.matmul(&w).square().sum(), &x);
    check_grad(|x| einsum("ij,jk,ki->", &[x, &w, &v]), &x);
    check_grad(|x| einsum("bi,bi->b", &[x, x]).sum(), &x);
    check_grad(|x| x.index(idx![Idx::rev(), 1..3]).square().sum(), &x);
    check_grad(|x| x.index(idx![&i(&[0, 2, 2], &[3])]).pow(3).sum(), &x);
    check_grad(|x| x.take_along_axis(&x.argmax(-1).expand_dims(-1), -1).sum(), &x);
    check_grad(|x| x.at_set(idx![0], 0.0).square().sum(), &x);
    check_grad(|x| x.at_add(idx![.., Idx::step(2)], x.index(idx![.., ..2])).square().sum(), &x);
    check_grad(|x| concatenate(&[x, &x.t().reshape([3, 4])], 0).cumsum(0).sum(), &x);
    check_grad(|x| stack(&x.split(2, 1), 0).transpose([2, 0, 1]).tanh().sum(), &x);
    check_grad(|x| where_(x.gt(0.0), x, x * 0.1).pad(&[(1, 1)], 2.0).square().sum(), &x);
    check_grad(|x| x.clip(-0.5, 0.5).sum() + x.abs().sum(), &x);
}

#[test]
fn numpy_ops_trace_into_jaxprs() {
    let f = |x: &Array| {
        let y = (x * 2.0 + 1).softmax(-1);
        let z = einsum("ij,kj->ik", &[&y, x]).index(idx![.., Idx::rev()]);
        z.at_add(idx![0], 1.0).sum_axes([-1], true).matmul(&x.index(idx![0..1]))
    };
    let x = rand(&[3, 4], 31);
    let jaxpr = kiln::make_jaxpr(f)(&x);
    let text = jaxpr.to_string();
    for prim in ["dot_general", "reduce_max", "exp", "rev", "dynamic_update_slice"] {
        assert!(text.contains(prim), "{prim} missing from:\n{text}");
    }
    assert_eq!(f(&x).shape(), &[3, 4]);
}
