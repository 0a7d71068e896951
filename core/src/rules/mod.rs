//! The rules of every primitive: abstract evaluation (shapes and dtypes), JVP, and
//! transpose (linear primitives only). Each is one exhaustive `match` over [`Prim`], so a
//! primitive without a rule does not compile.
//!
//! [`Prim`]: crate::Prim

mod abstract_eval;
mod batch;
mod jvp;
mod transpose;

pub use abstract_eval::abstract_eval;
pub use batch::batch;
pub(crate) use batch::{moveaxis, to_front};
pub use jvp::jvp;
pub(crate) use jvp::take_along_axis;
pub use transpose::transpose;
