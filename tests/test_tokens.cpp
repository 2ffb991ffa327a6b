// Token assembly for the fusion transformer and the CLS gather / scatter-add: exact equality
// where the op moves data (and where it is two float adds in the reference's order), the
// tolerance rule and finite differences for the batch sums, every emulator schedule, launch
// counts and argument validation.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "milmer/kernels/tokens.hpp"
#include "support.hpp"

namespace {

using milmer::test::check_close;
using milmer::test::DeviceVector;
using milmer::test::random_vector;
using Outputs = std::vector<std::vector<float>>;

template <class S>
std::vector<S> cast(const std::vector<float>& v) {
  return std::vector<S>(v.begin(), v.end());
}

struct Shape {
  int batch, visual, eeg, width;
  int sequence() const { return 1 + visual + eeg; }
  std::size_t tokens() const { return static_cast<std::size_t>(batch) * sequence() * width; }
  std::size_t visual_size() const { return static_cast<std::size_t>(batch) * visual * width; }
  std::size_t eeg_size() const { return static_cast<std::size_t>(batch) * eeg * width; }
};

// Batch 1, single tokens, widths off the warp size, the tiny (8 + 8 tokens x 32) and paper
// (64 + 32 tokens x 768) fusion inputs.
constexpr Shape kShapes[] = {{1, 1, 1, 1},  {2, 3, 2, 5},     {3, 8, 8, 32},
                             {4, 5, 7, 33}, {2, 64, 32, 768}, {5, 2, 1, 300}};

struct Inputs {
  Shape z;
  std::vector<float> visual, eeg, cls, type_embed, pos_visual, pos_eeg, dtokens;
};

Inputs make_inputs(const Shape& z, std::uint64_t seed) {
  const std::size_t D = z.width;
  return Inputs{z,
                random_vector(z.visual_size(), seed, -2.0f, 2.0f),
                random_vector(z.eeg_size(), seed + 1, -2.0f, 2.0f),
                random_vector(D, seed + 2),
                random_vector(2 * D, seed + 3),
                random_vector(z.visual * D, seed + 4),
                random_vector(z.eeg * D, seed + 5),
                random_vector(z.tokens(), seed + 6)};
}

// ---- plain-loop references in scalar type S ---------------------------------------------

template <class S>
struct Params {
  std::vector<S> visual, eeg, cls, type_embed, pos_visual, pos_eeg;
};

template <class S>
Params<S> params_of(const Inputs& in) {
  return {cast<S>(in.visual),     cast<S>(in.eeg),        cast<S>(in.cls),
          cast<S>(in.type_embed), cast<S>(in.pos_visual), cast<S>(in.pos_eeg)};
}

// tools/milmer_reference.py, Fusion.forward: cat(cls, visual + types[0] + pos_visual,
// eeg + types[1] + pos_eeg), the additions left to right.
template <class S>
std::vector<S> forward_ref(const Shape& z, const Params<S>& q) {
  const int D = z.width;
  std::vector<S> x(z.tokens());
  for (int b = 0; b < z.batch; ++b) {
    S* xb = &x[static_cast<std::size_t>(b) * z.sequence() * D];
    for (int c = 0; c < D; ++c) xb[c] = q.cls[c];
    for (int i = 0; i < z.visual; ++i)
      for (int c = 0; c < D; ++c)
        xb[(1 + i) * D + c] = q.visual[(static_cast<std::size_t>(b) * z.visual + i) * D + c] +
                              q.type_embed[c] + q.pos_visual[i * D + c];
    for (int j = 0; j < z.eeg; ++j)
      for (int c = 0; c < D; ++c)
        xb[(1 + z.visual + j) * D + c] = q.eeg[(static_cast<std::size_t>(b) * z.eeg + j) * D + c] +
                                         q.type_embed[D + c] + q.pos_eeg[j * D + c];
  }
  return x;
}

template <class S>
struct BackwardRef {
  std::vector<S> dvisual, deeg, dcls, dtype_embed, dpos_visual, dpos_eeg;
};

// The parameter gradients start from the given values (+=); sums in the obvious order.
template <class S>
BackwardRef<S> backward_ref(const Shape& z, const std::vector<float>& dtokens_f,
                            const Outputs& start) {
  const int D = z.width;
  const auto dx = cast<S>(dtokens_f);
  BackwardRef<S> r{std::vector<S>(z.visual_size()),
                   std::vector<S>(z.eeg_size()),
                   cast<S>(start[0]),
                   cast<S>(start[1]),
                   cast<S>(start[2]),
                   cast<S>(start[3])};
  for (int b = 0; b < z.batch; ++b) {
    const S* xb = &dx[static_cast<std::size_t>(b) * z.sequence() * D];
    for (int c = 0; c < D; ++c) r.dcls[c] += xb[c];
    for (int i = 0; i < z.visual; ++i)
      for (int c = 0; c < D; ++c) {
        const S g = xb[(1 + i) * D + c];
        r.dvisual[(static_cast<std::size_t>(b) * z.visual + i) * D + c] = g;
        r.dtype_embed[c] += g;
        r.dpos_visual[i * D + c] += g;
      }
    for (int j = 0; j < z.eeg; ++j)
      for (int c = 0; c < D; ++c) {
        const S g = xb[(1 + z.visual + j) * D + c];
        r.deeg[(static_cast<std::size_t>(b) * z.eeg + j) * D + c] = g;
        r.dtype_embed[D + c] += g;
        r.dpos_eeg[j * D + c] += g;
      }
  }
  return r;
}

// ---- the kernels ------------------------------------------------------------------------

template <class T>
milmer::TensorView<const T> cview(const DeviceVector<T>& v, std::initializer_list<std::int64_t> d) {
  return milmer::view(v.data(), d);
}

std::vector<float> run_forward(const Inputs& in) {
  const Shape& z = in.z;
  const std::int64_t B = z.batch, N = z.visual, C = z.eeg, D = z.width;
  DeviceVector<float> visual(in.visual), eeg(in.eeg), cls(in.cls), type_embed(in.type_embed),
      pos_visual(in.pos_visual), pos_eeg(in.pos_eeg),
      tokens(random_vector(z.tokens(), 77, -9.0f, 9.0f));
  milmer::Context ctx;
  milmer::token_assembly_forward<float>(ctx, milmer::view(tokens.data(), {B, z.sequence(), D}),
                                        cview(visual, {B, N, D}), cview(eeg, {B, C, D}),
                                        cview(cls, {D}), cview(type_embed, {2, D}),
                                        cview(pos_visual, {N, D}), cview(pos_eeg, {C, D}));
  return tokens.to_host();
}

// The parameter gradients' starting values: dcls, dtype_embed, dpos_visual, dpos_eeg.
Outputs start_grads(const Shape& z, std::uint64_t seed) {
  const std::size_t D = z.width;
  return {random_vector(D, seed), random_vector(2 * D, seed + 1),
          random_vector(z.visual * D, seed + 2), random_vector(z.eeg * D, seed + 3)};
}

// dvisual, deeg (start as garbage backward must overwrite), dcls, dtype_embed, dpos_visual,
// dpos_eeg.
Outputs run_backward(const Inputs& in, const Outputs& start) {
  const Shape& z = in.z;
  const std::int64_t B = z.batch, N = z.visual, C = z.eeg, D = z.width;
  DeviceVector<float> dtokens(in.dtokens), dvisual(random_vector(z.visual_size(), 78, -9.0f, 9.0f)),
      deeg(random_vector(z.eeg_size(), 79, -9.0f, 9.0f)), dcls(start[0]), dtype_embed(start[1]),
      dpos_visual(start[2]), dpos_eeg(start[3]),
      scratch(static_cast<std::size_t>(milmer::token_assembly_backward_scratch_elements(N, C, D)));
  milmer::Context ctx;
  milmer::token_assembly_backward<float>(
      ctx, milmer::view(dvisual.data(), {B, N, D}), milmer::view(deeg.data(), {B, C, D}),
      milmer::view(dcls.data(), {D}), milmer::view(dtype_embed.data(), {2, D}),
      milmer::view(dpos_visual.data(), {N, D}), milmer::view(dpos_eeg.data(), {C, D}),
      milmer::view(scratch.data(), {static_cast<std::int64_t>(scratch.size())}),
      cview(dtokens, {B, z.sequence(), D}));
  return {dvisual.to_host(),     deeg.to_host(),        dcls.to_host(),
          dtype_embed.to_host(), dpos_visual.to_host(), dpos_eeg.to_host()};
}

// cls_gather's out, and cls_scatter_add's dtokens after adding dcls into the given start.
Outputs run_cls(const Shape& z, const std::vector<float>& tokens_h,
                const std::vector<float>& dtokens_h, const std::vector<float>& dcls_h) {
  const std::int64_t B = z.batch, S = z.sequence(), D = z.width;
  DeviceVector<float> tokens(tokens_h), out(random_vector(B * D, 80, -9.0f, 9.0f)),
      dtokens(dtokens_h), dcls(dcls_h);
  milmer::Context ctx;
  milmer::cls_gather<float>(ctx, milmer::view(out.data(), {B, D}), cview(tokens, {B, S, D}));
  milmer::cls_scatter_add<float>(ctx, milmer::view(dtokens.data(), {B, S, D}), cview(dcls, {B, D}));
  return {out.to_host(), dtokens.to_host()};
}

}  // namespace

