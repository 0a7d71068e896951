//! Neural-network modules for kiln, in the style of Equinox and Flax.
//!
//! A **module is a [`Tree`](kiln::Tree)**: a plain struct whose array fields are its
//! parameters and whose `#[tree(static)]` fields are hyperparameters. Constructors take an
//! explicit PRNG key (`Linear::new(&key, in, out)`, or a config such as
//! [`LinearConfig`]`::new(in, out).init(&key)`); `forward` is an ordinary method written
//! with array operations only, so it works under `grad`, `jvp`, `vmap` and `jit`. Because a
//! model is a tree, `kiln::grad` of a loss returns gradients **of the model's type**, and
//! [`summary`] lists its parameters by key path.
//!
//! Conventions:
//! - Features/channels are on the last axis; any leading (batch) dims are allowed
//!   (convolutions and pooling are channels-last: `[.., H, W, C]`). [`GroupNorm`] and
//!   [`BatchNorm`] are the exceptions that need a batch axis.
//! - Randomness is explicit: initializers take a key; [`Dropout`] takes `Some(&key)` when
//!   training and `None` for evaluation.
//! - State is explicit: [`BatchNorm::forward_train`] returns the updated
//!   [`BatchNormState`]; [`BatchNorm::forward_eval`] uses it.
//! - Defaults follow Flax: lecun-normal kernels, zero biases, `epsilon = 1e-6` for layer
//!   norms, SAME padding for convolutions.
//!
//! Also here: [`activation`] functions, [`loss`]es (Optax's), [`metric`]s and [`init`]ializers.
//!
//! ```
//! use kiln::{Array, random};
//! use kiln_nn::{Activation, Mlp, loss, metric};
//!
//! let (k_model, k_data) = random::split2(&random::key(0));
//! let model = Mlp::new(&k_model, &[4, 8, 3], Activation::Relu);
//! let x = random::normal(&k_data, &[16, 4], kiln::DType::F32);
//! let labels = Array::from_vec((0..16).map(|i| i % 3).collect::<Vec<i32>>(), [16]);
//!
//! let loss_fn = |m: &Mlp| {
//!     loss::softmax_cross_entropy_with_integer_labels(&m.forward(&x), &labels).mean()
//! };
//! let (l0, grads) = kiln::value_and_grad(loss_fn)(&model);
//! // The gradient is an `Mlp`: take one SGD step with tree::zip_map.
//! let model = kiln::tree::zip_map(&model, &grads, |p, g| p - g * 0.1);
//! assert!(loss_fn(&model).item::<f32>() < l0.item::<f32>());
//! let acc = metric::accuracy(&model.forward(&x), &labels);
//! assert!((0.0..=1.0).contains(&acc.item::<f32>()));
//! println!("{}", kiln_nn::summary(&model));
//! ```

pub mod activation;
pub mod attention;
pub mod conv;
pub mod dropout;
pub mod init;
pub mod linear;
pub mod loss;
pub mod metric;
pub mod norm;
pub mod pool;
pub mod recurrent;
pub mod sequential;
mod summary;

pub use activation::Activation;
pub use attention::{MultiHeadAttention, causal_mask, dot_product_attention};
pub use conv::{Conv1d, Conv2d, ConvConfig, ConvTranspose2d, Padding};
pub use dropout::Dropout;
pub use init::Initializer;
pub use linear::{Embedding, Linear, LinearConfig};
pub use norm::{BatchNorm, BatchNormState, GroupNorm, LayerNorm, RMSNorm};
pub use pool::{AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d};
pub use recurrent::{GRUCell, LSTMCell, LSTMState};
pub use sequential::{Layer, Mlp, Sequential};
pub use summary::summary;
