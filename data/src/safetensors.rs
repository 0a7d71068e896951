//! Memory-mapped [safetensors](https://github.com/huggingface/safetensors) files.
//!
//! [`SafetensorsFile`] maps the file with `memmap2` and validates the header
//! once (offsets, sizes, total length); tensors or single rows are then
//! decoded on demand, so a [`SafetensorsDataset`] over a large file only
//! touches the pages it reads.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use ::safetensors::tensor::{Dtype, SafeTensors, View};
use memmap2::Mmap;

use crate::dataset::{Dataset, check_index};
use crate::error::{DataError, Result};
use crate::example::{Example, TensorMap};
use crate::tensor::{DType, Endian, HostTensor, TensorData};

fn dtype_from_st(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::BOOL => DType::Bool,
        Dtype::U8 => DType::U8,
        Dtype::I8 => DType::I8,
        Dtype::U16 => DType::U16,
        Dtype::I16 => DType::I16,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::U32 => DType::U32,
        Dtype::I32 => DType::I32,
        Dtype::F32 => DType::F32,
        Dtype::U64 => DType::U64,
        Dtype::I64 => DType::I64,
        Dtype::F64 => DType::F64,
        _ => return None,
    })
}

fn dtype_to_st(dtype: DType) -> Dtype {
    match dtype {
        DType::Bool => Dtype::BOOL,
        DType::U8 => Dtype::U8,
        DType::I8 => Dtype::I8,
        DType::U16 => Dtype::U16,
        DType::I16 => Dtype::I16,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::U32 => Dtype::U32,
        DType::I32 => Dtype::I32,
        DType::F32 => Dtype::F32,
        DType::U64 => Dtype::U64,
        DType::I64 => Dtype::I64,
        DType::F64 => Dtype::F64,
    }
}

/// Where one tensor lives in a safetensors file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetensorsEntry {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Absolute byte range of the data in the file.
    pub range: std::ops::Range<usize>,
}

/// Parses and validates the header of a safetensors file held in `bytes`
/// (the whole file). Entries are returned in file order.
pub fn parse_safetensors_header(bytes: &[u8], path: &Path) -> Result<Vec<SafetensorsEntry>> {
    if bytes.len() < 8 {
        return Err(DataError::truncated(
            path,
            bytes.len() as u64,
            (8 - bytes.len()) as u64,
            "the safetensors header length",
        ));
    }
    let (header_len, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| DataError::corrupt(path, 0, format!("invalid safetensors file: {e}")))?;
    let data_start = 8 + header_len;
    let mut entries = Vec::new();
    for (name, info) in metadata.tensors() {
        let dtype = dtype_from_st(info.dtype).ok_or_else(|| {
            DataError::UnsupportedDType(format!(
                "{}: tensor `{name}` has dtype {}",
                path.display(),
                info.dtype
            ))
        })?;
        let (s, e) = info.data_offsets;
        entries.push(SafetensorsEntry {
            name,
            dtype,
            shape: info.shape.clone(),
            range: data_start + s..data_start + e,
        });
    }
    entries.sort_by_key(|e| e.range.start);
    Ok(entries)
}

fn decode(
    bytes: &[u8],
    dtype: DType,
    shape: Vec<usize>,
    path: &Path,
    offset: usize,
) -> Result<HostTensor> {
    let data = TensorData::decode(dtype, bytes, Endian::Little).ok_or_else(|| {
        DataError::corrupt(path, offset as u64, format!("invalid {dtype} value in tensor data"))
    })?;
    HostTensor::new(shape, data)
}

/// Parses a whole safetensors file held in memory into named tensors (in
/// file order).
pub fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<TensorMap> {
    let mut out = TensorMap::new();
    for entry in parse_safetensors_header(bytes, path)? {
        let t =
            decode(&bytes[entry.range.clone()], entry.dtype, entry.shape, path, entry.range.start)?;
        out.insert(entry.name, t);
    }
    Ok(out)
}

/// A memory-mapped, validated safetensors file.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    entries: Vec<SafetensorsEntry>,
}

impl SafetensorsFile {
    /// Maps and validates `path`.
    ///
    /// As with any memory map, the file must not be truncated or rewritten
    /// by another process while it is open.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| DataError::io(&path, e))?;
        let len = file.metadata().map_err(|e| DataError::io(&path, e))?.len();
        if len < 8 {
            return Err(DataError::truncated(&path, len, 8 - len, "the safetensors header length"));
        }
        // SAFETY: the map is read-only and private to this struct; the
        // documented contract is that the file is not modified while open.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(&path, e))?;
        let entries = parse_safetensors_header(&mmap, &path)?;
        Ok(SafetensorsFile { path, mmap, entries })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensors, in file order.
    pub fn entries(&self) -> &[SafetensorsEntry] {
        &self.entries
    }

