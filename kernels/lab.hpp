// What every kernel lab program (kernels/*_lab.cpp) shares: the command line, the timing, the
// report lines and the comparison against a reference. The labs are standalone programs built
// for either target (g++ for the host emulator, nvcc as CUDA), so everything here is host code
// over the CUDA runtime API that the emulator also provides. docs/kernels/lab.md describes how
// to run them and what they print.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <initializer_list>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "milmer/error.hpp"
#include "milmer/memory.hpp"
#include "milmer/platform.hpp"
#include "milmer/reference/check.hpp"
#include "milmer/tensor.hpp"

namespace milmer::lab {

// A program's name and its usage lines.
struct Usage {
  std::string program, lines;
};

// The usage of the command line parsed last (kept here: a main's handler runs after its
// command line is gone).
inline Usage& parsed_usage() {
  static Usage usage;
  return usage;
}

// "<program>: <why>" and the usage on stderr; exit status 2.
[[noreturn]] inline void usage_error(const Usage& usage, const std::string& why) {
  std::fprintf(stderr, "%s: %s\n%s", usage.program.c_str(), why.c_str(), usage.lines.c_str());
  std::exit(2);
}

// The options of every lab that draws random inputs and checks before timing; iters has no
// common default (the host emulator takes far fewer calls than a GPU).
struct RunOptions {
  int iters;      // --iters: timed calls of each pass
  int seed = 1;   // --seed: of the random inputs (and dropout masks)
  int check = 1;  // --check: 1 checks against the fp64 reference before timing

  // The one generator a lab draws all its random inputs from, in a fixed order.
  std::mt19937_64 rng() const { return std::mt19937_64(static_cast<std::uint64_t>(seed)); }
};

// "--name value" options, each bound to a variable whose initial value is the default. Any
// error (unknown option, missing or malformed value, value out of range) prints the program's
// name, what was wrong and the usage to stderr, and exits with status 2. So do sizes that
// are each in range but that a launcher refuses together, or that need more memory than there
// is: a lab's main is a function-try-block whose handler calls fail_on_exception().
class CommandLine {
 public:
  explicit CommandLine(std::string program) : program_(std::move(program)) {}

  // Binds --name to value, an integer or floating-point variable, accepting [lo, hi]. The
  // bounds default to the whole range of the type (then the usage does not mention them).
  template <class T>
  CommandLine& option(const std::string& name, T& value, const std::string& help,
                      std::type_identity_t<T> lo = std::numeric_limits<T>::lowest(),
                      std::type_identity_t<T> hi = std::numeric_limits<T>::max()) {
    static_assert(std::is_arithmetic_v<T>, "lab options are numbers");
    const bool integer = std::is_integral_v<T>;
    std::string expected = integer ? "an integer" : "a number";
    if (lo != std::numeric_limits<T>::lowest() && hi != std::numeric_limits<T>::max()) {
      expected += str(" in [", lo, ", ", hi, "]");
    } else if (lo != std::numeric_limits<T>::lowest()) {
      expected += str(" >= ", lo);
    } else if (hi != std::numeric_limits<T>::max()) {
      expected += str(" <= ", hi);
    }
    options_.push_back(
        {"--" + name, help, expected, str(value),
         [&value, lo, hi](const char* text) { return parse_number(text, value, lo, hi); }});
    return *this;
  }

  // A shape option: --name bound to an int in [lo, hi].
  struct Size {
    const char* name;
    int& value;
    const char* help;
    int lo = 1, hi = 1000000;
  };

  // Binds each shape option of the table.
  CommandLine& sizes(std::initializer_list<Size> table) {
    for (const Size& s : table) option(s.name, s.value, s.help, s.lo, s.hi);
    return *this;
  }

  // Binds --iters, --seed and --check (RunOptions).
  CommandLine& run_options(RunOptions& run) {
    return option("iters", run.iters, "timed calls of each pass", 1, 100000000)
        .option("seed", run.seed, "seed of the random inputs (and dropout masks)", 0, 100000000)
        .option("check", run.check, "1: check against the fp64 reference first", 0, 1);
  }

