//! CPU forward benchmark of CLIP's image encoder: ViT-B/32 at 224x224,
//! batch 8, `clip.vision.encode` (OpenAI's `encode_image`) under `no_grad`.
//!
//! The weights and the input come from `tools/bench_torch_clip.py`, which
//! builds a seeded random ViT-B/32 with OpenAI's model code and writes
//!   * WEIGHTS: every parameter, OpenAI naming, stored f16 (exact: the model
//!     was rounded to f16 before anything was computed), and
//!   * IO: `input` [8, 3, 224, 224] and `expected` = PyTorch's
//!     `model.encode_image(input)` [8, 512], both f32.
//!
//! The engine's output is first checked against `expected`
//! (||got - expected|| / ||expected|| <= 1e-4; the run aborts otherwise),
//! then timed: warm-up runs, then the median of N runs.
//! `tools/bench-clip.sh` runs this and the PyTorch side by side.
//!
//! Usage:
//!   cargo bench --bench clip_forward -- --weights W.safetensors --io IO.safetensors
//!       [--runs N] [--warmup N] [--json PATH]
//!       [--profile [--profile-runs N] [--split-bias]]
//! Environment (the flags win): `CLIP_BENCH_WEIGHTS`, `CLIP_BENCH_IO`,
//! `CLIP_BENCH_RUNS` (default 10), `CLIP_BENCH_WARMUP` (default 3),
//! `CLIP_BENCH_JSON`, `CLIP_BENCH_PROFILE=1`; `RAYON_NUM_THREADS` sets the
//! thread count (default: one per core).
//!
//! `--profile` adds an instrumented pass after the timing: the same forward
//! rebuilt from the tower's public pieces (transformer blocks) and the raw
//! weights (embedding, `ln_pre`, `ln_post`, `proj`), one public op at a time,
//! each op's wall time summed by kind (linears by shape, with GFLOP/s), mean
//! of `--profile-runs` passes (default 3). It is checked against `expected`
//! as well, and lands in the JSON under `profile`. Each layer's
//! `Linear::forward` is timed as one op (whatever the engine does for the
//! bias); `--split-bias` times `Tensor::linear` without bias and the bias
//! `add` apart instead. The patch embedding is `Tensor::linear` on the conv
//! weight as stored (the tower's own matrix is private).

use anyhow::{bail, Context, Result};
use mlrpl_engine::autograd;
use mlrpl_engine::clip::Clip;
use mlrpl_engine::nn::{LayerNorm, Linear, ResidualBlock, WeightMap};
use mlrpl_engine::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

const TOLERANCE: f64 = 1e-4;

struct Options {
    weights: Option<PathBuf>,
    io: Option<PathBuf>,
    runs: usize,
    warmup: usize,
    json: Option<String>,
    profile: bool,
    profile_runs: usize,
    split_bias: bool,
}

fn fail(msg: &str) -> ! {
    eprintln!("clip_forward bench: error: {msg}");
    std::process::exit(1);
}

fn parse_options() -> Options {
    let env = |key: &str| std::env::var(key).ok().filter(|s| !s.is_empty());
    let env_usize = |key: &str, default: usize| env(key).and_then(|v| v.parse().ok()).unwrap_or(default);
    let mut opts = Options {
        weights: env("CLIP_BENCH_WEIGHTS").map(PathBuf::from),
        io: env("CLIP_BENCH_IO").map(PathBuf::from),
        runs: env_usize("CLIP_BENCH_RUNS", 10),
        warmup: env_usize("CLIP_BENCH_WARMUP", 3),
        json: env("CLIP_BENCH_JSON"),
        profile: env("CLIP_BENCH_PROFILE").is_some_and(|v| v != "0"),
        profile_runs: 3,
        split_bias: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        let number = |flag: &str, v: String| v.parse().unwrap_or_else(|_| fail(&format!("{flag} takes a number")));
        match arg.as_str() {
            "--weights" => opts.weights = Some(value("--weights").into()),
            "--io" => opts.io = Some(value("--io").into()),
            "--runs" => opts.runs = number("--runs", value("--runs")),
            "--warmup" => opts.warmup = number("--warmup", value("--warmup")),
            "--json" => opts.json = Some(value("--json")),
            "--profile" => opts.profile = true,
            "--profile-runs" => opts.profile_runs = number("--profile-runs", value("--profile-runs")),
            "--split-bias" => opts.split_bias = true,
            // `cargo bench` passes `--bench` to harness-less benchmarks.
            "--bench" => {}
            s => fail(&format!("unknown argument {s} (see the header of benches/clip_forward.rs)")),
        }
    }
    opts.runs = opts.runs.max(1);
    opts.profile_runs = opts.profile_runs.max(1);
    opts
}

fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (g as f64, w as f64);
        num += (g - w) * (g - w);
        den += w * w;
    }
    let e = num.sqrt() / den.sqrt().max(f64::MIN_POSITIVE);
    if e.is_nan() {
        f64::INFINITY
    } else {
        e
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let h = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[h]
    } else {
        0.5 * (xs[h - 1] + xs[h])
    }
}

// --- instrumented forward -------------------------------------------------

#[derive(Default)]
struct Slot {
    seconds: f64,
    calls: usize,
    flops: f64,
}

/// Wall time per op kind, summed over the instrumented passes.
#[derive(Default)]
struct Profiler {
    slots: BTreeMap<String, Slot>,
    split_bias: bool,
}

impl Profiler {
    fn time<T>(&mut self, name: impl Into<String>, flops: f64, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let out = f()?;
        let slot = self.slots.entry(name.into()).or_default();
        slot.seconds += t.elapsed().as_secs_f64();
        slot.calls += 1;
        slot.flops += flops;
        Ok(out)
    }

    /// A layer's own `Linear::forward` (product and bias), timed as one op;
    /// with `split_bias`, `Tensor::linear` without bias and the bias `add`
    /// are timed apart instead.
    fn linear(&mut self, what: &str, x: &Tensor, lin: &Linear) -> Result<Tensor> {
        let (rows, k) = (x.elem_count() / x.dims()[x.rank() - 1], x.dims()[x.rank() - 1]);
        let n = lin.weight.dims()[0];
        let flops = 2.0 * (rows * k * n) as f64;
        match &lin.bias {
            Some(b) if self.split_bias => {
                let y = self.time(format!("gemm {what} ({rows}x{k}x{n})"), flops, || x.linear(&lin.weight, None))?;
                self.time("bias add (after gemm)", 0.0, || y.add(b))
            }
            Some(_) => self.time(format!("linear {what} ({rows}x{k}x{n}) + bias"), flops, || lin.forward(x)),
            None => self.time(format!("linear {what} ({rows}x{k}x{n})"), flops, || lin.forward(x)),
        }
    }

    fn layer_norm(&mut self, x: &Tensor, ln: &LayerNorm) -> Result<Tensor> {
        self.time("layernorm", 0.0, || ln.forward(x))
    }

    fn block(&mut self, x: &Tensor, blk: &ResidualBlock) -> Result<Tensor> {
        let &[b, l, w] = x.dims() else { bail!("block input must be [B, L, W]") };
        let heads = blk.attn.heads;
        let hd = w / heads;
        let h = self.layer_norm(x, &blk.ln_1)?;
        let qkv = self.linear("attn in_proj", &h, &blk.attn.in_proj)?;
        let qkv = self.time("permute qkv [B,L,3,H,D]->[3,B,H,L,D]", 0.0, || {
            qkv.reshape([b, l, 3, heads, hd])?.permute(&[2, 0, 3, 1, 4])
        })?;
        let mut parts = Vec::with_capacity(3);
        for i in 0..3 {
            parts.push(self.time("narrow q/k/v (copy)", 0.0, || qkv.narrow(0, i, 1)?.reshape([b, heads, l, hd]))?);
        }
        let sdpa_flops = 4.0 * (b * heads * l * l * hd) as f64;
        let att = self.time("attention (sdpa)", sdpa_flops, || {
            parts[0].scaled_dot_product_attention(&parts[1], &parts[2], false)
        })?;
        let merged =
            self.time("permute heads [B,H,L,D]->[B,L,H,D]", 0.0, || att.permute(&[0, 2, 1, 3])?.reshape([b, l, w]))?;
        let o = self.linear("attn out_proj", &merged, &blk.attn.out_proj)?;
        let x = self.time("residual add", 0.0, || x.add(&o))?;
        let h = self.layer_norm(&x, &blk.ln_2)?;
        let f = self.linear("mlp c_fc", &h, &blk.mlp.c_fc)?;
        let f = self.time("quick_gelu", 0.0, || f.quick_gelu())?;
        let o = self.linear("mlp c_proj", &f, &blk.mlp.c_proj)?;
        self.time("residual add", 0.0, || x.add(&o))
    }

