// The float64 reference of the fused softmax + cross-entropy (include/milmer/kernels/
// softmax_ce.hpp): plain loops templated on the scalar type (double: the reference; float:
// the plain fp32 baseline of check.hpp's rule).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace milmer::reference {

template <class S>
struct SoftmaxCrossEntropy {
  std::vector<S> losses;  // (B)
  std::vector<S> grad;    // (B, C): d(dloss * mean loss) / d logits
  std::vector<S> probs;   // (B, C)
  S mean = 0;
};

// The obvious loops over (B, C) logits: max-subtracted softmax, loss = logsumexp - x[label],
// grad = (p - onehot) * dloss / B.
template <class S>
SoftmaxCrossEntropy<S> softmax_cross_entropy(int B, int C, const std::vector<S>& logits,
                                             const std::vector<int>& labels, S dloss) {
  SoftmaxCrossEntropy<S> r;
  r.losses.resize(B);
  r.grad.resize(std::size_t(B) * C);
  r.probs.resize(std::size_t(B) * C);
  const S scale = dloss / S(B);
  S total = 0;
  for (int b = 0; b < B; ++b) {
    const S* x = logits.data() + std::size_t(b) * C;
    S m = x[0];
    for (int j = 1; j < C; ++j) m = std::max(m, x[j]);
    S s = 0;
    for (int j = 0; j < C; ++j) s += std::exp(x[j] - m);
    r.losses[b] = m + std::log(s) - x[labels[b]];
    total += r.losses[b];
    for (int j = 0; j < C; ++j) {
      const S p = std::exp(x[j] - m) / s;
      r.probs[std::size_t(b) * C + j] = p;
      r.grad[std::size_t(b) * C + j] = (p - (j == labels[b] ? S(1) : S(0))) * scale;
    }
  }
  r.mean = total / S(B);
  return r;
}

}  // namespace milmer::reference
