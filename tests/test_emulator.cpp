// Tests of the host emulator itself: barriers, warp operations, atomics, shared memory, the
// three thread orders, and the errors it must raise instead of hanging or corrupting.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "milmer/context.hpp"
#include "milmer/platform.hpp"
#include "support.hpp"

// Kernels live in a named namespace: the emulator names kernels from the dynamic symbol
// table, which has no entries for internal linkage.
namespace emutest {

using milmer::emu::Schedule;

// Sum of each block's slice with a shared-memory tree; correct only with its barriers.
__global__ void block_sum(const float* x, float* out, int n) {
  MILMER_SHARED(float, buf, [256]);
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  buf[threadIdx.x] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = buf[0];
}

// Each thread reads its left neighbour's value through shared memory, with the barrier
// between the write and the read planted out: a race that sequential order hides.
__global__ void shift_missing_barrier(const float* x, float* out, int n) {
  MILMER_SHARED(float, buf, [256]);
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  buf[threadIdx.x] = i < n ? x[i] : 0.0f;
  if (i < n) out[i] = threadIdx.x > 0 ? buf[threadIdx.x - 1] : 0.0f;
}

// Each thread reads a value written by the other warp, with only a warp shuffle (no block
// barrier) in between: a cross-warp race.
__global__ void cross_warp_missing_barrier(const float* x, float* out) {
  MILMER_SHARED(float, buf, [64]);
  const unsigned t = threadIdx.x;
  buf[t] = x[t];
  const float mine = __shfl_xor_sync(0xffffffffu, buf[t], 1);
  out[t] = mine + buf[(t + 32) % 64];
}

__global__ void warp_ops(const int* in, int* out, int width) {
  const int t = threadIdx.x;
  const int v = in[t];
  int* o = out + 8 * t;
  o[0] = __shfl_sync(0xffffffffu, v, 3, width);
  o[1] = __shfl_up_sync(0xffffffffu, v, 2, width);
  o[2] = __shfl_down_sync(0xffffffffu, v, 2, width);
  o[3] = __shfl_xor_sync(0xffffffffu, v, 1, width);
  o[4] = static_cast<int>(__ballot_sync(0xffffffffu, v % 3 == 0));
  o[5] = __any_sync(0xffffffffu, v == 7);
  o[6] = __all_sync(0xffffffffu, v >= 0);
  int sum = v;
  for (int d = 16; d > 0; d /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, d);
  o[7] = sum;
}

// Only the even lanes take part (a partial mask).
__global__ void even_lane_shuffle(const int* in, int* out) {
  const unsigned lane = threadIdx.x % 32;
  if (lane % 2 == 0) {
    out[threadIdx.x] = __shfl_sync(0x55555555u, in[threadIdx.x], (lane + 2) % 32);
    __syncwarp(0x55555555u);
  } else {
    out[threadIdx.x] = -1;
  }
}

__global__ void atomics(float* fsum, int* isum, int* imax) {
  atomicAdd(fsum, 1.0f);
  atomicAdd(isum, static_cast<int>(threadIdx.x));
  atomicMax(imax, static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x));
}

__global__ void shared_atomics(int* out) {
  MILMER_SHARED(int, count, );
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  atomicAdd(&count, 1);
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = count;
}

__global__ void dynamic_shared_reverse(const float* in, float* out, int n) {
  MILMER_DYNAMIC_SHARED(float, tile);
  const int t = threadIdx.x;
  if (t < n) tile[t] = in[t];
  __syncthreads();
  if (t < n) out[t] = tile[n - 1 - t];
}

__global__ void coordinates(int* out) {
  const int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  out[b * blockDim.x * blockDim.y * blockDim.z + t] = 1000 * b + t;
}

__global__ void planted_deadlock(int* out) {
  if (threadIdx.x == 0) {
    out[0] = __shfl_sync(0x3u, 1, 1);  // lane 1 never arrives: it waits at the barrier
  } else {
    __syncthreads();
  }
}

