// GEMM family: gemm, gemm_strided_batched, linear_forward (none / relu / gelu epilogues, bias,
// stored pre-activation) and linear_backward (accumulating weight and bias gradients, optional
// input gradient), against plain-loop references run in double (the reference) and in float
// (the plain fp32 error baseline), under every emulator thread order.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "milmer/kernels/gemm.hpp"
#include "milmer/reference/check.hpp"
#include "milmer/reference/gemm.hpp"
#include "support.hpp"

namespace {

namespace refs = milmer::reference;
using milmer::Epilogue;
using milmer::MatOp;
using milmer::test::check_close;
using milmer::test::DeviceVector;
using milmer::test::random_vector;
using milmer::test::under_every_schedule;

template <class S>
std::vector<float> to_float(const std::vector<S>& v) {
  return std::vector<float>(v.begin(), v.end());
}

// The reference's pre-activation and gradients in S for float inputs.
template <class S>
std::vector<S> ref_linear_pre(int M, int N, int K, const std::vector<float>& inp,
                              const std::vector<float>& w, const std::vector<float>* b) {
  const auto bias = b ? refs::as<S>(*b) : std::vector<S>();
  return refs::linear_pre_activation(M, N, K, refs::as<S>(inp), refs::as<S>(w),
                                     b ? &bias : nullptr);
}
template <class S>
refs::LinearBackward<S> ref_linear_backward(int M, int N, int K, const std::vector<float>& dout,
                                            const std::vector<float>& inp,
                                            const std::vector<float>& w,
                                            const std::vector<float>& saved, Epilogue e) {
  return refs::linear_backward(M, N, K, refs::as<S>(dout), refs::as<S>(inp), refs::as<S>(w),
                               refs::as<S>(saved), e);
}

struct Shape {
  int m, n, k;
};
const Shape kShapes[] = {{1, 1, 1},    {1, 5, 3},    {7, 1, 9},   {3, 4, 1},
                         {13, 33, 17}, {37, 70, 65}, {2, 300, 11}};
const Epilogue kEpilogues[] = {Epilogue::none, Epilogue::relu, Epilogue::gelu};

}  // namespace

