//! vmap and Jacobians: every primitive-table row batched equals a loop over slices, composition with AD, per-example gradients, golden Jacobians/Hessians (of arrays and of trees).
#![allow(dead_code)] // the copied table carries fields (order, tol) only the AD table reads

use kiln::lax::{self, ConvParams};
use kiln::prim::WindowKind;

use kiln::vmap::{Axes, try_vmap};
use kiln::vmap::{try_jacfwd_tree, try_jacrev_tree};
use kiln::{
    Array, DType, Jacobian, Tree, grad, hessian, hessian_tree, hvp, jacfwd, jacfwd_tree, jacrev,
    jacrev_tree, jvp, tree, vmap, vmap_full, vmap_with,
};
use std::collections::BTreeMap;

/// Deterministic f64 test data in `[lo, hi)`.
fn data(shape: &[usize], seed: u64, lo: f64, hi: f64) -> Array {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect();
    Array::from_vec(v, shape.to_vec())
}

fn ints(v: &[i32], shape: &[usize]) -> Array {
    Array::from_vec(v.to_vec(), shape.to_vec())
}

type RowFn = Box<dyn Fn(&Vec<Array>) -> Array>;

struct Row {
    name: &'static str,
    args: Vec<Array>,
    f: RowFn,
    /// Highest derivative order to check (0: not differentiable, only evaluated).
    order: usize,
    /// Tolerance of the gradient checks (looser for rows that compute in f32).
    tol: f64,
}

impl Row {
    fn tol(mut self, tol: f64) -> Row {
        self.tol = tol;
        self
    }
}

fn row(
    name: &'static str,
    args: Vec<Array>,
    order: usize,
    f: impl Fn(&Vec<Array>) -> Array + 'static,
) -> Row {
    Row { name, args, f: Box::new(f), order, tol: 1e-5 }
}

fn unary(name: &'static str, lo: f64, hi: f64, f: fn(&Array) -> Array) -> Row {
    row(name, vec![data(&[2, 3], 1, lo, hi)], 2, move |a| f(&a[0]))
}

fn binary(
    name: &'static str,
    (lo, hi): (f64, f64),
    (lo2, hi2): (f64, f64),
    f: fn(&Array, &Array) -> Array,
) -> Row {
    row(name, vec![data(&[3, 2], 2, lo, hi), data(&[3, 2], 3, lo2, hi2)], 2, move |a| {
        f(&a[0], &a[1])
    })
}

