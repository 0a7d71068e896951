//! Fused elementwise kernels: a chain of elementwise operations over one domain shape,
//! optionally ending in reductions over trailing axes (one result per row) or over the
//! leading ones (one per column), run as a single pass over memory.
//!
//! The domain is walked tile by tile (`TILE` elements); every intermediate lives in a
//! tile-sized register (in cache), so only the group's inputs are read from main memory and
//! only its outputs written. Work is split into chunks run in parallel with rayon; the
//! partial results of a reduction are combined in a fixed order, so results do not depend
//! on the number of threads.

use super::elementwise::{
    Real, gelu_erf, gelu_erf_grad, gelu_erf_pair, gelu_tanh, gelu_tanh_grad, gelu_tanh_pair,
    logistic, max_nan, min_nan, powi_float, sign_float,
};
use super::{Block, Epilogue, Simd, simd};
use super::{PAR_THRESHOLD, SharedMut};
use crate::backend::Storage;
use crate::dtype::{DType, Element};
use crate::prim::Prim;
use rayon::prelude::*;

/// Elements per tile (a register of the program). Every instruction costs a fixed
/// dispatch per tile, so longer tiles pay it less often; 1024 `f32` (4 KB a register)
/// keeps a layer norm's or an Adam update's live registers in the L1 cache (measured,
/// binaries alternated 5 times: transformer step median 119.7 -> 112.3 ms, isolated layer
/// norm over `[32, 64, 128]` 370 -> 285-350 us, against 512).
pub(crate) const TILE: usize = 1024;
/// Elements per tile of a program that streams memory ([`streams`]): shorter tiles keep
/// its input streams' loads closer together (measured on `sum(x + y * z)` over 10M
/// elements, two binaries alternated 11 times: median 17.9 -> 19.8 GB/s with 256 instead
/// of 512; 1024 was slower, and the compute-heavy MLP step slower with 256 everywhere).
/// Independent of [`TILE`].
const STREAM_TILE: usize = 256;
/// How far ahead, in tiles, [`Ctx::prefetch_inputs`] asks for the inputs.
const PREFETCH_TILES: usize = 2;
/// Elements per parallel work item.
const CHUNK: usize = 1 << 15;

/// How an input of a fused program is read.
#[derive(Clone, Debug, PartialEq)]
pub enum View {
    /// Same shape as the domain, row-major.
    Full,
    /// A single element, the same everywhere.
    Scalar,
    /// Broadcast: the element at domain index `i` is at `sum_d coord_d(i) * strides[d]`
    /// (stride 0 along broadcast dimensions).
    Strided(Vec<usize>),
}

/// One instruction; registers are numbered, each written once.
#[derive(Clone, Debug)]
pub enum Instr {
    /// Reads input `input` into `dst`.
    Load {
        /// Input index.
        input: usize,
        /// Destination register.
        dst: usize,
    },
    /// Fills `dst` with a constant.
    Const {
        /// The value.
        value: f64,
        /// Destination register.
        dst: usize,
    },
    /// A unary elementwise primitive.
    Unary {
        /// The primitive.
        prim: Prim,
        /// Operand register.
        a: usize,
        /// Destination register.
        dst: usize,
    },
    /// A binary elementwise primitive or comparison (comparisons give 0 or 1).
    Binary {
        /// The primitive.
        prim: Prim,
        /// Operand registers.
        a: usize,
        /// Operand registers.
        b: usize,
        /// Destination register.
        dst: usize,
    },
    /// `a * b` combined with `c` by `op` (`a * b + c`, `a * b - c` or `c - a * b`): a
    /// product read once, fused into the sum that reads it ([`FusedProgram::fuse_mul_add`])
    /// so the tile is walked once, not twice. The product is rounded before the sum, as
    /// the two instructions round (no fused multiply-add), so results keep their bits.
    MulAdd {
        /// How the product and `c` combine.
        op: MulAddOp,
        /// Factor register.
        a: usize,
        /// Factor register.
        b: usize,
        /// Addend register.
        c: usize,
        /// Destination register.
        dst: usize,
    },
    /// `p != 0 ? t : f`.
    Select {
        /// Predicate register.
        p: usize,
        /// Value if true.
        t: usize,
        /// Value if false.
        f: usize,
        /// Destination register.
        dst: usize,
    },
    /// `min(max(x, lo), hi)`.
    Clamp {
        /// Lower bound.
        lo: usize,
        /// Operand.
        x: usize,
        /// Upper bound.
        hi: usize,
        /// Destination register.
        dst: usize,
    },
    /// Reduces each row (the trailing [`FusedProgram::inner`] elements) of `a` into a
    /// *row register* `dst`, which holds one value per row of the tile, so that later
    /// instructions of the same tile can use it: the max and sum of a softmax, the mean and
    /// variance of a layer norm. Only in programs whose rows fit a tile
    /// (`inner <= TILE`), which run whole rows per tile. Elementwise instructions whose
    /// operands are row registers (and uniform values) compute row registers too, one
    /// element per row; [`Instr::Expand`] spreads one back over its rows.
    RowReduce {
        /// The reduction.
        kind: Reduce,
        /// Operand register.
        a: usize,
        /// Destination register.
        dst: usize,
    },
    /// Writes each value of row register `a` to every element of its row in `dst`.
    Expand {
        /// Row register.
        a: usize,
        /// Destination register.
        dst: usize,
    },
}

impl Instr {
    /// The registers it reads.
    fn operands(&self) -> Vec<usize> {
        match self {
            Instr::Load { .. } | Instr::Const { .. } => vec![],
            Instr::Unary { a, .. } => vec![*a],
            Instr::Binary { a, b, .. } => vec![*a, *b],
            Instr::MulAdd { a, b, c, .. } => vec![*a, *b, *c],
            Instr::Select { p, t, f, .. } => vec![*p, *t, *f],
            Instr::Clamp { lo, x, hi, .. } => vec![*lo, *x, *hi],
            Instr::RowReduce { a, .. } | Instr::Expand { a, .. } => vec![*a],
        }
    }

    fn dst(&self) -> usize {
        match self {
            Instr::Load { dst, .. }
            | Instr::Const { dst, .. }
            | Instr::Unary { dst, .. }
            | Instr::Binary { dst, .. }
            | Instr::MulAdd { dst, .. }
            | Instr::Select { dst, .. }
            | Instr::Clamp { dst, .. }
            | Instr::RowReduce { dst, .. }
            | Instr::Expand { dst, .. } => *dst,
        }
    }
}

/// How [`Instr::MulAdd`] combines its product `p = a * b` with `c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MulAddOp {
    /// `p + c` (also `c + p`: IEEE addition commutes exactly).
    Add,
    /// `p - c`.
    Sub,
    /// `c - p`.
    SubFrom,
}

/// The reduction of a fused output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// Sum.
    Sum,
    /// Maximum (NaN-propagating).
    Max,
    /// Minimum (NaN-propagating).
    Min,
    /// Product.
    Prod,
}

/// A materialized result of a fused program.
#[derive(Clone, Debug)]
pub enum Output {
    /// The register over the whole domain (`bool`: stored as booleans).
    Elementwise {
        /// The register.
        reg: usize,
        /// Store as `bool` (a comparison result).
        bool_out: bool,
    },
    /// The register reduced over the trailing `inner` elements of each row.
    Reduce {
        /// The register.
        reg: usize,
        /// The reduction.
        kind: Reduce,
    },
    /// A row register (one value per row, see [`Instr::RowReduce`]): one element per row.
    RowValue {
        /// The register.
        reg: usize,
        /// Store as `bool` (a comparison result).
        bool_out: bool,
    },
    /// The register reduced over the rows: one value per column, [`FusedProgram::inner`]
    /// of them (the gradient of a bias or a layer norm's scale, `sum(dy, axes=[0, 1])`).
    /// Only in programs whose rows fit a tile (`inner <= TILE`).
    ColReduce {
        /// The register.
        reg: usize,
        /// The reduction.
        kind: Reduce,
    },
}

impl Output {
    /// The register it materializes.
    fn reg(&self) -> usize {
        match self {
            Output::Elementwise { reg, .. }
            | Output::Reduce { reg, .. }
            | Output::RowValue { reg, .. }
            | Output::ColReduce { reg, .. } => *reg,
        }
    }
}

/// A fused elementwise program (built by the jit compiler).
#[derive(Clone, Debug)]
pub struct FusedProgram {
    /// The compute type (`f32` or `f64`); inputs are of this type or `bool`.
    pub dtype: DType,
    /// The domain shape.
    pub domain: Vec<usize>,
    /// Elements per row: the product of the trailing dims its row reductions reduce, or
    /// that its column reductions keep (1 if there is no reduction).
    pub inner: usize,
    /// How each input is read.
    pub views: Vec<View>,
    /// Instructions evaluated once per work item (constants, scalar loads).
    pub prologue: Vec<Instr>,
    /// Instructions evaluated per tile.
    pub body: Vec<Instr>,
    /// The results.
    pub outputs: Vec<Output>,
    /// Number of registers.
    pub n_regs: usize,
}

impl FusedProgram {
    /// Whether the program works row by row (it has reductions or row registers): it then
    /// cannot be a contraction's epilogue, which sees arbitrary blocks of the domain.
    pub fn row_wise(&self) -> bool {
        self.outputs.iter().any(|o| !matches!(o, Output::Elementwise { .. }))
            || self.body.iter().any(|i| matches!(i, Instr::RowReduce { .. }))
    }

    /// Moves body instructions whose operands are all uniform (constants, scalar inputs
    /// and values computed from them) into the prologue, so they run once per work item
    /// instead of once per tile.
    pub fn hoist_invariants(&mut self) {
        let mut uniform = self.uniform();
        let mut body = Vec::with_capacity(self.body.len());
        for ins in std::mem::take(&mut self.body) {
            // Row registers work on whole rows of a tile, which the prologue has not.
            let invariant =
                !matches!(ins, Instr::Load { .. } | Instr::RowReduce { .. } | Instr::Expand { .. })
                    && ins.operands().iter().all(|&r| uniform[r]);
            if invariant {
                uniform[ins.dst()] = true;
                self.prologue.push(ins);
            } else {
                body.push(ins);
            }
        }
        self.body = body;
    }

