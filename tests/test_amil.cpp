// AMIL scoring and top-K selection (forward and backward) against plain-loop references in
// double (the truth) and float (the plain fp32 error), with detached and attached scores,
// under every thread order; the top-K primitive against a stable sort, including ties and
// signed zeros; the reference's backward against central finite differences; argument errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "milmer/kernels/amil.hpp"
#include "milmer/reference/amil.hpp"
#include "support.hpp"

namespace amiltest {

// Runs the block top-K primitive on one block (kernels need external linkage).
__global__ void block_topk_kernel(int* top, const float* values, int n, int k) {
  MILMER_SHARED(typename milmer::kernels::AmilTopK::TempStorage, temp, );
  milmer::kernels::AmilTopK::select(temp, values, n, k, top);
}

}  // namespace amiltest

namespace {

namespace refs = milmer::reference;
using Case = refs::AmilSizes;
template <class Real>
using Params = refs::AmilParams<Real>;
using milmer::test::check_close;
using milmer::test::DeviceVector;
using milmer::test::random_vector;

struct Inputs {
  std::vector<float> x, dz;
  Params<float> p;
  std::vector<float> dv0, dbv0, dw0;  // parameter gradients before backward (+=)
};

Inputs make_inputs(const Case& c, std::uint64_t seed) {
  Inputs in;
  const std::size_t n = std::size_t(c.batch) * c.frames * c.tokens * c.dim;
  in.x = random_vector(n, seed, -1, 1);
  in.dz = random_vector(std::size_t(c.batch) * c.k * c.tokens * c.dim, seed + 1);
  const float scale = 1.5f / std::sqrt(float(c.dim));
  in.p.v = random_vector(std::size_t(c.hidden) * c.dim, seed + 2, -scale, scale);
  in.p.bv = random_vector(c.hidden, seed + 3, -0.5f, 0.5f);
  in.p.w = random_vector(c.hidden, seed + 4, -2, 2);
  in.p.bw = random_vector(1, seed + 5);
  in.dv0 = random_vector(in.p.v.size(), seed + 6);
  in.dbv0 = random_vector(c.hidden, seed + 7);
  in.dw0 = random_vector(c.hidden, seed + 8);
  return in;
}

// Forward then backward on the device. Returns {z, a, gates, topk (as float), dx, dV, db_V,
// dw, e, s}.
std::vector<std::vector<float>> run_kernels(const Case& c, const Inputs& in, bool detach) {
  milmer::Context ctx;
  const std::int64_t B = c.batch, F = c.frames, M = c.tokens, D = c.dim, L = c.hidden, K = c.k;
  DeviceVector<float> x(in.x), dz(in.dz), v(in.p.v), bv(in.p.bv), w(in.p.w), bw(in.p.bw);
  DeviceVector<float> dv(in.dv0), dbv(in.dbv0), dw(in.dw0);
  DeviceVector<float> z(in.dz.size()), a(B * F), gates(B * K), s(B * F), h(B * F * L), e(B * F * D),
      dx(in.x.size()), ds(B * F), dpre(B * F * L), de(B * F * D);
  DeviceVector<std::int32_t> topk(B * K);
  auto cv = [](const DeviceVector<float>& d, std::initializer_list<std::int64_t> dims) {
    return milmer::view(d.data(), dims);
  };
  milmer::amil_forward<float>(ctx, milmer::view(z.data(), {B, K * M, D}),
                              milmer::view(a.data(), {B, F}), milmer::view(topk.data(), {B, K}),
                              milmer::view(gates.data(), {B, K}), milmer::view(s.data(), {B, F}),
                              milmer::view(h.data(), {B, F, L}), milmer::view(e.data(), {B, F, D}),
                              cv(x, {B, F, M, D}), cv(v, {L, D}), cv(bv, {L}), cv(w, {1, L}),
                              cv(bw, {1}), c.k);
  const DeviceVector<std::int32_t>& ctopk = topk;
  milmer::amil_backward<float>(
      ctx, milmer::view(dx.data(), {B, F, M, D}), milmer::view(dv.data(), {L, D}),
      milmer::view(dbv.data(), {L}), milmer::view(dw.data(), {1, L}),
      milmer::view(ds.data(), {B, F}), milmer::view(dpre.data(), {B, F, L}),
      detach ? milmer::TensorView<float>{} : milmer::view(de.data(), {B, F, D}),
      cv(dz, {B, K * M, D}), cv(x, {B, F, M, D}), cv(e, {B, F, D}), cv(h, {B, F, L}),
      milmer::view(ctopk.data(), {B, K}), cv(gates, {B, K}), cv(v, {L, D}), cv(w, {1, L}), detach);
  const auto t = topk.to_host();
  return {z.to_host(),  a.to_host(),  gates.to_host(), std::vector<float>(t.begin(), t.end()),
          dx.to_host(), dv.to_host(), dbv.to_host(),   dw.to_host(),
          e.to_host(),  s.to_host()};
}

template <class Real>
std::vector<Real> plus(const std::vector<float>& init, const std::vector<Real>& grad) {
  std::vector<Real> r(grad.size());
  for (std::size_t i = 0; i < r.size(); ++i) r[i] = Real(init[i]) + grad[i];
  return r;
}

void check_case(const Case& c, bool detach) {
  INFO("B ", c.batch, " F ", c.frames, " M ", c.tokens, " D ", c.dim, " L ", c.hidden, " K ", c.k,
       detach ? " detached" : " attached");
  const Inputs in = make_inputs(c, 40 + c.frames * 3 + c.dim);
  const auto got = milmer::test::under_every_schedule([&] { return run_kernels(c, in, detach); });
  const Params<double> p64{refs::as<double>(in.p.v), refs::as<double>(in.p.bv),
                           refs::as<double>(in.p.w), refs::as<double>(in.p.bw)};
  const auto x64 = refs::as<double>(in.x);
  const auto f64 = refs::amil_forward(c, x64, p64);
  const auto f32 = refs::amil_forward(c, in.x, in.p);
  REQUIRE(f64.topk == f32.topk);  // the data keep away from ties
  const auto b64 = refs::amil_backward(c, x64, p64, f64, refs::as<double>(in.dz), detach);
  const auto b32 = refs::amil_backward(c, in.x, in.p, f32, in.dz, detach);
  CHECK(got[3] == std::vector<float>(f64.topk.begin(), f64.topk.end()));
  check_close(got[8], f64.e, f32.e, "e");
  check_close(got[9], f64.s, f32.s, "s");
  check_close(got[1], f64.a, f32.a, "a");
  check_close(got[2], f64.gates, f32.gates, "gates");
  check_close(got[0], f64.z, f32.z, "z");
  check_close(got[4], b64.dx, b32.dx, "dx");
  check_close(got[5], plus(in.dv0, b64.dv), plus(in.dv0, b32.dv), "dV");
  check_close(got[6], plus(in.dbv0, b64.dbv), plus(in.dbv0, b32.dbv), "db_V");
  check_close(got[7], plus(in.dw0, b64.dw), plus(in.dw0, b32.dw), "dw");
  // b_w gets no gradient (a common shift of the scores changes nothing): the kernels leave
  // db_w alone, and the reference's sum of ds is zero up to its own rounding.
  double ds_scale = 0;
  for (double v : b64.ds) ds_scale += std::abs(v);
  CHECK(std::abs(b64.dbw[0]) <= 1e-14 * std::max(ds_scale, 1.0));
}

// Runs amil_select_forward alone on given scores; returns {topk, gates, z}.
std::vector<std::vector<float>> run_select(const std::vector<float>& scores, int frames, int k,
                                           const std::vector<float>& x, int tokens, int dim) {
  milmer::Context ctx;
  const std::int64_t B = std::int64_t(scores.size()) / frames, F = frames, K = k;
  DeviceVector<float> s(scores), dx(x), z(B * K * tokens * dim), a(B * F), gates(B * K);
  DeviceVector<std::int32_t> topk(B * K);
  milmer::amil_select_forward<float>(
      ctx, milmer::view(z.data(), {B, K * tokens, dim}), milmer::view(a.data(), {B, F}),
      milmer::view(topk.data(), {B, K}), milmer::view(gates.data(), {B, K}),
      milmer::view(static_cast<const float*>(s.data()), {B, F}),
      milmer::view(static_cast<const float*>(dx.data()),
                   {B, F, std::int64_t(tokens), std::int64_t(dim)}),
      k);
  const auto t = topk.to_host();
  return {std::vector<float>(t.begin(), t.end()), gates.to_host(), z.to_host()};
}

std::vector<int> topk_on_device(const std::vector<float>& values, int k) {
  DeviceVector<float> v(values);
  DeviceVector<int> top(k);
  milmer::launch(amiltest::block_topk_kernel, dim3(1), dim3(milmer::kernels::kAmilThreads), 0,
                 nullptr, top.data(), static_cast<const float*>(v.data()),
                 static_cast<int>(values.size()), k);
  return top.to_host();
}

}  // namespace

