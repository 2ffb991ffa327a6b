// The parity runs behind `milmer-parity` (tools/parity) and the golden tests: a model, its
// weights and inputs from safetensors files in, its outputs and gradients out, under the
// names PyTorch uses. See README.md ("Checking against PyTorch") for the file contract.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "milmer/config.hpp"
#include "milmer/context.hpp"
#include "milmer/io/safetensors.hpp"
#include "milmer/models/milmer.hpp"
#include "milmer/models/swin.hpp"

namespace milmer::parity {

// Checks that `inputs` holds exactly the names in `required` plus any of `optional`.
inline void expect_inputs(const io::SafetensorsFile& inputs,
                          const std::vector<std::string>& required,
                          const std::vector<std::string>& optional) {
  for (const auto& name : required)
    check(inputs.contains(name), "inputs " + inputs.path, name, "a tensor of that name", "none");
  for (const auto& [name, t] : inputs.tensors) {
    bool known = false;
    for (const auto& r : required) known = known || r == name;
    for (const auto& o : optional) known = known || o == name;
    check(known, "inputs " + inputs.path, name, "no such input (see milmer-parity --help)",
          "an unexpected tensor");
  }
}

inline std::vector<float> floats(const io::SafetensorsFile& f, const std::string& name,
                                 const io::Shape& shape) {
  return f.values<float>(name, shape);
}

// SwinModel.last_hidden_state for pixel_values (B, 3, H, W); with grad_output (B, L, C) also
// grad.pixel_values and grad.<name> for every parameter. Evaluation mode (no drop-path).
inline io::TensorMap run_swin(const SwinConfig& cfg, const io::SafetensorsFile& params,
                              const io::SafetensorsFile& inputs) {
  expect_inputs(inputs, {"pixel_values"}, {"grad_output"});
  const auto& px = inputs.at("pixel_values");
  check(px.shape.size() == 4, "inputs " + inputs.path, "pixel_values", "rank 4 (B, C, H, W)",
        io::shape_string(px.shape));
  const int B = static_cast<int>(px.shape[0]);
  const io::Shape pixel_shape{B, cfg.num_channels, cfg.image_size, cfg.image_size};
  const auto pixels_host = floats(inputs, "pixel_values", pixel_shape);
  const int L = cfg.out_tokens(), C = cfg.out_width();
  const bool with_grad = inputs.contains("grad_output");
  std::vector<float> dout_host;
  if (with_grad) dout_host = floats(inputs, "grad_output", io::Shape{B, L, C});

  Context ctx;
  SwinEncoder enc(ctx, cfg, B);
  enc.load(ctx, params);
  DeviceBuffer<float> pixels(pixels_host.size()), out(std::size_t(B) * L * C);
  pixels.upload(pixels_host.data(), pixels_host.size(), ctx.stream());
  enc.forward(
      ctx, view(out.data(), {B, L, C}),
      view<const float>(pixels.data(), {B, cfg.num_channels, cfg.image_size, cfg.image_size}),
      false, 0);
  io::TensorMap result;
  std::vector<float> h(out.size());
  out.download(h.data(), h.size(), ctx.stream());
  result["output"] = io::Tensor::from<float>(io::Shape{B, L, C}, h);
  if (with_grad) {
    DeviceBuffer<float> dout(dout_host.size()), dpixels(pixels_host.size());
    dout.upload(dout_host.data(), dout_host.size(), ctx.stream());
    enc.params().zero_grads(ctx);
    enc.backward(ctx, view<const float>(dout.data(), {B, L, C}),
                 view(dpixels.data(), {B, cfg.num_channels, cfg.image_size, cfg.image_size}));
    std::vector<float> g(dpixels.size());
    dpixels.download(g.data(), g.size(), ctx.stream());
    result["grad.pixel_values"] = io::Tensor::from<float>(pixel_shape, g);
    for (auto& [name, t] : enc.params().to_tensors(ctx, true))
      result["grad." + name] = std::move(t);
  }
  return result;
}

// The whole model (dropout off): logits, loss, grad.<name> for every parameter; with steps > 0
// also `losses`: the loss before each of `steps` AdamW steps on the batch (constant lr,
// weight decay 0.01).
inline io::TensorMap run_milmer(const MilmerConfig& cfg, const io::SafetensorsFile& params,
                                const io::SafetensorsFile& inputs, int steps, double lr) {
  expect_inputs(inputs, {"frames", "eeg", "labels"}, {});
  const auto& fr = inputs.at("frames");
  check(fr.shape.size() == 5, "inputs " + inputs.path, "frames", "rank 5 (B, F, 3, H, W)",
        io::shape_string(fr.shape));
  const int B = static_cast<int>(fr.shape[0]);
  const int img = cfg.swin.image_size;
  const auto frames =
      floats(inputs, "frames", io::Shape{B, cfg.frames, cfg.swin.num_channels, img, img});
  const auto eeg = floats(inputs, "eeg", io::Shape{B, cfg.eeg_channels, cfg.eeg_samples});
  const auto labels64 = inputs.values<std::int64_t>("labels", io::Shape{B});
  // Checked as read (int64), before the narrowing: 2^32 must not become class 0.
  for (int i = 0; i < B; ++i)
    check(labels64[i] >= 0 && labels64[i] < cfg.classes, "inputs " + inputs.path,
          str("labels[", i, "]"), str("a class in [0, ", cfg.classes, ")"), str(labels64[i]));
  const std::vector<int> labels(labels64.begin(), labels64.end());
  check(steps >= 0, "milmer-parity", "--steps", ">= 0", str(steps));

  Context ctx;
  Milmer model(ctx, cfg, B);
  model.load_parameters(ctx, params);
  auto upload = [&](float* dst, const std::vector<float>& src) {
    MILMER_CUDA_CHECK(
        cudaMemcpyAsync(dst, src.data(), src.size() * 4, cudaMemcpyHostToDevice, ctx.stream()));
  };
  upload(model.frames_input(), frames);
  upload(model.eeg_input(), eeg);
  MILMER_CUDA_CHECK(cudaMemcpyAsync(model.labels_input(), labels.data(), labels.size() * 4,
                                    cudaMemcpyHostToDevice, ctx.stream()));

  // Gradients with dropout off: a "training" forward whose dropout rates are zero is what
  // keeps activations; the parity contract has dropout off, so the config's rates are zeroed.
  io::TensorMap result;
  model.zero_grads(ctx);
  model.forward(ctx, B, true, 0);
  model.loss(ctx, B, labels);
  model.backward(ctx);
  std::vector<float> logits(std::size_t(B) * cfg.classes);
  MILMER_CUDA_CHECK(cudaMemcpyAsync(logits.data(), model.logits(), logits.size() * 4,
                                    cudaMemcpyDeviceToHost, ctx.stream()));
  const float loss = model.read_loss(ctx);
  result["logits"] = io::Tensor::from<float>(io::Shape{B, cfg.classes}, logits);
  result["loss"] = io::Tensor::from<float>(io::Shape{}, std::vector<float>{loss});
  for (auto& [name, t] : model.swin().params().to_tensors(ctx, true, "swin."))
    result["grad." + name] = std::move(t);
  for (auto& [name, t] : model.params().to_tensors(ctx, true))
    result["grad." + name] = std::move(t);
  if (steps > 0) {
    model.zero_grads(ctx);
    model.optimizer().weight_decay = 0.01;
    std::vector<float> losses;
    for (int s = 0; s < steps; ++s) losses.push_back(model.train_step(ctx, B, lr, 0, labels));
    result["losses"] = io::Tensor::from<float>(io::Shape{steps}, losses);
  }
  return result;
}

// The same config with every dropout and drop-path rate at zero (the parity contract).
inline MilmerConfig without_dropout(MilmerConfig c) {
  c.swin.drop_path_rate = 0;
  c.ca_dropout = 0;
  c.dropout = 0;
  c.head_dropout = 0;
  return c;
}
inline SwinConfig without_dropout(SwinConfig c) {
  c.drop_path_rate = 0;
  return c;
}

}  // namespace milmer::parity
