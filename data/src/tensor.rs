//! Owned host tensors: a dtype, a shape and a typed vector.
//!
//! [`HostTensor`] is deliberately small: it owns its elements in a plain
//! `Vec<T>` (inside [`TensorData`]) so that handing the data to another
//! framework costs nothing. Use [`HostTensor::into_vec`] (or the shorthands
//! [`HostTensor::into_f32_vec`], [`HostTensor::into_i32_vec`], ...) to take the
//! vector out without copying, [`HostTensor::as_slice`] to borrow it typed, and
//! [`HostTensor::as_bytes`] to borrow the raw native-endian bytes.

use std::fmt;

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Element type of a [`HostTensor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// `bool`, one byte per element (0 or 1).
    Bool,
    /// `u8`.
    U8,
    /// `i8`.
    I8,
    /// `u16`.
    U16,
    /// `i16`.
    I16,
    /// IEEE 754 half precision ([`half::f16`]).
    F16,
    /// bfloat16 ([`half::bf16`]).
    BF16,
    /// `u32`.
    U32,
    /// `i32`.
    I32,
    /// `f32`.
    F32,
    /// `u64`.
    U64,
    /// `i64`.
    I64,
    /// `f64`.
    F64,
}

impl DType {
    /// All dtypes, in order of increasing size.
    pub const ALL: [DType; 13] = [
        DType::Bool,
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::F16,
        DType::BF16,
        DType::U32,
        DType::I32,
        DType::F32,
        DType::U64,
        DType::I64,
        DType::F64,
    ];

    /// Size of one element in bytes.
    pub const fn size_in_bytes(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }

    /// Whether this is a floating-point dtype.
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    /// Whether this is a (signed or unsigned) integer dtype; `bool` is not.
    pub const fn is_int(self) -> bool {
        !self.is_float() && !matches!(self, DType::Bool)
    }

    /// Lower-case name, as used by NumPy-like libraries (`"f32"`, `"u8"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::U16 => "u16",
            DType::I16 => "i16",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::U32 => "u32",
            DType::I32 => "i32",
            DType::F32 => "f32",
            DType::U64 => "u64",
            DType::I64 => "i64",
            DType::F64 => "f64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The elements of a [`HostTensor`], as a typed vector (row-major order).
#[derive(Clone, PartialEq)]
pub enum TensorData {
    /// `bool` elements.
    Bool(Vec<bool>),
    /// `u8` elements.
    U8(Vec<u8>),
    /// `i8` elements.
    I8(Vec<i8>),
    /// `u16` elements.
    U16(Vec<u16>),
    /// `i16` elements.
    I16(Vec<i16>),
    /// `f16` elements.
    F16(Vec<f16>),
    /// `bf16` elements.
    BF16(Vec<bf16>),
    /// `u32` elements.
    U32(Vec<u32>),
    /// `i32` elements.
    I32(Vec<i32>),
    /// `f32` elements.
    F32(Vec<f32>),
    /// `u64` elements.
    U64(Vec<u64>),
    /// `i64` elements.
    I64(Vec<i64>),
    /// `f64` elements.
    F64(Vec<f64>),
}

/// Runs `$body` with `$v` bound to the typed vector inside a [`TensorData`]
/// (by value, `&` or `&mut`, following the match ergonomics of `$data`).
macro_rules! with_vec {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::tensor::TensorData::Bool($v) => $body,
            $crate::tensor::TensorData::U8($v) => $body,
            $crate::tensor::TensorData::I8($v) => $body,
            $crate::tensor::TensorData::U16($v) => $body,
            $crate::tensor::TensorData::I16($v) => $body,
            $crate::tensor::TensorData::F16($v) => $body,
            $crate::tensor::TensorData::BF16($v) => $body,
            $crate::tensor::TensorData::U32($v) => $body,
            $crate::tensor::TensorData::I32($v) => $body,
            $crate::tensor::TensorData::F32($v) => $body,
            $crate::tensor::TensorData::U64($v) => $body,
            $crate::tensor::TensorData::I64($v) => $body,
            $crate::tensor::TensorData::F64($v) => $body,
        }
    };
}
pub(crate) use with_vec;

