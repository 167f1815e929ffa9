//! Compiles every `kernels/*.cu` to a cubin for sm_90 and sm_80 with
//! `ptxas -v` and fails if any kernel spills registers (non-zero "bytes spill
//! stores" / "bytes spill loads") or a file does not compile, or if a
//! launcher (`src/backend/cuda/*.rs`, `src/ops/custom/*.rs`) launches a
//! kernel name that its module does not define (which would otherwise show
//! only on a GPU). Needs no GPU. Also checks, without nvcc, that kernels and
//! launchers mirror each other file for file.
//!
//! It uses the nvcc build.rs found (`$NVCC`, `$CUDA_HOME/bin/nvcc`, PATH,
//! `.cuda-toolchain/bin/nvcc` from `tools/cuda-toolchain.sh`), which build.rs
//! passes as `MLRPL_NVCC`. Without one, or with `MLRPL_NO_NVCC=1`, the test
//! prints a SKIPPED line and passes, unless
//! `MLRPL_REQUIRE_NVCC=1`, which turns the skip into a failure (for CI that
//! installs the toolchain). The report goes straight to stderr, so it shows
//! without `--nocapture`.

use std::collections::HashSet;
use std::env;
use std::fs;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

const ARCHS: &[&str] = &["sm_90", "sm_80"];
/// The optimisation flags of build.rs's fatbin build.
const FLAGS: &[&str] = &["-O3", "-std=c++17"];

