//! A jitted optimizer step equals an eager one, for every alias and the wrappers.
//!
//! The step is `jit(|(params, state, grads)| update + apply_updates)`; parameters and state
//! go through it for three steps and must match the eager step to ~1e-6 relative (integer
//! leaves such as step counts exactly), with a single trace.

use kiln::{Array, DType, Jit, Tree, random, tree};
use kiln_optim::*;
use std::collections::BTreeMap;

type Params = BTreeMap<String, Array>;

const STEPS: usize = 3;
const RTOL: f64 = 1e-6;

fn params() -> Params {
    let mut p = Params::new();
    p.insert("b".into(), random::normal(&random::key(1), &[4], DType::F32));
    // 6 x 5 so that adafactor with `min_dim_size_to_factor <= 5` factors it.
    p.insert("w".into(), random::normal(&random::key(2), &[6, 5], DType::F32));
    p
}

/// A gradient that depends on the parameters and the step (never all zero).
fn gradient(p: &Params, step: usize) -> Params {
    tree::map(p, |x| x * 2.0 + x.sin() + 0.1 * (step as f64 + 1.0))
}

#[track_caller]
fn close_tree<T: Tree>(what: &str, got: &T, want: &T) {
    assert_eq!(got.def(), want.def(), "{what}: tree structure");
    for ((path, g), (_, w)) in tree::leaves_with_path(got).iter().zip(tree::leaves_with_path(want))
    {
        assert_eq!((g.shape(), g.dtype()), (w.shape(), w.dtype()), "{what} at {path}");
        for (i, (a, b)) in g.to_f64_vec().iter().zip(w.to_f64_vec()).enumerate() {
            let ok =
                if w.dtype().is_float() { (a - b).abs() <= RTOL * b.abs() + 1e-9 } else { *a == b };
            assert!(ok, "{what} at {path}[{i}]: jit {a}, eager {b}");
        }
    }
}

/// Runs `STEPS` eager and jitted steps of `opt` from the same start with the same
/// gradients; `between` may edit both states before each step (the same way).
fn check_with<T>(name: &str, opt: T, between: impl Fn(usize, &mut T::State<Params>))
where
    T: Transform + Clone + 'static,
    T::State<Params>: 'static,
{
    let o = opt.clone();
    let step = Jit::new(move |(p, s, g): &(Params, T::State<Params>, Params)| {
        let (u, s) = o.update(g.clone(), s.clone(), p);
        (apply_updates(p, &u), s)
    });
    let p0 = params();
    let (mut pe, mut se) = (p0.clone(), opt.init(&p0));
    let (mut pj, mut sj) = (p0.clone(), opt.init(&p0));
    for i in 0..STEPS {
        between(i, &mut se);
        between(i, &mut sj);
        let g = gradient(&pe, i);
        let (u, s) = opt.update(g.clone(), se, &pe);
        (pe, se) = (apply_updates(&pe, &u), s);
        (pj, sj) = step.call(&(pj, sj, g));
        close_tree(&format!("{name}: params after step {}", i + 1), &pj, &pe);
        close_tree(&format!("{name}: state after step {}", i + 1), &sj, &se);
    }
    let moved = tree::leaves(&pe)
        .iter()
        .zip(tree::leaves(&p0))
        .any(|(a, b)| a.to_f64_vec().iter().zip(b.to_f64_vec()).any(|(x, y)| (x - y).abs() > 1e-6));
    assert!(moved, "{name}: the parameters did not move, the check would be vacuous");
    assert_eq!(step.traces(), 1, "{name}: the jitted step retraced");
}

fn check<T>(name: &str, opt: T)
where
    T: Transform + Clone + 'static,
    T::State<Params>: 'static,
{
    check_with(name, opt, |_, _| {});
}

