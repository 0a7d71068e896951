//! The training loop: [`Trainer`] trains any parameter tree `P` with a forward function
//! on a classification data set, with Adam(W) from `kiln-optim`, JSONL metrics, checkpoints
//! and exact resume.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use kiln::Array;
use kiln::tree::Tree;
use kiln_data::{ArrayDataset, Loader, LoaderConfig, LoaderState, Split, Subset};
use serde::Serialize;

use crate::checkpoint::{self, CheckpointMeta};
use crate::config::Config;
use crate::config::OptimizerConfig;
use crate::error::TrainError;
use kiln_optim::{
    AddDecayedWeights, ClipByGlobalNorm, ScaleByAdam, ScaleByLearningRate, Transform,
    add_decayed_weights, apply_updates, clip_by_global_norm, global_norm, scale_by_adam,
    scale_by_learning_rate,
};

/// The trainer's optimizer, Optax's `chain(clip_by_global_norm, adamw)`: optional
/// global-norm clipping, Adam's rescaling, optional decoupled weight decay, then the
/// learning rate. Its state checkpoints under `opt_state.1.mu...`, `opt_state.1.count`, ....
pub type Optimizer =
    (Option<ClipByGlobalNorm>, ScaleByAdam, Option<AddDecayedWeights>, ScaleByLearningRate);

/// The state of [`Optimizer`] for parameters `P`.
pub type OptState<P> = <Optimizer as Transform>::State<P>;

/// The [`Optimizer`] of `[optimizer]` with learning rate `lr` (the schedule is evaluated on
/// the host, so that the logged `lr` is exactly the one used).
pub fn optimizer(cfg: &OptimizerConfig, lr: f64) -> Optimizer {
    (
        (cfg.clip_by_global_norm > 0.0).then(|| clip_by_global_norm(cfg.clip_by_global_norm)),
        scale_by_adam(cfg.b1, cfg.b2, cfg.eps, 0.0, false),
        (cfg.weight_decay != 0.0).then(|| add_decayed_weights(cfg.weight_decay, None)),
        scale_by_learning_rate(lr),
    )
}

/// Mean softmax cross-entropy of `logits: [batch, classes]` against integer `labels: [batch]`.
fn mean_loss(logits: &Array, labels: &Array) -> Array {
    kiln_nn::loss::softmax_cross_entropy_with_integer_labels(logits, labels).mean()
}

/// Number of rows of `logits` whose argmax equals the integer label (an `f32` scalar).
fn correct_count(logits: &Array, labels: &Array) -> Array {
    let pred = logits.argmax(-1);
    pred.eq(labels.astype(pred.dtype())).astype(kiln::DType::F32).sum()
}

/// The data set type the trainer loads.
pub type Data = Subset<ArrayDataset>;

/// Where to resume from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Resume {
    /// Start fresh (truncating the metrics file).
    #[default]
    No,
    /// The newest valid checkpoint in `[checkpoint].dir`, or fresh if there is none.
    Auto,
    /// This checkpoint file.
    Path(PathBuf),
}

/// Options of one run that are not part of the config.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Resume mode.
    pub resume: Resume,
    /// No progress bar and no summary.
    pub quiet: bool,
    /// Print the summary as one JSON line on stdout (implies no progress bar).
    pub json: bool,
    /// Stop after this step (simulates an interruption; for tests).
    pub stop_at_step: Option<u64>,
}

/// Metrics of one training step.
#[derive(Clone, Debug)]
pub struct StepMetrics {
    /// Mean cross-entropy of the batch.
    pub loss: f32,
    /// Accuracy on the batch.
    pub acc: f32,
    /// Global gradient norm (before clipping).
    pub grad_norm: f64,
}

/// The result of [`Trainer::run`].
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Steps completed.
    pub steps: u64,
    /// Step this run started at (non-zero after resume).
    pub start_step: u64,
    /// Last logged training loss.
    pub train_loss: f32,
    /// Final test loss.
    pub eval_loss: f64,
    /// Final test accuracy.
    pub eval_acc: f64,
    /// Wall time of this run in seconds.
    pub wall_secs: f64,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
    /// The metrics file.
    pub metrics: PathBuf,
}

