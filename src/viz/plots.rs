//! The plots of training runs: loss, learning rate and validation mAP from
//! a run's `metrics.jsonl` (one run, or several on the same axes), each
//! class's test AP as bars, and test mAP against the known-label proportion
//! (one line per method). `train` draws its own run's plots into its run
//! folder; `mlrpl-engine report` compares runs (docs/report.md).

use super::{drawing, Canvas, FONT};
use anyhow::{bail, Context, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Width and height of the line plots, in pixels.
pub const LINE_PLOT_SIZE: (u32, u32) = (1000, 600);
/// The plots `train` keeps in its run folder, redrawn after every epoch.
pub const CURVE_PLOTS: [&str; 3] = ["loss.png", "lr.png", "val-map.png"];
/// The per-class test AP bars `train` draws at the end.
pub const TEST_AP_PLOT: &str = "test-ap.png";
/// `report`'s plot of test mAP against the known-label proportion.
pub const KNOWN_LABELS_PLOT: &str = "map-vs-known-labels.png";

/// One colour per run or method (Tableau 10), in order; they repeat after ten.
pub const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of the `index`-th run or method.
pub fn colour(index: usize) -> RGBColor {
    COLOURS[index % COLOURS.len()]
}

/// A logged training step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepPoint {
    pub step: f64,
    /// Mean loss of the steps since the previous logged one.
    pub loss: f64,
    pub lr: f64,
}

/// The end of an epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochPoint {
    pub epoch: f64,
    pub step: f64,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Validation mAP (0..1): `val_map` of `train`, `val_zero_shot_map` of `pretrain`.
    pub val_map: f64,
}

/// A run's curves, read from its metrics file.
#[derive(Clone, Debug)]
pub struct RunCurves {
    /// The legend's name of the run: its folder's name.
    pub name: String,
    pub steps: Vec<StepPoint>,
    pub epochs: Vec<EpochPoint>,
    /// Whether the validation figure is pre-training's zero-shot mAP.
    pub zero_shot: bool,
}

impl RunCurves {
    /// The curves of the run in folder `dir`, from its `metrics.jsonl`; an
    /// error naming the file (and line) when it is missing, is not JSON
    /// lines as `train` writes them, or holds no step. A torn last line (a
    /// run killed while writing it) is left out, as `train --resume` does.
    pub fn read(dir: &Path) -> Result<RunCurves> {
        let path = dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .file_name()
            .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
        let mut curves = RunCurves { name, steps: Vec::new(), epochs: Vec::new(), zero_shot: false };
        for (number, line) in text.split_inclusive('\n').enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = match serde_json::from_str(line.trim_end()) {
                Ok(value) => value,
                Err(_) if !line.ends_with('\n') => break, // torn by a kill
                Err(e) => {
                    // serde's own position is "line 1" of the one line: keep the column.
                    let problem = e.to_string();
                    let problem = problem.rsplit_once(" at line ").map_or(problem.as_str(), |(what, _)| what);
                    bail!(
                        "{} line {}: not a JSON object ({problem}, column {})",
                        path.display(),
                        number + 1,
                        e.column()
                    )
                }
            };
            let field = |key: &str| value.get(key).and_then(serde_json::Value::as_f64);
            let missing = |what: &str| format!("{} line {}: {what}", path.display(), number + 1);
            if value.get("loss").is_some() {
                let (Some(step), Some(loss), Some(lr)) = (field("step"), field("loss"), field("lr")) else {
                    bail!(missing("a step line needs the numbers step, loss and lr"));
                };
                curves.steps.push(StepPoint { step, loss, lr });
            } else if value.get("train_loss").is_some() {
                let val = field("val_map").or(field("val_zero_shot_map"));
                curves.zero_shot |= value.get("val_zero_shot_map").is_some();
                let (Some(epoch), Some(step), Some(train_loss), Some(val_map)) =
                    (field("epoch"), field("step"), field("train_loss"), val)
                else {
                    bail!(missing("an epoch line needs the numbers epoch, step, train_loss and val_map"));
                };
                curves.epochs.push(EpochPoint { epoch, step, train_loss, val_map });
            } else {
                bail!(missing("neither a step line (loss) nor an epoch line (train_loss)"));
            }
        }
        if curves.steps.is_empty() && curves.epochs.is_empty() {
            bail!("{}: no training step logged yet", path.display());
        }
        Ok(curves)
    }
}

