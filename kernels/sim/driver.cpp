/*
The simulated GPU's CUDA driver API: the part of libcuda that cudarc and the
CUDA backend call, over host memory and the simulator's runtime. Built as a
library whose SONAME is "libcuda.so" (tests/common/sim.rs), so that once a
test has loaded it, cudarc's own dlopen("libcuda.so") finds this one and the
backend runs unchanged: its grids, blocks, shared-memory sizes, argument
lists, memory pool, staging ring and events all go through here.

* Device memory is host memory: a device pointer is the address of a heap
  block (AddressSanitizer, when the build has it, sees every access).
* Every stream operation runs when it is enqueued, so stream order, events
  and cross-stream waits hold trivially; an event's time is the host clock
  when it was recorded.
* A module is found by the fatbin the backend loads (the test registers
  each embedded one with mlrpl_sim_register_image) or, for PTX, by its
  `.entry` names.
* A kernel fault (deadlock, bad warp mask, too much shared memory) fails the
  launch with CUDA_ERROR_LAUNCH_FAILED and prints one line naming the kernel
  and block; mlrpl_sim_last_fault() returns it.
*/
#include "sim.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

namespace {

enum : CUresult {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

struct Context {};
struct Stream {};
struct Event {
    double ms = 0;
};
struct Module {
    std::string name;
};
struct Function {
    const sim::KernelInfo* kernel;
    size_t max_dynamic_shared = 0;
};
struct MemPool {};

Context the_context;
MemPool the_pool;
std::mutex state_lock;
std::vector<std::pair<std::string, std::string>> images;  // (bytes, module)
std::map<CUdeviceptr, size_t> allocations;
size_t used_now = 0, used_high = 0, reserved = 0;
std::string last_fault;

constexpr uint32_t FATBIN_MAGIC = 0xBA55ED50u;

// What a simulated H100-class device reports.
constexpr int SM_COUNT = 132;
constexpr size_t TOTAL_MEMORY = 80ull << 30;

double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

CUresult allocate(CUdeviceptr* dptr, size_t bytes) {
    void* p = malloc(bytes ? bytes : 1);
    if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
    std::lock_guard<std::mutex> g(state_lock);
    *dptr = reinterpret_cast<CUdeviceptr>(p);
    allocations[*dptr] = bytes;
    used_now += bytes;
    used_high = used_now > used_high ? used_now : used_high;
    reserved = used_now > reserved ? used_now : reserved;
    return CUDA_SUCCESS;
}

CUresult release(CUdeviceptr dptr) {
    std::lock_guard<std::mutex> g(state_lock);
    auto it = allocations.find(dptr);
    if (it == allocations.end()) return CUDA_ERROR_INVALID_VALUE;
    used_now -= it->second;
    allocations.erase(it);
    free(reinterpret_cast<void*>(dptr));
    return CUDA_SUCCESS;
}

// The module whose kernels are the `.entry` functions of a PTX text.
std::string module_of_ptx(const char* ptx) {
    std::string text(ptx);
    size_t at = text.find(".entry ");
    if (at == std::string::npos) return "";
    size_t start = at + 7, end = start;
    while (end < text.size() && (isalnum((unsigned char)text[end]) || text[end] == '_')) end++;
    std::vector<std::string> found = sim::modules_with_kernel(text.substr(start, end - start));
    return found.size() == 1 ? found[0] : "";
}

}  // namespace

#define API extern "C" __attribute__((visibility("default")))

// ---------------------------------------------------------------------------
// Test hooks.

API void mlrpl_sim_register_image(const void* image, size_t bytes, const char* module) {
    std::lock_guard<std::mutex> g(state_lock);
    images.emplace_back(std::string(static_cast<const char*>(image), bytes), module);
}

API const char* mlrpl_sim_last_fault() { return last_fault.c_str(); }

// ---------------------------------------------------------------------------
// Initialisation, devices, contexts.

API CUresult cuInit(unsigned) { return CUDA_SUCCESS; }
API CUresult cuDriverGetVersion(int* v) { *v = 13000; return CUDA_SUCCESS; }
API CUresult cuDeviceGetCount(int* n) { *n = 1; return CUDA_SUCCESS; }

API CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    snprintf(name, (size_t)len, "mlrpl simulated GPU");
    return CUDA_SUCCESS;
}

API CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) { *bytes = TOTAL_MEMORY; return CUDA_SUCCESS; }

API CUresult cuDeviceGetAttribute(int* value, int attribute, CUdevice) {
    switch (attribute) {
        case 1: *value = 1024; break;     // MAX_THREADS_PER_BLOCK
        case 2: case 3: case 4: *value = attribute == 2 ? 1024 : (attribute == 3 ? 1024 : 64); break;
        case 5: *value = 2147483647; break;  // MAX_GRID_DIM_X
        case 6: case 7: *value = 65535; break;
        case 8: *value = 49152; break;    // MAX_SHARED_MEMORY_PER_BLOCK
        case 10: *value = 32; break;      // WARP_SIZE
        case 16: *value = SM_COUNT; break;  // MULTIPROCESSOR_COUNT
        case 75: *value = 9; break;       // COMPUTE_CAPABILITY_MAJOR
        case 76: *value = 0; break;       // COMPUTE_CAPABILITY_MINOR
        case 97: *value = 232448; break;  // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        case 115: *value = 1; break;      // MEMORY_POOLS_SUPPORTED
        default: *value = 0; break;
    }
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxRetain(Context** ctx, CUdevice) { *ctx = &the_context; return CUDA_SUCCESS; }
API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
API CUresult cuCtxSetCurrent(Context*) { return CUDA_SUCCESS; }
API CUresult cuCtxGetCurrent(Context** ctx) { *ctx = &the_context; return CUDA_SUCCESS; }
API CUresult cuCtxPushCurrent_v2(Context*) { return CUDA_SUCCESS; }
API CUresult cuCtxPopCurrent_v2(Context** ctx) { if (ctx) *ctx = &the_context; return CUDA_SUCCESS; }
API CUresult cuCtxGetDevice(CUdevice* d) { *d = 0; return CUDA_SUCCESS; }
API CUresult cuCtxSynchronize() { return CUDA_SUCCESS; }

API CUresult cuGetErrorName(CUresult e, const char** s) {
    switch (e) {
        case CUDA_SUCCESS: *s = "CUDA_SUCCESS"; break;
        case CUDA_ERROR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
        case CUDA_ERROR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
        case CUDA_ERROR_INVALID_IMAGE: *s = "CUDA_ERROR_INVALID_IMAGE"; break;
        case CUDA_ERROR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
        case CUDA_ERROR_LAUNCH_FAILED: *s = "CUDA_ERROR_LAUNCH_FAILED"; break;
        default: *s = "CUDA_ERROR_UNKNOWN"; break;
    }
    return CUDA_SUCCESS;
}

API CUresult cuGetErrorString(CUresult e, const char** s) {
    if (e == CUDA_ERROR_LAUNCH_FAILED) {
        *s = "the simulated kernel faulted (see mlrpl_sim_last_fault)";
        return CUDA_SUCCESS;
    }
    return cuGetErrorName(e, s);
}

// ---------------------------------------------------------------------------
// Streams and events: work runs when enqueued.

API CUresult cuStreamCreate(Stream** s, unsigned) { *s = new Stream; return CUDA_SUCCESS; }
API CUresult cuStreamCreateWithPriority(Stream** s, unsigned, int) { *s = new Stream; return CUDA_SUCCESS; }
API CUresult cuStreamDestroy_v2(Stream* s) { delete s; return CUDA_SUCCESS; }
API CUresult cuStreamSynchronize(Stream*) { return CUDA_SUCCESS; }
API CUresult cuStreamQuery(Stream*) { return CUDA_SUCCESS; }
API CUresult cuStreamWaitEvent(Stream*, Event*, unsigned) { return CUDA_SUCCESS; }
API CUresult cuCtxGetStreamPriorityRange(int* least, int* greatest) { *least = 0; *greatest = -5; return CUDA_SUCCESS; }

API CUresult cuEventCreate(Event** e, unsigned) { *e = new Event; return CUDA_SUCCESS; }
API CUresult cuEventDestroy_v2(Event* e) { delete e; return CUDA_SUCCESS; }
API CUresult cuEventRecord(Event* e, Stream*) { e->ms = now_ms(); return CUDA_SUCCESS; }
API CUresult cuEventSynchronize(Event*) { return CUDA_SUCCESS; }
API CUresult cuEventQuery(Event*) { return CUDA_SUCCESS; }
API CUresult cuEventElapsedTime(float* ms, Event* a, Event* b) { *ms = (float)(b->ms - a->ms); return CUDA_SUCCESS; }
API CUresult cuEventElapsedTime_v2(float* ms, Event* a, Event* b) { return cuEventElapsedTime(ms, a, b); }

// ---------------------------------------------------------------------------
// Memory.

API CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) { return allocate(p, bytes); }
API CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, Stream*) { return allocate(p, bytes); }
API CUresult cuMemFree_v2(CUdeviceptr p) { return release(p); }
API CUresult cuMemFreeAsync(CUdeviceptr p, Stream*) { return release(p); }

API CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned) {
    *p = malloc(bytes ? bytes : 1);
    return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}
API CUresult cuMemAllocHost_v2(void** p, size_t bytes) { return cuMemHostAlloc(p, bytes, 0); }
API CUresult cuMemFreeHost(void* p) { free(p); return CUDA_SUCCESS; }

API CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    std::lock_guard<std::mutex> g(state_lock);
    *total = TOTAL_MEMORY;
    *free_bytes = TOTAL_MEMORY - used_now;
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    memcpy(reinterpret_cast<void*>(dst), src, n);
    return CUDA_SUCCESS;
}
API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, Stream*) { return cuMemcpyHtoD_v2(dst, src, n); }
API CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    memcpy(dst, reinterpret_cast<const void*>(src), n);
    return CUDA_SUCCESS;
}
API CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, Stream*) { return cuMemcpyDtoH_v2(dst, src, n); }
API CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), n);
    return CUDA_SUCCESS;
}
API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, Stream*) { return cuMemcpyDtoD_v2(dst, src, n); }
API CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
    memset(reinterpret_cast<void*>(dst), v, n);
    return CUDA_SUCCESS;
}
API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, Stream*) { return cuMemsetD8_v2(dst, v, n); }
API CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned v, size_t n, Stream*) {
    unsigned* p = reinterpret_cast<unsigned*>(dst);
    for (size_t i = 0; i < n; i++) p[i] = v;
    return CUDA_SUCCESS;
}

// The default memory pool: nothing is cached, but "reserved" follows what a
// pool that never releases (the backend's threshold) would hold.
API CUresult cuDeviceGetDefaultMemPool(MemPool** pool, CUdevice) { *pool = &the_pool; return CUDA_SUCCESS; }
API CUresult cuDeviceGetMemPool(MemPool** pool, CUdevice) { *pool = &the_pool; return CUDA_SUCCESS; }
API CUresult cuMemPoolTrimTo(MemPool*, size_t) { return CUDA_SUCCESS; }

API CUresult cuMemPoolSetAttribute(MemPool*, int attribute, void* value) {
    std::lock_guard<std::mutex> g(state_lock);
    const uint64_t v = *static_cast<uint64_t*>(value);
    switch (attribute) {
        case 4: return CUDA_SUCCESS;  // RELEASE_THRESHOLD
        case 6: reserved = used_now; return v == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;   // RESERVED_MEM_HIGH
        case 8: used_high = used_now; return v == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;  // USED_MEM_HIGH
        default: return CUDA_SUCCESS;
    }
}

