// Shared-memory limits per block of the architectures milmer targets, for the launcher and the
// emulator: 48 KB unless a kernel opts in (cudaFuncAttributeMaxDynamicSharedMemorySize), and
// the opt-in maximum (cudaDevAttrMaxSharedMemoryPerBlockOptin): 163 KB on sm_80, 227 KB on
// sm_90 (the SM's 164 or 228 KB less 1 KB the system reserves per block).
#pragma once

#include <cstddef>
#include <cstdint>

namespace milmer {

inline constexpr std::size_t kSharedDefaultBytes = 48 * 1024;
inline constexpr std::size_t shared_optin_bytes(int arch) {
  return arch == 80 ? 163 * 1024 : 227 * 1024;
}

// The alignment of a pointer in bytes, as cuBLASLt's CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES
// speak of it: the largest power of two dividing the address, at most 256 (cuBLASLt assumes
// 256 when the preference is not set). For the library's cuBLASLt calls and the emulator's.
inline std::uint32_t pointer_alignment(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

}  // namespace milmer
