// Kernel lab: the Linear layer over cuBLAS / cuBLASLt (include/milmer/kernels/gemm.hpp).
//
//   gemm_lab --rows 1358 --in 768 --out 2048 [--epilogue 0|1|2] [--iters N] [--seed S]
//            [--check 0|1]
//
// rows = M (tokens), in = K, out = N; epilogue 0 none, 1 relu, 2 gelu (always with bias).
// Runs linear_forward and linear_backward (dinp, dweight, dbias), checks them against fp64
// loops (kernel error <= 4 x the error of plain fp32 loops plus a tiny absolute term, the rule
// of tests/support.hpp), then prints time per call, GB/s from the minimum bytes moved and
// TFLOP/s. Exit status 1 when the check fails, 2 on bad arguments.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "lab.hpp"
#include "milmer/context.hpp"
#include "milmer/kernels/gemm.hpp"
#include "milmer/memory.hpp"

namespace {

struct Options {
  int rows = 1358, in = 768, out = 2048, epilogue = 1;
  int iters = MILMER_TARGET_CUDA ? 50 : 2;
  int seed = 1, check = 1;
};

template <class S>
S act(S x, milmer::Epilogue e) {
  if (e == milmer::Epilogue::relu) return x > S(0) ? x : S(0);
  if (e == milmer::Epilogue::gelu) return S(0.5) * x * (S(1) + std::erf(x / std::sqrt(S(2))));
  return x;
}
template <class S>
S act_grad(S x, milmer::Epilogue e) {
  if (e == milmer::Epilogue::relu) return x > S(0) ? S(1) : S(0);
  if (e == milmer::Epilogue::gelu)
    return S(0.5) * (S(1) + std::erf(x / std::sqrt(S(2)))) +
           x * std::exp(-x * x / S(2)) / std::sqrt(S(2) * S(3.14159265358979323846));
  return S(1);
}

// Forward and backward of one Linear in precision S; dpre uses the float pre-activation.
template <class S>
struct Reference {
  std::vector<S> out, dinp, dw, db;
};
template <class S>
Reference<S> reference(int M, int N, int K, milmer::Epilogue e, const std::vector<float>& x,
                       const std::vector<float>& w, const std::vector<float>& b,
                       const std::vector<float>& dout, const std::vector<float>& pre32) {
  Reference<S> r;
  r.out.resize(std::size_t(M) * N);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      S acc = S(b[n]);
      for (int k = 0; k < K; ++k)
        acc += S(x[std::size_t(m) * K + k]) * S(w[std::size_t(n) * K + k]);
      r.out[std::size_t(m) * N + n] = act(acc, e);
    }
  std::vector<S> dpre(std::size_t(M) * N);
  for (std::size_t i = 0; i < dpre.size(); ++i) dpre[i] = S(dout[i]) * act_grad(S(pre32[i]), e);
  r.dinp.assign(std::size_t(M) * K, S(0));
  r.dw.assign(std::size_t(N) * K, S(0));
  r.db.assign(N, S(0));
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      const S d = dpre[std::size_t(m) * N + n];
      r.db[n] += d;
      for (int k = 0; k < K; ++k) {
        r.dw[std::size_t(n) * K + k] += d * S(x[std::size_t(m) * K + k]);
        r.dinp[std::size_t(m) * K + k] += d * S(w[std::size_t(n) * K + k]);
      }
    }
  return r;
}

}  // namespace

