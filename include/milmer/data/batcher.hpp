// milmer::data::Batcher: batches of a list of dataset samples, shuffled per epoch, filled on
// a background prefetch thread.
//
// Batches handed to the model (caller-provided host buffers):
//   frames (B, F, 3, H, W) float32, (x/255 - mean) / std with ImageNet mean and std
//   eeg    (B, C, S) float32
//   labels (B) int32, under the selected label scheme
#pragma once

#include <milmer/data/dataset.hpp>
#include <milmer/data/labels.hpp>
#include <milmer/data/shard_format.hpp>
#include <milmer/error.hpp>
#include <milmer/splitmix.hpp>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace milmer::data {

inline constexpr std::array<float, 3> kImageNetMean = {0.485f, 0.456f, 0.406f};
inline constexpr std::array<float, 3> kImageNetStd = {0.229f, 0.224f, 0.225f};

// Caller-owned host buffers for one batch of up to batch_size samples:
//   frames batch_size*F*3*H*W floats, eeg batch_size*C*S floats, labels batch_size ints.
struct BatchBuffers {
  float* frames = nullptr;
  float* eeg = nullptr;
  std::int32_t* labels = nullptr;
};

struct BatcherOptions {
  LabelScheme scheme = LabelScheme::deap4;
  std::size_t batch_size = 14;
  std::uint64_t seed = 0;
  bool shuffle = true;     // reshuffled every epoch from (seed, epoch)
  bool drop_last = false;  // otherwise the last batch of an epoch may be short
  bool prefetch = true;    // fill batches on a background thread
  std::size_t prefetch_depth = 2;
};

// One sample into its batch slot: frames HWC uint8 -> normalised (F, 3, H, W) float.
inline void normalise_frames(const ShardDims& d, const std::uint8_t* src, float* dst) {
  const std::size_t hw = std::size_t{d.height} * d.width;
  std::array<float, 3> scale{}, shift{};
  for (std::size_t c = 0; c < 3; ++c) {
    scale[c] = 1.0f / (255.0f * kImageNetStd[c]);
    shift[c] = kImageNetMean[c] / kImageNetStd[c];
  }
  for (std::size_t f = 0; f < d.frames; ++f) {
    const std::uint8_t* s = src + f * hw * 3;
    float* o = dst + f * 3 * hw;
    for (std::size_t p = 0; p < hw; ++p)
      for (std::size_t c = 0; c < 3; ++c)
        o[c * hw + p] = static_cast<float>(s[3 * p + c]) * scale[c] - shift[c];
  }
}

class Batcher {
 public:
  Batcher(const Dataset& ds, std::vector<std::size_t> indices, BatcherOptions opt)
      : ds_(ds), indices_(std::move(indices)), opt_(opt) {
    check(opt_.batch_size > 0, "Batcher", "batch_size", "> 0", str(opt_.batch_size));
    check(opt_.prefetch_depth > 0, "Batcher", "prefetch_depth", "> 0", str(opt_.prefetch_depth));
    for (std::size_t i : indices_)
      check(i < ds_.size(), "Batcher", "indices", str("< ", ds_.size()), str(i));
    order_ = indices_;
  }

  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;
  ~Batcher() { stop(); }

  std::size_t frames_floats() const {
    return opt_.batch_size * ds_.dims().frames * 3 * ds_.dims().height * ds_.dims().width;
  }
  std::size_t eeg_floats() const { return opt_.batch_size * ds_.dims().eeg_floats(); }
  std::size_t batch_size() const { return opt_.batch_size; }
  std::size_t size() const { return indices_.size(); }
  std::size_t batches_per_epoch() const {
    return opt_.drop_last ? indices_.size() / opt_.batch_size
                          : (indices_.size() + opt_.batch_size - 1) / opt_.batch_size;
  }

  // The sample order of an epoch: the indices shuffled with (seed, epoch), or as given.
  std::vector<std::size_t> epoch_order(std::uint64_t epoch) const {
    std::vector<std::size_t> o = indices_;
    if (opt_.shuffle) seeded_shuffle(o, opt_.seed ^ (0xD1B54A32D192ED03ull * (epoch + 1)));
    return o;
  }

