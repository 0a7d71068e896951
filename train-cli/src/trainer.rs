//! The training loop: [`Trainer`] trains any [`Model`] on a [`TaskData`] with one jitted
//! train step (forward, loss, gradient, optimizer update, parameters donated), a jitted
//! eval step, JSONL metrics, atomic (optionally background) checkpoints, exact resume and a
//! final checkpoint on SIGINT/SIGTERM.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use kiln::tree::{self, KeyPath};
use kiln::{Array, DType, Jit, Tree};
use kiln_data::{Dataset, Loader, LoaderConfig, LoaderState};
use serde::Serialize;

use crate::checkpoint::{self, CheckpointMeta};
use crate::config::{Config, OptimizerConfig};
use crate::data::{Task, TaskData, batch_arrays};
use crate::error::TrainError;
use crate::models::Model;
use crate::tensorboard::EventWriter;
use kiln_optim::{
    AdafactorOptions, AddDecayedWeights, ClipByBlockRms, ClipByGlobalNorm, Ema, Mask,
    ScaleByAdadelta, ScaleByAdam, ScaleByAmsgrad, ScaleByBelief, ScaleByFactoredRms, ScaleByLion,
    ScaleByParamBlockRms, ScaleByRms, ScaleByRss, ScaleByStddev, ScaleByTrustRatio, Trace,
    Transform, add_decayed_weights, clip_by_block_rms, clip_by_global_norm, ema, global_norm,
    scale_by_adadelta, scale_by_adam, scale_by_amsgrad, scale_by_belief, scale_by_factored_rms,
    scale_by_lion, scale_by_param_block_rms, scale_by_rms, scale_by_rss, scale_by_stddev,
    scale_by_trust_ratio, trace,
};

/// The update direction of `[optimizer] name`: at most one part is set (none for plain
/// SGD, LARS), two for Adafactor (its factored second moments, then block-RMS clipping).
/// A tuple of optional transforms, so its state is a tree whose unused parts are empty; it
/// checkpoints under `opt_state.1.<part>...` (`opt_state.1.0.mu...` for Adam).
pub type Direction = (
    Option<ScaleByAdam>,
    Option<ScaleByAmsgrad>,
    Option<ScaleByBelief>,
    Option<ScaleByLion>,
    Option<Trace>,
    Option<ScaleByRms>,
    Option<ScaleByRss>,
    Option<ScaleByAdadelta>,
    Option<ScaleByFactoredRms>,
    Option<ClipByBlockRms>,
    Option<ScaleByStddev>,
);

/// What follows the learning rate: Adafactor's parameter-scale, momentum (an EMA) and
/// weight decay, and the momentum of LARS and RMSProp (a trace of the lr-scaled updates,
/// as in Optax).
pub type AfterLr =
    (Option<ScaleByParamBlockRms>, Option<Trace>, Option<Ema>, Option<AddDecayedWeights>);

/// The trainer's optimizer, Optax's `chain(clip_by_global_norm, <direction>,
/// add_decayed_weights, scale_by_trust_ratio, scale_by_learning_rate, <after lr>)` with
/// the learning rate an input of the jitted step (so a schedule never retraces): see
/// [`optimizer_step`]. Every alias is the same chain with other parts set, so one state
/// type and one checkpoint layout serve every config.
pub type Optimizer = (
    Option<ClipByGlobalNorm>,
    Direction,
    Option<AddDecayedWeights>,
    Option<ScaleByTrustRatio>,
    AfterLr,
);

/// The state of [`Optimizer`] for parameters `P`.
pub type OptState<P> = <Optimizer as Transform>::State<P>;

