// The host emulator's CUDA runtime and cuBLAS: the calls the library makes, with the same
// signatures (declared by the toolkit's own headers) and the same semantics, run on the CPU.
//
// Device memory is host memory (256-byte aligned, tracked so a bad free is an error and the
// live and peak bytes can be read). Pinned host memory (cudaMallocHost, cudaHostAlloc) is
// tracked too: copies to and from it run with their stream, while a copy from pageable host
// memory is staged and a copy into it finishes before the call returns, as CUDA documents.
// Streams defer their work to synchronisation points (streams.hpp). The GEMM shim keeps
// cuBLAS's column-major conventions (transposes, leading dimensions, strided batches), runs
// OpenBLAS, and is queued on the handle's stream.
//
// Strict mode (MILMER_EMU_STRICT, see scheduler.hpp): fresh and freed device memory and fresh
// pinned memory are 0xff bytes (a float NaN; zero bytes without strict mode); every pointer a
// kernel launch or a cuBLAS call takes is null or points into a live device allocation
// (pinned host memory is not: the library never reads it from a kernel), and cudaMemcpy* and
// cudaMemset* pointers are where their kind says (device ranges inside one allocation), else
// milmer::Error naming the call and the argument. The device attributes and kernel
// attributes are those of the emulated architecture (MILMER_EMU_ARCH).
#pragma once

#include <cblas.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "milmer/emu/scheduler.hpp"
#include "milmer/emu/streams.hpp"

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
// Live allocations of one kind (device memory, pinned host memory): base address -> bytes,
// ordered for lookups.
struct Allocations {
  std::mutex mu;
  std::map<std::uintptr_t, std::size_t> blocks;
  MemoryStats stats;

  // Whether [p, p + bytes) lies inside one live allocation (p may be its end when bytes is
  // 0: an empty range).
  bool contains(const void* p, std::size_t bytes) {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    std::lock_guard lk(mu);
    auto it = blocks.upper_bound(a);
    if (it == blocks.begin()) return false;
    --it;
    return a >= it->first && a - it->first <= it->second && bytes <= it->second - (a - it->first);
  }
  // `size` fresh bytes, 256-byte aligned, poisoned in strict mode; null when out of memory.
  void* allocate(std::size_t size) {
    // Exactly `size` bytes (not rounded up), so AddressSanitizer sees an overflow by one.
    void* p = nullptr;
    if (posix_memalign(&p, 256, size) != 0) return nullptr;
    // Fresh memory holds garbage on a GPU: strict mode makes it NaN bytes.
    std::memset(p, strict() ? 0xff : 0x00, size);
    std::lock_guard lk(mu);
    blocks[reinterpret_cast<std::uintptr_t>(p)] = size;
    stats.live_bytes += size;
    stats.allocations += 1;
    if (stats.live_bytes > stats.peak_bytes) stats.peak_bytes = stats.live_bytes;
    return p;
  }
  // Frees an allocation by its base; false when p is none.
  bool release(void* p) {
    const bool poison = strict();
    std::lock_guard lk(mu);
    auto it = blocks.find(reinterpret_cast<std::uintptr_t>(p));
    if (it == blocks.end()) return false;
    // A read through a stale pointer sees NaN bytes (until the memory is reused).
    if (poison) std::memset(p, 0xff, it->second);
    stats.live_bytes -= it->second;
    blocks.erase(it);
    std::free(p);
    return true;
  }

  // cudaMalloc, cudaHostAlloc.
  cudaError_t allocate_call(void** ptr, std::size_t size) {
    if (ptr == nullptr) return fail(cudaErrorInvalidValue);
    *ptr = size == 0 ? nullptr : allocate(size);
    return *ptr || size == 0 ? cudaSuccess : fail(cudaErrorMemoryAllocation);
  }
  // cudaFree, cudaFreeHost: synchronise the device first (queued work may use the memory).
  cudaError_t free_call(void* ptr) {
    if (ptr == nullptr) return cudaSuccess;
    synchronize_device_quietly();
    return release(ptr) ? cudaSuccess : fail(cudaErrorInvalidValue);
  }

  static Allocations& device() {
    static Allocations a;
    return a;
  }
  static Allocations& pinned() {
    static Allocations a;
    return a;
  }
};

inline bool in_device_allocation(const void* p, std::size_t bytes) {
  return Allocations::device().contains(p, bytes);
}
inline bool in_pinned_allocation(const void* p, std::size_t bytes) {
  return Allocations::pinned().contains(p, bytes);
}

