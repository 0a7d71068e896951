//! Ready-made optimizers, each a tuple of transforms as in Optax's `alias.py`.
//!
//! Hyper-parameters are explicit (Rust has no keyword arguments); the docs give Optax's
//! defaults. `learning_rate` accepts an `f32` or a [`Schedule`].

use crate::schedule::Schedule;
use crate::transform::*;

/// `sgd`: optional momentum (`trace`), then `-learning_rate`.
pub type Sgd = (Option<Trace>, ScaleByLearningRate);
/// `adam`, `nadam`.
pub type Adam = (ScaleByAdam, ScaleByLearningRate);
/// `adamw`.
pub type AdamW = (ScaleByAdam, AddDecayedWeights, ScaleByLearningRate);
/// `amsgrad`.
pub type Amsgrad = (ScaleByAmsgrad, ScaleByLearningRate);
/// `lamb`.
pub type Lamb = (ScaleByAdam, AddDecayedWeights, ScaleByTrustRatio, ScaleByLearningRate);
/// `lars`.
pub type Lars = (AddDecayedWeights, ScaleByTrustRatio, ScaleByLearningRate, Trace);
/// `lion`.
pub type Lion = (ScaleByLion, AddDecayedWeights, ScaleByLearningRate);
/// `rmsprop`.
pub type Rmsprop = (ScaleByRms, ScaleByLearningRate, Option<Trace>);
/// `rmsprop_centered`.
pub type RmspropCentered = (ScaleByStddev, ScaleByLearningRate, Option<Trace>);
/// `adagrad`.
pub type Adagrad = (ScaleByRss, ScaleByLearningRate);
/// `adadelta`.
pub type Adadelta = (AddDecayedWeights, ScaleByAdadelta, ScaleByLearningRate);
/// `adabelief`.
pub type AdaBelief = (ScaleByBelief, ScaleByLearningRate);

/// Stochastic gradient descent with optional (Nesterov) momentum (`optax.sgd`).
pub fn sgd(learning_rate: impl Into<Schedule>, momentum: Option<f64>, nesterov: bool) -> Sgd {
    (momentum.map(|m| trace(m, nesterov)), scale_by_learning_rate(learning_rate))
}

/// Adam (`optax.adam`; Optax's defaults: `b1 = 0.9, b2 = 0.999, eps = 1e-8`).
///
/// ```
/// use kiln_optim::{adam, schedule};
/// let opt = adam(schedule::warmup_cosine_decay(0.0, 1e-3, 100, 1000, 1e-5, 1.0), 0.9, 0.999, 1e-8);
/// ```
pub fn adam(learning_rate: impl Into<Schedule>, b1: f64, b2: f64, eps: f64) -> Adam {
    (scale_by_adam(b1, b2, eps, 0.0, false), scale_by_learning_rate(learning_rate))
}

/// NAdam: Adam with Nesterov momentum (`optax.nadam`).
pub fn nadam(learning_rate: impl Into<Schedule>, b1: f64, b2: f64, eps: f64) -> Adam {
    (scale_by_adam(b1, b2, eps, 0.0, true), scale_by_learning_rate(learning_rate))
}

/// Adam with decoupled weight decay (`optax.adamw`; Optax's default `weight_decay = 1e-4`).
/// `mask` selects the decayed leaves (`None`: all).
pub fn adamw(
    learning_rate: impl Into<Schedule>,
    b1: f64,
    b2: f64,
    eps: f64,
    weight_decay: f64,
    mask: Option<Mask>,
) -> AdamW {
    (
        scale_by_adam(b1, b2, eps, 0.0, false),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
}

/// AMSGrad (`optax.amsgrad`).
pub fn amsgrad(learning_rate: impl Into<Schedule>, b1: f64, b2: f64, eps: f64) -> Amsgrad {
    (scale_by_amsgrad(b1, b2, eps, 0.0), scale_by_learning_rate(learning_rate))
}

/// LAMB: Adam, weight decay, then a per-leaf trust ratio (`optax.lamb`; Optax's defaults
/// `eps = 1e-6, weight_decay = 0`).
pub fn lamb(
    learning_rate: impl Into<Schedule>,
    b1: f64,
    b2: f64,
    eps: f64,
    weight_decay: f64,
    mask: Option<Mask>,
) -> Lamb {
    (
        scale_by_adam(b1, b2, eps, 0.0, false),
        add_decayed_weights(weight_decay, mask),
        scale_by_trust_ratio(0.0, 1.0, 0.0),
        scale_by_learning_rate(learning_rate),
    )
}

/// LARS: weight decay, trust ratio, learning rate, then momentum (`optax.lars`; Optax's
/// defaults `trust_coefficient = 0.001, eps = 0, momentum = 0.9`). The trust ratio applies
/// to every leaf (Optax's default `trust_ratio_mask`); wrap the parts yourself with
/// [`crate::masked`] to restrict it.
pub fn lars(
    learning_rate: impl Into<Schedule>,
    weight_decay: f64,
    weight_decay_mask: Option<Mask>,
    trust_coefficient: f64,
    eps: f64,
    momentum: f64,
    nesterov: bool,
) -> Lars {
    (
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_trust_ratio(0.0, trust_coefficient, eps),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov),
    )
}

