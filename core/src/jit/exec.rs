//! The compiled form of a jaxpr: a sequence of steps (fused elementwise groups, library
//! kernels, free reshapes) with a buffer plan (each intermediate is freed right after its
//! last use; fused groups write in place into inputs that die there). Cheap elementwise
//! values a later group needs are recomputed there when that reads fewer buffers
//! ([`rematerialize`]).

use crate::array::{Array, Repr};
use crate::aval::Aval;
use crate::backend::Storage;
use crate::backend::cpu::fused::{self, Arg, FusedProgram, Instr, Output, Reduce, View};
use crate::backend::cpu::{self, Operand};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::jaxpr::{Atom, Eqn, Jaxpr, Var, VarName};
use crate::prim::Prim;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// An operand of a step: a variable or a literal scalar.
#[derive(Clone, Debug)]
enum Slot {
    Var(usize),
    Lit(Storage),
}

impl Slot {
    fn of(a: &Atom) -> Slot {
        match a {
            Atom::Var(v) => Slot::Var(v.id),
            Atom::Lit(l) => Slot::Lit(l.storage().expect("literals are concrete").clone()),
        }
    }
}

#[derive(Debug)]
enum Step {
    /// One primitive on the CPU kernels.
    Kernel { prim: Prim, ins: Vec<Slot>, outs: Vec<usize>, out_avals: Vec<Aval> },
    /// A reshape: the output shares the input's buffer.
    Alias { input: usize, out: usize },
    /// A convolution's kernel gradient from its input and output gradient (`ins`), which
    /// the transpose rule emits as `transpose(conv(transpose(x), transpose(g)))`: one
    /// `im2col(x)^T @ g` product (see [`cpu::conv_filter_grad`]), in the forward
    /// convolution's terms (its strides, padding, kernel dilation and kernel size).
    ConvFilter {
        ins: Vec<Slot>,
        outs: Vec<usize>,
        strides: Vec<usize>,
        padding: Vec<(i64, i64)>,
        rhs_dilation: Vec<usize>,
        k_sp: Vec<usize>,
    },
    /// `transpose(dot_general(ins), perm)` in one pass: each product is written straight
    /// to its place in the transposed output (see [`cpu::dot_general_transposed`]).
    /// `out_aval` is the product's untransposed output.
    TransposedDot { prim: Prim, ins: Vec<Slot>, out: usize, out_aval: Aval, perm: Vec<usize> },
    /// A fused elementwise group.
    Fused {
        prog: FusedProgram,
        ins: Vec<Slot>,
        outs: Vec<usize>,
        /// The primitives it evaluates, for display.
        ops: Vec<&'static str>,
        /// Inputs that may be overwritten when they die here (full view, compute type).
        donatable: Vec<bool>,
        /// The contraction this group is the epilogue of: the group runs on each block of
        /// its output as soon as it is final (input `input` of the group).
        producer: Option<Box<Producer>>,
    },
}

/// A matrix product or convolution whose only consumer is a fused elementwise group.
#[derive(Debug)]
struct Producer {
    prim: Prim,
    ins: Vec<Slot>,
    out_aval: Aval,
    /// The group input it produces.
    input: usize,
}

/// A compiled program (steps over fused groups, kernels and aliases, with a liveness buffer plan). `Display` prints the steps and the
/// buffer plan.
#[derive(Debug)]
pub struct Executable {
    in_vars: Vec<usize>,
    in_avals: Vec<Aval>,
    avals: Vec<Option<Aval>>,
    steps: Vec<Step>,
    outs: Vec<Slot>,
    out_avals: Vec<Aval>,
    /// Variables whose buffer is released after each step.
    free_after: Vec<Vec<usize>>,
    peak_bytes: usize,
}

/// A buffer of the environment: borrowed from the caller, or owned (shared by aliases).
#[derive(Clone)]
enum Buf<'a> {
    Ref(&'a Storage),
    Own(Arc<Storage>),
}

impl Buf<'_> {
    fn get(&self) -> &Storage {
        match self {
            Buf::Ref(s) => s,
            Buf::Own(s) => s,
        }
    }
}

/// A fusion group under construction.
struct Group {
    dtype: DType,
    domain: Vec<usize>,
    members: Vec<usize>,
    sealed: bool,
    /// Product of the reduced trailing dims, once a reduction joined.
    inner: Option<usize>,
    /// The clone batch of its members, while it holds only clones of one batch (see
    /// [`plan`]).
    batch: Option<usize>,
}

fn is_float(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F64)
}

/// The compute type of a fusable equation, if it can join a fused group.
fn fusable_type(prim: &Prim, ins: &[Atom], out: &Aval) -> Option<DType> {
    let t = match prim {
        Prim::BroadcastInDim { .. } => out.dtype,
        Prim::ConvertElementType { dtype } if ins[0].aval().dtype == DType::Bool => *dtype,
        p if p.is_comparison() => ins[0].aval().dtype,
        Prim::IsFinite => ins[0].aval().dtype,
        Prim::Select => ins[1].aval().dtype,
        p if fused::is_fusable(p) => out.dtype,
        _ => return None,
    };
    if !is_float(t) {
        return None;
    }
    let ok = ins.iter().enumerate().all(|(i, a)| {
        let d = a.aval().dtype;
        d == t
            || (d == DType::Bool
                && (matches!(prim, Prim::ConvertElementType { .. })
                    || (matches!(prim, Prim::Select) && i == 0)))
    });
    ok.then_some(t)
}

/// Product of the trailing dims reduced by `axes`, if they are a suffix of `shape`.
fn suffix_reduction(axes: &[usize], shape: &[usize]) -> Option<usize> {
    let nd = shape.len();
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    let k = sorted.len();
    (k > 0 && sorted.iter().enumerate().all(|(i, &a)| a == nd - k + i))
        .then(|| shape[nd - k..].iter().product())
}

fn reduce_kind(prim: &Prim) -> Option<(Reduce, &[usize])> {
    match prim {
        Prim::ReduceSum { axes } => Some((Reduce::Sum, axes)),
        Prim::ReduceMax { axes } => Some((Reduce::Max, axes)),
        Prim::ReduceMin { axes } => Some((Reduce::Min, axes)),
        Prim::ReduceProd { axes } => Some((Reduce::Prod, axes)),
        _ => None,
    }
}

