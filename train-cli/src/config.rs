//! The TOML training configuration. Every field has a default (see each `Default`).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::error::TrainError;

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[model]`.
    pub model: ModelConfig,
    /// `[data]`.
    pub data: DataConfig,
    /// `[optimizer]`.
    pub optimizer: OptimizerConfig,
    /// `[train]`.
    pub train: TrainConfig,
    /// `[checkpoint]`.
    pub checkpoint: CheckpointConfig,
    /// `[logging]`.
    pub logging: LoggingConfig,
    /// `[sample]`.
    pub sample: SampleConfig,
}

/// `[model]`: which network to train. Fields of other models are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// `"mlp"`, `"cnn"`, `"resnet"` or `"transformer"`. Default `"mlp"`.
    pub name: String,
    /// MLP: hidden layer widths. Default `[512, 512]`.
    pub hidden: Vec<i64>,
    /// CNN: output channels of each `conv3x3 -> relu -> maxpool2` stage. Default `[32, 64]`.
    pub channels: Vec<i64>,
    /// CNN: width of the hidden dense layer. Default 128.
    pub dense: i64,
    /// ResNet: channels of each stage (stride 2 from the second on). Default `[16, 32, 64]`.
    pub widths: Vec<i64>,
    /// ResNet: residual blocks per stage. Default 1.
    pub blocks_per_stage: i64,
    /// Transformer: number of blocks. Default 4.
    pub layers: i64,
    /// Transformer: width. Default 128.
    pub d_model: i64,
    /// Transformer: attention heads (must divide `d_model`). Default 4.
    pub heads: i64,
    /// Transformer: context length in tokens (the training window). Default 64.
    pub context: i64,
    /// Transformer: dropout rate in `[0, 1)`. Default 0.
    pub dropout: f64,
    /// Initialise the parameters from this safetensors file instead of randomly. Tensor
    /// names are the parameters' key paths (`convs.0.kernel`), optionally prefixed with
    /// `params.` (so a kiln checkpoint works too). Default: none.
    pub init_from: Option<PathBuf>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            name: "mlp".into(),
            hidden: vec![512, 512],
            channels: vec![32, 64],
            dense: 128,
            widths: vec![16, 32, 64],
            blocks_per_stage: 1,
            layers: 4,
            d_model: 128,
            heads: 4,
            context: 64,
            dropout: 0.0,
            init_from: None,
        }
    }
}

/// `[data]`: the data set and loader.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// `"mnist"`, `"fashion-mnist"` (image classification) or `"tinyshakespeare"`
    /// (character-level language modelling). Default `"mnist"`.
    pub name: String,
    /// The IDX `.gz` directory (images) or the text file or its directory, relative to the
    /// working directory. Default `"data/mnist"`.
    pub path: PathBuf,
    /// Training batch size. Default 128.
    pub batch_size: i64,
    /// Evaluation batch size. Default 1000.
    pub eval_batch_size: i64,
    /// Shuffle the training set every epoch. Default `true`.
    pub shuffle: bool,
    /// Shuffle seed. Default 0.
    pub seed: u64,
    /// Loader worker threads (0 = load on the training thread). Default 1.
    pub workers: i64,
    /// Use only the first N training examples (0 = all). Default 0.
    pub train_subset: i64,
    /// Use only the first N test examples (0 = all). Default 0.
    pub eval_subset: i64,
    /// Text: distance between the starts of training windows (1 = every position, as in
    /// nanoGPT's random sampling). Default 1.
    pub stride: i64,
    /// Text: fraction of the text used for training; the rest is validation. Default 0.9.
    pub train_fraction: f64,
    /// Images: augment training images by zero-padding this many pixels on every side and
    /// cropping back to the original size at a random position (0 = off). Deterministic
    /// per (seed, epoch, example), so resume stays exact. Default 0.
    pub random_crop_padding: i64,
    /// Images: mirror training images left-right with this probability (0 = off).
    /// Default 0.
    pub random_flip: f64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            name: "mnist".into(),
            path: PathBuf::from("data/mnist"),
            batch_size: 128,
            eval_batch_size: 1000,
            shuffle: true,
            seed: 0,
            workers: 1,
            train_subset: 0,
            eval_subset: 0,
            stride: 1,
            train_fraction: 0.9,
            random_crop_padding: 0,
            random_flip: 0.0,
        }
    }
}

/// `[optimizer]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// `"adam"`, `"adamw"` (Adam; set `weight_decay`), `"nadam"`, `"amsgrad"`,
    /// `"adabelief"`, `"lion"` (uses `b1`, `b2`; Optax's `b2` is 0.99), `"lamb"` (Adam,
    /// weight decay, trust ratio), `"lars"` (weight decay, trust ratio, learning rate, then
    /// momentum), `"rmsprop"` (`decay`, `centered`, optional `momentum` after the learning rate),
    /// `"adadelta"` (uses `decay`), `"adagrad"`, `"adafactor"` (factored second moments,
    /// block-RMS clipping at 1, updates scaled by the parameters' RMS; optional `momentum`;
    /// its weight decay is added after the learning rate, as in Optax; Optax's suggested
    /// `lr` is 0.01) or `"sgd"` (with `momentum`, `nesterov`). Default `"adam"`.
    pub name: String,
    /// Peak learning rate. Default 1e-3.
    pub lr: f64,
    /// Adam beta1. Default 0.9.
    pub b1: f64,
    /// Adam beta2. Default 0.999.
    pub b2: f64,
    /// Adam epsilon. Default 1e-8.
    pub eps: f64,
    /// Decoupled weight decay, added to the update before the learning rate (AdamW's).
    /// Default 0.
    pub weight_decay: f64,
    /// Which parameters weight decay applies to: `"all"` or `"matrices"` (leaves with two
    /// or more dimensions: kernels and embeddings, not biases or norm scales).
    /// Default `"all"`.
    pub weight_decay_mask: String,
    /// Momentum of `sgd`, `rmsprop`, `lars` and `adafactor` (0 = none). Default 0.9 for
    /// `lars` (Optax's), none for the others.
    pub momentum: Option<f64>,
    /// Trust coefficient of `lars` and `lamb`. Default 0.001 for `lars`, 1 for `lamb`
    /// (Optax's).
    pub trust_coefficient: Option<f64>,
    /// RMSProp's decay and Adadelta's rho. Default 0.9.
    pub decay: f64,
    /// Gradient accumulation: average the gradients of this many batches per optimizer
    /// step (the effective batch is `accumulate * data.batch_size`). Default 1.
    pub accumulate: i64,
    /// RMSProp: centred (divide by the standard deviation of the gradients, not their
    /// RMS; Optax's `centered`). Default `false`.
    pub centered: bool,
    /// SGD: Nesterov momentum. Default `false`.
    pub nesterov: bool,
    /// Clip gradients to this global L2 norm (0 = no clipping). Default 0.
    pub clip_by_global_norm: f64,
    /// `[optimizer.schedule]`.
    pub schedule: ScheduleConfig,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            name: "adam".into(),
            lr: 1e-3,
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            weight_decay_mask: "all".into(),
            momentum: None,
            trust_coefficient: None,
            decay: 0.9,
            accumulate: 1,
            centered: false,
            nesterov: false,
            clip_by_global_norm: 0.0,
            schedule: ScheduleConfig::default(),
        }
    }
}

