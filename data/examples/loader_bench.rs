//! Loader throughput on the real data sets.
//!
//! ```text
//! cargo run --release -p kiln-data --example loader_bench -- <data dir>
//! ```
//!
//! `<data dir>` holds `mnist/` and `text/tinyshakespeare.txt` (default:
//! `$KILN_DATA_DIR`, else `../shared/data`). Measures:
//! - MNIST: shuffling, per-example u8 → f32 scaling and normalization,
//!   batching to 128 with 2 workers (samples/s);
//! - tinyshakespeare: character-level windows of 256 tokens at every
//!   position (stride 1), shuffled, batches of 64 with 2 workers (tokens/s).

use std::path::PathBuf;
use std::time::Instant;

use kiln_data::builtin::TINYSHAKESPEARE_TRAIN_FRACTION;
use kiln_data::transform::{cast_scaled, normalize};
use kiln_data::{
    DType, DatasetExt, Loader, LoaderConfig, Result, Split, Tokenizer, mnist, tinyshakespeare,
};

fn data_dir() -> PathBuf {
    std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .or_else(kiln_data::data_dir_from_env)
        .unwrap_or_else(|| PathBuf::from("../shared/data"))
}

fn bench_mnist(dir: &std::path::Path, workers: usize) -> Result<()> {
    let start = Instant::now();
    let train = mnist(dir, Split::Train)?;
    let load_s = start.elapsed().as_secs_f64();
    let ds = train.map(cast_scaled("image", DType::F32, 1.0 / 255.0)).map(normalize(
        "image",
        &[0.1307],
        &[0.3081],
    )?);
    let epochs = 3;
    let cfg = LoaderConfig::new(128).shuffle(0).drop_last(true).epochs(epochs).workers(workers);
    let loader = Loader::new(ds, cfg)?;
    let start = Instant::now();
    let mut samples = 0usize;
    let mut checksum = 0f64;
    for batch in loader.iter() {
        let mut batch = batch?;
        let image = batch.take("image")?.into_f32_vec()?;
        checksum += f64::from(image[0]);
        samples += batch.size();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "mnist: {samples} samples in {secs:.3} s = {:.0} samples/s ({epochs} epochs, batch 128, {workers} workers; \
         decode of the gzip IDX files {load_s:.3} s; checksum {checksum:.1})",
        samples as f64 / secs
    );
    Ok(())
}

fn bench_text(dir: &std::path::Path, workers: usize) -> Result<()> {
    let start = Instant::now();
    let corpus = tinyshakespeare(dir, Tokenizer::Char)?;
    let load_s = start.elapsed().as_secs_f64();
    let (train, _val) = corpus.split_windows(256, TINYSHAKESPEARE_TRAIN_FRACTION)?;
    let train = train.with_stride(1)?;
    let cfg = LoaderConfig::new(64).shuffle(0).drop_last(true).workers(workers);
    let loader = Loader::new(train, cfg)?;
    let steps = 2000;
    let start = Instant::now();
    let mut tokens = 0usize;
    for batch in loader.iter().take(steps) {
        let batch = batch?;
        tokens += batch.require("input")?.numel();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "tinyshakespeare: {tokens} tokens in {secs:.3} s = {:.0} tokens/s ({steps} batches of 64x256, {workers} workers; \
         {} windows/epoch; read+tokenize {load_s:.3} s)",
        tokens as f64 / secs,
        loader.shard_len()
    );
    Ok(())
}

fn main() -> Result<()> {
    let dir = data_dir();
    println!("data directory: {}", dir.display());
    bench_mnist(&dir, 2)?;
    bench_text(&dir, 2)?;
    Ok(())
}
