// The float64 reference of the multi-head attention core (include/milmer/kernels/
// mha_attention.hpp), forward and backward, with the kernel's dropout mask on the
// probabilities: plain loops templated on the scalar type (double: the reference; float: the
// plain fp32 baseline of check.hpp's rule).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "milmer/kernels/mha_attention.hpp"
#include "milmer/rng.hpp"

namespace milmer::reference {

struct MhaAttentionSizes {
  int batch, lq, lk, dim, heads;  // dim = heads x head_dim
  float dropout;                  // drop probability of the attention weights
  std::uint64_t seed, offset;     // the dropout mask's Philox stream
};

template <class S>
struct MhaAttention {
  std::vector<S> out, lse;  // (B, Lq, D), (B, heads, Lq)
  std::vector<S> dq, dk, dv;
};

// Forward and backward (loss sum(out * dout)) over contiguous q (B, Lq, D), k, v (B, Lk, D),
// dout (B, Lq, D).
template <class S>
MhaAttention<S> mha_attention(const MhaAttentionSizes& c, const std::vector<S>& q,
                              const std::vector<S>& k, const std::vector<S>& v,
                              const std::vector<S>& dout) {
  const int hd = c.dim / c.heads;
  const S scale = S(1) / std::sqrt(S(hd));
  const MhaShape shape{c.batch, c.lq, c.lk, c.heads, hd, 0, 0, 0, 0, 0, 0};
  MhaAttention<S> r;
  r.out.assign(q.size(), 0);
  r.lse.assign(std::size_t(c.batch) * c.heads * c.lq, 0);
  r.dq.assign(q.size(), 0);
  r.dk.assign(k.size(), 0);
  r.dv.assign(v.size(), 0);
  auto factor = [&](int b, int h, int i, int j) -> S {
    if (c.dropout <= 0.0f) return 1;
    const float u = philox_uniform(c.seed, c.offset, mha_dropout_index(shape, b, h, i, j));
    return u >= c.dropout ? S(1) / (S(1) - S(c.dropout)) : S(0);
  };
  auto at = [&](int b, int len, int i, int h, int d) {
    return (std::size_t(b) * len + i) * c.dim + h * hd + d;
  };
  std::vector<S> p(c.lk), dp(c.lk);
  for (int b = 0; b < c.batch; ++b)
    for (int h = 0; h < c.heads; ++h)
      for (int i = 0; i < c.lq; ++i) {
        S mx = -INFINITY;
        for (int j = 0; j < c.lk; ++j) {
          S s = 0;
          for (int d = 0; d < hd; ++d) s += q[at(b, c.lq, i, h, d)] * k[at(b, c.lk, j, h, d)];
          p[j] = s * scale;
          mx = std::max(mx, p[j]);
        }
        S sum = 0;
        for (int j = 0; j < c.lk; ++j) sum += (p[j] = std::exp(p[j] - mx));
        for (int j = 0; j < c.lk; ++j) p[j] /= sum;
        r.lse[(std::size_t(b) * c.heads + h) * c.lq + i] = mx + std::log(sum);
        for (int d = 0; d < hd; ++d) {
          S o = 0;
          for (int j = 0; j < c.lk; ++j) o += p[j] * factor(b, h, i, j) * v[at(b, c.lk, j, h, d)];
          r.out[at(b, c.lq, i, h, d)] = o;
        }
        // Backward of this row.
        S delta = 0;
        for (int j = 0; j < c.lk; ++j) {
          S s = 0;
          for (int d = 0; d < hd; ++d) s += dout[at(b, c.lq, i, h, d)] * v[at(b, c.lk, j, h, d)];
          dp[j] = s * factor(b, h, i, j);
          delta += p[j] * dp[j];
        }
        for (int j = 0; j < c.lk; ++j) {
          const S ds = p[j] * (dp[j] - delta);
          for (int d = 0; d < hd; ++d) {
            r.dq[at(b, c.lq, i, h, d)] += scale * ds * k[at(b, c.lk, j, h, d)];
            r.dk[at(b, c.lk, j, h, d)] += scale * ds * q[at(b, c.lq, i, h, d)];
            r.dv[at(b, c.lk, j, h, d)] += p[j] * factor(b, h, i, j) * dout[at(b, c.lq, i, h, d)];
          }
        }
      }
  return r;
}

}  // namespace milmer::reference