/// `[optimizer.schedule]`: learning-rate schedule over the total number of steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// `"constant"`, `"cosine"` or `"linear"` (decay after warmup). Default `"constant"`.
    pub name: String,
    /// Linear warmup steps from 0 to `lr`. Default 0.
    pub warmup_steps: i64,
    /// Final learning rate as a fraction of `lr` (cosine/linear). Default 0.
    pub final_lr_fraction: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig { name: "constant".into(), warmup_steps: 0, final_lr_fraction: 0.0 }
    }
}

impl ScheduleConfig {
    /// The learning rate at (0-based) `step` of `total` steps for peak `lr`.
    pub fn lr_at(&self, lr: f64, step: u64, total: u64) -> f64 {
        let warm = self.warmup_steps.max(0) as u64;
        if step < warm {
            return lr * (step + 1) as f64 / warm as f64;
        }
        let span = total.saturating_sub(warm).max(1) as f64;
        let t = ((step - warm) as f64 / span).min(1.0);
        let lo = self.final_lr_fraction;
        match self.name.as_str() {
            "cosine" => lr * (lo + (1.0 - lo) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())),
            "linear" => lr * (lo + (1.0 - lo) * (1.0 - t)),
            _ => lr,
        }
    }
}

/// `[train]`: loop length and cadence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Number of epochs (used when `steps` is 0). Default 10.
    pub epochs: i64,
    /// Total number of steps (0 = `epochs` full epochs). Default 0.
    pub steps: i64,
    /// Evaluate every N steps (0 = at the end of every epoch). Default 0.
    pub eval_every: i64,
    /// Log training metrics every N steps. Default 50.
    pub log_every: i64,
    /// Parameter-initialisation seed. Default 0.
    pub seed: i64,
    /// `"f32"`, or `"bf16"`: mixed precision, the forward pass in bfloat16 with `f32`
    /// master weights, loss, gradients and optimizer state. (On the CPU backend bf16 is
    /// converted per operation and not fused, so it is slower than f32; it is there for
    /// numerics that match an accelerator run.) Default `"f32"`.
    pub precision: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            steps: 0,
            eval_every: 0,
            log_every: 50,
            seed: 0,
            precision: "f32".into(),
        }
    }
}

