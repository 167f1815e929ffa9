//! Writes images of the embedded set's test split as PNG files, to run
//! `predict` or `explain` on them (docs/explain.md):
//!
//!     cargo run --release --example embedded_images -- OUT_DIR [FIRST [COUNT]]
//!
//! writes OUT_DIR/test-<index>.png for COUNT images (default 8) from index
//! FIRST (default 0), at the 64 px `train`/`eval` use, and prints each
//! file with its categories.
use anyhow::{Context, Result};
use mlrpl_engine::data::dataset::MultiLabelDataset;
use mlrpl_engine::data::synthetic::{save_png, Split, SyntheticSet};
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(args.first().context("usage: embedded_images OUT_DIR [FIRST [COUNT]]")?);
    let number = |i: usize, default: usize| -> Result<usize> {
        args.get(i).map_or(Ok(default), |a| a.parse().with_context(|| format!("argument {i}: not a count: {a}")))
    };
    let (first, count) = (number(1, 0)?, number(2, 8)?);
    // The set `train`/`eval --dataset embedded` use (seed 0, 64 px).
    let set = SyntheticSet::new(Split::Test, 0, 64)?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot make {}", out.display()))?;
    for index in first..(first + count).min(set.len()) {
        let path = out.join(format!("test-{index}.png"));
        save_png(&set.image(index)?, &path)?;
        let labels = set.labels(index);
        let names: Vec<&str> =
            set.class_names().iter().zip(labels).filter(|(_, &l)| l > 0.0).map(|(n, _)| n.as_str()).collect();
        println!("{}: {}", path.display(), names.join(", "));
    }
    Ok(())
}
