// The host emulator's CUDA runtime and cuBLAS: the calls the library makes, with the same
// signatures (declared by the toolkit's own headers) and the same semantics, run on the CPU.
//
// Device memory is host memory (256-byte aligned, tracked so a bad free is an error and the
// live and peak bytes can be read). Every operation is executed when it is called, so
// streams are in order and events complete at once; cudaEventElapsedTime measures the host
// time between two records. The GEMM shim keeps cuBLAS's column-major conventions
// (transposes, leading dimensions, strided batches) and runs OpenBLAS.
#pragma once

#include <cblas.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

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
  std::unordered_map<void*, std::size_t> blocks;
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
  auto& h = Heap::get();
  std::lock_guard lk(h.mu);
  h.blocks[p] = size;
  h.stats.live_bytes += size;
  h.stats.allocations += 1;
  if (h.stats.live_bytes > h.stats.peak_bytes) h.stats.peak_bytes = h.stats.live_bytes;
  *ptr = p;
  return cudaSuccess;
}

inline cudaError_t cudaFree(void* ptr) {
  using milmer::emu::detail::Heap;
  if (ptr == nullptr) return cudaSuccess;
  auto& h = Heap::get();
  std::lock_guard lk(h.mu);
  auto it = h.blocks.find(ptr);
  if (it == h.blocks.end()) return milmer::emu::detail::fail(cudaErrorInvalidValue);
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

inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind) {
  if (count == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) return milmer::emu::detail::fail(cudaErrorInvalidValue);
  std::memmove(dst, src, count);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                                   cudaStream_t) {
  return cudaMemcpy(dst, src, count, kind);
}
inline cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  if (count == 0) return cudaSuccess;
  if (ptr == nullptr) return milmer::emu::detail::fail(cudaErrorInvalidValue);
  std::memset(ptr, value, count);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) {
  return cudaMemset(ptr, value, count);
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

inline cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                                cublasOperation_t transb, int m, int n, int k,
                                                const float* alpha, const float* A, int lda,
                                                long long int strideA, const float* B, int ldb,
                                                long long int strideB, const float* beta, float* C,
                                                int ldc, long long int strideC, int batchCount) {
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

inline cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa,
                                     cublasOperation_t transb, int m, int n, int k,
                                     const float* alpha, const float* A, int lda, const float* B,
                                     int ldb, const float* beta, float* C, int ldc) {
  return cublasSgemmStridedBatched(handle, transa, transb, m, n, k, alpha, A, lda, 0, B, ldb, 0,
                                   beta, C, ldc, 0, 1);
}

}  // extern "C"
