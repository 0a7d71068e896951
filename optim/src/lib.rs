//! Optax-style optimizers for kiln: gradient transformations with their state in a [`Tree`].
//!
//! An optimizer is a value implementing [`Transform`]: `init(&params)` builds its state, and
//! `update(grads, state, &params)` returns the updates and the new state. [`apply_updates`]
//! adds the updates to the parameters (the learning-rate scaling already negated them).
//! Everything is array operations, including step counts and scheduled learning rates held
//! in the state, so a whole train step is a pure function of `(params, state, batch)` that can
//! be traced.
//!
//! * **Chaining**: a tuple of transforms is a transform ([`chain`] just returns it); its state
//!   is the tuple of states, with key paths like `0.mu.w`.
//! * **Transforms**: [`scale`], [`scale_by_learning_rate`], [`scale_by_adam`],
//!   [`scale_by_rms`], [`scale_by_stddev`], [`trace`], [`add_decayed_weights`], [`clip`],
//!   [`clip_by_global_norm`], [`ema`], ... in [`transform`].
//! * **Wrappers**: [`masked`], [`multi_transform`], [`multi_steps`], [`apply_if_finite`],
//!   [`inject_hyperparams`].
//! * **Optimizers**: [`sgd`], [`adam`], [`adamw`], [`nadam`], [`amsgrad`], [`lamb`], [`lars`],
//!   [`lion`], [`rmsprop`], [`rmsprop_centered`], [`adagrad`], [`adadelta`], [`adabelief`],
//!   [`adafactor`].
//! * **Schedules**: [`schedule`]; anything taking a learning rate takes an `f32` or a
//!   [`Schedule`].
//!
//! Scalar hyper-parameters (`b1`, `b2`, `eps`, decays, ...) are `f64`, like the Python floats
//! Optax takes: they act as weak scalars that round to the parameters' dtype where they are
//! used, and quantities such as `1 - b2` are formed in `f64` first, as in Optax.
//!
//! # Example
//!
//! Minimise `sum((w - 3)^2)` with Adam and a warmup-cosine schedule:
//!
//! ```
//! use kiln::{Array, grad};
//! use kiln_optim::{Transform, adam, apply_updates, schedule};
//!
//! let loss = |w: &Array| ((w - 3.0) * (w - 3.0)).sum();
//! let opt = adam(schedule::warmup_cosine_decay(0.0, 0.3, 10, 300, 0.01, 1.0), 0.9, 0.999, 1e-8);
//! let mut w = Array::zeros([4]);
//! let mut state = opt.init(&w);
//! for _ in 0..300 {
//!     let g = grad(loss)(&w);
//!     let (updates, s) = opt.update(g, state, &w);
//!     state = s;
//!     w = apply_updates(&w, &updates);
//! }
//! assert!(loss(&w).item::<f32>() < 1e-3);
//! assert_eq!(state.0.count.item::<i32>(), 300); // Adam's step count lives in the state
//! ```
//!
//! The state is an ordinary tree, so it checkpoints under its key paths
//! (`kiln::tree::leaves_with_path(&state)` gives `0.count`, `0.mu`, `0.nu`, `1.count`) and
//! restores with `kiln::tree::unflatten`.
//!
//! Not yet provided: Optax's `extra_args`, and the `mu_dtype` /
//! `accumulator_dtype` options (state follows the parameters' dtype).

pub mod alias;
pub mod base;
pub mod schedule;
pub mod transform;
pub mod wrappers;

pub use alias::*;
pub use base::{Identity, Transform, apply_updates, chain, global_norm, identity};
pub use kiln::Tree;
pub use schedule::Schedule;
pub use transform::*;
pub use wrappers::*;
