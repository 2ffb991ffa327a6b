// Token assembly for the fusion transformer and the CLS gather / scatter-add: exact equality
// where the op moves data (and where it is two float adds in the reference's order), the
// tolerance rule and finite differences for the batch sums, every emulator schedule, launch
// counts and argument validation.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "milmer/kernels/tokens.hpp"
#include "milmer/reference/tokens.hpp"
#include "support.hpp"

namespace {

using milmer::test::check_close;
using milmer::test::DeviceVector;
using milmer::test::random_vector;
using Outputs = std::vector<std::vector<float>>;
namespace refs = milmer::reference;

using Shape = refs::TokenAssemblySizes;
template <class S>
using Params = refs::TokenAssemblyParams<S>;

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

template <class S>
Params<S> params_of(const Inputs& in) {
  return {refs::as<S>(in.visual),     refs::as<S>(in.eeg),        refs::as<S>(in.cls),
          refs::as<S>(in.type_embed), refs::as<S>(in.pos_visual), refs::as<S>(in.pos_eeg)};
}

template <class S>
std::vector<S> forward_ref(const Shape& z, const Params<S>& q) {
  return refs::token_assembly_forward(z, q);
}

// start: dcls, dtype_embed, dpos_visual, dpos_eeg before backward.
template <class S>
refs::TokenAssemblyBackward<S> backward_ref(const Shape& z, const std::vector<float>& dtokens,
                                            const Outputs& start) {
  return refs::token_assembly_backward(z, refs::as<S>(dtokens), refs::as<S>(start[0]),
                                       refs::as<S>(start[1]), refs::as<S>(start[2]),
                                       refs::as<S>(start[3]));
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
      const auto dy = refs::as<double>(in.dtokens);
      const auto loss = [&] { return refs::dot(forward_ref<double>(z, q), dy); };
      const auto central = [&](std::vector<double>& v) {
        return milmer::test::central_differences(v, loss, 1e-5);
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
#if MILMER_TARGET_HOST
    milmer::emu::reset_counters();
#endif
    const auto first = run_backward(in, start);
#if MILMER_TARGET_HOST
    CHECK(milmer::emu::counters().launches == 2);
    milmer::emu::set_schedule(milmer::emu::Schedule::random, 4242);
#endif
    CHECK(run_backward(in, start) == first);
#if MILMER_TARGET_HOST
    milmer::emu::set_schedule(milmer::emu::Schedule::seq, 0);
#endif
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
