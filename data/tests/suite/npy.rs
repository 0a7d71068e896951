use std::io::Cursor;
use std::path::Path;

use half::f16;
use kiln_data::npy::{
    encode_npy, npy_dataset, npz_dataset, parse_npy, parse_npz, read_npy, read_npz, write_npy,
    write_npz,
};
use kiln_data::{DType, DataError, Dataset, HostTensor};

use crate::common::{fixture, tmp, write};

#[test]
fn reads_files_written_by_numpy() {
    let t = read_npy(fixture("c_f32.npy")).unwrap();
    assert_eq!(t.shape(), &[2, 3]);
    assert_eq!(t.as_f32(), Some(&[0.0, 0.5, 1.0, 1.5, 2.0, 2.5][..]));

    // Fortran order is transposed into row-major order.
    let t = read_npy(fixture("fortran_f64.npy")).unwrap();
    assert_eq!(t.shape(), &[2, 3]);
    assert_eq!(t.as_slice::<f64>(), Some(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0][..]));

    let t = read_npy(fixture("big_endian_i4.npy")).unwrap();
    assert_eq!(t.as_slice::<i32>(), Some(&[1, -2, 300000][..]));

    let t = read_npy(fixture("bool.npy")).unwrap();
    assert_eq!(t.as_slice::<bool>(), Some(&[true, false, false, true][..]));

    let t = read_npy(fixture("scalar_u8.npy")).unwrap();
    assert_eq!(t.shape(), &[] as &[usize]);
    assert_eq!(t.as_slice::<u8>(), Some(&[7u8][..]));
}

#[test]
fn reads_npz_archives_written_by_numpy() {
    let m = read_npz(fixture("xy.npz")).unwrap();
    assert_eq!(m.names().collect::<Vec<_>>(), vec!["x", "y"]);
    assert_eq!(m.get("x").unwrap().shape(), &[4, 3]);
    assert_eq!(m.get("y").unwrap().as_slice::<i64>(), Some(&[0, 1, 2, 3][..]));

    let m = read_npz(fixture("stored.npz")).unwrap();
    assert_eq!(
        m.get("a").unwrap().as_slice::<f16>(),
        Some(&[f16::from_f32(1.5), f16::from_f32(2.5)][..])
    );

    let ds = npz_dataset(fixture("xy.npz")).unwrap();
    assert_eq!(ds.len(), 4);
    let ex = ds.get(2).unwrap();
    assert_eq!(ex.require("x").unwrap().as_f32(), Some(&[6.0, 7.0, 8.0][..]));
    assert_eq!(ex.require("y").unwrap(), &HostTensor::scalar(2i64));
}