TEST_SUITE("amil") {
  TEST_CASE("forward and backward match the fp64 reference, scores detached or not") {
    for (bool detach : {true, false}) {
      check_case({2, 5, 3, 8, 6, 2}, detach);
      check_case({1, 7, 5, 33, 16, 7}, detach);   // K = F, widths off every tile
      check_case({3, 1, 1, 1, 1, 1}, detach);     // one frame, one token, width 1
      check_case({2, 10, 4, 40, 12, 3}, detach);  // the paper's F and K
    }
  }

  TEST_CASE("top-K keeps the lower frame index first among equal weights") {
    // Scores with exact ties: frames 1, 2, 4 share the largest weight, 0 and 5 the next.
    const std::vector<float> s = {1, 3, 3, 0, 3, 1};
    const int M = 2, D = 3;
    const auto x = random_vector(6 * M * D, 5);
    for (int k : {1, 2, 3, 4, 6}) {
      const auto got =
          milmer::test::under_every_schedule([&] { return run_select(s, 6, k, x, M, D); });
      const std::vector<float> order = {1, 2, 4, 0, 5, 3};
      CHECK(got[0] == std::vector<float>(order.begin(), order.begin() + k));
      if (k <= 3)
        for (float g : got[1]) CHECK(g == 1.0f);  // equal weights: every gate is 1
    }
  }

  TEST_CASE("the block top-K primitive equals a stable descending sort, ties and zeros included") {
    std::vector<float> v = random_vector(512, 77, -3, 3);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = std::round(v[i] * 2) / 2;  // many ties
    v[3] = -0.0f;
    v[9] = 0.0f;
    v[10] = INFINITY;
    v[11] = -INFINITY;
    for (int n : {1, 37, 256, 300, 512}) {
      const std::vector<float> vals(v.begin(), v.begin() + n);
      std::vector<int> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int i, int j) { return vals[i] > vals[j]; });
      for (int k : {1, 5, n}) {
        if (k > n) continue;
        INFO("n ", n, " k ", k);
        const auto got =
            milmer::test::under_every_schedule([&] { return topk_on_device(vals, k); });
        CHECK(got == std::vector<int>(order.begin(), order.begin() + k));
      }
    }
  }

  TEST_CASE("the reference backward matches central finite differences") {
    const Case c{2, 4, 2, 3, 5, 2};
    const Inputs in = make_inputs(c, 3);
    auto x = refs::as<double>(in.x);
    Params<double> p{refs::as<double>(in.p.v), refs::as<double>(in.p.bv), refs::as<double>(in.p.w),
                     refs::as<double>(in.p.bw)};
    const auto dz = refs::as<double>(in.dz);
    const auto fw = refs::amil_forward(c, x, p);
    for (bool detach : {false, true}) {
      const auto r = refs::amil_backward(c, x, p, fw, dz, detach);
      auto loss = [&] {
        const auto f = refs::amil_forward(c, x, p);
        REQUIRE(f.topk == fw.topk);
        double s = 0;
        for (std::size_t i = 0; i < f.z.size(); ++i) s += f.z[i] * dz[i];
        return s;
      };
      INFO((detach ? "detached" : "attached"));
      auto check_grad = [&](std::vector<double>& t, const std::vector<double>& grad,
                            const char* name) {
        milmer::test::check_central_differences(t, loss, grad, 1e-6, 1e-7, name);
      };
      check_grad(p.v, r.dv, "dV");
      check_grad(p.bv, r.dbv, "db_V");
      check_grad(p.w, r.dw, "dw");
      check_grad(p.bw, r.dbw, "db_w");
      // With detached scores dx is the gradient with e held constant, not the full one.
      if (!detach) check_grad(x, r.dx, "dx");
    }
  }

  TEST_CASE("argument errors name the op, the argument and the mismatch") {
    milmer::Context ctx;
    DeviceVector<float> buf(4096);
    DeviceVector<std::int32_t> ibuf(64);
    float* p = buf.data();
    const float* c = p;
    auto select = [&](int k, std::int64_t frames) {
      milmer::amil_select_forward<float>(
          ctx, milmer::view(p, {2, k * 3, 4}), milmer::view(p + 1000, {2, frames}),
          milmer::view(ibuf.data(), {2, k}), milmer::view(p + 1100, {2, k}),
          milmer::view(c + 1200, {2, frames}), milmer::view(c + 2000, {2, frames, 3, 4}), k);
    };
    CHECK(milmer::test::error_message([&] { select(6, 5); }) ==
          "amil_select_forward: argument 'k': expected 1 <= k <= F = 5, got 6");
    CHECK(milmer::test::error_message([&] { select(0, 5); }) ==
          "amil_select_forward: argument 'k': expected 1 <= k <= F = 5, got 0");
    CHECK_THROWS_AS(select(2, 600), milmer::Error);  // more frames than one block sorts
    CHECK_THROWS_WITH_AS(
        milmer::amil_scores_forward(ctx, milmer::view(p, {2, 5}), milmer::view(p + 100, {2, 5, 6}),
                                    milmer::view(c + 200, {2, 5, 4}), milmer::view(c + 300, {6, 5}),
                                    milmer::view(c + 400, {6}), milmer::view(c + 500, {1, 6}),
                                    milmer::view(c + 600, {1})),
        "amil_scores_forward: argument 'V': expected shape (*, 4), got shape (6, 5)",
        milmer::Error);
    CHECK_THROWS_AS(milmer::amil_pool_forward<float>(ctx, milmer::view(p, {2, 5, 3}),
                                                     milmer::view(c + 100, {2, 5, 3, 4})),
                    milmer::Error);
    const std::int32_t* ci = ibuf.data();
    CHECK_THROWS_WITH_AS(
        milmer::amil_backward<float>(
            ctx, milmer::view(p, {1, 2, 1, 1}), milmer::view(p, {1, 1}), milmer::view(p, {1}),
            milmer::view(p, {1, 1}), milmer::view(p, {1, 2}), milmer::view(p, {1, 2, 1}),
            milmer::TensorView<float>{}, milmer::view(c, {1, 1, 1}), milmer::view(c, {1, 2, 1, 1}),
            milmer::view(c, {1, 2, 1}), milmer::view(c, {1, 2, 1}), milmer::view(ci, {1, 1}),
            milmer::view(c, {1, 1}), milmer::view(c, {1, 1}), milmer::view(c, {1, 1}), false),
        "amil_backward: argument 'de': expected a (B, F, D) buffer when scores are not "
        "detached, got an empty view",
        milmer::Error);
  }
}
