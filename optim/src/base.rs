//! The [`Transform`] trait, chaining by tuples, and [`apply_updates`].

use kiln::{Array, DType, Tree, tree};

/// A gradient transformation: two pure functions, `init` and `update`, with all mutable
/// quantities (moments, step counts, accumulated gradients) in a state that is a [`Tree`].
///
/// `P` is the type of the parameters (and of the gradients and updates, which have the same
/// structure). Because the state is a tree, it can be flattened, checkpointed under its key
/// paths (`1.mu.layers.0.weight`), and passed through a traced train step.
///
/// Tuples of transforms are transforms that apply their parts in order (Optax's `chain`);
/// their state is the tuple of the parts' states.
pub trait Transform {
    /// The optimizer state for parameters of type `P`.
    type State<P: Tree>: Tree;

    /// The initial state for `params`.
    fn init<P: Tree>(&self, params: &P) -> Self::State<P>;

    /// Transforms `updates` (gradients at the start of a chain) given the current state and
    /// parameters; returns the new updates and the new state.
    fn update<P: Tree>(&self, updates: P, state: Self::State<P>, params: &P)
    -> (P, Self::State<P>);
}

/// Adds `updates` to `params` leaf by leaf, keeping each parameter's dtype.
///
/// Updates already carry their sign (the learning-rate scaling negates them), so this always adds.
pub fn apply_updates<P: Tree>(params: &P, updates: &P) -> P {
    tree::zip_map(params, updates, |p, u| {
        let r = p + u;
        if r.dtype() == p.dtype() { r } else { r.astype(p.dtype()) }
    })
}

/// Chains transforms: `chain((a, b, c))` is the tuple `(a, b, c)`, which already implements
/// [`Transform`] (up to twelve parts; nest tuples for more). Provided for readability.
pub fn chain<T: Transform>(transforms: T) -> T {
    transforms
}

macro_rules! tuple_transform {
    ($($T:ident $i:tt),+) => {
        impl<$($T: Transform),+> Transform for ($($T,)+) {
            type State<P: Tree> = ($($T::State<P>,)+);

            fn init<P: Tree>(&self, params: &P) -> Self::State<P> {
                ($(self.$i.init(params),)+)
            }

            #[allow(non_snake_case)] // reason: the tuple's parts are named by their type parameters
            fn update<P: Tree>(&self, updates: P, state: Self::State<P>, params: &P) -> (P, Self::State<P>) {
                let ($($T,)+) = state;
                $(let (updates, $T) = self.$i.update(updates, $T, params);)+
                (updates, ($($T,)+))
            }
        }
    };
}

tuple_transform!(A 0);
tuple_transform!(A 0, B 1);
tuple_transform!(A 0, B 1, C 2);
tuple_transform!(A 0, B 1, C 2, D 3);
tuple_transform!(A 0, B 1, C 2, D 3, E 4);
tuple_transform!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_transform!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_transform!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
tuple_transform!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
tuple_transform!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
tuple_transform!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
tuple_transform!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

/// The transform that returns updates unchanged and keeps no state (`optax.identity`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl Transform for Identity {
    type State<P: Tree> = ();
    fn init<P: Tree>(&self, _: &P) {}
    fn update<P: Tree>(&self, updates: P, _: (), _: &P) -> (P, ()) {
        (updates, ())
    }
}

/// `identity()`: see [`Identity`].
pub fn identity() -> Identity {
    Identity
}

/// An optional transform: `None` acts as [`Identity`]. Its state is `Option<T::State<P>>`.
impl<T: Transform> Transform for Option<T> {
    type State<P: Tree> = Option<T::State<P>>;
    fn init<P: Tree>(&self, params: &P) -> Self::State<P> {
        self.as_ref().map(|t| t.init(params))
    }
    fn update<P: Tree>(
        &self,
        updates: P,
        state: Self::State<P>,
        params: &P,
    ) -> (P, Self::State<P>) {
        match (self, state) {
            (Some(t), Some(s)) => {
                let (u, s) = t.update(updates, s, params);
                (u, Some(s))
            }
            (None, None) => (updates, None),
            _ => panic!("Option<Transform>: state does not match the transform (Some vs None)"),
        }
    }
}

// ---- helpers shared by the transforms ------------------------------------------------------

/// A zero `i32` step counter.
pub(crate) fn zero_count() -> Array {
    Array::scalar(0i32)
}

/// `count + 1`, saturating at `i32::MAX` (Optax's `safe_increment`).
pub(crate) fn safe_increment(count: &Array) -> Array {
    kiln::where_(count.lt(i32::MAX), count + 1i32, count)
}

/// `(1 - decay) * g^order + decay * m`, leaf by leaf (Optax's `tree.update_moment`).
///
/// `decay` is an `f64`, like the Python float Optax gets: `1 - decay` is formed in `f64` and
/// only then rounded to the leaves' dtype (a weak scalar). Forming it from an `f32` decay
/// loses most of its digits (`1 - 0.999f32` is off by 1.3e-5 relative), which made Adam's
/// second moment, and so every Adam-family step, differ from Optax's.
pub(crate) fn update_moment<P: Tree>(g: &P, m: &P, decay: f64, order: i32) -> P {
    tree::zip_map(g, m, |g, m| {
        let gp = match order {
            1 => g.clone(),
            2 => g * g,
            n => g.pow(n),
        };
        gp * (1.0 - decay) + m * decay
    })
}

/// `m / (1 - decay^count)`, leaf by leaf (Optax's `tree.bias_correction`).
///
/// As in Optax, `decay^count` is an `f32` power (the Python float meets an `int32` count).
pub(crate) fn bias_correction<P: Tree>(m: &P, decay: f64, count: &Array) -> P {
    let correction = 1.0f32 - Array::scalar(decay as f32).pow(count.astype(DType::F32));
    tree::map(m, |x| x / &correction)
}

/// `sqrt(sum(x^2))` with a zero-safe gradient.
pub(crate) fn safe_norm(x: &Array) -> Array {
    let sq = (x * x).sum();
    let pos = sq.gt(0.0);
    let safe = kiln::where_(&pos, &sq, 1.0f32).sqrt();
    kiln::where_(&pos, &safe, 0.0f32)
}

/// The L2 norm of all leaves together.
pub fn global_norm<P: Tree>(t: &P) -> Array {
    let mut total = Array::scalar(0.0f32);
    for leaf in tree::leaves(t) {
        total += (&leaf * &leaf).sum().astype(DType::F32);
    }
    total.sqrt()
}

/// A tree shaped like `t` with all-zero leaves.
pub(crate) fn zeros_like<P: Tree>(t: &P) -> P {
    tree::map(t, |x| x.zeros_like())
}