    /// Tensor names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// Looks a tensor up by name.
    pub fn entry(&self, name: &str) -> Result<&SafetensorsEntry> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| DataError::MissingField(format!("{} in {}", name, self.path.display())))
    }

    /// Decodes a whole tensor.
    pub fn tensor(&self, name: &str) -> Result<HostTensor> {
        let e = self.entry(name)?;
        decode(&self.mmap[e.range.clone()], e.dtype, e.shape.clone(), &self.path, e.range.start)
    }

    /// Decodes rows `start..end` of a tensor's leading dimension, reading
    /// only those bytes from the map.
    pub fn rows(&self, name: &str, start: usize, end: usize) -> Result<HostTensor> {
        let e = self.entry(name)?;
        let rows = *e.shape.first().ok_or_else(|| {
            DataError::Shape(format!("tensor `{name}` is a scalar; it has no rows"))
        })?;
        if start > end || end > rows {
            return Err(DataError::Shape(format!(
                "rows {start}..{end} out of range for tensor `{name}` with {rows} row(s)"
            )));
        }
        let row_bytes = e.shape[1..].iter().product::<usize>() * e.dtype.size_in_bytes();
        let a = e.range.start + start * row_bytes;
        let b = e.range.start + end * row_bytes;
        let mut shape = e.shape.clone();
        shape[0] = end - start;
        decode(&self.mmap[a..b], e.dtype, shape, &self.path, a)
    }

    /// Decodes every tensor.
    pub fn to_tensor_map(&self) -> Result<TensorMap> {
        self.entries.iter().map(|e| Ok((e.name.clone(), self.tensor(&e.name)?))).collect()
    }
}

/// Reads every tensor of a safetensors file (memory-mapped while decoding).
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<TensorMap> {
    SafetensorsFile::open(path)?.to_tensor_map()
}

struct TensorView<'a>(&'a HostTensor);

impl View for TensorView<'_> {
    fn dtype(&self) -> Dtype {
        dtype_to_st(self.0.dtype())
    }

    fn shape(&self) -> &[usize] {
        self.0.shape()
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let bytes = self.0.as_bytes();
        if cfg!(target_endian = "little") {
            Cow::Borrowed(bytes)
        } else {
            let size = self.0.dtype().size_in_bytes();
            Cow::Owned(bytes.chunks_exact(size).flat_map(|c| c.iter().rev().copied()).collect())
        }
    }

    fn data_len(&self) -> usize {
        self.0.as_bytes().len()
    }
}

/// Serializes named tensors in safetensors format.
pub fn encode_safetensors<'a, S: AsRef<str>>(
    tensors: impl IntoIterator<Item = (S, &'a HostTensor)>,
) -> Result<Vec<u8>> {
    let views: Vec<(String, TensorView<'a>)> =
        tensors.into_iter().map(|(n, t)| (n.as_ref().to_string(), TensorView(t))).collect();
    ::safetensors::serialize(views, None)
        .map_err(|e| DataError::Config(format!("cannot serialize safetensors: {e}")))
}

/// Writes named tensors as a safetensors file.
pub fn write_safetensors<'a, S: AsRef<str>>(
    path: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = (S, &'a HostTensor)>,
) -> Result<()> {
    let path = path.as_ref();
    std::fs::write(path, encode_safetensors(tensors)?).map_err(|e| DataError::io(path, e))
}

/// A dataset over tensors of one memory-mapped safetensors file that share
/// their leading dimension; example `i` is row `i` of each selected tensor,
/// read straight from the map.
#[derive(Debug)]
pub struct SafetensorsDataset {
    file: SafetensorsFile,
    fields: Vec<String>,
    len: usize,
}

impl SafetensorsDataset {
    /// Opens `path` and uses the named tensors as fields (all tensors, in
    /// file order, if `fields` is empty).
    pub fn open<S: AsRef<str>>(path: impl AsRef<Path>, fields: &[S]) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let fields: Vec<String> = if fields.is_empty() {
            file.names().map(str::to_string).collect()
        } else {
            fields.iter().map(|f| f.as_ref().to_string()).collect()
        };
        let mut len = None;
        for name in &fields {
            let e = file.entry(name)?;
            let rows = *e.shape.first().ok_or_else(|| {
                DataError::Shape(format!(
                    "tensor `{name}` is a scalar; it needs a leading dimension"
                ))
            })?;
            match len {
                None => len = Some(rows),
                Some(l) if l != rows => {
                    return Err(DataError::Shape(format!(
                        "tensor `{name}` has {rows} row(s) but earlier fields have {l}"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(SafetensorsDataset { file, fields, len: len.unwrap_or(0) })
    }

    /// The underlying file.
    pub fn file(&self) -> &SafetensorsFile {
        &self.file
    }
}

impl Dataset for SafetensorsDataset {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize) -> Result<Example> {
        check_index(index, self.len)?;
        self.fields
            .iter()
            .map(|name| {
                let mut t = self.file.rows(name, index, index + 1)?;
                let shape = t.shape()[1..].to_vec();
                t = t.reshape(shape)?;
                Ok((name.clone(), t))
            })
            .collect()
    }
}
