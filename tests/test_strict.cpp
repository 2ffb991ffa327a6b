// The emulator's strict mode (MILMER_EMU_STRICT, on by default): each check with a planted
// bug that it reports, and that goes unnoticed with the check off, as it would on a GPU until
// it faults or computes garbage.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "milmer/context.hpp"
#include "milmer/platform.hpp"
#include "support.hpp"

// Kernels live in a named namespace: the emulator names kernels from the dynamic symbol
// table, which has no entries for internal linkage.
namespace stricttest {

__global__ void copy_kernel(float* out, const float* in, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i];
}

// Reads a static shared variable that block 0 writes and no other block does: a read before
// any write in every other block, where a GPU gives garbage (or a previous block's values).
__global__ void static_shared_read_before_write(float* out) {
  MILMER_SHARED(float, tile, [32]);
  if (blockIdx.x == 0) tile[threadIdx.x] = 5.0f;
  __syncthreads();
  out[blockIdx.x * 32 + threadIdx.x] = tile[threadIdx.x] + 1.0f;
}

__global__ void dynamic_shared_read_before_write(float* out) {
  MILMER_DYNAMIC_SHARED(float, tile);
  out[threadIdx.x] = tile[threadIdx.x] + 1.0f;
}

// Accumulates into its output without anyone zeroing it first.
__global__ void accumulate(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] += 1.0f;
}

// 40 KB of static shared memory next to the launch's dynamic shared memory. The tag makes
// distinct kernels, since a kernel's opt-in outlives the test that made it.
template <int kTag>
__global__ void big_static_shared(float* out) {
  MILMER_SHARED(float, big, [10 * 1024]);
  MILMER_DYNAMIC_SHARED(float, dyn);
  big[threadIdx.x] = 1.0f;
  dyn[0] = 2.0f;
  __syncthreads();
  if (threadIdx.x == 0) out[0] = big[0] + dyn[0];
}

// Sets one emulator setting (strict mode, the architecture) for a scope.
template <class T>
class Setting {
 public:
  Setting(T (*get)(), void (*set)(T), T value) : set_(set), saved_(get()) { set_(value); }
  ~Setting() { set_(saved_); }
  Setting(const Setting&) = delete;
  Setting& operator=(const Setting&) = delete;

 private:
  void (*set_)(T);
  T saved_;
};
struct StrictMode : Setting<bool> {
  explicit StrictMode(bool on) : Setting(milmer::emu::strict, milmer::emu::set_strict, on) {}
};
struct ArchMode : Setting<int> {
  explicit ArchMode(int arch) : Setting(milmer::emu::arch, milmer::emu::set_arch, arch) {}
};

// A launch as <<<>>> makes it: nothing opts in to more shared memory.
template <class Kernel>
void raw_launch(Kernel kernel, dim3 grid, dim3 block, std::size_t shared_bytes, float* out) {
  const std::function<void()> body = [&] { kernel(out); };
  // run_grid runs at once, outside the streams: the work queued before it runs first.
  MILMER_CUDA_CHECK(cudaDeviceSynchronize());
  milmer::emu::run_grid(reinterpret_cast<const void*>(kernel), grid, block, shared_bytes, body);
}

}  // namespace stricttest

using namespace stricttest;

