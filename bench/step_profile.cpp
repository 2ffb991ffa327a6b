// milmer_step_profile: what one Milmer training step costs, measured.
//
//   milmer_step_profile --preset tiny|paper [--batch B] [--steps S] [--seed N]
//
// Builds the model at the preset's size for batch B, fills the input buffers with a fixed
// random batch, runs one warm-up step and then S measured steps (forward, loss, backward,
// AdamW: exactly Milmer::train_step, phase by phase), and prints one JSON object:
//   - kernel launches per step and per phase (emulator counters, host target only), and the
//     cuBLAS GEMM calls and their flops (counted at the BLAS call the emulated cuBLAS makes);
//   - the bytes the model holds: parameters, gradients, AdamW m and v (each
//     parameter_bytes()), activations (activation_bytes(): the encoder's and the rest's
//     arenas), and the emulator's device-memory live bytes and peak during the steps;
//   - wall and process CPU seconds per step.
// bench/compare_step.py puts these next to PyTorch's numbers for the same step.
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "milmer/models/milmer.hpp"

#if MILMER_TARGET_HOST
#include <dlfcn.h>

#include <atomic>

// Every cuBLAS GEMM the emulator runs ends in one cblas_sgemm per matrix. Defining the symbol
// in this program puts this counter in front of OpenBLAS's (found with RTLD_NEXT), so a step's
// GEMM calls and flops are counted, not estimated. The model calls no batched GEMM, so one
// cblas_sgemm is one cuBLAS call.
namespace {
std::atomic<std::uint64_t> g_gemm_calls{0};
std::atomic<double> g_gemm_flops{0.0};
using SgemmFn = void (*)(OPENBLAS_CONST enum CBLAS_ORDER, OPENBLAS_CONST enum CBLAS_TRANSPOSE,
                         OPENBLAS_CONST enum CBLAS_TRANSPOSE, OPENBLAS_CONST blasint,
                         OPENBLAS_CONST blasint, OPENBLAS_CONST blasint, OPENBLAS_CONST float,
                         OPENBLAS_CONST float*, OPENBLAS_CONST blasint, OPENBLAS_CONST float*,
                         OPENBLAS_CONST blasint, OPENBLAS_CONST float, float*,
                         OPENBLAS_CONST blasint);
}  // namespace