fn rows() -> Vec<Row> {
    let x23 = || data(&[2, 3], 7, -1.0, 1.0);
    let mut rows = vec![
        // ---- unary ----
        unary("neg", -2.0, 2.0, lax::neg),
        unary("exp", -2.0, 2.0, lax::exp),
        unary("log", 0.5, 3.0, lax::log),
        unary("log1p", -0.5, 3.0, lax::log1p),
        unary("expm1", -2.0, 2.0, lax::expm1),
        unary("sin", -3.0, 3.0, lax::sin),
        unary("cos", -3.0, 3.0, lax::cos),
        unary("tanh", -2.0, 2.0, lax::tanh),
        unary("logistic", -3.0, 3.0, lax::logistic),
        unary("sqrt", 0.5, 3.0, lax::sqrt),
        unary("rsqrt", 0.5, 3.0, lax::rsqrt),
        unary("abs", 0.2, 2.0, lax::abs),
        unary("erf", -2.0, 2.0, lax::erf),
        unary("erf_inv", -0.8, 0.8, lax::erf_inv),
        unary("sign", 0.1, 2.0, lax::sign),
        unary("floor", 0.1, 0.9, lax::floor),
        unary("ceil", 0.1, 0.9, lax::ceil),
        unary("round", 0.1, 0.4, lax::round),
        row("stop_gradient", vec![x23()], 0, |a| lax::stop_gradient(&a[0])),
        row("integer_pow_3", vec![x23()], 2, |a| lax::integer_pow(&a[0], 3)),
        row("integer_pow_-2", vec![data(&[4], 3, 0.5, 2.0)], 2, |a| lax::integer_pow(&a[0], -2)),
        row("integer_pow_0", vec![x23()], 2, |a| lax::integer_pow(&a[0], 0)),
        row("is_finite", vec![x23()], 0, |a| lax::is_finite(&a[0])),
        row("not", vec![ints(&[1, 2, 3], &[3])], 0, |a| lax::not(&a[0])),
        // ---- binary ----
        binary("add", (-1.0, 1.0), (-1.0, 1.0), lax::add),
        binary("sub", (-1.0, 1.0), (-1.0, 1.0), lax::sub),
        binary("mul", (-1.0, 1.0), (-1.0, 1.0), lax::mul),
        binary("div", (-1.0, 1.0), (0.5, 2.0), lax::div),
        binary("rem", (2.1, 2.9), (1.0, 1.05), lax::rem),
        binary("pow", (0.5, 2.0), (-1.0, 2.0), lax::pow),
        binary("max", (-1.0, 0.0), (0.1, 1.0), lax::max),
        binary("min", (-1.0, 0.0), (0.1, 1.0), lax::min),
        binary("atan2", (-1.0, 1.0), (0.5, 1.0), lax::atan2),
        row("and", vec![ints(&[6, 3], &[2]), ints(&[3, 5], &[2])], 0, |a| lax::and(&a[0], &a[1])),
        row("or", vec![ints(&[6, 3], &[2]), ints(&[3, 5], &[2])], 0, |a| lax::or(&a[0], &a[1])),
        row("xor", vec![ints(&[6, 3], &[2]), ints(&[3, 5], &[2])], 0, |a| lax::xor(&a[0], &a[1])),
        row("shift_left", vec![ints(&[1, 3], &[2]), ints(&[2, 1], &[2])], 0, |a| {
            lax::shift_left(&a[0], &a[1])
        }),
        row("shift_right_logical", vec![ints(&[-8, 8], &[2]), ints(&[1, 2], &[2])], 0, |a| {
            lax::shift_right_logical(&a[0], &a[1])
        }),
        row("shift_right_arithmetic", vec![ints(&[-8, 8], &[2]), ints(&[1, 2], &[2])], 0, |a| {
            lax::shift_right_arithmetic(&a[0], &a[1])
        }),
        row("comparisons", vec![x23(), data(&[2, 3], 9, -1.0, 1.0)], 0, |a| {
            let all = [
                lax::eq(&a[0], &a[1]),
                lax::ne(&a[0], &a[1]),
                lax::lt(&a[0], &a[1]),
                lax::le(&a[0], &a[1]),
                lax::gt(&a[0], &a[1]),
                lax::ge(&a[0], &a[1]),
            ];
            lax::concatenate(&all, 0)
        }),
        row("select", vec![x23(), data(&[2, 3], 8, -1.0, 1.0)], 2, |a| {
            let pred = lax::gt(&data(&[2, 3], 99, -1.0, 1.0), &lax::zeros_like(&a[0]));
            lax::select(&pred, &a[0], &a[1])
        }),
        row(
            "clamp",
            vec![data(&[4], 1, -3.0, -2.0), data(&[4], 2, -1.0, 1.0), data(&[4], 3, 2.0, 3.0)],
            2,
            |a| lax::clamp(&a[0], &a[1], &a[2]),
        ),
        row(
            "clamp_saturated",
            vec![data(&[4], 1, -0.5, -0.2), data(&[4], 2, -2.0, -1.0)],
            2,
            |a| lax::clamp(&a[0], &a[1], &lax::full_like(&a[0], 3.0)),
        ),
        row("convert_element_type", vec![x23()], 2, |a| {
            let y = lax::convert_element_type(&lax::mul(&a[0], &a[0]), DType::F32);
            lax::convert_element_type(&lax::mul(&y, &y), DType::F64)
        })
        .tol(2e-3),
        row("bitcast_convert_type", vec![x23()], 0, |a| {
            lax::bitcast_convert_type(&a[0], DType::I64)
        }),
        // ---- shape ----
        row("broadcast_in_dim", vec![data(&[3, 1], 4, -1.0, 1.0)], 2, |a| {
            let b = lax::broadcast_in_dim(&a[0], &[2, 3, 4], &[1, 2]);
            lax::mul(&b, &b)
        }),
        row("reshape", vec![x23()], 2, |a| lax::reshape(&lax::sin(&a[0]), &[3, 2])),
        row("transpose", vec![data(&[2, 3, 4], 5, -1.0, 1.0)], 2, |a| {
            lax::transpose(&lax::sin(&a[0]), &[2, 0, 1])
        }),
        row("rev", vec![x23()], 2, |a| lax::rev(&lax::sin(&a[0]), &[1])),
        row("squeeze", vec![data(&[2, 1, 3], 5, -1.0, 1.0)], 2, |a| {
            lax::squeeze(&lax::sin(&a[0]), &[1])
        }),
        row("expand_dims", vec![x23()], 2, |a| lax::expand_dims(&lax::sin(&a[0]), &[0, 3])),
        // ---- reductions ----
        row("reduce_sum", vec![data(&[2, 3, 4], 6, -1.0, 1.0)], 2, |a| {
            lax::reduce_sum(&lax::sin(&a[0]), &[0, 2])
        }),
        row("reduce_max", vec![data(&[3, 4], 6, -1.0, 1.0)], 2, |a| lax::reduce_max(&a[0], &[1])),
        row("reduce_min", vec![data(&[3, 4], 7, -1.0, 1.0)], 2, |a| lax::reduce_min(&a[0], &[0])),
        row("reduce_prod", vec![data(&[3, 4], 8, 0.5, 1.5)], 2, |a| lax::reduce_prod(&a[0], &[1])),
        row(
            "reduce_prod_with_zero",
            vec![Array::from_vec(vec![0.0f64, 1.5, -2.0, 0.7], [4])],
            2,
            |a| lax::reduce_prod(&a[0], &[0]),
        ),
        row("argmax", vec![x23()], 0, |a| lax::argmax(&a[0], 1, DType::I32)),
        row("argmin", vec![x23()], 0, |a| lax::argmin(&a[0], 0, DType::I32)),
        row("cumsum", vec![data(&[3, 4], 9, -1.0, 1.0)], 2, |a| {
            lax::mul(&lax::cumsum(&a[0], 1, false), &lax::cumsum(&a[0], 0, true))
        }),
        // ---- contractions ----
        row(
            "dot_general_matmul",
            vec![data(&[3, 4], 1, -1.0, 1.0), data(&[4, 2], 2, -1.0, 1.0)],
            2,
            |a| lax::dot_general(&a[0], &a[1], ((&[1], &[0]), (&[], &[]))),
        ),
        row(
            "dot_general_batch",
            vec![data(&[2, 3, 4], 1, -1.0, 1.0), data(&[4, 2, 5], 2, -1.0, 1.0)],
            2,
            |a| lax::dot_general(&a[0], &a[1], ((&[2], &[0]), (&[0], &[1]))),
        ),
        row(
            "dot_general_multi_contract",
            vec![data(&[3, 2, 4], 1, -1.0, 1.0), data(&[4, 5, 3], 2, -1.0, 1.0)],
            2,
            |a| lax::dot_general(&a[0], &a[1], ((&[2, 0], &[0, 2]), (&[], &[]))),
        ),
        row(
            "conv2d",
            vec![data(&[2, 5, 5, 2], 1, -1.0, 1.0), data(&[3, 3, 2, 3], 2, -1.0, 1.0)],
            2,
            |a| {
                let mut p = ConvParams::new(2);
                p.padding = vec![(1, 1), (1, 1)];
                lax::conv_general_dilated(&a[0], &a[1], &p)
            },
        ),
        row(
            "conv2d_strided_dilated",
            vec![data(&[1, 7, 6, 2], 3, -1.0, 1.0), data(&[2, 3, 2, 2], 4, -1.0, 1.0)],
            2,
            |a| {
                let p = ConvParams {
                    strides: vec![2, 1],
                    padding: vec![(1, 0), (2, 1)],
                    lhs_dilation: vec![1, 1],
                    rhs_dilation: vec![2, 1],
                    feature_group_count: 1,
                };
                lax::conv_general_dilated(&a[0], &a[1], &p)
            },
        ),
        row(
            "conv1d_grouped",
            vec![data(&[2, 6, 4], 5, -1.0, 1.0), data(&[3, 2, 4], 6, -1.0, 1.0)],
            2,
            |a| {
                let mut p = ConvParams::new(1);
                p.feature_group_count = 2;
                p.strides = vec![2];
                lax::conv_general_dilated(&a[0], &a[1], &p)
            },
        ),
        row(
            "conv1d_lhs_dilated",
            vec![data(&[1, 4, 2], 7, -1.0, 1.0), data(&[3, 2, 2], 8, -1.0, 1.0)],
            2,
            |a| {
                let mut p = ConvParams::new(1);
                p.lhs_dilation = vec![2];
                p.padding = vec![(2, 2)];
                lax::conv_general_dilated(&a[0], &a[1], &p)
            },
        ),
        // ---- windows ----
        row("reduce_window_sum", vec![data(&[1, 5, 5, 2], 1, -1.0, 1.0)], 2, |a| {
            lax::reduce_window(
                &a[0],
                WindowKind::Sum,
                &[1, 3, 3, 1],
                &[1, 2, 2, 1],
                &[(0, 0), (1, 1), (0, 1), (0, 0)],
            )
        }),
        row("reduce_window_max", vec![data(&[1, 4, 4, 2], 2, -1.0, 1.0)], 2, |a| {
            lax::reduce_window(&a[0], WindowKind::Max, &[1, 2, 2, 1], &[1, 2, 2, 1], &[(0, 0); 4])
        }),
        row("reduce_window_min", vec![data(&[6, 2], 3, -1.0, 1.0)], 2, |a| {
            lax::reduce_window(&a[0], WindowKind::Min, &[3, 1], &[1, 1], &[(1, 1), (0, 0)])
        }),
        row("select_and_gather_add", vec![data(&[4, 4], 4, -1.0, 1.0)], 2, |a| {
            let key = data(&[4, 4], 5, -1.0, 1.0);
            lax::select_and_gather_add(&a[0], &key, &[2, 2], &[2, 2], &[(0, 0), (0, 0)])
        }),
        row("select_and_scatter_add", vec![data(&[2, 2], 4, -1.0, 1.0)], 2, |a| {
            let key = data(&[4, 4], 5, -1.0, 1.0);
            lax::select_and_scatter_add(&a[0], &key, &[2, 2], &[2, 2], &[(0, 0), (0, 0)])
        }),
        // ---- slicing and indexing ----
        row("slice", vec![data(&[5, 6], 1, -1.0, 1.0)], 2, |a| {
            lax::slice(&lax::sin(&a[0]), &[1, 0], &[5, 5], Some(&[2, 3]))
        }),
        row("dynamic_slice", vec![data(&[5, 6], 2, -1.0, 1.0)], 2, |a| {
            lax::dynamic_slice(
                &lax::sin(&a[0]),
                &[Array::scalar(1i32), Array::scalar(4i32)],
                &[2, 3],
            )
        }),
        row(
            "dynamic_update_slice",
            vec![data(&[5, 6], 3, -1.0, 1.0), data(&[2, 2], 4, -1.0, 1.0)],
            2,
            |a| {
                lax::dynamic_update_slice(
                    &lax::sin(&a[0]),
                    &lax::mul(&a[1], &a[1]),
                    &[Array::scalar(3i32), Array::scalar(1i32)],
                )
            },
        ),
        row("concatenate", vec![x23(), data(&[2, 2], 5, -1.0, 1.0)], 2, |a| {
            lax::concatenate(&[lax::sin(&a[0]), lax::mul(&a[1], &a[1])], 1)
        }),
        row("pad", vec![x23(), Array::scalar(0.3f64)], 2, |a| {
            lax::pad(&lax::sin(&a[0]), &lax::mul(&a[1], &a[1]), &[(1, -1, 1), (-1, 2, 0)])
        }),
        row("gather", vec![data(&[4, 3], 6, -1.0, 1.0)], 2, |a| {
            lax::gather(&lax::sin(&a[0]), &ints(&[3, 0, 3, 1], &[2, 2]), 0, 0)
        }),
        row("gather_batched", vec![data(&[2, 4, 3], 7, -1.0, 1.0)], 2, |a| {
            lax::gather(&lax::sin(&a[0]), &ints(&[3, 0, 1, 1, 2, 0], &[2, 3]), 1, 1)
        }),
        row(
            "scatter_add",
            vec![data(&[4, 3], 8, -1.0, 1.0), data(&[3, 3], 9, -1.0, 1.0)],
            2,
            |a| {
                lax::scatter_add(
                    &lax::sin(&a[0]),
                    &ints(&[1, 3, 1], &[3]),
                    &lax::mul(&a[1], &a[1]),
                    0,
                    0,
                )
            },
        ),
        row("scatter", vec![data(&[4, 3], 8, -1.0, 1.0), data(&[2, 3], 9, -1.0, 1.0)], 2, |a| {
            lax::scatter(&lax::sin(&a[0]), &ints(&[2, 0], &[2]), &lax::mul(&a[1], &a[1]), 0, 0)
        }),
        row("iota", vec![x23()], 2, |a| {
            let i = lax::convert_element_type(&lax::iota(DType::I32, &[2, 3], 1), DType::F64);
            lax::mul(&a[0], &i)
        }),
        row("sort", vec![data(&[3, 4], 10, -1.0, 1.0), data(&[3, 4], 11, -1.0, 1.0)], 2, |a| {
            let out = lax::sort(&[a[0].clone(), a[1].clone()], 1, 1);
            lax::mul(&out[0], &out[1])
        }),
        row("threefry2x32", vec![], 0, |_| {
            let k = |v: u32| Array::from_vec(vec![v, v + 1], [2]);
            lax::threefry2x32(&k(1), &k(2), &k(3), &k(4)).0
        }),
    ];
    rows.sort_by_key(|r| r.name);
    rows
}

