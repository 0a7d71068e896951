//! JVP rules: for each primitive, the primal outputs and their tangents given primal
//! inputs and (possibly symbolically zero) input tangents.
//!
//! Rules are written with [`lax`] operations, so they bind again and are handled by the
//! next interpreter down: that is what makes higher-order derivatives work.

use crate::ad::Tangent;
use crate::array::Array;
use crate::aval::Aval;
use crate::error::Result;
use crate::lax::{self, full_like, mul_scalar};
use crate::prim::{Prim, WindowKind};
use crate::trace::bind;

type JvpOut = (Vec<Array>, Vec<Tangent>);

fn one(y: Array, t: Tangent) -> Result<JvpOut> {
    Ok((vec![y], vec![t]))
}

/// Primal outputs of `prim`.
fn primal(prim: &Prim, xs: &[Array]) -> Result<Vec<Array>> {
    bind(prim, xs)
}

/// The rule for primitives linear in the operands at `linear` (the others are treated
/// as fixed parameters such as indices): the tangent is the same primitive applied to
/// the tangents in the linear slots.
fn linear(prim: &Prim, xs: &[Array], ts: &[Tangent], lin: &[usize]) -> Result<JvpOut> {
    let ys = primal(prim, xs)?;
    if lin.iter().all(|&i| ts[i].is_zero()) {
        let zs = ys.iter().map(|y| Tangent::Zero(y.aval().clone())).collect();
        return Ok((ys, zs));
    }
    let args: Vec<Array> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| if lin.contains(&i) { ts[i].instantiate() } else { x.clone() })
        .collect();
    let tys = bind(prim, &args)?;
    Ok((ys, tys.into_iter().map(Tangent::Value).collect()))
}

/// Unary rule `y = f(x)`, `y_dot = x_dot * df(x, y)`.
fn unary(
    prim: &Prim,
    xs: &[Array],
    ts: &[Tangent],
    df: impl FnOnce(&Array, &Array) -> Array,
) -> Result<JvpOut> {
    let y = primal(prim, xs)?.swap_remove(0);
    let t = ts[0].map(y.aval(), |t| lax::mul(t, &df(&xs[0], &y)));
    one(y, t)
}

fn zero_out(prim: &Prim, xs: &[Array]) -> Result<JvpOut> {
    let ys = primal(prim, xs)?;
    let zs = ys.iter().map(|y| Tangent::Zero(y.aval().clone())).collect();
    Ok((ys, zs))
}

/// A tangent with the linear map to apply to it.
type Term<'a> = (Tangent, Box<dyn FnOnce(&Array) -> Array + 'a>);

/// `sum_i f_i(t_i)` over the non-zero tangents.
fn combine(aval: &Aval, terms: Vec<Term<'_>>) -> Tangent {
    let mut acc = Tangent::Zero(aval.clone());
    for (t, f) in terms {
        if let Tangent::Value(t) = t {
            acc = acc.add(&Tangent::Value(f(&t)));
        }
    }
    acc
}

/// Where `x == ans`, weighted so ties share the derivative equally (JAX's balanced eq).
fn balanced_eq(x: &Array, ans: &Array, other: &Array) -> Array {
    let dt = x.dtype();
    let eq_x = lax::convert_element_type(&lax::eq(x, ans), dt);
    let eq_o = lax::convert_element_type(&lax::eq(other, ans), dt);
    let denom = lax::add(&full_like(x, 1.0), &eq_o);
    lax::div(&eq_x, &denom)
}

/// Exclusive cumulative product along the last axis (`[1, x0, x0 x1, ...]`), built from
/// pads, slices and multiplications (a Hillis-Steele scan) so it is differentiable.
fn exclusive_cumprod_last(x: &Array) -> Array {
    let n = *x.shape().last().expect("at least 1-d");
    let nd = x.ndim();
    let one_s = Array::scalar_of(1.0, x.dtype());
    // shift right by one, filling with 1
    let mut cfg = vec![(0i64, 0i64, 0usize); nd];
    cfg[nd - 1] = (1, -1, 0);
    let mut acc = lax::pad(x, &one_s, &cfg);
    let mut shift = 1;
    while shift < n {
        cfg[nd - 1] = (shift as i64, -(shift as i64), 0);
        acc = lax::mul(&acc, &lax::pad(&acc, &one_s, &cfg));
        shift *= 2;
    }
    acc
}

