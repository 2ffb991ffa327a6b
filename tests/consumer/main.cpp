// Built against the installed tree only: proves the package config carries everything.
#include <milmer/milmer.hpp>

#include <cstdio>

__global__ void fill(float* out, float value) {
  out[threadIdx.x] = value;
}

int main() {
  float* d = nullptr;
  MILMER_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d), 32 * sizeof(float)));
  milmer::launch(fill, dim3(1), dim3(32), 0, nullptr, d, 2.5f);
  float h[32];
  MILMER_CUDA_CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
  MILMER_CUDA_CHECK(cudaFree(d));
  std::printf("consumer: target %s, h[31] = %g\n", milmer::target_name(), h[31]);
  return h[31] == 2.5f ? 0 : 1;
}
