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
#include "milmer/reference/gemm.hpp"

namespace {

struct Options {
  int rows = 1358, in = 768, out = 2048, epilogue = 1;
  milmer::lab::RunOptions run{MILMER_TARGET_CUDA ? 50 : 2};
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  milmer::lab::CommandLine command_line("gemm_lab");
  command_line
      .sizes({{"rows", o.rows, "M: rows of x (tokens)"},
              {"in", o.in, "K: input features"},
              {"out", o.out, "N: output features"},
              {"epilogue", o.epilogue, "0 none, 1 relu, 2 gelu (always with bias)", 0, 2}})
      .run_options(o.run);
  return milmer::lab::run(command_line, argc, argv, [&] {
    const int M = o.rows, K = o.in, N = o.out;
    const auto e = static_cast<milmer::Epilogue>(o.epilogue);
    std::printf("gemm_lab [%s]: M %d K %d N %d epilogue %s\n", milmer::target_name(), M, K, N,
                milmer::epilogue_name(e));

    auto rng = o.run.rng();
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
    if (o.run.check) {
      using milmer::lab::to_host;
      forward();
      d_dw.zero();
      d_db.zero();
      backward();
      // What the backward saw: the stored pre-activation (gelu) or the output (relu: its sign
      // is the pre-activation's). Unused for none.
      const auto pre32 = gelu ? to_host(d_pre) : to_host(d_out);
      using milmer::reference::as;
      using milmer::reference::linear_backward;
      using milmer::reference::linear_forward;
      const auto x64 = as<double>(x), w64 = as<double>(w), b64 = as<double>(b);
      const auto out64 = linear_forward(M, N, K, x64, w64, &b64, e);
      const auto out32 = linear_forward(M, N, K, x, w, &b, e);
      const auto r64 = linear_backward(M, N, K, as<double>(dout), x64, w64, as<double>(pre32), e);
      const auto r32 = linear_backward(M, N, K, dout, x, w, pre32, e);
      checks.compare("out", to_host(d_out), out64, out32);
      checks.compare("dinp", to_host(d_dinp), r64.dinp, r32.dinp);
      checks.compare("dweight", to_host(d_dw), r64.dweight, r32.dweight);
      checks.compare("dbias", to_host(d_db), r64.dbias, r32.dbias);
    }

    const double mn = double(M) * N, mk = double(M) * K, nk = double(N) * K;
    const double fwd_bytes = 4 * (mk + nk + N + mn * (gelu ? 2 : 1));
    const double bwd_bytes =
        4 * (mn * (e == milmer::Epilogue::none ? 1 : 4) + 2 * mk + 3 * nk + 2 * N);
    milmer::lab::time_passes({{"linear_forward", forward, fwd_bytes, 2 * mn * K},
                              {"linear_backward", backward, bwd_bytes, 4 * mn * K}},
                             o.run.iters, ctx.stream());
    return checks.exit_code();
  });
}