/// Moves `axes` of `x` to the end and merges them into one.
fn axes_to_last(x: &Array, axes: &[usize]) -> (Array, Vec<usize>) {
    let keep: Vec<usize> = (0..x.ndim()).filter(|d| !axes.contains(d)).collect();
    let mut perm = keep.clone();
    perm.extend_from_slice(axes);
    let moved = lax::transpose(x, &perm);
    let mut shape: Vec<usize> = keep.iter().map(|&d| x.shape()[d]).collect();
    let kept_shape = shape.clone();
    shape.push(axes.iter().map(|&d| x.shape()[d]).product());
    (lax::reshape(&moved, &shape), kept_shape)
}

/// `x` gathered along `axis` by `idx` of the same shape (`take_along_axis`).
pub(crate) fn take_along_axis(x: &Array, idx: &Array, axis: usize) -> Array {
    let nd = x.ndim();
    let mut perm: Vec<usize> = (0..nd).filter(|&d| d != axis).collect();
    perm.push(axis);
    let mut inv = vec![0; nd];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    let xt = lax::transpose(x, &perm);
    let it = lax::transpose(idx, &perm);
    let g = lax::gather(&xt, &it, nd - 1, nd - 1);
    lax::transpose(&g, &inv)
}

/// Applies the JVP rule of `prim`.
pub fn jvp(prim: &Prim, xs: &[Array], ts: &[Tangent]) -> Result<JvpOut> {
    use Prim::*;
    match prim {
        // ---- linear ----
        Neg
        | Reshape { .. }
        | Transpose { .. }
        | Rev { .. }
        | Squeeze { .. }
        | ExpandDims { .. }
        | BroadcastInDim { .. }
        | ReduceSum { .. }
        | Cumsum { .. }
        | Slice { .. }
        | Add
        | Sub
        | Concatenate { .. }
        | Pad { .. }
        | DynamicUpdateSlice
        | Scatter { .. }
        | ScatterAdd { .. } => {
            let lin: Vec<usize> = match prim {
                DynamicUpdateSlice => vec![0, 1],
                Scatter { .. } | ScatterAdd { .. } => vec![0, 2],
                _ => (0..xs.len()).collect(),
            };
            linear(prim, xs, ts, &lin)
        }
        DynamicSlice { .. }
        | Gather { .. }
        | SelectAndGatherAdd { .. }
        | SelectAndScatterAdd { .. } => linear(prim, xs, ts, &[0]),
        ReduceWindow { kind: WindowKind::Sum, .. } => linear(prim, xs, ts, &[0]),
        ConvertElementType { dtype } => {
            if dtype.is_float() && xs[0].dtype().is_float() {
                linear(prim, xs, ts, &[0])
            } else {
                zero_out(prim, xs)
            }
        }
        Select => linear(prim, xs, ts, &[1, 2]),

        // ---- piecewise constant or non-float ----
        Sign
        | Floor
        | Ceil
        | Round
        | IsFinite
        | Not
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
        | ArgMax { .. }
        | ArgMin { .. }
        | Iota { .. }
        | Threefry2x32
        | BitcastConvertType { .. }
        | StopGradient => zero_out(prim, xs),

        // The JVP of a call is the JVP of its program, evaluated inline.
        Call { callee } => {
            Ok(crate::ad::jvp_flat(|ins| lax::ok(callee.jaxpr().eval(&[], ins)), xs, ts))
        }

        // ---- unary ----
        Exp => unary(prim, xs, ts, |_, y| y.clone()),
        Log => unary(prim, xs, ts, |x, _| lax::div(&full_like(x, 1.0), x)),
        Log1p => unary(prim, xs, ts, |x, _| lax::div(&full_like(x, 1.0), &lax::add_scalar(x, 1.0))),
        Expm1 => unary(prim, xs, ts, |_, y| lax::add_scalar(y, 1.0)),
        Sin => unary(prim, xs, ts, |x, _| lax::cos(x)),
        Cos => unary(prim, xs, ts, |x, _| lax::neg(&lax::sin(x))),
        Tanh => unary(prim, xs, ts, |_, y| lax::sub(&full_like(y, 1.0), &lax::mul(y, y))),
        Logistic => unary(prim, xs, ts, |_, y| lax::mul(y, &lax::sub(&full_like(y, 1.0), y))),
        Sqrt => unary(prim, xs, ts, |_, y| lax::div(&full_like(y, 0.5), y)),
        Rsqrt => unary(prim, xs, ts, |x, y| lax::mul_scalar(&lax::div(y, x), -0.5)),
        Abs => unary(prim, xs, ts, |x, _| lax::sign(x)),
        Erf => unary(prim, xs, ts, |x, _| {
            let e = lax::exp(&lax::neg(&lax::mul(x, x)));
            mul_scalar(&e, std::f64::consts::FRAC_2_SQRT_PI)
        }),
        ErfInv => unary(prim, xs, ts, |_, y| {
            let e = lax::exp(&lax::mul(y, y));
            mul_scalar(&e, std::f64::consts::PI.sqrt() / 2.0)
        }),
        Gelu { approximate } => {
            let approximate = *approximate;
            unary(prim, xs, ts, move |x, _| lax::gelu_grad(x, approximate))
        }
        GeluGrad { approximate } => {
            let approximate = *approximate;
            unary(prim, xs, ts, move |x, _| gelu_second_derivative(x, approximate))
        }
        IntegerPow { y: n } => {
            let n = *n;
            unary(prim, xs, ts, move |x, _| {
                if n == 0 {
                    lax::zeros_like(x)
                } else {
                    // x^1 is x itself: no equation (the derivative of a square).
                    let p = if n == 2 { x.clone() } else { lax::integer_pow(x, n - 1) };
                    mul_scalar(&p, n as f64)
                }
            })
        }

        // ---- binary ----
        Mul => {
            let y = primal(prim, xs)?.swap_remove(0);
            let (a, b) = (&xs[0], &xs[1]);
            let t = combine(
                y.aval(),
                vec![
                    (ts[0].clone(), Box::new(|t: &Array| lax::mul(t, b))),
                    (ts[1].clone(), Box::new(|t: &Array| lax::mul(a, t))),
                ],
            );
            one(y, t)
        }
        Div => {
            let y = primal(prim, xs)?.swap_remove(0);
            let b = &xs[1];
            let yy = y.clone();
            let t = combine(
                y.aval(),
                vec![
                    (ts[0].clone(), Box::new(|t: &Array| lax::div(t, b))),
                    (
                        ts[1].clone(),
                        Box::new(move |t: &Array| lax::neg(&lax::div(&lax::mul(t, &yy), b))),
                    ),
                ],
            );
            one(y, t)
        }
        Rem => {
            let y = primal(prim, xs)?.swap_remove(0);
            let (a, b) = (&xs[0], &xs[1]);
            let t = combine(
                y.aval(),
                vec![
                    (ts[0].clone(), Box::new(|t: &Array| t.clone())),
                    (
                        ts[1].clone(),
                        Box::new(|t: &Array| {
                            let q = lax::div(a, b);
                            let trunc = lax::mul(&lax::sign(&q), &lax::floor(&lax::abs(&q)));
                            lax::neg(&lax::mul(t, &trunc))
                        }),
                    ),
                ],
            );
            one(y, t)
        }
        Pow => {
            let y = primal(prim, xs)?.swap_remove(0);
            let (a, b) = (&xs[0], &xs[1]);
            let yy = y.clone();
            let t = combine(
                y.aval(),
                vec![
                    (
                        ts[0].clone(),
                        Box::new(|t: &Array| {
                            let bm1 = lax::sub(b, &full_like(b, 1.0));
                            lax::mul(t, &lax::mul(b, &lax::pow(a, &bm1)))
                        }),
                    ),
                    (
                        ts[1].clone(),
                        Box::new(move |t: &Array| {
                            // log(a) is -inf at a = 0 where y = 0: define the term as 0 there.
                            let zero = lax::zeros_like(a);
                            let is0 = lax::eq(a, &zero);
                            let safe = lax::select(&is0, &full_like(a, 1.0), a);
                            let dl = lax::select(&is0, &zero, &lax::mul(&yy, &lax::log(&safe)));
                            lax::mul(t, &dl)
                        }),
                    ),
                ],
            );
            one(y, t)
        }
        Max | Min => {
            let y = primal(prim, xs)?.swap_remove(0);
            let (a, b) = (&xs[0], &xs[1]);
            let yy = y.clone();
            let yy2 = y.clone();
            let t = combine(
                y.aval(),
                vec![
                    (
                        ts[0].clone(),
                        Box::new(move |t: &Array| lax::mul(t, &balanced_eq(a, &yy, b))),
                    ),
                    (
                        ts[1].clone(),
                        Box::new(move |t: &Array| lax::mul(t, &balanced_eq(b, &yy2, a))),
                    ),
                ],
            );
            one(y, t)
        }
        Atan2 => {
            let y = primal(prim, xs)?.swap_remove(0);
            let (a, b) = (&xs[0], &xs[1]);
            let denom = lax::add(&lax::mul(a, a), &lax::mul(b, b));
            let t = combine(
                y.aval(),
                vec![
                    (ts[0].clone(), Box::new(|t: &Array| lax::mul(t, &lax::div(b, &denom)))),
                    (
                        ts[1].clone(),
                        Box::new(|t: &Array| lax::neg(&lax::mul(t, &lax::div(a, &denom)))),
                    ),
                ],
            );
            one(y, t)
        }
        Clamp => {
            let y = primal(prim, xs)?.swap_remove(0);
            let (lo, x, hi) = (&xs[0], &xs[1], &xs[2]);
            let zero = lax::zeros_like(x);
            let t = combine(
                y.aval(),
                vec![
                    (ts[0].clone(), Box::new(|t: &Array| lax::select(&lax::lt(x, lo), t, &zero))),
                    (
                        ts[1].clone(),
                        Box::new(|t: &Array| {
                            let inside = lax::and(&lax::ge(x, lo), &lax::le(x, hi));
                            lax::select(&inside, t, &zero)
                        }),
                    ),
                    (ts[2].clone(), Box::new(|t: &Array| lax::select(&lax::gt(x, hi), t, &zero))),
                ],
            );
            one(y, t)
        }

        // ---- reductions ----
        ReduceMax { axes } | ReduceMin { axes } => {
            let y = primal(prim, xs)?.swap_remove(0);
            let x = &xs[0];
            let kept: Vec<usize> = (0..x.ndim()).filter(|d| !axes.contains(d)).collect();
            let t = ts[0].map(y.aval(), |t| {
                let yb = lax::broadcast_in_dim(&y, x.shape(), &kept);
                let mask = lax::convert_element_type(&lax::eq(x, &yb), x.dtype());
                let count = lax::reduce_sum(&mask, axes);
                lax::div(&lax::reduce_sum(&lax::mul(t, &mask), axes), &count)
            });
            one(y, t)
        }
        ReduceProd { axes } => {
            let y = primal(prim, xs)?.swap_remove(0);
            let x = &xs[0];
            let t = ts[0].map(y.aval(), |t| {
                // d prod = sum_i t_i * prod_{j != i} x_j, with the products of the others
                // from exclusive prefix and suffix products (exact when some x_j = 0).
                let (xm, kept_shape) = axes_to_last(x, axes);
                let (tm, _) = axes_to_last(t, axes);
                let last = xm.ndim() - 1;
                let pre = exclusive_cumprod_last(&xm);
                let suf = lax::rev(&exclusive_cumprod_last(&lax::rev(&xm, &[last])), &[last]);
                let others = lax::mul(&pre, &suf);
                let s = lax::reduce_sum(&lax::mul(&tm, &others), &[last]);
                lax::reshape(&s, &kept_shape)
            });
            one(y, t)
        }

        // ---- contractions ----
        DotGeneral { .. } | Conv { .. } => {
            let y = primal(prim, xs)?.swap_remove(0);
            let (a, b) = (&xs[0], &xs[1]);
            let t = combine(
                y.aval(),
                vec![
                    (
                        ts[0].clone(),
                        Box::new(|t: &Array| {
                            bind(prim, &[t.clone(), b.clone()]).expect("typed").swap_remove(0)
                        }),
                    ),
                    (
                        ts[1].clone(),
                        Box::new(|t: &Array| {
                            bind(prim, &[a.clone(), t.clone()]).expect("typed").swap_remove(0)
                        }),
                    ),
                ],
            );
            one(y, t)
        }

        // ---- windows ----
        ReduceWindow { kind, window, strides, padding } => {
            let y = primal(prim, xs)?.swap_remove(0);
            let x = &xs[0];
            let t = ts[0].map(y.aval(), |t| {
                let key = if *kind == WindowKind::Max { x.clone() } else { lax::neg(x) };
                lax::select_and_gather_add(t, &key, window, strides, padding)
            });
            one(y, t)
        }

        // ---- sort ----
        Sort { axis, num_keys } => {
            let axis = *axis;
            let shape = xs[0].shape().to_vec();
            let iota = lax::iota(crate::DType::I32, &shape, axis);
            let mut args = xs.to_vec();
            args.push(iota);
            let mut outs = lax::sort(&args, axis, *num_keys);
            let perm = outs.pop().expect("iota output");
            let tangents = ts
                .iter()
                .zip(&outs)
                .map(|(t, y)| t.map(y.aval(), |t| take_along_axis(t, &perm, axis)))
                .collect();
            Ok((outs, tangents))
        }
    }
}