/// `[checkpoint]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Directory for `ckpt-<step>.safetensors` files. Default `"runs/default/checkpoints"`.
    pub dir: PathBuf,
    /// Save every N steps (0 = at the end of every epoch); the final step is always saved.
    /// Default 0.
    pub every: i64,
    /// Keep only the newest N checkpoints (0 = keep all). Default 3.
    pub keep: i64,
    /// Write checkpoints on a background thread while training goes on. Default `true`.
    #[serde(rename = "async")]
    pub async_save: bool,
    /// Also keep `best.safetensors`, the checkpoint with the best `best_metric` so far
    /// (every evaluation that improves on it writes a checkpoint). Default `false`.
    pub keep_best: bool,
    /// The metric `keep_best` ranks by: `"eval_loss"` (lowest) or `"eval_acc"` (highest).
    /// Default `"eval_loss"`.
    pub best_metric: String,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            dir: PathBuf::from("runs/default/checkpoints"),
            every: 0,
            keep: 3,
            async_save: true,
            keep_best: false,
            best_metric: "eval_loss".into(),
        }
    }
}

/// `[logging]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// Metrics file (JSON Lines). Default `"runs/default/metrics.jsonl"`.
    pub jsonl: PathBuf,
    /// Directory for TensorBoard event files (`tensorboard --logdir DIR`): the same
    /// metrics as scalars `train/loss`, `eval/acc`, ... Default: none.
    pub tensorboard: Option<PathBuf>,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig { jsonl: PathBuf::from("runs/default/metrics.jsonl"), tensorboard: None }
    }
}

/// `[sample]`: text generation by language models, at the end of training and by
/// `train-cli sample` (whose flags override these).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleConfig {
    /// The prompt. Default `"ROMEO:"`.
    pub prompt: String,
    /// Tokens to generate (0 = no sample at the end of training). Default 300.
    pub tokens: i64,
    /// Softmax temperature (0 = greedy). Default 0.8.
    pub temperature: f64,
    /// Sampling seed. Default 0.
    pub seed: i64,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig { prompt: "ROMEO:".into(), tokens: 300, temperature: 0.8, seed: 0 }
    }
}

/// Known models.
pub const MODELS: &[&str] = &["mlp", "cnn", "resnet", "transformer"];
/// Known data sets.
pub const DATASETS: &[&str] = &["mnist", "fashion-mnist", "tinyshakespeare"];
/// Known optimizers.
pub const OPTIMIZERS: &[&str] = &[
    "adam",
    "adamw",
    "nadam",
    "amsgrad",
    "adabelief",
    "lion",
    "lamb",
    "lars",
    "rmsprop",
    "adagrad",
    "adadelta",
    "adafactor",
    "sgd",
];
const SCHEDULES: &[&str] = &["constant", "cosine", "linear"];

/// Levenshtein edit distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate to `word`, if reasonably close.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&value) {
        return Ok(());
    }
    let hint = did_you_mean(value, allowed.iter().copied())
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default();
    Err(format!("{key}: unknown value `{value}` (expected one of: {}){hint}", allowed.join(", ")))
}

/// Parses a `key=value` override value as TOML (falls back to a plain string).
fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

/// Finds the dotted key of the `key = value` line containing byte `offset` of `text`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let mut section = String::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            section = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
        let end = pos + line.len();
        if offset >= pos && offset < end {
            if let Some((k, _)) = t.split_once('=') {
                let k = k.trim().trim_matches('"');
                return Some(if section.is_empty() { k.into() } else { format!("{section}.{k}") });
            }
            return if section.is_empty() { None } else { Some(section) };
        }
        pos = end;
    }
    None
}

/// Loads a config file, applies `--set key=value` overrides and validates it (without
/// touching the file system).
pub fn load(path: &Path, overrides: &[String]) -> Result<Config, TrainError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| TrainError::Config { file: file.clone(), msg: format!("cannot read: {e}") })?;
    from_str(&text, &file, overrides)
}

