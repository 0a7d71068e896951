//! Reading whole files, transparently decompressing gzip.
//!
//! Gzip is detected by its magic bytes (`1f 8b`), not by the file name, so
//! `train-images-idx3-ubyte` and `train-images-idx3-ubyte.gz` are read the
//! same way. Multi-member gzip files are decoded completely and CRC/length
//! trailers are checked, so a truncated or corrupted `.gz` is an error, never
//! short data.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::error::{DataError, Result};

/// The two magic bytes that start every gzip member.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether `bytes` starts with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Reads a whole file.
pub fn read_file(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

/// Decompresses `bytes` if they are gzip, else returns them unchanged.
/// `path` is only used in error messages.
pub fn decompress_if_gzip(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if !is_gzip(&bytes) {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
    let mut decoder = MultiGzDecoder::new(bytes.as_slice());
    match decoder.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) => {
            let what = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "truncated gzip stream"
            } else {
                "invalid gzip stream"
            };
            Err(DataError::corrupt(
                path,
                out.len() as u64,
                format!("{what} (offset is in the decompressed data): {e}"),
            ))
        }
    }
}

/// Reads a whole file and decompresses it if it is gzip.
pub fn read_maybe_gzip(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    decompress_if_gzip(read_file(path)?, path)
}
