// Dropout and drop-path forward and backward: the Philox mask bit for bit on the packed and
// scalar paths, keep-rate statistics, determinism in (seed, offset), backward reusing the
// forward's mask exactly, finite differences, every emulator schedule, argument validation.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "milmer/kernels/dropout.hpp"
#include "milmer/reference/dropout.hpp"
#include "milmer/rng.hpp"
#include "support.hpp"

namespace {

using milmer::test::check_close;
using milmer::test::DeviceVector;
using milmer::test::random_vector;

enum class Kind { dropout, drop_path };

struct Mask {
  float p;
  std::uint64_t seed, offset;
};

// The mask of n elements of a tensor whose samples hold per_sample elements (dropout: the
// mask index is the element, drop-path: the sample).
std::vector<bool> keep_mask(Kind k, const Mask& m, std::size_t n, std::size_t per_sample) {
  return milmer::reference::dropout_keep_mask(n, m.p, m.seed, m.offset,
                                              k == Kind::dropout ? 1 : per_sample);
}

template <class S>
std::vector<S> apply_ref(Kind k, const Mask& m, const std::vector<float>& v,
                         std::size_t per_sample) {
  return milmer::reference::dropout_apply(milmer::test::as<S>(v),
                                          keep_mask(k, m, v.size(), per_sample), S(m.p));
}

struct Run {
  std::vector<float> out, dinp;
  std::string forward_kernel;
  bool operator==(const Run&) const = default;
};

// Forward on x and backward on dy with the same mask; the tensors are (batch, per_sample)
// starting `shift` elements into their allocations (shift 1 misaligns them).
Run run(Kind k, const Mask& m, const std::vector<float>& x, const std::vector<float>& dy,
        std::int64_t batch, int shift) {
  const auto n = static_cast<std::int64_t>(x.size());
  const std::int64_t per_sample = n / batch;
  auto pad = [&](const std::vector<float>& v) {
    std::vector<float> p(v.size() + shift, 0.0f);
    std::copy(v.begin(), v.end(), p.begin() + shift);
    return p;
  };
  DeviceVector<float> d_x(pad(x)), d_dy(pad(dy)), d_out(x.size() + shift), d_dinp(x.size() + shift);
  milmer::Context ctx;
  const auto out = milmer::view(d_out.data() + shift, {batch, per_sample});
  const auto dinp = milmer::view(d_dinp.data() + shift, {batch, per_sample});
  const auto in = milmer::view(static_cast<const float*>(d_x.data()) + shift, {batch, per_sample});
  const auto dout =
      milmer::view(static_cast<const float*>(d_dy.data()) + shift, {batch, per_sample});
  Run r;
  if (k == Kind::dropout) {
    milmer::dropout_forward(ctx, out, in, m.p, m.seed, m.offset);
    r.forward_kernel = milmer::test::last_kernel();
    milmer::dropout_backward(ctx, dinp, dout, m.p, m.seed, m.offset);
  } else {
    milmer::drop_path_forward(ctx, out, in, m.p, m.seed, m.offset);
    r.forward_kernel = milmer::test::last_kernel();
    milmer::drop_path_backward(ctx, dinp, dout, m.p, m.seed, m.offset);
  }
  const auto o = d_out.to_host(), g = d_dinp.to_host();
  r.out.assign(o.begin() + shift, o.end());
  r.dinp.assign(g.begin() + shift, g.end());
  return r;
}

// Inputs with no zeros, so a zero output means a dropped element.
std::vector<float> nonzero_vector(std::size_t n, std::uint64_t seed) {
  auto v = random_vector(n, seed, 0.1f, 2.0f);
  for (std::size_t i = 0; i < n; ++i)
    if (i % 2) v[i] = -v[i];
  return v;
}

void check_against_reference(Kind k, std::int64_t batch, std::int64_t per_sample, int shift,
                             bool packed, const Mask& m) {
  const char* name = k == Kind::dropout ? "dropout" : "drop_path";
  INFO(name, " batch ", batch, " per_sample ", per_sample, " shift ", shift, " p ", m.p);
  const auto n = static_cast<std::size_t>(batch * per_sample);
  const auto x = nonzero_vector(n, 1 + n), dy = nonzero_vector(n, 2 + n);
  const Run r = milmer::test::under_every_schedule([&] { return run(k, m, x, dy, batch, shift); });
  CHECK(milmer::test::ran_kernel(r.forward_kernel, packed ? "_packed" : "_scalar"));
  const auto ps = static_cast<std::size_t>(per_sample);
  // The mask is Philox's bit for bit: the kernel equals the float reference exactly.
  CHECK(r.out == apply_ref<float>(k, m, x, ps));
  CHECK(r.dinp == apply_ref<float>(k, m, dy, ps));
  check_close(r.out, apply_ref<double>(k, m, x, ps), apply_ref<float>(k, m, x, ps), "out");
  check_close(r.dinp, apply_ref<double>(k, m, dy, ps), apply_ref<float>(k, m, dy, ps), "dinp");
}

double kept_fraction(const std::vector<float>& out, std::size_t per_sample) {
  std::size_t kept = 0;
  for (std::size_t i = 0; i < out.size(); i += per_sample) kept += out[i] != 0.0f;
  return double(kept) / double(out.size() / per_sample);
}

}  // namespace

