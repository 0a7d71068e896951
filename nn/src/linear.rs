//! [`Linear`] and [`Embedding`].

use crate::init::{self, Initializer};
use kiln::{Array, DType, Tree, lax, random};

/// An affine map `y = x @ weight + bias` on the last axis (Flax's `Dense`).
///
/// `weight` is `[in_features, out_features]`, `bias` `[out_features]`. Any leading dims.
#[derive(Clone, Debug, Tree)]
pub struct Linear {
    /// Kernel `[in_features, out_features]`.
    pub weight: Array,
    /// Bias `[out_features]`, if any.
    pub bias: Option<Array>,
}

/// Configuration of a [`Linear`] layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearConfig {
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Whether to add a bias (default `true`).
    pub use_bias: bool,
    /// Kernel initializer (default [`init::lecun_normal`]).
    pub kernel_init: Initializer,
    /// Bias initializer (default zeros).
    pub bias_init: Initializer,
    /// Parameter dtype (default `f32`).
    pub dtype: DType,
}

impl LinearConfig {
    /// The defaults for `in_features -> out_features`.
    pub fn new(in_features: usize, out_features: usize) -> LinearConfig {
        LinearConfig {
            in_features,
            out_features,
            use_bias: true,
            kernel_init: init::lecun_normal(),
            bias_init: Initializer::Zeros,
            dtype: DType::F32,
        }
    }

    /// Initializes the layer's parameters with `key`.
    pub fn init(&self, key: &Array) -> Linear {
        let (kw, kb) = random::split2(key);
        let weight = self.kernel_init.init(&kw, &[self.in_features, self.out_features], self.dtype);
        let bias =
            self.use_bias.then(|| self.bias_init.init(&kb, &[self.out_features], self.dtype));
        Linear { weight, bias }
    }
}

impl Linear {
    /// A layer with the default configuration ([`LinearConfig::new`]).
    pub fn new(key: &Array, in_features: usize, out_features: usize) -> Linear {
        LinearConfig::new(in_features, out_features).init(key)
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// `x [.., in] -> [.., out]`.
    #[track_caller]
    pub fn forward(&self, x: &Array) -> Array {
        let nd = x.ndim();
        assert!(
            nd >= 1 && x.shape()[nd - 1] == self.in_features(),
            "Linear::forward: input shape {:?} does not end in in_features = {}",
            x.shape(),
            self.in_features()
        );
        let y = lax::dot_general(x, &self.weight, ((&[nd - 1], &[0]), (&[], &[])));
        match &self.bias {
            Some(b) => y + b,
            None => y,
        }
    }
}

/// A lookup table `[num_embeddings, features]`: integer ids `[..]` give `[.., features]`.
///
/// The default initializer is Flax's: `variance_scaling(1, fan_in, normal)` along the
/// feature axis, i.e. `normal(stddev = 1/sqrt(features))`.
#[derive(Clone, Debug, Tree)]
pub struct Embedding {
    /// Table `[num_embeddings, features]`.
    pub weight: Array,
}

impl Embedding {
    /// A table of `num_embeddings` rows of `features` (f32, Flax's default initializer).
    pub fn new(key: &Array, num_embeddings: usize, features: usize) -> Embedding {
        let init = Initializer::Normal { stddev: 1.0 / (features as f64).sqrt() };
        Embedding::with_init(key, num_embeddings, features, init)
    }

    /// A table initialized with `init`.
    pub fn with_init(
        key: &Array,
        num_embeddings: usize,
        features: usize,
        init: Initializer,
    ) -> Embedding {
        Embedding { weight: init.init(key, &[num_embeddings, features], DType::F32) }
    }

    /// `ids [..]` (integers) `-> [.., features]`.
    #[track_caller]
    pub fn forward(&self, ids: &Array) -> Array {
        assert!(
            ids.dtype().is_int(),
            "Embedding::forward: ids must be integers, got {}",
            ids.dtype()
        );
        self.weight.take(ids, 0)
    }

    /// Attends `x [.., features]` over the table: `x @ weight^T`, `[.., num_embeddings]`
    /// (tied output embeddings, Flax's `Embed.attend`).
    pub fn attend(&self, x: &Array) -> Array {
        let nd = x.ndim();
        lax::dot_general(x, &self.weight, ((&[nd - 1], &[1]), (&[], &[])))
    }
}
