//! # kiln-train: the config-driven trainer of kiln
//!
//! [`Trainer`] trains any parameter tree with a forward function on MNIST-style
//! classification data: Adam(W) from `kiln-optim` with schedules and clipping, JSONL metrics,
//! atomic safetensors checkpoints with exact resume ([`checkpoint`]), configured by a
//! TOML file ([`config`]). The `train-cli` binary wraps it.

pub mod checkpoint;
pub mod config;
pub mod error;
#[cfg(feature = "plot")]
pub mod plot;
pub mod trainer;

pub use config::Config;
pub use error::TrainError;
pub use trainer::{
    OptState, Optimizer, Resume, RunOptions, Summary, Trainer, optimizer, train_step,
};

use kiln_nn::{Activation, Mlp};

/// The built-in trainer for `config.model`: a `kiln_nn::Mlp` with ReLU between layers on
/// 28x28 inputs, 10 classes.
pub fn builtin_trainer(config: Config) -> Trainer<Mlp> {
    let mut sizes = vec![784usize];
    sizes.extend(config.model.hidden.iter().map(|&h| h as usize));
    sizes.push(10);
    Trainer::new(
        config,
        move |key| Mlp::new(key, &sizes, Activation::Relu),
        |p: &Mlp, x| p.forward(x),
    )
}
