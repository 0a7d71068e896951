//! Transpose rules of the linear primitives: given the cotangents of the outputs and the
//! operands (`None` for the linear operands, whose values are unknown), the cotangents of
//! the linear operands. Only primitives that appear in linearized programs need one.

use crate::ad::Tangent;
use crate::array::Array;
use crate::aval::Aval;
use crate::error::{Error, Result};
use crate::lax::{self, ConvParams};
use crate::prim::{Prim, WindowKind};

type Cts = Vec<Option<Array>>;

fn not_linear(prim: &Prim, why: &str) -> Error {
    Error::Transform {
        transform: "transpose",
        msg: format!("`{}` is not linear in the given operands ({why})", prim.name()),
    }
}

fn zeros(aval: &Aval) -> Array {
    Tangent::Zero(aval.clone()).instantiate()
}

/// `ct` summed down to `aval` where `BroadcastInDim` had expanded it.
fn unbroadcast(ct: &Array, in_aval: &Aval, dims: &[usize]) -> Array {
    let out_nd = ct.ndim();
    let mut sum_axes: Vec<usize> = (0..out_nd).filter(|d| !dims.contains(d)).collect();
    for (i, &d) in dims.iter().enumerate() {
        if in_aval.shape[i] == 1 && ct.shape()[d] != 1 {
            sum_axes.push(d);
        }
    }
    sum_axes.sort_unstable();
    let s = lax::reduce_sum(ct, &sum_axes);
    lax::reshape(&s, &in_aval.shape)
}

/// The dot_general producing the cotangent of the lhs (JAX's `_dot_general_transpose_lhs`).
fn dot_transpose_lhs(
    ct: &Array,
    x_aval: &Aval,
    y: &Array,
    (xc, yc, xb, yb): (&[usize], &[usize], &[usize], &[usize]),
    swap_ans: bool,
) -> Array {
    let x_nd = x_aval.ndim();
    let y_nd = y.ndim();
    let x_kept: Vec<usize> = (0..x_nd).filter(|d| !xc.contains(d) && !xb.contains(d)).collect();
    let y_kept: Vec<usize> = (0..y_nd).filter(|d| !yc.contains(d) && !yb.contains(d)).collect();
    let nb = xb.len();
    let ans_batch: Vec<usize> = (0..nb).collect();
    let ans_y: Vec<usize> = if swap_ans {
        (nb..nb + y_kept.len()).collect()
    } else {
        (nb + x_kept.len()..nb + x_kept.len() + y_kept.len()).collect()
    };
    // contract ct's y-part with y's kept dims; batch over the batch dims
    // g = dot_general(ct, y, ...) has dims: batch, ct's remaining (= x kept), y's remaining
    // (= y contract, in y order); it is transposed into x's order below.
    let mut yc_order: Vec<usize> = (0..yc.len()).collect();
    yc_order.sort_by_key(|&i| yc[i]);
    let x_contract_sorted_by_y: Vec<usize> = yc_order.iter().map(|&i| xc[i]).collect();
    let mut pos: Vec<usize> = xb.to_vec();
    pos.extend(&x_kept);
    pos.extend(&x_contract_sorted_by_y);
    // out_axes = argsort(pos)
    let mut out_axes: Vec<usize> = (0..pos.len()).collect();
    out_axes.sort_by_key(|&i| pos[i]);
    dot_transposed(ct, y, (&ans_y, &y_kept, &ans_batch, yb), &out_axes)
}

/// `transpose(dot_general(a, b, dims), perm)`, computed as the product with its operands
/// swapped when `perm` only exchanges the two groups of free dims (the batch dims staying
/// in front): `(a . b)^T = b^T . a^T` writes the result in place instead of moving it.
fn dot_transposed(
    a: &Array,
    b: &Array,
    (ac, bc, ab, bb): (&[usize], &[usize], &[usize], &[usize]),
    perm: &[usize],
) -> Array {
    let nb = ab.len();
    let (nl, nr) = (a.ndim() - ac.len() - nb, b.ndim() - bc.len() - nb);
    if lax::is_free_dim_swap(perm, nb, nl, nr) {
        return lax::dot_general(b, a, ((bc, ac), (bb, ab)));
    }
    lax::transpose(&lax::dot_general(a, b, ((ac, bc), (ab, bb))), perm)
}

