//! End-to-end tests of `train-cli` on tiny subsets of the repo-local MNIST.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_train-cli"))
}

fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-train-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny config: 16-unit MLP, batch 8, 128 training examples, 12 steps.
fn tiny_config(dir: &Path) -> PathBuf {
    let text = format!(
        r#"
[model]
name = "mlp"
hidden = [16]

[data]
path = "{data}"
batch_size = 8
eval_batch_size = 50
workers = 0
train_subset = 128
eval_subset = 100

[optimizer]
lr = 0.003

[optimizer.schedule]
name = "cosine"
warmup_steps = 2

[train]
steps = 12
log_every = 1
eval_every = 6

[checkpoint]
dir = "{dir}/ckpt"
every = 4
keep = 0

[logging]
jsonl = "{dir}/metrics.jsonl"
"#,
        data = mnist_dir().display(),
        dir = dir.display()
    );
    let p = dir.join("tiny.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn text_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/text")
}

/// A tiny character transformer: 1 block, width 16, context 16, 8 steps.
fn tiny_lm_config(dir: &Path) -> PathBuf {
    let text = format!(
        r#"
[model]
name = "transformer"
layers = 1
d_model = 16
heads = 2
context = 16
dropout = 0.1

[data]
name = "tinyshakespeare"
path = "{data}"
batch_size = 4
eval_batch_size = 8
eval_subset = 16
workers = 0

[train]
steps = 8
log_every = 1
eval_every = 4

[checkpoint]
dir = "{dir}/ckpt"
every = 4
keep = 0

[logging]
jsonl = "{dir}/metrics.jsonl"

[sample]
prompt = "ROMEO:"
tokens = 20
"#,
        data = text_path().display(),
        dir = dir.display()
    );
    let p = dir.join("lm.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    if !out.status.success() && out.status.code() != Some(2) {
        panic!(
            "{:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail with exit code 2 and one clear line; returns it.
fn fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2), "stdout: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "expected one line, got: {err}");
    err
}

/// The metric records of `kind` (`train` or `eval`); none while the file does not exist.
fn records(metrics: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(metrics)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .collect()
}

/// `(step, field)` of the metric records of `kind`.
fn series(metrics: &Path, kind: &str, field: &str) -> Vec<(u64, f64)> {
    records(metrics, kind)
        .iter()
        .map(|v| (v["step"].as_u64().unwrap(), v[field].as_f64().unwrap()))
        .collect()
}

fn train_losses(metrics: &Path) -> Vec<(u64, String)> {
    records(metrics, "train")
        .iter()
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].to_string()))
        .collect()
}

/// Runs `config(dir)` with `set` stopped after `stop` steps (as if interrupted), then
/// resumes it with `--resume auto`; returns the directory and the training losses.
fn interrupted_and_resumed(
    name: &str,
    config: fn(&Path) -> PathBuf,
    set: &[&str],
    stop: u64,
) -> (PathBuf, Vec<(u64, String)>) {
    let d = tmpdir(name);
    let c = config(&d);
    ok(bin().args(["run", "--quiet", "--stop-at-step", &stop.to_string()]).args(set).arg(&c));
    assert_eq!(train_losses(&d.join("metrics.jsonl")).len() as u64, stop);
    ok(bin().args(["run", "--quiet", "--resume", "auto"]).args(set).arg(&c));
    let losses = train_losses(&d.join("metrics.jsonl"));
    (d, losses)
}