/// The [`Optimizer`] of `[optimizer]` (names checked by [`Config::validate`]).
pub fn optimizer(cfg: &OptimizerConfig) -> Optimizer {
    let (b1, b2, eps) = (cfg.b1, cfg.b2, cfg.eps);
    let momentum = cfg.momentum.filter(|&m| m > 0.0);
    let mut dir: Direction = (None, None, None, None, None, None, None, None, None, None, None);
    let mut after: AfterLr = (None, None, None, None);
    let mut before_lr_decay = (cfg.weight_decay != 0.0).then(|| {
        let mask = (cfg.weight_decay_mask == "matrices")
            .then(|| Mask::new(|_: &KeyPath, leaf: &Array| leaf.ndim() >= 2));
        add_decayed_weights(cfg.weight_decay, mask)
    });
    let mut trust = None;
    match cfg.name.as_str() {
        "adam" | "adamw" => dir.0 = Some(scale_by_adam(b1, b2, eps, 0.0, false)),
        "lamb" => {
            dir.0 = Some(scale_by_adam(b1, b2, eps, 0.0, false));
            trust = Some(scale_by_trust_ratio(0.0, cfg.trust_coefficient.unwrap_or(1.0), 0.0));
        }
        "lars" => {
            trust = Some(scale_by_trust_ratio(0.0, cfg.trust_coefficient.unwrap_or(1e-3), 0.0));
            let m = cfg.momentum.unwrap_or(0.9);
            after.1 = (m > 0.0).then(|| trace(m, cfg.nesterov));
        }
        "nadam" => dir.0 = Some(scale_by_adam(b1, b2, eps, 0.0, true)),
        "amsgrad" => dir.1 = Some(scale_by_amsgrad(b1, b2, eps, 0.0)),
        "adabelief" => dir.2 = Some(scale_by_belief(b1, b2, eps, 1e-16, false)),
        "lion" => dir.3 = Some(scale_by_lion(b1, b2)),
        "rmsprop" if cfg.centered => {
            dir.10 = Some(scale_by_stddev(cfg.decay, eps, 0.0));
            after.1 = momentum.map(|m| trace(m, cfg.nesterov));
        }
        "rmsprop" => {
            dir.5 = Some(scale_by_rms(cfg.decay, eps, 0.0));
            after.1 = momentum.map(|m| trace(m, cfg.nesterov));
        }
        "adagrad" => dir.6 = Some(scale_by_rss(0.1, eps)),
        "adadelta" => dir.7 = Some(scale_by_adadelta(cfg.decay, eps)),
        "adafactor" => {
            let o = AdafactorOptions::default();
            dir.8 = Some(scale_by_factored_rms(
                o.factored,
                o.decay_rate,
                o.decay_offset,
                o.min_dim_size_to_factor,
                o.eps,
            ));
            dir.9 = o.clipping_threshold.map(clip_by_block_rms);
            after.0 = Some(scale_by_param_block_rms(1e-3));
            after.2 = momentum.map(|m| ema(m, false));
            after.3 = before_lr_decay.take();
        }
        _ => dir.4 = momentum.map(|m| trace(m, cfg.nesterov)),
    }
    (
        (cfg.clip_by_global_norm > 0.0).then(|| clip_by_global_norm(cfg.clip_by_global_norm)),
        dir,
        before_lr_decay,
        trust,
        after,
    )
}

/// One optimizer step: the chain of [`Optimizer`] with the update multiplied by `lr` (a
/// scalar array) between its trust ratio and its after-lr parts, then subtracted from the
/// parameters. Returns the new parameters and state.
pub fn optimizer_step<P: Tree>(
    opt: &Optimizer,
    grads: P,
    state: OptState<P>,
    params: &P,
    lr: &Array,
) -> (P, OptState<P>) {
    let (clip, dir, decay, trust, after) = opt;
    let (s0, s1, s2, s3, s4) = state;
    let (u, s0) = clip.update(grads, s0, params);
    let (u, s1) = dir.update(u, s1, params);
    let (u, s2) = decay.update(u, s2, params);
    let (u, s3) = trust.update(u, s3, params);
    let u = tree::map(&u, |x| x * lr);
    let (u, s4) = after.update(u, s4, params);
    (tree::zip_map(params, &u, |p, u| p - u), (s0, s1, s2, s3, s4))
}

/// Number of positions whose argmax equals the integer label (an `f32` scalar).
fn correct_count(logits: &Array, labels: &Array) -> Array {
    let pred = logits.argmax(-1);
    pred.eq(labels.astype(pred.dtype())).astype(DType::F32).sum()
}

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
    /// Set to stop the run early: the loop saves a checkpoint and returns (the CLI sets
    /// it on SIGINT/SIGTERM).
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// Metrics of one training step.
#[derive(Clone, Debug)]
pub struct StepMetrics {
    /// Mean loss of the batch.
    pub loss: f32,
    /// Accuracy on the batch (per token for language models).
    pub acc: f32,
    /// Global gradient norm (before clipping).
    pub grad_norm: f64,
}

/// Held-out metrics.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct EvalMetrics {
    /// Mean loss (nats per token for language models).
    pub loss: f64,
    /// Accuracy (per token for language models).
    pub acc: f64,
}

