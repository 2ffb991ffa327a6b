// The whole Milmer model against the PyTorch reference (tools/milmer_reference.py): logits,
// loss, every parameter gradient (dropout off) and the losses of 5 AdamW steps, on the tiny
// preset (scores detached: the encoder re-runs on the selected frames) and on a second
// config with other F, K, N, heads and scores not detached. Runs through the same function as
// the milmer-parity tool.
#include <doctest/doctest.h>

#include <filesystem>

#include "milmer/parity.hpp"
#include "support.hpp"

#ifndef MILMER_SOURCE_DIR
#define MILMER_SOURCE_DIR "."
#endif

namespace {

namespace fs = std::filesystem;

void check_milmer_fixture(const fs::path& dir) {
  const auto cfg = milmer::MilmerConfig::load(dir / "config.json");
  const auto params = milmer::io::read_safetensors(dir / "params.safetensors");
  const auto inputs = milmer::io::read_safetensors(dir / "inputs.safetensors");
  const auto expected = milmer::io::read_safetensors(dir / "expected.safetensors");
  const int steps = static_cast<int>(expected.at("losses").shape[0]);
  const double lr = expected.values<float>("lr").at(0);
  const auto got =
      milmer::parity::run_milmer(milmer::parity::without_dropout(cfg), params, inputs, steps, lr);
  auto check = [&](const std::string& name, double abs_scale = 0.0) {
    milmer::test::check_close(got.at(name).values<float>(),
                              expected.values<double>("ref64." + name),
                              expected.values<float>(name), name, 4.0, abs_scale);
  };
  check("logits");
  check("loss");
  int grads = 0;
  for (const auto& [name, t] : got) {
    if (!name.starts_with("grad.")) continue;
    check(name, milmer::test::bias_gradient_scale(expected, name));
    ++grads;
  }
  CHECK(grads == static_cast<int>(milmer::parameter_specs(cfg).size()));
  // Losses over AdamW steps: each step's loss compounds the previous updates' rounding, so
  // they are compared with PyTorch's fp32 trajectory against the fp64 one.
  check("losses");
}

}  // namespace

TEST_SUITE("milmer") {
  TEST_CASE("Milmer equals the PyTorch reference: tiny preset, scores detached") {
    check_milmer_fixture(fs::path(MILMER_SOURCE_DIR) / "tests/golden/milmer_tiny");
  }
  TEST_CASE("Milmer equals the PyTorch reference: other F, K, N, heads, scores not detached") {
    check_milmer_fixture(fs::path(MILMER_SOURCE_DIR) / "tests/golden/milmer_alt");
  }
}
