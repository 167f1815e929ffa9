//! cuBLASLt: the handle, its workspace and a cache of matmul plans.
//!
//! A plan is what cuBLASLt needs besides the pointers: the operation
//! descriptor (compute type, transposes, epilogue), the three matrix
//! layouts and the algorithm its heuristic picked. Making those and querying
//! the heuristic costs host time on every call, for the same few dozen
//! shapes in every training step, so plans are made once per shape and
//! kept; a call then only sets the bias pointer and enqueues the matmul.
//!
//! A shape the heuristic has no algorithm for, or whose heuristic query
//! fails with any error status, is remembered too, and reported as
//! [`Launch::Unsupported`], so the caller computes it another way (cuBLAS
//! sgemm) without asking again. The cache holds at most [`MAX_PLANS`] shapes
//! (a run has a few dozen; it is emptied when full).
//!
//! The workspace comes from the device's pool (32 MiB on Hopper, 4 MiB
//! before, as NVIDIA recommends), so running out of memory there is the
//! pool's one-line error, not a panic.

use super::device::CudaDevice;
use anyhow::{anyhow, Result};
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublaslt::result::{self as lt, CublasError};
use cudarc::cublaslt::sys::{
    self, cublasLtMatmulDescAttributes_t as DescAttr, cublasLtMatrixLayoutAttribute_t as LayoutAttr,
};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

/// A product in cuBLASLt's column-major terms (see `gemm.rs` for how a
/// row-major product maps onto it); batched when `batch > 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LtShape {
    pub data_type: sys::cudaDataType,
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub lda: i64,
    pub ldb: i64,
    pub ldc: i64,
    pub batch: i32,
    pub stride_a: i64,
    pub stride_b: i64,
    pub stride_c: i64,
    /// A bias of m elements added to every column of C in the epilogue.
    pub bias: bool,
}

/// Shapes the plan cache holds before it starts again.
const MAX_PLANS: usize = 1024;

/// What [`BlasLt::matmul`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launch {
    Queued,
    /// cuBLASLt's heuristic gave no algorithm for this shape (none, or an
    /// error); nothing was queued.
    Unsupported,
}

/// The device addresses of one call.
pub struct LtOperands {
    pub a: u64,
    pub b: u64,
    pub bias: Option<u64>,
    pub out: u64,
}

/// An owned cuBLASLt descriptor handle, destroyed on drop.
macro_rules! descriptor {
    ($name:ident, $handle:ty, $destroy:path) => {
        struct $name($handle);

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: the handle was made by the matching create call
                // and is destroyed once, here. A failure leaks a host
                // descriptor at worst, so it is ignored.
                let _ = unsafe { $destroy(self.0) };
            }
        }
    };
}

descriptor!(Layout, sys::cublasLtMatrixLayout_t, lt::destroy_matrix_layout);
descriptor!(Desc, sys::cublasLtMatmulDesc_t, lt::destroy_matmul_desc);
descriptor!(Pref, sys::cublasLtMatmulPreference_t, lt::destroy_matmul_pref);

impl Layout {
    fn new(
        data_type: sys::cudaDataType,
        rows: u64,
        cols: u64,
        ld: i64,
        batch: i32,
        stride: i64,
    ) -> Result<Layout, CublasError> {
        let layout = Layout(lt::create_matrix_layout(data_type, rows, cols, ld)?);
        if batch > 1 {
            // SAFETY: the layout is live, and each value has the type its
            // attribute documents (i32 count, i64 stride).
            unsafe {
                layout.set(LayoutAttr::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch)?;
                layout.set(LayoutAttr::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride)?;
            }
        }
        Ok(layout)
    }

    /// # Safety
    /// `T` must be the type of `attr`.
    unsafe fn set<T>(&self, attr: LayoutAttr, value: &T) -> Result<(), CublasError> {
        lt::set_matrix_layout_attribute(self.0, attr, (value as *const T).cast(), size_of::<T>())
    }
}

