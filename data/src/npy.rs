//! NumPy `.npy` arrays and `.npz` archives.
//!
//! `.npy` versions 1.0, 2.0 and 3.0 are read, in either byte order and in C
//! or Fortran order (Fortran arrays are transposed into row-major order).
//! Supported element types: `b1`, `u1`..`u8`, `i1`..`i8`, `f2`, `f4`, `f8`.
//! `.npz` archives (stored or deflated zip) are read member by member.
//! [`encode_npy`], [`write_npy`] and [`write_npz`] produce files NumPy reads.

use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::dataset::ArrayDataset;
use crate::error::{DataError, Result};
use crate::example::TensorMap;
use crate::gzip::read_file;
use crate::tensor::{DType, Endian, HostTensor, TensorData, with_vec};

/// The six magic bytes that start every `.npy` file.
pub const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Upper bound on the header length we accept (NumPy itself caps it lower).
const MAX_HEADER_LEN: usize = 1 << 20;

/// A parsed `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: DType,
    /// Byte order of the payload.
    pub endian: Endian,
    /// Whether the payload is in Fortran (column-major) order.
    pub fortran_order: bool,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Offset of the payload in the file.
    pub data_offset: usize,
}

/// A value of the tiny Python-literal subset used by `.npy` headers.
#[derive(Debug, PartialEq)]
enum PyValue {
    Str(String),
    Bool(bool),
    Int(u64),
    Tuple(Vec<PyValue>),
    Other,
}

/// Parser for the header dictionary, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
struct PyParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> PyParser<'a> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at header position {}", c as char, self.pos))
        }
    }

    fn value(&mut self, depth: usize) -> std::result::Result<PyValue, String> {
        if depth > 8 {
            return Err("header nests too deeply".into());
        }
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                self.pos += 1;
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos] != q {
                    self.pos += 1;
                }
                if self.pos >= self.s.len() {
                    return Err("unterminated string in header".into());
                }
                let text = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
                self.pos += 1;
                Ok(PyValue::Str(text))
            }
            Some(b'(' | b'[') => {
                let close = if self.s[self.pos] == b'(' { b')' } else { b']' };
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        break;
                    }
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(c) if c == close => {}
                        _ => return Err("malformed tuple in header".into()),
                    }
                }
                Ok(PyValue::Tuple(items))
            }
            Some(b'{') => {
                // A nested dict (only in structured dtypes): skip it.
                self.dict_entries(depth + 1)?;
                Ok(PyValue::Other)
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let digits = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
                let n = digits
                    .parse::<u64>()
                    .map_err(|_| format!("integer {digits} too large in header"))?;
                // Python 2 era files may write longs as `3L`.
                if self.s.get(self.pos) == Some(&b'L') {
                    self.pos += 1;
                }
                Ok(PyValue::Int(n))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_alphanumeric() {
                    self.pos += 1;
                }
                Ok(match &self.s[start..self.pos] {
                    b"True" => PyValue::Bool(true),
                    b"False" => PyValue::Bool(false),
                    _ => PyValue::Other,
                })
            }
            _ => Err(format!("unexpected character at header position {}", self.pos)),
        }
    }

    fn dict_entries(
        &mut self,
        depth: usize,
    ) -> std::result::Result<Vec<(String, PyValue)>, String> {
        self.expect(b'{')?;
        let mut entries = Vec::new();
        loop {
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(entries);
            }
            let key = match self.value(depth)? {
                PyValue::Str(k) => k,
                _ => return Err("header dictionary keys must be strings".into()),
            };
            self.expect(b':')?;
            let value = self.value(depth)?;
            entries.push((key, value));
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err("malformed header dictionary".into()),
            }
        }
    }
}

fn parse_descr(descr: &str) -> std::result::Result<(DType, Endian), String> {
    let bytes = descr.as_bytes();
    let (order, rest) = match bytes.first() {
        Some(b'<') => (Some(Endian::Little), &descr[1..]),
        Some(b'>') => (Some(Endian::Big), &descr[1..]),
        Some(b'|' | b'=') => (None, &descr[1..]),
        _ => (None, descr),
    };
    let dtype = match rest {
        "b1" | "?" => DType::Bool,
        "u1" => DType::U8,
        "i1" => DType::I8,
        "u2" => DType::U16,
        "i2" => DType::I16,
        "f2" | "e" => DType::F16,
        "u4" => DType::U32,
        "i4" => DType::I32,
        "f4" => DType::F32,
        "u8" => DType::U64,
        "i8" => DType::I64,
        "f8" => DType::F64,
        _ => return Err(format!("unsupported NPY dtype {descr:?}")),
    };
    let native = if cfg!(target_endian = "little") { Endian::Little } else { Endian::Big };
    Ok((dtype, order.unwrap_or(native)))
}

