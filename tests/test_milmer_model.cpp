// The Milmer model as a training program: no allocation inside a step, a fixed launch count,
// the encoder's backward on K frames (not F) with detached scores, bit-identical resumption
// from a checkpoint, and a parameter count equal to the PyTorch reference's.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <span>

#include <unistd.h>

#include "milmer/io/json.hpp"
#include "milmer/models/milmer.hpp"
#include "support.hpp"

#ifndef MILMER_SOURCE_DIR
#define MILMER_SOURCE_DIR "."
#endif

namespace {

namespace fs = std::filesystem;

// A tiny model with a fixed random batch in its input buffers.
struct TinyRun {
  milmer::Context ctx;
  milmer::MilmerConfig cfg;
  int batch;
  milmer::Milmer model;
  std::vector<int> labels;

  explicit TinyRun(milmer::MilmerConfig c, int b = 2, std::uint64_t init_seed = 7)
      : cfg(c), batch(b), model(ctx, c, b) {
    model.init(ctx, init_seed);
    const std::uint64_t seed = 7;  // the batch is the same whatever the initial weights
    const int img = cfg.swin.image_size;
    const auto frames = milmer::test::random_vector(
        std::size_t(b) * cfg.frames * cfg.swin.num_channels * img * img, seed + 1, -2.0f, 2.0f);
    const auto eeg = milmer::test::random_vector(
        std::size_t(b) * cfg.eeg_channels * cfg.eeg_samples, seed + 2, -3.0f, 3.0f);
    for (int i = 0; i < b; ++i) labels.push_back(i % cfg.classes);
    MILMER_CUDA_CHECK(
        cudaMemcpy(model.frames_input(), frames.data(), frames.size() * 4, cudaMemcpyHostToDevice));
    MILMER_CUDA_CHECK(
        cudaMemcpy(model.eeg_input(), eeg.data(), eeg.size() * 4, cudaMemcpyHostToDevice));
    MILMER_CUDA_CHECK(
        cudaMemcpy(model.labels_input(), labels.data(), labels.size() * 4, cudaMemcpyHostToDevice));
  }
  float step(double lr = 1e-3) { return model.train_step(ctx, batch, lr, 42, labels); }
};

#if MILMER_TARGET_HOST
std::uint64_t blocks_of(const milmer::emu::Counters& c, const std::string& kernel_prefix) {
  std::uint64_t n = 0;
  for (const auto& [name, k] : c.kernels)
    if (name.starts_with(kernel_prefix)) n += k.blocks;
  return n;
}
#endif

}  // namespace

