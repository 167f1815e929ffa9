//! Negative controls of the simulated GPU (`kernels/sim/`): it must catch
//! what it claims to. Each kernel of `tests/sim_controls/controls.cu` runs
//! twice through cudarc (the path the CUDA backend takes), with its planted
//! bug switched off (the launch must pass and give the right answer) and on
//! (the launch, or the comparison a CUDA test makes, must fail):
//! * a missing `__syncthreads` (the reader reads shared memory the others
//!   have not written yet: NaN; which reader, depends on the order);
//! * a read of never-written shared memory (NaN);
//! * a shuffle naming exited lanes, and a barrier deadlock (the launch
//!   fails, naming the kernel and the fault);
//! * an out-of-bounds shared and global write (AddressSanitizer, in a child
//!   process with the instrumented simulator, which must abort).
//!
//! And two positive checks: ballot, any/all and the four shuffles exchange
//! the right values between lanes; `mma.sync.m16n8k16` (bf16) multiplies the
//! fragments of the PTX ISA's layout.

mod common;

use common::sim;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use std::sync::Arc;

/// The simulated device's stream, with the controls module's `kernel`.
fn control(kernel: &str) -> (Arc<CudaStream>, cudarc::driver::CudaFunction) {
    sim::install().unwrap_or_else(|e| panic!("the simulated GPU could not be built or loaded: {e:#}"));
    let ctx = CudaContext::new(0).expect("the simulated device");
    // The simulated driver finds a PTX module by its entry names.
    let module = ctx.load_module(Ptx::from_src(format!(".entry {kernel}(\n"))).expect("the controls module");
    (ctx.default_stream(), module.load_function(kernel).expect("the control kernel"))
}

