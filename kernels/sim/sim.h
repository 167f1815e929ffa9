// What the simulated driver (driver.cpp) asks of the simulator's runtime
// (runtime.cpp): the kernel registry and one launch run to completion.
#pragma once

#include "cuda_sim.h"

#include <string>
#include <vector>

namespace sim {

struct KernelInfo {
    std::string module;
    std::string name;
    void* fn;
    Body body;
    int params;
};

// The kernel `name` of `module`, or null.
const KernelInfo* find_kernel(const std::string& module, const std::string& name);
// Every registered module name.
std::vector<std::string> modules();
// The modules one of whose kernels is named `name`.
std::vector<std::string> modules_with_kernel(const std::string& name);

struct LaunchShape {
    uint3 grid;
    uint3 block;
    size_t dynamic_shared;
    // Bytes beyond SHARED_LIMIT the kernel opted in to
    // (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES).
    size_t opt_in_shared;
};

// Runs every block of the launch in the configured order; returns "" or a
// one-line description of the fault that stopped it.
std::string run_launch(const KernelInfo& kernel, const LaunchShape& shape, void* const* params);

// Shared bytes (static and dynamic) a block may use without an opt-in.
constexpr size_t SHARED_LIMIT = 48 * 1024;

}  // namespace sim