    /// Fuses each product read only by one sum or difference into it
    /// ([`Instr::MulAdd`]): `sum(x + y * z)` then walks its tile once instead of twice,
    /// loading all three inputs in one loop, and an Adam moment update saves a pass.
    /// Measured on the jitted `sum(x + y * z)` over 10M `f32`, the two programs alternated
    /// 300 times in one process, 3 runs: median 24.4/27.8/23.2 -> 26.3/29.7/24.5 GB/s.
    pub fn fuse_mul_add(&mut self) {
        let mut uses = vec![0usize; self.n_regs];
        for ins in self.prologue.iter().chain(&self.body) {
            for r in ins.operands() {
                uses[r] += 1;
            }
        }
        for o in &self.outputs {
            uses[o.reg()] += 1;
        }
        let rows = self.row_regs();
        // The body position of each single-use product.
        let mut product = vec![None; self.n_regs];
        let mut dead = vec![false; self.body.len()];
        for i in 0..self.body.len() {
            if let Instr::Binary { prim: Prim::Mul, dst, .. } = self.body[i] {
                if uses[dst] == 1 {
                    product[dst] = Some(i);
                }
                continue;
            }
            let Instr::Binary { prim: prim @ (Prim::Add | Prim::Sub), a, b, dst } = &self.body[i]
            else {
                continue;
            };
            let (a, b, dst) = (*a, *b, *dst);
            // The product's operand, the addend, and how they combine.
            let pick = match (product[a], product[b], prim) {
                (Some(k), _, Prim::Add) => Some((k, b, MulAddOp::Add)),
                (_, Some(k), Prim::Add) => Some((k, a, MulAddOp::Add)),
                (Some(k), _, _) => Some((k, b, MulAddOp::Sub)),
                (_, Some(k), _) => Some((k, a, MulAddOp::SubFrom)),
                _ => None,
            };
            let Some((k, c, op)) = pick else { continue };
            let Instr::Binary { a: x, b: y, dst: p, .. } = self.body[k] else {
                unreachable!("products are binary instructions")
            };
            // A row register's product stays with row registers.
            if rows[p] != rows[dst] {
                continue;
            }
            product[p] = None;
            dead[k] = true;
            self.body[i] = Instr::MulAdd { op, a: x, b: y, c, dst };
        }
        let body = std::mem::take(&mut self.body);
        self.body = body.into_iter().zip(dead).filter(|(_, d)| !d).map(|(i, _)| i).collect();
    }

    /// Moves each GELU derivative next to the GELU of the same register (a layer's
    /// activation and the derivative its backward pass keeps), so that the pair runs as
    /// one loop computing both from one `tanh` (or `erf`) per element (when their
    /// tile buffers differ, which each run checks). Measured with pairing switched on and off in one
    /// process, 2 threads: the epilogue `gelu`, `gelu_grad` of `x @ w + b` (f32[2048,
    /// 128] x [128, 512]) median 2510 -> 2021 us (faster in 19 of 20 alternations); the
    /// transformer train step (`bench`'s `lm_step`) 89.8 -> 80.6 and 90.9 -> 87.9 ms in
    /// two runs of 14 alternations (faster in 12 and 8 of them).
    pub fn pair_gelu(&mut self) {
        let mut i = 0;
        while i < self.body.len() {
            if let Some((approximate, grad, a)) = gelu_part(&self.body[i]) {
                let partner = (i + 1..self.body.len())
                    .find(|&j| gelu_part(&self.body[j]) == Some((approximate, !grad, a)));
                if let Some(j) = partner {
                    // Legal: the partner reads only `a`, which is defined before `i`.
                    let ins = self.body.remove(j);
                    self.body.insert(i + 1, ins);
                    i += 2;
                    continue;
                }
            }
            i += 1;
        }
    }

    /// For each body position, whether it starts a GELU pair ([`FusedProgram::pair_gelu`])
    /// that can run as one loop: the next instruction is its partner and the two write
    /// different tile buffers (`tiles`, from [`FusedProgram::assign_tiles`]).
    fn gelu_pairs(&self, tiles: &[usize]) -> Vec<bool> {
        let mut pairs = vec![false; self.body.len()];
        let mut i = 0;
        while i + 1 < self.body.len() {
            let (x, y) = (&self.body[i], &self.body[i + 1]);
            let paired = match (gelu_part(x), gelu_part(y)) {
                (Some((ax, gx, rx)), Some((ay, gy, ry))) => ax == ay && gx != gy && rx == ry,
                _ => false,
            };
            if paired && tiles[x.dst()] != tiles[y.dst()] {
                pairs[i] = true;
                i += 2;
            } else {
                i += 1;
            }
        }
        pairs
    }

    /// Which registers are row registers (one element per row of a tile, see
    /// [`Instr::RowReduce`]): those a row reduction writes, and those the body computes
    /// from row registers and uniform values.
    fn row_regs(&self) -> Vec<bool> {
        let mut rows = vec![false; self.n_regs];
        let uniform = if cfg!(debug_assertions) { self.uniform() } else { Vec::new() };
        for ins in &self.body {
            rows[ins.dst()] = match ins {
                Instr::RowReduce { .. } => true,
                Instr::Load { .. } | Instr::Const { .. } | Instr::Expand { .. } => false,
                _ => {
                    let ops = ins.operands();
                    let row = ops.iter().any(|&r| rows[r]);
                    debug_assert!(
                        !row || ops.iter().all(|&r| rows[r] || uniform[r]),
                        "an instruction mixes row registers with full tiles"
                    );
                    row
                }
            };
        }
        rows
    }

    /// Which registers hold the same value at every domain element: those the prologue
    /// writes.
    fn uniform(&self) -> Vec<bool> {
        let mut u = vec![false; self.n_regs];
        for ins in &self.prologue {
            u[ins.dst()] = true;
        }
        u
    }

    /// The tile buffer of each register, and the number of buffers: registers whose
    /// values are dead share buffers, so a long program's working set stays in the L1
    /// cache. Prologue registers and the program's results keep theirs for the whole
    /// tile; an instruction never writes a buffer one of its operands is read from.
    fn assign_tiles(&self) -> (Vec<usize>, usize) {
        const FOREVER: usize = usize::MAX;
        let mut last = vec![0usize; self.n_regs];
        for ins in &self.prologue {
            last[ins.dst()] = FOREVER;
        }
        for (i, ins) in self.body.iter().enumerate() {
            for r in ins.operands() {
                if last[r] != FOREVER {
                    last[r] = i;
                }
            }
        }
        for o in &self.outputs {
            last[o.reg()] = FOREVER;
        }
        let mut tile = vec![usize::MAX; self.n_regs];
        let mut n = 0;
        for ins in &self.prologue {
            tile[ins.dst()] = n;
            n += 1;
        }
        let mut free: Vec<usize> = Vec::new();
        for (i, ins) in self.body.iter().enumerate() {
            let t = free.pop().unwrap_or_else(|| {
                n += 1;
                n - 1
            });
            tile[ins.dst()] = t;
            // A value never read (dead code kept for an output) has `last == 0`.
            if last[ins.dst()] <= i {
                free.push(t);
            }
            for r in ins.operands() {
                if last[r] == i && tile[r] != usize::MAX {
                    free.push(tile[r]);
                    last[r] = FOREVER - 1; // freed once, even if read twice here
                }
            }
        }
        (tile, n)
    }
}

/// A GELU instruction as (approximate, is the derivative, operand register).
fn gelu_part(ins: &Instr) -> Option<(bool, bool, usize)> {
    match ins {
        Instr::Unary { prim: Prim::Gelu { approximate }, a, .. } => Some((*approximate, false, *a)),
        Instr::Unary { prim: Prim::GeluGrad { approximate }, a, .. } => {
            Some((*approximate, true, *a))
        }
        _ => None,
    }
}

/// A typed input: a raw pointer to its elements (which outlive the run).
#[derive(Clone, Copy)]
enum In<T> {
    Real(*const T),
    Bool(*const bool),
}
// SAFETY: inputs are only read while the run borrows (or owns) their storage.
unsafe impl<T> Send for In<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for In<T> {}

impl<T: Real> In<T> {
    /// A storage of type `T` or `bool`.
    fn of(s: &Storage) -> Self {
        match s {
            Storage::Bool(v) => In::Bool(v.as_ptr()),
            other => In::Real(typed_ptr::<T>(other)),
        }
    }

    #[inline(always)]
    unsafe fn get(self, i: usize) -> T {
        // SAFETY: the caller passes an index inside the input.
        unsafe {
            match self {
                In::Real(p) => *p.add(i),
                In::Bool(p) => {
                    if *p.add(i) {
                        T::ONE
                    } else {
                        T::ZERO
                    }
                }
            }
        }
    }
}

/// Where an output is written: a real or a boolean buffer.
type OutPtr<T> = (Option<SharedMut<T>>, Option<SharedMut<bool>>);

enum Out<T> {
    Real(Vec<T>),
    Bool(Vec<bool>),
}

/// An input of a fused program.
pub enum Arg<'a> {
    /// Read only.
    Ref(&'a Storage),
    /// Read, then free to overwrite: an input that dies here. If it has the compute type
    /// and the domain's size, an elementwise output is written into it in place (each tile
    /// is read before it is written).
    Donated(Storage),
    /// The output of the contraction this program is the epilogue of (see
    /// [`run_epilogue`]), read block by block as the contraction finishes it.
    Pending,
}

/// Runs `prog` on `args`, returning one storage per output.
pub fn run(prog: &FusedProgram, args: Vec<Arg<'_>>) -> Vec<Storage> {
    match prog.dtype {
        DType::F32 => run_typed::<f32>(prog, args, None),
        DType::F64 => run_typed::<f64>(prog, args, None),
        d => unreachable!("fused programs compute in f32 or f64, not {d}"),
    }
}