/// `b` slightly different copies of `x`, stacked along `axis` (ints are repeated).
fn batched(x: &Array, b: usize, axis: usize) -> (Array, Vec<Array>) {
    let copies: Vec<Array> = (0..b)
        .map(|k| {
            if x.dtype().is_float() {
                lax::mul(x, &lax::full_like(x, 1.0 + 0.05 * k as f64))
            } else {
                x.clone()
            }
        })
        .collect();
    (kiln::stack(&copies, axis as isize), copies)
}

#[track_caller]
fn close(what: &str, got: &Array, want: &Array, tol: f64) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (g, w)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
        let ok = (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}[{i}]: vmap {g}, loop {w}");
    }
}

/// vmap of the row with the args in `which` batched along `axis` equals a loop + stack.
fn check_vmap(r: &Row, which: &[usize], axis: isize) {
    let b = 3;
    let mut inputs = r.args.clone();
    let mut per: Vec<Vec<Array>> = vec![r.args.clone(); b];
    let mut specs = Vec::new();
    for (i, a) in r.args.iter().enumerate() {
        if which.contains(&i) {
            let ax =
                if axis < 0 { a.ndim() as isize + 1 + axis } else { axis.min(a.ndim() as isize) };
            let (stacked, copies) = batched(a, b, ax as usize);
            inputs[i] = stacked;
            for k in 0..b {
                per[k][i] = copies[k].clone();
            }
            specs.push(Axes::Leaf(Some(if axis < 0 { axis } else { ax })));
        } else {
            specs.push(Axes::Leaf(None));
        }
    }
    let got = try_vmap(
        |a: &Vec<Array>| (r.f)(a),
        &inputs,
        &Axes::Seq(specs),
        &Axes::Leaf(Some(0)),
        Some(b),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", r.name));
    let outs: Vec<Array> = per.iter().map(|a| (r.f)(a)).collect();
    let want = kiln::stack(&outs, 0);
    close(&format!("{} (args {which:?}, axis {axis})", r.name), &got, &want, 1e-9);
}

#[test]
fn every_row_vmap_equals_loop() {
    for r in rows() {
        let n = r.args.len();
        let all: Vec<usize> = (0..n).collect();
        for axis in [0, 1, -1] {
            check_vmap(&r, &all, axis);
        }
        if n > 1 {
            for i in 0..n {
                check_vmap(&r, &[i], 0);
                check_vmap(&r, &[i], -1);
            }
        }
    }
}

#[test]
fn nested_and_composed() {
    let xs = data(&[3, 4, 2], 1, -1.0, 1.0);
    let f = |x: &Array| (x.sin() * x).sum();
    // vmap(vmap)
    let got = vmap(vmap(f))(&xs);
    let want: Vec<f64> = (0..12)
        .map(|i| {
            let v = xs.to_f64_vec();
            (v[2 * i].sin() * v[2 * i]) + (v[2 * i + 1].sin() * v[2 * i + 1])
        })
        .collect();
    close("vmap(vmap)", &got.reshape([-1]), &Array::from_vec(want, [12]), 1e-12);
    // vmap(grad) vs loop
    let x2 = xs.reshape([12, 2]);
    let g = vmap(grad(f))(&x2);
    let rows: Vec<Array> = (0..12).map(|i| grad(f)(&x2.row_i(i))).collect();
    close("vmap(grad)", &g, &kiln::stack(&rows, 0), 1e-12);
    // grad(vmap): gradient of the sum of per-example values is the full gradient
    let gv = grad(|x: &Array| vmap(f)(x).sum())(&x2);
    close("grad(vmap)", &gv, &grad(f)(&x2), 1e-12);
    // jvp(vmap) and vmap(jvp)
    let t = data(&[12, 2], 5, -1.0, 1.0);
    let (_, jt) = jvp(vmap(f), &x2, &t);
    let (_, jt2) = jvp(f, &x2, &t);
    close("jvp(vmap)", &jt.sum(), &jt2, 1e-12);
    let vj = vmap(|(x, t): &(Array, Array)| jvp(f, x, t).1)(&(x2.clone(), t.clone()));
    close("vmap(jvp)", &vj.sum(), &jt2, 1e-12);
    // vmap over a function closing over an outer grad tracer
    let w = data(&[2], 9, -1.0, 1.0);
    let gw = grad(|w: &Array| vmap(|x: &Array| (x * w).sin().sum())(&x2).sum())(&w);
    let gw_want = grad(|w: &Array| (&x2 * w).sin().sum())(&w);
    close("grad closing over vmap", &gw, &gw_want, 1e-12);
}

trait SliceAxis {
    fn row_i(&self, i: usize) -> Array;
}
impl SliceAxis for Array {
    fn row_i(&self, i: usize) -> Array {
        let mut start = vec![0; self.ndim()];
        let mut limit = self.shape().to_vec();
        start[0] = i;
        limit[0] = i + 1;
        lax::squeeze(&lax::slice(self, &start, &limit, None), &[0])
    }
}

#[derive(Clone, kiln::Tree)]
struct Params {
    w1: Array,
    b1: Array,
    w2: Array,
}

fn loss(p: &Params, x: &Array) -> Array {
    let h = (x.matmul(&p.w1) + &p.b1).tanh();
    h.matmul(&p.w2).square().sum()
}

#[test]
fn per_example_mlp_gradients() {
    let p = Params {
        w1: data(&[3, 4], 1, -1.0, 1.0),
        b1: data(&[4], 2, -1.0, 1.0),
        w2: data(&[4, 2], 3, -1.0, 1.0),
    };
    let xs = data(&[5, 3], 4, -1.0, 1.0);
    let per = vmap_with(
        |(p, x): &(Params, Array)| grad(|p: &Params| loss(p, x))(p),
        Axes::tuple((None, Some(0))),
    )(&(p.clone(), xs.clone()));
    for i in 0..5 {
        let xi = xs.row_i(i);
        let gi = grad(|p: &Params| loss(p, &xi))(&p);
        close("w1", &per.w1.row_i(i), &gi.w1, 1e-12);
        close("b1", &per.b1.row_i(i), &gi.b1, 1e-12);
        close("w2", &per.w2.row_i(i), &gi.w2, 1e-12);
    }
    // closure form: vmap over the examples of grad of a closure
    let ex = xs.row_i(0);
    let g0 = vmap(grad(|p: &Params| loss(p, &ex)))(&Params {
        w1: kiln::stack(&[p.w1.clone(), p.w1.clone()], 0),
        b1: kiln::stack(&[p.b1.clone(), p.b1.clone()], 0),
        w2: kiln::stack(&[p.w2.clone(), p.w2.clone()], 0),
    });
    close("closure form", &g0.w1.row_i(1), &per.w1.row_i(0), 1e-12);
}

#[test]
fn axes_options_and_errors() {
    let x = data(&[2, 3], 1, -1.0, 1.0);
    // out_axes 1 transposes the stacking
    let y = vmap_full(|x: &Array| x.sin(), Some(0), Some(1), None)(&x);
    close("out_axes", &y, &lax::transpose(&x.sin(), &[1, 0]), 1e-12);
    // nothing mapped needs axis_size
    let z = vmap_full(|x: &Array| x.sin(), None::<isize>, Some(0), Some(4))(&x);
    assert_eq!(z.shape(), &[4, 2, 3]);
    assert!(
        try_vmap(|x: &Array| x.clone(), &x, &Axes::Leaf(None), &Axes::Leaf(Some(0)), None).is_err()
    );
    // mismatched sizes name the leaves
    let e = try_vmap(
        |(a, b): &(Array, Array)| a + b,
        &(x.clone(), data(&[3, 3], 2, 0.0, 1.0)),
        &Axes::Leaf(Some(0)),
        &Axes::Leaf(Some(0)),
        None,
    )
    .map(|_| ())
    .expect_err("mismatch");
    let msg = e.to_string();
    assert!(
        msg.contains("`0`")
            && msg.contains("`1`")
            && msg.contains("size 2")
            && msg.contains("size 3"),
        "{msg}"
    );
}

fn golden() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/golden/ad.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("json")
}

