// Model benchmarks: Swin-T (transformers' SwinConfig defaults, docs/model.md §2) forward
// and forward + backward at batch 1 and 8, in images/s; one Milmer training step (forward,
// loss, backward, AdamW) at the `tiny` and `paper` presets, in samples/s.
//
// The host emulator runs Swin-T at about a second per image forward, so the host target runs
// what finishes in seconds (batch-1 forward, batch-1 forward + backward, batch-8 forward,
// the tiny step) and reports the others as skipped; every one runs on a GPU.
#include <cstdint>
#include <string>

#include "bench_support.hpp"
#include "milmer/models/milmer.hpp"
#include "milmer/models/swin.hpp"

namespace milmer::bench {
namespace {

// Forward flops of Swin-T per 224 image are measured by bench/step_profile (GEMMs alone:
// about 8.9 GFLOP); the suites report images/s, not a FLOP rate.
void swin_suite(int batch, bool backward) {
  const std::string name = str("swin_t/", backward ? "fwd_bwd" : "fwd", "/b", batch);
  auto body = [=](benchmark::State& state) {
    Context& ctx = context();
    const SwinConfig cfg{};
    SwinEncoder swin(ctx, cfg, batch);
    swin.init(ctx, 0);
    const std::int64_t pixels =
        std::int64_t{batch} * cfg.num_channels * cfg.image_size * cfg.image_size;
    const std::int64_t outputs = std::int64_t{batch} * cfg.out_tokens() * cfg.out_width();
    auto in = random_buffer(pixels, 1, -2, 2), out = zero_buffer(outputs);
    auto dout = random_buffer(outputs, 2);
    const auto in_v = cv(in, {batch, cfg.num_channels, cfg.image_size, cfg.image_size});
    const auto out_v = mv(out, {batch, cfg.out_tokens(), cfg.out_width()});
    run(state,
        [&] {
          swin.forward(ctx, out_v, in_v, backward, 3);
          if (backward) {
            swin.backward(ctx, cv(dout, {batch, cfg.out_tokens(), cfg.out_width()}));
            swin.params().zero_grads(ctx);
          }
        },
        {0, 0, double(batch), "images"});
  };
  const bool host_feasible = batch == 1 || !backward;
  if (host_feasible)
    add(name, body);
  else
    add_gpu_only(name, "Swin-T forward + backward at batch 8 takes about half a minute per call",
                 body);
}

void milmer_step_suite(const std::string& preset, int batch) {
  const std::string name = str("milmer_step/", preset, "/b", batch);
  auto body = [=](benchmark::State& state) {
    Context& ctx = context();
    const MilmerConfig cfg = preset == "paper" ? MilmerConfig::paper() : MilmerConfig::tiny();
    Milmer model(ctx, cfg, batch);
    model.init(ctx, 0);
    const std::int64_t pixels = std::int64_t{batch} * cfg.frames * cfg.swin.num_channels *
                                cfg.swin.image_size * cfg.swin.image_size;
    const std::int64_t eeg = std::int64_t{batch} * cfg.eeg_channels * cfg.eeg_samples;
    const auto frames = reference::random_vector(pixels, 1, -2, 2),
               signals = reference::random_vector(eeg, 2, -2, 2);
    std::vector<int> labels(static_cast<std::size_t>(batch));
    for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = int(i % cfg.classes);
    MILMER_CUDA_CHECK(
        cudaMemcpy(model.frames_input(), frames.data(), frames.size() * 4, cudaMemcpyHostToDevice));
    MILMER_CUDA_CHECK(
        cudaMemcpy(model.eeg_input(), signals.data(), signals.size() * 4, cudaMemcpyHostToDevice));
    MILMER_CUDA_CHECK(
        cudaMemcpy(model.labels_input(), labels.data(), labels.size() * 4, cudaMemcpyHostToDevice));
    run(state, [&] { model.train_step(ctx, batch, 1e-4, 0, labels); },
        {0, 0, double(batch), "samples"});
  };
  if (preset == "tiny")
    add(name, body);
  else
    add_gpu_only(name,
                 "a paper-size step takes about 23 s per sample emulated (bench/step_profile "
                 "measures it at batch 2)",
                 body);
}

}  // namespace

void register_model_benchmarks() {
  swin_suite(1, false);
  swin_suite(8, false);
  swin_suite(1, true);
  swin_suite(8, true);
  milmer_step_suite("tiny", 14);
  milmer_step_suite("paper", 14);
}

}  // namespace milmer::bench