/// Runs `prog` as the epilogue of a contraction: its one [`Arg::Pending`] input is the
/// contraction's output, which `produce` computes (through
/// [`execute_with_epilogue`](super::execute_with_epilogue)), calling the epilogue on each
/// part as soon as it is final. The program must be elementwise (no reductions) over the
/// contraction's output shape; its first real output is written in place into the
/// contraction's buffer.
pub fn run_epilogue(
    prog: &FusedProgram,
    args: Vec<Arg<'_>>,
    produce: impl Fn(Epilogue<'_>) -> Storage,
) -> Vec<Storage> {
    assert!(!prog.row_wise(), "an epilogue has no reductions");
    match prog.dtype {
        DType::F32 => run_typed::<f32>(prog, args, Some(&|f| produce(Epilogue::F32(f)))),
        DType::F64 => run_typed::<f64>(prog, args, Some(&|f| produce(Epilogue::F64(f)))),
        d => unreachable!("fused programs compute in f32 or f64, not {d}"),
    }
}

/// The compute types of fused programs, with their storage variant.
trait FusedFloat: Real {
    fn unwrap(s: Storage) -> Result<Vec<Self>, Storage>;
    fn wrap(v: Vec<Self>) -> Storage;
}

macro_rules! fused_float {
    ($t:ty, $variant:ident) => {
        impl FusedFloat for $t {
            fn unwrap(s: Storage) -> Result<Vec<Self>, Storage> {
                match s {
                    Storage::$variant(v) => Ok(v),
                    other => Err(other),
                }
            }
            fn wrap(v: Vec<Self>) -> Storage {
                Storage::$variant(v)
            }
        }
    };
}
fused_float!(f32, F32);
fused_float!(f64, F64);

/// Produces a pending input: runs the contraction with the given epilogue.
type Produce<'p, T> = &'p dyn Fn(&(dyn Fn(Block<T>) + Sync)) -> Storage;

fn run_typed<T: FusedFloat>(
    prog: &FusedProgram,
    args: Vec<Arg<'_>>,
    produce: Option<Produce<'_, T>>,
) -> Vec<Storage> {
    let n: usize = prog.domain.iter().product();
    let rows = prog.row_wise();
    // Without a reduction the whole domain is one row.
    let inner = if rows { prog.inner.max(1) } else { n.max(1) };
    let outer = if n == 0 { 0 } else { n / inner };
    let pending = args.iter().position(|a| matches!(a, Arg::Pending));
    assert_eq!(pending.is_some(), produce.is_some(), "a pending input needs a producer");
    let ins: Vec<In<T>> = args
        .iter()
        .map(|a| match a {
            Arg::Ref(s) => In::of(s),
            Arg::Donated(s) => In::of(s),
            // Set per block by the epilogue.
            Arg::Pending => In::Real(std::ptr::null()),
        })
        .collect();
    // Moving a `Vec` does not move its elements, so the input pointers stay valid; buffers
    // not reused for an output are freed when this function returns, after the pass.
    let mut other_types = Vec::new();
    let (mut donors, _read_only): (Vec<Vec<T>>, Vec<Vec<T>>) = args
        .into_iter()
        .filter_map(|a| match a {
            Arg::Donated(s) => T::unwrap(s).map_err(|s| other_types.push(s)).ok(),
            Arg::Ref(_) | Arg::Pending => None,
        })
        .partition(|v| v.len() == n);
    // An epilogue writes its first real elementwise output into the contraction's buffer.
    let in_product = pending.and_then(|_| {
        prog.outputs.iter().position(|o| matches!(o, Output::Elementwise { bool_out: false, .. }))
    });
    // Output buffers: elementwise ones over the domain, reductions one per row.
    let mut outs: Vec<Out<T>> = prog
        .outputs
        .iter()
        .enumerate()
        .map(|(k, o)| match o {
            _ if Some(k) == in_product => Out::Real(Vec::new()),
            Output::Elementwise { bool_out: true, .. } => Out::Bool(Vec::with_capacity(n)),
            Output::RowValue { bool_out: true, .. } => Out::Bool(Vec::with_capacity(outer)),
            Output::RowValue { .. } => Out::Real(Vec::with_capacity(outer)),
            Output::Elementwise { .. } => Out::Real(match donors.pop() {
                Some(mut v) => {
                    v.truncate(0);
                    v
                }
                None => Vec::with_capacity(n),
            }),
            Output::Reduce { .. } => Out::Real(Vec::with_capacity(outer)),
            Output::ColReduce { .. } => Out::Real(Vec::with_capacity(inner)),
        })
        .collect();
    let ptrs: Vec<OutPtr<T>> = outs
        .iter_mut()
        .map(|o| match o {
            Out::Real(v) => (Some(SharedMut(v.as_mut_ptr())), None),
            Out::Bool(v) => (None, Some(SharedMut(v.as_mut_ptr()))),
        })
        .collect();
    let reduces = reductions(prog, |o| match o {
        Output::Reduce { reg, kind } => Some((*reg, *kind)),
        _ => None,
    });
    let row_values: Vec<(usize, usize)> = prog
        .outputs
        .iter()
        .enumerate()
        .filter_map(|(k, o)| match o {
            Output::RowValue { reg, .. } => Some((k, *reg)),
            _ => None,
        })
        .collect();
    let cols = reductions(prog, |o| match o {
        Output::ColReduce { reg, kind } => Some((*reg, *kind)),
        _ => None,
    });
    assert!(cols.is_empty() || inner <= TILE, "column reductions need rows that fit a tile");
    let row_regs = prog.row_regs();
    assert!(!row_regs.contains(&true) || inner <= TILE, "row registers need rows that fit a tile");
    let prefetch = streams::<T>(prog, &ins);
    let tiles = prog.assign_tiles();
    let uniform = prog.uniform();
    let gelu_pairs = prog.gelu_pairs(&tiles.0);
    let ctx = Ctx {
        simd: simd(),
        prefetch,
        tile: if prefetch { STREAM_TILE } else { TILE },
        tiles: (&tiles.0, tiles.1),
        uniform: &uniform,
        prog,
        ins: &ins,
        ptrs: &ptrs,
        reduces: &reduces,
        row_values: &row_values,
        cols: &cols,
        row_regs: &row_regs,
        gelu_pairs: &gelu_pairs,
    };
    if let (Some(produce), Some(pending)) = (produce, pending) {
        let product = produce(&|b: Block<T>| ctx.epilogue(b, pending, in_product));
        if let Some(k) = in_product {
            outs[k] = Out::Real(T::unwrap(product).unwrap_or_else(|_| {
                unreachable!("the contraction computes in the program's type")
            }));
        }
    } else if inner >= CHUNK || !rows {
        // Work items split rows; partial reductions are combined per row in order.
        let per_row = inner.div_ceil(CHUNK).max(1);
        let items: Vec<(usize, usize, usize)> = (0..outer)
            .flat_map(|r| (0..per_row).map(move |c| (r, c * CHUNK, ((c + 1) * CHUNK).min(inner))))
            .collect();
        let work = |&(r, s, e): &(usize, usize, usize)| {
            let mut regs = ctx.registers();
            ctx.segment(&mut regs, r * inner, s, e)
        };
        let partials: Vec<Vec<f64>> = if n >= PAR_THRESHOLD && items.len() > 1 {
            items.par_iter().map(work).collect()
        } else {
            items.iter().map(work).collect()
        };
        for (j, &(k, _, kind)) in reduces.iter().enumerate() {
            let p = ptrs[k].0.expect("reductions are real");
            for r in 0..outer {
                let acc = partials[r * per_row..(r + 1) * per_row]
                    .iter()
                    .map(|v| v[j])
                    .reduce(|a, b| combine(kind, a, b))
                    .expect("a row has at least one chunk");
                // SAFETY: row `r` < outer, the capacity of the reduction output.
                unsafe { p.0.add(r).write(T::from_f64(acc)) };
            }
        }
    } else {
        // Short rows: each work item takes whole rows and writes their results itself.
        let rows_per = (CHUNK / inner).max(1);
        let groups: Vec<(usize, usize)> =
            (0..outer).step_by(rows_per).map(|r| (r, (r + rows_per).min(outer))).collect();
        // Rows shorter than a tile are evaluated several to a tile.
        let per_tile = (TILE / inner).max(1);
        // Returns the work item's partial column reductions.
        let work = |&(r0, r1): &(usize, usize)| {
            let mut regs = ctx.registers();
            let mut acc: Vec<Vec<T>> =
                cols.iter().map(|&(_, _, kind)| vec![T::from_f64(identity(kind)); inner]).collect();
            if inner <= TILE {
                for r in (r0..r1).step_by(per_tile) {
                    ctx.rows_tile(&mut regs, r, per_tile.min(r1 - r), inner, &mut acc);
                }
                return acc;
            }
            for r in r0..r1 {
                let acc = ctx.segment(&mut regs, r * inner, 0, inner);
                for (j, &(k, _, _)) in reduces.iter().enumerate() {
                    let p = ptrs[k].0.expect("reductions are real");
                    // SAFETY: each row is written by exactly one work item.
                    unsafe { p.0.add(r).write(T::from_f64(acc[j])) };
                }
            }
            acc
        };
        let partials: Vec<Vec<Vec<T>>> = if n >= PAR_THRESHOLD && groups.len() > 1 {
            groups.par_iter().map(work).collect()
        } else {
            groups.iter().map(work).collect()
        };
        // Work items depend only on the shape, and their partials combine in order, so the
        // column results do not depend on the number of threads.
        for (j, &(k, _, kind)) in cols.iter().enumerate() {
            let mut total = vec![T::from_f64(identity(kind)); inner];
            for p in &partials {
                combine_cols(ctx.simd, kind, &mut total, &p[j]);
            }
            let p = ptrs[k].0.expect("column reductions are real");
            // SAFETY: the output has capacity for `inner` elements; nothing else writes it.
            unsafe { std::ptr::copy_nonoverlapping(total.as_ptr(), p.0, inner) };
        }
    }
    outs.into_iter()
        .zip(&prog.outputs)
        .map(|(o, spec)| match (o, spec) {
            (Out::Real(mut v), Output::Elementwise { .. }) => {
                // SAFETY: every domain element was written by exactly one work item (or
                // block of the epilogue; the product's buffer already has its length).
                unsafe { v.set_len(n) };
                T::wrap(v)
            }
            (Out::Real(mut v), Output::ColReduce { .. }) => {
                // SAFETY: every column's result was written above.
                unsafe { v.set_len(inner) };
                T::wrap(v)
            }
            (Out::Real(mut v), Output::Reduce { .. } | Output::RowValue { .. }) => {
                // SAFETY: every row's result was written above.
                unsafe { v.set_len(outer) };
                T::wrap(v)
            }
            (Out::Bool(mut v), Output::RowValue { .. }) => {
                // SAFETY: as above.
                unsafe { v.set_len(outer) };
                Storage::Bool(v)
            }
            (Out::Bool(mut v), _) => {
                // SAFETY: every domain element was written by exactly one work item.
                unsafe { v.set_len(n) };
                Storage::Bool(v)
            }
        })
        .collect()
}

/// The reductions among `prog`'s outputs that `pick` selects (giving their register and
/// kind), as (output, register, kind).
fn reductions(
    prog: &FusedProgram,
    pick: impl Fn(&Output) -> Option<(usize, Reduce)>,
) -> Vec<(usize, usize, Reduce)> {
    let picked = prog.outputs.iter().enumerate().filter_map(|(k, o)| pick(o).map(|p| (k, p)));
    picked.map(|(k, (reg, kind))| (k, reg, kind)).collect()
}

/// True if `prog` streams memory: its full inputs outgrow the per-core cache and it does
/// little work per element. Such programs prefetch their inputs a few tiles ahead, so every
/// input stream loads at once (measured on `sum(x + y * z)` over 10M elements: 1.2-1.25x);
/// compute-heavy programs (an Adam update) run 2-9% slower with it, so they do not.
fn streams<T>(prog: &FusedProgram, ins: &[In<T>]) -> bool {
    let n: usize = prog.domain.iter().product();
    let full = ins
        .iter()
        .zip(&prog.views)
        .filter(|(i, v)| matches!((i, v), (In::Real(_), View::Full)))
        .count();
    let work = prog.body.iter().filter(|i| !matches!(i, Instr::Load { .. })).count();
    full > 0 && work <= 2 * full && n * full * std::mem::size_of::<T>() >= 4 << 20
}

fn typed_ptr<T: Element>(s: &Storage) -> *const T {
    assert_eq!(s.dtype(), T::DTYPE, "fused input of the wrong dtype");
    crate::with_storage!(s, v, _E => v.as_ptr() as *const T)
}

fn combine(kind: Reduce, a: f64, b: f64) -> f64 {
    match kind {
        Reduce::Sum => a + b,
        Reduce::Prod => a * b,
        Reduce::Max => max_nan(a, b),
        Reduce::Min => min_nan(a, b),
    }
}

fn identity(kind: Reduce) -> f64 {
    match kind {
        Reduce::Sum => 0.0,
        Reduce::Prod => 1.0,
        Reduce::Max => f64::NEG_INFINITY,
        Reduce::Min => f64::INFINITY,
    }
}

struct Ctx<'a, T> {
    simd: Simd,
    /// Prefetch the full inputs a few tiles ahead (see [`streams`]).
    prefetch: bool,
    /// Elements per tile: [`TILE`], or [`STREAM_TILE`] for a program that prefetches.
    tile: usize,
    /// Each register's tile buffer and the number of buffers
    /// ([`FusedProgram::assign_tiles`], planned once per run).
    tiles: (&'a [usize], usize),
    /// Registers written by the prologue ([`FusedProgram::uniform`]): computing
    /// instructions read one element of them, as a scalar.
    uniform: &'a [bool],
    prog: &'a FusedProgram,
    ins: &'a [In<T>],
    ptrs: &'a [OutPtr<T>],
    reduces: &'a [(usize, usize, Reduce)],
    /// The [`Output::RowValue`]s: (output, register).
    row_values: &'a [(usize, usize)],
    /// The [`Output::ColReduce`]s: (output, register, reduction).
    cols: &'a [(usize, usize, Reduce)],
    /// [`FusedProgram::row_regs`].
    row_regs: &'a [bool],
    /// [`FusedProgram::gelu_pairs`].
    gelu_pairs: &'a [bool],
}

impl<T: Real> Ctx<'_, T> {
    /// A register file with the prologue (constants, scalar loads) evaluated.
    fn registers(&self) -> Regs<T> {
        let (tile, n_tiles) = self.tiles;
        let mut bufs = vec![Tile([T::ZERO; TILE]); n_tiles].into_boxed_slice();
        let base = bufs.as_mut_ptr();
        // Until written, a register points at its tile (never read before then).
        let ptrs = tile.iter().map(|&t| base.wrapping_add(t) as *const T).collect();
        let mut regs = Regs { _bufs: bufs, base, ptrs };
        for ins in &self.prog.prologue {
            self.exec(ins, &mut regs, 0, TILE);
        }
        regs
    }

    /// Evaluates the program on a finished block of the pending input `pending` (the
    /// output of the contraction this program is the epilogue of), writing output
    /// `in_product` into the block itself.
    fn epilogue(&self, b: Block<T>, pending: usize, in_product: Option<usize>) {
        // Pointers at flat index 0 of the product: only `b`'s runs are accessed through
        // them (wrapping arithmetic keeps the block's provenance).
        let base = b.ptr.wrapping_sub(b.start);
        let mut ins = self.ins.to_vec();
        ins[pending] = In::Real(base);
        let mut ptrs = self.ptrs.to_vec();
        if let Some(k) = in_product {
            ptrs[k].0 = Some(SharedMut(base));
        }
        let ctx = Ctx { ins: &ins, ptrs: &ptrs, ..*self };
        let mut regs = ctx.registers();
        for i in 0..b.count {
            let s = b.start + i * b.stride;
            ctx.segment(&mut regs, 0, s, s + b.len);
        }
    }

    /// Evaluates domain elements `base + s .. base + e`, writing elementwise outputs and
    /// returning one partial per reduction.
    fn segment(&self, regs: &mut Regs<T>, base: usize, s: usize, e: usize) -> Vec<f64> {
        let mut acc: Vec<f64> = self.reduces.iter().map(|&(_, _, k)| identity(k)).collect();
        let mut pos = s;
        while pos < e {
            let len = self.tile.min(e - pos);
            let off = base + pos;
            if self.prefetch {
                let ahead = off + PREFETCH_TILES * self.tile;
                self.prefetch_inputs(ahead, (base + e).min(ahead + len));
            }
            self.run_body(regs, off, len);
            // Reductions first: a register may point into an input that an elementwise
            // output overwrites in place.
            for (j, &(_, reg, kind)) in self.reduces.iter().enumerate() {
                let r = regs.get(reg, len);
                acc[j] = combine(kind, acc[j], reduce_tile(self.simd, kind, r));
            }
            self.write_elementwise(regs, off, len);
            pos += len;
        }
        acc
    }

    /// Asks the cache to fetch elements `s..e` of every full input (a later tile), so all
    /// input streams load while the current tile computes.
    #[inline]
    fn prefetch_inputs(&self, s: usize, e: usize) {
        #[cfg(target_arch = "x86_64")]
        for (k, src) in self.ins.iter().enumerate() {
            if let (View::Full, In::Real(p)) = (&self.prog.views[k], src) {
                let line = 64 / std::mem::size_of::<T>();
                let mut i = s;
                while i < e {
                    // SAFETY: prefetching has no architectural effect (it never faults),
                    // and `i < e` stays inside the input (`e` is at most the domain end).
                    unsafe {
                        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                            p.add(i) as *const i8,
                        )
                    };
                    i += line;
                }
            }
        }
    }

    /// Writes the elementwise outputs of the tile at `off .. off + len`.
    fn write_elementwise(&self, regs: &Regs<T>, off: usize, len: usize) {
        for (k, o) in self.prog.outputs.iter().enumerate() {
            if let Output::Elementwise { reg, bool_out } = o {
                let r = regs.get(*reg, len);
                if *bool_out {
                    let p = self.ptrs[k].1.expect("bool output");
                    for (i, &v) in r.iter().enumerate() {
                        // SAFETY: `off + i` is in the domain and written only here.
                        unsafe { p.0.add(off + i).write(v != T::ZERO) };
                    }
                } else {
                    let p = self.ptrs[k].0.expect("real output");
                    // SAFETY: as above; registers never alias output buffers.
                    unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), p.0.add(off), len) };
                }
            }
        }
    }

    /// Evaluates the `k` whole rows from row `r0` (`k * inner <= TILE`) as one tile,
    /// writes their elementwise outputs and each row's reductions, and folds the rows into
    /// the column reductions' accumulators `cols` (one per [`Output::ColReduce`]).
    fn rows_tile(
        &self,
        regs: &mut Regs<T>,
        r0: usize,
        k: usize,
        inner: usize,
        cols: &mut [Vec<T>],
    ) {
        let (off, len) = (r0 * inner, k * inner);
        self.run_body(regs, off, len);
        // Reductions first: a register may point into an input (a column reduction of a
        // value the group reads whole) that an elementwise output overwrites in place.
        for &(out, reg, kind) in self.reduces {
            let r = regs.get(reg, len);
            let p = self.ptrs[out].0.expect("reductions are real");
            reduce_rows(self.simd, kind, r, inner, &mut |i, v| {
                // SAFETY: row `r0 + i` < outer is written by exactly one work item.
                unsafe { p.0.add(r0 + i).write(v) }
            });
        }
        for (&(_, reg, kind), acc) in self.cols.iter().zip(cols) {
            combine_cols(self.simd, kind, acc, regs.get(reg, len));
        }
        self.write_elementwise(regs, off, len);
        for &(out, reg) in self.row_values {
            // A row register holds one element per row; a uniform one is full.
            for (i, &v) in regs.get(reg, k).iter().enumerate() {
                // SAFETY: as above.
                match self.ptrs[out] {
                    (Some(p), _) => unsafe { p.0.add(r0 + i).write(v) },
                    (None, Some(p)) => unsafe { p.0.add(r0 + i).write(v != T::ZERO) },
                    (None, None) => unreachable!("every output has a buffer"),
                }
            }
        }
    }

    /// Runs the body on the tile at `off .. off + len`.
    #[inline]
    fn run_body(&self, regs: &mut Regs<T>, off: usize, len: usize) {
        let body = &self.prog.body;
        let mut i = 0;
        while i < body.len() {
            if self.gelu_pairs[i] {
                self.exec_gelu_pair(&body[i], &body[i + 1], regs, off, len);
                i += 2;
            } else {
                self.exec(&body[i], regs, off, len);
                i += 1;
            }
        }
    }

    /// The buffer of register `dst` for the tile at `off .. off + len` (one element per
    /// row for a row register), which `dst` now points at.
    ///
    /// # Safety
    /// Nothing may read or write the register's buffer through another reference while
    /// the returned slice lives (the slice is not tied to `regs`).
    #[inline]
    unsafe fn dst_tile<'r>(
        &self,
        regs: &mut Regs<T>,
        dst: usize,
        off: usize,
        len: usize,
    ) -> &'r mut [T] {
        // A row register holds one element per row of the tile (the prologue's
        // registers are never row registers: they are written before there are rows).
        let inner = self.prog.inner;
        let rows = self.row_regs[dst] && !self.uniform[dst];
        debug_assert!(
            !rows || (off.is_multiple_of(inner) && len.is_multiple_of(inner)),
            "row registers need a tile of whole rows"
        );
        let dlen = if rows { len / inner } else { len };
        // SAFETY: `tile[dst] < n_tiles` and `dlen <= len <= TILE`: inside the register's
        // buffer; the caller guarantees exclusive use.
        let d = unsafe {
            std::slice::from_raw_parts_mut(regs.base.add(self.tiles.0[dst]) as *mut T, dlen)
        };
        regs.ptrs[dst] = d.as_ptr();
        d
    }

    /// Runs the GELU pair `first`, `second` (one the value, the other the derivative of
    /// the same register; [`FusedProgram::gelu_pairs`]) as one loop.
    fn exec_gelu_pair(
        &self,
        first: &Instr,
        second: &Instr,
        regs: &mut Regs<T>,
        off: usize,
        len: usize,
    ) {
        let Some((approximate, first_is_grad, a)) = gelu_part(first) else {
            unreachable!("a GELU pair starts with a GELU instruction")
        };
        // SAFETY: `gelu_pairs` checked that the two destinations have different buffers,
        // and neither is the operand's (`assign_tiles`: an instruction never writes its
        // operand's buffer, and `a` is live through both).
        let (d1, d2) = unsafe {
            (
                self.dst_tile(regs, first.dst(), off, len),
                self.dst_tile(regs, second.dst(), off, len),
            )
        };
        let x = regs.get(a, d1.len());
        let (value, grad) = if first_is_grad { (d2, d1) } else { (d1, d2) };
        gelu_pair_dispatch(self.simd, approximate, x, value, grad);
    }

    #[inline]
    fn exec(&self, ins: &Instr, regs: &mut Regs<T>, off: usize, len: usize) {
        let dst = ins.dst();
        if let Instr::Load { input, .. } = ins
            && let (View::Full, In::Real(p)) = (&self.prog.views[*input], self.ins[*input])
        {
            // A full real input is read in place: the register points into it.
            // SAFETY: `off .. off + len` is inside the domain, which the input spans.
            regs.ptrs[dst] = unsafe { p.add(off) };
            return;
        }
        // SAFETY: no operand of this instruction points into the destination's buffer
        // (`assign_tiles`), and nothing else references it while `d` lives.
        let d = unsafe { self.dst_tile(regs, dst, off, len) };
        let inner = self.prog.inner;
        match ins {
            Instr::Load { input, .. } => {
                let view = &self.prog.views[*input];
                load_dispatch(self.simd, self.ins[*input], view, &self.prog.domain, d, off)
            }
            Instr::Const { value, .. } => d.fill(T::from_f64(*value)),
            Instr::RowReduce { kind, a, .. } => {
                reduce_rows(self.simd, *kind, regs.get(*a, len), inner, &mut |i, v| d[i] = v);
            }
            Instr::Expand { a, .. } => {
                expand_dispatch(self.simd, regs.get(*a, len / inner), inner, d);
            }
            _ => compute_dispatch(self.simd, ins, regs, self.uniform, d),
        }
    }
}