int main(int argc, char** argv) try {
  Options o;
  milmer::lab::CommandLine command_line("gemm_lab");
  command_line.option("rows", o.rows, "M: rows of x (tokens)", 1, 1000000)
      .option("in", o.in, "K: input features", 1, 1000000)
      .option("out", o.out, "N: output features", 1, 1000000)
      .option("epilogue", o.epilogue, "0 none, 1 relu, 2 gelu (always with bias)", 0, 2)
      .run_options(o.iters, o.seed, o.check);
  command_line.parse(argc, argv);
  const int M = o.rows, K = o.in, N = o.out;
  const auto e = static_cast<milmer::Epilogue>(o.epilogue);
  std::printf("gemm_lab [%s]: M %d K %d N %d epilogue %s\n", milmer::target_name(), M, K, N,
              milmer::epilogue_name(e));

  std::mt19937_64 rng(static_cast<std::uint64_t>(o.seed));
  auto random = [&](std::size_t n, float scale) {
    return milmer::lab::random_vector(n, rng, -scale, scale);
  };
  const auto x = random(std::size_t(M) * K, 1.0f);
  const auto w = random(std::size_t(N) * K, 1.0f / std::sqrt(float(K)));
  const auto b = random(N, 0.1f);
  const auto dout = random(std::size_t(M) * N, 1.0f);

  milmer::Context ctx;
  using milmer::lab::to_device;
  const auto d_x = to_device(x), d_w = to_device(w), d_b = to_device(b), d_dout = to_device(dout);
  milmer::DeviceBuffer<float> d_out(std::size_t(M) * N), d_pre(std::size_t(M) * N),
      d_dpre(std::size_t(M) * N), d_dinp(std::size_t(M) * K), d_dw(std::size_t(N) * K), d_db(N);
  using milmer::view;
  const bool gelu = e == milmer::Epilogue::gelu;
  auto forward = [&] {
    milmer::linear_forward(ctx, view(d_out.data(), {M, N}), view<const float>(d_x.data(), {M, K}),
                           view<const float>(d_w.data(), {N, K}),
                           view<const float>(d_b.data(), {N}), e,
                           gelu ? view(d_pre.data(), {M, N}) : milmer::TensorView<float>{});
  };
  auto backward = [&] {
    const bool act_on = e != milmer::Epilogue::none;
    const float* saved = gelu ? d_pre.data() : d_out.data();
    milmer::linear_backward(
        ctx, view(d_dinp.data(), {M, K}), view(d_dw.data(), {N, K}), view(d_db.data(), {N}),
        view<const float>(d_dout.data(), {M, N}), view<const float>(d_x.data(), {M, K}),
        view<const float>(d_w.data(), {N, K}), e,
        act_on ? view<const float>(saved, {M, N}) : milmer::TensorView<const float>{},
        act_on ? view(d_dpre.data(), {M, N}) : milmer::TensorView<float>{});
  };

  milmer::lab::Checks checks;
  if (o.check) {
    using milmer::lab::to_host;
    forward();
    d_dw.zero();
    d_db.zero();
    backward();
    // What the backward saw: the stored pre-activation (gelu) or the output (relu: its sign
    // is the pre-activation's). Unused for none.
    const auto pre32 = gelu ? to_host(d_pre) : to_host(d_out);
    const auto r64 = reference<double>(M, N, K, e, x, w, b, dout, pre32);
    const auto r32 = reference<float>(M, N, K, e, x, w, b, dout, pre32);
    checks.compare("out", to_host(d_out), r64.out, r32.out);
    checks.compare("dinp", to_host(d_dinp), r64.dinp, r32.dinp);
    checks.compare("dweight", to_host(d_dw), r64.dw, r32.dw);
    checks.compare("dbias", to_host(d_db), r64.db, r32.db);
  }

  const double mn = double(M) * N, mk = double(M) * K, nk = double(N) * K;
  const double fwd_bytes = 4 * (mk + nk + N + mn * (gelu ? 2 : 1));
  const double bwd_bytes =
      4 * (mn * (e == milmer::Epilogue::none ? 1 : 4) + 2 * mk + 3 * nk + 2 * N);
  using milmer::lab::time_ms;
  milmer::lab::report("linear_forward", time_ms(forward, o.iters, ctx.stream()), fwd_bytes,
                      2 * mn * K);
  milmer::lab::report("linear_backward", time_ms(backward, o.iters, ctx.stream()), bwd_bytes,
                      4 * mn * K);
  return checks.exit_code();
} catch (...) {
  milmer::lab::fail_on_exception();
}
