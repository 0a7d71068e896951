//! Elementwise math. Operations defined only on floats convert integer and bool operands to
//! `f32` first (as JAX does); rounding operations leave integers unchanged.

use super::ops::to_bool;
use super::to_float;
use crate::array::Array;
use crate::dtype::DType;
use crate::lax;

macro_rules! float_unary {
    ($($name:ident $lax:ident $doc:literal;)*) => {
        impl Array {$(
            #[doc = $doc]
            ///
            /// Integer and bool operands are converted to `f32`.
            pub fn $name(&self) -> Array {
                lax::$lax(&to_float(self))
            }
        )*}
    };
}

float_unary! {
    exp exp "Elementwise `e^x`.";
    log log "Elementwise natural logarithm.";
    log1p log1p "Elementwise `log(1 + x)`, accurate near 0.";
    expm1 expm1 "Elementwise `e^x - 1`, accurate near 0.";
    sin sin "Elementwise sine.";
    cos cos "Elementwise cosine.";
    tanh tanh "Elementwise hyperbolic tangent.";
    sigmoid logistic "Elementwise logistic sigmoid `1 / (1 + e^-x)`.";
    sqrt sqrt "Elementwise square root.";
    rsqrt rsqrt "Elementwise `1 / sqrt(x)`.";
    erf erf "Elementwise error function.";
    erf_inv erf_inv "Elementwise inverse error function.";
}

macro_rules! rounding {
    ($($name:ident $lax:ident $doc:literal;)*) => {
        impl Array {$(
            #[doc = $doc]
            ///
            /// Integers are returned unchanged.
            pub fn $name(&self) -> Array {
                if self.dtype().is_float() { lax::$lax(self) } else { self.clone() }
            }
        )*}
    };
}

rounding! {
    floor floor "Elementwise floor.";
    ceil ceil "Elementwise ceiling.";
}

impl Array {
    /// GELU ([`lax::gelu`], `jax.nn.gelu`): the tanh approximation when `approximate`,
    /// else the exact erf form. Integer and bool operands are converted to `f32`.
    ///
    /// ```
    /// use kiln::Array;
    /// let y = Array::from_vec(vec![0i32, 2], [2]).gelu(true);
    /// assert!(y.allclose(&Array::from_vec(vec![0.0f32, 1.954_598], [2]), 1e-5, 1e-6));
    /// ```
    pub fn gelu(&self, approximate: bool) -> Array {
        lax::gelu(&to_float(self), approximate)
    }

    /// Elementwise tangent (`sin / cos`).
    pub fn tan(&self) -> Array {
        let x = to_float(self);
        lax::div(&lax::sin(&x), &lax::cos(&x))
    }

    /// Elementwise `2^x`.
    pub fn exp2(&self) -> Array {
        let x = to_float(self);
        lax::exp(&lax::mul_scalar(&x, std::f64::consts::LN_2))
    }

    /// Elementwise base-2 logarithm.
    pub fn log2(&self) -> Array {
        lax::mul_scalar(&lax::log(&to_float(self)), std::f64::consts::LOG2_E)
    }

    /// Elementwise base-10 logarithm.
    pub fn log10(&self) -> Array {
        lax::mul_scalar(&lax::log(&to_float(self)), std::f64::consts::LOG10_E)
    }

    /// Elementwise `-x`. Panics on bool arrays.
    #[track_caller]
    pub fn neg(&self) -> Array {
        lax::neg(self)
    }

    /// Elementwise absolute value. Panics on bool arrays.
    #[track_caller]
    pub fn abs(&self) -> Array {
        lax::abs(self)
    }

    /// Elementwise sign (-1, 0 or 1; NaN stays NaN). Panics on bool arrays.
    #[track_caller]
    pub fn sign(&self) -> Array {
        lax::sign(self)
    }

    /// Elementwise `x * x`. Panics on bool arrays.
    #[track_caller]
    pub fn square(&self) -> Array {
        lax::integer_pow(self, 2)
    }

    /// Elementwise `1 / x`; integers give `f32`.
    pub fn recip(&self) -> Array {
        let x = to_float(self);
        lax::div(&lax::full_like(&x, 1.0), &x)
    }

