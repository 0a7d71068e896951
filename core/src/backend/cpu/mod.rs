//! The native CPU backend: eager kernels for every primitive.
//!
//! Kernels take validated operands (shapes and dtypes were checked by
//! [`abstract_eval`](crate::rules::abstract_eval)) and return fresh storage. Large
//! elementwise and reduction kernels run in parallel with rayon; matmul and convolution run
//! on the `gemm` crate, except small `f32` products with narrow row-major right operands
//! (attention's), which run on a kernel of kiln's own.

mod dot;
pub(crate) use dot::{
    conv_filter_grad, dot_general_transposed, dot_reads_in_place, dot_writes_transposed,
};
mod elementwise;
pub mod fused;
mod gather;
mod layout;
mod random;
mod reduce;
mod small_gemm;
mod sort;
mod window;

use crate::aval::Aval;
use crate::backend::Storage;
use crate::prim::Prim;

/// One input of a kernel: its elements and its shape.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    /// Row-major elements.
    pub data: &'a Storage,
    /// Dimension sizes.
    pub shape: &'a [usize],
}

/// Finished elements of a contraction's output, handed to its [`Epilogue`]: `count` runs
/// of `len` elements, run `i` starting at flat index `start + i * stride`. `ptr` points at
/// element `start`; the runs may be read and overwritten in place (no other thread touches
/// them while the epilogue runs).
#[derive(Clone, Copy, Debug)]
pub struct Block<T> {
    /// The element at flat index `start`.
    pub ptr: *mut T,
    /// Flat index of the first element.
    pub start: usize,
    /// Elements per run.
    pub len: usize,
    /// Distance between the starts of consecutive runs.
    pub stride: usize,
    /// Number of runs.
    pub count: usize,
}

/// Work run on each part of a matrix product's or convolution's output as soon as that
/// part is final, while it is still in cache (the jit's fused bias/activation epilogues).
#[derive(Clone, Copy)]
pub enum Epilogue<'a> {
    /// For an `f32` output.
    F32(&'a (dyn Fn(Block<f32>) + Sync)),
    /// For an `f64` output.
    F64(&'a (dyn Fn(Block<f64>) + Sync)),
}

/// Runs `prim` (a `dot_general` or a convolution on `f32`/`f64`) with `epi` applied to each
/// part of its output as it is finished.
pub fn execute_with_epilogue(
    prim: &Prim,
    ins: &[Operand<'_>],
    out: &Aval,
    epi: Epilogue<'_>,
) -> Storage {
    contract(prim, ins, out, Some(epi))
}

/// A `dot_general` or a convolution, with an optional [`Epilogue`].
fn contract(prim: &Prim, ins: &[Operand<'_>], out: &Aval, epi: Option<Epilogue<'_>>) -> Storage {
    match prim {
        Prim::DotGeneral { lhs_contract, rhs_contract, lhs_batch, rhs_batch } => dot::dot_general(
            ins[0],
            ins[1],
            lhs_contract,
            rhs_contract,
            lhs_batch,
            rhs_batch,
            &out.shape,
            epi,
        ),
        Prim::Conv { strides, padding, lhs_dilation, rhs_dilation, feature_group_count } => {
            dot::conv(
                ins[0],
                ins[1],
                strides,
                padding,
                lhs_dilation,
                rhs_dilation,
                *feature_group_count,
                &out.shape,
                epi,
            )
        }
        p => unreachable!("`{}` is not a contraction", p.name()),
    }
}

/// True if the CPU backend can run an [`Epilogue`] on `prim`'s output.
pub fn takes_epilogue(prim: &Prim) -> bool {
    matches!(prim, Prim::DotGeneral { .. } | Prim::Conv { .. })
}

/// Keeps freed buffers in the process for the next step instead of returning them to the
/// operating system. Called on first use of the CPU backend.
///
/// glibc's `malloc` serves blocks above a (dynamic) threshold with fresh `mmap`s and gives
/// freed memory at the top of the heap back to the system, so a train step that frees and
/// re-allocates the same multi-megabyte buffers every step faults and zeroes their pages in
/// again each time (measured: about a tenth of the small CNN's step in the kernel's
/// page-fault paths). This serves every block from the heap (no `mmap`s: glibc's
/// threshold tops out at 32 MiB, and a 10M-element f32 array is 40 MB) and trims it only
/// when 1 GiB lies free at its top, as the caching allocators of other frameworks do.
/// Measured on the benchmark's eager `sum(x + y * z)` over 10M elements: 2.7 -> 9-11 GB/s;
/// per-example gradients (51 MB outputs) 2-3x more examples per second. The price: freed
/// memory stays with the process for reuse. `KILN_MALLOC_TUNING=0` keeps glibc's
/// defaults; other platforms and C libraries are left alone.
pub(crate) fn tune_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if std::env::var_os("KILN_MALLOC_TUNING").is_none_or(|v| v != "0") {
            // SAFETY: `mallopt` only sets allocator parameters, at any time; glibc keeps
            // every block already allocated valid.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
                libc::mallopt(libc::M_MMAP_MAX, 0);
            }
        }
    });
}

