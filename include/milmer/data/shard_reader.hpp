// milmer::data::Shard: opens one shard file, checks its header, sizes, metadata and
// (optionally) its payload checksum, and reads records from it (docs/data.md).
#pragma once

#include <milmer/data/labels.hpp>
#include <milmer/data/shard_format.hpp>
#include <milmer/error.hpp>
#include <milmer/io/crc32.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

namespace milmer::data {

// The opening scan reads records through a buffer of at most this many bytes.
inline constexpr std::size_t kScanChunkBytes = std::size_t{1} << 20;

struct ShardOpenOptions {
  // Reads the whole payload once to check its CRC-32 (about 1.2 GB per real participant at
  // 224 x 224). The metadata of every record is read and checked either way.
  bool verify_checksum = true;
};

class Shard {
 public:
  // Validates magic, version, header checksum, sizes, and (optionally) the payload
  // checksum. Every problem is a milmer::Error whose op is the file path.
  explicit Shard(std::filesystem::path path, ShardOpenOptions opt = {}) : path_(std::move(path)) {
    const std::string f = path_.string();
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path_, ec))
      throw Error(f, "file", "an existing shard file", "no such file");
    const std::uintmax_t file_size = std::filesystem::file_size(path_, ec);
    in_.open(path_, std::ios::binary);
    if (!in_ || ec) throw Error(f, "file", "a readable file", "it cannot be opened");

    std::array<unsigned char, kShardHeaderBytes> b{};
    const std::size_t got = read_some(b.data(), b.size());
    if (got < 12)
      throw Error(f, "header", str(kShardHeaderBytes, " bytes"),
                  str(file_size, " bytes in the file (truncated)"));
    if (std::memcmp(b.data(), kShardMagic, 8) != 0)
      throw Error(f, "magic", "\"MILMERSH\" (not a milmer shard?)", detail::printable(&b[0], 8));
    header_.version = detail::get<std::uint32_t>(&b[8]);
    if (header_.version != kShardVersion)
      throw Error(f, "version", str(kShardVersion, " (re-run tools/prepare_deap.py)"),
                  str(header_.version));
    if (got < kShardHeaderBytes)
      throw Error(f, "header", str(kShardHeaderBytes, " bytes"),
                  str(file_size, " bytes in the file (truncated)"));
    const auto header_crc = detail::get<std::uint32_t>(&b[60]);
    const auto computed = io::crc32_update(0, b.data(), 60);
    if (header_crc != computed)
      throw Error(f, "header checksum", str("CRC-32 ", hex(computed)),
                  str(hex(header_crc), " (header corrupt)"));
    const auto header_bytes = detail::get<std::uint32_t>(&b[12]);
    check(header_bytes == kShardHeaderBytes, f, "header bytes", str(kShardHeaderBytes),
          str(header_bytes));
    header_.samples = detail::get<std::uint32_t>(&b[16]);
    header_.dims.frames = detail::get<std::uint32_t>(&b[20]);
    header_.dims.height = detail::get<std::uint32_t>(&b[24]);
    header_.dims.width = detail::get<std::uint32_t>(&b[28]);
    header_.dims.eeg_channels = detail::get<std::uint32_t>(&b[32]);
    header_.dims.eeg_samples = detail::get<std::uint32_t>(&b[36]);
    header_.participant = detail::get<std::uint32_t>(&b[40]);
    const auto record_bytes = detail::get<std::uint32_t>(&b[44]);
    header_.payload_bytes = detail::get<std::uint64_t>(&b[48]);
    header_.payload_crc = detail::get<std::uint32_t>(&b[56]);

    // Every size is checked against the format's limits and the file's size before the
    // scan allocates anything.
    const ShardDims& d = header_.dims;
    d.validate(f);
    check(record_bytes == d.record_bytes(), f, "record bytes",
          str(d.record_bytes(), " (44 + 4*C*S + F*H*W*3)"), str(record_bytes));
    const std::uint64_t payload = std::uint64_t{header_.samples} * record_bytes;
    check(header_.payload_bytes == payload, f, "payload bytes",
          str(payload, " (samples x record bytes)"), str(header_.payload_bytes));
    const std::uint64_t expected_size = kShardHeaderBytes + payload;
    if (file_size < expected_size)
      throw Error(f, "file size", str(expected_size, " bytes"),
                  str(file_size, " bytes (truncated)"));
    if (file_size > expected_size)
      throw Error(f, "file size", str(expected_size, " bytes"),
                  str(file_size, " bytes (trailing data)"));

