//! Built-in models: a ReLU multi-layer perceptron.
//!
//! The trainer's own small layer, loss and metric, written with public `kiln` operations
//! only; `kiln-nn` has the general versions (`kiln_nn::Mlp`, `kiln_nn::loss`).

use kiln::{Array, DType};

/// A dense layer `y = x @ weight + bias` with `weight: [in, out]`, `bias: [out]`.
#[derive(Clone, Debug, kiln::Tree)]
pub struct Linear {
    /// `[in, out]` weight matrix.
    pub weight: Array,
    /// `[out]` bias.
    pub bias: Array,
}

impl Linear {
    /// LeCun-normal-like init (uniform in ±sqrt(1/in), as PyTorch does) and zero bias.
    pub fn init(key: &Array, fan_in: usize, fan_out: usize) -> Linear {
        let bound = (1.0 / fan_in as f64).sqrt();
        let u = kiln::random::uniform(key, &[fan_in, fan_out], DType::F32);
        let weight = (&u * (2.0 * bound)) - bound;
        Linear { weight, bias: Array::zeros([fan_out]) }
    }

    /// Applies the layer to `[batch, in]` inputs.
    pub fn forward(&self, x: &Array) -> Array {
        x.matmul(&self.weight) + &self.bias
    }

    /// `(in, out)` sizes.
    pub fn dims(&self) -> (usize, usize) {
        (self.weight.shape()[0], self.weight.shape()[1])
    }
}

/// A multi-layer perceptron with ReLU between layers (no activation after the last).
#[derive(Clone, Debug, kiln::Tree)]
pub struct Mlp {
    /// The dense layers, input first.
    pub layers: Vec<Linear>,
}

impl Mlp {
    /// Initialises an MLP with layer sizes `sizes` (`[in, hidden..., out]`).
    pub fn init(key: &Array, sizes: &[usize]) -> Mlp {
        let n = sizes.len().saturating_sub(1);
        let keys = kiln::random::split_n(key, n.max(1));
        let layers = (0..n).map(|i| Linear::init(&keys[i], sizes[i], sizes[i + 1])).collect();
        Mlp { layers }
    }

    /// Logits for `[batch, in]` inputs.
    pub fn forward(&self, x: &Array) -> Array {
        let mut h = x.clone();
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h);
            if i < last {
                h = h.relu();
            }
        }
        h
    }

    /// Layer sizes `[in, hidden..., out]`.
    pub fn sizes(&self) -> Vec<usize> {
        let mut s: Vec<usize> = self.layers.first().map(|l| vec![l.dims().0]).unwrap_or_default();
        s.extend(self.layers.iter().map(|l| l.dims().1));
        s
    }
}

/// Mean softmax cross-entropy of `logits: [batch, classes]` against integer `labels: [batch]`.
pub fn softmax_cross_entropy(logits: &Array, labels: &Array) -> Array {
    let classes = logits.shape()[logits.ndim() - 1];
    let logp = logits.log_softmax(-1);
    let onehot = kiln::one_hot(labels, classes, logp.dtype());
    -((&logp * &onehot).sum_axes([-1], false).mean())
}

/// Number of rows of `logits` whose argmax equals the integer label (an `f32` scalar).
pub fn correct_count(logits: &Array, labels: &Array) -> Array {
    let pred = logits.argmax(-1);
    pred.eq(labels.astype(pred.dtype())).astype(DType::F32).sum()
}
