// The op implementations registered in shim.cpp (one shim_<family>.cpp each).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace gn_shim {

using Tensor = at::Tensor;
using OptTensor = std::optional<at::Tensor>;

// gated RMSNorm / LayerNorm (shim_gated_norm.cpp)
std::tuple<Tensor, Tensor, Tensor> gated_norm_fwd(Tensor x, OptTensor weight, OptTensor bias, OptTensor z,
                                                  double eps, std::optional<int64_t> group_size,
                                                  bool norm_before_gate, bool is_rms_norm,
                                                  c10::string_view activation);
Tensor gated_norm_infer(Tensor x, OptTensor weight, OptTensor bias, OptTensor z, double eps,
                        std::optional<int64_t> group_size, bool norm_before_gate, bool is_rms_norm,
                        c10::string_view activation);
std::tuple<Tensor, Tensor> gated_norm_fwd_out(Tensor x, OptTensor weight, OptTensor bias, OptTensor z, double eps,
                                              std::optional<int64_t> group_size, bool norm_before_gate,
                                              bool is_rms_norm, c10::string_view activation, Tensor out);
// gated_norm_fwd_out's out without the statistics: no op of its own, only the direct
// entry point of csrc/eager.cpp calls it (its op fallback is gated_norm_fwd_out).
void gated_norm_infer_out(const Tensor& x, const OptTensor& weight, const OptTensor& bias, const OptTensor& z,
                          double eps, std::optional<int64_t> group_size, bool norm_before_gate, bool is_rms_norm,
                          c10::string_view activation, const Tensor& out);
std::tuple<Tensor, OptTensor, OptTensor, OptTensor, OptTensor> gated_norm_bwd(
    Tensor dy, Tensor x, OptTensor weight, OptTensor bias, OptTensor z, Tensor mean, Tensor rstd, double eps,
    std::optional<int64_t> group_size, bool norm_before_gate, bool is_rms_norm, c10::string_view activation,
    bool recompute_output);
void gated_norm_bwd_out(Tensor dy, Tensor x, OptTensor weight, OptTensor bias, OptTensor z, Tensor mean,
                        Tensor rstd, double eps, std::optional<int64_t> group_size, bool norm_before_gate,
                        bool is_rms_norm, c10::string_view activation, Tensor dx, OptTensor dz, OptTensor out,
                        OptTensor dw, OptTensor db);

// fused add + RMSNorm (shim_add_rms_norm.cpp)
Tensor rms_norm(Tensor input, OptTensor weight, double eps, bool gemma);
void rms_norm_out(Tensor input, OptTensor weight, double eps, Tensor out, bool gemma);
void fused_add_rms_norm(Tensor input, Tensor residual, OptTensor weight, double eps, bool gemma);
std::tuple<Tensor, Tensor, Tensor> add_rms_norm(Tensor x, Tensor residual, OptTensor weight, double eps,
                                                bool residual_in_fp32, bool gemma);
std::tuple<Tensor, Tensor> add_rms_norm_infer(Tensor x, Tensor residual, OptTensor weight, double eps,
                                              bool residual_in_fp32, bool gemma);
std::tuple<Tensor, Tensor, OptTensor> add_rms_norm_bwd(Tensor dout, OptTensor dresidual_out, Tensor h,
                                                       OptTensor weight, Tensor rstd, bool gemma);

}  // namespace gn_shim
