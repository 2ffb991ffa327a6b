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
#include "milmer/reference/amil.hpp"

namespace {

struct Options {
  int batch = 14, frames = 10, tokens = 49, dim = 768, k = 3, hidden = 128, detach = 1;
  milmer::lab::RunOptions run{MILMER_TARGET_CUDA ? 20 : 1};
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  milmer::lab::CommandLine command_line("amil_topk_lab");
  command_line
      .sizes({{"batch", o.batch, "batch B"},
              {"frames", o.frames, "frames F per sample"},
              {"tokens", o.tokens, "tokens M per frame"},
              {"dim", o.dim, "token width D"},
              {"k", o.k, "frames K kept per sample", 0},
              {"hidden", o.hidden, "width L of the scoring layer"},
              {"detach", o.detach, "1: no gradient through the scores into X", 0, 1}})
      .run_options(o.run);
  return milmer::lab::run(command_line, argc, argv, [&] {
    const std::int64_t B = o.batch, F = o.frames, M = o.tokens, D = o.dim, L = o.hidden, K = o.k;
    auto rng = o.run.rng();
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
                                  milmer::view(gates.data(), {B, K}),
                                  milmer::view(s.data(), {B, F}), milmer::view(h.data(), {B, F, L}),
                                  milmer::view(e.data(), {B, F, D}), c(x, {B, F, M, D}),
                                  c(V, {L, D}), c(bv, {L}), c(w, {1, L}), c(bw, {1}), o.k);
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
    if (o.run.check) {
      using milmer::lab::to_host;
      using milmer::reference::amil_backward;
      using milmer::reference::amil_forward;
      using milmer::reference::as;
      const milmer::reference::AmilSizes sizes{o.batch, o.frames, o.tokens, o.dim, o.hidden, o.k};
      const auto x64 = as<double>(x_host);
      const milmer::reference::AmilParams<double> p64{as<double>(v_host), as<double>(bv_host),
                                                      as<double>(w_host), as<double>(bw_host)};
      const milmer::reference::AmilParams<float> p32{v_host, bv_host, w_host, bw_host};
      const auto f64 = amil_forward(sizes, x64, p64);
      const auto f32 = amil_forward(sizes, x_host, p32);
      const auto r64 = amil_backward(sizes, x64, p64, f64, as<double>(dz_host), o.detach != 0);
      const auto r32 = amil_backward(sizes, x_host, p32, f32, dz_host, o.detach != 0);
      const auto t = to_host(topk);
      checks.expect("topk", std::equal(t.begin(), t.end(), f64.topk.begin()));
      checks.compare("z", to_host(z), f64.z, f32.z);
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
    milmer::lab::time_passes(
        {{"forward", forward, forward_bytes}, {"backward", backward, backward_bytes}}, o.run.iters,
        ctx.stream());
    return checks.exit_code();
  });
}