extern "C" void cblas_sgemm(OPENBLAS_CONST enum CBLAS_ORDER order,
                            OPENBLAS_CONST enum CBLAS_TRANSPOSE trans_a,
                            OPENBLAS_CONST enum CBLAS_TRANSPOSE trans_b, OPENBLAS_CONST blasint m,
                            OPENBLAS_CONST blasint n, OPENBLAS_CONST blasint k,
                            OPENBLAS_CONST float alpha, OPENBLAS_CONST float* a,
                            OPENBLAS_CONST blasint lda, OPENBLAS_CONST float* b,
                            OPENBLAS_CONST blasint ldb, OPENBLAS_CONST float beta, float* c,
                            OPENBLAS_CONST blasint ldc) {
  static const SgemmFn next = [] {
    // The linker drops OpenBLAS from the needed libraries when this definition is its only
    // use, so it is opened by name when it is not already loaded.
    void* sym = dlsym(RTLD_NEXT, "cblas_sgemm");
    for (const char* lib : {"libopenblas.so.0", "libopenblas.so", "libblas.so.3"}) {
      if (sym != nullptr) break;
      if (void* handle = dlopen(lib, RTLD_NOW | RTLD_GLOBAL)) sym = dlsym(handle, "cblas_sgemm");
    }
    return reinterpret_cast<SgemmFn>(sym);
  }();
  if (next == nullptr) {
    std::fprintf(stderr, "milmer_step_profile: OpenBLAS's cblas_sgemm not found\n");
    std::abort();
  }
  g_gemm_calls.fetch_add(1);
  double expected = g_gemm_flops.load();
  const double flops = 2.0 * m * n * k;
  while (!g_gemm_flops.compare_exchange_weak(expected, expected + flops)) {
  }
  next(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
#endif

namespace {

struct Options {
  std::string preset = "tiny";
  int batch = 2;
  int steps = 2;
  unsigned long seed = 0;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "%s\nusage: milmer_step_profile --preset tiny|paper [--batch B] [--steps S] "
               "[--seed N]\n",
               why.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int a = 1; a < argc; a += 2) {
    const std::string flag = argv[a];
    if (a + 1 >= argc) usage(flag + " needs a value");
    const std::string value = argv[a + 1];
    if (flag == "--preset") {
      if (value != "tiny" && value != "paper") usage("--preset: tiny or paper, got " + value);
      o.preset = value;
      continue;
    }
    char* end = nullptr;
    const long v = std::strtol(value.c_str(), &end, 10);
    if (*end != '\0' || v < 0 || v > 100000) usage(flag + ": expected an integer, got " + value);
    if (flag == "--batch") {
      o.batch = static_cast<int>(v);
    } else if (flag == "--steps") {
      o.steps = static_cast<int>(v);
    } else if (flag == "--seed") {
      o.seed = static_cast<unsigned long>(v);
    } else {
      usage("unknown argument " + flag);
    }
  }
  if (o.batch < 1 || o.steps < 1) usage("--batch and --steps must be at least 1");
  return o;
}

double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}
double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// What one phase of a step cost: launches, GEMM calls and flops (host target), seconds.
struct Tally {
  std::uint64_t launches = 0, blocks = 0, threads = 0, gemms = 0;
  double gemm_flops = 0, wall = 0, cpu = 0;
};

class Meter {
 public:
  void start() {
#if MILMER_TARGET_HOST
    milmer::emu::reset_counters();
    gemms_ = g_gemm_calls.load();
    flops_ = g_gemm_flops.load();
#endif
    wall_ = wall_seconds();
    cpu_ = cpu_seconds();
  }
  void stop(Tally& t) {
    t.wall += wall_seconds() - wall_;
    t.cpu += cpu_seconds() - cpu_;
#if MILMER_TARGET_HOST
    const auto c = milmer::emu::counters();
    t.launches += c.launches;
    t.blocks += c.blocks;
    t.threads += c.threads;
    t.gemms += g_gemm_calls.load() - gemms_;
    t.gemm_flops += g_gemm_flops.load() - flops_;
#endif
  }

 private:
  double wall_ = 0, cpu_ = 0, flops_ = 0;
  std::uint64_t gemms_ = 0;
};

std::string tally_json(const Tally& t, int steps) {
  return milmer::str("{\"launches\": ", t.launches / steps, ", \"blocks\": ", t.blocks / steps,
                     ", \"threads\": ", t.threads / steps, ", \"gemm_calls\": ", t.gemms / steps,
                     ", \"gemm_flops\": ", t.gemm_flops / steps,
                     ", \"wall_seconds\": ", t.wall / steps, ", \"cpu_seconds\": ", t.cpu / steps,
                     "}");
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    const milmer::MilmerConfig cfg =
        o.preset == "paper" ? milmer::MilmerConfig::paper() : milmer::MilmerConfig::tiny();
    milmer::Context ctx;
    milmer::Milmer model(ctx, cfg, o.batch);
    model.init(ctx, o.seed);

    // A fixed random batch: normalised-looking pixels, EEG and labels.
    std::mt19937_64 rng(o.seed + 1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const std::size_t pixels = std::size_t(o.batch) * cfg.frames * cfg.swin.num_channels *
                               cfg.swin.image_size * cfg.swin.image_size;
    const std::size_t eeg = std::size_t(o.batch) * cfg.eeg_channels * cfg.eeg_samples;
    std::vector<float> host_frames(pixels), host_eeg(eeg);
    for (auto& v : host_frames) v = normal(rng);
    for (auto& v : host_eeg) v = normal(rng);
    std::vector<int> labels(static_cast<std::size_t>(o.batch));
    for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = int(rng() % cfg.classes);
    MILMER_CUDA_CHECK(
        cudaMemcpy(model.frames_input(), host_frames.data(), pixels * 4, cudaMemcpyHostToDevice));
    MILMER_CUDA_CHECK(
        cudaMemcpy(model.eeg_input(), host_eeg.data(), eeg * 4, cudaMemcpyHostToDevice));
    MILMER_CUDA_CHECK(
        cudaMemcpy(model.labels_input(), labels.data(), labels.size() * 4, cudaMemcpyHostToDevice));
    ctx.synchronize();

#if MILMER_TARGET_HOST
    const std::size_t live_before = milmer::emu::memory_stats().live_bytes;
    milmer::emu::reset_peak_memory();
#endif
    const double lr = 1e-4;
    Tally forward, loss, backward, optimizer;
    Meter phase;
    float last_loss = 0;
    for (int step = 0; step <= o.steps; ++step) {
      const bool measured = step > 0;  // step 0 is the warm-up
      Tally scratch;
      phase.start();
      model.forward(ctx, o.batch, true, milmer::Milmer::step_seed(o.seed, model.step()));
      ctx.synchronize();
      phase.stop(measured ? forward : scratch);
      phase.start();
      model.loss(ctx, o.batch, labels);
      ctx.synchronize();
      phase.stop(measured ? loss : scratch);
      phase.start();
      model.backward(ctx);
      last_loss = model.read_loss(ctx);
      phase.stop(measured ? backward : scratch);
      phase.start();
      model.optimizer_step(ctx, lr);
      ctx.synchronize();
      phase.stop(measured ? optimizer : scratch);
    }
    Tally total;
    for (const Tally* t : {&forward, &loss, &backward, &optimizer}) {
      total.launches += t->launches;
      total.blocks += t->blocks;
      total.threads += t->threads;
      total.gemms += t->gemms;
      total.gemm_flops += t->gemm_flops;
      total.wall += t->wall;
      total.cpu += t->cpu;
    }

    const std::size_t param_bytes = model.parameter_bytes();
    std::printf("{\"preset\": \"%s\", \"target\": \"%s\", \"batch\": %d, \"steps\": %d,\n",
                o.preset.c_str(), milmer::target_name(), o.batch, o.steps);
    std::printf(" \"parameters\": %lld, \"swin_parameters\": %lld, \"loss\": %.6f,\n",
                static_cast<long long>(model.parameter_count()),
                static_cast<long long>(model.swin_param_count()), last_loss);
    std::printf(
        " \"bytes\": {\"parameters\": %zu, \"gradients\": %zu, \"adamw_state\": %zu, "
        "\"activations\": %zu, \"swin_activations\": %zu, \"other_activations\": %zu",
        param_bytes, param_bytes, 2 * param_bytes, model.activation_bytes(),
        model.swin().activation_bytes(),
        model.activation_bytes() - model.swin().activation_bytes());
#if MILMER_TARGET_HOST
    const auto mem = milmer::emu::memory_stats();
    std::printf(
        ", \"device_live_before_steps\": %zu, \"device_peak_during_steps\": %zu, "
        "\"device_allocations\": %zu",
        live_before, mem.peak_bytes, mem.allocations);
#endif
    std::printf(
        "},\n \"per_step\": {\"forward\": %s,\n   \"loss\": %s,\n   \"backward\": %s,\n"
        "   \"optimizer\": %s,\n   \"total\": %s}}\n",
        tally_json(forward, o.steps).c_str(), tally_json(loss, o.steps).c_str(),
        tally_json(backward, o.steps).c_str(), tally_json(optimizer, o.steps).c_str(),
        tally_json(total, o.steps).c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "milmer_step_profile: error: %s\n", e.what());
    return 1;
  }
}
