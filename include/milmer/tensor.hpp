// Light tensor views: a typed pointer with a shape and strides (in elements). Views own
// nothing; launchers take them (destination first) and validate shape, strides, sizes,
// null pointers and alignment before any launch, throwing milmer::Error naming the op.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <type_traits>

#include "milmer/error.hpp"

namespace milmer {

inline constexpr int kMaxRank = 6;

template <class T>
struct TensorView {
  T* data = nullptr;
  int rank = 0;
  std::array<std::int64_t, kMaxRank> shape{};
  std::array<std::int64_t, kMaxRank> strides{};

  TensorView() = default;
  // A contiguous (row-major) view.
  TensorView(T* p, std::initializer_list<std::int64_t> dims) : data(p) {
    MILMER_CHECK(dims.size() <= kMaxRank, "TensorView", "shape", str("at most ", kMaxRank, " dims"),
                 str(dims.size(), " dims"));
    rank = static_cast<int>(dims.size());
    int i = 0;
    for (auto d : dims) shape[i++] = d;
    std::int64_t s = 1;
    for (int k = rank - 1; k >= 0; --k) {
      strides[k] = s;
      s *= shape[k];
    }
  }
  // A view of const elements from a view of mutable ones.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  TensorView(const TensorView<U>& o)  // NOLINT(google-explicit-constructor)
      : data(o.data), rank(o.rank), shape(o.shape), strides(o.strides) {}

  std::int64_t dim(int i) const { return shape[i < 0 ? rank + i : i]; }
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= shape[i];
    return n;
  }
  bool contiguous() const {
    std::int64_t s = 1;
    for (int k = rank - 1; k >= 0; --k) {
      if (shape[k] != 1 && strides[k] != s) return false;
      s *= shape[k];
    }
    return true;
  }
  std::string shape_string() const {
    std::string s = "(";
    for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + ")";
  }
};

// A launcher's read-only input of element type T. std::type_identity_t keeps T out of
// deduction here, so T comes from the outputs and a TensorView<T> converts to the input.
template <class T>
using InView = TensorView<const std::type_identity_t<T>>;

template <class T>
TensorView<T> view(T* p, std::initializer_list<std::int64_t> dims) {
  return TensorView<T>(p, dims);
}

inline std::string dims_string(std::initializer_list<std::int64_t> dims) {
  std::string s = "(";
  int i = 0;
  for (auto d : dims) s += (i++ ? ", " : "") + (d < 0 ? std::string("*") : std::to_string(d));
  return s + ")";
}

// Checks a view against an expected shape (-1: any size >= 1): non-null, contiguous, no
// zero-sized dimension. Throws Error(op, name, expected, got).
template <class T>
void expect(const TensorView<T>& t, const char* op, const char* name,
            std::initializer_list<std::int64_t> dims) {
  bool ok = t.rank == static_cast<int>(dims.size());
  int i = 0;
  for (auto d : dims) {
    if (ok && (t.shape[i] < 1 || (d >= 0 && t.shape[i] != d))) ok = false;
    ++i;
  }
  MILMER_CHECK(ok, op, name, str("shape ", dims_string(dims)), str("shape ", t.shape_string()));
  MILMER_CHECK(t.data != nullptr, op, name, "a non-null pointer", "nullptr");
  MILMER_CHECK(t.contiguous(), op, name, "a contiguous tensor", "strided");
}

// Checks that a pointer is aligned for vector access of `bytes` bytes.
template <class T>
void expect_aligned(const TensorView<T>& t, const char* op, const char* name, std::size_t bytes) {
  const auto addr = reinterpret_cast<std::uintptr_t>(t.data);
  MILMER_CHECK(addr % bytes == 0, op, name, str("a ", bytes, "-byte aligned pointer"),
               str("address ", t.data, " (offset ", addr % bytes, ")"));
}

namespace detail {

// A non-null, contiguous tensor of rank >= 1 with no zero-sized dimension (any shape).
template <class T>
void expect_flat(const TensorView<T>& t, const char* op, const char* name) {
  bool ok = t.rank >= 1;
  for (int i = 0; i < t.rank; ++i) ok = ok && t.shape[i] >= 1;
  MILMER_CHECK(ok, op, name, "a tensor with at least one element", str("shape ", t.shape_string()));
  MILMER_CHECK(t.data != nullptr, op, name, "a non-null pointer", "nullptr");
  MILMER_CHECK(t.contiguous(), op, name, "a contiguous tensor", "strided");
}

// t has the shape of `like`.
template <class T, class U>
void expect_same_shape(const TensorView<T>& t, const TensorView<U>& like, const char* op,
                       const char* name) {
  bool same = t.rank == like.rank;
  for (int i = 0; same && i < t.rank; ++i) same = t.shape[i] == like.shape[i];
  MILMER_CHECK(same, op, name, str("shape ", like.shape_string()), str("shape ", t.shape_string()));
}

// A size that kernels index with int; the argument is named name + suffix.
inline void expect_int_range(std::int64_t v, const char* op, const char* name,
                             const char* suffix = "") {
  MILMER_CHECK(v <= std::numeric_limits<int>::max(), op, str(name, suffix),
               str("at most ", std::numeric_limits<int>::max()), str(v));
}

// A flat float scratch buffer of at least `need` elements.
inline void expect_scratch(const TensorView<float>& scratch, const char* op, std::int64_t need) {
  expect_flat(scratch, op, "scratch");
  MILMER_CHECK(scratch.numel() >= need, op, "scratch", str("at least ", need, " floats"),
               str(scratch.numel(), " floats"));
}

// A view with its argument name, for expect_each.
template <class T>
struct Named {
  const TensorView<T>* view;
  const char* name;
};
template <class T>
Named<T> named(const TensorView<T>& view, const char* name) {
  return {&view, name};
}
// expect(view, op, name, dims) for each named view, in order: tensors that share a shape.
template <class... T>
void expect_each(const char* op, std::initializer_list<std::int64_t> dims,
                 const Named<T>&... views) {
  (expect(*views.view, op, views.name, dims), ...);
}

// A (rows, width) matrix view checked by expect() whose two sizes kernels index with int
// (arguments '<name> rows' and '<name><width_suffix>' in the messages).
struct RowsWidth {
  std::int64_t rows, width;
};
template <class T>
RowsWidth expect_rows(const TensorView<T>& t, const char* op, const char* name,
                      const char* width_suffix = " width") {
  expect(t, op, name, {-1, -1});
  const RowsWidth r{t.dim(0), t.dim(1)};
  expect_int_range(r.rows, op, name, " rows");
  expect_int_range(r.width, op, name, width_suffix);
  return r;
}

}  // namespace detail

}  // namespace milmer
