/*
The simulator's runtime: every CUDA thread of a block is a fiber with its own
stack, switched by a few instructions of hand-written assembly (callee-saved
registers, MXCSR and the x87 control word), announced to AddressSanitizer
when the build has it. A block's threads run in the configured order, each
until it reaches a barrier, a warp operation or its end; a barrier releases
when every live thread of the block has arrived (a warp operation when every
lane of its mask has), and a round in which nothing can run is a deadlock.
Blocks run one after another on the launching host thread, in forward,
reverse or random order; launches are serialised by one lock.

Configuration (read at each launch):
  MLRPL_SIM_ORDER       forward (default), reverse or random: the order of
                        blocks and of the threads within a block
  MLRPL_SIM_SEED        seed of the random order (default 1)
(The backend's own MLRPL_CUDA_MAX_GRID caps its grid-stride launches, so
that every grid-stride loop walks several items.)
*/
#include "sim.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>

#if defined(__SANITIZE_ADDRESS__)
extern "C" void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old, size_t* size_old);
extern "C" void __asan_unpoison_memory_region(void const volatile* addr, size_t size);
#define SIM_ASAN 1
#else
#define SIM_ASAN 0
#endif

#if !defined(__x86_64__)
#error "the simulator's fiber switch is written for x86-64"
#endif

// mlrpl_sim_switch(save, to): saves the callee-saved state on the current
// stack, stores the stack pointer in *save and resumes the stack `to`.
// mlrpl_sim_fiber_start: where a new fiber's first switch returns to.
asm(R"(
    .text
    .p2align 4
    .globl mlrpl_sim_switch
    .hidden mlrpl_sim_switch
    .type mlrpl_sim_switch, @function
mlrpl_sim_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size mlrpl_sim_switch, .-mlrpl_sim_switch

    .p2align 4
    .globl mlrpl_sim_fiber_start
    .hidden mlrpl_sim_fiber_start
    .type mlrpl_sim_fiber_start, @function
mlrpl_sim_fiber_start:
    andq $-16, %rsp
    call mlrpl_sim_fiber_main
    ud2
    .size mlrpl_sim_fiber_start, .-mlrpl_sim_fiber_start
)");

extern "C" {
__attribute__((visibility("hidden"))) void mlrpl_sim_switch(void** save, void* to);
__attribute__((visibility("hidden"))) void mlrpl_sim_fiber_start();
__attribute__((visibility("hidden"))) void mlrpl_sim_fiber_main();
}

namespace sim {

namespace {

constexpr size_t STACK_BYTES = 256 * 1024;
constexpr int MAX_THREADS = 1024;

enum class State { Runnable, AtBarrier, AtWarpOp, Exited };

struct Thread {
    void* sp = nullptr;
    char* stack = nullptr;  // lowest usable byte (a guard page lies below)
    int index = 0;          // linear index in the block
    ThreadView view{};
    State state = State::Exited;
    // At a block barrier.
    BarrierKind barrier = BARRIER_PLAIN;
    int predicate = 0;
    // At a warp operation.
    WarpOp op = WARP_SYNC;
    unsigned mask = 0;
    uint64_t value = 0;
    int source = -1;
    void (*combine)(void* const*) = nullptr;
    // What the barrier or warp operation returns.
    uint64_t result = 0;
    void* fake_stack = nullptr;
};

struct SharedVar {
    int id;
    void* ptr;
    size_t bytes;
};

struct Order {
    enum { Forward, Reverse, Random } kind = Forward;
    std::mt19937_64 rng{1};

    static Order from_env() {
        Order o;
        if (const char* s = getenv("MLRPL_SIM_ORDER")) {
            std::string v(s);
            if (v == "reverse") o.kind = Reverse;
            else if (v == "random") o.kind = Random;
        }
        if (const char* s = getenv("MLRPL_SIM_SEED")) o.rng.seed(strtoull(s, nullptr, 10));
        return o;
    }

