//! Derivatives of composite functions against golden values from JAX (float64), produced
//! by `bench/golden/gen_ad.py` into `bench/golden/ad.json`: values, gradients, JVPs,
//! Hessian-vector products (jvp of grad), full Hessians, and Jacobians built from jvp
//! (forward) and vjp (reverse) along basis vectors.

use kiln::lax::{self, ConvParams};
use kiln::{Array, grad, jvp, vjp};
use serde_json::Value;

fn golden() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/golden/ad.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("json")
}

fn arr(v: &Value) -> Array {
    let shape: Vec<usize> =
        v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let vals: Vec<f64> =
        v["values"].as_array().unwrap().iter().map(|d| d.as_f64().unwrap()).collect();
    if v["dtype"].as_str().unwrap().starts_with("int") {
        let ints: Vec<i32> = vals.iter().map(|&x| x as i32).collect();
        Array::from_vec(ints, shape)
    } else {
        Array::from_vec(vals, shape)
    }
}

#[track_caller]
fn close(what: &str, got: &Array, want: &Array) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (g, w)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
        assert!((g - w).abs() <= 1e-10 + 1e-9 * w.abs(), "{what}[{i}]: got {g}, JAX {w}");
    }
}

type F = Box<dyn Fn(&Vec<Array>) -> Array>;

/// The Rust twin of each golden function over its differentiable arguments; `fixed` holds
/// the non-differentiable ones.
fn function(name: &str, fixed: Vec<Array>) -> F {
    match name {
        "tanh_sum" => Box::new(|a| a[0].tanh().sum()),
        "softplus_mean" => Box::new(|a| a[0].exp().log1p().mean()),
        "logsumexp" => Box::new(|a| a[0].logsumexp()),
        "mlp" => Box::new(|a| {
            let h = (a[3].matmul(&a[0]) + &a[1]).tanh();
            h.matmul(&a[2]).square().sum()
        }),
        "softmax_xent" => Box::new(move |a| {
            let lp = a[0].log_softmax(-1);
            let picked = lp.take_along_axis(&fixed[0].reshape([-1, 1]), -1);
            -picked.mean()
        }),
        "sin_cos_prod" => Box::new(|a| (a[0].sin() * a[1].cos()).sum()),
        "div_sqrt" => Box::new(|a| (&a[0] / (&a[1] * &a[1] + 1.0).sqrt()).sum()),
        "max_reduce" => Box::new(|a| a[0].max_axes([1], false).sum()),
        "pow_exp" => Box::new(|a| (lax::integer_pow(&a[0], 3) * (-&a[0]).exp()).sum()),
        "matmul_chain" => Box::new(|a| a[0].matmul(&a[1]).matmul(&a[2]).sum()),
        "norm" => Box::new(|a| (&a[0] * &a[0]).sum().sqrt()),
        "where_relu" => Box::new(|a| {
            let x = &a[0];
            kiln::where_(x.gt(0.0), x, x * 0.1).square().sum()
        }),
        "layernorm" => Box::new(|a| {
            let x = &a[0];
            let mu = x.mean_axes([-1], true);
            let var = x.var_axes([-1], true);
            ((x - &mu) / (var + 1e-5).sqrt() * &a[1]).sum()
        }),
        "conv2d" => Box::new(|a| {
            let mut p = ConvParams::new(2);
            p.padding = vec![(1, 1), (1, 1)];
            lax::conv_general_dilated(&a[0], &a[1], &p).square().sum()
        }),
        "cumsum" => Box::new(|a| a[0].cumsum(0).square().sum()),
        "vec_tanh_mul" => Box::new(|a| a[0].tanh() * lax::rev(&a[0], &[0])),
        "vec_softmax" => Box::new(|a| a[0].softmax(0)),
        "vec_outer" => Box::new(|a| a[0].outer(&a[0]).reshape([-1])),
        other => panic!("no Rust twin for golden function {other}"),
    }
}

/// Splits a golden function's arguments into differentiable ones and fixed ones.
fn args(f: &Value) -> (Vec<Array>, Vec<String>, Vec<Array>) {
    let (mut diff, mut names, mut fixed) = (Vec::new(), Vec::new(), Vec::new());
    for a in f["args"].as_array().unwrap() {
        if a.get("differentiable").and_then(Value::as_bool).unwrap_or(true) {
            diff.push(arr(a));
            names.push(a["name"].as_str().unwrap().to_string());
        } else {
            fixed.push(arr(a));
        }
    }
    (diff, names, fixed)
}

