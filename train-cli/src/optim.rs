//! Optimisers: Adam / AdamW with learning-rate schedules and global-norm clipping.
//!
//! The trainer's own minimal, pure-function Adam(W); `kiln-optim` has the general
//! Optax-style version (`kiln_optim::adam`, `adamw`). The state is a [`kiln::Tree`], so it
//! is checkpointed by path (`opt_state.mu.layers.0.weight`, ...).

use kiln::tree::{self, Tree};
use kiln::{Array, DType};

/// Adam hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    /// Exponential decay of the first moment.
    pub b1: f64,
    /// Exponential decay of the second moment.
    pub b2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay (AdamW); 0 gives plain Adam.
    pub weight_decay: f64,
}

/// Adam state: the step count and the two moment estimates, shaped like the parameters.
#[derive(Clone, Debug, kiln::Tree)]
pub struct AdamState<P: Tree> {
    /// Number of updates applied so far (`i32` scalar).
    pub count: Array,
    /// First-moment estimate.
    pub mu: P,
    /// Second-moment estimate.
    pub nu: P,
}

/// Zero-initialised Adam state for `params`.
pub fn adam_init<P: Tree>(params: &P) -> AdamState<P> {
    AdamState {
        count: Array::scalar(0i32),
        mu: tree::map(params, |p| p.zeros_like()),
        nu: tree::map(params, |p| p.zeros_like()),
    }
}

/// The global L2 norm of every leaf of `grads`, as a host `f64`.
pub fn global_norm<P: Tree>(grads: &P) -> f64 {
    let mut total = 0.0f64;
    for g in tree::leaves(grads) {
        total += g.astype(DType::F32).square().sum().item::<f32>() as f64;
    }
    total.sqrt()
}

/// Scales `grads` so that their global norm is at most `max_norm` (given their norm `norm`).
pub fn clip_by_global_norm<P: Tree>(grads: &P, norm: f64, max_norm: f64) -> P {
    if norm <= max_norm || norm == 0.0 {
        return grads.clone();
    }
    let scale = (max_norm / norm) as f32;
    tree::map(grads, |g| g * scale)
}

/// One Adam(W) step with learning rate `lr`: returns the new parameters and state.
pub fn adam_update<P: Tree>(
    cfg: &AdamConfig,
    lr: f64,
    params: &P,
    grads: &P,
    state: &AdamState<P>,
) -> (P, AdamState<P>) {
    let count = state.count.item::<i32>() + 1;
    let (b1, b2) = (cfg.b1 as f32, cfg.b2 as f32);
    let mu = tree::zip_map(&state.mu, grads, |m, g| m * b1 + g * (1.0 - b1));
    let nu = tree::zip_map(&state.nu, grads, |v, g| v * b2 + g.square() * (1.0 - b2));
    let bc1 = (1.0 - cfg.b1.powi(count)) as f32;
    let bc2 = (1.0 - cfg.b2.powi(count)) as f32;
    let (lr32, eps, wd) = (lr as f32, cfg.eps as f32, (lr * cfg.weight_decay) as f32);
    let step = tree::zip_map(&mu, &nu, |m, v| (m / bc1) / ((v / bc2).sqrt() + eps) * lr32);
    let new_params =
        tree::zip_map(params, &step, |p, s| if wd != 0.0 { p - s - p * wd } else { p - s });
    (new_params, AdamState { count: Array::scalar(count), mu, nu })
}