/// Redraws the [`CURVE_PLOTS`] of the run in `dir` from its metrics file.
pub fn write_run_curves(dir: &Path) -> Result<()> {
    draw_curves(&[RunCurves::read(dir)?], dir).map(|_| ())
}

/// Draws the [`CURVE_PLOTS`] of `runs` (each run one colour, the same on
/// every plot) into `out_dir`; returns the files written.
pub fn draw_curves(runs: &[RunCurves], out_dir: &Path) -> Result<Vec<PathBuf>> {
    let about = match runs {
        [run] => run.name.clone(),
        _ => format!("{} runs", runs.len()),
    };
    let [loss, lr, val] = CURVE_PLOTS.map(|name| out_dir.join(name));
    draw_loss(runs, &format!("Training loss: {about}"), &loss)?;
    draw_lr(runs, &format!("Learning rate: {about}"), &lr)?;
    draw_val_map(runs, &format!("Validation mAP per epoch: {about}"), &val)?;
    Ok(vec![loss, lr, val])
}

/// The line of the `index`-th of `count` runs: earlier runs are drawn up
/// to 3 pixels wider, so a curve that a later one covers (two runs with
/// the same learning-rate schedule) still shows at its edge.
fn run_line(index: usize, count: usize) -> ShapeStyle {
    colour(index).stroke_width(2 + count.saturating_sub(index + 1).min(3) as u32)
}

/// The legend's line of the `index`-th run: one width for all.
fn run_legend(index: usize) -> ShapeStyle {
    colour(index).stroke_width(3)
}

/// A line of the legend: a short stroke in `style`.
fn legend_line(style: ShapeStyle) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style)
}

/// `lo..hi` of `values`, widened by 5% each way (and to a visible span when
/// all are equal); `0..1` when there are none.
fn span(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = if hi - lo > 0.0 { 0.05 * (hi - lo) } else { (0.1 * hi.abs()).max(1e-3) };
    lo - pad..hi + pad
}

/// Whole numbers only (epochs, steps): a tick between two is left blank.
fn whole(value: &f64) -> String {
    if (value - value.round()).abs() < 1e-6 {
        format!("{value:.0}")
    } else {
        String::new()
    }
}

/// A white canvas of `size`, `draw` on its area, written to `path`.
fn picture(
    size: (u32, u32),
    path: &Path,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    let mut canvas = Canvas::new(size.0, size.1);
    {
        let area = canvas.area();
        drawing(area.fill(&WHITE))?;
        draw(&area)?;
        drawing(area.present())?;
    }
    save_atomically(&canvas, path)
}

/// Writes `canvas` as a PNG through a temporary file and a rename, so a
/// run killed while drawing leaves the previous picture (and a `.tmp` that
/// `train --resume` removes), never a torn one.
fn save_atomically(canvas: &Canvas, path: &Path) -> Result<()> {
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &canvas.rgb,
        canvas.width,
        canvas.height,
        image::ExtendedColorType::Rgb8,
    )
    .with_context(|| format!("cannot encode {}", path.display()))?;
    crate::train::checkpoint::write_atomically(path, &png)
}

type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A chart with `title` over `x` and `y`, its mesh labelled `x_desc` and
/// `y_desc` and its numbers formatted by `x_format` and `y_format`.
struct Axes<'f> {
    title: &'f str,
    x: Range<f64>,
    y: Range<f64>,
    x_desc: &'f str,
    y_desc: &'f str,
    x_format: &'f dyn Fn(&f64) -> String,
    y_format: &'f dyn Fn(&f64) -> String,
    /// Lines of the legend, which goes in room added above the data.
    legend_lines: usize,
}

/// About the height of a line plot's drawing area, in pixels.
const LINE_PLOT_AREA_HEIGHT: f64 = 430.0;

/// `y` extended upwards by room for a legend of `lines` lines (in the
/// upper right corner), so that the legend never covers a curve.
fn with_legend_room(y: &Range<f64>, lines: usize) -> Range<f64> {
    let share = ((24 * lines + 30) as f64 / LINE_PLOT_AREA_HEIGHT).min(0.6);
    y.start..y.end + (y.end - y.start) * share / (1.0 - share)
}

