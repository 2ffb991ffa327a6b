// Kernel lab: the fused post-LN sublayer end y = LayerNorm(x + Dropout(branch + bias))
// (include/milmer/kernels/residual_layernorm.hpp).
//
//   residual_layernorm_lab --rows 1358 --width 768 --dropout 0.2 [--iters N] [--seed S]
//                          [--check 0|1]
//
// Runs the library's fused forward and backward on (rows, width), checks them against the
// fp64 unfused composition with the same Philox mask (kernel error <= 4 x the error of the
// plain fp32 composition plus a tiny absolute term, the rule of tests/support.hpp), then
// prints the time per call and GB/s from the minimum bytes moved, beside the same work done
// by the library's separate kernels (bias_add, dropout, add, layernorm). The default shape is
// the paper's fusion layer at batch 14 (14 x 97 tokens, width 768). Exit status 1 when the
// check fails, 2 on bad arguments.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "lab.hpp"
#include "milmer/context.hpp"
#include "milmer/kernels/dropout.hpp"
#include "milmer/kernels/elementwise.hpp"
#include "milmer/kernels/layernorm.hpp"
#include "milmer/kernels/residual_layernorm.hpp"
#include "milmer/memory.hpp"
#include "milmer/reference/dropout.hpp"
#include "milmer/reference/residual_layernorm.hpp"
#include "milmer/rng.hpp"

