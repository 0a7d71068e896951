//! # kiln-train: the config-driven trainer of kiln
//!
//! [`Trainer`] trains any parameter tree with a forward function on MNIST-style
//! classification data: Adam(W) with schedules and clipping ([`optim`]), JSONL metrics,
//! atomic safetensors checkpoints with exact resume ([`checkpoint`]), configured by a
//! TOML file ([`config`]). The `train-cli` binary wraps it.

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod model;
pub mod optim;
#[cfg(feature = "plot")]
pub mod plot;
pub mod trainer;

pub use config::Config;
pub use error::TrainError;
pub use trainer::{Resume, RunOptions, Summary, Trainer, train_step};

use model::Mlp;

/// The built-in trainer for `config.model` (an MLP on 28x28 inputs, 10 classes).
pub fn builtin_trainer(config: Config) -> Trainer<Mlp> {
    let mut sizes = vec![784usize];
    sizes.extend(config.model.hidden.iter().map(|&h| h as usize));
    sizes.push(10);
    Trainer::new(config, move |key| Mlp::init(key, &sizes), |p: &Mlp, x| p.forward(x))
}
