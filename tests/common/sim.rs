//! The simulated GPU (`kernels/sim/`, `docs/gpu/simulator.md`) for the CUDA
//! tests on machines without one: builds the simulator's three libraries
//! with the host C++ compiler (every `kernels/*.cu`, unchanged but for the
//! two rewrites below, linked into a `libcuda.so` beside the simulated
//! driver; a `libcublas.so` and a `libcublasLt.so` over a reference GEMM),
//! then loads them, so that cudarc's own `dlopen` by library name finds them
//! and the CUDA backend runs through its usual code path.
//!
//! The rewrites, which make a `.cu` file C++ for the host compiler:
//! * `__shared__` declarations become references into the block's shared
//!   memory (`extern __shared__` arrays: the launch's dynamic memory);
//! * inline PTX `asm` statements become calls of `sim::ptx` functions of the
//!   same name (`cvt.rn.bf16.f32` -> `cvt_rn_bf16_f32`); an instruction the
//!   simulator does not know fails the build, naming it.
//!
//! Built once per source hash under `CARGO_TARGET_TMPDIR`, under a file lock.
//! `MLRPL_SIM_ASAN=1` builds it with AddressSanitizer; the test process must
//! then have the ASan runtime preloaded (`tools/sim-asan-runner.sh`).

use anyhow::{anyhow, bail, Context, Result};
use regex::Regex;
use std::collections::hash_map::DefaultHasher;
use std::ffi::CString;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The three libraries, each named by the SONAME cudarc asks `dlopen` for.
const LIBRARIES: [(&str, &[&str]); 3] = [
    ("libcuda.so", &["runtime.cpp", "driver.cpp"]),
    ("libcublas.so", &["cublas.cpp"]),
    ("libcublasLt.so", &["cublaslt.cpp"]),
];

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn asan() -> bool {
    std::env::var_os("MLRPL_SIM_ASAN").is_some_and(|v| !v.is_empty() && v != "0")
}

fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "g++".into())
}

fn flags() -> Vec<&'static str> {
    let mut f = vec!["-std=c++17", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wno-unknown-pragmas", "-Wno-unused"];
    if asan() {
        f.extend(["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"]);
    } else {
        f.extend(["-O2"]);
    }
    f
}

/// (file name, contents) of a folder's files.
type Files = Vec<(String, String)>;

/// `kernels/*.cu` and `*.cuh`, `kernels/sim/*` and the negative controls of
/// `tests/sim_controls/*.cu` (`tests/sim_controls.rs`), sorted, with their
/// contents.
fn sources() -> Result<(Files, Files, Files)> {
    let read_dir = |dir: &Path, keep: &dyn Fn(&str) -> bool| -> Result<Files> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_file() && keep(&name) {
                out.push((name, std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?));
            }
        }
        out.sort();
        Ok(out)
    };
    let kernels = read_dir(&manifest().join("kernels"), &|n| n.ends_with(".cu") || n.ends_with(".cuh"))?;
    let sim = read_dir(&manifest().join("kernels/sim"), &|_| true)?;
    let controls = read_dir(&manifest().join("tests/sim_controls"), &|n| n.ends_with(".cu"))?;
    Ok((kernels, sim, controls))
}

