//! Testing utilities: numerical gradient checks (JAX's `check_grads`).
//!
//! [`check_grads`] compares forward-mode derivatives with central finite differences and
//! checks reverse mode against forward mode with the dot-product test
//! `<u, J v> == <J^T u, v>` along random directions, recursively up to the given order.
//! Inputs should be `f64` so that finite differences are accurate.
//!
//! ```
//! use kiln::{Array, testing::check_grads};
//! let x = Array::from_vec(vec![0.3f64, -0.7, 1.1], [3]);
//! check_grads(|x: &Array| (x.sin() * x).sum(), &x, 2);
//! ```

use crate::ad::{jvp, vjp_tree};
use crate::array::Array;
use crate::dtype::DType;
use crate::tree::{self, Tree};

/// Settings of [`check_grads_with`].
#[derive(Clone, Debug)]
pub struct GradCheck {
    /// Highest derivative order to check (1 = first derivatives).
    pub order: usize,
    /// Finite-difference step.
    pub eps: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Seed of the random directions.
    pub seed: u64,
}

impl Default for GradCheck {
    fn default() -> GradCheck {
        GradCheck { order: 1, eps: 1e-4, rtol: 1e-5, atol: 1e-5, seed: 0 }
    }
}

/// A small deterministic generator for directions (splitmix64).
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    /// A random array like `x` (zeros for non-float leaves).
    fn like(&mut self, x: &Array) -> Array {
        if !x.dtype().is_float() {
            return Array::zeros_of(x.shape().to_vec(), x.dtype());
        }
        let v: Vec<f64> = (0..x.size()).map(|_| self.next_f64()).collect();
        Array::from_f64_vec(&v, x.shape().to_vec(), x.dtype())
    }
}

fn random_like<T: Tree>(rng: &mut Rng, x: &T) -> T {
    tree::map(x, |l| rng.like(l))
}

/// `x + c * v` on float leaves (host arithmetic, so it works on concrete inputs only).
fn axpy<T: Tree>(x: &T, c: f64, v: &T) -> T {
    tree::zip_map(x, v, |a, b| {
        if !a.dtype().is_float() {
            return a.clone();
        }
        let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
        let out: Vec<f64> = av.iter().zip(&bv).map(|(p, q)| p + c * q).collect();
        Array::from_f64_vec(&out, a.shape().to_vec(), a.dtype())
    })
}

fn flat_f64<T: Tree>(t: &T) -> Vec<f64> {
    tree::leaves(t).iter().filter(|l| l.dtype().is_float()).flat_map(|l| l.to_f64_vec()).collect()
}

fn inner<T: Tree>(a: &T, b: &T) -> f64 {
    flat_f64(a).iter().zip(flat_f64(b)).map(|(x, y)| x * y).sum()
}

#[track_caller]
fn assert_close(what: &str, got: &[f64], want: &[f64], cfg: &GradCheck) {
    assert_eq!(got.len(), want.len(), "{what}: length mismatch");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = cfg.atol + cfg.rtol * w.abs().max(g.abs());
        assert!(
            (g - w).abs() <= tol || (g.is_nan() && w.is_nan()),
            "{what}: element {i} differs: got {g:e}, expected {w:e} (|diff| = {:e} > tol {tol:e})\n  got:      {got:?}\n  expected: {want:?}",
            (g - w).abs()
        );
    }
}

/// Checks first derivatives of `f` at `x` up to `order` with default tolerances.
///
/// Panics with a description of the first mismatch.
#[track_caller]
pub fn check_grads<T: Tree, U: Tree>(f: impl Fn(&T) -> U, x: &T, order: usize) {
    check_grads_with(f, x, &GradCheck { order, ..GradCheck::default() })
}

/// [`check_grads`] with explicit settings.
#[track_caller]
pub fn check_grads_with<T: Tree, U: Tree>(f: impl Fn(&T) -> U, x: &T, cfg: &GradCheck) {
    check_dyn(&f, x, cfg)
}

/// The recursion of [`check_grads_with`], on trait objects so that each order does not
/// instantiate a new closure type.
#[track_caller]
fn check_dyn<T: Tree, U: Tree>(f: &dyn Fn(&T) -> U, x: &T, cfg: &GradCheck) {
    if cfg.order == 0 {
        return;
    }
    let mut rng = Rng(cfg.seed.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(1));
    let v = random_like(&mut rng, x);
    // forward mode vs central differences
    let (y, y_dot) = jvp(f, x, &v);
    let y_plus = f(&axpy(x, cfg.eps, &v));
    let y_minus = f(&axpy(x, -cfg.eps, &v));
    let fd: Vec<f64> = flat_f64(&y_plus)
        .iter()
        .zip(flat_f64(&y_minus))
        .map(|(p, m)| (p - m) / (2.0 * cfg.eps))
        .collect();
    let fd_cfg = GradCheck { rtol: cfg.rtol.max(1e-3), atol: cfg.atol.max(1e-4), ..cfg.clone() };
    assert_close("JVP vs central differences", &flat_f64(&y_dot), &fd, &fd_cfg);
    // reverse mode: dot-product test <u, J v> == <J^T u, v>
    let u = random_like(&mut rng, &y);
    let (_, pullback) = vjp_tree(f, x);
    let x_bar = pullback(&u);
    let lhs = inner(&u, &y_dot);
    let rhs = inner(&x_bar, &v);
    assert_close("VJP dot-product test <u, Jv> vs <J^T u, v>", &[rhs], &[lhs], cfg);
    if cfg.order > 1 {
        let next = GradCheck { order: cfg.order - 1, seed: cfg.seed + 1, ..cfg.clone() };
        let v2 = v.clone();
        check_dyn::<T, U>(&|x: &T| jvp(f, x, &v2).1, x, &next);
        let u2 = u.clone();
        check_dyn::<T, T>(
            &|x: &T| {
                let (_, pb) = vjp_tree(f, x);
                pb(&u2)
            },
            x,
            &next,
        );
    }
}

/// Asserts that two arrays have the same shape and close values (`f64` comparison).
#[track_caller]
pub fn assert_allclose(got: &Array, want: &Array, rtol: f64, atol: f64) {
    assert_eq!(got.shape(), want.shape(), "shapes differ");
    let cfg = GradCheck { rtol, atol, ..GradCheck::default() };
    assert_close("assert_allclose", &got.to_f64_vec(), &want.to_f64_vec(), &cfg);
}

/// Converts every float leaf of a tree to `f64` (for precise numerical checks).
pub fn to_f64<T: Tree>(t: &T) -> T {
    tree::map(t, |l| {
        if l.dtype().is_float() {
            crate::lax::convert_element_type(l, DType::F64)
        } else {
            l.clone()
        }
    })
}
