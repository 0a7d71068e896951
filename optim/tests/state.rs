//! Optimizer state is a tree: meaningful key paths, flatten/unflatten round trips, and the
//! wrappers (`masked`, `multi_transform`, `multi_steps`, `apply_if_finite`,
//! `inject_hyperparams`, `add_decayed_weights` with a mask) behave as documented.

mod common;

use common::*;
use kiln::{Array, tree};
use kiln_optim::*;

fn paths<T: kiln::Tree>(t: &T) -> Vec<String> {
    tree::leaves_with_path(t).into_iter().map(|(p, _)| p.to_string()).collect()
}

#[test]
fn state_key_paths_are_meaningful() {
    let g = golden();
    let p = init_params(&g);
    let opt = chain((clip_by_global_norm(1.0), adamw(0.01, 0.9, 0.999, 1e-8, 0.01, None)));
    let s = opt.init(&p);
    assert_eq!(
        paths(&s),
        ["1.0.count", "1.0.mu.b", "1.0.mu.w", "1.0.nu.b", "1.0.nu.w", "1.1.count", "1.2.count"]
    );
}

#[test]
fn state_round_trips_through_flatten_unflatten() {
    let g = golden();
    let p0 = init_params(&g);
    let opt = chain((clip_by_global_norm(1.0), adamw(0.01, 0.9, 0.999, 1e-8, 0.01, None)));

    // Five steps straight through.
    let straight = run(&opt, &p0, 5, golden_grad);

    // Two steps, then flatten the state to host vectors and rebuild it from a fresh init.
    let mut p = p0.clone();
    let mut s = opt.init(&p);
    for _ in 0..2 {
        let (u, ns) = opt.update(golden_grad(&p), s, &p);
        s = ns;
        p = apply_updates(&p, &u);
    }
    let saved: Vec<(Vec<f32>, Vec<usize>, kiln::DType)> = tree::leaves(&s)
        .iter()
        .map(|a| {
            (a.to_f64_vec().iter().map(|&x| x as f32).collect(), a.shape().to_vec(), a.dtype())
        })
        .collect();
    let restored_leaves: Vec<Array> = saved
        .iter()
        .map(|(v, shape, dt)| {
            let f: Vec<f64> = v.iter().map(|&x| x as f64).collect();
            Array::from_f64_vec(&f, shape.clone(), *dt)
        })
        .collect();
    let mut s = tree::unflatten(&opt.init(&p0), restored_leaves);
    assert_eq!(s.1.0.count.item::<i32>(), 2);
    for _ in 0..3 {
        let (u, ns) = opt.update(golden_grad(&p), s, &p);
        s = ns;
        p = apply_updates(&p, &u);
    }
    for k in ["b", "w"] {
        assert_eq!(p[k].to_vec::<f32>(), straight[k].to_vec::<f32>(), "leaf {k}");
    }
}

#[test]
fn masked_weight_decay_skips_unselected_leaves() {
    let g = golden();
    let p = init_params(&g);
    let only_matrices = Mask::new(|_, a| a.ndim() >= 2);
    let opt = add_decayed_weights(0.5, Some(only_matrices));
    let zeros = tree::map(&p, |x| x.zeros_like());
    let (u, _) = opt.update(zeros, opt.init(&p), &p);
    assert_eq!(u["b"].to_vec::<f32>(), vec![0.0, 0.0]);
    assert_eq!(u["w"].to_vec::<f32>(), (&p["w"] * 0.5).to_vec::<f32>());
}

#[test]
fn masked_applies_inner_to_selected_leaves_only() {
    let g = golden();
    let p = init_params(&g);
    let opt = masked(scale(-2.0), Mask::new(|path, _| path.to_string() == "w"));
    opt.init(&p); // `scale` keeps no state: its state is `()`
    let (u, ()) = opt.update(p.clone(), (), &p);
    assert_eq!(u["b"].to_vec::<f32>(), p["b"].to_vec::<f32>());
    assert_eq!(u["w"].to_vec::<f32>(), (&p["w"] * -2.0).to_vec::<f32>());
}

#[test]
fn multi_transform_partitions_by_label() {
    let g = golden();
    let p = init_params(&g);
    let labels = Labels::new(|path, _| if path.to_string() == "b" { 1 } else { 0 });
    let opt = multi_transform((sgd(0.1, None, false), sgd(0.0, None, false)), labels);
    let after = run(&opt, &p, 3, golden_grad);
    assert_eq!(after["b"].to_vec::<f32>(), p["b"].to_vec::<f32>());
    let want = run(&sgd(0.1, None, false), &p, 3, golden_grad);
    assert_eq!(after["w"].to_vec::<f32>(), want["w"].to_vec::<f32>());
}

