// Planted memory errors that the host-asan preset must catch (run by ctest, which expects
// the sanitizer's report and a non-zero exit). Not part of the test binary.
#include <cstdio>
#include <cstring>

#include "milmer/platform.hpp"

namespace asan_probe {

__global__ void write_past_global_end(float* out, int n) {
  out[threadIdx.x] = 1.0f;  // launched with more threads than n
  (void)n;
}

__global__ void write_past_shared_end(float* out, int i) {
  MILMER_SHARED(float, tile, [32]);
  tile[i] = 1.0f;  // i = 32
  out[threadIdx.x] = tile[threadIdx.x];
}

}  // namespace asan_probe

int main(int argc, char** argv) {
  const char* which = argc > 1 ? argv[1] : "";
  float* out = nullptr;
  MILMER_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&out), 30 * sizeof(float)));
  if (std::strcmp(which, "global") == 0) {
    milmer::launch(asan_probe::write_past_global_end, dim3(1), dim3(32), 0, nullptr, out, 30);
  } else if (std::strcmp(which, "shared") == 0) {
    milmer::launch(asan_probe::write_past_shared_end, dim3(1), dim3(30), 0, nullptr, out, 32);
  } else {
    std::fprintf(stderr, "usage: asan_probe global|shared\n");
    return 2;
  }
  cudaFree(out);
  std::puts("asan_probe: no error detected");
  return 0;
}
