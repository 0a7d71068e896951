//! The error type of the `kiln` crate.

use crate::aval::Aval;
use crate::dtype::DType;

/// Errors from array operations, tracing and transformations.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Operand shapes do not fit the operation.
    #[error("{op}: {msg} (operands: {})", fmt_avals(.avals))]
    Shape {
        /// The operation.
        op: String,
        /// What is wrong.
        msg: String,
        /// The operand types.
        avals: Vec<Aval>,
    },
    /// Operand dtypes do not fit the operation.
    #[error("{op}: {msg} (operands: {})", fmt_avals(.avals))]
    DType {
        /// The operation.
        op: String,
        /// What is wrong.
        msg: String,
        /// The operand types.
        avals: Vec<Aval>,
    },
    /// Wrong number of operands.
    #[error("{op}: expected {expected} operands, got {got}")]
    Arity {
        /// The operation.
        op: String,
        /// How many it takes.
        expected: usize,
        /// How many it got.
        got: usize,
    },
    /// Host data does not match the requested shape or type.
    #[error("{op}: {msg}")]
    Data {
        /// The operation.
        op: String,
        /// What is wrong.
        msg: String,
    },
    /// Reading back a value of the wrong dtype.
    #[error("{op}: array has dtype {actual}, requested {requested}")]
    ReadBack {
        /// The operation.
        op: String,
        /// The array's dtype.
        actual: DType,
        /// The requested dtype.
        requested: DType,
    },
    /// A concrete value was needed but the array is a tracer (e.g. `item` under `jit`).
    #[error(
        "{op}: this array is abstract (a tracer of {trace}); its value is not known while \
         tracing. Use the value outside the transformed function, or keep the computation \
         in array operations"
    )]
    ConcretizationError {
        /// The operation.
        op: String,
        /// The kind of trace that owns the tracer.
        trace: String,
    },
    /// A tracer was used outside the transformation that created it.
    #[error(
        "{op}: an array traced by a transformation that has already finished was used \
         (escaped tracer); return it from the transformed function instead of storing it"
    )]
    EscapedTracer {
        /// The operation that saw it.
        op: String,
    },
    /// A transformation was applied to a function it does not support.
    #[error("{transform}: {msg}")]
    Transform {
        /// The transformation (`grad`, `vjp`, ...).
        transform: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// The jaxpr is not well typed.
    #[error("typecheck: {0}")]
    Typecheck(String),
}

fn fmt_avals(avals: &[Aval]) -> String {
    let parts: Vec<String> = avals.iter().map(|a| a.to_string()).collect();
    parts.join(", ")
}

/// Result type of the `kiln` crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shape error constructor.
    pub fn shape(op: impl Into<String>, msg: impl Into<String>, avals: &[Aval]) -> Error {
        Error::Shape { op: op.into(), msg: msg.into(), avals: avals.to_vec() }
    }
    /// Dtype error constructor.
    pub fn dtype(op: impl Into<String>, msg: impl Into<String>, avals: &[Aval]) -> Error {
        Error::DType { op: op.into(), msg: msg.into(), avals: avals.to_vec() }
    }
}