TEST_SUITE("gemm") {
  TEST_CASE("linear_forward matches the fp64 loops for every epilogue, with and without bias") {
    milmer::Context ctx;
    std::uint64_t seed = 1;
    for (const Shape s : kShapes)
      for (const Epilogue e : kEpilogues)
        for (const bool with_bias : {true, false}) {
          INFO("M=", s.m, " N=", s.n, " K=", s.k, " epilogue ", milmer::epilogue_name(e), " bias ",
               with_bias);
          const auto inp = random_vector(size_t(s.m) * s.k, seed++);
          const auto w = random_vector(size_t(s.n) * s.k, seed++, -0.5f, 0.5f);
          const auto b = random_vector(s.n, seed++);
          const bool store_pre = e == Epilogue::gelu;
          auto outs = under_every_schedule([&] {
            DeviceVector<float> d_inp(inp), d_w(w), d_b(b), d_out(size_t(s.m) * s.n),
                d_pre(size_t(s.m) * s.n);
            milmer::linear_forward(
                ctx, milmer::view(d_out.data(), {s.m, s.n}),
                milmer::view<const float>(d_inp.data(), {s.m, s.k}),
                milmer::view<const float>(d_w.data(), {s.n, s.k}),
                with_bias ? milmer::view<const float>(d_b.data(), {s.n})
                          : milmer::TensorView<const float>{},
                e,
                store_pre ? milmer::view(d_pre.data(), {s.m, s.n}) : milmer::TensorView<float>{});
            return std::vector<std::vector<float>>{d_out.to_host(), d_pre.to_host()};
          });
          const auto* bp = with_bias ? &b : nullptr;
          const auto pre64 = ref_linear_pre<double>(s.m, s.n, s.k, inp, w, bp);
          const auto pre32 = ref_linear_pre<float>(s.m, s.n, s.k, inp, w, bp);
          std::vector<double> out64(pre64.size());
          std::vector<float> out32(pre32.size());
          for (size_t i = 0; i < pre64.size(); ++i) {
            out64[i] = refs::epilogue(e, pre64[i]);
            out32[i] = refs::epilogue(e, pre32[i]);
          }
          check_close(outs[0], out64, out32, "out");
          if (store_pre) check_close(outs[1], pre64, pre32, "pre_activation");
        }
  }

  TEST_CASE("linear_backward matches the fp64 loops and accumulates weight and bias grads") {
    milmer::Context ctx;
    std::uint64_t seed = 100;
    for (const Shape s : kShapes)
      for (const Epilogue e : kEpilogues)
        for (const bool optional_outputs : {true, false}) {
          INFO("M=", s.m, " N=", s.n, " K=", s.k, " epilogue ", milmer::epilogue_name(e),
               " dinp/dbias ", optional_outputs);
          const auto dout = random_vector(size_t(s.m) * s.n, seed++);
          const auto inp = random_vector(size_t(s.m) * s.k, seed++);
          const auto w = random_vector(size_t(s.n) * s.k, seed++, -0.5f, 0.5f);
          const auto b = random_vector(s.n, seed++);
          const auto dw0 = random_vector(size_t(s.n) * s.k, seed++);
          const auto db0 = random_vector(s.n, seed++);
          // What forward saved: the pre-activation for gelu, the output for relu.
          auto saved = to_float(ref_linear_pre<float>(s.m, s.n, s.k, inp, w, &b));
          if (e == Epilogue::relu)
            for (auto& x : saved) x = refs::epilogue(e, x);
          auto outs = under_every_schedule([&] {
            DeviceVector<float> d_dout(dout), d_inp(inp), d_w(w), d_saved(saved), d_dw(dw0),
                d_db(db0), d_dinp(size_t(s.m) * s.k), d_dpre(size_t(s.m) * s.n);
            const bool act_on = e != Epilogue::none;
            milmer::linear_backward(
                ctx,
                optional_outputs ? milmer::view(d_dinp.data(), {s.m, s.k})
                                 : milmer::TensorView<float>{},
                milmer::view(d_dw.data(), {s.n, s.k}),
                optional_outputs ? milmer::view(d_db.data(), {s.n}) : milmer::TensorView<float>{},
                milmer::view<const float>(d_dout.data(), {s.m, s.n}),
                milmer::view<const float>(d_inp.data(), {s.m, s.k}),
                milmer::view<const float>(d_w.data(), {s.n, s.k}), e,
                act_on ? milmer::view<const float>(d_saved.data(), {s.m, s.n})
                       : milmer::TensorView<const float>{},
                act_on ? milmer::view(d_dpre.data(), {s.m, s.n}) : milmer::TensorView<float>{});
            return std::vector<std::vector<float>>{d_dinp.to_host(), d_dw.to_host(),
                                                   d_db.to_host()};
          });
          auto [dinp64, dw64, db64] =
              ref_linear_backward<double>(s.m, s.n, s.k, dout, inp, w, saved, e);
          auto [dinp32, dw32, db32] =
              ref_linear_backward<float>(s.m, s.n, s.k, dout, inp, w, saved, e);
          for (size_t i = 0; i < dw64.size(); ++i) {
            dw64[i] += dw0[i];
            dw32[i] += dw0[i];
          }
          check_close(outs[1], dw64, dw32, "dweight");
          if (optional_outputs) {
            for (int n = 0; n < s.n; ++n) {
              db64[n] += db0[n];
              db32[n] += db0[n];
            }
            check_close(outs[0], dinp64, dinp32, "dinp");
            check_close(outs[2], db64, db32, "dbias");
          } else {
            CHECK(outs[0] == std::vector<float>(size_t(s.m) * s.k, 0.0f));
            CHECK(outs[2] == db0);
          }
        }
  }

  TEST_CASE("linear_backward called twice doubles the weight and bias gradients") {
    milmer::Context ctx;
    const int M = 19, N = 21, K = 23;
    const auto dout = random_vector(size_t(M) * N, 7);
    const auto inp = random_vector(size_t(M) * K, 8);
    const auto w = random_vector(size_t(N) * K, 9);
    DeviceVector<float> d_dout(dout), d_inp(inp), d_w(w), d_dw(size_t(N) * K), d_db(N),
        d_dinp(size_t(M) * K);
    auto step = [&] {
      milmer::linear_backward(ctx, milmer::view(d_dinp.data(), {M, K}),
                              milmer::view(d_dw.data(), {N, K}), milmer::view(d_db.data(), {N}),
                              milmer::view<const float>(d_dout.data(), {M, N}),
                              milmer::view<const float>(d_inp.data(), {M, K}),
                              milmer::view<const float>(d_w.data(), {N, K}));
    };
    step();
    const auto dw1 = d_dw.to_host(), db1 = d_db.to_host(), dinp1 = d_dinp.to_host();
    step();
    const auto dw2 = d_dw.to_host(), db2 = d_db.to_host(), dinp2 = d_dinp.to_host();
    for (size_t i = 0; i < dw1.size(); ++i) REQUIRE(dw2[i] == 2.0f * dw1[i]);
    for (size_t i = 0; i < db1.size(); ++i) REQUIRE(db2[i] == 2.0f * db1[i]);
    CHECK(dinp2 == dinp1);  // written, not accumulated
  }

  TEST_CASE("the backward reference agrees with central differences of the forward") {
    const int M = 5, N = 6, K = 7;
    const auto dout = random_vector(size_t(M) * N, 21);
    auto inp = random_vector(size_t(M) * K, 22);
    auto w = random_vector(size_t(N) * K, 23);
    auto b = random_vector(N, 24);
    for (const Epilogue e : kEpilogues) {
      INFO("epilogue ", milmer::epilogue_name(e));
      // Loss in double of float inputs; perturbations are applied in double.
      auto loss = [&](const std::vector<double>& x, const std::vector<double>& wd,
                      const std::vector<double>& bd) {
        return refs::dot(dout, refs::linear_forward(M, N, K, x, wd, &bd, e));
      };
      auto pre = to_float(ref_linear_pre<double>(M, N, K, inp, w, &b));
      auto saved = pre;
      if (e == Epilogue::relu)
        for (auto& x : saved) x = refs::epilogue(e, x);
      const auto [dinp, dw, db] = ref_linear_backward<double>(M, N, K, dout, inp, w, saved, e);
      const auto x0 = refs::as<double>(inp), w0 = refs::as<double>(w), b0 = refs::as<double>(b);
      const double h = 1e-6;
      auto fd = [&](int which, size_t i) {
        auto x = x0, wd = w0, bd = b0;
        auto& t = which == 0 ? x : which == 1 ? wd : bd;
        t[i] += h;
        const double lp = loss(x, wd, bd);
        t[i] -= 2 * h;
        return (lp - loss(x, wd, bd)) / (2 * h);
      };
      for (size_t i = 0; i < dinp.size(); ++i) CHECK(std::abs(fd(0, i) - dinp[i]) < 1e-6);
      for (size_t i = 0; i < dw.size(); ++i) CHECK(std::abs(fd(1, i) - dw[i]) < 1e-6);
      for (size_t i = 0; i < db.size(); ++i) CHECK(std::abs(fd(2, i) - db[i]) < 1e-6);
    }
  }

  TEST_CASE("gemm handles every transpose combination, padded row strides, alpha and beta") {
    milmer::Context ctx;
    std::uint64_t seed = 300;
    for (const Shape s : kShapes)
      for (const MatOp op_a : {MatOp::N, MatOp::T})
        for (const MatOp op_b : {MatOp::N, MatOp::T}) {
          INFO("M=", s.m, " N=", s.n, " K=", s.k, " op_a ", int(op_a), " op_b ", int(op_b));
          const int a_rows = op_a == MatOp::N ? s.m : s.k, a_cols = op_a == MatOp::N ? s.k : s.m;
          const int b_rows = op_b == MatOp::N ? s.k : s.n, b_cols = op_b == MatOp::N ? s.n : s.k;
          const int lda = a_cols + 3, ldb = b_cols + 1, ldc = s.n + 2;
          const auto a = random_vector(size_t(a_rows) * lda, seed++);
          const auto b = random_vector(size_t(b_rows) * ldb, seed++);
          const auto c0 = random_vector(size_t(s.m) * ldc, seed++);
          const float alpha = 0.75f, beta = -0.5f;
          auto outs = under_every_schedule([&] {
            DeviceVector<float> d_a(a), d_b(b), d_c(c0);
            milmer::gemm(ctx, milmer::matrix_view(d_c.data(), s.m, s.n, ldc),
                         milmer::matrix_view<const float>(d_a.data(), a_rows, a_cols, lda), op_a,
                         milmer::matrix_view<const float>(d_b.data(), b_rows, b_cols, ldb), op_b,
                         alpha, beta);
            return d_c.to_host();
          });
          const auto r64 = refs::gemm<double>(s.m, s.n, s.k, a.data(), lda, op_a, b.data(), ldb,
                                              op_b, c0.data(), ldc, alpha, beta);
          const auto r32 = refs::gemm<float>(s.m, s.n, s.k, a.data(), lda, op_a, b.data(), ldb,
                                             op_b, c0.data(), ldc, alpha, beta);
          check_close(outs, r64, r32, "C");  // padding columns must stay as they were
        }
  }

  TEST_CASE("gemm_strided_batched: transposes, padded strides and a broadcast operand") {
    milmer::Context ctx;
    std::uint64_t seed = 500;
    const Shape shapes[] = {{1, 1, 1}, {7, 5, 3}, {16, 16, 8}, {9, 33, 1}};
    for (const Shape s : shapes)
      for (const int batch : {1, 3})
        for (const MatOp op_a : {MatOp::N, MatOp::T})
          for (const MatOp op_b : {MatOp::N, MatOp::T})
            for (const bool broadcast_b : {false, true}) {
              INFO("M=", s.m, " N=", s.n, " K=", s.k, " batch ", batch, " op_a ", int(op_a),
                   " op_b ", int(op_b), " broadcast B ", broadcast_b);
              const int a_rows = op_a == MatOp::N ? s.m : s.k;
              const int a_cols = op_a == MatOp::N ? s.k : s.m;
              const int b_rows = op_b == MatOp::N ? s.k : s.n;
              const int b_cols = op_b == MatOp::N ? s.n : s.k;
              const int lda = a_cols + 1, ldb = b_cols, ldc = s.n + 1;
              const long sa = long(a_rows) * lda + 5, sb = broadcast_b ? 0 : long(b_rows) * ldb;
              const long sc = long(s.m) * ldc + 2;
              const auto a = random_vector(size_t(sa) * batch, seed++);
              const auto b =
                  random_vector(size_t(b_rows) * ldb * (broadcast_b ? 1 : batch), seed++);
              const auto c0 = random_vector(size_t(sc) * batch, seed++);
              auto outs = under_every_schedule([&] {
                DeviceVector<float> d_a(a), d_b(b), d_c(c0);
                milmer::gemm_strided_batched(
                    ctx, milmer::batched_matrix_view(d_c.data(), batch, s.m, s.n, ldc, sc),
                    milmer::batched_matrix_view<const float>(d_a.data(), batch, a_rows, a_cols, lda,
                                                             sa),
                    op_a,
                    milmer::batched_matrix_view<const float>(d_b.data(), batch, b_rows, b_cols, ldb,
                                                             sb),
                    op_b, 2.0f, 1.0f);
                return d_c.to_host();
              });
              std::vector<double> r64(c0.begin(), c0.end());
              std::vector<float> r32(c0);
              for (int i = 0; i < batch; ++i) {
                const auto o64 = refs::gemm<double>(s.m, s.n, s.k, a.data() + i * sa, lda, op_a,
                                                    b.data() + i * sb, ldb, op_b,
                                                    c0.data() + i * sc, ldc, 2.0f, 1.0f);
                const auto o32 = refs::gemm<float>(s.m, s.n, s.k, a.data() + i * sa, lda, op_a,
                                                   b.data() + i * sb, ldb, op_b, c0.data() + i * sc,
                                                   ldc, 2.0f, 1.0f);
                std::copy(o64.begin(), o64.end(), r64.begin() + i * sc);
                std::copy(o32.begin(), o32.end(), r32.begin() + i * sc);
              }
              check_close(outs, r64, r32, "C");
            }
  }

  TEST_CASE("cuBLASLt gets the operands' real alignments, at most its 256-byte default") {
    alignas(256) static float buf[128];
    CHECK(milmer::detail::pointer_alignment(buf) == 256);
    CHECK(milmer::detail::pointer_alignment(buf + 4) == 16);
    CHECK(milmer::detail::pointer_alignment(buf + 64) == 256);
    CHECK(milmer::detail::pointer_alignment(buf + 1) == 4);
    CHECK(milmer::detail::pointer_alignment(buf + 6) == 8);
    CHECK(milmer::detail::pointer_alignment(reinterpret_cast<char*>(buf) + 1) == 1);
  }

  TEST_CASE("the launchers name the op, the argument and the mismatch") {
    milmer::Context ctx;
    DeviceVector<float> x(64), w(64), y(64), z(64);
    const auto msg = milmer::test::error_message([&] {
      milmer::linear_forward(ctx, milmer::view(y.data(), {4, 3}),
                             milmer::view<const float>(x.data(), {4, 5}),
                             milmer::view<const float>(w.data(), {3, 6}));
    });
    CHECK(msg == "linear_forward: argument 'weight': expected shape (*, 5), got shape (3, 6)");
    CHECK(milmer::test::error_message([&] {
            milmer::linear_forward(ctx, milmer::view(y.data(), {4, 3}),
                                   milmer::view<const float>(x.data(), {4, 5}),
                                   milmer::view<const float>(w.data(), {3, 5}),
                                   milmer::view<const float>(z.data(), {4}));
          }) == "linear_forward: argument 'bias': expected shape (3), got shape (4)");
    CHECK(milmer::test::error_message([&] {
            milmer::linear_forward(ctx, milmer::view(y.data(), {4, 3}),
                                   milmer::view<const float>(x.data(), {4, 5}),
                                   milmer::view<const float>(w.data(), {3, 5}), {}, Epilogue::relu,
                                   milmer::view(z.data(), {4, 3}));
          }).find("argument 'pre_activation'") != std::string::npos);
    CHECK(milmer::test::error_message([&] {
            milmer::linear_backward(ctx, milmer::TensorView<float>{},
                                    milmer::view(y.data(), {3, 5}), milmer::TensorView<float>{},
                                    milmer::view<const float>(z.data(), {4, 3}),
                                    milmer::view<const float>(x.data(), {4, 5}),
                                    milmer::view<const float>(w.data(), {3, 5}), Epilogue::gelu);
          }) == "linear_backward: argument 'saved': expected shape (4, 3), got shape ()");
    CHECK(milmer::test::error_message([&] {
            milmer::gemm(ctx, milmer::view(y.data(), {4, 3}),
                         milmer::view<const float>(x.data(), {4, 5}), MatOp::N,
                         milmer::view<const float>(w.data(), {3, 5}), MatOp::N);
          }) ==
          "gemm: argument 'B': expected op(B) with 5 rows (op(A)'s columns), got op(B) "
          "with 3 rows, B shape (3, 5)");
    CHECK(milmer::test::error_message([&] {
            milmer::gemm(ctx, milmer::matrix_view(y.data(), 4, 3, 2),
                         milmer::view<const float>(x.data(), {4, 5}), MatOp::N,
                         milmer::view<const float>(w.data(), {5, 3}), MatOp::N);
          }) == "gemm: argument 'C': expected row stride (ld) >= 3, got row stride 2");
    CHECK(milmer::test::error_message([&] {
            milmer::gemm_strided_batched(
                ctx, milmer::batched_matrix_view(y.data(), 2, 2, 3, 3, 3),
                milmer::batched_matrix_view<const float>(x.data(), 2, 2, 2, 2, 4), MatOp::N,
                milmer::batched_matrix_view<const float>(w.data(), 2, 2, 3, 3, 6), MatOp::N);
          }) ==
          "gemm_strided_batched: argument 'C': expected batch stride >= 6 (output batches "
          "must not overlap), got 3");
    CHECK(milmer::test::error_message([&] {
            milmer::gemm(ctx, milmer::view(static_cast<float*>(nullptr), {4, 3}),
                         milmer::view<const float>(x.data(), {4, 5}), MatOp::N,
                         milmer::view<const float>(w.data(), {5, 3}), MatOp::N);
          }) == "gemm: argument 'C': expected a non-null pointer, got nullptr");
  }
}