TEST_SUITE("dropout") {
  TEST_CASE("dropout and drop-path apply the Philox mask exactly on both paths") {
    for (float p : {0.1f, 0.5f}) {
      const Mask m{p, 1234, 7};
      check_against_reference(Kind::dropout, 8, 512, 0, true, m);
      check_against_reference(Kind::dropout, 1, 4, 0, true, m);
      check_against_reference(Kind::dropout, 1, 1, 0, false, m);
      check_against_reference(Kind::dropout, 7, 583, 0, false, m);  // n % 4 != 0
      check_against_reference(Kind::dropout, 8, 512, 1, false, m);  // misaligned
      check_against_reference(Kind::drop_path, 64, 48, 0, true, m);
      check_against_reference(Kind::drop_path, 64, 31, 0, false, m);  // per_sample % 4 != 0
      check_against_reference(Kind::drop_path, 64, 48, 1, false, m);
      check_against_reference(Kind::drop_path, 1, 1, 0, false, m);
      check_against_reference(Kind::drop_path, 300, 1, 0, false, m);
    }
  }

  TEST_CASE("the packed and scalar paths draw the same mask") {
    const auto x = nonzero_vector(4096, 3), dy = nonzero_vector(4096, 4);
    const Mask m{0.3f, 99, 5};
    for (Kind k : {Kind::dropout, Kind::drop_path}) {
      const Run packed = run(k, m, x, dy, 32, 0), scalar = run(k, m, x, dy, 32, 1);
      CHECK(milmer::test::different_kernels(packed.forward_kernel, scalar.forward_kernel));
      CHECK(packed.out == scalar.out);
      CHECK(packed.dinp == scalar.dinp);
    }
  }

  TEST_CASE("p = 0 is an exact copy") {
    const auto x = random_vector(1030, 5), dy = random_vector(1030, 6);
    for (Kind k : {Kind::dropout, Kind::drop_path})
      for (int shift : {0, 1}) {
        const Run r = run(k, Mask{0.0f, 1, 2}, x, dy, 10, shift);
        CHECK(r.out == x);
        CHECK(r.dinp == dy);
      }
  }

  TEST_CASE("the kept fraction is 1 - p") {
    for (float p : {0.1f, 0.2f, 0.5f, 0.9f}) {
      INFO("p ", p);
      const Mask m{p, 42, 3};
      // Dropout over 40000 elements and drop-path over 6000 samples: 5 standard deviations.
      const auto x = nonzero_vector(40000, 7);
      const Run d = run(Kind::dropout, m, x, x, 1, 0);
      CHECK(std::abs(kept_fraction(d.out, 1) - (1 - p)) < 5 * std::sqrt(p * (1 - p) / 40000));
      const auto y = nonzero_vector(6000 * 4, 8);
      const Run s = run(Kind::drop_path, m, y, y, 6000, 0);
      CHECK(std::abs(kept_fraction(s.out, 4) - (1 - p)) < 5 * std::sqrt(p * (1 - p) / 6000));
      // Drop-path keeps or drops whole samples.
      for (std::size_t b = 0; b < 6000; ++b) {
        const bool kept = s.out[4 * b] != 0.0f;
        for (std::size_t j = 1; j < 4; ++j) REQUIRE((s.out[4 * b + j] != 0.0f) == kept);
      }
    }
  }

  TEST_CASE("masks are fixed by (seed, offset) and change with either") {
    const auto x = nonzero_vector(8000, 9);
    const float p = 0.5f;
    for (Kind k : {Kind::dropout, Kind::drop_path}) {
      const std::int64_t batch = k == Kind::dropout ? 1 : 2000;
      const Run a = run(k, Mask{p, 11, 100}, x, x, batch, 0);
      CHECK(run(k, Mask{p, 11, 100}, x, x, batch, 0) == a);
      for (const Mask other : {Mask{p, 11, 101}, Mask{p, 12, 100}}) {
        const Run b = run(k, other, x, x, batch, 0);
        // Independent masks with p = 0.5 differ at about half the positions.
        std::size_t differ = 0;
        for (std::size_t i = 0; i < x.size(); ++i) differ += (a.out[i] != 0) != (b.out[i] != 0);
        const double frac = double(differ) / double(x.size());
        CHECK(frac > 0.4);
        CHECK(frac < 0.6);
      }
    }
  }

  TEST_CASE("backward reuses the forward mask exactly") {
    const auto x = nonzero_vector(5000, 13), dy = nonzero_vector(5000, 14);
    const Mask m{0.25f, 77, 21};
    for (Kind k : {Kind::dropout, Kind::drop_path}) {
      const Run r = run(k, m, x, dy, 1000, 0);
      const float scale = 1.0f / (1.0f - m.p);
      for (std::size_t i = 0; i < x.size(); ++i) {
        const bool kept = r.out[i] != 0.0f;
        REQUIRE((r.dinp[i] != 0.0f) == kept);
        if (kept) REQUIRE(r.dinp[i] == dy[i] * scale);
      }
    }
  }

  TEST_CASE("backward matches central finite differences of the fp64 forward") {
    const auto x = nonzero_vector(240, 15), dy = nonzero_vector(240, 16);
    const Mask m{0.4f, 5, 6};
    for (Kind k : {Kind::dropout, Kind::drop_path}) {
      const std::size_t per_sample = 12;
      const Run r = milmer::test::under_every_schedule([&] { return run(k, m, x, dy, 20, 0); });
      // loss = sum(forward(x) * dy) with the mask held fixed, as it is in training.
      const auto keep = keep_mask(k, m, x.size(), per_sample);
      std::vector<double> fd(x.size());
      const double h = 1e-5;
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double xi = x[i];
        const double f_up = keep[i] ? (xi + h) / (1.0 - m.p) : 0.0;
        const double f_down = keep[i] ? (xi - h) / (1.0 - m.p) : 0.0;
        fd[i] = dy[i] * (f_up - f_down) / (2 * h);
      }
      check_close(r.dinp, fd, apply_ref<float>(k, m, dy, per_sample), "dinp vs finite differences");
    }
  }

  TEST_CASE("launchers reject bad probabilities and shapes") {
    milmer::Context ctx;
    DeviceVector<float> a(12), b(12);
    const auto out = milmer::view(a.data(), {3, 4});
    const auto in = milmer::view(static_cast<const float*>(b.data()), {3, 4});
    CHECK(milmer::test::error_message([&] { milmer::dropout_forward(ctx, out, in, 1.0f, 0, 0); }) ==
          "dropout_forward: argument 'p': expected a drop probability in [0, 1), got 1");
    CHECK(milmer::test::error_message(
              [&] { milmer::drop_path_backward(ctx, out, in, -0.1f, 0, 0); }) ==
          "drop_path_backward: argument 'p': expected a drop probability in [0, 1), got -0.1");
    CHECK_THROWS_AS(
        milmer::dropout_backward(ctx, out, in, std::numeric_limits<float>::quiet_NaN(), 0, 0),
        milmer::Error);
    CHECK_THROWS_AS(milmer::drop_path_forward(ctx, out, in, 1.5f, 0, 0), milmer::Error);
    CHECK(milmer::test::error_message([&] {
            milmer::drop_path_forward(ctx, milmer::view(a.data(), {4, 3}), in, 0.1f, 0, 0);
          }) == "drop_path_forward: argument 'inp': expected shape (4, 3), got shape (3, 4)");
    CHECK(milmer::test::error_message([&] {
            milmer::dropout_backward(ctx, milmer::view(static_cast<float*>(nullptr), {3, 4}), in,
                                     0.1f, 0, 0);
          }) == "dropout_backward: argument 'dinp': expected a non-null pointer, got nullptr");
  }
}