    std::vector<int> of(int n) {
        std::vector<int> idx(n);
        for (int i = 0; i < n; i++) idx[i] = i;
        if (kind == Reverse) std::reverse(idx.begin(), idx.end());
        if (kind == Random) std::shuffle(idx.begin(), idx.end(), rng);
        return idx;
    }
};

// Everything about the launch and block that is running.
struct Run {
    const KernelInfo* kernel = nullptr;
    void* const* params = nullptr;
    LaunchShape shape{};
    std::vector<Thread> threads;
    Thread* current = nullptr;
    void* scheduler_sp = nullptr;
    const void* scheduler_stack_bottom = nullptr;
    size_t scheduler_stack_size = 0;
    int live = 0;
    int at_barrier = 0;
    std::vector<SharedVar> shared;
    size_t static_shared_bytes = 0;
    void* dynamic_shared = nullptr;
    std::string fault;
    uint3 block_idx{};
};

Run run;
std::mutex launch_lock;
char* stacks = nullptr;  // MAX_THREADS stacks, each with a guard page below

std::map<std::pair<std::string, std::string>, KernelInfo>& registry() {
    static std::map<std::pair<std::string, std::string>, KernelInfo> r;
    return r;
}

size_t page() { return (size_t)sysconf(_SC_PAGESIZE); }

void map_stacks() {
    if (stacks) return;
    const size_t span = STACK_BYTES + page();
    void* p = mmap(nullptr, span * MAX_THREADS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "mlrpl sim: cannot map %d fiber stacks\n", MAX_THREADS);
        abort();
    }
    stacks = static_cast<char*>(p);
    for (int i = 0; i < MAX_THREADS; i++) mprotect(stacks + i * span, page(), PROT_NONE);
}

char* stack_of(int i) { return stacks + i * (STACK_BYTES + page()) + page(); }

// Switches from the scheduler to thread t, until it yields.
void resume(Thread& t) {
    run.current = &t;
#if SIM_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, t.stack, STACK_BYTES);
    mlrpl_sim_switch(&run.scheduler_sp, t.sp);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    mlrpl_sim_switch(&run.scheduler_sp, t.sp);
#endif
    run.current = nullptr;
}

// Switches from the running thread back to the scheduler.
void yield_to_scheduler(bool exiting) {
    Thread& t = *run.current;
#if SIM_ASAN
    __sanitizer_start_switch_fiber(exiting ? nullptr : &t.fake_stack, run.scheduler_stack_bottom,
                                   run.scheduler_stack_size);
    mlrpl_sim_switch(&t.sp, run.scheduler_sp);
    __sanitizer_finish_switch_fiber(t.fake_stack, nullptr, nullptr);
#else
    (void)exiting;
    mlrpl_sim_switch(&t.sp, run.scheduler_sp);
#endif
}

void prepare_fiber(Thread& t) {
#if SIM_ASAN
    __asan_unpoison_memory_region(t.stack, STACK_BYTES);
#endif
    uint64_t* p = reinterpret_cast<uint64_t*>(t.stack + STACK_BYTES);
    *--p = 0;  // keeps the start's stack 16-byte aligned after `ret`
    *--p = reinterpret_cast<uint64_t>(&mlrpl_sim_fiber_start);
    for (int r = 0; r < 6; r++) *--p = 0;  // rbp rbx r12 r13 r14 r15
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    *--p = (uint64_t)mxcsr | ((uint64_t)fpucw << 32);
    t.sp = p;
}

std::string describe(const Thread& t) {
    char buf[160];
    const uint3& i = t.view.thread_idx;
    const char* what = t.state == State::AtBarrier ? "waits at a block barrier"
                       : t.state == State::AtWarpOp ? "waits at a warp operation"
                       : t.state == State::Exited   ? "has exited"
                                                    : "can run";
    snprintf(buf, sizeof buf, "thread (%u,%u,%u) %s", i.x, i.y, i.z, what);
    return buf;
}

std::string where() {
    char buf[256];
    snprintf(buf, sizeof buf, "kernel `%s` (module %s), block (%u,%u,%u)", run.kernel->name.c_str(),
             run.kernel->module.c_str(), run.block_idx.x, run.block_idx.y, run.block_idx.z);
    return buf;
}

// Records a fault of the running block; the scheduler stops the launch.
void fail(const std::string& what) {
    if (run.fault.empty()) run.fault = where() + ": " + what;
}

void release_barrier() {
    int count = 0, any = 0, all = 1;
    for (Thread& t : run.threads) {
        if (t.state == State::AtBarrier) {
            count += t.predicate;
            any |= t.predicate;
            all &= t.predicate;
        }
    }
    for (Thread& t : run.threads) {
        if (t.state != State::AtBarrier) continue;
        switch (t.barrier) {
            case BARRIER_PLAIN: t.result = 0; break;
            case BARRIER_COUNT: t.result = (uint64_t)count; break;
            case BARRIER_OR: t.result = (uint64_t)any; break;
            case BARRIER_AND: t.result = (uint64_t)all; break;
        }
        t.state = State::Runnable;
    }
    run.at_barrier = 0;
}

// Releases the block barrier once every live thread is at it, checking that
// they all arrived at the same kind.
void try_release_barrier() {
    if (run.at_barrier == 0 || run.at_barrier < run.live) return;
    BarrierKind kind = BARRIER_PLAIN;
    bool first = true;
    for (const Thread& t : run.threads) {
        if (t.state != State::AtBarrier) continue;
        if (first) kind = t.barrier, first = false;
        else if (t.barrier != kind) {
            fail("threads meet different kinds of __syncthreads (plain, _count, _or, _and)");
            return;
        }
    }
    release_barrier();
}

// The lanes of `mask` in the warp of thread index `base`, as thread indices;
// a lane past the block's threads or one that has exited is a fault.
bool mask_lanes(int base, unsigned mask, std::vector<int>& lanes) {
    lanes.clear();
    for (int l = 0; l < 32; l++) {
        if (!(mask & (1u << l))) continue;
        const int i = base + l;
        if (i >= (int)run.threads.size()) {
            fail("a warp operation's mask names lane " + std::to_string(l) + ", past the block's threads");
            return false;
        }
        if (run.threads[i].state == State::Exited) {
            fail("a warp operation's mask names lane " + std::to_string(l) + ", which has exited");
            return false;
        }
        lanes.push_back(i);
    }
    return true;
}

// Releases the warp operation of thread t's warp once every lane of its mask
// has arrived at it with the same mask.
void try_release_warp(const Thread& t) {
    const int base = t.index & ~31;
    std::vector<int> lanes;
    if (!mask_lanes(base, t.mask, lanes)) return;
    if (!(t.mask & (1u << (t.index - base)))) {
        fail("a lane calls a warp operation whose mask leaves it out");
        return;
    }
    for (int i : lanes) {
        const Thread& o = run.threads[i];
        if (o.state != State::AtWarpOp) return;  // not all there yet
        if (o.mask != t.mask || o.op != t.op) {
            fail("lanes of one warp meet different warp operations or masks");
            return;
        }
    }
    if (t.op == WARP_COLLECTIVE) {
        void* payloads[32] = {};
        for (int i : lanes) {
            const Thread& o = run.threads[i];
            if (o.combine != t.combine) {
                fail("lanes of one warp meet different warp-wide instructions");
                return;
            }
            payloads[i - base] = reinterpret_cast<void*>(o.value);
        }
        t.combine(payloads);
        for (int i : lanes) run.threads[i].state = State::Runnable;
        return;
    }
    uint64_t ballot = 0;
    for (int i : lanes) {
        if (run.threads[i].value) ballot |= 1ull << (i - base);
    }
    std::vector<uint64_t> results(lanes.size());
    for (size_t k = 0; k < lanes.size(); k++) {
        const Thread& o = run.threads[lanes[k]];
        if (o.op == WARP_BALLOT) {
            results[k] = ballot;
        } else if (o.op == WARP_SHFL && o.source >= 0) {
            if (!(t.mask & (1u << o.source))) {
                fail("a shuffle reads lane " + std::to_string(o.source) + ", outside its mask");
                return;
            }
            results[k] = run.threads[base + o.source].value;
        } else {
            results[k] = o.value;
        }
    }
    for (size_t k = 0; k < lanes.size(); k++) {
        Thread& o = run.threads[lanes[k]];
        o.result = results[k];
        o.state = State::Runnable;
    }
}

void free_block_shared() {
    for (SharedVar& v : run.shared) free(v.ptr);
    run.shared.clear();
    run.static_shared_bytes = 0;
    free(run.dynamic_shared);
    run.dynamic_shared = nullptr;
}

// Runs block `b` to its end; false on a fault.
bool run_block(uint3 b, Order& order) {
    run.block_idx = b;
    const uint3 bd = run.shape.block;
    const int n = (int)(bd.x * bd.y * bd.z);
    run.threads.assign(n, Thread{});
    for (int i = 0; i < n; i++) {
        Thread& t = run.threads[i];
        t.index = i;
        t.stack = stack_of(i);
        t.view.thread_idx = uint3{(unsigned)i % bd.x, ((unsigned)i / bd.x) % bd.y, (unsigned)i / (bd.x * bd.y)};
        t.view.block_idx = b;
        t.view.block_dim = bd;
        t.view.grid_dim = run.shape.grid;
        t.state = State::Runnable;
        prepare_fiber(t);
    }
    run.live = n;
    run.at_barrier = 0;
    const size_t dyn = run.shape.dynamic_shared;
    run.dynamic_shared = malloc(dyn ? dyn : 1);
    memset(run.dynamic_shared, 0xFF, dyn ? dyn : 1);
    const std::vector<int> sequence = order.of(n);
    while (run.live > 0) {
        bool ran = false;
        for (int i : sequence) {
            if (run.threads[i].state != State::Runnable) continue;
            resume(run.threads[i]);
            ran = true;
            if (!run.fault.empty()) break;
        }
        if (!run.fault.empty()) break;
        if (!ran) {
            std::string states;
            int shown = 0;
            for (const Thread& t : run.threads) {
                if (t.state == State::Exited || shown == 4) continue;
                states += (shown++ ? "; " : "") + describe(t);
            }
            fail("deadlock: no thread can run (" + states + ")");
            break;
        }
    }
    free_block_shared();
    return run.fault.empty();
}

}  // namespace

