//! Schedules: pure functions from the step count (an `i32` array) to a hyper-parameter value
//! (an `f32` array), mirroring `optax.schedules`.
//!
//! Every schedule is built from array operations only, so evaluating it inside a traced train
//! step stays traced: the step count lives in the optimizer state as an array.

use kiln::{Array, DType, where_};
use std::fmt;
use std::sync::Arc;

/// A hyper-parameter as a function of the step count.
///
/// Build one with the functions of this module, from a constant (`Schedule::from(0.1)`), from an
/// array (`Schedule::from(array)`: useful with [`crate::inject_hyperparams`]), or from any closure
/// with [`Schedule::new`].
///
/// ```
/// use kiln::Array;
/// use kiln_optim::schedule::{self, Schedule};
/// let s = schedule::linear(1.0, 0.0, 4, 0);
/// assert_eq!(s.at(&Array::scalar(2i32)).item::<f32>(), 0.5);
/// let c = Schedule::from(0.1);
/// assert_eq!(c.at(&Array::scalar(7i32)).item::<f32>(), 0.1);
/// ```
#[derive(Clone)]
pub struct Schedule(Arc<dyn Fn(&Array) -> Array + Send + Sync>);

impl Schedule {
    /// A schedule from a closure of the step count (an `i32` scalar array).
    pub fn new(f: impl Fn(&Array) -> Array + Send + Sync + 'static) -> Schedule {
        Schedule(Arc::new(f))
    }

    /// The value at step `count` (any numeric scalar array), as an `f32` array.
    pub fn at(&self, count: &Array) -> Array {
        let v = (self.0)(count);
        if v.dtype() == DType::F32 { v } else { v.astype(DType::F32) }
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Schedule(..)")
    }
}

impl From<f32> for Schedule {
    fn from(v: f32) -> Schedule {
        constant(v)
    }
}

impl From<f64> for Schedule {
    fn from(v: f64) -> Schedule {
        constant(v as f32)
    }
}

impl From<Array> for Schedule {
    /// A constant schedule holding `value` (which may be a traced array).
    fn from(value: Array) -> Schedule {
        Schedule::new(move |_| value.clone())
    }
}

fn steps_f32(count: &Array) -> Array {
    count.astype(DType::F32)
}

/// The same value at every step (`optax.constant_schedule`).
pub fn constant(value: f32) -> Schedule {
    Schedule::new(move |_| Array::scalar(value))
}

/// Polynomial interpolation from `init_value` to `end_value` over `transition_steps` steps,
/// starting at `transition_begin` (`optax.polynomial_schedule`). Non-positive
/// `transition_steps` gives the constant `init_value`.
pub fn polynomial(
    init_value: f32,
    end_value: f32,
    power: f32,
    transition_steps: i64,
    transition_begin: i64,
) -> Schedule {
    if transition_steps <= 0 {
        return constant(init_value);
    }
    let begin = transition_begin.max(0) as f32;
    let steps = transition_steps as f32;
    Schedule::new(move |count| {
        let c = (steps_f32(count) - begin).clip(0.0, steps);
        let frac = 1.0f32 - c / steps;
        frac.pow(power) * (init_value - end_value) + end_value
    })
}

/// Linear interpolation from `init_value` to `end_value` (`optax.linear_schedule`).
pub fn linear(
    init_value: f32,
    end_value: f32,
    transition_steps: i64,
    transition_begin: i64,
) -> Schedule {
    polynomial(init_value, end_value, 1.0, transition_steps, transition_begin)
}

/// `init_value * decay_rate ^ ((count - transition_begin) / transition_steps)`, optionally
/// floored (`staircase`) and bounded by `end_value` (`optax.exponential_decay`).
pub fn exponential_decay(
    init_value: f32,
    transition_steps: i64,
    decay_rate: f32,
    transition_begin: i64,
    staircase: bool,
    end_value: Option<f32>,
) -> Schedule {
    if transition_steps <= 0 || decay_rate == 0.0 {
        return constant(init_value);
    }
    let begin = transition_begin.max(0) as f32;
    let steps = transition_steps as f32;
    Schedule::new(move |count| {
        let dc = steps_f32(count) - begin;
        let mut p = &dc / steps;
        if staircase {
            p = p.floor();
        }
        let decayed = Array::scalar(decay_rate).pow(&p) * init_value;
        let v = where_(dc.le(0.0), init_value, &decayed);
        match end_value {
            Some(e) if decay_rate < 1.0 => v.maximum(e),
            Some(e) => v.minimum(e),
            None => v,
        }
    })
}

/// Cosine decay from `init_value` to `alpha * init_value` over `decay_steps`
/// (`optax.cosine_decay_schedule`).
///
/// Panics if `decay_steps` is not positive.
pub fn cosine_decay(init_value: f32, decay_steps: i64, alpha: f32, exponent: f32) -> Schedule {
    assert!(decay_steps > 0, "cosine_decay: decay_steps must be positive, got {decay_steps}");
    let steps = decay_steps as f32;
    Schedule::new(move |count| {
        let c = steps_f32(count).minimum(steps);
        let cos = ((c * std::f32::consts::PI) / steps).cos();
        let cosine = (cos + 1.0f32) * 0.5f32;
        (cosine.pow(exponent) * (1.0 - alpha) + alpha) * init_value
    })
}