#[test]
fn resume_gives_identical_losses() {
    let a = tmpdir("resume-a");
    ok(bin().args(["run", "--quiet"]).arg(tiny_config(&a)));
    let full = train_losses(&a.join("metrics.jsonl"));
    assert_eq!(full.len(), 12);

    // Interrupted after step 6 (last checkpoint at step 4), then resumed.
    let (b, resumed) = interrupted_and_resumed("resume-b", tiny_config, &[], 6);
    assert_eq!(full, resumed, "losses differ after resume");

    // keep = 0 keeps all: steps 4, 8, 12.
    let names: Vec<_> =
        std::fs::read_dir(b.join("ckpt")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn corrupt_checkpoint_is_skipped_on_auto_resume() {
    let d = tmpdir("corrupt");
    let c = tiny_config(&d);
    ok(bin().args(["run", "--quiet", "--stop-at-step", "8", "--set", "checkpoint.keep=2"]).arg(&c));
    let newest = d.join("ckpt/ckpt-00000008.safetensors");
    let bytes = std::fs::read(&newest).unwrap();
    // Flip a byte in the tensor data: the checksum catches it.
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 10] ^= 0xff;
    std::fs::write(&newest, &flipped).unwrap();
    let err = fails(bin().arg("inspect").arg(&newest));
    assert!(err.contains("checksum mismatch"), "{err}");
    // Truncated file too.
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(bin()
        .args(["run", "--resume", "auto", "--stop-at-step", "9", "--set", "checkpoint.keep=2"])
        .arg(&c));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: skipping checkpoint") && stderr.contains("ckpt-00000008"),
        "{stderr}"
    );
    assert!(stderr.contains("resumed from") && stderr.contains("ckpt-00000004"), "{stderr}");
}

#[test]
fn inspect_and_eval_a_checkpoint() {
    let d = tmpdir("inspect");
    let c = tiny_config(&d);
    ok(bin().args(["run", "--quiet", "--set", "train.steps=4"]).arg(&c));
    let ck = d.join("ckpt/ckpt-00000004.safetensors");
    let text = ok(bin().arg("inspect").arg(&ck));
    for want in [
        "step: 4",
        "params.layers.0.weight",
        "params.layers.1.bias",
        "opt_state.1.0.mu.layers.0.weight",
        "opt_state.1.0.count",
        "checksum",
    ] {
        assert!(text.contains(want), "missing {want} in:\n{text}");
    }
    // The checkpoint loads in Python with safetensors + numpy (when they are installed),
    // checksum included.
    let py = Command::new("python3").args(["-c", "import safetensors, numpy"]).status();
    if py.is_ok_and(|s| s.success()) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/load_checkpoint.py");
        let out = ok(Command::new("python3").arg(script).arg(&ck));
        assert!(
            out.contains("step 4") && out.contains("checksum") && out.contains("(2, 10)"),
            "{out}"
        );
    } else {
        eprintln!("python3 with safetensors and numpy not found: skipping the Python load check");
    }
    let json = ok(bin().args(["inspect", "--json"]).arg(&ck));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["meta"]["step"], 4);
    assert!(v["meta"]["loader_state"].as_str().unwrap().contains('{'));

    let out = ok(bin().args(["eval", "--json"]).arg(&c).arg("--checkpoint").arg(&ck));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["eval_acc"].as_f64().unwrap() >= 0.0);

    // A checkpoint of a different model shape.
    let err = fails(
        bin().args(["eval", "--set", "model.hidden=[32]"]).arg(&c).arg("--checkpoint").arg(&ck),
    );
    assert!(err.contains("params.layers.0.weight") && err.contains("[784, 16]"), "{err}");
    // A missing checkpoint.
    let err =
        fails(bin().args(["eval"]).arg(&c).arg("--checkpoint").arg(d.join("nope.safetensors")));
    assert!(err.contains("nope.safetensors"), "{err}");
}

#[test]
fn bad_configs_give_one_line_and_exit_2() {
    let d = tmpdir("bad");
    let c = tiny_config(&d);
    let cases: &[(&str, &[&str])] = &[
        ("data.path=\"/no/such/dir\"", &["data.path", "/no/such/dir"]),
        ("model.name=\"transformer\"", &["model.name", "transformer", "mnist"]),
        ("data.name=\"cifar\"", &["data.name", "cifar"]),
        ("model.channels=[8, 0]", &["model.channels[1]", "positive"]),
        ("model.init_from=\"/no/such.safetensors\"", &["/no/such.safetensors"]),
        ("data.batch_size=\"big\"", &["data.batch_size", "invalid type"]),
        ("data.batch_size=-4", &["data.batch_size", "positive"]),
        ("data.batchsize=4", &["data", "batchsize", "did you mean `batch_size`"]),
        ("optimizer.lr=-1.0", &["optimizer.lr"]),
        ("model.name=\"mpl\"", &["did you mean `mlp`"]),
    ];
    for (set, wants) in cases {
        let err = fails(bin().args(["validate", "--set", set]).arg(&c));
        for w in *wants {
            assert!(err.contains(w), "--set {set}: `{w}` not in: {err}");
        }
        let err = fails(bin().args(["run", "--quiet", "--set", set]).arg(&c));
        assert!(err.contains(wants[0]), "{err}");
    }
    // Errors in the file itself.
    let p = d.join("typo.toml");
    std::fs::write(&p, "[trian]\nepochs = 1\n").unwrap();
    let err = fails(bin().arg("validate").arg(&p));
    assert!(err.contains("trian") && err.contains("did you mean `train`"), "{err}");
    std::fs::write(&p, "[train\n").unwrap();
    let err = fails(bin().arg("validate").arg(&p));
    assert!(err.contains("typo.toml") && err.contains("line 1"), "{err}");
    let err = fails(bin().arg("validate").arg(d.join("missing.toml")));
    assert!(err.contains("missing.toml"), "{err}");

    let out = ok(bin().args(["validate", "--set", "data.train_subset=100"]).arg(&c));
    assert!(out.contains("ok") && out.contains("100 train"), "{out}");
}