impl Desc {
    /// # Safety
    /// `T` must be the type of `attr`.
    unsafe fn set<T>(&self, attr: DescAttr, value: &T) -> Result<(), CublasError> {
        lt::set_matmul_desc_attribute(self.0, attr, (value as *const T).cast(), size_of::<T>())
    }
}

struct Plan {
    desc: Desc,
    a: Layout,
    b: Layout,
    c: Layout,
    algo: sys::cublasLtMatmulAlgo_t,
}

/// The algorithm of a heuristic query, or None (the caller falls back to
/// cuBLAS sgemm, and the shape is remembered as unsupported) for any
/// failure: no algorithm (cudarc reports `CUBLAS_STATUS_NOT_SUPPORTED`),
/// an error status of the query itself (e.g. `CUBLAS_STATUS_INVALID_VALUE`
/// for a layout this cuBLASLt version does not take) or of the result's
/// `state`. A product cuBLASLt cannot plan is still a product sgemm can do.
fn heuristic_plan(
    heuristic: Result<sys::cublasLtMatmulHeuristicResult_t, CublasError>,
) -> Option<sys::cublasLtMatmulAlgo_t> {
    heuristic.ok().map(|h| h.algo)
}

/// The cuBLASLt handle of one device, its workspace and its plans.
pub struct BlasLt {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    /// None: the heuristic found no algorithm for the shape, or failed.
    plans: Mutex<HashMap<LtShape, Option<Plan>>>,
}

// SAFETY: the handle and descriptors are host objects that cuBLASLt lets any
// thread use; every use goes through the `plans` mutex, so no two threads
// touch them at once.
unsafe impl Send for BlasLt {}
unsafe impl Sync for BlasLt {}

impl Drop for BlasLt {
    fn drop(&mut self) {
        if let Ok(plans) = self.plans.get_mut() {
            plans.clear();
        }
        // SAFETY: made in `new`, destroyed once, after its plans.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

impl BlasLt {
    /// A handle and a workspace of `workspace_bytes` from `dev`'s pool.
    pub fn new(dev: &CudaDevice, workspace_bytes: usize) -> Result<BlasLt> {
        let workspace = dev.alloc::<u8>(workspace_bytes)?;
        let handle = lt::create_handle()
            .map_err(|e| anyhow!("could not create a cuBLASLt handle on GPU {}: {e}", dev.ordinal()))?;
        Ok(BlasLt { handle, workspace, plans: Mutex::new(HashMap::new()) })
    }

    /// The workspace NVIDIA recommends for compute capability `major`.
    pub fn workspace_bytes(major: i32) -> usize {
        if major >= 9 {
            32 << 20
        } else {
            4 << 20
        }
    }

    /// Shapes planned so far (one entry per distinct shape, supported or not).
    pub fn plan_count(&self) -> usize {
        self.plans.lock().map_or(0, |p| p.len())
    }

    /// The plan of `shape`, or None when the heuristic gave no algorithm
    /// (see [`heuristic_plan`]); an error only when a descriptor could not
    /// be made.
    fn plan(&self, shape: &LtShape, bias: Option<u64>) -> Result<Option<Plan>, CublasError> {
        let desc = Desc(lt::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType_t::CUDA_R_32F,
        )?);
        let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
        let epilogue = if shape.bias {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
        } else {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT
        };
        // SAFETY: each value has its attribute's type (cublasOperation_t,
        // cublasLtEpilogue_t, a device address).
        unsafe {
            desc.set(DescAttr::CUBLASLT_MATMUL_DESC_TRANSA, &op(shape.trans_a))?;
            desc.set(DescAttr::CUBLASLT_MATMUL_DESC_TRANSB, &op(shape.trans_b))?;
            desc.set(DescAttr::CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue)?;
            if let Some(bias) = bias {
                desc.set(DescAttr::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias)?;
            }
        }
        let (a_rows, a_cols) = if shape.trans_a { (shape.k, shape.m) } else { (shape.m, shape.k) };
        let (b_rows, b_cols) = if shape.trans_b { (shape.n, shape.k) } else { (shape.k, shape.n) };
        let a = Layout::new(shape.data_type, a_rows, a_cols, shape.lda, shape.batch, shape.stride_a)?;
        let b = Layout::new(shape.data_type, b_rows, b_cols, shape.ldb, shape.batch, shape.stride_b)?;
        let c = Layout::new(shape.data_type, shape.m, shape.n, shape.ldc, shape.batch, shape.stride_c)?;
        let pref = Pref(lt::create_matmul_pref()?);
        let workspace = self.workspace.len();
        // SAFETY: the preference is live and the value is the documented
        // size_t byte count.
        unsafe {
            lt::set_matmul_pref_attribute(
                pref.0,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&workspace as *const usize).cast(),
                size_of::<usize>(),
            )?;
        }
        // SAFETY: every descriptor passed is live; C and D share a layout.
        let heuristic = unsafe { lt::get_matmul_algo_heuristic(self.handle, desc.0, a.0, b.0, c.0, c.0, pref.0) };
        Ok(heuristic_plan(heuristic).map(|algo| Plan { desc, a, b, c, algo }))
    }

