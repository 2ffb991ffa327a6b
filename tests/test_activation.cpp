// GELU (erf form) and ReLU forward and backward: the packed (16-byte) and scalar paths
// against plain-loop references, central finite differences, every emulator schedule, and
// argument validation.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "milmer/kernels/activation.hpp"
#include "milmer/reference/activation.hpp"
#include "support.hpp"

namespace {

namespace refs = milmer::reference;
using milmer::test::check_close;
using milmer::test::DeviceVector;
using milmer::test::random_vector;

using Act = refs::Activation;

template <class S>
std::vector<S> forward_ref(Act a, const std::vector<float>& x) {
  return refs::activation_forward(a, refs::as<S>(x));
}

template <class S>
std::vector<S> backward_ref(Act a, const std::vector<float>& x, const std::vector<float>& dy) {
  return refs::activation_backward(a, refs::as<S>(x), refs::as<S>(dy));
}

// Runs forward and backward on n elements starting `shift` elements into the buffers (a
// shift of 1 misaligns every pointer). Returns {out, dinp, forward kernel, backward kernel}.
struct Run {
  std::vector<float> out, dinp;
  std::string forward_kernel, backward_kernel;
  bool operator==(const Run&) const = default;
};

Run run(Act a, const std::vector<float>& x, const std::vector<float>& dy, int shift) {
  const auto n = static_cast<std::int64_t>(x.size());
  std::vector<float> xs(x.size() + shift, 0.0f), dys(x.size() + shift, 0.0f);
  std::copy(x.begin(), x.end(), xs.begin() + shift);
  std::copy(dy.begin(), dy.end(), dys.begin() + shift);
  DeviceVector<float> dx_in(xs), d_dy(dys), d_out(xs.size()), d_dinp(xs.size());
  milmer::Context ctx;
  const auto out = milmer::view(d_out.data() + shift, {n});
  const auto dinp = milmer::view(d_dinp.data() + shift, {n});
  const auto inp = milmer::view(static_cast<const float*>(dx_in.data()) + shift, {n});
  const auto dout = milmer::view(static_cast<const float*>(d_dy.data()) + shift, {n});
  Run r;
  if (a == Act::gelu)
    milmer::gelu_forward(ctx, out, inp);
  else
    milmer::relu_forward(ctx, out, inp);
  r.forward_kernel = milmer::test::last_kernel();
  if (a == Act::gelu)
    milmer::gelu_backward(ctx, dinp, dout, inp);
  else
    milmer::relu_backward(ctx, dinp, dout, inp);
  r.backward_kernel = milmer::test::last_kernel();
  const auto o = d_out.to_host(), g = d_dinp.to_host();
  r.out.assign(o.begin() + shift, o.end());
  r.dinp.assign(g.begin() + shift, g.end());
  return r;
}

void check_activation(Act a, std::size_t n, int shift, bool expect_packed, std::uint64_t seed) {
  const char* name = a == Act::gelu ? "gelu" : "relu";
  INFO(name, " n ", n, " shift ", shift);
  auto x = random_vector(n, seed, -6.0f, 6.0f);
  if (n > 2) x[1] = 0.0f;  // relu's kink: the derivative there is 0, as PyTorch
  const auto dy = random_vector(n, seed + 1);
  const Run r = milmer::test::under_every_schedule([&] { return run(a, x, dy, shift); });
  const std::string path =
      expect_packed ? "activation_forward_packed" : "activation_forward_scalar";
  CHECK(milmer::test::ran_kernel(r.forward_kernel, path));
  CHECK(milmer::test::ran_kernel(r.backward_kernel, expect_packed ? "activation_backward_packed"
                                                                  : "activation_backward_scalar"));
  check_close(r.out, forward_ref<double>(a, x), forward_ref<float>(a, x), "out");
  check_close(r.dinp, backward_ref<double>(a, x, dy), backward_ref<float>(a, x, dy), "dinp");
}

}  // namespace

