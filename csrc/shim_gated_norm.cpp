// gated RMSNorm / LayerNorm ops (schemas in shim.cpp): checks, descriptors, dispatch.
#include "shim_common.h"
#include "shim_ops.h"

namespace gn_shim {
namespace {

// Everything the kernels need to know about the call, checked once.
struct Problem {
  gn_config cfg{};
  int64_t ngroups = 0;
  ScalarType stat_type = ScalarType::Float;
};

// The inputs both descriptors share (gn_fwd_args and gn_bwd_args name them alike).
template <typename Args>
void set_inputs(Args& a, const Rows& x, const std::optional<Rows>& z, const OptTensor& weight,
                const OptTensor& bias) {
  a.x = x.t.const_data_ptr();
  a.x_stride = x.stride;
  a.z = z ? z->t.const_data_ptr() : nullptr;
  a.z_stride = z ? z->stride : 0;
  a.weight = ptr_or_null(weight);
  a.bias = ptr_or_null(bias);
}

gn_act parse_activation(c10::string_view a) {
  if (a == "silu" || a == "swish") return GN_ACT_SILU;
  if (a == "sigmoid") return GN_ACT_SIGMOID;
  fail("activation must be 'silu', 'swish' or 'sigmoid', got '", a, "'");
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

// The forward's workspace (few rows of very wide groups: partial sums and statistics
// handed between the wide path's kernels), allocated only when the launcher asks for one.
Tensor fwd_workspace(const Tensor& x, size_t bytes, gn_fwd_args& a) {
  if (!bytes) return Tensor();
  Tensor ws = at::empty({(int64_t)bytes}, x.options().dtype(ScalarType::Byte));
  a.workspace = ws.data_ptr();
  return ws;
}

void run_fwd(const Tensor& x, gn_fwd_args a) {
  if (a.cfg.rows == 0) return;  // idle ranks run 0-token batches: never launch an empty grid
  if (x.is_cpu()) {
    const Tensor ws = fwd_workspace(x, gn_cpu_fwd_workspace_bytes(&a.cfg), a);
    return check_status(gn_cpu_fwd(&a), false);
  }
#ifdef GN_WITH_CUDA
  CudaContext ctx(x);
  const Tensor ws = fwd_workspace(x, gn_cuda_fwd_workspace_bytes(&a.cfg), a);
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

// Writes out (rows `out_stride` apart) and, with `stats`, returns the statistics;
// without, none is allocated and the kernel stores none (the C API's NULL mean and
// rstd): the inference form's host time is two allocations shorter.
std::tuple<Tensor, Tensor> forward_into(const Tensor& x_in, const OptTensor& weight, const OptTensor& bias,
                                        const OptTensor& z_in, double eps, std::optional<int64_t> group_size,
                                        bool norm_before_gate, bool is_rms_norm, c10::string_view activation,
                                        const Tensor& out, int64_t out_stride, bool stats) {
  Problem p = make_problem(x_in, weight, bias, z_in, eps, group_size, norm_before_gate, is_rms_norm, activation);
  Tensor mean, rstd;
  if (stats) {
    const int64_t nstat = p.ngroups * p.cfg.rows;
    mean = at::empty({is_rms_norm ? 0 : nstat}, x_in.options().dtype(p.stat_type));
    rstd = at::empty({nstat}, x_in.options().dtype(p.stat_type));
  }
  if (p.cfg.rows == 0) return {mean, rstd};

  Rows x = input_rows(x_in);
  std::optional<Rows> z;
  if (z_in) z = input_rows(*z_in);
  gn_fwd_args a{};
  a.cfg = p.cfg;
  const OptTensor w = contiguous_param(weight), b = contiguous_param(bias);
  set_inputs(a, x, z, w, b);
  a.out = out.data_ptr();
  a.out_stride = out_stride;
  a.mean = stats && !is_rms_norm ? mean.data_ptr() : nullptr;
  a.rstd = stats ? rstd.data_ptr() : nullptr;
  run_fwd(x_in, a);
  return {mean, rstd};
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> gated_norm_fwd(Tensor x, OptTensor weight, OptTensor bias, OptTensor z,
                                                  double eps, std::optional<int64_t> group_size,
                                                  bool norm_before_gate, bool is_rms_norm, c10::string_view activation) {
  GN_REQUIRE(x.dim() >= 1, "x must have at least one dimension");
  Tensor out = at::empty(x.sizes(), x.options());
  const int64_t n = x.size(x.dim() - 1);
  auto [mean, rstd] = forward_into(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm,
                                   activation, out, n, true);
  return {out, mean, rstd};
}

Tensor gated_norm_infer(Tensor x, OptTensor weight, OptTensor bias, OptTensor z, double eps,
                        std::optional<int64_t> group_size, bool norm_before_gate, bool is_rms_norm,
                        c10::string_view activation) {
  GN_REQUIRE(x.dim() >= 1, "x must have at least one dimension");
  Tensor out = at::empty(x.sizes(), x.options());
  forward_into(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation, out,
               x.size(x.dim() - 1), false);
  return out;
}

namespace {

// out's row stride, after the checks of a forward written into `out`.
int64_t out_row_stride(const Tensor& x, const OptTensor& z, const Tensor& out) {
  GN_REQUIRE(x.dim() >= 1, "x must have at least one dimension");
  check_like_x(x, out, "out");
  check_no_overlap(out, "out", x, "x", true);  // out = x: in place (docs/api.md)
  if (z) check_no_overlap(out, "out", *z, "z", false);
  const int64_t n = x.size(x.dim() - 1);
  return output_rows(out, "out", x.numel() / (n ? n : 1), n);
}

}  // namespace

std::tuple<Tensor, Tensor> gated_norm_fwd_out(Tensor x, OptTensor weight, OptTensor bias, OptTensor z, double eps,
                                              std::optional<int64_t> group_size, bool norm_before_gate,
                                              bool is_rms_norm, c10::string_view activation, Tensor out) {
  const int64_t s = out_row_stride(x, z, out);
  return forward_into(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation, out, s,
                      true);
}

void gated_norm_infer_out(const Tensor& x, const OptTensor& weight, const OptTensor& bias, const OptTensor& z,
                          double eps, std::optional<int64_t> group_size, bool norm_before_gate, bool is_rms_norm,
                          c10::string_view activation, const Tensor& out) {
  const int64_t s = out_row_stride(x, z, out);
  forward_into(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation, out, s, false);
}

namespace {

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
  const OptTensor w = contiguous_param(weight), b = contiguous_param(bias);
  set_inputs(a, x, z, w, b);
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

}  // namespace

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
  const std::pair<const OptTensor, const char*> written[] = {{dx, "dx"}, {dz, "dz"}, {out, "out"}, {dw, "dw"},
                                                             {db, "db"}};
  const std::pair<const OptTensor, const char*> read[] = {{dy, "dy"},     {x, "x"},       {weight, "weight"},
                                                          {bias, "bias"}, {z, "z"},       {mean, "mean"},
                                                          {rstd, "rstd"}};
  for (size_t i = 0; i < std::size(written); ++i) {
    if (!written[i].first) continue;
    for (const auto& [t, name] : read)
      if (t) check_no_overlap(*written[i].first, written[i].second, *t, name, false);
    for (size_t j = i + 1; j < std::size(written); ++j)
      if (written[j].first)
        check_no_overlap(*written[i].first, written[i].second, *written[j].first, written[j].second, false);
  }
  backward_into(dy, x, weight, bias, z, mean, rstd, eps, group_size, norm_before_gate, is_rms_norm, activation, o);
}

}  // namespace gn_shim
