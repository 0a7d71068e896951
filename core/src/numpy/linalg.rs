//! Linear algebra: `matmul` (numpy semantics, batch dims broadcast), `dot`, `outer`,
//! `tensordot`, `einsum`, `diagonal`, `trace`. Contractions lower to one
//! `lax::dot_general` each, with batch dims as dot_general batch dims (no transposes for
//! the usual layouts).

use super::ops::{ArrayOrScalar, Bin};
use super::{IntoIsizes, norm_axes, ok, rename, shape_err};
use crate::array::Array;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::lax;
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};

fn promote2(a: &Array, b: &Array) -> (Array, Array) {
    let d = DType::promote(a.dtype(), b.dtype());
    (lax::convert_element_type(a, d), lax::convert_element_type(b, d))
}

fn dot_err(op: &str, a: &Array, b: &Array) -> Error {
    shape_err(op, format!("shapes {:?} and {:?} are not aligned", a.shape(), b.shape()), &[a, b])
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Batch(usize),
    M,
    N,
}

impl Array {
    /// Matrix product with numpy's `matmul` semantics: 1-D operands are vectors (1-D x 1-D
    /// is an inner product), N-D operands are stacks of matrices in the last two dims, and
    /// the leading (batch) dims broadcast. Dtypes are promoted.
    ///
    /// ```
    /// use kiln::Array;
    /// let a = Array::ones([5, 2, 3]);
    /// let b = Array::ones([3, 4]);
    /// assert_eq!(a.matmul(&b).shape(), &[5, 2, 4]);
    /// let v = Array::ones([3]);
    /// assert_eq!(a.matmul(&v).shape(), &[5, 2]);
    /// assert_eq!(v.matmul(&v).to_vec::<f32>(), vec![3.0]);
    /// ```
    #[track_caller]
    pub fn matmul(&self, other: &Array) -> Array {
        ok(self.try_matmul(other))
    }

    /// Fallible [`Array::matmul`].
    pub fn try_matmul(&self, other: &Array) -> Result<Array> {
        let (a0, b0) = (self, other);
        let (na, nb) = (a0.ndim(), b0.ndim());
        if na == 0 || nb == 0 {
            return Err(shape_err(
                "matmul",
                format!(
                    "operands must be at least 1-D, got shapes {:?} and {:?}",
                    a0.shape(),
                    b0.shape()
                ),
                &[a0, b0],
            ));
        }
        let (a, b) = promote2(a0, b0);
        let (sa, sb) = (a.shape(), b.shape());
        let dg = |a: &Array, b: &Array, lc: &[usize], rc: &[usize], lb: &[usize], rb: &[usize]| {
            lax::try_dot_general(a, b, ((lc, rc), (lb, rb))).map_err(|e| rename(e, "matmul"))
        };
        let kb = if nb == 1 { 0 } else { nb - 2 };
        if sa[na - 1] != sb[kb] {
            return Err(dot_err("matmul", a0, b0));
        }
        if na == 1 || nb == 1 {
            return dg(&a, &b, &[na - 1], &[kb], &[], &[]);
        }
        // Both at least 2-D: classify the (right-aligned) batch positions.
        let (ba, bb) = (&sa[..na - 2], &sb[..nb - 2]);
        let nbat = ba.len().max(bb.len());
        let (oa, ob) = (nbat - ba.len(), nbat - bb.len());
        let (mut shared, mut a_only, mut b_only) = (vec![], vec![], vec![]);
        let (mut a_sq, mut b_sq) = (vec![], vec![]);
        for i in 0..nbat {
            let da = (i >= oa).then(|| ba[i - oa]);
            let db = (i >= ob).then(|| bb[i - ob]);
            match (da, db) {
                (Some(x), Some(y)) if x == y => shared.push(i),
                (Some(1), Some(_)) => {
                    a_sq.push(i - oa);
                    b_only.push(i);
                }
                (Some(_), Some(1)) => {
                    b_sq.push(i - ob);
                    a_only.push(i);
                }
                (None, _) => b_only.push(i),
                (_, None) => a_only.push(i),
                _ => {
                    return Err(shape_err(
                        "matmul",
                        format!(
                            "cannot broadcast the batch dims of shapes {:?} and {:?}",
                            a0.shape(),
                            b0.shape()
                        ),
                        &[a0, b0],
                    ));
                }
            }
        }
        let a = lax::squeeze(&a, &a_sq);
        let b = lax::squeeze(&b, &b_sq);
        // Axis of batch position `i` in the squeezed operands.
        let pos_a = |i: usize| (oa..i).filter(|&j| !a_sq.contains(&(j - oa))).count();
        let pos_b = |i: usize| (ob..i).filter(|&j| !b_sq.contains(&(j - ob))).count();
        let lb: Vec<usize> = shared.iter().map(|&i| pos_a(i)).collect();
        let rb: Vec<usize> = shared.iter().map(|&i| pos_b(i)).collect();
        let (ka, kb) = (a.ndim() - 1, b.ndim() - 2);
        let out = dg(&a, &b, &[ka], &[kb], &lb, &rb)?;
        let mut labels: Vec<Label> = shared.iter().map(|&i| Label::Batch(i)).collect();
        labels.extend(a_only.iter().map(|&i| Label::Batch(i)));
        labels.push(Label::M);
        labels.extend(b_only.iter().map(|&i| Label::Batch(i)));
        labels.push(Label::N);
        let want = (0..nbat).map(Label::Batch).chain([Label::M, Label::N]);
        let perm: Vec<usize> =
            want.map(|l| labels.iter().position(|&x| x == l).expect("every label")).collect();
        Ok(lax::transpose(&out, &perm))
    }

