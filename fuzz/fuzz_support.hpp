// What the fuzz harnesses share: the input written to a file (the readers under test take
// paths, as the programs do), and the rule that bad input may only end in a milmer::Error.
// Any other exception (std::bad_alloc, a JSON-library or standard-library error) escapes the
// harness and libFuzzer reports it as a crash, with the input saved.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "milmer/error.hpp"

namespace milmer::fuzz {

// A file of this process's own under the temporary directory, rewritten for each input.
inline const std::filesystem::path& input_path(const char* suffix) {
  static const std::filesystem::path p =
      std::filesystem::temp_directory_path() / str("milmer_fuzz_", ::getpid(), suffix);
  return p;
}

inline const std::filesystem::path& write_input(const std::uint8_t* data, std::size_t size,
                                                const char* suffix) {
  const auto& p = input_path(suffix);
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) __builtin_trap();  // the harness itself failed, not the reader
  return p;
}

// Runs fn; a milmer::Error is the expected answer to bad input and is swallowed.
template <class Fn>
void expect_clean(Fn&& fn) {
  try {
    fn();
  } catch (const milmer::Error&) {
  }
}

}  // namespace milmer::fuzz
