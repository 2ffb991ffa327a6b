// milmer::io atomic file writing: every file milmer writes (checkpoints, shards, configs,
// metrics) goes through AtomicFile, so a reader sees the old file or the new one, never a
// part, and a crash or a full disk leaves the old file as it was.
//
//   io::AtomicFile f("run/metrics.json");   // creates run/.metrics.json.tmp.XXXXXX
//   f.write(text.data(), text.size());       // as often as needed (streamed)
//   f.commit();                              // fflush, fsync, rename into place, fsync dir
//
// The temporary file sits in the target's directory (a rename never crosses file systems)
// and is named ".NAME.tmp.XXXXXX" (kTempInfix): hidden, and recognisable as the remains of
// an interrupted write. Until commit() succeeds the target is untouched; an AtomicFile
// destroyed uncommitted, or any failed step, removes the temporary file. Every failure is a
// milmer::Error whose op names the file (or the caller's op) and whose argument names the
// step. Committed files have mode 0644.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "milmer/error.hpp"

namespace milmer::io {

// The temporary file of target NAME is ".NAME" + kTempInfix + six random characters.
inline constexpr std::string_view kTempInfix = ".tmp.";

// Whether `name` (a file name, no directory) is the temporary file of an AtomicFile.
inline bool is_atomic_temp_name(std::string_view name) {
  return name.size() > 1 && name.front() == '.' && name.find(kTempInfix) != std::string_view::npos;
}

class AtomicFile {
 public:
  // op: what errors name (default: the target path).
  explicit AtomicFile(std::filesystem::path path, std::string op = {})
      : path_(std::move(path)), op_(op.empty() ? path_.string() : std::move(op)) {
    const std::filesystem::path dir = directory();
    std::string tmpl = (dir / str(".", path_.filename().string(), kTempInfix, "XXXXXX")).string();
    const int fd = ::mkstemp(tmpl.data());
    if (fd < 0)
      throw Error(op_, "file", str("a temporary file in ", dir.string()), std::strerror(errno));
    temp_ = tmpl;
    file_ = ::fdopen(fd, "wb");
    if (!file_) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(temp_.c_str());
      throw Error(op_, "file", str("a stream on ", temp_.string()), why);
    }
  }

  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  ~AtomicFile() { discard(); }

  const std::filesystem::path& path() const { return path_; }
  const std::filesystem::path& temp_path() const { return temp_; }

  // Appends n bytes.
  void write(const void* p, std::size_t n) {
    require_open("write");
    if (n > 0 && std::fwrite(p, 1, n, file_) != n) fail("write", str(n, " bytes written"));
  }
  void write(std::string_view s) { write(s.data(), s.size()); }

  // Overwrites n bytes at `offset` (inside what is written so far: a header filled in last),
  // then continues appending at the end.
  void write_at(std::uint64_t offset, const void* p, std::size_t n) {
    require_open("write");
    if (::fseeko(file_, static_cast<off_t>(offset), SEEK_SET) != 0)
      fail("seek", str("offset ", offset));
    write(p, n);
    if (::fseeko(file_, 0, SEEK_END) != 0) fail("seek", "the end of the file");
  }

  // fflush, fsync of the file, close, rename into place, fsync of the directory.
  void commit() {
    require_open("commit");
    if (std::fflush(file_) != 0) fail("flush", "buffered bytes written");
    if (::fchmod(::fileno(file_), 0644) != 0) fail("chmod", "permissions 0644 set");
    if (::fsync(::fileno(file_)) != 0) fail("fsync", "data synced to disk");
    const int closed = std::fclose(file_);
    file_ = nullptr;
    if (closed != 0) fail("close", "closed");
    if (::rename(temp_.c_str(), path_.c_str()) != 0)
      fail("rename", str("the temporary file ", temp_.string(), " renamed into place"));
    temp_.clear();
    // Make the rename itself durable.
    if (const int dfd = ::open(directory().c_str(), O_RDONLY | O_DIRECTORY); dfd >= 0) {
      const int synced = ::fsync(dfd);
      const int err = errno;
      ::close(dfd);
      // EINVAL: a file system that cannot sync directories (the rename stands regardless).
      if (synced != 0 && err != EINVAL)
        throw Error(op_, "fsync", str("the directory ", directory().string(), " synced"),
                    std::strerror(err));
    }
  }

  // Closes and removes the temporary file; the target stays as it was.
  void discard() noexcept {
    if (file_) std::fclose(file_);
    file_ = nullptr;
    if (!temp_.empty()) ::unlink(temp_.c_str());
    temp_.clear();
  }

 private:
  std::filesystem::path directory() const {
    return path_.parent_path().empty() ? std::filesystem::path(".") : path_.parent_path();
  }

  void require_open(const char* step) const {
    check(file_ != nullptr, op_, step, "an open temporary file", "one already committed or failed");
  }

  // Throws for a failed step, after removing the temporary file.
  [[noreturn]] void fail(const std::string& step, const std::string& expected) {
    const std::string why = errno != 0 ? std::strerror(errno) : "an I/O error";
    discard();
    throw Error(op_, step, expected, why);
  }

  std::filesystem::path path_, temp_;
  std::string op_;
  std::FILE* file_ = nullptr;
};

// Writes `bytes` to `path` atomically (one AtomicFile, written whole).
inline void write_text_file(const std::filesystem::path& path, std::string_view bytes,
                            const std::string& op = {}) {
  AtomicFile f(path, op);
  f.write(bytes);
  f.commit();
}

}  // namespace milmer::io
