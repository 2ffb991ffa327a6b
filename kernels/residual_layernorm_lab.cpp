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
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

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

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "%s\nusage: residual_layernorm_lab --rows R --width D --dropout P [--iters N] "
               "[--seed S] [--check 0|1]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  struct Flag {
    const char* name;
    long* integer;
    double* real;
  } flags[] = {{"--rows", &o.rows, nullptr},       {"--width", &o.width, nullptr},
               {"--dropout", nullptr, &o.dropout}, {"--iters", &o.iters, nullptr},
               {"--seed", &o.seed, nullptr},       {"--check", &o.check, nullptr}};
  for (int a = 1; a < argc; a += 2) {
    Flag* flag = nullptr;
    for (auto& f : flags)
      if (std::strcmp(argv[a], f.name) == 0) flag = &f;
    if (flag == nullptr) usage(milmer::str("unknown argument '", argv[a], "'").c_str());
    if (a + 1 >= argc) usage(milmer::str(argv[a], " needs a value").c_str());
    char* end = nullptr;
    if (flag->real != nullptr) {
      *flag->real = std::strtod(argv[a + 1], &end);
    } else {
      *flag->integer = std::strtol(argv[a + 1], &end, 10);
      if (*flag->integer < 0 || *flag->integer > 100000000)
        usage(milmer::str(argv[a], ": expected an integer 0..100000000, got '", argv[a + 1], "'")
                  .c_str());
    }
    if (end == argv[a + 1] || *end != '\0')
      usage(milmer::str(argv[a], ": not a number: '", argv[a + 1], "'").c_str());
  }
  if (o.rows < 1 || o.width < 1 || o.iters < 1) usage("rows, width and iters must be at least 1");
  if (!(o.dropout >= 0.0 && o.dropout < 1.0)) usage("dropout must be in [0, 1)");
  return o;
}

