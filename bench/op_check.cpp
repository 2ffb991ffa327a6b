// milmer_op_check: one op on fixed-seed inputs, its inputs and outputs written to safetensors,
// so bench/compare_pytorch.py can run PyTorch on exactly the same numbers and report the
// maximum absolute difference next to the times.
//
//   milmer_op_check --op NAME --out FILE.safetensors [--images N]
//
// Ops (the shapes of the benchmark suites; --images sets the Swin-shaped batch):
//   layernorm           x (1358, 768), weight, bias, dout -> out, dx, dweight, dbias
//   gelu                x (images*3136*384), dout -> out, dx
//   linear_relu         x (1358, 768), weight (2048, 768), bias -> out
//   window_attention    qkv (images, 56, 56, 288), table (169, 3), shift 3 -> out
//   mha_self            q, k, v (14, 97, 768), 12 heads, no dropout -> out
//   residual_layernorm  x, branch (1358, 768), branch_bias, weight, bias, no dropout -> out
//   softmax_ce          logits (14, 4), labels -> loss, dlogits
//   adamw               param, grad (2^20), first step from zero moments -> param, m, v
// Tensor names: inputs as above, outputs prefixed "out." (out.out, out.dx, ...).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "milmer/io/safetensors.hpp"
#include "milmer/kernels/activation.hpp"
#include "milmer/kernels/adamw.hpp"
#include "milmer/kernels/gemm.hpp"
#include "milmer/kernels/layernorm.hpp"
#include "milmer/kernels/mha_attention.hpp"
#include "milmer/kernels/residual_layernorm.hpp"
#include "milmer/kernels/softmax_ce.hpp"
#include "milmer/kernels/window_attention.hpp"
#include "milmer/memory.hpp"

namespace {

using milmer::DeviceBuffer;
using milmer::TensorView;
using Floats = std::vector<float>;

Floats random_floats(std::size_t n, std::uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  // A small LCG: the file carries the numbers, so the generator only has to be fixed.
  Floats v(n);
  std::uint64_t x = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (auto& f : v) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    f = lo + (hi - lo) * float(x >> 40) / float(1ull << 24);
  }
  return v;
}

class Op {
 public:
  DeviceBuffer<float>& input(const std::string& name, milmer::io::Shape shape, float lo = -1.0f,
                             float hi = 1.0f) {
    const auto host = random_floats(std::size_t(milmer::io::shape_numel(shape)), ++seed_, lo, hi);
    tensors_[name] = milmer::io::Tensor::from(shape, host);
    auto& b = buffers_[name] = DeviceBuffer<float>(host.size());
    b.upload(host.data(), host.size());
    return b;
  }
  DeviceBuffer<float>& output(const std::string& name, milmer::io::Shape shape) {
    shapes_[name] = shape;
    auto& b = buffers_["out." + name] =
        DeviceBuffer<float>(std::size_t(milmer::io::shape_numel(shape)));
    b.zero();
    return b;
  }
  void write(const std::string& path, const std::string& op) {
    for (const auto& [name, shape] : shapes_) {
      auto& b = buffers_["out." + name];
      Floats host(b.size());
      b.download(host.data(), host.size());
      tensors_["out." + name] = milmer::io::Tensor::from(shape, host);
    }
    milmer::io::write_safetensors(path, tensors_, {{"op", op}, {"target", milmer::target_name()}});
  }
  void add_tensor(const std::string& name, milmer::io::Tensor t) { tensors_[name] = std::move(t); }

 private:
  std::uint64_t seed_ = 100;
  std::map<std::string, DeviceBuffer<float>> buffers_;
  std::map<std::string, milmer::io::Shape> shapes_;
  milmer::io::TensorMap tensors_;
};

template <class T = float>
TensorView<const T> c(DeviceBuffer<T>& b, std::initializer_list<std::int64_t> d) {
  return TensorView<const T>(b.data(), d);
}
template <class T = float>
TensorView<T> m(DeviceBuffer<T>& b, std::initializer_list<std::int64_t> d) {
  return TensorView<T>(b.data(), d);
}