  void parse(int argc, char** argv) const {
    parsed_usage() = usage();
    for (int a = 1; a < argc; a += 2) {
      const Option* option = nullptr;
      for (const auto& o : options_)
        if (o.flag == argv[a]) option = &o;
      if (option == nullptr) fail(str("unknown option '", argv[a], "'"));
      if (a + 1 >= argc) fail(str("option ", option->flag, " needs a value"));
      if (!option->set(argv[a + 1]))
        fail(str("bad value for ", option->flag, ": expected ", option->expected, ", got '",
                 argv[a + 1], "'"));
    }
  }

  // For checks that involve several options, or arguments a launcher rejected.
  [[noreturn]] void fail(const std::string& why) const { usage_error(usage(), why); }

  Usage usage() const {
    Usage u{program_, str("usage: ", program_, " [--option value]...\n")};
    for (const auto& o : options_) {
      char flag[64];
      std::snprintf(flag, sizeof flag, "  %-12s ", o.flag.c_str());
      u.lines += str(flag, o.help, " (", o.expected, ", default ", o.fallback, ")\n");
    }
    return u;
  }

 private:
  struct Option {
    std::string flag, help, expected, fallback;
    std::function<bool(const char*)> set;
  };

  // The whole text must be one number of T's kind (no trailing characters, no overflow).
  template <class T>
  static bool parse_number(const char* text, T& value, T lo, T hi) {
    char* end = nullptr;
    errno = 0;
    if constexpr (std::is_integral_v<T>) {
      const long long parsed = std::strtoll(text, &end, 10);
      if (end == text || *end != '\0' || errno != 0 || parsed < static_cast<long long>(lo) ||
          parsed > static_cast<long long>(hi))
        return false;
      value = static_cast<T>(parsed);
    } else {
      const double parsed = std::strtod(text, &end);
      if (end == text || *end != '\0' || errno != 0 || !std::isfinite(parsed) ||
          parsed < static_cast<double>(lo) || parsed > static_cast<double>(hi))
        return false;
      value = static_cast<T>(parsed);
    }
    return true;
  }