fn chart<'a, 'b: 'a>(area: &'a DrawingArea<BitMapBackend<'b>, Shift>, axes: &Axes<'_>) -> Result<Chart<'a, 'b>> {
    let mut chart = drawing(
        ChartBuilder::on(area)
            .caption(axes.title, (FONT, 26))
            .margin(20)
            .x_label_area_size(56)
            .y_label_area_size(90)
            .build_cartesian_2d(axes.x.clone(), with_legend_room(&axes.y, axes.legend_lines)),
    )?;
    drawing(
        chart
            .configure_mesh()
            .x_desc(axes.x_desc)
            .y_desc(axes.y_desc)
            .axis_desc_style((FONT, 20))
            .label_style((FONT, 16))
            .x_label_formatter(axes.x_format)
            .y_label_formatter(axes.y_format)
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw(),
    )?;
    Ok(chart)
}

/// A filled dot of `radius` pixels at each of `points`.
fn dots(
    chart: &mut Chart<'_, '_>,
    points: impl Iterator<Item = (f64, f64)>,
    colour: RGBColor,
    radius: u32,
) -> Result<()> {
    drawing(chart.draw_series(points.map(|p| Circle::new(p, radius, colour.filled())))).map(|_| ())
}

/// The legend, in a box in the room [`with_legend_room`] made.
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> Result<()> {
    drawing(
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(160, 160, 160))
            .label_font((FONT, 17))
            .margin(12)
            .draw(),
    )
}

fn draw_loss(runs: &[RunCurves], title: &str, path: &Path) -> Result<()> {
    let steps = runs.iter().flat_map(|r| r.steps.iter().map(|p| p.step).chain(r.epochs.iter().map(|p| p.step)));
    let losses = runs.iter().flat_map(|r| r.steps.iter().map(|p| p.loss).chain(r.epochs.iter().map(|p| p.train_loss)));
    let axes = Axes {
        title,
        x: 0.0..span(steps).end,
        y: span(losses),
        x_desc: "optimizer step",
        y_desc: "training loss",
        x_format: &whole,
        y_format: &|v| format!("{v:.2}"),
        legend_lines: if runs.len() == 1 { 2 } else { runs.len() + 2 },
    };
    picture(LINE_PLOT_SIZE, path, |area| {
        let mut chart = chart(area, &axes)?;
        let single = runs.len() == 1;
        for (i, run) in runs.iter().enumerate() {
            let thin = colour(i).mix(0.45).stroke_width(1);
            let thick = run_line(i, runs.len());
            let logged = drawing(chart.draw_series(LineSeries::new(run.steps.iter().map(|p| (p.step, p.loss)), thin)))?;
            if single {
                logged.label("loss per logged step").legend(legend_line(thin));
            }
            let means = run.epochs.iter().map(|p| (p.step, p.train_loss));
            let epoch_means = drawing(chart.draw_series(LineSeries::new(means.clone(), thick)))?;
            if single {
                epoch_means.label("mean over the epoch").legend(legend_line(thick));
            } else {
                epoch_means.label(&run.name).legend(legend_line(run_legend(i)));
            }
            dots(&mut chart, means, colour(i), 5)?;
        }
        if !single {
            // The two line kinds, in grey, for every run's colour.
            let grey = RGBColor(110, 110, 110);
            let none = std::iter::empty::<(f64, f64)>;
            drawing(chart.draw_series(LineSeries::new(none(), grey.mix(0.45).stroke_width(1))))?
                .label("thin: per logged step")
                .legend(legend_line(grey.mix(0.45).stroke_width(1)));
            drawing(chart.draw_series(LineSeries::new(none(), grey.stroke_width(3))))?
                .label("thick: mean over the epoch")
                .legend(legend_line(grey.stroke_width(3)));
        }
        legend(&mut chart)
    })
}

fn draw_lr(runs: &[RunCurves], title: &str, path: &Path) -> Result<()> {
    let steps = runs.iter().flat_map(|r| r.steps.iter().map(|p| p.step));
    let rates = runs.iter().flat_map(|r| r.steps.iter().map(|p| p.lr));
    let axes = Axes {
        title,
        x: 0.0..span(steps).end,
        y: 0.0..span(rates).end,
        x_desc: "optimizer step",
        y_desc: "learning rate",
        x_format: &whole,
        y_format: &|v| if *v == 0.0 { "0".to_string() } else { format!("{v:.1e}") },
        legend_lines: runs.len(),
    };
    picture(LINE_PLOT_SIZE, path, |area| {
        let mut chart = chart(area, &axes)?;
        for (i, run) in runs.iter().enumerate() {
            let style = run_line(i, runs.len());
            drawing(chart.draw_series(LineSeries::new(run.steps.iter().map(|p| (p.step, p.lr)), style)))?
                .label(&run.name)
                .legend(legend_line(run_legend(i)));
        }
        legend(&mut chart)
    })
}