void run(const std::string& name, int images, Op& op, milmer::Context& ctx) {
  constexpr std::int64_t R = 1358, W = 768;
  if (name == "layernorm") {
    auto &x = op.input("x", {R, W}), &w = op.input("weight", {W}), &b = op.input("bias", {W});
    auto& dout = op.input("dout", {R, W});
    auto &out = op.output("out", {R, W}), &dx = op.output("dx", {R, W});
    auto &dw = op.output("dweight", {W}), &db = op.output("dbias", {W});
    DeviceBuffer<float> mean(R), rstd(R),
        scratch(milmer::layernorm_backward_scratch_elements(R, W));
    milmer::layernorm_forward<float>(ctx, m(out, {R, W}), m(mean, {R}), m(rstd, {R}), c(x, {R, W}),
                                     c(w, {W}), c(b, {W}), 1e-5f);
    milmer::layernorm_backward<float>(ctx, m(dx, {R, W}), m(dw, {W}), m(db, {W}),
                                      m(scratch, {std::int64_t(scratch.size())}), c(dout, {R, W}),
                                      c(x, {R, W}), c(w, {W}), c(mean, {R}), c(rstd, {R}), false);
  } else if (name == "gelu") {
    const std::int64_t n = std::int64_t{images} * 3136 * 384;
    auto &x = op.input("x", {n}, -3, 3), &dout = op.input("dout", {n});
    auto &out = op.output("out", {n}), &dx = op.output("dx", {n});
    milmer::gelu_forward<float>(ctx, m(out, {n}), c(x, {n}));
    milmer::gelu_backward<float>(ctx, m(dx, {n}), c(dout, {n}), c(x, {n}));
  } else if (name == "linear_relu") {
    constexpr std::int64_t N = 2048;
    auto &x = op.input("x", {R, W}), &w = op.input("weight", {N, W}, -0.05f, 0.05f);
    auto& b = op.input("bias", {N});
    auto& out = op.output("out", {R, N});
    milmer::linear_forward<float>(ctx, m(out, {R, N}), c(x, {R, W}), c(w, {N, W}), c(b, {N}),
                                  milmer::Epilogue::relu);
  } else if (name == "window_attention") {
    const std::int64_t B = images, H = 56, C = 96, heads = 3, window = 7, N = 49;
    const std::int64_t windows = 64;
    auto& qkv = op.input("qkv", {B, H, H, 3 * C});
    auto& table = op.input("table", {169, heads});
    auto& out = op.output("out", {B, H, H, C});
    DeviceBuffer<float> lse(B * heads * windows * N);
    milmer::window_attention_forward<float>(
        ctx, m(out, {B, H, H, C}), m(lse, {B, heads, windows, N}), c(qkv, {B, H, H, 3 * C}),
        c(table, {169, heads}), int(heads), int(window), 3);
  } else if (name == "mha_self") {
    constexpr std::int64_t B = 14, L = 97;
    auto &q = op.input("q", {B, L, W}), &k = op.input("k", {B, L, W}),
         &v = op.input("v", {B, L, W});
    auto& out = op.output("out", {B, L, W});
    DeviceBuffer<float> lse(B * 12 * L);
    milmer::mha_attention_forward<float>(ctx, m(out, {B, L, W}), m(lse, {B, 12, L}),
                                         c(q, {B, L, W}), c(k, {B, L, W}), c(v, {B, L, W}), 12);
  } else if (name == "residual_layernorm") {
    auto &x = op.input("x", {R, W}), &branch = op.input("branch", {R, W});
    auto& bb = op.input("branch_bias", {W});
    auto &w = op.input("weight", {W}), &b = op.input("bias", {W});
    auto& out = op.output("out", {R, W});
    DeviceBuffer<float> sum(R * W), mean(R), rstd(R);
    milmer::residual_layernorm_forward<float>(ctx, m(out, {R, W}), m(sum, {R, W}), m(mean, {R}),
                                              m(rstd, {R}), c(x, {R, W}), c(branch, {R, W}),
                                              c(bb, {W}), c(w, {W}), c(b, {W}), 1e-5f, 0.0f, 0, 0);
  } else if (name == "softmax_ce") {
    constexpr std::int64_t B = 14, K = 4;
    auto& logits = op.input("logits", {B, K}, -4, 4);
    std::vector<int> labels(B);
    std::vector<std::int64_t> labels64(B);
    for (int i = 0; i < B; ++i) labels64[i] = labels[i] = i % K;
    op.add_tensor("labels", milmer::io::Tensor::from(milmer::io::Shape{B}, labels64));
    DeviceBuffer<int> dlabels(B);
    dlabels.upload(labels.data(), labels.size());
    auto &loss = op.output("loss", {1}), &dlogits = op.output("dlogits", {B, K});
    DeviceBuffer<float> losses(B);
    milmer::softmax_ce_forward<float>(ctx, m(loss, {1}), m(losses, {B}), m(dlogits, {B, K}),
                                      c(logits, {B, K}), c(dlabels, {B}), 1.0f, labels);
  } else if (name == "adamw") {
    constexpr std::int64_t n = 1 << 20;
    auto &p0 = op.input("param", {n}), &g = op.input("grad", {n});
    auto &p = op.output("param", {n}), &mo = op.output("m", {n}), &vo = op.output("v", {n});
    MILMER_CUDA_CHECK(cudaMemcpy(p.data(), p0.data(), n * 4, cudaMemcpyDeviceToDevice));
    milmer::adamw_update<float>(ctx, m(p, {n}), m(mo, {n}), m(vo, {n}), c(g, {n}), 1,
                                milmer::AdamWConfig{});
  } else {
    throw milmer::Error("milmer_op_check", "--op",
                        "layernorm, gelu, linear_relu, window_attention, mha_self, "
                        "residual_layernorm, softmax_ce or adamw",
                        name);
  }
  ctx.synchronize();
}

}  // namespace

int main(int argc, char** argv) {
  std::string op_name, out;
  int images = 1;
  for (int a = 1; a + 1 < argc; a += 2) {
    const std::string flag = argv[a];
    if (flag == "--op") {
      op_name = argv[a + 1];
    } else if (flag == "--out") {
      out = argv[a + 1];
    } else if (flag == "--images") {
      images = std::max(1, std::atoi(argv[a + 1]));
    } else {
      std::fprintf(stderr, "milmer_op_check: unknown argument %s\n", flag.c_str());
      return 2;
    }
  }
  if (op_name.empty() || out.empty()) {
    std::fprintf(stderr, "usage: milmer_op_check --op NAME --out FILE.safetensors [--images N]\n");
    return 2;
  }
  try {
    milmer::Context ctx;
    Op op;
    run(op_name, images, op, ctx);
    op.write(out, op_name);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "milmer_op_check: error: %s\n", e.what());
    return 1;
  }
}