    fn encode(&mut self, clip: &Clip, raw: &WeightMap, images: &Tensor) -> Result<Tensor> {
        let c = &clip.vision.config;
        let &[b, _, r, _] = images.dims() else { bail!("images must be [B, 3, R, R]") };
        let (p, width) = (c.patch, c.width);
        let grid = r / p;
        let n = grid * grid;
        let patch_w = raw.get("visual.conv1.weight")?.reshape([width, 3 * p * p])?;
        let class_emb = raw.get("visual.class_embedding")?;
        let pos = raw.get("visual.positional_embedding")?;
        let ln = |name: &str| -> Result<LayerNorm> {
            Ok(LayerNorm::new(raw.get(&format!("{name}.weight"))?, raw.get(&format!("{name}.bias"))?))
        };
        let (ln_pre, ln_post, proj) = (ln("visual.ln_pre")?, ln("visual.ln_post")?, raw.get("visual.proj")?);

        let rows = self.time("patchify permute (im2col)", 0.0, || {
            images.reshape([b, 3, grid, p, grid, p])?.permute(&[0, 2, 4, 1, 3, 5])?.reshape([b * n, 3 * p * p])
        })?;
        let name = format!("patch embed: Tensor::linear ({}x{}x{width})", b * n, 3 * p * p);
        let flops = 2.0 * (b * n * 3 * p * p * width) as f64;
        let patches = self.time(name, flops, || rows.linear(&patch_w, None))?.reshape([b, n, width])?;
        let x = self.time("class token concat + pos add", 0.0, || {
            let class = class_emb.reshape([1, 1, width])?.broadcast_to(&[b, 1, width].into())?;
            Tensor::concat(&[&class, &patches], 1)?.add(&pos)
        })?;
        let mut x = self.layer_norm(&x, &ln_pre)?;
        for blk in &clip.vision.transformer.blocks {
            x = self.block(&x, blk)?;
        }
        let class = self.time("class token narrow", 0.0, || x.narrow(1, 0, 1)?.reshape([b, width]))?;
        let y = self.layer_norm(&class, &ln_post)?;
        let name = format!("matmul proj ({b}x{width}x{})", c.embed_dim);
        self.time(name, 2.0 * (b * width * c.embed_dim) as f64, || y.matmul(&proj))
    }
}

