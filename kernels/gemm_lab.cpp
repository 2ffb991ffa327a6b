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
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "milmer/context.hpp"
#include "milmer/kernels/gemm.hpp"
#include "milmer/memory.hpp"

namespace {

struct Options {
  int rows = 1358, in = 768, out = 2048, epilogue = 1;
  int iters = MILMER_TARGET_CUDA ? 50 : 2;
  int seed = 1, check = 1;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "%s\nusage: gemm_lab --rows M --in K --out N [--epilogue 0|1|2] [--iters N] "
               "[--seed S] [--check 0|1]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  struct Flag {
    const char* name;
    int* value;
  } flags[] = {{"--rows", &o.rows},         {"--in", &o.in},       {"--out", &o.out},
               {"--epilogue", &o.epilogue}, {"--iters", &o.iters}, {"--seed", &o.seed},
               {"--check", &o.check}};
  for (int a = 1; a < argc; a += 2) {
    Flag* flag = nullptr;
    for (auto& f : flags)
      if (std::strcmp(argv[a], f.name) == 0) flag = &f;
    if (flag == nullptr) usage(milmer::str("unknown argument '", argv[a], "'").c_str());
    if (a + 1 >= argc) usage(milmer::str(argv[a], " needs a value").c_str());
    char* end = nullptr;
    const long v = std::strtol(argv[a + 1], &end, 10);
    if (*end != '\0' || v < 0 || v > 1000000)
      usage(milmer::str(argv[a], ": expected an integer 0..1000000, got '", argv[a + 1], "'")
                .c_str());
    *flag->value = static_cast<int>(v);
  }
  if (o.rows < 1 || o.in < 1 || o.out < 1 || o.iters < 1)
    usage("rows, in, out and iters must be at least 1");
  if (o.epilogue > 2) usage("epilogue must be 0 (none), 1 (relu) or 2 (gelu)");
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

template <class S>
std::vector<double> as_double(const std::vector<S>& v) {
  return std::vector<double>(v.begin(), v.end());
}

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
  const int M = o.rows, K = o.in, N = o.out;
  const auto e = static_cast<milmer::Epilogue>(o.epilogue);
  std::printf("gemm_lab [%s]: M %d K %d N %d epilogue %s\n", milmer::target_name(), M, K, N,
              milmer::epilogue_name(e));

  std::mt19937_64 rng(static_cast<std::uint64_t>(o.seed));
  auto random = [&](std::size_t n, float scale) {
    std::uniform_real_distribution<float> d(-scale, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
  };
  const auto x = random(std::size_t(M) * K, 1.0f);
  const auto w = random(std::size_t(N) * K, 1.0f / std::sqrt(float(K)));
  const auto b = random(N, 0.1f);
  const auto dout = random(std::size_t(M) * N, 1.0f);

  milmer::Context ctx;
  auto d_x = device(x), d_w = device(w), d_b = device(b), d_dout = device(dout);
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

  bool ok = true;
  if (o.check) {
    forward();
    d_dw.zero();
    d_db.zero();
    backward();
    // What the backward saw: the stored pre-activation (gelu) or the output (relu: its sign
    // is the pre-activation's). Unused for none.
    const auto pre32 = gelu ? host(d_pre) : host(d_out);
    const auto r64 = reference<double>(M, N, K, e, x, w, b, dout, pre32);
    const auto r32 = reference<float>(M, N, K, e, x, w, b, dout, pre32);
    ok &= compare("out", host(d_out), as_double(r64.out), r32.out);
    ok &= compare("dinp", host(d_dinp), as_double(r64.dinp), r32.dinp);
    ok &= compare("dweight", host(d_dw), as_double(r64.dw), r32.dw);
    ok &= compare("dbias", host(d_db), as_double(r64.db), r32.db);
  }

  const double mn = double(M) * N, mk = double(M) * K, nk = double(N) * K;
  const double fwd_bytes = 4 * (mk + nk + N + mn * (gelu ? 2 : 1));
  const double bwd_bytes =
      4 * (mn * (e == milmer::Epilogue::none ? 1 : 4) + 2 * mk + 3 * nk + 2 * N);
  const float fwd_ms = time_ms(forward, o.iters, ctx.stream());
  const float bwd_ms = time_ms(backward, o.iters, ctx.stream());
  std::printf("  linear_forward   %9.4f ms  %8.2f GB/s  %7.3f TFLOP/s\n", fwd_ms,
              fwd_bytes / (fwd_ms * 1e6), 2 * mn * K / (fwd_ms * 1e9));
  std::printf("  linear_backward  %9.4f ms  %8.2f GB/s  %7.3f TFLOP/s\n", bwd_ms,
              bwd_bytes / (bwd_ms * 1e6), 4 * mn * K / (bwd_ms * 1e9));
  return ok ? 0 : 1;
}
