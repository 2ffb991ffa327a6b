// Bias add (forward, deterministic backward) and residual add / add_inplace: packed and scalar
// paths against plain-loop references, central finite differences, every emulator schedule,
// and argument validation.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "milmer/kernels/elementwise.hpp"
#include "milmer/reference/elementwise.hpp"
#include "support.hpp"

namespace {

namespace refs = milmer::reference;
using milmer::test::check_close;
using milmer::test::DeviceVector;
using milmer::test::random_vector;

// The references in S for float inputs.
template <class S>
std::vector<S> bias_add_ref(int rows, int cols, const std::vector<float>& out0,
                            const std::vector<float>& bias) {
  return refs::bias_add(rows, cols, refs::as<S>(out0), refs::as<S>(bias));
}

template <class S>
std::vector<S> bias_backward_ref(int rows, int cols, const std::vector<float>& dout,
                                 const std::vector<float>& dbias0) {
  return refs::bias_add_backward(rows, cols, refs::as<S>(dout), refs::as<S>(dbias0));
}

template <class S>
std::vector<S> add_ref(const std::vector<float>& a, const std::vector<float>& b) {
  return refs::add(refs::as<S>(a), refs::as<S>(b));
}

// A device copy of v starting `shift` elements into its allocation (shift 1 misaligns it).
struct Shifted {
  DeviceVector<float> buf;
  int shift;
  Shifted(const std::vector<float>& v, int s) : buf(pad(v, s)), shift(s) {}
  float* data() { return buf.data() + shift; }
  std::vector<float> to_host() const {
    const auto h = buf.to_host();
    return std::vector<float>(h.begin() + shift, h.end());
  }
  static std::vector<float> pad(const std::vector<float>& v, int s) {
    std::vector<float> p(v.size() + s, 0.0f);
    std::copy(v.begin(), v.end(), p.begin() + s);
    return p;
  }
};

struct Result {
  std::vector<float> values;
  std::string kernel;
  bool operator==(const Result&) const = default;
};

Result run_bias_add(int rows, int cols, const std::vector<float>& out0,
                    const std::vector<float>& bias, int shift) {
  Shifted out(out0, shift), b(bias, shift);
  milmer::Context ctx;
  milmer::bias_add_forward(ctx, milmer::view(out.data(), {rows, cols}),
                           milmer::view(static_cast<const float*>(b.data()), {cols}));
  return {out.to_host(), milmer::test::last_kernel()};
}

std::vector<float> run_bias_backward(int rows, int cols, const std::vector<float>& dout,
                                     const std::vector<float>& dbias0) {
  DeviceVector<float> d_dout(dout), d_dbias(dbias0),
      scratch(static_cast<std::size_t>(milmer::bias_add_backward_scratch_elements(rows, cols)));
  milmer::Context ctx;
  milmer::bias_add_backward(
      ctx, milmer::view(d_dbias.data(), {cols}),
      milmer::view(static_cast<const float*>(d_dout.data()), {rows, cols}),
      milmer::view(scratch.data(), {static_cast<std::int64_t>(scratch.size())}));
  return d_dbias.to_host();
}

// out = a + b, or (in_place) a += b through add_inplace.
Result run_add(const std::vector<float>& a, const std::vector<float>& b, int shift, bool in_place) {
  const auto n = static_cast<std::int64_t>(a.size());
  Shifted da(a, shift), db(b, shift), dout(std::vector<float>(a.size(), 0.0f), shift);
  milmer::Context ctx;
  const auto cb = milmer::view(static_cast<const float*>(db.data()), {n});
  if (in_place) {
    milmer::add_inplace(ctx, milmer::view(da.data(), {n}), cb);
    return {da.to_host(), milmer::test::last_kernel()};
  }
  milmer::add_forward(ctx, milmer::view(dout.data(), {n}),
                      milmer::view(static_cast<const float*>(da.data()), {n}), cb);
  return {dout.to_host(), milmer::test::last_kernel()};
}

}  // namespace

