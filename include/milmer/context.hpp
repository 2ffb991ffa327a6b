// The execution context every launcher takes: the stream work is queued on, the cuBLAS
// handle bound to it, and the cuBLASLt handle and its workspace (on the host target, the
// emulator's cuBLASLt, emu/cublaslt.hpp).
// One per stream; create it once, pass it to every op.
#pragma once

#include "milmer/platform.hpp"

#if MILMER_TARGET_CUDA
#include <cublasLt.h>
#else
#include "milmer/emu/cublaslt.hpp"
#endif

namespace milmer {

class Context {
 public:
  explicit Context(cudaStream_t stream = nullptr) : stream_(stream) {
    MILMER_CUBLAS_CHECK(cublasCreate(&blas_));
    MILMER_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
    MILMER_CUBLAS_CHECK(cublasLtCreate(&lt_));
    MILMER_CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
  }
  ~Context() {
    cudaFree(workspace_);
    cublasLtDestroy(lt_);
    cublasDestroy(blas_);
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  cudaStream_t stream() const { return stream_; }
  cublasHandle_t blas() const { return blas_; }
  void synchronize() const { MILMER_CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  static constexpr std::size_t kWorkspaceBytes = 32u << 20;
  cublasLtHandle_t lt() const { return lt_; }
  void* workspace() const { return workspace_; }

 private:
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
};

}  // namespace milmer
