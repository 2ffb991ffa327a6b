// The multi-head attention core (forward and backward) against plain-loop references in
// double (the truth) and float (the error a straightforward fp32 implementation makes), with
// and without dropout, contiguous and packed (B, L, 3D) layouts, under every thread order;
// the reference's backward against central finite differences; argument errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "milmer/kernels/mha_attention.hpp"
#include "milmer/reference/mha_attention.hpp"
#include "support.hpp"

namespace {

namespace refs = milmer::reference;
using milmer::test::check_close;
using milmer::test::DeviceVector;
using milmer::test::random_vector;

struct Case {
  int batch, lq, lk, dim, heads;
  float dropout = 0.0f;
  std::uint64_t seed = 7, offset = 3;
};

// The reference in Real for float inputs.
template <class Real>
refs::MhaAttention<Real> reference(const Case& c, const std::vector<Real>& q,
                                   const std::vector<Real>& k, const std::vector<Real>& v,
                                   const std::vector<Real>& dout) {
  return refs::mha_attention({c.batch, c.lq, c.lk, c.dim, c.heads, c.dropout, c.seed, c.offset}, q,
                             k, v, dout);
}

struct Inputs {
  std::vector<float> q, k, v, dout;
};

Inputs make_inputs(const Case& c, std::uint64_t seed) {
  const std::size_t nq = std::size_t(c.batch) * c.lq * c.dim;
  const std::size_t nk = std::size_t(c.batch) * c.lk * c.dim;
  // Wide enough a range that the softmax is far from uniform.
  return {random_vector(nq, seed, -2, 2), random_vector(nk, seed + 1, -2, 2),
          random_vector(nk, seed + 2), random_vector(nq, seed + 3)};
}

// Runs forward and backward on the device; packed: q, k, v (and dq, dk, dv) live in one
// (B, L, 3D) buffer (self-attention, Lq == Lk). Returns {out, lse, dq, dk, dv}.
std::vector<std::vector<float>> run_kernels(const Case& c, const Inputs& in, bool packed) {
  milmer::Context ctx;
  const std::int64_t B = c.batch, Lq = c.lq, Lk = c.lk, D = c.dim;
  DeviceVector<float> out(in.q.size()), lse(std::size_t(B) * c.heads * Lq), dout(in.dout);
  std::vector<float> dq, dk, dv;
  if (packed) {
    REQUIRE(c.lq == c.lk);
    std::vector<float> qkv(in.q.size() * 3);
    for (std::int64_t r = 0; r < B * Lq; ++r)
      for (std::int64_t d = 0; d < D; ++d) {
        qkv[r * 3 * D + d] = in.q[r * D + d];
        qkv[r * 3 * D + D + d] = in.k[r * D + d];
        qkv[r * 3 * D + 2 * D + d] = in.v[r * D + d];
      }
    DeviceVector<float> x(qkv), dx(qkv.size());
    auto views = milmer::mha_packed_qkv(static_cast<const float*>(x.data()), B, Lq, D);
    auto grads = milmer::mha_packed_qkv(dx.data(), B, Lq, D);
    milmer::mha_attention_forward<float>(ctx, milmer::view(out.data(), {B, Lq, D}),
                                         milmer::view(lse.data(), {B, c.heads, Lq}), views.q,
                                         views.k, views.v, c.heads, c.dropout, c.seed, c.offset);
    milmer::mha_attention_backward<float>(
        ctx, grads.q, grads.k, grads.v,
        milmer::view(static_cast<const float*>(dout.data()), {B, Lq, D}), views.q, views.k, views.v,
        milmer::view(static_cast<const float*>(out.data()), {B, Lq, D}),
        milmer::view(static_cast<const float*>(lse.data()), {B, c.heads, Lq}), c.heads, c.dropout,
        c.seed, c.offset);
    const auto g = dx.to_host();
    for (std::int64_t r = 0; r < B * Lq; ++r)
      for (std::int64_t d = 0; d < D; ++d) {
        dq.push_back(g[r * 3 * D + d]);
      }
    for (std::int64_t r = 0; r < B * Lq; ++r)
      for (std::int64_t d = 0; d < D; ++d) dk.push_back(g[r * 3 * D + D + d]);
    for (std::int64_t r = 0; r < B * Lq; ++r)
      for (std::int64_t d = 0; d < D; ++d) dv.push_back(g[r * 3 * D + 2 * D + d]);
  } else {
    DeviceVector<float> q(in.q), k(in.k), v(in.v), gq(in.q.size()), gk(in.k.size()),
        gv(in.v.size());
    const float* cq = q.data();
    const float* ck = k.data();
    const float* cv = v.data();
    milmer::mha_attention_forward<float>(
        ctx, milmer::view(out.data(), {B, Lq, D}), milmer::view(lse.data(), {B, c.heads, Lq}),
        milmer::view(cq, {B, Lq, D}), milmer::view(ck, {B, Lk, D}), milmer::view(cv, {B, Lk, D}),
        c.heads, c.dropout, c.seed, c.offset);
    milmer::mha_attention_backward<float>(
        ctx, milmer::view(gq.data(), {B, Lq, D}), milmer::view(gk.data(), {B, Lk, D}),
        milmer::view(gv.data(), {B, Lk, D}),
        milmer::view(static_cast<const float*>(dout.data()), {B, Lq, D}),
        milmer::view(cq, {B, Lq, D}), milmer::view(ck, {B, Lk, D}), milmer::view(cv, {B, Lk, D}),
        milmer::view(static_cast<const float*>(out.data()), {B, Lq, D}),
        milmer::view(static_cast<const float*>(lse.data()), {B, c.heads, Lq}), c.heads, c.dropout,
        c.seed, c.offset);
    dq = gq.to_host();
    dk = gk.to_host();
    dv = gv.to_host();
  }
  return {out.to_host(), lse.to_host(), dq, dk, dv};
}

void check_case(const Case& c, bool packed = false) {
  INFO("B ", c.batch, " Lq ", c.lq, " Lk ", c.lk, " D ", c.dim, " heads ", c.heads, " dropout ",
       c.dropout, packed ? " packed" : "");
  const Inputs in = make_inputs(c, 100 + c.lq * 7 + c.lk);
  const auto got = milmer::test::under_every_schedule([&] { return run_kernels(c, in, packed); });
  const auto r64 = reference<double>(c, refs::as<double>(in.q), refs::as<double>(in.k),
                                     refs::as<double>(in.v), refs::as<double>(in.dout));
  const auto r32 = reference<float>(c, in.q, in.k, in.v, in.dout);
  check_close(got[0], r64.out, r32.out, "out");
  check_close(got[1], r64.lse, r32.lse, "lse");
  check_close(got[2], r64.dq, r32.dq, "dq");
  check_close(got[3], r64.dk, r32.dk, "dk");
  check_close(got[4], r64.dv, r32.dv, "dv");
}

}  // namespace

