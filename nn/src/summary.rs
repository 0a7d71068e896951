//! [`summary`]: a table of a model's parameters.

use kiln::Tree;
use kiln::tree::leaves_with_path;
use std::fmt::Write;

/// A table of every leaf of `model`: key path, dtype, shape and element count, with the
/// total on the last line.
///
/// ```
/// use kiln::random;
/// use kiln_nn::{Activation, Mlp, summary};
/// let mlp = Mlp::new(&random::key(0), &[3, 4, 2], Activation::Relu);
/// let table = summary(&mlp);
/// assert!(table.contains("layers.0.weight"));
/// assert!(table.lines().last().unwrap().contains("26"));
/// ```
pub fn summary<T: Tree>(model: &T) -> String {
    let rows: Vec<(String, String, String, usize)> = leaves_with_path(model)
        .into_iter()
        .map(|(p, a)| (p.to_string(), a.dtype().to_string(), format!("{:?}", a.shape()), a.size()))
        .collect();
    let total: usize = rows.iter().map(|r| r.3).sum();
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max("parameter".len()).max(5);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max("dtype".len());
    let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max("shape".len());
    let w3 = total.to_string().len().max("count".len());
    let mut out = String::new();
    let line = |out: &mut String, a: &str, b: &str, c: &str, d: &str| {
        let _ = writeln!(out, "{a:<w0$}  {b:<w1$}  {c:<w2$}  {d:>w3$}");
    };
    line(&mut out, "parameter", "dtype", "shape", "count");
    let rule = "-".repeat(w0 + w1 + w2 + w3 + 6);
    let _ = writeln!(out, "{rule}");
    for (p, d, s, n) in &rows {
        line(&mut out, p, d, s, &n.to_string());
    }
    let _ = writeln!(out, "{rule}");
    let _ = write!(out, "{:<w$}  {total:>w3$}", "total", w = w0 + w1 + w2 + 4);
    out
}
