// Internal header of the C++ shim: argument checks and the tensor -> descriptor
// helpers shared by the op families (shim_gated_norm.cpp, shim_add_rms_norm.cpp).
// The op schemas are declared once, in shim.cpp.
#pragma once

#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#ifdef GN_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>

#include "gatednorm.h"

#ifdef GN_CUDA_EMU
// Emulator test builds (setup.py, GATEDNORM_CUDA_EMU=1): CPU tensors go through the
// CUDA kernels on the CPU emulator (csrc/emu) instead of the CPU kernels.
#define gn_cpu_fwd(a) gn_cuda_fwd(a, nullptr)
#define gn_cpu_bwd(a) gn_cuda_bwd(a, nullptr)
#define gn_cpu_bwd_workspace_bytes(c) gn_cuda_bwd_workspace_bytes(c)
#define gn_cpu_fwd_workspace_bytes(c) gn_cuda_fwd_workspace_bytes(c)
#define gn_cpu_addnorm_fwd(a) gn_cuda_addnorm_fwd(a, nullptr)
#define gn_cpu_addnorm_bwd(a) gn_cuda_addnorm_bwd(a, nullptr)
#define gn_cpu_addnorm_bwd_workspace_bytes(c) gn_cuda_addnorm_bwd_workspace_bytes(c)
#endif

namespace gn_shim {

using at::ScalarType;
using at::Tensor;
using OptTensor = std::optional<Tensor>;

// Messages are assembled without iostreams: on the GPU machines the torch
// wheel's libstdc++ is older than the compiler's headers, and an ostream
// instantiated here crashed there (segfault in _M_insert<long>).
inline std::string to_text(const std::string& v) { return v; }
inline std::string to_text(const char* v) { return v; }
inline std::string to_text(c10::string_view v) { return std::string(v.data(), v.size()); }
inline std::string to_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}
template <typename I, typename = std::enable_if_t<std::is_integral_v<I>>>
std::string to_text(I v) {
  return std::to_string(v);
}

// Every error is a RuntimeError whose message starts with "gatednorm:" and names
// the argument; callers (and tests) rely on that.
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::string msg = "gatednorm: ";
  ((msg += to_text(args)), ...);
  TORCH_CHECK(false, msg);
}
#define GN_REQUIRE(cond, ...) \
  do {                        \
    if (!(cond)) fail(__VA_ARGS__); \
  } while (0)

inline const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return "float32";
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Double: return "float64";
    default: return "a non-floating dtype";
  }
}

inline std::optional<gn_dtype> to_gn_dtype(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return GN_FLOAT32;
    case ScalarType::Half: return GN_FLOAT16;
    case ScalarType::BFloat16: return GN_BFLOAT16;
    case ScalarType::Double: return GN_FLOAT64;
    default: return std::nullopt;
  }
}

