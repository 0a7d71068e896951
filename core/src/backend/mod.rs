//! Backends: where arrays live and primitives run.
//!
//! The native CPU backend ([`cpu`]) is the reference: it runs every primitive eagerly on
//! host memory. Arrays on it are a [`Storage`] (typed vector) plus the shape in the array's
//! [`Aval`](crate::Aval).

pub mod cpu;
mod storage;

pub use storage::{Storage, StorageElement};