/// Like [`load`], from a string; `file` names it in errors.
pub fn from_str(text: &str, file: &str, overrides: &[String]) -> Result<Config, TrainError> {
    let err = |msg: String| TrainError::Config { file: file.to_string(), msg };
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let msg = e.message().trim().to_string();
        err(match line {
            Some(l) => format!("line {l}: {msg}"),
            None => msg,
        })
    })?;
    for ov in overrides {
        let (key, raw) =
            ov.split_once('=').ok_or_else(|| err(format!("--set `{ov}`: expected key=value")))?;
        let parts: Vec<&str> = key.trim().split('.').collect();
        let mut t = &mut table;
        for p in &parts[..parts.len() - 1] {
            let entry =
                t.entry(p.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
            t = entry
                .as_table_mut()
                .ok_or_else(|| err(format!("--set {key}: `{p}` is not a table")))?;
        }
        t.insert(parts[parts.len() - 1].to_string(), parse_value(raw.trim()));
    }
    let canonical = toml::to_string(&table).map_err(|e| err(e.to_string()))?;
    let config: Config = toml::from_str(&canonical).map_err(|e| {
        let key = e.span().and_then(|s| key_at(&canonical, s.start));
        let msg = e.message().trim().to_string();
        let msg = add_did_you_mean(&msg);
        err(match key {
            Some(k) => format!("{k}: {msg}"),
            None => msg,
        })
    })?;
    config.validate().map_err(err)?;
    Ok(config)
}

/// Turns serde's "unknown field `x`, expected one of `a`, `b`" into a did-you-mean hint.
fn add_did_you_mean(msg: &str) -> String {
    let Some(rest) = msg.strip_prefix("unknown field `") else { return msg.to_string() };
    let Some((name, tail)) = rest.split_once('`') else { return msg.to_string() };
    let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
    match did_you_mean(name, expected.iter().copied()) {
        Some(c) => format!(
            "unknown key `{name}`; did you mean `{c}`? (expected one of: {})",
            expected.join(", ")
        ),
        None => format!("unknown key `{name}` (expected one of: {})", expected.join(", ")),
    }
}