fn basis(like: &Array, i: usize) -> Array {
    let mut v = vec![0.0f64; like.size()];
    v[i] = 1.0;
    Array::from_vec(v, like.shape().to_vec())
}

#[test]
fn scalar_functions_match_jax() {
    let g = golden();
    for fj in g["functions"].as_array().unwrap() {
        let name = fj["name"].as_str().unwrap();
        let (x, names, fixed) = args(fj);
        let f = function(name, fixed);
        let value = f(&x);
        assert!(
            (value.item::<f64>() - fj["value"].as_f64().unwrap()).abs() < 1e-10,
            "{name}: value"
        );
        let gr = grad(&f)(&x);
        for (i, n) in names.iter().enumerate() {
            close(&format!("{name}: grad {n}"), &gr[i], &arr(&fj["grad"][n]));
        }
        let t: Vec<Array> = names.iter().map(|n| arr(&fj["jvp"]["tangents"][n])).collect();
        let (_, y_dot) = jvp(&f, &x, &t);
        let want = fj["jvp"]["tangent_out"].as_f64().unwrap();
        assert!((y_dot.item::<f64>() - want).abs() < 1e-10 + 1e-9 * want.abs(), "{name}: jvp");
        let v: Vec<Array> = names.iter().map(|n| arr(&fj["hvp"]["vectors"][n])).collect();
        let (_, hvp) = jvp(|x: &Vec<Array>| grad(&f)(x), &x, &v);
        for (i, n) in names.iter().enumerate() {
            close(&format!("{name}: hvp {n}"), &hvp[i], &arr(&fj["hvp"]["out"][n]));
        }
        if let Some(h) = fj["extra"].get("hessian") {
            // Hessian row by row: jvp of grad along each basis vector of the single argument.
            let want = arr(h);
            let n = x[0].size();
            let mut rows = Vec::new();
            for i in 0..n {
                let e = vec![basis(&x[0], i)];
                let (_, row) = jvp(|x: &Vec<Array>| grad(&f)(x), &x, &e);
                rows.push(row[0].reshape([-1]));
            }
            close(
                &format!("{name}: hessian"),
                &kiln::stack(&rows, 0)
                    .reshape(want.shape().iter().map(|&d| d as isize).collect::<Vec<_>>()),
                &want,
            );
        }
        if let Some(gg) = fj["extra"].get("grad_of_grad_sum") {
            let got = grad(|x: &Vec<Array>| grad(&f)(x)[0].sum())(&x);
            close(&format!("{name}: grad of grad"), &got[0], &arr(gg));
        }
    }
}

#[test]
fn jacobians_match_jax_forward_and_reverse() {
    let g = golden();
    for fj in g["vector_functions"].as_array().unwrap() {
        let name = fj["name"].as_str().unwrap();
        let (x, _, fixed) = args(fj);
        let f = function(name, fixed);
        let y = f(&x);
        let (n_out, n_in) = (y.size(), x[0].size());
        // forward: one jvp per input basis vector gives a column
        let cols: Vec<Array> = (0..n_in).map(|j| jvp(&f, &x, &vec![basis(&x[0], j)]).1).collect();
        let jac_fwd = kiln::stack(&cols, 1);
        // reverse: one vjp per output basis vector gives a row
        let (_, pullback) = vjp(|x: &Vec<Array>| f(x), &x);
        let rows: Vec<Array> = (0..n_out).map(|i| pullback(&basis(&y, i))[0].clone()).collect();
        let jac_rev = kiln::stack(&rows, 0);
        let want_f = arr(&fj["jacfwd"]);
        let want_r = arr(&fj["jacrev"]);
        close(
            &format!("{name}: jacfwd"),
            &jac_fwd.reshape([n_out as isize, n_in as isize]),
            &want_f.reshape([n_out as isize, n_in as isize]),
        );
        close(
            &format!("{name}: jacrev"),
            &jac_rev,
            &want_r.reshape([n_out as isize, n_in as isize]),
        );
    }
}
