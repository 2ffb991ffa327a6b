// Kernel lab: Swin shifted-window attention (include/milmer/kernels/window_attention.hpp).
//
//   window_attention_lab --batch 8 --res 56 --window 7 --heads 3 --head-dim 32 --shift 3
//                        [--iters 20] [--seed 1] [--check 1]
//
// Runs the library's forward and backward on a res x res map, checks them against the fp64
// unfused composition (kernel error <= 4 x the error of the plain fp32 composition plus a tiny
// absolute term, the rule of tests/support.hpp), then prints the time per call, GB/s from the
// minimum bytes moved and GFLOP/s. Exit status 1 when the check fails, 2 on bad arguments.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "milmer/context.hpp"
#include "milmer/kernels/window_attention.hpp"
#include "milmer/memory.hpp"

namespace {

struct Options {
  int batch = 8, res = 56, window = 7, heads = 3, head_dim = 32, shift = 3;
  int iters = MILMER_TARGET_CUDA ? 20 : 2;
  int seed = 1, check = 1;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "%s\nusage: window_attention_lab --batch B --res R --window W --heads H "
               "--head-dim D --shift S [--iters N] [--seed S] [--check 0|1]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  struct Flag {
    const char* name;
    int* value;
  } flags[] = {{"--batch", &o.batch}, {"--res", &o.res},           {"--window", &o.window},
               {"--heads", &o.heads}, {"--head-dim", &o.head_dim}, {"--shift", &o.shift},
               {"--iters", &o.iters}, {"--seed", &o.seed},         {"--check", &o.check}};
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
  if (o.batch < 1 || o.res < 1 || o.iters < 1) usage("batch, res and iters must be at least 1");
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
  std::printf("  check %-8s max error %.3e  plain fp32 %.3e  bound %.3e  %s\n", what, err,
              plain_err, bound, ok ? "ok" : "FAILED");
  return ok;
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
  const milmer::reference::WindowAttentionSizes z{o.batch,    o.res,    o.res,  o.heads,
                                                  o.head_dim, o.window, o.shift};
  std::mt19937_64 rng(static_cast<std::uint64_t>(o.seed));
  const std::size_t C = static_cast<std::size_t>(z.channels());
  const std::size_t tokens = static_cast<std::size_t>(z.batch) * z.height * z.width;
  const std::size_t padded_tokens =
      static_cast<std::size_t>(z.batch) * z.padded_height() * z.padded_width();
  const std::size_t table_size = static_cast<std::size_t>(z.table_rows()) * z.heads;
  const std::size_t lse_size =
      static_cast<std::size_t>(z.batch) * z.heads * z.windows() * z.tokens();
  const std::size_t slots = static_cast<std::size_t>(z.batch) * z.windows();

  const auto qkv_unpadded = random_vector(tokens * 3 * C, rng, -2, 2);
  const auto qkv_bias = random_vector(3 * C, rng, -1, 1);
  const auto qkv_host = milmer::reference::window_attention_pad(qkv_unpadded, qkv_bias, z);
  const auto table_host = random_vector(table_size, rng, -1, 1);
  const auto dout_host = random_vector(tokens * C, rng, -1, 1);

  milmer::Context ctx;
  auto qkv = device(qkv_host), table = device(table_host), dout = device(dout_host);
  milmer::DeviceBuffer<float> out(tokens * C), lse(lse_size), dqkv(padded_tokens * 3 * C),
      d_table(table_size), workspace(z.heads * z.table_rows() * slots);
  d_table.zero(ctx.stream());

  const auto out_v = milmer::view(out.data(), {z.batch, z.height, z.width, z.channels()});
  const auto dout_v = milmer::view(static_cast<const float*>(dout.data()),
                                   {z.batch, z.height, z.width, z.channels()});
  const std::initializer_list<std::int64_t> qkv_shape = {z.batch, z.padded_height(),
                                                         z.padded_width(), 3 * z.channels()};
  const auto qkv_v = milmer::view(static_cast<const float*>(qkv.data()), qkv_shape);
  const auto dqkv_v = milmer::view(dqkv.data(), qkv_shape);
  const auto table_v =
      milmer::view(static_cast<const float*>(table.data()), {z.table_rows(), z.heads});
  const auto d_table_v = milmer::view(d_table.data(), {z.table_rows(), z.heads});
  const auto lse_v = milmer::view(lse.data(), {z.batch, z.heads, z.windows(), z.tokens()});
  const auto workspace_v =
      milmer::view(workspace.data(), {z.heads, z.table_rows(), static_cast<std::int64_t>(slots)});

