// SwinEncoder against transformers' SwinModel: fixtures in tests/golden (tools/make_golden.py)
// hold the float32 PyTorch result and a float64 run of the same model. The encoder's output
// and every gradient (pixels and each parameter) must meet the tolerance rule with PyTorch's
// own float32 error as the plain-fp32 baseline.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>

#include "milmer/io/safetensors.hpp"
#include "milmer/models/swin.hpp"
#include "support.hpp"

#ifndef MILMER_SOURCE_DIR
#define MILMER_SOURCE_DIR "."
#endif

namespace {

namespace fs = std::filesystem;

// Runs forward and backward of a fixture directory and checks everything it holds.
void check_swin_fixture(const fs::path& dir, double factor) {
  milmer::Context ctx;
  const auto cfg = milmer::SwinConfig::load(dir / "config.json");
  const auto params = milmer::io::read_safetensors(dir / "params.safetensors");
  const auto inputs = milmer::io::read_safetensors(dir / "inputs.safetensors");
  const auto expected = milmer::io::read_safetensors(dir / "expected.safetensors");
  const auto& px = inputs.at("pixel_values");
  const int B = static_cast<int>(px.shape[0]);
  milmer::SwinEncoder enc(ctx, cfg, B);
  enc.load(ctx, params);
  milmer::test::DeviceVector<float> pixels(px.values<float>());
  const int L = cfg.out_tokens(), C = cfg.out_width();
  milmer::test::DeviceVector<float> out(std::size_t(B) * L * C);
  enc.forward(ctx, milmer::view(out.data(), {B, L, C}),
              milmer::view<const float>(pixels.data(),
                                        {B, cfg.num_channels, cfg.image_size, cfg.image_size}),
              false, 0);
  milmer::test::check_close(out.to_host(), (expected.values<double>("ref64.output")),
                            expected.values<float>("output"), dir.filename().string() + " output",
                            factor);

  if (!inputs.contains("grad_output")) return;  // a forward-only fixture
  milmer::test::DeviceVector<float> dout(inputs.values<float>("grad_output"));
  milmer::test::DeviceVector<float> dpixels(pixels.size());
  enc.params().zero_grads(ctx);
  enc.backward(ctx, milmer::view<const float>(dout.data(), {B, L, C}),
               milmer::view(dpixels.data(), {B, cfg.num_channels, cfg.image_size, cfg.image_size}));
  milmer::test::check_close(dpixels.to_host(), (expected.values<double>("ref64.grad.pixel_values")),
                            expected.values<float>("grad.pixel_values"), "grad.pixel_values",
                            factor);
  const auto grads = enc.params().to_tensors(ctx, true);
  int checked = 0;
  for (const auto& [name, t] : grads) {
    // A bias gradient is its Linear's weight gradient without the (unit-scale, normalised)
    // input factor: that is the scale of the terms it sums. It matters for the key
    // projection's bias, whose gradient is zero in exact arithmetic (softmax ignores a
    // constant added to every score of a row), so both implementations return noise.
    double abs_scale = 0.0;
    const std::string bias = ".bias";
    if (name.size() > bias.size() && name.ends_with(bias)) {
      const std::string weight = name.substr(0, name.size() - bias.size()) + ".weight";
      if (expected.contains("ref64.grad." + weight))
        for (double v : expected.values<double>("ref64.grad." + weight))
          abs_scale = std::max(abs_scale, std::abs(v));
    }
    milmer::test::check_close(t.values<float>(), expected.values<double>("ref64.grad." + name),
                              expected.values<float>("grad." + name), "grad." + name, factor,
                              abs_scale);
    ++checked;
  }
  CHECK(checked == static_cast<int>(milmer::swin_parameter_specs(cfg).size()));
}

}  // namespace

TEST_SUITE("swin") {
  TEST_CASE("SwinEncoder equals transformers SwinModel: tiny, forward and all gradients") {
    check_swin_fixture(fs::path(MILMER_SOURCE_DIR) / "tests/golden/swin_tiny", 4.0);
  }
  TEST_CASE("SwinEncoder equals transformers SwinModel: 3 stages, padding, shifts, batch 2") {
    check_swin_fixture(fs::path(MILMER_SOURCE_DIR) / "tests/golden/swin_pad", 4.0);
  }
  TEST_CASE("SwinEncoder equals transformers SwinModel: odd window") {
    check_swin_fixture(fs::path(MILMER_SOURCE_DIR) / "tests/golden/swin_odd_window", 4.0);
  }
  TEST_CASE("full Swin-T (224, random weights) forward equals transformers") {
    // The fixture is 110 MB, so it is not committed: tools/swin_t_check.sh writes it with
    // transformers and points MILMER_SWIN_T_GOLDEN at it (make swin-t-check; ctest runs it
    // as the swin_t_full test, which is skipped with a message when torch is missing).
    const char* dir = std::getenv("MILMER_SWIN_T_GOLDEN");
    if (dir == nullptr || *dir == 0) {
      MESSAGE("skipped: MILMER_SWIN_T_GOLDEN is not set (run make swin-t-check)");
      return;
    }
    check_swin_fixture(fs::path(dir), 4.0);
  }

  TEST_CASE("a Swin parameter file with a missing, extra or misshapen tensor loads nothing") {
    milmer::Context ctx;
    const fs::path dir = fs::path(MILMER_SOURCE_DIR) / "tests/golden/swin_tiny";
    const auto cfg = milmer::SwinConfig::load(dir / "config.json");
    auto file = milmer::io::read_safetensors(dir / "params.safetensors");
    milmer::SwinEncoder enc(ctx, cfg, 1);
    const auto before = enc.params().download(ctx);
    auto missing = file;
    missing.tensors.erase("layernorm.weight");
    CHECK(milmer::test::error_message([&] { enc.load(ctx, missing); }).find("layernorm.weight") !=
          std::string::npos);
    auto extra = file;
    extra.tensors["encoder.layers.0.blocks.0.attention.self.surprise"] =
        milmer::io::Tensor::from<float>({1}, std::vector<float>{1.0f});
    CHECK(milmer::test::error_message([&] { enc.load(ctx, extra); }).find("surprise") !=
          std::string::npos);
    auto bad_index = file;
    for (auto& [name, t] : bad_index.tensors)
      if (milmer::is_swin_buffer_name(name)) {
        auto v = t.values<std::int64_t>();
        std::swap(v[1], v[2]);
        t = milmer::io::Tensor::from<std::int64_t>(t.shape, v);
        break;
      }
    CHECK(milmer::test::error_message([&] {
            enc.load(ctx, bad_index);
          }).find("relative_position_index") != std::string::npos);
    CHECK(enc.params().download(ctx) == before);
  }
}