/// The result of [`Trainer::run`].
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Steps completed.
    pub steps: u64,
    /// Step this run started at (non-zero after resume).
    pub start_step: u64,
    /// Whether the run stopped early on an interrupt.
    pub interrupted: bool,
    /// Last training loss.
    pub train_loss: f32,
    /// Final held-out loss.
    pub eval_loss: f64,
    /// Final held-out accuracy.
    pub eval_acc: f64,
    /// Wall time of this run in seconds.
    pub wall_secs: f64,
    /// Mean training throughput of this run (samples/s, or tokens/s for language models).
    pub throughput: f64,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
    /// The metrics file.
    pub metrics: PathBuf,
    /// Text sampled at the end (language models with `[sample] tokens > 0`).
    pub sample: Option<String>,
}

/// An initialiser: PRNG key to parameters.
pub type Init<M> = Arc<dyn Fn(&Array) -> M + Send + Sync>;

/// Parameters, model state and optimizer state.
pub struct TrainState<M: Model> {
    /// The parameters.
    pub params: M,
    /// The model state (BatchNorm statistics).
    pub model_state: M::State,
    /// The optimizer state.
    pub opt_state: OptState<M>,
}

type StepIn<M> = (M, <M as Model>::State, OptState<M>, (Array, Array), (Array, Array));
type StepOut<M> = (M, <M as Model>::State, OptState<M>, (Array, Array, Array));
type EvalIn<M> = (M, <M as Model>::State, (Array, Array));

/// The jitted train step: `(params, model_state, opt_state, (x, y), (lr, key)) ->
/// (params, model_state, opt_state, (loss, correct, grad_norm))`.
///
/// With `accumulate = k > 1`, `x` and `y` hold `k` micro-batches stacked on a new leading
/// axis: their gradients are averaged (the model state threads through them in order)
/// before one optimizer update, and the micro-batches' activations are freed one after
/// the other by the compiled buffer plan.
fn train_step<M: Model>(
    opt: Optimizer,
    accumulate: usize,
    bf16: bool,
) -> Jit<StepIn<M>, StepOut<M>> {
    Jit::new(move |(params, state, opt_state, (x, y), (lr, key)): &StepIn<M>| {
        let micro = |state: &M::State, x: &Array, y: &Array, key: &Array| {
            kiln::value_and_grad_with_aux(|p: &M| {
                let (logits, st) = apply_in(p, state, x, Some(key), bf16);
                let st = tree::map(&st, |a| a.stop_gradient());
                (p.loss(&logits, y), (correct_count(&logits, y).stop_gradient(), st))
            })(params)
        };
        let ((loss, (correct, new_state)), grads) = if accumulate == 1 {
            micro(state, x, y, key)
        } else {
            let pick = |a: &Array, i: usize| {
                let shape = a.shape()[1..].to_vec();
                a.slice_axis(0, i as isize, i as isize + 1, 1).reshape(shape)
            };
            let mut st = state.clone();
            let mut acc: Option<(Array, Array, M)> = None;
            for i in 0..accumulate {
                let k = kiln::random::fold_in(key, i as u32);
                let ((l, (c, s)), g) = micro(&st, &pick(x, i), &pick(y, i), &k);
                st = s;
                acc = Some(match acc {
                    None => (l, c, g),
                    Some((l0, c0, g0)) => (l0 + l, c0 + c, tree::zip_map(&g0, &g, |a, b| a + b)),
                });
            }
            let (l, c, g) = acc.expect("accumulate >= 1");
            let n = accumulate as f64;
            ((l / n, (c, st)), tree::map(&g, |a| a / n))
        };
        let norm = global_norm(&grads);
        let (params, opt_state) = optimizer_step(&opt, grads, opt_state.clone(), params, lr);
        (params, new_state, opt_state, (loss, correct, norm))
    })
    .named("train_step")
}

/// `M::apply`, in `bf16` when asked (mixed precision): float parameters, state and inputs
/// are cast to `bf16` for the forward pass, the logits and the new state back to `f32`,
/// so the master weights, the loss, the gradients and the optimizer stay in `f32`.
fn apply_in<M: Model>(
    params: &M,
    state: &M::State,
    x: &Array,
    key: Option<&Array>,
    bf16: bool,
) -> (Array, M::State) {
    if !bf16 {
        return params.apply(state, x, key);
    }
    let cast = |a: &Array, from: DType, to: DType| {
        if a.dtype() == from { a.astype(to) } else { a.clone() }
    };
    let down = |a: &Array| cast(a, DType::F32, DType::BF16);
    let (logits, st) = tree::map(params, down).apply(&tree::map(state, down), &down(x), key);
    let up = |a: &Array| cast(a, DType::BF16, DType::F32);
    (up(&logits), tree::map(&st, up))
}

