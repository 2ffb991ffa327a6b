// The platform layer: the one place that knows which target the code is built for.
//
//   cuda target: nvcc compiles the kernels for the GPU; launch() is <<<>>>.
//   host target: g++ compiles the same kernel source against the emulator (milmer/emu/):
//                launch() runs the grid on the CPU, CUDA runtime and cuBLAS calls run on
//                the CPU with the same semantics.
//
// Library code launches only through milmer::launch, checks every runtime and cuBLAS status
// with MILMER_CUDA_CHECK / MILMER_CUBLAS_CHECK, and declares dynamic shared memory only with
// MILMER_DYNAMIC_SHARED(T, name).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <tuple>
#include <utility>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "milmer/error.hpp"

#if defined(__CUDACC__)
#define MILMER_TARGET_CUDA 1
#define MILMER_TARGET_HOST 0
#define MILMER_DYNAMIC_SHARED(T, name)                                  \
  extern __shared__ __align__(16) unsigned char milmer_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(milmer_dynamic_smem_)
#else
#define MILMER_TARGET_CUDA 0
#define MILMER_TARGET_HOST 1
#include "milmer/emu/device.hpp"
#include "milmer/emu/runtime.hpp"
#endif

#define MILMER_HD __host__ __device__

// A kernel that is not a template, defined in a header: one definition per program on the host
// target (inline, external linkage, so the emulator can name it), one per translation unit on
// the cuda target (static; nvcc ignores inline on __global__ functions).
#if MILMER_TARGET_CUDA
#define MILMER_KERNEL static __global__
#else
#define MILMER_KERNEL inline __global__
#endif

namespace milmer {

inline constexpr const char* target_name() {
  return MILMER_TARGET_CUDA ? "cuda" : "host";
}

inline void cuda_check(cudaError_t e, const char* expr) {
  if (e != cudaSuccess) throw Error("cuda", expr, "cudaSuccess", cudaGetErrorString(e));
}
inline const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
      return "CUBLAS_STATUS_UNKNOWN";
  }
}
inline void cublas_check(cublasStatus_t s, const char* expr) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error("cublas", expr, "CUBLAS_STATUS_SUCCESS", cublas_status_name(s));
}

#define MILMER_CUDA_CHECK(expr) ::milmer::cuda_check((expr), #expr)
#define MILMER_CUBLAS_CHECK(expr) ::milmer::cublas_check((expr), #expr)

// Validates a launch shape the way the hardware would refuse it.
inline void check_launch_shape(const char* op, dim3 grid, dim3 block, std::size_t shared_bytes) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  check(threads >= 1 && threads <= 1024 && block.z <= 64, op, "block",
        "1 to 1024 threads (z <= 64)", str("(", block.x, ",", block.y, ",", block.z, ")"));
  check(grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && grid.y <= 65535 && grid.z <= 65535, op, "grid",
        "x >= 1, 1 <= y,z <= 65535", str("(", grid.x, ",", grid.y, ",", grid.z, ")"));
  check(shared_bytes <= 227 * 1024, op, "shared_bytes", "at most 232448 (sm_90 opt-in limit)",
        std::to_string(shared_bytes));
}

// The one launch function of the library, on both targets.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes,
            cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "launch: wrong number of kernel arguments");
  check_launch_shape("launch", grid, block, shared_bytes);
#if MILMER_TARGET_CUDA
  if (shared_bytes > 48 * 1024)
    MILMER_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(shared_bytes)));
  kernel<<<grid, block, shared_bytes, stream>>>(std::forward<Args>(args)...);
  MILMER_CUDA_CHECK(cudaGetLastError());
#else
  (void)stream;
  // Kernel parameters are copied once, as the hardware copies them into constant memory.
  auto params = std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...);
  const std::function<void()> body = [&] { std::apply(kernel, params); };
  emu::run_grid(reinterpret_cast<const void*>(kernel), grid, block, shared_bytes, body);
#endif
}

inline int device_count() {
  int n = 0;
#if MILMER_TARGET_CUDA
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    n = 0;
  }
#else
  MILMER_CUDA_CHECK(cudaGetDeviceCount(&n));
#endif
  return n;
}

}  // namespace milmer
