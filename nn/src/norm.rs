//! Normalization layers: [`LayerNorm`], [`RMSNorm`], [`GroupNorm`] and [`BatchNorm`]
//! (with its running statistics as an explicit [`BatchNormState`]).

use kiln::{Array, Tree};

/// Normalizes the last axis to zero mean and unit variance, then scales and shifts
/// (Flax's `LayerNorm`, `epsilon = 1e-6`). Any leading dims.
#[derive(Clone, Debug, Tree)]
pub struct LayerNorm {
    /// Scale `[features]` (ones), if any.
    pub scale: Option<Array>,
    /// Bias `[features]` (zeros), if any.
    pub bias: Option<Array>,
    /// Added to the variance.
    #[tree(static)]
    pub epsilon: f64,
}

impl LayerNorm {
    /// A layer over `features` with scale and bias and `epsilon = 1e-6`.
    pub fn new(features: usize) -> LayerNorm {
        LayerNorm {
            scale: Some(Array::ones([features])),
            bias: Some(Array::zeros([features])),
            epsilon: 1e-6,
        }
    }

    /// `[.., features] -> [.., features]`.
    pub fn forward(&self, x: &Array) -> Array {
        let mean = x.mean_axes([-1], true);
        let centered = x - &mean;
        let var = centered.square().mean_axes([-1], true);
        let y = centered * (var + self.epsilon).rsqrt();
        affine(y, self.scale.as_ref(), self.bias.as_ref())
    }
}

fn affine(y: Array, scale: Option<&Array>, bias: Option<&Array>) -> Array {
    let y = match scale {
        Some(s) => y * s,
        None => y,
    };
    match bias {
        Some(b) => y + b,
        None => y,
    }
}

/// Root-mean-square normalization of the last axis: `x / sqrt(mean(x^2) + eps) * scale`
/// (Flax's `RMSNorm`, `epsilon = 1e-6`). Any leading dims.
#[derive(Clone, Debug, Tree)]
pub struct RMSNorm {
    /// Scale `[features]` (ones).
    pub scale: Array,
    /// Added to the mean square.
    #[tree(static)]
    pub epsilon: f64,
}

impl RMSNorm {
    /// A layer over `features` with `epsilon = 1e-6`.
    pub fn new(features: usize) -> RMSNorm {
        RMSNorm { scale: Array::ones([features]), epsilon: 1e-6 }
    }

    /// `[.., features] -> [.., features]`.
    pub fn forward(&self, x: &Array) -> Array {
        let ms = x.square().mean_axes([-1], true);
        x * (ms + self.epsilon).rsqrt() * &self.scale
    }
}

/// Group normalization (Flax's `GroupNorm`, `epsilon = 1e-6`): the channels (last axis) are
/// split into `num_groups` groups and each group is normalized over the channels of the
/// group and every axis between the first and the last.
///
/// The input is `[N, .., C]`: **axis 0 is the batch**. For a single example, add a batch
/// axis of size 1 (also under `vmap`).
#[derive(Clone, Debug, Tree)]
pub struct GroupNorm {
    /// Scale `[C]` (ones).
    pub scale: Array,
    /// Bias `[C]` (zeros).
    pub bias: Array,
    /// Number of groups (divides `C`).
    #[tree(static)]
    pub num_groups: usize,
    /// Added to the variance.
    #[tree(static)]
    pub epsilon: f64,
}

impl GroupNorm {
    /// A layer over `channels` in `num_groups` groups.
    #[track_caller]
    pub fn new(num_groups: usize, channels: usize) -> GroupNorm {
        assert!(
            num_groups > 0 && channels.is_multiple_of(num_groups),
            "GroupNorm: {channels} channels are not divisible into {num_groups} groups"
        );
        GroupNorm {
            scale: Array::ones([channels]),
            bias: Array::zeros([channels]),
            num_groups,
            epsilon: 1e-6,
        }
    }

