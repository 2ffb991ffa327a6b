// Shared-memory limits per block of the architectures milmer targets, for the launcher and the
// emulator: 48 KB unless a kernel opts in (cudaFuncAttributeMaxDynamicSharedMemorySize), and
// the opt-in maximum (cudaDevAttrMaxSharedMemoryPerBlockOptin): 163 KB on sm_80, 227 KB on
// sm_90 (the SM's 164 or 228 KB less 1 KB the system reserves per block).
#pragma once

#include <cstddef>

namespace milmer {

inline constexpr std::size_t kSharedDefaultBytes = 48 * 1024;
inline constexpr std::size_t shared_optin_bytes(int arch) {
  return arch == 80 ? 163 * 1024 : 227 * 1024;
}

}  // namespace milmer