    /// numpy's `dot`: 0-d operands multiply; otherwise contracts the last dim of `self`
    /// with the last dim of a 1-D `other` or the second-to-last dim of an N-D `other`
    /// (no batch broadcasting: the result has `self`'s free dims, then `other`'s).
    #[track_caller]
    pub fn dot(&self, other: &Array) -> Array {
        ok(self.try_dot(other))
    }

    /// Fallible [`Array::dot`].
    pub fn try_dot(&self, other: &Array) -> Result<Array> {
        let (na, nb) = (self.ndim(), other.ndim());
        if na == 0 || nb == 0 {
            return Bin::Mul
                .apply(ArrayOrScalar::Array(self.clone()), ArrayOrScalar::Array(other.clone()))
                .map_err(|e| rename(e, "dot"));
        }
        let kb = if nb == 1 { 0 } else { nb - 2 };
        if self.shape()[na - 1] != other.shape()[kb] {
            return Err(dot_err("dot", self, other));
        }
        let (a, b) = promote2(self, other);
        lax::try_dot_general(&a, &b, ((&[na - 1], &[kb]), (&[], &[]))).map_err(|e| rename(e, "dot"))
    }

    /// Outer product of the flattened operands: `out[i, j] = a[i] * b[j]`.
    pub fn outer(&self, other: &Array) -> Array {
        let a = lax::reshape(self, &[self.size(), 1]);
        let b = other.flatten();
        ok(Bin::Mul.apply(ArrayOrScalar::Array(a), ArrayOrScalar::Array(b)))
    }

    /// numpy's `tensordot`: contracts the last `n` dims of `self` with the first `n` of
    /// `other` (`axes = n`), or the listed pairs (`axes = (a_axes, b_axes)`). The result has
    /// the free dims of `self`, then those of `other`.
    ///
    /// ```
    /// use kiln::Array;
    /// let a = Array::ones([2, 3, 4]);
    /// let b = Array::ones([3, 4, 5]);
    /// assert_eq!(a.tensordot(&b, 2).shape(), &[2, 5]);
    /// assert_eq!(a.tensordot(&b, ([1], [0])).shape(), &[2, 4, 4, 5]);
    /// ```
    #[track_caller]
    pub fn tensordot(&self, other: &Array, axes: impl Into<TensordotAxes>) -> Array {
        ok(self.try_tensordot(other, axes))
    }

