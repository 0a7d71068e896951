//! [`Array`]: the value users compute with. It is either a concrete buffer on a backend or
//! a tracer owned by a transformation; the same code runs on both.

use crate::aval::Aval;
use crate::backend::{Storage, StorageElement};
use crate::dtype::{DType, Scalar};

use crate::error::{Error, Result};
use crate::trace::{TraceTag, TracerData};
use std::fmt;
use std::sync::Arc;

/// An n-dimensional array: a concrete buffer, or a tracer while a transformation runs.
///
/// Cloning is cheap (a reference count). Arrays are immutable; every operation returns a
/// new array. Operations on arrays are the numpy-style methods and operators defined in
/// [`crate::numpy`]; the primitive-level operations are in [`crate::lax`].
///
/// ```
/// use kiln::Array;
/// let x = Array::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]);
/// let y = &x * 2.0 + 1.0;
/// assert_eq!(y.to_vec::<f32>(), vec![3.0, 5.0, 7.0, 9.0]);
/// ```
#[derive(Clone)]
pub struct Array(pub(crate) Arc<ArrayInner>);

pub(crate) struct ArrayInner {
    pub(crate) aval: Aval,
    pub(crate) repr: Repr,
}

pub(crate) enum Repr {
    Concrete(Storage),
    Tracer(Tracer),
}

pub(crate) struct Tracer {
    pub(crate) tag: TraceTag,
    pub(crate) data: TracerData,
}

impl Array {
    // ---- internal constructors -----------------------------------------------------------

    pub(crate) fn from_storage(storage: Storage, shape: Vec<usize>) -> Array {
        debug_assert_eq!(storage.len(), shape.iter().product::<usize>());
        let aval = Aval::new(shape, storage.dtype());
        Array(Arc::new(ArrayInner { aval, repr: Repr::Concrete(storage) }))
    }

    pub(crate) fn new_tracer(aval: Aval, tag: TraceTag, data: TracerData) -> Array {
        Array(Arc::new(ArrayInner { aval, repr: Repr::Tracer(Tracer { tag, data }) }))
    }

    pub(crate) fn storage(&self) -> Option<&Storage> {
        match &self.0.repr {
            Repr::Concrete(s) => Some(s),
            Repr::Tracer(_) => None,
        }
    }

    pub(crate) fn tracer(&self) -> Option<&Tracer> {
        match &self.0.repr {
            Repr::Tracer(t) => Some(t),
            Repr::Concrete(_) => None,
        }
    }

    /// A stable identity for this array value (the address of its shared payload).
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    // ---- public constructors -------------------------------------------------------------