#[test]
fn keep_best_keeps_the_lowest_eval_loss() {
    let d = tmpdir("best");
    let c = tiny_config(&d);
    ok(bin()
        .args([
            "run",
            "--quiet",
            "--set",
            "checkpoint.keep_best=true",
            "--set",
            "train.eval_every=2",
        ])
        .args(["--set", "checkpoint.every=100", "--set", "checkpoint.keep=1"])
        .arg(&c));
    let evals = series(&d.join("metrics.jsonl"), "eval", "eval_loss");
    assert_eq!(evals.len(), 6);
    let (best_step, best_loss) = evals.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    let json = ok(bin().args(["inspect", "--json"]).arg(d.join("ckpt/best.safetensors")));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["meta"]["step"], best_step);
    assert!((v["meta"]["best_eval_loss"].as_f64().unwrap() - best_loss).abs() < 1e-12);
    // keep = 1 pruned the step checkpoints but not best.safetensors.
    let names: Vec<_> =
        std::fs::read_dir(d.join("ckpt")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // Ranked by accuracy instead: the first evaluation with the highest accuracy.
    let a = tmpdir("best-acc");
    let c = tiny_config(&a);
    ok(bin()
        .args(["run", "--quiet", "--set", "checkpoint.keep_best=true"])
        .args(["--set", "checkpoint.best_metric=\"eval_acc\"", "--set", "train.eval_every=2"])
        .arg(&c));
    let evals = series(&a.join("metrics.jsonl"), "eval", "eval_acc");
    let top = evals.iter().map(|e| e.1).fold(f64::NEG_INFINITY, f64::max);
    let first_top = evals.iter().find(|e| e.1 == top).unwrap();
    let json = ok(bin().args(["inspect", "--json"]).arg(a.join("ckpt/best.safetensors")));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["meta"]["step"], first_top.0, "{evals:?}");
    assert!((v["meta"]["best_eval_acc"].as_f64().unwrap() - top).abs() < 1e-6);
    let err = fails(bin().args(["validate", "--set", "checkpoint.best_metric=\"acc\""]).arg(&c));
    assert!(err.contains("checkpoint.best_metric"), "{err}");
}

#[test]
fn augmentation_changes_the_data_and_resumes_exactly() {
    let plain = tmpdir("aug-plain");
    ok(bin().args(["run", "--quiet"]).arg(tiny_config(&plain)));
    let aug = ["--set", "data.random_crop_padding=2", "--set", "data.random_flip=0.5"];
    let a = tmpdir("aug-a");
    ok(bin().args(["run", "--quiet"]).args(aug).arg(tiny_config(&a)));
    let full = train_losses(&a.join("metrics.jsonl"));
    assert_ne!(full, train_losses(&plain.join("metrics.jsonl")), "augmentation did nothing");
    let (b, resumed) = interrupted_and_resumed("aug-b", tiny_config, &aug, 5);
    assert_eq!(full, resumed, "augmented losses differ after resume");
    let err = fails(bin().args(["validate", "--set", "data.random_flip=2"]).arg(tiny_config(&b)));
    assert!(err.contains("data.random_flip"), "{err}");
}