impl Executable {
    /// Compiles a jaxpr without constvars.
    pub fn compile(j: &Jaxpr) -> Executable {
        cpu::tune_allocator();
        // Rematerialization to a fixed point: once one consumer recomputes a value, the
        // producer may write it for a single other consumer only, which can then
        // recompute it too (a layer norm's `x - mean`, read by several backward groups).
        let mut planned = plan(j, &[]);
        let mut remat: Option<(Jaxpr, Vec<Option<usize>>)> = None;
        for _ in 0..REMAT_ROUNDS {
            let (jc, prior) = remat.as_ref().map_or((j, &[][..]), |(jc, b)| (jc, b.as_slice()));
            let Some((j2, b2)) = rematerialize(jc, &planned, prior) else { break };
            planned = plan(&j2, &b2);
            remat = Some((j2, b2));
        }
        let j = remat.as_ref().map_or(j, |(j2, _)| j2);
        let Plan { groups, group_of_var, group_of_eqn, virt, materialize, escapes } = planned;
        let n = j.num_vars();
        let mut avals: Vec<Option<Aval>> = vec![None; n];
        for v in j.constvars.iter().chain(&j.in_binders) {
            avals[v.id] = Some(v.aval.clone());
        }
        for e in &j.eqns {
            for v in &e.outs {
                avals[v.id] = Some(v.aval.clone());
            }
        }

        // ---- steps ----
        let mut steps = Vec::new();
        for (i, e) in j.eqns.iter().enumerate() {
            if virt[e.outs[0].id].is_some() && !materialize[e.outs[0].id] {
                continue;
            }
            match group_of_eqn[i] {
                None => steps.push(match (&e.prim, &e.inputs[0]) {
                    (
                        Prim::Reshape { .. } | Prim::Squeeze { .. } | Prim::ExpandDims { .. },
                        Atom::Var(v),
                    ) => Step::Alias { input: v.id, out: e.outs[0].id },
                    _ => Step::Kernel {
                        prim: e.prim.clone(),
                        ins: e.inputs.iter().map(Slot::of).collect(),
                        outs: e.outs.iter().map(|v| v.id).collect(),
                        out_avals: e.outs.iter().map(|v| v.aval.clone()).collect(),
                    },
                }),
                Some(g) if *groups[g].members.last().expect("nonempty") == i => {
                    steps.push(build_group(j, &groups[g], &group_of_var, g, &escapes, &virt));
                }
                Some(_) => {}
            }
        }
        let mut is_out = vec![false; n];
        for a in &j.outs {
            if let Atom::Var(v) = a {
                is_out[v.id] = true;
            }
        }
        let steps = fold_filter_grads(steps, &is_out);
        let steps = merge_epilogues(fold_product_transposes(steps, &is_out, &avals), &is_out);
        let steps = absorb_column_reductions(steps, &is_out, &avals);
        // ---- buffer plan: free after the last use ----
        let mut last_use: Vec<Option<usize>> = vec![None; n];
        for (s, step) in steps.iter().enumerate() {
            for v in step.reads() {
                last_use[v] = Some(s);
            }
        }
        let mut free_after = vec![Vec::new(); steps.len()];
        for (v, s) in last_use.iter().enumerate() {
            if let Some(s) = s
                && !is_out[v]
            {
                free_after[*s].push(v);
            }
        }
        // Peak bytes of intermediates (aliases share their input's buffer).
        let bytes = |v: usize| avals[v].as_ref().map_or(0, |a| a.size() * a.dtype.size_in_bytes());
        let (mut live, mut peak) = (0usize, 0usize);
        // Aliases and inputs own no intermediate buffer of their own.
        let mut not_owned = vec![false; n];
        for st in &steps {
            if let Step::Alias { out, .. } = st {
                not_owned[*out] = true;
            }
        }
        for v in &j.in_binders {
            not_owned[v.id] = true;
        }
        for (s, step) in steps.iter().enumerate() {
            live +=
                step.writes().iter().filter(|&&v| !not_owned[v]).map(|&v| bytes(v)).sum::<usize>();
            peak = peak.max(live);
            for &v in &free_after[s] {
                if !not_owned[v] {
                    live = live.saturating_sub(bytes(v));
                }
            }
        }
        Executable {
            in_vars: j.in_binders.iter().map(|v| v.id).collect(),
            in_avals: j.in_avals(),
            avals,
            steps,
            outs: j.outs.iter().map(Slot::of).collect(),
            out_avals: j.out_avals(),
            free_after,
            peak_bytes: peak,
        }
    }

    /// Number of fused groups.
    pub fn num_fused(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s, Step::Fused { .. })).count()
    }

    /// Number of steps (fused groups, kernels and reshapes).
    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// Runs on borrowed inputs (the CPU kernel of [`Prim::Call`]).
    pub fn run(&self, ins: &[Operand<'_>]) -> Vec<Storage> {
        let mut env: Vec<Option<Buf<'_>>> = vec![None; self.avals.len()];
        for (v, op) in self.in_vars.iter().zip(ins) {
            env[*v] = Some(Buf::Ref(op.data));
        }
        self.exec(env)
    }

    /// Runs on arrays, taking ownership: inputs nothing else references are donated (their
    /// buffers may be overwritten by the computation).
    pub(crate) fn run_arrays(&self, args: Vec<Array>) -> Result<Vec<Array>> {
        if args.len() != self.in_avals.len() {
            return Err(Error::Arity {
                op: "jit".into(),
                expected: self.in_avals.len(),
                got: args.len(),
            });
        }
        for (i, (a, want)) in args.iter().zip(&self.in_avals).enumerate() {
            if a.aval() != want {
                return Err(Error::Transform {
                    transform: "jit",
                    msg: format!("input {i} is {} but the program expects {want}", a.aval()),
                });
            }
        }
        let mut owned: Vec<(usize, Storage)> = Vec::new();
        let mut shared: Vec<(usize, Array)> = Vec::new();
        for (v, a) in self.in_vars.iter().zip(args) {
            match Arc::try_unwrap(a.0) {
                Ok(inner) => match inner.repr {
                    Repr::Concrete(s) => owned.push((*v, s)),
                    Repr::Tracer(_) => unreachable!("run_arrays is called on concrete arrays"),
                },
                Err(arc) => shared.push((*v, Array(arc))),
            }
        }
        let mut env: Vec<Option<Buf<'_>>> = vec![None; self.avals.len()];
        for (v, a) in &shared {
            env[*v] = Some(Buf::Ref(a.concrete_storage("jit")?));
        }
        for (v, s) in owned {
            env[v] = Some(Buf::Own(Arc::new(s)));
        }
        let outs = self.exec(env);
        Ok(outs
            .into_iter()
            .zip(&self.out_avals)
            .map(|(s, a)| Array::from_storage(s, a.shape.clone()))
            .collect())
    }

    /// The kernel operands of `slots`.
    fn operands<'b>(&'b self, env: &'b [Option<Buf<'_>>], slots: &'b [Slot]) -> Vec<Operand<'b>> {
        slots
            .iter()
            .map(|s| match s {
                Slot::Var(v) => Operand {
                    data: env[*v].as_ref().expect("bound before use").get(),
                    shape: &self.avals[*v].as_ref().expect("typed").shape,
                },
                Slot::Lit(l) => Operand { data: l, shape: &[] },
            })
            .collect()
    }

    /// Runs the steps on a thread of rayon's pool. Called from any other thread (the
    /// user's), each parallel kernel would be injected into the pool while the caller
    /// sleeps on a lock until it is done: two futex round trips per kernel, hundreds per
    /// training step. On a pool thread the kernels fork and join by work stealing instead
    /// (measured on the transformer step here, 40 alternated rounds in one process: median
    /// 141 -> 129 ms).
    ///
    /// The pool's other threads are kept awake for the whole run by [`keep_awake`]
    /// spinners: an idle rayon worker goes to sleep within microseconds, and waking it
    /// again costs 45-80 us on this VM, paid by nearly every kernel of a train step (the
    /// serial work between kernels is longer than rayon's spin). With the spinners, a fork
    /// after 20-100 us of serial work costs about 1 us (measured: 2-way `par_iter`s).
    fn exec(&self, env: Vec<Option<Buf<'_>>>) -> Vec<Storage> {
        if rayon::current_thread_index().is_none() {
            // Tests force a SIMD level per thread: the pool thread takes the caller's.
            #[cfg(test)]
            let forced = cpu::FORCED_SIMD.with(|f| f.get());
            let mut out = Vec::new();
            let done = AtomicBool::new(false);
            rayon::scope(|s| {
                let (me, done) = (rayon::current_thread_index(), &done);
                for _ in 1..rayon::current_num_threads() {
                    s.spawn(move |_| keep_awake(me, done));
                }
                // Releases the spinners however the steps end (a panic included, or the
                // scope would wait for them forever).
                let _release = Release(done);
                #[cfg(test)]
                cpu::FORCED_SIMD.with(|f| f.set(forced));
                out = self.exec_steps(env);
                #[cfg(test)]
                cpu::FORCED_SIMD.with(|f| f.set(None));
            });
            return out;
        }
        self.exec_steps(env)
    }

    fn exec_steps<'a>(&self, mut env: Vec<Option<Buf<'a>>>) -> Vec<Storage> {
        fn read<'b>(env: &'b [Option<Buf<'_>>], s: &'b Slot) -> &'b Storage {
            match s {
                Slot::Var(v) => env[*v].as_ref().expect("bound before use").get(),
                Slot::Lit(l) => l,
            }
        }
        let profile = profiling();
        for (si, step) in self.steps.iter().enumerate() {
            let t0 = profile.then(Instant::now);
            match step {
                Step::Kernel { prim, ins, outs, out_avals } => {
                    let ops = self.operands(&env, ins);
                    let res = cpu::execute(prim, &ops, out_avals);
                    for (v, s) in outs.iter().zip(res) {
                        env[*v] = Some(Buf::Own(Arc::new(s)));
                    }
                }
                Step::Alias { input, out } => env[*out] = env[*input].clone(),
                Step::TransposedDot { prim, ins, out, out_aval, perm } => {
                    let Prim::DotGeneral { lhs_contract, rhs_contract, lhs_batch, rhs_batch } =
                        prim
                    else {
                        unreachable!("only products fold their output transposes")
                    };
                    let ops = self.operands(&env, ins);
                    let res = cpu::dot_general_transposed(
                        ops[0],
                        ops[1],
                        lhs_contract,
                        rhs_contract,
                        lhs_batch,
                        rhs_batch,
                        &out_aval.shape,
                        perm,
                    );
                    env[*out] = Some(Buf::Own(Arc::new(res)));
                }
                Step::ConvFilter { ins, outs, strides, padding, rhs_dilation, k_sp } => {
                    let ops = self.operands(&env, ins);
                    let res =
                        cpu::conv_filter_grad(ops[0], ops[1], strides, padding, rhs_dilation, k_sp);
                    env[outs[0]] = Some(Buf::Own(Arc::new(res)));
                }
                Step::Fused { prog, ins, outs, donatable, producer, .. } => {
                    // Inputs that die here, are uniquely owned and read once are donated.
                    let mut donate = vec![false; ins.len()];
                    for (k, s) in ins.iter().enumerate() {
                        if let Slot::Var(v) = s
                            && donatable[k]
                            && self.free_after[si].contains(v)
                            && ins.iter().filter(|x| matches!(x, Slot::Var(w) if w == v)).count()
                                == 1
                            && matches!(&env[*v], Some(Buf::Own(a)) if Arc::strong_count(a) == 1)
                        {
                            donate[k] = true;
                        }
                    }
                    let mut donated: HashMap<usize, Storage> = HashMap::new();
                    for (k, s) in ins.iter().enumerate() {
                        if let (true, Slot::Var(v)) = (donate[k], s)
                            && let Some(Buf::Own(a)) = env[*v].take()
                        {
                            donated.insert(k, Arc::try_unwrap(a).expect("unique"));
                        }
                    }
                    let args: Vec<Arg<'_>> = ins
                        .iter()
                        .enumerate()
                        .map(|(k, s)| match donated.remove(&k) {
                            Some(st) => Arg::Donated(st),
                            None if producer.as_ref().is_some_and(|p| p.input == k) => Arg::Pending,
                            None => Arg::Ref(read(&env, s)),
                        })
                        .collect();
                    let res = match producer {
                        None => fused::run(prog, args),
                        Some(p) => {
                            let ops = self.operands(&env, &p.ins);
                            fused::run_epilogue(prog, args, |epi| {
                                cpu::execute_with_epilogue(&p.prim, &ops, &p.out_aval, epi)
                            })
                        }
                    };
                    for (v, s) in outs.iter().zip(res) {
                        env[*v] = Some(Buf::Own(Arc::new(s)));
                    }
                }
            }
            for v in &self.free_after[si] {
                env[*v] = None;
            }
            if let Some(t0) = t0 {
                eprintln!(
                    "[kiln jit] step {si:>3} {:>10.1} us  {}",
                    t0.elapsed().as_secs_f64() * 1e6,
                    self.step_line(si)
                );
            }
        }
        let bufs: Vec<Buf<'_>> = self
            .outs
            .iter()
            .map(|s| match s {
                Slot::Var(v) => env[*v].clone().expect("outputs are bound"),
                Slot::Lit(l) => Buf::Own(Arc::new(l.clone())),
            })
            .collect();
        drop(env);
        bufs.into_iter()
            .map(|b| match b {
                Buf::Ref(s) => s.clone(),
                Buf::Own(a) => Arc::try_unwrap(a).unwrap_or_else(|a| (*a).clone()),
            })
            .collect()
    }
}

