// milmer_bench: the Google Benchmark suites (kernels_bench.cpp, models_bench.cpp) in one
// program. Prints the device and its peaks as context, then runs the selected benchmarks:
//   milmer_bench --benchmark_filter='layernorm|gelu' --benchmark_min_time=0.05
//   milmer_bench --benchmark_format=json > results.json      (bench/compare_pytorch.py)
#include <cstdio>

#include "bench_support.hpp"

int main(int argc, char** argv) {
  using namespace milmer::bench;
  const DeviceInfo& d = device();
  benchmark::AddCustomContext("milmer_target", milmer::target_name());
  benchmark::AddCustomContext("device", d.name);
  if (d.gpu) {
    benchmark::AddCustomContext("peak_dram_GBps", std::to_string(d.peak_bytes_per_s / 1e9));
    benchmark::AddCustomContext("peak_fp32_TFLOPs", std::to_string(d.peak_flops / 1e12));
    benchmark::AddCustomContext("l2_bytes", std::to_string(d.l2_bytes));
  } else if (MILMER_TARGET_CUDA) {
    std::fprintf(stderr, "milmer_bench: built for cuda but no GPU is visible\n");
    return 1;
  } else {
    benchmark::AddCustomContext("peak_fraction", "n/a (host emulator: no device peaks)");
  }
  register_kernel_benchmarks();
  register_model_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