#[test]
fn gradient_accumulation_trains_and_resumes_exactly() {
    // 2 batches of 8 per step: 6 optimizer steps over the same 96 examples as 12 plain steps.
    let set = ["--set", "optimizer.accumulate=2", "--set", "train.steps=6"];
    let a = tmpdir("accum-a");
    ok(bin().args(["run", "--quiet"]).args(set).arg(tiny_config(&a)));
    let full = train_losses(&a.join("metrics.jsonl"));
    assert_eq!(full.len(), 6);
    let (b, resumed) = interrupted_and_resumed("accum-b", tiny_config, &set, 4);
    assert_eq!(full, resumed, "losses differ after resume");
    // The same as one batch of 16 (the loader's order is the same), up to rounding.
    let c = tmpdir("accum-c");
    ok(bin()
        .args(["run", "--quiet", "--set", "data.batch_size=16", "--set", "train.steps=6"])
        .arg(tiny_config(&c)));
    for ((s1, l1), (s2, l2)) in full.iter().zip(train_losses(&c.join("metrics.jsonl"))) {
        let (l1, l2): (f64, f64) = (l1.parse().unwrap(), l2.parse().unwrap());
        assert_eq!(*s1, s2);
        assert!((l1 - l2).abs() <= 1e-4 * l2.abs(), "step {s1}: {l1} vs batch-16 {l2}");
    }
    let err =
        fails(bin().args(["validate", "--set", "optimizer.accumulate=0"]).arg(tiny_config(&b)));
    assert!(err.contains("optimizer.accumulate"), "{err}");
}

#[test]
fn bf16_mixed_precision_trains_cnn_and_transformer() {
    let d = tmpdir("bf16");
    let c = tiny_config(&d);
    let cnn =
        ["--set", "model.name=\"cnn\"", "--set", "model.channels=[4]", "--set", "model.dense=8"];
    ok(bin().args(["run", "--quiet"]).args(cnn).arg(&c));
    let f32_losses = train_losses(&d.join("metrics.jsonl"));
    ok(bin().args(["run", "--quiet", "--set", "train.precision=\"bf16\""]).args(cnn).arg(&c));
    let bf16_losses = train_losses(&d.join("metrics.jsonl"));
    assert_ne!(f32_losses, bf16_losses, "precision had no effect");
    let parse =
        |l: &[(u64, String)]| -> Vec<f64> { l.iter().map(|x| x.1.parse().unwrap()).collect() };
    let (a, b) = (parse(&f32_losses), parse(&bf16_losses));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 0.05 * x.abs(), "bf16 {y} far from f32 {x}");
    }
    // Checkpointed parameters stay f32.
    let text = ok(bin().arg("inspect").arg(d.join("ckpt/ckpt-00000012.safetensors")));
    assert!(text.contains("params.convs.0.kernel") && !text.contains("BF16"), "{text}");
    let l = tmpdir("bf16-lm");
    let out = ok(bin().args(["run", "--set", "train.precision=\"bf16\""]).arg(tiny_lm_config(&l)));
    assert!(out.contains("validation loss"), "{out}");
    let err = fails(bin().args(["validate", "--set", "train.precision=\"fp8\""]).arg(&c));
    assert!(err.contains("train.precision"), "{err}");
}

