// The only C++ of gatednorm: op schemas, argument checks, tensor -> C descriptor.
//
// Classic TORCH_LIBRARY registration, not the LibTorch stable ABI: with torch
// 2.11 (the GPU machines) any exception thrown by a stable-ABI kernel crashes
// the process (segfault in the dispatcher), so a bad argument could not become
// a Python error. docs/design.md records the experiment. Fake kernels and
// autograd live in Python (torch_ops/gated_norm.py); kernels live in csrc/cpu
// and csrc/cuda and never see a torch header.
#include <Python.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>
#ifdef GN_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include <cmath>
#include <optional>
#include <cstdio>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "gatednorm.h"

// `built_with_cuda` tells Python whether the CUDA kernels are in this build.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* m = PyModule_Create(&def);
#ifdef GN_WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
  if (m && PyModule_AddIntConstant(m, "built_with_cuda", with_cuda) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}

namespace {

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

const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return "float32";
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Double: return "float64";
    default: return "a non-floating dtype";
  }
}

std::optional<gn_dtype> to_gn_dtype(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return GN_FLOAT32;
    case ScalarType::Half: return GN_FLOAT16;
    case ScalarType::BFloat16: return GN_BFLOAT16;
    case ScalarType::Double: return GN_FLOAT64;
    default: return std::nullopt;
  }
}