/// Parses and validates the header of a `.npy` file held in `bytes`,
/// including the check that the payload length matches the shape.
pub fn parse_npy_header(bytes: &[u8], path: &Path) -> Result<NpyHeader> {
    if bytes.len() < 10 {
        return Err(DataError::truncated(
            path,
            bytes.len() as u64,
            (10 - bytes.len()) as u64,
            "the NPY preamble",
        ));
    }
    if &bytes[..6] != NPY_MAGIC {
        return Err(DataError::corrupt(path, 0, "missing \\x93NUMPY magic"));
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(DataError::truncated(
                    path,
                    bytes.len() as u64,
                    (12 - bytes.len()) as u64,
                    "the NPY v2 header length",
                ));
            }
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
            (n, 12)
        }
        v => {
            return Err(DataError::corrupt(path, 6, format!("unsupported NPY format version {v}")));
        }
    };
    if header_len > MAX_HEADER_LEN {
        return Err(DataError::corrupt(
            path,
            8,
            format!("NPY header length {header_len} is implausibly large"),
        ));
    }
    let data_offset = header_start + header_len;
    if bytes.len() < data_offset {
        return Err(DataError::truncated(
            path,
            bytes.len() as u64,
            (data_offset - bytes.len()) as u64,
            "the NPY header",
        ));
    }
    let header = &bytes[header_start..data_offset];
    let bad = |msg: String| DataError::corrupt(path, header_start as u64, msg);
    let mut parser = PyParser { s: header, pos: 0 };
    let entries = parser.dict_entries(0).map_err(bad)?;
    let find = |key: &str| entries.iter().find(|(k, _)| k == key).map(|(_, v)| v);

    let (dtype, endian) = match find("descr") {
        Some(PyValue::Str(d)) => parse_descr(d)
            .map_err(|msg| DataError::UnsupportedDType(format!("{}: {msg}", path.display())))?,
        Some(_) => {
            return Err(DataError::UnsupportedDType(format!(
                "{}: structured NPY dtypes are not supported",
                path.display()
            )));
        }
        None => return Err(bad("NPY header has no 'descr'".into())),
    };
    let fortran_order = match find("fortran_order") {
        Some(PyValue::Bool(b)) => *b,
        _ => return Err(bad("NPY header has no boolean 'fortran_order'".into())),
    };
    let shape = match find("shape") {
        Some(PyValue::Tuple(items)) => items
            .iter()
            .map(|v| match v {
                PyValue::Int(n) => usize::try_from(*n).ok(),
                _ => None,
            })
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| bad("NPY 'shape' must be a tuple of integers".into()))?,
        _ => return Err(bad("NPY header has no tuple 'shape'".into())),
    };
    let payload = shape
        .iter()
        .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("NPY shape {shape:?} overflows the address space")))?;
    let available = bytes.len() - data_offset;
    if available < payload {
        return Err(DataError::truncated(
            path,
            bytes.len() as u64,
            (payload - available) as u64,
            format!("an NPY {dtype} array of shape {shape:?}"),
        ));
    }
    if available > payload {
        return Err(DataError::corrupt(
            path,
            (data_offset + payload) as u64,
            format!("{} trailing byte(s) after the NPY array", available - payload),
        ));
    }
    Ok(NpyHeader { dtype, endian, fortran_order, shape, data_offset })
}

/// Parses a `.npy` file held in memory.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<HostTensor> {
    let header = parse_npy_header(bytes, path)?;
    let payload = &bytes[header.data_offset..];
    let data = TensorData::decode(header.dtype, payload, header.endian).ok_or_else(|| {
        DataError::corrupt(
            path,
            header.data_offset as u64,
            format!("invalid {} value in NPY payload", header.dtype),
        )
    })?;
    if header.fortran_order && header.shape.len() > 1 {
        let reversed: Vec<usize> = header.shape.iter().rev().copied().collect();
        let t = HostTensor::new(reversed, data)?;
        reverse_axes(&t)
    } else {
        HostTensor::new(header.shape, data)
    }
}

