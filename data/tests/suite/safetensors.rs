use std::path::Path;

use half::bf16;
use kiln_data::safetensors::{
    encode_safetensors, parse_safetensors, read_safetensors, write_safetensors,
};
use kiln_data::{DType, DataError, Dataset, HostTensor, SafetensorsDataset, SafetensorsFile};

use crate::common::{fixture, tmp, write};

#[test]
fn reads_a_file_written_by_the_python_library() {
    let m = read_safetensors(fixture("xy.safetensors")).unwrap();
    let x = m.get("x").unwrap();
    assert_eq!(x.shape(), &[4, 2]);
    assert_eq!(x.as_f32(), Some(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0][..]));
    assert_eq!(m.get("y").unwrap().as_slice::<i32>(), Some(&[3, 1, 4, 1][..]));
}

#[test]
fn round_trips_every_dtype() {
    let dir = tmp();
    let tensors: Vec<(String, HostTensor)> = DType::ALL
        .iter()
        .map(|&d| {
            let values: Vec<f64> = (0..6).map(f64::from).collect();
            let t = HostTensor::from_vec(vec![2, 3], values).unwrap().cast(d);
            (format!("t_{d}"), t)
        })
        .collect();
    let p = dir.path().join("all.safetensors");
    write_safetensors(&p, tensors.iter().map(|(n, t)| (n.as_str(), t))).unwrap();
    let m = read_safetensors(&p).unwrap();
    for (name, t) in &tensors {
        assert_eq!(m.get(name), Some(t), "{name}");
    }
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(parse_safetensors(&bytes, &p).unwrap().len(), tensors.len());
}

#[test]
fn dataset_reads_rows_from_the_map() {
    let dir = tmp();
    let images =
        HostTensor::from_vec(vec![5, 2, 2], (0..20).map(|i| i as u8).collect::<Vec<_>>()).unwrap();
    let labels = HostTensor::vector(vec![4i64, 3, 2, 1, 0]);
    let extra = HostTensor::vector(vec![bf16::from_f32(1.0); 3]);
    let p = dir.path().join("d.safetensors");
    write_safetensors(&p, [("image", &images), ("label", &labels), ("extra", &extra)]).unwrap();

    let file = SafetensorsFile::open(&p).unwrap();
    assert_eq!(file.entries().len(), 3);
    assert_eq!(file.rows("image", 1, 3).unwrap(), images.slice_rows(1, 3).unwrap());
    assert!(file.rows("image", 3, 6).is_err());
    assert!(matches!(file.tensor("missing"), Err(DataError::MissingField(_))));

    let ds = SafetensorsDataset::open(&p, &["image", "label"]).unwrap();
    assert_eq!(ds.len(), 5);
    let ex = ds.get(3).unwrap();
    assert_eq!(ex.require("image").unwrap(), &images.row(3).unwrap());
    assert_eq!(ex.require("label").unwrap(), &HostTensor::scalar(1i64));
    assert!(ds.get(5).is_err());
    // All tensors as fields: leading dimensions disagree (5 vs 3).
    assert!(matches!(SafetensorsDataset::open::<&str>(&p, &[]), Err(DataError::Shape(_))));
}

#[test]
fn malformed_files_are_typed_errors() {
    let dir = tmp();
    let t = HostTensor::vector(vec![1f32, 2., 3.]);
    let good = encode_safetensors([("t", &t)]).unwrap();

    let p = write(dir.path(), "trunc.safetensors", &good[..good.len() - 1]);
    let err = SafetensorsFile::open(&p).unwrap_err();
    assert!(matches!(err, DataError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("trunc.safetensors"), "{err}");

    let p = write(dir.path(), "tiny.safetensors", &good[..3]);
    assert!(matches!(SafetensorsFile::open(&p), Err(DataError::Truncated { .. })));
    let p = write(dir.path(), "empty.safetensors", b"");
    assert!(matches!(SafetensorsFile::open(&p), Err(DataError::Truncated { .. })));

    let mut bad = good.clone();
    bad[8] = b'[';
    assert!(parse_safetensors(&bad, Path::new("x")).is_err());

    // A dtype we cannot represent.
    let header = br#"{"f":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#;
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header);
    f.extend_from_slice(&[0, 0]);
    assert!(matches!(parse_safetensors(&f, Path::new("x")), Err(DataError::UnsupportedDType(_))));

    // Bytes that are not valid booleans.
    let header = br#"{"b":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}"#;
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header);
    f.extend_from_slice(&[1, 3]);
    assert!(matches!(parse_safetensors(&f, Path::new("x")), Err(DataError::Corrupt { .. })));

    assert!(matches!(SafetensorsFile::open(dir.path().join("missing")), Err(DataError::Io { .. })));
}