namespace {

constexpr float kEps = 1e-5f;
constexpr std::uint64_t kDropoutOffset = 17;

struct Options {
  int rows = 14 * 97, width = 768;
  double dropout = 0.2;
  milmer::lab::RunOptions run{MILMER_TARGET_CUDA ? 50 : 2};
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  milmer::lab::CommandLine command_line("residual_layernorm_lab");
  command_line
      .sizes({{"rows", o.rows, "rows R (tokens)", 1, 100000000},
              {"width", o.width, "width D of a row", 1, 100000000}})
      .option("dropout", o.dropout, "drop probability P of the branch")
      .run_options(o.run);
  return milmer::lab::run(command_line, argc, argv, [&] {
    if (!(o.dropout >= 0.0 && o.dropout < 1.0)) command_line.fail("dropout must be in [0, 1)");
    const std::int64_t R = o.rows, W = o.width;
    const float p = static_cast<float>(o.dropout);
    const auto seed = static_cast<std::uint64_t>(o.run.seed);
    const std::size_t n = static_cast<std::size_t>(R) * W;
    std::mt19937_64 rng(seed);
    const auto x_h = milmer::lab::random_vector(n, rng, -2, 2),
               branch_h = milmer::lab::random_vector(n, rng, -2, 2);
    const auto branch_bias_h = milmer::lab::random_vector(W, rng, -0.5f, 0.5f);
    const auto weight_h = milmer::lab::random_vector(W, rng, 0.5f, 1.5f);
    const auto norm_bias_h = milmer::lab::random_vector(W, rng, -0.5f, 0.5f);
    const auto dy_h = milmer::lab::random_vector(n, rng, -1, 1);

    milmer::Context ctx;
    using milmer::lab::const_view;
    using milmer::lab::to_device;
    const auto x = to_device(x_h), branch = to_device(branch_h),
               branch_bias = to_device(branch_bias_h), weight = to_device(weight_h),
               norm_bias = to_device(norm_bias_h), dy = to_device(dy_h);
    milmer::DeviceBuffer<float> y(n), sum(n), mean(R), rstd(R), dx(n), dbranch(n), dnorm_weight(W),
        dnorm_bias(W), dbranch_bias(W),
        scratch(
            static_cast<std::size_t>(milmer::residual_layernorm_backward_scratch_elements(R, W)));
    // The composition's buffers: the biased, dropped branch and the two backward scratches.
    milmer::DeviceBuffer<float> pre(n),
        ln_scratch(static_cast<std::size_t>(milmer::layernorm_backward_scratch_elements(R, W))),
        bias_scratch(static_cast<std::size_t>(milmer::bias_add_backward_scratch_elements(R, W)));
    for (auto* b : {&dnorm_weight, &dnorm_bias, &dbranch_bias}) b->zero(ctx.stream());

    const auto forward = [&] {
      milmer::residual_layernorm_forward<float>(
          ctx, milmer::view(y.data(), {R, W}), milmer::view(sum.data(), {R, W}),
          milmer::view(mean.data(), {R}), milmer::view(rstd.data(), {R}), const_view(x, {R, W}),
          const_view(branch, {R, W}), const_view(branch_bias, {W}), const_view(weight, {W}),
          const_view(norm_bias, {W}), kEps, p, seed, kDropoutOffset);
    };
    const auto backward = [&] {
      milmer::residual_layernorm_backward<float>(
          ctx, milmer::view(dx.data(), {R, W}), milmer::view(dbranch.data(), {R, W}),
          milmer::view(dnorm_weight.data(), {W}), milmer::view(dnorm_bias.data(), {W}),
          milmer::view(dbranch_bias.data(), {W}),
          milmer::view(scratch.data(), {static_cast<std::int64_t>(scratch.size())}),
          const_view(dy, {R, W}), const_view(sum, {R, W}), const_view(weight, {W}),
          const_view(mean, {R}), const_view(rstd, {R}), p, seed, kDropoutOffset);
    };
    const auto composed_forward = [&] {
      MILMER_CUDA_CHECK(cudaMemcpyAsync(pre.data(), branch.data(), pre.bytes(),
                                        cudaMemcpyDeviceToDevice, ctx.stream()));
      milmer::bias_add_forward<float>(ctx, milmer::view(pre.data(), {R, W}),
                                      const_view(branch_bias, {W}));
      milmer::dropout_forward<float>(ctx, milmer::view(pre.data(), {R, W}), const_view(pre, {R, W}),
                                     p, seed, kDropoutOffset);
      milmer::add_forward<float>(ctx, milmer::view(sum.data(), {R, W}), const_view(x, {R, W}),
                                 const_view(pre, {R, W}));
      milmer::layernorm_forward<float>(ctx, milmer::view(y.data(), {R, W}),
                                       milmer::view(mean.data(), {R}),
                                       milmer::view(rstd.data(), {R}), const_view(sum, {R, W}),
                                       const_view(weight, {W}), const_view(norm_bias, {W}), kEps);
    };
    const auto composed_backward = [&] {
      milmer::layernorm_backward<float>(
          ctx, milmer::view(dx.data(), {R, W}), milmer::view(dnorm_weight.data(), {W}),
          milmer::view(dnorm_bias.data(), {W}),
          milmer::view(ln_scratch.data(), {static_cast<std::int64_t>(ln_scratch.size())}),
          const_view(dy, {R, W}), const_view(sum, {R, W}), const_view(weight, {W}),
          const_view(mean, {R}), const_view(rstd, {R}), false);
      milmer::dropout_backward<float>(ctx, milmer::view(dbranch.data(), {R, W}),
                                      const_view(dx, {R, W}), p, seed, kDropoutOffset);
      milmer::bias_add_backward<float>(
          ctx, milmer::view(dbranch_bias.data(), {W}), const_view(dbranch, {R, W}),
          milmer::view(bias_scratch.data(), {static_cast<std::int64_t>(bias_scratch.size())}));
    };
    forward();
    backward();

    const int parts = milmer::residual_layernorm_backward_parts(R, W);
    std::printf("residual_layernorm (%s): rows %lld, width %lld, dropout %g\n",
                milmer::target_name(), static_cast<long long>(R), static_cast<long long>(W),
                o.dropout);
    std::printf(
        "  forward grid %lld x %d threads; backward grid %d x %lld threads, %d rows per "
        "part, scratch %.2f MB\n",
        static_cast<long long>((R + 7) / 8), milmer::kernels::kResidualLayerNormForwardThreads,
        parts, static_cast<long long>(std::min<std::int64_t>(256, (W + 31) / 32 * 32)),
        static_cast<int>((R + parts - 1) / parts), scratch.bytes() * 1e-6);

    milmer::lab::Checks checks;
    if (o.run.check) {
      using milmer::lab::to_host;
      using milmer::reference::as;
      const auto keep = milmer::reference::dropout_keep_mask(n, p, seed, kDropoutOffset);
      const milmer::reference::ResidualLayerNormInputs<double> in64{static_cast<int>(R),
                                                                    static_cast<int>(W),
                                                                    double(p),
                                                                    double(kEps),
                                                                    keep,
                                                                    as<double>(x_h),
                                                                    as<double>(branch_h),
                                                                    as<double>(branch_bias_h),
                                                                    as<double>(weight_h),
                                                                    as<double>(norm_bias_h)};
      const milmer::reference::ResidualLayerNormInputs<float> in32{static_cast<int>(R),
                                                                   static_cast<int>(W),
                                                                   p,
                                                                   kEps,
                                                                   keep,
                                                                   x_h,
                                                                   branch_h,
                                                                   branch_bias_h,
                                                                   weight_h,
                                                                   norm_bias_h};
      const std::vector<float> zero(W);
      const auto f64 = milmer::reference::residual_layernorm_forward(in64);
      const auto f32 = milmer::reference::residual_layernorm_forward(in32);
      const auto r64 = milmer::reference::residual_layernorm_backward(
          in64, as<double>(dy_h), as<double>(zero), as<double>(zero), as<double>(zero));
      const auto r32 = milmer::reference::residual_layernorm_backward(in32, dy_h, zero, zero, zero);
      checks.compare("y", to_host(y), f64.out, f32.out);
      checks.compare("dx", to_host(dx), r64.dresidual, r32.dresidual);
      checks.compare("dbranch", to_host(dbranch), r64.dbranch, r32.dbranch);
      checks.compare("dnorm_weight", to_host(dnorm_weight), r64.dnorm_weight, r32.dnorm_weight);
      checks.compare("dnorm_bias", to_host(dnorm_bias), r64.dnorm_bias, r32.dnorm_bias);
      checks.compare("dbranch_bias", to_host(dbranch_bias), r64.dbranch_bias, r32.dbranch_bias);
    }

    // Minimum bytes (see the header); the composition's are the sums of its kernels' minima
    // (its forward's branch copy is not counted: a model would run bias_add in place).
    const double s = sizeof(float), rw = double(R) * W;
    const double forward_bytes = 4 * rw * s + 3 * W * s + 8.0 * R;
    const double backward_bytes = 4 * rw * s + 7 * W * s + 8.0 * R;
    const double composed_forward_bytes = 9 * rw * s + 3 * W * s + 8.0 * R;
    const double composed_backward_bytes = 6 * rw * s + 7 * W * s + 8.0 * R;
    milmer::lab::time_passes({{"fused forward", forward, forward_bytes},
                              {"fused backward", backward, backward_bytes},
                              {"separate forward", composed_forward, composed_forward_bytes},
                              {"separate backward", composed_backward, composed_backward_bytes}},
                             o.run.iters, ctx.stream());
    return checks.exit_code();
  });
}
