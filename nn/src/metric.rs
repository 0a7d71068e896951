//! Metrics: classification accuracy and top-k accuracy.
//!
//! ```
//! use kiln::Array;
//! use kiln_nn::metric::accuracy;
//! let logits = Array::from_vec(vec![0.1f32, 0.9, 0.8, 0.2], [2, 2]);
//! let labels = Array::from_vec(vec![1i32, 1], [2]);
//! assert_eq!(accuracy(&logits, &labels).item::<f32>(), 0.5);
//! ```

use kiln::{Array, DType};

/// Fraction (an `f32` scalar) of rows of `logits [.., C]` whose argmax equals `labels [..]`.
pub fn accuracy(logits: &Array, labels: &Array) -> Array {
    let pred = logits.argmax(-1);
    pred.eq(labels.astype(DType::I32)).astype(DType::F32).mean()
}

/// Fraction of rows whose label is among the `k` largest logits (ties counted in the
/// label's favour): the label's rank, the number of strictly larger logits, is `< k`.
pub fn top_k_accuracy(logits: &Array, labels: &Array, k: usize) -> Array {
    let idx = labels.astype(DType::I32).expand_dims(-1);
    let label_logit = logits.take_along_axis(&idx, -1);
    let rank = logits.gt(&label_logit).astype(DType::I32).sum_axes([-1], false);
    rank.lt(k as i32).astype(DType::F32).mean()
}