/// Blanks out comments, keeping line breaks (so line numbers stay).
fn strip_comments(src: &str) -> String {
    let (mut out, mut chars) = (String::with_capacity(src.len()), src.chars().peekable());
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                out.extend(chars.next());
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                while chars.peek().is_some_and(|&n| n != '\n') {
                    chars.next();
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                    }
                    if last == '*' && n == '/' {
                        break;
                    }
                    last = n;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The two rewrites of the module doc; `next_id` numbers static shared
/// variables across all modules.
fn rewrite(file: &str, src: &str, next_id: &mut usize) -> Result<String> {
    let asm_call = Regex::new(r"\basm\s*\(")?;
    let mut text = strip_comments(src);
    let dynamic = Regex::new(r"extern\s+__shared__\s+([A-Za-z_][\w:]*(?:\s+[A-Za-z_][\w:]*)*?)\s+(\w+)\s*\[\s*\]\s*;")?;
    text = dynamic.replace_all(&text, "\n#define $2 (static_cast<$1*>(::sim::shared_dynamic()))\n").into_owned();
    let array = Regex::new(r"__shared__\s+([A-Za-z_][\w:<>, ]*?)\s+(\w+)\s*((?:\[[^\]]+\])+)\s*;")?;
    let scalar = Regex::new(r"__shared__\s+([A-Za-z_][\w:<>, ]*?)\s+(\w+)\s*;")?;
    let mut numbered = |re: &Regex, text: &str, array: bool| -> String {
        re.replace_all(text, |c: &regex::Captures| {
            *next_id += 1;
            if array {
                format!(
                    "{ty} (&{name}){dims} = ::sim::shared_static_as<{ty} {dims}>({id});",
                    ty = &c[1],
                    name = &c[2],
                    dims = &c[3],
                    id = *next_id
                )
            } else {
                format!("{ty}& {name} = ::sim::shared_static_as<{ty}>({id});", ty = &c[1], name = &c[2], id = *next_id)
            }
        })
        .into_owned()
    };
    text = numbered(&array, &text, true);
    text = numbered(&scalar, &text, false);
    if let Some(line) = text.lines().position(|l| l.contains("__shared__")) {
        bail!("{file}:{}: a __shared__ declaration the simulator's build cannot rewrite", line + 1);
    }
    let text = rewrite_asm(file, &text)?;
    if let Some(line) = text.lines().position(|l| asm_call.is_match(l)) {
        bail!("{file}:{}: an asm statement the simulator's build cannot rewrite", line + 1);
    }
    Ok(format!("#include \"cuda_sim.h\"\n#line 1 \"{file}\"\n{text}"))
}

/// The PTX instructions `kernels/sim/cuda_sim.h` implements (`sim::ptx`).
const PTX: &[&str] =
    &["cvt.rn.bf16.f32", "cvt.rn.f16.f32", "cvt.f32.f16", "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"];

/// Splits `s` at the top-level (outside parentheses and strings) `sep`s.
fn split_top(s: &str, sep: char) -> Vec<&str> {
    let (mut parts, mut depth, mut in_string, mut start) = (Vec::new(), 0i32, false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string => depth -= 1,
            c if c == sep && depth == 0 && !in_string => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Each `asm [volatile] ("instr ..." : "=c"(out), ... : "c"(in), ...);`
/// becomes `::sim::ptx::instr_name(&out, ..., in, ...);`, for the
/// instructions of [`PTX`].
fn rewrite_asm(file: &str, text: &str) -> Result<String> {
    let start = Regex::new(r"\basm\s*(?:volatile\s*)?\(")?;
    let operand = Regex::new(r#"^\s*"=?\+?[a-z]"\s*\((.*)\)\s*$"#)?;
    let literal = Regex::new(r#""([^"]*)""#)?;
    let (mut out, mut rest) = (String::with_capacity(text.len()), text);
    while let Some(m) = start.find(rest) {
        out.push_str(&rest[..m.start()]);
        // The statement's parenthesised body, up to its matching `)`.
        let body_start = m.end();
        let mut depth = 1;
        let mut end = None;
        let mut in_string = false;
        for (i, c) in rest[body_start..].char_indices() {
            match c {
                '"' => in_string = !in_string,
                '(' if !in_string => depth += 1,
                ')' if !in_string => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(body_start + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let line = text[..text.len() - rest.len() + m.start()].lines().count().max(1);
        let end = end.ok_or_else(|| anyhow!("{file}:{line}: an asm statement without its closing parenthesis"))?;
        let sections = split_top(&rest[body_start..end], ':');
        let template: String = literal.captures_iter(sections[0]).map(|c| c[1].to_string()).collect();
        let op = template.split_whitespace().next().unwrap_or_default().to_string();
        if !PTX.contains(&op.as_str()) {
            bail!("{file}:{line}: inline PTX `{op}` is not simulated (kernels/sim/cuda_sim.h, sim::ptx)");
        }
        let operands = |section: Option<&&str>, outputs: bool| -> Result<Vec<String>> {
            let Some(section) = section.filter(|s| !s.trim().is_empty()) else { return Ok(Vec::new()) };
            split_top(section, ',')
                .into_iter()
                .map(|o| {
                    let expr = operand
                        .captures(o)
                        .ok_or_else(|| anyhow!("{file}:{line}: asm operand `{}` is not \"c\"(expression)", o.trim()))?
                        [1]
                    .to_string();
                    Ok(if outputs { format!("&({expr})") } else { format!("({expr})") })
                })
                .collect()
        };
        let mut args = operands(sections.get(1), true)?;
        args.extend(operands(sections.get(2), false)?);
        out.push_str(&format!("::sim::ptx::{}({})", op.replace('.', "_"), args.join(", ")));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn run(cmd: &mut Command) -> Result<std::process::Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out)
}

/// Compiles every source into `dir` (the kernels in parallel) and links the
/// three libraries.
fn build(dir: &Path, kernels: &[(String, String)], controls: &[(String, String)]) -> Result<()> {
    let cxx = compiler();
    // The rewritten headers in `dir` come before the originals.
    let include = |c: &mut Command| {
        c.arg("-I").arg(dir).arg("-I").arg(manifest().join("kernels/sim"));
    };
    let entry = Regex::new(r#"extern\s+"C"\s+__attribute__\(\(used\)\)\s+void\s+(\w+)\s*\("#)?;
    let mut next_id = 0;
    for (file, src) in kernels.iter().filter(|(f, _)| f.ends_with(".cuh")) {
        let text = rewrite(&format!("kernels/{file}"), src, &mut next_id)?;
        // A header is pasted into each kernel file; cuda_sim.h comes first there.
        std::fs::write(dir.join(file), text.replacen("#include \"cuda_sim.h\"\n", "", 1))?;
    }
    let mut jobs = Vec::new();
    let mut objects = Vec::new();
    let modules = kernels
        .iter()
        .filter(|(f, _)| f.ends_with(".cu"))
        .map(|(f, s)| (format!("kernels/{f}"), f, s))
        .chain(controls.iter().map(|(f, s)| (format!("tests/sim_controls/{f}"), f, s)));
    for (path, file, src) in modules {
        let module = file.trim_end_matches(".cu");
        let tu = dir.join(format!("{module}.sim.cpp"));
        std::fs::write(&tu, rewrite(&path, src, &mut next_id)?)?;
        // The kernels are the extern "C" functions marked __global__, which
        // cuda_sim.h turns into __attribute__((used)); macros may define them.
        let mut pre = Command::new(&cxx);
        include(&mut pre);
        let expanded = run(pre.args(["-std=c++17", "-E", "-P"]).arg(&tu))?;
        let expanded = String::from_utf8_lossy(&expanded.stdout);
        let names: Vec<String> = entry.captures_iter(&expanded).map(|c| c[1].to_string()).collect();
        if names.is_empty() {
            bail!("{path}: no extern \"C\" __global__ kernel found");
        }
        let mut registration = String::from("\n");
        for name in &names {
            registration.push_str(&format!("SIM_KERNEL(\"{module}\", {name})\n"));
        }
        std::fs::OpenOptions::new().append(true).open(&tu)?.write_all(registration.as_bytes())?;
        let obj = dir.join(format!("{module}.o"));
        let mut cc = Command::new(&cxx);
        include(&mut cc);
        cc.args(flags()).arg("-c").arg(&tu).arg("-o").arg(&obj);
        cc.stderr(std::process::Stdio::piped());
        jobs.push((cc.spawn().with_context(|| format!("starting {cxx}"))?, path));
        objects.push(obj);
    }
    let mut support = Vec::new();
    for (lib, files) in LIBRARIES {
        let mut objs = Vec::new();
        for file in files {
            let obj = dir.join(format!("{file}.o"));
            let mut cc = Command::new(&cxx);
            include(&mut cc);
            cc.args(flags()).arg("-c").arg(manifest().join("kernels/sim").join(file)).arg("-o").arg(&obj);
            cc.stderr(std::process::Stdio::piped());
            jobs.push((cc.spawn().with_context(|| format!("starting {cxx}"))?, format!("kernels/sim/{file}")));
            objs.push(obj);
        }
        support.push((lib, objs));
    }
    let mut failures = Vec::new();
    for (job, what) in jobs {
        let out = job.wait_with_output()?;
        if !out.status.success() {
            failures.push(format!("{what}:\n{}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    if !failures.is_empty() {
        bail!("building the simulated GPU failed:\n{}", failures.join("\n"));
    }
    for (lib, mut objs) in support {
        if lib == "libcuda.so" {
            objs.extend(objects.iter().cloned());
        }
        let mut link = Command::new(&cxx);
        link.args(flags()).arg("-shared").arg(format!("-Wl,-soname,{lib}")).arg("-o").arg(dir.join(lib));
        run(link.args(&objs).arg("-lpthread"))?;
    }
    Ok(())
}

/// The folder with the built libraries: built when its sources changed.
fn built() -> Result<PathBuf> {
    let (kernels, sim, controls) = sources()?;
    let mut h = DefaultHasher::new();
    (&kernels, &sim, &controls, flags(), compiler()).hash(&mut h);
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mlrpl-sim");
    let dir = root.join(format!("{}-{:016x}", if asan() { "asan" } else { "plain" }, h.finish()));
    std::fs::create_dir_all(&root)?;
    let lock_path = root.join("build.lock");
    let lock = std::fs::File::create(&lock_path).with_context(|| format!("{}", lock_path.display()))?;
    // SAFETY: flock on a file descriptor this function owns; it is released
    // when `lock` is dropped at the end of the function.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        bail!("cannot lock {}", lock_path.display());
    }
    if !dir.join(LIBRARIES[0].0).is_file() {
        let staging = root.join(format!("staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)?;
        build(&staging, &kernels, &controls)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&staging, &dir)?;
    }
    Ok(dir)
}

static INSTALLED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();

/// Loads the libraries into this process (once) and tells the simulated
/// driver which embedded image is which kernel module.
pub fn install() -> Result<&'static Path> {
    let dir = INSTALLED.get_or_init(|| load().map_err(|e| format!("{e:#}")));
    dir.as_deref().map_err(|e| anyhow!("{e}"))
}

fn load() -> Result<PathBuf> {
    if asan() && !asan_runtime_loaded() {
        bail!("MLRPL_SIM_ASAN=1 needs the AddressSanitizer runtime preloaded: run the tests through tools/sim-asan-runner.sh");
    }
    let dir = built()?;
    let mut driver = std::ptr::null_mut();
    for (lib, _) in LIBRARIES {
        let path = CString::new(dir.join(lib).to_string_lossy().as_bytes())?;
        // SAFETY: dlopen of a library this build made; it is never closed,
        // so the handle and every symbol stay valid for the process.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            bail!("cannot load {}: {}", dir.join(lib).display(), dl_error());
        }
        if lib == "libcuda.so" {
            driver = handle;
        }
    }
    // SAFETY: the symbol is the driver's `void mlrpl_sim_register_image(const
    // void*, size_t, const char*)`, which copies the bytes and the name.
    unsafe {
        let sym = libc::dlsym(driver, c"mlrpl_sim_register_image".as_ptr());
        if sym.is_null() {
            bail!("the simulated driver has no mlrpl_sim_register_image");
        }
        let register: extern "C" fn(*const libc::c_void, usize, *const libc::c_char) = std::mem::transmute(sym);
        for module in mlrpl_engine::kernels::MODULES {
            let name = CString::new(module.name)?;
            match module.image {
                mlrpl_engine::kernels::KernelImage::Fatbin(bytes) => {
                    register(bytes.as_ptr().cast(), bytes.len(), name.as_ptr())
                }
                // Sources reach the driver as NVRTC's PTX, named by their entries.
                mlrpl_engine::kernels::KernelImage::Source(_) => {}
            }
        }
    }
    Ok(dir)
}

fn asan_runtime_loaded() -> bool {
    // SAFETY: dlsym on the global namespace with a NUL-terminated name.
    !unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__asan_init".as_ptr()) }.is_null()
}

fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated message.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        return "unknown error".into();
    }
    // SAFETY: non-null, NUL-terminated (checked above).
    unsafe { std::ffi::CStr::from_ptr(e) }.to_string_lossy().into_owned()
}

/// The message of the simulated driver's last kernel fault ("" if none).
pub fn last_fault() -> String {
    let Ok(_) = install() else { return String::new() };
    // SAFETY: the symbol is the driver's `const char* mlrpl_sim_last_fault()`,
    // returning a NUL-terminated string it owns.
    unsafe {
        let sym = libc::dlsym(libc::RTLD_DEFAULT, c"mlrpl_sim_last_fault".as_ptr());
        if sym.is_null() {
            return String::new();
        }
        let f: extern "C" fn() -> *const libc::c_char = std::mem::transmute(sym);
        std::ffi::CStr::from_ptr(f()).to_string_lossy().into_owned()
    }
}

/// How the tests pick their GPU: `MLRPL_SIM=1` always the simulator,
/// `MLRPL_SIM=0` never; unset, the simulator when no CUDA driver is present.
pub fn wanted() -> bool {
    match std::env::var("MLRPL_SIM").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        // SAFETY: is_culib_present only tries to dlopen the driver library.
        _ => !unsafe { cudarc::driver::sys::is_culib_present() },
    }
}

/// Whether this process runs its CUDA tests on the simulator (it loaded it).
pub fn active() -> bool {
    INSTALLED.get().is_some_and(|d| d.is_ok())
}

/// One line describing the simulator's schedule, for the test log.
pub fn schedule() -> String {
    let var = |n: &str, d: &str| std::env::var(n).unwrap_or_else(|_| d.to_string());
    format!(
        "order {}, grid-stride launches of at most {} blocks, {}",
        var("MLRPL_SIM_ORDER", "forward"),
        var("MLRPL_CUDA_MAX_GRID", "65535"),
        if asan() { "AddressSanitizer" } else { "no sanitizer" }
    )
}
