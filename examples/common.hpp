// Helpers shared by the example programs (milmer-train, milmer-infer) that need no model:
// thread setup, label scheme names, classification metrics, a progress bar, time
// formatting, a log file, JSON output, a run directory's lock, and the metadata of a
// safetensors checkpoint read without its tensors (each entry read as a checked value).
//
// Metric conventions (tests/test_metrics.cpp checks them against hand-computed cases):
// - confusion[t][p] counts samples of true class t predicted as p.
// - precision_c = TP / (TP + FP), recall_c = TP / (TP + FN), F1_c = 2 TP / (2 TP + FP + FN);
//   a zero denominator gives 0 (scikit-learn's zero_division=0). A class that never occurs
//   in the truth and is never predicted therefore has F1 0 in per_class_f1.
// - macro F1 averages F1 over the classes that occur in the truth or in the predictions,
//   which is scikit-learn's f1_score(y_true, y_pred, average="macro", zero_division=0)
//   with its default labels (the classes seen): a class absent from both would otherwise
//   pull the average down for a test split that simply has none of it.
// - accuracy = trace / samples; every metric of an empty set is 0.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "milmer/data/labels.hpp"
#include "milmer/error.hpp"
#include "milmer/io/json.hpp"
#include "milmer/io/safetensors.hpp"
#include "milmer/platform.hpp"

#if MILMER_TARGET_HOST
#include <cblas.h>
#endif

namespace milmer::examples {

using Json = io::ordered_json;

// ---------------------------------------------------------------------------------------
// Program setup.

// --threads on the host target: the emulator's thread pool and OpenBLAS (0: both keep their
// default, every core). Must run before the first kernel launch (the emulator reads
// MILMER_EMU_THREADS once).
inline void set_host_threads(int threads) {
  if (threads <= 0) return;
#if MILMER_TARGET_HOST
  ::setenv("MILMER_EMU_THREADS", std::to_string(threads).c_str(), 1);
  openblas_set_num_threads(threads);
#endif
}

// The --labels choices: every label scheme's name (data::kLabelSchemeNames).
inline std::vector<std::string> label_scheme_names() {
  return {data::kLabelSchemeNames.begin(), data::kLabelSchemeNames.end()};
}

// ---------------------------------------------------------------------------------------
// Classification metrics.

struct ClassificationMetrics {
  int classes = 0;
  std::int64_t samples = 0;
  double accuracy = 0;
  double macro_f1 = 0;
  std::vector<double> per_class_f1, precision, recall;
  std::vector<std::int64_t> support;                 // true samples per class
  std::vector<std::vector<std::int64_t>> confusion;  // [true][predicted]
};

class ConfusionMatrix {
 public:
  explicit ConfusionMatrix(int classes)
      : classes_(classes),
        counts_(static_cast<std::size_t>(std::max(classes, 0)),
                std::vector<std::int64_t>(static_cast<std::size_t>(std::max(classes, 0)), 0)) {
    check(classes >= 1, "ConfusionMatrix", "classes", ">= 1", str(classes));
  }

  void add(int truth, int predicted) {
    check(truth >= 0 && truth < classes_, "ConfusionMatrix::add", "truth",
          str("a class in [0, ", classes_, ")"), str(truth));
    check(predicted >= 0 && predicted < classes_, "ConfusionMatrix::add", "predicted",
          str("a class in [0, ", classes_, ")"), str(predicted));
    ++counts_[static_cast<std::size_t>(truth)][static_cast<std::size_t>(predicted)];
  }

