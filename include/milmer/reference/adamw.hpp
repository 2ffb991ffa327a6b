// The float64 reference of AdamW (include/milmer/kernels/adamw.hpp): the textbook formulas
// (decoupled weight decay, bias-corrected moments) as plain loops templated on the scalar type
// (double: the reference; float: the plain fp32 baseline of check.hpp's rule).
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "milmer/kernels/adamw.hpp"

namespace milmer::reference {

// One step t (from 1) on parameters p and moments m, v with gradient g.
template <class S>
void adamw_step(std::vector<S>& p, std::vector<S>& m, std::vector<S>& v, const std::vector<S>& g,
                int t, const AdamWConfig& c) {
  const S lr = S(c.lr), b1 = S(c.beta1), b2 = S(c.beta2), eps = S(c.eps), wd = S(c.weight_decay);
  for (std::size_t i = 0; i < g.size(); ++i) {
    const S gi = g[i];
    p[i] -= lr * wd * p[i];
    m[i] = b1 * m[i] + (S(1) - b1) * gi;
    v[i] = b2 * v[i] + (S(1) - b2) * gi * gi;
    const S mhat = m[i] / (S(1) - std::pow(b1, S(t)));
    const S vhat = v[i] / (S(1) - std::pow(b2, S(t)));
    p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
  }
}

}  // namespace milmer::reference