/// Runs `$body` with the type alias `$T` set to the Rust element type of a
/// [`DType`] value.
macro_rules! with_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::tensor::DType::Bool => {
                type $T = bool;
                $body
            }
            $crate::tensor::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::tensor::DType::I8 => {
                type $T = i8;
                $body
            }
            $crate::tensor::DType::U16 => {
                type $T = u16;
                $body
            }
            $crate::tensor::DType::I16 => {
                type $T = i16;
                $body
            }
            $crate::tensor::DType::F16 => {
                type $T = half::f16;
                $body
            }
            $crate::tensor::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            $crate::tensor::DType::U32 => {
                type $T = u32;
                $body
            }
            $crate::tensor::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::tensor::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::tensor::DType::U64 => {
                type $T = u64;
                $body
            }
            $crate::tensor::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::tensor::DType::F64 => {
                type $T = f64;
                $body
            }
        }
    };
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that can be the element of a [`HostTensor`].
///
/// Implemented for `bool`, `u8`, `i8`, `u16`, `i16`, [`half::f16`], [`half::bf16`], `u32`,
/// `i32`, `f32`, `u64`, `i64` and `f64`. The trait is sealed.
pub trait Element:
    Copy + PartialEq + fmt::Debug + Send + Sync + bytemuck::NoUninit + sealed::Sealed + 'static
{
    /// The dtype tag of this element type.
    const DTYPE: DType;
    /// Wraps a vector into [`TensorData`].
    fn wrap(v: Vec<Self>) -> TensorData;
    /// Borrows the vector if `data` holds this element type.
    fn slice(data: &TensorData) -> Option<&[Self]>;
    /// Mutably borrows the vector if `data` holds this element type.
    fn slice_mut(data: &mut TensorData) -> Option<&mut [Self]>;
    /// Takes the vector out if `data` holds this element type.
    fn unwrap(data: TensorData) -> std::result::Result<Vec<Self>, TensorData>;
    /// Converts to `f64` (like `as`; `true` is 1).
    fn to_f64(self) -> f64;
    /// Converts from `f64` (like `as`: saturating for integers; non-zero is `true`).
    fn from_f64(v: f64) -> Self;
    /// Converts to `i128` (like `as`; floats are truncated toward zero).
    fn to_i128(self) -> i128;
    /// Converts from `i128` (like `as`: wrapping for integers).
    fn from_i128(v: i128) -> Self;
    /// Decodes one little-endian element; `None` if the bytes are not a valid value.
    fn from_le(bytes: &[u8]) -> Option<Self>;
    /// Decodes one big-endian element; `None` if the bytes are not a valid value.
    fn from_be(bytes: &[u8]) -> Option<Self>;
}

macro_rules! impl_element_common {
    ($t:ty, $variant:ident) => {
        impl sealed::Sealed for $t {}
        impl From<Vec<$t>> for TensorData {
            fn from(v: Vec<$t>) -> Self {
                TensorData::$variant(v)
            }
        }
    };
}

macro_rules! element_plumbing {
    ($variant:ident) => {
        const DTYPE: DType = DType::$variant;
        fn wrap(v: Vec<Self>) -> TensorData {
            TensorData::$variant(v)
        }
        fn slice(data: &TensorData) -> Option<&[Self]> {
            match data {
                TensorData::$variant(v) => Some(v),
                _ => None,
            }
        }
        fn slice_mut(data: &mut TensorData) -> Option<&mut [Self]> {
            match data {
                TensorData::$variant(v) => Some(v),
                _ => None,
            }
        }
        fn unwrap(data: TensorData) -> std::result::Result<Vec<Self>, TensorData> {
            match data {
                TensorData::$variant(v) => Ok(v),
                other => Err(other),
            }
        }
    };
}

macro_rules! impl_primitive {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl_element_common!($t, $variant);
        impl Element for $t {
            element_plumbing!($variant);
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_i128(self) -> i128 {
                self as i128
            }
            fn from_i128(v: i128) -> Self {
                v as $t
            }
            fn from_le(bytes: &[u8]) -> Option<Self> {
                Some(<$t>::from_le_bytes(bytes.try_into().ok()?))
            }
            fn from_be(bytes: &[u8]) -> Option<Self> {
                Some(<$t>::from_be_bytes(bytes.try_into().ok()?))
            }
        }
    )*};
}

