//! The CUDA device handle: one context, one explicit compute stream (and a
//! copy stream that only the staging ring of large uploads uses), a cuBLAS
//! handle bound to the compute stream and a cuBLASLt one (made on first
//! use; its calls name the compute stream), and the kernel modules
//! of `kernels/*.cu`, loaded on first use. Cheap to clone (an `Arc`); two
//! handles are the same device only when they are clones of one another, so
//! buffers of different devices are never mixed.

use super::blas_lt::BlasLt;
use super::libs::{check_libraries, CudaLibrary};
use crate::kernels::{self, KernelImage};
use anyhow::{anyhow, bail, Context, Result};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    sys, CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, DriverError,
    PinnedHostSlice, ValidAsZeroBits,
};
use cudarc::nvrtc::{CompileOptions, Ptx};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone)]
pub struct CudaDevice(Arc<Inner>);

struct Inner {
    ordinal: usize,
    name: String,
    compute_capability: (i32, i32),
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// Where staged uploads cross PCIe, beside the compute stream.
    copy_stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// The cuBLASLt handle, workspace and plan cache (`blas_lt.rs`), made
    /// on the first product, which is when the workspace is allocated.
    blas_lt: OnceLock<BlasLt>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<(&'static str, &'static str), CudaFunction>>,
    /// Fill every new output buffer with NaN bits (0xFF bytes) so an element
    /// a kernel forgot to write shows up; for tests and `tools/gpu-check.sh`.
    poison_new_buffers: AtomicBool,
    /// Synchronise after every launch so an asynchronous fault names its
    /// kernel (`MLRPL_CUDA_SYNC=1`; slow, for debugging).
    sync_after_launch: bool,
    /// One u32 that the gather kernels raise to `id + 1` for an id out of
    /// range; read at the next download (a point that waits for the stream
    /// anyway), so an index op never synchronises on its own.
    index_fault: Mutex<CudaSlice<u32>>,
    /// Whether a kernel that may raise `index_fault` ran since the last read.
    index_fault_pending: AtomicBool,
    /// Page-locked and landing buffers that large uploads are copied
    /// through, used in turn ([`CudaDevice::upload`]).
    staging: Mutex<StagingRing>,
}

/// Uploads of at least this many bytes go through a staging slot.
const STAGED_UPLOAD_MIN_BYTES: usize = 64 * 1024;
/// Staging slots in the ring: a training step stages one image batch, so
/// a slot is rewritten four steps after its last copy was queued, long
/// after that copy ran.
const STAGING_SLOTS: usize = 4;

/// Why: a copy from pageable memory may wait for the stream to drain before
/// it returns, which would make every batch upload wait for the previous
/// step's kernels; and a copy on the compute stream waits for the kernels
/// queued before it. So a large upload goes host -> page-locked `pinned`
/// (memcpy) -> device `landing` (on the copy stream, overlapping whatever
/// the compute stream runs) -> a fresh pool buffer (a device-to-device copy
/// on the compute stream, after it waits for `copied`). The pool buffer is
/// an ordinary compute-stream buffer; the landing buffer never leaves the
/// ring, so no buffer is shared between the streams beyond the two events.
struct StagingSlot {
    pinned: PinnedHostSlice<u8>,
    /// Allocated on the copy stream, which alone writes it.
    landing: CudaSlice<u8>,
    /// Recorded on the copy stream after the host-to-device copy: `pinned`
    /// may be rewritten and `landing` read once it completes.
    copied: CudaEvent,
    /// Recorded on the compute stream after the device-to-device copy:
    /// `landing` may be rewritten once it completes.
    consumed: CudaEvent,
}

struct StagingRing {
    slots: Vec<StagingSlot>,
    next: usize,
}

impl Drop for StagingRing {
    fn drop(&mut self) {
        // Queued copies may still read buffers that are about to be freed.
        for slot in &self.slots {
            let _ = slot.copied.synchronize();
            let _ = slot.consumed.synchronize();
        }
    }
}

