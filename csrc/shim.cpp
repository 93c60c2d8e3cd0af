// The op schemas of gatednorm, declared once, and their registrations. The C++
// around the kernels is this file, shim_common.h (argument checks, tensor -> C
// descriptor helpers), one shim_<family>.cpp per op family, and eager.cpp (the
// Python module, with direct entry points for the hot inference calls).
//
// Classic TORCH_LIBRARY registration, not the LibTorch stable ABI: with torch
// 2.11 (the GPU machines) any exception thrown by a stable-ABI kernel crashes
// the process (segfault in the dispatcher), so a bad argument could not become
// a Python error. docs/design.md records the experiment. Fake kernels and
// autograd live in Python (torch_ops/gated_norm.py); kernels live in csrc/cpu
// and csrc/cuda and never see a torch header.
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include "shim_common.h"
#include "shim_ops.h"

using namespace gn_shim;

TORCH_LIBRARY(gatednorm, m) {
  // gated_norm: the differentiable forward (autograd registered from Python);
  // gated_norm_fwd: the same computation with no autograd in the call path, for
  // inference (a Python autograd kernel costs ~20 us of host time per call);
  // gated_norm_infer: the same out without the statistics (none allocated), what
  // the Python functions call when no gradient is needed.
  m.def(
      "gated_norm(Tensor x, Tensor? weight, Tensor? bias, Tensor? z, float eps, int? group_size, "
      "bool norm_before_gate, bool is_rms_norm, str activation) -> (Tensor out, Tensor mean, Tensor rstd)");
  m.def(
      "gated_norm_fwd(Tensor x, Tensor? weight, Tensor? bias, Tensor? z, float eps, int? group_size, "
      "bool norm_before_gate, bool is_rms_norm, str activation) -> (Tensor out, Tensor mean, Tensor rstd)");
  m.def(
      "gated_norm_infer(Tensor x, Tensor? weight, Tensor? bias, Tensor? z, float eps, int? group_size, "
      "bool norm_before_gate, bool is_rms_norm, str activation) -> Tensor");
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

  // Fused add + RMSNorm (sgl-kernel / vLLM / FlashInfer contract; gemma: weight
  // applied as 1 + w). In place: residual <- input + residual, input <- norm.
  m.def("rms_norm(Tensor input, Tensor? weight, float eps, bool gemma=False) -> Tensor");
  m.def("rms_norm_out(Tensor input, Tensor? weight, float eps, Tensor(a!) out, bool gemma=False) -> ()");
  m.def("fused_add_rms_norm(Tensor(a!) input, Tensor(b!) residual, Tensor? weight, float eps, bool gemma=False) -> ()");
  // add_rms_norm: differentiable, out of place (autograd registered from Python);
  // add_rms_norm_infer: its (out, residual_out) with no autograd in the call path and
  // no rstd, for inference.
  m.def(
      "add_rms_norm(Tensor x, Tensor residual, Tensor? weight, float eps, bool residual_in_fp32=False, "
      "bool gemma=False) -> (Tensor out, Tensor residual_out, Tensor rstd)");
  m.def(
      "add_rms_norm_infer(Tensor x, Tensor residual, Tensor? weight, float eps, bool residual_in_fp32=False, "
      "bool gemma=False) -> (Tensor out, Tensor residual_out)");
  m.def(
      "add_rms_norm_bwd(Tensor dout, Tensor? dresidual_out, Tensor h, Tensor? weight, Tensor rstd, bool gemma)"
      " -> (Tensor dx, Tensor dresidual, Tensor? dw)");
}

// One implementation serves both devices: it reads the device off its tensors.
static void register_impls(torch::Library& m) {
  m.impl("gated_norm", &gated_norm_fwd);
  m.impl("gated_norm_fwd", &gated_norm_fwd);
  m.impl("gated_norm_infer", &gated_norm_infer);
  m.impl("gated_norm_fwd_out", &gated_norm_fwd_out);
  m.impl("gated_norm_bwd", &gated_norm_bwd);
  m.impl("gated_norm_bwd_out", &gated_norm_bwd_out);
  m.impl("rms_norm", &rms_norm);
  m.impl("rms_norm_out", &rms_norm_out);
  m.impl("fused_add_rms_norm", &fused_add_rms_norm);
  m.impl("add_rms_norm", &add_rms_norm);
  m.impl("add_rms_norm_infer", &add_rms_norm_infer);
  m.impl("add_rms_norm_bwd", &add_rms_norm_bwd);
}

TORCH_LIBRARY_IMPL(gatednorm, CPU, m) { register_impls(m); }
TORCH_LIBRARY_IMPL(gatednorm, CUDA, m) { register_impls(m); }