/// Transposes a tensor by reversing the order of its axes.
fn reverse_axes(t: &HostTensor) -> Result<HostTensor> {
    let in_shape = t.shape();
    let n = in_shape.len();
    let out_shape: Vec<usize> = in_shape.iter().rev().copied().collect();
    let mut in_strides = vec![1usize; n];
    for k in (0..n.saturating_sub(1)).rev() {
        in_strides[k] = in_strides[k + 1] * in_shape[k + 1];
    }
    // Output axis j is input axis n-1-j.
    let out_strides_in_input: Vec<usize> = (0..n).map(|j| in_strides[n - 1 - j]).collect();
    let data = with_vec!(t.data(), v => {
        let mut out = Vec::with_capacity(v.len());
        let mut idx = vec![0usize; n];
        let mut src = 0usize;
        for _ in 0..v.len() {
            out.push(v[src]);
            // Odometer increment over the output index, tracking `src`.
            for j in (0..n).rev() {
                idx[j] += 1;
                src += out_strides_in_input[j];
                if idx[j] < out_shape[j] {
                    break;
                }
                src -= out_strides_in_input[j] * idx[j];
                idx[j] = 0;
            }
        }
        TensorData::from(out)
    });
    HostTensor::new(out_shape, data)
}

/// Reads a `.npy` file.
pub fn read_npy(path: impl AsRef<Path>) -> Result<HostTensor> {
    let path = path.as_ref();
    parse_npy(&read_file(path)?, path)
}

fn descr_of(dtype: DType) -> Result<&'static str> {
    let little = cfg!(target_endian = "little");
    Ok(match dtype {
        DType::Bool => "|b1",
        DType::U8 => "|u1",
        DType::I8 => "|i1",
        DType::U16 if little => "<u2",
        DType::U16 => ">u2",
        DType::I16 if little => "<i2",
        DType::I16 => ">i2",
        DType::F16 if little => "<f2",
        DType::F16 => ">f2",
        DType::U32 if little => "<u4",
        DType::U32 => ">u4",
        DType::I32 if little => "<i4",
        DType::I32 => ">i4",
        DType::F32 if little => "<f4",
        DType::F32 => ">f4",
        DType::U64 if little => "<u8",
        DType::U64 => ">u8",
        DType::I64 if little => "<i8",
        DType::I64 => ">i8",
        DType::F64 if little => "<f8",
        DType::F64 => ">f8",
        DType::BF16 => return Err(DataError::UnsupportedDType("bf16 in NPY".into())),
    })
}

/// Serializes a tensor as a version 1.0 `.npy` file (C order).
pub fn encode_npy(tensor: &HostTensor) -> Result<Vec<u8>> {
    let descr = descr_of(tensor.dtype())?;
    let shape = match tensor.shape() {
        [d] => format!("({d},)"),
        dims => format!("({})", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the payload starts on a 64-byte boundary; end with '\n'.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let header_len = u16::try_from(header.len())
        .map_err(|_| DataError::Shape("NPY header too long for format 1.0".into()))?;
    let mut out = Vec::with_capacity(10 + header.len() + tensor.as_bytes().len());
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(tensor.as_bytes());
    Ok(out)
}

/// Writes a tensor as a `.npy` file.
pub fn write_npy(path: impl AsRef<Path>, tensor: &HostTensor) -> Result<()> {
    let path = path.as_ref();
    std::fs::write(path, encode_npy(tensor)?).map_err(|e| DataError::io(path, e))
}

fn zip_error(path: &Path, e: zip::result::ZipError) -> DataError {
    DataError::corrupt(path, 0, format!("invalid NPZ (zip) archive: {e}"))
}

/// Reads every array of an `.npz` archive held by `reader`, in archive
/// order, keyed by member name without the `.npy` suffix. `path` names the
/// archive in errors.
pub fn parse_npz<R: Read + Seek>(reader: R, path: &Path) -> Result<TensorMap> {
    let mut archive = zip::ZipArchive::new(reader).map_err(|e| zip_error(path, e))?;
    // The reader keeps one entry per name: a repeated name would hide an array.
    if archive.has_duplicate_names() {
        return Err(DataError::corrupt(path, 0, "the central directory names one member twice"));
    }
    let mut out = TensorMap::new();
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).map_err(|e| zip_error(path, e))?;
        if member.is_dir() {
            continue;
        }
        let name = member.name().map_err(|e| zip_error(path, e))?.into_owned();
        let member_path = path.join(&name);
        let mut bytes = Vec::new();
        member
            .read_to_end(&mut bytes)
            .map_err(|e| DataError::corrupt(&member_path, bytes.len() as u64, e.to_string()))?;
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        // A second member of the same name would silently replace the first.
        if out.contains(&key) {
            return Err(DataError::corrupt(
                &member_path,
                0,
                format!("the archive holds array `{key}` twice"),
            ));
        }
        out.insert(key, parse_npy(&bytes, &member_path)?);
    }
    Ok(out)
}

