// The execution context every launcher takes: the stream work is queued on and the cuBLAS
// handle bound to it (and, on the cuda target, the cuBLASLt handle and its workspace).
// One per stream; create it once, pass it to every op.
#pragma once

#include "milmer/platform.hpp"

#if MILMER_TARGET_CUDA
#include <cublasLt.h>
#endif

namespace milmer {

class Context {
 public:
  explicit Context(cudaStream_t stream = nullptr) : stream_(stream) {
    MILMER_CUBLAS_CHECK(cublasCreate(&blas_));
    MILMER_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
#if MILMER_TARGET_CUDA
    MILMER_CUBLAS_CHECK(cublasLtCreate(&lt_));
    MILMER_CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
#endif
  }
  ~Context() {
#if MILMER_TARGET_CUDA
    cudaFree(workspace_);
    cublasLtDestroy(lt_);
#endif
    cublasDestroy(blas_);
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  cudaStream_t stream() const {
    return stream_;
  }
  cublasHandle_t blas() const {
    return blas_;
  }
  void synchronize() const {
    MILMER_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
#if MILMER_TARGET_CUDA
  static constexpr std::size_t kWorkspaceBytes = 32u << 20;
  cublasLtHandle_t lt() const {
    return lt_;
  }
  void* workspace() const {
    return workspace_;
  }
#endif

 private:
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
#if MILMER_TARGET_CUDA
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
#endif
};

}  // namespace milmer
