// milmer::data::Dataset: many shards (one per participant) as one indexed set of samples.
// Sample indices run over the shards in the order given.
#pragma once

#include <milmer/data/labels.hpp>
#include <milmer/data/shard_format.hpp>
#include <milmer/data/shard_reader.hpp>
#include <milmer/error.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

namespace milmer::data {

class Dataset {
 public:
  Dataset() = default;

  static Dataset open(const std::vector<std::filesystem::path>& paths, ShardOpenOptions opt = {}) {
    Dataset ds;
    check(!paths.empty(), "Dataset::open", "paths", "at least one shard", "none");
    for (const auto& p : paths) {
      auto shard = std::make_unique<Shard>(p, opt);
      if (ds.shards_.empty()) {
        ds.dims_ = shard->dims();
      } else if (!(shard->dims() == ds.dims_)) {
        const ShardDims& d = shard->dims();
        throw Error(p.string(), "dims",
                    str("the dims of ", ds.shards_.front()->path().string(), ": ", ds.dims_.frames,
                        "x", ds.dims_.height, "x", ds.dims_.width, ", EEG ", ds.dims_.eeg_channels,
                        "x", ds.dims_.eeg_samples),
                    str(d.frames, "x", d.height, "x", d.width, ", EEG ", d.eeg_channels, "x",
                        d.eeg_samples));
      }
      // One shard per participant: a second file of one (a copy, a renamed file) would be
      // counted as another participant, its samples twice.
      for (const auto& other : ds.shards_)
        if (other->header().participant == shard->header().participant)
          throw Error(p.string(), "participant", "a participant of no other shard",
                      str(shard->header().participant, ", the participant of ",
                          other->path().string(), " too"));
      for (std::size_t i = 0; i < shard->size(); ++i)
        ds.index_.push_back(
            {static_cast<std::uint32_t>(ds.shards_.size()), static_cast<std::uint32_t>(i)});
      ds.shards_.push_back(std::move(shard));
    }
    return ds;
  }

  // Every "*.shard" file in dir, sorted by name.
  static Dataset open_dir(const std::filesystem::path& dir, ShardOpenOptions opt = {}) {
    std::error_code ec;
    check(std::filesystem::is_directory(dir, ec), "Dataset::open_dir", "dir",
          "an existing directory", dir.string());
    std::vector<std::filesystem::path> paths;
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.is_regular_file() && e.path().extension() == ".shard") paths.push_back(e.path());
    std::sort(paths.begin(), paths.end());
    check(!paths.empty(), "Dataset::open_dir", "dir", "at least one *.shard file",
          str("none in ", dir.string()));
    return open(paths, opt);
  }

  std::size_t size() const { return index_.size(); }
  const ShardDims& dims() const { return dims_; }
  std::size_t num_shards() const { return shards_.size(); }
  const Shard& shard(std::size_t s) const { return *shards_.at(s); }

  const SampleInfo& info(std::size_t i) const {
    const Ref r = index_.at(i);
    return shards_[r.shard]->info(r.record);
  }
  int label(std::size_t i, LabelScheme s) const { return info(i).label(s); }

  // Raw sample: frames F*H*W*3 uint8 (HWC RGB), EEG C*S float32. Either may be null.
  void read(std::size_t i, std::uint8_t* frames, float* eeg) const {
    const Ref r = index_.at(i);
    shards_[r.shard]->read(r.record, frames, eeg);
  }

  std::vector<int> participants() const {
    std::vector<int> p;
    for (std::size_t i = 0; i < size(); ++i) p.push_back(info(i).participant);
    std::sort(p.begin(), p.end());
    p.erase(std::unique(p.begin(), p.end()), p.end());
    return p;
  }

 private:
  struct Ref {
    std::uint32_t shard, record;
  };
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<Ref> index_;
  ShardDims dims_;
};

}  // namespace milmer::data