#[test]
fn round_trips_all_numpy_dtypes() {
    let dir = tmp();
    for dtype in DType::ALL {
        let values: Vec<f64> = (0..6).map(f64::from).collect();
        let t = HostTensor::from_vec(vec![3, 1, 2], values).unwrap().cast(dtype);
        let p = dir.path().join(format!("{dtype}.npy"));
        if dtype == DType::BF16 {
            assert!(matches!(write_npy(&p, &t), Err(DataError::UnsupportedDType(_))));
            continue;
        }
        write_npy(&p, &t).unwrap();
        assert_eq!(read_npy(&p).unwrap(), t, "{dtype}");
    }
    let v = HostTensor::vector(vec![1.0f64, -2.0, 3.5]);
    let bytes = encode_npy(&v).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    assert_eq!((10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64, 0);
    assert!(String::from_utf8_lossy(&bytes[10..80]).contains("'shape': (3,)"));
    assert_eq!(parse_npy(&bytes, Path::new("v.npy")).unwrap(), v);
}

#[test]
fn npz_round_trip_stored_and_deflated() {
    let dir = tmp();
    let x = HostTensor::from_vec(vec![3, 2], vec![1u16, 2, 3, 4, 5, 6]).unwrap();
    let y = HostTensor::vector(vec![true, false, true]);
    for compress in [false, true] {
        let p = dir.path().join(format!("a{compress}.npz"));
        write_npz(&p, [("x", &x), ("y", &y)], compress).unwrap();
        let m = read_npz(&p).unwrap();
        assert_eq!(m.get("x"), Some(&x));
        assert_eq!(m.get("y"), Some(&y));
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(parse_npz(Cursor::new(bytes), &p).unwrap(), m);
    }
}

#[test]
fn npy_files_combine_into_a_dataset() {
    let dir = tmp();
    let xs = HostTensor::from_vec(vec![2, 2], vec![1f32, 2., 3., 4.]).unwrap();
    write_npy(dir.path().join("x.npy"), &xs).unwrap();
    write_npy(dir.path().join("y.npy"), &HostTensor::vector(vec![5i32, 6])).unwrap();
    let ds =
        npy_dataset([("x", dir.path().join("x.npy")), ("y", dir.path().join("y.npy"))]).unwrap();
    assert_eq!(ds.get(1).unwrap().require("y").unwrap(), &HostTensor::scalar(6i32));
    write_npy(dir.path().join("z.npy"), &HostTensor::vector(vec![1i32, 2, 3])).unwrap();
    assert!(
        npy_dataset([("x", dir.path().join("x.npy")), ("z", dir.path().join("z.npy"))]).is_err()
    );
}

#[test]
fn malformed_npy_files_are_typed_errors() {
    let path = Path::new("m.npy");
    let good = std::fs::read(fixture("c_f32.npy")).unwrap();

    let err = parse_npy(&good[..good.len() - 3], path).unwrap_err();
    assert!(matches!(err, DataError::Truncated { needed: 3, .. }), "{err:?}");
    assert!(err.to_string().contains("m.npy"));
    let mut long = good.clone();
    long.extend_from_slice(&[0; 4]);
    assert!(matches!(parse_npy(&long, path), Err(DataError::Corrupt { .. })));
    assert!(matches!(parse_npy(&good[..5], path), Err(DataError::Truncated { .. })));
    assert!(matches!(parse_npy(&good[..40], path), Err(DataError::Truncated { .. })));
    let mut bad = good.clone();
    bad[1] = b'X';
    assert!(matches!(parse_npy(&bad, path), Err(DataError::Corrupt { offset: 0, .. })));
    let mut bad = good.clone();
    bad[6] = 9;
    assert!(matches!(parse_npy(&bad, path), Err(DataError::Corrupt { offset: 6, .. })));

    let header = |dict: &str, payload: &[u8]| {
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        v.extend_from_slice(dict.as_bytes());
        v.extend_from_slice(payload);
        v
    };
    let f = header("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", &[0; 8]);
    assert!(matches!(parse_npy(&f, path), Err(DataError::UnsupportedDType(_))));
    let f = header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", &[0; 4]);
    assert!(matches!(parse_npy(&f, path), Err(DataError::UnsupportedDType(_))));
    let f = header("{'descr': '<f4', 'shape': (1,), }", &[0; 4]);
    assert!(matches!(parse_npy(&f, path), Err(DataError::Corrupt { .. })));
    let f = header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 'a'), }", &[0; 4]);
    assert!(matches!(parse_npy(&f, path), Err(DataError::Corrupt { .. })));
    let f = header("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", &[1, 7]);
    assert!(matches!(parse_npy(&f, path), Err(DataError::Corrupt { .. })));
    let f = header(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999, 99999999999), }",
        &[],
    );
    assert!(parse_npy(&f, path).is_err());
    // Version 2 headers use a 4-byte length.
    let dict = "{'descr': '<i2', 'fortran_order': False, 'shape': (2,), }";
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    v2.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    v2.extend_from_slice(dict.as_bytes());
    v2.extend_from_slice(&[1, 0, 2, 0]);
    assert_eq!(parse_npy(&v2, path).unwrap().as_slice::<i16>(), Some(&[1i16, 2][..]));
}

#[test]
fn malformed_npz_files_are_errors() {
    let dir = tmp();
    let p = write(dir.path(), "bad.npz", b"PK\x03\x04 not really a zip");
    let err = read_npz(&p).unwrap_err();
    assert!(err.to_string().contains("bad.npz"), "{err}");
    let good = std::fs::read(fixture("xy.npz")).unwrap();
    let p = write(dir.path(), "trunc.npz", &good[..good.len() - 30]);
    assert!(read_npz(&p).is_err());
    assert!(matches!(read_npz(dir.path().join("none.npz")), Err(DataError::Io { .. })));
}