/// The fusion grouping of a jaxpr's equations.
struct Plan {
    groups: Vec<Group>,
    group_of_var: Vec<Option<usize>>,
    group_of_eqn: Vec<Option<usize>>,
    /// The equation of each virtual (unmaterialized unless `materialize`) broadcast.
    virt: Vec<Option<usize>>,
    materialize: Vec<bool>,
    /// Group member values read outside their group or returned.
    escapes: Vec<bool>,
}

/// Groups fusable equations greedily in program order. `batch[i]` (absent: `None`) marks
/// equation `i` as a clone made by [`rematerialize`]: it joins only groups of clones of the
/// same batch (never the group it was copied from), and they merge into the consumer.
fn plan(j: &Jaxpr, batch: &[Option<usize>]) -> Plan {
    let n = j.num_vars();
    let mut groups: Vec<Group> = Vec::new();
    let mut group_of_var: Vec<Option<usize>> = vec![None; n];
    let mut group_of_eqn: Vec<Option<usize>> = vec![None; j.eqns.len()];
    let mut virt: Vec<Option<usize>> = vec![None; n];
    // The group whose row register holds each row value (see [`row_op`]).
    let mut row_of: Vec<Option<usize>> = vec![None; n];
    let var_group = |a: &Atom, gv: &Vec<Option<usize>>| match a {
        Atom::Var(v) => gv[v.id],
        Atom::Lit(_) => None,
    };
    for (i, e) in j.eqns.iter().enumerate() {
        let out = &e.outs[0].aval;
        let mut joined = None;
        if batch.get(i).copied().flatten().is_none()
            && let Some(g) = row_op(j, e, &groups, &row_of, &virt)
        {
            // A row-wise step of an open group with reductions: the group goes on from
            // its row values within the same tile.
            for a in &e.inputs {
                if let Some(h) = var_group(a, &group_of_var)
                    && h != g
                {
                    groups[h].sealed = true;
                }
            }
            if out.shape != groups[g].domain {
                row_of[e.outs[0].id] = Some(g);
            }
            groups[g].members.push(i);
            group_of_eqn[i] = Some(g);
            group_of_var[e.outs[0].id] = Some(g);
            continue;
        }
        if let Prim::BroadcastInDim { .. } = e.prim
            && fusable_type(&e.prim, &e.inputs, out).is_some()
        {
            // Virtual: fused consumers read the operand through a broadcast view; the
            // broadcast is materialized only for other consumers.
            virt[e.outs[0].id] = Some(i);
            if let Some(g) = var_group(&e.inputs[0], &group_of_var) {
                groups[g].sealed = true;
            }
            continue;
        }
        if e.outs.len() == 1
            && let Some(t) = fusable_type(&e.prim, &e.inputs, out)
        {
            let mut cands: Vec<usize> = e
                .inputs
                .iter()
                .filter_map(|a| var_group(a, &group_of_var))
                .filter(|&g| {
                    let g = &groups[g];
                    let b = batch.get(i).copied().flatten();
                    !g.sealed
                        && g.dtype == t
                        && g.domain == out.shape
                        && (b.is_none() || g.batch == b)
                })
                .collect();
            cands.sort_unstable();
            cands.dedup();
            // Open groups feeding this equation merge into one: none of their values
            // has been read outside them yet (that would have sealed them).
            if let Some((&target, rest)) = cands.split_first() {
                for &g in rest {
                    if groups[g].inner.is_some()
                        && groups[target].inner.is_some()
                        && groups[g].inner != groups[target].inner
                    {
                        continue;
                    }
                    let moved = std::mem::take(&mut groups[g].members);
                    groups[g].sealed = true;
                    groups[target].inner = groups[target].inner.or(groups[g].inner);
                    for &m in &moved {
                        group_of_eqn[m] = Some(target);
                        for v in &j.eqns[m].outs {
                            group_of_var[v.id] = Some(target);
                        }
                    }
                    groups[target].members.extend(moved);
                    groups[target].members.sort_unstable();
                }
                if batch.get(i).copied().flatten().is_none() {
                    groups[target].batch = None;
                }
                joined = Some(target);
            }
            // Other groups feeding this equation are consumed from outside theirs.
            for a in &e.inputs {
                if let Some(g) = var_group(a, &group_of_var)
                    && Some(g) != joined
                {
                    groups[g].sealed = true;
                }
            }
            let g = joined.unwrap_or_else(|| {
                groups.push(Group {
                    dtype: t,
                    domain: out.shape.clone(),
                    members: vec![],
                    sealed: false,
                    inner: None,
                    batch: batch.get(i).copied().flatten(),
                });
                groups.len() - 1
            });
            joined = Some(g);
        } else if let Some((_, axes)) = reduce_kind(&e.prim)
            && let Some(g) = var_group(&e.inputs[0], &group_of_var)
            && let Some(inner) = suffix_reduction(axes, e.inputs[0].aval().shape.as_slice())
            && !groups[g].sealed
            && groups[g].dtype == out.dtype
            && groups[g].domain == e.inputs[0].aval().shape
            && groups[g].inner.is_none_or(|k| k == inner)
        {
            groups[g].inner = Some(inner);
            if rows_fit_tile(inner) {
                row_of[e.outs[0].id] = Some(g);
            }
            joined = Some(g);
        } else if let Some((_, axes)) = reduce_kind(&e.prim)
            && batch.get(i).copied().flatten().is_none()
            && is_float(out.dtype)
            && e.inputs[0].aval().dtype == out.dtype
            && let Some(inner) = suffix_reduction(axes, e.inputs[0].aval().shape.as_slice())
            && rows_fit_tile(inner)
        {
            // A reduction over short rows of a value from outside opens a group, which
            // the row-wise steps after it can join (a lone reduction runs as a kernel).
            for a in &e.inputs {
                if let Some(g) = var_group(a, &group_of_var) {
                    groups[g].sealed = true;
                }
            }
            groups.push(Group {
                dtype: out.dtype,
                domain: e.inputs[0].aval().shape.clone(),
                members: vec![],
                sealed: false,
                inner: Some(inner),
                batch: None,
            });
            row_of[e.outs[0].id] = Some(groups.len() - 1);
            joined = Some(groups.len() - 1);
        } else {
            for a in &e.inputs {
                if let Some(g) = var_group(a, &group_of_var) {
                    groups[g].sealed = true;
                }
            }
        }
        if let Some(g) = joined {
            groups[g].members.push(i);
            group_of_eqn[i] = Some(g);
            for v in &e.outs {
                group_of_var[v.id] = Some(g);
            }
        }
    }
    // A group pays off from two members, one that reads a virtual broadcast, or one
    // that can be a contraction's epilogue; other single members run as kernels.
    let mut contracted = vec![false; n];
    for e in &j.eqns {
        if cpu::takes_epilogue(&e.prim) && is_float(e.outs[0].aval.dtype) {
            contracted[e.outs[0].id] = true;
        }
    }
    let worth_alone = |e: &crate::jaxpr::Eqn| {
        e.inputs
            .iter()
            .any(|a| matches!(a, Atom::Var(v) if virt[v.id].is_some() || contracted[v.id]))
    };
    for (i, g) in group_of_eqn.iter_mut().enumerate() {
        if let Some(k) = *g
            && groups[k].members.len() < 2
            && !worth_alone(&j.eqns[i])
        {
            *g = None;
            for v in &j.eqns[i].outs {
                group_of_var[v.id] = None;
            }
        }
    }
    // Virtual broadcasts read by anything but a fused member are materialized.
    let mut materialize = vec![false; n];
    for (i, e) in j.eqns.iter().enumerate() {
        if group_of_eqn[i].is_some() {
            continue;
        }
        for a in &e.inputs {
            if let Atom::Var(v) = a
                && virt[v.id].is_some()
            {
                materialize[v.id] = true;
            }
        }
    }
    for a in &j.outs {
        if let Atom::Var(v) = a
            && virt[v.id].is_some()
        {
            materialize[v.id] = true;
        }
    }
    // Group outputs: member values read outside the group or returned.
    let mut escapes = vec![false; n];
    for (i, e) in j.eqns.iter().enumerate() {
        for a in &e.inputs {
            if let Atom::Var(v) = a
                && group_of_var[v.id].is_some()
                && group_of_var[v.id] != group_of_eqn[i]
            {
                escapes[v.id] = true;
            }
        }
    }
    for a in &j.outs {
        if let Atom::Var(v) = a {
            escapes[v.id] = true;
        }
    }
    Plan { groups, group_of_var, group_of_eqn, virt, materialize, escapes }
}