    /// Fallible [`Array::tensordot`].
    pub fn try_tensordot(&self, other: &Array, axes: impl Into<TensordotAxes>) -> Result<Array> {
        let (na, nb) = (self.ndim(), other.ndim());
        let (la, lb) = match axes.into() {
            TensordotAxes::Last(n) => {
                if n > na || n > nb {
                    return Err(shape_err(
                        "tensordot",
                        format!(
                            "cannot contract {n} dims of shapes {:?} and {:?}",
                            self.shape(),
                            other.shape()
                        ),
                        &[self, other],
                    ));
                }
                ((na - n..na).collect::<Vec<_>>(), (0..n).collect::<Vec<_>>())
            }
            TensordotAxes::Pairs(a, b) => {
                if a.len() != b.len() {
                    return Err(shape_err(
                        "tensordot",
                        format!("axes {a:?} and {b:?} have different lengths"),
                        &[self, other],
                    ));
                }
                (norm_axes("tensordot", &a, self)?, norm_axes("tensordot", &b, other)?)
            }
        };
        if la.iter().zip(&lb).any(|(&i, &j)| self.shape()[i] != other.shape()[j]) {
            return Err(shape_err(
                "tensordot",
                format!(
                    "dims {la:?} of shape {:?} do not match dims {lb:?} of shape {:?}",
                    self.shape(),
                    other.shape()
                ),
                &[self, other],
            ));
        }
        let (a, b) = promote2(self, other);
        lax::try_dot_general(&a, &b, ((&la, &lb), (&[], &[]))).map_err(|e| rename(e, "tensordot"))
    }

    /// The diagonal of the last two dims (`[..., n, m] -> [..., min(n, m)]`).
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::arange(0.0, 9.0, 1.0).reshape([3, 3]);
    /// assert_eq!(x.diagonal().to_vec::<f32>(), vec![0.0, 4.0, 8.0]);
    /// assert_eq!(x.trace().to_vec::<f32>(), vec![12.0]);
    /// ```
    #[track_caller]
    pub fn diagonal(&self) -> Array {
        ok(self.try_diagonal())
    }

    /// Fallible [`Array::diagonal`].
    pub fn try_diagonal(&self) -> Result<Array> {
        let nd = self.ndim();
        if nd < 2 {
            return Err(shape_err(
                "diagonal",
                format!("needs at least 2 dimensions, got shape {:?}", self.shape()),
                &[self],
            ));
        }
        let k = self.shape()[nd - 2].min(self.shape()[nd - 1]);
        let mut limit = self.shape().to_vec();
        limit[nd - 2] = k;
        limit[nd - 1] = k;
        let x = lax::slice(self, &vec![0; nd], &limit, None);
        Ok(diag(&x, nd - 2, nd - 1))
    }

    /// The sum of the diagonal of the last two dims.
    #[track_caller]
    pub fn trace(&self) -> Array {
        ok(self.try_diagonal()).sum_axes([-1], false)
    }
}

/// The diagonal over dims `p < q` (of equal size) of `x`: dim `q` is removed.
fn diag(x: &Array, p: usize, q: usize) -> Array {
    let n = x.shape()[p];
    let mask = lax::eq(&lax::iota(DType::I32, &[n, n], 0), &lax::iota(DType::I32, &[n, n], 1));
    let mask = lax::broadcast_in_dim(&mask, x.shape(), &[p, q]);
    let y = lax::select(&mask, x, &lax::zeros_like(x));
    lax::reduce_sum(&y, &[q])
}

/// The contracted axes of [`Array::tensordot`]: the last `n` of the first operand with the
/// first `n` of the second (`usize`), or explicit pairs (`(a_axes, b_axes)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TensordotAxes {
    /// Contract the last `n` dims of `a` with the first `n` of `b`.
    Last(usize),
    /// Contract `a`'s dims `.0[i]` with `b`'s dims `.1[i]`.
    Pairs(Vec<isize>, Vec<isize>),
}

