// Command-line options the example programs share (CLI11), kept apart from common.hpp,
// which the unit tests compile without CLI11.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "common.hpp"

namespace milmer::examples {

// An option whose value must be > 0, its default shown in --help.
template <class T>
CLI::Option* add_positive(CLI::App& app, const std::string& name, T& value,
                          const std::string& help = {}) {
  return app.add_option(name, value, help)->check(CLI::PositiveNumber)->capture_default_str();
}

// --labels: one of the label schemes (data::kLabelSchemeNames).
inline CLI::Option* add_labels_option(CLI::App& app, std::string& labels, const std::string& help) {
  return app.add_option("--labels", labels, help)->check(CLI::IsMember(label_scheme_names()));
}

// --batch: 1 .. max samples per batch.
inline CLI::Option* add_batch_option(CLI::App& app, int& batch, int max, const std::string& help) {
  return app.add_option("--batch", batch, help)->check(CLI::Range(1, max))->capture_default_str();
}

// What milmer-train and milmer-infer read shards with and run on: --data, --threads
// (set_host_threads) and --no-verify.
inline void add_data_and_threads_options(CLI::App& app, std::string& data_dir, int& threads,
                                         bool& no_verify) {
  app.add_option("--data", data_dir, "directory of *.shard files")->required();
  app.add_option("--threads", threads, "host target: emulator and OpenBLAS threads (0: all cores)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--no-verify", no_verify, "skip the shards' payload CRC pass when opening");
}

}  // namespace milmer::examples