fn dilate(n: usize, d: usize) -> i64 {
    if n == 0 { 0 } else { ((n - 1) * d + 1) as i64 }
}

/// Cotangent of the convolution's lhs.
fn conv_transpose_lhs(ct: &Array, lhs_aval: &Aval, rhs: &Array, p: &ConvParams) -> Array {
    let nd = rhs.ndim();
    let ns = nd - 2;
    let g = p.feature_group_count;
    let k: Vec<usize> = rhs.shape()[..ns].to_vec();
    let (cin_g, cout) = (rhs.shape()[ns], rhs.shape()[ns + 1]);
    // kernel [K.., Cin/G, Cout] -> [K.., Cout/G, Cin] (per-group swap), spatially flipped
    let mut s1 = k.clone();
    s1.extend([cin_g, g, cout / g]);
    let w = lax::reshape(rhs, &s1);
    let mut perm: Vec<usize> = (0..ns).collect();
    perm.extend([ns + 2, ns + 1, ns]);
    let w = lax::transpose(&w, &perm);
    let mut s2 = k.clone();
    s2.extend([cout / g, g * cin_g]);
    let w = lax::reshape(&w, &s2);
    let w = lax::rev(&w, &(0..ns).collect::<Vec<_>>());
    let mut padding = Vec::with_capacity(ns);
    for (i, &ki) in k.iter().enumerate() {
        let lhs_d = dilate(lhs_aval.shape[1 + i], p.lhs_dilation[i]);
        let rhs_d = dilate(ki, p.rhs_dilation[i]);
        let out_d = dilate(ct.shape()[1 + i], p.strides[i]);
        let before = rhs_d - p.padding[i].0 - 1;
        let after = lhs_d + rhs_d - 1 - out_d - before;
        padding.push((before, after));
    }
    let tp = ConvParams {
        strides: p.lhs_dilation.clone(),
        padding,
        lhs_dilation: p.strides.clone(),
        rhs_dilation: p.rhs_dilation.clone(),
        feature_group_count: g,
    };
    lax::conv_general_dilated(ct, &w, &tp)
}

/// Cotangent of the convolution's rhs for one feature group.
fn conv_transpose_rhs_group(ct: &Array, lhs: &Array, k: &[usize], p: &ConvParams) -> Array {
    let nd = lhs.ndim();
    let ns = nd - 2;
    // lhs as [C_in, spatial.., N], ct as kernel [spatial.., N, C_out]
    let mut lperm = vec![nd - 1];
    lperm.extend(1..nd - 1);
    lperm.push(0);
    let l = lax::transpose(lhs, &lperm);
    let mut cperm: Vec<usize> = (1..nd - 1).collect();
    cperm.extend([0, nd - 1]);
    let c = lax::transpose(ct, &cperm);
    let mut padding = Vec::with_capacity(ns);
    for (i, &ki) in k.iter().enumerate() {
        let lhs_d = dilate(lhs.shape()[1 + i], p.lhs_dilation[i]);
        let rhs_d = dilate(ki, p.rhs_dilation[i]);
        let out_d = dilate(ct.shape()[1 + i], p.strides[i]);
        let lo = p.padding[i].0;
        let hi = (out_d - lhs_d) + (rhs_d - lo - 1);
        padding.push((lo, hi));
    }
    let tp = ConvParams {
        strides: p.rhs_dilation.clone(),
        padding,
        lhs_dilation: p.lhs_dilation.clone(),
        rhs_dilation: p.strides.clone(),
        feature_group_count: 1,
    };
    // result [C_in, K.., C_out] -> [K.., C_in, C_out]
    let r = lax::conv_general_dilated(&l, &c, &tp);
    let mut operm: Vec<usize> = (1..nd - 1).collect();
    operm.extend([0, nd - 1]);
    lax::transpose(&r, &operm)
}

