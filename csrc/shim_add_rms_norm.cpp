// Fused add + RMSNorm ops (schemas in shim.cpp): checks, descriptors, dispatch.
// Semantics: csrc/gatednorm.h ("Fused add + RMSNorm").
#include "shim_common.h"
#include "shim_ops.h"

namespace gn_shim {
namespace {

gn_dtype float_dtype(const Tensor& t, const char* name) {
  auto d = to_gn_dtype(t.scalar_type());
  GN_REQUIRE(d, name, " must be float16, bfloat16, float32 or float64, got ", dtype_name(t.scalar_type()));
  return *d;
}

void check_same_shape(const Tensor& ref, const char* ref_name, const Tensor& t, const char* name) {
  GN_REQUIRE(same_device(ref, t), name, " is on ", device_str(t), " but ", ref_name, " is on ", device_str(ref));
  bool same = t.dim() == ref.dim();
  for (int64_t i = 0; same && i < ref.dim(); ++i) same = t.size(i) == ref.size(i);
  GN_REQUIRE(same, name, " must have ", ref_name, "'s shape ", shape_str(ref), ", got ", shape_str(t));
}

// Bytes [first, last) that rows of a [m, n] view with row stride s touch.
std::pair<uintptr_t, uintptr_t> span(const Tensor& t, int64_t m, int64_t n, int64_t s) {
  const uintptr_t p = reinterpret_cast<uintptr_t>(t.data_ptr());
  return {p, p + (uintptr_t)(((m - 1) * s + n) * (int64_t)t.element_size())};
}

gn_addnorm_config make_config(const Tensor& x, const Tensor& residual, const OptTensor& weight, double eps,
                              bool gemma, const char* x_name, const char* residual_name) {
  GN_REQUIRE(x.is_cpu() || x.is_cuda(), x_name, " must be on a CPU or CUDA device, got ", device_str(x));
  GN_REQUIRE(x.dim() >= 1, x_name, " must have at least one dimension");
  const int64_t n = x.size(x.dim() - 1);
  GN_REQUIRE(n > 0, x_name, "'s last dimension must be > 0, got shape ", shape_str(x));
  GN_REQUIRE(eps >= 0 && std::isfinite(eps), "eps must be a finite number >= 0, got ", eps);
  gn_addnorm_config c{};
  c.dtype = float_dtype(x, x_name);
  c.residual_dtype = float_dtype(residual, residual_name);
  if (&x != &residual) check_same_shape(x, x_name, residual, residual_name);
  if (weight) check_param(x, *weight, "weight", n);
  c.param_dtype = weight ? *to_gn_dtype(weight->scalar_type()) : c.dtype;
  c.rows = x.numel() / n;
  c.cols = n;
  c.eps = eps;
  c.gemma = gemma;
  return c;
}

ScalarType stat_type(const gn_addnorm_config& c) {
  return c.dtype == GN_FLOAT64 ? ScalarType::Double : ScalarType::Float;
}

void run_fwd(const Tensor& dev, const gn_addnorm_fwd_args& a) {
  if (a.cfg.rows == 0) return;
  if (dev.is_cpu()) return check_status(gn_cpu_addnorm_fwd(&a), false);
#ifdef GN_WITH_CUDA
  CudaContext ctx(dev);
  check_status(gn_cuda_addnorm_fwd(&a, ctx.stream), true);
#else
  no_cuda();
#endif
}

size_t bwd_workspace_bytes(const Tensor& dev, const gn_addnorm_config& c) {
  if (dev.is_cpu()) return gn_cpu_addnorm_bwd_workspace_bytes(&c);
#ifdef GN_WITH_CUDA
  c10::DeviceGuard guard(dev.device());
  return gn_cuda_addnorm_bwd_workspace_bytes(&c);
#else
  no_cuda();
#endif
}

void run_bwd(const Tensor& dev, const gn_addnorm_bwd_args& a) {
  if (dev.is_cpu()) return check_status(gn_cpu_addnorm_bwd(&a), false);
#ifdef GN_WITH_CUDA
  CudaContext ctx(dev);
  check_status(gn_cuda_addnorm_bwd(&a, ctx.stream), true);
#else
  no_cuda();
#endif
}

// In place or out of place, every output is addressed by rows.
void forward(const gn_addnorm_config& c, const Tensor& dev, const Tensor* x, const Tensor& residual,
             const Tensor* residual_out, const OptTensor& weight, const Tensor& out, const Tensor* rstd) {
  gn_addnorm_fwd_args a{};
  a.cfg = c;
  std::optional<Rows> xr;
  if (x) xr = input_rows(*x);
  Rows rr = input_rows(residual);
  a.x = xr ? xr->t.data_ptr() : nullptr;
  a.x_stride = xr ? xr->stride : 0;
  a.residual = rr.t.data_ptr();
  a.residual_stride = rr.stride;
  if (residual_out) {
    a.residual_out = residual_out->data_ptr();
    a.residual_out_stride = output_rows(*residual_out, "residual", c.rows, c.cols);
  }
  const OptTensor w = contiguous_param(weight);
  a.weight = ptr_or_null(w);
  a.out = out.data_ptr();
  a.out_stride = output_rows(out, "out", c.rows, c.cols);
  a.rstd = rstd ? rstd->data_ptr() : nullptr;
  run_fwd(dev, a);
}

}  // namespace

Tensor rms_norm(Tensor input, OptTensor weight, double eps, bool gemma) {
  gn_addnorm_config c = make_config(input, input, weight, eps, gemma, "input", "input");
  Tensor out = at::empty(input.sizes(), input.options());
  forward(c, input, nullptr, input, nullptr, weight, out, nullptr);
  return out;
}

void rms_norm_out(Tensor input, OptTensor weight, double eps, Tensor out, bool gemma) {
  gn_addnorm_config c = make_config(input, input, weight, eps, gemma, "input", "input");
  check_same_shape(input, "input", out, "out");
  GN_REQUIRE(out.scalar_type() == input.scalar_type(), "out must have input's dtype ",
             dtype_name(input.scalar_type()), ", got ", dtype_name(out.scalar_type()));
  check_no_overlap(out, "out", input, "input", true);  // out = input: in place (docs/api.md)
  forward(c, input, nullptr, input, nullptr, weight, out, nullptr);
}

void fused_add_rms_norm(Tensor input, Tensor residual, OptTensor weight, double eps, bool gemma) {
  gn_addnorm_config c = make_config(input, residual, weight, eps, gemma, "input", "residual");
  if (c.rows == 0) return;
  // Both are written in place, so both must be addressable by rows, and they
  // must not overlap: the sum written into residual would corrupt input.
  const int64_t si = output_rows(input, "input", c.rows, c.cols);
  const int64_t sr = output_rows(residual, "residual", c.rows, c.cols);
  auto [i0, i1] = span(input, c.rows, c.cols, si);
  auto [r0, r1] = span(residual, c.rows, c.cols, sr);
  GN_REQUIRE(i1 <= r0 || r1 <= i0, "input and residual must not share memory (they are both written)");
  forward(c, input, &input, residual, &residual, weight, input, nullptr);
}

namespace {

// (out, residual_out) and, with `stats`, rstd (without: not allocated, not stored).
std::tuple<Tensor, Tensor, Tensor> add_rms_norm_impl(const Tensor& x, const Tensor& residual,
                                                     const OptTensor& weight, double eps, bool residual_in_fp32,
                                                     bool gemma, bool stats) {
  gn_addnorm_config c = make_config(x, residual, weight, eps, gemma, "x", "residual");
  // The kernels read and write the residual stream in one dtype. With
  // residual_in_fp32 the stream is fp32 from the second layer on; only a first
  // layer fed a half-precision residual pays for this conversion.
  Tensor res = residual_in_fp32 && residual.scalar_type() != ScalarType::Float ? residual.to(ScalarType::Float)
                                                                             : residual;
  c.residual_dtype = *to_gn_dtype(res.scalar_type());
  Tensor out = at::empty(x.sizes(), x.options());
  Tensor residual_out = at::empty(x.sizes(), res.options());
  Tensor rstd;
  if (stats) rstd = at::empty({c.rows}, x.options().dtype(stat_type(c)));
  forward(c, x, &x, res, &residual_out, weight, out, stats ? &rstd : nullptr);
  return {out, residual_out, rstd};
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> add_rms_norm(Tensor x, Tensor residual, OptTensor weight, double eps,
                                                bool residual_in_fp32, bool gemma) {
  return add_rms_norm_impl(x, residual, weight, eps, residual_in_fp32, gemma, true);
}

std::tuple<Tensor, Tensor> add_rms_norm_infer(Tensor x, Tensor residual, OptTensor weight, double eps,
                                              bool residual_in_fp32, bool gemma) {
  auto [out, residual_out, rstd] = add_rms_norm_impl(x, residual, weight, eps, residual_in_fp32, gemma, false);
  return {out, residual_out};
}

std::tuple<Tensor, Tensor, OptTensor> add_rms_norm_bwd(Tensor dout, OptTensor dresidual_out, Tensor h,
                                                       OptTensor weight, Tensor rstd, bool gemma) {
  gn_addnorm_config c = make_config(dout, h, weight, 0.0, gemma, "dout", "h");
  if (dresidual_out) {
    check_same_shape(h, "h", *dresidual_out, "dresidual_out");
    GN_REQUIRE(dresidual_out->scalar_type() == h.scalar_type(), "dresidual_out must have h's dtype ",
               dtype_name(h.scalar_type()), ", got ", dtype_name(dresidual_out->scalar_type()));
  }
  GN_REQUIRE(same_device(h, rstd), "rstd is on ", device_str(rstd), " but h is on ", device_str(h));
  GN_REQUIRE(rstd.scalar_type() == stat_type(c) && rstd.dim() == 1 && rstd.size(0) == c.rows && rstd.is_contiguous(),
             "rstd must be a contiguous ", dtype_name(stat_type(c)), " tensor of shape [", c.rows,
             "] (as returned by add_rms_norm), got ", dtype_name(rstd.scalar_type()), " ", shape_str(rstd));
  Tensor dx = at::empty(dout.sizes(), dout.options());
  Tensor dres = at::empty(h.sizes(), h.options());
  OptTensor dw;
  if (weight) dw = at::empty({c.cols}, weight->options());
  if (c.rows == 0) {
    if (dw) dw->zero_();
    return {dx, dres, dw};
  }
  Rows hr = input_rows(h), dr = input_rows(dout);
  std::optional<Rows> drr;
  if (dresidual_out) drr = input_rows(*dresidual_out);
  Tensor ws = at::empty({(int64_t)bwd_workspace_bytes(h, c)}, h.options().dtype(ScalarType::Byte));
  gn_addnorm_bwd_args a{};
  a.cfg = c;
  a.h = hr.t.data_ptr();
  a.h_stride = hr.stride;
  const OptTensor w = contiguous_param(weight);
  a.weight = ptr_or_null(w);
  a.rstd = rstd.data_ptr();
  a.dout = dr.t.data_ptr();
  a.dout_stride = dr.stride;
  a.dresidual_out = drr ? drr->t.data_ptr() : nullptr;
  a.dresidual_out_stride = drr ? drr->stride : 0;
  a.dx = dx.data_ptr();
  a.dx_stride = c.cols;
  a.dresidual = dres.data_ptr();
  a.dresidual_stride = c.cols;
  a.dw = dw ? dw->data_ptr() : nullptr;
  a.workspace = ws.data_ptr();
  run_bwd(h, a);
  return {dx, dres, dw};
}

}  // namespace gn_shim