/// Steps the row-major multi-index `idx` within `shape` (an odometer: the last axis moves
/// fastest, each wrap carries into the next axis). Returns true when it wrapped around to
/// all zeros.
#[inline]
pub(crate) fn next_index(idx: &mut [usize], shape: &[usize]) -> bool {
    for (i, &n) in idx.iter_mut().zip(shape).rev() {
        *i += 1;
        if *i < n {
            return false;
        }
        *i = 0;
    }
    true
}

/// Minimum number of elements before a kernel splits work across threads.
pub(crate) const PAR_THRESHOLD: usize = 1 << 15;

/// An output pointer shared by the threads of one kernel, each of which writes only its
/// own, disjoint elements (the kernel's `SAFETY` comments say why they are disjoint).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub(crate) *mut T);
// SAFETY: only disjoint elements are written through it from different threads.
unsafe impl<T> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the `Send` wrapper, not its field).
    #[inline(always)]
    pub(crate) fn ptr(self) -> *mut T {
        self.0
    }
}

/// The widest vector instruction set the elementwise loops (eager and fused) run with on
/// this CPU. Every level computes the same bits: Rust never contracts `a * b + c` into an
/// FMA on its own, and the kernels' explicit `mul_add`s are exact on every level.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub(crate) enum Simd {
    /// The build's baseline (SSE2 on x86-64).
    Base,
    /// AVX2 and FMA (256-bit vectors).
    Avx2,
    /// AVX-512 F/VL plus AVX2 and FMA (512-bit vectors).
    Avx512,
}

/// [`Simd`] of this CPU, detected once.
fn detected() -> Simd {
    static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 =
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            if avx2
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
            {
                return Simd::Avx512;
            }
            if avx2 {
                return Simd::Avx2;
            }
        }
        Simd::Base
    })
}

#[cfg(test)]
thread_local! {
    /// A lower level than the CPU's for kernels started on this thread (tests compare
    /// the levels).
    pub(crate) static FORCED_SIMD: std::cell::Cell<Option<Simd>> =
        const { std::cell::Cell::new(None) };
}

/// The level kernels started on this thread run at (read once per kernel call, on the
/// calling thread, and passed to the worker threads).
pub(crate) fn simd() -> Simd {
    #[cfg(test)]
    if let Some(l) = FORCED_SIMD.with(|f| f.get()) {
        return if l <= detected() { l } else { detected() };
    }
    detected()
}