/// Reads every array of an `.npz` file (see [`parse_npz`]).
pub fn read_npz(path: impl AsRef<Path>) -> Result<TensorMap> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    parse_npz(std::io::BufReader::new(file), path)
}

/// Writes named tensors as an `.npz` archive, deflated if `compress`
/// (like `numpy.savez_compressed`) or stored (like `numpy.savez`).
pub fn write_npz<'a, S: AsRef<str>>(
    path: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = (S, &'a HostTensor)>,
    compress: bool,
) -> Result<()> {
    let path = path.as_ref();
    let io_err = |e: std::io::Error| DataError::io(path, e);
    let file = std::fs::File::create(path).map_err(io_err)?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let method =
        if compress { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
    let options =
        zip::write::SimpleFileOptions::default().compression_method(method).large_file(true);
    for (name, tensor) in tensors {
        zip.start_file(format!("{}.npy", name.as_ref()), options)
            .map_err(|e| zip_error(path, e))?;
        zip.write_all(&encode_npy(tensor)?).map_err(io_err)?;
    }
    let mut inner = zip.finish().map_err(|e| zip_error(path, e))?;
    inner.flush().map_err(io_err)
}

/// Loads an `.npz` archive as a dataset: every array becomes a field and
/// must share the leading dimension (e.g. `x` of shape `[N, D]` and `y` of
/// shape `[N]`).
pub fn npz_dataset(path: impl AsRef<Path>) -> Result<ArrayDataset> {
    ArrayDataset::from_map(read_npz(path)?)
}

/// Loads several `.npy` files as the named fields of one dataset.
pub fn npy_dataset<S: Into<String>, P: AsRef<Path>>(
    files: impl IntoIterator<Item = (S, P)>,
) -> Result<ArrayDataset> {
    let mut fields = TensorMap::new();
    for (name, path) in files {
        fields.insert(name, read_npy(path)?);
    }
    ArrayDataset::from_map(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npz_with_one_array_twice_is_an_error() {
        // `x.npy` and `x` both name array `x`; the second must not replace the first.
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        for (name, v) in [("x.npy", 1.0f32), ("x", 2.0)] {
            zip.start_file(name, options).unwrap();
            let t = HostTensor::from_vec(vec![1], vec![v]).unwrap();
            zip.write_all(&encode_npy(&t).unwrap()).unwrap();
        }
        let bytes = zip.finish().unwrap().into_inner();
        let err = parse_npz(std::io::Cursor::new(bytes), Path::new("a.npz")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("array `x` twice") && msg.contains("a.npz"), "{msg}");
    }

    #[test]
    fn npz_whose_directory_repeats_a_name_is_an_error() {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for name in ["x.npy", "y.npy"] {
            zip.start_file(name, zip::write::SimpleFileOptions::default()).unwrap();
            let t = HostTensor::from_vec(vec![1], vec![1.0f32]).unwrap();
            zip.write_all(&encode_npy(&t).unwrap()).unwrap();
        }
        let mut bytes = zip.finish().unwrap().into_inner();
        // Rename `y.npy` to `x.npy` in the central directory (the last mention).
        let at = bytes.windows(5).rposition(|w| w == b"y.npy").unwrap();
        bytes[at] = b'x';
        let err = parse_npz(std::io::Cursor::new(bytes), Path::new("a.npz")).unwrap_err();
        assert!(err.to_string().contains("names one member twice"), "{err}");
    }

    #[test]
    fn header_parser_handles_numpy_variants() {
        let mut p = PyParser {
            s: b"{'descr': '<f4', 'fortran_order': False, 'shape': (3L, 4), }   \n",
            pos: 0,
        };
        let entries = p.dict_entries(0).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].1, PyValue::Tuple(vec![PyValue::Int(3), PyValue::Int(4)]));
        let mut p =
            PyParser { s: b"{\"descr\": \"|u1\", \"shape\": (), \"fortran_order\": True}", pos: 0 };
        assert!(p.dict_entries(0).is_ok());
    }

    #[test]
    fn reverse_axes_transposes() {
        // 2x3 stored column-major = C array of shape [3, 2].
        let t = HostTensor::from_vec(vec![3, 2], vec![1, 4, 2, 5, 3, 6i32]).unwrap();
        let t = reverse_axes(&t).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.into_i32_vec().unwrap(), vec![1, 2, 3, 4, 5, 6]);
    }
}