API CUresult cuMemPoolGetAttribute(MemPool*, int attribute, void* value) {
    std::lock_guard<std::mutex> g(state_lock);
    uint64_t* out = static_cast<uint64_t*>(value);
    switch (attribute) {
        case 5: case 6: *out = reserved; break;  // RESERVED_MEM_CURRENT / HIGH
        case 7: *out = used_now; break;          // USED_MEM_CURRENT
        case 8: *out = used_high; break;         // USED_MEM_HIGH
        default: *out = 0; break;
    }
    return CUDA_SUCCESS;
}

// ---------------------------------------------------------------------------
// Modules and launches.

API CUresult cuModuleLoadData(Module** module, const void* image) {
    std::string name;
    uint32_t magic;
    memcpy(&magic, image, 4);
    if (magic == FATBIN_MAGIC) {
        // A fatbin's header: magic, version, header size (u16), payload size (u64).
        uint16_t header;
        uint64_t payload;
        memcpy(&header, static_cast<const char*>(image) + 6, 2);
        memcpy(&payload, static_cast<const char*>(image) + 8, 8);
        const std::string bytes(static_cast<const char*>(image), header + payload);
        std::lock_guard<std::mutex> g(state_lock);
        for (const auto& [known, module] : images) {
            if (known == bytes) name = module;
        }
    } else {
        name = module_of_ptx(static_cast<const char*>(image));
    }
    bool known = false;
    for (const std::string& m : sim::modules()) known |= m == name;
    if (!known) {
        fprintf(stderr, "mlrpl sim: cuModuleLoadData: an image of no simulated module\n");
        return CUDA_ERROR_INVALID_IMAGE;
    }
    *module = new Module{name};
    return CUDA_SUCCESS;
}

API CUresult cuModuleUnload(Module* module) { delete module; return CUDA_SUCCESS; }

API CUresult cuModuleGetFunction(Function** f, Module* module, const char* name) {
    const sim::KernelInfo* k = sim::find_kernel(module->name, name);
    if (!k) return CUDA_ERROR_NOT_FOUND;
    *f = new Function{k};
    return CUDA_SUCCESS;
}

API CUresult cuFuncGetAttribute(int* value, int attribute, Function* f) {
    switch (attribute) {
        case 0: *value = 1024; break;  // MAX_THREADS_PER_BLOCK
        case 8: *value = (int)f->max_dynamic_shared; break;
        default: *value = 0; break;
    }
    return CUDA_SUCCESS;
}

API CUresult cuFuncSetAttribute(Function* f, int attribute, int value) {
    if (attribute == 8) {  // MAX_DYNAMIC_SHARED_SIZE_BYTES
        if (value < 0 || value > 232448) return CUDA_ERROR_INVALID_VALUE;
        f->max_dynamic_shared = (size_t)value;
    }
    return CUDA_SUCCESS;
}

API CUresult cuFuncSetCacheConfig(Function*, int) { return CUDA_SUCCESS; }

API CUresult cuLaunchKernel(Function* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                            unsigned bz, unsigned shared, Stream*, void** params, void** extra) {
    if (extra != nullptr || (params == nullptr && f->kernel->params > 0)) return CUDA_ERROR_INVALID_VALUE;
    // Without an opt-in a block may use 48 KiB of shared memory in all.
    const size_t opt_in = f->max_dynamic_shared > sim::SHARED_LIMIT ? f->max_dynamic_shared - sim::SHARED_LIMIT : 0;
    sim::LaunchShape shape{uint3{gx, gy, gz}, uint3{bx, by, bz}, shared, opt_in};
    std::string fault = sim::run_launch(*f->kernel, shape, params);
    if (!fault.empty()) {
        fprintf(stderr, "mlrpl sim: %s\n", fault.c_str());
        last_fault = fault;
        return CUDA_ERROR_LAUNCH_FAILED;
    }
    return CUDA_SUCCESS;
}
