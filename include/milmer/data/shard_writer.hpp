// milmer::data::ShardWriter: writes one shard (the C++ twin of tools/prepare_deap.py's
// writer; docs/data.md gives the format).
#pragma once

#include <milmer/data/shard_format.hpp>
#include <milmer/error.hpp>
#include <milmer/io/atomic_file.hpp>
#include <milmer/io/crc32.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>

namespace milmer::data {

// Records stream into an io::AtomicFile (a temporary file beside `path`); finish() fills in
// the header, fsyncs and renames, so a reader never sees a half-written shard under the
// final name. A writer destroyed before finish() leaves nothing behind.
class ShardWriter {
 public:
  ShardWriter(std::filesystem::path path, ShardDims dims, std::uint32_t participant)
      : path_(std::move(path)), op_("ShardWriter " + path_.string()) {
    header_.dims = dims;
    header_.participant = participant;
    dims.validate(op_);
    file_ = std::make_unique<io::AtomicFile>(path_, op_);
    const std::array<unsigned char, kShardHeaderBytes> placeholder{};
    file_->write(placeholder.data(), placeholder.size());
  }

  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // frames: F*H*W*3 bytes (HWC RGB); eeg: C*S floats, channel-major.
  void add(const SampleInfo& s, const std::uint8_t* frames, const float* eeg) {
    check(file_ != nullptr, op_, "state", "open", "finished");
    check(s.participant == static_cast<std::int32_t>(header_.participant), op_, "participant",
          str(header_.participant), str(s.participant));
    for (std::size_t k = 0; k < header_.dims.eeg_floats(); ++k)
      detail::check_eeg_value(eeg[k], k, header_.dims, s, op_, "eeg");
    std::array<unsigned char, kRecordMetaBytes> meta{};
    detail::encode_meta(meta.data(), s);
    write(meta.data(), meta.size());
    write(eeg, 4 * header_.dims.eeg_floats());
    write(frames, header_.dims.frame_bytes());
    ++header_.samples;
  }

  void finish() {
    check(file_ != nullptr, op_, "state", "open", "finished");
    header_.payload_bytes = std::uint64_t{header_.samples} * header_.dims.record_bytes();
    const auto b = detail::encode_header(header_);
    const std::unique_ptr<io::AtomicFile> file = std::move(file_);
    file->write_at(0, b.data(), b.size());
    file->commit();
  }

  std::uint32_t samples() const { return header_.samples; }

 private:
  void write(const void* p, std::size_t n) {
    file_->write(p, n);
    header_.payload_crc = io::crc32_update(header_.payload_crc, p, n);
  }

  std::filesystem::path path_;
  std::string op_;
  ShardHeader header_;
  std::unique_ptr<io::AtomicFile> file_;  // null once finished
};

}  // namespace milmer::data