// ---------------------------------------------------------------------------
// What the kernels call (cuda_sim.h).

const ThreadView& view() { return run.current->view; }

int block_barrier(BarrierKind kind, int predicate) {
    Thread& t = *run.current;
    t.state = State::AtBarrier;
    t.barrier = kind;
    t.predicate = predicate;
    run.at_barrier++;
    try_release_barrier();
    yield_to_scheduler(false);
    return (int)t.result;
}

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int source) {
    Thread& t = *run.current;
    t.state = State::AtWarpOp;
    t.op = op;
    t.mask = mask;
    t.value = value;
    t.source = source;
    try_release_warp(t);
    yield_to_scheduler(false);
    return t.result;
}

void warp_collective(unsigned mask, void* payload, void (*combine)(void* const* lanes)) {
    Thread& t = *run.current;
    t.combine = combine;
    warp_op(WARP_COLLECTIVE, mask, reinterpret_cast<uint64_t>(payload), -1);
}

namespace ptx {

namespace {

struct MmaLane {
    uint32_t a[4], b[2];
    float c[4], d[4];
};

float bf16_half(uint32_t reg, int high) {
    return f32_from_bits((high ? reg >> 16 : reg & 0xFFFFu) << 16);
}

// The m16n8k16 fragments of the PTX ISA, with g = lane / 4, q = lane % 4:
// A (row-major 16 x 16): a0 = (g, 2q..2q+1), a1 = (g+8, 2q..), a2 = (g, 2q+8..),
// a3 = (g+8, 2q+8..); B (16 x 8, by column): b0 = rows 2q..2q+1 of column g,
// b1 = rows 2q+8..; C and D: c0, c1 = (g, 2q..2q+1), c2, c3 = (g+8, 2q..).
// The lower 16 bits of a register hold the lower-indexed element.
void mma_combine(void* const* lanes) {
    float a[16][16], b[16][8], c[16][8];
    for (int l = 0; l < 32; l++) {
        const MmaLane& f = *static_cast<const MmaLane*>(lanes[l]);
        const int g = l / 4, q = l % 4;
        for (int r = 0; r < 4; r++) {
            const int row = g + (r & 1) * 8, col = 2 * q + (r >> 1) * 8;
            a[row][col] = bf16_half(f.a[r], 0);
            a[row][col + 1] = bf16_half(f.a[r], 1);
        }
        for (int r = 0; r < 2; r++) {
            b[2 * q + r * 8][g] = bf16_half(f.b[r], 0);
            b[2 * q + r * 8 + 1][g] = bf16_half(f.b[r], 1);
        }
        for (int r = 0; r < 4; r++) c[g + (r >> 1) * 8][2 * q + (r & 1)] = f.c[r];
    }
    for (int l = 0; l < 32; l++) {
        MmaLane& f = *static_cast<MmaLane*>(lanes[l]);
        const int g = l / 4, q = l % 4;
        for (int r = 0; r < 4; r++) {
            const int row = g + (r >> 1) * 8, col = 2 * q + (r & 1);
            double acc = c[row][col];
            for (int k = 0; k < 16; k++) acc += (double)a[row][k] * b[k][col];
            f.d[r] = (float)acc;
        }
    }
}

}  // namespace

void mma_sync_aligned_m16n8k16_row_col_f32_bf16_bf16_f32(float* d0, float* d1, float* d2, float* d3, uint32_t a0,
                                                         uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                                         uint32_t b1, float c0, float c1, float c2, float c3) {
    MmaLane lane{{a0, a1, a2, a3}, {b0, b1}, {c0, c1, c2, c3}, {}};
    warp_collective(0xFFFFFFFFu, &lane, &mma_combine);
    *d0 = lane.d[0], *d1 = lane.d[1], *d2 = lane.d[2], *d3 = lane.d[3];
}

}  // namespace ptx

