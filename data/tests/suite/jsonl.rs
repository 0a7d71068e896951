use std::path::Path;

use kiln_data::{DType, DataError, Dataset, HostTensor, JsonlDataset};

use crate::common::{gzip, tmp, write};

#[test]
fn numeric_fields_of_any_shape() {
    let dir = tmp();
    let text = r#"{"x": [[1, 2], [3, 4.5]], "y": 1, "ok": true, "name": "ignored"}

{"x": [[5, 6], [7, 8]], "y": 0, "ok": false}
"#;
    let p = write(dir.path(), "d.jsonl.gz", gzip(text.as_bytes()));
    let ds = JsonlDataset::open(&p, &[("x", DType::F32), ("y", DType::I64), ("ok", DType::Bool)])
        .unwrap();
    assert_eq!(ds.len(), 2);
    let ex = ds.get(0).unwrap();
    let x = ex.require("x").unwrap();
    assert_eq!(x.shape(), &[2, 2]);
    assert_eq!(x.as_f32(), Some(&[1.0, 2.0, 3.0, 4.5][..]));
    assert_eq!(ex.require("y").unwrap(), &HostTensor::scalar(1i64));
    assert_eq!(ex.require("ok").unwrap(), &HostTensor::scalar(true));
    assert_eq!(ds.as_arrays().field("x").unwrap().shape(), &[2, 2, 2]);
}

fn parse_err(text: &str, fields: &[(&str, DType)]) -> DataError {
    JsonlDataset::parse(text, Path::new("m.jsonl"), fields).unwrap_err()
}

#[test]
fn bad_lines_name_the_line() {
    let f32x = [("x", DType::F32)];
    let e = parse_err("{\"x\": 1}\n{\"x\": \n", &f32x);
    assert!(matches!(e, DataError::Parse { line: 2, .. }), "{e:?}");
    let e = parse_err("{\"x\": 1}\n[1]\n", &f32x);
    assert!(matches!(e, DataError::Parse { line: 2, .. }), "{e:?}");
    let e = parse_err("{\"x\": 1}\n\n{\"y\": 1}\n", &f32x);
    assert!(e.to_string().contains("m.jsonl:3: missing field `x`"), "{e}");
    let e = parse_err("{\"x\": [1, 2]}\n{\"x\": [1, 2, 3]}\n", &f32x);
    assert!(matches!(e, DataError::Parse { line: 2, .. }), "{e:?}");
    let e = parse_err("{\"x\": [[1, 2], [3]]}\n", &f32x);
    assert!(e.to_string().contains("ragged"), "{e}");
    let e = parse_err("{\"x\": \"a\"}\n", &f32x);
    assert!(matches!(e, DataError::Parse { line: 1, .. }), "{e:?}");
    let e = parse_err("{\"x\": 1.5}\n", &[("x", DType::I32)]);
    assert!(e.to_string().contains("not an integer"), "{e}");
    let e = parse_err("{\"x\": 300}\n", &[("x", DType::U8)]);
    assert!(e.to_string().contains("does not fit"), "{e}");
    let e = parse_err("{\"x\": 1}\n", &[("x", DType::Bool)]);
    assert!(matches!(e, DataError::Parse { .. }), "{e:?}");
    let e = parse_err("{\"x\": true}\n", &f32x);
    assert!(matches!(e, DataError::Parse { .. }), "{e:?}");
}

#[test]
fn integral_floats_and_large_integers() {
    let ds = JsonlDataset::parse(
        "{\"a\": 2.0, \"b\": 18446744073709551615}\n",
        Path::new("m"),
        &[("a", DType::I32), ("b", DType::U64)],
    )
    .unwrap();
    let ex = ds.get(0).unwrap();
    assert_eq!(ex.require("a").unwrap(), &HostTensor::scalar(2i32));
    assert_eq!(ex.require("b").unwrap(), &HostTensor::scalar(u64::MAX));
}
