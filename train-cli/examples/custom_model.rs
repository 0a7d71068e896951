//! Training a model defined here, not built into `train-cli`, with the same loop: jitted
//! step, progress bar, JSONL metrics, checkpoints and exact resume.
//!
//! ```text
//! cargo run --release -p kiln-train --example custom_model            # from the repo root
//! cargo run --release -p kiln-train --example custom_model -- --resume
//! ```
//!
//! The module is a residual MLP with its own loss (label-smoothed cross-entropy); anything
//! that is a `Tree` and implements [`Model`] trains the same way.

use kiln::{Array, Tree, random};
use kiln_nn::{LayerNorm, Linear, loss};
use kiln_train::{Model, Resume, RunOptions, Trainer, config, data};

/// `x -> proj -> [x + mlp(ln(x))] * depth -> head`.
#[derive(Clone, Debug, Tree)]
struct ResidualMlp {
    proj: Linear,
    blocks: Vec<(LayerNorm, Linear, Linear)>,
    head: Linear,
    /// Label smoothing of the loss (not a parameter).
    #[tree(static)]
    smoothing: f64,
}

impl ResidualMlp {
    fn new(key: &Array, input: usize, width: usize, depth: usize, classes: usize) -> Self {
        let ks = random::split_n(key, 2 * depth + 2);
        let blocks = (0..depth)
            .map(|i| {
                let up = Linear::new(&ks[2 + 2 * i], width, 2 * width);
                let down = Linear::new(&ks[3 + 2 * i], 2 * width, width);
                (LayerNorm::new(width), up, down)
            })
            .collect();
        ResidualMlp {
            proj: Linear::new(&ks[0], input, width),
            blocks,
            head: Linear::new(&ks[1], width, classes),
            smoothing: 0.1,
        }
    }
}

impl Model for ResidualMlp {
    type State = ();

    fn init_state(&self) {}

    fn apply(&self, _: &(), x: &Array, _train: Option<&Array>) -> (Array, ()) {
        let b = x.shape()[0];
        let mut h = self.proj.forward(&x.reshape([b, 784]));
        for (ln, up, down) in &self.blocks {
            h = &h + down.forward(&up.forward(&ln.forward(&h)).relu());
        }
        (self.head.forward(&h), ())
    }

    fn loss(&self, logits: &Array, labels: &Array) -> Array {
        let classes = logits.shape()[1];
        let onehot = kiln::one_hot(labels, classes, logits.dtype());
        let smooth = onehot * (1.0 - self.smoothing) + self.smoothing / classes as f64;
        loss::softmax_cross_entropy(logits, &smooth).mean()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let resume = std::env::args().any(|a| a == "--resume");
    // The same TOML schema as `train-cli run`; here written inline (no `[model]` needed).
    let cfg = config::from_str(
        r#"
        [data]
        path = "data/mnist"
        batch_size = 128
        [optimizer]
        lr = 2e-3
        [optimizer.schedule]
        name = "cosine"
        [train]
        steps = 600
        eval_every = 300
        log_every = 50
        [checkpoint]
        dir = "runs/custom-model/checkpoints"
        every = 200
        [logging]
        jsonl = "runs/custom-model/metrics.jsonl"
        "#,
        "custom_model.rs",
        &[],
    )?;
    let data = data::open(&cfg)?;
    let trainer = Trainer::new(cfg, data, |key| ResidualMlp::new(key, 784, 256, 2, 10));
    let opts =
        RunOptions { resume: if resume { Resume::Auto } else { Resume::No }, ..Default::default() };
    let s = trainer.run(&opts)?;
    println!(
        "custom model: {} steps in {:.1}s, test loss {:.4}, test accuracy {:.2}%",
        s.steps,
        s.wall_secs,
        s.eval_loss,
        s.eval_acc * 100.0
    );
    if let Some(c) = s.checkpoint {
        println!("checkpoint: {}", c.display());
    }
    Ok(())
}
