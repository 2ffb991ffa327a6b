// The float64 reference of LayerNorm (include/milmer/kernels/layernorm.hpp): plain loops,
// templated on the scalar type (double: the reference; float: the error of a straightforward
// fp32 implementation, the baseline of the tolerance rule in check.hpp).
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

namespace milmer::reference {

template <class S>
struct LayerNormForward {
  std::vector<S> out, mean, rstd;  // (rows, width), (rows), (rows)
};

// The obvious loops over (rows, width) x: two passes per row, biased variance.
template <class S>
LayerNormForward<S> layernorm_forward(int rows, int width, const std::vector<S>& x,
                                      const std::vector<S>& weight, const std::vector<S>& bias,
                                      S eps) {
  LayerNormForward<S> r{std::vector<S>(x.size()), std::vector<S>(rows), std::vector<S>(rows)};
  for (int i = 0; i < rows; ++i) {
    const S* xr = &x[static_cast<std::size_t>(i) * width];
    S sum = 0;
    for (int c = 0; c < width; ++c) sum += xr[c];
    const S m = sum / width;
    S sq = 0;
    for (int c = 0; c < width; ++c) sq += (xr[c] - m) * (xr[c] - m);
    const S s = S(1) / std::sqrt(sq / width + eps);
    for (int c = 0; c < width; ++c)
      r.out[static_cast<std::size_t>(i) * width + c] = (xr[c] - m) * s * weight[c] + bias[c];
    r.mean[i] = m;
    r.rstd[i] = s;
  }
  return r;
}

template <class S>
struct LayerNormBackward {
  std::vector<S> dinp, dweight, dbias;
};

// Backward from the statistics recomputed in S. dweight and dbias start from dweight0 and
// dbias0 (the kernel's += semantics), dinp from dinp0 only when accumulating (else from 0).
template <class S>
LayerNormBackward<S> layernorm_backward(int rows, int width, const std::vector<S>& dy,
                                        const std::vector<S>& x, const std::vector<S>& weight,
                                        S eps, const std::vector<S>& dinp0,
                                        const std::vector<S>& dweight0,
                                        const std::vector<S>& dbias0, bool accumulate) {
  const auto f = layernorm_forward<S>(rows, width, x, weight, std::vector<S>(width, S(0)), eps);
  LayerNormBackward<S> r{accumulate ? dinp0 : std::vector<S>(x.size(), S(0)), dweight0, dbias0};
  for (int i = 0; i < rows; ++i) {
    const std::size_t base = static_cast<std::size_t>(i) * width;
    S sum_g = 0, sum_gx = 0;
    for (int c = 0; c < width; ++c) {
      const S xhat = (x[base + c] - f.mean[i]) * f.rstd[i];
      const S g = dy[base + c] * weight[c];
      sum_g += g;
      sum_gx += g * xhat;
      r.dweight[c] += dy[base + c] * xhat;
      r.dbias[c] += dy[base + c];
    }
    for (int c = 0; c < width; ++c) {
      const S xhat = (x[base + c] - f.mean[i]) * f.rstd[i];
      const S g = dy[base + c] * weight[c];
      r.dinp[base + c] += f.rstd[i] * (g - sum_g / width - xhat * sum_gx / width);
    }
  }
  return r;
}

}  // namespace milmer::reference