// The ops that write into their arguments (Tensor(a!) in the schema): ADInplaceOrView
// bumps those tensors' version counters first, as torch's in-place ops do, so autograd
// notices a tensor it saved being overwritten (and an inference tensor is refused
// outside inference mode before it is written); without a kernel there the dispatcher
// falls through and nothing is bumped. Autograd refuses, under grad mode, to write into
// a tensor that requires grad: these ops have no derivative and could not rebase its
// history (the differentiable forms are gated_norm and add_rms_norm). Other arguments
// requiring grad (a weight Parameter) are let through, as sgl-kernel's ops do: the
// written values carry no gradient.
static const char* const kMutatingOps[] = {"gated_norm_fwd_out", "gated_norm_bwd_out", "rms_norm_out",
                                           "fused_add_rms_norm"};

// "rms_norm" of "gatednorm::rms_norm" (fail() prefixes "gatednorm: ").
static std::string short_name(const c10::OperatorHandle& op) {
  const std::string& name = op.schema().name();
  return name.substr(name.find("::") + 2);
}

template <typename F>
static void for_each_written(const c10::OperatorHandle& op, const torch::jit::Stack* stack, F&& f) {
  const auto& args = op.schema().arguments();
  const size_t first = stack->size() - args.size();
  for (size_t i = 0; i < args.size(); ++i) {
    const auto* alias = args[i].alias_info();
    const c10::IValue& v = (*stack)[first + i];
    if (alias && alias->isWrite() && v.isTensor()) f(args[i].name(), v.toTensor());
  }
}

static void bump_written_versions(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
  for_each_written(op, stack, [](const std::string&, const at::Tensor& t) { torch::autograd::impl::bump_version(t); });
  at::AutoDispatchBelowADInplaceOrView guard;
  op.redispatchBoxed(ks & c10::after_ADInplaceOrView_keyset, stack);
}

static void refuse_written_requiring_grad(const c10::OperatorHandle& op, c10::DispatchKeySet ks,
                                          torch::jit::Stack* stack) {
  if (at::GradMode::is_enabled()) {
    for_each_written(op, stack, [&](const std::string& name, const at::Tensor& t) {
      if (t.requires_grad())
        fail(short_name(op), " writes into `", name, "`, which requires grad: it has no derivative; "
             "use the differentiable out-of-place op (gated_norm, add_rms_norm) or call it under "
             "torch.no_grad()");
    });
  }
  at::AutoDispatchBelowAutograd guard;
  op.redispatchBoxed(ks & c10::after_autograd_keyset, stack);
}

// The out-of-place ops without a derivative (the inference forms and the backward ops):
// without a kernel here torch's autograd fallback would give their outputs a grad_fn
// whose gradients are silently None (a warning at backward). Under grad mode an
// argument requiring grad is refused by name instead; the Python functions pick the
// differentiable op (gated_norm, add_rms_norm) or the reference when one is needed.
static const char* const kUndifferentiableOps[] = {"gated_norm_fwd", "gated_norm_infer", "gated_norm_bwd",
                                                   "rms_norm", "add_rms_norm_infer", "add_rms_norm_bwd"};

static void refuse_inputs_requiring_grad(const c10::OperatorHandle& op, c10::DispatchKeySet ks,
                                         torch::jit::Stack* stack) {
  if (at::GradMode::is_enabled()) {
    const auto& args = op.schema().arguments();
    const size_t first = stack->size() - args.size();
    for (size_t i = 0; i < args.size(); ++i) {
      const c10::IValue& v = (*stack)[first + i];
      if (v.isTensor() && v.toTensor().requires_grad())
        fail(short_name(op), ": `", args[i].name(), "` requires grad, and this op has no derivative; "
             "use the differentiable op (gated_norm, add_rms_norm; the torch_ops functions pick it when a "
             "gradient is needed) or call it under torch.no_grad()");
    }
  }
  at::AutoDispatchBelowAutograd guard;
  op.redispatchBoxed(ks & c10::after_autograd_keyset, stack);
}

TORCH_LIBRARY_IMPL(gatednorm, ADInplaceOrView, m) {
  for (const char* op : kMutatingOps) m.impl(op, torch::CppFunction::makeFromBoxedFunction<&bump_written_versions>());
}
TORCH_LIBRARY_IMPL(gatednorm, Autograd, m) {
  for (const char* op : kMutatingOps)
    m.impl(op, torch::CppFunction::makeFromBoxedFunction<&refuse_written_requiring_grad>());
  for (const char* op : kUndifferentiableOps)
    m.impl(op, torch::CppFunction::makeFromBoxedFunction<&refuse_inputs_requiring_grad>());
}
