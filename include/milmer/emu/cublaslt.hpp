// The host emulator's cuBLASLt: the calls the library makes (handle, matmul descriptor, matrix
// layouts, matmul preference, heuristic query, cublasLtMatmul), declared by the toolkit's
// cublasLt.h, with cuBLASLt's semantics, run on the CPU and queued on the matmul's stream.
//
// What is emulated: fp32 operands (CUDA_R_32F, CUBLAS_COMPUTE_32F, fp32 scale), TRANSA /
// TRANSB, the epilogues DEFAULT, RELU, BIAS and RELU_BIAS (a bias vector of D's rows, added
// in fp32, then max(0, .)), alpha and beta read from host memory at the call, C either D
// itself or a matrix of D's layout. The product is OpenBLAS's fp32 GEMM, as for cublasSgemm,
// so the fused epilogue computes exactly what cublasSgemm plus the epilogue kernel computes.
// Anything else (other types, GELU or gradient epilogues, batched layouts) is
// CUBLAS_STATUS_NOT_SUPPORTED.
//
// Alignment, as cuBLASLt has it: the heuristic returns an algorithm that may assume the
// operand alignments the preference declares (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_{A,B,C,D}_BYTES;
// 256 bytes when not set, and for cublasLtMatmul with no algorithm); an alignment that is not
// a power of two of at least the element size gives no algorithm. In strict mode
// cublasLtMatmul refuses an operand less aligned than its algorithm assumes
// (CUBLAS_STATUS_NOT_SUPPORTED), where a GPU would fault or compute garbage, and every pointer
// (A, B, C, D, the bias, the workspace) must be null or device memory (milmer::Error, as for
// cuBLAS). Without strict mode the misaligned matmul runs and computes the product of the
// values at the pointers given. A failing call leaves a description naming the argument,
// which MILMER_CUBLAS_CHECK adds to its milmer::Error (status_detail()).
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "milmer/device_limits.hpp"

#include "milmer/emu/runtime.hpp"

struct cublasLtContext {
  int unused = 0;
};