impl_primitive!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
    f32 => F32, u64 => U64, i64 => I64, f64 => F64,
);

macro_rules! impl_half {
    ($($t:ident => $variant:ident),* $(,)?) => {$(
        impl_element_common!($t, $variant);
        impl Element for $t {
            element_plumbing!($variant);
            fn to_f64(self) -> f64 {
                $t::to_f64(self)
            }
            fn from_f64(v: f64) -> Self {
                $t::from_f64(v)
            }
            fn to_i128(self) -> i128 {
                $t::to_f64(self) as i128
            }
            fn from_i128(v: i128) -> Self {
                $t::from_f64(v as f64)
            }
            fn from_le(bytes: &[u8]) -> Option<Self> {
                Some($t::from_le_bytes(bytes.try_into().ok()?))
            }
            fn from_be(bytes: &[u8]) -> Option<Self> {
                Some($t::from_be_bytes(bytes.try_into().ok()?))
            }
        }
    )*};
}

impl_half!(f16 => F16, bf16 => BF16);

impl_element_common!(bool, Bool);
impl Element for bool {
    element_plumbing!(Bool);
    fn to_f64(self) -> f64 {
        if self { 1.0 } else { 0.0 }
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_i128(self) -> i128 {
        i128::from(self)
    }
    fn from_i128(v: i128) -> Self {
        v != 0
    }
    fn from_le(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
    fn from_be(bytes: &[u8]) -> Option<Self> {
        Self::from_le(bytes)
    }
}

/// Byte order of serialized elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endian {
    /// Least significant byte first (NPY `<`, safetensors).
    Little,
    /// Most significant byte first (IDX, NPY `>`).
    Big,
}

fn decode_elems<T: Element>(bytes: &[u8], endian: Endian) -> Option<Vec<T>> {
    let size = std::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    let chunks = bytes.chunks_exact(size);
    match endian {
        Endian::Little => chunks.map(T::from_le).collect(),
        Endian::Big => chunks.map(T::from_be).collect(),
    }
}

fn cast_elems<S: Element, D: Element>(src: &[S]) -> Vec<D> {
    if S::DTYPE.is_float() || D::DTYPE.is_float() {
        src.iter().map(|&x| D::from_f64(x.to_f64())).collect()
    } else {
        src.iter().map(|&x| D::from_i128(x.to_i128())).collect()
    }
}

impl TensorData {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        with_vec!(self, v => elem_dtype(v.as_slice()))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_vec!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Borrows the elements as native-endian bytes (`bool` as 0/1 bytes).
    pub fn as_bytes(&self) -> &[u8] {
        with_vec!(self, v => bytemuck::cast_slice(v.as_slice()))
    }

    /// Decodes `bytes` as elements of `dtype` in the given byte order.
    ///
    /// Returns `None` if the byte count is not a multiple of the element size
    /// or if a `bool` byte is neither 0 nor 1.
    pub fn decode(dtype: DType, bytes: &[u8], endian: Endian) -> Option<TensorData> {
        with_dtype!(dtype, T => decode_elems::<T>(bytes, endian).map(TensorData::from))
    }

    /// Converts every element to `dtype` with `as`-like semantics.
    pub fn cast(&self, dtype: DType) -> TensorData {
        if self.dtype() == dtype {
            return self.clone();
        }
        with_vec!(self, src => with_dtype!(dtype, D => TensorData::from(cast_elems::<_, D>(src))))
    }

    /// A vector of `len` zeros of `dtype`.
    pub fn zeros(dtype: DType, len: usize) -> TensorData {
        with_dtype!(dtype, T => TensorData::from(vec![T::from_f64(0.0); len]))
    }
}

fn elem_dtype<T: Element>(_: &[T]) -> DType {
    T::DTYPE
}

impl fmt::Debug for TensorData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        with_vec!(self, v => {
            let head = &v[..v.len().min(SHOWN)];
            write!(f, "{}{:?}", self.dtype(), head)?;
            if v.len() > SHOWN {
                write!(f, "+{} more", v.len() - SHOWN)?;
            }
            Ok(())
        })
    }
}

/// An owned, row-major tensor in host memory.
///
/// The shape's product always equals the number of elements; a scalar has
/// shape `[]` and one element.
#[derive(Clone, PartialEq)]
pub struct HostTensor {
    shape: Vec<usize>,
    data: TensorData,
}