fn block(threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (1, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// Launches `kernel` on one block of `threads` with an output of `len` floats
/// and the int switch `flag` (plus `input` first, when given); the output,
/// or the launch's error with the simulator's fault message.
fn launch(kernel: &str, threads: u32, input: Option<&[f32]>, len: usize, flag: i32) -> Result<Vec<f32>, String> {
    let (stream, f) = control(kernel);
    let x: Option<CudaSlice<f32>> = input.map(|v| stream.clone_htod(v).unwrap());
    let mut out = stream.alloc_zeros::<f32>(len).unwrap();
    let mut b = stream.launch_builder(&f);
    if let Some(x) = &x {
        b.arg(x);
    }
    b.arg(&mut out).arg(&flag);
    // SAFETY: the arguments are the control kernel's (input, output, int);
    // the output holds `len` floats, what the kernel writes with the switch
    // off; the switched-on writes past it are the faults under test, caught
    // by the simulator.
    unsafe { b.launch(block(threads)) }.map_err(|e| format!("{e}: {}", sim::last_fault()))?;
    Ok(stream.clone_dtoh(&out).unwrap())
}

fn with_order<T>(order: &str, f: impl FnOnce() -> T) -> T {
    // The order is read at each launch; the controls run one at a time.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let before = std::env::var("MLRPL_SIM_ORDER").ok();
    // SAFETY: no other thread of this binary reads the environment while the
    // lock is held (every test here takes it).
    unsafe { std::env::set_var("MLRPL_SIM_ORDER", order) };
    let out = f();
    match before {
        // SAFETY: as above.
        Some(v) => unsafe { std::env::set_var("MLRPL_SIM_ORDER", v) },
        None => unsafe { std::env::remove_var("MLRPL_SIM_ORDER") },
    }
    out
}

/// A block sum read back by thread 0 (`last` false) or the last thread,
/// with or without its barrier, in `order`.
fn block_sum(order: &str, barrier: bool, last: bool) -> f32 {
    let x: Vec<f32> = (0..256).map(|i| i as f32).collect();
    let mode = barrier as i32 | (last as i32) << 1;
    with_order(order, || launch("control_block_sum", 256, Some(&x), 1, mode)).unwrap()[0]
}

#[test]
fn a_missing_syncthreads_is_caught_by_the_order_that_runs_its_reader_first() {
    let want = (0..256).sum::<i32>() as f32;
    for order in ["forward", "reverse", "random"] {
        for last in [false, true] {
            assert_eq!(block_sum(order, true, last), want, "{order}, last reader {last}: with its barrier");
        }
    }
    // Without the barrier the reader runs before the writers it needs, so it
    // reads NaN: thread 0 in the forward order, the last thread in the reverse
    // order. This is why the CUDA suites run under both.
    assert!(block_sum("forward", false, false).is_nan());
    assert!(block_sum("reverse", false, true).is_nan());
}

#[test]
fn a_read_of_never_written_shared_memory_is_nan() {
    let good = with_order("forward", || launch("control_unwritten_shared", 64, None, 64, 1)).unwrap();
    assert!(good.iter().all(|&v| v == 1.0), "{good:?}");
    let bad = with_order("forward", || launch("control_unwritten_shared", 64, None, 64, 0)).unwrap();
    assert!(bad.iter().all(|v| v.is_nan()), "{bad:?}");
    // What a CUDA test's comparison does with it: NaN never passes.
    let compare = std::panic::catch_unwind(|| common::assert_rel("control", &bad, &good, 1e-4));
    assert!(compare.is_err(), "the comparison must fail on NaN");
}

#[test]
fn a_shuffle_naming_an_exited_lane_fails_the_launch() {
    let good = with_order("forward", || launch("control_shuffle", 32, None, 32, 32)).unwrap();
    let want: Vec<f32> = (0..32).map(|i| (i ^ 1) as f32).collect();
    assert_eq!(good, want);
    for order in ["forward", "reverse"] {
        let err = with_order(order, || launch("control_shuffle", 32, None, 32, 16)).unwrap_err();
        assert!(err.contains("control_shuffle") && err.contains("exit"), "{order}: {err}");
    }
}

#[test]
fn a_barrier_deadlock_fails_the_launch() {
    let good = with_order("forward", || launch("control_deadlock", 64, None, 64, 0)).unwrap();
    assert!(good.iter().all(|&v| v == 1.0), "{good:?}");
    for order in ["forward", "reverse"] {
        let err = with_order(order, || launch("control_deadlock", 64, None, 64, 1)).unwrap_err();
        assert!(err.contains("control_deadlock") && err.contains("deadlock"), "{order}: {err}");
    }
}

#[test]
fn warp_votes_and_shuffles_exchange_values_between_lanes() {
    let out = with_order("reverse", || launch("control_warp_votes", 32, None, 6 * 32, 0)).unwrap();
    let bits: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
    for lane in 0..32u32 {
        let at = |k: usize| bits[k * 32 + lane as usize];
        assert_eq!(at(0), 0x4924_9249, "ballot of lane % 3 == 0, lane {lane}");
        assert_eq!(at(1), 1, "any(lane == 5), lane {lane}");
        assert_eq!(at(2), 0, "all(lane < 31), lane {lane}");
        assert_eq!(at(3), if lane < 31 { lane + 1 } else { lane }, "shuffle down, lane {lane}");
        assert_eq!(at(4), if lane > 0 { lane - 1 } else { lane }, "shuffle up, lane {lane}");
        assert_eq!(at(5), 7, "shuffle from lane 7, lane {lane}");
    }
}

#[test]
fn mma_sync_m16n8k16_multiplies_the_fragments_of_the_ptx_layout() {
    let mut rng = mlrpl_engine::rng::Rng::new(16);
    // bf16 values: f32s with their low 16 bits cleared.
    let mut bf16 = |n: usize| -> (Vec<u16>, Vec<f32>) {
        let v: Vec<f32> = rng.normal_vec(n, 1.0).iter().map(|x| f32::from_bits(x.to_bits() & 0xFFFF_0000)).collect();
        (v.iter().map(|x| (x.to_bits() >> 16) as u16).collect(), v)
    };
    let (a_bits, a) = bf16(16 * 16);
    let (b_bits, b) = bf16(16 * 8);
    let c = mlrpl_engine::rng::Rng::new(17).normal_vec(16 * 8, 1.0);
    let (stream, f) = control("control_mma");
    let (da, db, dc) =
        (stream.clone_htod(&a_bits).unwrap(), stream.clone_htod(&b_bits).unwrap(), stream.clone_htod(&c).unwrap());
    let mut dd = stream.alloc_zeros::<f32>(16 * 8).unwrap();
    let mut launch = stream.launch_builder(&f);
    launch.arg(&da).arg(&db).arg(&dc).arg(&mut dd);
    // SAFETY: control_mma's arguments: A 256 and B 128 bf16 bit patterns, C
    // and D 128 floats; one warp.
    unsafe { launch.launch(block(32)) }.unwrap_or_else(|e| panic!("{e}: {}", sim::last_fault()));
    let got = stream.clone_dtoh(&dd).unwrap();
    for row in 0..16 {
        for col in 0..8 {
            let want: f64 =
                c[row * 8 + col] as f64 + (0..16).map(|k| a[row * 16 + k] as f64 * b[k * 8 + col] as f64).sum::<f64>();
            let g = got[row * 8 + col] as f64;
            assert!((g - want).abs() <= 1e-5 * want.abs().max(1.0), "D[{row}][{col}] = {g}, want {want}");
        }
    }
}

/// Runs the ignored test `name` of this binary in a child process with the
/// AddressSanitizer-instrumented simulator; returns (success, stderr).
fn asan_child(name: &str, offset: i32) -> (bool, String) {
    let runtime = std::process::Command::new(std::env::var("CXX").unwrap_or_else(|_| "g++".into()))
        .arg("-print-file-name=libasan.so")
        .output()
        .expect("the C++ compiler");
    let runtime = String::from_utf8_lossy(&runtime.stdout).trim().to_string();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--ignored", "--nocapture", "--test-threads=1"])
        .env("LD_PRELOAD", runtime)
        .env("ASAN_OPTIONS", "detect_leaks=0")
        .env("MLRPL_SIM_ASAN", "1")
        .env("MLRPL_SIM_CONTROL_OFFSET", offset.to_string())
        .output()
        .expect("run the child");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn offset() -> i32 {
    std::env::var("MLRPL_SIM_CONTROL_OFFSET").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[test]
#[ignore = "the child of out_of_bounds_writes_are_caught_by_address_sanitizer"]
fn asan_child_shared_write() {
    let out = launch("control_shared_write", 32, None, 32, offset()).unwrap();
    assert_eq!(out[5], 5.0);
}

#[test]
#[ignore = "the child of out_of_bounds_writes_are_caught_by_address_sanitizer"]
fn asan_child_global_write() {
    let out = launch("control_global_write", 32, None, 32, offset()).unwrap();
    assert_eq!(out[5], 5.0);
}

#[test]
fn out_of_bounds_writes_are_caught_by_address_sanitizer() {
    for (child, what) in [("asan_child_shared_write", "shared"), ("asan_child_global_write", "global")] {
        let (ok, stderr) = asan_child(child, 0);
        assert!(ok, "{what}: the in-bounds launch must pass under AddressSanitizer:\n{stderr}");
        let (ok, stderr) = asan_child(child, 1);
        assert!(!ok, "{what}: a write one past the end must abort the child");
        assert!(stderr.contains("AddressSanitizer: heap-buffer-overflow"), "{what}:\n{stderr}");
    }
}
