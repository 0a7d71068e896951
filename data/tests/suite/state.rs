use kiln_data::{DataError, Loader, LoaderConfig, LoaderState, Shard};

use crate::loader::{counting, indices};

fn configs() -> Vec<LoaderConfig> {
    let base = LoaderConfig::new(4).shuffle(99).epochs(3);
    vec![
        base.clone(),
        base.clone().drop_last(true),
        base.clone().workers(2),
        base.clone().workers(3).prefetch(5).drop_last(true),
        LoaderConfig::new(3).epochs(2).shard(Shard::new(1, 2).unwrap()).workers(1),
    ]
}

/// Stops after `k` batches, saves the state through JSON, resumes in a new
/// iterator, and checks the concatenation equals the uninterrupted run.
#[test]
fn resuming_from_any_position_continues_the_same_sequence() {
    for cfg in configs() {
        let loader = Loader::new(counting(18), cfg.clone()).unwrap();
        let full = indices(loader.iter());
        for k in 0..=full.len() {
            let mut it = loader.iter();
            let head: Vec<Vec<usize>> =
                it.by_ref().take(k).map(|b| b.unwrap().indices().to_vec()).collect();
            let json = it.state().to_json();
            drop(it);
            let state = LoaderState::from_json(&json).unwrap();
            let tail = indices(loader.iter_from(&state).unwrap());
            let joined: Vec<Vec<usize>> = head.into_iter().chain(tail).collect();
            assert_eq!(joined, full, "{cfg:?}, interrupted after {k} batches");
        }
    }
}

/// Same, but restoring into the running iterator while its workers have
/// prefetched batches that were never returned.
#[test]
fn restore_discards_prefetched_batches() {
    let cfg = LoaderConfig::new(2).shuffle(4).epochs(2).workers(3).prefetch(6);
    let loader = Loader::new(counting(11), cfg).unwrap();
    let full = indices(loader.iter());
    for k in [0, 1, 3, 5, 6, 9] {
        let mut it = loader.iter();
        let head = indices(it.by_ref().take(k));
        // Give the workers time to fill the queue ahead of the consumer.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let saved = it.state();
        // Read further, then jump back.
        let _ = indices(it.by_ref().take(3));
        it.restore(&saved).unwrap();
        assert_eq!(it.state(), saved);
        let tail = indices(it);
        let joined: Vec<Vec<usize>> = head.into_iter().chain(tail).collect();
        assert_eq!(joined, full, "interrupted after {k}");
    }
}

#[test]
fn epoch_boundaries_normalize_to_the_next_epoch() {
    let loader = Loader::new(counting(10), LoaderConfig::new(5).shuffle(1).epochs(2)).unwrap();
    let mut it = loader.iter();
    assert_eq!(it.state(), loader.initial_state());
    it.next().unwrap().unwrap();
    assert_eq!((it.state().epoch, it.state().position), (0, 5));
    it.next().unwrap().unwrap();
    assert_eq!((it.state().epoch, it.state().position), (1, 0));
    assert_eq!(it.epoch(), 1);
    it.next().unwrap().unwrap();
    it.next().unwrap().unwrap();
    assert!(it.next().is_none());
    assert_eq!((it.state().epoch, it.state().position), (2, 0));
    // A finished state resumes to nothing.
    assert!(loader.iter_from(&it.state()).unwrap().next().is_none());

    // With drop_last the short tail counts as the end of the epoch.
    let loader = Loader::new(counting(11), LoaderConfig::new(5).drop_last(true).epochs(2)).unwrap();
    let mut it = loader.iter();
    it.next();
    it.next();
    assert_eq!((it.state().epoch, it.state().position), (1, 0));
}

#[test]
fn state_is_small_serializable_and_checked() {
    let cfg = LoaderConfig::new(4).shuffle(7).shard(Shard::new(1, 2).unwrap());
    let loader = Loader::new(counting(20), cfg).unwrap();
    let mut it = loader.iter();
    it.next();
    let state = it.state();
    assert_eq!(state.position, 4);
    assert_eq!(state.seed, 7);
    assert_eq!(state.shard, Shard::new(1, 2).unwrap());
    let json = state.to_json();
    assert!(json.len() < 160, "{json}");
    assert_eq!(serde_json::from_str::<LoaderState>(&json).unwrap(), state);
    assert!(LoaderState::from_json("{").is_err());

    let mismatch =
        |s: LoaderState| matches!(loader.iter_from(&s), Err(DataError::StateMismatch(_)));
    assert!(mismatch(LoaderState { seed: 8, ..state }));
    assert!(mismatch(LoaderState { dataset_len: 21, ..state }));
    assert!(mismatch(LoaderState { shard: Shard::SINGLE, ..state }));
    assert!(mismatch(LoaderState { shuffle: false, ..state }));
    assert!(mismatch(LoaderState { position: 11, ..state }));
    assert!(loader.iter_from(&LoaderState { position: 10, ..state }).is_ok());

    // A restore may change the batch size: the next batch starts right
    // after the consumed examples.
    let order = indices(loader.iter()).concat();
    let loader3 =
        Loader::new(counting(20), LoaderConfig::new(3).shuffle(7).shard(Shard::new(1, 2).unwrap()))
            .unwrap();
    let rest = indices(loader3.iter_from(&state).unwrap()).concat();
    assert_eq!(rest, order[4..]);
}
