// The float64 reference of the fused post-LN sublayer end y = LayerNorm(x + Dropout(branch +
// bias)) (include/milmer/kernels/residual_layernorm.hpp): the unfused composition as plain
// loops in scalar type S (double: the reference; float: the plain fp32 baseline), with the
// dropout mask given (drawn by the caller with the kernel's Philox convention, dropout.hpp).
#pragma once

#include <cstddef>
#include <vector>

#include "milmer/reference/layernorm.hpp"

namespace milmer::reference {

// The inputs of one call: (rows, width) x and branch, (width) branch_bias, norm_weight,
// norm_bias; keep[i] says whether element i of the branch survives dropout with probability p.
template <class S>
struct ResidualLayerNormInputs {
  int rows, width;
  S p, eps;
  std::vector<bool> keep;
  std::vector<S> x, branch, branch_bias, norm_weight, norm_bias;
};

template <class S>
struct ResidualLayerNormForward {
  std::vector<S> out, sum, mean, rstd;
};

template <class S>
ResidualLayerNormForward<S> residual_layernorm_forward(const ResidualLayerNormInputs<S>& in) {
  const S scale = S(1) / (S(1) - in.p);
  ResidualLayerNormForward<S> r;
  r.sum.resize(in.x.size());
  for (std::size_t i = 0; i < in.x.size(); ++i) {
    const S pre = in.branch[i] + in.branch_bias[i % in.width];
    r.sum[i] = in.x[i] + (in.keep[i] ? pre * scale : S(0));
  }
  auto norm = layernorm_forward(in.rows, in.width, r.sum, in.norm_weight, in.norm_bias, in.eps);
  r.out = std::move(norm.out);
  r.mean = std::move(norm.mean);
  r.rstd = std::move(norm.rstd);
  return r;
}

template <class S>
struct ResidualLayerNormBackward {
  std::vector<S> dresidual, dbranch, dnorm_weight, dnorm_bias, dbranch_bias;
};

// The gradients for loss sum(out * dy); the parameter gradients start from the given values
// (the kernel's += semantics), dresidual and dbranch are written.
template <class S>
ResidualLayerNormBackward<S> residual_layernorm_backward(const ResidualLayerNormInputs<S>& in,
                                                         const std::vector<S>& dy,
                                                         const std::vector<S>& dnorm_weight0,
                                                         const std::vector<S>& dnorm_bias0,
                                                         const std::vector<S>& dbranch_bias0) {
  const auto sum = residual_layernorm_forward(in).sum;
  auto norm = layernorm_backward(in.rows, in.width, dy, sum, in.norm_weight, in.eps,
                                 std::vector<S>(), dnorm_weight0, dnorm_bias0, false);
  const S scale = S(1) / (S(1) - in.p);
  ResidualLayerNormBackward<S> r{std::move(norm.dinp), std::vector<S>(sum.size()),
                                 std::move(norm.dweight), std::move(norm.dbias), dbranch_bias0};
  for (std::size_t i = 0; i < sum.size(); ++i) {
    r.dbranch[i] = in.keep[i] ? r.dresidual[i] * scale : S(0);
    r.dbranch_bias[i % in.width] += r.dbranch[i];
  }
  return r;
}

}  // namespace milmer::reference
