//! Transforms that wrap other transforms: [`masked`], [`multi_transform`], [`multi_steps`],
//! [`apply_if_finite`] and [`inject_hyperparams`].
//!
//! None of them branches on array values on the host: where Optax uses `lax.cond`, both
//! outcomes are computed and selected with `where_`, so a wrapped train step can be traced.

use crate::base::{Transform, safe_increment, zero_count, zeros_like};
use crate::schedule::Schedule;
use crate::transform::Mask;
use kiln::tree::{self, KeyPath};
use kiln::{Array, DType, Tree, where_};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

fn gather<P: Tree>(t: &P, idx: &[usize]) -> Vec<Array> {
    let leaves = tree::leaves(t);
    idx.iter().map(|&i| leaves[i].clone()).collect()
}

fn scatter<P: Tree>(t: &P, idx: &[usize], new: Vec<Array>) -> P {
    let mut leaves = tree::leaves(t);
    for (&i, a) in idx.iter().zip(new) {
        leaves[i] = a;
    }
    tree::unflatten(t, leaves)
}

/// `a` where `pred` (a bool scalar) holds, else `b`, leaf by leaf.
pub fn select_tree<T: Tree>(pred: &Array, a: &T, b: &T) -> T {
    tree::zip_map(a, b, |x, y| {
        let r = where_(pred, x, y);
        if r.dtype() == x.dtype() { r } else { r.astype(x.dtype()) }
    })
}

// ---- masked -----------------------------------------------------------------------------------

/// Applies `inner` to the leaves selected by `mask` only; other updates pass through
/// unchanged (`optax.masked`). The inner transform sees the selected leaves as a
/// `Vec<Array>` (so global quantities such as a global norm cover the selected leaves only),
/// and its state is `T::State<Vec<Array>>`.
#[derive(Clone, Debug)]
pub struct Masked<T> {
    /// The wrapped transform.
    pub inner: T,
    /// The selection.
    pub mask: Mask,
}

/// See [`Masked`].
pub fn masked<T: Transform>(inner: T, mask: Mask) -> Masked<T> {
    Masked { inner, mask }
}

impl<T: Transform> Transform for Masked<T> {
    type State<P: Tree> = T::State<Vec<Array>>;
    fn init<P: Tree>(&self, params: &P) -> Self::State<P> {
        self.inner.init(&gather(params, &self.mask.indices(params)))
    }
    fn update<P: Tree>(
        &self,
        updates: P,
        state: Self::State<P>,
        params: &P,
    ) -> (P, Self::State<P>) {
        let idx = self.mask.indices(params);
        let (sub, state) = self.inner.update(gather(&updates, &idx), state, &gather(params, &idx));
        (scatter(&updates, &idx, sub), state)
    }
}

// ---- multi_transform --------------------------------------------------------------------------

/// Assigns each leaf (by key path and value) the index of the transform that updates it.
#[derive(Clone)]
pub struct Labels(Arc<LabelFn>);

/// The function inside [`Labels`].
type LabelFn = dyn Fn(&KeyPath, &Array) -> usize + Send + Sync;

impl Labels {
    /// Labels from a function returning a position in the tuple of transforms.
    pub fn new(f: impl Fn(&KeyPath, &Array) -> usize + Send + Sync + 'static) -> Labels {
        Labels(Arc::new(f))
    }
    fn indices<P: Tree>(&self, t: &P, label: usize) -> Vec<usize> {
        tree::leaves_with_path(t)
            .iter()
            .enumerate()
            .filter(|(_, (p, a))| (self.0)(p, a) == label)
            .map(|(i, _)| i)
            .collect()
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Labels(..)")
    }
}

