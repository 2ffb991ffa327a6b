// libFuzzer harness: the model configuration as it comes from a checkpoint's metadata or a
// config file. Parsing and validation end in a config or a milmer::Error; a config that
// validates is bounded, so listing its parameters stays small.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_support.hpp"
#include "milmer/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto& path = milmer::fuzz::write_input(data, size, ".json");
  milmer::fuzz::expect_clean([&] {
    const auto cfg = milmer::MilmerConfig::load(path);
    cfg.validate();
    (void)milmer::parameter_specs(cfg);
  });
  return 0;
}
