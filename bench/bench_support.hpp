// What every benchmark suite of milmer_bench shares: the device's peaks, device buffers of
// random numbers (drawn by include/milmer/reference/check.hpp's random_vector, as the tests and
// labs draw theirs), and the one timing loop.
//
// Timing (both targets, one code path): before each iteration a buffer of twice the L2 size is
// written (cuda target: the L2 holds none of the kernel's inputs when it starts), then the
// work is bracketed by two CUDA events on the context's stream and the elapsed event time is
// the iteration's manual time (state.SetIterationTime). One untimed call runs first (warm-up:
// cuBLAS heuristics, first-touch of buffers, module loading). On the host target the events
// are the emulator's (host clock between the records) and there is no L2 to flush.
//
// Counters: bytes_per_second from the minimum bytes the kernel's header documents
// (SetBytesProcessed), FLOP/s where the work is arithmetic, and on a GPU the fraction of the
// device's peak DRAM bandwidth (bw_frac) and FP32 rate (flop_frac); on the host target those
// fractions do not exist and the label says so.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "milmer/context.hpp"
#include "milmer/memory.hpp"
#include "milmer/reference/check.hpp"
#include "milmer/tensor.hpp"

namespace milmer::bench {

struct DeviceInfo {
  bool gpu = false;
  std::string name = "host emulator";
  double peak_bytes_per_s = 0;  // DRAM: 2 x memory clock x bus width
  double peak_flops = 0;        // FP32 FMA rate: SMs x clock x 2 x FP32 lanes per SM
  std::size_t l2_bytes = 0;
};

inline const DeviceInfo& device() {
  static const DeviceInfo info = [] {
    DeviceInfo d;
#if MILMER_TARGET_CUDA
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      (void)cudaGetLastError();
      return d;
    }
    cudaDeviceProp p{};
    MILMER_CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
    int mem_khz = 0, bus_bits = 0, sm_khz = 0;
    MILMER_CUDA_CHECK(cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, 0));
    MILMER_CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0));
    MILMER_CUDA_CHECK(cudaDeviceGetAttribute(&sm_khz, cudaDevAttrClockRate, 0));
    d.gpu = true;
    d.name = p.name;
    d.peak_bytes_per_s = 2.0 * mem_khz * 1e3 * bus_bits / 8.0;
    // FP32 lanes per SM: 64 on sm_80 (A100), 128 on sm_86 / sm_89 / sm_90.
    const int lanes = (p.major == 8 && p.minor == 0) ? 64 : 128;
    d.peak_flops = double(p.multiProcessorCount) * sm_khz * 1e3 * 2.0 * lanes;
    d.l2_bytes = static_cast<std::size_t>(p.l2CacheSize);
#endif
    return d;
  }();
  return info;
}

// The one Context every benchmark uses (cuBLAS handle creation is not what is measured).
inline Context& context() {
  static Context ctx;
  return ctx;
}

// Host-side env switch: MILMER_BENCH_ALL=1 runs even the benchmarks the host target skips
// because the emulator would take many minutes.
inline bool run_everything() {
  const char* v = std::getenv("MILMER_BENCH_ALL");
  return v != nullptr && std::string(v) == "1";
}

// Images of the Swin-shaped kernel benchmarks: a batch-14 step re-encodes 14 x 3 = 42 frames
// on a GPU; the emulator runs one image (MILMER_BENCH_SWIN_IMAGES overrides either).
inline int swin_images() {
  if (const char* v = std::getenv("MILMER_BENCH_SWIN_IMAGES")) return std::max(1, std::atoi(v));
  return MILMER_TARGET_CUDA ? 42 : 1;
}

inline DeviceBuffer<float> random_buffer(std::size_t n, std::uint64_t seed, float lo = -1.0f,
                                         float hi = 1.0f) {
  DeviceBuffer<float> b(n);
  const auto host = reference::random_vector(n, seed, lo, hi);
  b.upload(host.data(), n);
  return b;
}

inline DeviceBuffer<float> zero_buffer(std::size_t n) {
  DeviceBuffer<float> b(n);
  b.zero();
  return b;
}

inline TensorView<const float> cv(const DeviceBuffer<float>& b,
                                  std::initializer_list<std::int64_t> dims) {
  return TensorView<const float>(b.data(), dims);
}
inline TensorView<float> mv(DeviceBuffer<float>& b, std::initializer_list<std::int64_t> dims) {
  return TensorView<float>(b.data(), dims);
}