  const auto forward = [&] {
    milmer::window_attention_forward<float>(ctx, out_v, lse_v, qkv_v, table_v, z.heads, z.window,
                                            z.shift);
  };
  const auto backward = [&] {
    milmer::window_attention_backward<float>(ctx, dqkv_v, d_table_v, workspace_v, dout_v, qkv_v,
                                             table_v, lse_v, z.heads, z.window, z.shift);
  };
  try {
    forward();
    backward();
  } catch (const milmer::Error& e) {
    usage(e.what());
  }

  const milmer::kernels::WindowAttentionShape shape{
      z.batch, z.height,   z.width,  z.padded_height(), z.padded_width(),
      z.heads, z.head_dim, z.window, z.shift,           0.0f};
  std::printf(
      "window_attention (%s): batch %d, map %dx%d (padded %dx%d), window %d, shift %d, "
      "heads %d, head_dim %d\n",
      milmer::target_name(), z.batch, z.height, z.width, z.padded_height(), z.padded_width(),
      z.window, z.shift, z.heads, z.head_dim);
  std::printf("  grid (%d, %d, %d) x %d threads, shared memory forward %zu B, backward %zu B\n",
              z.windows(), z.heads, z.batch, milmer::kernels::kWindowAttentionThreads,
              milmer::kernels::window_attention_shared_bytes(shape, 3),
              milmer::kernels::window_attention_shared_bytes(shape, 4));

  bool ok = true;
  if (o.check) {
    const auto ref = milmer::reference::window_attention_forward(
        std::vector<double>(qkv_host.begin(), qkv_host.end()),
        std::vector<double>(table_host.begin(), table_host.end()), z);
    const auto plain = milmer::reference::window_attention_forward(qkv_host, table_host, z);
    ok &= compare("out", host(out), ref.out, plain.out);
    ok &= compare("lse", host(lse), ref.lse, plain.lse);
    const auto ref_b = milmer::reference::window_attention_backward(
        std::vector<double>(dout_host.begin(), dout_host.end()),
        std::vector<double>(qkv_host.begin(), qkv_host.end()),
        std::vector<double>(table_host.begin(), table_host.end()), z);
    const auto plain_b =
        milmer::reference::window_attention_backward(dout_host, qkv_host, table_host, z);
    ok &= compare("dqkv", host(dqkv), ref_b.dqkv, plain_b.dqkv);
    ok &= compare("d_table", host(d_table), ref_b.d_table, plain_b.d_table);
  }

  // Minimum bytes (see the header): forward reads qkv and the table and writes out; backward
  // reads qkv, dout, lse and the table, writes dqkv and reads + writes d_table.
  const double s = sizeof(float);
  const double forward_bytes = (padded_tokens * 3 * C + table_size + tokens * C) * s;
  const double backward_bytes =
      (2 * padded_tokens * 3 * C + tokens * C + 3 * table_size) * s + lse_size * 4.0;
  const double window_heads = double(slots) * z.heads;
  const double n2d = double(z.tokens()) * z.tokens() * z.head_dim;
  const double forward_flops = window_heads * 4 * n2d;    // Q K^T, P V
  const double backward_flops = window_heads * 10 * n2d;  // S again, dV, dP, dQ, dK
  const float forward_ms = time_ms(forward, o.iters, ctx.stream());
  const float backward_ms = time_ms(backward, o.iters, ctx.stream());
  std::printf("  forward   %10.4f ms  %8.2f GB/s  %8.2f GFLOP/s  (%.2f MB moved at minimum)\n",
              forward_ms, forward_bytes / forward_ms * 1e-6, forward_flops / forward_ms * 1e-6,
              forward_bytes * 1e-6);
  std::printf("  backward  %10.4f ms  %8.2f GB/s  %8.2f GFLOP/s  (%.2f MB moved at minimum)\n",
              backward_ms, backward_bytes / backward_ms * 1e-6, backward_flops / backward_ms * 1e-6,
              backward_bytes * 1e-6);
  return ok ? 0 : 1;
}
