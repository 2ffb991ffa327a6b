// How a kernel is checked against its float64 reference (the headers beside this one): the
// random inputs, the tolerance rule and central finite differences. The tests (tests/), the
// kernel labs (kernels/) and the benchmarks (bench/) all use these; a program embedding a
// kernel can check it the same way.
//
// The tolerance rule (docs/architecture.md, "Tests"): run the reference twice, in double (the
// truth) and in float (what a plain fp32 implementation of the same math gets). The kernel's
// largest error against the double run may be at most `factor` (4) times the float run's, plus
// a tiny absolute term, 1e-6 x the magnitude of the quantity, for outputs the plain loops get
// exactly right.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "milmer/error.hpp"

namespace milmer::reference {

// v converted element by element (float -> double is exact, so a reference run in double
// sees exactly the float inputs the kernel saw).
template <class To, class From>
std::vector<To> as(const std::vector<From>& v) {
  return std::vector<To>(v.begin(), v.end());
}

// n values uniform in [lo, hi) drawn from rng (one seeded rng for all of a program's inputs).
inline std::vector<float> random_vector(std::size_t n, std::mt19937_64& rng, float lo, float hi) {
  std::uniform_real_distribution<float> distribution(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = distribution(rng);
  return v;
}

// n values uniform in [lo, hi) from their own seed, so that one input does not depend on the
// sizes of the others.
inline std::vector<float> random_vector(std::size_t n, std::uint64_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  return random_vector(n, rng, lo, hi);
}

// n class labels uniform in [0, classes), drawn from rng / from their own seed.
inline std::vector<int> random_labels(std::size_t n, int classes, std::mt19937_64& rng) {
  std::vector<int> labels(n);
  for (auto& y : labels) y = static_cast<int>(rng() % static_cast<std::uint64_t>(classes));
  return labels;
}
inline std::vector<int> random_labels(std::size_t n, int classes, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  return random_labels(n, classes, rng);
}

struct MaxError {
  double error = 0;       // largest |got[i] - ref[i]|; infinite when any is NaN
  std::size_t worst = 0;  // the first index where it occurs
};

template <class Got, class Ref>
MaxError max_abs_error(const std::vector<Got>& got, const std::vector<Ref>& ref) {
  check(got.size() == ref.size(), "reference::max_abs_error", "got", str(ref.size(), " elements"),
        str(got.size()));
  MaxError m;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double e = std::abs(double(got[i]) - double(ref[i]));
    if (!(e <= m.error)) {  // also catches NaN
      m.error = std::isnan(e) ? INFINITY : e;
      m.worst = i;
    }
  }
  return m;
}

struct Tolerance {
  double bound;
  double plain_error = NAN;  // the plain fp32 run's error the bound was derived from, if any
};

// The bound of the rule above for the reference run in double (ref) and in float (plain). The
// magnitude is max|ref| unless the caller knows a better one (abs_scale > 0: e.g. a gradient
// that is zero in exact arithmetic, where both implementations return rounding noise of the
// summed terms). std::max skips a NaN of the plain run (fp32 overflow), so it cannot loosen
// the bound.
template <class Ref, class Plain>
Tolerance plain_fp32_tolerance(const std::vector<Ref>& ref, const std::vector<Plain>& plain,
                               double factor = 4.0, double abs_scale = 0.0) {
  check(plain.size() == ref.size(), "reference::plain_fp32_tolerance", "plain",
        str(ref.size(), " elements"), str(plain.size()));
  double plain_error = 0, scale = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    plain_error = std::max(plain_error, std::abs(double(plain[i]) - double(ref[i])));
    scale = std::max(scale, std::abs(double(ref[i])));
  }
  if (abs_scale > 0.0) scale = std::max(scale, abs_scale);
  return {factor * plain_error + 1e-6 * std::max(scale, 1e-3), plain_error};
}

// The gradient of loss() with respect to x by central differences (loss(x + h) - loss(x - h))
// / 2h, one element at a time; loss reads x, which is restored after each element.
template <class Loss>
std::vector<double> central_differences(std::vector<double>& x, Loss&& loss, double h) {
  std::vector<double> gradient(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double kept = x[i];
    x[i] = kept + h;
    const double up = loss();
    x[i] = kept - h;
    const double down = loss();
    x[i] = kept;
    gradient[i] = (up - down) / (2 * h);
  }
  return gradient;
}

// sum_i a[i] * b[i] in double: the loss sum(out * dout) whose gradient a backward computes.
template <class A, class B>
double dot(const std::vector<A>& a, const std::vector<B>& b) {
  double sum = 0;
  for (std::size_t i = 0; i < a.size(); ++i) sum += double(a[i]) * double(b[i]);
  return sum;
}

}  // namespace milmer::reference
