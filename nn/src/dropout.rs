//! [`Dropout`] with an explicit PRNG key.

use kiln::{Array, Tree, random, where_};

/// Zeroes each element with probability `rate` and scales the rest by `1 / (1 - rate)`.
///
/// Training passes a key: `forward(x, Some(&key))`; evaluation passes `None` and gets the
/// identity.
///
/// ```
/// use kiln::{Array, random};
/// use kiln_nn::Dropout;
/// let d = Dropout::new(0.5);
/// let x = Array::ones([1000]);
/// assert_eq!(d.forward(&x, None).to_vec::<f32>(), x.to_vec::<f32>());
/// let y = d.forward(&x, Some(&random::key(0))).to_vec::<f32>();
/// assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
/// ```
#[derive(Clone, Debug, Tree)]
pub struct Dropout {
    /// Probability of dropping an element, in `[0, 1]`.
    #[tree(static)]
    pub rate: f64,
}

impl Dropout {
    /// Dropout with `rate`.
    #[track_caller]
    pub fn new(rate: f64) -> Dropout {
        assert!((0.0..=1.0).contains(&rate), "Dropout: rate {rate} is not in [0, 1]");
        Dropout { rate }
    }

    /// Applies dropout with `key`, or the identity when `key` is `None` (evaluation).
    pub fn forward(&self, x: &Array, key: Option<&Array>) -> Array {
        match key {
            None => x.clone(),
            Some(_) if self.rate == 0.0 => x.clone(),
            Some(_) if self.rate == 1.0 => x.zeros_like(),
            Some(key) => {
                let keep = 1.0 - self.rate;
                let mask = random::bernoulli(key, keep, x.shape());
                where_(&mask, x / keep, 0.0).astype(x.dtype())
            }
        }
    }
}