impl PartialEq for CudaDevice {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CudaDevice {}

impl fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CudaDevice({}, {})", self.0.ordinal, self.0.name)
    }
}

/// Bytes of the device's stream-ordered memory pool, the one every buffer
/// comes from (cudarc allocates with `cuMemAllocAsync` where the driver has
/// memory pools).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolMemory {
    /// Bytes the pool holds from the driver now, free or in use.
    pub reserved: u64,
    /// The most bytes in use at once since the device was opened or the
    /// last [`CudaDevice::reset_peak_memory`].
    pub peak_used: u64,
}

/// The handles opened so far, one per ordinal, so every `open` of a GPU
/// returns the same device (and stream).
static OPENED: Mutex<Vec<(usize, CudaDevice)>> = Mutex::new(Vec::new());

/// One CUDA kernel, ready to launch on its device's stream (see `launch!`).
pub struct Kernel {
    pub name: &'static str,
    pub func: CudaFunction,
    pub stream: Arc<CudaStream>,
    sync_after_launch: bool,
}

impl Kernel {
    /// Maps a launch result to an error naming the kernel; with
    /// `MLRPL_CUDA_SYNC=1` also waits for the kernel and reports its faults.
    pub fn check(&self, launched: Result<Option<(CudaEvent, CudaEvent)>, DriverError>) -> Result<()> {
        launched.map_err(|e| anyhow!("CUDA kernel `{}` failed to launch: {e}", self.name))?;
        if self.sync_after_launch {
            self.stream.synchronize().map_err(|e| anyhow!("CUDA kernel `{}` failed: {e}", self.name))?;
        }
        Ok(())
    }
}