namespace milmer::emu {
namespace detail {

struct LtDesc {
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  cudaDataType_t scale = CUDA_R_32F;
  std::int32_t trans[2] = {CUBLAS_OP_N, CUBLAS_OP_N};  // A, B
  std::uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
};
struct LtLayout {
  cudaDataType type = CUDA_R_32F;
  std::uint64_t rows = 0, cols = 0;
  std::int64_t ld = 0;
};
struct LtPreference {
  std::uint64_t max_workspace = 0;
  std::uint32_t align[4] = {256, 256, 256, 256};  // A, B, C, D: what the caller guarantees
};
struct LtAlgo {
  std::uint32_t magic = 0;                        // kAlgoMagic: made by the heuristic
  std::uint32_t align[4] = {256, 256, 256, 256};  // A, B, C, D: what the algorithm assumes
};
inline constexpr std::uint32_t kAlgoMagic = 0x4c74416cu;
inline constexpr const char* kOperandNames[4] = {"A", "B", "C", "D"};

// The emulator's state of a semi-opaque cuBLASLt object, kept in its bytes.
template <class T, class Opaque>
T load(const Opaque* o) {
  static_assert(sizeof(T) <= sizeof(Opaque) && std::is_trivially_copyable_v<T>);
  T v;
  std::memcpy(static_cast<void*>(&v), o, sizeof(T));
  return v;
}
template <class T, class Opaque>
void store(Opaque* o, const T& v) {
  static_assert(sizeof(T) <= sizeof(Opaque) && std::is_trivially_copyable_v<T>);
  std::memcpy(o, &v, sizeof(T));
}
template <class Opaque, class T>
cublasStatus_t create(Opaque** out, const T& v) {
  const cublasStatus_t s = new_handle(out);
  if (s == CUBLAS_STATUS_SUCCESS) store(*out, v);
  return s;
}
// Sets attributes of a descriptor: set(state) changes the state, which is kept if it succeeds.
template <class T, class Opaque, class F>
cublasStatus_t update(Opaque* o, F&& set) {
  if (o == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  T v = load<T>(o);
  const cublasStatus_t s = set(v);
  if (s == CUBLAS_STATUS_SUCCESS) store(o, v);
  return s;
}
inline cublasStatus_t unsupported_attribute(const char* what, int attr, const char* emulated) {
  return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                str(what, " attribute ", attr, ": not emulated (", emulated, " are)"));
}
// Copies an attribute value of exactly sizeof(T) bytes.
template <class T>
cublasStatus_t attribute(T& to, const void* buf, std::size_t bytes, const char* name) {
  if (buf == nullptr || bytes != sizeof(T))
    return refuse(CUBLAS_STATUS_INVALID_VALUE,
                  str(name, ": expected ", sizeof(T), " bytes, got ", bytes));
  std::memcpy(&to, buf, sizeof(T));
  return CUBLAS_STATUS_SUCCESS;
}

// The problem a descriptor and four layouts describe: D (m x n) = op(A) (m x k) op(B) (k x n),
// column-major.
struct LtProblem {
  LtDesc desc;
  LtLayout l[4];  // A, B, C, D
  int m = 0, n = 0, k = 0;
};
inline cublasStatus_t lt_problem(cublasLtMatmulDesc_t op, const cublasLtMatrixLayout_t layouts[4],
                                 LtProblem& p) {
  if (op == nullptr) return refuse(CUBLAS_STATUS_INVALID_VALUE, "computeDesc: null");
  p.desc = load<LtDesc>(op);
  for (int i = 0; i < 4; ++i) {
    if (layouts[i] == nullptr)
      return refuse(CUBLAS_STATUS_INVALID_VALUE, str(kOperandNames[i], "desc: null"));
    p.l[i] = load<LtLayout>(layouts[i]);
    if (p.l[i].type != CUDA_R_32F)
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                    str(kOperandNames[i], "desc: the emulator has CUDA_R_32F only"));
    if (p.l[i].ld < static_cast<std::int64_t>(p.l[i].rows) || p.l[i].rows > 0x7fffffffu ||
        p.l[i].cols > 0x7fffffffu || p.l[i].ld > 0x7fffffff)
      return refuse(CUBLAS_STATUS_INVALID_VALUE,
                    str(kOperandNames[i], "desc: ld ", p.l[i].ld, " < rows ", p.l[i].rows));
  }
  if (p.desc.compute != CUBLAS_COMPUTE_32F || p.desc.scale != CUDA_R_32F)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                  "computeDesc: the emulator has CUBLAS_COMPUTE_32F with CUDA_R_32F scale only");
  const std::uint32_t e = p.desc.epilogue;
  if (e != CUBLASLT_EPILOGUE_DEFAULT && e != CUBLASLT_EPILOGUE_RELU &&
      e != CUBLASLT_EPILOGUE_BIAS && e != CUBLASLT_EPILOGUE_RELU_BIAS)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                  str("CUBLASLT_MATMUL_DESC_EPILOGUE ", e,
                      ": the emulator has DEFAULT, RELU, BIAS and RELU_BIAS"));
  const bool ta = p.desc.trans[0] == CUBLAS_OP_T, tb = p.desc.trans[1] == CUBLAS_OP_T;
  const LtLayout &a = p.l[0], &b = p.l[1], &c = p.l[2], &d = p.l[3];
  p.m = static_cast<int>(d.rows);
  p.n = static_cast<int>(d.cols);
  p.k = static_cast<int>(ta ? a.rows : a.cols);
  if ((ta ? a.cols : a.rows) != d.rows || (tb ? b.cols : b.rows) != (ta ? a.rows : a.cols) ||
      (tb ? b.rows : b.cols) != d.cols || c.rows != d.rows || c.cols != d.cols)
    return refuse(CUBLAS_STATUS_INVALID_VALUE,
                  str("layouts: op(A) ", ta ? a.cols : a.rows, "x", ta ? a.rows : a.cols,
                      ", op(B) ", tb ? b.cols : b.rows, "x", tb ? b.rows : b.cols, ", C ", c.rows,
                      "x", c.cols, ", D ", d.rows, "x", d.cols, " do not agree"));
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace detail
}  // namespace milmer::emu

extern "C" {

inline cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  return milmer::emu::detail::new_handle(handle);
}
inline cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  return milmer::emu::detail::delete_handle(handle);
}