inline std::string shape_str(const Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

inline bool same_device(const Tensor& a, const Tensor& b) { return a.device() == b.device(); }

inline std::string device_str(const Tensor& t) { return t.device().str(); }

// Row stride (elements) of t seen as [M, N], or nullopt when the leading dims do
// not collapse into one stride or the last dim is not unit-stride.
inline std::optional<int64_t> row_stride(const Tensor& t) {
  const int64_t d = t.dim();
  const int64_t n = t.size(d - 1);
  if (t.numel() == 0) return n;  // nothing is addressed
  if (n > 1 && t.stride(d - 1) != 1) return std::nullopt;
  std::optional<int64_t> s;  // stride of the innermost leading dim of size > 1
  int64_t span = 0;          // elements one step of the previous dim must cover
  for (int64_t i = d - 2; i >= 0; --i) {
    if (t.size(i) == 1) continue;
    if (!s) {
      s = t.stride(i);
    } else if (t.stride(i) != span) {
      return std::nullopt;
    }
    span = t.stride(i) * t.size(i);
  }
  return s ? *s : n;
}

// An input read in place when its rows are addressable with one stride, else a
// contiguous copy (documented: only the unusual layouts pay for it).
struct Rows {
  Tensor t;
  int64_t stride;
};
inline Rows input_rows(const Tensor& t) {
  if (auto s = row_stride(t)) return {t, *s};
  Tensor c = t.contiguous();
  return {c, c.size(c.dim() - 1)};
}

// Outputs are written in place: a layout we cannot address would lose the write.
inline int64_t output_rows(const Tensor& t, const char* name, int64_t m, int64_t n) {
  auto s = row_stride(t);
  GN_REQUIRE(s, name, " must have a unit-stride last dimension and leading dimensions that flatten "
             "to one row stride (got strides of a tensor of shape ", shape_str(t), ")");
  GN_REQUIRE(m <= 1 || *s >= n, name, " has overlapping rows (row stride ", *s, " < ", n, ")");
  return *s;
}

// An output written while `in` is read must not share elements with it: a partial
// overlap (a shifted view) races the kernel's reads; the very same elements only
// where the op supports in place. As torch's out= ops, this tells only dense layouts
// apart (row-strided views of one buffer are left to the caller: their rows may
// interleave without sharing an element).
inline void check_no_overlap(const Tensor& out, const char* out_name, const Tensor& in, const char* in_name,
                             bool in_place_ok) {
  const auto st = at::get_overlap_status(out, in);
  GN_REQUIRE(st != at::MemOverlapStatus::Partial, out_name, " partially overlaps ", in_name,
             " (the kernels would read elements already written)");
  GN_REQUIRE(in_place_ok || st != at::MemOverlapStatus::Full, out_name, " is ", in_name,
             ": not supported in place");
}

inline void check_like_x(const Tensor& x, const Tensor& t, const char* name) {
  GN_REQUIRE(same_device(x, t), name, " is on ", device_str(t), " but x is on ", device_str(x));
  GN_REQUIRE(t.scalar_type() == x.scalar_type(), name, " must have x's dtype ", dtype_name(x.scalar_type()),
             ", got ", dtype_name(t.scalar_type()));
  bool same = t.dim() == x.dim();
  for (int64_t i = 0; same && i < x.dim(); ++i) same = t.size(i) == x.size(i);
  GN_REQUIRE(same, name, " must have x's shape ", shape_str(x), ", got ", shape_str(t));
}

inline void check_param(const Tensor& x, const Tensor& p, const char* name, int64_t n) {
  GN_REQUIRE(same_device(x, p), name, " is on ", device_str(p), " but x is on ", device_str(x));
  GN_REQUIRE(to_gn_dtype(p.scalar_type()), name, " must be float16, bfloat16, float32 or float64, got ",
             dtype_name(p.scalar_type()));
  GN_REQUIRE(p.dim() == 1 && p.size(0) == n, name, " must have shape [", n, "] (x's last dim), got ", shape_str(p));
}

inline const void* ptr_or_null(const OptTensor& t) { return t ? t->const_data_ptr() : nullptr; }

// Parameters are read as [N] contiguous: a strided or expanded view (w[::2],
// w.expand(N)) is copied first. (Read as contiguous it would be garbage, and past
// the end of its storage for an expanded one.) Keep the result alive until the
// kernel has been launched: on CUDA the caching allocator orders its reuse after it.
inline OptTensor contiguous_param(const OptTensor& p) {
  if (!p || p->is_contiguous()) return p;
  return p->contiguous();
}

// ---- backend dispatch ----

inline void check_status(gn_status s, bool cuda) {
  if (s == GN_OK) return;
#if defined(GN_WITH_CUDA) || defined(GN_CUDA_EMU)
  // Emulator builds: the CPU device's kernels are the emulated CUDA ones; their launch
  // failures (csrc/emu) are CUDA errors too, not "unsupported".
  if (s == GN_ERR_CUDA) fail("CUDA error: ", gn_cuda_error_string());
#endif
  (void)cuda;
  fail(s == GN_ERR_INVALID ? "kernel rejected the problem descriptor (a gatednorm bug: please report)"
                           : "this problem is not supported by the ", cuda ? "CUDA" : "CPU", " backend");
}

#ifdef GN_WITH_CUDA
struct CudaContext {
  c10::DeviceGuard guard;
  void* stream;
  explicit CudaContext(const Tensor& x)
      : guard(x.device()), stream(c10::cuda::getCurrentCUDAStream(x.device().index()).stream()) {}
};
#endif

[[noreturn]] inline void no_cuda() {
  fail("this build of gatednorm has no CUDA kernels (built without nvcc or with GATEDNORM_CPU_ONLY=1); "
       "reinstall with a CUDA build of torch and nvcc on the PATH");
}

// A parameter gradient written in place: [N], contiguous, the parameter's dtype.
inline void check_param_grad(const Tensor& x, const OptTensor& param, const Tensor& grad, const char* name,
                      const char* param_name, int64_t n) {
  GN_REQUIRE(param, name, " was given but ", param_name, " is None");
  GN_REQUIRE(same_device(x, grad), name, " is on ", device_str(grad), " but x is on ", device_str(x));
  GN_REQUIRE(grad.scalar_type() == param->scalar_type(), name, " must have ", param_name, "'s dtype ",
             dtype_name(param->scalar_type()), ", got ", dtype_name(grad.scalar_type()));
  GN_REQUIRE(grad.dim() == 1 && grad.size(0) == n && grad.is_contiguous(), name,
             " must be a contiguous tensor of shape [", n, "], got ", shape_str(grad));
}

}  // namespace gn_shim