  ClassificationMetrics metrics() const {
    ClassificationMetrics m;
    const std::size_t c = static_cast<std::size_t>(classes_);
    m.classes = classes_;
    m.confusion = counts_;
    m.per_class_f1.assign(c, 0.0);
    m.precision.assign(c, 0.0);
    m.recall.assign(c, 0.0);
    m.support.assign(c, 0);
    std::int64_t correct = 0;
    std::vector<std::int64_t> predicted(c, 0);
    for (std::size_t t = 0; t < c; ++t)
      for (std::size_t p = 0; p < c; ++p) {
        m.samples += counts_[t][p];
        m.support[t] += counts_[t][p];
        predicted[p] += counts_[t][p];
        if (t == p) correct += counts_[t][p];
      }
    if (m.samples == 0) return m;
    m.accuracy = static_cast<double>(correct) / static_cast<double>(m.samples);
    double f1_sum = 0;
    int seen = 0;
    for (std::size_t k = 0; k < c; ++k) {
      const double tp = static_cast<double>(counts_[k][k]);
      const double fp = static_cast<double>(predicted[k]) - tp;
      const double fn = static_cast<double>(m.support[k]) - tp;
      m.precision[k] = predicted[k] > 0 ? tp / (tp + fp) : 0.0;
      m.recall[k] = m.support[k] > 0 ? tp / (tp + fn) : 0.0;
      m.per_class_f1[k] = (2 * tp + fp + fn) > 0 ? 2 * tp / (2 * tp + fp + fn) : 0.0;
      if (m.support[k] > 0 || predicted[k] > 0) {
        f1_sum += m.per_class_f1[k];
        ++seen;
      }
    }
    m.macro_f1 = seen > 0 ? f1_sum / seen : 0.0;
    return m;
  }