TEST_SUITE("emulator strict mode") {
  TEST_CASE("a host pointer passed to a kernel is reported with the kernel and the argument") {
    std::vector<float> host(64, 3.0f);
    milmer::test::DeviceVector<float> out(64);
    {
      StrictMode strict(true);
      const std::string msg = milmer::test::error_message([&] {
        milmer::launch(copy_kernel, dim3(1), dim3(64), 0, nullptr, out.data(),
                       static_cast<const float*>(host.data()), 64);
      });
      CHECK(msg.find("launch of stricttest::copy_kernel") != std::string::npos);
      CHECK(msg.find("argument '2'") != std::string::npos);
      CHECK(msg.find("not in any live device allocation") != std::string::npos);
      // Null is a valid pointer argument (kernels test optional pointers against it).
      milmer::launch(copy_kernel, dim3(1), dim3(64), 0, nullptr, out.data(),
                     static_cast<const float*>(nullptr), 0);
    }
    StrictMode lenient(false);
    milmer::launch(copy_kernel, dim3(1), dim3(64), 0, nullptr, out.data(),
                   static_cast<const float*>(host.data()), 64);
    CHECK(out.to_host() == host);
  }

  TEST_CASE("a freed device pointer passed to a kernel is reported") {
    StrictMode strict(true);
    milmer::test::DeviceVector<float> in(64);  // before the free: it must not reuse p
    float* p = nullptr;
    MILMER_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), 64 * sizeof(float)));
    MILMER_CUDA_CHECK(cudaFree(p));
    const std::string msg = milmer::test::error_message([&] {
      milmer::launch(copy_kernel, dim3(1), dim3(64), 0, nullptr, p,
                     static_cast<const float*>(in.data()), 64);
    });
    CHECK(msg.find("argument '1'") != std::string::npos);
  }

  TEST_CASE("cuBLAS calls and copies check where their pointers live") {
    milmer::test::DeviceVector<float> a(4), b(4), c(4);
    std::vector<float> host(4, 1.0f), back(4, 0.0f);
    cublasHandle_t handle;
    MILMER_CUBLAS_CHECK(cublasCreate(&handle));
    const float one = 1.0f, zero = 0.0f;
    {
      StrictMode strict(true);
      CHECK(milmer::test::error_message([&] {
              (void)cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, host.data(), 2,
                                b.data(), 2, &zero, c.data(), 2);
            }).find("cublasSgemm: argument '8 (A)'") != std::string::npos);
      CHECK(milmer::test::error_message([&] {
              (void)cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one,
                                              a.data(), 2, 4, b.data(), 2, 4, &zero, host.data(), 2,
                                              4, 1);
            }).find("cublasSgemmStridedBatched: argument '15 (C)'") != std::string::npos);
      // The kind says host to device, the destination is host memory.
      CHECK(milmer::test::error_message([&] {
              (void)cudaMemcpy(back.data(), host.data(), 16, cudaMemcpyHostToDevice);
            }).find("cudaMemcpy: argument '1 (dst)'") != std::string::npos);
      // A device range past the end of its allocation.
      CHECK(milmer::test::error_message([&] {
              (void)cudaMemcpyAsync(back.data(), a.data() + 1, 16, cudaMemcpyDeviceToHost, nullptr);
            }).find("cudaMemcpyAsync: argument '2 (src)'") != std::string::npos);
      CHECK(milmer::test::error_message([&] {
              (void)cudaMemset(back.data(), 0, 16);
            }).find("cudaMemset: argument '1 (devPtr)'") != std::string::npos);
      // cudaMemcpyDefault: the runtime finds out where the pointers live.
      CHECK(cudaMemcpy(back.data(), host.data(), 16, cudaMemcpyDefault) == cudaSuccess);
      CHECK(cudaMemcpy(a.data(), host.data(), 16, cudaMemcpyHostToDevice) == cudaSuccess);
    }
    StrictMode lenient(false);
    CHECK(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, host.data(), 2, b.data(), 2,
                      &zero, c.data(), 2) == CUBLAS_STATUS_SUCCESS);
    CHECK(cudaMemcpy(back.data(), host.data(), 16, cudaMemcpyHostToDevice) == cudaSuccess);
    CHECK(back == host);
    cublasDestroy(handle);
  }

  TEST_CASE("shared memory read before any write is NaN, never a lucky zero or a leftover") {
    for (const bool on : {true, false}) {
      StrictMode mode(on);
      milmer::test::DeviceVector<float> out(4 * 32), dyn_out(32);
      milmer::launch(static_shared_read_before_write, dim3(4), dim3(32), 0, nullptr, out.data());
      milmer::launch(dynamic_shared_read_before_write, dim3(1), dim3(32), 32 * sizeof(float),
                     nullptr, dyn_out.data());
      const auto h = out.to_host();
      const auto d = dyn_out.to_host();
      for (int t = 0; t < 32; ++t) {
        CHECK(h[t] == 6.0f);  // block 0 wrote its tile
        for (int b = 1; b < 4; ++b) CHECK(std::isnan(h[b * 32 + t]) == on);
        CHECK(std::isnan(d[t]) == on);
        if (!on) CHECK(d[t] == 1.0f);
      }
    }
  }

  TEST_CASE("fresh device memory read before any write is NaN") {
    for (const bool on : {true, false}) {
      StrictMode mode(on);
      float* p = nullptr;
      MILMER_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), 100 * sizeof(float)));
      milmer::launch(accumulate, dim3(1), dim3(128), 0, nullptr, p, 100);
      std::vector<float> h(100);
      MILMER_CUDA_CHECK(cudaMemcpy(h.data(), p, sizeof(float) * 100, cudaMemcpyDeviceToHost));
      MILMER_CUDA_CHECK(cudaFree(p));
      for (float v : h) CHECK((on ? std::isnan(v) : v == 1.0f));
    }
  }

  TEST_CASE("40 KB static plus 10 KB dynamic shared memory needs the opt-in") {
    milmer::test::DeviceVector<float> out(1);
    const std::size_t dynamic = 10 * 1024;
    {
      StrictMode strict(true);
      const std::string msg = milmer::test::error_message(
          [&] { raw_launch(big_static_shared<0>, dim3(1), dim3(32), dynamic, out.data()); });
      CHECK(msg.find("launch of void stricttest::big_static_shared<0>(float*)") !=
            std::string::npos);
      CHECK(msg.find("expected at most 49152 bytes without cudaFuncSetAttribute") !=
            std::string::npos);
      CHECK(msg.find("got 51200 bytes (40960 static + 10240 dynamic)") != std::string::npos);
    }
    {
      StrictMode lenient(false);
      raw_launch(big_static_shared<1>, dim3(1), dim3(32), dynamic, out.data());
      CHECK(out.to_host()[0] == 3.0f);
    }
    // milmer::launch counts the static memory and opts in, once per kernel.
    StrictMode strict(true);
    milmer::launch(big_static_shared<2>, dim3(1), dim3(32), dynamic, nullptr, out.data());
    CHECK(out.to_host()[0] == 3.0f);
    milmer::launch(big_static_shared<2>, dim3(2), dim3(32), 2 * dynamic, nullptr, out.data());
    const auto rec =
        milmer::emu::kernel_record(reinterpret_cast<const void*>(big_static_shared<2>));
    CHECK(rec.attribute_sets == 1);
    CHECK(rec.static_shared_bytes == 40960);
    CHECK(rec.max_dynamic_shared ==
          static_cast<int>(milmer::shared_optin_bytes(milmer::emu::arch()) - 40960));
    cudaFuncAttributes attr{};
    CHECK(cudaFuncGetAttributes(&attr, reinterpret_cast<const void*>(big_static_shared<2>)) ==
          cudaSuccess);
    CHECK(attr.sharedSizeBytes == 40960);
    // A kernel under 48 KB never opts in.
    milmer::launch(copy_kernel, dim3(1), dim3(32), 8 * 1024, nullptr, out.data(),
                   static_cast<const float*>(nullptr), 0);
    CHECK(milmer::emu::kernel_record(reinterpret_cast<const void*>(copy_kernel)).attribute_sets ==
          0);
  }

  TEST_CASE("the opt-in maximum is the emulated architecture's: 163 KB on sm_80, 227 KB on sm_90") {
    milmer::test::DeviceVector<float> out(1);
    StrictMode strict(true);
    const std::size_t dynamic = 130 * 1024;  // + 40 KB static: 170 KB
    {
      ArchMode sm90(90);
      milmer::launch(big_static_shared<3>, dim3(1), dim3(32), dynamic, nullptr, out.data());
      CHECK(out.to_host()[0] == 3.0f);
      int optin = 0;
      CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0) ==
            cudaSuccess);
      CHECK(optin == 232448);
    }
    ArchMode sm80(80);
    int optin = 0;
    CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0) ==
          cudaSuccess);
    CHECK(optin == 166912);
    // The emulator learns the kernel's static shared memory when its first block runs: at the
    // synchronisation.
    const std::string msg = milmer::test::error_message([&] {
      milmer::launch(big_static_shared<4>, dim3(1), dim3(32), dynamic, nullptr, out.data());
      MILMER_CUDA_CHECK(cudaDeviceSynchronize());
    });
    CHECK(msg.find("expected at most 166912 bytes") != std::string::npos);
    CHECK(msg.find("got 174080 bytes (40960 static + 133120 dynamic)") != std::string::npos);
  }

  TEST_CASE("static shared memory outside a kernel is an error") {
    CHECK(milmer::test::error_message([] {
            milmer::emu::SharedSlot slot{};
            (void)milmer::emu::static_shared(slot, 4, 4);
          }).find("host code outside a launch") != std::string::npos);
  }

  TEST_CASE("a host read of a copy into pinned memory before synchronising sees the old contents") {
    milmer::test::DeviceVector<float> dev(std::vector<float>(16, 7.0f));
    float* pinned = nullptr;
    MILMER_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&pinned), 16 * sizeof(float)));
    cudaStream_t stream = nullptr;
    MILMER_CUDA_CHECK(cudaStreamCreate(&stream));
    for (const bool on : {true, false}) {
      StrictMode mode(on);
      std::fill(pinned, pinned + 16, 1.0f);
      MILMER_CUDA_CHECK(
          cudaMemcpyAsync(pinned, dev.data(), 16 * sizeof(float), cudaMemcpyDeviceToHost, stream));
      // The planted bug: the host reads without cudaStreamSynchronize. Strict mode shows the
      // old contents (a wrong value); without it the copy has already run.
      CHECK(pinned[15] == (on ? 1.0f : 7.0f));
      MILMER_CUDA_CHECK(cudaStreamSynchronize(stream));
      CHECK(pinned[15] == 7.0f);
    }
    // Pinned host memory is not device memory: a kernel argument pointing into it is refused.
    StrictMode strict(true);
    CHECK(milmer::test::error_message([&] {
            milmer::launch(copy_kernel, dim3(1), dim3(16), 0, nullptr, dev.data(),
                           static_cast<const float*>(pinned), 16);
          }).find("pinned host memory, not a device allocation") != std::string::npos);
    MILMER_CUDA_CHECK(cudaStreamDestroy(stream));
    MILMER_CUDA_CHECK(cudaFreeHost(pinned));
  }

  TEST_CASE("a cuBLASLt operand less aligned than the preference declares is refused") {
    // D (m x n) = A^T B, column-major: A stored k x m, B k x n. A starts 4 bytes into its
    // allocation while the preference declares every operand 16-byte aligned.
    const int m = 4, n = 3, k = 8;
    std::vector<float> a_host(k * m + 4), b_host(k * n);
    for (std::size_t i = 0; i < a_host.size(); ++i) a_host[i] = static_cast<float>(i % 5) - 2;
    for (std::size_t i = 0; i < b_host.size(); ++i) b_host[i] = static_cast<float>(i % 3) - 1;
    milmer::test::DeviceVector<float> a_buf(a_host), b(b_host), d(m * n);
    cublasLtHandle_t lt = nullptr;
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    MILMER_CUBLAS_CHECK(cublasLtCreate(&lt));
    MILMER_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const std::int32_t trans_a = CUBLAS_OP_T;
    MILMER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                                       sizeof(trans_a)));
    MILMER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, k, m, k));
    MILMER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, k, n, k));
    MILMER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, m, n, m));
    MILMER_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const std::uint32_t align = 16;
    for (auto attr :
         {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      MILMER_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align)));
    cublasLtMatmulHeuristicResult_t heuristic{};
    int found = 0;
    MILMER_CUBLAS_CHECK(
        cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, 1, &heuristic, &found));
    REQUIRE(found == 1);
    const float one = 1.0f, zero = 0.0f;
    auto matmul = [&](int offset) {
      MILMER_CUBLAS_CHECK(cublasLtMatmul(lt, desc, &one, a_buf.data() + offset, la, b.data(), lb,
                                         &zero, d.data(), ld, d.data(), ld, &heuristic.algo,
                                         nullptr, 0, nullptr));
    };
    // What the matmul of the operand at `offset` floats into A's allocation computes.
    auto expect_product = [&](int offset) {
      const auto got = d.to_host();
      for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) {
          double ref = 0;
          for (int p = 0; p < k; ++p) ref += double(a_host[offset + i * k + p]) * b_host[j * k + p];
          CHECK(got[j * m + i] == doctest::Approx(ref));
        }
    };
    {
      StrictMode strict(true);
      const std::string msg = milmer::test::error_message([&] { matmul(1); });
      CHECK(msg.find("cublasLtMatmul(") != std::string::npos);
      CHECK(msg.find("CUBLAS_STATUS_NOT_SUPPORTED") != std::string::npos);
      CHECK(msg.find("argument '4 (A)'") != std::string::npos);
      CHECK(msg.find("4-byte aligned, the algorithm assumes 16") != std::string::npos);
      matmul(4);  // 16 bytes in: as declared
      expect_product(4);
    }
    {
      // Unnoticed: no error, and the product of the values at the pointer given, as if the
      // hardware read them where a GPU kernel assuming 16 bytes faults or reads wrong ones.
      StrictMode lenient(false);
      matmul(1);
      expect_product(1);
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(lt);
  }
}
