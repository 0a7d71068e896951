//! Using `kiln_train::Trainer` as a library with a custom model.
//!
//! Run from the repository root:
//! `cargo run --release -p kiln-train --example custom_model`
//!
//! The model is a one-hidden-layer tanh network with a skip connection from the input
//! straight to the logits; any `#[derive(kiln::Tree)]` struct works.

use kiln::{Array, DType};
use kiln_train::{Config, RunOptions, Trainer};

#[derive(Clone, Debug, kiln::Tree)]
struct SkipNet {
    hidden: Array,
    hidden_bias: Array,
    out: Array,
    skip: Array,
    out_bias: Array,
}

impl SkipNet {
    fn init(key: &Array) -> SkipNet {
        let k = kiln::random::split_n(key, 3);
        let scaled = |k: &Array, shape: &[usize]| {
            kiln::random::normal(k, shape, DType::F32) * (1.0 / (shape[0] as f32).sqrt())
        };
        SkipNet {
            hidden: scaled(&k[0], &[784, 128]),
            hidden_bias: Array::zeros([128]),
            out: scaled(&k[1], &[128, 10]),
            skip: scaled(&k[2], &[784, 10]),
            out_bias: Array::zeros([10]),
        }
    }

    fn forward(&self, x: &Array) -> Array {
        let h = (x.matmul(&self.hidden) + &self.hidden_bias).tanh();
        h.matmul(&self.out) + x.matmul(&self.skip) + &self.out_bias
    }
}

fn main() -> Result<(), kiln_train::TrainError> {
    let mut config = Config::default();
    config.data.train_subset = 10_000;
    config.data.eval_subset = 2_000;
    config.train.epochs = 1;
    config.checkpoint.dir = "runs/custom-model/checkpoints".into();
    config.logging.jsonl = "runs/custom-model/metrics.jsonl".into();
    config
        .validate()
        .map_err(|msg| kiln_train::TrainError::Config { file: "<code>".into(), msg })?;

    let trainer = Trainer::new(config, SkipNet::init, |p: &SkipNet, x: &Array| p.forward(x));
    let summary = trainer.run(&RunOptions::default())?;
    println!(
        "custom model: {} steps, test accuracy {:.2}% ({:.1}s)",
        summary.steps,
        summary.eval_acc * 100.0,
        summary.wall_secs
    );
    Ok(())
}