  std::string program_;
  std::vector<Option> options_;
};

// The handler of a lab's main (a function-try-block): the exception that ended it, as a usage
// error of the command line parsed last (status 2), never an abort.
[[noreturn]] inline void fail_on_exception() {
  std::string why;
  try {
    throw;
  } catch (const std::bad_alloc&) {
    why = "the sizes given need more host memory than there is";
  } catch (const std::exception& e) {
    why = e.what();
  } catch (...) {
    why = "an unknown exception";
  }
  usage_error(parsed_usage(), why);
}

// A lab's main: parses the command line, then runs body() and returns its exit status (that of
// Checks::exit_code). Whatever ends it early, a bad option, a launcher's milmer::Error or too
// little memory, is a usage error (fail_on_exception): exit status 2, never an abort.
template <class Body>
int run(const CommandLine& command_line, int argc, char** argv, Body&& body) {
  try {
    command_line.parse(argc, argv);
    return body();
  } catch (...) {
    fail_on_exception();
  }
}

// A CUDA event that is destroyed with its scope (also when a timed call throws).
class Event {
 public:
  Event() { MILMER_CUDA_CHECK(cudaEventCreate(&event_)); }
  ~Event() { cudaEventDestroy(event_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_{};
};

// Mean milliseconds per call of fn over `iterations` calls enqueued on `stream`, after `warmup`
// untimed calls (they pay one-time costs: lazy module loading, cuBLAS heuristics, cold caches).
// On the host target the events measure the emulator's wall time.
template <class Fn>
double time_ms(Fn&& fn, long iterations, cudaStream_t stream, int warmup = 1) {
  for (int i = 0; i < warmup; ++i) fn();
  Event start, stop;
  MILMER_CUDA_CHECK(cudaEventRecord(start.get(), stream));
  for (long i = 0; i < iterations; ++i) fn();
  MILMER_CUDA_CHECK(cudaEventRecord(stop.get(), stream));
  MILMER_CUDA_CHECK(cudaEventSynchronize(stop.get()));
  float ms = 0;
  MILMER_CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()));
  return double(ms) / double(iterations);
}

// One timing line: ms per call, GB/s from the minimum bytes the call must move and, when flops
// is given, TFLOP/s. %g keeps the emulator's tiny rates readable as well as a GPU's.
inline void report(const std::string& what, double ms, double bytes, double flops = 0) {
  std::printf("  %-20s %10.4f ms  %9.4g GB/s", what.c_str(), ms, bytes / ms * 1e-6);
  if (flops > 0) std::printf("  %9.4g TFLOP/s", flops / ms * 1e-9);
  std::printf("  (%.4g MB moved at minimum)\n", bytes * 1e-6);
}

// One timed pass of a lab: its name, the call, the minimum bytes it moves and its flops (0:
// no TFLOP/s column).
struct Pass {
  std::string name;
  std::function<void()> call;
  double bytes, flops = 0;
};

// Times each pass over `iterations` calls on `stream` (time_ms) and prints its report line.
inline void time_passes(std::initializer_list<Pass> passes, long iterations, cudaStream_t stream) {
  for (const Pass& p : passes)
    report(p.name, time_ms(p.call, iterations, stream), p.bytes, p.flops);
}

using reference::plain_fp32_tolerance;
using reference::random_vector;
using reference::Tolerance;

struct Comparison {
  double max_error;
  bool ok;
};

// The checks of one lab run: prints a line per check and remembers whether all held.
class Checks {
 public:
  template <class Got, class Ref>
  Comparison compare(const std::string& what, const std::vector<Got>& got,
                     const std::vector<Ref>& ref, const Tolerance& tolerance) {
    const double error = reference::max_abs_error(got, ref).error;
    const bool ok = error <= tolerance.bound;
    std::printf("  check %-13s max error %.3e", what.c_str(), error);
    if (!std::isnan(tolerance.plain_error)) std::printf("  plain fp32 %.3e", tolerance.plain_error);
    std::printf("  bound %.3e  %s\n", tolerance.bound, ok ? "ok" : "FAILED");
    passed_ = passed_ && ok;
    return {error, ok};
  }

  // The rule of include/milmer/reference/check.hpp against a plain fp32 run of the reference.
  template <class Got, class Ref, class Plain>
  Comparison compare(const std::string& what, const std::vector<Got>& got,
                     const std::vector<Ref>& ref, const std::vector<Plain>& plain) {
    return compare(what, got, ref, plain_fp32_tolerance(ref, plain));
  }

  // A check that is exact (equal indices, ...): held or not.
  bool expect(const std::string& what, bool ok) {
    std::printf("  check %-13s %s\n", what.c_str(), ok ? "ok" : "FAILED");
    passed_ = passed_ && ok;
    return ok;
  }

  bool passed() const { return passed_; }
  // The lab's exit status: 0 when every check held, 1 otherwise (2 is for bad arguments).
  int exit_code() const { return passed_ ? 0 : 1; }

 private:
  bool passed_ = true;
};

template <class T>
DeviceBuffer<T> to_device(const std::vector<T>& host) {
  DeviceBuffer<T> buffer(host.size());
  buffer.upload(host.data(), host.size());
  return buffer;
}

template <class T>
std::vector<T> to_host(const DeviceBuffer<T>& buffer) {
  std::vector<T> host(buffer.size());
  buffer.download(host.data(), host.size());
  return host;
}

// A read-only view of a whole buffer, for the launchers' input arguments.
template <class T>
TensorView<const T> const_view(const DeviceBuffer<T>& buffer,
                               std::initializer_list<std::int64_t> dims) {
  return view(buffer.data(), dims);
}

}  // namespace milmer::lab
