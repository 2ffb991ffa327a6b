// The float64 reference of dropout and drop-path (include/milmer/kernels/dropout.hpp): the
// kernel's Philox mask drawn on the host, and the masked scaling as plain loops templated on
// the scalar type (double: the reference; float: the plain fp32 baseline of check.hpp's rule).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "milmer/rng.hpp"

namespace milmer::reference {

// keep[i] for the n elements of a tensor whose samples hold per_sample elements each: element
// i survives when philox_uniform(seed, offset, index) >= p, where index is the element (plain
// dropout, per_sample 1) or its sample (drop-path).
inline std::vector<bool> dropout_keep_mask(std::size_t n, float p, std::uint64_t seed,
                                           std::uint64_t offset, std::size_t per_sample = 1) {
  std::vector<bool> keep(n);
  for (std::size_t i = 0; i < n; ++i) keep[i] = philox_uniform(seed, offset, i / per_sample) >= p;
  return keep;
}

// keep ? v / (1 - p) : 0, the scale computed as S(1) / (S(1) - p) (in float exactly as the
// kernel computes it). Forward on the input and backward on the output gradient alike.
template <class S>
std::vector<S> dropout_apply(const std::vector<S>& v, const std::vector<bool>& keep, S p) {
  const S scale = S(1) / (S(1) - p);
  std::vector<S> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = keep[i] ? v[i] * scale : S(0);
  return out;
}

}  // namespace milmer::reference