// Writes 2 x L2 bytes so the next kernel starts with a cold L2 (no-op on the host target).
inline void flush_l2(cudaStream_t stream) {
  static DeviceBuffer<unsigned char> buffer(device().gpu ? 2 * device().l2_bytes : 0);
  static int value = 0;
  if (buffer.size())
    MILMER_CUDA_CHECK(cudaMemsetAsync(buffer.data(), ++value & 0xff, buffer.size(), stream));
}

struct Work {
  double bytes = 0;  // minimum bytes moved per call (the header's formula)
  double flops = 0;  // arithmetic per call, where it matters
  double items = 0;  // items per call for an items/s rate (images, samples); 0: none
  const char* item_name = "items";
};

// Times fn (see the file comment) and sets the counters of `work`.
inline void run(benchmark::State& state, const std::function<void()>& fn, const Work& work) {
  Context& ctx = context();
  cudaEvent_t start, stop;
  MILMER_CUDA_CHECK(cudaEventCreate(&start));
  MILMER_CUDA_CHECK(cudaEventCreate(&stop));
  try {
    fn();  // warm-up
    ctx.synchronize();
    for (auto _ : state) {
      flush_l2(ctx.stream());
      MILMER_CUDA_CHECK(cudaEventRecord(start, ctx.stream()));
      fn();
      MILMER_CUDA_CHECK(cudaEventRecord(stop, ctx.stream()));
      MILMER_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      MILMER_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      state.SetIterationTime(ms / 1e3);
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  using benchmark::Counter;
  if (work.bytes > 0) {
    state.SetBytesProcessed(static_cast<std::int64_t>(work.bytes) * state.iterations());
    state.counters["min_bytes"] = Counter(work.bytes, Counter::kDefaults, Counter::kIs1024);
  }
  if (work.flops > 0)
    state.counters["FLOP/s"] = Counter(work.flops, Counter::kIsIterationInvariantRate);
  if (work.items > 0)
    state.counters[std::string(work.item_name) + "/s"] =
        Counter(work.items, Counter::kIsIterationInvariantRate);
  const DeviceInfo& d = device();
  if (d.gpu) {
    if (work.bytes > 0)
      state.counters["bw_frac"] =
          Counter(work.bytes / d.peak_bytes_per_s, Counter::kIsIterationInvariantRate);
    if (work.flops > 0)
      state.counters["flop_frac"] =
          Counter(work.flops / d.peak_flops, Counter::kIsIterationInvariantRate);
  } else {
    state.SetLabel("peak fraction n/a (host emulator)");
  }
}

// Registers a manual-time benchmark named `name` whose body sets up buffers and calls run().
inline void add(const std::string& name, std::function<void(benchmark::State&)> body) {
  benchmark::RegisterBenchmark(name.c_str(), [body](benchmark::State& s) { body(s); })
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

// Registers <family>/fwd/<shape> and <family>/bwd/<shape>, each over fresh buffers from
// make(): the first times forward(buffers); the second runs forward once (backward reads what
// it saved) and times backward(buffers).
template <class Make, class Forward, class Backward>
void add_forward_backward(const std::string& family, const std::string& shape, Make make,
                          Forward forward, const Work& forward_work, Backward backward,
                          const Work& backward_work) {
  add(family + "/fwd/" + shape, [=](benchmark::State& state) {
    auto buffers = make();
    run(
        state, [&] { forward(buffers); }, forward_work);
  });
  add(family + "/bwd/" + shape, [=](benchmark::State& state) {
    auto buffers = make();
    forward(buffers);
    run(
        state, [&] { backward(buffers); }, backward_work);
  });
}

// A benchmark the host target does not run (the emulator would take many minutes); it stays
// registered so that --benchmark_list_tests shows it and the output says why it did not run.
inline void add_gpu_only(const std::string& name, const std::string& why,
                         std::function<void(benchmark::State&)> body) {
  if (MILMER_TARGET_CUDA || run_everything()) {
    add(name, std::move(body));
    return;
  }
  add(name, [why](benchmark::State& s) {
    s.SkipWithError(("skipped on the host emulator: " + why +
                     "; runs with `make bench` on a GPU (or MILMER_BENCH_ALL=1 here)")
                        .c_str());
    for (auto _ : s) {
    }
  });
}

void register_kernel_benchmarks();
void register_model_benchmarks();

}  // namespace milmer::bench
