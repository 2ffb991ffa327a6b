// Fused post-LN sublayer end (bias + dropout + residual add + LayerNorm), forward and
// backward: against the unfused composition as plain loops (fp64 reference, fp32 error
// baseline) with the same Philox mask, central finite differences with the mask held fixed,
// the library's separate kernels composed, buffer aliasing, every emulator schedule, launch
// counts and argument validation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "milmer/kernels/dropout.hpp"
#include "milmer/kernels/elementwise.hpp"
#include "milmer/kernels/layernorm.hpp"
#include "milmer/kernels/residual_layernorm.hpp"
#include "milmer/reference/dropout.hpp"
#include "milmer/reference/residual_layernorm.hpp"
#include "milmer/rng.hpp"
#include "support.hpp"

namespace {

namespace refs = milmer::reference;
using milmer::test::check_close;
using milmer::test::DeviceVector;
using milmer::test::random_vector;
using Outputs = std::vector<std::vector<float>>;

constexpr float kEps = 1e-5f;

struct Inputs {
  int rows, width;
  float p;
  std::uint64_t seed, offset;
  std::vector<float> x, branch, branch_bias, norm_weight, norm_bias, dy;
  std::size_t size() const { return static_cast<std::size_t>(rows) * width; }
};

Inputs make_inputs(int rows, int width, float p, std::uint64_t seed) {
  const std::size_t n = static_cast<std::size_t>(rows) * width;
  return Inputs{rows,
                width,
                p,
                seed * 7 + 3,
                seed % 5,
                random_vector(n, seed, -2.0f, 2.0f),
                random_vector(n, seed + 1, -2.0f, 2.0f),
                random_vector(width, seed + 2, -0.5f, 0.5f),
                random_vector(width, seed + 3, 0.5f, 1.5f),
                random_vector(width, seed + 4, -0.5f, 0.5f),
                random_vector(n, seed + 5)};
}

// The reference's inputs in scalar type S, with the mask of dropout.hpp's convention.
template <class S>
refs::ResidualLayerNormInputs<S> reference_inputs(const Inputs& in) {
  return {in.rows,
          in.width,
          S(in.p),
          S(kEps),
          refs::dropout_keep_mask(in.size(), in.p, in.seed, in.offset),
          refs::as<S>(in.x),
          refs::as<S>(in.branch),
          refs::as<S>(in.branch_bias),
          refs::as<S>(in.norm_weight),
          refs::as<S>(in.norm_bias)};
}

template <class S>
refs::ResidualLayerNormBackward<S> backward_ref(const Inputs& in, const std::vector<float>& dnw0,
                                                const std::vector<float>& dnb0,
                                                const std::vector<float>& dbb0) {
  return refs::residual_layernorm_backward(reference_inputs<S>(in), refs::as<S>(in.dy),
                                           refs::as<S>(dnw0), refs::as<S>(dnb0), refs::as<S>(dbb0));
}

// ---- the kernels ------------------------------------------------------------------------

template <class T>
milmer::TensorView<const T> cview(const DeviceVector<T>& v, std::initializer_list<std::int64_t> d) {
  return milmer::view(v.data(), d);
}

struct Device {
  explicit Device(const Inputs& in)
      : x(in.x),
        branch(in.branch),
        branch_bias(in.branch_bias),
        norm_weight(in.norm_weight),
        norm_bias(in.norm_bias),
        dy(in.dy),
        out(in.size()),
        sum(in.size()),
        mean(in.rows),
        rstd(in.rows) {}
  DeviceVector<float> x, branch, branch_bias, norm_weight, norm_bias, dy, out, sum, mean, rstd;
};

void forward(milmer::Context& ctx, const Inputs& in, Device& d, float* out, float* sum) {
  const std::int64_t R = in.rows, W = in.width;
  milmer::residual_layernorm_forward<float>(
      ctx, milmer::view(out, {R, W}), milmer::view(sum, {R, W}), milmer::view(d.mean.data(), {R}),
      milmer::view(d.rstd.data(), {R}), cview(d.x, {R, W}), cview(d.branch, {R, W}),
      cview(d.branch_bias, {W}), cview(d.norm_weight, {W}), cview(d.norm_bias, {W}), kEps, in.p,
      in.seed, in.offset);
}

// out, sum, mean, rstd.
Outputs run_forward(const Inputs& in) {
  Device d(in);
  milmer::Context ctx;
  forward(ctx, in, d, d.out.data(), d.sum.data());
  return {d.out.to_host(), d.sum.to_host(), d.mean.to_host(), d.rstd.to_host()};
}

struct Grads {
  std::vector<float> dnw0, dnb0, dbb0;
};

Grads start_grads(int width, std::uint64_t seed) {
  return {random_vector(width, seed), random_vector(width, seed + 1),
          random_vector(width, seed + 2)};
}

// dresidual, dbranch, dnorm_weight, dnorm_bias, dbranch_bias (the forward runs first).
// dresidual and dbranch start as garbage, which backward must overwrite.
Outputs run_backward(const Inputs& in, const Grads& g) {
  const std::int64_t R = in.rows, W = in.width;
  Device d(in);
  DeviceVector<float> dx(random_vector(in.size(), 71, -9.0f, 9.0f)),
      dbranch(random_vector(in.size(), 72, -9.0f, 9.0f)), dnw(g.dnw0), dnb(g.dnb0), dbb(g.dbb0),
      scratch(static_cast<std::size_t>(milmer::residual_layernorm_backward_scratch_elements(R, W)));
  milmer::Context ctx;
  forward(ctx, in, d, d.out.data(), d.sum.data());
  milmer::residual_layernorm_backward<float>(
      ctx, milmer::view(dx.data(), {R, W}), milmer::view(dbranch.data(), {R, W}),
      milmer::view(dnw.data(), {W}), milmer::view(dnb.data(), {W}), milmer::view(dbb.data(), {W}),
      milmer::view(scratch.data(), {static_cast<std::int64_t>(scratch.size())}),
      cview(d.dy, {R, W}), cview(d.sum, {R, W}), cview(d.norm_weight, {W}), cview(d.mean, {R}),
      cview(d.rstd, {R}), in.p, in.seed, in.offset);
  return {dx.to_host(), dbranch.to_host(), dnw.to_host(), dnb.to_host(), dbb.to_host()};
}

void check_forward(const Inputs& in) {
  INFO("rows ", in.rows, " width ", in.width, " p ", in.p);
  const auto got = milmer::test::under_every_schedule([&] { return run_forward(in); });
  const auto r64 = refs::residual_layernorm_forward(reference_inputs<double>(in));
  const auto r32 = refs::residual_layernorm_forward(reference_inputs<float>(in));
  check_close(got[0], r64.out, r32.out, "out");
  check_close(got[1], r64.sum, r32.sum, "sum");
  check_close(got[2], r64.mean, r32.mean, "mean");
  check_close(got[3], r64.rstd, r32.rstd, "rstd");
}

void check_backward(const Inputs& in) {
  INFO("rows ", in.rows, " width ", in.width, " p ", in.p);
  const auto g = start_grads(in.width, 90);
  const auto got = milmer::test::under_every_schedule([&] { return run_backward(in, g); });
  const auto r64 = backward_ref<double>(in, g.dnw0, g.dnb0, g.dbb0);
  const auto r32 = backward_ref<float>(in, g.dnw0, g.dnb0, g.dbb0);
  check_close(got[0], r64.dresidual, r32.dresidual, "dresidual");
  check_close(got[1], r64.dbranch, r32.dbranch, "dbranch");
  check_close(got[2], r64.dnorm_weight, r32.dnorm_weight, "dnorm_weight");
  check_close(got[3], r64.dnorm_bias, r32.dnorm_bias, "dnorm_bias");
  check_close(got[4], r64.dbranch_bias, r32.dbranch_bias, "dbranch_bias");
}

// The same sublayer end through the library's separate kernels: bias_add_forward,
// dropout_forward, add_forward, layernorm_forward; backward layernorm_backward,
// dropout_backward, bias_add_backward. Returns the forward's out, s, mean, rstd and the
// backward's dresidual, dbranch, dnorm_weight, dnorm_bias, dbranch_bias.
Outputs run_composition(const Inputs& in, const Grads& g) {
  const std::int64_t R = in.rows, W = in.width;
  Device d(in);
  DeviceVector<float> pre(in.branch), dx(in.size()), dbranch(in.size()), dnw(g.dnw0), dnb(g.dnb0),
      dbb(g.dbb0),
      ln_scratch(static_cast<std::size_t>(milmer::layernorm_backward_scratch_elements(R, W))),
      bias_scratch(static_cast<std::size_t>(milmer::bias_add_backward_scratch_elements(R, W)));
  milmer::Context ctx;
  milmer::bias_add_forward<float>(ctx, milmer::view(pre.data(), {R, W}), cview(d.branch_bias, {W}));
  milmer::dropout_forward<float>(ctx, milmer::view(pre.data(), {R, W}), cview(pre, {R, W}), in.p,
                                 in.seed, in.offset);
  milmer::add_forward<float>(ctx, milmer::view(d.sum.data(), {R, W}), cview(d.x, {R, W}),
                             cview(pre, {R, W}));
  milmer::layernorm_forward<float>(ctx, milmer::view(d.out.data(), {R, W}),
                                   milmer::view(d.mean.data(), {R}),
                                   milmer::view(d.rstd.data(), {R}), cview(d.sum, {R, W}),
                                   cview(d.norm_weight, {W}), cview(d.norm_bias, {W}), kEps);
  milmer::layernorm_backward<float>(
      ctx, milmer::view(dx.data(), {R, W}), milmer::view(dnw.data(), {W}),
      milmer::view(dnb.data(), {W}),
      milmer::view(ln_scratch.data(), {static_cast<std::int64_t>(ln_scratch.size())}),
      cview(d.dy, {R, W}), cview(d.sum, {R, W}), cview(d.norm_weight, {W}), cview(d.mean, {R}),
      cview(d.rstd, {R}), false);
  milmer::dropout_backward<float>(ctx, milmer::view(dbranch.data(), {R, W}), cview(dx, {R, W}),
                                  in.p, in.seed, in.offset);
  milmer::bias_add_backward<float>(
      ctx, milmer::view(dbb.data(), {W}), cview(dbranch, {R, W}),
      milmer::view(bias_scratch.data(), {static_cast<std::int64_t>(bias_scratch.size())}));
  return {d.out.to_host(),   d.sum.to_host(), d.mean.to_host(), d.rstd.to_host(), dx.to_host(),
          dbranch.to_host(), dnw.to_host(),   dnb.to_host(),    dbb.to_host()};
}

}  // namespace