void* shared_static(int id, size_t bytes, size_t align) {
    for (const SharedVar& v : run.shared) {
        if (v.id == id) return v.ptr;
    }
    run.static_shared_bytes += (bytes + align - 1) / align * align;
    if (run.static_shared_bytes + run.shape.dynamic_shared > SHARED_LIMIT + run.shape.opt_in_shared) {
        fatal("static and dynamic __shared__ memory exceed what the launch allows");
    }
    // A heap block of exactly `bytes`, so AddressSanitizer sees its end.
    void* p = align <= 16 ? malloc(bytes ? bytes : 1) : aligned_alloc(align, (bytes + align - 1) / align * align);
    memset(p, 0xFF, bytes);
    run.shared.push_back(SharedVar{id, p, bytes});
    return p;
}

void* shared_dynamic() { return run.dynamic_shared; }

void fatal(const char* what) {
    fail(what);
    yield_to_scheduler(false);
    __builtin_unreachable();
}

bool register_kernel(const char* module, const char* name, void* fn, Body body, int params) {
    registry()[{module, name}] = KernelInfo{module, name, fn, body, params};
    return true;
}

const KernelInfo* find_kernel(const std::string& module, const std::string& name) {
    auto it = registry().find({module, name});
    return it == registry().end() ? nullptr : &it->second;
}

