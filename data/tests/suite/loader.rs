use std::collections::HashSet;
use std::sync::Arc;

use kiln_data::{
    ArrayDataset, Batch, DataError, Dataset, Example, HostTensor, Loader, LoaderConfig, Result,
    Shard,
};

/// A dataset whose example `i` is `{"i": i}`.
pub fn counting(n: usize) -> ArrayDataset {
    ArrayDataset::new([("i", HostTensor::vector((0..n as i64).collect::<Vec<_>>()))]).unwrap()
}

/// The dataset indices of every batch.
pub fn indices(it: impl Iterator<Item = Result<Batch>>) -> Vec<Vec<usize>> {
    it.map(|b| b.unwrap().indices().to_vec()).collect()
}

#[test]
fn in_order_batches_with_and_without_drop_last() {
    let loader = Loader::new(counting(10), LoaderConfig::new(4)).unwrap();
    assert_eq!(loader.batches_per_epoch(), 3);
    let batches: Vec<Batch> = loader.iter().map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[2].indices(), &[8, 9]);
    let i = batches[1].require("i").unwrap();
    assert_eq!(i.shape(), &[4]);
    assert_eq!(i.as_slice::<i64>(), Some(&[4, 5, 6, 7][..]));

    let loader = Loader::new(counting(10), LoaderConfig::new(4).drop_last(true)).unwrap();
    assert_eq!(loader.batches_per_epoch(), 2);
    assert_eq!(indices(loader.iter()), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
}

#[test]
fn shuffling_is_a_pure_function_of_seed_and_epoch() {
    let cfg = LoaderConfig::new(7).shuffle(123).epochs(3);
    let a = indices(Loader::new(counting(50), cfg.clone()).unwrap().iter());
    let b = indices(Loader::new(counting(50), cfg).unwrap().iter());
    assert_eq!(a, b);
    let per_epoch = 8; // ceil(50 / 7)
    assert_eq!(a.len(), 3 * per_epoch);
    let epochs: Vec<Vec<usize>> = a.chunks(per_epoch).map(|c| c.concat()).collect();
    for e in &epochs {
        let mut sorted = e.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }
    assert_ne!(epochs[0], epochs[1]);
    assert_ne!(epochs[0], (0..50).collect::<Vec<_>>());
    let other = indices(
        Loader::new(counting(50), LoaderConfig::new(7).shuffle(124).epochs(3)).unwrap().iter(),
    );
    assert_ne!(other, a);
    // `epoch(e)` reproduces one epoch of the sequence.
    let loader = Loader::new(counting(50), LoaderConfig::new(7).shuffle(123)).unwrap();
    assert_eq!(indices(loader.epoch(2)).concat(), epochs[2]);
}

#[test]
fn output_is_identical_for_any_worker_count_and_prefetch() {
    let base_cfg = LoaderConfig::new(6).shuffle(5).epochs(4);
    let base = indices(Loader::new(counting(45), base_cfg.clone()).unwrap().iter());
    for workers in [1, 2, 3, 8] {
        for prefetch in [1, 2, 16] {
            let cfg = base_cfg.clone().workers(workers).prefetch(prefetch);
            let got = indices(Loader::new(counting(45), cfg).unwrap().iter());
            assert_eq!(got, base, "workers {workers}, prefetch {prefetch}");
        }
    }
}

#[test]
fn shards_are_disjoint_equal_and_in_lockstep() {
    let n = 103;
    let count = 4;
    let per_shard = n / count;
    let mut seen = HashSet::new();
    let mut sizes = Vec::new();
    for index in 0..count {
        let cfg = LoaderConfig::new(5)
            .shuffle(77)
            .shard(Shard::new(index, count).unwrap())
            .workers(index % 2);
        let loader = Loader::new(counting(n), cfg).unwrap();
        assert_eq!(loader.shard_len(), per_shard);
        let all = indices(loader.iter()).concat();
        sizes.push(all.len());
        for i in all {
            assert!(seen.insert(i), "index {i} in two shards");
        }
    }
    assert_eq!(sizes, vec![per_shard; count]);
    assert_eq!(seen.len(), per_shard * count);

    // Shard k's j-th example is position k + j*count of the global order.
    let global =
        indices(Loader::new(counting(n), LoaderConfig::new(n).shuffle(77)).unwrap().iter())
            .concat();
    let shard2 = indices(
        Loader::new(
            counting(n),
            LoaderConfig::new(per_shard).shuffle(77).shard(Shard::new(2, count).unwrap()),
        )
        .unwrap()
        .iter(),
    )
    .concat();
    let expected: Vec<usize> = (0..per_shard).map(|j| global[2 + j * count]).collect();
    assert_eq!(shard2, expected);
}

