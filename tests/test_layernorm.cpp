// LayerNorm forward and backward against plain-loop references (fp64 reference, fp32 error
// baseline), central finite differences, every emulator schedule, and argument validation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "milmer/kernels/layernorm.hpp"
#include "support.hpp"

namespace {

using milmer::test::check_close;
using milmer::test::DeviceVector;
using milmer::test::random_vector;

template <class S>
std::vector<S> cast(const std::vector<float>& v) {
  return std::vector<S>(v.begin(), v.end());
}

template <class S>
struct ForwardRef {
  std::vector<S> out, mean, rstd;
};

// The obvious loops: two passes per row, biased variance.
template <class S>
ForwardRef<S> forward_ref(int rows, int width, const std::vector<S>& x, const std::vector<S>& w,
                          const std::vector<S>& b, S eps) {
  ForwardRef<S> r{std::vector<S>(x.size()), std::vector<S>(rows), std::vector<S>(rows)};
  for (int i = 0; i < rows; ++i) {
    const S* xr = &x[static_cast<std::size_t>(i) * width];
    S sum = 0;
    for (int c = 0; c < width; ++c) sum += xr[c];
    const S m = sum / width;
    S sq = 0;
    for (int c = 0; c < width; ++c) sq += (xr[c] - m) * (xr[c] - m);
    const S s = S(1) / std::sqrt(sq / width + eps);
    for (int c = 0; c < width; ++c)
      r.out[static_cast<std::size_t>(i) * width + c] = (xr[c] - m) * s * w[c] + b[c];
    r.mean[i] = m;
    r.rstd[i] = s;
  }
  return r;
}

template <class S>
struct BackwardRef {
  std::vector<S> dinp, dweight, dbias;
};

// Backward from the statistics recomputed in S; dinp / dweight / dbias start from the given
// values (the kernel's += semantics), dinp only when accumulating.
template <class S>
BackwardRef<S> backward_ref(int rows, int width, const std::vector<S>& dy, const std::vector<S>& x,
                            const std::vector<S>& w, S eps, const std::vector<S>& dinp0,
                            const std::vector<S>& dw0, const std::vector<S>& db0, bool accumulate) {
  const auto f = forward_ref<S>(rows, width, x, w, std::vector<S>(width, S(0)), eps);
  BackwardRef<S> r{accumulate ? dinp0 : std::vector<S>(x.size(), S(0)), dw0, db0};
  for (int i = 0; i < rows; ++i) {
    const std::size_t base = static_cast<std::size_t>(i) * width;
    S sum_g = 0, sum_gx = 0;
    for (int c = 0; c < width; ++c) {
      const S xhat = (x[base + c] - f.mean[i]) * f.rstd[i];
      const S g = dy[base + c] * w[c];
      sum_g += g;
      sum_gx += g * xhat;
      r.dweight[c] += dy[base + c] * xhat;
      r.dbias[c] += dy[base + c];
    }
    for (int c = 0; c < width; ++c) {
      const S xhat = (x[base + c] - f.mean[i]) * f.rstd[i];
      const S g = dy[base + c] * w[c];
      r.dinp[base + c] += f.rstd[i] * (g - sum_g / width - xhat * sum_gx / width);
    }
  }
  return r;
}

struct Inputs {
  int rows, width;
  std::vector<float> x, w, b, dy;
};

Inputs make_inputs(int rows, int width, std::uint64_t seed, float x_offset = 0.0f) {
  const std::size_t n = static_cast<std::size_t>(rows) * width;
  Inputs in{rows,
            width,
            random_vector(n, seed, -2.0f, 2.0f),
            random_vector(width, seed + 1, 0.5f, 1.5f),
            random_vector(width, seed + 2, -0.5f, 0.5f),
            random_vector(n, seed + 3)};
  for (auto& v : in.x) v += x_offset;
  return in;
}

constexpr float kEps = 1e-5f;

// out, mean, rstd from the kernel.
std::vector<std::vector<float>> run_forward(const Inputs& in) {
  const std::int64_t R = in.rows, W = in.width;
  DeviceVector<float> x(in.x), w(in.w), b(in.b), out(in.x.size()), mean(in.rows), rstd(in.rows);
  milmer::Context ctx;
  milmer::layernorm_forward(ctx, milmer::view(out.data(), {R, W}), milmer::view(mean.data(), {R}),
                            milmer::view(rstd.data(), {R}),
                            milmer::view(static_cast<const float*>(x.data()), {R, W}),
                            milmer::view(static_cast<const float*>(w.data()), {W}),
                            milmer::view(static_cast<const float*>(b.data()), {W}), kEps);
  return {out.to_host(), mean.to_host(), rstd.to_host()};
}

// dinp, dweight, dbias from the kernel (forward run first for mean and rstd).
std::vector<std::vector<float>> run_backward(const Inputs& in, const std::vector<float>& dinp0,
                                             const std::vector<float>& dw0,
                                             const std::vector<float>& db0, bool accumulate,
                                             std::int64_t scratch_rows = 0) {
  const std::int64_t R = in.rows, W = in.width;
  DeviceVector<float> x(in.x), w(in.w), b(in.b), dy(in.dy), out(in.x.size()), mean(in.rows),
      rstd(in.rows), dinp(dinp0), dw(dw0), db(db0),
      scratch(static_cast<std::size_t>(
          milmer::layernorm_backward_scratch_elements(std::max(R, scratch_rows), W)));
  milmer::Context ctx;
  const auto cx = milmer::view(static_cast<const float*>(x.data()), {R, W});
  const auto cw = milmer::view(static_cast<const float*>(w.data()), {W});
  milmer::layernorm_forward(ctx, milmer::view(out.data(), {R, W}), milmer::view(mean.data(), {R}),
                            milmer::view(rstd.data(), {R}), cx, cw,
                            milmer::view(static_cast<const float*>(b.data()), {W}), kEps);
  milmer::layernorm_backward(
      ctx, milmer::view(dinp.data(), {R, W}), milmer::view(dw.data(), {W}),
      milmer::view(db.data(), {W}),
      milmer::view(scratch.data(), {static_cast<std::int64_t>(scratch.size())}),
      milmer::view(static_cast<const float*>(dy.data()), {R, W}), cx, cw,
      milmer::view(static_cast<const float*>(mean.data()), {R}),
      milmer::view(static_cast<const float*>(rstd.data()), {R}), accumulate);
  return {dinp.to_host(), dw.to_host(), db.to_host()};
}

void check_forward(const Inputs& in) {
  INFO("rows ", in.rows, " width ", in.width);
  const auto got = milmer::test::under_every_schedule([&] { return run_forward(in); });
  const auto r64 = forward_ref<double>(in.rows, in.width, cast<double>(in.x), cast<double>(in.w),
                                       cast<double>(in.b), double(kEps));
  const auto r32 = forward_ref<float>(in.rows, in.width, in.x, in.w, in.b, kEps);
  check_close(got[0], r64.out, r32.out, "out");
  check_close(got[1], r64.mean, r32.mean, "mean");
  check_close(got[2], r64.rstd, r32.rstd, "rstd");
}

void check_backward(const Inputs& in, bool accumulate) {
  INFO("rows ", in.rows, " width ", in.width, " accumulate ", accumulate);
  const std::size_t n = in.x.size();
  const auto dinp0 = random_vector(n, 91), dw0 = random_vector(in.width, 92),
             db0 = random_vector(in.width, 93);
  const auto got = milmer::test::under_every_schedule(
      [&] { return run_backward(in, dinp0, dw0, db0, accumulate); });
  const auto r64 = backward_ref<double>(in.rows, in.width, cast<double>(in.dy), cast<double>(in.x),
                                        cast<double>(in.w), double(kEps), cast<double>(dinp0),
                                        cast<double>(dw0), cast<double>(db0), accumulate);
  const auto r32 =
      backward_ref<float>(in.rows, in.width, in.dy, in.x, in.w, kEps, dinp0, dw0, db0, accumulate);
  check_close(got[0], r64.dinp, r32.dinp, "dinp");
  check_close(got[1], r64.dweight, r32.dweight, "dweight");
  check_close(got[2], r64.dbias, r32.dbias, "dbias");
}

}  // namespace