/// Partitions the leaves by label and updates each part with its own transform
/// (`optax.multi_transform`). `transforms` is a tuple; `labels` maps a leaf to a position
/// in it (a leaf whose label is out of range is left unchanged). The state is the tuple of
/// the parts' states, each over its `Vec<Array>` of leaves.
///
/// ```
/// use kiln::Array;
/// use std::collections::BTreeMap;
/// use kiln_optim::{Labels, Transform, multi_transform, sgd, adam, apply_updates};
/// let mut p = BTreeMap::new();
/// p.insert("frozen".to_string(), Array::ones([2]));
/// p.insert("w".to_string(), Array::ones([2]));
/// let frozen_last = Labels::new(|path, _| if path.to_string() == "frozen" { 1 } else { 0 });
/// let opt = multi_transform((adam(0.1, 0.9, 0.999, 1e-8), sgd(0.0, None, false)), frozen_last);
/// let s = opt.init(&p);
/// let (u, _) = opt.update(p.clone(), s, &p);
/// let p = apply_updates(&p, &u);
/// assert_eq!(p["frozen"].to_vec::<f32>(), vec![1.0, 1.0]);
/// ```
#[derive(Clone, Debug)]
pub struct MultiTransform<Ts> {
    /// The tuple of transforms.
    pub transforms: Ts,
    /// The labelling.
    pub labels: Labels,
}

/// See [`MultiTransform`].
pub fn multi_transform<Ts>(transforms: Ts, labels: Labels) -> MultiTransform<Ts> {
    MultiTransform { transforms, labels }
}

macro_rules! multi_transform_tuple {
    ($($T:ident $i:tt),+) => {
        impl<$($T: Transform),+> Transform for MultiTransform<($($T,)+)> {
            type State<P: Tree> = ($($T::State<Vec<Array>>,)+);
            fn init<P: Tree>(&self, params: &P) -> Self::State<P> {
                ($(self.transforms.$i.init(&gather(params, &self.labels.indices(params, $i))),)+)
            }
            #[allow(non_snake_case)] // reason: the parts are named by their type parameters
            fn update<P: Tree>(&self, updates: P, state: Self::State<P>, params: &P) -> (P, Self::State<P>) {
                let ($($T,)+) = state;
                let mut updates = updates;
                $(
                    let idx = self.labels.indices(params, $i);
                    let (sub, $T) = self.transforms.$i.update(
                        gather(&updates, &idx), $T, &gather(params, &idx));
                    updates = scatter(&updates, &idx, sub);
                )+
                (updates, ($($T,)+))
            }
        }
    };
}

multi_transform_tuple!(A 0);
multi_transform_tuple!(A 0, B 1);
multi_transform_tuple!(A 0, B 1, C 2);
multi_transform_tuple!(A 0, B 1, C 2, D 3);

// ---- multi_steps ------------------------------------------------------------------------------

/// State of [`MultiSteps`].
#[derive(Clone, Debug, Tree)]
pub struct MultiStepsState<P: Tree, S: Tree> {
    /// Position inside the current accumulation window (`0..k`).
    pub mini_step: Array,
    /// Number of inner updates made.
    pub gradient_step: Array,
    /// The inner transform's state.
    pub inner: S,
    /// Accumulated (averaged) gradients.
    pub acc_grads: P,
}

/// Gradient accumulation (`optax.MultiSteps`): accumulates `every_k` updates (their mean,
/// or sum if `use_grad_mean` is false), emits zeros in between, and applies `inner` to the
/// accumulated gradient on every `every_k`-th call.
#[derive(Clone, Debug)]
pub struct MultiSteps<T> {
    /// The wrapped transform.
    pub inner: T,
    /// Accumulation window.
    pub every_k: i32,
    /// Average (true) or sum the accumulated gradients.
    pub use_grad_mean: bool,
}

/// See [`MultiSteps`]; averages the gradients.
///
/// Panics if `every_k < 1`.
pub fn multi_steps<T: Transform>(inner: T, every_k: i32) -> MultiSteps<T> {
    assert!(every_k >= 1, "multi_steps: every_k must be at least 1");
    MultiSteps { inner, every_k, use_grad_mean: true }
}