inline cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc,
                                               cublasComputeType_t compute, cudaDataType_t scale) {
  milmer::emu::detail::LtDesc d;
  d.compute = compute;
  d.scale = scale;
  return milmer::emu::detail::create(desc, d);
}
inline cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  return milmer::emu::detail::delete_handle(desc);
}
inline cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                                     cublasLtMatmulDescAttributes_t attr,
                                                     const void* buf, size_t bytes) {
  using namespace milmer::emu::detail;
  return update<LtDesc>(desc, [&](LtDesc& d) {
    switch (attr) {
      case CUBLASLT_MATMUL_DESC_TRANSA:
      case CUBLASLT_MATMUL_DESC_TRANSB: {
        std::int32_t& t = d.trans[attr == CUBLASLT_MATMUL_DESC_TRANSA ? 0 : 1];
        const cublasStatus_t s = attribute(t, buf, bytes, "CUBLASLT_MATMUL_DESC_TRANS");
        if (s != CUBLAS_STATUS_SUCCESS || t == CUBLAS_OP_N || t == CUBLAS_OP_T) return s;
        return refuse(CUBLAS_STATUS_INVALID_VALUE, milmer::str("CUBLASLT_MATMUL_DESC_TRANS: ", t));
      }
      case CUBLASLT_MATMUL_DESC_EPILOGUE:
        return attribute(d.epilogue, buf, bytes, "CUBLASLT_MATMUL_DESC_EPILOGUE");
      case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
        return attribute(d.bias, buf, bytes, "CUBLASLT_MATMUL_DESC_BIAS_POINTER");
      default:
        return unsupported_attribute("matmul descriptor", attr,
                                     "TRANSA, TRANSB, EPILOGUE, BIAS_POINTER");
    }
  });
}

inline cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                                 uint64_t rows, uint64_t cols, int64_t ld) {
  return milmer::emu::detail::create(layout, milmer::emu::detail::LtLayout{type, rows, cols, ld});
}
inline cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  return milmer::emu::detail::delete_handle(layout);
}

inline cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  return milmer::emu::detail::create(pref, milmer::emu::detail::LtPreference{});
}
inline cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  return milmer::emu::detail::delete_handle(pref);
}
inline cublasStatus_t cublasLtMatmulPreferenceSetAttribute(
    cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
    size_t bytes) {
  using namespace milmer::emu::detail;
  return update<LtPreference>(pref, [&](LtPreference& p) {
    switch (attr) {
      case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
        return attribute(p.max_workspace, buf, bytes, "CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES");
      case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
      case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
      case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
      case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
        return attribute(p.align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], buf, bytes,
                         "CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES");
      default:
        return unsupported_attribute("matmul preference", attr,
                                     "MAX_WORKSPACE_BYTES, MIN_ALIGNMENT_*_BYTES");
    }
  });
}

// One algorithm, which assumes the alignments the preference declares and needs no workspace;
// none (CUBLAS_STATUS_NOT_SUPPORTED) for a problem the emulator does not have or an alignment
// that is not a power of two of at least 4 bytes (fp32 elements).
inline cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a,
    cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
    cublasLtMatmulPreference_t pref, int requested, cublasLtMatmulHeuristicResult_t results[],
    int* found) {
  using namespace milmer::emu::detail;
  using milmer::str;
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (requested <= 0 || results == nullptr || found == nullptr || pref == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  *found = 0;
  const cublasLtMatrixLayout_t layouts[4] = {a, b, c, d};
  LtProblem p;
  if (const cublasStatus_t s = lt_problem(op, layouts, p); s != CUBLAS_STATUS_SUCCESS) return s;
  const LtPreference pr = load<LtPreference>(pref);
  LtAlgo algo;
  algo.magic = kAlgoMagic;
  for (int i = 0; i < 4; ++i) {
    const std::uint32_t al = pr.align[i];
    if (al < 4 || (al & (al - 1)) != 0)
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                    str("CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_", kOperandNames[i], "_BYTES ", al,
                        ": no algorithm (a power of two >= 4 bytes, the fp32 element size)"));
    algo.align[i] = al < 256 ? al : 256;
  }
  results[0] = cublasLtMatmulHeuristicResult_t{};
  store(&results[0].algo, algo);
  results[0].workspaceSize = 0;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *found = 1;
  return CUBLAS_STATUS_SUCCESS;
}