TEST_SUITE("mha_attention") {
  TEST_CASE("forward and backward match the fp64 reference") {
    check_case({2, 8, 12, 32, 2});    // tiny cross-attention (head_dim 16)
    check_case({1, 97, 97, 64, 4});   // fusion length, several key tiles
    check_case({1, 20, 45, 128, 2});  // head_dim 64 (the paper's), partial tiles
    check_case({1, 1, 1, 16, 1});     // one query, one key
    check_case({2, 3, 70, 96, 1});    // head_dim 96 (the 4-chunk kernels)
    check_case({1, 17, 5, 40, 5});    // head_dim 8, fewer keys than a tile
  }

  TEST_CASE("dropout on the probabilities regenerates the same mask in backward") {
    check_case({2, 8, 12, 32, 2, 0.2f});
    check_case({1, 33, 40, 64, 1, 0.5f});
  }

  TEST_CASE("q, k, v and their gradients read from and written to a packed (B, L, 3D) buffer") {
    check_case({2, 21, 21, 32, 2, 0.1f}, true);
  }

  TEST_CASE("long key sequences stream through the online softmax") {
    check_case({1, 3, 520, 16, 2});
  }

  TEST_CASE("the reference backward matches central finite differences") {
    for (float p : {0.0f, 0.3f}) {
      const Case c{1, 3, 5, 8, 2, p};
      const Inputs in = make_inputs(c, 9);
      auto q = refs::as<double>(in.q), k = refs::as<double>(in.k), v = refs::as<double>(in.v);
      const auto g = refs::as<double>(in.dout);
      const auto r = reference<double>(c, q, k, v, g);
      auto loss = [&] { return refs::dot(reference<double>(c, q, k, v, g).out, g); };
      INFO("dropout ", p);
      auto check_grad = [&](std::vector<double>& x, const std::vector<double>& grad,
                            const char* name) {
        milmer::test::check_central_differences(x, loss, grad, 1e-6, 1e-7, name);
      };
      check_grad(q, r.dq, "dq");
      check_grad(k, r.dk, "dk");
      check_grad(v, r.dv, "dv");
    }
  }

  TEST_CASE("argument errors name the op, the argument and the mismatch") {
    milmer::Context ctx;
    DeviceVector<float> buf(4096);
    float* p = buf.data();
    const float* c = p;
    auto fwd = [&](std::int64_t lq, std::int64_t lk, std::int64_t dk_dim, int heads, float drop) {
      milmer::mha_attention_forward<float>(
          ctx, milmer::view(p, {2, lq, 32}), milmer::view(p + 2048, {2, heads, lq}),
          milmer::view(c, {2, lq, 32}), milmer::view(c, {2, lk, dk_dim}),
          milmer::view(c, {2, lk, 32}), heads, drop);
    };
    CHECK(milmer::test::error_message([&] { fwd(4, 5, 16, 2, 0.0f); }) ==
          "mha_attention_forward: argument 'k': expected shape (2, *, 32), got shape (2, 5, 16)");
    CHECK(milmer::test::error_message([&] { fwd(4, 5, 32, 3, 0.0f); }) ==
          "mha_attention_forward: argument 'heads': expected a divisor of D = 32, got 3");
    CHECK(milmer::test::error_message([&] { fwd(4, 5, 32, 2, 1.0f); }) ==
          "mha_attention_forward: argument 'dropout_p': expected 0 <= p < 1, got 1.000000");
    CHECK_THROWS_AS(fwd(0, 5, 32, 2, 0.0f), milmer::Error);
    // head_dim 256 is beyond the kernels.
    CHECK_THROWS_WITH_AS(
        milmer::mha_attention_forward<float>(
            ctx, milmer::view(p, {1, 2, 256}), milmer::view(p + 2048, {1, 1, 2}),
            milmer::view(c, {1, 2, 256}), milmer::view(c, {1, 2, 256}),
            milmer::view(c, {1, 2, 256}), 1),
        "mha_attention_forward: argument 'heads': expected head_dim = D / heads <= 128, got 1 "
        "heads (head_dim 256)",
        milmer::Error);
    // Overlapping rows: a row stride shorter than a row.
    auto bad = milmer::view(c, {1, 4, 32});
    bad.strides = {128, 16, 1};
    CHECK_THROWS_AS(milmer::mha_attention_forward<float>(
                        ctx, milmer::view(p, {1, 4, 32}), milmer::view(p + 2048, {1, 2, 4}), bad,
                        milmer::view(c, {1, 4, 32}), milmer::view(c, {1, 4, 32}), 2),
                    milmer::Error);
    // Backward with dk of 5 rows for 4, then with lse of 4 heads for 2.
    auto bwd = [&](std::int64_t dk_rows, std::int64_t lse_heads) {
      milmer::mha_attention_backward<float>(
          ctx, milmer::view(p, {1, 4, 32}), milmer::view(p, {1, dk_rows, 32}),
          milmer::view(p, {1, 4, 32}), milmer::view(c, {1, 4, 32}), milmer::view(c, {1, 4, 32}),
          milmer::view(c, {1, 4, 32}), milmer::view(c, {1, 4, 32}), milmer::view(c, {1, 4, 32}),
          milmer::view(static_cast<const float*>(p + 2048), {1, lse_heads, 4}), 2);
    };
    CHECK_THROWS_AS(bwd(5, 2), milmer::Error);
    CHECK_THROWS_AS(bwd(4, 4), milmer::Error);
  }
}
