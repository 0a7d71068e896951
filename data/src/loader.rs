//! The batching loader: shuffling, sharding, prefetching and resumable
//! iteration.
//!
//! The order of epoch `e` is a pure function of `(seed, e)`: a full
//! Fisher–Yates permutation of the dataset (or the identity without
//! shuffling), dealt round-robin to the shards (see [`Shard`]). Batches are
//! consecutive runs of `batch_size` examples of a shard's order; with
//! `drop_last` a short final batch is skipped.
//!
//! With `num_workers > 0`, worker threads build batches ahead of the
//! consumer into a bounded reorder buffer (at most `prefetch` batches past
//! the last one consumed). Batches are numbered when claimed and returned
//! strictly in that order, so the output is identical for any worker count.
//!
//! [`LoaderIter::state`] reports the position after the last batch returned
//! by `next()`; [`LoaderIter::restore`] (or [`Loader::iter_from`]) resumes
//! exactly there, discarding prefetched batches.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::example::{Batch, Example};
use crate::shuffle::permutation;
use crate::state::{LoaderState, Shard};

/// Loader options. Start from [`LoaderConfig::new`] and chain the builder
/// methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Examples per batch (at least 1).
    pub batch_size: usize,
    /// Skip the last batch of an epoch if it is short.
    pub drop_last: bool,
    /// Shuffle each epoch with a permutation derived from `(seed, epoch)`.
    pub shuffle: bool,
    /// Seed of the shuffle.
    pub seed: u64,
    /// Which shard this loader reads.
    pub shard: Shard,
    /// Worker threads building batches (0: build them in `next()`).
    pub num_workers: usize,
    /// Maximum batches built ahead of the consumer (at least 1; used only
    /// with workers).
    pub prefetch: usize,
    /// Number of epochs to iterate, or `None` to repeat forever.
    pub epochs: Option<u64>,
}

impl LoaderConfig {
    /// One epoch, in order, batches of `batch_size`, no workers, no sharding.
    pub fn new(batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            drop_last: false,
            shuffle: false,
            seed: 0,
            shard: Shard::SINGLE,
            num_workers: 0,
            prefetch: 2,
            epochs: Some(1),
        }
    }

    /// Sets [`drop_last`](Self::drop_last).
    #[must_use]
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Enables shuffling with `seed`.
    #[must_use]
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle = true;
        self.seed = seed;
        self
    }

    /// Sets the shard.
    #[must_use]
    pub fn shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// Sets the worker count, with a prefetch depth of twice that.
    #[must_use]
    pub fn workers(mut self, num_workers: usize) -> Self {
        self.num_workers = num_workers;
        self.prefetch = (2 * num_workers).max(1);
        self
    }

    /// Sets [`prefetch`](Self::prefetch).
    #[must_use]
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches;
        self
    }

    /// Iterates `n` epochs.
    #[must_use]
    pub fn epochs(mut self, n: u64) -> Self {
        self.epochs = Some(n);
        self
    }

    /// Repeats epochs forever.
    #[must_use]
    pub fn repeat(mut self) -> Self {
        self.epochs = None;
        self
    }
}

/// The next batch to build: positions `start..end` of `epoch`'s order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchSpec {
    epoch: u64,
    start: usize,
    end: usize,
}

/// Everything that determines the batch sequence.
#[derive(Clone, Debug)]
struct Plan {
    len: usize,
    per_shard: usize,
    batch_size: usize,
    drop_last: bool,
    shuffle: bool,
    seed: u64,
    shard: Shard,
    end_epoch: Option<u64>,
}

impl Plan {
    fn min_batch(&self) -> usize {
        if self.drop_last { self.batch_size } else { 1 }
    }

    /// Moves a position that cannot start another batch to the next epoch.
    fn normalize(&self, epoch: u64, pos: usize) -> (u64, usize) {
        if pos.saturating_add(self.min_batch()) > self.per_shard {
            (epoch + 1, 0)
        } else {
            (epoch, pos)
        }
    }

    fn next_batch(&self, cursor: (u64, usize)) -> Option<BatchSpec> {
        let (epoch, start) = self.normalize(cursor.0, cursor.1);
        if self.end_epoch.is_some_and(|end| epoch >= end) {
            return None;
        }
        Some(BatchSpec { epoch, start, end: (start + self.batch_size).min(self.per_shard) })
    }