 private:
  int classes_;
  std::vector<std::vector<std::int64_t>> counts_;
};

inline ClassificationMetrics classification_metrics(std::span<const int> truth,
                                                    std::span<const int> predicted, int classes) {
  check(truth.size() == predicted.size(), "classification_metrics", "predicted",
        str(truth.size(), " predictions (one per true label)"), str(predicted.size()));
  ConfusionMatrix cm(classes);
  for (std::size_t i = 0; i < truth.size(); ++i) cm.add(truth[i], predicted[i]);
  return cm.metrics();
}

// Index of the largest value; the lowest index on a tie (as torch.argmax and numpy.argmax).
inline int argmax(std::span<const float> row) {
  check(!row.empty(), "argmax", "row", "at least one value", "none");
  int best = 0;
  for (std::size_t i = 1; i < row.size(); ++i)
    if (row[i] > row[static_cast<std::size_t>(best)]) best = static_cast<int>(i);
  return best;
}

// Softmax in double (max subtracted), for reporting class probabilities.
inline std::vector<double> softmax(std::span<const float> logits) {
  std::vector<double> p(logits.size());
  if (logits.empty()) return p;
  const double hi = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (std::size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp(logits[i] - hi);
  for (double& v : p) v /= sum;
  return p;
}

// Accuracy of always answering the most frequent true class: the honest chance level of an
// unbalanced test split (1 / classes is the chance level of a balanced one).
inline double majority_class_rate(const ClassificationMetrics& m) {
  if (m.samples == 0) return 0;
  return static_cast<double>(*std::max_element(m.support.begin(), m.support.end())) /
         static_cast<double>(m.samples);
}

inline Json to_json(const ClassificationMetrics& m, const std::vector<std::string>& names) {
  Json j;
  j["samples"] = m.samples;
  j["accuracy"] = m.accuracy;
  j["macro_f1"] = m.macro_f1;
  j["per_class_f1"] = m.per_class_f1;
  j["precision"] = m.precision;
  j["recall"] = m.recall;
  j["support"] = m.support;
  j["confusion_matrix"] = m.confusion;
  j["class_names"] = names;
  j["majority_class_rate"] = majority_class_rate(m);
  return j;
}

// The confusion matrix as an aligned text table (rows: truth, columns: prediction).
inline std::string confusion_table(const ClassificationMetrics& m,
                                   const std::vector<std::string>& names) {
  std::size_t w = 6;
  for (const auto& n : names) w = std::max(w, n.size() + 1);
  for (const auto& row : m.confusion)
    for (auto v : row) w = std::max(w, std::to_string(v).size() + 1);
  auto cell = [&](const std::string& s) { return std::string(w - std::min(w, s.size()), ' ') + s; };
  std::string out = cell("true\\pred");
  for (const auto& n : names) out += cell(n);
  out += "\n";
  for (std::size_t t = 0; t < m.confusion.size(); ++t) {
    out += cell(t < names.size() ? names[t] : std::to_string(t));
    for (auto v : m.confusion[t]) out += cell(std::to_string(v));
    out += "\n";
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Time and text.

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// 42s, 3m05s, 1h02m: what a person reads on a progress line.
inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<std::int64_t>(std::llround(seconds));
  char buf[32];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>((s % 3600) / 60));
  return buf;
}

inline std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

inline std::string percent(double v) {
  return fixed(100.0 * v, 1) + "%";
}

// ---------------------------------------------------------------------------------------
// Progress on stderr: a bar redrawn in place on a terminal; on a pipe or file, whole lines
// at most every `line_interval` seconds (and at the end), so logs stay readable.

class Progress {
 public:
  Progress(std::string label, std::int64_t total, std::int64_t already_done,
           double line_interval = 15.0)
      : label_(std::move(label)),
        total_(std::max<std::int64_t>(total, 1)),
        start_done_(already_done),
        tty_(::isatty(STDERR_FILENO) == 1),
        line_interval_(line_interval),
        t0_(std::chrono::steady_clock::now()),
        last_line_(t0_) {}

  bool tty() const { return tty_; }

  // done: units finished overall (including those of earlier runs); fields: free text such
  // as "loss 0.693  acc 51.2%  85 img/s".
  void update(std::int64_t done, const std::string& fields, bool force_line = false) {
    const double elapsed = seconds_since(t0_);
    const std::int64_t here = done - start_done_;
    const double eta =
        here > 0 ? elapsed / static_cast<double>(here) * static_cast<double>(total_ - done)
                 : std::numeric_limits<double>::quiet_NaN();
    const std::string counts = str(done, "/", total_);
    const std::string tail =
        str(fields, "  elapsed ", format_duration(elapsed), "  ETA ", format_duration(eta));
    if (tty_) {
      constexpr int kWidth = 24;
      const int filled =
          static_cast<int>(kWidth * std::min<double>(1.0, double(done) / double(total_)));
      std::string bar = "[" + std::string(static_cast<std::size_t>(filled), '#') +
                        std::string(static_cast<std::size_t>(kWidth - filled), '.') + "]";
      std::fprintf(stderr, "\r\033[K%s %s %s  %s", label_.c_str(), bar.c_str(), counts.c_str(),
                   tail.c_str());
      std::fflush(stderr);
      drawn_ = true;
    } else if (force_line || seconds_since(last_line_) >= line_interval_) {
      std::fprintf(stderr, "%s step %s  %s\n", label_.c_str(), counts.c_str(), tail.c_str());
      std::fflush(stderr);
      last_line_ = std::chrono::steady_clock::now();
    }
  }

  // Ends the in-place line so the next output starts on a fresh one.
  void clear_line() {
    if (tty_ && drawn_) {
      std::fprintf(stderr, "\r\033[K");
      std::fflush(stderr);
      drawn_ = false;
    }
  }

  void set_label(std::string label) { label_ = std::move(label); }

 private:
  std::string label_;
  std::int64_t total_, start_done_;
  bool tty_;
  double line_interval_;
  std::chrono::steady_clock::time_point t0_, last_line_;
  bool drawn_ = false;
};

// ---------------------------------------------------------------------------------------
// A log file that appends (a resumed run continues the same log) and echoes to stdout.

class RunLog {
 public:
  RunLog() = default;
  explicit RunLog(const std::filesystem::path& path) : out_(path, std::ios::app) {
    check(static_cast<bool>(out_), path.string(), "log file", "a writable file", "cannot open");
  }
  void line(const std::string& text, bool echo = true) {
    if (out_.is_open()) {
      out_ << text << '\n';
      out_.flush();
    }
    if (echo) {
      std::fputs(text.c_str(), stdout);
      std::fputc('\n', stdout);
      std::fflush(stdout);
    }
  }

 private:
  std::ofstream out_;
};

// ---------------------------------------------------------------------------------------
// Files.

inline void write_json_file(const std::filesystem::path& path, const Json& j) {
  io::write_text_file(path, j.dump(2) + "\n");
}

// One process at a time in a run directory: an advisory lock (flock) on DIR/.lock, which
// holds the owner's process id while it runs. The kernel drops the lock when its owner ends,
// however it ends, so a lock file that still names a process but that nobody holds was left by
// a run that was killed: it is taken over (stale_owner() says whose it was). A normal end
// empties the file.
class RunDirLock {
 public:
  RunDirLock(const std::filesystem::path& dir, const std::string& program) : path_(dir / ".lock") {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0)
      throw Error(program, "--out",
                  str("a run directory where ", path_.string(), " can be created"),
                  std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      const std::string owner = read_owner();
      ::close(fd_);
      fd_ = -1;
      if (err != EWOULDBLOCK)
        throw Error(program, "--out", str("a lock on ", path_.string()), std::strerror(err));
      throw Error(
          program, "--out", "a run directory that no other run is using",
          str(dir.string(), ", in use by ",
              owner.empty() ? std::string("another process") : "process " + owner, " (it holds ",
              path_.string(), "; wait for it to end, or use another --out)"));
    }
    stale_owner_ = read_owner();
    const std::string pid = str(::getpid(), "\n");
    if (::ftruncate(fd_, 0) != 0 ||
        ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
      throw Error(program, "--out", str("a writable ", path_.string()), std::strerror(errno));
  }
  ~RunDirLock() {
    if (fd_ < 0) return;
    [[maybe_unused]] const int emptied = ::ftruncate(fd_, 0);
    ::close(fd_);  // releases the lock
  }
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

  // The process id a killed run left in the lock file; empty when the last run ended normally.
  const std::string& stale_owner() const { return stale_owner_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::string read_owner() const {
    char buf[32] = {};
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    std::string id(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
    while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
    return id;
  }

  std::filesystem::path path_;
  int fd_ = -1;
  std::string stale_owner_;
};

// The "__metadata__" strings of a safetensors file, read from its checked header only (a
// checkpoint's tensors can be hundreds of MB; the trainer needs its metadata before it
// builds the model). Malformed files are errors naming the file.
inline std::map<std::string, std::string> read_safetensors_metadata(
    const std::filesystem::path& path) {
  return io::read_safetensors_header(path).metadata;
}

inline const std::string& metadata_field(const std::map<std::string, std::string>& meta,
                                         const std::string& key, const std::string& file) {
  auto it = meta.find(key);
  check(it != meta.end(), "checkpoint " + file, "metadata",
        str("a '", key, "' entry (a checkpoint written by milmer-train)"), "none");
  return it->second;
}

// A metadata entry read as a value: a malformed one is an error naming the entry and the
// file (what the entry holds, abridged), never a bare parser message.
inline std::string quoted_excerpt(const std::string& text) {
  constexpr std::size_t kMax = 60;
  return "'" + (text.size() <= kMax ? text : text.substr(0, kMax) + "...") + "'";
}

inline std::int64_t metadata_int(const std::map<std::string, std::string>& meta,
                                 const std::string& key, const std::string& file, std::int64_t lo,
                                 std::int64_t hi) {
  const std::string& text = metadata_field(meta, key, file);
  std::int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  check(ec == std::errc() && ptr == end && !text.empty() && value >= lo && value <= hi,
        "checkpoint " + file, "metadata '" + key + "'", str("an integer in [", lo, ", ", hi, "]"),
        quoted_excerpt(text));
  return value;
}

inline double metadata_double(const std::map<std::string, std::string>& meta,
                              const std::string& key, const std::string& file) {
  const std::string& text = metadata_field(meta, key, file);
  double value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  check(ec == std::errc() && ptr == end && !text.empty() && std::isfinite(value),
        "checkpoint " + file, "metadata '" + key + "'", "a finite number", quoted_excerpt(text));
  return value;
}

template <class J = Json>
J metadata_json(const std::map<std::string, std::string>& meta, const std::string& key,
                const std::string& file) {
  const std::string& text = metadata_field(meta, key, file);
  try {
    return J::parse(text);
  } catch (const typename J::parse_error& e) {
    throw Error("checkpoint " + file, "metadata '" + key + "'", "JSON (as milmer-train writes it)",
                str(quoted_excerpt(text), ", which is not JSON (at byte ", e.byte, ")"));
  } catch (const typename J::exception& e) {  // out_of_range: a number like 2e333
    throw Error("checkpoint " + file, "metadata '" + key + "'", "JSON (as milmer-train writes it)",
                str(quoted_excerpt(text), ": ", e.what()));
  }
}

}  // namespace milmer::examples
