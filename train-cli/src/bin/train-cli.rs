//! `train-cli`: config-driven training for kiln.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use kiln_train::{Resume, RunOptions, TrainError, builtin_trainer, checkpoint, config};

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
            let trainer = builtin_trainer(cfg);
            let s = trainer.run(&RunOptions { resume, quiet, json, stop_at_step })?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else if !quiet {
                println!(
                    "done: {} steps ({} this run) in {:.1}s; train loss {:.4}; test loss {:.4}, test accuracy {:.2}%",
                    s.steps,
                    s.steps - s.start_step,
                    s.wall_secs,
                    s.train_loss,
                    s.eval_loss,
                    s.eval_acc * 100.0
                );
                if let Some(c) = &s.checkpoint {
                    println!("checkpoint: {}", c.display());
                }
                println!("metrics: {}", s.metrics.display());
            }
        }
        Cmd::Validate { config, set } => {
            let cfg = config::load(&config, &set)?;
            let train = kiln_train::trainer::open_data(&cfg, kiln_data::Split::Train)?;
            let test = kiln_train::trainer::open_data(&cfg, kiln_data::Split::Test)?;
            use kiln_data::Dataset;
            println!(
                "{}: ok (model {} hidden {:?}; {} train / {} test examples)",
                config.display(),
                cfg.model.name,
                cfg.model.hidden,
                train.len(),
                test.len()
            );
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
            let trainer = builtin_trainer(cfg);
            let (params, meta) = trainer.load_params(&path)?;
            let (loss, acc) = trainer.evaluate(&params)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"step": meta.step, "eval_loss": loss, "eval_acc": acc})
                );
            } else {
                println!(
                    "step {}: test loss {loss:.4}, test accuracy {:.2}%",
                    meta.step,
                    acc * 100.0
                );
            }
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