/// Whether rows of `inner` elements can be evaluated whole within a tile (then a group
/// reducing them keeps its results in row registers, see [`row_op`]).
fn rows_fit_tile(inner: usize) -> bool {
    (1..=fused::TILE).contains(&inner)
}

/// The open group that equation `e` continues row-wise, if any. A group whose rows (the
/// `inner` trailing elements its reductions reduce) fit a tile computes whole rows per
/// tile, so it can use its reductions' results right away: each is a *row value*, kept in a
/// row register ([`Instr::RowReduce`]). `e` joins such a group `g` when it reads row values
/// of `g` (and otherwise only scalars) and is
/// - an elementwise equation over the rows (the `x / n`, `+ eps`, `rsqrt` of a layer norm;
///   the non-finite fix-up of a softmax's max): its result is a row value too;
/// - a reshape or size-preserving broadcast of a row value (adding unit dims): the same
///   row value;
/// - a broadcast of a row value back over the group's domain, each row's value along its
///   row: a full value of the group, spread from the row register ([`Instr::Expand`]).
///
/// A softmax or layer norm thus runs as one pass over its rows instead of three to five.
fn row_op(
    j: &Jaxpr,
    e: &Eqn,
    groups: &[Group],
    row_of: &[Option<usize>],
    virt: &[Option<usize>],
) -> Option<usize> {
    if e.outs.len() != 1 {
        return None;
    }
    let mut g = None;
    for a in &e.inputs {
        if let Atom::Var(v) = a
            && let Some(h) = row_of[v.id]
        {
            if g.is_some_and(|g| g != h) {
                return None;
            }
            g = Some(h);
        }
    }
    let g = g?;
    let grp = &groups[g];
    let inner = grp.inner?;
    if grp.sealed || !rows_fit_tile(inner) {
        return None;
    }
    let domain = &grp.domain;
    let nd = domain.len();
    // The reduced suffix: the fewest trailing dims holding `inner` elements.
    let r = (0..=nd).find(|&r| domain[nd - r..].iter().product::<usize>() == inner)?;
    let rows = &domain[..nd - r];
    let non_unit = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    let out = &e.outs[0].aval;
    let row_shaped = non_unit(&out.shape) == non_unit(rows);
    let input = e.inputs[0].aval();
    match &e.prim {
        Prim::Reshape { .. } | Prim::Squeeze { .. } | Prim::ExpandDims { .. } => {
            row_shaped.then_some(g)
        }
        Prim::BroadcastInDim { dims, .. } if out.dtype == grp.dtype => {
            if row_shaped && out.size() == input.size() {
                return Some(g);
            }
            if out.shape != *domain {
                return None;
            }
            // Each domain element must read its row's value: row-major strides over the
            // rows, 0 along the reduced suffix (unit dims may have any stride).
            let strides = broadcast_strides(&input.shape, dims, nd);
            let mut want = 1;
            for k in (0..nd).rev() {
                let expect = if k >= nd - r { 0 } else { want };
                if domain[k] != 1 && strides[k] != expect {
                    return None;
                }
                if k < nd - r {
                    want *= domain[k];
                }
            }
            Some(g)
        }
        p if fusable_type(p, &e.inputs, out) == Some(grp.dtype) && row_shaped => {
            let scalar = |a: &Atom| match a {
                Atom::Lit(_) => true,
                Atom::Var(v) => {
                    row_of[v.id] == Some(g)
                        || virt[v.id]
                            .map_or(v.aval.size() == 1, |b| j.eqns[b].inputs[0].aval().size() == 1)
                }
            };
            e.inputs.iter().all(scalar).then_some(g)
        }
        _ => None,
    }
}

/// Most equations one consumer group recomputes from one producer group.
const REMAT_MAX_CLONES: usize = 40;

/// Most rounds of [`rematerialize`] per compilation.
const REMAT_ROUNDS: usize = 4;