std::vector<float> random_vector(std::size_t n, std::mt19937_64& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

template <class T>
milmer::DeviceBuffer<T> device(const std::vector<T>& host) {
  milmer::DeviceBuffer<T> b(host.size());
  b.upload(host.data(), host.size());
  return b;
}

template <class T>
std::vector<T> host(const milmer::DeviceBuffer<T>& b) {
  std::vector<T> h(b.size());
  b.download(h.data(), h.size());
  return h;
}

template <class T>
milmer::TensorView<const T> cview(const milmer::DeviceBuffer<T>& b,
                                  std::initializer_list<std::int64_t> dims) {
  return milmer::view(b.data(), dims);
}

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

// The tolerance rule of tests/support.hpp; prints the errors and returns whether it holds.
bool compare(const char* what, const std::vector<float>& got, const std::vector<double>& ref,
             const std::vector<float>& plain) {
  double err = 0, plain_err = 0, scale = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double e = std::abs(double(got[i]) - ref[i]);
    err = std::isnan(e) ? INFINITY : std::max(err, e);
    plain_err = std::max(plain_err, std::abs(double(plain[i]) - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  const double bound = 4 * plain_err + 1e-6 * std::max(scale, 1e-3);
  const bool ok = err <= bound;
  std::printf("  check %-13s max error %.3e  plain fp32 %.3e  bound %.3e  %s\n", what, err,
              plain_err, bound, ok ? "ok" : "FAILED");
  return ok;
}

// Mean milliseconds per call of fn over iters calls, after one warm-up call.
template <class Fn>
float time_ms(Fn fn, long iters, cudaStream_t stream) {
  fn();
  cudaEvent_t start, stop;
  MILMER_CUDA_CHECK(cudaEventCreate(&start));
  MILMER_CUDA_CHECK(cudaEventCreate(&stop));
  MILMER_CUDA_CHECK(cudaEventRecord(start, stream));
  for (long i = 0; i < iters; ++i) fn();
  MILMER_CUDA_CHECK(cudaEventRecord(stop, stream));
  MILMER_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  MILMER_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  MILMER_CUDA_CHECK(cudaEventDestroy(start));
  MILMER_CUDA_CHECK(cudaEventDestroy(stop));
  return ms / static_cast<float>(iters);
}

void report(const char* what, float ms, double bytes) {
  std::printf("  %-20s %10.4f ms  %8.2f GB/s  (%.2f MB moved at minimum)\n", what, ms,
              bytes / ms * 1e-6, bytes * 1e-6);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const std::int64_t R = o.rows, W = o.width;
  const float p = static_cast<float>(o.dropout);
  const auto seed = static_cast<std::uint64_t>(o.seed);
  const std::size_t n = static_cast<std::size_t>(R) * W;
  std::mt19937_64 rng(seed);
  const auto x_h = random_vector(n, rng, -2, 2), branch_h = random_vector(n, rng, -2, 2);
  const auto branch_bias_h = random_vector(W, rng, -0.5f, 0.5f);
  const auto weight_h = random_vector(W, rng, 0.5f, 1.5f);
  const auto norm_bias_h = random_vector(W, rng, -0.5f, 0.5f);
  const auto dy_h = random_vector(n, rng, -1, 1);

  milmer::Context ctx;
  auto x = device(x_h), branch = device(branch_h), branch_bias = device(branch_bias_h),
       weight = device(weight_h), norm_bias = device(norm_bias_h), dy = device(dy_h);
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
        milmer::view(mean.data(), {R}), milmer::view(rstd.data(), {R}), cview(x, {R, W}),
        cview(branch, {R, W}), cview(branch_bias, {W}), cview(weight, {W}), cview(norm_bias, {W}),
        kEps, p, seed, kDropoutOffset);
  };
  const auto backward = [&] {
    milmer::residual_layernorm_backward<float>(
        ctx, milmer::view(dx.data(), {R, W}), milmer::view(dbranch.data(), {R, W}),
        milmer::view(dnorm_weight.data(), {W}), milmer::view(dnorm_bias.data(), {W}),
        milmer::view(dbranch_bias.data(), {W}),
        milmer::view(scratch.data(), {static_cast<std::int64_t>(scratch.size())}),
        cview(dy, {R, W}), cview(sum, {R, W}), cview(weight, {W}), cview(mean, {R}),
        cview(rstd, {R}), p, seed, kDropoutOffset);
  };
  const auto composed_forward = [&] {
    MILMER_CUDA_CHECK(cudaMemcpyAsync(pre.data(), branch.data(), pre.bytes(),
                                      cudaMemcpyDeviceToDevice, ctx.stream()));
    milmer::bias_add_forward<float>(ctx, milmer::view(pre.data(), {R, W}), cview(branch_bias, {W}));
    milmer::dropout_forward<float>(ctx, milmer::view(pre.data(), {R, W}), cview(pre, {R, W}), p,
                                   seed, kDropoutOffset);
    milmer::add_forward<float>(ctx, milmer::view(sum.data(), {R, W}), cview(x, {R, W}),
                               cview(pre, {R, W}));
    milmer::layernorm_forward<float>(ctx, milmer::view(y.data(), {R, W}),
                                     milmer::view(mean.data(), {R}), milmer::view(rstd.data(), {R}),
                                     cview(sum, {R, W}), cview(weight, {W}), cview(norm_bias, {W}),
                                     kEps);
  };
  const auto composed_backward = [&] {
    milmer::layernorm_backward<float>(
        ctx, milmer::view(dx.data(), {R, W}), milmer::view(dnorm_weight.data(), {W}),
        milmer::view(dnorm_bias.data(), {W}),
        milmer::view(ln_scratch.data(), {static_cast<std::int64_t>(ln_scratch.size())}),
        cview(dy, {R, W}), cview(sum, {R, W}), cview(weight, {W}), cview(mean, {R}),
        cview(rstd, {R}), false);
    milmer::dropout_backward<float>(ctx, milmer::view(dbranch.data(), {R, W}), cview(dx, {R, W}), p,
                                    seed, kDropoutOffset);
    milmer::bias_add_backward<float>(
        ctx, milmer::view(dbranch_bias.data(), {W}), cview(dbranch, {R, W}),
        milmer::view(bias_scratch.data(), {static_cast<std::int64_t>(bias_scratch.size())}));
  };
  try {
    forward();
    backward();
  } catch (const milmer::Error& e) {
    usage(e.what());
  }

  const int parts = milmer::residual_layernorm_backward_parts(R, W);
  std::printf("residual_layernorm (%s): rows %lld, width %lld, dropout %g\n", milmer::target_name(),
              static_cast<long long>(R), static_cast<long long>(W), o.dropout);
  std::printf(
      "  forward grid %lld x %d threads; backward grid %d x %lld threads, %d rows per "
      "part, scratch %.2f MB\n",
      static_cast<long long>((R + 7) / 8), milmer::kernels::kResidualLayerNormForwardThreads, parts,
      static_cast<long long>(std::min<std::int64_t>(256, (W + 31) / 32 * 32)),
      static_cast<int>((R + parts - 1) / parts), scratch.bytes() * 1e-6);

  bool ok = true;
  if (o.check) {
    std::vector<bool> keep(n);
    for (std::size_t i = 0; i < n; ++i)
      keep[i] = milmer::philox_uniform(seed, kDropoutOffset, i) >= p;
    const auto r64 = reference<double>(static_cast<int>(R), static_cast<int>(W), p, keep, x_h,
                                       branch_h, branch_bias_h, weight_h, norm_bias_h, dy_h);
    const auto r32 = reference<float>(static_cast<int>(R), static_cast<int>(W), p, keep, x_h,
                                      branch_h, branch_bias_h, weight_h, norm_bias_h, dy_h);
    ok &= compare("y", host(y), r64.y, r32.y);
    ok &= compare("dx", host(dx), r64.dx, r32.dx);
    ok &= compare("dbranch", host(dbranch), r64.dbranch, r32.dbranch);
    ok &= compare("dnorm_weight", host(dnorm_weight), r64.dnorm_weight, r32.dnorm_weight);
    ok &= compare("dnorm_bias", host(dnorm_bias), r64.dnorm_bias, r32.dnorm_bias);
    ok &= compare("dbranch_bias", host(dbranch_bias), r64.dbranch_bias, r32.dbranch_bias);
  }

  // Minimum bytes (see the header); the composition's are the sums of its kernels' minima
  // (its forward's branch copy is not counted: a model would run bias_add in place).
  const double s = sizeof(float), rw = double(R) * W;
  const double forward_bytes = 4 * rw * s + 3 * W * s + 8.0 * R;
  const double backward_bytes = 4 * rw * s + 7 * W * s + 8.0 * R;
  const double composed_forward_bytes = 9 * rw * s + 3 * W * s + 8.0 * R;
  const double composed_backward_bytes = 6 * rw * s + 7 * W * s + 8.0 * R;
  report("fused forward", time_ms(forward, o.iters, ctx.stream()), forward_bytes);
  report("fused backward", time_ms(backward, o.iters, ctx.stream()), backward_bytes);
  report("separate forward", time_ms(composed_forward, o.iters, ctx.stream()),
         composed_forward_bytes);
  report("separate backward", time_ms(composed_backward, o.iters, ctx.stream()),
         composed_backward_bytes);
  return ok ? 0 : 1;
}
