// The platform layer: the one place that knows which target the code is built for.
//
//   cuda target: nvcc compiles the kernels for the GPU; launch() is <<<>>>.
//   host target: g++ compiles the same kernel source against the emulator (milmer/emu/):
//                launch() runs the grid on the CPU, CUDA runtime and cuBLAS calls run on
//                the CPU with the same semantics.
//
// Library code launches only through milmer::launch, checks every runtime and cuBLAS status
// with MILMER_CUDA_CHECK / MILMER_CUBLAS_CHECK, and declares shared memory only with
// MILMER_SHARED(T, name, extents) (static) and MILMER_DYNAMIC_SHARED(T, name) (dynamic).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "milmer/device_limits.hpp"
#include "milmer/error.hpp"
#include "milmer/symbol_name.hpp"

#if defined(__CUDACC__)
#define MILMER_TARGET_CUDA 1
#define MILMER_TARGET_HOST 0
#define MILMER_DYNAMIC_SHARED(T, name)                                  \
  extern __shared__ __align__(16) unsigned char milmer_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(milmer_dynamic_smem_)
#define MILMER_SHARED(T, name, extents) __shared__ T name extents
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

// Throws on a failed runtime call. The error is taken off the runtime's last-error state too
// (cudaGetLastError), so the next launch's check does not report it again.
inline void cuda_check(cudaError_t e, const char* expr) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();
  throw Error("cuda", expr, "cudaSuccess", cudaGetErrorString(e));
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
  if (s == CUBLAS_STATUS_SUCCESS) return;
#if MILMER_TARGET_HOST
  // The emulator says which argument was wrong.
  const std::string reason = emu::take_status_reason();
  if (!reason.empty())
    throw Error("cublas", expr, "CUBLAS_STATUS_SUCCESS",
                str(cublas_status_name(s), " (", reason, ")"));
#endif
  throw Error("cublas", expr, "CUBLAS_STATUS_SUCCESS", cublas_status_name(s));
}

#define MILMER_CUDA_CHECK(expr) ::milmer::cuda_check((expr), #expr)
#define MILMER_CUBLAS_CHECK(expr) ::milmer::cublas_check((expr), #expr)

// Validates a launch shape the way the hardware would refuse it (block and grid limits of
// sm_80 and sm_90; shared memory is checked per kernel by launch()).
inline void check_launch_shape(const char* op, dim3 grid, dim3 block) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  MILMER_CHECK(threads >= 1 && threads <= 1024 && block.z <= 64, op, "block",
               "1 to 1024 threads (z <= 64)", str("(", block.x, ",", block.y, ",", block.z, ")"));
  MILMER_CHECK(grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && grid.x <= 2147483647u &&
                   grid.y <= 65535 && grid.z <= 65535,
               op, "grid", "1 <= x <= 2147483647, 1 <= y,z <= 65535",
               str("(", grid.x, ",", grid.y, ",", grid.z, ")"));
}

// MILMER_SYNC_LAUNCHES=1: synchronise after every launch, so an asynchronous fault is
// reported by the launch that caused it, naming the kernel (for debugging; slow).
inline bool sync_launches() {
  static const bool on = [] {
    const char* v = std::getenv("MILMER_SYNC_LAUNCHES");
    const std::string s = v ? v : "";
    check(s.empty() || s == "0" || s == "1", "environment", "MILMER_SYNC_LAUNCHES", "0 or 1",
          "'" + s + "'");
    return s == "1";
  }();
  return on;
}