/// A forward function: parameters and a `[batch, features]` input to `[batch, classes]` logits.
pub type Forward<P> = Arc<dyn Fn(&P, &Array) -> Array + Send + Sync>;
/// An initialiser: PRNG key to parameters.
pub type Init<P> = Arc<dyn Fn(&Array) -> P + Send + Sync>;

/// A classification trainer for parameters `P`.
pub struct Trainer<P: Tree> {
    /// The configuration (`[model]` is not used by the trainer itself).
    pub config: Config,
    init: Init<P>,
    forward: Forward<P>,
}

/// Loads the configured split as `[N, 784]` inputs and integer labels.
pub fn open_data(config: &Config, split: Split) -> Result<Data, TrainError> {
    let dir = &config.data.path;
    if !dir.is_dir() {
        return Err(TrainError::Data(format!(
            "data.path: directory `{}` does not exist (run from the repository root, or set data.path)",
            dir.display()
        )));
    }
    let ds = kiln_data::mnist(dir, split).map_err(|e| {
        TrainError::Data(format!(
            "data.path `{}`: {}",
            dir.display(),
            e.to_string().lines().next().unwrap_or("")
        ))
    })?;
    use kiln_data::Dataset;
    let limit = match split {
        Split::Train => config.data.train_subset,
        Split::Test => config.data.eval_subset,
    } as usize;
    let n = if limit == 0 { ds.len() } else { limit.min(ds.len()) };
    Ok(Subset::new(ds, (0..n).collect::<Vec<_>>())?)
}

/// Converts a loader batch into `([B, features] f32 in [0, 1], [B] i32 labels)`.
pub fn batch_arrays(mut batch: kiln_data::Batch) -> Result<(Array, Array), TrainError> {
    let img = batch.take("image")?;
    let b = img.shape()[0];
    let feat: usize = img.shape()[1..].iter().product();
    let x: Vec<f32> = img.to_f32_vec().into_iter().map(|v| v / 255.0).collect();
    let labels: Vec<i32> = batch.take("label")?.into_vec::<i32>()?;
    Ok((Array::from_vec(x, [b, feat]), Array::from_vec(labels, [b])))
}

/// One training step, a pure function of its inputs:
/// `(params, opt_state, batch) -> (params, opt_state, metrics)`.
pub fn train_step<P: Tree>(
    forward: &(dyn Fn(&P, &Array) -> Array + Send + Sync),
    opt: &Optimizer,
    params: &P,
    opt_state: OptState<P>,
    x: &Array,
    y: &Array,
) -> (P, OptState<P>, StepMetrics) {
    let ((loss, correct), grads) = kiln::value_and_grad_with_aux(|p: &P| {
        let logits = forward(p, x);
        (mean_loss(&logits, y), correct_count(&logits, y).stop_gradient())
    })(params);
    let norm = global_norm(&grads).item::<f32>() as f64;
    let (updates, opt_state) = opt.update(grads, opt_state, params);
    let params = apply_updates(params, &updates);
    let n = y.shape()[0].max(1) as f32;
    let metrics =
        StepMetrics { loss: loss.item::<f32>(), acc: correct.item::<f32>() / n, grad_norm: norm };
    (params, opt_state, metrics)
}

fn json_line(
    file: &mut std::fs::File,
    path: &Path,
    v: serde_json::Value,
) -> Result<(), TrainError> {
    writeln!(file, "{v}").map_err(|e| TrainError::io(path, e))
}

/// Keeps only metric records with `step <= step` (drops those of an interrupted tail).
fn truncate_metrics(path: &Path, step: u64) -> Result<(), TrainError> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    std::fs::write(path, out).map_err(|e| TrainError::io(path, e))
}

impl<P: Tree> Trainer<P> {
    /// A trainer for parameters made by `init` and applied by `forward`.
    pub fn new(
        config: Config,
        init: impl Fn(&Array) -> P + Send + Sync + 'static,
        forward: impl Fn(&P, &Array) -> Array + Send + Sync + 'static,
    ) -> Trainer<P> {
        Trainer { config, init: Arc::new(init), forward: Arc::new(forward) }
    }

    /// Fresh parameters from `[train].seed`.
    pub fn init_params(&self) -> (Array, P) {
        let key = kiln::random::key(self.config.train.seed);
        let p = (self.init)(&key);
        (key, p)
    }

