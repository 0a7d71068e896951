//! The gradient transformations (`optax.scale_by_adam`, `optax.trace`, ...).
//!
//! Each is a small struct of hyper-parameters implementing [`Transform`], with a state struct
//! that derives [`Tree`] (so its key paths read `mu.w`, `count`, ...), built by a
//! snake-case constructor function.

use crate::base::{
    Transform, bias_correction, global_norm, safe_increment, safe_norm, update_moment, zero_count,
    zeros_like,
};
use crate::schedule::Schedule;
use kiln::tree::{self, KeyPath};
use kiln::{Array, Tree, where_};
use std::fmt;
use std::sync::Arc;

/// Selects leaves by key path (and leaf, e.g. its rank): `true` means "apply".
///
/// ```
/// use kiln_optim::Mask;
/// // Decay only matrices, not biases:
/// let m = Mask::new(|_path, leaf| leaf.ndim() >= 2);
/// ```
#[derive(Clone)]
pub struct Mask(Arc<MaskFn>);

/// The predicate inside a [`Mask`].
type MaskFn = dyn Fn(&KeyPath, &Array) -> bool + Send + Sync;

impl Mask {
    /// A mask from a predicate on a leaf's key path and value (only its shape and dtype should
    /// matter: the predicate runs on traced arrays too).
    pub fn new(f: impl Fn(&KeyPath, &Array) -> bool + Send + Sync + 'static) -> Mask {
        Mask(Arc::new(f))
    }

    /// Whether the leaf at `path` is selected.
    pub fn selects(&self, path: &KeyPath, leaf: &Array) -> bool {
        (self.0)(path, leaf)
    }

    /// The positions (in canonical leaf order) of the selected leaves of `t`.
    pub fn indices<P: Tree>(&self, t: &P) -> Vec<usize> {
        tree::leaves_with_path(t)
            .iter()
            .enumerate()
            .filter(|(_, (p, a))| self.selects(p, a))
            .map(|(i, _)| i)
            .collect()
    }
}

impl fmt::Debug for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Mask(..)")
    }
}

// ---- scale ------------------------------------------------------------------------------------

/// Multiplies updates by a constant (`optax.scale`).
#[derive(Clone, Copy, Debug)]
pub struct Scale(pub f64);

/// See [`Scale`].
pub fn scale(step_size: f64) -> Scale {
    Scale(step_size)
}

impl Transform for Scale {
    type State<P: Tree> = ();
    fn init<P: Tree>(&self, _: &P) {}
    fn update<P: Tree>(&self, updates: P, _: (), _: &P) -> (P, ()) {
        (tree::map(&updates, |u| u * self.0), ())
    }
}

/// State of the transforms that only count steps.
#[derive(Clone, Debug, Tree)]
pub struct CountState {
    /// Number of updates so far (`i32` scalar).
    pub count: Array,
}

/// Multiplies updates by a scheduled learning rate, negated when `flip_sign` (the default in
/// [`scale_by_learning_rate`]) so that [`crate::apply_updates`] descends
/// (`optax.scale_by_learning_rate`; `optax.scale_by_schedule` when not flipped).
#[derive(Clone, Debug)]
pub struct ScaleByLearningRate {
    /// The learning rate as a function of the step count.
    pub learning_rate: Schedule,
    /// Whether to negate.
    pub flip_sign: bool,
}

/// Scales by `-learning_rate(count)`. Accepts `f32` or any [`Schedule`].
pub fn scale_by_learning_rate(learning_rate: impl Into<Schedule>) -> ScaleByLearningRate {
    ScaleByLearningRate { learning_rate: learning_rate.into(), flip_sign: true }
}

/// Scales by `schedule(count)` without negation (`optax.scale_by_schedule`).
pub fn scale_by_schedule(schedule: impl Into<Schedule>) -> ScaleByLearningRate {
    ScaleByLearningRate { learning_rate: schedule.into(), flip_sign: false }
}

impl Transform for ScaleByLearningRate {
    type State<P: Tree> = CountState;
    fn init<P: Tree>(&self, _: &P) -> CountState {
        CountState { count: zero_count() }
    }
    fn update<P: Tree>(&self, updates: P, state: CountState, _: &P) -> (P, CountState) {
        let mut lr = self.learning_rate.at(&state.count);
        if self.flip_sign {
            lr = -lr;
        }
        let updates = tree::map(&updates, |u| u * &lr);
        (updates, CountState { count: safe_increment(&state.count) })
    }
}