/// The jitted eval step: summed loss and correct count of a batch.
fn eval_step<M: Model>(bf16: bool) -> Jit<EvalIn<M>, (Array, Array)> {
    Jit::new(move |(params, state, (x, y)): &EvalIn<M>| {
        let (logits, _) = apply_in(params, state, x, None, bf16);
        let n = y.size() as f64;
        (params.loss(&logits, y) * n, correct_count(&logits, y))
    })
    .named("eval_step")
}

/// Where metric records go: the JSONL file and, with `[logging] tensorboard`, an event
/// file (each numeric field but `step`/`epoch` as the scalar `<kind>/<field>`, the `eval_`
/// prefix dropped: `train/loss`, `eval/loss`, `eval/bpc`).
struct MetricsSink {
    file: std::fs::File,
    path: PathBuf,
    tensorboard: Option<EventWriter>,
}

impl MetricsSink {
    fn record(&mut self, v: serde_json::Value) -> Result<(), TrainError> {
        // One write per record, so a reader tailing the file never sees half a line
        // (`writeln!` on a `File` may issue a write per formatted piece).
        self.file
            .write_all(format!("{v}\n").as_bytes())
            .map_err(|e| TrainError::io(&self.path, e))?;
        if let Some(tb) = &mut self.tensorboard {
            let kind = v["kind"].as_str().unwrap_or("train");
            let step = v["step"].as_u64().unwrap_or(0);
            for (k, x) in v.as_object().into_iter().flatten() {
                if let (false, Some(x)) =
                    (["kind", "step", "epoch"].contains(&k.as_str()), x.as_f64())
                {
                    tb.scalar(
                        &format!("{kind}/{}", k.strip_prefix("eval_").unwrap_or(k)),
                        step,
                        x,
                    )?;
                }
            }
            tb.flush()?;
        }
        Ok(())
    }
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

/// Checkpoints written on a background thread, one at a time.
struct Saver {
    dir: PathBuf,
    keep: usize,
    background: bool,
    pending: Option<std::thread::JoinHandle<Result<PathBuf, TrainError>>>,
    last: Option<PathBuf>,
}

impl Saver {
    /// Waits for the save in flight, if any.
    fn wait(&mut self) -> Result<(), TrainError> {
        if let Some(h) = self.pending.take() {
            let p = h.join().map_err(|_| TrainError::Checkpoint {
                file: self.dir.display().to_string(),
                msg: "the background save thread panicked".into(),
            })??;
            self.last = Some(p);
        }
        Ok(())
    }

    /// Saves a checkpoint (and copies it to `best.safetensors` when `best`).
    fn save(
        &mut self,
        tensors: Vec<(String, Array)>,
        meta: CheckpointMeta,
        best: bool,
    ) -> Result<(), TrainError> {
        self.wait()?;
        let (dir, keep) = (self.dir.clone(), self.keep);
        let job = move || {
            let p = checkpoint::save(&dir, tensors, meta)?;
            if best {
                checkpoint::mark_best(&dir, &p)?;
            }
            checkpoint::prune(&dir, keep)?;
            Ok(p)
        };
        if self.background {
            self.pending = Some(std::thread::spawn(job));
        } else {
            self.last = Some(job()?);
        }
        Ok(())
    }
}

/// A trainer for a [`Model`] `M`.
pub struct Trainer<M: Model> {
    /// The configuration (`[model]` is used only by the initialiser).
    pub config: Config,
    /// The data.
    pub data: TaskData,
    init: Init<M>,
}

impl<M: Model> Trainer<M> {
    /// A trainer for parameters made by `init` (from a PRNG key).
    pub fn new(
        config: Config,
        data: TaskData,
        init: impl Fn(&Array) -> M + Send + Sync + 'static,
    ) -> Trainer<M> {
        Trainer { config, data, init: Arc::new(init) }
    }

    /// Initial parameters: from `[model] init_from` if set, else random from `[train].seed`.
    pub fn init_params(&self) -> Result<(Array, M), TrainError> {
        let key = kiln::random::key(self.config.train.seed);
        let p = (self.init)(&key);
        match &self.config.model.init_from {
            None => Ok((key, p)),
            Some(path) => {
                let tensors = checkpoint::read_tensors(path)?;
                let prefix =
                    if tensors.keys().any(|k| k.starts_with("params.")) { "params" } else { "" };
                Ok((key, checkpoint::restore_tree(path, prefix, &p, &tensors)?))
            }
        }
    }

