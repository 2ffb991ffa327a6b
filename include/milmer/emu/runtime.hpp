// The host emulator's CUDA runtime and cuBLAS: the calls the library makes, with the same
// signatures (declared by the toolkit's own headers) and the same semantics, run on the CPU.
//
// Device memory is host memory (256-byte aligned, tracked so a bad free is an error and the
// live and peak bytes can be read). Every operation is executed when it is called, so
// streams are in order and events complete at once; cudaEventElapsedTime measures the host
// time between two records. The GEMM shim keeps cuBLAS's column-major conventions
// (transposes, leading dimensions, strided batches) and runs OpenBLAS.
//
// Strict mode (MILMER_EMU_STRICT, see scheduler.hpp): fresh and freed device memory are 0xff
// bytes (a float NaN; zero bytes without strict mode); every pointer a kernel launch or a
// cuBLAS call takes is null or points into a live device allocation, and cudaMemcpy* and
// cudaMemset* pointers are where their kind says (device ranges inside one allocation),
// else milmer::Error naming the call and the argument. The device attributes and kernel
// attributes are those of the emulated architecture (MILMER_EMU_ARCH).
#pragma once

#include <cblas.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "milmer/emu/scheduler.hpp"

struct CUstream_st {
  unsigned flags = 0;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point when{};
  bool recorded = false;
};
struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

namespace milmer::emu {

struct MemoryStats {
  std::size_t live_bytes = 0;
  std::size_t peak_bytes = 0;
  std::size_t allocations = 0;
};

namespace detail {
struct Heap {
  std::mutex mu;
  std::map<std::uintptr_t, std::size_t> blocks;  // base address -> bytes, ordered for lookups
  MemoryStats stats;
  static Heap& get() {
    static Heap h;
    return h;
  }
};
inline thread_local cudaError_t last_error = cudaSuccess;
inline cudaError_t fail(cudaError_t e) {
  last_error = e;
  return e;
}

// Whether [p, p + bytes) lies inside one live device allocation (p may be its end when
// bytes is 0: an empty range).
inline bool in_device_allocation(const void* p, std::size_t bytes) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  auto& h = Heap::get();
  std::lock_guard lk(h.mu);
  auto it = h.blocks.upper_bound(a);
  if (it == h.blocks.begin()) return false;
  --it;
  return a >= it->first && a - it->first <= it->second && bytes <= it->second - (a - it->first);
}

inline std::string pointer_place(const void* p) {
  return str(
      p, in_device_allocation(p, 0) ? " (device memory)" : " (not in any live device allocation)");
}

// Strict mode: a pointer a kernel or library call reads or writes through must be null or
// device memory.
inline void check_device_pointer(const std::string& call, int position, const char* name,
                                 const void* p) {
  if (p == nullptr || !strict() || in_device_allocation(p, 0)) return;
  throw Error(call, name && *name ? str(position, " (", name, ")") : std::to_string(position),
              "null or a pointer into a live device allocation (cudaMalloc)", pointer_place(p));
}

// Strict mode: the bytes [p, p + bytes) of a copy or memset are device memory (inside one
// allocation) or host memory (outside every allocation), as the call's kind says.
inline void check_range(const char* call, int position, const char* name, const void* p,
                        std::size_t bytes, bool device, const char* kind) {
  if (!strict()) return;
  if (device && !in_device_allocation(p, bytes))
    throw Error(call, str(position, " (", name, ")"),
                str(bytes, " bytes of device memory inside one live allocation (", kind, ")"),
                pointer_place(p));
  if (!device && in_device_allocation(p, 0))
    throw Error(call, str(position, " (", name, ")"), str("host memory (", kind, ")"),
                pointer_place(p));
}

inline void check_copy(const char* call, void* dst, const void* src, std::size_t count,
                       cudaMemcpyKind kind) {
  // cudaMemcpyDefault: unified addressing, the runtime finds out where each pointer lives.
  if (kind == cudaMemcpyDefault) return;
  static constexpr const char* kNames[] = {"cudaMemcpyHostToHost", "cudaMemcpyHostToDevice",
                                           "cudaMemcpyDeviceToHost", "cudaMemcpyDeviceToDevice"};
  const int k = static_cast<int>(kind);
  if (k < 0 || k > 3) throw Error(call, "4 (kind)", "a cudaMemcpyKind", std::to_string(k));
  // The kinds' values: bit 0 says the destination is device memory, bit 1 the source.
  check_range(call, 1, "dst", dst, count, (k & 1) != 0, kNames[k]);
  check_range(call, 2, "src", src, count, (k & 2) != 0, kNames[k]);
}

inline cudaError_t copy(const char* call, void* dst, const void* src, size_t count,
                        cudaMemcpyKind kind) {
  if (count == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) return fail(cudaErrorInvalidValue);
  check_copy(call, dst, src, count, kind);
  std::memmove(dst, src, count);
  return cudaSuccess;
}
inline cudaError_t set(const char* call, void* ptr, int value, size_t count) {
  if (count == 0) return cudaSuccess;
  if (ptr == nullptr) return fail(cudaErrorInvalidValue);
  check_range(call, 1, "devPtr", ptr, count, true, "device memory");
  std::memset(ptr, value, count);
  return cudaSuccess;
}

}  // namespace detail

