use kiln_data::idx::{encode_idx, idx_dataset, parse_idx, read_idx, read_idx_labels, write_idx};
use kiln_data::{DType, DataError, Dataset, HostTensor};

use crate::common::{gzip, tmp, write};

fn images(n: usize) -> HostTensor {
    let pixels: Vec<u8> = (0..n * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
    HostTensor::from_vec(vec![n, 4, 3], pixels).unwrap()
}

#[test]
fn round_trips_every_idx_dtype_raw_and_gzip() {
    let dir = tmp();
    let tensors = [
        images(5),
        HostTensor::from_vec(vec![2, 2], vec![-1i8, 2, -3, 4]).unwrap(),
        HostTensor::from_vec(vec![3], vec![-300i16, 0, 300]).unwrap(),
        HostTensor::from_vec(vec![3], vec![-70000i32, 1, 70000]).unwrap(),
        HostTensor::from_vec(vec![1, 2], vec![1.5f32, -2.25]).unwrap(),
        HostTensor::from_vec(vec![2], vec![1e300f64, -0.5]).unwrap(),
    ];
    for (i, t) in tensors.iter().enumerate() {
        let raw = write(dir.path(), &format!("t{i}.idx"), encode_idx(t).unwrap());
        assert_eq!(&read_idx(&raw).unwrap(), t);
        let gz = write(dir.path(), &format!("t{i}.idx.gz"), gzip(&encode_idx(t).unwrap()));
        assert_eq!(&read_idx(&gz).unwrap(), t);
    }
    // The header is big-endian with the documented magic.
    let bytes = encode_idx(&images(2)).unwrap();
    assert_eq!(&bytes[..8], &[0, 0, 0x08, 3, 0, 0, 0, 2]);
    assert!(encode_idx(&HostTensor::vector(vec![1u32])).is_err());
}

#[test]
fn gzip_is_detected_by_magic_not_name() {
    let dir = tmp();
    let t = images(3);
    let p = write(dir.path(), "compressed-but-no-suffix", gzip(&encode_idx(&t).unwrap()));
    assert_eq!(read_idx(&p).unwrap(), t);
    let p = write(dir.path(), "plain.gz", encode_idx(&t).unwrap());
    assert_eq!(read_idx(&p).unwrap(), t);
}

#[test]
fn image_label_pairs_become_a_dataset() {
    let dir = tmp();
    let imgs = write(dir.path(), "img.gz", gzip(&encode_idx(&images(6)).unwrap()));
    let labels = HostTensor::vector(vec![0u8, 1, 2, 0, 1, 2]);
    let lbl = write(dir.path(), "lbl", encode_idx(&labels).unwrap());
    let ds = idx_dataset(&imgs, &lbl, Some(3)).unwrap();
    assert_eq!(ds.len(), 6);
    let ex = ds.get(4).unwrap();
    assert_eq!(ex.names().collect::<Vec<_>>(), vec!["image", "label"]);
    assert_eq!(ex.require("image").unwrap().shape(), &[4, 3]);
    assert_eq!(
        ex.require("image").unwrap().as_slice::<u8>(),
        images(6).row(4).unwrap().as_slice::<u8>()
    );
    assert_eq!(ex.require("label").unwrap(), &HostTensor::scalar(1i32));
    assert!(matches!(ds.get(6), Err(DataError::IndexOutOfRange { index: 6, len: 6 })));
}

#[test]
fn labels_out_of_range_name_file_and_offset() {
    let dir = tmp();
    let lbl = write(
        dir.path(),
        "labels.idx",
        encode_idx(&HostTensor::vector(vec![0u8, 9, 10, 1])).unwrap(),
    );
    match read_idx_labels(&lbl, Some(10)) {
        Err(DataError::LabelOutOfRange { label, num_classes, context }) => {
            assert_eq!((label, num_classes), (10, 10));
            assert!(context.contains("labels.idx"), "{context}");
            assert!(context.contains("byte offset 10"), "{context}");
        }
        other => panic!("expected LabelOutOfRange, got {other:?}"),
    }
    assert!(read_idx_labels(&lbl, None).is_ok());
    let not_labels = write(dir.path(), "img.idx", encode_idx(&images(2)).unwrap());
    assert!(matches!(read_idx_labels(&not_labels, None), Err(DataError::Corrupt { .. })));
}

#[test]
fn count_mismatch_is_an_error() {
    let dir = tmp();
    let imgs = write(dir.path(), "img", encode_idx(&images(3)).unwrap());
    let lbl = write(dir.path(), "lbl", encode_idx(&HostTensor::vector(vec![0u8, 1])).unwrap());
    let err = idx_dataset(&imgs, &lbl, None).unwrap_err();
    assert!(err.to_string().contains("3 image(s)"), "{err}");
}

#[test]
fn truncation_trailing_bytes_and_bad_headers_are_typed_errors() {
    let path = std::path::Path::new("mem.idx");
    let good = encode_idx(&images(2)).unwrap();
    match parse_idx(&good[..good.len() - 5], path) {
        Err(DataError::Truncated { path: p, offset, needed, .. }) => {
            assert_eq!(p, path);
            assert_eq!(offset, good.len() as u64 - 5);
            assert_eq!(needed, 5);
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert!(matches!(parse_idx(&good[..2], path), Err(DataError::Truncated { .. })));
    assert!(matches!(parse_idx(&good[..9], path), Err(DataError::Truncated { .. })));

    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        parse_idx(&long, path),
        Err(DataError::Corrupt { offset, .. }) if offset == good.len() as u64
    ));

    let mut bad = good.clone();
    bad[0] = 1;
    assert!(matches!(parse_idx(&bad, path), Err(DataError::Corrupt { offset: 0, .. })));
    let mut bad = good.clone();
    bad[2] = 0x42;
    assert!(matches!(parse_idx(&bad, path), Err(DataError::Corrupt { offset: 2, .. })));

    // A header claiming an absurd size is rejected without allocating.
    let huge = [0, 0, 0x0E, 3, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255];
    assert!(parse_idx(&huge, path).is_err());
}

#[test]
fn corrupt_gzip_and_missing_files_are_errors() {
    let dir = tmp();
    let gz = gzip(&encode_idx(&images(20)).unwrap());
    let truncated = write(dir.path(), "trunc.gz", &gz[..gz.len() / 2]);
    let err = read_idx(&truncated).unwrap_err();
    assert!(matches!(err, DataError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("trunc.gz"), "{err}");

    let mut flipped = gz.clone();
    let n = flipped.len();
    flipped[n - 6] ^= 0xFF; // inside the CRC32 trailer
    let p = write(dir.path(), "crc.gz", flipped);
    assert!(read_idx(&p).is_err());

    let missing = dir.path().join("nope.idx");
    match read_idx(&missing) {
        Err(DataError::Io { path, source }) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn write_idx_writes_files() {
    let dir = tmp();
    let p = dir.path().join("w.idx");
    let t = HostTensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap();
    write_idx(&p, &t).unwrap();
    assert_eq!(read_idx(&p).unwrap().dtype(), DType::F32);
}
