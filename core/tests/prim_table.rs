//! The per-primitive table: one row per primitive, and generic checks run on every row.
//!
//! Every differentiable row is checked with `check_grads` to order 2 (JVP against central
//! differences in f64, VJP by the dot-product test, and both again on the derivatives),
//! and every row's jaxpr (and the jaxpr of its gradient) must typecheck.

use kiln::lax;
use kiln::testing::{GradCheck, check_grads_with};
use kiln::{Array, grad, make_jaxpr};

mod common;
use common::{RowFn, data, rows};

#[test]
fn every_row_typechecks_and_evaluates() {
    for r in rows() {
        let jaxpr = make_jaxpr(|a: &Vec<Array>| (r.f)(a))(&r.args);
        jaxpr.typecheck().unwrap_or_else(|e| panic!("{}: {e}\n{jaxpr}", r.name));
        let eager = (r.f)(&r.args);
        let staged = jaxpr.eval(&r.args).unwrap_or_else(|e| panic!("{}: {e}", r.name));
        assert_eq!(
            eager.to_bytes(),
            staged[0].to_bytes(),
            "{}: jaxpr eval differs from eager",
            r.name
        );
    }
}

#[test]
fn every_differentiable_row_passes_check_grads_to_order_2() {
    let mut failures = Vec::new();
    for r in rows().into_iter().filter(|r| r.order > 0) {
        let cfg = GradCheck { order: r.order, rtol: r.tol, atol: r.tol, ..GradCheck::default() };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_grads_with(|a: &Vec<Array>| (r.f)(a), &r.args, &cfg)
        }));
        if let Err(e) = result {
            let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
            failures.push(format!("row `{}`: {msg}", r.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed check_grads:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn stop_gradient_has_zero_derivative() {
    let x = data(&[3], 1, -1.0, 1.0);
    let g = grad(|x: &Array| lax::reduce_sum(&lax::mul(&lax::stop_gradient(x), x), &[0]))(&x);
    assert_eq!(g.to_f64_vec(), x.to_f64_vec());
}

#[test]
fn gradient_jaxprs_typecheck() {
    for r in rows().into_iter().filter(|r| r.order > 0) {
        let sum_f = |a: &Vec<Array>| {
            let y = (r.f)(a);
            let axes: Vec<usize> = (0..y.ndim()).collect();
            lax::reduce_sum(&y, &axes)
        };
        let jaxpr = make_jaxpr(|a: &Vec<Array>| grad(sum_f)(a))(&r.args);
        jaxpr.typecheck().unwrap_or_else(|e| panic!("{}: {e}\n{jaxpr}", r.name));
    }
}

/// `jit` equals eager on every row, and so do `grad(jit(f))` and `jit(grad(f))`.
#[test]
fn every_row_jit_equals_eager() {
    use kiln::jit::Jit;
    use std::rc::Rc;
    let close = |name: &str, what: &str, got: &Array, want: &Array, tol: f64| {
        assert_eq!(got.shape(), want.shape(), "{name}: {what}: shape");
        assert_eq!(got.dtype(), want.dtype(), "{name}: {what}: dtype");
        for (i, (g, w)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
            let ok = (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan());
            assert!(ok, "{name}: {what}[{i}]: jit {g}, eager {w}");
        }
    };
    for r in rows() {
        let f: Rc<RowFn> = Rc::new(r.f);
        let fj = f.clone();
        let jitted = Jit::new(move |a: &Vec<Array>| fj(a));
        let eager = f(&r.args);
        close(r.name, "jit", &jitted.call(&r.args), &eager, 1e-6);
        // A second call hits the cache.
        close(r.name, "jit (cached)", &jitted.call(&r.args), &eager, 1e-6);
        assert_eq!(jitted.traces(), 1, "{}: retraced on the same signature", r.name);
        if r.order > 0 {
            let sum_f = |g: Rc<RowFn>| {
                move |a: &Vec<Array>| {
                    let y = g(a);
                    let axes: Vec<usize> = (0..y.ndim()).collect();
                    lax::reduce_sum(&y, &axes)
                }
            };
            let want = grad(sum_f(f.clone()))(&r.args);
            let inner = Rc::new(Jit::new(sum_f(f.clone())));
            let got = grad(move |a: &Vec<Array>| inner.call(a))(&r.args);
            let g2 = f.clone();
            let jit_grad = Jit::new(move |a: &Vec<Array>| grad(sum_f(g2.clone()))(a));
            let got2 = jit_grad.call(&r.args);
            for (k, w) in want.iter().enumerate() {
                close(r.name, &format!("grad(jit) arg {k}"), &got[k], w, 1e-6);
                close(r.name, &format!("jit(grad) arg {k}"), &got2[k], w, 1e-6);
            }
        }
    }
}

/// `jax.nn.gelu` in float64 (jax 0.10.2, `jax_enable_x64`), with `jax.grad` once and
/// twice, at these points, for `approximate=True` and `False`.
#[test]
fn gelu_matches_jax() {
    let xs = [-3.0, -1.5, -0.5, 0.0, 0.3, 1.0, 2.5];
    #[rustfmt::skip]
    let golden: [(bool, [[f64; 7]; 3]); 2] = [
        (true, [
            [-0.003637392081773161, -0.10042842301976715, -0.15428599017485609, 0.0,
             0.18537092354275922, 0.8411919906082768, 2.4849157339100016],
            [-0.011584166630970047, -0.1277107931514332, 0.1326300964653577, 0.5,
             0.7322954516388018, 1.0829640838457828, 1.0379515762126654],
            [-0.03176765888607522, -0.03051819648422504, 0.6155068951159849,
             0.7978845608028654, 0.7281484484339119, 0.24214819798377296,
             -0.07624539207361157],
        ]),
        (false, [
            [-0.004049694094890279, -0.10021080190328709, -0.15426876936299344, 0.0,
             0.18537342665668577, 0.8413447460685429, 2.4844758366855597],
            [-0.01194564720418392, -0.12746919222997952, 0.13250487534383715, 0.5,
             0.7323277668271098, 1.0833154705876862, 1.037611085908145],
            [-0.03102293888356603, -0.03237939891647296, 0.616114321837524,
             0.7978845608028654, 0.728450727529601, 0.24197072451914328,
             -0.07449527709766625],
        ]),
    ];
    for (approximate, [y, dy, ddy]) in golden {
        let f = move |x: &Array| lax::gelu(x, approximate);
        let df = move |x: &Array| grad(move |x: &Array| f(x).sum())(x);
        let ddf = move |x: &Array| grad(move |x: &Array| df(x).sum())(x);
        let x = Array::from_f64_vec(&xs, [xs.len()], kiln::DType::F64);
        for (what, got, want) in
            [("gelu", f(&x), y), ("gelu'", df(&x), dy), ("gelu''", ddf(&x), ddy)]
        {
            for (i, (g, w)) in got.to_f64_vec().iter().zip(want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-13 * (1.0 + w.abs()),
                    "approximate={approximate} {what}({}) = {g}, jax {w}",
                    xs[i]
                );
            }
        }
    }
}

#[test]
fn gelu_of_integers_is_a_clear_error() {
    let x = Array::from_vec(vec![1i32, 2], [2]);
    for e in [lax::try_gelu(&x, true).unwrap_err(), lax::try_gelu_grad(&x, false).unwrap_err()] {
        let msg = e.to_string();
        assert!(msg.contains("gelu") && msg.contains("floating-point"), "{msg}");
    }
}
