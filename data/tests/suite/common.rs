//! Helpers shared by the test modules.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

/// A fresh temporary directory, removed when dropped.
pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("kiln-data-test-").tempdir().expect("create temp dir")
}

/// Gzip-compresses `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("gzip write");
    enc.finish().expect("gzip finish")
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent dir");
    }
    std::fs::write(&path, bytes).expect("write test file");
    path
}

/// A committed fixture file.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The shared real-data directory: `$KILN_DATA_DIR`, else `../shared/data`
/// beside the workspace root. `None` (with a note) if neither exists.
pub fn shared_data_dir() -> Option<PathBuf> {
    let candidates = [
        kiln_data::data_dir_from_env(),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_dir());
    if found.is_none() {
        eprintln!("note: no shared data directory (set KILN_DATA_DIR); skipping real-data checks");
    }
    found
}
