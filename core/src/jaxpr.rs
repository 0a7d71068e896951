//! The intermediate representation: [`Jaxpr`], a typed first-order program in A-normal
//! form (JAX's jaxpr), with type checking, printing and a traceable evaluator.

use crate::array::Array;
use crate::aval::Aval;
use crate::error::{Error, Result};
use crate::prim::Prim;
use crate::rules::abstract_eval;
use crate::trace::bind;
use std::fmt;

/// A variable of a jaxpr: a number unique within its jaxpr, and its type.
#[derive(Clone, Debug)]
pub struct Var {
    /// Index, unique within the jaxpr (dense from 0).
    pub id: usize,
    /// The type of the value it names.
    pub aval: Aval,
}

impl PartialEq for Var {
    fn eq(&self, other: &Var) -> bool {
        self.id == other.id
    }
}
impl Eq for Var {}

/// An operand of an equation: a variable or a literal scalar constant.
#[derive(Clone, Debug)]
pub enum Atom {
    /// A variable.
    Var(Var),
    /// A concrete scalar (0-d array) written inline.
    Lit(Array),
}

impl Atom {
    /// The type of the operand.
    pub fn aval(&self) -> &Aval {
        match self {
            Atom::Var(v) => &v.aval,
            Atom::Lit(a) => a.aval(),
        }
    }
}

/// One equation: `outs = prim inputs`.
#[derive(Clone, Debug)]
pub struct Eqn {
    /// The primitive with its parameters.
    pub prim: Prim,
    /// The operands.
    pub inputs: Vec<Atom>,
    /// The variables bound to the results.
    pub outs: Vec<Var>,
}

/// A typed program: `{ lambda constvars; in_binders. let eqns in outs }`.
#[derive(Clone, Debug, Default)]
pub struct Jaxpr {
    /// Variables bound to constants (values captured from outside, see [`ClosedJaxpr`]).
    pub constvars: Vec<Var>,
    /// The parameters.
    pub in_binders: Vec<Var>,
    /// The equations, in execution order.
    pub eqns: Vec<Eqn>,
    /// The results.
    pub outs: Vec<Atom>,
}

/// A jaxpr together with the values of its constvars.
#[derive(Clone, Debug)]
pub struct ClosedJaxpr {
    /// The program.
    pub jaxpr: Jaxpr,
    /// One value per `jaxpr.constvars` entry.
    pub consts: Vec<Array>,
}

impl Jaxpr {
    /// Number of variables (one past the largest id).
    pub fn num_vars(&self) -> usize {
        let mut n = 0;
        for v in self.constvars.iter().chain(&self.in_binders) {
            n = n.max(v.id + 1);
        }
        for e in &self.eqns {
            for v in &e.outs {
                n = n.max(v.id + 1);
            }
        }
        n
    }

    /// The input types.
    pub fn in_avals(&self) -> Vec<Aval> {
        self.in_binders.iter().map(|v| v.aval.clone()).collect()
    }

    /// The output types.
    pub fn out_avals(&self) -> Vec<Aval> {
        self.outs.iter().map(|a| a.aval().clone()).collect()
    }

    /// Checks that every variable is bound once before use and every equation's output
    /// types are what its primitive's abstract evaluation gives.
    pub fn typecheck(&self) -> Result<()> {
        let mut bound = vec![false; self.num_vars()];
        let bind_var = |bound: &mut Vec<bool>, v: &Var| -> Result<()> {
            if std::mem::replace(&mut bound[v.id], true) {
                return Err(Error::Typecheck(format!("variable {} bound twice", VarName(v.id))));
            }
            Ok(())
        };
        let check_atom = |bound: &Vec<bool>, a: &Atom| -> Result<()> {
            match a {
                Atom::Var(v) if !bound[v.id] => Err(Error::Typecheck(format!(
                    "variable {} used before it is bound",
                    VarName(v.id)
                ))),
                Atom::Lit(l) if l.ndim() != 0 || l.is_tracer() => {
                    Err(Error::Typecheck("literals must be concrete scalars".into()))
                }
                _ => Ok(()),
            }
        };
        for v in self.constvars.iter().chain(&self.in_binders) {
            bind_var(&mut bound, v)?;
        }
        for eqn in &self.eqns {
            for a in &eqn.inputs {
                check_atom(&bound, a)?;
            }
            let in_avals: Vec<Aval> = eqn.inputs.iter().map(|a| a.aval().clone()).collect();
            let out_avals = abstract_eval(&eqn.prim, &in_avals)
                .map_err(|e| Error::Typecheck(format!("in `{}`: {e}", eqn.prim.name())))?;
            if out_avals.len() != eqn.outs.len() {
                return Err(Error::Typecheck(format!(
                    "`{}` produces {} values but binds {}",
                    eqn.prim.name(),
                    out_avals.len(),
                    eqn.outs.len()
                )));
            }
            for (v, aval) in eqn.outs.iter().zip(&out_avals) {
                if &v.aval != aval {
                    return Err(Error::Typecheck(format!(
                        "`{}` produces {aval} but {} is declared {}",
                        eqn.prim.name(),
                        VarName(v.id),
                        v.aval
                    )));
                }
                bind_var(&mut bound, v)?;
            }
        }
        for a in &self.outs {
            check_atom(&bound, a)?;
        }
        Ok(())
    }