/// Linear warmup from `init_value` to `peak_value` over `warmup_steps`, then cosine decay to
/// `end_value` at step `decay_steps` (`optax.warmup_cosine_decay_schedule`).
pub fn warmup_cosine_decay(
    init_value: f32,
    peak_value: f32,
    warmup_steps: i64,
    decay_steps: i64,
    end_value: f32,
    exponent: f32,
) -> Schedule {
    let alpha = if peak_value == 0.0 { 0.0 } else { end_value / peak_value };
    join(
        vec![
            linear(init_value, peak_value, warmup_steps, 0),
            cosine_decay(peak_value, decay_steps - warmup_steps, alpha, exponent),
        ],
        &[warmup_steps],
    )
}

/// Linear warmup to `peak_value`, then [`exponential_decay`]
/// (`optax.warmup_exponential_decay_schedule`).
#[allow(clippy::too_many_arguments)] // reason: mirrors Optax's signature one to one
pub fn warmup_exponential(
    init_value: f32,
    peak_value: f32,
    warmup_steps: i64,
    transition_steps: i64,
    decay_rate: f32,
    transition_begin: i64,
    staircase: bool,
    end_value: Option<f32>,
) -> Schedule {
    join(
        vec![
            linear(init_value, peak_value, warmup_steps, 0),
            exponential_decay(
                peak_value,
                transition_steps,
                decay_rate,
                transition_begin,
                staircase,
                end_value,
            ),
        ],
        &[warmup_steps],
    )
}

/// `init_value` multiplied by each `scale` whose `boundary` the count has reached
/// (`optax.piecewise_constant_schedule`). Pairs are `(boundary, scale)`.
pub fn piecewise_constant(init_value: f32, boundaries_and_scales: &[(i64, f32)]) -> Schedule {
    let mut pairs = boundaries_and_scales.to_vec();
    pairs.sort_by_key(|p| p.0);
    Schedule::new(move |count| {
        let c = steps_f32(count);
        let mut v = Array::scalar(init_value);
        for &(threshold, scale) in &pairs {
            let indicator = (-(&c - threshold as f32)).sign().maximum(0.0);
            v = &v * &indicator + (1.0f32 - &indicator) * scale * &v;
        }
        v
    })
}

/// The one-cycle policy with cosine annealing (`optax.cosine_onecycle_schedule`): from
/// `peak_value / div_factor` up to `peak_value` at `pct_start * transition_steps`, then down
/// to `peak_value / (div_factor * final_div_factor)` at `transition_steps`.
///
/// Panics if `transition_steps` is not positive.
pub fn one_cycle(
    transition_steps: i64,
    peak_value: f32,
    pct_start: f32,
    div_factor: f32,
    final_div_factor: f32,
) -> Schedule {
    assert!(transition_steps > 0, "one_cycle: transition_steps must be positive");
    let bounds = [0i64, (pct_start * transition_steps as f32) as i64, transition_steps];
    let v0 = peak_value / div_factor;
    let values = [v0, v0 * div_factor, v0 * div_factor * (1.0 / (div_factor * final_div_factor))];
    Schedule::new(move |count| {
        let c = steps_f32(count);
        let mut out = Array::scalar(0.0f32);
        for i in 0..2 {
            let (lo, hi) = (bounds[i] as f32, bounds[i + 1] as f32);
            let size = (hi - lo).max(1.0);
            let inside = c.ge(lo).logical_and(c.lt(hi)).astype(DType::F32);
            let pct = (&c - lo) / size;
            let (start, end) = (values[i], values[i + 1]);
            let interp =
                ((pct * std::f32::consts::PI).cos() + 1.0f32) * ((start - end) / 2.0) + end;
            out += inside * interp;
        }
        out + c.ge(bounds[2] as f32).astype(DType::F32) * values[2]
    })
}

/// Runs `schedules[0]` until `boundaries[0]`, then `schedules[1]` on the count since that
/// boundary, and so on (`optax.join_schedules`).
///
/// Panics unless there is exactly one boundary fewer than schedules.
pub fn join(schedules: Vec<Schedule>, boundaries: &[i64]) -> Schedule {
    assert_eq!(
        schedules.len(),
        boundaries.len() + 1,
        "join: need one boundary fewer than schedules"
    );
    let boundaries = boundaries.to_vec();
    Schedule::new(move |count| {
        let mut out = schedules[0].at(count);
        for (b, s) in boundaries.iter().zip(&schedules[1..]) {
            let shifted = count - (*b as i32);
            out = where_(count.lt(*b as i32), &out, s.at(&shifted));
        }
        out
    })
}