/// Rematerialization (XLA's producer duplication into consumer fusions): where a fused
/// group `H` reads several full-size values of another fused group `G` (a backward pass
/// reading the forward's intermediates), and they can all be recomputed by `G`'s own
/// elementwise equations from fewer full-size values, `H` recomputes them instead. `G`
/// then writes (and `H` reads) fewer buffers: the GELU of a transformer block wrote five
/// 4 MB intermediates for its backward pass; now it writes its input and output.
///
/// `prior` holds the clone batches of an earlier round (see [`plan`]); they are kept.
/// Returns the rewritten program (the clones sit right before their first reader, under
/// fresh variables) and each equation's clone batch, or `None` when nothing pays.
fn rematerialize(
    j: &Jaxpr,
    p: &Plan,
    prior: &[Option<usize>],
) -> Option<(Jaxpr, Vec<Option<usize>>)> {
    let first_batch = prior.iter().flatten().max().map_or(0, |b| b + 1);
    let n = j.num_vars();
    let mut def: Vec<Option<usize>> = vec![None; n];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, e) in j.eqns.iter().enumerate() {
        for v in &e.outs {
            def[v.id] = Some(i);
        }
        for a in &e.inputs {
            if let Atom::Var(v) = a {
                readers[v.id].push(i);
            }
        }
    }
    let mut is_out = vec![false; n];
    for a in &j.outs {
        if let Atom::Var(v) = a {
            is_out[v.id] = true;
        }
    }
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); p.groups.len()];
    for (i, g) in p.group_of_eqn.iter().enumerate() {
        if let Some(g) = g {
            members[*g].push(i);
        }
    }
    // Values every step can read at no cost: scalars, and broadcasts of smaller operands
    // (read through a view).
    let mut is_input = vec![false; n];
    for v in &j.in_binders {
        is_input[v.id] = true;
    }
    let small = |v: &Var, domain: &[usize]| {
        v.aval.shape != domain
            || p.virt[v.id].is_some_and(|b| j.eqns[b].inputs[0].aval().size() < v.aval.size())
    };
    // (insertion point, equations to clone in order, consumer group H) per batch.
    let mut batches: Vec<(usize, Vec<usize>, usize)> = Vec::new();
    for (g, mem) in members.iter().enumerate() {
        if mem.is_empty() {
            continue;
        }
        let domain = &p.groups[g].domain;
        let in_g = |i: usize| p.group_of_eqn[i] == Some(g);
        // Escaping full-size values of G read by fused consumers only.
        let mut by_consumer: HashMap<usize, Vec<usize>> = HashMap::new();
        for &i in mem {
            let v = &j.eqns[i].outs[0];
            if !p.escapes[v.id] || v.aval.shape != *domain || is_out[v.id] {
                continue;
            }
            let rs: Vec<Option<usize>> =
                readers[v.id].iter().filter(|&&r| !in_g(r)).map(|&r| p.group_of_eqn[r]).collect();
            if rs.iter().any(Option::is_none) {
                continue;
            }
            let mut hs: Vec<usize> = rs.into_iter().flatten().collect();
            hs.sort_unstable();
            hs.dedup();
            for h in hs {
                by_consumer.entry(h).or_default().push(v.id);
            }
        }
        let mut consumers: Vec<(usize, Vec<usize>)> = by_consumer.into_iter().collect();
        consumers.sort_unstable();
        for (h, want) in consumers {
            // The first reader in H: clones go right before it.
            let pos = want
                .iter()
                .flat_map(|&v| readers[v].iter().copied())
                .filter(|&r| p.group_of_eqn[r] == Some(h))
                .min()
                .expect("H reads what it wants");
            // Candidate roots: full-size values defined before `pos` in G, or read by G
            // from outside (never a contraction's output, which must keep its single
            // reader to run its epilogue in place).
            let mut cands: Vec<usize> = Vec::new();
            for &i in mem {
                let e = &j.eqns[i];
                let v = &e.outs[0];
                if v.aval.shape == *domain && i < pos {
                    cands.push(v.id);
                }
                for a in &e.inputs {
                    if let Atom::Var(x) = a
                        && !small(x, domain)
                        && def[x.id].is_none_or(|d| {
                            !in_g(d) && d < pos && !cpu::takes_epilogue(&j.eqns[d].prim)
                        })
                    {
                        cands.push(x.id);
                    }
                }
            }
            cands.sort_unstable();
            cands.dedup();
            // The G equations recomputing `want` from `roots`, if they can.
            let clones = |roots: &[usize]| -> Option<Vec<usize>> {
                let mut need: std::collections::HashSet<usize> = Default::default();
                let mut stack: Vec<usize> =
                    want.iter().copied().filter(|v| !roots.contains(v)).collect();
                let mut order = Vec::new();
                while let Some(v) = stack.pop() {
                    if !need.insert(v) {
                        continue;
                    }
                    let d = def[v]?;
                    if !in_g(d) || d >= pos {
                        return None;
                    }
                    order.push(d);
                    if order.len() > REMAT_MAX_CLONES {
                        return None;
                    }
                    for a in &j.eqns[d].inputs {
                        if let Atom::Var(x) = a
                            && !roots.contains(&x.id)
                            && !small(x, domain)
                            && !is_input[x.id]
                        {
                            stack.push(x.id);
                        }
                    }
                }
                order.sort_unstable();
                Some(order)
            };
            // Recomputing pays in memory traffic: it saves G's write and H's read of each
            // wanted value that is not a root, and costs H's reads of the values the clones
            // start from that H did not read already, and G's writes of roots that would
            // not be written anyway (members of G escaping only to H). A layer norm's
            // `x - mean`, read by its backward pass, is recomputed from `x`, which is
            // written anyway. The best plan saves the most, then clones the fewest.
            let read_by_h = |v: usize| readers[v].iter().any(|&r| p.group_of_eqn[r] == Some(h));
            let written_anyway = |v: usize| {
                def[v].is_none_or(|d| !in_g(d))
                    || is_out[v]
                    || readers[v].iter().any(|&r| !in_g(r) && p.group_of_eqn[r] != Some(h))
            };
            let gain = |roots: &[usize], c: &[usize]| -> isize {
                let mut leaves: Vec<usize> = c
                    .iter()
                    .flat_map(|&d| &j.eqns[d].inputs)
                    .filter_map(|a| match a {
                        Atom::Var(x) if !small(x, domain) => Some(x.id),
                        _ => None,
                    })
                    .filter(|&x| def[x].is_none_or(|d| !c.contains(&d)) && !want.contains(&x))
                    .collect();
                leaves.sort_unstable();
                leaves.dedup();
                let saved = want.iter().filter(|v| !roots.contains(v)).count();
                let reads = leaves.iter().filter(|&&x| !read_by_h(x)).count();
                let writes =
                    roots.iter().filter(|&&r| !want.contains(&r) && !written_anyway(r)).count();
                (2 * saved) as isize - (reads + writes) as isize
            };
            let mut best: Option<(isize, Vec<usize>)> = None;
            let consider = |roots: &[usize], best: &mut Option<(isize, Vec<usize>)>| {
                if let Some(c) = clones(roots) {
                    let k = gain(roots, &c);
                    if !c.is_empty()
                        && k > 0
                        && best
                            .as_ref()
                            .is_none_or(|(bk, bc)| k > *bk || (k == *bk && c.len() < bc.len()))
                    {
                        *best = Some((k, c));
                    }
                }
            };
            consider(&[], &mut best);
            for &a in &cands {
                consider(&[a], &mut best);
            }
            if best.is_none() && want.len() > 2 {
                for (x, &a) in cands.iter().enumerate() {
                    for &b in &cands[x + 1..] {
                        consider(&[a, b], &mut best);
                    }
                }
            }
            if let Some((_, c)) = best {
                batches.push((pos, c, h));
            }
        }
    }
    if batches.is_empty() {
        return None;
    }
    // Rewrite: clones under fresh variables before their insertion point; H's members
    // read the clones.
    let mut next = n;
    let mut at: HashMap<usize, Vec<(usize, Eqn)>> = HashMap::new();
    let mut renames: Vec<(usize, HashMap<usize, Var>)> = Vec::new();
    // A consumer that already holds clones of an earlier round takes the new ones into
    // that batch (clones of two batches would not merge into one group).
    let ids: Vec<usize> = batches
        .iter()
        .enumerate()
        .map(|(b, (_, _, h))| {
            members[*h]
                .iter()
                .find_map(|&i| prior.get(i).copied().flatten())
                .unwrap_or(first_batch + b)
        })
        .collect();
    for (b, (pos, cloned, h)) in batches.iter().enumerate() {
        let mut map: HashMap<usize, Var> = HashMap::new();
        for &d in cloned {
            let e = &j.eqns[d];
            let inputs = e
                .inputs
                .iter()
                .map(|a| match a {
                    Atom::Var(x) if map.contains_key(&x.id) => Atom::Var(map[&x.id].clone()),
                    a => a.clone(),
                })
                .collect();
            let out = Var { id: next, aval: e.outs[0].aval.clone() };
            next += 1;
            map.insert(e.outs[0].id, out.clone());
            at.entry(*pos)
                .or_default()
                .push((b, Eqn { prim: e.prim.clone(), inputs, outs: vec![out] }));
        }
        renames.push((*h, map));
    }
    let mut eqns = Vec::new();
    let mut batch = Vec::new();
    for (i, e) in j.eqns.iter().enumerate() {
        for (b, c) in at.remove(&i).unwrap_or_default() {
            batch.push(Some(ids[b]));
            eqns.push(c);
        }
        let mut e = e.clone();
        for (h, map) in &renames {
            if p.group_of_eqn[i] == Some(*h) {
                for a in &mut e.inputs {
                    if let Atom::Var(x) = a
                        && let Some(c) = map.get(&x.id)
                    {
                        *a = Atom::Var(c.clone());
                    }
                }
            }
        }
        eqns.push(e);
        batch.push(prior.get(i).copied().flatten());
    }
    let j2 = Jaxpr {
        constvars: j.constvars.clone(),
        in_binders: j.in_binders.clone(),
        eqns,
        outs: j.outs.clone(),
    };
    // The originals whose every reader now reads a clone are dead: without this the
    // producer group would still compute them (a transformer's forward GELU computed four
    // of its thirteen elementwise steps only for its backward pass, which recomputes them).
    let live = super::passes::live_eqns(&j2);
    let (eqns, batch) =
        j2.eqns.into_iter().zip(batch).zip(live).filter_map(|(eb, l)| l.then_some(eb)).unzip();
    let j2 = Jaxpr { eqns, ..j2 };
    Some((j2, batch))
}