    /// Fresh parameters, model state and optimizer state.
    pub fn init_state(&self) -> Result<(Array, TrainState<M>), TrainError> {
        let (key, params) = self.init_params()?;
        let model_state = params.init_state();
        let opt_state = optimizer(&self.config.optimizer).init(&params);
        Ok((key, TrainState { params, model_state, opt_state }))
    }

    /// Loads parameters and model state from a checkpoint, checking they fit the model.
    pub fn load(&self, path: &Path) -> Result<(M, M::State, CheckpointMeta), TrainError> {
        let ck = checkpoint::load(path)?;
        let like = (self.init)(&kiln::random::key(0));
        let params = checkpoint::restore_tree(path, "params", &like, &ck.tensors)?;
        let state = checkpoint::restore_tree(path, "model_state", &like.init_state(), &ck.tensors)?;
        Ok((params, state, ck.meta))
    }

    /// Held-out loss and accuracy of `params` on the test split.
    pub fn evaluate(&self, params: &M, state: &M::State) -> Result<EvalMetrics, TrainError> {
        self.evaluate_with(&eval_step::<M>(self.config.train.precision == "bf16"), params, state)
    }

    fn evaluate_with(
        &self,
        step: &Jit<EvalIn<M>, (Array, Array)>,
        params: &M,
        state: &M::State,
    ) -> Result<EvalMetrics, TrainError> {
        let bs = self.config.data.eval_batch_size as usize;
        let loader = Loader::new(self.data.test.clone(), LoaderConfig::new(bs))?;
        let (mut loss, mut correct, mut n) = (0.0f64, 0.0f64, 0usize);
        for batch in loader.iter() {
            let (x, y) = batch_arrays(&self.data.task, batch?)?;
            let count = y.size();
            let (l, c) = step.call(&(params.clone(), state.clone(), (x, y)));
            loss += l.item::<f32>() as f64;
            correct += c.item::<f32>() as f64;
            n += count;
        }
        let n = n.max(1) as f64;
        Ok(EvalMetrics { loss: loss / n, acc: correct / n })
    }

    /// Checkpoint metadata; `best` is the best score so far (lower is better: the loss, or
    /// minus the accuracy with `best_metric = "eval_acc"`).
    fn meta(&self, step: u64, key: &Array, loader: &LoaderState, best: f64) -> CheckpointMeta {
        let by_acc = self.config.checkpoint.best_metric == "eval_acc";
        let best = best.is_finite().then_some(best);
        CheckpointMeta {
            best_eval_loss: best.filter(|_| !by_acc),
            best_eval_acc: best.filter(|_| by_acc).map(|b| -b),
            step,
            config: self.config.to_toml(),
            rng_key: key.to_vec::<u32>(),
            loader_state: loader.to_json(),
            kiln_version: env!("CARGO_PKG_VERSION").to_string(),
            checksum: String::new(),
        }
    }

