//! CPU GEMM benchmark: `mlrpl_engine::backend::cpu::gemm::gemm_f32` on the
//! 1024x1024x1024 headline shape and a few shapes of the model (ViT-B/16 at
//! 448x448: 28*28 patches + 1 class token = 785 tokens, width 768, MLP 3072).
//!
//! Every shape is first checked against an f64 reference (a seeded sample of
//! output entries, or the whole matrix for small shapes) and the run aborts if
//! the error exceeds 1e-4; only then is it timed (warm-up, then the median of
//! N runs). `tools/bench_torch_matmul.py` times the same shapes with PyTorch,
//! and `tools/bench-gemm.sh` runs both side by side.
//!
//! Usage:
//!   cargo bench --bench gemm [-- [--json PATH] [--runs N] [--warmup N] [FILTER]]
//! Environment: `GEMM_BENCH_JSON=PATH`, `GEMM_BENCH_RUNS=N`,
//! `GEMM_BENCH_WARMUP=N` (the flags win), `RAYON_NUM_THREADS` (thread count).
//! Shape names follow `m x k x n`: op(A) is [m, k], op(B) is [k, n].

use mlrpl_engine::backend::cpu::gemm::gemm_f32;
use mlrpl_engine::backend::GemmSpec;
use mlrpl_engine::rng::Rng;
use std::time::Instant;

/// Largest error the check tolerates: max |got - want| over the checked
/// entries, divided by the RMS of the wanted entries. This bounds the
/// project's ||got - want|| / ||want|| (<= 1e-4 for f32) from above.
const TOLERANCE: f64 = 1e-4;
/// Output entries checked for shapes too large to check whole.
const SAMPLES: usize = 2048;
/// Shapes with at most this many multiply-adds are checked whole.
const FULL_CHECK_MACS: usize = 1 << 25;

struct Case {
    name: &'static str,
    what: &'static str,
    m: usize,
    k: usize,
    n: usize,
    trans_b: bool,
}

const CASES: &[Case] = &[
    Case { name: "square-1024", what: "headline shape of the requirement", m: 1024, k: 1024, n: 1024, trans_b: false },
    Case {
        name: "proj-512x768x768",
        what: "512 rows through a 768->768 projection",
        m: 512,
        k: 768,
        n: 768,
        trans_b: false,
    },
    Case {
        name: "vit-mlp-fc1",
        what: "ViT-B/16@448 MLP fc1: 785 tokens, 768->3072",
        m: 785,
        k: 768,
        n: 3072,
        trans_b: false,
    },
    Case {
        name: "vit-mlp-fc2",
        what: "ViT-B/16@448 MLP fc2: 785 tokens, 3072->768",
        m: 785,
        k: 3072,
        n: 768,
        trans_b: false,
    },
    Case {
        name: "vit-qkv-bT",
        what: "ViT-B/16@448 QKV, x @ W^T with W stored [2304, 768]",
        m: 785,
        k: 768,
        n: 2304,
        trans_b: true,
    },
];

struct Options {
    json: Option<String>,
    runs: usize,
    warmup: usize,
    filter: Option<String>,
}

fn parse_options() -> Options {
    let env_usize = |key: &str, default: usize| std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let mut opts = Options {
        json: std::env::var("GEMM_BENCH_JSON").ok().filter(|s| !s.is_empty()),
        runs: env_usize("GEMM_BENCH_RUNS", 15),
        warmup: env_usize("GEMM_BENCH_WARMUP", 3),
        filter: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        match arg.as_str() {
            "--json" => opts.json = Some(value("--json")),
            "--runs" => opts.runs = value("--runs").parse().unwrap_or_else(|_| fail("--runs takes a number")),
            "--warmup" => opts.warmup = value("--warmup").parse().unwrap_or_else(|_| fail("--warmup takes a number")),
            // `cargo bench` passes `--bench` to harness-less benchmarks.
            "--bench" => {}
            s if s.starts_with("--") => fail(&format!("unknown flag {s}")),
            s => opts.filter = Some(s.to_string()),
        }
    }
    opts.runs = opts.runs.max(1);
    opts
}

fn fail(msg: &str) -> ! {
    eprintln!("gemm bench: error: {msg}");
    std::process::exit(1);
}

fn spec_of(case: &Case) -> GemmSpec {
    GemmSpec {
        batch: 1,
        m: case.m,
        n: case.n,
        k: case.k,
        trans_a: false,
        trans_b: case.trans_b,
        a_batch_stride: case.m * case.k,
        b_batch_stride: case.k * case.n,
    }
}

/// One output entry of `op(A) @ op(B)` accumulated in f64.
fn reference_entry(a: &[f32], b: &[f32], spec: &GemmSpec, i: usize, j: usize) -> f64 {
    let (k, n) = (spec.k, spec.n);
    (0..k)
        .map(|p| {
            let y = if spec.trans_b { b[j * k + p] } else { b[p * n + j] };
            a[i * k + p] as f64 * y as f64
        })
        .sum()
}