/// Builds the fused program of group `gi`.
fn build_group(
    j: &Jaxpr,
    g: &Group,
    group_of_var: &[Option<usize>],
    gi: usize,
    escapes: &[bool],
    virt: &[Option<usize>],
) -> Step {
    let mut reg_of: HashMap<usize, usize> = HashMap::new();
    let mut n_regs = 0;
    let mut prologue = Vec::new();
    let mut body = Vec::new();
    let mut views: Vec<View> = Vec::new();
    let mut ins: Vec<Slot> = Vec::new();
    let mut donatable = Vec::new();
    let mut input_regs: HashMap<(usize, String), usize> = HashMap::new();
    let mut outputs = Vec::new();
    let mut outs = Vec::new();
    let mut ops = Vec::new();
    let n: usize = g.domain.iter().product();
    let mut fresh = || {
        n_regs += 1;
        n_regs - 1
    };
    // Values the group itself reads (a reduction read here is a row value, see `row_op`).
    let read_here: std::collections::HashSet<usize> = g
        .members
        .iter()
        .flat_map(|&i| &j.eqns[i].inputs)
        .filter_map(|a| match a {
            Atom::Var(v) => Some(v.id),
            Atom::Lit(_) => None,
        })
        .collect();
    // How an escaping value is stored: over the domain, or one element per row.
    let output = |reg: usize, v: &Var| {
        let bool_out = v.aval.dtype == DType::Bool;
        if v.aval.shape == g.domain {
            Output::Elementwise { reg, bool_out }
        } else {
            Output::RowValue { reg, bool_out }
        }
    };
    for &i in &g.members {
        let e = &j.eqns[i];
        ops.push(e.prim.name());
        // Registers of the operands.
        let mut operand = |a: &Atom, view: Option<View>, fresh: &mut dyn FnMut() -> usize| match a {
            Atom::Lit(l) => {
                let dst = fresh();
                prologue.push(Instr::Const { value: l.to_f64_vec()[0], dst });
                dst
            }
            Atom::Var(v) if group_of_var[v.id] == Some(gi) && view.is_none() => reg_of[&v.id],
            Atom::Var(v) => {
                let view = view.unwrap_or(if v.aval.size() == n && v.aval.shape == g.domain {
                    View::Full
                } else {
                    View::Scalar
                });
                let k = (v.id, format!("{view:?}"));
                if let Some(&r) = input_regs.get(&k) {
                    return r;
                }
                let dst = fresh();
                let input = ins.len();
                ins.push(Slot::Var(v.id));
                donatable.push(view == View::Full && v.aval.dtype == g.dtype);
                match view {
                    View::Scalar => prologue.push(Instr::Load { input, dst }),
                    _ => body.push(Instr::Load { input, dst }),
                }
                views.push(view);
                input_regs.insert(k, dst);
                dst
            }
        };
        let v = &e.outs[0];
        if let Some((kind, _)) = reduce_kind(&e.prim) {
            let r = operand(&e.inputs[0], None, &mut fresh);
            if read_here.contains(&v.id) {
                let dst = fresh();
                body.push(Instr::RowReduce { kind, a: r, dst });
                reg_of.insert(v.id, dst);
                if escapes[v.id] {
                    outputs.push(output(dst, v));
                    outs.push(v.id);
                }
            } else {
                outputs.push(Output::Reduce { reg: r, kind });
                outs.push(v.id);
            }
            continue;
        }
        if let (
            Prim::Reshape { .. }
            | Prim::Squeeze { .. }
            | Prim::ExpandDims { .. }
            | Prim::BroadcastInDim { .. },
            Atom::Var(x),
        ) = (&e.prim, &e.inputs[0])
        {
            // A row value reshaped or broadcast (see `row_op`): the same row register, or,
            // broadcast back over the domain, the row register spread over its rows.
            let mut r = reg_of[&x.id];
            if v.aval.shape == g.domain && x.aval.shape != g.domain {
                let dst = fresh();
                body.push(Instr::Expand { a: r, dst });
                r = dst;
            }
            reg_of.insert(v.id, r);
            if escapes[v.id] {
                outputs.push(output(r, v));
                outs.push(v.id);
            }
            continue;
        }
        let regs: Vec<usize> = e
            .inputs
            .iter()
            .map(|a| match a {
                // A virtual broadcast: read its operand through a broadcast view.
                Atom::Var(v) if virt[v.id].is_some() => {
                    let b = &j.eqns[virt[v.id].expect("virtual")];
                    let Prim::BroadcastInDim { dims, .. } = &b.prim else {
                        unreachable!("virtual values are broadcasts")
                    };
                    match &b.inputs[0] {
                        x @ Atom::Lit(_) => operand(x, None, &mut fresh),
                        x @ Atom::Var(xv) if xv.aval.size() == 1 => {
                            operand(x, Some(View::Scalar), &mut fresh)
                        }
                        x @ Atom::Var(xv) => {
                            let strides = broadcast_strides(&xv.aval.shape, dims, g.domain.len());
                            operand(x, Some(View::Strided(strides)), &mut fresh)
                        }
                    }
                }
                a => operand(a, None, &mut fresh),
            })
            .collect();
        let dst = fresh();
        body.push(match &e.prim {
            Prim::Select => Instr::Select { p: regs[0], t: regs[1], f: regs[2], dst },
            Prim::Clamp => Instr::Clamp { lo: regs[0], x: regs[1], hi: regs[2], dst },
            p if regs.len() == 1 => Instr::Unary { prim: p.clone(), a: regs[0], dst },
            p => Instr::Binary { prim: p.clone(), a: regs[0], b: regs[1], dst },
        });
        reg_of.insert(v.id, dst);
        if escapes[v.id] {
            outputs.push(output(dst, v));
            outs.push(v.id);
        }
    }
    let mut prog = FusedProgram {
        dtype: g.dtype,
        domain: g.domain.clone(),
        inner: g.inner.unwrap_or(1),
        views,
        prologue,
        body,
        outputs,
        n_regs,
    };
    prog.hoist_invariants();
    prog.fuse_mul_add();
    prog.pair_gelu();
    Step::Fused { prog, ins, outs, ops, donatable, producer: None }
}

impl Step {
    /// The variables the step reads (a merged contraction's inputs included).
    fn reads(&self) -> Vec<usize> {
        match self {
            Step::Kernel { ins, .. }
            | Step::TransposedDot { ins, .. }
            | Step::ConvFilter { ins, .. }
            | Step::Fused { ins, producer: None, .. } => slot_vars(ins).collect(),
            Step::Fused { ins, producer: Some(p), .. } => {
                slot_vars(ins).chain(slot_vars(&p.ins)).collect()
            }
            Step::Alias { input, .. } => vec![*input],
        }
    }

    /// The variables the step defines.
    fn writes(&self) -> &[usize] {
        match self {
            Step::Kernel { outs, .. }
            | Step::ConvFilter { outs, .. }
            | Step::Fused { outs, .. } => outs,
            Step::Alias { out, .. } | Step::TransposedDot { out, .. } => std::slice::from_ref(out),
        }
    }
}

fn slot_vars(slots: &[Slot]) -> impl Iterator<Item = usize> + '_ {
    slots.iter().filter_map(|x| match x {
        Slot::Var(v) => Some(*v),
        Slot::Lit(_) => None,
    })
}

/// The step that writes each variable, and how many step inputs read it.
fn defs_and_uses(steps: &[Step]) -> (HashMap<usize, usize>, HashMap<usize, usize>) {
    let mut def: HashMap<usize, usize> = HashMap::new();
    let mut uses: HashMap<usize, usize> = HashMap::new();
    for (s, step) in steps.iter().enumerate() {
        for v in step.reads() {
            *uses.entry(v).or_default() += 1;
        }
        for &v in step.writes() {
            def.insert(v, s);
        }
    }
    (def, uses)
}

