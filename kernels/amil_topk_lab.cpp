// Kernel lab: AMIL scoring and top-K frame selection (include/milmer/kernels/amil.hpp).
//
//   amil_topk_lab --batch 14 --frames 10 --tokens 49 --dim 768 --k 3
//                 [--hidden 128] [--detach 0|1] [--iters N] [--seed S] [--check 0|1]
//
// Defaults: paper size. Runs the library's whole forward (pool, scoring GEMM + tanh/dot,
// softmax + top-K + gated gather) and backward, checks them against fp64 plain loops (kernel
// error <= 4 x the error of the same loops in fp32, plus a tiny absolute term: the rule of
// tests/support.hpp; the selected indices must be equal), prints time per call and GB/s from
// the minimum bytes moved (the op is bandwidth-bound: a few flops per element of X). Exit
// status 1 when the check fails, 2 on bad arguments.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "lab.hpp"
#include "milmer/context.hpp"
#include "milmer/kernels/amil.hpp"
#include "milmer/memory.hpp"

namespace {

struct Options {
  int batch = 14, frames = 10, tokens = 49, dim = 768, k = 3, hidden = 128, detach = 1;
  int iters = MILMER_TARGET_CUDA ? 20 : 1;
  int seed = 1, check = 1;
};

template <class Real>
struct Result {
  std::vector<Real> z, dx, dv, dbv, dw, dbw;
  std::vector<int> topk;
};

// Plain loops: the whole forward and backward (parameter gradients from zero).
template <class Real>
Result<Real> reference(const Options& o, const std::vector<float>& xf, const std::vector<float>& vf,
                       const std::vector<float>& bvf, const std::vector<float>& wf,
                       const std::vector<float>& bwf, const std::vector<float>& dzf) {
  const int F = o.frames, M = o.tokens, D = o.dim, L = o.hidden, K = o.k;
  const std::size_t MD = std::size_t(M) * D;
  const std::vector<Real> x(xf.begin(), xf.end()), V(vf.begin(), vf.end()),
      bv(bvf.begin(), bvf.end()), w(wf.begin(), wf.end()), dz(dzf.begin(), dzf.end());
  Result<Real> r;
  r.z.assign(std::size_t(o.batch) * K * MD, 0);
  r.dx.assign(x.size(), 0);
  r.dv.assign(V.size(), 0);
  r.dbv.assign(L, 0);
  r.dw.assign(L, 0);
  r.dbw.assign(1, 0);
  for (int b = 0; b < o.batch; ++b) {
    std::vector<Real> e(std::size_t(F) * D, 0), h(std::size_t(F) * L), s(F), a(F);
    for (int f = 0; f < F; ++f) {
      const Real* xf0 = &x[(std::size_t(b) * F + f) * MD];
      for (int m = 0; m < M; ++m)
        for (int d = 0; d < D; ++d) e[std::size_t(f) * D + d] += xf0[std::size_t(m) * D + d];
      for (int d = 0; d < D; ++d) e[std::size_t(f) * D + d] /= Real(M);
      s[f] = Real(bwf[0]);
      for (int l = 0; l < L; ++l) {
        Real pre = bv[l];
        for (int d = 0; d < D; ++d) pre += V[std::size_t(l) * D + d] * e[std::size_t(f) * D + d];
        h[std::size_t(f) * L + l] = std::tanh(pre);
        s[f] += w[l] * h[std::size_t(f) * L + l];
      }
    }
    const Real mx = *std::max_element(s.begin(), s.end());
    Real sum = 0;
    for (int f = 0; f < F; ++f) sum += std::exp(s[f] - mx);
    for (int f = 0; f < F; ++f) a[f] = std::exp(s[f] - mx) / sum;
    std::vector<int> order(F);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int i, int j) { return a[i] > a[j]; });
    Real sel = 0;
    for (int j = 0; j < K; ++j) sel += a[order[j]];
    std::vector<Real> g(K), dg(K, 0), da(F, 0);
    for (int j = 0; j < K; ++j) {
      r.topk.push_back(order[j]);
      g[j] = a[order[j]] / (sel / Real(K));
      const std::size_t src = (std::size_t(b) * F + order[j]) * MD;
      const std::size_t dst = (std::size_t(b) * K + j) * MD;
      for (std::size_t i = 0; i < MD; ++i) {
        r.z[dst + i] = g[j] * x[src + i];
        r.dx[src + i] = g[j] * dz[dst + i];
        dg[j] += dz[dst + i] * x[src + i];
      }
    }
    Real c = 0;
    for (int j = 0; j < K; ++j) c += dg[j] * g[j] / Real(K);
    for (int j = 0; j < K; ++j) da[order[j]] = Real(K) / sel * (dg[j] - c);
    Real dot = 0;
    for (int f = 0; f < F; ++f) dot += a[f] * da[f];
    for (int f = 0; f < F; ++f) {
      const Real ds = a[f] * (da[f] - dot);
      r.dbw[0] += ds;
      std::vector<Real> de(D, 0);
      for (int l = 0; l < L; ++l) {
        const Real hv = h[std::size_t(f) * L + l];
        r.dw[l] += ds * hv;
        const Real dpre = ds * w[l] * (1 - hv * hv);
        r.dbv[l] += dpre;
        for (int d = 0; d < D; ++d) {
          r.dv[std::size_t(l) * D + d] += dpre * e[std::size_t(f) * D + d];
          de[d] += dpre * V[std::size_t(l) * D + d];
        }
      }
      if (!o.detach)
        for (int m = 0; m < M; ++m)
          for (int d = 0; d < D; ++d)
            r.dx[(std::size_t(b) * F + f) * MD + std::size_t(m) * D + d] += de[d] / Real(M);
    }
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) try {
  Options o;
  milmer::lab::CommandLine command_line("amil_topk_lab");
  command_line.option("batch", o.batch, "batch B", 1, 1000000)
      .option("frames", o.frames, "frames F per sample", 1, 1000000)
      .option("tokens", o.tokens, "tokens M per frame", 1, 1000000)
      .option("dim", o.dim, "token width D", 1, 1000000)
      .option("k", o.k, "frames K kept per sample", 0, 1000000)
      .option("hidden", o.hidden, "width L of the scoring layer", 1, 1000000)
      .option("detach", o.detach, "1: no gradient through the scores into X", 0, 1)
      .run_options(o.iters, o.seed, o.check);
  command_line.parse(argc, argv);
  const std::int64_t B = o.batch, F = o.frames, M = o.tokens, D = o.dim, L = o.hidden, K = o.k;
  std::mt19937_64 rng(static_cast<std::uint64_t>(o.seed));
  const std::size_t nx = std::size_t(B * F * M * D), nz = std::size_t(B * K * M * D);
  const float v_scale = 1.5f / std::sqrt(float(D));
  const auto x_host = milmer::lab::random_vector(nx, rng, -1, 1),
             dz_host = milmer::lab::random_vector(nz, rng, -1, 1);
  const auto v_host = milmer::lab::random_vector(std::size_t(L * D), rng, -v_scale, v_scale);
  const auto bv_host = milmer::lab::random_vector(std::size_t(L), rng, -0.5f, 0.5f);
  const auto w_host = milmer::lab::random_vector(std::size_t(L), rng, -2, 2);
  const auto bw_host = milmer::lab::random_vector(1, rng, -1, 1);

  milmer::Context ctx;
  using milmer::lab::to_device;
  const auto x = to_device(x_host), dz = to_device(dz_host), V = to_device(v_host),
             bv = to_device(bv_host), w = to_device(w_host), bw = to_device(bw_host);
  milmer::DeviceBuffer<float> z(nz), a(B * F), gates(B * K), s(B * F), h(B * F * L), e(B * F * D),
      dx(nx), dV(L * D), dbv(L), dw(L), ds(B * F), dpre(B * F * L), de(B * F * D);
  milmer::DeviceBuffer<std::int32_t> topk(B * K);
  const auto c = [](const auto& buffer, std::initializer_list<std::int64_t> dims) {
    return milmer::lab::const_view(buffer, dims);
  };
  const auto forward = [&] {
    milmer::amil_forward<float>(ctx, milmer::view(z.data(), {B, K * M, D}),
                                milmer::view(a.data(), {B, F}), milmer::view(topk.data(), {B, K}),
                                milmer::view(gates.data(), {B, K}), milmer::view(s.data(), {B, F}),
                                milmer::view(h.data(), {B, F, L}),
                                milmer::view(e.data(), {B, F, D}), c(x, {B, F, M, D}), c(V, {L, D}),
                                c(bv, {L}), c(w, {1, L}), c(bw, {1}), o.k);
  };
  const auto backward = [&] {
    milmer::amil_backward<float>(
        ctx, milmer::view(dx.data(), {B, F, M, D}), milmer::view(dV.data(), {L, D}),
        milmer::view(dbv.data(), {L}), milmer::view(dw.data(), {1, L}),
        milmer::view(ds.data(), {B, F}), milmer::view(dpre.data(), {B, F, L}),
        o.detach ? milmer::TensorView<float>{} : milmer::view(de.data(), {B, F, D}),
        c(dz, {B, K * M, D}), c(x, {B, F, M, D}), c(e, {B, F, D}), c(h, {B, F, L}),
        milmer::view(static_cast<const std::int32_t*>(topk.data()), {B, K}), c(gates, {B, K}),
        c(V, {L, D}), c(w, {1, L}), o.detach != 0);
  };
  const auto zero_param_grads = [&] {
    for (auto* g : {&dV, &dbv, &dw}) g->zero(ctx.stream());
  };
  forward();
  zero_param_grads();
  backward();
  std::printf(
      "amil_topk (%s): batch %d, frames %d, tokens %d, dim %d, hidden %d, k %d, "
      "scores %s\n",
      milmer::target_name(), o.batch, o.frames, o.tokens, o.dim, o.hidden, o.k,
      o.detach ? "detached" : "attached");

  milmer::lab::Checks checks;
  if (o.check) {
    using milmer::lab::to_host;
    const auto r64 = reference<double>(o, x_host, v_host, bv_host, w_host, bw_host, dz_host);
    const auto r32 = reference<float>(o, x_host, v_host, bv_host, w_host, bw_host, dz_host);
    const auto t = to_host(topk);
    checks.expect("topk", std::equal(t.begin(), t.end(), r64.topk.begin()));
    checks.compare("z", to_host(z), r64.z, r32.z);
    checks.compare("dx", to_host(dx), r64.dx, r32.dx);
    checks.compare("dV", to_host(dV), r64.dv, r32.dv);
    checks.compare("db_V", to_host(dbv), r64.dbv, r32.dbv);
    checks.compare("dw", to_host(dw), r64.dw, r32.dw);
    // b_w has no gradient (the header explains why); the fp64 sum of ds shows it.
    std::printf("  note db_w: exact gradient 0, fp64 reference sum of ds %.3e\n", r64.dbw[0]);
  }

  // Minimum bytes: forward reads X once for the pool and the K selected frames again for the
  // gather (which a cache may serve), writes Z; backward reads dZ and the selected frames of
  // X, writes dX (and with attached scores reads and writes dX again, reads de).
  const double fs = sizeof(float);
  const double forward_bytes = (double(nx) + 2.0 * nz) * fs;
  const double backward_bytes =
      (2.0 * nz + double(nx)) * fs + (o.detach ? 0.0 : (2.0 * nx + B * F * D) * fs);
  using milmer::lab::time_ms;
  milmer::lab::report("forward", time_ms(forward, o.iters, ctx.stream()), forward_bytes);
  milmer::lab::report("backward", time_ms(backward, o.iters, ctx.stream()), backward_bytes);
  return checks.exit_code();
} catch (...) {
  milmer::lab::fail_on_exception();
}