    /// An array from a vector of elements and a shape (row-major).
    ///
    /// Panics if the element count does not match the shape; see [`Array::try_from_vec`].
    #[track_caller]
    pub fn from_vec<T: StorageElement>(data: Vec<T>, shape: impl Into<Vec<usize>>) -> Array {
        match Array::try_from_vec(data, shape) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        }
    }

    /// Fallible [`Array::from_vec`].
    pub fn try_from_vec<T: StorageElement>(
        data: Vec<T>,
        shape: impl Into<Vec<usize>>,
    ) -> Result<Array> {
        let shape = shape.into();
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Data {
                op: "from_vec".into(),
                msg: format!("{} elements do not fill shape {shape:?} ({n} elements)", data.len()),
            });
        }
        Ok(Array::from_storage(T::into_storage(data), shape))
    }

    /// An array copied from a slice and a shape.
    #[track_caller]
    pub fn from_slice<T: StorageElement>(data: &[T], shape: impl Into<Vec<usize>>) -> Array {
        Array::from_vec(data.to_vec(), shape)
    }

    /// A 1-D array copied from a slice.
    pub fn vec1<T: StorageElement>(data: &[T]) -> Array {
        Array::from_storage(T::into_storage(data.to_vec()), vec![data.len()])
    }

    /// A 0-d array holding `value`.
    pub fn scalar<T: StorageElement>(value: T) -> Array {
        Array::from_storage(T::into_storage(vec![value]), vec![])
    }

    /// A 0-d array of `dtype` holding `value` (converted with `as`-cast semantics).
    pub fn scalar_of(value: f64, dtype: DType) -> Array {
        Array::from_storage(Storage::full(dtype, 1, value), vec![])
    }

    /// An array of `shape` and `dtype` filled with `value`.
    pub fn full_of(shape: impl Into<Vec<usize>>, value: f64, dtype: DType) -> Array {
        let shape = shape.into();
        let n = shape.iter().product();
        Array::from_storage(Storage::full(dtype, n, value), shape)
    }

    /// An `f32` array of `shape` filled with `value`.
    pub fn full(shape: impl Into<Vec<usize>>, value: f32) -> Array {
        Array::full_of(shape, value as f64, DType::F32)
    }

    /// `f32` zeros.
    pub fn zeros(shape: impl Into<Vec<usize>>) -> Array {
        Array::full_of(shape, 0.0, DType::F32)
    }

    /// `f32` ones.
    pub fn ones(shape: impl Into<Vec<usize>>) -> Array {
        Array::full_of(shape, 1.0, DType::F32)
    }

    /// Zeros of any dtype.
    pub fn zeros_of(shape: impl Into<Vec<usize>>, dtype: DType) -> Array {
        Array::full_of(shape, 0.0, dtype)
    }

    /// Ones of any dtype.
    pub fn ones_of(shape: impl Into<Vec<usize>>, dtype: DType) -> Array {
        Array::full_of(shape, 1.0, dtype)
    }

    /// Zeros with the shape and dtype of `aval`.
    pub fn zeros_aval(aval: &Aval) -> Array {
        Array::full_of(aval.shape.clone(), 0.0, aval.dtype)
    }

    /// `start, start + step, ...` up to (excluding) `stop`, as `f32`.
    pub fn arange(start: f32, stop: f32, step: f32) -> Array {
        Array::arange_of(start as f64, stop as f64, step as f64, DType::F32)
    }

    /// `start, start + step, ...` up to (excluding) `stop`, of any dtype.
    ///
    /// Panics if `step` is zero.
    #[track_caller]
    pub fn arange_of(start: f64, stop: f64, step: f64, dtype: DType) -> Array {
        assert!(step != 0.0, "arange: step must be non-zero");
        let n = ((stop - start) / step).ceil().max(0.0) as usize;
        let v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        Array::from_f64_vec(&v, vec![n], dtype)
    }

    /// `num` evenly spaced `f32` values from `start` to `stop` inclusive.
    pub fn linspace(start: f32, stop: f32, num: usize) -> Array {
        let (a, b) = (start as f64, stop as f64);
        let v: Vec<f64> = (0..num)
            .map(|i| if num == 1 { a } else { a + (b - a) * i as f64 / (num - 1) as f64 })
            .collect();
        Array::from_f64_vec(&v, vec![num], DType::F32)
    }

    /// The `n x n` identity matrix in `f32`.
    pub fn eye(n: usize) -> Array {
        Array::eye_of(n, DType::F32)
    }

    /// The `n x n` identity matrix of any dtype.
    pub fn eye_of(n: usize, dtype: DType) -> Array {
        let mut v = vec![0.0; n * n];
        for i in 0..n {
            v[i * n + i] = 1.0;
        }
        Array::from_f64_vec(&v, vec![n, n], dtype)
    }

    /// An array from `f64` values converted to `dtype`.
    pub fn from_f64_vec(v: &[f64], shape: impl Into<Vec<usize>>, dtype: DType) -> Array {
        let storage = match dtype {
            DType::Bool => Storage::Bool(v.iter().map(|&x| x != 0.0).collect()),
            DType::U8 => Storage::U8(v.iter().map(|&x| x as u8).collect()),
            DType::U32 => Storage::U32(v.iter().map(|&x| x as u32).collect()),
            DType::I32 => Storage::I32(v.iter().map(|&x| x as i32).collect()),
            DType::I64 => Storage::I64(v.iter().map(|&x| x as i64).collect()),
            DType::F16 => Storage::F16(v.iter().map(|&x| half::f16::from_f64(x)).collect()),
            DType::BF16 => Storage::BF16(v.iter().map(|&x| half::bf16::from_f64(x)).collect()),
            DType::F32 => Storage::F32(v.iter().map(|&x| x as f32).collect()),
            DType::F64 => Storage::F64(v.to_vec()),
        };
        Array::from_storage(storage, shape.into())
    }

    /// An array from raw little-endian bytes.
    pub fn from_bytes(bytes: &[u8], shape: impl Into<Vec<usize>>, dtype: DType) -> Result<Array> {
        let shape = shape.into();
        let n: usize = shape.iter().product();
        match Storage::from_bytes(dtype, bytes) {
            Some(s) if s.len() == n => Ok(Array::from_storage(s, shape)),
            _ => Err(Error::Data {
                op: "from_bytes".into(),
                msg: format!(
                    "{} bytes do not hold {dtype}{shape:?} ({} bytes)",
                    bytes.len(),
                    n * dtype.size_in_bytes()
                ),
            }),
        }
    }

    // ---- metadata ------------------------------------------------------------------------

    /// The abstract value (shape and dtype).
    pub fn aval(&self) -> &Aval {
        &self.0.aval
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.0.aval.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.0.aval.dtype
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.0.aval.shape.len()
    }

    /// Number of elements.
    pub fn size(&self) -> usize {
        self.0.aval.size()
    }

    /// True if this array is a tracer of some transformation (not a concrete value).
    pub fn is_tracer(&self) -> bool {
        self.tracer().is_some()
    }

    // ---- read-back -----------------------------------------------------------------------

    /// The concrete storage of this value: the buffer itself, or for a JVP tracer the
    /// concrete primal underneath (so eager code under `grad` may branch on values).
    pub(crate) fn concrete_storage(&self, op: &str) -> Result<&Storage> {
        let mut a = self;
        loop {
            match &a.0.repr {
                Repr::Concrete(s) => return Ok(s),
                Repr::Tracer(t) => match t.data.concrete_primal() {
                    Some(p) => a = p,
                    None => {
                        return Err(Error::ConcretizationError {
                            op: op.into(),
                            trace: t.data.kind().into(),
                        });
                    }
                },
            }
        }
    }

    /// Copies the elements to a host vector of `T`, which must be the array's dtype.
    ///
    /// Panics on a dtype mismatch or an abstract tracer; see [`Array::try_to_vec`].
    #[track_caller]
    pub fn to_vec<T: StorageElement>(&self) -> Vec<T> {
        match self.try_to_vec() {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    /// Fallible [`Array::to_vec`].
    pub fn try_to_vec<T: StorageElement>(&self) -> Result<Vec<T>> {
        let s = self.concrete_storage("to_vec")?;
        T::slice(s).map(|v| v.to_vec()).ok_or(Error::ReadBack {
            op: "to_vec".into(),
            actual: self.dtype(),
            requested: T::DTYPE,
        })
    }

    /// Copies the elements converted to `f64`.
    #[track_caller]
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self.concrete_storage("to_f64_vec") {
            Ok(s) => s.to_f64_vec(),
            Err(e) => panic!("{e}"),
        }
    }

    /// The single element of a size-1 array.
    ///
    /// Panics if the array has more than one element, another dtype, or is abstract.
    #[track_caller]
    pub fn item<T: StorageElement>(&self) -> T {
        match self.try_item() {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    /// Fallible [`Array::item`].
    pub fn try_item<T: StorageElement>(&self) -> Result<T> {
        if self.size() != 1 {
            return Err(Error::Data {
                op: "item".into(),
                msg: format!(
                    "array of shape {:?} has {} elements, not 1",
                    self.shape(),
                    self.size()
                ),
            });
        }
        Ok(self.try_to_vec::<T>()?[0])
    }

    /// The single element as a [`Scalar`].
    #[track_caller]
    pub fn to_scalar(&self) -> Scalar {
        let v = self.to_f64_vec();
        assert!(v.len() == 1, "to_scalar: array of shape {:?} is not a scalar", self.shape());
        let d = self.dtype();
        match d {
            DType::Bool => Scalar::Bool(v[0] != 0.0),
            d if d.is_float() => Scalar::Float(v[0], d),
            d => Scalar::Int(v[0] as i64, d),
        }
    }

    /// The raw little-endian bytes of a concrete array.
    #[track_caller]
    pub fn to_bytes(&self) -> Vec<u8> {
        match self.concrete_storage("to_bytes") {
            Ok(s) => s.to_bytes(),
            Err(e) => panic!("{e}"),
        }
    }

    /// Returns this array as a concrete value (reading through JVP tracers), or an error
    /// if it is abstract.
    pub fn try_concrete(&self) -> Result<Array> {
        let s = self.concrete_storage("concrete")?;
        Ok(Array::from_storage(s.clone(), self.shape().to_vec()))
    }
}

impl fmt::Debug for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.repr {
            Repr::Concrete(_) => write!(f, "Array({self})"),
            Repr::Tracer(t) => write!(f, "Tracer<{}>({})", t.data.kind(), self.aval()),
        }
    }
}