    /// Trains according to the config; see [`RunOptions`].
    pub fn run(&self, opts: &RunOptions) -> Result<Summary, TrainError> {
        let cfg = &self.config;
        let t0 = Instant::now();
        let bs = cfg.data.batch_size as usize;
        let mut lc =
            LoaderConfig::new(bs).drop_last(true).workers(cfg.data.workers as usize).repeat();
        if cfg.data.shuffle {
            lc = lc.shuffle(cfg.data.seed);
        }
        let loader = Loader::new(self.data.train.clone(), lc)?;
        let accumulate = cfg.optimizer.accumulate.max(1) as usize;
        // Optimizer steps per epoch (each takes `accumulate` batches).
        let per_epoch = (loader.batches_per_epoch() / accumulate) as u64;
        if per_epoch == 0 {
            return Err(TrainError::Data(format!(
                "data.batch_size {bs} x optimizer.accumulate {accumulate} is larger than the \
                 training set ({} examples)",
                self.data.train.len()
            )));
        }
        let total = if cfg.train.steps > 0 {
            cfg.train.steps as u64
        } else {
            cfg.train.epochs as u64 * per_epoch
        };
        let (mut key, mut st) = self.init_state()?;
        let mut loader_state: LoaderState = loader.initial_state();
        let mut step = 0u64;
        let mut best = f64::INFINITY;
        let warn = |m: String| eprintln!("{m}");
        let ckdir = cfg.checkpoint.dir.clone();
        let resumed = match &opts.resume {
            Resume::No => None,
            Resume::Auto => checkpoint::latest_valid(&ckdir, warn),
            Resume::Path(p) => Some((p.clone(), checkpoint::load(p)?)),
        };
        if let Some((path, ck)) = &resumed {
            let t = &ck.tensors;
            st.params = checkpoint::restore_tree(path, "params", &st.params, t)?;
            st.model_state = checkpoint::restore_tree(path, "model_state", &st.model_state, t)?;
            st.opt_state = checkpoint::restore_tree(path, "opt_state", &st.opt_state, t)?;
            loader_state = LoaderState::from_json(&ck.meta.loader_state).map_err(|e| {
                TrainError::Checkpoint {
                    file: path.display().to_string(),
                    msg: format!("loader state: {e}"),
                }
            })?;
            key = Array::from_vec(ck.meta.rng_key.clone(), [ck.meta.rng_key.len()]);
            step = ck.meta.step;
            best = if cfg.checkpoint.best_metric == "eval_acc" {
                ck.meta.best_eval_acc.map_or(f64::INFINITY, |a| -a)
            } else {
                ck.meta.best_eval_loss.unwrap_or(f64::INFINITY)
            };
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
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&mpath)
            .map_err(|e| TrainError::io(&mpath, e))?;
        let tensorboard =
            cfg.logging.tensorboard.as_deref().map(EventWriter::create).transpose()?;
        let mut metrics = MetricsSink { file, path: mpath.clone(), tensorboard };

        let show = !(opts.quiet || opts.json);
        let pb = if show { ProgressBar::new(total) } else { ProgressBar::hidden() };
        pb.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} step {pos}/{len} {msg} [{elapsed_precise} < ETA {eta_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.set_position(step);

        let lm = self.data.task.is_language();
        let unit = if lm { "tokens/s" } else { "samples/s" };
        let bf16 = cfg.train.precision == "bf16";
        let train = train_step::<M>(optimizer(&cfg.optimizer), accumulate, bf16);
        let eval = eval_step::<M>(bf16);
        let mut saver = Saver {
            dir: ckdir,
            keep: cfg.checkpoint.keep as usize,
            background: cfg.checkpoint.async_save,
            pending: None,
            last: None,
        };
        let start_step = step;
        let mut last_loss = f32::NAN;
        let mut ev = EvalMetrics { loss: f64::NAN, acc: f64::NAN };
        let stop = opts.stop_at_step.unwrap_or(u64::MAX).min(total);
        let interrupted = || opts.interrupt.as_ref().is_some_and(|f| f.load(Ordering::SeqCst));
        let (mut seen, mut train_secs) = (0usize, 0.0f64);
        let mut state = Some(st);
        while step < stop && !interrupted() {
            let t_step = Instant::now();
            let (mut xs, mut ys, mut epoch) = (Vec::new(), Vec::new(), 0);
            for batch in it.by_ref().take(accumulate) {
                let batch = batch?;
                epoch = batch.epoch();
                let (x, y) = batch_arrays(&self.data.task, batch)?;
                xs.push(x);
                ys.push(y);
            }
            if xs.len() < accumulate {
                break;
            }
            let (x, y) = if accumulate == 1 {
                (xs.pop().expect("one batch"), ys.pop().expect("one batch"))
            } else {
                (kiln::stack(&xs, 0), kiln::stack(&ys, 0))
            };
            let items = if lm { y.size() } else { y.shape()[0] * accumulate };
            let lr = cfg.optimizer.schedule.lr_at(cfg.optimizer.lr, step, total);
            let step_key = kiln::random::fold_in(&key, step as u32);
            let TrainState { params, model_state, opt_state } =
                state.take().expect("state is put back every step");
            let (params, model_state, opt_state, (loss, correct, norm)) = train.call_donated((
                params,
                model_state,
                opt_state,
                (x, y),
                (Array::scalar_of(lr, DType::F32), step_key),
            ));
            state = Some(TrainState { params, model_state, opt_state });
            let m = StepMetrics {
                loss: loss.item::<f32>(),
                acc: correct.item::<f32>() / items.max(1) as f32,
                grad_norm: norm.item::<f32>() as f64,
            };
            if !m.loss.is_finite() {
                return Err(TrainError::Numeric(format!(
                    "loss became {} at step {}; try a lower optimizer.lr",
                    m.loss,
                    step + 1
                )));
            }
            step += 1;
            last_loss = m.loss;
            let dt = t_step.elapsed().as_secs_f64();
            if step > start_step + 1 {
                // The first step of a run includes compilation.
                seen += items;
                train_secs += dt;
            }
            let rate = items as f64 / dt.max(1e-9);
            pb.set_position(step);
            pb.set_message(format!("epoch {} loss {:.4} {rate:.0} {unit}", epoch + 1, m.loss));
            if step.is_multiple_of(cfg.train.log_every as u64) || step == total {
                metrics.record(
                    serde_json::json!({
                        "kind": "train", "step": step, "epoch": epoch, "loss": m.loss, "acc": m.acc,
                        "lr": lr, "grad_norm": m.grad_norm, "step_time_ms": dt * 1e3, unit.replace("/s", "_per_sec"): rate,
                    }),
                )?;
            }
            let st = state.as_ref().expect("state was just put back");
            let epoch_end = step.is_multiple_of(per_epoch);
            let do_eval = if cfg.train.eval_every > 0 {
                step.is_multiple_of(cfg.train.eval_every as u64)
            } else {
                epoch_end
            };
            let mut improved = false;
            if do_eval || step == total {
                ev = self.evaluate_with(&eval, &st.params, &st.model_state)?;
                let score =
                    if cfg.checkpoint.best_metric == "eval_acc" { -ev.acc } else { ev.loss };
                if cfg.checkpoint.keep_best && score < best {
                    best = score;
                    improved = true;
                }
                let mut rec = serde_json::json!({"kind": "eval", "step": step, "epoch": epoch, "eval_loss": ev.loss, "eval_acc": ev.acc});
                let line = if lm {
                    rec["eval_bpc"] = (ev.loss / std::f64::consts::LN_2).into();
                    format!(
                        "step {step}: val loss {:.4} nats/char ({:.3} bits/char)",
                        ev.loss,
                        ev.loss / std::f64::consts::LN_2
                    )
                } else {
                    format!(
                        "step {step} epoch {}: eval loss {:.4} acc {:.2}%",
                        epoch + 1,
                        ev.loss,
                        ev.acc * 100.0
                    )
                };
                metrics.record(rec)?;
                pb.println(line);
            }
            let do_ckpt = if cfg.checkpoint.every > 0 {
                step.is_multiple_of(cfg.checkpoint.every as u64)
            } else {
                epoch_end
            };
            if do_ckpt || step == total || interrupted() || improved {
                let meta = self.meta(step, &key, &it.state(), best);
                saver.save(self.tensors(st), meta, improved)?;
            }
        }
        let st = state.expect("state is put back every step");
        saver.wait()?;
        metrics.file.sync_all().map_err(|e| TrainError::io(&mpath, e))?;
        pb.finish_and_clear();
        let sample = match &self.data.task {
            Task::Language { vocab, .. } if cfg.sample.tokens > 0 && !interrupted() => {
                Some(self.sample_text(
                    &st.params,
                    vocab,
                    &cfg.sample.prompt,
                    cfg.sample.tokens as usize,
                )?)
            }
            _ => None,
        };
        Ok(Summary {
            steps: step,
            start_step,
            interrupted: interrupted(),
            train_loss: last_loss,
            eval_loss: ev.loss,
            eval_acc: ev.acc,
            wall_secs: t0.elapsed().as_secs_f64(),
            throughput: seen as f64 / train_secs.max(1e-9),
            checkpoint: saver.last,
            metrics: mpath,
            sample,
        })
    }

    fn tensors(&self, st: &TrainState<M>) -> Vec<(String, Array)> {
        let mut t = checkpoint::named_leaves("params", &st.params);
        t.extend(checkpoint::named_leaves("model_state", &st.model_state));
        t.extend(checkpoint::named_leaves("opt_state", &st.opt_state));
        t
    }

    /// Text generated by a language model from `prompt` with `[sample]`'s temperature and
    /// seed (an error for other tasks or prompts with characters outside the vocabulary).
    pub fn sample_text(
        &self,
        params: &M,
        vocab: &kiln_data::Vocab,
        prompt: &str,
        tokens: usize,
    ) -> Result<String, TrainError> {
        let ids: Vec<i32> = vocab
            .encode(prompt)
            .map_err(|e| TrainError::Data(format!("sample.prompt: {e}")))?
            .into_iter()
            .map(|t| t as i32)
            .collect();
        if ids.is_empty() {
            return Err(TrainError::Data("sample.prompt: must not be empty".into()));
        }
        let s = &self.config.sample;
        let key = kiln::random::key(s.seed);
        let out = params.generate(&ids, tokens, s.temperature, &key).ok_or_else(|| {
            TrainError::Data(
                "sampling needs a language model (model.name = \"transformer\")".into(),
            )
        })?;
        let out: Vec<u32> = out.into_iter().map(|t| t as u32).collect();
        let text = vocab.decode(&out).map_err(|e| TrainError::Data(format!("sample: {e}")))?;
        Ok(format!("{prompt}{text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_optim::{Schedule, adafactor, adam, lamb, lars, rmsprop, rmsprop_centered, sgd};

    /// Parameters with a factored (>= 128 x 128) matrix, a small matrix and a vector.
    fn params() -> Vec<Array> {
        let key = kiln::random::key(3);
        let k = kiln::random::split_n(&key, 3);
        vec![
            kiln::random::normal(&k[0], &[130, 140], DType::F32),
            kiln::random::normal(&k[1], &[4, 3], DType::F32),
            kiln::random::normal(&k[2], &[5], DType::F32) * 0.1,
        ]
    }

    fn grads(step: u32) -> Vec<Array> {
        let key = kiln::random::fold_in(&kiln::random::key(11), step);
        params()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let k = kiln::random::fold_in(&key, i as u32);
                kiln::random::normal(&k, p.shape(), DType::F32)
            })
            .collect()
    }

    /// Four steps of the trainer's chain for `cfg` equal four steps of `reference` (an
    /// Optax-style alias with the same learning rate) followed by `apply_updates`.
    fn assert_matches<T: Transform>(cfg: OptimizerConfig, reference: T) {
        let opt = optimizer(&cfg);
        let lr = Array::scalar(cfg.lr as f32);
        let (mut p, mut s) = (params(), opt.init(&params()));
        let (mut q, mut r) = (params(), reference.init(&params()));
        for step in 0..4 {
            (p, s) = optimizer_step(&opt, grads(step), s, &p, &lr);
            let (u, r2) = reference.update(grads(step), r, &q);
            r = r2;
            q = kiln_optim::apply_updates(&q, &u);
        }
        for (a, b) in p.iter().zip(&q) {
            let (a, b) = (a.to_vec::<f32>(), b.to_vec::<f32>());
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{}: {x} vs {y}", cfg.name);
            }
        }
    }

    fn cfg(name: &str, lr: f64) -> OptimizerConfig {
        OptimizerConfig { name: name.into(), lr, ..Default::default() }
    }

    #[test]
    fn the_trainer_chain_equals_the_kiln_optim_aliases() {
        let lr = Schedule::from(0.01);
        assert_matches(cfg("adam", 0.01), adam(lr.clone(), 0.9, 0.999, 1e-8));
        let sgd_m = OptimizerConfig { momentum: Some(0.9), nesterov: true, ..cfg("sgd", 0.01) };
        assert_matches(sgd_m, sgd(lr.clone(), Some(0.9), true));
        let rms = OptimizerConfig { momentum: Some(0.5), eps: 1e-8, ..cfg("rmsprop", 0.01) };
        assert_matches(rms, rmsprop(lr.clone(), 0.9, 1e-8, Some(0.5), false));
        let centered = OptimizerConfig { centered: true, ..cfg("rmsprop", 0.01) };
        assert_matches(centered, rmsprop_centered(lr.clone(), 0.9, 1e-8, None, false));
        let lamb_cfg = OptimizerConfig { weight_decay: 0.01, eps: 1e-6, ..cfg("lamb", 0.01) };
        assert_matches(lamb_cfg, lamb(lr.clone(), 0.9, 0.999, 1e-6, 0.01, None));
        let lars_cfg = OptimizerConfig { weight_decay: 1e-4, ..cfg("lars", 0.01) };
        assert_matches(lars_cfg, lars(lr.clone(), 1e-4, None, 1e-3, 0.0, 0.9, false));
        assert_matches(cfg("adafactor", 0.01), adafactor(lr.clone(), AdafactorOptions::default()));
        let af =
            OptimizerConfig { momentum: Some(0.9), weight_decay: 1e-3, ..cfg("adafactor", 0.01) };
        let o = AdafactorOptions {
            momentum: Some(0.9),
            weight_decay_rate: Some(1e-3),
            ..AdafactorOptions::default()
        };
        assert_matches(af, adafactor(lr, o));
    }
}