/// Reads domain elements `off .. off + d.len()` of input `src` as seen through `view`
/// into `d`, compiled for [`Simd`] level `level` (a boolean mask broadcast over the domain
/// converts to 0/1 with vector instructions, not SSE2 ones).
fn load_dispatch<T: Real>(
    level: Simd,
    src: In<T>,
    view: &View,
    domain: &[usize],
    d: &mut [T],
    off: usize,
) {
    super::simd_dispatch!(
        level,
        [T: Real],
        (src: In<T>, view: &View, domain: &[usize], d: &mut [T], off: usize),
        {
            match view {
                // SAFETY: `off .. off + d.len()` is inside the domain, which a full input
                // spans.
                View::Full => unsafe { copy_run(src, off, 1, d) },
                View::Scalar => {
                    // SAFETY: a scalar input has one element.
                    let x = unsafe { src.get(0) };
                    d.fill(x);
                }
                View::Strided(strides) => load_strided(src, domain, strides, d, off),
            }
        }
    )
}

/// Spreads row value `a[i]` over row `i` of `d` (rows of `inner` elements), compiled for
/// [`Simd`] level `level`.
fn expand_dispatch<T: Real>(level: Simd, a: &[T], inner: usize, d: &mut [T]) {
    super::simd_dispatch!(level, [T: Real], (a: &[T], inner: usize, d: &mut [T]), {
        for (row, &v) in d.chunks_exact_mut(inner).zip(a) {
            row.fill(v);
        }
    })
}