#[test]
fn multi_steps_emits_every_k_with_the_mean() {
    let p = Array::zeros([2]);
    let opt = multi_steps(sgd(1.0, None, false), 2);
    let s = opt.init(&p);
    let (u, s) = opt.update(Array::from_vec(vec![1.0f32, 2.0], [2]), s, &p);
    assert_eq!(u.to_vec::<f32>(), vec![0.0, 0.0]);
    let (u, s) = opt.update(Array::from_vec(vec![3.0f32, 4.0], [2]), s, &p);
    assert_eq!(u.to_vec::<f32>(), vec![-2.0, -3.0]);
    assert_eq!(s.mini_step.item::<i32>(), 0);
    assert_eq!(s.gradient_step.item::<i32>(), 1);
    assert_eq!(s.acc_grads.to_vec::<f32>(), vec![0.0, 0.0]);
}

#[test]
fn apply_if_finite_skips_and_counts_non_finite_updates() {
    let p = Array::zeros([2]);
    let opt = apply_if_finite(adam(0.1, 0.9, 0.999, 1e-8), 1);
    let s = opt.init(&p);
    let (u, s) = opt.update(Array::from_vec(vec![1.0f32, f32::NAN], [2]), s, &p);
    assert_eq!(u.to_vec::<f32>(), vec![0.0, 0.0]);
    assert!(!s.last_finite.item::<bool>());
    assert_eq!(s.total_notfinite.item::<i32>(), 1);
    assert_eq!(s.inner.0.count.item::<i32>(), 0, "inner state must be untouched");
    let (u, s) = opt.update(Array::from_vec(vec![1.0f32, 1.0], [2]), s, &p);
    assert!(u.to_vec::<f32>().iter().all(|x| x.is_finite() && *x != 0.0));
    assert_eq!(s.notfinite_count.item::<i32>(), 0);
    assert_eq!(s.total_notfinite.item::<i32>(), 1);
    assert_eq!(s.inner.0.count.item::<i32>(), 1);
    // Two non-finite updates in a row exceed max_consecutive_errors = 1: the second goes through.
    let (_, s) = opt.update(Array::from_vec(vec![f32::INFINITY, 1.0], [2]), s, &p);
    let (_, s) = opt.update(Array::from_vec(vec![f32::INFINITY, 1.0], [2]), s, &p);
    assert_eq!(s.notfinite_count.item::<i32>(), 2);
    assert_eq!(s.total_notfinite.item::<i32>(), 3);
    assert_eq!(s.inner.0.count.item::<i32>(), 2);
}

#[test]
fn inject_hyperparams_reads_values_and_schedules_from_state() {
    let opt = inject_hyperparams(|hp| adamw(hp["lr"].clone(), 0.9, 0.999, 1e-8, 0.0, None))
        .schedule("lr", schedule::linear(1.0, 0.0, 4, 0))
        .value("unused", 2.0);
    let p = Array::zeros([1]);
    let s = opt.init(&p);
    assert_eq!(
        paths(&s)[..3],
        ["count".to_string(), "hyperparams.lr".into(), "hyperparams.unused".into()]
    );
    let (_, s) = opt.update(Array::ones([1]), s, &p);
    let (_, s) = opt.update(Array::ones([1]), s, &p);
    assert_eq!(s.hyperparams["lr"].item::<f32>(), 0.75);
    assert_eq!(s.count.item::<i32>(), 2);

    // Same result as adam with the schedule itself.
    let direct = adam(schedule::linear(1.0, 0.0, 4, 0), 0.9, 0.999, 1e-8);
    let mut pd = Array::from_vec(vec![0.3f32], [1]);
    let mut pi = pd.clone();
    let (mut sd, mut si) = (direct.init(&pd), opt.init(&pi));
    for _ in 0..3 {
        let (u, n) = direct.update(&pd * 2.0, sd, &pd);
        sd = n;
        pd = apply_updates(&pd, &u);
        let (u, n) = opt.update(&pi * 2.0, si, &pi);
        si = n;
        pi = apply_updates(&pi, &u);
    }
    assert!(pd.allclose(&pi, 1e-6, 1e-7), "{pd:?} vs {pi:?}");
}