/// Lion (`optax.lion`; Optax's defaults `b1 = 0.9, b2 = 0.99, weight_decay = 1e-3`).
pub fn lion(
    learning_rate: impl Into<Schedule>,
    b1: f64,
    b2: f64,
    weight_decay: f64,
    mask: Option<Mask>,
) -> Lion {
    (
        scale_by_lion(b1, b2),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
}

/// RMSProp (`optax.rmsprop` with `centered = false`; Optax's defaults `decay = 0.9,
/// eps = 1e-8`), with optional (Nesterov) momentum after the learning rate.
pub fn rmsprop(
    learning_rate: impl Into<Schedule>,
    decay: f64,
    eps: f64,
    momentum: Option<f64>,
    nesterov: bool,
) -> Rmsprop {
    (
        scale_by_rms(decay, eps, 0.0),
        scale_by_learning_rate(learning_rate),
        momentum.map(|m| trace(m, nesterov)),
    )
}

/// Centred RMSProp (`optax.rmsprop` with `centered = true`).
pub fn rmsprop_centered(
    learning_rate: impl Into<Schedule>,
    decay: f64,
    eps: f64,
    momentum: Option<f64>,
    nesterov: bool,
) -> RmspropCentered {
    (
        scale_by_stddev(decay, eps, 0.0),
        scale_by_learning_rate(learning_rate),
        momentum.map(|m| trace(m, nesterov)),
    )
}

/// Adagrad (`optax.adagrad`; Optax's defaults `initial_accumulator_value = 0.1, eps = 1e-7`).
pub fn adagrad(
    learning_rate: impl Into<Schedule>,
    initial_accumulator_value: f64,
    eps: f64,
) -> Adagrad {
    (scale_by_rss(initial_accumulator_value, eps), scale_by_learning_rate(learning_rate))
}

/// Adadelta (`optax.adadelta`; Optax's defaults `rho = 0.9, eps = 1e-6, weight_decay = 0`).
pub fn adadelta(
    learning_rate: impl Into<Schedule>,
    rho: f64,
    eps: f64,
    weight_decay: f64,
) -> Adadelta {
    (
        add_decayed_weights(weight_decay, None),
        scale_by_adadelta(rho, eps),
        scale_by_learning_rate(learning_rate),
    )
}

/// AdaBelief (`optax.adabelief`; Optax's defaults `eps = 1e-16, eps_root = 1e-16`).
pub fn adabelief(
    learning_rate: impl Into<Schedule>,
    b1: f64,
    b2: f64,
    eps: f64,
    eps_root: f64,
) -> AdaBelief {
    (scale_by_belief(b1, b2, eps, eps_root, false), scale_by_learning_rate(learning_rate))
}

/// `adafactor`.
pub type Adafactor = (
    ScaleByFactoredRms,
    Option<ClipByBlockRms>,
    ScaleByLearningRate,
    Option<ScaleByParamBlockRms>,
    Option<Ema>,
    Option<AddDecayedWeights>,
    Scale,
);

/// Options of [`adafactor`], with Optax's defaults from [`Default`].
#[derive(Clone, Debug)]
pub struct AdafactorOptions {
    /// Leaves whose second-largest dimension is smaller are not factored (128).
    pub min_dim_size_to_factor: usize,
    /// Exponent of the second-moment decay schedule (0.8).
    pub decay_rate: f64,
    /// Step offset of that schedule (0).
    pub decay_offset: i32,
    /// Scale updates by the parameters' RMS (true).
    pub multiply_by_parameter_scale: bool,
    /// Block-RMS clipping threshold (`Some(1.0)`).
    pub clipping_threshold: Option<f64>,
    /// Momentum, an un-debiased EMA of the updates (`None`).
    pub momentum: Option<f64>,
    /// Decoupled weight decay (`None`).
    pub weight_decay_rate: Option<f64>,
    /// Which leaves to decay (`None`: all).
    pub weight_decay_mask: Option<Mask>,
    /// Added to squared gradients (1e-30).
    pub eps: f64,
    /// Whether to factor the second moment (true).
    pub factored: bool,
}

impl Default for AdafactorOptions {
    fn default() -> Self {
        AdafactorOptions {
            min_dim_size_to_factor: 128,
            decay_rate: 0.8,
            decay_offset: 0,
            multiply_by_parameter_scale: true,
            clipping_threshold: Some(1.0),
            momentum: None,
            weight_decay_rate: None,
            weight_decay_mask: None,
            eps: 1e-30,
            factored: true,
        }
    }
}

/// Adafactor (`optax.adafactor`): factored second moments, block-RMS clipping, relative step
/// sizes. Use `AdafactorOptions::default()` for Optax's defaults.
pub fn adafactor(learning_rate: impl Into<Schedule>, o: AdafactorOptions) -> Adafactor {
    (
        scale_by_factored_rms(
            o.factored,
            o.decay_rate,
            o.decay_offset,
            o.min_dim_size_to_factor,
            o.eps,
        ),
        o.clipping_threshold.map(clip_by_block_rms),
        scale_by_schedule(learning_rate),
        o.multiply_by_parameter_scale.then(|| scale_by_param_block_rms(1e-3)),
        o.momentum.map(|m| ema(m, false)),
        o.weight_decay_rate.map(|wd| add_decayed_weights(wd, o.weight_decay_mask.clone())),
        scale(-1.0),
    )
}
