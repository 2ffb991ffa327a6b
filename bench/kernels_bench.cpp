// Kernel-family benchmarks: every family's forward and backward on the model's own shapes.
// Names are <family>/<fwd|bwd>/<shape>, so --benchmark_filter selects by family or direction.
// Minimum bytes are each header's "Minimum bytes moved" formula; FLOPs are counted where the
// kernel's work is arithmetic (GEMMs, attention).
//
// Shapes (the paper preset, docs/model.md §1 and §9; batch 14):
//   fusion rows     14 x 97 = 1358 tokens of width 768 (LayerNorm, residual LayerNorm, bias,
//                   residual add, dropout and ReLU on 1358 x 2048, linear1 768 -> 2048)
//   Swin stage 1    swin_images() images x 56 x 56 tokens, width 96, MLP 384, 3 heads x 32,
//                   window 7, shift 3; stage 3 at 14 x 14, width 384, 12 heads
//   attention core  self-attention 14 x 97 tokens, 12 heads x 64; cross-attention 64
//                   queries over 147 keys
//   AMIL            B 14, F 10, M 49, D 768, hidden 128, K 3
//   tokens          B 14, N 64 visual, C 32 EEG, D 768
//   AdamW           41,432,959 parameters (the paper model) on a GPU, 2^20 on the host
#include <cmath>
#include <cstdint>
#include <string>

#include "bench_support.hpp"
#include "milmer/kernels/activation.hpp"
#include "milmer/kernels/adamw.hpp"
#include "milmer/kernels/amil.hpp"
#include "milmer/kernels/dropout.hpp"
#include "milmer/kernels/elementwise.hpp"
#include "milmer/kernels/gemm.hpp"
#include "milmer/kernels/layernorm.hpp"
#include "milmer/kernels/mha_attention.hpp"
#include "milmer/kernels/residual_layernorm.hpp"
#include "milmer/kernels/softmax_ce.hpp"
#include "milmer/kernels/tokens.hpp"
#include "milmer/kernels/window_attention.hpp"

