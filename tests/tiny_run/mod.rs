//! A tiny run for the tests that drive the `mlrpl-engine` binary end to
//! end (`tests/hostile_inputs.rs`, `tests/kill.rs`): a random 16 px CLIP
//! with the full BPE vocabulary (one layer per tower), and an image list of
//! 16 x 16 PNGs with three colour classes. Everything is seeded; a whole
//! `train` run over it takes well under a second of compute.
#![allow(dead_code)]

use mlrpl_engine::clip::init::init_weights;
use mlrpl_engine::clip::{ClipConfig, TextConfig, VisionConfig};
use mlrpl_engine::nn::WeightMap;
use mlrpl_engine::Device;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const CLASSES: [&str; 3] = ["blue", "green", "red"];

/// The binary of this build.
pub fn engine_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mlrpl-engine"));
    command.env_remove("MLRPL_FAULT");
    command
}

pub fn run(args: &[&str]) -> Output {
    engine_command().args(args).output().expect("run mlrpl-engine")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A folder of its own for one test (emptied first).
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlrpl-tiny-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Tiny {
    pub dir: PathBuf,
    pub clip: PathBuf,
    pub train_list: PathBuf,
    pub test_list: PathBuf,
}

pub fn config() -> ClipConfig {
    ClipConfig {
        vision: VisionConfig { width: 64, layers: 1, heads: 1, patch: 8, grid: 2, embed_dim: 16 },
        text: TextConfig { width: 64, layers: 1, heads: 1, context_length: 77, vocab_size: 49408, embed_dim: 16 },
    }
}

/// Writes the tensors of `w` to `path`.
pub fn save(w: &WeightMap, path: &Path) {
    let tensors: Vec<_> = w.names().map(|n| (n.to_string(), w.get(n).unwrap())).collect();
    WeightMap::save(path, &tensors, Default::default()).unwrap();
}

fn write_png(path: &Path, seed: u32, classes: &[usize]) {
    let image = image::RgbImage::from_fn(16, 16, |x, y| {
        let mut rgb = [((x * 7 + y * 3 + seed * 11) % 40) as u8; 3];
        for &c in classes {
            // Class c paints its channel in one quadrant per class.
            if (x < 8) == (c != 1) || (y < 8) == (c == 2) {
                rgb[2 - c] = 200;
            }
        }
        image::Rgb(rgb)
    });
    image.save(path).unwrap();
}

/// Writes a CSV list of `n` images named `{prefix}{i}.png`.
fn write_list(dir: &Path, prefix: &str, n: usize, seed: u32) -> PathBuf {
    let mut csv = String::from("path,labels\n");
    for i in 0..n {
        let classes: Vec<usize> =
            (0..3).filter(|c| (i as u32 + seed).wrapping_mul(2654435761) >> (29 - c) & 1 == 1).collect();
        let classes = if classes.is_empty() { vec![i % 3] } else { classes };
        let name = format!("{prefix}{i}.png");
        write_png(&dir.join(&name), seed + i as u32, &classes);
        let labels: Vec<&str> = classes.iter().map(|&c| CLASSES[c]).collect();
        csv.push_str(&format!("{name},{}\n", labels.join(";")));
    }
    let path = dir.join(format!("{prefix}list.csv"));
    std::fs::write(&path, csv).unwrap();
    path
}

/// The shared files, made once per test binary.
pub fn tiny() -> &'static Tiny {
    static TINY: OnceLock<Tiny> = OnceLock::new();
    TINY.get_or_init(|| {
        let dir = scratch("fixture");
        let clip = dir.join("clip.safetensors");
        save(&init_weights(&config(), 5, &Device::Cpu).unwrap(), &clip);
        let train_list = write_list(&dir, "train", 24, 1);
        let test_list = write_list(&dir, "test", 6, 100);
        Tiny { dir, clip, train_list, test_list }
    })
}

impl Tiny {
    /// `--device cpu train` on the tiny list with a small, fast
    /// configuration, changed or extended by `extra`.
    pub fn train_args(&self, run_dir: &Path, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--device",
            "cpu",
            "train",
            "--clip",
            self.clip.to_str().unwrap(),
            "--dataset",
            "list",
            "--train-list",
            self.train_list.to_str().unwrap(),
            "--test-list",
            self.test_list.to_str().unwrap(),
            "--run-dir",
            run_dir.to_str().unwrap(),
            "--n-ctx",
            "2",
            "--decoupling-width",
            "8",
            "--batch-size",
            "4",
            "--epochs",
            "3",
            "--val-fraction",
            "0.25",
            "--workers",
            "1",
            "--log-every",
            "1",
            "--seed",
            "4",
            "--lr",
            "0.05",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // A flag of `extra` that the defaults give replaces its value there
        // (`--flag value` or `--flag=value`).
        let extra: Vec<&str> =
            extra.iter().flat_map(|a| a.split_once('=').map_or(vec![*a], |(f, v)| vec![f, v])).collect();
        let mut i = 0;
        while i < extra.len() {
            let has_value = i + 1 < extra.len() && !extra[i + 1].starts_with("--");
            match args.iter().position(|a| a == extra[i]) {
                Some(j) if has_value && j > 2 => {
                    args[j + 1] = extra[i + 1].to_string();
                    i += 2;
                }
                _ => {
                    args.push(extra[i].to_string());
                    i += 1;
                }
            }
        }
        args
    }

    /// A finished tiny run (made once per test binary): its folder.
    pub fn trained(&self) -> &'static Path {
        static RUN: OnceLock<PathBuf> = OnceLock::new();
        RUN.get_or_init(|| {
            let dir = self.dir.join("trained");
            let out = engine_command().args(self.train_args(&dir, &["--epochs", "1"])).output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            dir
        })
    }
}