TEST_SUITE("elementwise") {
  TEST_CASE("bias_add_forward matches the reference on the packed and the scalar path") {
    struct Case {
      int rows, cols, shift;
      bool packed;
    };
    const Case cases[] = {{1, 1, 0, false},   {5, 31, 0, false}, {7, 96, 0, true},  {3, 4, 0, true},
                          {70, 33, 0, false}, {6, 96, 1, false}, {2, 3072, 0, true}};
    std::uint64_t seed = 1;
    for (const auto& c : cases) {
      INFO("rows ", c.rows, " cols ", c.cols, " shift ", c.shift);
      const auto out0 = random_vector(static_cast<std::size_t>(c.rows) * c.cols, seed++);
      const auto bias = random_vector(c.cols, seed++);
      const Result r = milmer::test::under_every_schedule(
          [&] { return run_bias_add(c.rows, c.cols, out0, bias, c.shift); });
      CHECK(milmer::test::ran_kernel(
          r.kernel, c.packed ? "bias_add_forward_packed" : "bias_add_forward_scalar"));
      check_close(r.values, bias_add_ref<double>(c.rows, c.cols, out0, bias),
                  bias_add_ref<float>(c.rows, c.cols, out0, bias), "out");
    }
  }

  TEST_CASE("bias_add_backward accumulates deterministic column sums") {
    // 1000 and 5000 rows split into several row parts (31 and 128).
    const int shapes[][2] = {{1, 1}, {37, 31}, {1000, 96}, {5000, 5}, {64, 3}, {3, 3072}};
    std::uint64_t seed = 50;
    for (const auto& s : shapes) {
      const int rows = s[0], cols = s[1];
      INFO("rows ", rows, " cols ", cols);
      const auto dout = random_vector(static_cast<std::size_t>(rows) * cols, seed++);
      const auto dbias0 = random_vector(cols, seed++);
      const auto got = milmer::test::under_every_schedule(
          [&] { return run_bias_backward(rows, cols, dout, dbias0); });
      check_close(got, bias_backward_ref<double>(rows, cols, dout, dbias0),
                  bias_backward_ref<float>(rows, cols, dout, dbias0), "dbias");
      for (int run = 0; run < 2; ++run) CHECK(run_bias_backward(rows, cols, dout, dbias0) == got);
    }
  }

  TEST_CASE("bias_add_backward matches central finite differences of the fp64 forward") {
    const int rows = 9, cols = 13;
    const auto out0 = random_vector(rows * cols, 70), dout = random_vector(rows * cols, 71);
    auto bias = random_vector(cols, 72);
    const std::vector<float> zero(cols, 0.0f);
    const auto got = run_bias_backward(rows, cols, dout, zero);
    std::vector<double> fd(cols);
    const double h = 1e-5;
    for (int c = 0; c < cols; ++c) {
      // loss = sum((out0 + bias) * dout); bias moved by +-h in double.
      double up = 0, down = 0;
      for (int r = 0; r < rows; ++r)
        for (int k = 0; k < cols; ++k) {
          const std::size_t i = static_cast<std::size_t>(r) * cols + k;
          const double base = double(out0[i]) + bias[k];
          up += (base + (k == c ? h : 0.0)) * dout[i];
          down += (base - (k == c ? h : 0.0)) * dout[i];
        }
      fd[c] = (up - down) / (2 * h);
    }
    check_close(got, fd, bias_backward_ref<float>(rows, cols, dout, zero),
                "dbias vs finite differences");
  }

  TEST_CASE("add_forward and add_inplace match the reference on both paths") {
    struct Case {
      std::size_t n;
      int shift;
      bool packed;
    };
    const Case cases[] = {
        {1, 0, false}, {4, 0, true}, {1000, 0, true}, {1001, 0, false}, {1000, 1, false}};
    std::uint64_t seed = 80;
    for (const auto& c : cases) {
      const auto a = random_vector(c.n, seed++), b = random_vector(c.n, seed++);
      for (bool in_place : {false, true}) {
        INFO("n ", c.n, " shift ", c.shift, " in place ", in_place);
        const Result r =
            milmer::test::under_every_schedule([&] { return run_add(a, b, c.shift, in_place); });
        CHECK(milmer::test::ran_kernel(r.kernel, c.packed ? "add_packed" : "add_scalar"));
        check_close(r.values, add_ref<double>(a, b), add_ref<float>(a, b), "sum");
      }
    }
  }

  TEST_CASE("add_forward may write into one of its inputs") {
    const auto a = random_vector(64, 90), b = random_vector(64, 91);
    DeviceVector<float> da(a), db(b);
    milmer::Context ctx;
    milmer::add_forward(ctx, milmer::view(da.data(), {8, 8}),
                        milmer::view(static_cast<const float*>(da.data()), {8, 8}),
                        milmer::view(static_cast<const float*>(db.data()), {8, 8}));
    CHECK(da.to_host() == add_ref<float>(a, b));
  }

  TEST_CASE("launchers reject bad arguments with the op, argument and values") {
    milmer::Context ctx;
    DeviceVector<float> x(40), bias(8), scratch(1);
    const auto cx = milmer::view(static_cast<const float*>(x.data()), {5, 8});
    CHECK(milmer::test::error_message([&] {
            milmer::bias_add_forward(ctx, milmer::view(x.data(), {5, 8}),
                                     milmer::view(static_cast<const float*>(bias.data()), {7}));
          }) == "bias_add_forward: argument 'bias': expected shape (8), got shape (7)");
    CHECK(milmer::test::error_message([&] {
            milmer::bias_add_backward(ctx, milmer::view(bias.data(), {8}), cx,
                                      milmer::view(scratch.data(), {1}));
          }) == "bias_add_backward: argument 'scratch': expected at least 8 floats, got 1 floats");
    CHECK(milmer::test::error_message([&] {
            milmer::add_forward(ctx, milmer::view(x.data(), {40}), cx,
                                milmer::view(static_cast<const float*>(x.data()), {40}));
          }) == "add_forward: argument 'a': expected shape (40), got shape (5, 8)");
    CHECK(milmer::test::error_message([&] {
            milmer::add_inplace(ctx, milmer::view(x.data(), {5, 8}),
                                milmer::view(static_cast<const float*>(nullptr), {5, 8}));
          }) == "add_inplace: argument 'src': expected a non-null pointer, got nullptr");
  }
}