fn arr(v: &serde_json::Value) -> Array {
    let shape: Vec<usize> =
        v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let vals: Vec<f64> =
        v["values"].as_array().unwrap().iter().map(|d| d.as_f64().unwrap()).collect();
    Array::from_vec(vals, shape)
}

#[test]
fn golden_jacobians_and_hessians() {
    let g = golden();
    for fj in g["vector_functions"].as_array().unwrap() {
        let name = fj["name"].as_str().unwrap();
        let x = arr(&fj["args"][0]);
        let f = |x: &Array| -> Array {
            match name {
                "vec_tanh_mul" => x.tanh() * lax::rev(x, &[0]),
                "vec_softmax" => x.softmax(0),
                "vec_outer" => x.outer(x).reshape([-1]),
                other => panic!("no twin for {other}"),
            }
        };
        close(&format!("{name} jacfwd"), &jacfwd(f)(&x), &arr(&fj["jacfwd"]), 1e-10);
        close(&format!("{name} jacrev"), &jacrev(f)(&x), &arr(&fj["jacrev"]), 1e-10);
    }
    for fj in g["functions"].as_array().unwrap() {
        let name = fj["name"].as_str().unwrap();
        let f = |x: &Array| -> Array {
            match name {
                "tanh_sum" => x.tanh().sum(),
                _ => x.logsumexp(),
            }
        };
        if name != "tanh_sum" && name != "logsumexp" {
            continue;
        }
        let x = arr(&fj["args"][0]);
        close(&format!("{name} hessian"), &hessian(f)(&x), &arr(&fj["extra"]["hessian"]), 1e-10);
        let v = arr(&fj["hvp"]["vectors"]["x"]);
        close(&format!("{name} hvp"), &hvp(f, &x, &v), &arr(&fj["hvp"]["out"]["x"]), 1e-10);
    }
}