    /// This shard's order of dataset indices for `epoch`.
    fn order(&self, epoch: u64) -> Vec<usize> {
        let Shard { index, count } = self.shard;
        let take = |base: &[usize]| -> Vec<usize> {
            (0..self.per_shard).map(|j| base[index + j * count]).collect()
        };
        if self.shuffle {
            take(&permutation(self.len, self.seed, epoch))
        } else {
            (0..self.per_shard).map(|j| index + j * count).collect()
        }
    }

    fn state(&self, (epoch, pos): (u64, usize)) -> LoaderState {
        LoaderState {
            epoch,
            position: pos as u64,
            seed: self.seed,
            shuffle: self.shuffle,
            shard: self.shard,
            dataset_len: self.len as u64,
        }
    }

    fn check(&self, state: &LoaderState) -> Result<(u64, usize)> {
        let mismatch = |what: &str, saved: String, ours: String| {
            Err(DataError::StateMismatch(format!(
                "{what} differs: saved {saved}, loader has {ours}"
            )))
        };
        if state.dataset_len != self.len as u64 {
            return mismatch("dataset length", state.dataset_len.to_string(), self.len.to_string());
        }
        if state.shard != self.shard {
            return mismatch("shard", format!("{:?}", state.shard), format!("{:?}", self.shard));
        }
        if state.shuffle != self.shuffle {
            return mismatch("shuffle", state.shuffle.to_string(), self.shuffle.to_string());
        }
        if self.shuffle && state.seed != self.seed {
            return mismatch("seed", state.seed.to_string(), self.seed.to_string());
        }
        let pos = usize::try_from(state.position)
            .ok()
            .filter(|&p| p <= self.per_shard)
            .ok_or_else(|| {
                DataError::StateMismatch(format!(
                    "position {} is beyond the {} example(s) of an epoch",
                    state.position, self.per_shard
                ))
            })?;
        Ok(self.normalize(state.epoch, pos))
    }
}

/// Small cache of per-epoch orders shared by the workers.
#[derive(Debug, Default)]
struct OrderCache {
    entries: Mutex<VecDeque<(u64, Arc<[usize]>)>>,
}

impl OrderCache {
    const CAPACITY: usize = 2;

    fn get(&self, plan: &Plan, epoch: u64) -> Arc<[usize]> {
        if let Some((_, order)) = lock(&self.entries).iter().find(|(e, _)| *e == epoch) {
            return order.clone();
        }
        let order: Arc<[usize]> = plan.order(epoch).into();
        let mut entries = lock(&self.entries);
        if !entries.iter().any(|(e, _)| *e == epoch) {
            if entries.len() == Self::CAPACITY {
                entries.pop_front();
            }
            entries.push_back((epoch, order.clone()));
        }
        order
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn build_batch<D: Dataset + ?Sized>(
    dataset: &D,
    order: &[usize],
    spec: BatchSpec,
) -> Result<Batch> {
    let indices = order[spec.start..spec.end].to_vec();
    let examples = indices
        .iter()
        .map(|&i| dataset.get_for_epoch(i, spec.epoch))
        .collect::<Result<Vec<Example>>>()?;
    Batch::from_examples(&examples, indices, spec.epoch)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// A batch loader over a [`Dataset`] (see the [module docs](self)).
#[derive(Debug)]
pub struct Loader<D> {
    dataset: Arc<D>,
    config: LoaderConfig,
    plan: Plan,
}

impl<D> Clone for Loader<D> {
    fn clone(&self) -> Self {
        Loader {
            dataset: self.dataset.clone(),
            config: self.config.clone(),
            plan: self.plan.clone(),
        }
    }
}

impl<D: Dataset + 'static> Loader<D> {
    /// A loader over `dataset`. Fails if the configuration is invalid or if
    /// an epoch of this shard would hold no batch.
    pub fn new(dataset: D, config: LoaderConfig) -> Result<Self> {
        Self::from_arc(Arc::new(dataset), config)
    }

    /// A loader over a shared dataset.
    pub fn from_arc(dataset: Arc<D>, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::Config("batch size must be at least 1".into()));
        }
        if config.num_workers > 0 && config.prefetch == 0 {
            return Err(DataError::Config("prefetch must be at least 1 with workers".into()));
        }
        let shard = Shard::new(config.shard.index, config.shard.count)?;
        let len = dataset.len();
        let plan = Plan {
            len,
            per_shard: shard.shard_len(len),
            batch_size: config.batch_size,
            drop_last: config.drop_last,
            shuffle: config.shuffle,
            seed: config.seed,
            shard,
            end_epoch: config.epochs,
        };
        if plan.per_shard < plan.min_batch() {
            return Err(DataError::Config(format!(
                "shard {}/{} of a dataset of {len} example(s) holds {} example(s): no {}batch of {} fits",
                shard.index,
                shard.count,
                plan.per_shard,
                if config.drop_last { "full " } else { "" },
                config.batch_size
            )));
        }
        Ok(Loader { dataset, config, plan })
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<D> {
        &self.dataset
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Examples this shard sees per epoch (before `drop_last`).
    pub fn shard_len(&self) -> usize {
        self.plan.per_shard
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.plan.per_shard, self.plan.batch_size);
        if self.plan.drop_last { n / b } else { n.div_ceil(b) }
    }

    /// The state at the start of epoch 0.
    pub fn initial_state(&self) -> LoaderState {
        self.plan.state((0, 0))
    }

    /// Iterates from the start of epoch 0.
    pub fn iter(&self) -> LoaderIter<D> {
        LoaderIter::new(self.dataset.clone(), self.config.clone(), self.plan.clone(), (0, 0))
    }

    /// Iterates from a saved state.
    pub fn iter_from(&self, state: &LoaderState) -> Result<LoaderIter<D>> {
        let cursor = self.plan.check(state)?;
        Ok(LoaderIter::new(self.dataset.clone(), self.config.clone(), self.plan.clone(), cursor))
    }

    /// Iterates over epoch `epoch` only (whatever
    /// [`epochs`](LoaderConfig::epochs) says).
    pub fn epoch(&self, epoch: u64) -> LoaderIter<D> {
        let plan = Plan { end_epoch: Some(epoch.saturating_add(1)), ..self.plan.clone() };
        LoaderIter::new(self.dataset.clone(), self.config.clone(), plan, (epoch, 0))
    }
}

impl<D: Dataset + 'static> IntoIterator for &Loader<D> {
    type Item = Result<Batch>;
    type IntoIter = LoaderIter<D>;

