//! The data of `[data]`: the built-in data sets as a [`Task`] with train and test splits,
//! and the conversion of loader batches into model inputs and integer labels.

use std::path::Path;
use std::sync::Arc;

use kiln::Array;
use kiln_data::transform::{self, DatasetExt};
use kiln_data::{Dataset, Split, Subset, TokenWindows, Tokenizer, Vocab};

use crate::config::Config;
use crate::error::TrainError;

/// What the model learns, which fixes the batch layout.
#[derive(Clone, Debug)]
pub enum Task {
    /// Image classification: inputs `[B, H, W, C]` f32 in `[0, 1]`, labels `[B]` i32.
    Classify {
        /// `[height, width, channels]` of one image.
        input: [usize; 3],
        /// Number of classes.
        classes: usize,
    },
    /// Next-token prediction: inputs and targets `[B, context]` i32 token ids.
    Language {
        /// The vocabulary (character level).
        vocab: Vocab,
        /// The window length.
        context: usize,
    },
}

impl Task {
    /// Number of output classes (the vocabulary size for language models).
    pub fn classes(&self) -> usize {
        match self {
            Task::Classify { classes, .. } => *classes,
            Task::Language { vocab, .. } => vocab.len(),
        }
    }

    /// Whether this is language modelling (metrics are per token; loss in nats per char).
    pub fn is_language(&self) -> bool {
        matches!(self, Task::Language { .. })
    }
}

/// A task with its training and test (validation) splits.
#[derive(Clone)]
pub struct TaskData {
    /// The task.
    pub task: Task,
    /// Training examples.
    pub train: Arc<dyn Dataset>,
    /// Held-out examples.
    pub test: Arc<dyn Dataset>,
}

impl std::fmt::Debug for TaskData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskData({:?}, {} train, {} test)", self.task, self.train.len(), self.test.len())
    }
}

/// The first error line of a data-set error, naming `data.path`.
fn data_err(dir: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Data(format!(
        "data.path `{}`: {}",
        dir.display(),
        e.to_string().lines().next().unwrap_or("")
    ))
}

fn limit(ds: Arc<dyn Dataset>, n: i64) -> Result<Arc<dyn Dataset>, TrainError> {
    if n <= 0 || n as usize >= ds.len() {
        return Ok(ds);
    }
    Ok(Arc::new(Subset::new(ds, (0..n as usize).collect::<Vec<_>>())?))
}

/// Opens `[data]` (and, for text, the window length `[model] context`).
pub fn open(config: &Config) -> Result<TaskData, TrainError> {
    let d = &config.data;
    let dir = &d.path;
    if !dir.exists() {
        let hint = match d.name.as_str() {
            "fashion-mnist" => "; install it with `apt-get install dataset-fashion-mnist`",
            _ => "",
        };
        return Err(TrainError::Data(format!(
            "data.path: `{}` does not exist (run from the repository root, or set data.path){hint}",
            dir.display()
        )));
    }
    let (task, train, test): (Task, Arc<dyn Dataset>, Arc<dyn Dataset>) = match d.name.as_str() {
        "mnist" | "fashion-mnist" => {
            let open = |s| match d.name.as_str() {
                "mnist" => kiln_data::mnist(dir, s),
                _ => kiln_data::fashion_mnist(dir, s),
            };
            let train = open(Split::Train).map_err(|e| data_err(dir, e))?;
            let test = open(Split::Test).map_err(|e| data_err(dir, e))?;
            let task =
                Task::Classify { input: [28, 28, 1], classes: kiln_data::builtin::MNIST_CLASSES };
            // Augmentations draw from (seed, epoch, index): deterministic and resumable.
            let mut train: Arc<dyn Dataset> = Arc::new(train);
            if d.random_crop_padding > 0 {
                let pad = d.random_crop_padding as usize;
                train = Arc::new(
                    train.map_random(d.seed, transform::random_crop("image", 28, 28, pad)),
                );
            }
            if d.random_flip > 0.0 {
                let flip = transform::random_flip("image", d.random_flip);
                train = Arc::new(train.map_random(d.seed.wrapping_add(1), flip));
            }
            (task, train, Arc::new(test))
        }
        "tinyshakespeare" => {
            let corpus =
                kiln_data::tinyshakespeare(dir, Tokenizer::Char).map_err(|e| data_err(dir, e))?;
            let context = config.model.context.max(1) as usize;
            let (train, val): (TokenWindows, TokenWindows) =
                corpus.split_windows(context, d.train_fraction)?;
            let train = train.with_stride(d.stride.max(1) as usize)?;
            let task = Task::Language { vocab: corpus.vocab().clone(), context };
            (task, Arc::new(train), Arc::new(val))
        }
        other => {
            return Err(TrainError::Data(format!("data.name: unknown data set `{other}`")));
        }
    };
    Ok(TaskData { task, train: limit(train, d.train_subset)?, test: limit(test, d.eval_subset)? })
}

/// Converts a loader batch into `(inputs, labels)` for `task`.
pub fn batch_arrays(
    task: &Task,
    mut batch: kiln_data::Batch,
) -> Result<(Array, Array), TrainError> {
    match task {
        Task::Classify { input: [h, w, c], .. } => {
            let img = batch.take("image")?;
            let b = img.shape()[0];
            let x: Vec<f32> = img.to_f32_vec().into_iter().map(|v| v / 255.0).collect();
            let labels: Vec<i32> = batch.take("label")?.into_vec::<i32>()?;
            Ok((Array::from_vec(x, [b, *h, *w, *c]), Array::from_vec(labels, [b])))
        }
        Task::Language { context, .. } => {
            let x = batch.take("input")?.into_vec::<i32>()?;
            let y = batch.take("target")?.into_vec::<i32>()?;
            let b = x.len() / context;
            Ok((Array::from_vec(x, [b, *context]), Array::from_vec(y, [b, *context])))
        }
    }
}