// ---------------------------------------------------------------- Jacobians over trees

/// The `tree_mlp` golden's input: `({"b", "w"}, x)`.
type MlpIn = (BTreeMap<String, Array>, Array);

fn tree_mlp(px: &MlpIn) -> (Array, Array) {
    let (p, x) = px;
    let y = (x.matmul(&p["w"]) + &p["b"]).tanh();
    let s = (&y * &y).sum();
    (y, s)
}

/// The `tree_struct` golden's input: `{"a": (2,2), "c": [c0 (3,), c1 ()]}`.
#[derive(Clone, kiln::Tree)]
struct StructIn {
    a: Array,
    c: Vec<Array>,
}

fn tree_struct(p: &StructIn) -> BTreeMap<String, Array> {
    let (a, c0, c1) = (&p.a, &p.c[0], &p.c[1]);
    let u = a.matmul(&lax::slice(c0, &[0], &[2], None)).tanh() * c1;
    let v = (c0 * c1).exp().outer(&a.sin().sum_axes([0], false));
    BTreeMap::from([("u".to_string(), u), ("v".to_string(), v)])
}

fn paths<T: Tree>(t: &T) -> Vec<String> {
    tree::leaves_with_path(t).into_iter().map(|(p, _)| p.to_string()).collect()
}

