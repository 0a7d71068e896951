//! Safetensors checkpoints: tensors named by tree key path (`params.layers.0.weight`,
//! `opt_state.mu.layers.0.weight`, ...), metadata JSON under the `kiln` key, written
//! atomically (temp file, fsync, rename) with a checksum over names, shapes and bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use kiln::tree::{self, Tree};
use kiln::{Array, DType};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// The metadata stored in every checkpoint (JSON under the `kiln` metadata key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Number of optimizer steps taken.
    pub step: u64,
    /// The training configuration (TOML text).
    pub config: String,
    /// The PRNG key data used for initialisation.
    pub rng_key: Vec<u32>,
    /// The data loader position (`kiln_data::LoaderState` JSON).
    pub loader_state: String,
    /// The `kiln-train` version that wrote it.
    pub kiln_version: String,
    /// FNV-1a 64 checksum over tensor names, dtypes, shapes and bytes (hex).
    pub checksum: String,
    /// The lowest evaluation loss seen up to this step (with `[checkpoint] keep_best` and
    /// `best_metric = "eval_loss"`).
    #[serde(default)]
    pub best_eval_loss: Option<f64>,
    /// The highest evaluation accuracy seen up to this step (with `[checkpoint] keep_best`
    /// and `best_metric = "eval_acc"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_eval_acc: Option<f64>,
}

/// A loaded checkpoint: metadata and named tensors.
pub struct Checkpoint {
    /// The metadata.
    pub meta: CheckpointMeta,
    /// Tensors by name.
    pub tensors: BTreeMap<String, Array>,
}

fn st_dtype(d: DType) -> Option<Dtype> {
    Some(match d {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::U32 => Dtype::U32,
        DType::U8 => Dtype::U8,
        _ => return None,
    })
}

fn kiln_dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::U32 => DType::U32,
        Dtype::U8 => DType::U8,
        _ => return None,
    })
}

struct Fnv(u64);
impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn checksum<'a>(items: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>) -> String {
    let mut h = Fnv::new();
    for (name, dtype, shape, data) in items {
        h.update(name.as_bytes());
        h.update(format!("{dtype:?}{shape:?}").as_bytes());
        h.update(data);
    }
    format!("{:016x}", h.0)
}

/// Named tensors of a tree, prefixed: `prefix.layers.0.weight`.
pub fn named_leaves<T: Tree>(prefix: &str, t: &T) -> Vec<(String, Array)> {
    tree::leaves_with_path(t)
        .into_iter()
        .map(|(p, a)| {
            let p = p.to_string();
            let name = match (prefix.is_empty(), p.is_empty()) {
                (true, _) => p,
                (false, true) => prefix.to_string(),
                (false, false) => format!("{prefix}.{p}"),
            };
            (name, a)
        })
        .collect()
}

/// Rebuilds a tree like `like` from tensors named `prefix.<path>`, checking shapes and dtypes.
pub fn restore_tree<T: Tree>(
    file: &Path,
    prefix: &str,
    like: &T,
    tensors: &BTreeMap<String, Array>,
) -> Result<T, TrainError> {
    let err = |msg: String| TrainError::Checkpoint { file: file.display().to_string(), msg };
    let mut leaves = Vec::new();
    for (name, want) in named_leaves(prefix, like) {
        let got = tensors
            .get(&name)
            .ok_or_else(|| err(format!("missing tensor `{name}` (different model?)")))?;
        if got.shape() != want.shape() || got.dtype() != want.dtype() {
            return Err(err(format!(
                "tensor `{name}` has shape {:?} ({:?}) but the model expects {:?} ({:?}); \
                 was it written for a different model config?",
                got.shape(),
                got.dtype(),
                want.shape(),
                want.dtype()
            )));
        }
        leaves.push(got.clone());
    }
    Ok(tree::unflatten(like, leaves))
}