fn flag(name: &str) -> bool {
    env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// One kernel's `ptxas -v` figures.
#[derive(Debug, Default)]
struct KernelInfo {
    name: String,
    registers: Option<u32>,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// The number in front of `what` in a comma-separated ptxas line, e.g.
/// `"12 bytes spill stores"` for `what = "bytes spill stores"`.
fn number_before(line: &str, what: &str) -> Option<u32> {
    line.split(',')
        .map(str::trim)
        .find(|part| part.ends_with(what))
        .and_then(|part| part.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Parses `ptxas -v` output: entry functions (with their registers) and
/// every function's stack/spill line (device functions that were not inlined
/// report spills too; they are listed under their own names).
fn parse_ptxas(out: &str) -> (Vec<KernelInfo>, Vec<KernelInfo>) {
    let mut entries: Vec<KernelInfo> = Vec::new();
    let mut functions: Vec<KernelInfo> = Vec::new();
    let mut current: Option<String> = None;
    for line in out.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_owned();
            entries.push(KernelInfo { name, ..Default::default() });
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            current = Some(rest.trim().to_owned());
        } else if line.contains("bytes spill stores") {
            let info = KernelInfo {
                name: current.take().unwrap_or_else(|| "?".to_owned()),
                registers: None,
                stack: number_before(line, "bytes stack frame").unwrap_or(0),
                spill_stores: number_before(line, "bytes spill stores").expect("spill stores"),
                spill_loads: number_before(line, "bytes spill loads").expect("spill loads"),
            };
            if let Some(e) = entries.iter_mut().rev().find(|e| e.name == info.name) {
                e.stack = info.stack;
                e.spill_stores = info.spill_stores;
                e.spill_loads = info.spill_loads;
            } else {
                functions.push(info);
            }
        } else if let Some(rest) = line.split("Used ").nth(1) {
            if let (Some(e), Some(n)) = (entries.last_mut(), rest.split_whitespace().next()) {
                if rest.contains("registers") && e.registers.is_none() {
                    e.registers = n.parse().ok();
                }
            }
        }
    }
    (entries, functions)
}

/// The folders of the launchers: the backend's primitives and the model ops
/// of `src/ops/custom/`.
const LAUNCHER_DIRS: &[&str] = &["src/backend/cuda", "src/ops/custom"];

/// Every (module, kernel name, source file) that the launchers start: the
/// string literals of each `dev.kernel("module", ...)` call in `dir`
/// (a name chosen by `T::pick("f32 name", "bf16 name")` or an `if` gives
/// all of its names). Calls whose name is a variable (cast.rs) are not
/// seen here; their kernels are loaded by `tests/cuda_ops.rs` on a GPU.
fn launched_kernels(dir: &std::path::Path) -> Vec<(String, String, String)> {
    // The string literals of `text`, but not the right side of a comparison
    // (`if suffix == "b32" { ... }`).
    let literals = |text: &str| -> Vec<String> {
        let parts: Vec<&str> = text.split('"').collect();
        (1..parts.len())
            .step_by(2)
            .filter(|&i| !parts[i - 1].trim_end().ends_with("=="))
            .map(|i| parts[i].to_owned())
            .collect()
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for line in fs::read_to_string(&path).unwrap().lines() {
            let Some(call) = line.split(".kernel(").nth(1) else { continue };
            let mut names = literals(call).into_iter();
            let Some(module) = names.next() else { continue };
            found.extend(names.map(|name| (module.clone(), name, file.clone())));
        }
    }
    found
}

/// Writes `text` to stderr in one call, past the test harness's capture and
/// without interleaving with its own output.
fn report(text: &str) {
    std::io::stderr().write_all(text.as_bytes()).unwrap();
}

#[test]
fn kernels_compile_without_spills() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let nvcc = option_env!("MLRPL_NVCC").filter(|p| !p.is_empty()).map(PathBuf::from);
    let Some(nvcc) = nvcc else {
        assert!(
            !flag("MLRPL_REQUIRE_NVCC"),
            "MLRPL_REQUIRE_NVCC is set but no nvcc was found (or MLRPL_NO_NVCC is set)"
        );
        let why = if flag("MLRPL_NO_NVCC") { " (MLRPL_NO_NVCC is set)" } else { "" };
        report(&format!("SKIPPED: no nvcc found{why}; run tools/cuda-toolchain.sh\n"));
        return;
    };

    let mut sources: Vec<PathBuf> = fs::read_dir(manifest.join("kernels"))
        .expect("kernels/ folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();
    assert!(!sources.is_empty(), "no kernels/*.cu files");
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernels_ptxas");
    fs::create_dir_all(&tmp).unwrap();

    let jobs: Vec<(&PathBuf, &str)> = sources.iter().flat_map(|s| ARCHS.iter().map(move |a| (s, *a))).collect();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|&(src, arch)| {
                let (nvcc, tmp) = (&nvcc, &tmp);
                scope.spawn(move || {
                    let stem = src.file_stem().unwrap().to_string_lossy();
                    let out = Command::new(nvcc)
                        .arg("-cubin")
                        .args(FLAGS)
                        .arg(format!("-arch={arch}"))
                        .args(["-Xptxas", "-v"])
                        .arg("-o")
                        .arg(tmp.join(format!("{stem}.{arch}.cubin")))
                        .arg(src)
                        .output()
                        .unwrap_or_else(|e| panic!("could not run {}: {e}", nvcc.display()));
                    (src, arch, out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut table = format!("ptxas -v with {}:\n", nvcc.display());
    let mut failures = Vec::new();
    let mut seen = 0usize;
    let mut compiled: HashSet<(String, String)> = HashSet::new();
    for (src, arch, out) in results {
        let file = src.file_name().unwrap().to_string_lossy();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            failures.push(format!("{file} [{arch}]: nvcc failed ({}):\n{text}", out.status));
            continue;
        }
        let (entries, functions) = parse_ptxas(&text);
        if entries.is_empty() {
            failures.push(format!("{file} [{arch}]: no kernel (entry function) in ptxas output:\n{text}"));
        }
        seen += entries.len();
        let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
        compiled.extend(entries.iter().map(|e| (stem.clone(), e.name.clone())));
        for k in entries.iter().chain(&functions) {
            table.push_str(&format!(
                "  {file} {arch} {}: {} registers, {} bytes stack, {} bytes spill stores, {} bytes spill loads\n",
                k.name,
                k.registers.map_or("-".to_owned(), |r| r.to_string()),
                k.stack,
                k.spill_stores,
                k.spill_loads
            ));
            if k.spill_stores != 0 || k.spill_loads != 0 {
                failures.push(format!(
                    "{file} [{arch}] {}: {} bytes spill stores, {} bytes spill loads",
                    k.name, k.spill_stores, k.spill_loads
                ));
            }
        }
    }
    let launched: Vec<_> = LAUNCHER_DIRS.iter().flat_map(|dir| launched_kernels(&manifest.join(dir))).collect();
    assert!(launched.len() >= 40, "found only {} kernel launches in {LAUNCHER_DIRS:?}", launched.len());
    for (module, name, file) in &launched {
        if !compiled.contains(&(module.clone(), name.clone())) {
            failures.push(format!("{file} launches `{name}` of kernels/{module}.cu, which has no such kernel"));
        }
    }
    report(&table);
    assert!(failures.is_empty(), "kernel check failed:\n{}", failures.join("\n"));
    assert!(seen > 0, "no kernel seen in any ptxas output: the check would pass vacuously");
}

/// Each `kernels/<name>.cu` has one launcher file, `<name>.rs` in one of
/// [`LAUNCHER_DIRS`], and a launcher starts only its own module's kernels.
#[test]
fn kernels_and_launchers_mirror_each_other() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut failures = Vec::new();
    let mut stems = Vec::new();
    for entry in fs::read_dir(manifest.join("kernels")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cu") {
            stems.push(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(stems.len() >= 10, "found only {} kernel files", stems.len());
    for stem in &stems {
        let homes: Vec<_> =
            LAUNCHER_DIRS.iter().filter(|dir| manifest.join(dir).join(format!("{stem}.rs")).is_file()).collect();
        if homes.len() != 1 {
            failures
                .push(format!("kernels/{stem}.cu has launcher files in {homes:?}, expected one of {LAUNCHER_DIRS:?}"));
        }
    }
    for dir in LAUNCHER_DIRS {
        for (module, name, file) in launched_kernels(&manifest.join(dir)) {
            if file != format!("{module}.rs") {
                failures
                    .push(format!("{dir}/{file} launches `{name}` of kernels/{module}.cu: launch it from {module}.rs"));
            }
        }
    }
    assert!(failures.is_empty(), "kernels and launchers do not mirror each other:\n{}", failures.join("\n"));
}

#[test]
fn parser_reads_ptxas_lines() {
    let out = "ptxas info    : Compiling entry function 'k1' for 'sm_90'\n\
               ptxas info    : Function properties for k1\n    \
               8 bytes stack frame, 12 bytes spill stores, 4 bytes spill loads\n\
               ptxas info    : Used 255 registers, used 1 barriers, 256 bytes smem\n\
               ptxas info    : Function properties for helper\n    \
               0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n";
    let (entries, functions) = parse_ptxas(out);
    assert_eq!(entries.len(), 1);
    let k = &entries[0];
    assert_eq!((k.name.as_str(), k.registers, k.stack, k.spill_stores, k.spill_loads), ("k1", Some(255), 8, 12, 4));
    assert_eq!(functions.len(), 1);
    assert_eq!(functions[0].name, "helper");
}
