//! [`Sequential`] (a list of [`Layer`]s) and [`Mlp`].

use crate::activation::Activation;
use crate::attention::MultiHeadAttention;
use crate::conv::{Conv1d, Conv2d, ConvTranspose2d};
use crate::dropout::Dropout;
use crate::linear::{Embedding, Linear, LinearConfig};
use crate::norm::{GroupNorm, LayerNorm, RMSNorm};
use crate::pool::{AvgPool2d, MaxPool2d};
use kiln::{Array, Tree, random};

/// One layer of a [`Sequential`]. Stateful layers ([`BatchNorm`](crate::BatchNorm)) and
/// recurrent cells are not layers here: call them explicitly.
#[derive(Clone, Debug, Tree)]
pub enum Layer {
    /// [`Linear`].
    Linear(Linear),
    /// [`Conv1d`].
    Conv1d(Conv1d),
    /// [`Conv2d`].
    Conv2d(Conv2d),
    /// [`ConvTranspose2d`].
    ConvTranspose2d(ConvTranspose2d),
    /// [`MaxPool2d`].
    MaxPool2d(MaxPool2d),
    /// [`AvgPool2d`].
    AvgPool2d(AvgPool2d),
    /// [`LayerNorm`].
    LayerNorm(LayerNorm),
    /// [`RMSNorm`].
    RMSNorm(RMSNorm),
    /// [`GroupNorm`].
    GroupNorm(GroupNorm),
    /// [`Embedding`].
    Embedding(Embedding),
    /// [`Dropout`] (uses the key given to [`Sequential::forward`]).
    Dropout(Dropout),
    /// Causal or unmasked self-attention.
    SelfAttention {
        /// The attention layer.
        attention: MultiHeadAttention,
        /// Whether to apply a causal mask.
        #[tree(static)]
        causal: bool,
    },
    /// An activation function.
    Activation(#[tree(static)] Activation),
    /// Merges every axis from `start_axis` (counted from the front) into one.
    Flatten {
        /// The first axis merged (the axes before it are kept, e.g. batch dims).
        #[tree(static)]
        start_axis: usize,
    },
}

impl Layer {
    /// Applies the layer; `key` is used only by dropout (`None` = evaluation).
    pub fn forward(&self, x: &Array, key: Option<&Array>) -> Array {
        match self {
            Layer::Linear(l) => l.forward(x),
            Layer::Conv1d(l) => l.forward(x),
            Layer::Conv2d(l) => l.forward(x),
            Layer::ConvTranspose2d(l) => l.forward(x),
            Layer::MaxPool2d(l) => l.forward(x),
            Layer::AvgPool2d(l) => l.forward(x),
            Layer::LayerNorm(l) => l.forward(x),
            Layer::RMSNorm(l) => l.forward(x),
            Layer::GroupNorm(l) => l.forward(x),
            Layer::Embedding(l) => l.forward(x),
            Layer::Dropout(l) => l.forward(x, key),
            Layer::SelfAttention { attention, causal: true } => attention.forward_causal(x),
            Layer::SelfAttention { attention, causal: false } => attention.forward(x, None),
            Layer::Activation(a) => a.apply(x),
            Layer::Flatten { start_axis } => {
                let mut shape = x.shape()[..*start_axis].to_vec();
                shape.push(x.shape()[*start_axis..].iter().product());
                x.reshape(&shape)
            }
        }
    }
}

macro_rules! layer_from {
    ($($T:ident),*) => {$(
        impl From<$T> for Layer {
            fn from(l: $T) -> Layer {
                Layer::$T(l)
            }
        }
    )*};
}

layer_from!(
    Linear,
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    MaxPool2d,
    AvgPool2d,
    LayerNorm,
    RMSNorm,
    GroupNorm,
    Embedding,
    Dropout
);

impl From<Activation> for Layer {
    fn from(a: Activation) -> Layer {
        Layer::Activation(a)
    }
}

/// Layers applied in order.
///
/// ```
/// use kiln::{Array, random};
/// use kiln_nn::{Activation, Conv2d, Layer, Linear, MaxPool2d, Sequential};
/// let ks = random::split_n(&random::key(0), 2);
/// let model = Sequential::new(vec![
///     Conv2d::new(&ks[0], 1, 4, [3, 3]).into(),
///     Activation::Relu.into(),
///     MaxPool2d::new([2, 2]).into(),
///     Layer::Flatten { start_axis: 1 },
///     Linear::new(&ks[1], 4 * 4 * 4, 10).into(),
/// ]);
/// let y = model.forward(&Array::ones([2, 8, 8, 1]), None);
/// assert_eq!(y.shape(), &[2, 10]);
/// ```
#[derive(Clone, Debug, Tree)]
pub struct Sequential {
    /// The layers.
    pub layers: Vec<Layer>,
}

impl Sequential {
    /// A model from its layers.
    pub fn new(layers: Vec<Layer>) -> Sequential {
        Sequential { layers }
    }

    /// Applies the layers in order. With `Some(key)` (training), dropout layer `i` uses
    /// `fold_in(key, i)`; with `None`, dropout is the identity.
    pub fn forward(&self, x: &Array, key: Option<&Array>) -> Array {
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let k = key.map(|k| random::fold_in(k, i as u32));
            h = layer.forward(&h, k.as_ref());
        }
        h
    }
}

/// A multi-layer perceptron: `Linear` layers with `activation` between them (not after
/// the last).
///
/// ```
/// use kiln::{Array, random};
/// use kiln_nn::{Activation, Mlp};
/// let mlp = Mlp::new(&random::key(0), &[4, 16, 3], Activation::Relu);
/// assert_eq!(mlp.forward(&Array::ones([5, 4])).shape(), &[5, 3]);
/// ```
#[derive(Clone, Debug, Tree)]
pub struct Mlp {
    /// The linear layers.
    pub layers: Vec<Linear>,
    /// The activation between layers.
    #[tree(static)]
    pub activation: Activation,
}

impl Mlp {
    /// Layers of `sizes[0] -> sizes[1] -> ... -> sizes[n-1]` (at least two sizes), each
    /// initialized with its own key split from `key`.
    #[track_caller]
    pub fn new(key: &Array, sizes: &[usize], activation: Activation) -> Mlp {
        assert!(sizes.len() >= 2, "Mlp::new: need at least input and output sizes, got {sizes:?}");
        let keys = random::split_n(key, sizes.len() - 1);
        let layers = sizes
            .windows(2)
            .zip(&keys)
            .map(|(w, k)| LinearConfig::new(w[0], w[1]).init(k))
            .collect();
        Mlp { layers, activation }
    }

    /// `[.., sizes[0]] -> [.., sizes[n-1]]`.
    pub fn forward(&self, x: &Array) -> Array {
        let mut h = x.clone();
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h);
            if i + 1 < n {
                h = self.activation.apply(&h);
            }
        }
        h
    }
}