/// The steps that read each variable, in order (a step reading it twice is listed twice).
fn readers_of(steps: &[Step]) -> HashMap<usize, Vec<usize>> {
    let mut readers: HashMap<usize, Vec<usize>> = HashMap::new();
    for (s, step) in steps.iter().enumerate() {
        for v in step.reads() {
            readers.entry(v).or_default().push(s);
        }
    }
    readers
}

/// Rewrites `transpose(dot_general(..))`, where the product (a float kernel step with
/// batch dims) is read by nothing else, into one [`Step::TransposedDot`] at the product's
/// place, when the transposed output keeps each side's free dims contiguous (the attention
/// heads' outputs moved back behind the sequence: no pass over the output in between).
fn fold_product_transposes(steps: Vec<Step>, is_out: &[bool], avals: &[Option<Aval>]) -> Vec<Step> {
    let (def, uses) = defs_and_uses(&steps);
    let mut steps: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    for t in 0..steps.len() {
        let Some(Step::Kernel { prim: Prim::Transpose { perm }, ins, outs, .. }) = &steps[t] else {
            continue;
        };
        let [Slot::Var(c)] = ins[..] else { continue };
        let Some(&ds) = def.get(&c) else { continue };
        let Some(Step::Kernel { prim, ins: dins, out_avals, .. }) = &steps[ds] else { continue };
        let Prim::DotGeneral { lhs_contract, lhs_batch, .. } = prim else { continue };
        let Some(Some(lhs)) = dins.first().and_then(|s| match s {
            Slot::Var(v) => avals.get(*v),
            Slot::Lit(_) => None,
        }) else {
            continue;
        };
        let out_aval = &out_avals[0];
        let (nb, nl) = (lhs_batch.len(), lhs.ndim() - lhs_contract.len() - lhs_batch.len());
        if uses.get(&c) != Some(&1)
            || is_out[c]
            || !matches!(out_aval.dtype, DType::F32 | DType::F64)
            || !cpu::dot_writes_transposed(&out_aval.shape, (nb, nl), perm)
        {
            continue;
        }
        let step = Step::TransposedDot {
            prim: prim.clone(),
            ins: dins.clone(),
            out: outs[0],
            out_aval: out_aval.clone(),
            perm: perm.clone(),
        };
        steps[t] = None;
        steps[ds] = Some(step);
    }
    steps.into_iter().flatten().collect()
}

/// Rewrites each convolution kernel gradient that the transpose rule emits,
/// `transpose[1.., 0, r-1](conv(transpose[r-1, 1.., 0](x), transpose[1.., 0, r-1](g)))`,
/// into one [`Step::ConvFilter`] on `x` and `g`, where the intermediates are read by
/// nothing else. It runs where the last transpose ran (`x` and `g` exist earlier). Saves
/// the three transposed copies and runs the product over the forward im2col.
fn fold_filter_grads(steps: Vec<Step>, is_out: &[bool]) -> Vec<Step> {
    let (def, uses) = defs_and_uses(&steps);
    // The single-use, non-output intermediate `v` defined by a one-input transpose with
    // permutation `want`: (its step, the transpose's input).
    let transposed = |steps: &[Option<Step>], v: usize, want: &[usize]| -> Option<(usize, Slot)> {
        let s = *def.get(&v)?;
        let Some(Step::Kernel { prim: Prim::Transpose { perm }, ins, .. }) = &steps[s] else {
            return None;
        };
        let [Slot::Var(x)] = ins[..] else { return None };
        (perm == want && uses.get(&v) == Some(&1) && !is_out[v]).then_some((s, Slot::Var(x)))
    };
    let mut steps: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    for t in 0..steps.len() {
        let Some(Step::Kernel { prim: Prim::Transpose { perm }, ins, outs, out_avals }) = &steps[t]
        else {
            continue;
        };
        let r = perm.len();
        if r < 3 || !matches!(out_avals[0].dtype, DType::F32 | DType::F64) {
            continue;
        }
        // [1, .., r-2, 0, r-1] (spatial first) and [r-1, 1, .., r-2, 0] (batch <-> feature).
        let spatial_first: Vec<usize> = (1..r - 1).chain([0, r - 1]).collect();
        let swapped: Vec<usize> = [r - 1].into_iter().chain(1..r - 1).chain([0]).collect();
        let [Slot::Var(c)] = ins[..] else { continue };
        if *perm != spatial_first || uses.get(&c) != Some(&1) || is_out[c] {
            continue;
        }
        let Some(&cs) = def.get(&c) else { continue };
        let Some(Step::Kernel {
            prim: Prim::Conv { strides, padding, lhs_dilation, rhs_dilation, feature_group_count },
            ins: cins,
            out_avals: cav,
            ..
        }) = &steps[cs]
        else {
            continue;
        };
        if *feature_group_count != 1 || lhs_dilation.iter().any(|&d| d != 1) {
            continue;
        }
        let [Slot::Var(l), Slot::Var(rv)] = cins[..] else { continue };
        let (Some((ls, x)), Some((rs, g))) =
            (transposed(&steps, l, &swapped), transposed(&steps, rv, &spatial_first))
        else {
            continue;
        };
        let step = Step::ConvFilter {
            ins: vec![x, g],
            outs: outs.clone(),
            // The kernel-gradient convolution's window strides are the forward kernel
            // dilation and its kernel dilation the forward strides.
            strides: rhs_dilation.clone(),
            padding: padding.clone(),
            rhs_dilation: strides.clone(),
            k_sp: cav[0].shape[1..r - 1].to_vec(),
        };
        for s in [ls, rs, cs] {
            steps[s] = None;
        }
        steps[t] = Some(step);
    }
    steps.into_iter().flatten().collect()
}

/// Makes each float matrix product or convolution whose output is read by one fused
/// elementwise group only (full view, same shape, no reduction) that group's producer: the
/// group then runs as the contraction's epilogue, on each output block while it is in
/// cache, and the product is never a separate buffer. The merged step takes the group's
/// place (a group merges with one contraction at most).
fn merge_epilogues(steps: Vec<Step>, is_out: &[bool]) -> Vec<Step> {
    let readers = readers_of(&steps);
    // (contraction step, group step, group input)
    let mut merges: Vec<(usize, usize, usize)> = Vec::new();
    for (a, step) in steps.iter().enumerate() {
        let Step::Kernel { prim, outs, out_avals, .. } = step else { continue };
        if !cpu::takes_epilogue(prim) || outs.len() != 1 || !is_float(out_avals[0].dtype) {
            continue;
        }
        let d = outs[0];
        let Some([b]) = readers.get(&d).map(Vec::as_slice) else { continue };
        let Step::Fused { prog, ins, producer: None, .. } = &steps[*b] else { continue };
        let uses: Vec<usize> =
            (0..ins.len()).filter(|&k| matches!(ins[k], Slot::Var(v) if v == d)).collect();
        if is_out[d]
            || uses.len() != 1
            || prog.views[uses[0]] != View::Full
            || prog.dtype != out_avals[0].dtype
            || prog.domain != out_avals[0].shape
            || prog.row_wise()
            || merges.iter().any(|m| m.1 == *b)
        {
            continue;
        }
        merges.push((a, *b, uses[0]));
    }
    let mut steps: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    for (a, b, input) in merges {
        let Some(Step::Kernel { prim, ins, mut out_avals, .. }) = steps[a].take() else {
            unreachable!("a contraction step")
        };
        let Some(Step::Fused { prog, ins: fins, outs, ops, donatable, .. }) = steps[b].take()
        else {
            unreachable!("a fused step")
        };
        let producer = Producer { prim, ins, out_aval: out_avals.remove(0), input };
        // The merged step runs where the group ran: the contraction's inputs are ready
        // (they were at `a`), so are the group's other inputs, and no step in between
        // reads the contraction's output (the group is its only reader).
        steps[b] = Some(Step::Fused {
            prog,
            ins: fins,
            outs,
            ops,
            donatable,
            producer: Some(Box::new(producer)),
        });
    }
    steps.into_iter().flatten().collect()
}

/// Product of the trailing dims a reduction over `axes` keeps, if `axes` are leading dims
/// of `shape` (at least one reduced, at least one kept).
fn prefix_reduction(axes: &[usize], shape: &[usize]) -> Option<usize> {
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    let k = sorted.len();
    (k > 0 && k < shape.len() && sorted.iter().enumerate().all(|(i, &a)| a == i))
        .then(|| shape[k..].iter().product())
}