TEST_SUITE("activation") {
  TEST_CASE("GELU and ReLU match the fp64 reference on the packed and the scalar path") {
    std::uint64_t seed = 1;
    for (Act a : {Act::gelu, Act::relu}) {
      check_activation(a, 4096, 0, true, seed++);  // aligned, n % 4 == 0
      check_activation(a, 4, 0, true, seed++);
      check_activation(a, 4096, 1, false, seed++);  // misaligned pointers
      check_activation(a, 4099, 0, false, seed++);  // n % 4 != 0
      check_activation(a, 1, 0, false, seed++);
      check_activation(a, 31, 0, false, seed++);
    }
  }

  TEST_CASE("the packed and scalar paths give the same bits") {
    const auto x = random_vector(1024, 7, -5.0f, 5.0f), dy = random_vector(1024, 8);
    for (Act a : {Act::gelu, Act::relu}) {
      const Run packed = run(a, x, dy, 0), scalar = run(a, x, dy, 1);
      CHECK(milmer::test::different_kernels(packed.forward_kernel, scalar.forward_kernel));
      CHECK(packed.out == scalar.out);
      CHECK(packed.dinp == scalar.dinp);
    }
  }

  TEST_CASE("GELU matches PyTorch's erf form at known points") {
    // torch.nn.functional.gelu(torch.tensor([-3., -1., 0., 0.5, 1., 3.], dtype=torch.float64))
    const std::vector<float> x = {-3.0f, -1.0f, 0.0f, 0.5f, 1.0f, 3.0f};
    const std::vector<double> want = {-0.00404969409489031, -0.15865525393145702, 0.0,
                                      0.34573123063700656,  0.841344746068543,    2.99595030590511};
    const Run r = run(Act::gelu, x, std::vector<float>(x.size(), 1.0f), 0);
    check_close(r.out, want, forward_ref<float>(Act::gelu, x), "gelu at known points");
  }

  TEST_CASE("backward matches central finite differences of the fp64 forward") {
    auto x = random_vector(203, 11, -4.0f, 4.0f);
    for (auto& v : x)
      if (std::abs(v) < 1e-3f) v = 0.5f;  // keep relu's kink out of the difference stencil
    const auto dy = random_vector(203, 12);
    for (Act a : {Act::gelu, Act::relu}) {
      INFO((a == Act::gelu ? "gelu" : "relu"));
      const Run r = milmer::test::under_every_schedule([&] { return run(a, x, dy, 0); });
      std::vector<double> fd(x.size());
      const double h = 1e-5;
      for (std::size_t i = 0; i < x.size(); ++i)
        fd[i] = dy[i] *
                (refs::activation(a, double(x[i]) + h) - refs::activation(a, double(x[i]) - h)) /
                (2 * h);
      check_close(r.dinp, fd, backward_ref<float>(a, x, dy), "dinp vs finite differences");
    }
  }

  TEST_CASE("dinp may be the dout buffer") {
    const auto x = random_vector(100, 21, -3.0f, 3.0f), dy = random_vector(100, 22);
    DeviceVector<float> d_x(x), d_g(dy);
    milmer::Context ctx;
    milmer::gelu_backward(ctx, milmer::view(d_g.data(), {100}),
                          milmer::view(static_cast<const float*>(d_g.data()), {100}),
                          milmer::view(static_cast<const float*>(d_x.data()), {100}));
    CHECK(d_g.to_host() == run(Act::gelu, x, dy, 0).dinp);
  }

  TEST_CASE("launchers reject bad arguments with the op, argument and values") {
    milmer::Context ctx;
    DeviceVector<float> a(12), b(12);
    const auto in = milmer::view(static_cast<const float*>(a.data()), {3, 4});
    CHECK(milmer::test::error_message([&] {
            milmer::gelu_forward(ctx, milmer::view(b.data(), {4, 3}), in);
          }) == "gelu_forward: argument 'inp': expected shape (4, 3), got shape (3, 4)");
    CHECK(milmer::test::error_message([&] {
            milmer::relu_backward(ctx, milmer::view(b.data(), {3, 4}),
                                  milmer::view(static_cast<const float*>(nullptr), {3, 4}), in);
          }) == "relu_backward: argument 'dout': expected a non-null pointer, got nullptr");
    CHECK(milmer::test::error_message([&] {
            milmer::relu_forward(ctx, milmer::view(b.data(), {0}),
                                 milmer::view(static_cast<const float*>(a.data()), {0}));
          }) ==
          "relu_forward: argument 'out': expected a tensor with at least one element, got "
          "shape (0)");
  }
}