/// `d^2 gelu(x) / dx^2` from basic primitives (the JVP factor of [`Prim::GeluGrad`]).
///
/// Tanh form: with `t = tanh(u)`, `u = c (x + a x^3)`, `u' = c (1 + 3 a x^2)` and
/// `u'' = 6 a c x`, it is `(1 - t^2) * (u' + x/2 * (u'' - 2 t u'^2))`. Erf form:
/// `phi(x) * (2 - x^2)` with the standard normal density `phi`.
fn gelu_second_derivative(x: &Array, approximate: bool) -> Array {
    let x2 = lax::mul(x, x);
    if approximate {
        let (a, c) = (lax::GELU_CUBIC, lax::GELU_SCALE);
        let u = mul_scalar(&lax::add(x, &mul_scalar(&lax::mul(x, &x2), a)), c);
        let t = lax::tanh(&u);
        let du = mul_scalar(&lax::add_scalar(&mul_scalar(&x2, 3.0 * a), 1.0), c);
        let ddu = mul_scalar(x, 6.0 * a * c);
        let inner = lax::sub(&ddu, &mul_scalar(&lax::mul(&t, &lax::mul(&du, &du)), 2.0));
        let sech2 = lax::sub(&full_like(&t, 1.0), &lax::mul(&t, &t));
        lax::mul(&sech2, &lax::add(&du, &mul_scalar(&lax::mul(x, &inner), 0.5)))
    } else {
        let pdf = mul_scalar(&lax::exp(&mul_scalar(&x2, -0.5)), lax::INV_SQRT_2PI);
        lax::mul(&pdf, &lax::sub(&full_like(x, 2.0), &x2))
    }
}