fn conv_transpose_rhs(ct: &Array, lhs: &Array, rhs_aval: &Aval, p: &ConvParams) -> Array {
    let nd = lhs.ndim();
    let ns = nd - 2;
    let k = &rhs_aval.shape[..ns];
    let g = p.feature_group_count;
    if g == 1 {
        return conv_transpose_rhs_group(ct, lhs, k, p);
    }
    let cin_g = rhs_aval.shape[ns];
    let cout_g = rhs_aval.shape[ns + 1] / g;
    let mut parts = Vec::with_capacity(g);
    for gi in 0..g {
        let mut ls = vec![0; nd];
        let mut ll = lhs.shape().to_vec();
        ls[nd - 1] = gi * cin_g;
        ll[nd - 1] = (gi + 1) * cin_g;
        let lg = lax::slice(lhs, &ls, &ll, None);
        let mut cs = vec![0; nd];
        let mut cl = ct.shape().to_vec();
        cs[nd - 1] = gi * cout_g;
        cl[nd - 1] = (gi + 1) * cout_g;
        let cg = lax::slice(ct, &cs, &cl, None);
        parts.push(conv_transpose_rhs_group(&cg, &lg, k, p));
    }
    lax::concatenate(&parts, nd - 1)
}

/// Applies the transpose rule of `prim`.
pub fn transpose(
    prim: &Prim,
    cts: &[Tangent],
    args: &[Option<Array>],
    in_avals: &[Aval],
) -> Result<Cts> {
    use Prim::*;
    let lin = |i: usize| args[i].is_none();
    // Single-output primitives: the output cotangent (zeros if symbolic).
    let ct = || cts[0].instantiate();
    let some_if = |i: usize, f: &dyn Fn() -> Array| if lin(i) { Some(f()) } else { None };
    Ok(match prim {
        Neg => vec![Some(lax::neg(&ct()))],
        Add => vec![some_if(0, &ct), some_if(1, &ct)],
        Sub => vec![some_if(0, &ct), some_if(1, &|| lax::neg(&ct()))],
        Mul => match (&args[0], &args[1]) {
            (None, Some(y)) => vec![Some(lax::mul(&ct(), y)), None],
            (Some(x), None) => vec![None, Some(lax::mul(x, &ct()))],
            _ => return Err(not_linear(prim, "exactly one operand must be linear")),
        },
        Div => match (&args[0], &args[1]) {
            (None, Some(y)) => vec![Some(lax::div(&ct(), y)), None],
            _ => return Err(not_linear(prim, "only the numerator may be linear")),
        },
        ConvertElementType { .. } => {
            vec![Some(lax::convert_element_type(&ct(), in_avals[0].dtype))]
        }
        Reshape { .. } | Squeeze { .. } | ExpandDims { .. } => {
            vec![Some(lax::reshape(&ct(), &in_avals[0].shape))]
        }
        Transpose { perm } => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            vec![Some(lax::transpose(&ct(), &inv))]
        }
        Rev { axes } => vec![Some(lax::rev(&ct(), axes))],
        BroadcastInDim { dims, .. } => vec![Some(unbroadcast(&ct(), &in_avals[0], dims))],
        ReduceSum { axes } => {
            let kept: Vec<usize> = (0..in_avals[0].ndim()).filter(|d| !axes.contains(d)).collect();
            vec![Some(lax::broadcast_in_dim(&ct(), &in_avals[0].shape, &kept))]
        }
        Cumsum { axis, reverse } => vec![Some(lax::cumsum(&ct(), *axis, !reverse))],
        Select => {
            let pred = args[0].as_ref().ok_or_else(|| not_linear(prim, "predicate is linear"))?;
            let c = ct();
            let z = lax::zeros_like(&c);
            vec![
                None,
                some_if(1, &|| lax::select(pred, &c, &z)),
                some_if(2, &|| lax::select(pred, &z, &c)),
            ]
        }
        Slice { start, strides, .. } => {
            let c = ct();
            let zero = Array::scalar_of(0.0, c.dtype());
            let cfg: Vec<(i64, i64, usize)> = (0..start.len())
                .map(|i| {
                    let n = c.shape()[i];
                    let last = if n == 0 { start[i] } else { start[i] + (n - 1) * strides[i] + 1 };
                    (start[i] as i64, (in_avals[0].shape[i] - last) as i64, strides[i] - 1)
                })
                .collect();
            let cfg = if c.size() == 0 {
                // nothing flows back; pad can't express an empty interior, use zeros
                return Ok(vec![Some(zeros(&in_avals[0]))]);
            } else {
                cfg
            };
            vec![Some(lax::pad(&c, &zero, &cfg))]
        }
        Pad { lo, hi, interior } => {
            let c = ct();
            let zero = Array::scalar_of(0.0, c.dtype());
            let nd = lo.len();
            let unc: Vec<(i64, i64, usize)> =
                (0..nd).map(|i| ((-lo[i]).max(0), (-hi[i]).max(0), 0)).collect();
            let t = lax::pad(&c, &zero, &unc);
            let start: Vec<usize> = (0..nd).map(|i| lo[i].max(0) as usize).collect();
            let limit: Vec<usize> = (0..nd).map(|i| t.shape()[i] - hi[i].max(0) as usize).collect();
            let strides: Vec<usize> = interior.iter().map(|s| s + 1).collect();
            let ct_x = lax::slice(&t, &start, &limit, Some(&strides));
            let all: Vec<usize> = (0..nd).collect();
            let ct_v = if lin(1) {
                Some(lax::sub(&lax::reduce_sum(&c, &all), &lax::reduce_sum(&ct_x, &all)))
            } else {
                None
            };
            vec![if lin(0) { Some(ct_x) } else { None }, ct_v]
        }
        Concatenate { axis } => {
            let c = ct();
            let mut off = 0;
            let mut out = Vec::with_capacity(args.len());
            for (i, aval) in in_avals.iter().enumerate() {
                let n = aval.shape[*axis];
                if lin(i) {
                    let mut s = vec![0; c.ndim()];
                    let mut l = c.shape().to_vec();
                    s[*axis] = off;
                    l[*axis] = off + n;
                    out.push(Some(lax::slice(&c, &s, &l, None)));
                } else {
                    out.push(None);
                }
                off += n;
            }
            out
        }
        DotGeneral { lhs_contract, rhs_contract, lhs_batch, rhs_batch } => {
            let c = ct();
            match (&args[0], &args[1]) {
                (None, Some(y)) => vec![
                    Some(dot_transpose_lhs(
                        &c,
                        &in_avals[0],
                        y,
                        (lhs_contract, rhs_contract, lhs_batch, rhs_batch),
                        false,
                    )),
                    None,
                ],
                (Some(x), None) => vec![
                    None,
                    Some(dot_transpose_lhs(
                        &c,
                        &in_avals[1],
                        x,
                        (rhs_contract, lhs_contract, rhs_batch, lhs_batch),
                        true,
                    )),
                ],
                _ => return Err(not_linear(prim, "exactly one operand must be linear")),
            }
        }
        Conv { strides, padding, lhs_dilation, rhs_dilation, feature_group_count } => {
            let p = ConvParams {
                strides: strides.clone(),
                padding: padding.clone(),
                lhs_dilation: lhs_dilation.clone(),
                rhs_dilation: rhs_dilation.clone(),
                feature_group_count: *feature_group_count,
            };
            let c = ct();
            match (&args[0], &args[1]) {
                (None, Some(w)) => vec![Some(conv_transpose_lhs(&c, &in_avals[0], w, &p)), None],
                (Some(x), None) => vec![None, Some(conv_transpose_rhs(&c, x, &in_avals[1], &p))],
                _ => return Err(not_linear(prim, "exactly one operand must be linear")),
            }
        }
        ReduceWindow { kind: WindowKind::Sum, window, strides, padding } => {
            let c = ct();
            let zero = Array::scalar_of(0.0, c.dtype());
            let nd = window.len();
            let cfg: Vec<(i64, i64, usize)> = (0..nd)
                .map(|i| {
                    let (w, s, pl) = (window[i] as i64, strides[i] as i64, padding[i].0);
                    let o = c.shape()[i] as i64;
                    let inn = in_avals[0].shape[i] as i64;
                    let lo = w - 1 - pl;
                    let d = if o == 0 { 0 } else { (o - 1) * s + 1 };
                    let hi = inn + w - 1 - lo - d;
                    (lo, hi, strides[i] - 1)
                })
                .collect();
            let e = lax::pad(&c, &zero, &cfg);
            let ones = vec![1; nd];
            let nopad = vec![(0, 0); nd];
            vec![Some(lax::reduce_window(&e, WindowKind::Sum, window, &ones, &nopad))]
        }
        SelectAndGatherAdd { window, strides, padding } => {
            let x = args[1].as_ref().ok_or_else(|| not_linear(prim, "operand is linear"))?;
            vec![Some(lax::select_and_scatter_add(&ct(), x, window, strides, padding)), None]
        }
        SelectAndScatterAdd { window, strides, padding } => {
            let x = args[1].as_ref().ok_or_else(|| not_linear(prim, "operand is linear"))?;
            vec![Some(lax::select_and_gather_add(&ct(), x, window, strides, padding)), None]
        }
        DynamicSlice { .. } => {
            let idx: Vec<Array> =
                args[1..].iter().map(|a| a.clone().expect("indices known")).collect();
            vec![Some(lax::dynamic_update_slice(&zeros(&in_avals[0]), &ct(), &idx))]
                .into_iter()
                .chain(std::iter::repeat_n(None, idx.len()))
                .collect()
        }
        DynamicUpdateSlice => {
            let c = ct();
            let idx: Vec<Array> =
                args[2..].iter().map(|a| a.clone().expect("indices known")).collect();
            let ct_x = some_if(0, &|| lax::dynamic_update_slice(&c, &zeros(&in_avals[1]), &idx));
            let ct_u = some_if(1, &|| lax::dynamic_slice(&c, &idx, &in_avals[1].shape));
            [ct_x, ct_u].into_iter().chain(std::iter::repeat_n(None, idx.len())).collect()
        }
        Gather { axis, batch_dims } => {
            let idx = args[1].as_ref().ok_or_else(|| not_linear(prim, "indices are linear"))?;
            vec![Some(lax::scatter_add(&zeros(&in_avals[0]), idx, &ct(), *axis, *batch_dims)), None]
        }
        ScatterAdd { axis, batch_dims } => {
            let idx = args[1].as_ref().ok_or_else(|| not_linear(prim, "indices are linear"))?;
            let c = ct();
            vec![
                some_if(0, &|| c.clone()),
                None,
                some_if(2, &|| lax::gather(&c, idx, *axis, *batch_dims)),
            ]
        }
        Scatter { axis, batch_dims } => {
            let idx = args[1].as_ref().ok_or_else(|| not_linear(prim, "indices are linear"))?;
            let c = ct();
            vec![
                some_if(0, &|| lax::scatter(&c, idx, &zeros(&in_avals[2]), *axis, *batch_dims)),
                None,
                some_if(2, &|| lax::gather(&c, idx, *axis, *batch_dims)),
            ]
        }
        StopGradient => vec![None],
        Call { callee } => {
            // The known operands become constants of a linear program in the others.
            let j = callee.jaxpr();
            let mut lin = j.clone();
            let (mut constvars, mut consts, mut binders) = (Vec::new(), Vec::new(), Vec::new());
            for (v, a) in j.in_binders.iter().zip(args) {
                match a {
                    Some(x) => {
                        constvars.push(v.clone());
                        consts.push(x.clone());
                    }
                    None => binders.push(v.clone()),
                }
            }
            lin.constvars = constvars;
            lin.in_binders = binders;
            let cts_out: Vec<Option<Array>> = cts.iter().map(|c| c.value().cloned()).collect();
            let closed = crate::jaxpr::ClosedJaxpr { jaxpr: lin, consts };
            let mut cts_in = crate::ad::backward_pass(&closed, &cts_out)?.into_iter();
            args.iter().map(|a| if a.is_none() { cts_in.next().flatten() } else { None }).collect()
        }
        _ => return Err(not_linear(prim, "it has no transpose rule")),
    })
}
