//! TensorBoard event files (`[logging] tensorboard = "DIR"`): the metrics of a run as
//! scalar summaries that `tensorboard --logdir DIR` plots.
//!
//! An event file is a sequence of TFRecords (`u64` length, masked CRC-32C of the length,
//! the bytes, masked CRC-32C of the bytes), each an `Event` protocol buffer: the first holds
//! `file_version = "brain.Event:2"`, every other a `Summary` with one `simple_value`. No
//! well-kept Rust crate writes these, and the three messages need a dozen lines of
//! protobuf encoding, so they are written here; the CRC comes from the `crc32c` crate.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::TrainError;

/// Appends scalar summaries to a new event file in a directory.
#[derive(Debug)]
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `dir` if needed and a new event file in it
    /// (`events.out.tfevents.<seconds>.<host>.<pid>`; a resumed run adds a file, and
    /// TensorBoard drops the older file's points past the resume step).
    pub fn create(dir: &Path) -> Result<EventWriter, TrainError> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or_else(|| "localhost".into());
        let name = format!(
            "events.out.tfevents.{}.{host}.{}.{}",
            now.as_secs(),
            std::process::id(),
            now.subsec_nanos()
        );
        let path = dir.join(name);
        let file = File::create(&path).map_err(|e| TrainError::io(&path, e))?;
        let mut w = EventWriter { out: BufWriter::new(file), path };
        let mut event = Vec::new();
        field_double(&mut event, 1, wall_time());
        field_bytes(&mut event, 3, b"brain.Event:2");
        w.record(&event)?;
        w.flush()?;
        Ok(w)
    }

    /// The event file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the scalar `value` of `tag` at `step`.
    pub fn scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<(), TrainError> {
        let mut value_msg = Vec::new();
        field_bytes(&mut value_msg, 1, tag.as_bytes());
        key(&mut value_msg, 2, 5);
        value_msg.extend_from_slice(&(value as f32).to_le_bytes());
        let mut summary = Vec::new();
        field_bytes(&mut summary, 1, &value_msg);
        let mut event = Vec::new();
        field_double(&mut event, 1, wall_time());
        key(&mut event, 2, 0);
        varint(&mut event, step);
        field_bytes(&mut event, 5, &summary);
        self.record(&event)
    }

    /// Flushes buffered events to the file (TensorBoard reads what is flushed).
    pub fn flush(&mut self) -> Result<(), TrainError> {
        self.out.flush().map_err(|e| TrainError::io(&self.path, e))
    }

    fn record(&mut self, data: &[u8]) -> Result<(), TrainError> {
        let len = (data.len() as u64).to_le_bytes();
        let mut rec = Vec::with_capacity(data.len() + 16);
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc(&len).to_le_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.out.write_all(&rec).map_err(|e| TrainError::io(&self.path, e))
    }
}

fn wall_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// TFRecord's masked CRC-32C.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u64, wire_type: u64) {
    varint(out, (field << 3) | wire_type);
}

fn field_double(out: &mut Vec<u8>, field: u64, v: f64) {
    key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn field_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads the scalars of an event file as `(step, tag, value)`, checking every record's
/// framing and CRCs (for tests and for `train-cli` users who want to verify a file).
pub fn read_scalars(path: &Path) -> Result<Vec<(u64, String, f32)>, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let bad = |msg: &str| TrainError::io(path, format!("not a valid event file: {msg}"));
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        if rest.len() < 12 {
            return Err(bad("truncated record header"));
        }
        let (len_bytes, after) = rest.split_at(8);
        let crc = u32::from_le_bytes(after[..4].try_into().expect("4 bytes"));
        if crc != masked_crc(len_bytes) {
            return Err(bad("length CRC mismatch"));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        let after = &after[4..];
        if after.len() < len + 4 {
            return Err(bad("truncated record"));
        }
        let (data, after) = after.split_at(len);
        if u32::from_le_bytes(after[..4].try_into().expect("4 bytes")) != masked_crc(data) {
            return Err(bad("data CRC mismatch"));
        }
        rest = &after[4..];
        let mut step = 0;
        let mut scalars = Vec::new();
        for (field, value) in fields(data).ok_or_else(|| bad("malformed Event"))? {
            match (field, value) {
                (2, Field::Varint(s)) => step = s,
                (5, Field::Bytes(summary)) => {
                    for (f, v) in fields(summary).ok_or_else(|| bad("malformed Summary"))? {
                        if let (1, Field::Bytes(v)) = (f, v) {
                            let (mut tag, mut val) = (String::new(), None);
                            for (g, w) in fields(v).ok_or_else(|| bad("malformed Value"))? {
                                match (g, w) {
                                    (1, Field::Bytes(t)) => {
                                        tag = String::from_utf8_lossy(t).into_owned()
                                    }
                                    (2, Field::Fixed32(x)) => val = Some(f32::from_bits(x)),
                                    _ => {}
                                }
                            }
                            scalars.extend(val.map(|v| (tag, v)));
                        }
                    }
                }
                _ => {}
            }
        }
        out.extend(scalars.into_iter().map(|(t, v)| (step, t, v)));
    }
    Ok(out)
}

enum Field<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Decodes the top-level fields of a protobuf message (`None` if malformed).
fn fields(mut b: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    fn read_varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let k = read_varint(&mut b)?;
        let field = match k & 7 {
            0 => Field::Varint(read_varint(&mut b)?),
            1 => {
                b = b.get(8..)?;
                Field::Fixed64
            }
            2 => {
                let n = read_varint(&mut b)? as usize;
                let (data, rest) = (b.get(..n)?, b.get(n..)?);
                b = rest;
                Field::Bytes(data)
            }
            5 => {
                let x = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
                b = &b[4..];
                Field::Fixed32(x)
            }
            _ => return None,
        };
        out.push((k >> 3, field));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_matches_tensorboard() {
        // Goldens from Python: tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c.
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
        assert_eq!(masked_crc(b""), 0xa282_ead8);
    }

    #[test]
    fn scalars_round_trip_and_corruption_is_detected() {
        let dir = std::env::temp_dir().join(format!("kiln-tb-{}", std::process::id()));
        let mut w = EventWriter::create(&dir).unwrap();
        w.scalar("train/loss", 1, 2.5).unwrap();
        w.scalar("eval/acc", 300, 0.875).unwrap();
        w.flush().unwrap();
        let path = w.path().to_path_buf();
        assert!(path.file_name().unwrap().to_str().unwrap().starts_with("events.out.tfevents."));
        let got = read_scalars(&path).unwrap();
        assert_eq!(got, vec![(1, "train/loss".into(), 2.5), (300, "eval/acc".into(), 0.875)]);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 6] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(read_scalars(&path).unwrap_err().to_string().contains("CRC mismatch"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