/// Writes a checkpoint atomically to `dir/ckpt-<step>.safetensors`; returns its path.
pub fn save(
    dir: &Path,
    tensors: Vec<(String, Array)>,
    mut meta: CheckpointMeta,
) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let path = dir.join(format!("ckpt-{:08}.safetensors", meta.step));
    let perr = |msg: String| TrainError::Checkpoint { file: path.display().to_string(), msg };
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, a) in tensors {
        let dt = st_dtype(a.dtype())
            .ok_or_else(|| perr(format!("tensor `{name}`: unsupported dtype {:?}", a.dtype())))?;
        owned.push((name, dt, a.shape().to_vec(), a.to_bytes()));
    }
    owned.sort_by(|a, b| a.0.cmp(&b.0));
    meta.checksum =
        checksum(owned.iter().map(|(n, d, s, b)| (n.as_str(), *d, s.as_slice(), b.as_slice())));
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<_, _>>()
        .map_err(|e| perr(e.to_string()))?;
    let meta_json = serde_json::to_string(&meta).map_err(|e| perr(e.to_string()))?;
    let bytes =
        safetensors::serialize(views, Some(HashMap::from([("kiln".to_string(), meta_json)])))
            .map_err(|e| perr(e.to_string()))?;
    let tmp = dir.join(format!(".ckpt-{:08}.safetensors.tmp", meta.step));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            // Persist the rename; some platforms cannot fsync directories.
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| TrainError::io(&path, e))?;
    Ok(path)
}

/// Copies checkpoint `from` to `dir/best.safetensors` atomically (temp file, fsync, rename).
pub fn mark_best(dir: &Path, from: &Path) -> Result<PathBuf, TrainError> {
    let best = dir.join("best.safetensors");
    let tmp = dir.join(".best.safetensors.tmp");
    let copy = || -> std::io::Result<()> {
        std::fs::copy(from, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &best)
    };
    copy().map_err(|e| TrainError::io(&best, e))?;
    Ok(best)
}

/// Loads and verifies a checkpoint (format, metadata and checksum).
pub fn load(path: &Path) -> Result<Checkpoint, TrainError> {
    let err = |msg: String| TrainError::Checkpoint { file: path.display().to_string(), msg };
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
    let meta_json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("kiln"))
        .ok_or_else(|| err("no `kiln` metadata (not a kiln-train checkpoint)".into()))?;
    let meta: CheckpointMeta =
        serde_json::from_str(meta_json).map_err(|e| err(format!("bad metadata: {e}")))?;
    let mut views = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let sum = checksum(views.iter().map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())));
    if sum != meta.checksum {
        return Err(err(format!(
            "checksum mismatch (stored {}, computed {sum}): file is corrupt",
            meta.checksum
        )));
    }
    let tensors = to_arrays(views, &err)?;
    Ok(Checkpoint { meta, tensors })
}

fn to_arrays(
    views: Vec<(String, TensorView<'_>)>,
    err: &dyn Fn(String) -> TrainError,
) -> Result<BTreeMap<String, Array>, TrainError> {
    let mut tensors = BTreeMap::new();
    for (name, v) in views {
        let dt = kiln_dtype(v.dtype())
            .ok_or_else(|| err(format!("tensor `{name}`: unsupported dtype {:?}", v.dtype())))?;
        let a = Array::from_bytes(v.data(), v.shape().to_vec(), dt)
            .map_err(|e| err(format!("tensor `{name}`: {e}")))?;
        tensors.insert(name, a);
    }
    Ok(tensors)
}

/// The tensors of any safetensors file (written by kiln, PyTorch, JAX, ...), by name.
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, Array>, TrainError> {
    let err = |msg: String| TrainError::Checkpoint { file: path.display().to_string(), msg };
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
    to_arrays(st.tensors(), &err)
}

/// Checkpoint files in `dir`, sorted by step (oldest first).
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("ckpt-").and_then(|s| s.strip_suffix(".safetensors"));
            if let Some(Ok(step)) = step.map(str::parse::<u64>) {
                out.push((step, e.path()));
            }
        }
    }
    out.sort();
    out
}

/// Deletes all but the newest `keep` checkpoints (`keep == 0` keeps all).
pub fn prune(dir: &Path, keep: usize) -> Result<(), TrainError> {
    if keep == 0 {
        return Ok(());
    }
    let all = list(dir);
    let n = all.len().saturating_sub(keep);
    for (_, p) in &all[..n] {
        std::fs::remove_file(p).map_err(|e| TrainError::io(p, e))?;
    }
    Ok(())
}

/// The newest checkpoint in `dir` that loads and verifies; corrupt ones are skipped with
/// a warning passed to `warn`.
pub fn latest_valid(dir: &Path, mut warn: impl FnMut(String)) -> Option<(PathBuf, Checkpoint)> {
    for (_, p) in list(dir).into_iter().rev() {
        match load(&p) {
            Ok(c) => return Some((p, c)),
            Err(e) => warn(format!("warning: skipping {e}")),
        }
    }
    None
}
