use kiln_data::{Column, CsvDataset, CsvOptions, DataError, Dataset, HostTensor};

use crate::common::{gzip, tmp, write};

#[test]
fn header_and_named_label() {
    let dir = tmp();
    let p = write(dir.path(), "t.csv", "a,\"label\",b\n1.5,2,-3\n4,0,5e-1\r\n\n");
    let ds = CsvDataset::open(&p, &CsvOptions::new().header(true).label("label")).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.column_names().unwrap(), &["a".to_string(), "label".into(), "b".into()]);
    assert_eq!(ds.feature_columns(), &[0, 2]);
    assert_eq!(ds.label_column(), Some(1));
    let ex = ds.get(0).unwrap();
    assert_eq!(ex.require("features").unwrap().as_f32(), Some(&[1.5, -3.0][..]));
    assert_eq!(ex.require("label").unwrap(), &HostTensor::scalar(2i32));
    let ex = ds.get(1).unwrap();
    assert_eq!(ex.require("features").unwrap().as_f32(), Some(&[4.0, 0.5][..]));
}

#[test]
fn no_header_skip_rows_last_label_gzip_and_delimiter() {
    let dir = tmp();
    let text = "3,2,class_a,class_b\n1;2;0\n3;4;1\n5;6;1\n";
    let p = write(dir.path(), "t.csv.gz", gzip(text.as_bytes()));
    let opts = CsvOptions::new().skip_rows(1).delimiter(b';').label(Column::Last).num_classes(2);
    let ds = CsvDataset::open(&p, &opts).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.num_features(), 2);
    let all = ds.as_arrays().field("label").unwrap();
    assert_eq!(all.as_slice::<i32>(), Some(&[0, 1, 1][..]));
}

#[test]
fn explicit_features_and_no_label() {
    let path = std::path::Path::new("mem.csv");
    let ds = CsvDataset::parse(
        "1,2,3\n4,5,6\n",
        path,
        &CsvOptions::new().features([Column::Index(2), Column::Index(0)]),
    )
    .unwrap();
    let ex = ds.get(1).unwrap();
    assert_eq!(ex.names().collect::<Vec<_>>(), vec!["features"]);
    assert_eq!(ex.require("features").unwrap().as_f32(), Some(&[6.0, 4.0][..]));
    let empty = CsvDataset::parse("", path, &CsvOptions::new().label(0usize)).unwrap();
    assert_eq!(empty.len(), 0);
}

#[test]
fn wrong_column_count_names_the_line() {
    let dir = tmp();
    let p = write(dir.path(), "bad.csv", "x,y\n1,2\n3\n");
    match CsvDataset::open(&p, &CsvOptions::new().header(true)) {
        Err(DataError::Parse { path, line, msg }) => {
            assert_eq!(path, p);
            assert_eq!(line, 3);
            assert!(msg.contains("expected 2 column(s), found 1"), "{msg}");
        }
        other => panic!("expected Parse, got {other:?}"),
    }
}

#[test]
fn bad_cells_and_labels_are_errors() {
    let path = std::path::Path::new("mem.csv");
    let err = CsvDataset::parse("1,2\n1,x\n", path, &CsvOptions::new()).unwrap_err();
    assert!(matches!(err, DataError::Parse { line: 2, .. }), "{err:?}");
    let err = CsvDataset::parse("1,\n", path, &CsvOptions::new()).unwrap_err();
    assert!(matches!(err, DataError::Parse { line: 1, .. }), "{err:?}");
    let err = CsvDataset::parse("1,0.5\n", path, &CsvOptions::new().label(1usize)).unwrap_err();
    assert!(err.to_string().contains("not an integer"), "{err}");
    let err =
        CsvDataset::parse("1,2\n1,7\n", path, &CsvOptions::new().label(1usize).num_classes(3))
            .unwrap_err();
    match err {
        DataError::LabelOutOfRange { label, context, .. } => {
            assert_eq!(label, 7);
            assert!(context.contains("mem.csv:2"), "{context}");
        }
        other => panic!("expected LabelOutOfRange, got {other:?}"),
    }
    let err = CsvDataset::parse("1,-1\n", path, &CsvOptions::new().label(1usize)).unwrap_err();
    assert!(matches!(err, DataError::LabelOutOfRange { label: -1, .. }));
    let err = CsvDataset::parse("1,2\n", path, &CsvOptions::new().label("y")).unwrap_err();
    assert!(err.to_string().contains("no header"), "{err}");
    let err = CsvDataset::parse("1,2\n", path, &CsvOptions::new().label(5usize)).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = CsvDataset::parse("\"1,2\n", path, &CsvOptions::new()).unwrap_err();
    assert!(matches!(err, DataError::Parse { line: 1, .. }));
}

#[test]
fn invalid_utf8_is_a_parse_error() {
    let dir = tmp();
    let p = write(dir.path(), "bin.csv", b"1,2\n3,\xff\n");
    assert!(matches!(
        CsvDataset::open(&p, &CsvOptions::new()),
        Err(DataError::Parse { line: 2, .. })
    ));
}
