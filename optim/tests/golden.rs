//! One and ten steps of every optimizer against Optax 0.2.8 (golden/optax.json, written by
//! golden/gen_optax.py), and every schedule at steps 0..14.

mod common;

use common::*;
use kiln::Array;
use kiln_optim::*;

/// Relative tolerance against Optax, element by element (no absolute floor). Most cases match
/// Optax bit for bit; the others differ by a few f32 ulps (worst 5e-7: adagrad's rsqrt).
const RTOL: f64 = 1e-6;

fn check<T: Transform>(name: &str, opt: T) -> f64 {
    let g = golden();
    let p0 = init_params(&g);
    let case = &g["cases"][name];
    assert!(case.is_object(), "no golden case {name}");
    let mut worst = 0.0f64;
    for steps in [1usize, 10] {
        let got = run(&opt, &p0, steps, golden_grad);
        let err = max_rel_err(&got, &case[steps.to_string()]);
        assert!(err <= RTOL, "{name} after {steps} steps: relative error {err:e} > {RTOL:e}");
        worst = worst.max(err);
    }
    eprintln!("{name}: max relative error {worst:e}");
    worst
}

fn warmup_cos() -> Schedule {
    schedule::warmup_cosine_decay(0.0, 0.01, 3, 10, 0.001, 1.0)
}

#[test]
fn sgd_matches_optax() {
    check("sgd", sgd(0.1, None, false));
    check("sgd_momentum", sgd(0.1, Some(0.9), false));
    check("sgd_nesterov", sgd(0.1, Some(0.9), true));
}

#[test]
fn adam_family_matches_optax() {
    check("adam", adam(0.01, 0.9, 0.999, 1e-8));
    check("adam_schedule", adam(warmup_cos(), 0.9, 0.999, 1e-8));
    check("adamw", adamw(0.01, 0.9, 0.999, 1e-8, 0.01, None));
    check("nadam", nadam(0.01, 0.9, 0.999, 1e-8));
    check("amsgrad", amsgrad(0.01, 0.9, 0.999, 1e-8));
    check("adabelief", adabelief(0.01, 0.9, 0.999, 1e-16, 1e-16));
}

#[test]
fn trust_ratio_optimizers_match_optax() {
    check("lamb", lamb(0.01, 0.9, 0.999, 1e-6, 0.01, None));
    check("lars", lars(0.1, 0.01, None, 0.001, 0.0, 0.9, false));
}

#[test]
fn other_optimizers_match_optax() {
    check("lion", lion(0.001, 0.9, 0.99, 0.001, None));
    check("rmsprop", rmsprop(0.01, 0.9, 1e-8, None, false));
    check("rmsprop_centered_momentum", rmsprop_centered(0.01, 0.9, 1e-8, Some(0.9), false));
    check("adagrad", adagrad(0.1, 0.1, 1e-7));
    check("adadelta", adadelta(1.0, 0.9, 1e-6, 0.0));
}

#[test]
fn adafactor_matches_optax() {
    let factored = AdafactorOptions { min_dim_size_to_factor: 2, ..Default::default() };
    check("adafactor", adafactor(0.01, factored));
    check("adafactor_unfactored", adafactor(0.01, AdafactorOptions::default()));
}

#[test]
fn transforms_match_optax() {
    check("ema_debias", (ema(0.9, true), scale(-0.1)));
    check("scale_by_stddev", (scale_by_stddev(0.9, 1e-8, 0.0), scale(-0.01)));
    check("clip", (clip(0.5), scale(-0.1)));
    check("multi_steps_3_sgd", multi_steps(sgd(0.1, Some(0.9), false), 3));
}

#[test]
fn chained_clip_adamw_warmup_cosine_matches_optax() {
    let opt = chain((clip_by_global_norm(1.0), adamw(warmup_cos(), 0.9, 0.999, 1e-8, 0.01, None)));
    check("clip_adamw_warmup_cosine", opt);
}

#[test]
fn schedules_match_optax() {
    let g = golden();
    let cases: Vec<(&str, Schedule)> = vec![
        ("constant", Schedule::from(0.5)),
        ("linear", schedule::linear(1.0, 0.1, 8, 2)),
        ("polynomial", schedule::polynomial(1.0, 0.1, 2.0, 8, 2)),
        ("exponential_decay", schedule::exponential_decay(1.0, 3, 0.5, 1, false, None)),
        (
            "exponential_decay_staircase_end",
            schedule::exponential_decay(1.0, 3, 0.5, 1, true, Some(0.2)),
        ),
        ("cosine_decay", schedule::cosine_decay(1.0, 10, 0.1, 1.0)),
        ("warmup_cosine_decay", warmup_cos()),
        (
            "warmup_exponential",
            schedule::warmup_exponential(0.0, 1.0, 4, 2, 0.5, 0, false, Some(0.1)),
        ),
        ("piecewise_constant", schedule::piecewise_constant(1.0, &[(3, 0.5), (7, 0.1)])),
        ("one_cycle", schedule::one_cycle(10, 1.0, 0.3, 25.0, 1e4)),
        ("join", schedule::join(vec![schedule::linear(0.0, 1.0, 4, 0), Schedule::from(0.3)], &[5])),
    ];
    for (name, s) in cases {
        let want = g["schedules"][name].as_array().unwrap_or_else(|| panic!("no schedule {name}"));
        for (t, w) in want.iter().enumerate() {
            let w = w.as_f64().expect("number");
            let got = s.at(&Array::scalar(t as i32)).item::<f32>() as f64;
            let err = (got - w).abs() / w.abs().max(1e-3);
            assert!(err <= 1e-6, "{name} at step {t}: got {got}, optax {w}");
        }
    }
}
