//! The IDX format of MNIST and Fashion-MNIST (raw or gzip).
//!
//! An IDX file is big-endian: two zero bytes, a type code, the number of
//! dimensions `n`, `n` big-endian `u32` dimension sizes, then the elements in
//! row-major order. Type codes: `0x08` u8, `0x09` i8, `0x0B` i16, `0x0C` i32,
//! `0x0D` f32, `0x0E` f64.
//!
//! The reader checks that the payload is exactly as long as the header
//! announces: a short file is [`DataError::Truncated`], extra bytes are
//! [`DataError::Corrupt`].

use std::path::Path;

use crate::dataset::ArrayDataset;
use crate::error::{DataError, Result};
use crate::gzip::read_maybe_gzip;
use crate::tensor::{DType, Endian, HostTensor, TensorData};

fn dtype_of_code(code: u8) -> Option<DType> {
    Some(match code {
        0x08 => DType::U8,
        0x09 => DType::I8,
        0x0B => DType::I16,
        0x0C => DType::I32,
        0x0D => DType::F32,
        0x0E => DType::F64,
        _ => return None,
    })
}

fn code_of_dtype(dtype: DType) -> Option<u8> {
    Some(match dtype {
        DType::U8 => 0x08,
        DType::I8 => 0x09,
        DType::I16 => 0x0B,
        DType::I32 => 0x0C,
        DType::F32 => 0x0D,
        DType::F64 => 0x0E,
        _ => return None,
    })
}

/// A parsed IDX header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxHeader {
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Size of the header in bytes (where the payload starts).
    pub header_len: usize,
}