impl From<usize> for TensordotAxes {
    fn from(n: usize) -> TensordotAxes {
        TensordotAxes::Last(n)
    }
}

impl<A: IntoIsizes, B: IntoIsizes> From<(A, B)> for TensordotAxes {
    fn from((a, b): (A, B)) -> TensordotAxes {
        TensordotAxes::Pairs(a.into_isizes(), b.into_isizes())
    }
}

// ---- einsum ------------------------------------------------------------------------------

/// Labels of ellipsis dims start here (letters are their code points).
const ELLIPSIS: u32 = 1 << 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tok {
    Letter(char),
    Ellipsis,
}

fn tokens(s: &str, spec: &str, xs: &[&Array]) -> Result<Vec<Tok>> {
    let mut out = vec![];
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("...") {
            if out.contains(&Tok::Ellipsis) {
                return Err(shape_err("einsum", format!("two '...' in \"{s}\" of \"{spec}\""), xs));
            }
            out.push(Tok::Ellipsis);
            rest = r;
        } else if c.is_ascii_alphabetic() {
            out.push(Tok::Letter(c));
            rest = &rest[1..];
        } else {
            return Err(shape_err(
                "einsum",
                format!("invalid character {c:?} in subscripts \"{spec}\""),
                xs,
            ));
        }
    }
    Ok(out)
}

/// One operand during contraction: the array and the label of each of its dims.
#[derive(Clone)]
struct Term {
    x: Array,
    labels: Vec<u32>,
}

impl Term {
    /// Sums out the labels not in `keep`.
    fn sum_except(self, keep: &HashSet<u32>) -> Term {
        let axes: Vec<usize> =
            (0..self.labels.len()).filter(|&i| !keep.contains(&self.labels[i])).collect();
        if axes.is_empty() {
            return self;
        }
        let labels = self.labels.iter().filter(|l| keep.contains(l)).copied().collect();
        Term { x: lax::reduce_sum(&self.x, &axes), labels }
    }
}

/// Contracts two terms with one `dot_general`; labels in `keep` survive.
fn contract(l: Term, r: Term, keep: &HashSet<u32>) -> Term {
    let mut keep_l = keep.clone();
    keep_l.extend(&r.labels);
    let mut keep_r = keep.clone();
    keep_r.extend(&l.labels);
    let (l, r) = (l.sum_except(&keep_l), r.sum_except(&keep_r));
    let shared: Vec<u32> = l.labels.iter().filter(|x| r.labels.contains(x)).copied().collect();
    let batch: Vec<u32> = shared.iter().filter(|x| keep.contains(x)).copied().collect();
    let summed: Vec<u32> = shared.iter().filter(|x| !keep.contains(x)).copied().collect();
    let pos = |t: &Term, x: &u32| t.labels.iter().position(|y| y == x).expect("label present");
    let lb: Vec<usize> = batch.iter().map(|x| pos(&l, x)).collect();
    let rb: Vec<usize> = batch.iter().map(|x| pos(&r, x)).collect();
    let lc: Vec<usize> = summed.iter().map(|x| pos(&l, x)).collect();
    let rc: Vec<usize> = summed.iter().map(|x| pos(&r, x)).collect();
    let x = lax::dot_general(&l.x, &r.x, ((&lc, &rc), (&lb, &rb)));
    let mut labels = batch.clone();
    labels.extend(l.labels.iter().filter(|x| !shared.contains(x)));
    labels.extend(r.labels.iter().filter(|x| !shared.contains(x)));
    Term { x, labels }
}