/// Reads domain elements `off .. off + d.len()` of a strided (broadcast or transposed)
/// view: runs along the last axis are a fill (stride 0), a copy (stride 1) or a strided
/// gather, and only the run ends step the outer coordinates.
#[inline(always)] // into each `Simd` variant of `load_dispatch`
fn load_strided<T: Real>(src: In<T>, shape: &[usize], strides: &[usize], d: &mut [T], off: usize) {
    let nd = shape.len();
    if nd == 0 {
        // SAFETY: a rank-0 view has one element.
        d.fill(unsafe { src.get(0) });
        return;
    }
    // On the stack for the usual ranks: this runs once per tile, and a heap allocation
    // here was 1.5% of a transformer step.
    let (mut stack, mut heap) = ([0usize; 8], Vec::new());
    let coord: &mut [usize] = if nd <= stack.len() {
        &mut stack[..nd]
    } else {
        heap.resize(nd, 0);
        &mut heap
    };
    let mut rem = off;
    for k in (0..nd).rev() {
        coord[k] = rem % shape[k];
        rem /= shape[k];
    }
    let mut idx: usize = coord.iter().zip(strides).map(|(c, s)| c * s).sum();
    let last = nd - 1;
    let (n_last, s_last) = (shape[last], strides[last]);
    let mut i = 0;
    while i < d.len() {
        let run = (n_last - coord[last]).min(d.len() - i);
        let out = &mut d[i..i + run];
        // SAFETY (both arms): `idx + j * s_last` for `j < run` stays inside the operand,
        // since the coordinates stay inside the domain.
        match (s_last, src) {
            (0, _) => out.fill(unsafe { src.get(idx) }),
            _ => unsafe { copy_run(src, idx, s_last, out) },
        }
        i += run;
        coord[last] += run;
        idx += run * s_last;
        if coord[last] == n_last {
            // Carry into the outer axes (an odometer).
            idx -= n_last * s_last;
            coord[last] = 0;
            let mut k = last;
            while k > 0 {
                k -= 1;
                coord[k] += 1;
                idx += strides[k];
                if coord[k] < shape[k] {
                    break;
                }
                idx -= strides[k] * coord[k];
                coord[k] = 0;
            }
        }
    }
}

/// `d[j] = src[at + j * stride]`, with the input's type matched once per run (not per
/// element), so the loops vectorize (booleans read as 0/1).
///
/// # Safety
/// Every index read must be inside the input.
#[inline(always)]
unsafe fn copy_run<T: Real>(src: In<T>, at: usize, stride: usize, d: &mut [T]) {
    // SAFETY (all arms): the caller's contract.
    unsafe {
        match src {
            In::Real(p) if stride == 1 => {
                d.copy_from_slice(std::slice::from_raw_parts(p.add(at), d.len()))
            }
            In::Real(p) => {
                for (j, v) in d.iter_mut().enumerate() {
                    *v = *p.add(at + j * stride);
                }
            }
            In::Bool(p) => {
                for (j, v) in d.iter_mut().enumerate() {
                    *v = if *p.add(at + j * stride) { T::ONE } else { T::ZERO };
                }
            }
        }
    }
}

/// The register file of one work item: a tile buffer per register, and where each
/// register's current tile is (its buffer, or the input itself for in-place reads).
struct Regs<T> {
    /// The tile buffers (accessed only through `base` and `ptrs`).
    _bufs: Box<[Tile<T>]>,
    base: *mut Tile<T>,
    ptrs: Vec<*const T>,
}

/// One register's buffer, aligned to a cache line so that vector loads and stores never
/// straddle two lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Tile<T>([T; TILE]);

impl<T> Regs<T> {
    #[inline(always)]
    fn get(&self, r: usize, len: usize) -> &[T] {
        // SAFETY: `ptrs[r]` points at `len <= TILE` valid elements: a register buffer
        // (never resized) or an input range checked by the caller of `exec`.
        unsafe { std::slice::from_raw_parts(self.ptrs[r], len) }
    }
}

/// Runs a computing instruction (unary, binary, select, clamp) into `d`, compiled for
/// the [`Simd`] level of the program's run (same bits on every level).
#[inline]
fn compute_dispatch<T: Real>(
    level: Simd,
    ins: &Instr,
    regs: &Regs<T>,
    uniform: &[bool],
    d: &mut [T],
) {
    super::simd_dispatch!(
        level,
        [T: Real],
        (ins: &Instr, regs: &Regs<T>, uniform: &[bool], d: &mut [T]),
        { compute(ins, regs, uniform, d) }
    )
}

/// `value = gelu(x)` and `grad = gelu'(x)` in one loop (one `tanh` or `erf` per
/// element), compiled for [`Simd`] level `level`.
fn gelu_pair_dispatch<T: Real>(
    level: Simd,
    approximate: bool,
    x: &[T],
    value: &mut [T],
    grad: &mut [T],
) {
    super::simd_dispatch!(
        level,
        [T: Real],
        (approximate: bool, x: &[T], value: &mut [T], grad: &mut [T]),
        {
            let pairs = value.iter_mut().zip(grad.iter_mut()).zip(x);
            if approximate {
                pairs.for_each(|((v, g), &x)| (*v, *g) = gelu_tanh_pair(x));
            } else {
                pairs.for_each(|((v, g), &x)| (*v, *g) = gelu_erf_pair(x));
            }
        }
    )
}

/// An operand of a computing instruction: a tile, or one value for every element (a
/// uniform register), which the loops keep in a register instead of loading per element.
#[derive(Clone, Copy)]
enum Opnd<'a, T> {
    Tile(&'a [T]),
    Scalar(T),
}

/// The loop of a computing instruction over one tile (`d.len()` elements); inlined into
/// each [`Simd`] variant of [`compute_dispatch`].
#[inline(always)]
fn compute<T: Real>(ins: &Instr, regs: &Regs<T>, uniform: &[bool], d: &mut [T]) {
    let len = d.len();
    let get = |r: usize| {
        if uniform[r] { Opnd::Scalar(regs.get(r, 1)[0]) } else { Opnd::Tile(regs.get(r, len)) }
    };
    match ins {
        Instr::Unary { prim, a, .. } => unary(prim, regs.get(*a, len), d),
        Instr::Binary { prim, a, b, .. } => binary(prim, get(*a), get(*b), d),
        Instr::MulAdd { op, a, b, c, .. } => mul_add(*op, get(*a), get(*b), get(*c), d),
        Instr::Select { p, t, f, .. } => {
            let (p, t, f) = (regs.get(*p, len), regs.get(*t, len), regs.get(*f, len));
            // Both values are loaded before the choice: indexed as `if p[i] { t[i] } else
            // { f[i] }`, LLVM chose between the addresses and gathered (a masked softmax
            // spent 14% of its time there).
            for ((o, &p), (&t, &f)) in d.iter_mut().zip(p).zip(t.iter().zip(f)) {
                *o = if p != T::ZERO { t } else { f };
            }
        }
        Instr::Clamp { lo, x, hi, .. } => {
            let (lo, x, hi) = (regs.get(*lo, len), regs.get(*x, len), regs.get(*hi, len));
            for i in 0..len {
                d[i] = min_nan(max_nan(x[i], lo[i]), hi[i]);
            }
        }
        Instr::Load { .. }
        | Instr::Const { .. }
        | Instr::RowReduce { .. }
        | Instr::Expand { .. } => {
            unreachable!("loads and row-register steps are not computed here")
        }
    }
}

/// Reduces each `inner`-element row of `r`, handing row `i`'s result to `put(i, value)`,
/// compiled for [`Simd`] level `level` (one dispatch per tile, not per row: rows are
/// short).
fn reduce_rows<T: Real, F: FnMut(usize, T)>(
    level: Simd,
    kind: Reduce,
    r: &[T],
    inner: usize,
    put: &mut F,
) {
    super::simd_dispatch!(
        level,
        [T: Real, F: FnMut(usize, T)],
        (kind: Reduce, r: &[T], inner: usize, put: &mut F),
        {
            for (i, row) in r.chunks_exact(inner).enumerate() {
                put(i, T::from_f64(reduce_lanes(kind, row)));
            }
        }
    )
}

