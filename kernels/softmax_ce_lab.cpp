// Kernel lab: fused softmax + cross-entropy (include/milmer/kernels/softmax_ce.hpp).
//
//   softmax_ce_lab --batch 4096 --classes 1000 [--iters N] [--seed S] [--check 0|1]
//
// Runs softmax_ce_forward (losses, mean, logits gradient) and softmax_ce_forward_only
// (losses, mean, probabilities), checks them against the fp64 loops (kernel error <= 4 x the
// error of a plain fp32 implementation plus a tiny absolute term, the rule of
// tests/support.hpp), then prints the time per call and GB/s from the minimum bytes moved.
// The timed calls pass host labels, so they measure the kernels without the label read-back.
// Exit status 1 when the check fails, 2 on bad arguments.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "milmer/context.hpp"
#include "milmer/kernels/softmax_ce.hpp"
#include "milmer/memory.hpp"

namespace {

struct Options {
  int batch = 4096, classes = 1000;
  int iters = MILMER_TARGET_CUDA ? 50 : 3;
  int seed = 1, check = 1;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "%s\nusage: softmax_ce_lab --batch B --classes C [--iters N] [--seed S] "
               "[--check 0|1]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  struct Flag {
    const char* name;
    int* value;
  } flags[] = {{"--batch", &o.batch},
               {"--classes", &o.classes},
               {"--iters", &o.iters},
               {"--seed", &o.seed},
               {"--check", &o.check}};
  for (int a = 1; a < argc; a += 2) {
    Flag* flag = nullptr;
    for (auto& f : flags)
      if (std::strcmp(argv[a], f.name) == 0) flag = &f;
    if (flag == nullptr) usage(milmer::str("unknown argument '", argv[a], "'").c_str());
    if (a + 1 >= argc) usage(milmer::str(argv[a], " needs a value").c_str());
    char* end = nullptr;
    const long v = std::strtol(argv[a + 1], &end, 10);
    if (*end != '\0' || v < 0 || v > 100000000)
      usage(milmer::str(argv[a], ": expected an integer 0..100000000, got '", argv[a + 1], "'")
                .c_str());
    *flag->value = static_cast<int>(v);
  }
  if (o.batch < 1 || o.classes < 1 || o.iters < 1)
    usage("batch, classes and iters must be at least 1");
  return o;
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
  std::printf("  check %-9s max error %.3e  plain fp32 %.3e  bound %.3e  %s\n", what, err,
              plain_err, bound, ok ? "ok" : "FAILED");
  return ok;
}

// The obvious loops in precision S: losses, mean, gradient (scale 1 / B) and probabilities.
template <class S>
struct Reference {
  std::vector<S> losses, grad, probs;
  S mean = 0;
};
template <class S>
Reference<S> reference(int B, int C, const std::vector<float>& logits,
                       const std::vector<int>& labels) {
  Reference<S> r;
  r.losses.resize(B);
  r.grad.resize(std::size_t(B) * C);
  r.probs.resize(std::size_t(B) * C);
  S total = 0;
  for (int b = 0; b < B; ++b) {
    const float* x = logits.data() + std::size_t(b) * C;
    S m = S(x[0]);
    for (int j = 1; j < C; ++j) m = std::max(m, S(x[j]));
    S s = 0;
    for (int j = 0; j < C; ++j) s += std::exp(S(x[j]) - m);
    r.losses[b] = m + std::log(s) - S(x[labels[b]]);
    total += r.losses[b];
    for (int j = 0; j < C; ++j) {
      const S p = std::exp(S(x[j]) - m) / s;
      r.probs[std::size_t(b) * C + j] = p;
      r.grad[std::size_t(b) * C + j] = (p - (j == labels[b] ? S(1) : S(0))) / S(B);
    }
  }
  r.mean = total / S(B);
  return r;
}

template <class S>
std::vector<double> as_double(const std::vector<S>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Mean milliseconds per call of fn over iters calls, after one warm-up call.
template <class Fn>
float time_ms(Fn fn, int iters, cudaStream_t stream) {
  fn();
  cudaEvent_t start, stop;
  MILMER_CUDA_CHECK(cudaEventCreate(&start));
  MILMER_CUDA_CHECK(cudaEventCreate(&stop));
  MILMER_CUDA_CHECK(cudaEventRecord(start, stream));
  for (int i = 0; i < iters; ++i) fn();
  MILMER_CUDA_CHECK(cudaEventRecord(stop, stream));
  MILMER_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  MILMER_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  MILMER_CUDA_CHECK(cudaEventDestroy(start));
  MILMER_CUDA_CHECK(cudaEventDestroy(stop));
  return ms / iters;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const int B = o.batch, C = o.classes;
  const std::size_t n = std::size_t(B) * C;
  std::printf("softmax_ce_lab [%s]: batch %d classes %d\n", milmer::target_name(), B, C);

  std::mt19937_64 rng(static_cast<std::uint64_t>(o.seed));
  std::uniform_real_distribution<float> dist(-8.0f, 8.0f);
  std::vector<float> logits(n);
  for (auto& x : logits) x = dist(rng);
  std::vector<int> labels(B);
  for (auto& y : labels) y = static_cast<int>(rng() % static_cast<std::uint64_t>(C));

  milmer::Context ctx;
  auto d_logits = device(logits);
  auto d_labels = device(labels);
  milmer::DeviceBuffer<float> d_out(n), d_losses(B), d_mean(1);
  using milmer::view;
  auto train = [&](std::span<const int> host_labels) {
    milmer::softmax_ce_forward(ctx, view(d_mean.data(), {1}), view(d_losses.data(), {B}),
                               view(d_out.data(), {B, C}),
                               view<const float>(d_logits.data(), {B, C}),
                               view<const int>(d_labels.data(), {B}), 1.0f, host_labels);
  };
  auto eval = [&](std::span<const int> host_labels) {
    milmer::softmax_ce_forward_only(ctx, view(d_mean.data(), {1}), view(d_losses.data(), {B}),
                                    view(d_out.data(), {B, C}),
                                    view<const float>(d_logits.data(), {B, C}),
                                    view<const int>(d_labels.data(), {B}), host_labels);
  };

  bool ok = true;
  if (o.check) {
    const auto r64 = reference<double>(B, C, logits, labels);
    const auto r32 = reference<float>(B, C, logits, labels);
    train({});  // the device label check path
    ok &= compare("losses", host(d_losses), r64.losses, r32.losses);
    ok &= compare("mean", host(d_mean), {r64.mean}, {r32.mean});
    ok &= compare("dlogits", host(d_out), r64.grad, r32.grad);
    eval({});
    ok &= compare("probs", host(d_out), r64.probs, r32.probs);
  }

  // Minimum traffic: logits read, gradient (or probabilities) written, labels read, losses
  // written, the mean's partial pass over the losses.
  const double bytes = 2.0 * n * sizeof(float) + B * (sizeof(int) + 2 * sizeof(float));
  const float train_ms = time_ms([&] { train(labels); }, o.iters, ctx.stream());
  const float eval_ms = time_ms([&] { eval(labels); }, o.iters, ctx.stream());
  std::printf("  softmax_ce_forward       %9.4f ms  %8.2f GB/s\n", train_ms,
              bytes / (train_ms * 1e6));
  std::printf("  softmax_ce_forward_only  %9.4f ms  %8.2f GB/s\n", eval_ms,
              bytes / (eval_ms * 1e6));
  return ok ? 0 : 1;
}
