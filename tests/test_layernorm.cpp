// LayerNorm forward and backward against plain-loop references (fp64 reference, fp32 error
// baseline), central finite differences, every emulator schedule, and argument validation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "milmer/kernels/layernorm.hpp"
#include "milmer/reference/layernorm.hpp"
#include "support.hpp"

namespace {

namespace refs = milmer::reference;
using milmer::test::check_close;
using milmer::test::DeviceVector;
using milmer::test::random_vector;

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
  const auto r64 =
      refs::layernorm_forward<double>(in.rows, in.width, refs::as<double>(in.x),
                                      refs::as<double>(in.w), refs::as<double>(in.b), double(kEps));
  const auto r32 = refs::layernorm_forward<float>(in.rows, in.width, in.x, in.w, in.b, kEps);
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
  const auto r64 = refs::layernorm_backward<double>(
      in.rows, in.width, refs::as<double>(in.dy), refs::as<double>(in.x), refs::as<double>(in.w),
      double(kEps), refs::as<double>(dinp0), refs::as<double>(dw0), refs::as<double>(db0),
      accumulate);
  const auto r32 = refs::layernorm_backward<float>(in.rows, in.width, in.dy, in.x, in.w, kEps,
                                                   dinp0, dw0, db0, accumulate);
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
      auto x = refs::as<double>(in.x), w = refs::as<double>(in.w), b = refs::as<double>(in.b);
      const auto dy = refs::as<double>(in.dy);
      // loss = sum(out * dy), so its gradient is exactly what backward computes.
      const auto loss = [&] {
        return refs::dot(refs::layernorm_forward<double>(rows, width, x, w, b, double(kEps)).out,
                         dy);
      };
      const auto central = [&](std::vector<double>& v) {
        return milmer::test::central_differences(v, loss, 1e-5);
      };
      const auto fd_x = central(x), fd_w = central(w), fd_b = central(b);
      const auto r32 = refs::layernorm_backward<float>(rows, width, in.dy, in.x, in.w, kEps, zero_x,
                                                       zero_w, zero_w, false);
      check_close(got[0], fd_x, r32.dinp, "dinp vs finite differences");
      check_close(got[1], fd_w, r32.dweight, "dweight vs finite differences");
      check_close(got[2], fd_b, r32.dbias, "dbias vs finite differences");
    }
  }

  TEST_CASE("dweight and dbias are bit-identical on every run") {
    const auto in = make_inputs(1500, 12, 300);
    const std::vector<float> z(in.x.size(), 0.0f), zw(in.width, 0.0f);
    const auto first = run_backward(in, z, zw, zw, false);
#if MILMER_TARGET_HOST
    milmer::emu::set_schedule(milmer::emu::Schedule::random, 999);
#endif
    for (int run = 0; run < 3; ++run) CHECK(run_backward(in, z, zw, zw, false) == first);
#if MILMER_TARGET_HOST
    milmer::emu::set_schedule(milmer::emu::Schedule::seq, 0);
#endif
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