std::string shape_str(const Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

bool same_device(const Tensor& a, const Tensor& b) { return a.device() == b.device(); }

std::string device_str(const Tensor& t) { return t.device().str(); }

// Row stride (elements) of t seen as [M, N], or nullopt when the leading dims do
// not collapse into one stride or the last dim is not unit-stride.
std::optional<int64_t> row_stride(const Tensor& t) {
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
Rows input_rows(const Tensor& t) {
  if (auto s = row_stride(t)) return {t, *s};
  Tensor c = t.contiguous();
  return {c, c.size(c.dim() - 1)};
}

// Outputs are written in place: a layout we cannot address would lose the write.
int64_t output_rows(const Tensor& t, const char* name, int64_t m, int64_t n) {
  auto s = row_stride(t);
  GN_REQUIRE(s, name, " must have a unit-stride last dimension and leading dimensions that flatten "
             "to one row stride (got strides of a tensor of shape ", shape_str(t), ")");
  GN_REQUIRE(m <= 1 || *s >= n, name, " has overlapping rows (row stride ", *s, " < ", n, ")");
  return *s;
}

// Everything the kernels need to know about the call, checked once.
struct Problem {
  gn_config cfg{};
  int64_t ngroups = 0;
  ScalarType stat_type = ScalarType::Float;
};

gn_act parse_activation(c10::string_view a) {
  if (a == "silu" || a == "swish") return GN_ACT_SILU;
  if (a == "sigmoid") return GN_ACT_SIGMOID;
  fail("activation must be 'silu', 'swish' or 'sigmoid', got '", a, "'");
}

void check_like_x(const Tensor& x, const Tensor& t, const char* name) {
  GN_REQUIRE(same_device(x, t), name, " is on ", device_str(t), " but x is on ", device_str(x));
  GN_REQUIRE(t.scalar_type() == x.scalar_type(), name, " must have x's dtype ", dtype_name(x.scalar_type()),
             ", got ", dtype_name(t.scalar_type()));
  bool same = t.dim() == x.dim();
  for (int64_t i = 0; same && i < x.dim(); ++i) same = t.size(i) == x.size(i);
  GN_REQUIRE(same, name, " must have x's shape ", shape_str(x), ", got ", shape_str(t));
}

void check_param(const Tensor& x, const Tensor& p, const char* name, int64_t n) {
  GN_REQUIRE(same_device(x, p), name, " is on ", device_str(p), " but x is on ", device_str(x));
  GN_REQUIRE(to_gn_dtype(p.scalar_type()), name, " must be float16, bfloat16, float32 or float64, got ",
             dtype_name(p.scalar_type()));
  GN_REQUIRE(p.dim() == 1 && p.size(0) == n, name, " must have shape [", n, "] (x's last dim), got ", shape_str(p));
}

Problem make_problem(const Tensor& x, const OptTensor& weight, const OptTensor& bias, const OptTensor& z,
                     double eps, std::optional<int64_t> group_size, bool norm_before_gate, bool is_rms_norm,
                     c10::string_view activation) {
  GN_REQUIRE(x.is_cpu() || x.is_cuda(), "x must be on a CPU or CUDA device, got ", device_str(x));
  auto dt = to_gn_dtype(x.scalar_type());
  GN_REQUIRE(dt, "x must be float16, bfloat16, float32 or float64, got ", dtype_name(x.scalar_type()));
  GN_REQUIRE(x.dim() >= 1, "x must have at least one dimension");
  const int64_t n = x.size(x.dim() - 1);
  GN_REQUIRE(n > 0, "x's last dimension must be > 0, got shape ", shape_str(x));
  GN_REQUIRE(eps >= 0 && std::isfinite(eps), "eps must be a finite number >= 0, got ", eps);
  const int64_t g = group_size.value_or(n);
  GN_REQUIRE(g > 0 && n % g == 0, "group_size must be a positive divisor of x's last dimension ", n, ", got ", g);
  if (z) check_like_x(x, *z, "z");
  if (weight) check_param(x, *weight, "weight", n);
  if (bias) check_param(x, *bias, "bias", n);
  if (weight && bias)
    GN_REQUIRE(weight->scalar_type() == bias->scalar_type(), "bias must have weight's dtype ",
               dtype_name(weight->scalar_type()), ", got ", dtype_name(bias->scalar_type()));

  Problem p;
  p.cfg.rows = n ? x.numel() / n : 0;
  p.cfg.cols = n;
  p.cfg.group_size = g;
  p.cfg.eps = eps;
  p.cfg.is_rms_norm = is_rms_norm;
  p.cfg.norm_before_gate = norm_before_gate;
  p.cfg.act = parse_activation(activation);
  p.cfg.dtype = *dt;
  p.cfg.param_dtype = weight ? *to_gn_dtype(weight->scalar_type())
                             : (bias ? *to_gn_dtype(bias->scalar_type()) : *dt);
  p.ngroups = n / g;
  p.stat_type = *dt == GN_FLOAT64 ? ScalarType::Double : ScalarType::Float;
  return p;
}

const void* ptr_or_null(const OptTensor& t) { return t ? t->const_data_ptr() : nullptr; }

// ---- backend dispatch ----

void check_status(gn_status s, bool cuda) {
  if (s == GN_OK) return;
#ifdef GN_WITH_CUDA
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

[[noreturn, maybe_unused]] void no_cuda() {
  fail("this build of gatednorm has no CUDA kernels (built without nvcc or with GATEDNORM_CPU_ONLY=1); "
       "reinstall with a CUDA build of torch and nvcc on the PATH");
}

void run_fwd(const Tensor& x, const gn_fwd_args& a) {
  if (a.cfg.rows == 0) return;  // idle ranks run 0-token batches: never launch an empty grid
  if (x.is_cpu()) return check_status(gn_cpu_fwd(&a), false);
#ifdef GN_WITH_CUDA
  CudaContext ctx(x);
  check_status(gn_cuda_fwd(&a, ctx.stream), true);
#else
  no_cuda();
#endif
}

size_t bwd_workspace_bytes(const Tensor& x, const gn_config& cfg) {
  if (x.is_cpu()) return gn_cpu_bwd_workspace_bytes(&cfg);
#ifdef GN_WITH_CUDA
  c10::DeviceGuard guard(x.device());
  return gn_cuda_bwd_workspace_bytes(&cfg);
#else
  no_cuda();
#endif
}

void run_bwd(const Tensor& x, const gn_bwd_args& a) {
  if (a.cfg.rows == 0) return;
  if (x.is_cpu()) return check_status(gn_cpu_bwd(&a), false);
#ifdef GN_WITH_CUDA
  CudaContext ctx(x);
  check_status(gn_cuda_bwd(&a, ctx.stream), true);
#else
  no_cuda();
#endif
}

// ---- forward ----

std::tuple<Tensor, Tensor> forward_into(const Tensor& x_in, const OptTensor& weight, const OptTensor& bias,
                                        const OptTensor& z_in, double eps, std::optional<int64_t> group_size,
                                        bool norm_before_gate, bool is_rms_norm, c10::string_view activation,
                                        const Tensor& out, int64_t out_stride) {
  Problem p = make_problem(x_in, weight, bias, z_in, eps, group_size, norm_before_gate, is_rms_norm, activation);
  const int64_t nstat = p.ngroups * p.cfg.rows;
  Tensor mean = at::empty({is_rms_norm ? 0 : nstat}, x_in.options().dtype(p.stat_type));
  Tensor rstd = at::empty({nstat}, x_in.options().dtype(p.stat_type));
  if (p.cfg.rows == 0) return {mean, rstd};

  Rows x = input_rows(x_in);
  std::optional<Rows> z;
  if (z_in) z = input_rows(*z_in);
  gn_fwd_args a{};
  a.cfg = p.cfg;
  a.x = x.t.const_data_ptr();
  a.x_stride = x.stride;
  a.z = z ? z->t.const_data_ptr() : nullptr;
  a.z_stride = z ? z->stride : 0;
  a.weight = ptr_or_null(weight);
  a.bias = ptr_or_null(bias);
  a.out = out.data_ptr();
  a.out_stride = out_stride;
  a.mean = is_rms_norm ? nullptr : mean.data_ptr();
  a.rstd = rstd.data_ptr();
  run_fwd(x_in, a);
  return {mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor> gated_norm_fwd(Tensor x, OptTensor weight, OptTensor bias, OptTensor z,
                                                  double eps, std::optional<int64_t> group_size,
                                                  bool norm_before_gate, bool is_rms_norm, c10::string_view activation) {
  GN_REQUIRE(x.dim() >= 1, "x must have at least one dimension");
  Tensor out = at::empty(x.sizes(), x.options());
  const int64_t n = x.size(x.dim() - 1);
  auto [mean, rstd] = forward_into(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm,
                                   activation, out, n);
  return {out, mean, rstd};
}

std::tuple<Tensor, Tensor> gated_norm_fwd_out(Tensor x, OptTensor weight, OptTensor bias, OptTensor z, double eps,
                                              std::optional<int64_t> group_size, bool norm_before_gate,
                                              bool is_rms_norm, c10::string_view activation, Tensor out) {
  GN_REQUIRE(x.dim() >= 1, "x must have at least one dimension");
  check_like_x(x, out, "out");
  const int64_t n = x.size(x.dim() - 1);
  const int64_t s = output_rows(out, "out", x.numel() / (n ? n : 1), n);
  return forward_into(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation, out, s);
}

// ---- backward ----

struct BwdOutputs {
  Tensor dx;
  int64_t dx_stride;
  OptTensor dz;
  int64_t dz_stride;
  OptTensor out;
  int64_t out_stride;
  OptTensor dw;  // [N] in the parameter dtype; None: not computed
  OptTensor db;
};

void backward_into(const Tensor& dy_in, const Tensor& x_in, const OptTensor& weight,
                                               const OptTensor& bias, const OptTensor& z_in, const Tensor& mean,
                                               const Tensor& rstd, double eps, std::optional<int64_t> group_size,
                                               bool norm_before_gate, bool is_rms_norm,
                                               c10::string_view activation, const BwdOutputs& o) {
  Problem p = make_problem(x_in, weight, bias, z_in, eps, group_size, norm_before_gate, is_rms_norm, activation);
  check_like_x(x_in, dy_in, "dy");
  const int64_t nstat = p.ngroups * p.cfg.rows;
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&rstd, "rstd"}, {&mean, "mean"}}) {
    if (t == &mean && is_rms_norm) continue;
    GN_REQUIRE(same_device(x_in, *t), name, " is on ", device_str(*t), " but x is on ", device_str(x_in));
    GN_REQUIRE(t->scalar_type() == p.stat_type, name, " must be ", dtype_name(p.stat_type),
               " (as returned by the forward), got ", dtype_name(t->scalar_type()));
    GN_REQUIRE(t->dim() == 1 && t->size(0) == nstat && t->is_contiguous(), name,
               " must be a contiguous [ngroups * M] = [", nstat, "] tensor (as returned by the forward), got ",
               shape_str(*t));
  }
  OptTensor dw = o.dw, db = o.db;
  if (p.cfg.rows == 0) {
    // An empty batch still owes zero gradients for the parameters.
    if (dw) dw->zero_();
    if (db) db->zero_();
    return;
  }
  Rows x = input_rows(x_in), dy = input_rows(dy_in);
  std::optional<Rows> z;
  if (z_in) z = input_rows(*z_in);
  Tensor ws = at::empty({(int64_t)bwd_workspace_bytes(x_in, p.cfg)}, x_in.options().dtype(ScalarType::Byte));

  gn_bwd_args a{};
  a.cfg = p.cfg;
  a.x = x.t.const_data_ptr();
  a.x_stride = x.stride;
  a.z = z ? z->t.const_data_ptr() : nullptr;
  a.z_stride = z ? z->stride : 0;
  a.weight = ptr_or_null(weight);
  a.bias = ptr_or_null(bias);
  a.dy = dy.t.const_data_ptr();
  a.dy_stride = dy.stride;
  a.mean = is_rms_norm ? nullptr : mean.const_data_ptr();
  a.rstd = rstd.const_data_ptr();
  a.dx = o.dx.data_ptr();
  a.dx_stride = o.dx_stride;
  a.dz = o.dz ? o.dz->data_ptr() : nullptr;
  a.dz_stride = o.dz_stride;
  a.dw = dw ? dw->data_ptr() : nullptr;
  a.db = db ? db->data_ptr() : nullptr;
  a.out = o.out ? o.out->data_ptr() : nullptr;
  a.out_stride = o.out_stride;
  a.workspace = ws.data_ptr();
  run_bwd(x_in, a);
}

std::tuple<Tensor, OptTensor, OptTensor, OptTensor, OptTensor> gated_norm_bwd(
    Tensor dy, Tensor x, OptTensor weight, OptTensor bias, OptTensor z, Tensor mean, Tensor rstd, double eps,
    std::optional<int64_t> group_size, bool norm_before_gate, bool is_rms_norm, c10::string_view activation,
    bool recompute_output) {
  GN_REQUIRE(x.dim() >= 1, "x must have at least one dimension");
  const int64_t n = x.size(x.dim() - 1);
  BwdOutputs o{at::empty(x.sizes(), x.options()), n, std::nullopt, n, std::nullopt, n, std::nullopt,
               std::nullopt};
  if (z) o.dz = at::empty(x.sizes(), x.options());
  if (recompute_output) o.out = at::empty(x.sizes(), x.options());
  if (weight) o.dw = at::empty({n}, weight->options());
  if (bias) o.db = at::empty({n}, bias->options());
  backward_into(dy, x, weight, bias, z, mean, rstd, eps, group_size, norm_before_gate, is_rms_norm, activation, o);
  return {o.dx, o.dw, o.db, o.dz, o.out};
}

// A parameter gradient written in place: [N], contiguous, the parameter's dtype.
void check_param_grad(const Tensor& x, const OptTensor& param, const Tensor& grad, const char* name,
                      const char* param_name, int64_t n) {
  GN_REQUIRE(param, name, " was given but ", param_name, " is None");
  GN_REQUIRE(same_device(x, grad), name, " is on ", device_str(grad), " but x is on ", device_str(x));
  GN_REQUIRE(grad.scalar_type() == param->scalar_type(), name, " must have ", param_name, "'s dtype ",
             dtype_name(param->scalar_type()), ", got ", dtype_name(grad.scalar_type()));
  GN_REQUIRE(grad.dim() == 1 && grad.size(0) == n && grad.is_contiguous(), name,
             " must be a contiguous tensor of shape [", n, "], got ", shape_str(grad));
}

void gated_norm_bwd_out(Tensor dy, Tensor x, OptTensor weight, OptTensor bias, OptTensor z, Tensor mean,
                        Tensor rstd, double eps, std::optional<int64_t> group_size, bool norm_before_gate,
                        bool is_rms_norm, c10::string_view activation, Tensor dx, OptTensor dz, OptTensor out,
                        OptTensor dw, OptTensor db) {
  GN_REQUIRE(x.dim() >= 1, "x must have at least one dimension");
  const int64_t n = x.size(x.dim() - 1);
  const int64_t m = x.numel() / (n ? n : 1);
  GN_REQUIRE(z.has_value() == dz.has_value(), "dz must be given exactly when z is given");
  check_like_x(x, dx, "dx");
  BwdOutputs o{dx, output_rows(dx, "dx", m, n), dz, 0, out, 0, dw, db};
  if (dz) {
    check_like_x(x, *dz, "dz");
    o.dz_stride = output_rows(*dz, "dz", m, n);
  }
  if (out) {
    check_like_x(x, *out, "out");
    o.out_stride = output_rows(*out, "out", m, n);
  }
  if (dw) check_param_grad(x, weight, *dw, "dw", "weight", n);
  if (db) check_param_grad(x, bias, *db, "db", "bias", n);
  backward_into(dy, x, weight, bias, z, mean, rstd, eps, group_size, norm_before_gate, is_rms_norm, activation, o);
}

}  // namespace

TORCH_LIBRARY(gatednorm, m) {
  // gated_norm: the differentiable forward (autograd registered from Python);
  // gated_norm_fwd: the same computation with no autograd in the call path, for
  // inference (a Python autograd kernel costs ~20 us of host time per call).
  m.def(
      "gated_norm(Tensor x, Tensor? weight, Tensor? bias, Tensor? z, float eps, int? group_size, "
      "bool norm_before_gate, bool is_rms_norm, str activation) -> (Tensor out, Tensor mean, Tensor rstd)");
  m.def(
      "gated_norm_fwd(Tensor x, Tensor? weight, Tensor? bias, Tensor? z, float eps, int? group_size, "
      "bool norm_before_gate, bool is_rms_norm, str activation) -> (Tensor out, Tensor mean, Tensor rstd)");
  m.def(
      "gated_norm_fwd_out(Tensor x, Tensor? weight, Tensor? bias, Tensor? z, float eps, int? group_size, "
      "bool norm_before_gate, bool is_rms_norm, str activation, Tensor(a!) out) -> (Tensor mean, Tensor rstd)");
  m.def(
      "gated_norm_bwd(Tensor dy, Tensor x, Tensor? weight, Tensor? bias, Tensor? z, Tensor mean, Tensor rstd, "
      "float eps, int? group_size, bool norm_before_gate, bool is_rms_norm, str activation, bool recompute_output)"
      " -> (Tensor dx, Tensor? dw, Tensor? db, Tensor? dz, Tensor? out)");
  m.def(
      "gated_norm_bwd_out(Tensor dy, Tensor x, Tensor? weight, Tensor? bias, Tensor? z, Tensor mean, Tensor rstd, "
      "float eps, int? group_size, bool norm_before_gate, bool is_rms_norm, str activation, Tensor(a!) dx, "
      "Tensor(b!)? dz, Tensor(c!)? out, Tensor(d!)? dw=None, Tensor(e!)? db=None) -> ()");
}

// One implementation serves both devices: it reads the device off x.
TORCH_LIBRARY_IMPL(gatednorm, CPU, m) {
  m.impl("gated_norm", &gated_norm_fwd);
  m.impl("gated_norm_fwd", &gated_norm_fwd);
  m.impl("gated_norm_fwd_out", &gated_norm_fwd_out);
  m.impl("gated_norm_bwd", &gated_norm_bwd);
  m.impl("gated_norm_bwd_out", &gated_norm_bwd_out);
}

TORCH_LIBRARY_IMPL(gatednorm, CUDA, m) {
  m.impl("gated_norm", &gated_norm_fwd);
  m.impl("gated_norm_fwd", &gated_norm_fwd);
  m.impl("gated_norm_fwd_out", &gated_norm_fwd_out);
  m.impl("gated_norm_bwd", &gated_norm_bwd);
  m.impl("gated_norm_bwd_out", &gated_norm_bwd_out);
}