  // Begins an epoch (abandoning any unfinished one) and, with prefetch, starts the thread.
  void start_epoch(std::uint64_t epoch) {
    stop();
    order_ = epoch_order(epoch);
    next_batch_ = 0;
    started_ = true;
    exhausted_ = false;
    if (opt_.prefetch) {
      stopping_ = false;
      worker_ = std::thread([this] { produce(); });
    }
  }

  // Fills out with the next batch of the epoch; returns its sample count, 0 at the end of
  // the epoch. An exception raised while reading (on the prefetch thread too) comes out here.
  std::size_t next(const BatchBuffers& out) {
    check(started_, "Batcher::next", "epoch", "start_epoch called first", "not started");
    check(out.frames && out.eeg && out.labels, "Batcher::next", "out",
          "non-null frames, eeg and labels buffers", "a null pointer");
    if (!opt_.prefetch) {
      if (next_batch_ >= batches_per_epoch()) return 0;
      return fill(next_batch_++, out);
    }
    if (exhausted_) return 0;
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !ready_.empty(); });
    Staged st = std::move(ready_.front());
    ready_.pop_front();
    cv_.notify_all();
    lock.unlock();
    const std::size_t count = st.count;
    if (st.error || count == 0) {
      exhausted_ = true;  // the producer has stopped after these
      if (st.error) std::rethrow_exception(st.error);
      return 0;
    }
    const auto copy = [](const auto& v, std::size_t n, auto* dst) {
      std::copy(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n), dst);
    };
    copy(st.frames, per_frames() * count, out.frames);
    copy(st.eeg, per_eeg() * count, out.eeg);
    copy(st.labels, count, out.labels);
    lock.lock();
    free_.push_back(std::move(st));
    return count;
  }

 private:
  struct Staged {
    std::vector<float> frames, eeg;
    std::vector<std::int32_t> labels;
    std::size_t count = 0;
    std::exception_ptr error;
  };

  std::size_t per_frames() const {
    return std::size_t{ds_.dims().frames} * 3 * ds_.dims().height * ds_.dims().width;
  }
  std::size_t per_eeg() const { return ds_.dims().eeg_floats(); }

  std::size_t fill(std::size_t b, const BatchBuffers& out) {
    const std::size_t begin = b * opt_.batch_size;
    const std::size_t count = std::min(opt_.batch_size, order_.size() - begin);
    raw_.resize(ds_.dims().frame_bytes());
    for (std::size_t j = 0; j < count; ++j) {
      const std::size_t i = order_[begin + j];
      ds_.read(i, raw_.data(), out.eeg + j * per_eeg());
      normalise_frames(ds_.dims(), raw_.data(), out.frames + j * per_frames());
      out.labels[j] = ds_.label(i, opt_.scheme);
    }
    return count;
  }

  void produce() {
    const std::size_t n = batches_per_epoch();
    for (std::size_t b = 0; b <= n; ++b) {
      Staged st;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || ready_.size() < opt_.prefetch_depth; });
        if (stopping_) return;
        if (!free_.empty()) {
          st = std::move(free_.back());
          free_.pop_back();
        }
      }
      st.error = nullptr;
      st.count = 0;
      if (b < n) {
        try {
          st.frames.resize(frames_floats());
          st.eeg.resize(eeg_floats());
          st.labels.resize(opt_.batch_size);
          st.count = fill(b, {st.frames.data(), st.eeg.data(), st.labels.data()});
        } catch (...) {
          st.error = std::current_exception();
        }
      }
      std::lock_guard lock(mu_);
      const bool last = st.error || b == n;
      ready_.push_back(std::move(st));
      cv_.notify_all();
      if (last) return;
    }
  }

  void stop() {
    if (worker_.joinable()) {
      {
        std::lock_guard lock(mu_);
        stopping_ = true;
      }
      cv_.notify_all();
      worker_.join();
    }
    std::lock_guard lock(mu_);
    while (!ready_.empty()) {
      free_.push_back(std::move(ready_.front()));
      ready_.pop_front();
    }
  }

  const Dataset& ds_;
  std::vector<std::size_t> indices_, order_;
  BatcherOptions opt_;
  std::size_t next_batch_ = 0;
  bool started_ = false;
  bool exhausted_ = false;         // prefetch: the end marker or an error has been consumed
  std::vector<std::uint8_t> raw_;  // used by whichever single thread fills batches

  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Staged> ready_;
  std::vector<Staged> free_;
  bool stopping_ = false;
};

}  // namespace milmer::data
