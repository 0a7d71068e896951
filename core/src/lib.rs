//! kiln core.

extern crate self as kiln;

pub mod ad;
pub mod array;
pub mod aval;
pub mod backend;
pub mod dtype;
pub mod error;
pub mod jaxpr;
pub mod jit;
pub mod lax;
pub mod numpy;
pub mod prim;
pub mod random;
pub mod rules;
mod staging;
pub mod testing;
pub mod trace;
pub mod tree;
pub mod vmap;

pub use ad::{
    grad, jvp, linearize, try_grad, try_value_and_grad, value_and_grad, value_and_grad_with_aux,
    vjp,
};
pub use array::Array;
pub use aval::Aval;
pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use jit::{Jit, jit, jit_static};
pub use kiln_macros::Tree;
pub use numpy::{ArrayLike, Idx, concatenate, einsum, one_hot, stack, where_};
pub use prim::Prim;
pub use staging::make_jaxpr;
pub use tree::Tree;
pub use vmap::{
    Axes, Jacobian, hessian, hessian_tree, hvp, jacfwd, jacfwd_tree, jacrev, jacrev_tree, try_vmap,
    vmap, vmap_full, vmap_with,
};