    /// `[N, .., C] -> [N, .., C]`.
    #[track_caller]
    pub fn forward(&self, x: &Array) -> Array {
        let shape = x.shape().to_vec();
        let nd = shape.len();
        assert!(nd >= 2, "GroupNorm::forward: input {shape:?} needs a batch and a channel axis");
        let c = shape[nd - 1];
        let g = self.num_groups;
        let mut grouped = shape[..nd - 1].to_vec();
        grouped.extend([g, c / g]);
        let xg = x.reshape(&grouped);
        // Reduce over everything but the batch axis and the group axis.
        let axes: Vec<usize> = (1..nd - 1).chain([nd]).collect();
        let mean = xg.mean_axes(&axes, true);
        let centered = &xg - &mean;
        let var = centered.square().mean_axes(&axes, true);
        let y = (centered * (var + self.epsilon).rsqrt()).reshape(&shape);
        y * &self.scale + &self.bias
    }
}

/// Batch normalization over every axis but the last (Flax's `BatchNorm`: `momentum =
/// 0.99`, `epsilon = 1e-5`). The running statistics are not inside the layer: they are an
/// explicit [`BatchNormState`] passed to [`BatchNorm::forward_train`], which returns the
/// updated state, and to [`BatchNorm::forward_eval`], which uses them.
///
/// ```
/// use kiln::Array;
/// use kiln_nn::BatchNorm;
/// let bn = BatchNorm::new(2);
/// let state = bn.init_state();
/// let x = Array::from_vec(vec![1.0f32, 2.0, 3.0, 6.0], [2, 2]);
/// let (y, state) = bn.forward_train(&x, &state);
/// assert!(y.mean_axes([0], false).allclose(&Array::zeros([2]), 0.0, 1e-6));
/// assert!(state.mean.allclose(&Array::from_vec(vec![0.02f32, 0.04], [2]), 1e-5, 1e-7));
/// let _ = bn.forward_eval(&x, &state);
/// ```
#[derive(Clone, Debug, Tree)]
pub struct BatchNorm {
    /// Scale `[features]` (ones).
    pub scale: Array,
    /// Bias `[features]` (zeros).
    pub bias: Array,
    /// `running = momentum * running + (1 - momentum) * batch`.
    #[tree(static)]
    pub momentum: f64,
    /// Added to the variance.
    #[tree(static)]
    pub epsilon: f64,
}

/// The running statistics of a [`BatchNorm`] (a separate `Tree`, not differentiated).
#[derive(Clone, Debug, Tree)]
pub struct BatchNormState {
    /// Running mean `[features]` (starts at 0).
    pub mean: Array,
    /// Running (biased) variance `[features]` (starts at 1).
    pub var: Array,
}

impl BatchNorm {
    /// A layer over `features` with Flax's defaults.
    pub fn new(features: usize) -> BatchNorm {
        BatchNorm {
            scale: Array::ones([features]),
            bias: Array::zeros([features]),
            momentum: 0.99,
            epsilon: 1e-5,
        }
    }

    /// The initial running statistics: mean 0, variance 1.
    pub fn init_state(&self) -> BatchNormState {
        let f = self.scale.shape()[0];
        BatchNormState { mean: Array::zeros([f]), var: Array::ones([f]) }
    }

    /// Training mode: normalizes with the statistics of this batch (every axis but the
    /// last) and returns the updated running statistics.
    pub fn forward_train(&self, x: &Array, state: &BatchNormState) -> (Array, BatchNormState) {
        let axes: Vec<usize> = (0..x.ndim() - 1).collect();
        let mean = x.mean_axes(&axes, false);
        let var = (x - &mean).square().mean_axes(&axes, false);
        let y = self.normalize(x, &mean, &var);
        let m = self.momentum;
        let new_state = BatchNormState {
            mean: (&state.mean * m + mean.stop_gradient() * (1.0 - m)),
            var: (&state.var * m + var.stop_gradient() * (1.0 - m)),
        };
        (y, new_state)
    }

    /// Evaluation mode: normalizes with the running statistics.
    pub fn forward_eval(&self, x: &Array, state: &BatchNormState) -> Array {
        self.normalize(x, &state.mean, &state.var)
    }

    fn normalize(&self, x: &Array, mean: &Array, var: &Array) -> Array {
        (x - mean) * (var + self.epsilon).rsqrt() * &self.scale + &self.bias
    }
}