/// Einstein summation over any number of operands (numpy's `einsum`).
///
/// Subscripts are letters, one per dim, with at most one `...` per operand standing for
/// its remaining dims (broadcast across operands like numpy). A letter repeated within one
/// operand takes the diagonal (`"ii->i"`); letters missing from the output are summed. With
/// no `->`, the output is the `...` dims followed by the letters used once, in alphabetical
/// order. Operands are contracted pairwise (smallest intermediate first), each pair with one
/// `lax::dot_general` whose batch dims are the shared letters that must survive. Dtypes are
/// promoted.
///
/// ```
/// use kiln::{Array, numpy::einsum};
/// let a = Array::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]);
/// let b = Array::eye(2);
/// assert_eq!(einsum("ij,jk->ik", &[&a, &b]).to_vec::<f32>(), vec![1.0, 2.0, 3.0, 4.0]);
/// assert_eq!(einsum("ii->", &[&a]).to_vec::<f32>(), vec![5.0]);
/// assert_eq!(einsum("ij->ji", &[&a]).to_vec::<f32>(), vec![1.0, 3.0, 2.0, 4.0]);
/// assert_eq!(einsum("...ij->...", &[&a]).shape(), &[] as &[usize]);
/// ```
#[track_caller]
pub fn einsum<A: Borrow<Array>>(subscripts: &str, operands: &[A]) -> Array {
    ok(try_einsum(subscripts, operands))
}