/// Folds the rows of `rows` (whole rows of `acc.len()` elements) into `acc` in order,
/// `acc[c] = acc[c] ⊕ row[c]`, compiled for [`Simd`] level `level`.
fn combine_cols<T: Real>(level: Simd, kind: Reduce, acc: &mut [T], rows: &[T]) {
    super::simd_dispatch!(level, [T: Real], (kind: Reduce, acc: &mut [T], rows: &[T]), {
        for row in rows.chunks_exact(acc.len()) {
            let pairs = acc.iter_mut().zip(row);
            match kind {
                Reduce::Sum => pairs.for_each(|(a, &x)| *a = *a + x),
                Reduce::Prod => pairs.for_each(|(a, &x)| *a = *a * x),
                Reduce::Max => pairs.for_each(|(a, &x)| *a = max_nan(*a, x)),
                Reduce::Min => pairs.for_each(|(a, &x)| *a = min_nan(*a, x)),
            }
        }
    })
}

/// Reduces one tile (or row) to a partial result, compiled for [`Simd`] level `level`
/// (the lanes below vectorize).
fn reduce_tile<T: Real>(level: Simd, kind: Reduce, r: &[T]) -> f64 {
    super::simd_dispatch!(level, [T: Real], (kind: Reduce, r: &[T]) -> f64, {
        reduce_lanes(kind, r)
    })
}

#[inline(always)]
fn reduce_lanes<T: Real>(kind: Reduce, r: &[T]) -> f64 {
    // Independent lanes vectorize; for sums they also keep the rounding error small.
    macro_rules! lanes {
        ($n:literal, $init:expr, $f:expr, $fin:expr) => {{
            let mut lanes = [$init; $n];
            let chunks = r.chunks_exact($n);
            let tail = chunks.remainder();
            for c in chunks {
                for l in 0..$n {
                    lanes[l] = $f(lanes[l], c[l]);
                }
            }
            // The barrier: see the sum below. Halving the lanes then keeps their combine
            // in vector instructions (folding them one by one took most of the time of a
            // softmax's 64-element rows).
            let mut lanes = std::hint::black_box(lanes);
            let mut w = $n;
            while w > 1 {
                w /= 2;
                for l in 0..w {
                    lanes[l] = $f(lanes[l], lanes[l + w]);
                }
            }
            let mut acc = $f($fin, lanes[0]);
            for v in tail {
                acc = $f(acc, *v);
            }
            acc
        }};
    }
    match kind {
        Reduce::Sum => {
            let mut lanes = [T::ZERO; 8];
            let chunks = r.chunks_exact(8);
            let tail = chunks.remainder();
            for c in chunks {
                for l in 0..8 {
                    lanes[l] = lanes[l] + c[l];
                }
            }
            // The barrier keeps the lanes one vector in the loop above: without it LLVM
            // splits them into scalar and 2-lane pieces to suit the f64 sum below (a
            // 128-element row took 16 ns instead of 8). It changes no result.
            let mut s: f64 = std::hint::black_box(lanes).iter().map(|v| v.to_f64()).sum();
            for v in tail {
                s += v.to_f64();
            }
            s
        }
        Reduce::Prod => r.iter().fold(1.0, |a, v| a * v.to_f64()),
        // Exact: lanes change only which of two equal values (+0/-0) is kept.
        Reduce::Max => lanes!(16, T::NEG_INFINITY, max_nan, T::NEG_INFINITY).to_f64(),
        Reduce::Min => lanes!(16, T::INFINITY, min_nan, T::INFINITY).to_f64(),
    }
}

#[inline(always)]
fn unary<T: Real>(prim: &Prim, a: &[T], d: &mut [T]) {
    macro_rules! m {
        (|$x:ident| $e:expr) => {
            for (o, &$x) in d.iter_mut().zip(a) {
                *o = $e;
            }
        };
    }
    match prim {
        Prim::Neg => m!(|x| -x),
        Prim::Exp => m!(|x| x.exp()),
        Prim::Log => m!(|x| x.ln()),
        Prim::Log1p => m!(|x| x.ln_1p()),
        Prim::Expm1 => m!(|x| x.exp_m1()),
        Prim::Sin => m!(|x| x.sin()),
        Prim::Cos => m!(|x| x.cos()),
        Prim::Tanh => m!(|x| x.tanh()),
        Prim::Logistic => m!(|x| logistic(x)),
        Prim::Sqrt => m!(|x| x.sqrt()),
        Prim::Rsqrt => m!(|x| T::ONE / x.sqrt()),
        Prim::Abs => m!(|x| x.abs()),
        Prim::Sign => m!(|x| sign_float(x)),
        // False for infinities and NaN (a 0/1 result, like comparisons).
        Prim::IsFinite => m!(|x| if x.abs() < T::INFINITY { T::ONE } else { T::ZERO }),
        Prim::Floor => m!(|x| x.floor()),
        Prim::Ceil => m!(|x| x.ceil()),
        Prim::Round => m!(|x| x.round()),
        Prim::Erf => m!(|x| x.erf()),
        Prim::Gelu { approximate: true } => m!(|x| gelu_tanh(x)),
        Prim::Gelu { approximate: false } => m!(|x| gelu_erf(x)),
        Prim::GeluGrad { approximate: true } => m!(|x| gelu_tanh_grad(x)),
        Prim::GeluGrad { approximate: false } => m!(|x| gelu_erf_grad(x)),
        // Registers hold booleans as 0/1, so bool -> float conversion is a copy.
        Prim::StopGradient | Prim::ConvertElementType { .. } => d.copy_from_slice(a),
        // The common small powers as straight-line code (the same products as
        // `powi_float`'s squaring, so the same bits), which vectorizes.
        Prim::IntegerPow { y: 2 } => m!(|x| x * x),
        Prim::IntegerPow { y: 3 } => m!(|x| x * (x * x)),
        Prim::IntegerPow { y: 4 } => m!(|x| (x * x) * (x * x)),
        Prim::IntegerPow { y: -1 } => m!(|x| T::ONE / x),
        Prim::IntegerPow { y } => {
            let y = *y;
            m!(|x| powi_float(x, y, |v| v))
        }
        p => unreachable!("`{}` is not a fusable unary primitive", p.name()),
    }
}

#[inline(always)]
fn mul_add<T: Real>(op: MulAddOp, a: Opnd<'_, T>, b: Opnd<'_, T>, c: Opnd<'_, T>, d: &mut [T]) {
    // One loop per operand kind, as in `binary`; at least one operand is a tile (an
    // instruction of uniform operands runs in the prologue, where tiles are uniform too).
    macro_rules! m {
        (|$x:ident, $y:ident, $z:ident| $e:expr) => {
            match (a, b, c) {
                (Opnd::Tile(a), Opnd::Tile(b), Opnd::Tile(c)) => {
                    for (((o, &$x), &$y), &$z) in d.iter_mut().zip(a).zip(b).zip(c) {
                        *o = $e;
                    }
                }
                (Opnd::Tile(a), Opnd::Tile(b), Opnd::Scalar($z)) => {
                    for ((o, &$x), &$y) in d.iter_mut().zip(a).zip(b) {
                        *o = $e;
                    }
                }
                (Opnd::Tile(a), Opnd::Scalar($y), Opnd::Tile(c)) => {
                    for ((o, &$x), &$z) in d.iter_mut().zip(a).zip(c) {
                        *o = $e;
                    }
                }
                (Opnd::Scalar($x), Opnd::Tile(b), Opnd::Tile(c)) => {
                    for ((o, &$y), &$z) in d.iter_mut().zip(b).zip(c) {
                        *o = $e;
                    }
                }
                (Opnd::Tile(a), Opnd::Scalar($y), Opnd::Scalar($z)) => {
                    for (o, &$x) in d.iter_mut().zip(a) {
                        *o = $e;
                    }
                }
                (Opnd::Scalar($x), Opnd::Tile(b), Opnd::Scalar($z)) => {
                    for (o, &$y) in d.iter_mut().zip(b) {
                        *o = $e;
                    }
                }
                (Opnd::Scalar($x), Opnd::Scalar($y), Opnd::Tile(c)) => {
                    for (o, &$z) in d.iter_mut().zip(c) {
                        *o = $e;
                    }
                }
                (Opnd::Scalar($x), Opnd::Scalar($y), Opnd::Scalar($z)) => d.fill($e),
            }
        };
    }
    match op {
        MulAddOp::Add => m!(|x, y, z| x * y + z),
        MulAddOp::Sub => m!(|x, y, z| x * y - z),
        MulAddOp::SubFrom => m!(|x, y, z| z - x * y),
    }
}

#[inline(always)]
fn binary<T: Real>(prim: &Prim, a: Opnd<'_, T>, b: Opnd<'_, T>, d: &mut [T]) {
    // One loop per operand kind, so a uniform operand stays in a register.
    macro_rules! m {
        (|$x:ident, $y:ident| $e:expr) => {
            match (a, b) {
                (Opnd::Tile(a), Opnd::Tile(b)) => {
                    for ((o, &$x), &$y) in d.iter_mut().zip(a).zip(b) {
                        *o = $e;
                    }
                }
                (Opnd::Tile(a), Opnd::Scalar($y)) => {
                    for (o, &$x) in d.iter_mut().zip(a) {
                        *o = $e;
                    }
                }
                (Opnd::Scalar($x), Opnd::Tile(b)) => {
                    for (o, &$y) in d.iter_mut().zip(b) {
                        *o = $e;
                    }
                }
                (Opnd::Scalar($x), Opnd::Scalar($y)) => d.fill($e),
            }
        };
    }
    let t = |c: bool| if c { T::ONE } else { T::ZERO };
    match prim {
        Prim::Add => m!(|x, y| x + y),
        Prim::Sub => m!(|x, y| x - y),
        Prim::Mul => m!(|x, y| x * y),
        Prim::Div => m!(|x, y| x / y),
        Prim::Rem => m!(|x, y| x % y),
        Prim::Pow => m!(|x, y| x.powf(y)),
        Prim::Max => m!(|x, y| max_nan(x, y)),
        Prim::Min => m!(|x, y| min_nan(x, y)),
        Prim::Atan2 => m!(|x, y| x.atan2(y)),
        Prim::Eq => m!(|x, y| t(x == y)),
        Prim::Ne => m!(|x, y| t(x != y)),
        Prim::Lt => m!(|x, y| t(x < y)),
        Prim::Le => m!(|x, y| t(x <= y)),
        Prim::Gt => m!(|x, y| t(x > y)),
        Prim::Ge => m!(|x, y| t(x >= y)),
        p => unreachable!("`{}` is not a fusable binary primitive", p.name()),
    }
}

/// True if `prim` can be evaluated by a fused program (on `f32`/`f64`, with `bool`
/// predicates).
pub fn is_fusable(prim: &Prim) -> bool {
    use Prim::*;
    matches!(
        prim,
        Neg | Exp
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
            | IsFinite
            | Floor
            | Ceil
            | Round
            | Erf
            | StopGradient
            | IntegerPow { .. }
            | Gelu { .. }
            | GeluGrad { .. }
            | Add
            | Sub
            | Mul
            | Div
            | Rem
            | Pow
            | Max
            | Min
            | Atan2
            | Eq
            | Ne
            | Lt
            | Le
            | Gt
            | Ge
            | Select
            | Clamp
    )
}