/// A tree shaped like `like` whose leaves are the golden arrays `by_path[path]`.
fn from_golden<T: Tree>(like: &T, by_path: &serde_json::Value) -> T {
    let obj = by_path.as_object().expect("{path: ARR}");
    let mut want: Vec<&String> = obj.keys().collect();
    let mut have = paths(like);
    want.sort();
    have.sort();
    assert_eq!(have.iter().collect::<Vec<_>>(), want, "tree paths vs golden paths");
    tree::unflatten(like, paths(like).iter().map(|p| arr(&obj[p])).collect())
}

#[track_caller]
fn close_tree<T: Tree>(what: &str, got: &T, want: &T, tol: f64) {
    assert_eq!(paths(got), paths(want), "{what}: paths");
    for ((p, g), w) in tree::leaves_with_path(got).iter().zip(tree::leaves(want)) {
        close(&format!("{what} `{p}`"), g, &w, tol);
    }
}

/// Every block of `j` against the golden `{out_path: {in_path: ARR}}`, and no block missing.
#[track_caller]
fn check_jacobian(what: &str, j: &Jacobian, want: &serde_json::Value) {
    let want = want.as_object().expect("{out: {in: ARR}}");
    assert_eq!(j.out_paths().len(), want.len(), "{what}: output leaves");
    let mut n = 0;
    for (o, i, block) in j.iter() {
        let w = &want[&o.to_string()][i.to_string()];
        assert!(w.is_object(), "{what}: golden has no block d`{o}`/d`{i}`");
        close(&format!("{what} d`{o}`/d`{i}`"), block, &arr(w), 1e-10);
        n += 1;
    }
    let total: usize = want.values().map(|r| r.as_object().unwrap().len()).sum();
    assert_eq!(n, total, "{what}: blocks");
}

