//! Property tests ("fuzzing") of the binary parsers: random bytes, and
//! truncations and bit flips of valid files, must give `Err` (or, for a flip
//! that keeps the file valid, `Ok`) — never a panic, never short data.

use std::io::{Cursor, Write};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use kiln_data::gzip::decompress_if_gzip;
use kiln_data::idx::{encode_idx, parse_idx};
use kiln_data::npy::{encode_npy, parse_npy, parse_npz, write_npz};
use kiln_data::safetensors::{encode_safetensors, parse_safetensors};
use kiln_data::{CsvDataset, CsvOptions, DType, HostTensor, JsonlDataset};
use proptest::prelude::*;

const PATH: &str = "fuzz.bin";

fn sample_tensor() -> HostTensor {
    let values: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    HostTensor::from_vec(vec![2, 3, 4], values).unwrap()
}

fn valid_idx() -> Vec<u8> {
    encode_idx(&sample_tensor()).unwrap()
}

fn valid_npy() -> Vec<u8> {
    encode_npy(&sample_tensor()).unwrap()
}

fn valid_safetensors() -> Vec<u8> {
    let labels = HostTensor::vector(vec![1i64, 2]);
    let mask = HostTensor::vector(vec![true, false, true]);
    encode_safetensors([("x", &sample_tensor()), ("y", &labels), ("m", &mask)]).unwrap()
}

fn valid_gzip() -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(&valid_idx()).unwrap();
    enc.finish().unwrap()
}

fn valid_npz() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npz");
    let labels = HostTensor::vector(vec![1u8, 2]);
    write_npz(&p, [("x", &sample_tensor()), ("y", &labels)], true).unwrap();
    std::fs::read(p).unwrap()
}

fn path() -> &'static Path {
    Path::new(PATH)
}

/// Parses with every binary reader; none may panic.
fn parse_all(bytes: &[u8]) {
    let _ = parse_idx(bytes, path());
    let _ = parse_npy(bytes, path());
    let _ = parse_safetensors(bytes, path());
    let _ = decompress_if_gzip(bytes.to_vec(), path());
    let _ = parse_npz(Cursor::new(bytes), path());
}

fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut v = bytes.to_vec();
    let i = bit / 8 % v.len();
    v[i] ^= 1 << (bit % 8);
    v
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Do not write regression files into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        parse_all(&bytes);
    }

    #[test]
    fn random_bytes_behind_valid_magic_never_panic(
        kind in 0usize..4,
        tail in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = match kind {
            0 => vec![0, 0, 0x08, 2],
            1 => b"\x93NUMPY\x01\x00".to_vec(),
            2 => vec![0x1f, 0x8b, 8, 0],
            _ => b"PK\x03\x04".to_vec(),
        };
        bytes.extend(tail);
        parse_all(&bytes);
    }

    #[test]
    fn truncated_files_are_errors(cut in 0usize..10_000) {
        let idx = valid_idx();
        prop_assert!(parse_idx(&idx[..cut % idx.len()], path()).is_err());
        let npy = valid_npy();
        prop_assert!(parse_npy(&npy[..cut % npy.len()], path()).is_err());
        let st = valid_safetensors();
        prop_assert!(parse_safetensors(&st[..cut % st.len()], path()).is_err());
        let gz = valid_gzip();
        let short = &gz[..cut % gz.len()];
        // An empty input is not gzip at all and is returned as is.
        if !short.is_empty() {
            let out = decompress_if_gzip(short.to_vec(), path());
            prop_assert!(out.is_err() || short.len() < 2, "truncated gzip decoded");
        }
        let npz = valid_npz();
        prop_assert!(parse_npz(Cursor::new(&npz[..cut % npz.len()]), path()).is_err());
    }

    #[test]
    fn bit_flips_never_panic_or_change_the_length(bit in 0usize..100_000) {
        let idx = valid_idx();
        if let Ok(t) = parse_idx(&flip(&idx, bit), path()) {
            prop_assert_eq!(t.numel(), 24);
        }
        let npy = valid_npy();
        if let Ok(t) = parse_npy(&flip(&npy, bit), path()) {
            prop_assert_eq!(t.as_bytes().len(), npy.len() - 128);
        }
        let st = valid_safetensors();
        let _ = parse_safetensors(&flip(&st, bit), path());
        let gz = flip(&valid_gzip(), bit);
        if let Ok(out) = decompress_if_gzip(gz.clone(), path()) {
            if kiln_data::gzip::is_gzip(&gz) {
                // Flips in header fields (e.g. mtime) go unnoticed; the
                // payload is protected by the CRC and length trailer.
                prop_assert_eq!(out, valid_idx());
            } else {
                // A flipped magic makes it plain data, passed through.
                prop_assert_eq!(out, gz);
            }
        }
        let npz = valid_npz();
        if let Ok(m) = parse_npz(Cursor::new(flip(&npz, bit)), path()) {
            prop_assert!(m.get("x").is_none_or(|x| x.numel() == 24));
        }
    }

    #[test]
    fn random_text_never_panics(text in "[0-9a-z,;\"\\.\\-\n\\[\\]{}: ]{0,200}") {
        let _ = CsvDataset::parse(&text, path(), &CsvOptions::new().label(kiln_data::Column::Last));
        let _ = CsvDataset::parse(&text, path(), &CsvOptions::new().header(true).label("a"));
        let _ = JsonlDataset::parse(&text, path(), &[("a", DType::F32), ("b", DType::U8)]);
    }
}