#[cfg(test)]
mod tests {
    use super::super::{FORCED_SIMD, detected};
    use super::*;
    use crate::{Array, Jit};

    /// Shared tile buffers never clobber a live value: over random programs (chains,
    /// operands read twice, unread values, several outputs), every register's buffer keeps
    /// its value from its definition to its last read (or to the end of the tile for
    /// results and prologue values), no instruction writes a buffer it reads, and long
    /// programs need fewer buffers than registers.
    #[test]
    fn tile_sharing_keeps_every_live_value() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |k: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % k as u64) as usize
        };
        let mut saved = 0;
        for _ in 0..300 {
            let mut prologue = vec![Instr::Const { value: 1.0, dst: 0 }];
            let mut body = vec![Instr::Load { input: 0, dst: 1 }];
            let mut n = 2;
            if rnd(2) == 0 {
                prologue.push(Instr::Const { value: 2.0, dst: n });
                n += 1;
            }
            for _ in 0..1 + rnd(30) {
                let (a, b) = (rnd(n), rnd(n));
                body.push(match rnd(3) {
                    0 => Instr::Unary { prim: Prim::Neg, a, dst: n },
                    1 => Instr::Binary { prim: Prim::Mul, a, b: a, dst: n },
                    _ => Instr::Binary { prim: Prim::Add, a, b, dst: n },
                });
                n += 1;
            }
            let mut outputs = vec![Output::Elementwise { reg: n - 1, bool_out: false }];
            for _ in 0..rnd(3) {
                outputs.push(Output::Elementwise { reg: 1 + rnd(n - 1), bool_out: false });
            }
            let prog = FusedProgram {
                dtype: DType::F32,
                domain: vec![8],
                inner: 1,
                views: vec![View::Full],
                prologue: prologue.clone(),
                body: body.clone(),
                outputs: outputs.clone(),
                n_regs: n,
            };
            let (tile, n_tiles) = prog.assign_tiles();
            let end = body.len();
            let mut last = vec![None; n];
            for (i, ins) in body.iter().enumerate() {
                for r in ins.operands() {
                    last[r] = Some(i);
                }
            }
            let keep = |r: usize| {
                prologue.iter().any(|p| p.dst() == r)
                    || outputs
                        .iter()
                        .any(|o| matches!(o, Output::Elementwise { reg, .. } if *reg == r))
            };
            // The register each buffer holds, as the tile is evaluated.
            let mut holds: Vec<Option<usize>> = vec![None; n_tiles];
            for p in &prologue {
                holds[tile[p.dst()]] = Some(p.dst());
            }
            for (i, ins) in body.iter().enumerate() {
                for r in ins.operands() {
                    assert_eq!(holds[tile[r]], Some(r), "operand {r} of {ins:?} was clobbered");
                    assert_ne!(tile[r], tile[ins.dst()], "{ins:?} writes a buffer it reads");
                }
                let t = tile[ins.dst()];
                if let Some(prev) = holds[t] {
                    let dead = !keep(prev) && last[prev].is_none_or(|l| l < i);
                    assert!(dead, "{ins:?} overwrites live register {prev}");
                }
                holds[t] = Some(ins.dst());
            }
            for o in &outputs {
                let Output::Elementwise { reg, .. } = o else { unreachable!() };
                assert_eq!(
                    holds[tile[*reg]],
                    Some(*reg),
                    "result {reg} clobbered by tile end {end}"
                );
            }
            saved += n - n_tiles;
        }
        assert!(saved > 1000, "buffers are shared ({saved} saved)");
    }

    /// A program that streams memory (short tiles, prefetching) computes the plain
    /// formulas: `x + y * z` bit for bit and its sum to 1e-6, over ~1.05M elements with a
    /// ragged last tile.
    #[test]
    fn streaming_programs_compute_the_plain_formulas() {
        use Instr::*;
        let prog = |n: usize, reduce: bool| FusedProgram {
            dtype: DType::F32,
            domain: vec![n],
            inner: if reduce { n } else { 1 },
            views: vec![View::Full; 3],
            prologue: vec![],
            body: vec![
                Load { input: 0, dst: 0 },
                Load { input: 1, dst: 1 },
                Load { input: 2, dst: 2 },
                Binary { prim: Prim::Mul, a: 1, b: 2, dst: 3 },
                Binary { prim: Prim::Add, a: 0, b: 3, dst: 4 },
            ],
            outputs: vec![if reduce {
                Output::Reduce { reg: 4, kind: Reduce::Sum }
            } else {
                Output::Elementwise { reg: 4, bool_out: false }
            }],
            n_regs: 5,
        };
        let n = (1 << 20) + 3 * STREAM_TILE + 77;
        let v = |k: usize| -> Vec<f32> {
            (0..n).map(|i| ((i * (2 * k + 3)) % 101) as f32 * 0.25 - 12.0).collect()
        };
        let (x, y, z) = (Storage::F32(v(0)), Storage::F32(v(1)), Storage::F32(v(2)));
        let ins = || vec![Arg::Ref(&x), Arg::Ref(&y), Arg::Ref(&z)];
        let big = prog(n, false);
        assert!(streams::<f32>(&big, &[In::of(&x), In::of(&y), In::of(&z)]));
        let Storage::F32(got) = &run(&big, ins())[0] else { panic!("f32") };
        let (Storage::F32(a), Storage::F32(b), Storage::F32(c)) = (&x, &y, &z) else {
            unreachable!()
        };
        let want: Vec<f32> = (0..n).map(|i| a[i] + b[i] * c[i]).collect();
        assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()));
        let Storage::F32(s) = &run(&prog(n, true), ins())[0] else { panic!("f32") };
        let exact: f64 = want.iter().map(|&w| w as f64).sum();
        assert!(
            (s[0] as f64 - exact).abs() <= 1e-6 * want.iter().map(|w| w.abs() as f64).sum::<f64>()
        );
    }

    /// Row maxima and minima over 16 lanes equal a plain fold: rows of 37 and 70 (ragged
    /// tails), NaN anywhere in a row wins, infinities and all-negative rows included.
    #[test]
    fn lane_max_and_min_match_a_plain_fold() {
        for inner in [37usize, 70] {
            let rows = 9;
            let n = rows * inner;
            let mut x: Vec<f32> = (0..n).map(|i| ((i * 37) % 23) as f32 - 30.0).collect();
            x[inner + 3] = f32::NAN; // early in row 1
            x[3 * inner - 1] = f32::NAN; // last element (the tail) of row 2
            x[4 * inner + 20] = f32::INFINITY;
            x[5 * inner + 17] = f32::NEG_INFINITY;
            for kind in [Reduce::Max, Reduce::Min] {
                let prog = FusedProgram {
                    dtype: DType::F32,
                    domain: vec![rows, inner],
                    inner,
                    views: vec![View::Full],
                    prologue: vec![],
                    body: vec![Instr::Load { input: 0, dst: 0 }],
                    outputs: vec![Output::Reduce { reg: 0, kind }],
                    n_regs: 1,
                };
                let xs = Storage::F32(x.clone());
                let Storage::F32(got) = &run(&prog, vec![Arg::Ref(&xs)])[0] else { panic!() };
                for (r, g) in got.iter().enumerate() {
                    let row = &x[r * inner..(r + 1) * inner];
                    let want = match kind {
                        Reduce::Max => row.iter().fold(f32::NEG_INFINITY, |a, &v| max_nan(a, v)),
                        _ => row.iter().fold(f32::INFINITY, |a, &v| min_nan(a, v)),
                    };
                    assert!(
                        g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                        "{kind:?} row {r}: {g} vs {want}"
                    );
                }
                assert!(got[1].is_nan() && got[2].is_nan());
            }
        }
    }

    /// Column reductions of every kind, next to an elementwise output, on rows that do
    /// not fill a tile evenly and over several work items (a ragged last one), match a
    /// plain fold over the rows: exactly where the order cannot matter (max, min, sums of
    /// small integers), products to rounding.
    #[test]
    fn column_reductions_match_a_plain_fold() {
        for (rows, inner) in [(9usize, 37usize), (2000, 70), (1500, 1024), (3, 1)] {
            let n = rows * inner;
            let x: Vec<f32> = (0..n).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
            let y: Vec<f32> = (0..n).map(|i| 1.0 + ((i * 7) % 3) as f32 * 1e-3).collect();
            for kind in [Reduce::Sum, Reduce::Max, Reduce::Min, Reduce::Prod] {
                // x for the sums, max and min; y (close to 1) for products.
                let reg = if kind == Reduce::Prod { 1 } else { 0 };
                let prog = FusedProgram {
                    dtype: DType::F32,
                    domain: vec![rows, inner],
                    inner,
                    views: vec![View::Full, View::Full],
                    prologue: vec![],
                    body: vec![
                        Instr::Load { input: 0, dst: 0 },
                        Instr::Load { input: 1, dst: 1 },
                        Instr::Binary { prim: Prim::Mul, a: 0, b: 1, dst: 2 },
                    ],
                    outputs: vec![
                        Output::ColReduce { reg, kind },
                        Output::Elementwise { reg: 2, bool_out: false },
                    ],
                    n_regs: 3,
                };
                let (xs, ys) = (Storage::F32(x.clone()), Storage::F32(y.clone()));
                let out = run(&prog, vec![Arg::Ref(&xs), Arg::Ref(&ys)]);
                let (Storage::F32(got), Storage::F32(prod)) = (&out[0], &out[1]) else { panic!() };
                assert_eq!(got.len(), inner);
                assert!(prod.iter().zip(x.iter().zip(&y)).all(|(p, (a, b))| *p == a * b));
                for (c, g) in got.iter().enumerate() {
                    let col = (0..rows).map(|r| {
                        let i = r * inner + c;
                        f64::from(if kind == Reduce::Prod { y[i] } else { x[i] })
                    });
                    let want = match kind {
                        Reduce::Sum => col.sum::<f64>(),
                        Reduce::Max => col.fold(f64::NEG_INFINITY, f64::max),
                        Reduce::Min => col.fold(f64::INFINITY, f64::min),
                        Reduce::Prod => col.product::<f64>(),
                    };
                    let g = f64::from(*g);
                    let ok = match kind {
                        Reduce::Prod => ((g - want) / want).abs() < 1e-4,
                        _ => g == want,
                    };
                    assert!(ok, "{kind:?} {rows}x{inner} column {c}: {g} vs {want}");
                }
            }
        }
    }

    /// Instructions on uniform values move to the prologue, and binary instructions with
    /// a uniform operand (either side, or both) compute the same bits as the plain
    /// formulas, on a domain of several work items with a ragged last tile.
    /// Products read once fuse into the sum or difference that reads them, with tile or
    /// scalar operands on every side, and the fused program computes the same bits as the
    /// two instructions (sums and reductions included); a product read twice, or by a
    /// product, stays.
    #[test]
    fn single_use_products_fuse_into_their_sums() {
        use Instr::*;
        let n = PAR_THRESHOLD + 555;
        let x: Vec<f32> = (0..n).map(|i| (i % 89) as f32 * 0.31 - 7.0).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 53) as f32 * 0.17 + 0.5).collect();
        let mut prog = FusedProgram {
            dtype: DType::F32,
            domain: vec![n],
            inner: n,
            views: vec![View::Full, View::Full, View::Scalar],
            prologue: vec![Load { input: 2, dst: 2 }],
            body: vec![
                Load { input: 0, dst: 0 },
                Load { input: 1, dst: 1 },
                Binary { prim: Prim::Mul, a: 0, b: 1, dst: 3 }, // tile * tile
                Binary { prim: Prim::Add, a: 2, b: 3, dst: 4 }, // s + p: Add
                Binary { prim: Prim::Mul, a: 2, b: 0, dst: 5 }, // scalar * tile
                Binary { prim: Prim::Sub, a: 5, b: 4, dst: 6 }, // p - c: Sub
                Binary { prim: Prim::Mul, a: 6, b: 2, dst: 7 }, // tile * scalar
                Binary { prim: Prim::Sub, a: 2, b: 7, dst: 8 }, // s - p: SubFrom
                Binary { prim: Prim::Mul, a: 1, b: 1, dst: 9 }, // read twice: stays
                Binary { prim: Prim::Add, a: 9, b: 9, dst: 10 },
                Binary { prim: Prim::Mul, a: 0, b: 0, dst: 11 }, // read by a product
                Binary { prim: Prim::Mul, a: 11, b: 1, dst: 12 }, // single use: fuses
                Binary { prim: Prim::Add, a: 12, b: 10, dst: 13 },
                Binary { prim: Prim::Add, a: 13, b: 8, dst: 14 },
            ],
            outputs: vec![
                Output::Elementwise { reg: 14, bool_out: false },
                Output::Reduce { reg: 14, kind: Reduce::Sum },
            ],
            n_regs: 15,
        };
        prog.hoist_invariants();
        let unfused = prog.clone();
        prog.fuse_mul_add();
        let ops: Vec<MulAddOp> = prog
            .body
            .iter()
            .filter_map(|i| if let MulAdd { op, .. } = i { Some(*op) } else { None })
            .collect();
        assert_eq!(ops, [MulAddOp::Add, MulAddOp::Sub, MulAddOp::SubFrom, MulAddOp::Add]);
        assert_eq!(prog.body.len(), unfused.body.len() - 4, "{:?}", prog.body);
        let s = 1.25f32;
        let (xs, ys, ss) =
            (Storage::F32(x.clone()), Storage::F32(y.clone()), Storage::F32(vec![s]));
        let args = || vec![Arg::Ref(&xs), Arg::Ref(&ys), Arg::Ref(&ss)];
        let (got, want) = (run(&prog, args()), run(&unfused, args()));
        let bits = |st: &Storage| match st {
            Storage::F32(v) => v.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            _ => panic!("f32 output"),
        };
        assert_eq!(bits(&got[0]), bits(&want[0]));
        assert_eq!(bits(&got[1]), bits(&want[1]));
        let formula: Vec<u32> = x
            .iter()
            .zip(&y)
            .map(|(&x, &y)| {
                let c = s + x * y;
                let e = s - (s * x - c) * s;
                (x * x * y + (y * y + y * y) + e).to_bits()
            })
            .collect();
        assert_eq!(bits(&got[0]), formula);
    }

    /// A GELU and its derivative of the same register become neighbours and run as one
    /// loop (whichever comes first, with other instructions between them), with the bits
    /// of the separate instructions; a GELU of the other form stays alone.
    #[test]
    fn gelu_pairs_run_as_one_loop_with_the_same_bits() {
        use Instr::*;
        let n = PAR_THRESHOLD + 1234;
        let x: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 0.13 - 6.0).collect();
        let gelu = |approximate, a, dst| Unary { prim: Prim::Gelu { approximate }, a, dst };
        let grad = |approximate, a, dst| Unary { prim: Prim::GeluGrad { approximate }, a, dst };
        for approximate in [true, false] {
            let mut prog = FusedProgram {
                dtype: DType::F32,
                domain: vec![n],
                inner: n,
                views: vec![View::Full],
                prologue: vec![],
                body: vec![
                    Load { input: 0, dst: 0 },
                    Binary { prim: Prim::Mul, a: 0, b: 0, dst: 1 },
                    grad(approximate, 0, 2), // derivative first
                    Binary { prim: Prim::Add, a: 2, b: 1, dst: 3 },
                    gelu(approximate, 1, 4), // a second pair, with `grad` of 1
                    gelu(approximate, 0, 5),
                    gelu(!approximate, 0, 6), // the other form: alone
                    grad(approximate, 1, 7),
                ],
                outputs: vec![
                    Output::Elementwise { reg: 3, bool_out: false },
                    Output::Elementwise { reg: 5, bool_out: false },
                    Output::Elementwise { reg: 6, bool_out: false },
                    Output::Elementwise { reg: 7, bool_out: false },
                    Output::Elementwise { reg: 4, bool_out: false },
                ],
                n_regs: 8,
            };
            let separate = prog.clone();
            prog.pair_gelu();
            let dsts: Vec<usize> = prog.body.iter().map(Instr::dst).collect();
            assert_eq!(dsts, [0, 1, 2, 5, 3, 4, 7, 6], "{:?}", prog.body);
            let pairs = prog.gelu_pairs(&prog.assign_tiles().0);
            assert_eq!(pairs, [false, false, true, false, false, true, false, false]);
            let xs = Storage::F32(x.clone());
            let (got, want) =
                (run(&prog, vec![Arg::Ref(&xs)]), run(&separate, vec![Arg::Ref(&xs)]));
            let bits = |st: &Storage| match st {
                Storage::F32(v) => v.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                _ => panic!("f32 output"),
            };
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(bits(g), bits(w), "approximate={approximate}");
            }
            let pair = |x: f32| {
                if approximate {
                    (gelu_tanh(x), gelu_tanh_grad(x))
                } else {
                    (gelu_erf(x), gelu_erf_grad(x))
                }
            };
            let formula: Vec<u32> = x.iter().map(|&x| pair(x).0.to_bits()).collect();
            assert_eq!(bits(&got[1]), formula);
            let formula: Vec<u32> = x.iter().map(|&x| (pair(x).1 + x * x).to_bits()).collect();
            assert_eq!(bits(&got[0]), formula);
        }
    }

    #[test]
    fn uniform_operands_are_hoisted_and_read_as_scalars() {
        use Instr::*;
        let (c, s) = (1.5f64, 0.75f32);
        let x: Vec<f32> = (0..PAR_THRESHOLD + 777).map(|i| (i % 97) as f32 * 0.37 - 9.0).collect();
        let mut prog = FusedProgram {
            dtype: DType::F32,
            domain: vec![x.len()],
            inner: 1,
            views: vec![View::Full, View::Scalar],
            prologue: vec![Const { value: c, dst: 0 }, Load { input: 1, dst: 1 }],
            body: vec![
                Load { input: 0, dst: 2 },
                Binary { prim: Prim::Mul, a: 0, b: 1, dst: 3 }, // uniform: hoisted
                Binary { prim: Prim::Sub, a: 3, b: 2, dst: 4 }, // scalar - tile
                Binary { prim: Prim::Div, a: 4, b: 1, dst: 5 }, // tile / scalar
                Unary { prim: Prim::Sqrt, a: 3, dst: 6 },       // uniform: hoisted
                Binary { prim: Prim::Max, a: 5, b: 6, dst: 7 }, // tile, scalar
            ],
            outputs: vec![
                Output::Elementwise { reg: 7, bool_out: false },
                Output::Elementwise { reg: 6, bool_out: false },
            ],
            n_regs: 8,
        };
        prog.hoist_invariants();
        assert_eq!(prog.prologue.len(), 4, "{:?}", prog.prologue);
        assert_eq!(prog.body.len(), 4, "{:?}", prog.body);
        let (xs, ss) = (Storage::F32(x.clone()), Storage::F32(vec![s]));
        let out = run(&prog, vec![Arg::Ref(&xs), Arg::Ref(&ss)]);
        let u = c as f32 * s;
        let want: Vec<u32> = x.iter().map(|&v| max_nan((u - v) / s, u.sqrt()).to_bits()).collect();
        let Storage::F32(got) = &out[0] else { panic!("f32 output") };
        assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want);
        let Storage::F32(got) = &out[1] else { panic!("f32 output") };
        assert!(got.len() == x.len() && got.iter().all(|v| v.to_bits() == u.sqrt().to_bits()));
    }

    /// Every SIMD level this CPU has computes the same bits as the baseline build, over
    /// each kind of fused instruction (transcendentals, division, select, clamp, powers,
    /// comparisons, broadcasts, a broadcast boolean mask, row reductions and row values
    /// spread back over their rows), on tiles with ragged ends.
    #[test]
    fn every_simd_level_computes_the_same_bits() {
        let key = crate::random::key(5);
        let ks = crate::random::split_n(&key, 2);
        let x = crate::random::normal(&ks[0], &[37, 301], crate::DType::F32) * 4.0f32;
        let y = crate::random::normal(&ks[1], &[301], crate::DType::F32);
        let mask = y.gt(0.3f32);
        let f = Jit::new(move |(x, y): &(Array, Array)| {
            let a = x.exp() / (y.abs() + 0.5f32) + x.tanh() * y - crate::lax::logistic(x);
            let b = crate::numpy::where_(
                x.gt(0.0f32),
                (x.abs() + 1.0f32).sqrt(),
                crate::lax::integer_pow(x, 3),
            );
            let c = (&a * &b).clip(-3.0f32, 3.0f32).maximum(y) + x.sin() * x.cos();
            let c = crate::numpy::where_(&mask, x.softmax(-1), c);
            (c.sum_axes([-1], false), c.max_axes([-1], false), c)
        });
        let run = |l: Simd| {
            FORCED_SIMD.with(|f| f.set(Some(l)));
            let (s, m, c) = f.call(&(x.clone(), y.clone()));
            FORCED_SIMD.with(|f| f.set(None));
            (s.to_vec::<f32>(), m.to_vec::<f32>(), c.to_vec::<f32>())
        };
        let base = run(Simd::Base);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for l in [Simd::Avx2, Simd::Avx512].into_iter().filter(|&l| l <= detected()) {
            let got = run(l);
            assert_eq!(bits(&got.0), bits(&base.0), "{l:?} sums");
            assert_eq!(bits(&got.1), bits(&base.1), "{l:?} maxima");
            assert_eq!(bits(&got.2), bits(&base.2), "{l:?} elements");
        }
    }
}