namespace milmer::bench {
namespace {

constexpr double kF = 4.0;  // sizeof(float): every suite runs float storage
constexpr std::int64_t kBatch = 14, kFusionTokens = 97, kWidth = 768, kFfn = 2048;
constexpr std::int64_t kFusionRows = kBatch * kFusionTokens;

std::string dims(std::int64_t a, std::int64_t b) {
  return str(a, "x", b);
}

// ---- LayerNorm -------------------------------------------------------------------------
void layernorm_suite(const std::string& tag, std::int64_t rows, std::int64_t width) {
  const std::string shape = dims(rows, width);
  add("layernorm/fwd/" + tag + shape, [=](benchmark::State& state) {
    auto x = random_buffer(rows * width, 1), w = random_buffer(width, 2),
         b = random_buffer(width, 3);
    auto out = zero_buffer(rows * width), mean = zero_buffer(rows), rstd = zero_buffer(rows);
    run(state,
        [&] {
          layernorm_forward<float>(context(), mv(out, {rows, width}), mv(mean, {rows}),
                                   mv(rstd, {rows}), cv(x, {rows, width}), cv(w, {width}),
                                   cv(b, {width}), 1e-5f);
        },
        {2 * rows * width * kF + 2 * width * kF + 8.0 * rows});
  });
  add("layernorm/bwd/" + tag + shape, [=](benchmark::State& state) {
    auto x = random_buffer(rows * width, 1), w = random_buffer(width, 2),
         b = random_buffer(width, 3);
    auto dout = random_buffer(rows * width, 4);
    auto out = zero_buffer(rows * width), mean = zero_buffer(rows), rstd = zero_buffer(rows);
    auto dx = zero_buffer(rows * width), dw = zero_buffer(width), db = zero_buffer(width);
    auto scratch = zero_buffer(layernorm_backward_scratch_elements(rows, width));
    Context& ctx = context();
    layernorm_forward<float>(ctx, mv(out, {rows, width}), mv(mean, {rows}), mv(rstd, {rows}),
                             cv(x, {rows, width}), cv(w, {width}), cv(b, {width}), 1e-5f);
    run(state,
        [&] {
          layernorm_backward<float>(ctx, mv(dx, {rows, width}), mv(dw, {width}), mv(db, {width}),
                                    mv(scratch, {std::int64_t(scratch.size())}),
                                    cv(dout, {rows, width}), cv(x, {rows, width}), cv(w, {width}),
                                    cv(mean, {rows}), cv(rstd, {rows}), false);
        },
        {3 * rows * width * kF + 5 * width * kF + 8.0 * rows});
  });
}

// ---- GELU / ReLU -----------------------------------------------------------------------
void activation_suite(const std::string& name, std::int64_t n, bool gelu) {
  add(name + "/fwd/" + std::to_string(n), [=](benchmark::State& state) {
    auto x = random_buffer(n, 1, -3, 3), y = zero_buffer(n);
    run(state,
        [&] {
          if (gelu)
            gelu_forward<float>(context(), mv(y, {n}), cv(x, {n}));
          else
            relu_forward<float>(context(), mv(y, {n}), cv(x, {n}));
        },
        {2 * n * kF});
  });
  add(name + "/bwd/" + std::to_string(n), [=](benchmark::State& state) {
    auto x = random_buffer(n, 1, -3, 3), dy = random_buffer(n, 2), dx = zero_buffer(n);
    run(state,
        [&] {
          if (gelu)
            gelu_backward<float>(context(), mv(dx, {n}), cv(dy, {n}), cv(x, {n}));
          else
            relu_backward<float>(context(), mv(dx, {n}), cv(dy, {n}), cv(x, {n}));
        },
        {3 * n * kF});
  });
}

// ---- bias add, residual add ------------------------------------------------------------
void elementwise_suite(std::int64_t rows, std::int64_t cols) {
  const std::string shape = dims(rows, cols);
  const std::int64_t n = rows * cols;
  add("bias_add/fwd/" + shape, [=](benchmark::State& state) {
    auto out = random_buffer(n, 1), bias = random_buffer(cols, 2);
    run(state,
        [&] {
          bias_add_forward<float>(context(), mv(out, {rows, cols}), cv(bias, {cols}));
        },
        {2 * n * kF + cols * kF});
  });
  add("bias_add/bwd/" + shape, [=](benchmark::State& state) {
    auto dout = random_buffer(n, 1), dbias = zero_buffer(cols);
    auto scratch = zero_buffer(bias_add_backward_scratch_elements(rows, cols));
    run(state,
        [&] {
          bias_add_backward<float>(context(), mv(dbias, {cols}), cv(dout, {rows, cols}),
                                   mv(scratch, {std::int64_t(scratch.size())}));
        },
        {n * kF + 2 * cols * kF});
  });
  add("residual_add/fwd/" + shape, [=](benchmark::State& state) {
    auto a = random_buffer(n, 1), b = random_buffer(n, 2), out = zero_buffer(n);
    run(state, [&] { add_forward<float>(context(), mv(out, {n}), cv(a, {n}), cv(b, {n})); },
        {3 * n * kF});
  });
  add("residual_add/bwd/" + shape, [=](benchmark::State& state) {
    auto dst = random_buffer(n, 1), src = random_buffer(n, 2);
    run(state, [&] { add_inplace<float>(context(), mv(dst, {n}), cv(src, {n})); }, {3 * n * kF});
  });
}

// ---- dropout ---------------------------------------------------------------------------
void dropout_suite(std::int64_t n) {
  add("dropout/fwd/" + std::to_string(n), [=](benchmark::State& state) {
    auto x = random_buffer(n, 1), y = zero_buffer(n);
    run(state, [&] { dropout_forward<float>(context(), mv(y, {n}), cv(x, {n}), 0.2f, 7, 1); },
        {2 * n * kF});
  });
  add("dropout/bwd/" + std::to_string(n), [=](benchmark::State& state) {
    auto dy = random_buffer(n, 1), dx = zero_buffer(n);
    run(state, [&] { dropout_backward<float>(context(), mv(dx, {n}), cv(dy, {n}), 0.2f, 7, 1); },
        {2 * n * kF});
  });
}

// ---- softmax + cross-entropy -----------------------------------------------------------
void softmax_ce_suite(std::int64_t rows, std::int64_t classes) {
  add("softmax_ce/fwd_bwd/" + dims(rows, classes), [=](benchmark::State& state) {
    auto logits = random_buffer(rows * classes, 1, -4, 4), dlogits = zero_buffer(rows * classes);
    auto losses = zero_buffer(rows), mean = zero_buffer(1);
    std::vector<int> labels(static_cast<std::size_t>(rows));
    for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = int(i % classes);
    DeviceBuffer<int> dlabels(labels.size());
    dlabels.upload(labels.data(), labels.size());
    run(state,
        [&] {
          softmax_ce_forward<float>(context(), mv(mean, {1}), mv(losses, {rows}),
                                    mv(dlogits, {rows, classes}), cv(logits, {rows, classes}),
                                    TensorView<const int>(dlabels.data(), {rows}), 1.0f, labels);
        },
        {8 * rows * classes + 8.0 * rows + 4});
  });
}

// ---- AdamW -----------------------------------------------------------------------------
void adamw_suite(std::int64_t n) {
  add("adamw/step/" + std::to_string(n), [=](benchmark::State& state) {
    auto p = random_buffer(n, 1), g = random_buffer(n, 2), m = zero_buffer(n), v = zero_buffer(n);
    int step = 0;
    run(state,
        [&] {
          adamw_update<float>(context(), mv(p, {n}), mv(m, {n}), mv(v, {n}), cv(g, {n}), ++step,
                              AdamWConfig{});
        },
        {28.0 * n});
  });
}

// ---- GEMM / Linear ---------------------------------------------------------------------
// Forward: 2 M N K flops, (M K + N K + M N + N) x 4 bytes (+ M N for GELU's stored
// pre-activation). Backward: dweight and dinp, 4 M N K flops; reads dout, inp, weight,
// (saved for an activation), reads + writes dweight and dbias, writes dinp.
void linear_suite(const std::string& tag, std::int64_t M, std::int64_t K, std::int64_t N,
                  Epilogue act) {
  const std::string shape = str(tag, M, "x", K, "->", N, "_", epilogue_name(act));
  const double pre = act == Epilogue::gelu ? M * N * kF : 0.0;
  const double saved = act == Epilogue::none ? 0.0 : M * N * kF;
  add("linear/fwd/" + shape, [=](benchmark::State& state) {
    auto x = random_buffer(M * K, 1), w = random_buffer(N * K, 2, -0.05f, 0.05f);
    auto b = random_buffer(N, 3), out = zero_buffer(M * N), pre_buf = zero_buffer(M * N);
    run(state,
        [&] {
          linear_forward<float>(context(), mv(out, {M, N}), cv(x, {M, K}), cv(w, {N, K}),
                                cv(b, {N}), act,
                                act == Epilogue::gelu ? mv(pre_buf, {M, N}) : TensorView<float>{});
        },
        {(M * K + N * K + M * N + N) * kF + pre, 2.0 * M * N * K});
  });
  add("linear/bwd/" + shape, [=](benchmark::State& state) {
    auto x = random_buffer(M * K, 1), w = random_buffer(N * K, 2, -0.05f, 0.05f);
    auto dout = random_buffer(M * N, 4), saved_buf = random_buffer(M * N, 5);
    auto dx = zero_buffer(M * K), dw = zero_buffer(N * K), db = zero_buffer(N);
    auto dpre = zero_buffer(M * N);
    run(state,
        [&] {
          linear_backward<float>(
              context(), mv(dx, {M, K}), mv(dw, {N, K}), mv(db, {N}), cv(dout, {M, N}),
              cv(x, {M, K}), cv(w, {N, K}), act,
              act == Epilogue::none ? TensorView<const float>{} : cv(saved_buf, {M, N}),
              act == Epilogue::none ? TensorView<float>{} : mv(dpre, {M, N}));
        },
        {(M * N + M * K + N * K + 2 * N * K + 2 * N + M * K) * kF + saved, 4.0 * M * N * K});
  });
}

// ---- Swin window attention -------------------------------------------------------------
void window_attention_suite(int images, int res, int window, int heads, int head_dim, int shift) {
  const std::string shape =
      str("B", images, "_res", res, "_w", window, "_h", heads, "x", head_dim, "_shift", shift);
  const std::int64_t C = std::int64_t{heads} * head_dim;
  const std::int64_t hp = (res + window - 1) / window * window;
  const std::int64_t windows = (hp / window) * (hp / window), N = std::int64_t{window} * window;
  const std::int64_t R = (2 * window - 1) * (2 * window - 1);
  const std::int64_t tp = std::int64_t{images} * hp * hp, t0 = std::int64_t{images} * res * res;
  const std::int64_t lse_n = std::int64_t{images} * heads * windows * N;
  const double flops_per_matmul = 2.0 * images * windows * heads * N * N * head_dim;
  struct Buffers {
    DeviceBuffer<float> qkv, table, out, lse, dout, dqkv, dtable, workspace;
  };
  auto make = [=] {
    return Buffers{random_buffer(tp * 3 * C, 1), random_buffer(R * heads, 2),
                   zero_buffer(t0 * C),          zero_buffer(lse_n),
                   random_buffer(t0 * C, 3),     zero_buffer(tp * 3 * C),
                   zero_buffer(R * heads),       zero_buffer(heads * R * images * windows)};
  };
  auto forward = [=](Buffers& b) {
    window_attention_forward<float>(
        context(), mv(b.out, {images, res, res, C}), mv(b.lse, {images, heads, windows, N}),
        cv(b.qkv, {images, hp, hp, 3 * C}), cv(b.table, {R, heads}), heads, window, shift);
  };
  add_forward_backward(
      "window_attention", shape, make, forward,
      {(3 * tp * C + R * heads + t0 * C) * kF + lse_n * 4.0, 2 * flops_per_matmul},
      [=](Buffers& b) {
        window_attention_backward<float>(
            context(), mv(b.dqkv, {images, hp, hp, 3 * C}), mv(b.dtable, {R, heads}),
            mv(b.workspace, {heads, R, std::int64_t{images} * windows}),
            cv(b.dout, {images, res, res, C}), cv(b.qkv, {images, hp, hp, 3 * C}),
            cv(b.table, {R, heads}), cv(b.lse, {images, heads, windows, N}), heads, window, shift);
      },
      {(3 * tp * C + t0 * C + 3 * tp * C + 3 * R * heads) * kF + lse_n * 4.0,
       5 * flops_per_matmul});
}

// ---- attention core (MultiheadAttention between the projections) -----------------------
// Useful flops: forward 2 matmuls (S = q k^T, O = P v), backward 5 (S recomputed, dV, dP, dQ,
// dK), 2 B Lq Lk D each.
void mha_suite(const std::string& tag, std::int64_t B, std::int64_t lq, std::int64_t lk,
               std::int64_t D, int heads, float p) {
  const std::string shape = str(tag, "_B", B, "_", lq, "x", lk, "_D", D, "_h", heads);
  const double matmul = 2.0 * B * lq * lk * D;
  struct Buffers {
    DeviceBuffer<float> q, k, v, out, lse, dout, dq, dk, dv;
  };
  auto make = [=] {
    return Buffers{
        random_buffer(B * lq * D, 1), random_buffer(B * lk * D, 2), random_buffer(B * lk * D, 3),
        zero_buffer(B * lq * D),      zero_buffer(B * heads * lq),  random_buffer(B * lq * D, 4),
        zero_buffer(B * lq * D),      zero_buffer(B * lk * D),      zero_buffer(B * lk * D)};
  };
  auto forward = [=](Buffers& b) {
    mha_attention_forward<float>(context(), mv(b.out, {B, lq, D}), mv(b.lse, {B, heads, lq}),
                                 cv(b.q, {B, lq, D}), cv(b.k, {B, lk, D}), cv(b.v, {B, lk, D}),
                                 heads, p, 11, 0);
  };
  add_forward_backward("mha_attention", shape, make, forward,
                       {4.0 * (B * lq * D * 2 + B * lk * D * 2 + B * heads * lq), 2 * matmul},
                       [=](Buffers& b) {
                         mha_attention_backward<float>(
                             context(), mv(b.dq, {B, lq, D}), mv(b.dk, {B, lk, D}),
                             mv(b.dv, {B, lk, D}), cv(b.dout, {B, lq, D}), cv(b.q, {B, lq, D}),
                             cv(b.k, {B, lk, D}), cv(b.v, {B, lk, D}), cv(b.out, {B, lq, D}),
                             cv(b.lse, {B, heads, lq}), heads, p, 11, 0);
                       },
                       {4.0 * (B * lq * D * 4 + B * lk * D * 4 + B * heads * lq), 5 * matmul});
}

// ---- AMIL ------------------------------------------------------------------------------
// Minimum: forward reads X once and writes Z (plus the small scoring tensors); backward
// (scores detached, the model's default) reads dZ and the selected frames of X and writes dX.
void amil_suite(std::int64_t B, std::int64_t F, std::int64_t M, std::int64_t D, std::int64_t L,
                int K) {
  const std::string shape = str("B", B, "_F", F, "_M", M, "_D", D, "_L", L, "_K", K);
  struct Buffers {
    DeviceBuffer<float> x, vw, vb, ww, wb, z, a, gates, s, h, e, dz, dx, dvw, dvb, dww, ds, dpre;
    DeviceBuffer<std::int32_t> topk;
  };
  auto make = [=] {
    return Buffers{random_buffer(B * F * M * D, 1),
                   random_buffer(L * D, 2, -0.05f, 0.05f),
                   random_buffer(L, 3),
                   random_buffer(L, 4),
                   random_buffer(1, 5),
                   zero_buffer(B * K * M * D),
                   zero_buffer(B * F),
                   zero_buffer(B * K),
                   zero_buffer(B * F),
                   zero_buffer(B * F * L),
                   zero_buffer(B * F * D),
                   random_buffer(B * K * M * D, 6),
                   zero_buffer(B * F * M * D),
                   zero_buffer(L * D),
                   zero_buffer(L),
                   zero_buffer(L),
                   zero_buffer(B * F),
                   zero_buffer(B * F * L),
                   DeviceBuffer<std::int32_t>(B * K)};
  };
  auto forward = [=](Buffers& b) {
    amil_forward<float>(context(), mv(b.z, {B, K * M, D}), mv(b.a, {B, F}),
                        TensorView<std::int32_t>(b.topk.data(), {B, K}), mv(b.gates, {B, K}),
                        mv(b.s, {B, F}), mv(b.h, {B, F, L}), mv(b.e, {B, F, D}),
                        cv(b.x, {B, F, M, D}), cv(b.vw, {L, D}), cv(b.vb, {L}), cv(b.ww, {1, L}),
                        cv(b.wb, {1}), K);
  };
  add_forward_backward(
      "amil", shape, make, forward,
      {(B * F * M * D + B * K * M * D + L * D + B * F * (D + 2 * L)) * kF, 2.0 * B * F * D * L},
      [=](Buffers& b) {
        amil_backward<float>(context(), mv(b.dx, {B, F, M, D}), mv(b.dvw, {L, D}), mv(b.dvb, {L}),
                             mv(b.dww, {1, L}), mv(b.ds, {B, F}), mv(b.dpre, {B, F, L}),
                             TensorView<float>{}, cv(b.dz, {B, K * M, D}), cv(b.x, {B, F, M, D}),
                             cv(b.e, {B, F, D}), cv(b.h, {B, F, L}),
                             TensorView<const std::int32_t>(b.topk.data(), {B, K}),
                             cv(b.gates, {B, K}), cv(b.vw, {L, D}), cv(b.ww, {1, L}), true);
      },
      {(2 * B * K * M * D + B * F * M * D + 2 * L * D + B * F * (D + 2 * L)) * kF,
       2.0 * B * F * D * L});
}

// ---- residual LayerNorm (post-LN sublayer end) -----------------------------------------
void residual_layernorm_suite(std::int64_t rows, std::int64_t width, float p) {
  const std::string shape = dims(rows, width);
  struct Buffers {
    DeviceBuffer<float> x, branch, bias, w, b, out, sum, mean, rstd, dout, dx, dbranch, dw, db,
        dbias, scratch;
  };
  auto make = [=] {
    return Buffers{random_buffer(rows * width, 1),
                   random_buffer(rows * width, 2),
                   random_buffer(width, 3),
                   random_buffer(width, 4),
                   random_buffer(width, 5),
                   zero_buffer(rows * width),
                   zero_buffer(rows * width),
                   zero_buffer(rows),
                   zero_buffer(rows),
                   random_buffer(rows * width, 6),
                   zero_buffer(rows * width),
                   zero_buffer(rows * width),
                   zero_buffer(width),
                   zero_buffer(width),
                   zero_buffer(width),
                   zero_buffer(residual_layernorm_backward_scratch_elements(rows, width))};
  };
  auto forward = [=](Buffers& b) {
    residual_layernorm_forward<float>(
        context(), mv(b.out, {rows, width}), mv(b.sum, {rows, width}), mv(b.mean, {rows}),
        mv(b.rstd, {rows}), cv(b.x, {rows, width}), cv(b.branch, {rows, width}),
        cv(b.bias, {width}), cv(b.w, {width}), cv(b.b, {width}), 1e-5f, p, 5, 1);
  };
  add_forward_backward("residual_layernorm", shape, make, forward,
                       {4 * rows * width * kF + 3 * width * kF + 8.0 * rows},
                       [=](Buffers& b) {
                         residual_layernorm_backward<float>(
                             context(), mv(b.dx, {rows, width}), mv(b.dbranch, {rows, width}),
                             mv(b.dw, {width}), mv(b.db, {width}), mv(b.dbias, {width}),
                             mv(b.scratch, {std::int64_t(b.scratch.size())}),
                             cv(b.dout, {rows, width}), cv(b.sum, {rows, width}), cv(b.w, {width}),
                             cv(b.mean, {rows}), cv(b.rstd, {rows}), p, 5, 1);
                       },
                       {4 * rows * width * kF + 7 * width * kF + 8.0 * rows});
}

// ---- fusion tokens ---------------------------------------------------------------------
void tokens_suite(std::int64_t B, std::int64_t N, std::int64_t C, std::int64_t D) {
  const std::string shape = str("B", B, "_N", N, "_C", C, "_D", D);
  const std::int64_t S = 1 + N + C, P = (3 + N + C) * D;
  struct Buffers {
    DeviceBuffer<float> visual, eeg, cls, type, pos_v, pos_e, tokens, dtokens, dvisual, deeg, dcls,
        dtype, dpos_v, dpos_e, scratch;
  };
  auto make = [=] {
    return Buffers{random_buffer(B * N * D, 1),
                   random_buffer(B * C * D, 2),
                   random_buffer(D, 3),
                   random_buffer(2 * D, 4),
                   random_buffer(N * D, 5),
                   random_buffer(C * D, 6),
                   zero_buffer(B * S * D),
                   random_buffer(B * S * D, 7),
                   zero_buffer(B * N * D),
                   zero_buffer(B * C * D),
                   zero_buffer(D),
                   zero_buffer(2 * D),
                   zero_buffer(N * D),
                   zero_buffer(C * D),
                   zero_buffer(token_assembly_backward_scratch_elements(N, C, D))};
  };
  add("tokens/fwd/" + shape, [=](benchmark::State& state) {
    Buffers b = make();
    run(state,
        [&] {
          token_assembly_forward<float>(context(), mv(b.tokens, {B, S, D}), cv(b.visual, {B, N, D}),
                                        cv(b.eeg, {B, C, D}), cv(b.cls, {D}), cv(b.type, {2, D}),
                                        cv(b.pos_v, {N, D}), cv(b.pos_e, {C, D}));
        },
        {(B * (N + C) * D + P + B * S * D) * kF});
  });
  add("tokens/bwd/" + shape, [=](benchmark::State& state) {
    Buffers b = make();
    run(state,
        [&] {
          token_assembly_backward<float>(
              context(), mv(b.dvisual, {B, N, D}), mv(b.deeg, {B, C, D}), mv(b.dcls, {D}),
              mv(b.dtype, {2, D}), mv(b.dpos_v, {N, D}), mv(b.dpos_e, {C, D}),
              mv(b.scratch, {std::int64_t(b.scratch.size())}), cv(b.dtokens, {B, S, D}));
        },
        {(B * S * D + B * (N + C) * D + 2 * P) * kF});
  });
}

}  // namespace

void register_kernel_benchmarks() {
  const int images = swin_images();
  const std::int64_t swin_rows = std::int64_t{images} * 56 * 56;
  layernorm_suite("", kFusionRows, kWidth);
  layernorm_suite("swin_", swin_rows, 96);
  activation_suite("gelu", swin_rows * 384, true);
  activation_suite("relu", kFusionRows * kFfn, false);
  elementwise_suite(kFusionRows, kWidth);
  dropout_suite(kFusionRows * kFfn);
  softmax_ce_suite(kBatch, 4);
  adamw_suite(MILMER_TARGET_CUDA ? 41432959 : (1 << 20));
  linear_suite("", kFusionRows, kWidth, kFfn, Epilogue::relu);
  linear_suite("swin_qkv_", swin_rows, 96, 288, Epilogue::none);
  linear_suite("swin_fc1_", swin_rows, 96, 384, Epilogue::gelu);
  window_attention_suite(images, 56, 7, 3, 32, 3);
  window_attention_suite(images, 14, 7, 12, 32, 3);
  mha_suite("self", kBatch, kFusionTokens, kFusionTokens, kWidth, 12, 0.2f);
  mha_suite("cross", kBatch, 64, 147, kWidth, 12, 0.2f);
  amil_suite(kBatch, 10, 49, kWidth, 128, 3);
  residual_layernorm_suite(kFusionRows, kWidth, 0.2f);
  tokens_suite(kBatch, 64, 32, kWidth);
}

}  // namespace milmer::bench