/// Fallible [`einsum`].
pub fn try_einsum<A: Borrow<Array>>(subscripts: &str, operands: &[A]) -> Result<Array> {
    let xs: Vec<&Array> = operands.iter().map(|x| x.borrow()).collect();
    let spec: String = subscripts.chars().filter(|c| !c.is_whitespace()).collect();
    let err = |msg: String| shape_err("einsum", msg, &xs);
    let (lhs, rhs) = match spec.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (spec.as_str(), None),
    };
    let terms_s: Vec<&str> = lhs.split(',').collect();
    if terms_s.len() != xs.len() {
        return Err(err(format!(
            "subscripts \"{spec}\" name {} operands but {} were given",
            terms_s.len(),
            xs.len()
        )));
    }
    if xs.is_empty() {
        return Err(err("needs at least one operand".into()));
    }
    let toks: Vec<Vec<Tok>> =
        terms_s.iter().map(|s| tokens(s, &spec, &xs)).collect::<Result<_>>()?;
    // Number of dims each operand's `...` covers, and the global number.
    let mut ell = Vec::with_capacity(xs.len());
    for (i, (t, x)) in toks.iter().zip(&xs).enumerate() {
        let letters = t.iter().filter(|&&k| k != Tok::Ellipsis).count();
        let has_ell = t.contains(&Tok::Ellipsis);
        if (has_ell && x.ndim() < letters) || (!has_ell && x.ndim() != letters) {
            return Err(err(format!(
                "operand {i} has shape {:?} but subscripts \"{}\" name {letters} dims",
                x.shape(),
                terms_s[i]
            )));
        }
        ell.push(x.ndim() - letters);
    }
    let n_ell = ell.iter().copied().max().unwrap_or(0);
    let mut sizes: HashMap<u32, usize> = HashMap::new();
    let mut terms: Vec<Term> = Vec::with_capacity(xs.len());
    for (i, t) in toks.iter().enumerate() {
        let mut labels = vec![];
        for &k in t {
            match k {
                Tok::Letter(c) => labels.push(c as u32),
                Tok::Ellipsis => {
                    labels.extend((n_ell - ell[i]..n_ell).map(|j| ELLIPSIS + j as u32))
                }
            }
        }
        for (&l, &d) in labels.iter().zip(xs[i].shape()) {
            match sizes.get(&l).copied() {
                None => {
                    sizes.insert(l, d);
                }
                Some(s) if s == d => {}
                Some(s) if l >= ELLIPSIS && (s == 1 || d == 1) => {
                    sizes.insert(l, s.max(d));
                }
                Some(s) => {
                    return Err(err(if l >= ELLIPSIS {
                        format!("cannot broadcast the '...' dims of the operands ({s} vs {d})")
                    } else {
                        format!(
                            "index '{}' has sizes {s} and {d}",
                            char::from_u32(l).unwrap_or('?')
                        )
                    }));
                }
            }
        }
        terms.push(Term { x: (*xs[i]).clone(), labels });
    }
    let ell_labels: Vec<u32> = (0..n_ell).map(|j| ELLIPSIS + j as u32).collect();
    let output: Vec<u32> = match rhs {
        Some(r) => {
            let mut out = vec![];
            for k in tokens(r, &spec, &xs)? {
                match k {
                    Tok::Ellipsis => out.extend(&ell_labels),
                    Tok::Letter(c) => {
                        if !sizes.contains_key(&(c as u32)) {
                            return Err(err(format!("output index '{c}' is not in the inputs")));
                        }
                        if out.contains(&(c as u32)) {
                            return Err(err(format!("output index '{c}' repeated")));
                        }
                        out.push(c as u32);
                    }
                }
            }
            out
        }
        None => {
            let mut counts: HashMap<u32, usize> = HashMap::new();
            for t in &terms {
                for &l in t.labels.iter().filter(|&&l| l < ELLIPSIS) {
                    *counts.entry(l).or_default() += 1;
                }
            }
            let mut once: Vec<u32> =
                counts.into_iter().filter(|&(_, c)| c == 1).map(|(l, _)| l).collect();
            once.sort_unstable();
            let mut out = ell_labels.clone();
            out.extend(once);
            out
        }
    };
    // Promote, drop broadcast size-1 ellipsis dims, take diagonals.
    let dtype = xs.iter().map(|x| x.dtype()).reduce(DType::promote).expect("operands");
    for t in &mut terms {
        t.x = lax::convert_element_type(&t.x, dtype);
        let sq: Vec<usize> = (0..t.labels.len())
            .filter(|&i| t.x.shape()[i] == 1 && sizes[&t.labels[i]] != 1)
            .collect();
        if !sq.is_empty() {
            t.x = lax::squeeze(&t.x, &sq);
            t.labels =
                (0..t.labels.len()).filter(|i| !sq.contains(i)).map(|i| t.labels[i]).collect();
        }
        while let Some((p, q)) = first_repeat(&t.labels) {
            t.x = diag(&t.x, p, q);
            t.labels.remove(q);
        }
    }
    let out_set: HashSet<u32> = output.iter().copied().collect();
    let needed_besides = |terms: &[Term], skip: &[usize]| -> HashSet<u32> {
        let mut s = out_set.clone();
        for (k, t) in terms.iter().enumerate() {
            if !skip.contains(&k) {
                s.extend(&t.labels);
            }
        }
        s
    };
    for i in 0..terms.len() {
        let keep = needed_besides(&terms, &[i]);
        let t = terms[i].clone();
        terms[i] = t.sum_except(&keep);
    }
    while terms.len() > 1 {
        let mut best = (0, 1, usize::MAX);
        for i in 0..terms.len() {
            for j in i + 1..terms.len() {
                let keep = needed_besides(&terms, &[i, j]);
                let mut ls: Vec<u32> = terms[i].labels.clone();
                ls.extend(&terms[j].labels);
                ls.sort_unstable();
                ls.dedup();
                let size: usize =
                    ls.iter().filter(|l| keep.contains(l)).map(|l| sizes[l]).product();
                if size < best.2 {
                    best = (i, j, size);
                }
            }
        }
        let (i, j, _) = best;
        let keep = needed_besides(&terms, &[i, j]);
        let r = terms.remove(j);
        let l = terms.remove(i);
        terms.insert(i, contract(l, r, &keep));
    }
    let t = terms.pop().expect("one term").sum_except(&out_set);
    let perm: Vec<usize> = output
        .iter()
        .map(|l| t.labels.iter().position(|x| x == l).expect("output label present"))
        .collect();
    Ok(lax::transpose(&t.x, &perm))
}

fn first_repeat(labels: &[u32]) -> Option<(usize, usize)> {
    for q in 1..labels.len() {
        if let Some(p) = labels[..q].iter().position(|&l| l == labels[q]) {
            return Some((p, q));
        }
    }
    None
}