inline std::string pointer_place(const void* p) {
  return str(p, in_device_allocation(p, 0)   ? " (device memory)"
                : in_pinned_allocation(p, 0) ? " (pinned host memory, not a device allocation)"
                                             : " (not in any live device allocation)");
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

// Where a copy's host side lives decides when it runs (CUDA's documented rules): a copy
// from pageable host memory is staged (the source is read now) and runs with its stream; a
// copy into pageable host memory runs, with the stream's earlier work, before the call
// returns; a copy from or into pinned host memory, and a device-to-device copy, run with
// their stream. A blocking copy (cudaMemcpy) is queued on stream 0 and waited for.
// Why the last cuBLAS or cuBLASLt call of this thread failed, in words (the argument and
// what was wrong); MILMER_CUBLAS_CHECK adds it to its error. Empty when the status says all.
inline thread_local std::string status_reason;
inline cublasStatus_t refuse(cublasStatus_t status, std::string reason) {
  status_reason = std::move(reason);
  return status;
}

inline cudaError_t copy(const char* call, void* dst, const void* src, size_t count,
                        cudaMemcpyKind kind, cudaStream_t stream, bool blocking) {
  if (count == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) return fail(cudaErrorInvalidValue);
  check_copy(call, dst, src, count, kind);
  auto pageable = [](const void* p, std::size_t n) {
    return !in_device_allocation(p, n) && !in_pinned_allocation(p, n);
  };
  std::uint64_t serial = 0;
  if (pageable(src, count)) {
    auto staged = std::make_shared<std::vector<unsigned char>>(
        static_cast<const unsigned char*>(src), static_cast<const unsigned char*>(src) + count);
    serial = enqueue(stream, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
  } else {
    serial = enqueue(stream, [dst, src, count] { std::memmove(dst, src, count); });
  }
  if (blocking || pageable(dst, count)) {
    auto& s = Streams::get();
    std::lock_guard lk(s.mu);
    s.synchronize([&] { s.run_until(s.resolve(stream), serial + 1); });
  }
  return cudaSuccess;
}
inline cudaError_t set(const char* call, void* ptr, int value, size_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (ptr == nullptr) return fail(cudaErrorInvalidValue);
  check_range(call, 1, "devPtr", ptr, count, true, "device memory");
  enqueue(stream, [ptr, value, count] { std::memset(ptr, value, count); });
  return cudaSuccess;
}

// The runtime's errors: their names and texts (cudaGetErrorName, cudaGetErrorString).
struct ErrorText {
  cudaError_t code;
  const char* name;
  const char* text;
};
inline const ErrorText& error_text(cudaError_t e) {
  static constexpr ErrorText kTexts[] = {
      {cudaSuccess, "cudaSuccess", "no error"},
      {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
      {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
      {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
      {cudaErrorInvalidDeviceFunction, "cudaErrorInvalidDeviceFunction", "invalid device function"},
      {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
      {cudaErrorUnknown, "cudaErrorUnknown", "unknown error"}};
  for (const ErrorText& t : kTexts)
    if (t.code == e) return t;
  return kTexts[std::size(kTexts) - 1];
}

// A cuBLAS or cuBLASLt handle or descriptor: created, destroyed.
template <class Handle>
cublasStatus_t new_handle(Handle** out) {
  if (out == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *out = new Handle{};
  return CUBLAS_STATUS_SUCCESS;
}
template <class Handle>
cublasStatus_t delete_handle(Handle* h) {
  if (h == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace detail

// The reason the last failing cuBLAS(Lt) call of this thread gave, cleared by reading it.
inline std::string take_status_reason() {
  return std::exchange(detail::status_reason, std::string());
}

inline MemoryStats memory_stats() {
  return detail::locked(detail::Allocations::device(), [](auto& a) { return a.stats; });
}
// Starts a new peak measurement from the bytes live now.
inline void reset_peak_memory() {
  detail::locked(detail::Allocations::device(),
                 [](auto& a) { a.stats.peak_bytes = a.stats.live_bytes; });
}

}  // namespace milmer::emu

extern "C" {

inline cudaError_t cudaMalloc(void** ptr, size_t size) {
  return milmer::emu::detail::Allocations::device().allocate_call(ptr, size);
}
// Synchronises the device first, as CUDA's cudaFree does: queued work may still use the memory.
inline cudaError_t cudaFree(void* ptr) {
  return milmer::emu::detail::Allocations::device().free_call(ptr);
}

// Stream-ordered allocation: the memory is allocated now; the free is queued on the stream.
inline cudaError_t cudaMallocAsync(void** ptr, size_t size, cudaStream_t) {
  return cudaMalloc(ptr, size);
}
inline cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream) {
  if (ptr == nullptr) return cudaSuccess;
  if (!milmer::emu::detail::in_device_allocation(ptr, 0))
    return milmer::emu::detail::fail(cudaErrorInvalidValue);
  milmer::emu::enqueue(stream, [ptr] { milmer::emu::detail::Allocations::device().release(ptr); });
  return cudaSuccess;
}

// Pinned (page-locked) host memory. The host reads and writes it directly; copies to and
// from it run with their stream, so the host must synchronise before it reads what a
// device-to-host copy brings.
inline cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int) {
  return milmer::emu::detail::Allocations::pinned().allocate_call(ptr, size);
}
inline cudaError_t cudaMallocHost(void** ptr, size_t size) {
  return cudaHostAlloc(ptr, size, cudaHostAllocDefault);
}
inline cudaError_t cudaFreeHost(void* ptr) {
  return milmer::emu::detail::Allocations::pinned().free_call(ptr);
}

inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  return milmer::emu::detail::copy("cudaMemcpy", dst, src, count, kind, nullptr, true);
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                                   cudaStream_t stream) {
  return milmer::emu::detail::copy("cudaMemcpyAsync", dst, src, count, kind, stream, false);
}
// Device memory is set with stream 0's order, asynchronously to the host (as CUDA documents).
inline cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  return milmer::emu::detail::set("cudaMemset", ptr, value, count, nullptr);
}
inline cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream) {
  return milmer::emu::detail::set("cudaMemsetAsync", ptr, value, count, stream);
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
  return milmer::emu::detail::error_text(e).text;
}
inline const char* cudaGetErrorName(cudaError_t e) {
  return milmer::emu::detail::error_text(e).name;
}

// cuBLAS ------------------------------------------------------------------------------

inline cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  return milmer::emu::detail::new_handle(handle);
}
inline cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  return milmer::emu::detail::delete_handle(handle);
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
  // alpha and beta are read now (host pointers); the product runs with the handle's stream.
  enqueue(handle->stream, [=, alpha = *alpha, beta = *beta] {
    for (int b = 0; b < batchCount; ++b)
      cblas_sgemm(CblasColMajor, ta, tb, m, n, k, alpha, A + b * strideA, lda, B + b * strideB, ldb,
                  beta, C + b * strideC, ldc);
  });
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
