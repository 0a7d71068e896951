//! Element types: [`DType`], the [`Element`] trait that ties Rust scalars to them, and
//! type promotion.

use half::{bf16, f16};
use std::fmt;

/// The element type of an [`Array`](crate::Array).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// Boolean.
    Bool,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// IEEE half precision.
    F16,
    /// Brain floating point (8-bit exponent, 7-bit mantissa).
    BF16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
}

impl DType {
    /// All dtypes, in promotion-lattice order.
    pub const ALL: [DType; 9] = [
        DType::Bool,
        DType::U8,
        DType::U32,
        DType::I32,
        DType::I64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
    ];

    /// Short name, as JAX prints it (`f32`, `i32`, `bool`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::U8 => "u8",
            DType::U32 => "u32",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::Bool | DType::U8 => 1,
            DType::F16 | DType::BF16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    /// True for the floating-point types (the ones with tangents).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    /// True for signed and unsigned integers (not bool).
    pub fn is_int(self) -> bool {
        matches!(self, DType::U8 | DType::U32 | DType::I32 | DType::I64)
    }

    /// True for the unsigned integers.
    pub fn is_unsigned(self) -> bool {
        matches!(self, DType::U8 | DType::U32)
    }

    /// Parses a dtype name (`"f32"`, `"float32"`, `"bfloat16"`, `"int32"`, ...).
    pub fn parse(s: &str) -> Option<DType> {
        Some(match s {
            "bool" => DType::Bool,
            "u8" | "uint8" => DType::U8,
            "u32" | "uint32" => DType::U32,
            "i32" | "int32" => DType::I32,
            "i64" | "int64" => DType::I64,
            "f16" | "float16" => DType::F16,
            "bf16" | "bfloat16" => DType::BF16,
            "f32" | "float32" => DType::F32,
            "f64" | "float64" => DType::F64,
            _ => return None,
        })
    }

    /// The dtype both operands are converted to by a binary numpy-style operation
    /// (JAX's lattice: bool < unsigned/signed ints < floats; any float with an integer gives
    /// the float; f16 with bf16 gives f32).
    pub fn promote(a: DType, b: DType) -> DType {
        use DType::*;
        if a == b {
            return a;
        }
        match (a, b) {
            (Bool, x) | (x, Bool) => x,
            (F16, BF16) | (BF16, F16) => F32,
            (x, y) if x.is_float() && y.is_float() => x.max(y),
            (x, y) if x.is_float() => {
                let _ = y;
                x
            }
            (x, y) if y.is_float() => {
                let _ = x;
                y
            }
            // both integers
            (U8, y) | (y, U8) => y,
            (U32, I32) | (I32, U32) => I64,
            (x, y) => x.max(y),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust scalar type that is the element type of some [`DType`].
pub trait Element: Copy + Send + Sync + PartialEq + fmt::Debug + 'static {
    /// The dtype whose elements are `Self`.
    const DTYPE: DType;
    /// Converts to `f64` (exact for every type but `u64`-range integers, which kiln has none of).
    fn to_f64(self) -> f64;
    /// Converts from `f64` with `as`-cast semantics (saturating for integers, rounding for floats).
    fn from_f64(v: f64) -> Self;
}

macro_rules! element {
    ($t:ty, $d:ident, |$x:ident| $to:expr, |$v:ident| $from:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            #[inline]
            fn to_f64(self) -> f64 {
                let $x = self;
                $to
            }
            #[inline]
            fn from_f64($v: f64) -> Self {
                $from
            }
        }
    };
}

element!(bool, Bool, |x| if x { 1.0 } else { 0.0 }, |v| v != 0.0);
element!(u8, U8, |x| x as f64, |v| v as u8);
element!(u32, U32, |x| x as f64, |v| v as u32);
element!(i32, I32, |x| x as f64, |v| v as i32);
element!(i64, I64, |x| x as f64, |v| v as i64);
element!(f16, F16, |x| x.to_f64(), |v| f16::from_f64(v));
element!(bf16, BF16, |x| x.to_f64(), |v| bf16::from_f64(v));
element!(f32, F32, |x| x as f64, |v| v as f32);
element!(f64, F64, |x| x, |v| v);

/// A host scalar of any dtype (used for literals, fill values and `item`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// An integer of any integer dtype, stored widened.
    Int(i64, DType),
    /// A float of any float dtype, stored widened.
    Float(f64, DType),
}

impl Scalar {
    /// The dtype of the scalar.
    pub fn dtype(self) -> DType {
        match self {
            Scalar::Bool(_) => DType::Bool,
            Scalar::Int(_, d) | Scalar::Float(_, d) => d,
        }
    }
    /// The value as `f64`.
    pub fn to_f64(self) -> f64 {
        match self {
            Scalar::Bool(b) => b as i32 as f64,
            Scalar::Int(i, _) => i as f64,
            Scalar::Float(f, _) => f,
        }
    }
}
