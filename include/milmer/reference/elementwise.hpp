// The float64 reference of the elementwise ops (include/milmer/kernels/elementwise.hpp): plain
// loops templated on the scalar type (double: the reference; float: the plain fp32 baseline
// of check.hpp's rule).
#pragma once

#include <cstddef>
#include <vector>

namespace milmer::reference {

// out[r][c] = x[r][c] + bias[c] over (rows, cols) x.
template <class S>
std::vector<S> bias_add(int rows, int cols, const std::vector<S>& x, const std::vector<S>& bias) {
  std::vector<S> out(x.size());
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      const std::size_t i = static_cast<std::size_t>(r) * cols + c;
      out[i] = x[i] + bias[c];
    }
  return out;
}

// dbias[c] = dbias0[c] + sum_r dout[r][c] (the kernel's += semantics), rows in order.
template <class S>
std::vector<S> bias_add_backward(int rows, int cols, const std::vector<S>& dout,
                                 const std::vector<S>& dbias0) {
  std::vector<S> dbias = dbias0;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) dbias[c] += dout[static_cast<std::size_t>(r) * cols + c];
  return dbias;
}

template <class S>
std::vector<S> add(const std::vector<S>& a, const std::vector<S>& b) {
  std::vector<S> out(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) out[i] = a[i] + b[i];
  return out;
}

}  // namespace milmer::reference