#[test]
fn shard_for_device_combines_process_and_device() {
    let s = Shard::for_device(1, 2, 3, 4).unwrap();
    assert_eq!((s.index, s.count), (7, 8));
    assert!(Shard::for_device(2, 2, 0, 4).is_err());
    assert!(Shard::new(3, 3).is_err());
    assert_eq!(Shard::for_process(1, 3).unwrap().shard_len(10), 3);
    assert_eq!(Shard::default(), Shard::SINGLE);
}

#[test]
fn infinite_iteration_repeats_epochs() {
    let loader =
        Loader::new(counting(5), LoaderConfig::new(2).shuffle(3).repeat().workers(2)).unwrap();
    let batches: Vec<Batch> = loader.iter().take(30).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 30);
    assert_eq!(batches[29].epoch(), 9);
    assert_eq!(batches[2].indices().len(), 1);
}

#[test]
fn invalid_configurations_are_rejected() {
    assert!(matches!(Loader::new(counting(5), LoaderConfig::new(0)), Err(DataError::Config(_))));
    assert!(Loader::new(counting(5), LoaderConfig::new(6).drop_last(true)).is_err());
    assert!(Loader::new(counting(5), LoaderConfig::new(6)).is_ok());
    assert!(Loader::new(counting(0), LoaderConfig::new(1)).is_err());
    let bad_shard = Shard { index: 4, count: 2 };
    assert!(Loader::new(counting(5), LoaderConfig::new(1).shard(bad_shard)).is_err());
    assert!(Loader::new(counting(5), LoaderConfig::new(1).workers(1).prefetch(0)).is_err());
    assert!(
        Loader::new(counting(5), LoaderConfig::new(2).shard(Shard::new(0, 6).unwrap())).is_err()
    );
}

/// Fails for one index, panics for another.
struct Flaky;

impl Dataset for Flaky {
    fn len(&self) -> usize {
        6
    }
    fn get(&self, index: usize) -> Result<Example> {
        match index {
            2 => Err(DataError::Config("flaky example".into())),
            4 => panic!("boom at 4"),
            i => Ok(Example::new().with("i", HostTensor::scalar(i as i32))),
        }
    }
}

#[test]
fn failing_batches_are_reported_and_skipped() {
    for workers in [0usize, 2] {
        let loader = Loader::new(Flaky, LoaderConfig::new(2).workers(workers)).unwrap();
        let results: Vec<Result<Batch>> = if workers == 0 {
            // Without workers a panic propagates to the caller, like any
            // panic in user code; only check the error path.
            loader.iter().take(2).collect()
        } else {
            loader.iter().collect()
        };
        assert!(results[0].is_ok());
        assert!(matches!(&results[1], Err(DataError::Config(m)) if m == "flaky example"));
        if workers > 0 {
            assert_eq!(results.len(), 3);
            match &results[2] {
                Err(DataError::WorkerPanic(msg)) => assert!(msg.contains("boom at 4"), "{msg}"),
                other => panic!("expected WorkerPanic, got {other:?}"),
            }
        }
    }
}

#[test]
fn shared_and_boxed_datasets_work() {
    let ds: Arc<dyn Dataset> = Arc::new(counting(9));
    let loader = Loader::new(ds, LoaderConfig::new(3).workers(2)).unwrap();
    assert_eq!(indices(loader.iter()).len(), 3);
    let boxed: Box<dyn Dataset> = Box::new(counting(4));
    let loader = Loader::new(boxed, LoaderConfig::new(4)).unwrap();
    let mut n = 0;
    for batch in &loader {
        n += batch.unwrap().size();
    }
    assert_eq!(n, 4);
}