/// Parses and validates the header of an IDX file held in `bytes`, including
/// the check that the payload length matches. `path` names the file in
/// errors.
pub fn parse_idx_header(bytes: &[u8], path: &Path) -> Result<IdxHeader> {
    if bytes.len() < 4 {
        return Err(DataError::truncated(
            path,
            bytes.len() as u64,
            (4 - bytes.len()) as u64,
            "the IDX magic number",
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::corrupt(
            path,
            0,
            format!(
                "bad IDX magic {:02x}{:02x}{:02x}{:02x} (must start with two zero bytes)",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    let dtype = dtype_of_code(bytes[2]).ok_or_else(|| {
        DataError::corrupt(path, 2, format!("unknown IDX type code 0x{:02x}", bytes[2]))
    })?;
    let ndim = usize::from(bytes[3]);
    let header_len = 4 + 4 * ndim;
    if bytes.len() < header_len {
        return Err(DataError::truncated(
            path,
            bytes.len() as u64,
            (header_len - bytes.len()) as u64,
            format!("{ndim} IDX dimension sizes"),
        ));
    }
    let shape: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let payload = shape
        .iter()
        .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            DataError::corrupt(path, 4, format!("IDX shape {shape:?} overflows the address space"))
        })?;
    let available = bytes.len() - header_len;
    if available < payload {
        return Err(DataError::truncated(
            path,
            bytes.len() as u64,
            (payload - available) as u64,
            format!("an IDX {dtype} array of shape {shape:?}"),
        ));
    }
    if available > payload {
        return Err(DataError::corrupt(
            path,
            (header_len + payload) as u64,
            format!(
                "{} trailing byte(s) after an IDX {dtype} array of shape {shape:?}",
                available - payload
            ),
        ));
    }
    Ok(IdxHeader { dtype, shape, header_len })
}

/// Parses an IDX file held in memory (already decompressed).
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<HostTensor> {
    let header = parse_idx_header(bytes, path)?;
    decode_payload(&header, &bytes[header.header_len..], path)
}

fn decode_payload(header: &IdxHeader, payload: &[u8], path: &Path) -> Result<HostTensor> {
    let data = TensorData::decode(header.dtype, payload, Endian::Big).ok_or_else(|| {
        DataError::corrupt(path, header.header_len as u64, "undecodable IDX payload")
    })?;
    HostTensor::new(header.shape.clone(), data)
}

/// Reads an IDX file, raw or gzip-compressed (detected by magic bytes).
pub fn read_idx(path: impl AsRef<Path>) -> Result<HostTensor> {
    let path = path.as_ref();
    let mut bytes = read_maybe_gzip(path)?;
    let header = parse_idx_header(&bytes, path)?;
    if header.dtype == DType::U8 {
        // Reuse the buffer: drop the header in place instead of copying.
        bytes.drain(..header.header_len);
        return HostTensor::new(header.shape, bytes);
    }
    decode_payload(&header, &bytes[header.header_len..], path)
}

/// Serializes a tensor in IDX format (uncompressed). Supported dtypes:
/// u8, i8, i16, i32, f32 and f64.
pub fn encode_idx(tensor: &HostTensor) -> Result<Vec<u8>> {
    let code = code_of_dtype(tensor.dtype())
        .ok_or_else(|| DataError::UnsupportedDType(format!("{} in IDX", tensor.dtype())))?;
    let ndim = u8::try_from(tensor.rank()).map_err(|_| {
        DataError::Shape(format!("IDX allows at most 255 dimensions, got {}", tensor.rank()))
    })?;
    let mut out = vec![0, 0, code, ndim];
    for &d in tensor.shape() {
        let d = u32::try_from(d)
            .map_err(|_| DataError::Shape(format!("IDX dimension {d} does not fit in u32")))?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    let size = tensor.dtype().size_in_bytes();
    out.reserve(tensor.as_bytes().len());
    for elem in tensor.as_bytes().chunks_exact(size) {
        // `as_bytes` is native-endian; IDX wants big-endian.
        if cfg!(target_endian = "little") {
            out.extend(elem.iter().rev());
        } else {
            out.extend_from_slice(elem);
        }
    }
    Ok(out)
}

/// Writes a tensor as an uncompressed IDX file.
pub fn write_idx(path: impl AsRef<Path>, tensor: &HostTensor) -> Result<()> {
    let path = path.as_ref();
    std::fs::write(path, encode_idx(tensor)?).map_err(|e| DataError::io(path, e))
}

/// Reads a rank-1 integer IDX label file as `i32` labels, checking each
/// against `num_classes` if given.
pub fn read_idx_labels(path: impl AsRef<Path>, num_classes: Option<usize>) -> Result<HostTensor> {
    let path = path.as_ref();
    let labels = read_idx(path)?;
    if labels.rank() != 1 || !labels.dtype().is_int() {
        return Err(DataError::corrupt(
            path,
            2,
            format!(
                "a label file must hold a rank-1 integer array, found {} of shape {:?}",
                labels.dtype(),
                labels.shape()
            ),
        ));
    }
    let header_len = 8u64;
    let size = labels.dtype().size_in_bytes() as u64;
    let values = labels.cast(DType::I32).into_i32_vec()?;
    if let Some(k) = num_classes {
        for (i, &label) in values.iter().enumerate() {
            if label < 0 || label as usize >= k {
                return Err(DataError::LabelOutOfRange {
                    label: i64::from(label),
                    num_classes: k,
                    context: format!(
                        "{}: byte offset {}",
                        path.display(),
                        header_len + i as u64 * size
                    ),
                });
            }
        }
    }
    Ok(HostTensor::vector(values))
}

/// Loads an image/label pair of IDX files as a dataset with fields `image`
/// (the image array's rows, e.g. `[28, 28]` u8) and `label` (`i32` scalar).
///
/// Both files may be gzip-compressed. Fails if the counts differ or if a
/// label is outside `0..num_classes` (when given).
pub fn idx_dataset(
    images: impl AsRef<Path>,
    labels: impl AsRef<Path>,
    num_classes: Option<usize>,
) -> Result<ArrayDataset> {
    let (images, labels) = (images.as_ref(), labels.as_ref());
    let image_tensor = read_idx(images)?;
    let label_tensor = read_idx_labels(labels, num_classes)?;
    let n_images = image_tensor.shape().first().copied().unwrap_or(0);
    let n_labels = label_tensor.numel();
    if image_tensor.rank() == 0 || n_images != n_labels {
        return Err(DataError::Shape(format!(
            "{} holds {n_images} image(s) but {} holds {n_labels} label(s)",
            images.display(),
            labels.display()
        )));
    }
    ArrayDataset::new([("image", image_tensor), ("label", label_tensor)])
}