// ---- adam family ------------------------------------------------------------------------------

/// State of [`ScaleByAdam`], [`ScaleByBelief`] and [`ScaleByStddev`]: first and second
/// moments shaped like the parameters.
#[derive(Clone, Debug, Tree)]
pub struct AdamState<P: Tree> {
    /// Number of updates so far (`i32` scalar).
    pub count: Array,
    /// First moment (EMA of gradients).
    pub mu: P,
    /// Second moment (EMA of squared gradients, or of squared prediction errors).
    pub nu: P,
}

impl<P: Tree> AdamState<P> {
    fn zeros(params: &P) -> AdamState<P> {
        AdamState { count: zero_count(), mu: zeros_like(params), nu: zeros_like(params) }
    }
}

/// Rescales updates by Adam's bias-corrected moments (`optax.scale_by_adam`); with
/// `nesterov` it is NAdam's rescaling.
#[derive(Clone, Copy, Debug)]
pub struct ScaleByAdam {
    /// Decay of the first moment.
    pub b1: f64,
    /// Decay of the second moment.
    pub b2: f64,
    /// Added to the denominator outside the square root.
    pub eps: f64,
    /// Added to the second moment inside the square root.
    pub eps_root: f64,
    /// Nesterov momentum (NAdam).
    pub nesterov: bool,
}

/// See [`ScaleByAdam`].
pub fn scale_by_adam(b1: f64, b2: f64, eps: f64, eps_root: f64, nesterov: bool) -> ScaleByAdam {
    ScaleByAdam { b1, b2, eps, eps_root, nesterov }
}

fn nesterov_mu_hat<P: Tree>(mu: &P, updates: &P, b1: f64, count_inc: &Array) -> P {
    let m = bias_correction(mu, b1, &safe_increment(count_inc));
    let g = bias_correction(updates, b1, count_inc);
    tree::zip_map(&m, &g, |m, g| m * b1 + g * (1.0 - b1))
}

impl Transform for ScaleByAdam {
    type State<P: Tree> = AdamState<P>;
    fn init<P: Tree>(&self, params: &P) -> AdamState<P> {
        AdamState::zeros(params)
    }
    fn update<P: Tree>(&self, updates: P, state: AdamState<P>, _: &P) -> (P, AdamState<P>) {
        let mu = update_moment(&updates, &state.mu, self.b1, 1);
        let nu = update_moment(&updates, &state.nu, self.b2, 2);
        let count = safe_increment(&state.count);
        let mu_hat = if self.nesterov {
            nesterov_mu_hat(&mu, &updates, self.b1, &count)
        } else {
            bias_correction(&mu, self.b1, &count)
        };
        let nu_hat = bias_correction(&nu, self.b2, &count);
        let out =
            tree::zip_map(&mu_hat, &nu_hat, |m, v| m / ((v + self.eps_root).sqrt() + self.eps));
        (out, AdamState { count, mu, nu })
    }
}

/// State of [`ScaleByAmsgrad`].
#[derive(Clone, Debug, Tree)]
pub struct AmsgradState<P: Tree> {
    /// Number of updates so far.
    pub count: Array,
    /// First moment.
    pub mu: P,
    /// Second moment.
    pub nu: P,
    /// Running maximum of the bias-corrected second moment.
    pub nu_max: P,
}

/// AMSGrad's rescaling: Adam with the running maximum of the second moment
/// (`optax.scale_by_amsgrad`).
#[derive(Clone, Copy, Debug)]
pub struct ScaleByAmsgrad {
    /// Decay of the first moment.
    pub b1: f64,
    /// Decay of the second moment.
    pub b2: f64,
    /// Added to the denominator outside the square root.
    pub eps: f64,
    /// Added inside the square root.
    pub eps_root: f64,
}

/// See [`ScaleByAmsgrad`].
pub fn scale_by_amsgrad(b1: f64, b2: f64, eps: f64, eps_root: f64) -> ScaleByAmsgrad {
    ScaleByAmsgrad { b1, b2, eps, eps_root }
}

