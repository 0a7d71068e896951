//! Parameter initializers (Flax's `jax.nn.initializers`).
//!
//! An [`Initializer`] is a small value describing a distribution; [`Initializer::init`]
//! draws an array of a given shape and dtype from an explicit PRNG key. The
//! variance-scaling family follows Flax exactly: for a kernel of shape `[.., fan_in_dim,
//! fan_out_dim]` the receptive field is the product of the leading dims, `fan_in =
//! shape[-2] * receptive` and `fan_out = shape[-1] * receptive`.
//!
//! ```
//! use kiln::{DType, random};
//! use kiln_nn::init;
//! let w = init::lecun_normal().init(&random::key(0), &[3, 4], DType::F32);
//! assert_eq!(w.shape(), &[3, 4]);
//! let b = init::Initializer::Zeros.init(&random::key(1), &[4], DType::F32);
//! assert_eq!(b.to_vec::<f32>(), vec![0.0; 4]);
//! ```

use kiln::{Array, DType, random};

/// Which fan the variance of [`Initializer::VarianceScaling`] is divided by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanMode {
    /// `fan_in`.
    FanIn,
    /// `fan_out`.
    FanOut,
    /// `(fan_in + fan_out) / 2`.
    FanAvg,
}

/// The distribution of [`Initializer::VarianceScaling`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Normal truncated to two standard deviations, rescaled to the target variance.
    TruncatedNormal,
    /// Untruncated normal.
    Normal,
    /// Uniform on `[-limit, limit)` with `limit = sqrt(3 * variance)`.
    Uniform,
}

/// A parameter initializer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Initializer {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Every element equal to the value.
    Constant(f64),
    /// `stddev * normal()`.
    Normal {
        /// Standard deviation.
        stddev: f64,
    },
    /// `scale * uniform()`, i.e. uniform on `[0, scale)` (Flax's `uniform`).
    Uniform {
        /// Upper bound.
        scale: f64,
    },
    /// `stddev * truncated_normal(lower, upper)`.
    TruncatedNormal {
        /// Standard deviation (of the untruncated normal).
        stddev: f64,
        /// Lower bound in standard deviations.
        lower: f64,
        /// Upper bound in standard deviations.
        upper: f64,
    },
    /// Variance scaling: `variance = scale / fan` drawn from `distribution`.
    VarianceScaling {
        /// Scale of the variance.
        scale: f64,
        /// Fan the variance is divided by.
        mode: FanMode,
        /// Distribution.
        distribution: Distribution,
    },
}

/// `variance_scaling(1, fan_avg, uniform)`.
pub fn glorot_uniform() -> Initializer {
    vs(1.0, FanMode::FanAvg, Distribution::Uniform)
}
/// `variance_scaling(1, fan_avg, truncated_normal)`.
pub fn glorot_normal() -> Initializer {
    vs(1.0, FanMode::FanAvg, Distribution::TruncatedNormal)
}
/// `variance_scaling(2, fan_in, uniform)`.
pub fn he_uniform() -> Initializer {
    vs(2.0, FanMode::FanIn, Distribution::Uniform)
}
/// `variance_scaling(2, fan_in, truncated_normal)`.
pub fn he_normal() -> Initializer {
    vs(2.0, FanMode::FanIn, Distribution::TruncatedNormal)
}
/// `variance_scaling(1, fan_in, uniform)`.
pub fn lecun_uniform() -> Initializer {
    vs(1.0, FanMode::FanIn, Distribution::Uniform)
}
/// `variance_scaling(1, fan_in, truncated_normal)` (the default kernel initializer of
/// `Linear` and the convolutions).
pub fn lecun_normal() -> Initializer {
    vs(1.0, FanMode::FanIn, Distribution::TruncatedNormal)
}
/// `stddev * truncated_normal(-2, 2)`.
pub fn truncated_normal(stddev: f64) -> Initializer {
    Initializer::TruncatedNormal { stddev, lower: -2.0, upper: 2.0 }
}

fn vs(scale: f64, mode: FanMode, distribution: Distribution) -> Initializer {
    Initializer::VarianceScaling { scale, mode, distribution }
}

/// `(fan_in, fan_out)` of a kernel shape, as Flax computes them (`in_axis=-2`,
/// `out_axis=-1`). A 1-d shape has `fan_in = fan_out = shape[0]`; a scalar has 1.
pub fn fans(shape: &[usize]) -> (f64, f64) {
    match shape.len() {
        0 => (1.0, 1.0),
        1 => (shape[0] as f64, shape[0] as f64),
        n => {
            let receptive: usize = shape[..n - 2].iter().product();
            ((shape[n - 2] * receptive) as f64, (shape[n - 1] * receptive) as f64)
        }
    }
}

/// Standard deviation of the standard normal truncated to `[-2, 2)`.
const TRUNC_STD: f64 = 0.879_625_661_034_239_8;

impl Initializer {
    /// Draws an array of `shape` and float `dtype` with `key`.
    #[track_caller]
    pub fn init(&self, key: &Array, shape: &[usize], dtype: DType) -> Array {
        match *self {
            Initializer::Zeros => Array::zeros_of(shape, dtype),
            Initializer::Ones => Array::ones_of(shape, dtype),
            Initializer::Constant(v) => Array::full_of(shape, v, dtype),
            Initializer::Normal { stddev } => random::normal(key, shape, dtype) * stddev,
            Initializer::Uniform { scale } => random::uniform(key, shape, dtype) * scale,
            Initializer::TruncatedNormal { stddev, lower, upper } => {
                random::truncated_normal(key, lower, upper, shape, dtype) * stddev
            }
            Initializer::VarianceScaling { scale, mode, distribution } => {
                let (fan_in, fan_out) = fans(shape);
                let fan = match mode {
                    FanMode::FanIn => fan_in,
                    FanMode::FanOut => fan_out,
                    FanMode::FanAvg => (fan_in + fan_out) / 2.0,
                };
                let variance = scale / fan.max(1.0);
                match distribution {
                    Distribution::TruncatedNormal => {
                        random::truncated_normal(key, -2.0, 2.0, shape, dtype)
                            * (variance.sqrt() / TRUNC_STD)
                    }
                    Distribution::Normal => random::normal(key, shape, dtype) * variance.sqrt(),
                    Distribution::Uniform => {
                        random::uniform_range(key, shape, dtype, -1.0, 1.0)
                            * (3.0 * variance).sqrt()
                    }
                }
            }
        }
    }
}