/// Runs `$body` (a loop over slices) compiled for `$level`: the body is pasted into one
/// function per level, each with that level's target features, so it vectorizes with
/// that level's instructions (what it calls must be `#[inline(always)]` to follow).
macro_rules! simd_dispatch {
    ($level:expr, [$($g:tt)*], ($($arg:ident: $ty:ty),*), $body:block) => {
        $crate::backend::cpu::simd_dispatch!($level, [$($g)*], ($($arg: $ty),*) -> (), $body)
    };
    ($level:expr, [$($g:tt)*], ($($arg:ident: $ty:ty),*) -> $ret:ty, $body:block) => {{
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn avx2<$($g)*>($($arg: $ty),*) -> $ret $body
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        fn avx512<$($g)*>($($arg: $ty),*) -> $ret $body
        #[inline(always)]
        fn base<$($g)*>($($arg: $ty),*) -> $ret $body
        match $level {
            // SAFETY: `simd()` detected the features of these levels on this CPU.
            #[cfg(target_arch = "x86_64")]
            $crate::backend::cpu::Simd::Avx512 => unsafe { avx512($($arg),*) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            $crate::backend::cpu::Simd::Avx2 => unsafe { avx2($($arg),*) },
            _ => base($($arg),*),
        }
    }};
}
pub(crate) use simd_dispatch;

/// Runs `prim` on `ins`, producing one storage per output aval in `outs`.
///
/// The operands must satisfy the primitive's abstract evaluation rule; `outs` is its
/// result for them.
pub fn execute(prim: &Prim, ins: &[Operand<'_>], outs: &[Aval]) -> Vec<Storage> {
    tune_allocator();
    use Prim::*;
    let out = &outs[0];
    match prim {
        Neg
        | Exp
        | Log
        | Log1p
        | Expm1
        | Sin
        | Cos
        | Tanh
        | Logistic
        | Sqrt
        | Rsqrt
        | Abs
        | Sign
        | Floor
        | Ceil
        | Round
        | Erf
        | ErfInv
        | IsFinite
        | Not
        | IntegerPow { .. }
        | Gelu { .. }
        | GeluGrad { .. }
        | StopGradient => vec![elementwise::unary(prim, ins[0].data)],
        ConvertElementType { dtype } => vec![elementwise::convert(ins[0].data, *dtype)],
        BitcastConvertType { dtype } => vec![elementwise::bitcast(ins[0].data, *dtype)],
        Add | Sub | Mul | Div | Rem | Pow | Max | Min | Atan2 | And | Or | Xor | ShiftLeft
        | ShiftRightLogical | ShiftRightArithmetic | Eq | Ne | Lt | Le | Gt | Ge => {
            vec![elementwise::binary(prim, ins[0].data, ins[1].data)]
        }
        Select => vec![elementwise::select(ins[0].data, ins[1].data, ins[2].data)],
        Clamp => vec![elementwise::clamp(ins[0].data, ins[1].data, ins[2].data)],
        BroadcastInDim { shape, dims } => vec![layout::broadcast_in_dim(ins[0], shape, dims)],
        Reshape { .. } | Squeeze { .. } | ExpandDims { .. } => vec![ins[0].data.clone()],
        Transpose { perm } => vec![layout::transpose(ins[0], perm)],
        Rev { axes } => vec![layout::rev(ins[0], axes)],
        ReduceSum { axes } | ReduceMax { axes } | ReduceMin { axes } | ReduceProd { axes } => {
            vec![reduce::reduce(prim, ins[0], axes)]
        }
        ArgMax { axis, index_dtype } => vec![reduce::arg_reduce(ins[0], *axis, *index_dtype, true)],
        ArgMin { axis, index_dtype } => {
            vec![reduce::arg_reduce(ins[0], *axis, *index_dtype, false)]
        }
        Cumsum { axis, reverse } => vec![reduce::cumsum(ins[0], *axis, *reverse)],
        DotGeneral { .. } | Conv { .. } => vec![contract(prim, ins, out, None)],
        ReduceWindow { kind, window, strides, padding } => {
            vec![window::reduce_window(ins[0], *kind, window, strides, padding, &out.shape)]
        }
        SelectAndGatherAdd { window, strides, padding } => vec![window::select_and_gather_add(
            ins[0], ins[1], window, strides, padding, &out.shape,
        )],
        SelectAndScatterAdd { window, strides, padding } => {
            vec![window::select_and_scatter_add(ins[0], ins[1], window, strides, padding)]
        }
        Slice { start, strides, .. } => vec![layout::slice(ins[0], start, strides, &out.shape)],
        DynamicSlice { sizes } => vec![layout::dynamic_slice(ins[0], &ins[1..], sizes)],
        DynamicUpdateSlice => vec![layout::dynamic_update_slice(ins[0], ins[1], &ins[2..])],
        Concatenate { axis } => vec![layout::concatenate(ins, *axis, &out.shape)],
        Pad { lo, interior, .. } => {
            vec![layout::pad(ins[0], ins[1].data, lo, interior, &out.shape)]
        }
        Gather { axis, batch_dims } => {
            vec![gather::gather(ins[0], ins[1], *axis, *batch_dims, &out.shape)]
        }
        ScatterAdd { axis, batch_dims } => {
            vec![gather::scatter(ins[0], ins[1], ins[2], *axis, *batch_dims, true)]
        }
        Scatter { axis, batch_dims } => {
            vec![gather::scatter(ins[0], ins[1], ins[2], *axis, *batch_dims, false)]
        }
        Iota { dtype, shape, dim } => vec![layout::iota(*dtype, shape, *dim)],
        Sort { axis, num_keys } => sort::sort(ins, *axis, *num_keys),
        Threefry2x32 => random::threefry2x32(ins[0].data, ins[1].data, ins[2].data, ins[3].data),
        Call { callee } => callee.executable().run(ins),
    }
}