impl fmt::Display for Array {
    /// numpy-like printing: nested brackets, aligned columns, long arrays summarized.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(s) = self.concrete_storage("display") else {
            return write!(f, "Traced<{}>", self.aval());
        };
        let dtype = self.dtype();
        let vals = s.to_f64_vec();
        let fmt_one = |x: f64| -> String {
            match dtype {
                DType::Bool => if x != 0.0 { "True" } else { "False" }.to_string(),
                d if d.is_float() => format_float(x),
                _ => format!("{}", x as i64),
            }
        };
        let strs: Vec<String> = vals.iter().map(|&x| fmt_one(x)).collect();
        let width = strs.iter().map(|s| s.len()).max().unwrap_or(0);
        let shape = self.shape();
        if shape.is_empty() {
            return write!(f, "{}", strs[0]);
        }
        let mut out = String::new();
        write_nested(&mut out, &strs, shape, 0, 0, width, 1);
        write!(f, "{out}")?;
        if !matches!(dtype, DType::F32 | DType::I32 | DType::Bool) {
            write!(f, " dtype={dtype}")?;
        }
        Ok(())
    }
}

fn format_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-4..1e8).contains(&a) {
        return format!("{x:.4e}");
    }
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0');
    s.to_string()
}

const EDGE: usize = 3;
const SUMMARIZE_OVER: usize = 1000;