// D = epilogue(alpha op(A) op(B) + beta C), queued on `stream`.
inline cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t op,
                                     const void* alpha, const void* A, cublasLtMatrixLayout_t Adesc,
                                     const void* B, cublasLtMatrixLayout_t Bdesc, const void* beta,
                                     const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                                     cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t* algo,
                                     void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  using namespace milmer::emu::detail;
  using milmer::str;
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (alpha == nullptr || beta == nullptr || A == nullptr || B == nullptr || D == nullptr)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "alpha, beta, A, B and D must not be null");
  const cublasLtMatrixLayout_t layouts[4] = {Adesc, Bdesc, Cdesc, Ddesc};
  LtProblem p;
  if (const cublasStatus_t s = lt_problem(op, layouts, p); s != CUBLAS_STATUS_SUCCESS) return s;
  const float a = *static_cast<const float*>(alpha), bt = *static_cast<const float*>(beta);
  if (C == nullptr && bt != 0.0f) return refuse(CUBLAS_STATUS_INVALID_VALUE, "C: null, beta != 0");
  if (C != nullptr && C != D && p.l[2].ld != p.l[3].ld)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "C: the emulator needs C's ld to be D's");
  const bool bias = p.desc.epilogue & CUBLASLT_EPILOGUE_BIAS;
  const bool relu = p.desc.epilogue & CUBLASLT_EPILOGUE_RELU;
  if (bias && p.desc.bias == nullptr)
    return refuse(CUBLAS_STATUS_INVALID_VALUE,
                  "CUBLASLT_MATMUL_DESC_BIAS_POINTER: null with a "
                  "BIAS epilogue");
  // With no algorithm cuBLASLt runs its heuristic with the default preference (256 bytes).
  const LtAlgo al = algo ? load<LtAlgo>(algo) : LtAlgo{kAlgoMagic, {256, 256, 256, 256}};
  if (al.magic != kAlgoMagic)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "algo: not from cublasLtMatmulAlgoGetHeuristic");
  static constexpr int kPositions[4] = {4, 6, 9, 11};
  const void* const operands[4] = {A, B, C, D};
  for (int i = 0; i < 4; ++i)
    check_device_pointer("cublasLtMatmul", kPositions[i], kOperandNames[i], operands[i]);
  check_device_pointer("cublasLtMatmul", 14, "workspace", workspace);
  if (bias)
    check_device_pointer("cublasLtMatmul", 2, "CUBLASLT_MATMUL_DESC_BIAS_POINTER", p.desc.bias);
  if (milmer::emu::strict())
    for (int i = 0; i < 4; ++i) {
      if (operands[i] == nullptr || milmer::pointer_alignment(operands[i]) >= al.align[i]) continue;
      return refuse(
          CUBLAS_STATUS_NOT_SUPPORTED,
          str("argument '", kPositions[i], " (", kOperandNames[i], ")': ", operands[i], " is ",
              milmer::pointer_alignment(operands[i]), "-byte aligned, the algorithm assumes ",
              al.align[i], " (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_", kOperandNames[i], "_BYTES)"));
    }
  (void)workspace_bytes;  // the emulated algorithm needs no workspace
  if (p.m == 0 || p.n == 0) return CUBLAS_STATUS_SUCCESS;
  const LtProblem q = p;
  const auto* fa = static_cast<const float*>(A);
  const auto* fb = static_cast<const float*>(B);
  const auto* fc = static_cast<const float*>(C);
  auto* fd = static_cast<float*>(D);
  milmer::emu::enqueue(stream, [=] {
    const int ldd = static_cast<int>(q.l[3].ld);
    if (fc != nullptr && fc != fd && bt != 0.0f)
      for (int j = 0; j < q.n; ++j)
        std::memcpy(fd + std::int64_t{j} * ldd, fc + std::int64_t{j} * ldd, q.m * sizeof(float));
    cblas_sgemm(CblasColMajor, q.desc.trans[0] == CUBLAS_OP_T ? CblasTrans : CblasNoTrans,
                q.desc.trans[1] == CUBLAS_OP_T ? CblasTrans : CblasNoTrans, q.m, q.n, q.k, a, fa,
                static_cast<int>(q.l[0].ld), fb, static_cast<int>(q.l[1].ld), bt, fd, ldd);
    if (!bias && !relu) return;
    const auto* fbias = static_cast<const float*>(q.desc.bias);
    for (int j = 0; j < q.n; ++j)
      for (int i = 0; i < q.m; ++i) {
        float& y = fd[std::int64_t{j} * ldd + i];
        if (bias) y += fbias[i];
        if (relu) y = y > 0.0f ? y : 0.0f;
      }
  });
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