fn check_tree_golden<T: Tree, U: Tree>(
    g: &serde_json::Value,
    x: &T,
    f: impl Fn(&T) -> U,
    h: impl Fn(&T) -> Array,
) {
    let name = g["name"].as_str().unwrap();
    let y = f(x);
    close_tree(&format!("{name} value"), &y, &from_golden(&y, &g["value"]), 1e-12);
    let jf = jacfwd_tree(&f)(x);
    let jr = jacrev_tree(&f)(x);
    for j in [&jf, &jr] {
        assert_eq!(j.in_paths().iter().map(|p| p.to_string()).collect::<Vec<_>>(), paths(x));
        assert_eq!(j.out_paths().iter().map(|p| p.to_string()).collect::<Vec<_>>(), paths(&y));
        assert_eq!(j.in_def(), &x.def());
        assert_eq!(j.out_def(), &y.def());
    }
    check_jacobian(&format!("{name} jacfwd"), &jf, &g["jacfwd"]);
    check_jacobian(&format!("{name} jacrev"), &jr, &g["jacrev"]);
    let hs = hessian_tree(&h)(x);
    assert_eq!(hs.out_paths(), hs.in_paths(), "{name}: Hessian of a scalar is input x input");
    check_jacobian(&format!("{name} hessian"), &hs, &g["hessian"]);
    let v = from_golden(x, &g["hvp"]["vectors"]);
    let hv = hvp(&h, x, &v);
    close_tree(&format!("{name} hvp"), &hv, &from_golden(x, &g["hvp"]["out"]), 1e-10);
    // The Hessian-vector product is the Hessian contracted with v, block by block.
    let (hl, vl) = (tree::leaves(&hv), tree::leaves(&v));
    for (a, ha) in hl.iter().enumerate() {
        let mut acc = Array::zeros_of(ha.shape().to_vec(), DType::F64);
        for (b, vb) in vl.iter().enumerate() {
            let blk = hs.block(a, b).reshape([ha.size() as isize, vb.size() as isize]);
            acc += blk.matmul(&vb.reshape([-1])).reshape(ha.shape().to_vec());
        }
        close(&format!("{name} H.v leaf {a}"), &acc, ha, 1e-10);
    }
    // The scalar's row of jacrev, as a tree of the input's type, is the gradient.
    let jh = jacrev_tree(&h)(x);
    close_tree(&format!("{name} jacrev row"), &jh.row(0, x), &grad(&h)(x), 1e-12);
}

#[test]
fn golden_tree_jacobians_and_hessians() {
    let g = golden();
    let tfs = g["tree_functions"].as_array().expect("tree_functions");
    let mut seen = Vec::new();
    for tf in tfs {
        let name = tf["name"].as_str().unwrap();
        match name {
            "tree_mlp" => {
                let like: MlpIn = (
                    BTreeMap::from([
                        ("b".to_string(), Array::zeros([1])),
                        ("w".to_string(), Array::zeros([1])),
                    ]),
                    Array::zeros([1]),
                );
                let x = from_golden(&like, &tf["args"]);
                check_tree_golden(tf, &x, tree_mlp, |px: &MlpIn| tree_mlp(px).1);
            }
            "tree_struct" => {
                let like = StructIn { a: Array::zeros([1]), c: vec![Array::zeros([1]); 2] };
                let x = from_golden(&like, &tf["args"]);
                let h = |p: &StructIn| {
                    let o = tree_struct(p);
                    o["u"].square().sum() + o["v"].sum()
                };
                check_tree_golden(tf, &x, tree_struct, h);
            }
            other => panic!("no twin for tree function {other}"),
        }
        seen.push(name);
    }
    assert_eq!(seen, ["tree_mlp", "tree_struct"]);
}

fn mlp_point() -> MlpIn {
    (
        BTreeMap::from([
            ("b".to_string(), data(&[2], 1, -1.0, 1.0)),
            ("w".to_string(), data(&[3, 2], 2, -1.0, 1.0)),
        ]),
        data(&[4, 3], 3, -1.0, 1.0),
    )
}