inline MemoryStats memory_stats() {
  auto& h = detail::Heap::get();
  std::lock_guard lk(h.mu);
  return h.stats;
}
// Starts a new peak measurement from the bytes live now.
inline void reset_peak_memory() {
  auto& h = detail::Heap::get();
  std::lock_guard lk(h.mu);
  h.stats.peak_bytes = h.stats.live_bytes;
}

}  // namespace milmer::emu

extern "C" {

inline cudaError_t cudaMalloc(void** ptr, size_t size) {
  using milmer::emu::detail::Heap;
  if (ptr == nullptr) return milmer::emu::detail::fail(cudaErrorInvalidValue);
  *ptr = nullptr;
  if (size == 0) return cudaSuccess;
  // Exactly `size` bytes (not rounded up), so AddressSanitizer sees an overflow by one.
  void* p = nullptr;
  if (posix_memalign(&p, 256, size) != 0)
    return milmer::emu::detail::fail(cudaErrorMemoryAllocation);
  // Fresh device memory holds garbage on a GPU: strict mode makes it NaN bytes.
  std::memset(p, milmer::emu::strict() ? 0xff : 0x00, size);
  auto& h = Heap::get();
  std::lock_guard lk(h.mu);
  h.blocks[reinterpret_cast<std::uintptr_t>(p)] = size;
  h.stats.live_bytes += size;
  h.stats.allocations += 1;
  if (h.stats.live_bytes > h.stats.peak_bytes) h.stats.peak_bytes = h.stats.live_bytes;
  *ptr = p;
  return cudaSuccess;
}

inline cudaError_t cudaFree(void* ptr) {
  using milmer::emu::detail::Heap;
  if (ptr == nullptr) return cudaSuccess;
  const bool poison = milmer::emu::strict();
  auto& h = Heap::get();
  std::lock_guard lk(h.mu);
  auto it = h.blocks.find(reinterpret_cast<std::uintptr_t>(ptr));
  if (it == h.blocks.end()) return milmer::emu::detail::fail(cudaErrorInvalidValue);
  // A read through a stale pointer sees NaN bytes (until the memory is reused).
  if (poison) std::memset(ptr, 0xff, it->second);
  h.stats.live_bytes -= it->second;
  h.blocks.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

inline cudaError_t cudaMallocAsync(void** ptr, size_t size, cudaStream_t) {
  return cudaMalloc(ptr, size);
}
inline cudaError_t cudaFreeAsync(void* ptr, cudaStream_t) {
  return cudaFree(ptr);
}

inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  return milmer::emu::detail::copy("cudaMemcpy", dst, src, count, kind);
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                                   cudaStream_t) {
  return milmer::emu::detail::copy("cudaMemcpyAsync", dst, src, count, kind);
}
inline cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  return milmer::emu::detail::set("cudaMemset", ptr, value, count);
}
inline cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) {
  return milmer::emu::detail::set("cudaMemsetAsync", ptr, value, count);
}