/// Pastes `kernels/*.cuh` headers in place of their `#include "name.cuh"`
/// lines, for NVRTC (which is given no include path).
pub fn inline_headers(source: &str, headers: &[(&str, &str)]) -> Result<String> {
    let mut out = String::with_capacity(source.len());
    for line in source.lines() {
        let included = line.trim().strip_prefix("#include").map(|rest| rest.trim().trim_matches('"'));
        match included {
            Some(name) => {
                let (_, text) = headers
                    .iter()
                    .find(|(h, _)| *h == name)
                    .ok_or_else(|| anyhow!("kernel source includes `{name}`, which is not a kernels/*.cuh header"))?;
                for header_line in text.lines().filter(|l| l.trim() != "#pragma once") {
                    out.push_str(header_line);
                    out.push('\n');
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

impl CudaDevice {
    /// The handle of GPU `ordinal`, created on first use: a context, a
    /// stream, a cuBLAS handle. Errors are one line; a library the device
    /// needs (cuBLAS, cuBLASLt, NVRTC for source kernels) that cannot be
    /// opened is one of them, found before cudarc would panic on it.
    pub fn open(ordinal: usize) -> Result<CudaDevice> {
        // A panic while another thread held the list (none is expected: the
        // libraries are checked before use) leaves the list itself intact.
        let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, dev)) = opened.iter().find(|(o, _)| *o == ordinal) {
            return Ok(dev.clone());
        }
        if !CudaLibrary::Driver.is_present() {
            bail!("no CUDA driver library (libcuda) was found");
        }
        check_libraries()?;
        let dev = CudaDevice::create(ordinal)?;
        opened.push((ordinal, dev.clone()));
        Ok(dev)
    }

    fn create(ordinal: usize) -> Result<CudaDevice> {
        let ctx =
            CudaContext::new(ordinal).map_err(|e| anyhow!("could not create a CUDA context on GPU {ordinal}: {e}"))?;
        // SAFETY: every buffer of this device is allocated, used and freed on
        // the compute stream created below (kernels, copies and cuBLAS
        // alike), so stream order alone keeps uses apart, except the staging
        // ring's landing buffers, which live on the copy stream and are
        // ordered against the compute stream by the ring's own two events
        // (`upload`). So no per-buffer events are needed.
        unsafe { ctx.disable_event_tracking() };
        if ctx.has_async_alloc() {
            // The pool's release threshold is 0 by default: at every
            // synchronisation (each loss read) the driver unmaps the free
            // memory, and the next step maps it again. Keeping it makes the
            // pool a caching allocator: a steady-state step gets every
            // buffer from memory the pool already holds.
            set_pool_attribute(&ctx, sys::CUmemPool_attribute_enum::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, u64::MAX)
                .with_context(|| format!("could not configure the memory pool of GPU {ordinal}"))?;
        }
        let stream = ctx.new_stream().map_err(|e| anyhow!("could not create a CUDA stream on GPU {ordinal}: {e}"))?;
        let copy_stream =
            ctx.new_stream().map_err(|e| anyhow!("could not create a CUDA copy stream on GPU {ordinal}: {e}"))?;
        let blas = CudaBlas::new(stream.clone())
            .map_err(|e| anyhow!("could not create a cuBLAS handle on GPU {ordinal}: {e}"))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let compute_capability = ctx
            .compute_capability()
            .map_err(|e| anyhow!("could not read the compute capability of GPU {ordinal}: {e}"))?;
        let sync_after_launch = std::env::var_os("MLRPL_CUDA_SYNC").is_some_and(|v| !v.is_empty() && v != "0");
        let index_fault =
            stream.alloc_zeros::<u32>(1).map_err(|e| anyhow!("could not allocate 4 bytes on GPU {ordinal}: {e}"))?;
        let staging = StagingRing { slots: Vec::new(), next: 0 };
        Ok(CudaDevice(Arc::new(Inner {
            ordinal,
            name,
            compute_capability,
            ctx,
            stream,
            copy_stream,
            blas,
            blas_lt: OnceLock::new(),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            poison_new_buffers: AtomicBool::new(false),
            sync_after_launch,
            index_fault: Mutex::new(index_fault),
            index_fault_pending: AtomicBool::new(false),
            staging: Mutex::new(staging),
        })))
    }

    pub fn ordinal(&self) -> usize {
        self.0.ordinal
    }

    /// The GPU's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn compute_capability(&self) -> (i32, i32) {
        self.0.compute_capability
    }

    /// When on, every buffer a primitive allocates for its output starts as
    /// NaN (all bits set), so an element no kernel writes fails a comparison.
    pub fn set_poison_new_buffers(&self, on: bool) {
        self.0.poison_new_buffers.store(on, Ordering::Relaxed);
    }

    /// The memory pool's figures; None where the driver allocates without
    /// pools (then every buffer is a `cuMemAlloc`).
    pub fn pool_memory(&self) -> Result<Option<PoolMemory>> {
        if !self.0.ctx.has_async_alloc() {
            return Ok(None);
        }
        use sys::CUmemPool_attribute_enum::{CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, CU_MEMPOOL_ATTR_USED_MEM_HIGH};
        Ok(Some(PoolMemory {
            reserved: pool_attribute(&self.0.ctx, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?,
            peak_used: pool_attribute(&self.0.ctx, CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
        }))
    }

    /// cuBLASLt plans made so far, one per distinct product shape: a
    /// steady-state training step adds none.
    pub fn gemm_plans(&self) -> usize {
        self.0.blas_lt.get().map_or(0, BlasLt::plan_count)
    }

    /// Starts a new peak for [`PoolMemory::peak_used`].
    pub fn reset_peak_memory(&self) -> Result<()> {
        if self.0.ctx.has_async_alloc() {
            // The driver accepts only 0 for this attribute.
            set_pool_attribute(&self.0.ctx, sys::CUmemPool_attribute_enum::CU_MEMPOOL_ATTR_USED_MEM_HIGH, 0)?;
        }
        Ok(())
    }

    /// Waits for all work queued on the device's stream.
    pub fn synchronize(&self) -> Result<()> {
        self.0.stream.synchronize().map_err(|e| anyhow!("CUDA stream synchronisation failed: {e}"))
    }

    /// Milliseconds of GPU time between the start and the end of the work
    /// `queue` puts on the device's stream, measured with CUDA events (so
    /// the host's launch calls are not counted, only the stream's timeline).
    /// Waits for earlier work first and for the queued work at the end.
    pub fn time_ms(&self, queue: impl FnOnce() -> Result<()>) -> Result<f64> {
        use sys::CUevent_flags_enum::CU_EVENT_DEFAULT;
        let stream = &self.0.stream;
        self.synchronize()?;
        let start = stream
            .record_event(Some(CU_EVENT_DEFAULT))
            .map_err(|e| anyhow!("could not record a CUDA timing event: {e}"))?;
        queue()?;
        let end = stream
            .record_event(Some(CU_EVENT_DEFAULT))
            .map_err(|e| anyhow!("could not record a CUDA timing event: {e}"))?;
        let ms = start.elapsed_ms(&end).map_err(|e| anyhow!("could not time the queued CUDA work: {e}"))?;
        Ok(f64::from(ms))
    }

    pub(crate) fn blas(&self) -> &CudaBlas {
        &self.0.blas
    }

    /// The compute stream, which every kernel, copy and library call uses.
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.0.stream
    }

    /// The cuBLASLt handle, its workspace and plan cache, made on first use.
    pub(crate) fn blas_lt(&self) -> Result<&BlasLt> {
        if let Some(lt) = self.0.blas_lt.get() {
            return Ok(lt);
        }
        let lt = BlasLt::new(self, BlasLt::workspace_bytes(self.0.compute_capability.0))?;
        // Another thread may have won the race; its handle is kept, ours dropped.
        Ok(self.0.blas_lt.get_or_init(|| lt))
    }

    /// Kernel `name` of module `kernels/<module>.cu`.
    pub(crate) fn kernel(&self, module: &'static str, name: &'static str) -> Result<Kernel> {
        let func = {
            let mut functions = self.0.functions.lock().expect("CUDA function cache lock poisoned");
            match functions.get(&(module, name)) {
                Some(f) => f.clone(),
                None => {
                    let loaded = self.module(module)?;
                    let f = loaded
                        .load_function(name)
                        .map_err(|e| anyhow!("kernels/{module}.cu has no kernel `{name}`: {e}"))?;
                    functions.insert((module, name), f.clone());
                    f
                }
            }
        };
        Ok(Kernel { name, func, stream: self.0.stream.clone(), sync_after_launch: self.0.sync_after_launch })
    }

    fn module(&self, name: &'static str) -> Result<Arc<CudaModule>> {
        let mut modules = self.0.modules.lock().expect("CUDA module cache lock poisoned");
        if let Some(m) = modules.get(name) {
            return Ok(m.clone());
        }
        let embedded = kernels::module(name).with_context(|| format!("no kernels/{name}.cu in this build"))?;
        let ptx = match embedded.image {
            KernelImage::Fatbin(bytes) => Ptx::from_binary(bytes.to_vec()),
            KernelImage::Source(source) => {
                let (major, minor) = self.0.compute_capability;
                let mut options: Vec<String> = kernels::NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect();
                options.push(format!("--gpu-architecture=sm_{major}{minor}"));
                let source = inline_headers(source, kernels::HEADERS)?;
                cudarc::nvrtc::compile_ptx_with_opts(source, CompileOptions { options, ..Default::default() })
                    .map_err(|e| anyhow!("NVRTC could not compile kernels/{name}.cu for sm_{major}{minor}: {e}"))?
            }
        };
        let loaded = self
            .0
            .ctx
            .load_module(ptx)
            .map_err(|e| anyhow!("could not load kernels/{name}.cu on GPU {}: {e}", self.0.ordinal))?;
        modules.insert(name, loaded.clone());
        Ok(loaded)
    }

    /// An output buffer of `len` elements: uninitialised (every kernel that
    /// fills one writes each element), or NaN bits when poisoning is on.
    pub(crate) fn alloc<T: DeviceRepr>(&self, len: usize) -> Result<CudaSlice<T>> {
        // SAFETY: the memory is uninitialised; callers hand it to a kernel or
        // copy that writes every element before anything reads it (each
        // kernel header says which elements it writes), or poison it below.
        let mut buf =
            unsafe { self.0.stream.alloc::<T>(len) }.map_err(|e| self.alloc_error(e, len * size_of::<T>()))?;
        if self.0.poison_new_buffers.load(Ordering::Relaxed) && len > 0 {
            self.poison(&mut buf)?;
        }
        Ok(buf)
    }

    pub(crate) fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.0.stream.alloc_zeros::<T>(len).map_err(|e| self.alloc_error(e, len * size_of::<T>()))
    }

    fn poison<T: DeviceRepr>(&self, buf: &mut CudaSlice<T>) -> Result<()> {
        use cudarc::driver::DevicePtrMut;
        let bytes = buf.num_bytes();
        let (ptr, _record) = buf.device_ptr_mut(&self.0.stream);
        // SAFETY: `ptr` is the start of `buf`, `bytes` its exact size, and the
        // memset is queued on the stream that owns the buffer.
        unsafe { cudarc::driver::result::memset_d8_async(ptr, 0xFF, bytes, self.0.stream.cu_stream()) }
            .map_err(|e| anyhow!("could not poison a CUDA buffer of {bytes} bytes: {e}"))
    }

    /// One line for a failed allocation; out of memory names the bytes asked
    /// and free and suggests a smaller batch.
    fn alloc_error(&self, e: DriverError, bytes: usize) -> anyhow::Error {
        if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            let (free, total) = self.0.ctx.mem_get_info().unwrap_or((0, 0));
            anyhow!(
                "CUDA out of memory on GPU {} ({}): asked for {bytes} bytes with {free} of {total} bytes free; \
                 try a smaller --batch-size",
                self.0.ordinal,
                self.0.name
            )
        } else {
            anyhow!("CUDA allocation of {bytes} bytes on GPU {} failed: {e}", self.0.ordinal)
        }
    }

    /// A new device buffer holding `values`. The copy is queued; uploads of
    /// [`STAGED_UPLOAD_MIN_BYTES`] or more go through the staging ring and
    /// cross PCIe on the copy stream, so the call returns without waiting
    /// for the GPU and the transfer overlaps the compute stream's kernels.
    pub(crate) fn upload<T: DeviceRepr>(&self, values: &[T]) -> Result<CudaSlice<T>> {
        let bytes = std::mem::size_of_val(values);
        let copy_error = |e: DriverError| anyhow!("copying {bytes} bytes to GPU {} failed: {e}", self.0.ordinal);
        let mut buf = self.alloc::<T>(values.len())?;
        if bytes == 0 {
            return Ok(buf);
        }
        if bytes < STAGED_UPLOAD_MIN_BYTES {
            self.0.stream.memcpy_htod(values, &mut buf).map_err(copy_error)?;
            return Ok(buf);
        }
        let mut ring = self.0.staging.lock().unwrap_or_else(|e| e.into_inner());
        if ring.slots.len() < STAGING_SLOTS {
            let slot = self.staging_slot(bytes)?;
            ring.slots.push(slot);
        }
        let index = ring.next % ring.slots.len();
        ring.next = ring.next.wrapping_add(1);
        let slot = &mut ring.slots[index];
        // The slot's previous host-to-device copy must have read `pinned`
        // before its bytes change.
        slot.copied.synchronize().map_err(copy_error)?;
        if slot.pinned.len() < bytes {
            // The compute stream may still read the old landing buffer.
            slot.consumed.synchronize().map_err(copy_error)?;
            *slot = self.staging_slot(bytes)?;
        }
        let staged = &mut slot.pinned.as_mut_slice().map_err(copy_error)?[..bytes];
        // SAFETY: `values` is `bytes` bytes of plain device-representable
        // data (f32, u32, f16, bf16), viewed as bytes for the copy.
        staged.copy_from_slice(unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), bytes) });
        let (copy_stream, stream) = (&self.0.copy_stream, &self.0.stream);
        // The landing buffer is rewritten only after the compute stream's
        // last read of it.
        copy_stream.wait(&slot.consumed).map_err(copy_error)?;
        use cudarc::driver::{DevicePtr, DevicePtrMut};
        {
            let (landing, _record) = slot.landing.device_ptr_mut(copy_stream);
            // SAFETY: `landing` holds at least `bytes` bytes (checked above);
            // `staged` is page-locked memory that stays untouched until
            // `copied`, recorded right after on the copy stream, completes.
            unsafe { cudarc::driver::result::memcpy_htod_async(landing, staged, copy_stream.cu_stream()) }
                .map_err(copy_error)?;
        }
        slot.copied.record(copy_stream).map_err(copy_error)?;
        stream.wait(&slot.copied).map_err(copy_error)?;
        {
            let (src, _record) = slot.landing.device_ptr(stream);
            let (dst, _record) = buf.device_ptr_mut(stream);
            // SAFETY: both buffers hold at least `bytes` bytes (`buf` exactly
            // values.len() elements of T); the compute stream waited for
            // `copied` above, so the landing bytes are there, and `consumed`,
            // recorded right after, keeps the copy stream from rewriting them
            // before this copy has read them.
            unsafe { cudarc::driver::result::memcpy_dtod_async(dst, src, bytes, stream.cu_stream()) }
                .map_err(copy_error)?;
        }
        slot.consumed.record(stream).map_err(copy_error)?;
        Ok(buf)
    }

    /// A staging slot of `bytes` bytes: page-locked host memory, a landing
    /// buffer on the copy stream, and its two events (not yet recorded, so
    /// waiting on them returns at once).
    fn staging_slot(&self, bytes: usize) -> Result<StagingSlot> {
        let error =
            |e: DriverError| anyhow!("could not set up a {bytes}-byte upload buffer on GPU {}: {e}", self.0.ordinal);
        // SAFETY: the page-locked buffer is written before any copy reads it.
        let pinned = unsafe { self.0.ctx.alloc_pinned::<u8>(bytes) }.map_err(error)?;
        // SAFETY: the landing buffer is written by a host-to-device copy
        // before the device-to-device copy reads it.
        let landing = unsafe { self.0.copy_stream.alloc::<u8>(bytes) }.map_err(|e| self.alloc_error(e, bytes))?;
        let copied = self.0.ctx.new_event(None).map_err(error)?;
        let consumed = self.0.ctx.new_event(None).map_err(error)?;
        Ok(StagingSlot { pinned, landing, copied, consumed })
    }

    pub(crate) fn download<T: DeviceRepr>(&self, buf: &CudaSlice<T>) -> Result<Vec<T>> {
        if buf.is_empty() {
            return Ok(Vec::new());
        }
        let values = self
            .0
            .stream
            .clone_dtoh(buf)
            .map_err(|e| anyhow!("copying {} bytes from GPU {} failed: {e}", buf.num_bytes(), self.0.ordinal))?;
        self.check_index_fault()?;
        Ok(values)
    }

    /// Runs `launch` with the device's index-fault flag, for a kernel that
    /// raises it to `id + 1` on an out-of-range id instead of reading or
    /// writing out of bounds; the next download reports it.
    pub(crate) fn with_index_fault<R>(&self, launch: impl FnOnce(&mut CudaSlice<u32>) -> Result<R>) -> Result<R> {
        let mut flag = self.0.index_fault.lock().unwrap_or_else(|e| e.into_inner());
        self.0.index_fault_pending.store(true, Ordering::Relaxed);
        launch(&mut flag)
    }

    /// Fails (once) if a gather kernel met an out-of-range id since the last
    /// check. The copy follows the caller's download on the same stream, so
    /// it sees every kernel queued before it.
    fn check_index_fault(&self) -> Result<()> {
        if !self.0.index_fault_pending.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let mut flag = self.0.index_fault.lock().unwrap_or_else(|e| e.into_inner());
        let read_error = |e| anyhow!("reading the index-fault flag of GPU {} failed: {e}", self.0.ordinal);
        let value = self.0.stream.clone_dtoh(&*flag).map_err(read_error)?[0];
        if value > 0 {
            self.0.stream.memset_zeros(&mut *flag).map_err(read_error)?;
            bail!(
                "index {} was out of range for the table of an index_select or index_add on GPU {} \
                 (found at the first read from the GPU after the launch)",
                value - 1,
                self.0.ordinal
            );
        }
        Ok(())
    }

    /// A device-side copy of `buf` (queued on the stream).
    pub(crate) fn copy<T: DeviceRepr>(&self, buf: &CudaSlice<T>) -> Result<CudaSlice<T>> {
        let mut out = self.alloc::<T>(buf.len())?;
        if !buf.is_empty() {
            self.0
                .stream
                .memcpy_dtod(buf, &mut out)
                .map_err(|e| anyhow!("device-to-device copy of {} bytes failed: {e}", buf.num_bytes()))?;
        }
        Ok(out)
    }

    /// Fails unless `len` floats of dynamic shared memory fit one block.
    pub(crate) fn check_shared(&self, what: &str, floats: usize) -> Result<u32> {
        // 48 KiB per block without an opt-in, less 1 KiB for the kernels'
        // static __shared__ reduction scratch.
        const LIMIT: usize = 47 * 1024;
        let bytes = floats * 4;
        if bytes > LIMIT {
            bail!("{what} needs {bytes} bytes of shared memory per block, more than the {LIMIT} this kernel may use");
        }
        Ok(bytes as u32)
    }
}