impl Transform for ScaleByAmsgrad {
    type State<P: Tree> = AmsgradState<P>;
    fn init<P: Tree>(&self, params: &P) -> AmsgradState<P> {
        AmsgradState {
            count: zero_count(),
            mu: zeros_like(params),
            nu: zeros_like(params),
            nu_max: zeros_like(params),
        }
    }
    fn update<P: Tree>(&self, updates: P, state: AmsgradState<P>, _: &P) -> (P, AmsgradState<P>) {
        let mu = update_moment(&updates, &state.mu, self.b1, 1);
        let nu = update_moment(&updates, &state.nu, self.b2, 2);
        let count = safe_increment(&state.count);
        let mu_hat = bias_correction(&mu, self.b1, &count);
        let nu_hat = bias_correction(&nu, self.b2, &count);
        let nu_max = tree::zip_map(&state.nu_max, &nu_hat, |a, b| a.maximum(b));
        let out =
            tree::zip_map(&mu_hat, &nu_max, |m, v| m / ((v + self.eps_root).sqrt() + self.eps));
        (out, AmsgradState { count, mu, nu, nu_max })
    }
}

/// AdaBelief's rescaling by the variance of the prediction error (`optax.scale_by_belief`).
#[derive(Clone, Copy, Debug)]
pub struct ScaleByBelief {
    /// Decay of the first moment.
    pub b1: f64,
    /// Decay of the second moment.
    pub b2: f64,
    /// Added to the denominator outside the square root.
    pub eps: f64,
    /// Added to the second moment.
    pub eps_root: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

/// See [`ScaleByBelief`].
pub fn scale_by_belief(b1: f64, b2: f64, eps: f64, eps_root: f64, nesterov: bool) -> ScaleByBelief {
    ScaleByBelief { b1, b2, eps, eps_root, nesterov }
}

impl Transform for ScaleByBelief {
    type State<P: Tree> = AdamState<P>;
    fn init<P: Tree>(&self, params: &P) -> AdamState<P> {
        AdamState::zeros(params)
    }
    fn update<P: Tree>(&self, updates: P, state: AdamState<P>, _: &P) -> (P, AdamState<P>) {
        let mu = update_moment(&updates, &state.mu, self.b1, 1);
        let err = tree::zip_map(&updates, &mu, |g, m| g - m);
        let nu = update_moment(&err, &state.nu, self.b2, 2);
        let nu = tree::map(&nu, |v| v + self.eps_root);
        let count = safe_increment(&state.count);
        let mu_hat = if self.nesterov {
            nesterov_mu_hat(&mu, &updates, self.b1, &count)
        } else {
            bias_correction(&mu, self.b1, &count)
        };
        let nu_hat = bias_correction(&nu, self.b2, &count);
        let out = tree::zip_map(&mu_hat, &nu_hat, |m, v| m / (v.sqrt() + self.eps));
        (out, AdamState { count, mu, nu })
    }
}

/// State of [`ScaleByRms`].
#[derive(Clone, Debug, Tree)]
pub struct RmsState<P: Tree> {
    /// Number of updates so far.
    pub count: Array,
    /// EMA of squared gradients.
    pub nu: P,
}

/// Divides updates by the root mean square of past gradients (`optax.scale_by_rms`).
#[derive(Clone, Copy, Debug)]
pub struct ScaleByRms {
    /// Decay of the squared-gradient EMA.
    pub decay: f64,
    /// Numerical stability term.
    pub eps: f64,
    /// Initial value of the EMA.
    pub initial_scale: f64,
    /// Whether `eps` goes inside the square root.
    pub eps_in_sqrt: bool,
    /// Whether to bias-correct the EMA.
    pub bias_correction: bool,
}

/// See [`ScaleByRms`]; `eps` inside the square root, no bias correction (Optax's defaults).
pub fn scale_by_rms(decay: f64, eps: f64, initial_scale: f64) -> ScaleByRms {
    ScaleByRms { decay, eps, initial_scale, eps_in_sqrt: true, bias_correction: false }
}

fn rms_scale(nu_hat: &Array, eps: f64, eps_in_sqrt: bool) -> Array {
    if eps_in_sqrt { (nu_hat + eps).rsqrt() } else { 1.0f32 / (nu_hat.sqrt() + eps) }
}

impl Transform for ScaleByRms {
    type State<P: Tree> = RmsState<P>;
    fn init<P: Tree>(&self, params: &P) -> RmsState<P> {
        RmsState { count: zero_count(), nu: tree::map(params, |p| p.full_like(self.initial_scale)) }
    }
    fn update<P: Tree>(&self, updates: P, state: RmsState<P>, _: &P) -> (P, RmsState<P>) {
        let nu = update_moment(&updates, &state.nu, self.decay, 2);
        let count = safe_increment(&state.count);
        let nu_hat = if self.bias_correction {
            bias_correction(&nu, self.decay, &count)
        } else {
            nu.clone()
        };
        let out =
            tree::zip_map(&updates, &nu_hat, |g, v| g * rms_scale(v, self.eps, self.eps_in_sqrt));
        (out, RmsState { count, nu })
    }
}

/// Divides updates by the centred standard deviation of past gradients
/// (`optax.scale_by_stddev`; the centred RMSProp).
#[derive(Clone, Copy, Debug)]
pub struct ScaleByStddev {
    /// Decay of the EMAs.
    pub decay: f64,
    /// Numerical stability term.
    pub eps: f64,
    /// Initial value of the second-moment EMA.
    pub initial_scale: f64,
    /// Whether `eps` goes inside the square root.
    pub eps_in_sqrt: bool,
    /// Whether to bias-correct the EMAs.
    pub bias_correction: bool,
}

/// See [`ScaleByStddev`]; Optax's defaults for the flags.
pub fn scale_by_stddev(decay: f64, eps: f64, initial_scale: f64) -> ScaleByStddev {
    ScaleByStddev { decay, eps, initial_scale, eps_in_sqrt: true, bias_correction: false }
}

impl Transform for ScaleByStddev {
    type State<P: Tree> = AdamState<P>;
    fn init<P: Tree>(&self, params: &P) -> AdamState<P> {
        AdamState {
            count: zero_count(),
            mu: zeros_like(params),
            nu: tree::map(params, |p| p.full_like(self.initial_scale)),
        }
    }
    fn update<P: Tree>(&self, updates: P, state: AdamState<P>, _: &P) -> (P, AdamState<P>) {
        let mu = update_moment(&updates, &state.mu, self.decay, 1);
        let nu = update_moment(&updates, &state.nu, self.decay, 2);
        let count = safe_increment(&state.count);
        let (mu_hat, nu_hat) = if self.bias_correction {
            (bias_correction(&mu, self.decay, &count), bias_correction(&nu, self.decay, &count))
        } else {
            (mu.clone(), nu.clone())
        };
        let var = tree::zip_map(&nu_hat, &mu_hat, |n, m| n - m * m);
        let out =
            tree::zip_map(&updates, &var, |g, v| g * rms_scale(v, self.eps, self.eps_in_sqrt));
        (out, AdamState { count, mu, nu })
    }
}

/// State of [`ScaleByRss`].
#[derive(Clone, Debug, Tree)]
pub struct RssState<P: Tree> {
    /// Running sum of squared gradients.
    pub sum_of_squares: P,
}

/// Divides updates by the root of the running sum of squared gradients (Adagrad;
/// `optax.scale_by_rss`).
#[derive(Clone, Copy, Debug)]
pub struct ScaleByRss {
    /// Initial value of the sum.
    pub initial_accumulator_value: f64,
    /// Numerical stability term (inside the square root).
    pub eps: f64,
}

/// See [`ScaleByRss`].
pub fn scale_by_rss(initial_accumulator_value: f64, eps: f64) -> ScaleByRss {
    ScaleByRss { initial_accumulator_value, eps }
}

impl Transform for ScaleByRss {
    type State<P: Tree> = RssState<P>;
    fn init<P: Tree>(&self, params: &P) -> RssState<P> {
        RssState {
            sum_of_squares: tree::map(params, |p| p.full_like(self.initial_accumulator_value)),
        }
    }
    fn update<P: Tree>(&self, updates: P, state: RssState<P>, _: &P) -> (P, RssState<P>) {
        let sum = tree::zip_map(&updates, &state.sum_of_squares, |g, t| g * g + t);
        let out = tree::zip_map(&updates, &sum, |g, t| {
            g * where_(t.gt(0.0), (t + self.eps).rsqrt(), 0.0f32)
        });
        (out, RssState { sum_of_squares: sum })
    }
}

/// State of [`ScaleByAdadelta`].
#[derive(Clone, Debug, Tree)]
pub struct AdadeltaState<P: Tree> {
    /// EMA of squared gradients.
    pub e_g: P,
    /// EMA of squared updates.
    pub e_x: P,
}

/// Adadelta's rescaling (`optax.scale_by_adadelta`).
#[derive(Clone, Copy, Debug)]
pub struct ScaleByAdadelta {
    /// Decay of the EMAs.
    pub rho: f64,
    /// Numerical stability term.
    pub eps: f64,
}

/// See [`ScaleByAdadelta`].
pub fn scale_by_adadelta(rho: f64, eps: f64) -> ScaleByAdadelta {
    ScaleByAdadelta { rho, eps }
}

impl Transform for ScaleByAdadelta {
    type State<P: Tree> = AdadeltaState<P>;
    fn init<P: Tree>(&self, params: &P) -> AdadeltaState<P> {
        AdadeltaState { e_g: zeros_like(params), e_x: zeros_like(params) }
    }
    fn update<P: Tree>(&self, updates: P, state: AdadeltaState<P>, _: &P) -> (P, AdadeltaState<P>) {
        let e_g = update_moment(&updates, &state.e_g, self.rho, 2);
        let out = tree::zip3_map(&updates, &e_g, &state.e_x, |g, eg, ex| {
            (ex + self.eps).sqrt() / (eg + self.eps).sqrt() * g
        });
        let e_x = update_moment(&out, &state.e_x, self.rho, 2);
        (out, AdadeltaState { e_g, e_x })
    }
}

/// State of [`ScaleByLion`].
#[derive(Clone, Debug, Tree)]
pub struct LionState<P: Tree> {
    /// Number of updates so far.
    pub count: Array,
    /// Momentum.
    pub mu: P,
}

/// Lion's sign update (`optax.scale_by_lion`, "hard" mode).
#[derive(Clone, Copy, Debug)]
pub struct ScaleByLion {
    /// Interpolation between momentum and gradient for the update.
    pub b1: f64,
    /// Decay of the momentum.
    pub b2: f64,
}

/// See [`ScaleByLion`].
pub fn scale_by_lion(b1: f64, b2: f64) -> ScaleByLion {
    ScaleByLion { b1, b2 }
}

impl Transform for ScaleByLion {
    type State<P: Tree> = LionState<P>;
    fn init<P: Tree>(&self, params: &P) -> LionState<P> {
        LionState { count: zero_count(), mu: zeros_like(params) }
    }
    fn update<P: Tree>(&self, updates: P, state: LionState<P>, _: &P) -> (P, LionState<P>) {
        let out =
            tree::zip_map(&updates, &state.mu, |g, m| (g * (1.0 - self.b1) + m * self.b1).sign());
        let mu = update_moment(&updates, &state.mu, self.b2, 1);
        (out, LionState { count: safe_increment(&state.count), mu })
    }
}

/// Scales each leaf's update by `trust_coefficient * |param| / (|update| + eps)` (LARS/LAMB;
/// `optax.scale_by_trust_ratio`). Norms are clipped below at `min_norm`.
#[derive(Clone, Copy, Debug)]
pub struct ScaleByTrustRatio {
    /// Lower bound of the norms.
    pub min_norm: f64,
    /// Multiplier of the ratio.
    pub trust_coefficient: f64,
    /// Added to the update norm.
    pub eps: f64,
}

/// See [`ScaleByTrustRatio`].
pub fn scale_by_trust_ratio(min_norm: f64, trust_coefficient: f64, eps: f64) -> ScaleByTrustRatio {
    ScaleByTrustRatio { min_norm, trust_coefficient, eps }
}

impl Transform for ScaleByTrustRatio {
    type State<P: Tree> = ();
    fn init<P: Tree>(&self, _: &P) {}
    fn update<P: Tree>(&self, updates: P, _: (), params: &P) -> (P, ()) {
        let out = tree::zip_map(&updates, params, |u, p| {
            let pn = safe_norm(p).maximum(self.min_norm);
            let un = safe_norm(u).maximum(self.min_norm);
            let ratio = &pn * self.trust_coefficient / (&un + self.eps);
            let zero = pn.eq(0.0).logical_or(un.eq(0.0));
            u * where_(zero, 1.0f32, ratio)
        });
        (out, ())
    }
}

// ---- momentum, decay, clipping, ema ----------------------------------------------------------

/// State of [`Trace`].
#[derive(Clone, Debug, Tree)]
pub struct TraceState<P: Tree> {
    /// The momentum buffer.
    pub trace: P,
}

/// Momentum: `t = g + decay * t`; the update is `t`, or `g + decay * t` with Nesterov
/// (`optax.trace`).
#[derive(Clone, Copy, Debug)]
pub struct Trace {
    /// Momentum decay.
    pub decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

/// See [`Trace`].
pub fn trace(decay: f64, nesterov: bool) -> Trace {
    Trace { decay, nesterov }
}

impl Transform for Trace {
    type State<P: Tree> = TraceState<P>;
    fn init<P: Tree>(&self, params: &P) -> TraceState<P> {
        TraceState { trace: zeros_like(params) }
    }
    fn update<P: Tree>(&self, updates: P, state: TraceState<P>, _: &P) -> (P, TraceState<P>) {
        let f = |g: &Array, t: &Array| g + t * self.decay;
        let new = tree::zip_map(&updates, &state.trace, f);
        let out = if self.nesterov { tree::zip_map(&updates, &new, f) } else { new.clone() };
        (out, TraceState { trace: new })
    }
}

/// Adds `weight_decay(count) * param` to each selected leaf's update
/// (`optax.add_decayed_weights`).
#[derive(Clone, Debug)]
pub struct AddDecayedWeights {
    /// The decay rate (a schedule of the step count; usually a constant).
    pub weight_decay: Schedule,
    /// Which leaves to decay (`None`: all).
    pub mask: Option<Mask>,
}

/// See [`AddDecayedWeights`].
pub fn add_decayed_weights(
    weight_decay: impl Into<Schedule>,
    mask: Option<Mask>,
) -> AddDecayedWeights {
    AddDecayedWeights { weight_decay: weight_decay.into(), mask }
}

impl Transform for AddDecayedWeights {
    type State<P: Tree> = CountState;
    fn init<P: Tree>(&self, _: &P) -> CountState {
        CountState { count: zero_count() }
    }
    fn update<P: Tree>(&self, updates: P, state: CountState, params: &P) -> (P, CountState) {
        let wd = self.weight_decay.at(&state.count);
        let ps = tree::leaves_with_path(params);
        let us = tree::leaves(&updates);
        let out: Vec<Array> = us
            .iter()
            .zip(&ps)
            .map(|(u, (path, p))| {
                if self.mask.as_ref().is_none_or(|m| m.selects(path, p)) {
                    u + p * &wd
                } else {
                    u.clone()
                }
            })
            .collect();
        (tree::unflatten(&updates, out), CountState { count: safe_increment(&state.count) })
    }
}

/// Clips every element of the updates to `[-max_delta, max_delta]` (`optax.clip`).
#[derive(Clone, Copy, Debug)]
pub struct Clip(pub f64);

/// See [`Clip`].
pub fn clip(max_delta: f64) -> Clip {
    Clip(max_delta)
}

impl Transform for Clip {
    type State<P: Tree> = ();
    fn init<P: Tree>(&self, _: &P) {}
    fn update<P: Tree>(&self, updates: P, _: (), _: &P) -> (P, ()) {
        (tree::map(&updates, |u| u.clip(-self.0, self.0)), ())
    }
}

/// Rescales all updates together so their global L2 norm is at most `max_norm`
/// (`optax.clip_by_global_norm`).
#[derive(Clone, Copy, Debug)]
pub struct ClipByGlobalNorm(pub f64);

/// See [`ClipByGlobalNorm`].
pub fn clip_by_global_norm(max_norm: f64) -> ClipByGlobalNorm {
    ClipByGlobalNorm(max_norm)
}

impl Transform for ClipByGlobalNorm {
    type State<P: Tree> = ();
    fn init<P: Tree>(&self, _: &P) {}
    fn update<P: Tree>(&self, updates: P, _: (), _: &P) -> (P, ()) {
        let norm = global_norm(&updates);
        let keep = norm.lt(self.0);
        let out = tree::map(&updates, |u| where_(&keep, u, u / &norm * self.0));
        (out, ())
    }
}

/// State of [`Ema`].
#[derive(Clone, Debug, Tree)]
pub struct EmaState<P: Tree> {
    /// Number of updates so far.
    pub count: Array,
    /// The moving average.
    pub ema: P,
}

/// Replaces updates by their exponential moving average, optionally debiased (`optax.ema`).
#[derive(Clone, Copy, Debug)]
pub struct Ema {
    /// Decay of the average.
    pub decay: f64,
    /// Whether to divide by `1 - decay^count`.
    pub debias: bool,
}

/// See [`Ema`].
pub fn ema(decay: f64, debias: bool) -> Ema {
    Ema { decay, debias }
}

impl Transform for Ema {
    type State<P: Tree> = EmaState<P>;
    fn init<P: Tree>(&self, params: &P) -> EmaState<P> {
        EmaState { count: zero_count(), ema: zeros_like(params) }
    }
    fn update<P: Tree>(&self, updates: P, state: EmaState<P>, _: &P) -> (P, EmaState<P>) {
        let ema = update_moment(&updates, &state.ema, self.decay, 1);
        let count = safe_increment(&state.count);
        let out = if self.debias { bias_correction(&ema, self.decay, &count) } else { ema.clone() };
        (out, EmaState { count, ema })
    }
}

// ---- adafactor's parts ------------------------------------------------------------------------

/// State of [`ScaleByFactoredRms`]. The three trees have the parameters' structure; a leaf
/// that is factored holds its row and column statistics in `v_row` / `v_col` (and a `[1]`
/// placeholder in `v`), an unfactored one its full statistics in `v` (and placeholders in
/// `v_row` / `v_col`), as in Optax.
#[derive(Clone, Debug, Tree)]
pub struct FactoredState<P: Tree> {
    /// Number of updates so far.
    pub count: Array,
    /// Row statistics of factored leaves.
    pub v_row: P,
    /// Column statistics of factored leaves.
    pub v_col: P,
    /// Full statistics of unfactored leaves.
    pub v: P,
}

/// Adafactor's rescaling by a factored estimate of the mean squared gradient
/// (`optax.scale_by_factored_rms`).
#[derive(Clone, Copy, Debug)]
pub struct ScaleByFactoredRms {
    /// Whether to factor leaves of rank 2 and more.
    pub factored: bool,
    /// Exponent of the decay schedule `1 - (t + 1)^-decay_rate`.
    pub decay_rate: f64,
    /// Step offset of the decay schedule.
    pub step_offset: i32,
    /// Leaves whose second-largest dimension is smaller are not factored.
    pub min_dim_size_to_factor: usize,
    /// Added to squared gradients.
    pub epsilon: f64,
}

/// See [`ScaleByFactoredRms`].
pub fn scale_by_factored_rms(
    factored: bool,
    decay_rate: f64,
    step_offset: i32,
    min_dim_size_to_factor: usize,
    epsilon: f64,
) -> ScaleByFactoredRms {
    ScaleByFactoredRms { factored, decay_rate, step_offset, min_dim_size_to_factor, epsilon }
}

impl ScaleByFactoredRms {
    /// `(d1, d0)`: the axes of the second-largest and largest dimension, if factored.
    fn factored_dims(&self, shape: &[usize]) -> Option<(usize, usize)> {
        if !self.factored || shape.len() < 2 {
            return None;
        }
        let mut sorted: Vec<usize> = (0..shape.len()).collect();
        sorted.sort_by_key(|&i| shape[i]);
        let (d1, d0) = (sorted[sorted.len() - 2], sorted[sorted.len() - 1]);
        (shape[d1] >= self.min_dim_size_to_factor).then_some((d1, d0))
    }
}

fn placeholder(p: &Array) -> Array {
    Array::zeros_of([1], p.dtype())
}

impl Transform for ScaleByFactoredRms {
    type State<P: Tree> = FactoredState<P>;
    fn init<P: Tree>(&self, params: &P) -> FactoredState<P> {
        let leaves = tree::leaves(params);
        let (mut rows, mut cols, mut vs) = (Vec::new(), Vec::new(), Vec::new());
        for p in &leaves {
            match self.factored_dims(p.shape()) {
                Some((d1, d0)) => {
                    rows.push(p.zeros_like().sum_axes([d0 as isize], false));
                    cols.push(p.zeros_like().sum_axes([d1 as isize], false));
                    vs.push(placeholder(p));
                }
                None => {
                    rows.push(placeholder(p));
                    cols.push(placeholder(p));
                    vs.push(p.zeros_like());
                }
            }
        }
        FactoredState {
            count: zero_count(),
            v_row: tree::unflatten(params, rows),
            v_col: tree::unflatten(params, cols),
            v: tree::unflatten(params, vs),
        }
    }
    fn update<P: Tree>(
        &self,
        updates: P,
        state: FactoredState<P>,
        params: &P,
    ) -> (P, FactoredState<P>) {
        let t = (&state.count - self.step_offset).astype(kiln::DType::F32) + 1.0f32;
        let decay = 1.0f32 - t.pow(-self.decay_rate);
        let one_minus = 1.0f32 - &decay;
        let (gs, ps) = (tree::leaves(&updates), tree::leaves(params));
        let (vr, vc, vv) =
            (tree::leaves(&state.v_row), tree::leaves(&state.v_col), tree::leaves(&state.v));
        let (mut out, mut rows, mut cols, mut vs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..gs.len() {
            let g = &gs[i];
            let g2 = g * g + self.epsilon;
            match self.factored_dims(ps[i].shape()) {
                Some((d1, d0)) => {
                    let row = &vr[i] * &decay + g2.mean_axes([d0 as isize], false) * &one_minus;
                    let col = &vc[i] * &decay + g2.mean_axes([d1 as isize], false) * &one_minus;
                    let reduced_d1 = if d1 > d0 { d1 - 1 } else { d1 };
                    let row_col_mean = row.mean_axes([reduced_d1 as isize], true);
                    let row_factor = (&row / &row_col_mean).pow(-0.5f32);
                    let col_factor = col.pow(-0.5f32);
                    out.push(
                        g * kiln::lax::expand_dims(&row_factor, &[d0])
                            * kiln::lax::expand_dims(&col_factor, &[d1]),
                    );
                    rows.push(row);
                    cols.push(col);
                    vs.push(placeholder(&ps[i]));
                }
                None => {
                    let v = &vv[i] * &decay + &g2 * &one_minus;
                    out.push(g * v.pow(-0.5f32));
                    rows.push(placeholder(&ps[i]));
                    cols.push(placeholder(&ps[i]));
                    vs.push(v);
                }
            }
        }
        let state = FactoredState {
            count: safe_increment(&state.count),
            v_row: tree::unflatten(params, rows),
            v_col: tree::unflatten(params, cols),
            v: tree::unflatten(params, vs),
        };
        (tree::unflatten(&updates, out), state)
    }
}

/// Divides each leaf's update by `max(1, rms(update) / threshold)` (`optax.clip_by_block_rms`).
#[derive(Clone, Copy, Debug)]
pub struct ClipByBlockRms(pub f64);

/// See [`ClipByBlockRms`].
pub fn clip_by_block_rms(threshold: f64) -> ClipByBlockRms {
    ClipByBlockRms(threshold)
}

impl Transform for ClipByBlockRms {
    type State<P: Tree> = ();
    fn init<P: Tree>(&self, _: &P) {}
    fn update<P: Tree>(&self, updates: P, _: (), _: &P) -> (P, ()) {
        let out = tree::map(&updates, |u| {
            let denom = ((u * u).mean().sqrt() / self.0).maximum(1.0f32);
            u / denom
        });
        (out, ())
    }
}

/// Multiplies each leaf's update by `max(rms(param), min_scale)`
/// (`optax.scale_by_param_block_rms`).
#[derive(Clone, Copy, Debug)]
pub struct ScaleByParamBlockRms(pub f64);

/// See [`ScaleByParamBlockRms`] (Optax's default `min_scale = 1e-3`).
pub fn scale_by_param_block_rms(min_scale: f64) -> ScaleByParamBlockRms {
    ScaleByParamBlockRms(min_scale)
}

impl Transform for ScaleByParamBlockRms {
    type State<P: Tree> = ();
    fn init<P: Tree>(&self, _: &P) {}
    fn update<P: Tree>(&self, updates: P, _: (), params: &P) -> (P, ()) {
        let out = tree::zip_map(&updates, params, |u, p| {
            let ms = (p * p).mean();
            let pos = ms.gt(0.0);
            let rms = where_(&pos, where_(&pos, &ms, 1.0f32).sqrt(), 0.0f32);
            u * rms.maximum(self.0)
        });
        (out, ())
    }
}
