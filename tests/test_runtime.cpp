// Runtime pieces: Philox against its published known answers, tensor-view validation,
// device buffers and the arena.
#include <doctest/doctest.h>

#include <cmath>

#include "milmer/memory.hpp"
#include "milmer/rng.hpp"
#include "milmer/tensor.hpp"
#include "support.hpp"

TEST_SUITE("runtime") {
  TEST_CASE("Philox-4x32-10 reproduces the Random123 known-answer vectors") {
    const auto zero = milmer::Philox::round10(0, 0, 0, 0, 0, 0);
    CHECK(zero.c0 == 0x6627e8d5u);
    CHECK(zero.c1 == 0xe169c58du);
    CHECK(zero.c2 == 0xbc57ac4cu);
    CHECK(zero.c3 == 0x9b00dbd8u);
    const auto pi = milmer::Philox::round10(0xa4093822u, 0x299f31d0u, 0x243f6a88u, 0x85a308d3u,
                                            0x13198a2eu, 0x03707344u);
    CHECK(pi.c0 == 0xd16cfe09u);
    CHECK(pi.c1 == 0x94fdccebu);
    CHECK(pi.c2 == 0x5001e420u);
    CHECK(pi.c3 == 0x24126ea1u);
  }

  TEST_CASE("philox_uniform is uniform on [0, 1) and a pure function of its triple") {
    double sum = 0, sum2 = 0;
    const int n = 200000;
    for (int i = 0; i < n; ++i) {
      const float u = milmer::philox_uniform(42, 7, static_cast<std::uint64_t>(i));
      REQUIRE(u >= 0.0f);
      REQUIRE(u < 1.0f);
      sum += u;
      sum2 += double(u) * u;
    }
    CHECK(std::abs(sum / n - 0.5) < 0.005);
    CHECK(std::abs(sum2 / n - sum * sum / n / n - 1.0 / 12) < 0.002);
    CHECK(milmer::philox_uniform(42, 7, 99) == milmer::philox_uniform(42, 7, 99));
    CHECK(milmer::philox_uniform(42, 7, 99) != milmer::philox_uniform(42, 8, 99));
  }

  TEST_CASE("tensor views validate shape, null pointers, contiguity and alignment") {
    float buf[64];
    auto v = milmer::view(buf, {4, 16});
    CHECK(v.numel() == 64);
    CHECK(v.contiguous());
    milmer::expect(v, "op", "x", {4, -1});
    const auto msg = milmer::test::error_message([&] { milmer::expect(v, "myop", "x", {4, 8}); });
    CHECK(msg == "myop: argument 'x': expected shape (4, 8), got shape (4, 16)");
    auto null = milmer::view(static_cast<float*>(nullptr), {4, 16});
    CHECK_THROWS_WITH_AS(milmer::expect(null, "op", "x", {4, 16}),
                         "op: argument 'x': expected a non-null pointer, got nullptr",
                         milmer::Error);
    auto empty = milmer::view(buf, {0, 16});
    CHECK_THROWS_AS(milmer::expect(empty, "op", "x", {-1, 16}), milmer::Error);
    auto odd = milmer::view(buf + 1, {4, 15});
    CHECK_THROWS_AS(milmer::expect_aligned(odd, "op", "x", 16), milmer::Error);
    milmer::TensorView<const float> c = v;
    CHECK(c.data == buf);
  }

  TEST_CASE("the arena hands out aligned slices and refuses to overflow") {
    milmer::Arena arena(1000);
    float* a = arena.take<float>(10, "a");
    float* b = arena.take<float>(1, "b");
    CHECK(reinterpret_cast<std::uintptr_t>(a) % 256 == 0);
    CHECK(reinterpret_cast<std::uintptr_t>(b) - reinterpret_cast<std::uintptr_t>(a) == 256);
    CHECK_THROWS_WITH_AS(arena.take<float>(1000, "big"),
                         "Arena::take: argument 'big': expected at most 512 free bytes, got "
                         "4096 bytes",
                         milmer::Error);
    arena.reset();
    CHECK(arena.used() == 0);
  }

#if MILMER_TARGET_HOST
  TEST_CASE("device buffers track live and peak bytes in the emulator") {
    const auto before = milmer::emu::memory_stats();
    {
      milmer::DeviceBuffer<float> buf(1000);
      CHECK(milmer::emu::memory_stats().live_bytes == before.live_bytes + 4000);
      std::vector<float> h(1000, 3.0f), back(1000);
      buf.upload(h.data(), h.size());
      buf.download(back.data(), back.size());
      CHECK(back == h);
      CHECK_THROWS_AS(buf.upload(h.data(), 10), milmer::Error);
    }
    CHECK(milmer::emu::memory_stats().live_bytes == before.live_bytes);
  }
#endif
}