#[test]
fn every_optimizer_name_trains() {
    let d = tmpdir("optimizers");
    let c = tiny_config(&d);
    let cases: &[(&str, &[&str])] = &[
        ("adam", &[]),
        ("adamw", &["optimizer.weight_decay=0.01"]),
        ("adamw", &["optimizer.weight_decay=0.01", "optimizer.weight_decay_mask=\"matrices\""]),
        ("nadam", &[]),
        ("amsgrad", &[]),
        ("adabelief", &[]),
        ("lion", &["optimizer.lr=0.001"]),
        ("lamb", &["optimizer.weight_decay=0.01"]),
        ("lars", &["optimizer.lr=0.5", "optimizer.weight_decay=1e-4"]),
        ("rmsprop", &["optimizer.momentum=0.5"]),
        ("rmsprop", &["optimizer.centered=true"]),
        ("adafactor", &["optimizer.lr=0.01"]),
        ("adafactor", &["optimizer.lr=0.01", "optimizer.momentum=0.9"]),
        ("rmsprop", &[]),
        ("adagrad", &["optimizer.lr=0.03"]),
        ("adadelta", &["optimizer.lr=1.0"]),
        ("sgd", &["optimizer.momentum=0.9"]),
        ("sgd", &["optimizer.momentum=0.9", "optimizer.nesterov=true"]),
    ];
    for (name, extra) in cases {
        let mut cmd = bin();
        cmd.args(["run", "--json", "--set", &format!("optimizer.name=\"{name}\"")]);
        cmd.args(["--set", "optimizer.clip_by_global_norm=1.0"]);
        for e in *extra {
            cmd.args(["--set", e]);
        }
        let out = ok(cmd.arg(&c));
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let losses: Vec<f64> =
            train_losses(&d.join("metrics.jsonl")).iter().map(|l| l.1.parse().unwrap()).collect();
        let (first, last) = (losses[..3].iter().sum::<f64>(), losses[9..].iter().sum::<f64>());
        assert!(last < first, "{name} {extra:?}: losses {losses:?}");
        assert!(v["eval_loss"].as_f64().unwrap().is_finite(), "{name}: {v}");
    }
    let err = fails(bin().args(["validate", "--set", "optimizer.name=\"adma\""]).arg(&c));
    assert!(err.contains("did you mean `adam`"), "{err}");
}

#[test]
fn cnn_and_resnet_train_resume_and_checkpoint_their_state() {
    let d = tmpdir("cnn");
    let c = tiny_config(&d);
    // CNN: a few steps, loss goes down from ln(10).
    let out = ok(bin()
        .args(["run", "--json", "--set", "model.name=\"cnn\"", "--set", "model.channels=[4, 8]"])
        .args(["--set", "model.dense=16"])
        .arg(&c));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["steps"], 12);
    assert!(v["eval_loss"].as_f64().unwrap() < 2.3, "{v}");
    let text = ok(bin().arg("inspect").arg(d.join("ckpt/ckpt-00000012.safetensors")));
    assert!(text.contains("params.convs.1.kernel") && text.contains("params.head.bias"), "{text}");

    // ResNet with BatchNorm: the running statistics are checkpointed and restored, so an
    // interrupted and resumed run gives the same losses as an uninterrupted one.
    let a = tmpdir("resnet-a");
    let set = ["--set", "model.name=\"resnet\"", "--set", "model.widths=[4, 8]"];
    ok(bin().args(["run", "--quiet"]).args(set).arg(tiny_config(&a)));
    let (b, resumed) = interrupted_and_resumed("resnet-b", tiny_config, &set, 6);
    let cb = tiny_config(&b);
    let full = train_losses(&a.join("metrics.jsonl"));
    assert_eq!(full.len(), 12);
    assert_eq!(full, resumed, "resnet losses differ after resume");
    let text = ok(bin().arg("inspect").arg(b.join("ckpt/ckpt-00000012.safetensors")));
    for want in ["model_state.stem_bn.mean", "model_state.blocks.1.0.var", "params.blocks.1.proj"] {
        assert!(text.contains(want), "missing {want} in:\n{text}");
    }
    // The eval statistics moved away from their initial values (mean 0).
    let out = ok(bin()
        .args(["eval", "--json"])
        .args(set)
        .arg(&cb)
        .arg("--checkpoint")
        .arg(b.join("ckpt/ckpt-00000012.safetensors")));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["eval_loss"].as_f64().unwrap().is_finite(), "{v}");
}