fn draw_val_map(runs: &[RunCurves], title: &str, path: &Path) -> Result<()> {
    let last_epoch = runs.iter().flat_map(|r| r.epochs.iter().map(|p| p.epoch)).fold(1.0, f64::max);
    let maps = runs.iter().flat_map(|r| r.epochs.iter().map(|p| 100.0 * p.val_map));
    let y = span(maps);
    let y_desc = if runs.iter().all(|r| r.zero_shot) { "zero-shot validation mAP (%)" } else { "validation mAP (%)" };
    let axes = Axes {
        title,
        x: 0.5..last_epoch + 0.5,
        y: y.start.max(0.0)..y.end.min(100.0),
        x_desc: "epoch",
        y_desc,
        x_format: &whole,
        y_format: &|v| format!("{v:.1}"),
        legend_lines: runs.len(),
    };
    picture(LINE_PLOT_SIZE, path, |area| {
        let mut chart = chart(area, &axes)?;
        for (i, run) in runs.iter().enumerate() {
            let style = run_line(i, runs.len());
            let points = run.epochs.iter().map(|p| (p.epoch, 100.0 * p.val_map));
            drawing(chart.draw_series(LineSeries::new(points.clone(), style)))?
                .label(&run.name)
                .legend(legend_line(run_legend(i)));
            dots(&mut chart, points, colour(i), 5)?;
        }
        legend(&mut chart)
    })
}

/// The AP axis runs past 100 % to leave a column for the values.
const AP_AXIS_END: f64 = 110.0;

/// Draws each class's AP (0..1; None: no positive in the split) as a
/// horizontal bar, the first class at the top, with the mean (mAP) as a
/// dashed line labelled in a row above the bars, under `title`, to `path`.
/// The height grows with the number of classes so that every name stays
/// legible.
pub fn draw_class_ap(per_class_ap: &[Option<f64>], class_names: &[String], title: &str, path: &Path) -> Result<()> {
    if per_class_ap.len() != class_names.len() || class_names.is_empty() {
        bail!("{}: {} class APs for {} class names", path.display(), per_class_ap.len(), class_names.len());
    }
    let classes = class_names.len();
    let known: Vec<f64> = per_class_ap.iter().flatten().copied().collect();
    let map = 100.0 * known.iter().sum::<f64>() / known.len().max(1) as f64;
    let size = (LINE_PLOT_SIZE.0, 150 + 30 * classes as u32);
    // Rows count from the bottom: row r holds class `classes - 1 - r`, and
    // row `classes` (the segmented axis's last, past the classes) the mAP label.
    let row = |c: usize| (classes - 1 - c) as i32;
    picture(size, path, |area| {
        let longest = class_names.iter().map(|n| n.chars().count()).max().unwrap_or(1) as u32;
        let mut chart = drawing(
            ChartBuilder::on(area)
                .caption(title, (FONT, 26))
                .margin(20)
                .x_label_area_size(56)
                .y_label_area_size(30 + 10 * longest.min(40))
                .build_cartesian_2d(0.0..AP_AXIS_END, (0..classes as i32).into_segmented()),
        )?;
        drawing(
            chart
                .configure_mesh()
                .disable_y_mesh()
                .x_desc("average precision (%)")
                .axis_desc_style((FONT, 20))
                .label_style((FONT, 16))
                .x_label_formatter(&|v| if *v <= 100.0 { format!("{v:.0}") } else { String::new() })
                .y_labels(classes + 1)
                .y_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(r) if (0..classes as i32).contains(r) => {
                        class_names[classes - 1 - *r as usize].clone()
                    }
                    _ => String::new(),
                })
                .light_line_style(RGBColor(235, 235, 235))
                .draw(),
        )?;
        let bars = per_class_ap.iter().enumerate().filter_map(|(c, ap)| ap.map(|ap| (row(c), 100.0 * ap)));
        drawing(chart.draw_series(Histogram::horizontal(&chart).style(colour(0).filled()).margin(4).data(bars)))?;
        // The values in a column right of 100 %, where no bar reaches.
        let value_font = (FONT, 15).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
        let none_font = value_font.color(&RGBColor(120, 120, 120)).pos(Pos::new(HPos::Left, VPos::Center));
        for (c, ap) in per_class_ap.iter().enumerate() {
            let (text, x, font) = match ap {
                Some(ap) => (format!("{:.1}", 100.0 * ap), AP_AXIS_END - 1.0, value_font.clone()),
                None => ("no positive in the split".to_string(), 1.0, none_font.clone()),
            };
            drawing(chart.draw_series(std::iter::once(Text::new(text, (x, SegmentValue::CenterOf(row(c))), font))))?;
        }
        let mean_line = (0..=classes as i32).map(|r| (map, SegmentValue::Exact(r)));
        drawing(chart.draw_series(DashedLineSeries::new(mean_line, 8, 6, BLACK.stroke_width(2))))?;
        // Left of the line when the right has no room.
        let (x, side) = if map > 80.0 { (map - 1.0, HPos::Right) } else { (map + 1.0, HPos::Left) };
        let label_font = (FONT, 17).into_font().color(&BLACK).pos(Pos::new(side, VPos::Center));
        let label = Text::new(format!("mAP {map:.2}"), (x, SegmentValue::CenterOf(classes as i32)), label_font);
        drawing(chart.draw_series(std::iter::once(label)))?;
        Ok(())
    })
}

