// The float64 reference of AMIL scoring and top-K frame selection (include/milmer/kernels/
// amil.hpp), forward and backward: plain loops templated on the scalar type (double: the
// reference; float: the plain fp32 baseline of check.hpp's rule).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <vector>

namespace milmer::reference {

// x (B, F, M, D): F frames of M tokens of width D per sample; hidden L; k frames kept.
struct AmilSizes {
  int batch, frames, tokens, dim, hidden, k;
};

// The scoring layer: V (L, D), b_V (L), w (L), b_w (1).
template <class Real>
struct AmilParams {
  std::vector<Real> v, bv, w, bw;
};

// e (B, F, D) pooled frames, h (B, F, L), scores s and weights a (B, F), gates and topk
// (B, K), z (B, K*M, D).
template <class Real>
struct AmilForward {
  std::vector<Real> e, h, s, a, gates, z;
  std::vector<int> topk;
};

template <class Real>
struct AmilBackward {
  std::vector<Real> dx, dv, dbv, dw, dbw, ds;
};

template <class Real>
AmilForward<Real> amil_forward(const AmilSizes& c, const std::vector<Real>& x,
                               const AmilParams<Real>& p) {
  const int F = c.frames, M = c.tokens, D = c.dim, L = c.hidden, K = c.k;
  AmilForward<Real> r;
  r.e.assign(std::size_t(c.batch) * F * D, 0);
  r.h.assign(std::size_t(c.batch) * F * L, 0);
  r.s.assign(std::size_t(c.batch) * F, 0);
  r.a.assign(r.s.size(), 0);
  r.gates.assign(std::size_t(c.batch) * K, 0);
  r.topk.assign(r.gates.size(), 0);
  r.z.assign(std::size_t(c.batch) * K * M * D, 0);
  for (int b = 0; b < c.batch; ++b) {
    for (int f = 0; f < F; ++f) {
      const std::size_t bf = std::size_t(b) * F + f;
      for (int d = 0; d < D; ++d) {
        Real sum = 0;
        for (int m = 0; m < M; ++m) sum += x[(bf * M + m) * D + d];
        r.e[bf * D + d] = sum / Real(M);
      }
      Real s = p.bw[0];
      for (int l = 0; l < L; ++l) {
        Real pre = p.bv[l];
        for (int d = 0; d < D; ++d) pre += p.v[std::size_t(l) * D + d] * r.e[bf * D + d];
        r.h[bf * L + l] = std::tanh(pre);
        s += p.w[l] * r.h[bf * L + l];
      }
      r.s[bf] = s;
    }
    Real mx = -INFINITY, sum = 0;
    for (int f = 0; f < F; ++f) mx = std::max(mx, r.s[std::size_t(b) * F + f]);
    for (int f = 0; f < F; ++f) sum += std::exp(r.s[std::size_t(b) * F + f] - mx);
    for (int f = 0; f < F; ++f)
      r.a[std::size_t(b) * F + f] = std::exp(r.s[std::size_t(b) * F + f] - mx) / sum;
    std::vector<int> order(F);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int i, int j) {
      return r.a[std::size_t(b) * F + i] > r.a[std::size_t(b) * F + j];
    });
    Real mean = 0;
    for (int j = 0; j < K; ++j) mean += r.a[std::size_t(b) * F + order[j]];
    mean /= Real(K);
    for (int j = 0; j < K; ++j) {
      r.topk[std::size_t(b) * K + j] = order[j];
      const Real g = r.a[std::size_t(b) * F + order[j]] / mean;
      r.gates[std::size_t(b) * K + j] = g;
      for (std::size_t i = 0; i < std::size_t(M) * D; ++i)
        r.z[(std::size_t(b) * K + j) * M * D + i] =
            g * x[(std::size_t(b) * F + order[j]) * M * D + i];
    }
  }
  return r;
}

// The gradients of loss sum(z * dz), parameter gradients from zero; detach: no gradient
// through the scores into x (dx is then the gather's alone).
template <class Real>
AmilBackward<Real> amil_backward(const AmilSizes& c, const std::vector<Real>& x,
                                 const AmilParams<Real>& p, const AmilForward<Real>& fw,
                                 const std::vector<Real>& dz, bool detach) {
  const int F = c.frames, M = c.tokens, D = c.dim, L = c.hidden, K = c.k;
  const std::size_t MD = std::size_t(M) * D;
  AmilBackward<Real> r;
  r.dx.assign(x.size(), 0);
  r.dv.assign(p.v.size(), 0);
  r.dbv.assign(p.bv.size(), 0);
  r.dw.assign(p.w.size(), 0);
  r.dbw.assign(1, 0);
  r.ds.assign(fw.s.size(), 0);
  for (int b = 0; b < c.batch; ++b) {
    std::vector<Real> da(F, 0), dg(K, 0);
    Real sum_sel = 0;
    for (int j = 0; j < K; ++j) sum_sel += fw.a[std::size_t(b) * F + fw.topk[b * K + j]];
    for (int j = 0; j < K; ++j) {
      const int f = fw.topk[b * K + j];
      for (std::size_t i = 0; i < MD; ++i) {
        const Real g = dz[(std::size_t(b) * K + j) * MD + i];
        r.dx[(std::size_t(b) * F + f) * MD + i] = fw.gates[b * K + j] * g;
        dg[j] += g * x[(std::size_t(b) * F + f) * MD + i];
      }
    }
    // g_j = K a_{T_j} / S: dg_j/da_{T_i} = K / S [i == j] - K a_{T_j} / S^2.
    for (int i = 0; i < K; ++i)
      for (int j = 0; j < K; ++j)
        da[fw.topk[b * K + i]] +=
            dg[j] * (Real(K) / sum_sel * (i == j) -
                     Real(K) * fw.a[std::size_t(b) * F + fw.topk[b * K + j]] / (sum_sel * sum_sel));
    Real dot = 0;
    for (int f = 0; f < F; ++f) dot += fw.a[std::size_t(b) * F + f] * da[f];
    for (int f = 0; f < F; ++f)
      r.ds[std::size_t(b) * F + f] = fw.a[std::size_t(b) * F + f] * (da[f] - dot);
    for (int f = 0; f < F; ++f) {
      const std::size_t bf = std::size_t(b) * F + f;
      const Real ds = r.ds[bf];
      r.dbw[0] += ds;
      std::vector<Real> de(D, 0);
      for (int l = 0; l < L; ++l) {
        const Real h = fw.h[bf * L + l];
        r.dw[l] += ds * h;
        const Real dpre = ds * p.w[l] * (1 - h * h);
        r.dbv[l] += dpre;
        for (int d = 0; d < D; ++d) {
          r.dv[std::size_t(l) * D + d] += dpre * fw.e[bf * D + d];
          de[d] += dpre * p.v[std::size_t(l) * D + d];
        }
      }
      if (!detach)
        for (int m = 0; m < M; ++m)
          for (int d = 0; d < D; ++d) r.dx[(bf * M + m) * D + d] += de[d] / Real(M);
    }
  }
  return r;
}

}  // namespace milmer::reference