/// Checks `got` against the f64 reference; returns (error, entries checked).
fn check(a: &[f32], b: &[f32], got: &[f32], spec: &GemmSpec, seed: u64) -> (f64, usize) {
    let (m, n) = (spec.m, spec.n);
    let entries: Vec<(usize, usize)> = if m * n * spec.k <= FULL_CHECK_MACS {
        (0..m).flat_map(|i| (0..n).map(move |j| (i, j))).collect()
    } else {
        let mut rng = Rng::new(seed);
        let mut e = vec![(0, 0), (0, n - 1), (m - 1, 0), (m - 1, n - 1)];
        e.extend((0..SAMPLES).map(|_| (rng.below(m), rng.below(n))));
        e
    };
    let mut max_abs = 0.0f64;
    let mut sum_sq = 0.0f64;
    for &(i, j) in &entries {
        let want = reference_entry(a, b, spec, i, j);
        let g = got[i * n + j] as f64;
        if !g.is_finite() {
            return (f64::INFINITY, entries.len());
        }
        max_abs = max_abs.max((g - want).abs());
        sum_sq += want * want;
    }
    let rms = (sum_sq / entries.len() as f64).sqrt().max(f64::MIN_POSITIVE);
    (max_abs / rms, entries.len())
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let h = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[h]
    } else {
        0.5 * (xs[h - 1] + xs[h])
    }
}

fn main() {
    let opts = parse_options();
    let threads = rayon::current_num_threads();
    let cases: Vec<&Case> =
        CASES.iter().filter(|c| opts.filter.as_deref().is_none_or(|f| c.name.contains(f))).collect();
    if cases.is_empty() {
        fail("no shape matches the filter");
    }
    println!(
        "mlrpl-engine CPU GEMM (gemm_f32), {threads} rayon threads, warm-up {} + median of {} runs",
        opts.warmup, opts.runs
    );
    println!(
        "{:<18} {:>16} {:>3} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "shape", "m x k x n", "bT", "median ms", "min ms", "GFLOP/s", "check", "err"
    );
    let mut results = Vec::new();
    for (ci, case) in cases.iter().enumerate() {
        let spec = spec_of(case);
        let seed = 1000 + ci as u64;
        let mut rng = Rng::new(seed);
        let a = rng.normal_vec(case.m * case.k, 1.0);
        let b = rng.normal_vec(case.k * case.n, 1.0);

        // Check before timing.
        let got = gemm_f32(&a, &b, None, &spec);
        assert_eq!(got.len(), case.m * case.n);
        let (err, checked) = check(&a, &b, &got, &spec, seed ^ 0x5eed);
        if err.is_nan() || err > TOLERANCE {
            fail(&format!(
                "{}: result differs from the f64 reference: max|err|/rms = {err:.3e} > {TOLERANCE:e} ({checked} entries)",
                case.name
            ));
        }
        drop(got);

        for _ in 0..opts.warmup {
            std::hint::black_box(gemm_f32(std::hint::black_box(&a), std::hint::black_box(&b), None, &spec));
        }
        let mut times = Vec::with_capacity(opts.runs);
        for _ in 0..opts.runs {
            let t = Instant::now();
            let out = gemm_f32(std::hint::black_box(&a), std::hint::black_box(&b), None, &spec);
            times.push(t.elapsed().as_secs_f64());
            std::hint::black_box(out);
        }
        let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
        let med = median(&mut times);
        let flops = 2.0 * (case.m * case.n * case.k) as f64;
        let gflops = flops / med / 1e9;
        println!(
            "{:<18} {:>16} {:>3} {:>10.3} {:>10.3} {:>10.1} {:>9} {:>9.1e}",
            case.name,
            format!("{}x{}x{}", case.m, case.k, case.n),
            if case.trans_b { "y" } else { "n" },
            med * 1e3,
            min * 1e3,
            gflops,
            if checked == case.m * case.n { "full".to_string() } else { format!("{checked}") },
            err
        );
        results.push(serde_json::json!({
            "name": case.name,
            "what": case.what,
            "m": case.m, "k": case.k, "n": case.n,
            "trans_b": case.trans_b,
            "median_s": med,
            "min_s": min,
            "gflops": gflops,
            "gflops_best": flops / min / 1e9,
            "check_entries": checked,
            "check_err": err,
        }));
    }
    if let Some(path) = &opts.json {
        let doc = serde_json::json!({
            "impl": "mlrpl-engine gemm_f32 (gemm crate)",
            "threads": threads,
            "warmup": opts.warmup,
            "runs": opts.runs,
            "tolerance": TOLERANCE,
            "results": results,
        });
        let text = serde_json::to_string_pretty(&doc).expect("serialise results");
        std::fs::write(path, text + "\n").unwrap_or_else(|e| fail(&format!("cannot write {path}: {e}")));
        println!("wrote {path}");
    }
}
