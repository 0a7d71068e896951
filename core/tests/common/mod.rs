//! The per-primitive row table shared by the test binaries (prim_table: AD, jaxpr and jit
//! checks; vmap: batching checks): one row per primitive with its arguments.
#![allow(dead_code)] // each test binary reads a different subset of the rows' fields and helpers

use kiln::lax::{self, ConvParams};
use kiln::prim::WindowKind;
use kiln::{Array, DType};

/// Deterministic f64 test data in `[lo, hi)`.
pub fn data(shape: &[usize], seed: u64, lo: f64, hi: f64) -> Array {
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

pub fn ints(v: &[i32], shape: &[usize]) -> Array {
    Array::from_vec(v.to_vec(), shape.to_vec())
}

pub type RowFn = Box<dyn Fn(&Vec<Array>) -> Array>;

pub struct Row {
    pub name: &'static str,
    pub args: Vec<Array>,
    pub f: RowFn,
    /// Highest derivative order to check (0: not differentiable, only evaluated).
    pub order: usize,
    /// Tolerance of the gradient checks (looser for rows that compute in f32).
    pub tol: f64,
}

impl Row {
    pub fn tol(mut self, tol: f64) -> Row {
        self.tol = tol;
        self
    }
}

pub fn row(
    name: &'static str,
    args: Vec<Array>,
    order: usize,
    f: impl Fn(&Vec<Array>) -> Array + 'static,
) -> Row {
    Row { name, args, f: Box::new(f), order, tol: 1e-5 }
}

pub fn unary(name: &'static str, lo: f64, hi: f64, f: fn(&Array) -> Array) -> Row {
    row(name, vec![data(&[2, 3], 1, lo, hi)], 2, move |a| f(&a[0]))
}

pub fn binary(
    name: &'static str,
    (lo, hi): (f64, f64),
    (lo2, hi2): (f64, f64),
    f: fn(&Array, &Array) -> Array,
) -> Row {
    row(name, vec![data(&[3, 2], 2, lo, hi), data(&[3, 2], 3, lo2, hi2)], 2, move |a| {
        f(&a[0], &a[1])
    })
}

pub fn rows() -> Vec<Row> {
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
        unary("gelu", -3.0, 3.0, |x| lax::gelu(x, true)),
        unary("gelu_exact", -3.0, 3.0, |x| lax::gelu(x, false)),
        unary("gelu_grad", -3.0, 3.0, |x| lax::gelu_grad(x, true)),
        unary("gelu_grad_exact", -3.0, 3.0, |x| lax::gelu_grad(x, false)),
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
