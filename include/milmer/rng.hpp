// Seeded randomness that gives the same numbers on every platform and target.
//
// Philox-4x32-10 (Salmon et al., SC'11): a counter-based RNG, the same numbers on both
// targets and in any thread order. A random number is a pure function of (seed, offset,
// index): a kernel draws the value for element i without state, so dropout masks need not
// be stored; backward regenerates them from the same triple.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "milmer/platform.hpp"
#include "milmer/splitmix.hpp"  // SplitMix64, seeded_shuffle (host only)

namespace milmer {

struct Philox {
  std::uint32_t c0, c1, c2, c3;

  // Four 32-bit words for counter (c0..c3) under key (k0, k1).
  static MILMER_HD inline Philox round10(std::uint32_t k0, std::uint32_t k1, std::uint32_t c0,
                                         std::uint32_t c1, std::uint32_t c2, std::uint32_t c3) {
    constexpr std::uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    constexpr std::uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    for (int r = 0; r < 10; ++r) {
      const std::uint64_t p0 = std::uint64_t{M0} * c0;
      const std::uint64_t p1 = std::uint64_t{M1} * c2;
      const std::uint32_t n0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1 ^ k0;
      const std::uint32_t n2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3 ^ k1;
      c1 = static_cast<std::uint32_t>(p1);
      c3 = static_cast<std::uint32_t>(p0);
      c0 = n0;
      c2 = n2;
      k0 += W0;
      k1 += W1;
    }
    return Philox{c0, c1, c2, c3};
  }
};

// Uniform float in [0, 1) for element `index` of the stream (seed, offset). 24 random bits,
// so every value is exactly representable.
MILMER_HD inline float philox_uniform(std::uint64_t seed, std::uint64_t offset,
                                      std::uint64_t index) {
  const Philox r =
      Philox::round10(static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                      static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(index >> 32),
                      static_cast<std::uint32_t>(offset), static_cast<std::uint32_t>(offset >> 32));
  return static_cast<float>(r.c0 >> 8) * (1.0f / 16777216.0f);
}

// Normal(0, std) from Philox by Box-Muller: the same numbers on every platform (host only;
// the models draw their initial weights with it).
inline float philox_normal(std::uint64_t seed, std::uint64_t offset, std::uint64_t i, float std) {
  const float u1 = philox_uniform(seed, offset, 2 * i) + 0x1.0p-25f;
  const float u2 = philox_uniform(seed, offset, 2 * i + 1);
  return std * std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853071795864f * u2);
}

// The Philox seed of training step `step` of a run seeded `seed`: a pure function of the
// two, so a resumed run draws the same dropout and drop-path masks. A SplitMix64-style
// finaliser with shifts of its own (31, 29), not SplitMix64::next's mix (splitmix.hpp): it is kept
// as it is because every dropout mask, and so every trained result, depends on it.
inline std::uint64_t step_seed(std::uint64_t seed, std::int64_t step) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(step) + 1;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 29);
}

}  // namespace milmer