__global__ void planted_divergent_barriers(int* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void planted_throw(int* out) {
  if (blockIdx.x == 1 && threadIdx.x == 5) out[0] = __shfl_sync(0xffffffffu, 1, 0, 3);
}

__global__ void early_exit_then_barrier(int* out) {
  if (threadIdx.x >= 16) return;  // exited threads count as arrived
  __syncthreads();
  out[threadIdx.x] = 1;
}

std::vector<float> run_block_sum(Schedule s, const std::vector<float>& x) {
  milmer::emu::set_schedule(s, 7);
  const int n = static_cast<int>(x.size());
  const int blocks = (n + 255) / 256;
  milmer::test::DeviceVector<float> dx(x), dout(static_cast<std::size_t>(blocks));
  milmer::launch(block_sum, dim3(blocks), dim3(256), 0, nullptr, dx.data(), dout.data(), n);
  milmer::emu::set_schedule(Schedule::seq, 0);
  return dout.to_host();
}

// Wrong outputs of the racy shift, on fresh values each call so stale shared memory left by
// an earlier call can never look right.
int racy_shift_wrong_outputs(Schedule s) {
  static float offset = 0;
  offset += 1000.0f;
  std::vector<float> x(512);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = offset + static_cast<float>(i);
  milmer::emu::set_schedule(s, 7);
  milmer::test::DeviceVector<float> dx(x), dout(x.size());
  milmer::launch(shift_missing_barrier, dim3(2), dim3(256), 0, nullptr, dx.data(), dout.data(),
                 512);
  milmer::emu::set_schedule(Schedule::seq, 0);
  const auto out = dout.to_host();
  int wrong = 0;
  for (int i = 0; i < 512; ++i) wrong += out[i] != (i % 256 == 0 ? 0.0f : x[i - 1]);
  return wrong;
}

}  // namespace emutest

using namespace emutest;