#[test]
fn transformer_trains_samples_and_resumes() {
    let a = tmpdir("lm-a");
    let ca = tiny_lm_config(&a);
    let out = ok(bin().arg("run").arg(&ca));
    assert!(out.contains("validation loss") && out.contains("bits/char"), "{out}");
    assert!(out.contains("sample:\nROMEO:"), "{out}");
    let full = train_losses(&a.join("metrics.jsonl"));
    assert_eq!(full.len(), 8);
    let evals = records(&a.join("metrics.jsonl"), "eval");
    assert_eq!(evals.len(), 2);
    assert!(evals[0]["eval_bpc"].as_f64().unwrap() > 0.0);

    // Dropout keys come from the step, so resume is exact for the language model too.
    let (_, resumed) = interrupted_and_resumed("lm-b", tiny_lm_config, &[], 5);
    assert_eq!(full, resumed, "LM losses differ after resume");

    // `sample`: the config comes from the checkpoint; same seed, same text.
    let ck = a.join("ckpt/ckpt-00000008.safetensors");
    let s1 = ok(bin().arg("sample").arg(&ck).args(["--prompt", "JULIET:", "--tokens", "30"]));
    let s2 = ok(bin().arg("sample").arg(&ck).args(["--prompt", "JULIET:", "--tokens", "30"]));
    assert_eq!(s1, s2);
    assert!(s1.starts_with("JULIET:") && s1.trim_end().chars().count() >= 7 + 20, "{s1}");
    let greedy = ok(bin().arg("sample").arg(&ck).args(["--temperature", "0", "--tokens", "5"]));
    assert!(greedy.starts_with("ROMEO:"), "{greedy}");
    // A prompt character outside the vocabulary, and sampling from an image model.
    let err = fails(bin().arg("sample").arg(&ck).args(["--prompt", "\u{00e9}"]));
    assert!(err.contains("sample.prompt"), "{err}");
    let m = tmpdir("lm-mlp");
    ok(bin().args(["run", "--quiet", "--set", "train.steps=1"]).arg(tiny_config(&m)));
    let err = fails(bin().arg("sample").arg(m.join("ckpt/ckpt-00000001.safetensors")));
    assert!(err.contains("language model"), "{err}");
}

#[test]
fn init_from_loads_kiln_and_foreign_safetensors() {
    let d = tmpdir("init-from");
    let c = tiny_config(&d);
    ok(bin().args(["run", "--quiet", "--set", "train.steps=4"]).arg(&c));
    let ck = d.join("ckpt/ckpt-00000004.safetensors");
    let want: serde_json::Value = serde_json::from_str(
        ok(bin().args(["eval", "--json"]).arg(&c).arg("--checkpoint").arg(&ck)).trim(),
    )
    .unwrap();
    // Names without the `params.` prefix, as PyTorch or JAX would write them.
    let bytes = std::fs::read(&ck).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let foreign: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter_map(|(n, v)| n.strip_prefix("params.").map(|n| (n.to_string(), v)))
        .collect();
    let fpath = d.join("foreign.safetensors");
    std::fs::write(&fpath, safetensors::serialize(foreign, None).unwrap()).unwrap();
    for init in [&ck, &fpath] {
        let e = tmpdir("init-from-run");
        // A learning rate so small the parameters do not move: the first evaluation is the
        // loaded model's.
        let set = format!("model.init_from=\"{}\"", init.display());
        let out = ok(bin()
            .args(["run", "--json", "--set", &set, "--set", "optimizer.lr=1e-30"])
            .args(["--set", "train.steps=1", "--set", "train.eval_every=1"])
            .args(["--set", &format!("checkpoint.dir=\"{}\"", e.join("ck").display())])
            .args(["--set", &format!("logging.jsonl=\"{}\"", e.join("m.jsonl").display())])
            .arg(&c));
        let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(got["eval_loss"], want["eval_loss"], "init_from {}", init.display());
    }
    // A file of another model shape: one line naming the tensor, exit 2.
    let err = fails(
        bin()
            .args(["run", "--set", &format!("model.init_from=\"{}\"", ck.display())])
            .args(["--set", "model.hidden=[8]"])
            .arg(&c),
    );
    assert!(err.contains("params.layers.0.weight") && err.contains("[784, 16]"), "{err}");
}

#[test]
fn resume_from_another_model_shape_fails_without_touching_files() {
    let d = tmpdir("wrong-resume");
    let c = tiny_config(&d);
    ok(bin().args(["run", "--quiet", "--set", "train.steps=4"]).arg(&c));
    let metrics = std::fs::read(d.join("metrics.jsonl")).unwrap();
    let ck = d.join("ckpt/ckpt-00000004.safetensors");
    let before = std::fs::read(&ck).unwrap();
    let err = fails(bin().args(["run", "--set", "model.hidden=[32]", "--resume"]).arg(&ck).arg(&c));
    assert!(err.contains("different model"), "{err}");
    assert_eq!(std::fs::read(d.join("metrics.jsonl")).unwrap(), metrics);
    assert_eq!(std::fs::read(&ck).unwrap(), before);
    assert_eq!(std::fs::read_dir(d.join("ckpt")).unwrap().count(), 1);
}