    scan_records(opt.verify_checksum);
  }

  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const ShardHeader& header() const { return header_; }
  const ShardDims& dims() const { return header_.dims; }
  std::size_t size() const { return infos_.size(); }
  const SampleInfo& info(std::size_t i) const { return infos_.at(i); }

  // Reads record i's frames (F*H*W*3 bytes, HWC RGB) and EEG (C*S floats). Thread-safe.
  void read(std::size_t i, std::uint8_t* frames, float* eeg) const {
    const ShardDims& d = header_.dims;
    check(i < infos_.size(), path_.string(), "record", str("< ", infos_.size()), str(i));
    const std::uint64_t off = kShardHeaderBytes + std::uint64_t{i} * d.record_bytes();
    std::lock_guard lock(mu_);
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(off + kRecordMetaBytes));
    if (eeg) {
      read_exact(reinterpret_cast<char*>(eeg), 4 * d.eeg_floats(), i);
      for (std::size_t k = 0; k < d.eeg_floats(); ++k)
        detail::check_eeg_value(eeg[k], k, d, infos_[i], path_.string(), str("record ", i));
    } else {
      in_.seekg(static_cast<std::streamoff>(4 * d.eeg_floats()), std::ios::cur);
    }
    if (frames) read_exact(reinterpret_cast<char*>(frames), d.frame_bytes(), i);
  }

 private:
  static std::string hex(std::uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08x", v);
    return buf;
  }

  std::size_t read_some(unsigned char* p, std::size_t n) {
    in_.read(reinterpret_cast<char*>(p), static_cast<std::streamsize>(n));
    return static_cast<std::size_t>(in_.gcount());
  }

  void read_exact(char* p, std::size_t n, std::size_t record) const {
    in_.read(p, static_cast<std::streamsize>(n));
    if (static_cast<std::size_t>(in_.gcount()) != n)
      throw Error(path_.string(), str("record ", record), str(n, " bytes readable"),
                  str(in_.gcount(), " (file changed or truncated since it was opened)"));
  }

  // Reads every record once: metadata always and, when asked, every byte for the CRC and
  // the EEG's finiteness (through a buffer of at most kScanChunkBytes; chunks are multiples
  // of 4 bytes from the record's start, so no EEG float straddles two). A non-finite value
  // is reported only once the CRC has matched: in a corrupt file the CRC is the real fault.
  void scan_records(bool verify) {
    const std::string f = path_.string();
    const ShardDims& d = header_.dims;
    const std::size_t rb = d.record_bytes();
    const std::size_t eeg_end = kRecordMetaBytes + 4 * d.eeg_floats();
    const std::size_t want = verify ? rb : kRecordMetaBytes;
    infos_.reserve(header_.samples);  // samples x record bytes is the file size (checked)
    std::vector<unsigned char> buf(std::min(want, kScanChunkBytes));
    std::uint32_t crc = 0;
    std::string non_finite;  // the first non-finite EEG value, described
    std::uint32_t non_finite_record = 0;
    for (std::uint32_t i = 0; i < header_.samples; ++i) {
      in_.clear();
      in_.seekg(static_cast<std::streamoff>(kShardHeaderBytes + std::uint64_t{i} * rb));
      SampleInfo s;
      for (std::size_t pos = 0; pos < want;) {
        const std::size_t len = std::min(buf.size(), want - pos);
        const std::size_t n = read_some(buf.data(), len);
        if (n != len)
          throw Error(f, str("record ", i), str(want, " bytes"),
                      str(pos + n, " bytes (truncated)"));
        if (pos == 0) {
          s = detail::decode_meta(buf.data());
          check_meta(s, i);
        }
        if (verify) {
          crc = io::crc32_update(crc, buf.data(), len);
          for (std::size_t b = std::max(pos, kRecordMetaBytes); b < std::min(pos + len, eeg_end);
               b += 4) {
            const float v = detail::get<float>(&buf[b - pos]);
            if (non_finite.empty() && !std::isfinite(v)) {
              non_finite_record = i;
              non_finite = detail::eeg_value_at(v, (b - kRecordMetaBytes) / 4, d, s);
            }
          }
        }
        pos += len;
      }
      infos_.push_back(s);
    }
    if (verify && crc != header_.payload_crc)
      throw Error(f, "payload checksum", str("CRC-32 ", hex(header_.payload_crc), " (header)"),
                  str(hex(crc), " (payload corrupt)"));
    if (!non_finite.empty())
      throw Error(f, str("record ", non_finite_record), "finite EEG values", non_finite);
  }

  void check_meta(const SampleInfo& s, std::uint32_t i) const {
    const std::string arg = str("record ", i);
    for (std::size_t k = 0; k < 5; ++k) {
      const int n = num_classes(static_cast<LabelScheme>(k));
      if (s.labels[k] < 0 || s.labels[k] >= n)
        throw Error(path_.string(), arg, str("label ", kLabelSchemeNames[k], " in [0, ", n, ")"),
                    str(s.labels[k], " (payload corrupt)"));
    }
    if (s.participant != static_cast<std::int32_t>(header_.participant))
      throw Error(path_.string(), arg, str("participant ", header_.participant, " (header)"),
                  str(s.participant));
  }

  std::filesystem::path path_;
  ShardHeader header_;
  std::vector<SampleInfo> infos_;
  mutable std::ifstream in_;
  mutable std::mutex mu_;
};

}  // namespace milmer::data
