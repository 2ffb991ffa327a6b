// libFuzzer harness: the safetensors reader (checkpoints, Swin conversions, golden files).
// Every input either reads, with each tensor's bytes matching its dtype and shape, or ends
// in a milmer::Error.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.hpp"
#include "milmer/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto& path = milmer::fuzz::write_input(data, size, ".safetensors");
  milmer::fuzz::expect_clean([&] {
    const auto file = milmer::io::read_safetensors(path);
    for (const auto& [name, t] : file.tensors) {
      const auto bytes = static_cast<std::size_t>(milmer::io::shape_numel(t.shape)) *
                         milmer::io::dtype_size(t.dtype);
      if (t.bytes.size() != bytes) __builtin_trap();
    }
  });
  return 0;
}
