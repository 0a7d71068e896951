//! Host storage for CPU buffers: one typed, contiguous, row-major vector per dtype.

use crate::dtype::{DType, Element};
use half::{bf16, f16};

/// The elements of a concrete CPU array, row-major and contiguous.
#[derive(Clone, Debug, PartialEq)]
pub enum Storage {
    /// `bool` elements.
    Bool(Vec<bool>),
    /// `u8` elements.
    U8(Vec<u8>),
    /// `u32` elements.
    U32(Vec<u32>),
    /// `i32` elements.
    I32(Vec<i32>),
    /// `i64` elements.
    I64(Vec<i64>),
    /// `f16` elements.
    F16(Vec<f16>),
    /// `bf16` elements.
    BF16(Vec<bf16>),
    /// `f32` elements.
    F32(Vec<f32>),
    /// `f64` elements.
    F64(Vec<f64>),
}

/// Runs `$body` with `$v` bound to the typed vector inside a [`Storage`] (by reference) and
/// `$T` to its element type. The body must type-check for every element type.
#[macro_export]
#[doc(hidden)]
macro_rules! with_storage {
    ($s:expr, $v:ident, $T:ident => $body:expr) => {
        match $s {
            $crate::backend::Storage::Bool($v) => {
                #[allow(dead_code)] // the alias is used by some bodies only
                type $T = bool;
                $body
            }
            $crate::backend::Storage::U8($v) => {
                #[allow(dead_code)] // the alias is used by some bodies only
                type $T = u8;
                $body
            }
            $crate::backend::Storage::U32($v) => {
                #[allow(dead_code)] // the alias is used by some bodies only
                type $T = u32;
                $body
            }
            $crate::backend::Storage::I32($v) => {
                #[allow(dead_code)] // the alias is used by some bodies only
                type $T = i32;
                $body
            }
            $crate::backend::Storage::I64($v) => {
                #[allow(dead_code)] // the alias is used by some bodies only
                type $T = i64;
                $body
            }
            $crate::backend::Storage::F16($v) => {
                #[allow(dead_code)] // the alias is used by some bodies only
                type $T = half::f16;
                $body
            }
            $crate::backend::Storage::BF16($v) => {
                #[allow(dead_code)] // the alias is used by some bodies only
                type $T = half::bf16;
                $body
            }
            $crate::backend::Storage::F32($v) => {
                #[allow(dead_code)] // the alias is used by some bodies only
                type $T = f32;
                $body
            }
            $crate::backend::Storage::F64($v) => {
                #[allow(dead_code)] // the alias is used by some bodies only
                type $T = f64;
                $body
            }
        }
    };
}

/// Conversion between a typed `Vec<T>` and [`Storage`].
pub trait StorageElement: Element {
    /// Wraps a vector.
    fn into_storage(v: Vec<Self>) -> Storage;
    /// Borrows the typed slice if the storage holds `Self`.
    fn slice(s: &Storage) -> Option<&[Self]>;
    /// Takes the typed vector if the storage holds `Self`.
    fn take(s: Storage) -> Result<Vec<Self>, Storage>;
}

macro_rules! storage_element {
    ($t:ty, $v:ident) => {
        impl StorageElement for $t {
            fn into_storage(v: Vec<Self>) -> Storage {
                Storage::$v(v)
            }
            fn slice(s: &Storage) -> Option<&[Self]> {
                match s {
                    Storage::$v(v) => Some(v),
                    _ => None,
                }
            }
            fn take(s: Storage) -> Result<Vec<Self>, Storage> {
                match s {
                    Storage::$v(v) => Ok(v),
                    other => Err(other),
                }
            }
        }
    };
}

storage_element!(bool, Bool);
storage_element!(u8, U8);
storage_element!(u32, U32);
storage_element!(i32, I32);
storage_element!(i64, I64);
storage_element!(f16, F16);
storage_element!(bf16, BF16);
storage_element!(f32, F32);
storage_element!(f64, F64);