TEST_SUITE("tokens") {
  TEST_CASE("assembly forward: the reference's additions bit for bit, CLS untouched") {
    std::uint64_t seed = 1;
    for (const Shape& z : kShapes) {
      INFO("batch ", z.batch, " visual ", z.visual, " eeg ", z.eeg, " width ", z.width);
      const auto in = make_inputs(z, seed += 10);
      const auto got = milmer::test::under_every_schedule([&] { return run_forward(in); });
      const auto r32 = forward_ref<float>(z, params_of<float>(in));
      // Each element is at most two float additions in the reference's order: exact.
      CHECK(got == r32);
      check_close(got, forward_ref<double>(z, params_of<double>(in)), r32, "tokens");
      for (int b = 0; b < z.batch; ++b)
        for (int c = 0; c < z.width; ++c)
          CHECK(got[static_cast<std::size_t>(b) * z.sequence() * z.width + c] == in.cls[c]);
    }
  }

  TEST_CASE("assembly backward: copies exact, batch sums to the fp64 reference") {
    std::uint64_t seed = 100;
    for (const Shape& z : kShapes) {
      INFO("batch ", z.batch, " visual ", z.visual, " eeg ", z.eeg, " width ", z.width);
      const auto in = make_inputs(z, seed += 10);
      const auto start = start_grads(z, seed + 5);
      const auto got = milmer::test::under_every_schedule([&] { return run_backward(in, start); });
      const auto r64 = backward_ref<double>(z, in.dtokens, start);
      const auto r32 = backward_ref<float>(z, in.dtokens, start);
      CHECK(got[0] == r32.dvisual);
      CHECK(got[1] == r32.deeg);
      check_close(got[2], r64.dcls, r32.dcls, "dcls");
      check_close(got[3], r64.dtype_embed, r32.dtype_embed, "dtype_embed");
      check_close(got[4], r64.dpos_visual, r32.dpos_visual, "dpos_visual");
      check_close(got[5], r64.dpos_eeg, r32.dpos_eeg, "dpos_eeg");
    }
  }

  TEST_CASE("assembly backward matches central finite differences of the fp64 forward") {
    const Shape shapes[] = {{1, 1, 1, 1}, {3, 2, 3, 5}};
    std::uint64_t seed = 200;
    for (const Shape& z : shapes) {
      INFO("batch ", z.batch, " visual ", z.visual, " eeg ", z.eeg, " width ", z.width);
      const auto in = make_inputs(z, seed += 10);
      const Outputs zero = {std::vector<float>(z.width), std::vector<float>(2 * z.width),
                            std::vector<float>(z.visual * z.width),
                            std::vector<float>(z.eeg * z.width)};
      const auto got = milmer::test::under_every_schedule([&] { return run_backward(in, zero); });
      auto q = params_of<double>(in);
      const auto dy = cast<double>(in.dtokens);
      const auto loss = [&] {
        const auto x = forward_ref<double>(z, q);
        double l = 0;
        for (std::size_t i = 0; i < x.size(); ++i) l += x[i] * dy[i];
        return l;
      };
      const auto central = [&](std::vector<double>& v) {
        std::vector<double> g(v.size());
        for (std::size_t i = 0; i < v.size(); ++i) {
          const double kept = v[i], h = 1e-5;
          v[i] = kept + h;
          const double up = loss();
          v[i] = kept - h;
          const double down = loss();
          v[i] = kept;
          g[i] = (up - down) / (2 * h);
        }
        return g;
      };
      const auto r32 = backward_ref<float>(z, in.dtokens, zero);
      check_close(got[0], central(q.visual), r32.dvisual, "dvisual vs finite differences");
      check_close(got[1], central(q.eeg), r32.deeg, "deeg vs finite differences");
      check_close(got[2], central(q.cls), r32.dcls, "dcls vs finite differences");
      check_close(got[3], central(q.type_embed), r32.dtype_embed,
                  "dtype_embed vs finite differences");
      check_close(got[4], central(q.pos_visual), r32.dpos_visual,
                  "dpos_visual vs finite differences");
      check_close(got[5], central(q.pos_eeg), r32.dpos_eeg, "dpos_eeg vs finite differences");
    }
  }

  TEST_CASE("assembly backward is two launches and repeats bit for bit") {
    const Shape z{14, 64, 32, 40};
    const auto in = make_inputs(z, 300);
    const auto start = start_grads(z, 310);
    milmer::emu::reset_counters();
    const auto first = run_backward(in, start);
    CHECK(milmer::emu::counters().launches == 2);
    milmer::emu::set_schedule(milmer::emu::Schedule::random, 4242);
    CHECK(run_backward(in, start) == first);
    milmer::emu::set_schedule(milmer::emu::Schedule::seq, 0);
  }

  TEST_CASE("cls_gather takes token 0; cls_scatter_add adds into token 0 only") {
    std::uint64_t seed = 400;
    for (const Shape& z : kShapes) {
      INFO("batch ", z.batch, " sequence ", z.sequence(), " width ", z.width);
      const std::size_t D = z.width, S = z.sequence();
      const auto tokens = random_vector(z.tokens(), seed++);
      const auto dtokens = random_vector(z.tokens(), seed++);
      const auto dcls = random_vector(z.batch * D, seed++);
      const auto got =
          milmer::test::under_every_schedule([&] { return run_cls(z, tokens, dtokens, dcls); });
      std::vector<float> gathered(z.batch * D), scattered = dtokens;
      for (int b = 0; b < z.batch; ++b)
        for (std::size_t c = 0; c < D; ++c) {
          gathered[b * D + c] = tokens[b * S * D + c];
          scattered[b * S * D + c] += dcls[b * D + c];
        }
      CHECK(got[0] == gathered);
      CHECK(got[1] == scattered);
    }
  }

  TEST_CASE("launchers reject bad arguments with the op, argument and values") {
    milmer::Context ctx;
    const Shape z{2, 3, 4, 5};
    const std::int64_t B = 2, N = 3, C = 4, D = 5, S = 8;
    const auto in = make_inputs(z, 500);
    DeviceVector<float> visual(in.visual), eeg(in.eeg), cls(in.cls), type_embed(in.type_embed),
        pos_visual(in.pos_visual), pos_eeg(in.pos_eeg), tokens(z.tokens()), scratch(1), out(B * D);
    const auto fwd = [&](milmer::TensorView<float> x, milmer::TensorView<const float> e,
                         milmer::TensorView<const float> types) {
      milmer::token_assembly_forward<float>(ctx, x, cview(visual, {B, N, D}), e, cview(cls, {D}),
                                            types, cview(pos_visual, {N, D}),
                                            cview(pos_eeg, {C, D}));
    };
    const auto vtokens = milmer::view(tokens.data(), {B, S, D});
    CHECK(milmer::test::error_message([&] {
            fwd(milmer::view(tokens.data(), {B, S - 1, D}), cview(eeg, {B, C, D}),
                cview(type_embed, {2, D}));
          }) ==
          "token_assembly_forward: argument 'tokens': expected shape (2, 8, 5), got shape "
          "(2, 7, 5)");
    CHECK(milmer::test::error_message([&] {
            fwd(vtokens, cview(eeg, {B, C * D}), cview(type_embed, {2, D}));
          }) ==
          "token_assembly_forward: argument 'eeg': expected shape (2, *, 5), got shape "
          "(2, 20)");
    CHECK(milmer::test::error_message([&] {
            fwd(vtokens, cview(eeg, {B, C, D}), cview(type_embed, {D, 2}));
          }) ==
          "token_assembly_forward: argument 'type_embed': expected shape (2, 5), got shape "
          "(5, 2)");

    DeviceVector<float> dvisual(in.visual.size()), deeg(in.eeg.size()), dvec(2 * D),
        dpos_visual(N * D), dpos_eeg(C * D);
    const auto bwd = [&](milmer::TensorView<float> dpos, milmer::TensorView<float> scr) {
      milmer::token_assembly_backward<float>(
          ctx, milmer::view(dvisual.data(), {B, N, D}), milmer::view(deeg.data(), {B, C, D}),
          milmer::view(dvec.data(), {D}), milmer::view(dvec.data(), {2, D}),
          milmer::view(dpos_visual.data(), {N, D}), dpos, scr, cview(tokens, {B, S, D}));
    };
    CHECK(milmer::token_assembly_backward_scratch_elements(N, C, D) == 35);
    CHECK(milmer::test::error_message([&] {
            bwd(milmer::view(dpos_eeg.data(), {C, D}), milmer::view(scratch.data(), {1}));
          }) ==
          "token_assembly_backward: argument 'scratch': expected at least 35 floats, got 1 "
          "floats");
    DeviceVector<float> big_scratch(35);
    CHECK(milmer::test::error_message([&] {
            bwd(milmer::view(dpos_eeg.data(), {C - 1, D}), milmer::view(big_scratch.data(), {35}));
          }) ==
          "token_assembly_backward: argument 'dpos_eeg': expected shape (4, 5), got shape "
          "(3, 5)");

    CHECK(milmer::test::error_message([&] {
            milmer::cls_gather<float>(ctx, milmer::view(out.data(), {B, D + 1}),
                                      cview(tokens, {B, S, D}));
          }) == "cls_gather: argument 'out': expected shape (2, 5), got shape (2, 6)");
    CHECK(milmer::test::error_message([&] {
            milmer::cls_scatter_add<float>(
                ctx, milmer::view(static_cast<float*>(nullptr), {B, S, D}), cview(out, {B, D}));
          }) == "cls_scatter_add: argument 'dtokens': expected a non-null pointer, got nullptr");
  }
}
