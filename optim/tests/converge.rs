//! Every optimizer converges on a quadratic and on the Rosenbrock function, with gradients
//! from `kiln::grad`: Optax's `alias_test.py::test_optimization`, with its problems (parabola
//! from `[-1, 10, 1]`, Rosenbrock `a = 1, b = 100` from `[0, 0]`), its hyper-parameters,
//! its step count (10000) and its tolerance (`rtol = atol = 3e-2`).

use kiln::{Array, grad};
use kiln_optim::*;

fn minimize<T: Transform>(opt: &T, f: impl Fn(&Array) -> Array + Copy, x0: &[f32]) -> Array {
    let mut x = Array::from_vec(x0.to_vec(), [x0.len()]);
    let mut s = opt.init(&x);
    for _ in 0..STEPS {
        let g = grad(f)(&x);
        let (u, ns) = opt.update(g, s, &x);
        s = ns;
        x = apply_updates(&x, &u);
    }
    x
}

/// Optax's `alias_test` runs every optimizer this many steps.
const STEPS: usize = 10_000;

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

/// `chex.assert_trees_all_close(got, want, rtol=3e-2, atol=3e-2)`.
fn assert_close(name: &str, x: &Array, want: &[f32]) {
    let got = x.to_vec::<f32>();
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 3e-2 + 3e-2 * w.abs(),
            "{name}: after {STEPS} steps at {got:?}, want {want:?}"
        );
    }
}

/// Calls `$f(name, optimizer)` for every optimizer, with
/// the hyper-parameters of Optax's `_OPTIMIZERS_UNDER_TEST` (Optax's defaults elsewhere).
macro_rules! optimizers {
    ($f:ident) => {{
        $f("sgd_momentum", sgd(1e-3, Some(0.9), false));
        $f("sgd_nesterov", sgd(1e-3, Some(0.9), true));
        $f("adam", adam(0.1, 0.9, 0.999, 1e-8));
        $f("adamw", adamw(0.1, 0.9, 0.999, 1e-8, 1e-4, None));
        $f("nadam", nadam(1e-2, 0.9, 0.999, 1e-8));
        $f("amsgrad", amsgrad(0.1, 0.9, 0.999, 1e-8));
        $f("lamb", lamb(1e-3, 0.9, 0.999, 1e-6, 0.0, None));
        $f("lars", lars(1.0, 0.0, None, 0.001, 0.0, 0.9, false));
        $f("lion", lion(1e-2, 0.9, 0.99, 1e-4, None));
        $f("rmsprop", rmsprop(5e-3, 0.9, 1e-8, None, false));
        $f("rmsprop_momentum", rmsprop(5e-3, 0.9, 1e-8, Some(0.9), false));
        $f("rmsprop_centered", rmsprop_centered(5e-3, 0.9, 1e-8, None, false));
        $f("adagrad", adagrad(1.0, 0.1, 1e-7));
        $f("adadelta", adadelta(0.1, 0.9, 1e-6, 0.0));
        $f("adabelief", adabelief(1e-2, 0.9, 0.999, 1e-16, 1e-16));
        $f("adafactor", adafactor(5e-3, AdafactorOptions::default()));
    }};
}

#[test]
fn every_optimizer_minimizes_a_parabola() {
    fn go<T: Transform>(name: &str, opt: T) {
        let x = minimize(&opt, parabola, &[-1.0, 10.0, 1.0]);
        assert_close(name, &x, &[1.0, -1.0, 1.0]);
    }
    optimizers!(go);
}

#[test]
fn every_optimizer_minimizes_rosenbrock() {
    fn go<T: Transform>(name: &str, opt: T) {
        let x = minimize(&opt, rosenbrock, &[0.0, 0.0]);
        assert_close(name, &x, &[1.0, 1.0]);
    }
    optimizers!(go);
}