std::vector<std::string> modules() {
    std::vector<std::string> out;
    for (auto& kv : registry()) {
        if (out.empty() || out.back() != kv.first.first) out.push_back(kv.first.first);
    }
    return out;
}

std::vector<std::string> modules_with_kernel(const std::string& name) {
    std::vector<std::string> out;
    for (auto& kv : registry()) {
        if (kv.first.second == name) out.push_back(kv.first.first);
    }
    return out;
}

std::string run_launch(const KernelInfo& kernel, const LaunchShape& shape, void* const* params) {
    std::lock_guard<std::mutex> guard(launch_lock);
    const uint3 g = shape.grid, bd = shape.block;
    const unsigned long long threads = (unsigned long long)bd.x * bd.y * bd.z;
    if (g.x == 0 || g.y == 0 || g.z == 0 || threads == 0) return "kernel `" + kernel.name + "`: an empty grid or block";
    if (threads > MAX_THREADS) return "kernel `" + kernel.name + "`: more than 1024 threads per block";
    if (shape.dynamic_shared > SHARED_LIMIT + shape.opt_in_shared) {
        return "kernel `" + kernel.name + "`: " + std::to_string(shape.dynamic_shared) +
               " bytes of dynamic shared memory, more than the launch allows";
    }
    map_stacks();
    run = Run{};
    run.kernel = &kernel;
    run.params = params;
    run.shape = shape;
#if SIM_ASAN
    // The scheduler runs on this host thread's stack; its bounds are what
    // the fibers switch back to.
    pthread_attr_t attr;
    pthread_getattr_np(pthread_self(), &attr);
    void* bottom;
    size_t size;
    pthread_attr_getstack(&attr, &bottom, &size);
    pthread_attr_destroy(&attr);
    run.scheduler_stack_bottom = bottom;
    run.scheduler_stack_size = size;
#endif
    Order order = Order::from_env();
    const uint3 rg = run.shape.grid;
    const std::vector<int> blocks = order.of((int)(rg.x * rg.y * rg.z));
    for (int b : blocks) {
        const uint3 idx{(unsigned)b % rg.x, ((unsigned)b / rg.x) % rg.y, (unsigned)b / (rg.x * rg.y)};
        if (!run_block(idx, order)) break;
    }
    std::string fault = run.fault;
    run = Run{};
    return fault;
}

}  // namespace sim

// A fiber's life: run the kernel, then leave for good.
extern "C" void mlrpl_sim_fiber_main() {
    using namespace sim;
#if SIM_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
    run.kernel->body(run.params, run.kernel->fn);
    Thread& t = *run.current;
    t.state = State::Exited;
    run.live--;
    // A thread that leaves may complete a barrier the others wait at, or
    // strand a warp operation whose mask names it.
    try_release_barrier();
    const int base = t.index & ~31;
    for (int l = 0; l < 32 && base + l < (int)run.threads.size(); l++) {
        const Thread& o = run.threads[base + l];
        if (o.state == State::AtWarpOp && (o.mask & (1u << (t.index - base)))) {
            fail("lane " + std::to_string(t.index - base) + " exits while a warp operation of its warp names it");
            break;
        }
    }
    yield_to_scheduler(true);
    __builtin_unreachable();
}
