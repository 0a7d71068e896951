//! Every optimizer converges on a quadratic and on the Rosenbrock function (Optax's
//! `alias_test.py` does the same), with gradients from `kiln::grad`.

use kiln::{Array, grad};
use kiln_optim::*;

fn minimize<T: Transform>(
    opt: &T,
    f: impl Fn(&Array) -> Array + Copy,
    x0: &[f32],
    steps: usize,
) -> Array {
    let mut x = Array::from_vec(x0.to_vec(), [x0.len()]);
    let mut s = opt.init(&x);
    for _ in 0..steps {
        let g = grad(f)(&x);
        let (u, ns) = opt.update(g, s, &x);
        s = ns;
        x = apply_updates(&x, &u);
    }
    x
}

fn parabola(x: &Array) -> Array {
    let target = Array::from_vec(vec![1.0f32, -1.0, 1.0], [3]);
    let d = x - &target;
    (&d * &d).sum()
}

fn rosenbrock(x: &Array) -> Array {
    let a = x.slice_axis(0, 0, 1, 1);
    let b = x.slice_axis(0, 1, 2, 1);
    let t1 = 1.0f32 - &a;
    let t2 = &b - &a * &a;
    (&t1 * &t1 + &t2 * &t2 * 100.0f32).sum()
}

fn assert_close(name: &str, x: &Array, want: &[f32], tol: f32) {
    let got = x.to_vec::<f32>();
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tol, "{name}: converged to {got:?}, want {want:?}");
    }
}

macro_rules! optimizers {
    ($f:ident) => {{
        $f("sgd", sgd(0.02, None, false));
        $f("sgd_momentum", sgd(0.002, Some(0.9), false));
        $f("sgd_nesterov", sgd(0.002, Some(0.9), true));
        $f("adam", adam(0.01, 0.9, 0.999, 1e-8));
        $f("adamw", adamw(0.01, 0.9, 0.999, 1e-8, 1e-4, None));
        $f("nadam", nadam(0.01, 0.9, 0.999, 1e-8));
        $f("amsgrad", amsgrad(0.01, 0.9, 0.999, 1e-8));
        $f("lamb", lamb(0.01, 0.9, 0.999, 1e-6, 0.0, None));
        $f("lars", lars(0.5, 0.0, None, 0.001, 0.0, 0.9, false));
        $f("lion", lion(0.001, 0.9, 0.99, 0.0, None));
        $f("rmsprop", rmsprop(0.002, 0.9, 1e-8, None, false));
        $f("rmsprop_centered", rmsprop_centered(0.002, 0.9, 1e-8, None, false));
        $f("adagrad", adagrad(0.5, 0.1, 1e-7));
        $f("adadelta", adadelta(10.0, 0.9, 1e-6, 0.0));
        $f("adabelief", adabelief(0.01, 0.9, 0.999, 1e-16, 1e-16));
        $f(
            "adafactor",
            adafactor(
                0.05,
                AdafactorOptions { multiply_by_parameter_scale: false, ..Default::default() },
            ),
        );
    }};
}

#[test]
fn every_optimizer_minimizes_a_parabola() {
    fn go<T: Transform>(name: &str, opt: T) {
        let x = minimize(&opt, parabola, &[-1.0, 10.0, 1.0], 3000);
        assert_close(name, &x, &[1.0, -1.0, 1.0], 2e-2);
    }
    optimizers!(go);
}

#[test]
fn every_optimizer_minimizes_rosenbrock() {
    fn go<T: Transform>(name: &str, opt: T) {
        let x = minimize(&opt, rosenbrock, &[-0.5, 1.5], 6000);
        assert_close(name, &x, &[1.0, 1.0], 5e-2);
    }
    optimizers!(go);
}