    fn into_iter(self) -> LoaderIter<D> {
        self.iter()
    }
}

/// Bookkeeping shared by the consumer and the workers.
struct Queue {
    /// Next batch to hand to a worker.
    cursor: (u64, usize),
    /// Sequence number of the next batch to claim.
    next_claim: u64,
    /// Sequence number of the next batch to return.
    next_consume: u64,
    /// Built batches waiting to be returned.
    ready: BTreeMap<u64, (BatchSpec, Result<Batch>)>,
    /// Sequence number at which the batches run out (finite epochs).
    end: Option<u64>,
    shutdown: bool,
}

struct Shared<D> {
    dataset: Arc<D>,
    plan: Plan,
    orders: Arc<OrderCache>,
    capacity: u64,
    queue: Mutex<Queue>,
    /// Signalled when workers may claim more work (or must stop).
    work: Condvar,
    /// Signalled when a batch is ready or the end is known.
    ready: Condvar,
}

impl<D: Dataset> Shared<D> {
    fn worker(&self) {
        loop {
            let (seq, spec) = {
                let mut q = lock(&self.queue);
                loop {
                    if q.shutdown || q.end.is_some() {
                        return;
                    }
                    if q.next_claim < q.next_consume + self.capacity {
                        break;
                    }
                    q = self.work.wait(q).unwrap_or_else(PoisonError::into_inner);
                }
                match self.plan.next_batch(q.cursor) {
                    None => {
                        q.end = Some(q.next_claim);
                        self.ready.notify_all();
                        self.work.notify_all();
                        return;
                    }
                    Some(spec) => {
                        q.cursor = (spec.epoch, spec.end);
                        let seq = q.next_claim;
                        q.next_claim += 1;
                        (seq, spec)
                    }
                }
            };
            let result = catch_unwind(AssertUnwindSafe(|| {
                let order = self.orders.get(&self.plan, spec.epoch);
                build_batch(&*self.dataset, &order, spec)
            }))
            .unwrap_or_else(|payload| Err(DataError::WorkerPanic(panic_message(&*payload))));
            let mut q = lock(&self.queue);
            if q.shutdown {
                return;
            }
            q.ready.insert(seq, (spec, result));
            self.ready.notify_all();
        }
    }