inline cudaError_t cudaStreamCreate(cudaStream_t* s) {
  if (s == nullptr) return milmer::emu::detail::fail(cudaErrorInvalidValue);
  *s = new CUstream_st{};
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  cudaError_t e = cudaStreamCreate(s);
  if (e == cudaSuccess) (*s)->flags = flags;
  return e;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) {
  return cudaSuccess;
}
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) {
  return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize(void) {
  return cudaSuccess;
}

inline cudaError_t cudaEventCreate(cudaEvent_t* e) {
  if (e == nullptr) return milmer::emu::detail::fail(cudaErrorInvalidValue);
  *e = new CUevent_st{};
  return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  if (e == nullptr) return milmer::emu::detail::fail(cudaErrorInvalidResourceHandle);
  e->when = std::chrono::steady_clock::now();
  e->recorded = true;
  return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  return e == nullptr ? milmer::emu::detail::fail(cudaErrorInvalidResourceHandle) : cudaSuccess;
}
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (ms == nullptr || start == nullptr || end == nullptr)
    return milmer::emu::detail::fail(cudaErrorInvalidValue);
  if (!start->recorded || !end->recorded)
    return milmer::emu::detail::fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}

inline cudaError_t cudaGetLastError(void) {
  cudaError_t e = milmer::emu::detail::last_error;
  milmer::emu::detail::last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError(void) {
  return milmer::emu::detail::last_error;
}
// The emulated device (MILMER_EMU_ARCH) for code that asks for its limits.
inline cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return milmer::emu::detail::fail(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (value == nullptr || device != 0) return milmer::emu::detail::fail(cudaErrorInvalidValue);
  const int arch = milmer::emu::arch();
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor:
      *value = arch / 10;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = static_cast<int>(milmer::kSharedDefaultBytes);
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = static_cast<int>(milmer::shared_optin_bytes(arch));
      return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock:
      *value = 1024;
      return cudaSuccess;
    case cudaDevAttrMaxGridDimX:
      *value = 2147483647;
      return cudaSuccess;
    case cudaDevAttrMaxGridDimY:
    case cudaDevAttrMaxGridDimZ:
      *value = 65535;
      return cudaSuccess;
    default:
      return milmer::emu::detail::fail(cudaErrorInvalidValue);
  }
}

// Kernel attributes: the static shared memory is what the kernel's blocks have declared so far
// (the emulator learns it when a block reaches each MILMER_SHARED declaration); the emulator
// cannot see __launch_bounds__, so maxThreadsPerBlock is 1024.
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, const void* func) {
  if (attr == nullptr || func == nullptr) return milmer::emu::detail::fail(cudaErrorInvalidValue);
  const auto rec = milmer::emu::kernel_record(func);
  *attr = cudaFuncAttributes{};
  attr->sharedSizeBytes = rec.static_shared_bytes;
  attr->maxThreadsPerBlock = 1024;
  attr->maxDynamicSharedSizeBytes =
      rec.max_dynamic_shared >= 0
          ? rec.max_dynamic_shared
          : static_cast<int>(milmer::kSharedDefaultBytes - rec.static_shared_bytes);
  attr->ptxVersion = attr->binaryVersion = milmer::emu::arch();
  return cudaSuccess;
}
inline cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (func == nullptr) return milmer::emu::detail::fail(cudaErrorInvalidDeviceFunction);
  auto& g = milmer::emu::detail::Global::get();
  std::lock_guard lk(g.mu);
  auto& rec = g.kernels[func];
  switch (attr) {
    case cudaFuncAttributeMaxDynamicSharedMemorySize:
      if (value < 0 || static_cast<std::size_t>(value) + rec.static_shared_bytes >
                           milmer::shared_optin_bytes(g.settings.arch))
        return milmer::emu::detail::fail(cudaErrorInvalidValue);
      rec.max_dynamic_shared = value;
      rec.attribute_sets += 1;
      return cudaSuccess;
    case cudaFuncAttributePreferredSharedMemoryCarveout:
      if (value < -1 || value > 100) return milmer::emu::detail::fail(cudaErrorInvalidValue);
      rec.attribute_sets += 1;
      return cudaSuccess;
    default:
      return milmer::emu::detail::fail(cudaErrorInvalidValue);
  }
}

