//! Shared helpers for the integration tests.

#![allow(dead_code)] // reason: each test binary uses a different subset of these helpers

use kiln::{Array, tree};
use kiln_optim::{Transform, apply_updates};
use std::collections::BTreeMap;

pub type Params = BTreeMap<String, Array>;

/// The golden file written by `golden/gen_optax.py`.
pub fn golden() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/golden/optax.json"))
        .expect("golden/optax.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

/// The golden initial params: `b` (2,), `w` (3, 2).
pub fn init_params(g: &serde_json::Value) -> Params {
    let init = &g["init"];
    let mut p = Params::new();
    p.insert("b".into(), Array::from_vec(floats(&init["b"]), [2]));
    p.insert("w".into(), Array::from_vec(floats(&init["w"]), [3, 2]));
    p
}

/// The golden gradient: `2 * p + sin(p)`.
pub fn golden_grad(p: &Params) -> Params {
    tree::map(p, |x| x * 2.0 + x.sin())
}

/// Runs `steps` optimizer steps with gradient function `grad` from `params`.
pub fn run<T: Transform>(
    opt: &T,
    params: &Params,
    steps: usize,
    grad: impl Fn(&Params) -> Params,
) -> Params {
    let mut p = params.clone();
    let mut s = opt.init(&p);
    for _ in 0..steps {
        let g = grad(&p);
        let (u, ns) = opt.update(g, s, &p);
        s = ns;
        p = apply_updates(&p, &u);
    }
    p
}

/// Largest relative error `|a - b| / |b|` over all leaves of `got` against the golden entry.
pub fn max_rel_err(got: &Params, want: &serde_json::Value) -> f64 {
    let mut worst = 0.0f64;
    for (k, v) in got {
        let w = floats(&want[k.as_str()]);
        let a = v.to_vec::<f32>();
        assert_eq!(a.len(), w.len(), "leaf {k}");
        for (x, y) in a.iter().zip(&w) {
            let err =
                (*x as f64 - *y as f64).abs() / (*y as f64).abs().max(f64::from(f32::MIN_POSITIVE));
            worst = worst.max(err);
        }
    }
    worst
}