    fn next(&self) -> Option<(BatchSpec, Result<Batch>)> {
        let mut q = lock(&self.queue);
        loop {
            let seq = q.next_consume;
            if let Some(item) = q.ready.remove(&seq) {
                q.next_consume += 1;
                self.work.notify_all();
                return Some(item);
            }
            if q.end == Some(seq) {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Worker threads and their shared queue; dropping it stops and joins them.
struct Pipeline<D> {
    shared: Arc<Shared<D>>,
    workers: Vec<JoinHandle<()>>,
}

impl<D: Dataset + 'static> Pipeline<D> {
    fn start(
        dataset: Arc<D>,
        plan: Plan,
        orders: Arc<OrderCache>,
        cursor: (u64, usize),
        config: &LoaderConfig,
    ) -> Self {
        let shared = Arc::new(Shared {
            dataset,
            plan,
            orders,
            capacity: config.prefetch.max(1) as u64,
            queue: Mutex::new(Queue {
                cursor,
                next_claim: 0,
                next_consume: 0,
                ready: BTreeMap::new(),
                end: None,
                shutdown: false,
            }),
            work: Condvar::new(),
            ready: Condvar::new(),
        });
        let workers = (0..config.num_workers)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("kiln-data-worker-{i}"))
                    .spawn(move || shared.worker())
            })
            .collect::<std::io::Result<Vec<_>>>();
        match workers {
            Ok(workers) => Pipeline { shared, workers },
            Err(_) => {
                // Could not spawn threads: stop any that started; the caller
                // falls back to building batches inline.
                lock(&shared.queue).shutdown = true;
                shared.work.notify_all();
                Pipeline { shared, workers: Vec::new() }
            }
        }
    }
}

impl<D> Drop for Pipeline<D> {
    fn drop(&mut self) {
        lock(&self.shared.queue).shutdown = true;
        self.shared.work.notify_all();
        self.shared.ready.notify_all();
        for handle in self.workers.drain(..) {
            // A worker that panicked outside `catch_unwind` has nothing left
            // to clean up; its panic was already reported by the runtime.
            let _ = handle.join();
        }
    }
}

/// An iterator of batches from a [`Loader`]; see [`state`](Self::state) and
/// [`restore`](Self::restore) for checkpointing.
///
/// Yields `Err` for a batch that could not be built (e.g. a corrupt file);
/// that batch still counts as consumed, so the caller may log and go on.
pub struct LoaderIter<D: Dataset + 'static> {
    dataset: Arc<D>,
    config: LoaderConfig,
    plan: Plan,
    /// Epoch orders, shared with the workers.
    orders: Arc<OrderCache>,
    /// Position after the last batch returned.
    consumed: (u64, usize),
    /// Started lazily on the first `next()` when `num_workers > 0`.
    pipeline: Option<Pipeline<D>>,
}

impl<D: Dataset + 'static> std::fmt::Debug for LoaderIter<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoaderIter")
            .field("state", &self.state())
            .field("workers_running", &self.pipeline.is_some())
            .finish()
    }
}

impl<D: Dataset + 'static> LoaderIter<D> {
    fn new(dataset: Arc<D>, config: LoaderConfig, plan: Plan, cursor: (u64, usize)) -> Self {
        let consumed = plan.normalize(cursor.0, cursor.1);
        LoaderIter { dataset, config, plan, orders: Arc::default(), consumed, pipeline: None }
    }

    /// The position after the last batch returned by `next()`.
    pub fn state(&self) -> LoaderState {
        self.plan.state(self.consumed)
    }

    /// The epoch of the next batch.
    pub fn epoch(&self) -> u64 {
        self.consumed.0
    }

    /// Jumps to a saved state: stops the workers, discards prefetched
    /// batches and resumes right after the examples `state` counts as
    /// consumed. Fails if the state was saved by a loader with a different
    /// dataset length, shard, shuffle flag or seed.
    pub fn restore(&mut self, state: &LoaderState) -> Result<()> {
        let cursor = self.plan.check(state)?;
        self.pipeline = None;
        self.consumed = cursor;
        Ok(())
    }

    fn next_inline(&mut self) -> Option<Result<Batch>> {
        let spec = self.plan.next_batch(self.consumed)?;
        self.consumed = self.plan.normalize(spec.epoch, spec.end);
        let order = self.orders.get(&self.plan, spec.epoch);
        Some(build_batch(&*self.dataset, &order, spec))
    }
}

impl<D: Dataset + 'static> Iterator for LoaderIter<D> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.config.num_workers == 0 {
            return self.next_inline();
        }
        let pipeline = self.pipeline.get_or_insert_with(|| {
            Pipeline::start(
                self.dataset.clone(),
                self.plan.clone(),
                self.orders.clone(),
                self.consumed,
                &self.config,
            )
        });
        if pipeline.workers.is_empty() {
            self.pipeline = None;
            return self.next_inline();
        }
        let (spec, result) = pipeline.shared.next()?;
        self.consumed = self.plan.normalize(spec.epoch, spec.end);
        Some(result)
    }
}
