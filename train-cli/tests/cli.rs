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

fn train_losses(metrics: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].to_string()))
        .collect()
}

#[test]
fn resume_gives_identical_losses() {
    let a = tmpdir("resume-a");
    let b = tmpdir("resume-b");
    let ca = tiny_config(&a);
    let cb = tiny_config(&b);
    ok(bin().args(["run", "--quiet"]).arg(&ca));
    let full = train_losses(&a.join("metrics.jsonl"));
    assert_eq!(full.len(), 12);

    // Interrupted after step 6 (last checkpoint at step 4), then resumed.
    ok(bin().args(["run", "--quiet", "--stop-at-step", "6"]).arg(&cb));
    assert_eq!(train_losses(&b.join("metrics.jsonl")).len(), 6);
    ok(bin().args(["run", "--quiet", "--resume", "auto"]).arg(&cb));
    let resumed = train_losses(&b.join("metrics.jsonl"));
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
        "opt_state.1.mu.layers.0.weight",
        "opt_state.1.count",
        "checksum",
    ] {
        assert!(text.contains(want), "missing {want} in:\n{text}");
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
        ("model.name=\"transformer\"", &["model.name", "transformer"]),
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
