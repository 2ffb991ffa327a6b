// The float64 reference of AMIL's per-frame kernels (include/milmer/kernels/frames.hpp) where
// they sum: the gate gradient of gate_scale_backward, as plain loops templated on the scalar
// type (double: the reference; float: the plain fp32 baseline of check.hpp's rule). The
// other outputs only move or scale values and equal their one-line definitions exactly.
#pragma once

#include <cstddef>
#include <vector>

namespace milmer::reference {

// dgates[s] = sum_r dz[s][r] * x[s][r] over the frames s of (frames, R) dz and x, r in order.
template <class S>
std::vector<S> gate_scale_gate_gradient(int frames, int R, const std::vector<S>& dz,
                                        const std::vector<S>& x) {
  std::vector<S> dgates(frames);
  for (int s = 0; s < frames; ++s) {
    S acc = 0;
    for (int r = 0; r < R; ++r) acc += dz[std::size_t(s) * R + r] * x[std::size_t(s) * R + r];
    dgates[s] = acc;
  }
  return dgates;
}

}  // namespace milmer::reference
