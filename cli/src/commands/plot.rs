//! The `train --plot` figure (below), and the `bench --plot` figure: GB/s against bytes moved, one line per kernel, with the adapter's
//! two ceilings measured in the same run. Forward passes on the left, forward + gradient on the
//! right (their trivial ceilings differ: a sum and a copy).

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::bench::row::Row;

pub fn draw(path: &Path, adapter: &str, rows: &[Row]) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (left, right) = root.split_horizontally(700);
    for (area, grad) in [(left, false), (right, true)] {
        let panel: Vec<&Row> = rows.iter().filter(|r| r.case.grad == grad).collect();
        if panel.is_empty() {
            continue;
        }
        let x_min = panel.iter().map(|r| r.case.bytes()).min().unwrap_or(1) as f64;
        let x_max = panel.iter().map(|r| r.case.bytes()).max().unwrap_or(2) as f64;
        let y_max = panel
            .iter()
            .flat_map(|r| [r.copy_gbps(), r.trivial_gbps(), r.gbps()])
            .fold(0.0f64, f64::max)
            * 1.1;
        let title = format!(
            "{} on {adapter}",
            if grad {
                "forward + gradient"
            } else {
                "forward"
            }
        );
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d((x_min * 0.9..x_max * 1.1).log_scale(), 0.0..y_max)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("bytes moved (inputs read once + outputs written once)")
            .y_desc("GB/s")
            .x_label_formatter(&|b| format!("{:.0e}", b))
            .draw()
            .map_err(|e| fail(&e))?;

        // Ceilings: the median over the panel's cases in each power-of-two bucket of bytes.
        let mut copy: BTreeMap<u32, Vec<(f64, f64)>> = BTreeMap::new();
        let mut trivial: BTreeMap<u32, Vec<(f64, f64)>> = BTreeMap::new();
        for r in &panel {
            let bucket = r.case.bytes().ilog2();
            copy.entry(bucket)
                .or_default()
                .push((r.case.bytes() as f64, r.copy_gbps()));
            trivial
                .entry(bucket)
                .or_default()
                .push((r.case.bytes() as f64, r.trivial_gbps()));
        }
        let kind = if grad { "copy" } else { "sum" };
        for (name, buckets, color) in [
            ("copy_buffer_to_buffer".to_string(), copy, BLACK),
            (
                format!("trivial WGSL {kind}"),
                trivial,
                RGBColor(128, 128, 128),
            ),
        ] {
            let points: Vec<(f64, f64)> = buckets.values().map(|v| median_point(v)).collect();
            chart
                .draw_series(DashedLineSeries::new(points, 8, 5, color.stroke_width(2)))
                .map_err(|e| fail(&e))?
                .label(format!("ceiling: {name}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }

        let mut kernels: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for r in &panel {
            kernels
                .entry(r.case.kernel())
                .or_default()
                .push((r.case.bytes() as f64, r.gbps()));
        }
        for (i, (name, mut points)) in kernels.into_iter().enumerate() {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| fail(&e))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.filled())),
                )
                .map_err(|e| fail(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))
}

/// The `train --plot` figure: the loss (left) and the accuracy (right) of each epoch.
pub fn training(
    path: &Path,
    adapter: &str,
    epochs: &[wgpu_loss::train::EpochStats],
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (1100, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (left, right) = root.split_horizontally(550);
    let last = epochs.len().max(2) as f64;
    let loss_max = epochs
        .iter()
        .map(|e| e.loss as f64)
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.05;
    let loss = |e: &wgpu_loss::train::EpochStats| e.loss as f64;
    let accuracy = |e: &wgpu_loss::train::EpochStats| e.accuracy;
    for (area, name, y_max, value, color) in [
        (
            left,
            "loss (mean cross-entropy)",
            loss_max,
            &loss as &dyn Fn(_) -> f64,
            RED,
        ),
        (right, "accuracy", 1.0, &accuracy, BLUE),
    ] {
        let mut chart = ChartBuilder::on(&area)
            .caption(
                format!("{name}, softmax regression on {adapter}"),
                ("sans-serif", 15),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(1.0..last, 0.0..y_max)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(name)
            .draw()
            .map_err(|e| fail(&e))?;
        let points = epochs.iter().map(|e| (e.epoch as f64, value(e)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))
}

fn median_point(v: &[(f64, f64)]) -> (f64, f64) {
    let mut xs: Vec<f64> = v.iter().map(|p| p.0).collect();
    let mut ys: Vec<f64> = v.iter().map(|p| p.1).collect();
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], ys[ys.len() / 2])
}
