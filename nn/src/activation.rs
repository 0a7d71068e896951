//! Activation functions (`jax.nn`), as free functions and as the [`Activation`] enum used
//! by [`Mlp`](crate::Mlp) and [`Sequential`](crate::Sequential).
//!
//! ```
//! use kiln::Array;
//! use kiln_nn::activation::{relu, sigmoid};
//! let x = Array::from_vec(vec![-1.0f32, 0.0, 2.0], [3]);
//! assert_eq!(relu(&x).to_vec::<f32>(), vec![0.0, 0.0, 2.0]);
//! assert_eq!(sigmoid(&x).to_vec::<f32>()[1], 0.5);
//! ```

use kiln::{Array, where_};

/// `max(x, 0)`.
pub fn relu(x: &Array) -> Array {
    x.relu()
}

/// `x` where positive, `negative_slope * x` elsewhere (Flax's default slope is `0.01`).
pub fn leaky_relu(x: &Array, negative_slope: f64) -> Array {
    where_(x.ge(0.0), x, x * negative_slope)
}

/// GELU with the tanh approximation (`jax.nn.gelu`'s default, `approximate=True`):
/// `x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`. Integers give `f32`.
///
/// One primitive ([`kiln::lax::gelu`]), so that it and its derivative each run as one loop.
pub fn gelu(x: &Array) -> Array {
    x.gelu(true)
}

/// Exact GELU (`jax.nn.gelu(x, approximate=False)`): `x/2 * (1 + erf(x / sqrt 2))`.
/// Integers give `f32`.
pub fn gelu_exact(x: &Array) -> Array {
    x.gelu(false)
}

/// `x * sigmoid(x)` (also called swish).
pub fn silu(x: &Array) -> Array {
    x * x.sigmoid()
}

/// Alias of [`silu`].
pub fn swish(x: &Array) -> Array {
    silu(x)
}

/// `1 / (1 + e^-x)`.
pub fn sigmoid(x: &Array) -> Array {
    x.sigmoid()
}

/// `log(sigmoid(x)) = -softplus(-x)`, computed stably.
pub fn log_sigmoid(x: &Array) -> Array {
    -softplus(&-x)
}

/// Hyperbolic tangent.
pub fn tanh(x: &Array) -> Array {
    x.tanh()
}

/// `log(1 + e^x)`, computed stably.
pub fn softplus(x: &Array) -> Array {
    x.softplus()
}

/// `x` where positive, `alpha * (e^x - 1)` elsewhere (the usual `alpha` is `1`).
pub fn elu(x: &Array, alpha: f64) -> Array {
    // expm1 of min(x, 0) so the unused branch never overflows (and its gradient is finite).
    let neg = x.minimum(0.0).expm1() * alpha;
    where_(x.gt(0.0), x, neg)
}

/// Softmax along `axis` (negative counts from the end).
pub fn softmax(x: &Array, axis: isize) -> Array {
    x.softmax(axis)
}

/// Log-softmax along `axis` (negative counts from the end).
pub fn log_softmax(x: &Array, axis: isize) -> Array {
    x.log_softmax(axis)
}

/// An activation function as a value (a static field of [`Mlp`](crate::Mlp) and a layer of
/// [`Sequential`](crate::Sequential)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// The identity.
    Identity,
    /// [`relu`].
    Relu,
    /// [`leaky_relu`] with the given negative slope.
    LeakyRelu(f64),
    /// [`gelu`] (tanh approximation).
    Gelu,
    /// [`gelu_exact`].
    GeluExact,
    /// [`silu`].
    Silu,
    /// [`sigmoid`].
    Sigmoid,
    /// [`tanh`].
    Tanh,
    /// [`softplus`].
    Softplus,
    /// [`elu`] with the given `alpha`.
    Elu(f64),
    /// [`softmax`] over the last axis.
    Softmax,
    /// [`log_softmax`] over the last axis.
    LogSoftmax,
}

impl Activation {
    /// Applies the activation.
    pub fn apply(&self, x: &Array) -> Array {
        match *self {
            Activation::Identity => x.clone(),
            Activation::Relu => relu(x),
            Activation::LeakyRelu(s) => leaky_relu(x, s),
            Activation::Gelu => gelu(x),
            Activation::GeluExact => gelu_exact(x),
            Activation::Silu => silu(x),
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => tanh(x),
            Activation::Softplus => softplus(x),
            Activation::Elu(a) => elu(x, a),
            Activation::Softmax => softmax(x, -1),
            Activation::LogSoftmax => log_softmax(x, -1),
        }
    }
}