TEST_SUITE("emulator") {
  TEST_CASE("a correct reduction gives identical results under seq, rev and random") {
    std::vector<float> x(1000);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17) - 8.0f;
    const auto seq = run_block_sum(Schedule::seq, x);
    CHECK(run_block_sum(Schedule::rev, x) == seq);
    CHECK(run_block_sum(Schedule::random, x) == seq);
    for (int b = 0; b < 4; ++b) {
      double ref = 0;
      for (int i = 256 * b; i < std::min(1000, 256 * (b + 1)); ++i) ref += x[i];
      CHECK(seq[b] == doctest::Approx(ref));
    }
  }

  TEST_CASE("a planted missing __syncthreads gives different results under rev and random") {
    CHECK(racy_shift_wrong_outputs(Schedule::seq) == 0);  // sequential order hides the race
    CHECK(racy_shift_wrong_outputs(Schedule::rev) == 510);
    const int random_wrong = racy_shift_wrong_outputs(Schedule::random);
    CHECK(random_wrong > 100);
    CHECK(random_wrong < 410);
  }

  TEST_CASE("warps run ahead of each other: a warp operation is no block barrier") {
    static float offset = 0;
    for (Schedule s : {Schedule::seq, Schedule::rev, Schedule::random}) {
      offset += 100.0f;
      std::vector<float> x(64);
      for (int i = 0; i < 64; ++i) x[i] = offset + static_cast<float>(i);
      milmer::emu::set_schedule(s, 5);
      milmer::test::DeviceVector<float> dx(x), dout(64);
      milmer::launch(cross_warp_missing_barrier, dim3(1), dim3(64), 0, nullptr, dx.data(),
                     dout.data());
      milmer::emu::set_schedule(Schedule::seq, 0);
      const auto out = dout.to_host();
      int wrong = 0;
      for (int t = 0; t < 64; ++t) wrong += out[t] != x[t ^ 1] + x[(t + 32) % 64];
      INFO("schedule ", milmer::emu::schedule_name(s));
      CHECK(wrong >= 32);  // the warp that runs first reads the other's stale values
    }
  }

  TEST_CASE("warp shuffles, votes and reductions follow CUDA's semantics") {
    for (int width : {32, 8}) {
      std::vector<int> in(64);
      std::iota(in.begin(), in.end(), 0);
      milmer::test::DeviceVector<int> din(in), dout(64 * 8);
      milmer::launch(warp_ops, dim3(1), dim3(64), 0, nullptr, din.data(), dout.data(), width);
      const auto out = dout.to_host();
      for (int t = 0; t < 64; ++t) {
        const int lane = t % 32, warp = t / 32, seg = lane / width * width;
        const int* o = &out[8 * t];
        INFO("thread ", t, " width ", width);
        CHECK(o[0] == 32 * warp + seg + 3 % width);
        CHECK(o[1] == (lane - seg >= 2 ? t - 2 : t));
        CHECK(o[2] == (lane - seg + 2 < width ? t + 2 : t));
        CHECK(o[3] == (t ^ 1));
        unsigned ballot = 0;
        for (int l = 0; l < 32; ++l)
          if ((32 * warp + l) % 3 == 0) ballot |= 1u << l;
        CHECK(static_cast<unsigned>(o[4]) == ballot);
        CHECK(o[5] == (warp == 0 ? 1 : 0));
        CHECK(o[6] == 1);
        CHECK(o[7] == 32 * 31 / 2 + 32 * 32 * warp);
      }
    }
  }

  TEST_CASE("a partial mask synchronises only its lanes") {
    std::vector<int> in(32);
    std::iota(in.begin(), in.end(), 100);
    milmer::test::DeviceVector<int> din(in), dout(32);
    milmer::launch(even_lane_shuffle, dim3(1), dim3(32), 0, nullptr, din.data(), dout.data());
    const auto out = dout.to_host();
    for (int l = 0; l < 32; ++l) CHECK(out[l] == (l % 2 == 0 ? 100 + (l + 2) % 32 : -1));
  }

  TEST_CASE("atomics on global and shared memory are exact across blocks and OS threads") {
    milmer::test::DeviceVector<float> f(std::vector<float>{0.0f});
    milmer::test::DeviceVector<int> isum(std::vector<int>{0}), imax(std::vector<int>{-1});
    milmer::launch(atomics, dim3(37), dim3(128), 0, nullptr, f.data(), isum.data(), imax.data());
    CHECK(f.to_host()[0] == 37.0f * 128.0f);
    CHECK(isum.to_host()[0] == 37 * (127 * 128 / 2));
    CHECK(imax.to_host()[0] == 37 * 128 - 1);
    milmer::test::DeviceVector<int> counts(5);
    milmer::launch(shared_atomics, dim3(5), dim3(96), 0, nullptr, counts.data());
    CHECK(counts.to_host() == std::vector<int>(5, 96));
  }

  TEST_CASE("dynamic shared memory has the launch's size") {
    std::vector<float> in(77);
    std::iota(in.begin(), in.end(), 0.0f);
    milmer::test::DeviceVector<float> din(in), dout(77);
    milmer::launch(dynamic_shared_reverse, dim3(1), dim3(96), 77 * sizeof(float), nullptr,
                   din.data(), dout.data(), 77);
    const auto out = dout.to_host();
    for (int i = 0; i < 77; ++i) CHECK(out[i] == 76.0f - i);
  }

  TEST_CASE("3-D grids and blocks give every thread its coordinates") {
    const dim3 grid(3, 2, 2), block(4, 3, 2);
    milmer::test::DeviceVector<int> out(12 * 24);
    milmer::launch(coordinates, grid, block, 0, nullptr, out.data());
    const auto h = out.to_host();
    for (int b = 0; b < 12; ++b)
      for (int t = 0; t < 24; ++t) CHECK(h[b * 24 + t] == 1000 * b + t);
  }

  TEST_CASE("counters report launches, blocks, threads and barrier waits") {
    std::vector<float> x(512, 1.0f);
    milmer::emu::reset_counters();
    run_block_sum(Schedule::seq, x);
    const auto c = milmer::emu::counters();
    CHECK(c.launches == 1);
    CHECK(c.blocks == 2);
    CHECK(c.threads == 512);
    CHECK(c.barrier_waits == 512 * 9);  // the load's barrier and 8 tree levels
    CHECK(milmer::emu::last_launch().kernel.find("block_sum") != std::string::npos);
  }

  TEST_CASE("exited threads count as arrived at a barrier") {
    milmer::test::DeviceVector<int> out(std::vector<int>(64, 0));
    milmer::launch(early_exit_then_barrier, dim3(1), dim3(64), 0, nullptr, out.data());
    const auto h = out.to_host();
    CHECK(std::accumulate(h.begin(), h.end(), 0) == 16);
  }

  TEST_CASE("a planted deadlock is reported with kernel, block and thread, not hung") {
    for (Schedule s : {Schedule::seq, Schedule::rev, Schedule::random}) {
      milmer::emu::set_schedule(s, 3);
      milmer::test::DeviceVector<int> out(1);
      // The grid runs, and its error is thrown, at the synchronisation.
      const std::string msg = milmer::test::error_message([&] {
        milmer::launch(planted_deadlock, dim3(2), dim3(32), 0, nullptr, out.data());
        MILMER_CUDA_CHECK(cudaDeviceSynchronize());
      });
      CHECK(msg.find("planted_deadlock") != std::string::npos);
      CHECK(msg.find("deadlock") != std::string::npos);
      CHECK(msg.find("block (") != std::string::npos);
      CHECK(msg.find("thread (0,0,0)") != std::string::npos);
    }
    milmer::emu::set_schedule(Schedule::seq, 0);
  }

  TEST_CASE("barriers reached from different call sites are an error") {
    milmer::test::DeviceVector<int> out(32);
    const std::string msg = milmer::test::error_message([&] {
      milmer::launch(planted_divergent_barriers, dim3(1), dim3(32), 0, nullptr, out.data());
      MILMER_CUDA_CHECK(cudaDeviceSynchronize());
    });
    CHECK(msg.find("__syncthreads") != std::string::npos);
    CHECK(msg.find("call site") != std::string::npos);
  }

  TEST_CASE("an invalid warp operation inside a kernel surfaces as milmer::Error") {
    milmer::test::DeviceVector<int> out(1);
    const std::string msg = milmer::test::error_message([&] {
      milmer::launch(planted_throw, dim3(3), dim3(32), 0, nullptr, out.data());
      MILMER_CUDA_CHECK(cudaDeviceSynchronize());
    });
    CHECK(msg.find("width") != std::string::npos);
    CHECK(msg.find("block (1,0,0) thread (5,0,0)") != std::string::npos);
  }

  TEST_CASE("launch shapes the hardware refuses are refused") {
    milmer::test::DeviceVector<int> out(1);
    CHECK_THROWS_AS(milmer::launch(coordinates, dim3(1), dim3(2048), 0, nullptr, out.data()),
                    milmer::Error);
    CHECK_THROWS_AS(milmer::launch(coordinates, dim3(0), dim3(32), 0, nullptr, out.data()),
                    milmer::Error);
    CHECK_THROWS_AS(
        milmer::launch(coordinates, dim3(2147483648u), dim3(32), 0, nullptr, out.data()),
        milmer::Error);
    CHECK_THROWS_AS(milmer::launch(coordinates, dim3(1, 65536), dim3(32), 0, nullptr, out.data()),
                    milmer::Error);
  }

  TEST_CASE("runtime: memory, copies, events and errors behave as CUDA's") {
    void* p = nullptr;
    CHECK(cudaMalloc(&p, 1000) == cudaSuccess);
    CHECK(reinterpret_cast<std::uintptr_t>(p) % 256 == 0);
    CHECK(cudaMemset(p, 0xab, 1000) == cudaSuccess);
    std::vector<unsigned char> h(1000);
    CHECK(cudaMemcpy(h.data(), p, 1000, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(h[999] == 0xab);
    CHECK(cudaFree(p) == cudaSuccess);
    int stack_value = 0;
    CHECK(cudaFree(&stack_value) == cudaErrorInvalidValue);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue);
    CHECK(cudaGetLastError() == cudaSuccess);
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    float ms = -1;
    CHECK(cudaEventElapsedTime(&ms, a, b) == cudaErrorInvalidResourceHandle);
    cudaEventRecord(a, nullptr);
    cudaEventRecord(b, nullptr);
    // The records are queued: the events complete when the stream runs them.
    CHECK(cudaEventElapsedTime(&ms, a, b) == cudaErrorNotReady);
    CHECK(cudaGetLastError() == cudaErrorNotReady);
    CHECK(cudaEventSynchronize(b) == cudaSuccess);
    CHECK(cudaEventElapsedTime(&ms, a, b) == cudaSuccess);
    CHECK(ms >= 0.0f);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    CHECK_THROWS_AS(MILMER_CUDA_CHECK(cudaMalloc(nullptr, 4)), milmer::Error);
    // The check that threw took the error off the last-error state: the next launch's
    // cudaGetLastError must not report it again.
    CHECK(cudaGetLastError() == cudaSuccess);
  }

  TEST_CASE("the cuBLAS shim keeps column-major conventions, transposes and batches") {
    // C (m x n) = A^T (m x k) * B (k x n), A stored k x m column-major, lda = k + 1 (padded).
    const int m = 3, n = 2, k = 4, lda = k + 1, batches = 2;
    std::vector<float> A(lda * m * batches), B(k * n * batches), C(m * n * batches, 0.0f);
    for (std::size_t i = 0; i < A.size(); ++i) A[i] = static_cast<float>(i % 7) - 3;
    for (std::size_t i = 0; i < B.size(); ++i) B[i] = static_cast<float>(i % 5) - 2;
    milmer::test::DeviceVector<float> dA(A), dB(B), dC(C);
    cublasHandle_t handle;
    MILMER_CUBLAS_CHECK(cublasCreate(&handle));
    const float one = 1, zero = 0;
    MILMER_CUBLAS_CHECK(cublasSgemmStridedBatched(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one,
                                                  dA.data(), lda, lda * m, dB.data(), k, k * n,
                                                  &zero, dC.data(), m, m * n, batches));
    const auto got = dC.to_host();
    for (int b = 0; b < batches; ++b)
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          double ref = 0;
          for (int p = 0; p < k; ++p)
            ref += double(A[b * lda * m + i * lda + p]) * B[b * k * n + j * k + p];
          CHECK(got[b * m * n + j * m + i] == doctest::Approx(ref));
        }
    CHECK(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dA.data(), m - 1, dB.data(),
                      k, &zero, dC.data(), m) == CUBLAS_STATUS_INVALID_VALUE);
    cublasDestroy(handle);
  }

  TEST_CASE(
      "streams run their work at synchronisation points, in order, after the events they wait on") {
    std::vector<float> ones(64, 1.0f), twos(64, 2.0f);
    milmer::test::DeviceVector<float> x(ones), y(64);
    cudaStream_t s1 = nullptr, s2 = nullptr;
    MILMER_CUDA_CHECK(cudaStreamCreate(&s1));
    MILMER_CUDA_CHECK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    float* pinned = nullptr;
    MILMER_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&pinned), 64 * sizeof(float)));
    // A copy from pinned memory reads its source when the stream runs it; one from pageable
    // memory is staged at the call.
    std::copy(twos.begin(), twos.end(), pinned);
    MILMER_CUDA_CHECK(
        cudaMemcpyAsync(x.data(), pinned, 64 * sizeof(float), cudaMemcpyHostToDevice, s1));
    std::fill(pinned, pinned + 64, 3.0f);
    std::vector<float> pageable(64, 5.0f);
    MILMER_CUDA_CHECK(
        cudaMemcpyAsync(y.data(), pageable.data(), 64 * sizeof(float), cudaMemcpyHostToDevice, s1));
    pageable.assign(64, 6.0f);
    // A copy into pageable memory returns finished, with the stream's earlier work.
    std::vector<float> back(64);
    MILMER_CUDA_CHECK(
        cudaMemcpyAsync(back.data(), x.data(), 64 * sizeof(float), cudaMemcpyDeviceToHost, s1));
    CHECK(back[0] == 3.0f);
    CHECK(y.to_host()[0] == 5.0f);
    // s2 (non-blocking) reads x after s1 writes it: without the event wait it reads the old
    // contents, with it the new ones.
    cudaEvent_t written = nullptr;
    MILMER_CUDA_CHECK(cudaEventCreate(&written));
    const std::vector<float> threes(64, 3.0f);
    for (const bool wait : {false, true}) {
      MILMER_CUDA_CHECK(
          cudaMemcpy(x.data(), threes.data(), 64 * sizeof(float), cudaMemcpyHostToDevice));
      MILMER_CUDA_CHECK(cudaMemsetAsync(x.data(), 0, 64 * sizeof(float), s1));
      MILMER_CUDA_CHECK(cudaEventRecord(written, s1));
      if (wait) MILMER_CUDA_CHECK(cudaStreamWaitEvent(s2, written, 0));
      MILMER_CUDA_CHECK(
          cudaMemcpyAsync(pinned, x.data(), 64 * sizeof(float), cudaMemcpyDeviceToHost, s2));
      MILMER_CUDA_CHECK(cudaStreamSynchronize(s2));
      CHECK(pinned[0] == (wait ? 0.0f : 3.0f));
      MILMER_CUDA_CHECK(cudaDeviceSynchronize());
    }
    MILMER_CUDA_CHECK(
        cudaMemcpy(x.data(), threes.data(), 64 * sizeof(float), cudaMemcpyHostToDevice));
    std::fill(pinned, pinned + 64, 3.0f);
    // The legacy default stream waits for a blocking stream's earlier work.
    MILMER_CUDA_CHECK(cudaMemsetAsync(x.data(), 0, 64 * sizeof(float), s1));
    MILMER_CUDA_CHECK(
        cudaMemcpyAsync(pinned, x.data(), 64 * sizeof(float), cudaMemcpyDeviceToHost, nullptr));
    CHECK(pinned[0] == 3.0f);
    MILMER_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    CHECK(pinned[0] == 0.0f);
    MILMER_CUDA_CHECK(cudaEventDestroy(written));
    MILMER_CUDA_CHECK(cudaStreamDestroy(s1));
    MILMER_CUDA_CHECK(cudaStreamDestroy(s2));
    MILMER_CUDA_CHECK(cudaFreeHost(pinned));
    int stack_value = 0;
    CHECK(cudaFreeHost(&stack_value) == cudaErrorInvalidValue);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  }

  TEST_CASE("reading the emulator's counters runs the queued work first") {
    milmer::test::DeviceVector<int> out(32);
    milmer::emu::reset_counters();
    milmer::launch(coordinates, dim3(1), dim3(32), 0, nullptr, out.data());
    const auto c = milmer::emu::counters();
    CHECK(c.launches == 1);
    CHECK(c.threads == 32);
  }

  TEST_CASE("the cuBLASLt shim: transposes, bias and ReLU epilogues, beta and C") {
    // D (m x n) = relu(A (m x k) op(B) + bias) column-major, B stored n x k (transposed).
    const int m = 3, n = 4, k = 5;
    std::vector<float> A(m * k), B(n * k), bias(m), C(m * n);
    for (std::size_t i = 0; i < A.size(); ++i) A[i] = static_cast<float>(i % 7) - 3;
    for (std::size_t i = 0; i < B.size(); ++i) B[i] = static_cast<float>(i % 4) - 1.5f;
    for (int i = 0; i < m; ++i) bias[i] = 0.5f * i - 1;
    for (std::size_t i = 0; i < C.size(); ++i) C[i] = static_cast<float>(i);
    milmer::test::DeviceVector<float> dA(A), dB(B), dbias(bias), dC(C), dD(m * n);
    cublasLtHandle_t lt = nullptr;
    MILMER_CUBLAS_CHECK(cublasLtCreate(&lt));
    cublasLtMatmulDesc_t desc = nullptr;
    MILMER_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const std::int32_t trans_b = CUBLAS_OP_T;
    MILMER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                                       sizeof(trans_b)));
    const void* bias_ptr = dbias.data();
    MILMER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                       &bias_ptr, sizeof(bias_ptr)));
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
    MILMER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, m, k, m));
    MILMER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, n, k, n));
    MILMER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, m));
    const float alpha = 2.0f, beta = 0.5f;
    for (const std::uint32_t epilogue : {CUBLASLT_EPILOGUE_DEFAULT, CUBLASLT_EPILOGUE_BIAS,
                                         CUBLASLT_EPILOGUE_RELU, CUBLASLT_EPILOGUE_RELU_BIAS}) {
      MILMER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                         &epilogue, sizeof(epilogue)));
      // No algorithm: cuBLASLt's own heuristic, which assumes 256-byte alignment (as here).
      MILMER_CUBLAS_CHECK(cublasLtMatmul(lt, desc, &alpha, dA.data(), la, dB.data(), lb, &beta,
                                         dC.data(), lc, dD.data(), lc, nullptr, nullptr, 0,
                                         nullptr));
      const auto got = dD.to_host();
      for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) {
          double ref = 0;
          for (int p = 0; p < k; ++p) ref += double(A[p * m + i]) * B[p * n + j];
          ref = alpha * ref + beta * C[j * m + i];
          if (epilogue & CUBLASLT_EPILOGUE_BIAS) ref += bias[i];
          if (epilogue & CUBLASLT_EPILOGUE_RELU) ref = std::max(ref, 0.0);
          CHECK(got[j * m + i] == doctest::Approx(ref));
        }
    }
    // What the emulator does not have is refused, saying what.
    const std::uint32_t gelu = CUBLASLT_EPILOGUE_GELU;
    MILMER_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &gelu, sizeof(gelu)));
    CHECK(milmer::test::error_message([&] {
            MILMER_CUBLAS_CHECK(cublasLtMatmul(lt, desc, &alpha, dA.data(), la, dB.data(), lb,
                                               &beta, dC.data(), lc, dD.data(), lc, nullptr,
                                               nullptr, 0, nullptr));
          }).find("CUBLASLT_MATMUL_DESC_EPILOGUE 32") != std::string::npos);
    // Shapes that do not agree.
    const std::uint32_t plain = CUBLASLT_EPILOGUE_DEFAULT;
    MILMER_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &plain, sizeof(plain)));
    CHECK(cublasLtMatmul(lt, desc, &alpha, dA.data(), lb, dB.data(), lb, &beta, dC.data(), lc,
                         dD.data(), lc, nullptr, nullptr, 0,
                         nullptr) == CUBLAS_STATUS_INVALID_VALUE);
    (void)milmer::emu::take_status_reason();
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(lt);
  }
}
