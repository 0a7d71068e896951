//! `train-cli plot`: training curves as a PNG, drawn without text (no system fonts needed).
//!
//! Left panel: train loss (blue) and eval loss (red). Right panel: train accuracy (blue)
//! and eval accuracy (red), on [0, 1]. The x axis is the step in both.

use std::path::Path;

use plotters::prelude::*;

use crate::error::TrainError;

/// Curves read from a metrics file: `(step, value)` series.
#[derive(Default, Debug)]
pub struct Curves {
    /// Train loss.
    pub train_loss: Vec<(f64, f64)>,
    /// Train accuracy.
    pub train_acc: Vec<(f64, f64)>,
    /// Eval loss.
    pub eval_loss: Vec<(f64, f64)>,
    /// Eval accuracy.
    pub eval_acc: Vec<(f64, f64)>,
}

/// Reads the curves from a metrics JSONL file.
pub fn read_curves(path: &Path) -> Result<Curves, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut c = Curves::default();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| TrainError::io(path, format!("line {}: not JSON: {e}", i + 1)))?;
        let step = v.get("step").and_then(|s| s.as_f64()).unwrap_or(0.0);
        let get = |k: &str| v.get(k).and_then(|x| x.as_f64()).filter(|x| x.is_finite());
        let push = |dst: &mut Vec<(f64, f64)>, k: &str| {
            if let Some(y) = get(k) {
                dst.push((step, y));
            }
        };
        push(&mut c.train_loss, "loss");
        push(&mut c.train_acc, "acc");
        push(&mut c.eval_loss, "eval_loss");
        push(&mut c.eval_acc, "eval_acc");
    }
    if c.train_loss.is_empty() && c.eval_loss.is_empty() {
        return Err(TrainError::io(path, "no metrics records with `loss` or `eval_loss`"));
    }
    Ok(c)
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    a: &[(f64, f64)],
    b: &[(f64, f64)],
    y_range: Option<(f64, f64)>,
) -> Result<(), String> {
    let all = a.iter().chain(b);
    let xmax = all.clone().map(|p| p.0).fold(1.0f64, f64::max);
    let (ylo, yhi) =
        y_range.unwrap_or_else(|| (0.0, all.map(|p| p.1).fold(1e-6f64, f64::max) * 1.05));
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .build_cartesian_2d(0.0..xmax, ylo..yhi)
        .map_err(|e| e.to_string())?;
    chart
        .plotting_area()
        .draw(&Rectangle::new([(0.0, ylo), (xmax, yhi)], BLACK.stroke_width(1)))
        .map_err(|e| e.to_string())?;
    for i in 1..10 {
        let y = ylo + (yhi - ylo) * i as f64 / 10.0;
        chart
            .draw_series(LineSeries::new([(0.0, y), (xmax, y)], RGBColor(225, 225, 225)))
            .map_err(|e| e.to_string())?;
    }
    chart
        .draw_series(LineSeries::new(a.iter().copied(), BLUE.stroke_width(2)))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(b.iter().copied(), RED.stroke_width(2)))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Draws the curves of `metrics` into the PNG `out`.
pub fn plot(metrics: &Path, out: &Path) -> Result<(), TrainError> {
    let c = read_curves(metrics)?;
    let err = |e: String| TrainError::io(out, e);
    let root = BitMapBackend::new(out, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (l, r) = root.split_horizontally(600);
    panel(&l, &c.train_loss, &c.eval_loss, None).map_err(err)?;
    panel(&r, &c.train_acc, &c.eval_acc, Some((0.0, 1.0))).map_err(err)?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
