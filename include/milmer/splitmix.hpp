// SplitMix64 and the shuffle built on it: host-only seeded randomness for sample orders and
// synthetic data. Apart from rng.hpp (which includes it) because it needs no CUDA platform:
// the data layer and the file readers use it without the emulator or a GPU toolkit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace milmer {

// SplitMix64 (Steele et al., OOPSLA'14), host only: sample orders and synthetic data.
// std::shuffle and the std distributions do not promise the same numbers everywhere.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : s_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n > 0, without modulo bias.
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t limit = (~std::uint64_t{0}) - (~std::uint64_t{0}) % n;
    std::uint64_t x;
    do x = next();
    while (x >= limit);
    return x % n;
  }

 private:
  std::uint64_t s_;
};

template <class T>
void seeded_shuffle(std::vector<T>& v, std::uint64_t seed) {
  SplitMix64 rng(seed);
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

}  // namespace milmer
