use std::path::{Path, PathBuf};

use kiln_data::idx::read_idx;
use kiln_data::npy::{read_npy, read_npz};
use kiln_data::safetensors::read_safetensors;
use kiln_data::{
    CsvDataset, CsvOptions, DataError, ImageFolder, ImageFolderOptions, JsonlDataset, TextCorpus,
    TextLines, Tokenizer, fashion_mnist, mnist, tinyshakespeare,
};

use crate::common::tmp;

fn assert_missing(result: Result<(), DataError>, expected: &Path) {
    match result {
        Err(e @ DataError::Io { .. }) => {
            assert!(e.path().is_some_and(|p| p.starts_with(expected)), "{e}");
            assert!(e.to_string().contains(&expected.display().to_string()), "{e}");
        }
        other => panic!("expected an Io error for {}, got {other:?}", expected.display()),
    }
}

#[test]
fn every_reader_names_a_missing_file() {
    let dir = tmp();
    let p = |name: &str| -> PathBuf { dir.path().join(name) };
    assert_missing(read_idx(p("a.idx")).map(drop), &p("a.idx"));
    assert_missing(read_npy(p("a.npy")).map(drop), &p("a.npy"));
    assert_missing(read_npz(p("a.npz")).map(drop), &p("a.npz"));
    assert_missing(read_safetensors(p("a.st")).map(drop), &p("a.st"));
    assert_missing(CsvDataset::open(p("a.csv"), &CsvOptions::new()).map(drop), &p("a.csv"));
    assert_missing(JsonlDataset::open(p("a.jsonl"), &[]).map(drop), &p("a.jsonl"));
    assert_missing(TextCorpus::open(p("a.txt"), Tokenizer::Char).map(drop), &p("a.txt"));
    assert_missing(TextLines::open(p("b.txt")).map(drop), &p("b.txt"));
    assert_missing(
        ImageFolder::open(p("imgs"), ImageFolderOptions::default()).map(drop),
        &p("imgs"),
    );
    assert_missing(mnist(dir.path(), kiln_data::Split::Train).map(drop), dir.path());
    assert_missing(fashion_mnist(dir.path(), kiln_data::Split::Test).map(drop), dir.path());
    assert_missing(tinyshakespeare(dir.path(), Tokenizer::Char).map(drop), dir.path());
}

#[test]
fn messages_are_specific() {
    let e = DataError::corrupt("x/y.idx", 12, "bad thing");
    assert_eq!(e.to_string(), "x/y.idx: corrupt data at byte offset 12: bad thing");
    let e = DataError::truncated("f.npy", 100, 28, "an NPY array");
    assert_eq!(
        e.to_string(),
        "f.npy: truncated at byte offset 100: needed 28 more byte(s) for an NPY array"
    );
    let e = DataError::parse("t.csv", 7, "expected 3 column(s), found 2");
    assert_eq!(e.to_string(), "t.csv:7: expected 3 column(s), found 2");
    assert_eq!(e.path(), Some(Path::new("t.csv")));
    assert_eq!(DataError::Config("c".into()).path(), None);
}
