//! `mlrpl-engine explain`: where a trained model looks for each category
//! (docs/explain.md). Per image, one PNG per chosen category with the
//! semantic decoupling attention over the image, and one row with the image
//! itself first and every chosen category after it.

use super::checks;
use super::evaluate::{check_finite, model_input, ImageInputs, TrainedModelArgs, PREDICT_BATCH};
use anyhow::{bail, Context, Result};
use clap::Args;
use mlrpl_engine::data::image::load_rgb;
use mlrpl_engine::train::THRESHOLD;
use mlrpl_engine::viz::heatmap::{draw_row, fit_to_panel, Panel};
use mlrpl_engine::{Device, Precision};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    model: TrainedModelArgs,
    #[command(flatten)]
    inputs: ImageInputs,
    /// A category to draw whether predicted or not; repeatable.
    #[arg(long = "class")]
    classes: Vec<String>,
    /// Probability at or above which a category counts as predicted and is
    /// drawn (default: the threshold the run chose on its validation part,
    /// or 0.5 for a checkpoint that records none). With none reaching it,
    /// the most probable category is drawn.
    #[arg(long, allow_negative_numbers = true)]
    threshold: Option<f32>,
    /// The folder the pictures are written to (made when missing).
    #[arg(long)]
    out: PathBuf,
}

/// The categories an image's pictures show: those at or above `threshold`,
/// most probable first (the most probable alone when none is), then the
/// `extra` ones not already there, in their order.
pub fn chosen_classes(probabilities: &[f32], threshold: f32, extra: &[usize]) -> Vec<usize> {
    let mut ranked: Vec<usize> = (0..probabilities.len()).collect();
    ranked.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    let predicted = ranked.iter().take_while(|&&c| probabilities[c] >= threshold).count().max(1);
    let mut chosen = ranked[..predicted].to_vec();
    for &c in extra {
        if !chosen.contains(&c) {
            chosen.push(c);
        }
    }
    chosen
}

/// A category name as a file-name part: letters and digits kept
/// (lower-cased), anything else a dash.
fn file_part(name: &str) -> String {
    name.chars().map(|c| if c.is_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// Fails when two `(file-name part, what it comes from)` pairs share the
/// part: their pictures would overwrite each other.
fn distinct(what: &str, parts: &[(String, String)]) -> Result<()> {
    let mut seen = HashMap::new();
    for (part, source) in parts {
        if let Some(other) = seen.insert(part, source) {
            bail!("{what} {other:?} and {source:?} would both write the pictures named {part:?}; rename one");
        }
    }
    Ok(())
}

pub fn run(args: ExplainArgs, device: &Device, precision: Precision) -> Result<()> {
    if let Some(threshold) = args.threshold {
        checks::in_range("--threshold", threshold, 0.0, 1.0)?;
    }
    let paths = args.inputs.paths("explain")?;
    let stems: Vec<(String, String)> = paths
        .iter()
        .map(|p| (p.file_stem().map_or("image".into(), |s| s.to_string_lossy().into_owned()), p.display().to_string()))
        .collect();
    distinct("the images", &stems)?;
    let checkpoint = &args.model.checkpoint;
    let (model, image_size, chosen) = args.model.load(device, precision)?;
    if model.sdm.is_none() {
        bail!(
            "{}: the model was trained with --no-sdm, so it has no semantic decoupling attention to draw",
            checkpoint.display()
        );
    }
    let class_parts: Vec<(String, String)> = model.class_names.iter().map(|c| (file_part(c), c.clone())).collect();
    distinct("the categories", &class_parts)?;
    let extra = args
        .classes
        .iter()
        .map(|name| match model.class_names.iter().position(|c| c == name) {
            Some(c) => Ok(c),
            None => {
                bail!("--class {name:?}: the checkpoint has no such category (it has {})", model.class_names.join(", "))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let threshold = args.threshold.or(chosen).unwrap_or(THRESHOLD);
    let source = match (args.threshold, chosen) {
        (Some(_), _) => "--threshold",
        (None, Some(_)) => "the threshold the run chose on validation",
        (None, None) => "the default threshold",
    };
    eprintln!("drawing the categories with probability >= {threshold:.2} ({source}), or the most probable one");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("--out {}: cannot make the folder", args.out.display()))?;

    let _no_grad = mlrpl_engine::autograd::no_grad();
    let classes = model.num_classes();
    for (chunk, chunk_stems) in paths.chunks(PREDICT_BATCH).zip(stems.chunks(PREDICT_BATCH)) {
        let images = chunk.iter().map(|path| load_rgb(path)).collect::<Result<Vec<_>>>()?;
        let (probabilities, attention) =
            model.probabilities_and_attention(&model_input(&images, image_size, device)?)?;
        let patches = attention.dims()[2];
        let grid = (patches as f64).sqrt().round() as usize;
        if grid * grid != patches {
            bail!("{}: the attention covers {patches} patches, not a square grid", checkpoint.display());
        }
        let (probabilities, attention) = (probabilities.to_vec()?, attention.to_vec()?);
        check_finite(&probabilities, classes, chunk, checkpoint)?;
        for (k, ((path, image), (stem, _))) in chunk.iter().zip(&images).zip(chunk_stems).enumerate() {
            let row = &probabilities[k * classes..(k + 1) * classes];
            let fitted = fit_to_panel(image);
            let mut panels = vec![Panel { image: fitted.clone(), title: "input".into(), subtitle: file_name(path) }];
            let mut summary = Vec::new();
            for c in chosen_classes(row, threshold, &extra) {
                let map = &attention[(k * classes + c) * patches..(k * classes + c + 1) * patches];
                let panel = Panel::attention(&fitted, map, grid, &model.class_names[c], row[c]);
                let file = args.out.join(format!("{stem}-class-{}.png", class_parts[c].0));
                draw_row(std::slice::from_ref(&panel))?.save_png(&file)?;
                summary.push(format!("{} {:.2}", model.class_names[c], row[c]));
                panels.push(panel);
            }
            let grid_file = args.out.join(format!("{stem}-grid.png"));
            draw_row(&panels)?.save_png(&grid_file)?;
            println!("{}: {} -> {}", path.display(), summary.join(", "), grid_file.display());
        }
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicted_classes_come_first_then_the_asked_ones_and_never_none() {
        let probabilities = [0.2, 0.9, 0.6, 0.1];
        assert_eq!(chosen_classes(&probabilities, 0.5, &[]), vec![1, 2]);
        assert_eq!(chosen_classes(&probabilities, 0.5, &[3, 2]), vec![1, 2, 3]);
        assert_eq!(chosen_classes(&probabilities, 0.95, &[]), vec![1], "none reaches 0.95: the top-1");
        assert_eq!(chosen_classes(&probabilities, 0.6, &[]), vec![1, 2], "at the threshold counts");
    }

    #[test]
    fn category_names_become_safe_file_name_parts() {
        assert_eq!(file_part("hair drier"), "hair-drier");
        assert_eq!(file_part("../Etc/passwd"), "---etc-passwd");
    }
}