namespace launch_detail {

// What launch() keeps per kernel: its attributes, read once, and whether it has opted in to
// more than 48 KB of shared memory (done once, the first time a launch needs it).
struct KernelState {
  std::size_t static_shared_bytes = 0;  // cudaFuncAttributes::sharedSizeBytes
  int max_threads = 1024;               // cudaFuncAttributes::maxThreadsPerBlock (launch bounds)
  std::once_flag opt_in;
};

inline KernelState& kernel_state(const void* kernel) {
  static std::mutex mu;
  static std::unordered_map<const void*, std::unique_ptr<KernelState>> states;
  std::lock_guard lk(mu);
  auto& st = states[kernel];
  if (!st) {
    cudaFuncAttributes a{};
    MILMER_CUDA_CHECK(cudaFuncGetAttributes(&a, kernel));
    auto fresh = std::make_unique<KernelState>();
    fresh->static_shared_bytes = a.sharedSizeBytes;
    fresh->max_threads = a.maxThreadsPerBlock;
    st = std::move(fresh);
  }
  return *st;
}

// The device's opt-in maximum of shared memory per block (163 KB on sm_80, 227 KB on
// sm_90). Read once on the cuda target; on the host the emulated architecture can change.
inline std::size_t device_shared_optin_bytes() {
  auto query = [] {
    int device = 0, bytes = 0;
    MILMER_CUDA_CHECK(cudaGetDevice(&device));
    MILMER_CUDA_CHECK(
        cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    return static_cast<std::size_t>(bytes);
  };
#if MILMER_TARGET_CUDA
  static const std::size_t bytes = query();
  return bytes;
#else
  return query();
#endif
}

// A block of `static_bytes` static and `dynamic_bytes` dynamic shared memory: above 48 KB
// the kernel must opt in, once, to the most dynamic shared memory the device allows next to
// its static memory; above the device's maximum the launch cannot run.
inline void prepare_shared(const void* kernel, KernelState& st, std::size_t static_bytes,
                           std::size_t dynamic_bytes) {
  const std::size_t total = static_bytes + dynamic_bytes;
  if (total <= kSharedDefaultBytes) return;
  const std::size_t optin = device_shared_optin_bytes();
  MILMER_CHECK(total <= optin, str("launch of ", symbol_name(kernel)), "shared memory per block",
               str("at most ", optin, " bytes (the device's opt-in maximum)"),
               str(total, " bytes (", static_bytes, " static + ", dynamic_bytes, " dynamic)"));
  std::call_once(st.opt_in, [&] {
    MILMER_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(optin - static_bytes)));
  });
}

inline void check_launched(const void* kernel, cudaStream_t stream) {
  const cudaError_t launched = cudaGetLastError();
  if (launched != cudaSuccess)
    throw Error(str("launch of ", symbol_name(kernel)), "launch", "cudaSuccess",
                cudaGetErrorString(launched));
  if (!sync_launches()) return;
  const cudaError_t ran = cudaStreamSynchronize(stream);
  if (ran != cudaSuccess)
    throw Error(str("launch of ", symbol_name(kernel)), "execution (MILMER_SYNC_LAUNCHES=1)",
                "cudaSuccess", cudaGetErrorString(ran));
}

}  // namespace launch_detail

// The one launch function of the library, on both targets.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes,
            cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "launch: wrong number of kernel arguments");
  const void* address = reinterpret_cast<const void*>(kernel);
  check_launch_shape("launch", grid, block);
  launch_detail::KernelState& st = launch_detail::kernel_state(address);
  const unsigned threads = block.x * block.y * block.z;
  if (static_cast<int>(threads) > st.max_threads)
    throw Error(str("launch of ", symbol_name(address)), "block",
                str("at most ", st.max_threads, " threads (the kernel's __launch_bounds__)"),
                str(threads, " threads"));
#if MILMER_TARGET_CUDA
  launch_detail::prepare_shared(address, st, st.static_shared_bytes, shared_bytes);
  kernel<<<grid, block, shared_bytes, stream>>>(std::forward<Args>(args)...);
#else
  // Kernel parameters are copied once, as the hardware copies them into constant memory.
  auto params = std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...);
  // Strict mode: a pointer argument is null or device memory, as a GPU needs it to be.
  std::apply(
      [&](const auto&... p) {
        int position = 0;
        (
            [&](const auto& v) {
              ++position;
              using V = std::decay_t<decltype(v)>;
              if constexpr (std::is_pointer_v<V> && !std::is_function_v<std::remove_pointer_t<V>>)
                if (v != nullptr && !emu::detail::in_device_allocation(v, 0))
                  emu::detail::check_device_pointer(str("launch of ", symbol_name(address)),
                                                    position, "", v);
            }(p),
            ...);
      },
      params);
  // The shared memory of the blocks the kernel has declared so far is checked now, as a GPU
  // refuses the launch; the grid runs with the stream (emu/streams.hpp).
  launch_detail::prepare_shared(address, st, emu::kernel_record(address).static_shared_bytes,
                                shared_bytes);
  emu::enqueue(stream, [address, grid, block, shared_bytes, &st, kernel, params = std::move(params),
                        settings = emu::settings()] {
    const std::function<void()> body = [&] { std::apply(kernel, params); };
    // The emulator learns the static shared memory as the blocks declare it, and tells
    // the launcher, which opts in then as it does from cudaFuncGetAttributes on a GPU.
    const std::function<void(std::size_t)> on_static = [&](std::size_t static_bytes) {
      launch_detail::prepare_shared(address, st, static_bytes, shared_bytes);
    };
    emu::run_grid(address, grid, block, shared_bytes, body, &on_static, &settings);
  });
#endif
  launch_detail::check_launched(address, stream);
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
