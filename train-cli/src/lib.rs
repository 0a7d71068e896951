//! # kiln-train: the config-driven trainer of kiln
//!
//! [`Trainer`] trains any [`Model`] (a parameter tree with a forward pass, see [`models`])
//! on a [`TaskData`] (image classification or character language modelling, see [`data`]):
//! one jitted train step with the parameters donated, Adam(W) from `kiln-optim` with
//! schedules and clipping, JSONL metrics, atomic safetensors checkpoints (optionally written
//! in the background) with exact resume ([`checkpoint`]), configured by a TOML file
//! ([`config`]). [`Builtin`] is the built-in model of `[model] name`; the `train-cli` binary
//! wraps it.

pub mod alloc;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod models;
#[cfg(feature = "plot")]
pub mod plot;
pub mod tensorboard;
pub mod trainer;

use std::path::Path;

pub use config::Config;
pub use data::{Task, TaskData};
pub use error::TrainError;
pub use models::{Cnn, Model, ResNet, Transformer, TransformerConfig};
pub use trainer::{
    EvalMetrics, OptState, Optimizer, Resume, RunOptions, Summary, TrainState, Trainer, optimizer,
};

use kiln_nn::{Activation, Mlp};

/// The trainer of a built-in model (`[model] name`).
pub enum Builtin {
    /// `mlp`: [`kiln_nn::Mlp`] with ReLU.
    Mlp(Trainer<Mlp>),
    /// `cnn`: [`Cnn`].
    Cnn(Trainer<Cnn>),
    /// `resnet`: [`ResNet`].
    ResNet(Trainer<ResNet>),
    /// `transformer`: [`Transformer`].
    Transformer(Trainer<Transformer>),
}

/// Runs `$body` with `$t` bound to the [`Trainer`] inside a [`Builtin`].
macro_rules! with_trainer {
    ($b:expr, $t:ident => $body:expr) => {
        match $b {
            Builtin::Mlp($t) => $body,
            Builtin::Cnn($t) => $body,
            Builtin::ResNet($t) => $body,
            Builtin::Transformer($t) => $body,
        }
    };
}

fn sizes(v: &[i64]) -> Vec<usize> {
    v.iter().map(|&x| x as usize).collect()
}

impl Builtin {
    /// Opens the data of `config` and builds the trainer of its model.
    pub fn new(config: Config) -> Result<Builtin, TrainError> {
        let data = data::open(&config)?;
        let m = config.model.clone();
        let classes = data.task.classes();
        let input = match data.task {
            Task::Classify { input, .. } => input,
            Task::Language { context, .. } => [context, 1, 1],
        };
        Ok(match m.name.as_str() {
            "mlp" => {
                let mut s = vec![input.iter().product()];
                s.extend(sizes(&m.hidden));
                s.push(classes);
                Builtin::Mlp(Trainer::new(config, data, move |k| Mlp::new(k, &s, Activation::Relu)))
            }
            "cnn" => {
                let ch = sizes(&m.channels);
                let dense = m.dense as usize;
                Builtin::Cnn(Trainer::new(config, data, move |k| {
                    Cnn::new(k, input, &ch, dense, classes)
                }))
            }
            "resnet" => {
                let w = sizes(&m.widths);
                let b = m.blocks_per_stage as usize;
                Builtin::ResNet(Trainer::new(config, data, move |k| {
                    ResNet::new(k, input[2], &w, b, classes)
                }))
            }
            "transformer" => {
                let c = TransformerConfig {
                    vocab: classes,
                    context: m.context as usize,
                    layers: m.layers as usize,
                    d_model: m.d_model as usize,
                    heads: m.heads as usize,
                    dropout: m.dropout,
                };
                Builtin::Transformer(Trainer::new(config, data, move |k| Transformer::new(k, c)))
            }
            other => {
                return Err(TrainError::Config {
                    file: "<config>".into(),
                    msg: format!("model.name: unknown model `{other}`"),
                });
            }
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        with_trainer!(self, t => &t.config)
    }

    /// The data.
    pub fn data(&self) -> &TaskData {
        with_trainer!(self, t => &t.data)
    }

    /// Trains; see [`Trainer::run`].
    pub fn run(&self, opts: &RunOptions) -> Result<Summary, TrainError> {
        with_trainer!(self, t => t.run(opts))
    }

    /// Evaluates a checkpoint on the held-out split.
    pub fn evaluate_checkpoint(&self, path: &Path) -> Result<EvalMetrics, TrainError> {
        with_trainer!(self, t => {
            let (params, state, _) = t.load(path)?;
            t.evaluate(&params, &state)
        })
    }

    /// Text sampled from a language-model checkpoint after `prompt`.
    pub fn sample_checkpoint(
        &self,
        path: &Path,
        prompt: &str,
        tokens: usize,
    ) -> Result<String, TrainError> {
        let Task::Language { vocab, .. } = &self.data().task else {
            return Err(TrainError::Data(format!(
                "sampling needs a language model; this checkpoint's model is `{}`",
                self.config().model.name
            )));
        };
        with_trainer!(self, t => {
            let (params, _, _) = t.load(path)?;
            t.sample_text(&params, vocab, prompt, tokens)
        })
    }

    /// The parameter table of a freshly initialised model ([`kiln_nn::summary`]).
    pub fn summary(&self) -> Result<String, TrainError> {
        with_trainer!(self, t => Ok(kiln_nn::summary(&t.init_params()?.1).to_string()))
    }
}