fn write_nested(
    out: &mut String,
    strs: &[String],
    shape: &[usize],
    dim: usize,
    offset: usize,
    width: usize,
    indent: usize,
) {
    let n = shape[dim];
    let inner: usize = shape[dim + 1..].iter().product();
    let summarize = strs.len() > SUMMARIZE_OVER && n > 2 * EDGE;
    out.push('[');
    let idxs: Vec<Option<usize>> = if summarize {
        (0..EDGE).map(Some).chain([None]).chain((n - EDGE..n).map(Some)).collect()
    } else {
        (0..n).map(Some).collect()
    };
    for (k, i) in idxs.iter().enumerate() {
        if k > 0 {
            if dim + 1 == shape.len() {
                out.push(' ');
            } else {
                out.push_str(&"\n".repeat(shape.len() - dim - 1));
                out.push_str(&" ".repeat(indent));
            }
        }
        match i {
            None => out.push_str("..."),
            Some(i) => {
                if dim + 1 == shape.len() {
                    out.push_str(&format!("{:>width$}", strs[offset + i]));
                } else {
                    write_nested(out, strs, shape, dim + 1, offset + i * inner, width, indent + 1);
                }
            }
        }
    }
    out.push(']');
}

/// Compile-time check that arrays can cross threads.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Array>();
};