impl<T: Transform> Transform for MultiSteps<T> {
    type State<P: Tree> = MultiStepsState<P, T::State<P>>;
    fn init<P: Tree>(&self, params: &P) -> Self::State<P> {
        MultiStepsState {
            mini_step: zero_count(),
            gradient_step: zero_count(),
            inner: self.inner.init(params),
            acc_grads: zeros_like(params),
        }
    }
    fn update<P: Tree>(
        &self,
        updates: P,
        state: Self::State<P>,
        params: &P,
    ) -> (P, Self::State<P>) {
        let n = state.mini_step.astype(DType::F32);
        let acc = tree::zip_map(&updates, &state.acc_grads, |g, a| {
            if self.use_grad_mean { (g + a * &n) / (&n + 1.0f32) } else { g + a }
        });
        let (final_updates, new_inner) =
            self.inner.update(acc.clone(), state.inner.clone(), params);
        let emit = state.mini_step.eq(self.every_k - 1);
        let new_state = MultiStepsState {
            mini_step: safe_increment(&state.mini_step).rem(self.every_k),
            gradient_step: where_(
                &emit,
                safe_increment(&state.gradient_step),
                &state.gradient_step,
            ),
            inner: select_tree(&emit, &new_inner, &state.inner),
            acc_grads: tree::map(&acc, |a| where_(&emit, a.zeros_like(), a)),
        };
        let out = tree::map(&final_updates, |u| where_(&emit, u, u.zeros_like()));
        (out, new_state)
    }
}

// ---- apply_if_finite --------------------------------------------------------------------------

/// State of [`ApplyIfFinite`].
#[derive(Clone, Debug, Tree)]
pub struct ApplyIfFiniteState<S: Tree> {
    /// Consecutive non-finite updates so far (`i32`).
    pub notfinite_count: Array,
    /// Whether the last update was finite (bool).
    pub last_finite: Array,
    /// Non-finite updates in total (`i32`).
    pub total_notfinite: Array,
    /// The inner transform's state.
    pub inner: S,
}

/// Skips updates containing NaN or infinity (`optax.apply_if_finite`): the returned update is
/// zero and the inner state is unchanged, unless more than `max_consecutive_errors`
/// non-finite updates came in a row, in which case the update goes through.
#[derive(Clone, Debug)]
pub struct ApplyIfFinite<T> {
    /// The wrapped transform.
    pub inner: T,
    /// How many consecutive non-finite updates to reject.
    pub max_consecutive_errors: i32,
}

/// See [`ApplyIfFinite`].
pub fn apply_if_finite<T: Transform>(inner: T, max_consecutive_errors: i32) -> ApplyIfFinite<T> {
    ApplyIfFinite { inner, max_consecutive_errors }
}

impl<T: Transform> Transform for ApplyIfFinite<T> {
    type State<P: Tree> = ApplyIfFiniteState<T::State<P>>;
    fn init<P: Tree>(&self, params: &P) -> Self::State<P> {
        ApplyIfFiniteState {
            notfinite_count: zero_count(),
            last_finite: Array::scalar(true),
            total_notfinite: zero_count(),
            inner: self.inner.init(params),
        }
    }
    fn update<P: Tree>(
        &self,
        updates: P,
        state: Self::State<P>,
        params: &P,
    ) -> (P, Self::State<P>) {
        let mut finite = Array::scalar(true);
        for leaf in tree::leaves(&updates) {
            finite = finite.logical_and(leaf.is_finite().all());
        }
        let notfinite_count = where_(&finite, 0i32, &state.notfinite_count + 1i32);
        let apply = finite.logical_or(notfinite_count.gt(self.max_consecutive_errors));
        let (new_updates, new_inner) =
            self.inner.update(updates.clone(), state.inner.clone(), params);
        let out = tree::map(&new_updates, |u| where_(&apply, u, u.zeros_like()));
        let total = where_(&finite, &state.total_notfinite, &state.total_notfinite + 1i32);
        let inner = select_tree(&apply, &new_inner, &state.inner);
        (
            out,
            ApplyIfFiniteState {
                notfinite_count,
                last_finite: finite,
                total_notfinite: total,
                inner,
            },
        )
    }
}

// ---- inject_hyperparams -----------------------------------------------------------------------

/// A hyper-parameter given to [`InjectHyperparams`].
#[derive(Clone, Debug)]
pub enum Hyperparam {
    /// A value stored in the state at `init` and read back from it at every update, so it
    /// can be changed between (traced) steps by writing the state.
    Value(f32),
    /// A schedule evaluated at the step count at every update (its value is recorded in the
    /// state too, for logging).
    Schedule(Schedule),
}