    /// Elementwise rounding to the nearest integer, halves to even (numpy's `round`).
    /// Integers are returned unchanged.
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::from_vec(vec![0.5f32, 1.5, 2.5, -0.5, -1.7], [5]);
    /// assert_eq!(x.round().to_vec::<f32>(), vec![0.0, 2.0, 2.0, -0.0, -2.0]);
    /// ```
    pub fn round(&self) -> Array {
        if !self.dtype().is_float() {
            return self.clone();
        }
        // `lax::round` rounds halves away from zero; step back toward zero on odd ties.
        let r = lax::round(self);
        let half = lax::full_like(self, 0.5);
        let tie = lax::eq(&lax::abs(&lax::sub(self, &r)), &half);
        let odd = lax::ne(&lax::rem(&r, &lax::full_like(self, 2.0)), &lax::zeros_like(self));
        let fix = lax::and(&tie, &odd);
        lax::select(&fix, &lax::sub(&r, &lax::sign(self)), &r)
    }

    /// Elementwise truncation toward zero. Integers are returned unchanged.
    pub fn trunc(&self) -> Array {
        if !self.dtype().is_float() {
            return self.clone();
        }
        let neg = lax::lt(self, &lax::zeros_like(self));
        lax::select(&neg, &lax::ceil(self), &lax::floor(self))
    }

    /// True where the element is finite (always true for integers and bool).
    pub fn is_finite(&self) -> Array {
        if self.dtype().is_float() {
            lax::is_finite(self)
        } else {
            lax::broadcast_in_dim(&Array::scalar(true), self.shape(), &[])
        }
    }

    /// True where the element is NaN (always false for integers and bool).
    pub fn is_nan(&self) -> Array {
        if self.dtype().is_float() {
            lax::ne(self, self)
        } else {
            lax::broadcast_in_dim(&Array::scalar(false), self.shape(), &[])
        }
    }

    /// True where the element is positive or negative infinity.
    pub fn is_inf(&self) -> Array {
        if self.dtype().is_float() {
            lax::eq(&lax::abs(self), &lax::full_like(self, f64::INFINITY))
        } else {
            lax::broadcast_in_dim(&Array::scalar(false), self.shape(), &[])
        }
    }

    /// Elementwise `log(1 + e^x)`, computed stably as `max(x, 0) + log1p(e^-|x|)`.
    pub fn softplus(&self) -> Array {
        let x = to_float(self);
        let pos = lax::max(&x, &lax::zeros_like(&x));
        lax::add(&pos, &lax::log1p(&lax::exp(&lax::neg(&lax::abs(&x)))))
    }

    /// Elementwise `max(x, 0)`, with `jax.nn.relu`'s derivative: 1 where `x > 0`, else 0
    /// (also at 0, where `maximum`'s derivative splits 1/2 and 1/2).
    ///
    /// Written as `select(x <= 0, 0, x)` (NaN stays NaN): its gradient is a select on the
    /// saved predicate, so a compiled train step keeps a boolean mask per activation instead
    /// of the float tie-splitting weights of `max`, and computes it with one comparison.
    pub fn relu(&self) -> Array {
        let zero = lax::zeros_like(self);
        lax::select(&lax::le(self, &zero), &zero, self)
    }

    /// Converts to `dtype` (`as`-cast semantics: float to integer truncates; nonzero to
    /// bool is true). A no-op if the dtype already matches.
    pub fn astype(&self, dtype: DType) -> Array {
        if dtype == DType::Bool {
            return to_bool(self);
        }
        lax::convert_element_type(self, dtype)
    }

    /// The same values with a zero derivative (`lax::stop_gradient`).
    pub fn stop_gradient(&self) -> Array {
        lax::stop_gradient(self)
    }

    /// An array of zeros with this shape and dtype.
    pub fn zeros_like(&self) -> Array {
        lax::zeros_like(self)
    }

    /// An array of ones with this shape and dtype.
    pub fn ones_like(&self) -> Array {
        lax::full_like(self, 1.0)
    }

    /// An array filled with `value` with this shape and dtype.
    pub fn full_like(&self, value: f64) -> Array {
        lax::full_like(self, value)
    }
}