    /// Loads parameters from a checkpoint, checking they fit the model.
    pub fn load_params(&self, path: &Path) -> Result<(P, CheckpointMeta), TrainError> {
        let ck = checkpoint::load(path)?;
        let (_, like) = self.init_params();
        let params = checkpoint::restore_tree(path, "params", &like, &ck.tensors)?;
        Ok((params, ck.meta))
    }

    /// Mean loss and accuracy of `params` on the configured test split.
    pub fn evaluate(&self, params: &P) -> Result<(f64, f64), TrainError> {
        let test = open_data(&self.config, Split::Test)?;
        self.evaluate_on(params, test)
    }

    fn evaluate_on(&self, params: &P, test: Data) -> Result<(f64, f64), TrainError> {
        let loader =
            Loader::new(test, LoaderConfig::new(self.config.data.eval_batch_size as usize))?;
        let (mut loss, mut correct, mut n) = (0.0f64, 0.0f64, 0usize);
        for batch in loader.iter() {
            let (x, y) = batch_arrays(batch?)?;
            let b = y.shape()[0];
            let logits = (self.forward)(params, &x);
            loss += mean_loss(&logits, &y).item::<f32>() as f64 * b as f64;
            correct += correct_count(&logits, &y).item::<f32>() as f64;
            n += b;
        }
        let n = n.max(1) as f64;
        Ok((loss / n, correct / n))
    }

    /// Trains according to the config; see [`RunOptions`].
    pub fn run(&self, opts: &RunOptions) -> Result<Summary, TrainError> {
        let cfg = &self.config;
        let t0 = Instant::now();
        let train = open_data(cfg, Split::Train)?;
        let test = open_data(cfg, Split::Test)?;
        let bs = cfg.data.batch_size as usize;
        let mut lc =
            LoaderConfig::new(bs).drop_last(true).workers(cfg.data.workers as usize).repeat();
        if cfg.data.shuffle {
            lc = lc.shuffle(cfg.data.seed);
        }
        let loader = Loader::new(train, lc)?;
        let per_epoch = loader.batches_per_epoch() as u64;
        if per_epoch == 0 {
            return Err(TrainError::Data(format!(
                "data.batch_size {bs} is larger than the training set ({} examples)",
                loader.shard_len()
            )));
        }
        let total = if cfg.train.steps > 0 {
            cfg.train.steps as u64
        } else {
            cfg.train.epochs as u64 * per_epoch
        };
        let ckdir = cfg.checkpoint.dir.clone();
        let (mut key, mut params) = self.init_params();
        let mut opt_state = optimizer(&cfg.optimizer, cfg.optimizer.lr).init(&params);
        let mut loader_state: LoaderState = loader.initial_state();
        let mut step = 0u64;
        let warn = |m: String| eprintln!("{m}");
        let resumed = match &opts.resume {
            Resume::No => None,
            Resume::Auto => checkpoint::latest_valid(&ckdir, warn),
            Resume::Path(p) => Some((p.clone(), checkpoint::load(p)?)),
        };
        if let Some((path, ck)) = &resumed {
            params = checkpoint::restore_tree(path, "params", &params, &ck.tensors)?;
            opt_state = checkpoint::restore_tree(path, "opt_state", &opt_state, &ck.tensors)?;
            loader_state = LoaderState::from_json(&ck.meta.loader_state).map_err(|e| {
                TrainError::Checkpoint {
                    file: path.display().to_string(),
                    msg: format!("loader state: {e}"),
                }
            })?;
            key = Array::from_vec(ck.meta.rng_key.clone(), [ck.meta.rng_key.len()]);
            step = ck.meta.step;
        }
        let mut it = loader.iter_from(&loader_state)?;
        if let Some((path, _)) = resumed.as_ref().filter(|_| !opts.quiet) {
            eprintln!("resumed from {} at step {step}", path.display());
        }

        let mpath = cfg.logging.jsonl.clone();
        if let Some(dir) = mpath.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        }
        if resumed.is_some() {
            truncate_metrics(&mpath, step)?;
        } else {
            std::fs::write(&mpath, "").map_err(|e| TrainError::io(&mpath, e))?;
        }
        let mut mfile = std::fs::OpenOptions::new()
            .append(true)
            .open(&mpath)
            .map_err(|e| TrainError::io(&mpath, e))?;

