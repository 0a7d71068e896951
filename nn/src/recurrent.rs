//! Recurrent cells: [`LSTMCell`] and [`GRUCell`] (one time step; loop or scan over time).

use crate::linear::{Linear, LinearConfig};
use kiln::{Array, Tree, random};

/// An LSTM cell (Flax's `LSTMCell` gate equations, gates in the order i, f, g, o):
/// `c' = sigmoid(f) * c + sigmoid(i) * tanh(g)`, `h' = sigmoid(o) * tanh(c')`.
///
/// The input and hidden projections are fused: `input: Linear(in -> 4 hidden, no bias)`,
/// `hidden: Linear(hidden -> 4 hidden, bias)`. Both kernels are lecun-normal (Flax uses an
/// orthogonal recurrent kernel).
#[derive(Clone, Debug, Tree)]
pub struct LSTMCell {
    /// Input projection to the four gates.
    pub input: Linear,
    /// Hidden projection to the four gates (with the gate biases).
    pub hidden: Linear,
}

/// The `(h, c)` carry of an [`LSTMCell`].
pub type LSTMState = (Array, Array);

impl LSTMCell {
    /// A cell from `in_features` to `hidden` units.
    pub fn new(key: &Array, in_features: usize, hidden: usize) -> LSTMCell {
        let (k1, k2) = random::split2(key);
        let mut ic = LinearConfig::new(in_features, 4 * hidden);
        ic.use_bias = false;
        LSTMCell { input: ic.init(&k1), hidden: LinearConfig::new(hidden, 4 * hidden).init(&k2) }
    }

    /// Hidden units.
    pub fn hidden_size(&self) -> usize {
        self.hidden.in_features()
    }

    /// A zero carry for `batch` leading dims.
    pub fn init_state(&self, batch: &[usize]) -> LSTMState {
        let mut s = batch.to_vec();
        s.push(self.hidden_size());
        (Array::zeros(s.clone()), Array::zeros(s))
    }

    /// One step: `(h, c)` and `x [.., in]` give the new `(h, c)` (`h` is also the output).
    pub fn forward(&self, state: &LSTMState, x: &Array) -> LSTMState {
        let (h, c) = state;
        let z = self.input.forward(x) + self.hidden.forward(h);
        let g = z.split(4usize, -1);
        let c2 = g[1].sigmoid() * c + g[0].sigmoid() * g[2].tanh();
        let h2 = g[3].sigmoid() * c2.tanh();
        (h2, c2)
    }
}

/// A GRU cell (Flax's `GRUCell`, gates r, z, n):
/// `r = sigmoid(W_ir x + W_hr h + b_r)`, `z = sigmoid(W_iz x + W_hz h + b_z)`,
/// `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`, `h' = (1 - z) * n + z * h`.
#[derive(Clone, Debug, Tree)]
pub struct GRUCell {
    /// Input projection to r, z, n (with biases).
    pub input: Linear,
    /// Hidden projection to r, z, n (with biases).
    pub hidden: Linear,
}

impl GRUCell {
    /// A cell from `in_features` to `hidden` units.
    pub fn new(key: &Array, in_features: usize, hidden: usize) -> GRUCell {
        let (k1, k2) = random::split2(key);
        GRUCell {
            input: LinearConfig::new(in_features, 3 * hidden).init(&k1),
            hidden: LinearConfig::new(hidden, 3 * hidden).init(&k2),
        }
    }

    /// Hidden units.
    pub fn hidden_size(&self) -> usize {
        self.hidden.in_features()
    }

    /// A zero carry for `batch` leading dims.
    pub fn init_state(&self, batch: &[usize]) -> Array {
        let mut s = batch.to_vec();
        s.push(self.hidden_size());
        Array::zeros(s)
    }

    /// One step: `h` and `x [.., in]` give the new `h`.
    pub fn forward(&self, h: &Array, x: &Array) -> Array {
        let xi = self.input.forward(x).split(3usize, -1);
        let hh = self.hidden.forward(h).split(3usize, -1);
        let r = (&xi[0] + &hh[0]).sigmoid();
        let z = (&xi[1] + &hh[1]).sigmoid();
        let n = (&xi[2] + r * &hh[2]).tanh();
        (1.0 - &z) * n + z * h
    }
}
