// libFuzzer harness: the shard reader. Opening validates the header, every record's metadata
// and the CRC; each record it accepts must then read without error.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_support.hpp"
#include "milmer/data/shards.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto& path = milmer::fuzz::write_input(data, size, ".shard");
  milmer::fuzz::expect_clean([&] {
    milmer::data::Shard shard(path);
    const auto& d = shard.dims();
    std::vector<std::uint8_t> frames(d.frame_bytes());
    std::vector<float> eeg(d.eeg_floats());
    for (std::size_t i = 0; i < shard.size(); ++i) shard.read(i, frames.data(), eeg.data());
  });
  return 0;
}