        let show = !(opts.quiet || opts.json);
        let pb = if show { ProgressBar::new(total) } else { ProgressBar::hidden() };
        pb.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} step {pos}/{len} {msg} [{elapsed_precise} < ETA {eta_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.set_position(step);

        let start_step = step;
        let mut last_loss = f32::NAN;
        let mut last_ckpt = None;
        let (mut eval_loss, mut eval_acc) = (f64::NAN, f64::NAN);
        let stop = opts.stop_at_step.unwrap_or(u64::MAX).min(total);
        while step < stop {
            let st = Instant::now();
            let batch = match it.next() {
                Some(b) => b?,
                None => break,
            };
            let epoch = batch.epoch();
            let (x, y) = batch_arrays(batch)?;
            let lr = cfg.optimizer.schedule.lr_at(cfg.optimizer.lr, step, total);
            let opt = optimizer(&cfg.optimizer, lr);
            let (p2, s2, m) = train_step(&*self.forward, &opt, &params, opt_state, &x, &y);
            if !m.loss.is_finite() {
                return Err(TrainError::Numeric(format!(
                    "loss became {} at step {}; try a lower optimizer.lr",
                    m.loss,
                    step + 1
                )));
            }
            params = p2;
            opt_state = s2;
            step += 1;
            last_loss = m.loss;
            let dt = st.elapsed().as_secs_f64();
            let sps = bs as f64 / dt.max(1e-9);
            pb.set_position(step);
            pb.set_message(format!("epoch {} loss {:.4} {:.0} samples/s", epoch + 1, m.loss, sps));
            if step.is_multiple_of(cfg.train.log_every as u64) || step == total {
                json_line(
                    &mut mfile,
                    &mpath,
                    serde_json::json!({
                        "kind": "train", "step": step, "epoch": epoch, "loss": m.loss, "acc": m.acc,
                        "lr": lr, "grad_norm": m.grad_norm, "step_time_ms": dt * 1e3, "samples_per_sec": sps,
                    }),
                )?;
            }
            let epoch_end = step.is_multiple_of(per_epoch);
            let do_eval = if cfg.train.eval_every > 0 {
                step.is_multiple_of(cfg.train.eval_every as u64)
            } else {
                epoch_end
            };
            if do_eval || step == total {
                let (l, a) = self.evaluate_on(&params, test.clone())?;
                eval_loss = l;
                eval_acc = a;
                json_line(
                    &mut mfile,
                    &mpath,
                    serde_json::json!({"kind": "eval", "step": step, "epoch": epoch, "eval_loss": l, "eval_acc": a}),
                )?;
                pb.println(format!(
                    "step {step} epoch {}: eval loss {l:.4} acc {:.2}%",
                    epoch + 1,
                    a * 100.0
                ));
            }
            let do_ckpt = if cfg.checkpoint.every > 0 {
                step.is_multiple_of(cfg.checkpoint.every as u64)
            } else {
                epoch_end
            };
            if do_ckpt || step == total {
                let mut tensors = checkpoint::named_leaves("params", &params);
                tensors.extend(checkpoint::named_leaves("opt_state", &opt_state));
                let meta = CheckpointMeta {
                    step,
                    config: cfg.to_toml(),
                    rng_key: key.to_vec::<u32>(),
                    loader_state: it.state().to_json(),
                    kiln_version: env!("CARGO_PKG_VERSION").to_string(),
                    checksum: String::new(),
                };
                last_ckpt = Some(checkpoint::save(&ckdir, tensors, meta)?);
                checkpoint::prune(&ckdir, cfg.checkpoint.keep as usize)?;
            }
        }
        mfile.sync_all().map_err(|e| TrainError::io(&mpath, e))?;
        pb.finish_and_clear();
        Ok(Summary {
            steps: step,
            start_step,
            train_loss: last_loss,
            eval_loss,
            eval_acc,
            wall_secs: t0.elapsed().as_secs_f64(),
            checkpoint: last_ckpt,
            metrics: mpath,
        })
    }
}