TEST_SUITE("residual_layernorm") {
  TEST_CASE("forward matches the fp64 composition, with and without dropout") {
    // Edge widths (1, non-multiples of 32), the tiny (17 tokens x 32) and paper (97 x 768)
    // fusion shapes, and widths past the shared-memory limit of backward.
    const int shapes[][2] = {{1, 1},  {1, 3},   {5, 31},   {17, 32},  {3, 96},
                             {7, 33}, {2, 768}, {97, 768}, {2, 3072}, {1, 7000}};
    std::uint64_t seed = 1;
    for (const auto& s : shapes)
      for (float p : {0.0f, 0.2f}) check_forward(make_inputs(s[0], s[1], p, seed++));
  }

  TEST_CASE("forward stays accurate when the sum's mean dwarfs its spread") {
    auto in = make_inputs(4, 384, 0.1f, 40);
    for (auto& v : in.x) v += 300.0f;
    check_forward(in);
  }

  TEST_CASE("backward matches the fp64 composition, with and without dropout") {
    // (200, 5) and (2100, 3) put several rows in each row part; 4001 and 7000 keep the
    // partials in the scratch slice instead of shared memory.
    const int shapes[][2] = {{1, 1},    {1, 3},    {5, 31},   {34, 32}, {3, 96},
                             {7, 33},   {2, 768},  {97, 768}, {200, 5}, {2100, 3},
                             {3, 4000}, {3, 4001}, {2, 7000}, {400, 40}};
    std::uint64_t seed = 100;
    for (const auto& s : shapes)
      for (float p : {0.0f, 0.2f}) check_backward(make_inputs(s[0], s[1], p, seed++));
  }

  TEST_CASE("backward matches central finite differences with the mask held fixed") {
    const int shapes[][2] = {{1, 1}, {2, 3}, {3, 31}, {2, 40}};
    std::uint64_t seed = 200;
    for (const auto& s : shapes)
      for (float p : {0.0f, 0.3f}) {
        const auto in = make_inputs(s[0], s[1], p, seed++);
        INFO("rows ", in.rows, " width ", in.width, " p ", p);
        const std::vector<float> zero(in.width, 0.0f);
        const Grads g{zero, zero, zero};
        const auto got = milmer::test::under_every_schedule([&] { return run_backward(in, g); });
        auto q = reference_inputs<double>(in);
        const auto dy = refs::as<double>(in.dy);
        // loss = sum(out * dy), so its gradient is exactly what backward computes.
        const auto loss = [&] { return refs::dot(refs::residual_layernorm_forward(q).out, dy); };
        const auto central = [&](std::vector<double>& v) {
          return milmer::test::central_differences(v, loss, 1e-5);
        };
        const auto r32 = backward_ref<float>(in, zero, zero, zero);
        check_close(got[0], central(q.x), r32.dresidual, "dresidual vs finite differences");
        check_close(got[1], central(q.branch), r32.dbranch, "dbranch vs finite differences");
        check_close(got[2], central(q.norm_weight), r32.dnorm_weight,
                    "dnorm_weight vs finite differences");
        check_close(got[3], central(q.norm_bias), r32.dnorm_bias,
                    "dnorm_bias vs finite differences");
        check_close(got[4], central(q.branch_bias), r32.dbranch_bias,
                    "dbranch_bias vs finite differences");
      }
  }

  TEST_CASE("fused kernels equal the library's separate kernels composed") {
    // Forward: the same float operations in the same order (the bias add, dropout scale and
    // residual add per element, then layernorm_forward_rows' lane order and butterfly), so
    // out, s, mean and rstd are bit-identical. Backward: dresidual and dbranch are per-row
    // math in layernorm_backward_rows' block shape and order, so bit-identical too; the
    // parameter gradients are summed over other row partitions (the fused kernel's parts and
    // bias_add_backward's), so they agree to the tolerance rule: the fused error against fp64
    // is at most 4x the composition's.
    const int shapes[][2] = {{1, 3}, {17, 32}, {7, 33}, {97, 768}, {300, 40}};
    std::uint64_t seed = 300;
    for (const auto& s : shapes)
      for (float p : {0.0f, 0.2f}) {
        const auto in = make_inputs(s[0], s[1], p, seed++);
        INFO("rows ", in.rows, " width ", in.width, " p ", p);
        const auto g = start_grads(in.width, 95);
        const auto composed = run_composition(in, g);
        const auto fused_forward = run_forward(in);
        const auto fused_backward = run_backward(in, g);
        CHECK(fused_forward[0] == composed[0]);
        CHECK(fused_forward[1] == composed[1]);
        CHECK(fused_forward[2] == composed[2]);
        CHECK(fused_forward[3] == composed[3]);
        CHECK(fused_backward[0] == composed[4]);
        CHECK(fused_backward[1] == composed[5]);
        const auto r64 = backward_ref<double>(in, g.dnw0, g.dnb0, g.dbb0);
        check_close(fused_backward[2], r64.dnorm_weight, composed[6], "dnorm_weight");
        check_close(fused_backward[3], r64.dnorm_bias, composed[7], "dnorm_bias");
        check_close(fused_backward[4], r64.dbranch_bias, composed[8], "dbranch_bias");
      }
  }

  TEST_CASE("in-place use: sum over branch, out over residual, dresidual over dout") {
    const auto in = make_inputs(9, 40, 0.25f, 400);
    const std::int64_t R = in.rows, W = in.width;
    const auto expected_forward = run_forward(in);
    const auto g = start_grads(in.width, 96);
    const auto expected_backward = run_backward(in, g);

    Device d(in);
    DeviceVector<float> dbranch(in.size()), dnw(g.dnw0), dnb(g.dnb0), dbb(g.dbb0),
        scratch(
            static_cast<std::size_t>(milmer::residual_layernorm_backward_scratch_elements(R, W)));
    milmer::Context ctx;
    forward(ctx, in, d, d.x.data(), d.branch.data());
    CHECK(d.x.to_host() == expected_forward[0]);
    CHECK(d.branch.to_host() == expected_forward[1]);
    CHECK(d.mean.to_host() == expected_forward[2]);
    CHECK(d.rstd.to_host() == expected_forward[3]);
    milmer::residual_layernorm_backward<float>(
        ctx, milmer::view(d.dy.data(), {R, W}), milmer::view(dbranch.data(), {R, W}),
        milmer::view(dnw.data(), {W}), milmer::view(dnb.data(), {W}), milmer::view(dbb.data(), {W}),
        milmer::view(scratch.data(), {static_cast<std::int64_t>(scratch.size())}),
        cview(d.dy, {R, W}), cview(d.branch, {R, W}), cview(d.norm_weight, {W}), cview(d.mean, {R}),
        cview(d.rstd, {R}), in.p, in.seed, in.offset);
    CHECK(d.dy.to_host() == expected_backward[0]);
    CHECK(dbranch.to_host() == expected_backward[1]);
    CHECK(dnw.to_host() == expected_backward[2]);
    CHECK(dnb.to_host() == expected_backward[3]);
    CHECK(dbb.to_host() == expected_backward[4]);
  }

  TEST_CASE("one launch forward, two backward; the parameter gradients repeat bit for bit") {
    const auto in = make_inputs(1358, 24, 0.2f, 500);
    const auto g = start_grads(in.width, 97);
#if MILMER_TARGET_HOST
    milmer::emu::reset_counters();
#endif
    const auto first = run_backward(in, g);
#if MILMER_TARGET_HOST
    CHECK(milmer::emu::counters().launches == 3);
#endif
    CHECK(milmer::residual_layernorm_backward_parts(1358, 768) == 151);
    CHECK(milmer::residual_layernorm_backward_parts(8 * 17, 32) == 17);
    CHECK(milmer::residual_layernorm_backward_parts(3, 768) == 1);
#if MILMER_TARGET_HOST
    milmer::emu::set_schedule(milmer::emu::Schedule::random, 999);
#endif
    for (int run = 0; run < 2; ++run) CHECK(run_backward(in, g) == first);
#if MILMER_TARGET_HOST
    milmer::emu::set_schedule(milmer::emu::Schedule::seq, 0);
#endif
  }

  TEST_CASE("the scratch sized for a row capacity serves every smaller row count") {
    // The part count is not monotonic in rows (at width 768, 88 rows take 11 parts and 90
    // take 10), so the scratch rule is the worst case over all counts up to rows.
    CHECK(milmer::residual_layernorm_backward_parts(88, 768) == 11);
    CHECK(milmer::residual_layernorm_backward_parts(90, 768) == 10);
    for (const std::int64_t width : {6, 32, 64, 768, 1000, 3072, 20000}) {
      std::int64_t most_parts = 0, previous = 0;
      for (std::int64_t rows = 1; rows <= 10000; ++rows) {
        most_parts = std::max<std::int64_t>(most_parts,
                                            milmer::residual_layernorm_backward_parts(rows, width));
        const auto scratch = milmer::residual_layernorm_backward_scratch_elements(rows, width);
        INFO("width ", width, " rows ", rows);
        REQUIRE(scratch >= most_parts * 3 * width);
        REQUIRE(scratch >= previous);
        previous = scratch;
      }
    }
  }

  TEST_CASE("launchers reject bad arguments with the op, argument and values") {
    milmer::Context ctx;
    const auto in = make_inputs(4, 6, 0.0f, 600);
    Device d(in);
    DeviceVector<float> dx(24), dbranch(24), dvec(6), scratch(1);
    const auto vout = milmer::view(d.out.data(), {4, 6});
    const auto vsum = milmer::view(d.sum.data(), {4, 6});
    const auto vmean = milmer::view(d.mean.data(), {4});
    const auto vrstd = milmer::view(d.rstd.data(), {4});
    const auto fwd = [&](milmer::TensorView<const float> branch,
                         milmer::TensorView<const float> branch_bias, float eps, float p) {
      milmer::residual_layernorm_forward<float>(ctx, vout, vsum, vmean, vrstd, cview(d.x, {4, 6}),
                                                branch, branch_bias, cview(d.norm_weight, {6}),
                                                cview(d.norm_bias, {6}), eps, p, 1, 0);
    };
    const auto branch = cview(d.branch, {4, 6}), bias = cview(d.branch_bias, {6});
    const std::pair<std::function<void()>, std::string> refused[] = {
        {[&] {
           fwd(cview(d.branch, {6, 4}), bias, kEps, 0.1f);
         },
         "argument 'branch': expected shape (4, 6), got shape (6, 4)"},
        {[&] { fwd(branch, cview(d.branch_bias, {5}), kEps, 0.1f); },
         "argument 'branch_bias': expected shape (6), got shape (5)"},
        {[&] { fwd(branch, bias, kEps, 1.0f); },
         "argument 'p': expected a drop probability in [0, 1), got 1"},
        {[&] { fwd(branch, bias, 0.0f, 0.1f); },
         "argument 'eps': expected a finite value > 0, got 0"},
        {[&] {
           fwd(milmer::view(static_cast<const float*>(nullptr), {4, 6}), bias, kEps, 0.1f);
         },
         "argument 'branch': expected a non-null pointer, got nullptr"},
    };
    for (const auto& [call, message] : refused)
      CHECK(milmer::test::error_message(call) == "residual_layernorm_forward: " + message);

    const auto bwd = [&](milmer::TensorView<float> dres, milmer::TensorView<float> dbr,
                         milmer::TensorView<float> scr, float p) {
      milmer::residual_layernorm_backward<float>(
          ctx, dres, dbr, milmer::view(dvec.data(), {6}), milmer::view(dvec.data(), {6}),
          milmer::view(dvec.data(), {6}), scr, cview(d.dy, {4, 6}), cview(d.sum, {4, 6}),
          cview(d.norm_weight, {6}), cview(d.mean, {4}), cview(d.rstd, {4}), p, 1, 0);
    };
    const auto vdx = milmer::view(dx.data(), {4, 6});
    const auto vdbranch = milmer::view(dbranch.data(), {4, 6});
    CHECK(milmer::residual_layernorm_backward_scratch_elements(4, 6) == 3 * 6);
    CHECK(milmer::test::error_message(
              [&] { bwd(vdx, vdbranch, milmer::view(scratch.data(), {1}), 0.1f); }) ==
          "residual_layernorm_backward: argument 'scratch': expected at least 18 floats, "
          "got 1 floats");
    DeviceVector<float> big_scratch(18);
    const auto vscratch = milmer::view(big_scratch.data(), {18});
    CHECK(milmer::test::error_message([&] { bwd(vdx, vdx, vscratch, 0.1f); }) ==
          "residual_layernorm_backward: argument 'dbranch': expected a buffer apart from "
          "dresidual, got the dresidual buffer");
    CHECK(milmer::test::error_message([&] {
            bwd(milmer::view(dx.data(), {4, 5}), vdbranch, vscratch, 0.1f);
          }) ==
          "residual_layernorm_backward: argument 'dresidual': expected shape (4, 6), got "
          "shape (4, 5)");
    CHECK(milmer::test::error_message([&] { bwd(vdx, vdbranch, vscratch, -0.5f); }) ==
          "residual_layernorm_backward: argument 'p': expected a drop probability in [0, 1), "
          "got -0.5");
  }
}