    /// Enqueues `out = op(A) op(B) (+ bias)` on `stream`, making and caching
    /// the plan of `shape` on first use, or reports that cuBLASLt has none.
    /// `what` names the product in errors.
    ///
    /// # Safety
    /// The addresses must point at device buffers of `stream`'s context
    /// large enough for `shape` (A, B and the output with their leading
    /// dimensions and batch strides, the bias m elements) in its data type,
    /// each a whole pool allocation (256-byte aligned, as the heuristic
    /// assumes), and the output must not overlap the inputs.
    pub unsafe fn matmul(
        &self,
        shape: &LtShape,
        operands: &LtOperands,
        stream: &CudaStream,
        what: &dyn Fn() -> String,
    ) -> Result<Launch> {
        if shape.bias != operands.bias.is_some() {
            return Err(anyhow!("cuBLASLt {}: the plan and the operands disagree on the bias", what()));
        }
        let mut plans = self.plans.lock().map_err(|_| anyhow!("the cuBLASLt plan cache lock is poisoned"))?;
        if !plans.contains_key(shape) {
            let plan =
                self.plan(shape, operands.bias).map_err(|e| anyhow!("cuBLASLt could not plan {}: {e}", what()))?;
            if plans.len() >= MAX_PLANS {
                plans.clear();
            }
            plans.insert(*shape, plan);
        }
        let Some(plan) = &plans[shape] else { return Ok(Launch::Unsupported) };
        if let Some(bias) = operands.bias {
            plan.desc
                .set(DescAttr::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias)
                .map_err(|e| anyhow!("cuBLASLt {}: could not set the bias: {e}", what()))?;
        }
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (workspace, _record) = self.workspace.device_ptr(stream);
        lt::matmul(
            self.handle,
            plan.desc.0,
            (&alpha as *const f32).cast(),
            (&beta as *const f32).cast(),
            operands.a as *const c_void,
            plan.a.0,
            operands.b as *const c_void,
            plan.b.0,
            operands.out as *const c_void,
            plan.c.0,
            operands.out as *mut c_void,
            plan.c.0,
            &plan.algo,
            workspace as *mut c_void,
            self.workspace.len(),
            stream.cu_stream() as sys::cudaStream_t,
        )
        .map_err(|e| anyhow!("cuBLASLt matmul {} failed: {e}", what()))?;
        Ok(Launch::Queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_heuristic_failure_is_a_fallback_and_a_result_is_a_plan() {
        use sys::cublasStatus_t as S;
        for status in [S::CUBLAS_STATUS_NOT_SUPPORTED, S::CUBLAS_STATUS_INVALID_VALUE, S::CUBLAS_STATUS_ARCH_MISMATCH] {
            assert!(heuristic_plan(Err(CublasError(status))).is_none(), "{status:?} is not a fallback");
        }
        // SAFETY: the result is a plain C struct; all-zero bytes are a valid value.
        let mut found: sys::cublasLtMatmulHeuristicResult_t = unsafe { std::mem::zeroed() };
        found.algo.data[0] = 7;
        assert_eq!(heuristic_plan(Ok(found)).map(|algo| algo.data[0]), Some(7));
    }
}
