// Device memory: an owning buffer and the one arena allocator.
//
// A model sizes each arena once (parameters, gradients, optimizer state, activations) and
// carves its tensors out of it; nothing is allocated inside a training step. Alignment is
// 256 bytes, what cudaMalloc gives, so every carved tensor allows 16-byte vector access.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "milmer/error.hpp"
#include "milmer/platform.hpp"

namespace milmer {

// Owns one device allocation of n elements of T.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) : n_(n) {
    if (n) MILMER_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)));
  }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(o.n_) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = o.n_;
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* data() { return p_; }
  const T* data() const { return p_; }
  std::size_t size() const { return n_; }
  std::size_t bytes() const { return n_ * sizeof(T); }
  void zero(cudaStream_t s = nullptr) {
    if (n_) MILMER_CUDA_CHECK(cudaMemsetAsync(p_, 0, bytes(), s));
  }
  void upload(const T* host, std::size_t n, cudaStream_t s = nullptr) {
    check(n == n_, "DeviceBuffer::upload", "n", str(n_, " elements"), str(n));
    if (n) MILMER_CUDA_CHECK(cudaMemcpyAsync(p_, host, bytes(), cudaMemcpyHostToDevice, s));
  }
  void download(T* host, std::size_t n, cudaStream_t s = nullptr) const {
    check(n == n_, "DeviceBuffer::download", "n", str(n_, " elements"), str(n));
    if (n) {
      MILMER_CUDA_CHECK(cudaMemcpyAsync(host, p_, bytes(), cudaMemcpyDeviceToHost, s));
      MILMER_CUDA_CHECK(cudaStreamSynchronize(s));
    }
  }

 private:
  void release() {
    if (p_) cudaFree(p_);
    p_ = nullptr;
  }
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

// A bump allocator over one device allocation. Plan with reserve() (or take the total from
// a dry run), then allocate once and take(); reset() gives everything back at once.
class Arena {
 public:
  static constexpr std::size_t kAlign = 256;
  static std::size_t round_up(std::size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

  Arena() = default;
  explicit Arena(std::size_t capacity_bytes) : buf_(round_up(capacity_bytes)) {}

  template <class T>
  T* take(std::size_t n, const char* what) {
    const std::size_t bytes = round_up(n * sizeof(T));
    check(used_ + bytes <= buf_.size(), "Arena::take", what,
          str("at most ", buf_.size() - used_, " free bytes"), str(bytes, " bytes"));
    T* p = reinterpret_cast<T*>(buf_.data() + used_);
    used_ += bytes;
    return p;
  }
  void reset() { used_ = 0; }
  void zero(cudaStream_t s = nullptr) { buf_.zero(s); }
  std::size_t used() const { return used_; }
  std::size_t capacity() const { return buf_.size(); }
  unsigned char* base() { return buf_.data(); }

 private:
  DeviceBuffer<unsigned char> buf_;
  std::size_t used_ = 0;
};

// Sizes and carves one arena from one description of its tensors, so that the list is
// written once: build(layout) calls layout(plan) twice, first to count the bytes, then, with
// the arena allocated, to take them in the same order. Every take is at least one element.
class ArenaPlan {
 public:
  template <class T = float>
  T* take(std::int64_t n, const char* what) {
    const std::size_t count = static_cast<std::size_t>(std::max<std::int64_t>(n, 1));
    if (!arena_) {
      bytes_ += Arena::round_up(count * sizeof(T));
      return nullptr;
    }
    return arena_->take<T>(count, what);
  }

  template <class Layout>
  static Arena build(Layout&& layout) {
    ArenaPlan count;
    layout(count);
    Arena arena(count.bytes_);
    ArenaPlan carve;
    carve.arena_ = &arena;
    layout(carve);
    return arena;
  }

 private:
  Arena* arena_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace milmer