/// The default memory pool of the context's device.
fn default_pool(ctx: &CudaContext) -> Result<sys::CUmemoryPool> {
    let mut pool = std::ptr::null_mut();
    // SAFETY: `pool` is a valid out-pointer and the device handle comes from
    // a live context.
    unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) }
        .result()
        .map_err(|e| anyhow!("could not get the default memory pool: {e}"))?;
    Ok(pool)
}

/// Sets a 64-bit attribute of the default memory pool.
fn set_pool_attribute(ctx: &CudaContext, attribute: sys::CUmemPool_attribute, value: u64) -> Result<()> {
    let mut value = value;
    // SAFETY: the attributes passed here (release threshold, used-memory
    // high) are 64-bit, and `value` lives across the call.
    unsafe { sys::cuMemPoolSetAttribute(default_pool(ctx)?, attribute, (&mut value as *mut u64).cast()) }
        .result()
        .map_err(|e| anyhow!("could not set memory pool attribute {attribute:?}: {e}"))
}

/// Reads a 64-bit attribute of the default memory pool.
fn pool_attribute(ctx: &CudaContext, attribute: sys::CUmemPool_attribute) -> Result<u64> {
    let mut value = 0u64;
    // SAFETY: the attributes read here (reserved, used-memory high) are
    // 64-bit, and `value` is a valid out-pointer.
    unsafe { sys::cuMemPoolGetAttribute(default_pool(ctx)?, attribute, (&mut value as *mut u64).cast()) }
        .result()
        .map_err(|e| anyhow!("could not read memory pool attribute {attribute:?}: {e}"))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_pasted_for_nvrtc() {
        let headers = [("common.cuh", "#pragma once\n__device__ int one() { return 1; }\n")];
        let source = "// k\n#include \"common.cuh\"\nextern \"C\" __global__ void k() {}\n";
        let out = inline_headers(source, &headers).unwrap();
        assert_eq!(out, "// k\n__device__ int one() { return 1; }\nextern \"C\" __global__ void k() {}\n");
        let err = inline_headers("#include \"missing.cuh\"\n", &headers).unwrap_err();
        assert!(err.to_string().contains("missing.cuh"), "{err}");
    }

    #[test]
    fn every_kernel_source_resolves_its_includes() {
        for module in kernels::MODULES {
            let path = format!("{}/kernels/{}.cu", env!("CARGO_MANIFEST_DIR"), module.name);
            let source = std::fs::read_to_string(&path).unwrap();
            let pasted = inline_headers(&source, kernels::HEADERS).unwrap();
            let left = pasted.lines().any(|l| l.trim_start().starts_with("#include"));
            assert!(!left, "{path}: an #include line is left after pasting the headers");
        }
    }
}