impl Config {
    /// Checks ranges and names (no file-system access).
    pub fn validate(&self) -> Result<(), String> {
        one_of("model.name", &self.model.name, MODELS)?;
        one_of("data.name", &self.data.name, DATASETS)?;
        one_of("optimizer.name", &self.optimizer.name, OPTIMIZERS)?;
        one_of("optimizer.schedule.name", &self.optimizer.schedule.name, SCHEDULES)?;
        one_of("train.precision", &self.train.precision, &["f32", "bf16"])?;
        one_of("checkpoint.best_metric", &self.checkpoint.best_metric, &["eval_loss", "eval_acc"])?;
        one_of(
            "optimizer.weight_decay_mask",
            &self.optimizer.weight_decay_mask,
            &["all", "matrices"],
        )?;
        let positive = |key: &str, v: i64| {
            if v > 0 { Ok(()) } else { Err(format!("{key}: must be positive, got {v}")) }
        };
        let non_negative = |key: &str, v: i64| {
            if v >= 0 { Ok(()) } else { Err(format!("{key}: must not be negative, got {v}")) }
        };
        let m = &self.model;
        for (key, list) in [("hidden", &m.hidden), ("channels", &m.channels), ("widths", &m.widths)]
        {
            for (i, h) in list.iter().enumerate() {
                positive(&format!("model.{key}[{i}]"), *h)?;
            }
        }
        for (key, v) in [
            ("dense", m.dense),
            ("blocks_per_stage", m.blocks_per_stage),
            ("layers", m.layers),
            ("d_model", m.d_model),
            ("heads", m.heads),
            ("context", m.context),
        ] {
            positive(&format!("model.{key}"), v)?;
        }
        if m.name == "transformer" && m.d_model % m.heads != 0 {
            return Err(format!(
                "model.heads: {} does not divide model.d_model = {}",
                m.heads, m.d_model
            ));
        }
        if m.name == "resnet" && m.widths.is_empty() {
            return Err("model.widths: a resnet needs at least one stage".into());
        }
        if !(0.0..1.0).contains(&m.dropout) {
            return Err(format!("model.dropout: must be in [0, 1), got {}", m.dropout));
        }
        let text_data = self.data.name == "tinyshakespeare";
        if (m.name == "transformer") != text_data {
            return Err(format!(
                "model.name: `{}` cannot train on data.name `{}` (the transformer is the language \
                 model for text; mlp, cnn and resnet classify images)",
                m.name, self.data.name
            ));
        }
        positive("data.stride", self.data.stride)?;
        positive("optimizer.accumulate", self.optimizer.accumulate)?;
        non_negative("data.random_crop_padding", self.data.random_crop_padding)?;
        if !(0.0..=1.0).contains(&self.data.random_flip) {
            return Err(format!(
                "data.random_flip: must be in [0, 1], got {}",
                self.data.random_flip
            ));
        }
        if text_data && (self.data.random_crop_padding > 0 || self.data.random_flip > 0.0) {
            return Err(
                "data.random_crop_padding / data.random_flip: image augmentations do not apply \
                 to text data"
                    .into(),
            );
        }
        if !(self.data.train_fraction > 0.0 && self.data.train_fraction < 1.0) {
            return Err(format!(
                "data.train_fraction: must be in (0, 1), got {}",
                self.data.train_fraction
            ));
        }
        non_negative("sample.tokens", self.sample.tokens)?;
        if !(self.sample.temperature >= 0.0 && self.sample.temperature.is_finite()) {
            return Err(format!(
                "sample.temperature: must be a non-negative number, got {}",
                self.sample.temperature
            ));
        }
        positive("data.batch_size", self.data.batch_size)?;
        positive("data.eval_batch_size", self.data.eval_batch_size)?;
        non_negative("data.workers", self.data.workers)?;
        non_negative("data.train_subset", self.data.train_subset)?;
        non_negative("data.eval_subset", self.data.eval_subset)?;
        non_negative("train.epochs", self.train.epochs)?;
        non_negative("train.steps", self.train.steps)?;
        if self.train.epochs == 0 && self.train.steps == 0 {
            return Err("train: set `epochs` or `steps` to a positive number".into());
        }
        non_negative("train.eval_every", self.train.eval_every)?;
        positive("train.log_every", self.train.log_every)?;
        non_negative("optimizer.schedule.warmup_steps", self.optimizer.schedule.warmup_steps)?;
        non_negative("checkpoint.every", self.checkpoint.every)?;
        non_negative("checkpoint.keep", self.checkpoint.keep)?;
        let o = &self.optimizer;
        let finite_pos = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("{key}: must be a positive number, got {v}"))
            }
        };
        finite_pos("optimizer.lr", o.lr)?;
        finite_pos("optimizer.eps", o.eps)?;
        for (k, v) in [("optimizer.b1", o.b1), ("optimizer.b2", o.b2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("{k}: must be in [0, 1), got {v}"));
            }
        }
        if !(0.0..1.0).contains(&o.decay) {
            return Err(format!("optimizer.decay: must be in [0, 1), got {}", o.decay));
        }
        if let Some(m) = o.momentum.filter(|m| !(0.0..1.0).contains(m)) {
            return Err(format!("optimizer.momentum: must be in [0, 1), got {m}"));
        }
        if let Some(t) = o.trust_coefficient.filter(|t| !(t.is_finite() && *t > 0.0)) {
            return Err(format!("optimizer.trust_coefficient: must be positive, got {t}"));
        }
        let bad = |v: f64| v.is_nan() || v < 0.0;
        if bad(o.weight_decay) || bad(o.clip_by_global_norm) {
            return Err(
                "optimizer.weight_decay / optimizer.clip_by_global_norm: must not be negative"
                    .into(),
            );
        }
        Ok(())
    }

    /// The config as a TOML string (stored in checkpoints).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip() {
        let c = Config::default();
        c.validate().unwrap();
        let back = from_str(&c.to_toml(), "x.toml", &[]).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn every_shipped_example_config_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let c = load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                c.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                // Every field is a known one (load denies unknown keys) and survives TOML.
                assert_eq!(from_str(&c.to_toml(), "x.toml", &[]).unwrap(), c);
                n += 1;
            }
        }
        assert!(n >= 5, "found {n} example configs in {}", dir.display());
    }

    #[test]
    fn overrides_and_did_you_mean() {
        let c = from_str("", "x.toml", &["optimizer.lr=0.5".into(), "model.hidden=[3, 4]".into()])
            .unwrap();
        assert_eq!(c.optimizer.lr, 0.5);
        assert_eq!(c.model.hidden, vec![3, 4]);
        assert_eq!(did_you_mean("epoch", ["epochs", "steps"]), Some("epochs"));
        assert_eq!(did_you_mean("zzzzzz", ["epochs", "steps"]), None);
    }

    #[test]
    fn schedules() {
        let mut s = ScheduleConfig::default();
        assert_eq!(s.lr_at(1.0, 5, 10), 1.0);
        s.name = "cosine".into();
        assert_eq!(s.lr_at(1.0, 0, 10), 1.0);
        assert!((s.lr_at(1.0, 5, 10) - 0.5).abs() < 1e-12);
        s.warmup_steps = 4;
        assert_eq!(s.lr_at(1.0, 0, 10), 0.25);
    }
}