/// Moves reductions over the leading axes (`sum(dy, axes=[0, 1])`: the gradient of a bias
/// or of a layer norm's scale) into a fused group, as [`Output::ColReduce`]s folded in
/// while each tile of rows is in cache:
/// - into the group that computes the reduced value; when nothing else reads the value,
///   the group no longer writes it;
/// - else into the first group after the reduction that reads the value whole (a bias
///   gradient `sum(dy)` where `dy` also feeds the backward pass of an activation or a
///   layer norm), if nothing reads the reduction's result before that group runs.
///
/// A group that is a contraction's epilogue takes none (it sees arbitrary blocks, not
/// whole rows), nor does one whose rows (the kept columns) do not fit a tile or differ
/// from those of its own row reductions.
fn absorb_column_reductions(
    steps: Vec<Step>,
    is_out: &[bool],
    avals: &[Option<Aval>],
) -> Vec<Step> {
    let (def, mut uses) = defs_and_uses(&steps);
    let readers = readers_of(&steps);
    let mut steps: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    for k in 0..steps.len() {
        let Some(Step::Kernel { prim, ins, outs, out_avals }) = &steps[k] else { continue };
        let (Some((kind, axes)), [Slot::Var(v)], [r]) = (reduce_kind(prim), &ins[..], &outs[..])
        else {
            continue;
        };
        let (v, r, name, dtype) = (*v, *r, prim.name(), out_avals[0].dtype);
        let Some(cols) = avals[v].as_ref().and_then(|a| prefix_reduction(axes, &a.shape)) else {
            continue;
        };
        if !(1..=fused::TILE).contains(&cols) {
            continue;
        }
        let fits = |step: &Option<Step>| match step {
            Some(Step::Fused { prog, producer: None, .. }) => {
                prog.dtype == dtype && (!prog.row_wise() || prog.inner == cols)
            }
            _ => false,
        };
        // (group step, register of the value, the value's output index in the group)
        let mut target = None;
        if let Some(&f) = def.get(&v)
            && fits(&steps[f])
            && let Some(Step::Fused { prog, outs: fouts, .. }) = &steps[f]
            && let Some(o) = fouts.iter().position(|&w| w == v)
            && let Output::Elementwise { reg, bool_out: false } = prog.outputs[o]
        {
            target = Some((f, reg, Some(o)));
        }
        let first_use = readers.get(&r).and_then(|s| s.first().copied()).unwrap_or(usize::MAX);
        let later_reader = || {
            let candidates = readers.get(&v)?.iter().take_while(|&&f| f < first_use);
            candidates.filter(|&&f| f > k && fits(&steps[f])).find_map(|&f| {
                let Some(Step::Fused { prog, ins: fins, .. }) = &steps[f] else { return None };
                prog.body.iter().find_map(|i| match i {
                    Instr::Load { input, dst }
                        if matches!(fins[*input], Slot::Var(w) if w == v)
                            && prog.views[*input] == View::Full =>
                    {
                        Some((f, *dst, None))
                    }
                    _ => None,
                })
            })
        };
        let target = target.or_else(later_reader);
        let Some((f, reg, written)) = target else { continue };
        let Some(Step::Fused { prog, outs: fouts, ops, .. }) = &mut steps[f] else {
            unreachable!("a fused step")
        };
        prog.inner = cols;
        prog.outputs.push(Output::ColReduce { reg, kind });
        fouts.push(r);
        ops.push(name);
        let left = uses.get_mut(&v).expect("the reduction reads it");
        *left -= 1;
        if let Some(o) = written
            && *left == 0
            && !is_out[v]
        {
            prog.outputs.remove(o);
            fouts.remove(o);
        }
        steps[k] = None;
    }
    steps.into_iter().flatten().collect()
}

/// Element strides of a broadcast operand along each of `rank` output dims (0 where it
/// is broadcast).
fn broadcast_strides(in_shape: &[usize], dims: &[usize], rank: usize) -> Vec<usize> {
    let mut in_strides = vec![1usize; in_shape.len()];
    for k in (0..in_shape.len().saturating_sub(1)).rev() {
        in_strides[k] = in_strides[k + 1] * in_shape[k + 1];
    }
    let mut strides = vec![0usize; rank];
    for (k, &d) in dims.iter().enumerate() {
        if in_shape[k] != 1 {
            strides[d] = in_strides[k];
        }
    }
    strides
}

/// How long a [`keep_awake`] spinner waits without work before it lets its thread sleep:
/// longer than the serial stretches of a train step (a spinner that left early costs only
/// the wake-ups it was saving; measured on the transformer step, in-process alternated:
/// no spinner 107/106/97 ms, 0.1 ms 105/104/96, 1 ms 100/98/91, 100 ms 98/97/95).
const SPIN_IDLE: Duration = Duration::from_millis(1);

/// Spins on a pool thread until `done`, running any job the executing thread forks (so
/// it never sleeps between kernels). On the executing thread itself (`owner`: it can pick
/// this job up while it waits inside a join) it returns at once, since `done` is only set
/// after that thread finishes. It also returns after [`SPIN_IDLE`] without work: a
/// spinner stolen by a thread that waits inside another run's kernel blocks that kernel
/// until it returns, so it must not wait on `done` alone (with several concurrent runs
/// on three or more threads, two such waits could block each other forever).
fn keep_awake(owner: Option<usize>, done: &AtomicBool) {
    if rayon::current_thread_index() == owner {
        return;
    }
    let mut idle_since = Instant::now();
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => idle_since = Instant::now(),
            _ if idle_since.elapsed() > SPIN_IDLE => return,
            _ => std::hint::spin_loop(),
        }
    }
}

/// Sets its flag when dropped: ends the [`keep_awake`] spinners of a run.
struct Release<'a>(&'a AtomicBool);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Whether `KILN_JIT_PROFILE` is set: executables then print each step's time to stderr.
fn profiling() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("KILN_JIT_PROFILE").is_some_and(|v| v != "0"))
}

impl Executable {
    /// One step, as printed by `Display`.
    fn step_line(&self, i: usize) -> String {
        let names = |vs: &[usize]| vs.iter().map(|v| VarName(*v).to_string()).collect::<Vec<_>>();
        let slots = |ss: &[Slot]| {
            ss.iter()
                .map(|s| match s {
                    Slot::Var(v) => VarName(*v).to_string(),
                    Slot::Lit(l) => format!("{:?}", l).chars().take(24).collect(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        match &self.steps[i] {
            Step::Kernel { prim, ins, outs, .. } => {
                format!("{} = kernel {} {}", names(outs).join(" "), prim.name(), slots(ins))
            }
            Step::Alias { input, out } => format!("{} = alias {}", VarName(*out), VarName(*input)),
            Step::TransposedDot { ins, out, perm, .. } => {
                format!("{} = dot_general {} -> transpose {perm:?}", VarName(*out), slots(ins))
            }
            Step::ConvFilter { ins, outs, .. } => {
                format!("{} = conv_filter_grad {}", names(outs).join(" "), slots(ins))
            }
            Step::Fused { prog, ins, outs, ops, producer, .. } => format!(
                "{} = fused[{}{:?}{}] {{{}{}}} {}",
                names(outs).join(" "),
                prog.dtype,
                prog.domain,
                if prog.inner > 1 { format!(" reduce inner {}", prog.inner) } else { "".into() },
                match producer {
                    Some(p) => format!("{} {} -> ", p.prim.name(), slots(&p.ins)),
                    None => String::new(),
                },
                ops.join(", "),
                slots(ins)
            ),
        }
    }
}

impl fmt::Display for Executable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "executable: {} inputs, {} steps ({} fused), peak intermediates {} bytes",
            self.in_vars.len(),
            self.steps.len(),
            self.num_fused(),
            self.peak_bytes
        )?;
        for i in 0..self.steps.len() {
            write!(f, "  {i}: {}", self.step_line(i))?;
            let freed: Vec<String> =
                self.free_after[i].iter().map(|v| VarName(*v).to_string()).collect();
            if freed.is_empty() {
                writeln!(f)?;
            } else {
                writeln!(f, "    ; free {}", freed.join(" "))?;
            }
        }
        let outs: Vec<String> = self
            .outs
            .iter()
            .map(|s| match s {
                Slot::Var(v) => VarName(*v).to_string(),
                Slot::Lit(l) => format!("{l:?}"),
            })
            .collect();
        write!(f, "  out ({})", outs.join(" "))
    }
}