inline cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return milmer::emu::detail::fail(cudaErrorInvalidValue);
  *count = 0;  // the host target never has a device; code asking wants to know that
  return cudaSuccess;
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorInvalidDeviceFunction:
      return "invalid device function";
    default:
      return "unknown error";
  }
}
inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorInvalidDeviceFunction:
      return "cudaErrorInvalidDeviceFunction";
    default:
      return "cudaErrorUnknown";
  }
}

// cuBLAS ------------------------------------------------------------------------------

inline cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext{};
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasGetStream_v2(cublasHandle_t handle, cudaStream_t* stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"

namespace milmer::emu::detail {
inline cublasStatus_t sgemm(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const float* alpha,
                            const float* A, int lda, long long int strideA, const float* B, int ldb,
                            long long int strideB, const float* beta, float* C, int ldc,
                            long long int strideC, int batchCount) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  auto op_ok = [](cublasOperation_t t) { return t == CUBLAS_OP_N || t == CUBLAS_OP_T; };
  if (!op_ok(transa) || !op_ok(transb)) return CUBLAS_STATUS_INVALID_VALUE;
  const int a_rows = transa == CUBLAS_OP_N ? m : k;
  const int b_rows = transb == CUBLAS_OP_N ? k : n;
  auto at_least = [](int ld, int rows) { return ld >= (rows > 1 ? rows : 1); };
  if (m < 0 || n < 0 || k < 0 || batchCount < 0 || !at_least(lda, a_rows) ||
      !at_least(ldb, b_rows) || !at_least(ldc, m) || alpha == nullptr || beta == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const auto ta = transa == CUBLAS_OP_N ? CblasNoTrans : CblasTrans;
  const auto tb = transb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans;
  for (int b = 0; b < batchCount; ++b)
    cblas_sgemm(CblasColMajor, ta, tb, m, n, k, *alpha, A + b * strideA, lda, B + b * strideB, ldb,
                *beta, C + b * strideC, ldc);
  return CUBLAS_STATUS_SUCCESS;
}
}  // namespace milmer::emu::detail

extern "C" {

// The matrices are device pointers (checked in strict mode); alpha and beta are host
// pointers (CUBLAS_POINTER_MODE_HOST, the default).
inline cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                                cublasOperation_t transb, int m, int n, int k,
                                                const float* alpha, const float* A, int lda,
                                                long long int strideA, const float* B, int ldb,
                                                long long int strideB, const float* beta, float* C,
                                                int ldc, long long int strideC, int batchCount) {
  using milmer::emu::detail::check_device_pointer;
  check_device_pointer("cublasSgemmStridedBatched", 8, "A", A);
  check_device_pointer("cublasSgemmStridedBatched", 11, "B", B);
  check_device_pointer("cublasSgemmStridedBatched", 15, "C", C);
  return milmer::emu::detail::sgemm(handle, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb,
                                    strideB, beta, C, ldc, strideC, batchCount);
}

inline cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa,
                                     cublasOperation_t transb, int m, int n, int k,
                                     const float* alpha, const float* A, int lda, const float* B,
                                     int ldb, const float* beta, float* C, int ldc) {
  using milmer::emu::detail::check_device_pointer;
  check_device_pointer("cublasSgemm", 8, "A", A);
  check_device_pointer("cublasSgemm", 10, "B", B);
  check_device_pointer("cublasSgemm", 13, "C", C);
  return milmer::emu::detail::sgemm(handle, transa, transb, m, n, k, alpha, A, lda, 0, B, ldb, 0,
                                    beta, C, ldc, 0, 1);
}

}  // extern "C"