TEST_SUITE("layernorm") {
  TEST_CASE("forward matches the fp64 reference on edge and model widths") {
    const int shapes[][2] = {{1, 1},   {1, 3},   {5, 31},   {4, 32},   {3, 96}, {7, 33},
                             {2, 384}, {2, 768}, {3, 1536}, {2, 3072}, {20, 5}, {1, 7000}};
    std::uint64_t seed = 1;
    for (const auto& s : shapes) check_forward(make_inputs(s[0], s[1], seed++));
  }

  TEST_CASE("forward stays accurate when the mean dwarfs the spread (two passes)") {
    check_forward(make_inputs(4, 384, 17, 300.0f));
  }

  TEST_CASE("backward matches the fp64 reference, written and accumulated") {
    // (1100, 3) and (2100, 5) give several rows per row part; 7000 exceeds the shared-memory
    // partials and accumulates in the scratch slice instead.
    const int shapes[][2] = {{1, 1},    {1, 3},    {5, 31},    {4, 32},   {3, 96},
                             {7, 33},   {2, 768},  {2, 3072},  {1100, 3}, {2100, 5},
                             {3, 7000}, {400, 40}, {2100, 100}};
    std::uint64_t seed = 100;
    for (const auto& s : shapes) {
      const auto in = make_inputs(s[0], s[1], seed++);
      check_backward(in, false);
      check_backward(in, true);
    }
  }

  TEST_CASE("backward matches central finite differences of the fp64 forward") {
    const int shapes[][2] = {{1, 1}, {2, 3}, {3, 31}, {2, 40}};
    std::uint64_t seed = 200;
    for (const auto& s : shapes) {
      const auto in = make_inputs(s[0], s[1], seed++);
      const int rows = in.rows, width = in.width;
      INFO("rows ", rows, " width ", width);
      const std::vector<float> zero_x(in.x.size(), 0.0f), zero_w(width, 0.0f);
      const auto got = milmer::test::under_every_schedule(
          [&] { return run_backward(in, zero_x, zero_w, zero_w, false); });
      auto x = cast<double>(in.x), w = cast<double>(in.w), b = cast<double>(in.b);
      const auto dy = cast<double>(in.dy);
      // loss = sum(out * dy), so its gradient is exactly what backward computes.
      const auto loss = [&] {
        const auto f = forward_ref<double>(rows, width, x, w, b, double(kEps));
        double l = 0;
        for (std::size_t i = 0; i < f.out.size(); ++i) l += f.out[i] * dy[i];
        return l;
      };
      const auto central = [&](std::vector<double>& v) {
        std::vector<double> g(v.size());
        for (std::size_t i = 0; i < v.size(); ++i) {
          const double keep = v[i], h = 1e-5;
          v[i] = keep + h;
          const double up = loss();
          v[i] = keep - h;
          const double down = loss();
          v[i] = keep;
          g[i] = (up - down) / (2 * h);
        }
        return g;
      };
      const auto fd_x = central(x), fd_w = central(w), fd_b = central(b);
      const auto r32 =
          backward_ref<float>(rows, width, in.dy, in.x, in.w, kEps, zero_x, zero_w, zero_w, false);
      check_close(got[0], fd_x, r32.dinp, "dinp vs finite differences");
      check_close(got[1], fd_w, r32.dweight, "dweight vs finite differences");
      check_close(got[2], fd_b, r32.dbias, "dbias vs finite differences");
    }
  }

  TEST_CASE("dweight and dbias are bit-identical on every run") {
    const auto in = make_inputs(1500, 12, 300);
    const std::vector<float> z(in.x.size(), 0.0f), zw(in.width, 0.0f);
    const auto first = run_backward(in, z, zw, zw, false);
    milmer::emu::set_schedule(milmer::emu::Schedule::random, 999);
    for (int run = 0; run < 3; ++run) CHECK(run_backward(in, z, zw, zw, false) == first);
    milmer::emu::set_schedule(milmer::emu::Schedule::seq, 0);
  }

  TEST_CASE("the scratch sized for a row capacity serves every smaller row count") {
    // The part count is not monotonic in rows (at width 64, 1792 rows take 896 parts, 1024
    // rows take 1024), so the scratch rule is the worst case over all counts up to rows.
    for (const std::int64_t width : {3, 16, 64, 96, 768, 1000, 3072, 20000}) {
      std::int64_t most_parts = 0, previous = 0;
      for (std::int64_t rows = 1; rows <= 5000; ++rows) {
        most_parts =
            std::max<std::int64_t>(most_parts, milmer::layernorm_backward_parts(rows, width));
        const auto scratch = milmer::layernorm_backward_scratch_elements(rows, width);
        INFO("width ", width, " rows ", rows);
        REQUIRE(scratch >= most_parts * 2 * width);
        REQUIRE(scratch >= previous);
        previous = scratch;
      }
    }
    // A Swin patch-merging LayerNorm of the tiny model at capacity 14 (28 images, 1792 rows)
    // run on a batch of 8 (1024 rows): the scratch of the capacity is enough, and the
    // gradients are those of a scratch sized for 1024 rows, bit for bit.
    const auto in = make_inputs(1024, 64, 301);
    const std::vector<float> z(in.x.size(), 0.0f), zw(in.width, 0.0f);
    CHECK(run_backward(in, z, zw, zw, false, 1792) == run_backward(in, z, zw, zw, false));
  }

  TEST_CASE("launchers reject bad arguments with the op, argument and values") {
    milmer::Context ctx;
    DeviceVector<float> x(24), out(24), mean(4), rstd(4), w(6), b(6), scratch(1);
    const auto cx = milmer::view(static_cast<const float*>(x.data()), {4, 6});
    const auto cw = milmer::view(static_cast<const float*>(w.data()), {6});
    const auto cb = milmer::view(static_cast<const float*>(b.data()), {6});
    const auto vout = milmer::view(out.data(), {4, 6});
    const auto vmean = milmer::view(mean.data(), {4});
    const auto vrstd = milmer::view(rstd.data(), {4});
    CHECK(milmer::test::error_message([&] {
            milmer::layernorm_forward(ctx, vout, vmean, vrstd, cx,
                                      milmer::view(static_cast<const float*>(w.data()), {5}), cb,
                                      kEps);
          }) == "layernorm_forward: argument 'weight': expected shape (6), got shape (5)");
    CHECK(milmer::test::error_message([&] {
            milmer::layernorm_forward(ctx, vout, vmean, vrstd, cx, cw, cb, 0.0f);
          }) == "layernorm_forward: argument 'eps': expected a finite value > 0, got 0");
    CHECK(milmer::test::error_message([&] {
            milmer::layernorm_forward(ctx, vout, milmer::view(mean.data(), {3}), vrstd, cx, cw, cb,
                                      kEps);
          }) == "layernorm_forward: argument 'mean': expected shape (4), got shape (3)");
    CHECK(milmer::test::error_message([&] {
            milmer::layernorm_forward(ctx, vout, vmean, vrstd,
                                      milmer::view(static_cast<const float*>(nullptr), {4, 6}), cw,
                                      cb, kEps);
          }) == "layernorm_forward: argument 'inp': expected a non-null pointer, got nullptr");
    const auto need = milmer::layernorm_backward_scratch_elements(4, 6);
    CHECK(need == 4 * 2 * 6);
    CHECK(milmer::test::error_message([&] {
            milmer::layernorm_backward(
                ctx, vout, milmer::view(w.data(), {6}), milmer::view(b.data(), {6}),
                milmer::view(scratch.data(), {1}), cx, cx, cw,
                milmer::view(static_cast<const float*>(mean.data()), {4}),
                milmer::view(static_cast<const float*>(rstd.data()), {4}), false);
          }) ==
          "layernorm_backward: argument 'scratch': expected at least 48 floats, got 1 floats");
    CHECK(milmer::test::error_message([&] {
            milmer::layernorm_backward(ctx, vout, milmer::view(w.data(), {6}),
                                       milmer::view(b.data(), {6}),
                                       milmer::view(scratch.data(), {1}),
                                       milmer::view(static_cast<const float*>(x.data()), {6, 4}),
                                       cx, cw, vmean, vrstd, false);
          }) == "layernorm_backward: argument 'dout': expected shape (4, 6), got shape (6, 4)");
  }
}