fn run() -> Result<()> {
    let opts = parse_options();
    let weights = opts.weights.clone().unwrap_or_else(|| fail("no weights: pass --weights or set CLIP_BENCH_WEIGHTS"));
    let io_path = opts.io.clone().unwrap_or_else(|| fail("no input: pass --io or set CLIP_BENCH_IO"));
    let threads = rayon::current_num_threads();
    let device = Device::Cpu;
    let _no_grad = autograd::no_grad();

    let t = Instant::now();
    let clip = Clip::load(&weights, &device)?;
    let load_s = t.elapsed().as_secs_f64();
    let io = WeightMap::load(&io_path, &device)?;
    let images = io.get("input")?;
    let expected = io.get("expected")?.to_vec()?;
    let batch = images.dims()[0];
    let vc = clip.vision.config.clone();
    println!(
        "mlrpl-engine CLIP image encoder (width {}, {} layers, patch {}, {}x{}), batch {batch}, {threads} rayon \
         threads, warm-up {} + median of {} runs (weights loaded in {:.2} s)",
        vc.width,
        vc.layers,
        vc.patch,
        images.dims()[2],
        images.dims()[3],
        opts.warmup,
        opts.runs,
        load_s
    );

    // Check before timing.
    let got = clip.vision.encode(&images)?;
    let check_err = rel_err(&got.to_vec()?, &expected);
    if check_err > TOLERANCE {
        bail!("engine output differs from PyTorch's encode_image: ||a-b||/||b|| = {check_err:.3e} > {TOLERANCE:e}");
    }
    println!("check: ||engine - torch|| / ||torch|| = {check_err:.2e} (<= {TOLERANCE:e})");
    drop(got);

    for _ in 0..opts.warmup {
        std::hint::black_box(clip.vision.encode(std::hint::black_box(&images))?);
    }
    let mut times = Vec::with_capacity(opts.runs);
    for _ in 0..opts.runs {
        let t = Instant::now();
        let out = clip.vision.encode(std::hint::black_box(&images))?;
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(out);
    }
    let med = median(&times);
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    println!("engine: median {:.2} ms/batch, min {:.2} ms, {:.2} images/s", med * 1e3, min * 1e3, batch as f64 / med);

    let mut profile_json = serde_json::Value::Null;
    if opts.profile {
        let raw = WeightMap::load(&weights, &device)?;
        let mut warm = Profiler { split_bias: opts.split_bias, ..Default::default() };
        let out = warm.encode(&clip, &raw, &images)?;
        let err = rel_err(&out.to_vec()?, &expected);
        if err > TOLERANCE {
            bail!("instrumented forward differs from PyTorch's: {err:.3e} > {TOLERANCE:e}");
        }
        let mut prof = Profiler { split_bias: opts.split_bias, ..Default::default() };
        let t = Instant::now();
        for _ in 0..opts.profile_runs {
            std::hint::black_box(prof.encode(&clip, &raw, &images)?);
        }
        let total = t.elapsed().as_secs_f64() / opts.profile_runs as f64;
        let mut rows: Vec<(String, Slot)> = prof.slots.into_iter().collect();
        rows.sort_by(|a, b| b.1.seconds.partial_cmp(&a.1.seconds).unwrap());
        let nr = opts.profile_runs as f64;
        println!(
            "\nprofile: instrumented forward, mean of {} passes: {:.2} ms/batch (check err {err:.1e})",
            opts.profile_runs,
            total * 1e3
        );
        println!("{:<48} {:>10} {:>7} {:>7} {:>9}", "op", "ms/batch", "share", "calls", "GFLOP/s");
        let mut entries = Vec::new();
        for (name, s) in &rows {
            let ms = s.seconds / nr * 1e3;
            let gflops = if s.flops > 0.0 { s.flops / s.seconds / 1e9 } else { f64::NAN };
            println!(
                "{:<48} {:>10.2} {:>6.1}% {:>7} {:>9}",
                name,
                ms,
                100.0 * s.seconds / nr / total,
                s.calls / opts.profile_runs,
                if gflops.is_nan() { "".to_string() } else { format!("{gflops:.1}") }
            );
            entries.push(serde_json::json!({
                "op": name, "ms_per_batch": ms, "share": s.seconds / nr / total,
                "calls_per_batch": s.calls / opts.profile_runs,
                "gflops": if gflops.is_nan() { serde_json::Value::Null } else { gflops.into() },
            }));
        }
        profile_json = serde_json::json!({ "passes": opts.profile_runs, "ms_per_batch": total * 1e3,
                                           "check_err": err, "split_bias": opts.split_bias, "ops": entries });
    }

    if let Some(path) = &opts.json {
        let doc = serde_json::json!({
            "impl": "mlrpl-engine clip.vision.encode (CPU backend)",
            "threads": threads,
            "batch": batch,
            "warmup": opts.warmup,
            "runs": opts.runs,
            "tolerance": TOLERANCE,
            "check_err": check_err,
            "median_s": med,
            "min_s": min,
            "times_s": times,
            "images_per_s": batch as f64 / med,
            "load_s": load_s,
            "profile": profile_json,
        });
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {path}"))?;
        println!("wrote {path}");
    }
    Ok(())
}

fn main() {
    // As the binary does, so the figures are the engine's.
    mlrpl_engine::backend::cpu::heap::keep_freed_buffers();
    if let Err(e) = run() {
        fail(&format!("{e:#}"));
    }
}
