// Test helpers shared by the suites: device vectors, the error-message catcher, running a
// kernel under every emulator thread order, and the tolerance rule as doctest checks. The
// float64 references, random inputs and the rule itself are include/milmer/reference/.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "milmer/io/safetensors.hpp"
#include "milmer/platform.hpp"
#include "milmer/reference/check.hpp"

namespace milmer::test {

using reference::as;
using reference::central_differences;
using reference::random_vector;

// A device allocation filled from / read back into a std::vector.
template <class T>
class DeviceVector {
 public:
  explicit DeviceVector(std::size_t n) : n_(n) {
    MILMER_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)));
    if (n) MILMER_CUDA_CHECK(cudaMemset(p_, 0, n * sizeof(T)));
  }
  explicit DeviceVector(const std::vector<T>& h) : DeviceVector(h.size()) { upload(h); }
  ~DeviceVector() { cudaFree(p_); }
  DeviceVector(const DeviceVector&) = delete;
  DeviceVector& operator=(const DeviceVector&) = delete;
  void upload(const std::vector<T>& h) {
    REQUIRE(h.size() == n_);
    MILMER_CUDA_CHECK(cudaMemcpy(p_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> to_host() const {
    std::vector<T> h(n_);
    MILMER_CUDA_CHECK(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  std::size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  std::size_t n_;
};

// The message of the milmer::Error that fn throws; fails the test if it throws none.
inline std::string error_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const milmer::Error& e) {
    return e.what();
  }
  FAIL("expected a milmer::Error, none was thrown");
  return {};
}

// Runs fn (which launches kernels and returns their outputs) under seq, rev and random
// orders and checks the outputs are bit-identical; returns the seq outputs.
// On the cuda target (no thread orders to choose) it runs fn once.
template <class Fn>
auto under_every_schedule(Fn fn) {
#if MILMER_TARGET_CUDA
  return fn();
#else
  using milmer::emu::Schedule;
  milmer::emu::set_schedule(Schedule::seq, 0);
  auto first = fn();
  for (Schedule s : {Schedule::rev, Schedule::random}) {
    milmer::emu::set_schedule(s, 12345);
    auto other = fn();
    INFO("schedule ", milmer::emu::schedule_name(s));
    CHECK(other == first);
  }
  milmer::emu::set_schedule(Schedule::seq, 0);
  return first;
#endif
}

// The name of the kernel launched last. The emulator records every launch; the cuda target
// keeps no record, so there the name is empty and ran_kernel() holds: which path a launcher
// picks is checked on the host target.
inline std::string last_kernel() {
#if MILMER_TARGET_CUDA
  return {};
#else
  return milmer::emu::last_launch().kernel;
#endif
}

inline bool ran_kernel(const std::string& recorded, const std::string& part) {
  return MILMER_TARGET_CUDA || recorded.find(part) != std::string::npos;
}

// Two recorded kernel names differ (always true on the cuda target, which records none).
inline bool different_kernels(const std::string& a, const std::string& b) {
  return MILMER_TARGET_CUDA || a != b;
}

// The tolerance rule (include/milmer/reference/check.hpp, docs/architecture.md "Tests"): the
// kernel's error against the fp64 reference is at most `factor` times the error of a plain fp32
// implementation of the same math, plus 1e-6 x the magnitude of the quantity (max|ref|, or
// abs_scale when that is larger).
inline void check_close(const std::vector<float>& got, const std::vector<double>& ref64,
                        const std::vector<float>& plain32, const std::string& what,
                        double factor = 4.0, double abs_scale = 0.0) {
  REQUIRE(got.size() == ref64.size());
  REQUIRE(plain32.size() == ref64.size());
  const auto [err, worst] = reference::max_abs_error(got, ref64);
  const auto [bound, plain_err] =
      reference::plain_fp32_tolerance(ref64, plain32, factor, abs_scale);
  INFO(what, ": max error ", err, " at ", worst, " (got ", got.empty() ? 0.0 : got[worst], ", ref ",
       ref64.empty() ? 0.0 : ref64[worst], "), plain fp32 error ", plain_err, ", bound ", bound);
  CHECK(err <= bound);
}

// Checks grad, the gradient of loss() with respect to x, element by element against central
// differences with step h: |difference - grad[i]| < bound.
template <class Loss>
void check_central_differences(std::vector<double>& x, Loss&& loss, const std::vector<double>& grad,
                               double h, double bound, const std::string& what) {
  const auto fd = central_differences(x, loss, h);
  REQUIRE(grad.size() == fd.size());
  for (std::size_t i = 0; i < fd.size(); ++i) {
    INFO(what, "[", i, "]");
    CHECK(std::abs(fd[i] - grad[i]) < bound);
  }
}

// The absolute-term scale for a golden fixture's gradient `grad.<name>`: for a bias
// (`.bias` or `_bias`) the largest |ref64| of its Linear's weight gradient, else 0 (the
// gradient's own magnitude). A bias gradient sums the same terms as its weight's gradient
// without the normalised, unit-scale input factor; for biases whose gradient is zero in exact
// arithmetic (the key projections': softmax ignores a constant added to every score of a row)
// both PyTorch and milmer return only rounding noise of those terms.
inline double bias_gradient_scale(const milmer::io::SafetensorsFile& expected,
                                  const std::string& grad_name) {
  double scale = 0.0;
  for (const std::string suffix : {".bias", "_bias"}) {
    if (!grad_name.ends_with(suffix)) continue;
    const std::string weight = "ref64." + grad_name.substr(0, grad_name.size() - suffix.size()) +
                               (suffix == ".bias" ? ".weight" : "_weight");
    if (expected.contains(weight))
      for (double v : expected.values<double>(weight)) scale = std::max(scale, std::abs(v));
  }
  return scale;
}

}  // namespace milmer::test
