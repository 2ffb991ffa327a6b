// ParameterSet: a model's named float32 tensors in one flat device arena, with a gradient arena
// of the same layout, and their safetensors I/O.
//
// Tensors are laid out in declaration order, each starting at a 16-byte boundary, except a
// tensor declared with `follow_previous`, which starts right where the previous one ends. A
// model uses that to make tensors that one GEMM reads as one matrix adjacent in memory: Swin's
// separate q, k and v weights (transformers' names) are one stacked (3C, C) weight.
// Loading checks the whole file first (missing, extra, wrongly shaped tensors are one Error
// naming them) and only then writes the device arena: nothing is ever half-loaded.
#pragma once

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "milmer/config.hpp"
#include "milmer/context.hpp"
#include "milmer/error.hpp"
#include "milmer/io/safetensors.hpp"
#include "milmer/memory.hpp"
#include "milmer/rng.hpp"
#include "milmer/tensor.hpp"

namespace milmer {

class ParameterSet {
 public:
  struct Entry {
    std::string name;
    std::vector<std::int64_t> shape;
    std::size_t offset = 0;  // in floats
    std::size_t numel = 0;
  };

  void add(std::string name, std::vector<std::int64_t> shape, bool follow_previous = false) {
    check(values_.size() == 0, "ParameterSet::add", name, "a declaration before allocate()",
          "a set already allocated");
    check(!index_.count(name), "ParameterSet::add", name, "a new name", "a duplicate");
    std::size_t n = 1;
    for (auto d : shape) n *= static_cast<std::size_t>(d);
    std::size_t offset = total_;
    if (!follow_previous) offset = (offset + 3) / 4 * 4;
    index_[name] = entries_.size();
    entries_.push_back(Entry{std::move(name), std::move(shape), offset, n});
    total_ = offset + n;
  }

  // Allocates the value and gradient arenas (gradients zeroed).
  void allocate(Context& ctx) {
    values_ = DeviceBuffer<float>(total_);
    grads_ = DeviceBuffer<float>(total_);
    values_.zero(ctx.stream());
    grads_.zero(ctx.stream());
  }

  const std::vector<Entry>& entries() const { return entries_; }
  const Entry& entry(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end())
      throw Error("ParameterSet", name, "a declared parameter", "no such name");
    return entries_[it->second];
  }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  float* value(const std::string& name) { return values_.data() + entry(name).offset; }
  float* grad(const std::string& name) { return grads_.data() + entry(name).offset; }
  std::size_t size() const { return total_; }  // floats in each arena (with alignment gaps)
  std::int64_t count() const {                 // parameters (no gaps)
    std::int64_t n = 0;
    for (const auto& e : entries_) n += static_cast<std::int64_t>(e.numel);
    return n;
  }
  float* values() { return values_.data(); }
  float* grads() { return grads_.data(); }
  void zero_grads(Context& ctx) { grads_.zero(ctx.stream()); }

  // Host copies of the values (or gradients), by name, with `prefix` before every name.
  io::TensorMap to_tensors(Context& ctx, bool gradients = false,
                           const std::string& prefix = "") const {
    std::vector<float> all(total_);
    (gradients ? grads_ : values_).download(all.data(), all.size(), ctx.stream());
    io::TensorMap out;
    for (const auto& e : entries_)
      out[prefix + e.name] =
          io::Tensor::from(io::Shape(e.shape.begin(), e.shape.end()),
                           std::span<const float>(all.data() + e.offset, e.numel));
    return out;
  }

  // Loads every parameter from `file` (names with `prefix`); `ignore` names file tensors that
  // may be present and are not parameters.
  void load(Context& ctx, const io::SafetensorsFile& file, const std::string& prefix = "",
            const io::IgnoreFn& ignore = {}) {
    std::vector<float> all(total_, 0.0f);
    std::vector<io::TensorSlot> slots;
    for (const auto& e : entries_)
      slots.push_back(io::slot(prefix + e.name, io::Shape(e.shape.begin(), e.shape.end()),
                               all.data() + e.offset));
    io::load_tensors(file, slots, ignore);
    values_.upload(all.data(), all.size(), ctx.stream());
  }

  // The models' initialisation: LayerNorm tensors (a name with "norm") weight 1, bias 0;
  // other biases 0; every other tensor N(0, std) from the Philox stream (seed, stream),
  // counted over the parameters in declaration order (alignment gaps stay 0).
  void init_normal(Context& ctx, std::uint64_t seed, std::uint64_t stream, float std) {
    std::vector<float> host(total_, 0.0f);
    std::uint64_t k = 0;
    for (const auto& e : entries_) {
      const bool norm = e.name.find("norm") != std::string::npos;
      const bool bias = e.name.ends_with("bias");
      for (std::size_t i = 0; i < e.numel; ++i)
        host[e.offset + i] =
            norm ? (bias ? 0.0f : 1.0f) : (bias ? 0.0f : philox_normal(seed, stream, k + i, std));
      k += e.numel;
    }
    upload(ctx, host);
  }

  // Copies all values from host memory laid out like the arena.
  void upload(Context& ctx, const std::vector<float>& host) {
    values_.upload(host.data(), host.size(), ctx.stream());
  }
  std::vector<float> download(Context& ctx, bool gradients = false) const {
    std::vector<float> all(total_);
    (gradients ? grads_ : values_).download(all.data(), all.size(), ctx.stream());
    return all;
  }

 private:
  std::vector<Entry> entries_;
  std::map<std::string, std::size_t> index_;
  std::size_t total_ = 0;
  DeviceBuffer<float> values_, grads_;
};

// Views of a ParameterSet's tensors by name, to build a model's typed tables once: the values
// (T = const float) or the gradients (T = float), with the shape the kernels read, `offset`
// elements into the tensor (a part of a packed weight, such as rows D..3D of an in-projection).
template <class T>
struct ParameterViews {
  ParameterSet& set;
  TensorView<T> operator()(const std::string& name, std::initializer_list<std::int64_t> dims,
                           std::int64_t offset = 0) const {
    float* base = std::is_const_v<T> ? set.value(name) : set.grad(name);
    return TensorView<T>(base + offset, dims);
  }
};

}  // namespace milmer
