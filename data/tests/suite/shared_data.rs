//! Checks against the real shared data sets. Each test returns early, with
//! a note, when the data directory is absent; every format is also covered
//! by the generated-file tests.

use kiln_data::builtin::{TINYSHAKESPEARE_TRAIN_FRACTION, open_builtin};
use kiln_data::transform::{cast_scaled, normalize};
use kiln_data::{
    Column, CsvDataset, CsvOptions, DType, Dataset, DatasetExt, Loader, LoaderConfig, Split,
    Tokenizer, fashion_mnist, mnist, tinyshakespeare,
};

use crate::common::shared_data_dir;

fn class_counts(ds: &impl Dataset) -> Vec<usize> {
    let mut counts = vec![0; 10];
    for i in 0..ds.len() {
        let ex = ds.get(i).unwrap();
        counts[ex.require("label").unwrap().get_i64(0).unwrap() as usize] += 1;
    }
    counts
}

#[test]
fn mnist_has_the_documented_shape_and_class_counts() {
    let Some(dir) = shared_data_dir() else { return };
    let train = mnist(&dir, Split::Train).unwrap();
    let test = mnist(dir.join("mnist"), Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    let ex = train.get(0).unwrap();
    let img = ex.require("image").unwrap();
    assert_eq!((img.shape(), img.dtype()), (&[28usize, 28][..], DType::U8));
    assert_eq!(&class_counts(&train)[..3], &[5923, 6742, 5958]);
    assert_eq!(&class_counts(&test)[..3], &[980, 1135, 1032]);

    // A training-style pipeline over the real data.
    let ds = test
        .map(cast_scaled("image", DType::F32, 1.0 / 255.0))
        .map(normalize("image", &[0.1307], &[0.3081]).unwrap());
    let loader =
        Loader::new(ds, LoaderConfig::new(128).shuffle(0).drop_last(true).workers(2)).unwrap();
    let mut batches = 0;
    for batch in loader.iter().take(5) {
        let batch = batch.unwrap();
        assert_eq!(batch.require("image").unwrap().shape(), &[128, 28, 28]);
        assert_eq!(batch.require("label").unwrap().dtype(), DType::I32);
        batches += 1;
    }
    assert_eq!(batches, 5);
}

#[test]
fn fashion_mnist_is_balanced() {
    let Some(dir) = shared_data_dir() else { return };
    let test = fashion_mnist(&dir, Split::Test).unwrap();
    assert_eq!(class_counts(&test), vec![1000; 10]);
    let by_name = open_builtin("fashion-mnist", &dir, Split::Train).unwrap();
    assert_eq!(by_name.len(), 60_000);
}

#[test]
fn tinyshakespeare_has_65_characters() {
    let Some(dir) = shared_data_dir() else { return };
    let corpus = tinyshakespeare(&dir, Tokenizer::Char).unwrap();
    assert_eq!(corpus.len(), 1_115_394);
    assert_eq!(corpus.vocab().len(), 65);
    assert_eq!(corpus.vocab().decode(&corpus.tokens()[..14]).unwrap(), "First Citizen:");
    let (train, val) = corpus.split_windows(256, TINYSHAKESPEARE_TRAIN_FRACTION).unwrap();
    assert_eq!(train.tokens().len(), 1_003_854);
    assert_eq!(train.tokens().len() + val.tokens().len(), 1_115_394);
    let by_name = open_builtin("tinyshakespeare", &dir, Split::Test).unwrap();
    assert_eq!(by_name.len(), val.len());
    let bytes = tinyshakespeare(dir.join("text/tinyshakespeare.txt"), Tokenizer::Byte).unwrap();
    assert_eq!(bytes.vocab().len(), 256);
}

#[test]
fn sklearn_csv_files_parse() {
    let Some(dir) = shared_data_dir() else { return };
    let iris = CsvDataset::open(
        dir.join("sklearn/iris.csv"),
        &CsvOptions::new().skip_rows(1).label(Column::Last).num_classes(3),
    )
    .unwrap();
    assert_eq!((iris.len(), iris.num_features()), (150, 4));
    let digits = CsvDataset::open(
        dir.join("sklearn/digits.csv.gz"),
        &CsvOptions::new().label(Column::Last).num_classes(10),
    )
    .unwrap();
    assert_eq!((digits.len(), digits.num_features()), (1797, 64));
    for (name, rows, features) in [("breast_cancer.csv", 569, 30), ("wine_data.csv", 178, 13)] {
        let ds = CsvDataset::open(
            dir.join("sklearn").join(name),
            &CsvOptions::new().skip_rows(1).label(Column::Last),
        )
        .unwrap();
        assert_eq!((ds.len(), ds.num_features()), (rows, features), "{name}");
    }
}
