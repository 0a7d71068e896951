//! Sharding and the saved position of a loader.

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Which part of the data one consumer (a process, or a device of a
/// process) sees: shard `index` of `count`.
///
/// Each epoch's (shuffled) order is dealt round-robin: shard `k` gets
/// positions `k, k + count, k + 2·count, …`. Every shard gets
/// `len / count` examples; the remainder is dropped so that all shards have
/// equal sizes and step in lockstep. The shards of one epoch are disjoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// This consumer's shard, in `0..count`.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::SINGLE
    }
}

impl Shard {
    /// The whole dataset (shard 0 of 1).
    pub const SINGLE: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`; fails unless `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if index >= count {
            return Err(DataError::Config(format!(
                "shard index {index} is not below the shard count {count}"
            )));
        }
        Ok(Shard { index, count })
    }

    /// The shard of one device in a multi-process, multi-device job:
    /// `index = process_index * devices_per_process + device_index`,
    /// `count = process_count * devices_per_process`.
    pub fn for_device(
        process_index: usize,
        process_count: usize,
        device_index: usize,
        devices_per_process: usize,
    ) -> Result<Self> {
        if process_index >= process_count || device_index >= devices_per_process {
            return Err(DataError::Config(format!(
                "process {process_index}/{process_count}, device {device_index}/{devices_per_process} is out of range"
            )));
        }
        let count = process_count
            .checked_mul(devices_per_process)
            .ok_or_else(|| DataError::Config("shard count overflows".into()))?;
        Shard::new(process_index * devices_per_process + device_index, count)
    }

    /// The shard of one process (all its devices share it).
    pub fn for_process(process_index: usize, process_count: usize) -> Result<Self> {
        Shard::new(process_index, process_count)
    }

    /// Number of examples each shard gets from a dataset of `len`.
    pub fn shard_len(&self, len: usize) -> usize {
        len / self.count.max(1)
    }
}

/// Where a [`LoaderIter`](crate::LoaderIter) stands: a small, serializable
/// value to store in a checkpoint.
///
/// `position` counts the examples of this shard's `epoch` order that were
/// already consumed; restoring resumes with the example right after them,
/// so the sequence after a restore equals the uninterrupted one. Batches
/// that worker threads prefetched but that were not returned by `next()`
/// are not counted. The other fields identify the order and must match the
/// loader the state is restored into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoaderState {
    /// The epoch of the next batch.
    pub epoch: u64,
    /// Examples of this epoch (in this shard) already consumed.
    pub position: u64,
    /// Shuffle seed.
    pub seed: u64,
    /// Whether the order is shuffled.
    pub shuffle: bool,
    /// The shard.
    pub shard: Shard,
    /// Length of the dataset the order was computed for.
    pub dataset_len: u64,
}

impl LoaderState {
    /// Serializes to compact JSON.
    pub fn to_json(&self) -> String {
        // A struct of integers and bools always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the JSON written by [`to_json`](Self::to_json).
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|e| DataError::StateMismatch(format!("invalid loader state JSON: {e}")))
    }
}