#[test]
fn sgd_family() {
    check("sgd", sgd(0.1, None, false));
    check("sgd momentum", sgd(0.1, Some(0.9), false));
    check("sgd nesterov", sgd(0.1, Some(0.9), true));
    check(
        "sgd warmup-cosine",
        sgd(schedule::warmup_cosine_decay(0.0, 0.1, 2, 10, 0.01, 1.0), None, false),
    );
    check("lars", lars(0.1, 1e-4, None, 0.001, 0.0, 0.9, false));
    check("lars nesterov", lars(0.1, 1e-4, None, 0.001, 1e-8, 0.9, true));
}

#[test]
fn adam_family() {
    check("adam", adam(1e-2, 0.9, 0.999, 1e-8));
    check(
        "adam exponential-decay",
        adam(schedule::exponential_decay(1e-2, 1, 0.5, 0, false, None), 0.9, 0.999, 1e-8),
    );
    check("adamw", adamw(1e-2, 0.9, 0.999, 1e-8, 1e-2, None));
    let only_w = Mask::new(|path, _| path.to_string().contains('w'));
    check("adamw masked", adamw(1e-2, 0.9, 0.999, 1e-8, 1e-2, Some(only_w)));
    check("nadam", nadam(1e-2, 0.9, 0.999, 1e-8));
    check("amsgrad", amsgrad(1e-2, 0.9, 0.999, 1e-8));
    check("lamb", lamb(1e-2, 0.9, 0.999, 1e-6, 1e-2, None));
    check("adabelief", adabelief(1e-2, 0.9, 0.999, 1e-16, 1e-16));
    check("lion", lion(1e-3, 0.9, 0.99, 1e-3, None));
}

#[test]
fn adaptive_family() {
    check("rmsprop", rmsprop(1e-2, 0.9, 1e-8, None, false));
    check("rmsprop momentum", rmsprop(1e-2, 0.9, 1e-8, Some(0.9), true));
    check("rmsprop centered", rmsprop_centered(1e-2, 0.9, 1e-8, Some(0.9), false));
    check("adagrad", adagrad(0.1, 0.1, 1e-7));
    check("adadelta", adadelta(1.0, 0.9, 1e-6, 1e-3));
    check("adafactor (defaults: unfactored)", adafactor(1e-2, AdafactorOptions::default()));
    let factored = AdafactorOptions {
        min_dim_size_to_factor: 4,
        momentum: Some(0.9),
        weight_decay_rate: Some(1e-3),
        ..AdafactorOptions::default()
    };
    check("adafactor (factored, momentum, decay)", adafactor(1e-2, factored));
}

#[test]
fn inject_hyperparams_changes_the_rate_without_retracing() {
    let opt =
        inject_hyperparams(|hp| adamw(hp["learning_rate"].clone(), 0.9, 0.999, 1e-8, 1e-2, None))
            .value("learning_rate", 0.1);
    // A new learning rate written into the state before every step: a new value, the same
    // signature, so the jitted step must not retrace (check_with asserts one trace).
    check_with("inject_hyperparams value", opt, |i, s| {
        let lr = [0.1f32, 0.03, 0.5][i];
        s.hyperparams.insert("learning_rate".into(), Array::scalar(lr));
    });
    let scheduled = inject_hyperparams(|hp| sgd(hp["learning_rate"].clone(), Some(0.9), false))
        .schedule("learning_rate", schedule::linear(0.1, 0.01, 3, 0));
    check("inject_hyperparams schedule", scheduled);
}

#[test]
fn wrappers() {
    check(
        "chain(clip_by_global_norm, adam)",
        chain((clip_by_global_norm(1.0), adam(1e-2, 0.9, 0.999, 1e-8))),
    );
    check("multi_steps(adam, 2)", multi_steps(adam(1e-2, 0.9, 0.999, 1e-8), 2));
    check("apply_if_finite(adam)", apply_if_finite(adam(1e-2, 0.9, 0.999, 1e-8), 2));
    let only_b = Mask::new(|path, _| path.to_string().contains('b'));
    check("masked(sgd momentum)", masked(sgd(0.1, Some(0.9), false), only_b));
}