#[test]
fn tree_jacobian_api() {
    let x = mlp_point();
    let j = jacrev_tree(tree_mlp)(&x);
    // By path and by position agree; unknown paths are None.
    assert_eq!(j[("0", "0.w")].shape(), &[4, 2, 3, 2]);
    assert_eq!(j[("1", "1")].shape(), &[4, 3]);
    close("get vs block", j.get("0", "0.w").unwrap(), j.block(0, 1), 0.0);
    assert!(j.get("0", "w").is_none() && j.get("2", "1").is_none());
    let missing =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| j[("0", "nope")].clone()))
            .expect_err("panics");
    let msg = missing.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("\"nope\"") && msg.contains("\"0.w\""), "{msg}");
    // A Jacobian is a tree: its leaves are the blocks, paths output ++ input.
    assert_eq!(paths(&j), ["0.0.b", "0.0.w", "0.1", "1.0.b", "1.0.w", "1.1"]);
    let doubled = tree::map(&j, |b| b * 2.0);
    close("tree::map", doubled.block(1, 2), &(j.block(1, 2) * 2.0), 0.0);
    // Array functions: the tree forms have one block, equal to the array forms.
    let v = data(&[3], 4, -1.0, 1.0);
    let f = |v: &Array| v.sin() * v.sum();
    close("jacfwd", jacfwd_tree(f)(&v).block(0, 0), &jacfwd(f)(&v), 1e-14);
    close("jacrev", jacrev_tree(f)(&v).get("", "").unwrap(), &jacrev(f)(&v), 1e-14);
    let s = |v: &Array| (v.sin() * v).sum();
    close("hessian", hessian_tree(s)(&v).block(0, 0), &hessian(s)(&v), 1e-14);
}

#[test]
fn tree_hessian_of_tree_valued_function_nests() {
    // JAX: hessian of (y, s) is ((d2y/dx dx), (d2s/dx dx)); flattened, the output path of
    // a block is the output leaf's path followed by the first input leaf's path.
    let x = mlp_point();
    let hh = hessian_tree(tree_mlp)(&x);
    let hs = hessian_tree(|px: &MlpIn| tree_mlp(px).1)(&x);
    assert_eq!(hh.out_paths().len(), 2 * 3);
    for (i, a) in ["0.b", "0.w", "1"].iter().enumerate() {
        for (jx, b) in ["0.b", "0.w", "1"].iter().enumerate() {
            close(&format!("d2s/d{a}d{b}"), &hh[(&*format!("1.{a}"), *b)], hs.block(i, jx), 1e-12);
        }
    }
    assert_eq!(hh[("0.0.w", "1")].shape(), &[4, 2, 3, 2, 4, 3]);
    // Forward-over-reverse agrees with reverse-over-forward.
    let rf = jacrev_tree(jacfwd_tree(|px: &MlpIn| tree_mlp(px).1))(&x);
    for ((_, _, a), (_, _, b)) in hs.iter().zip(rf.iter()) {
        close("jacrev(jacfwd)", a, b, 1e-12);
    }
}

#[test]
fn per_example_tree_jacobians_under_vmap() {
    // vmap of a Jacobian-valued function: one Jacobian per example, stacked on axis 0.
    let (p, xs) = mlp_point();
    let per = vmap_with(
        |(p, x): &(BTreeMap<String, Array>, Array)| {
            jacfwd_tree(|p: &BTreeMap<String, Array>| (x.matmul(&p["w"]) + &p["b"]).tanh())(p)
        },
        kiln::Axes::tuple((None, Some(0))),
    )(&(p.clone(), xs.clone()));
    assert_eq!(per[("", "w")].shape(), &[4, 2, 3, 2]);
    for i in 0..4 {
        let xi = xs.row_i(i);
        let ji =
            jacrev_tree(|p: &BTreeMap<String, Array>| (xi.matmul(&p["w"]) + &p["b"]).tanh())(&p);
        for (k, (_, _, b)) in ji.iter().enumerate() {
            close("per-example", &tree::leaves(&per)[k].row_i(i), b, 1e-12);
        }
    }
}

#[test]
fn tree_jacobian_edge_cases() {
    // Integer inputs are rejected by name, as in JAX.
    let x = (Array::ones_of([2], DType::F64), Array::from_vec(vec![1i32, 2], [2]));
    let f = |(a, b): &(Array, Array)| a * &lax::convert_element_type(b, DType::F64);
    let e = try_jacfwd_tree(f, &x).map(|_| ()).expect_err("int input");
    assert!(e.to_string().contains("input leaf `1`"), "{e}");
    let e = try_jacrev_tree(f, &x).map(|_| ()).expect_err("int input");
    assert!(e.to_string().contains("input leaf `1`"), "{e}");
    // Empty leaves give empty blocks of the right shapes.
    let x = (Array::ones_of([0, 2], DType::F64), Array::ones_of([3], DType::F64));
    let f = |(a, b): &(Array, Array)| (a.sum() + b.sum(), b * 2.0);
    for j in [jacfwd_tree(f)(&x), jacrev_tree(f)(&x)] {
        assert_eq!(j.block(0, 0).shape(), &[0, 2]);
        assert_eq!(j.block(1, 0).shape(), &[3, 0, 2]);
        close("d(sum b)/db", j.block(0, 1), &Array::ones_of([3], DType::F64), 0.0);
        close("d(2b)/db", j.block(1, 1), &(Array::eye_of(3, DType::F64) * 2.0), 0.0);
    }
    let only_empty = (Array::ones_of([0], DType::F64),);
    let j = jacfwd_tree(|(a,): &(Array,)| a.sum())(&only_empty);
    assert_eq!(j.block(0, 0).shape(), &[0]);
}
