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
#include "milmer/rng.hpp"

namespace {

constexpr float kEps = 1e-5f;
constexpr std::uint64_t kDropoutOffset = 17;

struct Options {
  long rows = 14 * 97, width = 768;
  double dropout = 0.2;
  long iters = MILMER_TARGET_CUDA ? 50 : 2;
  long seed = 1, check = 1;
};

// The unfused composition as plain loops in S: y and the five gradients for loss sum(y * dy).
template <class S>
struct Reference {
  std::vector<S> y, dx, dbranch, dnorm_weight, dnorm_bias, dbranch_bias;
};

template <class S>
Reference<S> reference(int rows, int width, float p, const std::vector<bool>& keep,
                       const std::vector<float>& x, const std::vector<float>& branch,
                       const std::vector<float>& branch_bias, const std::vector<float>& weight,
                       const std::vector<float>& norm_bias, const std::vector<float>& dy) {
  const std::size_t n = x.size();
  const S scale = S(1) / (S(1) - S(p));
  Reference<S> r{std::vector<S>(n),     std::vector<S>(n),     std::vector<S>(n),
                 std::vector<S>(width), std::vector<S>(width), std::vector<S>(width)};
  std::vector<S> s(width);
  for (int i = 0; i < rows; ++i) {
    const std::size_t base = static_cast<std::size_t>(i) * width;
    S total = 0;
    for (int c = 0; c < width; ++c) {
      const S pre = S(branch[base + c]) + S(branch_bias[c]);
      s[c] = S(x[base + c]) + (keep[base + c] ? pre * scale : S(0));
      total += s[c];
    }
    const S mean = total / width;
    S squares = 0;
    for (int c = 0; c < width; ++c) squares += (s[c] - mean) * (s[c] - mean);
    const S rstd = S(1) / std::sqrt(squares / width + S(kEps));
    S sum_g = 0, sum_g_shat = 0;
    for (int c = 0; c < width; ++c) {
      const S shat = (s[c] - mean) * rstd;
      r.y[base + c] = shat * S(weight[c]) + S(norm_bias[c]);
      const S g = S(dy[base + c]) * S(weight[c]);
      sum_g += g;
      sum_g_shat += g * shat;
      r.dnorm_weight[c] += S(dy[base + c]) * shat;
      r.dnorm_bias[c] += S(dy[base + c]);
    }
    for (int c = 0; c < width; ++c) {
      const S shat = (s[c] - mean) * rstd;
      const S g = S(dy[base + c]) * S(weight[c]);
      const S ds = rstd * (g - sum_g / width - shat * sum_g_shat / width);
      r.dx[base + c] = ds;
      r.dbranch[base + c] = keep[base + c] ? ds * scale : S(0);
      r.dbranch_bias[c] += r.dbranch[base + c];
    }
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) try {
  Options o;
  milmer::lab::CommandLine command_line("residual_layernorm_lab");
  command_line.option("rows", o.rows, "rows R (tokens)", 1, 100000000)
      .option("width", o.width, "width D of a row", 1, 100000000)
      .option("dropout", o.dropout, "drop probability P of the branch")
      .run_options(o.iters, o.seed, o.check);
  command_line.parse(argc, argv);
  if (!(o.dropout >= 0.0 && o.dropout < 1.0)) command_line.fail("dropout must be in [0, 1)");
  const std::int64_t R = o.rows, W = o.width;
  const float p = static_cast<float>(o.dropout);
  const auto seed = static_cast<std::uint64_t>(o.seed);
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
      scratch(static_cast<std::size_t>(milmer::residual_layernorm_backward_scratch_elements(R, W)));
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
                                     milmer::view(mean.data(), {R}), milmer::view(rstd.data(), {R}),
                                     const_view(sum, {R, W}), const_view(weight, {W}),
                                     const_view(norm_bias, {W}), kEps);
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
  std::printf("residual_layernorm (%s): rows %lld, width %lld, dropout %g\n", milmer::target_name(),
              static_cast<long long>(R), static_cast<long long>(W), o.dropout);
  std::printf(
      "  forward grid %lld x %d threads; backward grid %d x %lld threads, %d rows per "
      "part, scratch %.2f MB\n",
      static_cast<long long>((R + 7) / 8), milmer::kernels::kResidualLayerNormForwardThreads, parts,
      static_cast<long long>(std::min<std::int64_t>(256, (W + 31) / 32 * 32)),
      static_cast<int>((R + parts - 1) / parts), scratch.bytes() * 1e-6);

  milmer::lab::Checks checks;
  if (o.check) {
    using milmer::lab::to_host;
    std::vector<bool> keep(n);
    for (std::size_t i = 0; i < n; ++i)
      keep[i] = milmer::philox_uniform(seed, kDropoutOffset, i) >= p;
    const auto r64 = reference<double>(static_cast<int>(R), static_cast<int>(W), p, keep, x_h,
                                       branch_h, branch_bias_h, weight_h, norm_bias_h, dy_h);
    const auto r32 = reference<float>(static_cast<int>(R), static_cast<int>(W), p, keep, x_h,
                                      branch_h, branch_bias_h, weight_h, norm_bias_h, dy_h);
    checks.compare("y", to_host(y), r64.y, r32.y);
    checks.compare("dx", to_host(dx), r64.dx, r32.dx);
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
  using milmer::lab::report;
  using milmer::lab::time_ms;
  report("fused forward", time_ms(forward, o.iters, ctx.stream()), forward_bytes);
  report("fused backward", time_ms(backward, o.iters, ctx.stream()), backward_bytes);
  report("separate forward", time_ms(composed_forward, o.iters, ctx.stream()),
         composed_forward_bytes);
  report("separate backward", time_ms(composed_backward, o.iters, ctx.stream()),
         composed_backward_bytes);
  return checks.exit_code();
} catch (...) {
  milmer::lab::fail_on_exception();
}