#[cfg(unix)]
#[test]
fn sigint_saves_a_checkpoint_and_resume_continues() {
    let d = tmpdir("sigint");
    let c = tiny_config(&d);
    let child = bin()
        .args(["run", "--quiet", "--set", "train.steps=100000", "--set", "checkpoint.every=100000"])
        .arg(&c)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training is under way.
    let metrics = d.join("metrics.jsonl");
    let t0 = std::time::Instant::now();
    while records(&metrics, "train").len() < 3 {
        assert!(t0.elapsed().as_secs() < 120, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let cks: Vec<_> =
        std::fs::read_dir(d.join("ckpt")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(cks.len(), 1, "{cks:?}");
    let step: u64 = train_losses(&metrics).last().unwrap().0;
    assert!(cks[0].to_string_lossy().contains(&format!("ckpt-{step:08}")), "{cks:?} vs {step}");
    ok(bin()
        .args(["run", "--quiet", "--resume", "auto", "--set"])
        .arg(format!("train.steps={}", step + 2))
        .arg(&c));
    assert_eq!(train_losses(&metrics).last().unwrap().0, step + 2);
}

#[test]
fn json_summary_and_plot() {
    let d = tmpdir("plot");
    let c = tiny_config(&d);
    let out = ok(bin().args(["run", "--json", "--set", "train.steps=6"]).arg(&c));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["steps"], 6);
    let rec: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(d.join("metrics.jsonl")).unwrap().lines().next().unwrap(),
    )
    .unwrap();
    for k in ["loss", "acc", "lr", "grad_norm", "step_time_ms", "epoch"] {
        assert!(rec.get(k).is_some(), "missing {k} in {rec}");
    }
    if cfg!(feature = "plot") {
        let png = d.join("curves.png");
        ok(bin().arg("plot").arg(d.join("metrics.jsonl")).arg("-o").arg(&png));
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}

#[test]
fn tensorboard_event_files_hold_the_metrics() {
    let d = tmpdir("tensorboard");
    let c = tiny_config(&d);
    let tb = d.join("tb");
    let set = format!("logging.tensorboard=\"{}\"", tb.display());
    ok(bin().args(["run", "--quiet", "--set", &set]).arg(&c));
    let files: Vec<PathBuf> = std::fs::read_dir(&tb).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let scalars = kiln_train::tensorboard::read_scalars(&files[0]).unwrap();
    let metrics = d.join("metrics.jsonl");
    let pick = |tag: &str| -> Vec<(u64, f32)> {
        scalars.iter().filter(|s| s.1 == tag).map(|s| (s.0, s.2)).collect()
    };
    let json = |kind: &str, field: &str| -> Vec<(u64, f32)> {
        series(&metrics, kind, field).into_iter().map(|(s, v)| (s, v as f32)).collect()
    };
    assert_eq!(pick("train/loss"), json("train", "loss"));
    assert_eq!(pick("train/lr"), json("train", "lr"));
    assert_eq!(pick("eval/loss"), json("eval", "eval_loss"));
    assert_eq!(pick("eval/acc").len(), 2);
    // TensorBoard itself reads the file (when it is installed).
    let has_tb = Command::new("python3")
        .args(["-c", "import tensorboard.backend.event_processing.event_accumulator"])
        .status();
    if has_tb.is_ok_and(|s| s.success()) {
        let script = "import sys\n\
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
            a = EventAccumulator(sys.argv[1]); a.Reload()\n\
            ev = a.Scalars('train/loss')\n\
            print(len(ev), ev[-1].step, repr(ev[-1].value), sorted(a.Tags()['scalars']))";
        let out = ok(Command::new("python3").args(["-c", script]).arg(&tb));
        let (n, step, value) = {
            let mut f = out.split_whitespace();
            let mut next = || f.next().unwrap().to_string();
            (next(), next(), next().parse::<f32>().unwrap())
        };
        let last = json("train", "loss").last().copied().unwrap();
        assert_eq!((n.as_str(), step.as_str(), value), ("12", "12", last.1), "{out}");
        assert!(out.contains("'eval/loss'") && out.contains("'train/grad_norm'"), "{out}");
    } else {
        eprintln!("python3 with tensorboard not found: skipping the TensorBoard read check");
    }
}
