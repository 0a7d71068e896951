//! `train-cli`: config-driven training for kiln.

/// mimalloc keeps freed activation buffers for reuse; glibc hands the memory of rayon's
/// pool threads back to the OS and faults it in again each step (measured on the
/// transformer step: 73-101k page faults per run with glibc, 13-36k with mimalloc), and
/// with its purge delay raised by `kiln_train::alloc::keep_freed_memory` (first thing in
/// `main`) it keeps them committed between steps (3 faults per run).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use clap::{Parser, Subcommand};
use kiln_train::{Builtin, Resume, RunOptions, TrainError, checkpoint, config};

#[derive(Parser)]
#[command(name = "train-cli", version, about = "Config-driven trainer for kiln")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train from a TOML config.
    Run {
        /// The config file.
        config: PathBuf,
        /// Override a config value: `--set optimizer.lr=0.01` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Resume: `auto` (newest valid checkpoint in [checkpoint].dir) or a checkpoint path.
        #[arg(long)]
        resume: Option<String>,
        /// No progress bar and no summary.
        #[arg(long)]
        quiet: bool,
        /// Print the summary as one JSON line.
        #[arg(long)]
        json: bool,
        /// Stop after this step, as if interrupted (for testing resume).
        #[arg(long, value_name = "STEP")]
        stop_at_step: Option<u64>,
    },
    /// Check a config (and that its data exists) without training.
    Validate {
        /// The config file.
        config: PathBuf,
        /// Override a config value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Show a checkpoint's metadata and tensors, verifying its checksum.
    Inspect {
        /// The checkpoint file.
        checkpoint: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a checkpoint on the test split of a config's data.
    Eval {
        /// The config file.
        config: PathBuf,
        /// The checkpoint file.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Override a config value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Generate text from a language-model checkpoint (the config is read from it).
    Sample {
        /// The checkpoint file.
        checkpoint: PathBuf,
        /// The prompt (default: `[sample] prompt` of the checkpoint's config).
        #[arg(long)]
        prompt: Option<String>,
        /// Tokens to generate (default: `[sample] tokens`).
        #[arg(long)]
        tokens: Option<usize>,
        /// Softmax temperature, 0 = greedy (default: `[sample] temperature`).
        #[arg(long)]
        temperature: Option<f64>,
        /// Sampling seed (default: `[sample] seed`).
        #[arg(long)]
        seed: Option<i64>,
        /// Override a value of the stored config, e.g. `data.path=...` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Plot a metrics JSONL file to a PNG (loss left, accuracy right; blue train, red eval).
    Plot {
        /// The metrics file.
        metrics: PathBuf,
        /// Output PNG.
        #[arg(short, long, default_value = "curves.png")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    kiln_train::alloc::keep_freed_memory();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<TrainError>() {
                Some(te) => eprintln!("error: {te}"),
                None => eprintln!("error: {e}"),
            }
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Run { config, set, resume, quiet, json, stop_at_step } => {
            let cfg = config::load(&config, &set)?;
            let resume = match resume.as_deref() {
                None => Resume::No,
                Some("auto") => Resume::Auto,
                Some(p) => Resume::Path(PathBuf::from(p)),
            };
            let trainer = Builtin::new(cfg)?;
            let interrupt = Arc::new(AtomicBool::new(false));
            let flag = interrupt.clone();
            // A second signal while the final checkpoint is written kills the process.
            ctrlc::set_handler(move || {
                if flag.swap(true, Ordering::SeqCst) {
                    std::process::exit(130);
                }
            })?;
            let opts = RunOptions { resume, quiet, json, stop_at_step, interrupt: Some(interrupt) };
            let s = trainer.run(&opts)?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else if !quiet {
                let lm = trainer.data().task.is_language();
                if s.interrupted {
                    println!("interrupted at step {}; resume with --resume auto", s.steps);
                }
                let unit = if lm { "tokens/s" } else { "samples/s" };
                println!(
                    "done: {} steps ({} this run) in {:.1}s ({:.0} {unit}); train loss {:.4}",
                    s.steps,
                    s.steps - s.start_step,
                    s.wall_secs,
                    s.throughput,
                    s.train_loss,
                );
                if lm {
                    println!(
                        "validation loss {:.4} nats/char ({:.3} bits/char, perplexity {:.2}), accuracy {:.2}%",
                        s.eval_loss,
                        s.eval_loss / std::f64::consts::LN_2,
                        s.eval_loss.exp(),
                        s.eval_acc * 100.0
                    );
                } else {
                    println!(
                        "test loss {:.4}, test accuracy {:.2}%",
                        s.eval_loss,
                        s.eval_acc * 100.0
                    );
                }
                if let Some(c) = &s.checkpoint {
                    println!("checkpoint: {}", c.display());
                }
                println!("metrics: {}", s.metrics.display());
                if let Some(text) = &s.sample {
                    println!("sample:\n{text}");
                }
            }
            if s.interrupted {
                // The conventional status of a process stopped by SIGINT.
                std::process::exit(130);
            }
        }
        Cmd::Validate { config, set } => {
            let cfg = config::load(&config, &set)?;
            let b = Builtin::new(cfg)?;
            let d = b.data();
            println!(
                "{}: ok (model {}, data {}: {} train / {} test examples)",
                config.display(),
                b.config().model.name,
                b.config().data.name,
                d.train.len(),
                d.test.len()
            );
            println!("{}", b.summary()?.trim_end());
        }
        Cmd::Inspect { checkpoint: path, json } => {
            let ck = checkpoint::load(&path)?;
            if json {
                let tensors: Vec<_> = ck
                    .tensors
                    .iter()
                    .map(|(n, a)| serde_json::json!({"name": n, "dtype": format!("{:?}", a.dtype()), "shape": a.shape()}))
                    .collect();
                println!("{}", serde_json::json!({"meta": ck.meta, "tensors": tensors}));
            } else {
                let m = &ck.meta;
                println!("{}: checksum {} ok", path.display(), m.checksum);
                println!("step: {}", m.step);
                println!("kiln version: {}", m.kiln_version);
                println!("rng key: {:?}", m.rng_key);
                println!("loader state: {}", m.loader_state);
                let n: usize = ck.tensors.values().map(|a| a.size()).sum();
                println!("tensors ({}, {n} values):", ck.tensors.len());
                for (name, a) in &ck.tensors {
                    println!("  {name:<40} {:?} {:?}", a.dtype(), a.shape());
                }
                println!("config:\n{}", m.config.trim_end());
            }
        }
        Cmd::Eval { config, checkpoint: path, set, json } => {
            let cfg = config::load(&config, &set)?;
            let step = checkpoint::load(&path)?.meta.step;
            let m = Builtin::new(cfg)?.evaluate_checkpoint(&path)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"step": step, "eval_loss": m.loss, "eval_acc": m.acc})
                );
            } else {
                println!(
                    "step {step}: test loss {:.4}, test accuracy {:.2}%",
                    m.loss,
                    m.acc * 100.0
                );
            }
        }
        Cmd::Sample { checkpoint: path, prompt, tokens, temperature, seed, set } => {
            let meta = checkpoint::load(&path)?.meta;
            let mut cfg = config::from_str(&meta.config, &path.display().to_string(), &set)?;
            if let Some(t) = temperature {
                cfg.sample.temperature = t;
            }
            if let Some(s) = seed {
                cfg.sample.seed = s;
            }
            let prompt = prompt.unwrap_or_else(|| cfg.sample.prompt.clone());
            let tokens = tokens.unwrap_or(cfg.sample.tokens as usize);
            let text = Builtin::new(cfg)?.sample_checkpoint(&path, &prompt, tokens)?;
            println!("{text}");
        }
        Cmd::Plot { metrics, out } => plot(&metrics, &out)?,
    }
    Ok(())
}

#[cfg(feature = "plot")]
fn plot(metrics: &std::path::Path, out: &std::path::Path) -> Result<()> {
    kiln_train::plot::plot(metrics, out)?;
    println!("wrote {}", out.display());
    Ok(())
}

#[cfg(not(feature = "plot"))]
fn plot(_: &std::path::Path, _: &std::path::Path) -> Result<()> {
    anyhow::bail!("this train-cli was built without the `plot` feature")
}