fn numel_of(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl HostTensor {
    /// Builds a tensor; fails if `shape` does not match the element count.
    pub fn new(shape: impl Into<Vec<usize>>, data: impl Into<TensorData>) -> Result<Self> {
        let shape = shape.into();
        let data = data.into();
        match numel_of(&shape) {
            Some(n) if n == data.len() => Ok(HostTensor { shape, data }),
            _ => Err(DataError::Shape(format!(
                "shape {shape:?} does not hold {} element(s)",
                data.len()
            ))),
        }
    }

    /// Builds a tensor from a typed vector; fails if `shape` does not match.
    pub fn from_vec<T: Element>(shape: impl Into<Vec<usize>>, data: Vec<T>) -> Result<Self> {
        Self::new(shape, T::wrap(data))
    }

    /// A rank-1 tensor holding `data`.
    pub fn vector<T: Element>(data: Vec<T>) -> Self {
        HostTensor { shape: vec![data.len()], data: T::wrap(data) }
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar<T: Element>(value: T) -> Self {
        HostTensor { shape: Vec::new(), data: T::wrap(vec![value]) }
    }

    /// A tensor of zeros.
    pub fn zeros(dtype: DType, shape: impl Into<Vec<usize>>) -> Result<Self> {
        let shape = shape.into();
        let n = numel_of(&shape)
            .ok_or_else(|| DataError::Shape(format!("shape {shape:?} overflows usize")))?;
        Self::new(shape, TensorData::zeros(dtype, n))
    }

    /// Decodes little-endian `bytes` (as in safetensors or `<` NPY files).
    pub fn from_le_bytes(dtype: DType, shape: impl Into<Vec<usize>>, bytes: &[u8]) -> Result<Self> {
        Self::from_bytes(dtype, shape.into(), bytes, Endian::Little)
    }

    /// Decodes `bytes` in the given byte order.
    ///
    /// Fails if the byte count does not match `shape` or if a `bool` byte is
    /// neither 0 nor 1.
    pub fn from_bytes(
        dtype: DType,
        shape: impl Into<Vec<usize>>,
        bytes: &[u8],
        endian: Endian,
    ) -> Result<Self> {
        let shape = shape.into();
        let expected = numel_of(&shape).and_then(|n| n.checked_mul(dtype.size_in_bytes()));
        if expected != Some(bytes.len()) {
            return Err(DataError::Shape(format!(
                "{} byte(s) cannot hold a {dtype} tensor of shape {shape:?}",
                bytes.len()
            )));
        }
        let data = TensorData::decode(dtype, bytes, endian)
            .ok_or_else(|| DataError::Shape(format!("invalid {dtype} value in tensor bytes")))?;
        Self::new(shape, data)
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Borrows the typed storage.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// Splits into shape and storage without copying.
    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }

    /// Borrows the raw native-endian bytes of the elements.
    pub fn as_bytes(&self) -> &[u8] {
        self.data.as_bytes()
    }

    /// Borrows the elements as `&[T]` if the dtype is `T`.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        T::slice(&self.data)
    }

    /// Mutably borrows the elements as `&mut [T]` if the dtype is `T`.
    pub fn as_slice_mut<T: Element>(&mut self) -> Option<&mut [T]> {
        T::slice_mut(&mut self.data)
    }

    /// Takes the elements out as `Vec<T>` without copying; fails with
    /// [`DataError::DType`] if the dtype is not `T`.
    pub fn into_vec<T: Element>(self) -> Result<Vec<T>> {
        let found = self.dtype();
        T::unwrap(self.data).map_err(|_| DataError::DType {
            expected: T::DTYPE,
            found,
            context: "into_vec".into(),
        })
    }

    /// Borrows the elements as `&[f32]` if the dtype is `f32`.
    pub fn as_f32(&self) -> Option<&[f32]> {
        self.as_slice()
    }

    /// Takes the `f32` elements out without copying.
    pub fn into_f32_vec(self) -> Result<Vec<f32>> {
        self.into_vec()
    }

    /// Takes the `i32` elements out without copying.
    pub fn into_i32_vec(self) -> Result<Vec<i32>> {
        self.into_vec()
    }

    /// Takes the `i64` elements out without copying.
    pub fn into_i64_vec(self) -> Result<Vec<i64>> {
        self.into_vec()
    }

    /// Takes the `u8` elements out without copying.
    pub fn into_u8_vec(self) -> Result<Vec<u8>> {
        self.into_vec()
    }

    /// Copies the elements into a new `Vec<f32>`, converting from any dtype.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        with_vec!(&self.data, v => cast_elems::<_, f32>(v))
    }

    /// Converts every element to `dtype` (`as`-like semantics; a copy even
    /// when the dtype is unchanged).
    pub fn cast(&self, dtype: DType) -> HostTensor {
        HostTensor { shape: self.shape.clone(), data: self.data.cast(dtype) }
    }

    /// Reads the element at flat (row-major) index `i` as `f64`.
    pub fn get_f64(&self, i: usize) -> Option<f64> {
        with_vec!(&self.data, v => v.get(i).map(|x| x.to_f64()))
    }

    /// Reads the element at flat index `i` as `i64` (floats truncated).
    pub fn get_i64(&self, i: usize) -> Option<i64> {
        with_vec!(&self.data, v => v.get(i).map(|x| x.to_i128() as i64))
    }

    /// Changes the shape without touching the data.
    pub fn reshape(self, shape: impl Into<Vec<usize>>) -> Result<Self> {
        Self::new(shape, self.data)
    }

    /// Copies rows `start..end` of the leading dimension into a new tensor of
    /// shape `[end - start, ...]`.
    pub fn slice_rows(&self, start: usize, end: usize) -> Result<HostTensor> {
        let rows = *self
            .shape
            .first()
            .ok_or_else(|| DataError::Shape("cannot take rows of a scalar tensor".into()))?;
        if start > end || end > rows {
            return Err(DataError::Shape(format!(
                "rows {start}..{end} out of range for leading dimension {rows}"
            )));
        }
        let row_len = self.shape[1..].iter().product::<usize>();
        let (a, b) = (start * row_len, end * row_len);
        let data = with_vec!(&self.data, v => TensorData::from(v[a..b].to_vec()));
        let mut shape = self.shape.clone();
        shape[0] = end - start;
        Ok(HostTensor { shape, data })
    }

    /// Copies row `i` of the leading dimension (shape `shape[1..]`).
    pub fn row(&self, i: usize) -> Result<HostTensor> {
        let mut t = self.slice_rows(i, i.saturating_add(1))?;
        t.shape.remove(0);
        Ok(t)
    }

    /// Stacks equally shaped tensors of one dtype along a new leading axis.
    pub fn stack(tensors: &[&HostTensor]) -> Result<HostTensor> {
        let first =
            tensors.first().ok_or_else(|| DataError::Shape("cannot stack zero tensors".into()))?;
        for (i, t) in tensors.iter().enumerate() {
            if t.dtype() != first.dtype() {
                return Err(DataError::DType {
                    expected: first.dtype(),
                    found: t.dtype(),
                    context: format!("stacking element {i}"),
                });
            }
            if t.shape != first.shape {
                return Err(DataError::Shape(format!(
                    "cannot stack shape {:?} (element {i}) onto shape {:?}",
                    t.shape, first.shape
                )));
            }
        }
        let data = with_vec!(&first.data, v0 => {
            let mut out = Vec::with_capacity(v0.len() * tensors.len());
            for t in tensors {
                out.extend_from_slice(typed_like(v0, &t.data)?);
            }
            TensorData::from(out)
        });
        let mut shape = Vec::with_capacity(first.rank() + 1);
        shape.push(tensors.len());
        shape.extend_from_slice(&first.shape);
        Ok(HostTensor { shape, data })
    }
}

/// Borrows `data` typed like `_like` (used after the dtypes were checked).
fn typed_like<'a, T: Element>(_like: &[T], data: &'a TensorData) -> Result<&'a [T]> {
    T::slice(data).ok_or_else(|| DataError::DType {
        expected: T::DTYPE,
        found: data.dtype(),
        context: String::new(),
    })
}

impl fmt::Debug for HostTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostTensor({:?}, {:?})", self.shape, self.data)
    }
}

impl<T: Element> From<Vec<T>> for HostTensor {
    fn from(v: Vec<T>) -> Self {
        HostTensor::vector(v)
    }
}