/// One finished run's point on the known-label plot.
#[derive(Clone, Debug)]
pub struct KnownLabelPoint {
    /// The line it belongs to, e.g. "full method".
    pub method: String,
    /// Known-label proportion p (0..1].
    pub known: f64,
    /// Test mAP (0..1).
    pub test_map: f64,
}

/// Draws test mAP against the known-label proportion, one line per method
/// (in the order they first appear); runs of one method at the same
/// proportion are averaged, the average labelled with its value.
pub fn draw_known_labels(points: &[KnownLabelPoint], title: &str, path: &Path) -> Result<()> {
    if points.is_empty() {
        bail!("{}: no finished run to plot", path.display());
    }
    let mut methods: Vec<&str> = Vec::new();
    for point in points {
        if !methods.contains(&point.method.as_str()) {
            methods.push(&point.method);
        }
    }
    // Per method: (p, mean test mAP in %), sorted by p.
    let lines: Vec<Vec<(f64, f64)>> = methods
        .iter()
        .map(|&method| {
            let mut at: Vec<(f64, Vec<f64>)> = Vec::new();
            for point in points.iter().filter(|p| p.method == method) {
                match at.iter_mut().find(|(p, _)| (p - point.known).abs() < 1e-9) {
                    Some((_, maps)) => maps.push(100.0 * point.test_map),
                    None => at.push((point.known, vec![100.0 * point.test_map])),
                }
            }
            at.sort_by(|a, b| a.0.total_cmp(&b.0));
            at.into_iter().map(|(p, maps)| (p, maps.iter().sum::<f64>() / maps.len() as f64)).collect()
        })
        .collect();
    let y = span(lines.iter().flatten().map(|&(_, m)| m));
    let pad = 0.1 * (y.end - y.start); // room for the value labels
    let axes = Axes {
        title,
        x: 0.0..1.0,
        y: (y.start - pad).max(0.0)..(y.end + pad).min(100.0),
        x_desc: "known-label proportion p",
        y_desc: "test mAP (%)",
        x_format: &|v| format!("{v:.1}"),
        y_format: &|v| format!("{v:.1}"),
        legend_lines: methods.len(),
    };
    picture(LINE_PLOT_SIZE, path, |area| {
        let mut chart = chart(area, &axes)?;
        for (i, (method, line)) in methods.iter().zip(&lines).enumerate() {
            let style = run_line(i, methods.len());
            drawing(chart.draw_series(LineSeries::new(line.iter().copied(), style)))?
                .label(*method)
                .legend(legend_line(run_legend(i)));
            dots(&mut chart, line.iter().copied(), colour(i), 7)?;
            let font = (FONT, 15).into_font().color(&colour(i)).pos(Pos::new(HPos::Center, VPos::Bottom));
            drawing(chart.draw_series(
                line.iter().map(|&(p, m)| Text::new(format!("{m:.1}"), (p, m + 0.25 * pad), font.clone())),
            ))?;
        }
        legend(&mut chart)
    })
}