TEST_SUITE("milmer model") {
  // Counters and allocations are the emulator's records (host target only).
#if MILMER_TARGET_HOST
  TEST_CASE("a training step allocates nothing and launches the same kernels every step") {
    TinyRun run(milmer::MilmerConfig::tiny());
    run.step();
    const auto allocations = milmer::emu::memory_stats().allocations;
    milmer::emu::reset_counters();
    run.step();
    const auto first = milmer::emu::counters();
    milmer::emu::reset_counters();
    run.step();
    const auto second = milmer::emu::counters();
    CHECK(milmer::emu::memory_stats().allocations == allocations);
    CHECK(first.launches == second.launches);
    CHECK(first.blocks == second.blocks);
    CHECK(first.launches > 100);
    MESSAGE("tiny training step (batch 2): ", first.launches, " kernel launches, ",
            first.kernels.size(), " distinct kernels, ", first.blocks, " blocks");
  }

  TEST_CASE("with detached scores the encoder's backward runs on the K selected frames only") {
    auto cfg = milmer::MilmerConfig::tiny();
    const int B = 2;
    // window-attention backward: one block per (window, head, image) of every Swin block
    std::uint64_t per_image = 0;
    for (int s = 0; s < cfg.swin.stages(); ++s)
      per_image += std::uint64_t(cfg.swin.depth(s)) * cfg.swin.windows(s) * cfg.swin.heads(s);
    for (bool detach : {true, false}) {
      cfg.amil_detach_scores = detach;
      TinyRun run(cfg, B);
      milmer::emu::reset_counters();
      run.step();
      const auto c = milmer::emu::counters();
      const std::uint64_t images = std::uint64_t(B) * (detach ? cfg.top_k : cfg.frames);
      INFO("detach ", detach);
      CHECK(blocks_of(c, "void milmer::kernels::window_attention_backward_kernel") ==
            per_image * images);
      // forward: all F frames score; with detach the K selected frames are encoded again
      const std::uint64_t forward_images =
          std::uint64_t(B) * (cfg.frames + (detach ? cfg.top_k : 0));
      CHECK(blocks_of(c, "void milmer::kernels::window_attention_forward_kernel") ==
            per_image * forward_images);
    }
  }
#endif

  TEST_CASE("every batch size from 1 to the capacity trains (a short last batch fits)") {
    // Backward scratch is sized once for the capacity; a smaller batch may split its rows
    // into more parts than the capacity does, so each size is run for real.
    const int capacity = 14;
    TinyRun run(milmer::MilmerConfig::tiny(), capacity);
    for (int b = 1; b <= capacity; ++b) {
      INFO("batch ", b, " of capacity ", capacity);
      float loss = 0.0f;
      CHECK_NOTHROW(loss = run.model.train_step(run.ctx, b, 1e-3, 42,
                                                std::span<const int>(run.labels).first(b)));
      CHECK(std::isfinite(loss));
    }
  }

  TEST_CASE("at paper size every LayerNorm backward of every batch size fits the capacity's") {
    // What the models size their scratch from (the rows and width of each LayerNorm
    // backward at the capacity) against what the launchers ask for at each smaller batch:
    // the Swin stages and merges on B * K images, the EEG norm and the fusion layers on B.
    const auto cfg = milmer::MilmerConfig::paper();
    const int capacity = 14;
    struct Norm {
      std::int64_t rows_per_sample, width;
      bool residual;
    };
    std::vector<Norm> norms;
    const auto& sw = cfg.swin;
    const std::int64_t images = cfg.amil_detach_scores ? cfg.top_k : cfg.frames;
    for (int s = 0; s < sw.stages(); ++s) {
      norms.push_back({images * sw.tokens(s), sw.width(s), false});
      if (s + 1 < sw.stages()) norms.push_back({images * sw.tokens(s + 1), 4 * sw.width(s), false});
    }
    norms.push_back({cfg.eeg_channels, cfg.eeg_samples, false});
    norms.push_back({cfg.fusion_tokens(), cfg.width(), true});
    for (const auto& n : norms) {
      const auto need = [&](std::int64_t b) {
        return n.residual
                   ? milmer::residual_layernorm_backward_scratch_elements(b * n.rows_per_sample,
                                                                          n.width)
                   : milmer::layernorm_backward_scratch_elements(b * n.rows_per_sample, n.width);
      };
      const auto parts = [&](std::int64_t b) -> std::int64_t {
        return n.residual ? std::int64_t{3} * milmer::residual_layernorm_backward_parts(
                                                  b * n.rows_per_sample, n.width)
                          : std::int64_t{2} *
                                milmer::layernorm_backward_parts(b * n.rows_per_sample, n.width);
      };
      for (int b = 1; b <= capacity; ++b) {
        INFO("rows per sample ", n.rows_per_sample, " width ", n.width, " batch ", b);
        CHECK(need(b) <= need(capacity));
        CHECK(parts(b) * n.width <= need(capacity));
      }
    }
  }

  TEST_CASE("resuming from a checkpoint continues with bit-identical losses") {
    const fs::path dir = fs::temp_directory_path() / milmer::str("milmer_resume_test_", ::getpid());
    fs::create_directories(dir);
    const auto cfg = milmer::MilmerConfig::tiny();  // dropout and drop-path on
    std::vector<float> straight;
    {
      TinyRun run(cfg);
      for (int i = 0; i < 4; ++i) straight.push_back(run.step());
    }
    {
      TinyRun run(cfg);
      run.step();
      run.step();
      run.model.save_checkpoint(run.ctx, dir / "ckpt.safetensors");
    }
    TinyRun resumed(cfg, 2, 999);  // other initial weights: the checkpoint must replace them
    resumed.model.load_checkpoint(resumed.ctx, dir / "ckpt.safetensors");
    CHECK(resumed.model.step() == 2);
    CHECK(resumed.step() == straight[2]);
    CHECK(resumed.step() == straight[3]);
    CHECK(straight[3] < straight[0]);
    fs::remove_all(dir);
  }

  TEST_CASE("a checkpoint of another config is refused and changes nothing") {
    const fs::path dir =
        fs::temp_directory_path() / milmer::str("milmer_ckpt_config_test_", ::getpid());
    fs::create_directories(dir);
    auto other = milmer::MilmerConfig::tiny();
    other.classes = 3;
    {
      TinyRun run(other);
      run.model.save_checkpoint(run.ctx, dir / "other.safetensors");
    }
    TinyRun run(milmer::MilmerConfig::tiny());
    const auto before = run.model.params().download(run.ctx);
    const auto msg = milmer::test::error_message(
        [&] { run.model.load_checkpoint(run.ctx, dir / "other.safetensors"); });
    CHECK(msg.find("config") != std::string::npos);
    CHECK(run.model.params().download(run.ctx) == before);
    CHECK(milmer::test::error_message([&] {
            run.model.load_checkpoint(run.ctx, dir / "missing.safetensors");
          }).find("missing.safetensors") != std::string::npos);
    fs::remove_all(dir);
  }

  TEST_CASE("parameter count equals the PyTorch reference's") {
    const auto ref = milmer::io::read_json_file(fs::path(MILMER_SOURCE_DIR) /
                                                "tests/golden/parameter_specs.json");
    TinyRun run(milmer::MilmerConfig::tiny());
    CHECK(run.model.parameter_count() == ref.at("milmer_tiny").at("count").get<std::int64_t>());
    std::int64_t paper = 0;
    for (const auto& spec : milmer::parameter_specs(milmer::MilmerConfig::paper())) {
      std::int64_t n = 1;
      for (auto d : spec.shape) n *= d;
      paper += n;
    }
    CHECK(paper == ref.at("milmer_paper").at("count").get<std::int64_t>());
    MESSAGE("parameters: tiny ", run.model.parameter_count(), ", paper ", paper);
  }
}