/// State of [`InjectHyperparams`].
#[derive(Clone, Debug, Tree)]
pub struct InjectHyperparamsState<S: Tree> {
    /// Number of updates so far.
    pub count: Array,
    /// The current hyper-parameter values (`f32` scalars), by name.
    pub hyperparams: BTreeMap<String, Array>,
    /// The inner transform's state.
    pub inner: S,
}

/// Makes hyper-parameters part of the optimizer state (`optax.inject_hyperparams`).
///
/// `factory` builds the inner transform from the current hyper-parameter arrays at every
/// update; pass them on as [`Schedule`]s (`Schedule::from(array)`), which is what learning
/// rates and weight decays accept.
///
/// ```
/// use kiln::Array;
/// use kiln_optim::{Transform, inject_hyperparams, sgd};
/// let opt = inject_hyperparams(|hp| sgd(hp["learning_rate"].clone(), None, false))
///     .value("learning_rate", 0.1);
/// let p = Array::ones([2]);
/// let mut s = opt.init(&p);
/// s.hyperparams.insert("learning_rate".into(), Array::scalar(0.5f32));
/// let (u, _) = opt.update(Array::ones([2]), s, &p);
/// assert_eq!(u.to_vec::<f32>(), vec![-0.5, -0.5]);
/// ```
#[derive(Clone)]
pub struct InjectHyperparams<F> {
    factory: F,
    hyperparams: Vec<(String, Hyperparam)>,
}

/// See [`InjectHyperparams`]; add hyper-parameters with [`InjectHyperparams::value`] and
/// [`InjectHyperparams::schedule`].
pub fn inject_hyperparams<F, T>(factory: F) -> InjectHyperparams<F>
where
    F: Fn(&BTreeMap<String, Array>) -> T,
    T: Transform,
{
    InjectHyperparams { factory, hyperparams: Vec::new() }
}

impl<F> InjectHyperparams<F> {
    /// Adds a hyper-parameter held as a value in the state.
    pub fn value(mut self, name: &str, v: f32) -> Self {
        self.hyperparams.push((name.to_string(), Hyperparam::Value(v)));
        self
    }
    /// Adds a hyper-parameter following a schedule.
    pub fn schedule(mut self, name: &str, s: impl Into<Schedule>) -> Self {
        self.hyperparams.push((name.to_string(), Hyperparam::Schedule(s.into())));
        self
    }
}

impl<F> fmt::Debug for InjectHyperparams<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InjectHyperparams").field("hyperparams", &self.hyperparams).finish()
    }
}

impl<F, T> Transform for InjectHyperparams<F>
where
    F: Fn(&BTreeMap<String, Array>) -> T,
    T: Transform,
{
    type State<P: Tree> = InjectHyperparamsState<T::State<P>>;
    fn init<P: Tree>(&self, params: &P) -> Self::State<P> {
        let count = zero_count();
        let hp: BTreeMap<String, Array> = self
            .hyperparams
            .iter()
            .map(|(k, h)| {
                let v = match h {
                    Hyperparam::Value(v) => Array::scalar(*v),
                    Hyperparam::Schedule(s) => s.at(&count),
                };
                (k.clone(), v)
            })
            .collect();
        let inner = (self.factory)(&hp).init(params);
        InjectHyperparamsState { count, hyperparams: hp, inner }
    }
    fn update<P: Tree>(
        &self,
        updates: P,
        state: Self::State<P>,
        params: &P,
    ) -> (P, Self::State<P>) {
        let mut hp = state.hyperparams;
        for (k, h) in &self.hyperparams {
            if let Hyperparam::Schedule(s) = h {
                hp.insert(k.clone(), s.at(&state.count));
            }
        }
        let (out, inner) = (self.factory)(&hp).update(updates, state.inner, params);
        (
            out,
            InjectHyperparamsState { count: safe_increment(&state.count), hyperparams: hp, inner },
        )
    }
}
