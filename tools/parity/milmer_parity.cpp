// milmer-parity: runs a milmer model on weights and inputs from safetensors files and writes
// its outputs and gradients under PyTorch's names, so a user can compare milmer against
// PyTorch / transformers on the same numbers. See README.md, "Checking against PyTorch".
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "milmer/parity.hpp"

int main(int argc, char** argv) {
  CLI::App app{
      "milmer-parity: run a milmer model on safetensors weights and inputs; write outputs and "
      "gradients under PyTorch's names.\n"
      "  --model swin:   inputs pixel_values (B,3,H,W) [, grad_output (B,L,C)] -> output\n"
      "                  [, grad.pixel_values, grad.<param>]\n"
      "  --model milmer: inputs frames (B,F,3,H,W), eeg (B,C,S), labels (B, int64) -> logits,\n"
      "                  loss, grad.<param> [, losses with --steps S --lr X]\n"
      "Dropout and drop-path are off."};
  std::string model, config, params, inputs, out;
  int steps = 0;
  double lr = 1e-3;
  app.add_option("--model", model, "swin or milmer")
      ->required()
      ->check(CLI::IsMember({"swin", "milmer"}));
  app.add_option("--config", config, "transformers config.json (swin) or the milmer config file")
      ->required();
  app.add_option("--params", params, "float32 parameters (safetensors)")->required();
  app.add_option("--inputs", inputs, "input tensors (safetensors)")->required();
  app.add_option("--out", out, "output file (safetensors, written atomically)")->required();
  app.add_option("--steps", steps, "milmer: also run S AdamW steps and write their losses");
  app.add_option("--lr", lr, "milmer: learning rate of those steps (constant)");
  CLI11_PARSE(app, argc, argv);
  try {
    const auto param_file = milmer::io::read_safetensors(params);
    const auto input_file = milmer::io::read_safetensors(inputs);
    milmer::io::TensorMap result;
    if (model == "swin") {
      milmer::check(steps == 0, "milmer-parity", "--steps", "0 for --model swin",
                    std::to_string(steps));
      result = milmer::parity::run_swin(
          milmer::parity::without_dropout(milmer::SwinConfig::load(config)), param_file,
          input_file);
    } else {
      result = milmer::parity::run_milmer(
          milmer::parity::without_dropout(milmer::MilmerConfig::load(config)), param_file,
          input_file, steps, lr);
    }
    milmer::io::write_safetensors(out, result, {{"producer", "milmer-parity"}});
    std::printf("milmer-parity: wrote %zu tensors to %s\n", result.size(), out.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "milmer-parity: error: %s\n", e.what());
    return 1;
  }
}