    /// Evaluates the program with `bind`, so evaluation is itself traceable (evaluating a
    /// jaxpr under `grad` differentiates it).
    pub fn eval(&self, consts: &[Array], args: &[Array]) -> Result<Vec<Array>> {
        if consts.len() != self.constvars.len() || args.len() != self.in_binders.len() {
            return Err(Error::Arity {
                op: "eval_jaxpr".into(),
                expected: self.constvars.len() + self.in_binders.len(),
                got: consts.len() + args.len(),
            });
        }
        let mut env: Vec<Option<Array>> = vec![None; self.num_vars()];
        for (v, x) in self.constvars.iter().zip(consts).chain(self.in_binders.iter().zip(args)) {
            env[v.id] = Some(x.clone());
        }
        let read = |env: &Vec<Option<Array>>, a: &Atom| -> Array {
            match a {
                Atom::Var(v) => env[v.id].clone().expect("typechecked jaxpr binds before use"),
                Atom::Lit(l) => l.clone(),
            }
        };
        for eqn in &self.eqns {
            let ins: Vec<Array> = eqn.inputs.iter().map(|a| read(&env, a)).collect();
            let outs = bind(&eqn.prim, &ins)?;
            for (v, x) in eqn.outs.iter().zip(outs) {
                env[v.id] = Some(x);
            }
        }
        Ok(self.outs.iter().map(|a| read(&env, a)).collect())
    }
}

impl ClosedJaxpr {
    /// Evaluates the program on `args`.
    pub fn eval(&self, args: &[Array]) -> Result<Vec<Array>> {
        self.jaxpr.eval(&self.consts, args)
    }
    /// Checks types (see [`Jaxpr::typecheck`]) and that the constants match their vars.
    pub fn typecheck(&self) -> Result<()> {
        for (v, c) in self.jaxpr.constvars.iter().zip(&self.consts) {
            if &v.aval != c.aval() {
                return Err(Error::Typecheck(format!(
                    "constant for {} is {} but declared {}",
                    VarName(v.id),
                    c.aval(),
                    v.aval
                )));
            }
        }
        self.jaxpr.typecheck()
    }
}

/// Prints a variable id as JAX does: `a`, `b`, ..., `z`, `ba`, `bb`, ...
pub(crate) struct VarName(pub(crate) usize);

impl fmt::Display for VarName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut n = self.0;
        let mut s = Vec::new();
        loop {
            s.push(b'a' + (n % 26) as u8);
            n /= 26;
            if n == 0 {
                break;
            }
        }
        s.reverse();
        f.write_str(std::str::from_utf8(&s).expect("ascii"))
    }
}

fn fmt_atom(a: &Atom) -> String {
    match a {
        Atom::Var(v) => VarName(v.id).to_string(),
        Atom::Lit(l) => format!("{}:{}", l, l.dtype()),
    }
}

fn fmt_binder(v: &Var) -> String {
    format!("{}:{}", VarName(v.id), v.aval)
}

impl fmt::Display for Jaxpr {
    /// Prints like `jax.make_jaxpr`:
    /// `{ lambda a:f32[3]; b:f32[3]. let c:f32[3] = mul a b in (c,) }` across lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let consts: Vec<String> = self.constvars.iter().map(fmt_binder).collect();
        let ins: Vec<String> = self.in_binders.iter().map(fmt_binder).collect();
        write!(f, "{{ lambda ")?;
        if !consts.is_empty() {
            write!(f, "{}; ", consts.join(" "))?;
        }
        writeln!(f, "{}. let", ins.join(" "))?;
        for eqn in &self.eqns {
            let outs: Vec<String> = eqn.outs.iter().map(fmt_binder).collect();
            let ins: Vec<String> = eqn.inputs.iter().map(fmt_atom).collect();
            writeln!(f, "    {} = {} {}", outs.join(" "), eqn.prim, ins.join(" "))?;
        }
        let outs: Vec<String> = self.outs.iter().map(fmt_atom).collect();
        write!(f, "  in ({}{}) }}", outs.join(", "), if outs.len() == 1 { "," } else { "" })
    }
}

impl fmt::Display for ClosedJaxpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.jaxpr)
    }
}