impl Storage {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Bool(_) => DType::Bool,
            Storage::U8(_) => DType::U8,
            Storage::U32(_) => DType::U32,
            Storage::I32(_) => DType::I32,
            Storage::I64(_) => DType::I64,
            Storage::F16(_) => DType::F16,
            Storage::BF16(_) => DType::BF16,
            Storage::F32(_) => DType::F32,
            Storage::F64(_) => DType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_storage!(self, v, _T => v.len())
    }

    /// True if there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wraps a typed vector.
    pub fn from_vec<T: StorageElement>(v: Vec<T>) -> Storage {
        T::into_storage(v)
    }

    /// Borrows the typed slice, or `None` if `T` is not the element type.
    pub fn as_slice<T: StorageElement>(&self) -> Option<&[T]> {
        T::slice(self)
    }

    /// `n` copies of `value` converted to `dtype` (from `f64` with `as`-cast semantics).
    pub fn full(dtype: DType, n: usize, value: f64) -> Storage {
        match dtype {
            DType::Bool => Storage::Bool(vec![value != 0.0; n]),
            DType::U8 => Storage::U8(vec![value as u8; n]),
            DType::U32 => Storage::U32(vec![value as u32; n]),
            DType::I32 => Storage::I32(vec![value as i32; n]),
            DType::I64 => Storage::I64(vec![value as i64; n]),
            DType::F16 => Storage::F16(vec![f16::from_f64(value); n]),
            DType::BF16 => Storage::BF16(vec![bf16::from_f64(value); n]),
            DType::F32 => Storage::F32(vec![value as f32; n]),
            DType::F64 => Storage::F64(vec![value; n]),
        }
    }

    /// Zeros of `dtype`.
    pub fn zeros(dtype: DType, n: usize) -> Storage {
        Storage::full(dtype, n, 0.0)
    }

    /// Element `i` widened to `f64`.
    pub fn get_f64(&self, i: usize) -> f64 {
        with_storage!(self, v, _T => v[i].to_f64())
    }

    /// All elements converted to `f64` (for tests, printing and host math).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        with_storage!(self, v, _T => v.iter().map(|x| x.to_f64()).collect())
    }

    /// Elements converted to `T` with `as`-cast semantics (through `f64`; exact for
    /// integers up to 2^53 and for every float).
    pub fn to_vec_as<T: StorageElement>(&self) -> Vec<T> {
        if let Some(s) = T::slice(self) {
            return s.to_vec();
        }
        with_storage!(self, v, _T => v.iter().map(|x| T::from_f64(x.to_f64())).collect())
    }

    /// The raw little-endian bytes of the elements (bool as one byte 0/1).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Storage::Bool(v) => v.iter().map(|&b| b as u8).collect(),
            Storage::U8(v) => v.clone(),
            Storage::U32(v) => bytemuck::cast_slice(v).to_vec(),
            Storage::I32(v) => bytemuck::cast_slice(v).to_vec(),
            Storage::I64(v) => bytemuck::cast_slice(v).to_vec(),
            Storage::F16(v) => bytemuck::cast_slice(v).to_vec(),
            Storage::BF16(v) => bytemuck::cast_slice(v).to_vec(),
            Storage::F32(v) => bytemuck::cast_slice(v).to_vec(),
            Storage::F64(v) => bytemuck::cast_slice(v).to_vec(),
        }
    }

    /// Builds storage from little-endian bytes; `None` if the length is not a multiple of
    /// the element size.
    pub fn from_bytes(dtype: DType, bytes: &[u8]) -> Option<Storage> {
        if !bytes.len().is_multiple_of(dtype.size_in_bytes()) {
            return None;
        }
        fn cast<T: bytemuck::Pod>(b: &[u8]) -> Vec<T> {
            bytemuck::pod_collect_to_vec(b)
        }
        Some(match dtype {
            DType::Bool => Storage::Bool(bytes.iter().map(|&b| b != 0).collect()),
            DType::U8 => Storage::U8(bytes.to_vec()),
            DType::U32 => Storage::U32(cast(bytes)),
            DType::I32 => Storage::I32(cast(bytes)),
            DType::I64 => Storage::I64(cast(bytes)),
            DType::F16 => Storage::F16(cast(bytes)),
            DType::BF16 => Storage::BF16(cast(bytes)),
            DType::F32 => Storage::F32(cast(bytes)),
            DType::F64 => Storage::F64(cast(bytes)),
        })
    }
}
