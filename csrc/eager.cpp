// The Python module torch_ops._C and its direct eager entry points.
//
// A decode step pays the host time of every norm call. Calling a `torch.ops` op
// from Python costs ~1.3 us on top of the work itself (measured: docs/design.md,
// "Host time per eager call"): the nine Python arguments matched against the
// schema and boxed, the dispatcher's key computation, the unboxing. The functions
// here take the op's arguments positionally and call the same C++ implementation
// (shim_ops.h) directly -- but only when nothing could observe the difference:
//
//   - every tensor argument is exactly a torch.Tensor or nn.Parameter (a subclass
//     may define __torch_function__ / __torch_dispatch__) whose dispatch keys are
//     those of a plain dense CPU or CUDA tensor (not meta, sparse, a conj/neg view,
//     a functorch or functional wrapper);
//   - no TorchFunctionMode is active and no mode force-includes a dispatch key
//     (TorchDispatchMode, FakeTensorMode, make_fx, functionalization, vmap, tracing);
//   - no RecordFunction callback is registered (the profiler records ops through
//     the dispatcher; with one, the op is called and shows up in the trace);
//   - under grad mode, no tensor argument requires grad (such calls need the op's
//     autograd kernel, or its error), and none carries a forward-mode AD tangent;
//   - every other argument has the exact Python type its schema names (float, int
//     or None, bool, str): anything else the schema would convert or reject.
//
// Otherwise they return NotImplemented and the Python caller calls the op. Errors
// raised by the implementation are the op's own (RuntimeError, "gatednorm: ...").
#include <Python.h>

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/grad_mode.h>
#include <ATen/record_function.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <type_traits>

#include "shim_ops.h"

namespace {

using at::Tensor;
using c10::DispatchKey;
using c10::DispatchKeySet;

// The keys a plain dense CPU / CUDA tensor carries (autocast and autograd keys are
// on every tensor; autocast has no kernel for these ops: a fallthrough).
bool plain_keys(const Tensor& t) {
  static const DispatchKeySet plain =
      DispatchKeySet({DispatchKey::CPU, DispatchKey::CUDA, DispatchKey::AutogradCPU, DispatchKey::AutogradCUDA,
                      DispatchKey::ADInplaceOrView, DispatchKey::AutocastCPU, DispatchKey::AutocastCUDA});
  // Raw bits: DispatchKeySet's operator- keeps the backend bits (a meta tensor's too).
  return (t.key_set().raw_repr() & ~plain.raw_repr()) == 0;
}

// Is this call free of modes, tracing and profiling (see the header comment)? The
// default TLS include set (BackendSelect, ADInplaceOrView) is there in every call.
bool no_interposer() {
  const DispatchKeySet forced = c10::impl::tls_local_dispatch_key_set().included_ - c10::default_included_set;
  return forced.empty() && !at::impl::torch_function_mode_enabled() && !at::hasCallbacks();
}

// Argument readers: true when `o` has the exact type the schema names (the value is
// stored), false when the op call must decide.
struct Reader {
  bool grad = at::GradMode::is_enabled();

  bool tensor(PyObject* o, const Tensor*& out) const {
    if (!THPVariable_CheckExact(o)) return false;
    out = &THPVariable_Unpack(o);
    // (a tangent of forward-mode AD: no formula here; the Python caller handles it)
    return plain_keys(*out) && !(grad && out->requires_grad()) && !out->_fw_grad(0).defined();
  }
  bool opt_tensor(PyObject* o, std::optional<Tensor>& out) const {
    if (o == Py_None) return true;
    const Tensor* t = nullptr;
    if (!tensor(o, t)) return false;
    out = *t;
    return true;
  }
  static bool real(PyObject* o, double& out) {
    if (!PyFloat_CheckExact(o)) return false;
    out = PyFloat_AS_DOUBLE(o);
    return true;
  }
  static bool opt_int(PyObject* o, std::optional<int64_t>& out) {
    if (o == Py_None) return true;
    if (!PyLong_CheckExact(o)) return false;
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow) return false;
    out = v;
    return true;
  }
  static bool flag(PyObject* o, bool& out) {
    if (o != Py_True && o != Py_False) return false;
    out = o == Py_True;
    return true;
  }
  static bool text(PyObject* o, c10::string_view& out) {
    if (!PyUnicode_CheckExact(o)) return false;
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(o, &n);
    if (!s) {
      PyErr_Clear();
      return false;
    }
    out = c10::string_view(s, (size_t)n);
    return true;
  }
};

bool arity(const char* name, Py_ssize_t got, Py_ssize_t want) {
  if (got == want) return true;
  PyErr_Format(PyExc_TypeError, "torch_ops._C.%s takes %zd positional arguments (%zd given)", name, want, got);
  return false;
}

// The GIL is released while the implementation runs, as the op call does.
struct NoGil {
  PyThreadState* state = PyEval_SaveThread();
  ~NoGil() { PyEval_RestoreThread(state); }
};

PyObject* wrap(Tensor t) { return THPVariable_Wrap(std::move(t)); }
PyObject* wrap(std::tuple<Tensor, Tensor> ts) {
  PyObject* a = wrap(std::move(std::get<0>(ts)));
  PyObject* b = a ? wrap(std::move(std::get<1>(ts))) : nullptr;
  PyObject* tuple = b ? PyTuple_Pack(2, a, b) : nullptr;
  Py_XDECREF(a);
  Py_XDECREF(b);
  return tuple;
}

// Runs the implementation without the GIL; -> its result as Python objects (None
// for none), or nullptr with the Python exception the op call would raise set.
template <typename F>
PyObject* run(F&& impl) {
  HANDLE_TH_ERRORS
  if constexpr (std::is_void_v<decltype(impl())>) {
    {
      NoGil no_gil;
      impl();
    }
    Py_RETURN_NONE;
  } else {
    decltype(impl()) result;
    {
      NoGil no_gil;
      result = impl();
    }
    return wrap(std::move(result));
  }
  END_HANDLE_TH_ERRORS
}

// The gated forward's arguments: x, weight, bias, z, eps, group_size, norm_before_gate,
// is_rms_norm, activation (gated_norm_infer's schema; the _out form adds out).
struct GatedArgs {
  const Tensor* x = nullptr;
  std::optional<Tensor> w, b, z;
  double eps = 0;
  std::optional<int64_t> group_size;
  bool norm_before_gate = false, is_rms_norm = false;
  c10::string_view activation;

  bool read(const Reader& r, PyObject* const* a) {
    return r.tensor(a[0], x) && r.opt_tensor(a[1], w) && r.opt_tensor(a[2], b) && r.opt_tensor(a[3], z) &&
           r.real(a[4], eps) && r.opt_int(a[5], group_size) && r.flag(a[6], norm_before_gate) &&
           r.flag(a[7], is_rms_norm) && r.text(a[8], activation);
  }
};

// gated_norm_infer(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation) -> Tensor
PyObject* gated_norm_infer(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!arity("gated_norm_infer", nargs, 9)) return nullptr;
  GatedArgs g;
  if (!(no_interposer() && g.read(Reader{}, args))) Py_RETURN_NOTIMPLEMENTED;
  return run([&] {
    return gn_shim::gated_norm_infer(*g.x, g.w, g.b, g.z, g.eps, g.group_size, g.norm_before_gate, g.is_rms_norm,
                                     g.activation);
  });
}

// ADInplaceOrView would run for an op on these tensors (the op's kernel there bumps the
// version counters of what it writes: csrc/shim.cpp).
bool bumps_versions(std::initializer_list<const Tensor*> ts) {
  const auto tls = c10::impl::tls_local_dispatch_key_set();
  DispatchKeySet ks = tls.included_;
  for (const Tensor* t : ts)
    if (t && t->defined()) ks = ks | t->key_set();
  return (ks - tls.excluded_).has(DispatchKey::ADInplaceOrView);
}

// gated_norm_infer_out(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm, activation, out)
// -> None: gated_norm_fwd_out's out (x itself allowed: in place) without the statistics.
// The caller's fallback is that op, whose results for out are the same.
PyObject* gated_norm_infer_out(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!arity("gated_norm_infer_out", nargs, 10)) return nullptr;
  const Reader r;
  GatedArgs g;
  const Tensor* out = nullptr;
  if (!(no_interposer() && g.read(r, args) && r.tensor(args[9], out))) Py_RETURN_NOTIMPLEMENTED;
  const bool bump = bumps_versions({g.x, out, g.w ? &*g.w : nullptr, g.b ? &*g.b : nullptr, g.z ? &*g.z : nullptr});
  return run([&] {
    if (bump) torch::autograd::impl::bump_version(*out);
    gn_shim::gated_norm_infer_out(*g.x, g.w, g.b, g.z, g.eps, g.group_size, g.norm_before_gate, g.is_rms_norm,
                                  g.activation, *out);
  });
}

// rms_norm(input, weight, eps, gemma) -> Tensor
PyObject* rms_norm(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!arity("rms_norm", nargs, 4)) return nullptr;
  Reader r;
  const Tensor* x = nullptr;
  std::optional<Tensor> w;
  double eps = 0;
  bool gemma = false;
  if (!(no_interposer() && r.tensor(args[0], x) && r.opt_tensor(args[1], w) && r.real(args[2], eps) &&
        r.flag(args[3], gemma)))
    Py_RETURN_NOTIMPLEMENTED;
  return run([&] { return gn_shim::rms_norm(*x, w, eps, gemma); });
}

// fused_add_rms_norm(input, residual, weight, eps, gemma) -> None, in place. The op's
// ADInplaceOrView kernel bumps the version counters of input and residual whenever
// the dispatcher would run it (csrc/shim.cpp): the same here, before the write.
PyObject* fused_add_rms_norm(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!arity("fused_add_rms_norm", nargs, 5)) return nullptr;
  Reader r;
  const Tensor *x = nullptr, *res = nullptr;
  std::optional<Tensor> w;
  double eps = 0;
  bool gemma = false;
  if (!(no_interposer() && r.tensor(args[0], x) && r.tensor(args[1], res) && r.opt_tensor(args[2], w) &&
        r.real(args[3], eps) && r.flag(args[4], gemma)))
    Py_RETURN_NOTIMPLEMENTED;
  const bool bump = bumps_versions({x, res, w ? &*w : nullptr});
  return run([&] {
    if (bump) {  // (an inference tensor raises here, as in the op)
      torch::autograd::impl::bump_version(*x);
      torch::autograd::impl::bump_version(*res);
    }
    gn_shim::fused_add_rms_norm(*x, *res, w, eps, gemma);
  });
}

// add_rms_norm_infer(x, residual, weight, eps, residual_in_fp32, gemma) -> (out, residual_out)
PyObject* add_rms_norm_infer(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!arity("add_rms_norm_infer", nargs, 6)) return nullptr;
  Reader r;
  const Tensor *x = nullptr, *res = nullptr;
  std::optional<Tensor> w;
  double eps = 0;
  bool residual_in_fp32 = false, gemma = false;
  if (!(no_interposer() && r.tensor(args[0], x) && r.tensor(args[1], res) && r.opt_tensor(args[2], w) &&
        r.real(args[3], eps) && r.flag(args[4], residual_in_fp32) && r.flag(args[5], gemma)))
    Py_RETURN_NOTIMPLEMENTED;
  return run([&] { return gn_shim::add_rms_norm_infer(*x, *res, w, eps, residual_in_fp32, gemma); });
}

#define GN_METHOD(name, op) \
  {#name, (PyCFunction)(void (*)(void))name, METH_FASTCALL, \
   "gatednorm::" op " without the dispatcher, or NotImplemented (csrc/eager.cpp)"}
PyMethodDef methods[] = {
    GN_METHOD(gated_norm_infer, "gated_norm_infer"),
    GN_METHOD(gated_norm_infer_out, "gated_norm_fwd_out (out only, no statistics)"),
    GN_METHOD(rms_norm, "rms_norm"),
    GN_METHOD(fused_add_rms_norm, "fused_add_rms_norm"),
    GN_METHOD(add_rms_norm_infer, "add_rms_norm_infer"),
    {nullptr, nullptr, 0, nullptr},
};
#undef GN_METHOD

}  // namespace

// `built_with_cuda` tells Python whether the CUDA kernels are in this build,
// `built_for_emulator` whether they are, compiled for the CPU emulator (a test build:
// they serve "cpu"; the tests name its kernels from its launch trace).
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  PyObject* m = PyModule_Create(&def);
#ifdef GN_WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
#ifdef GN_CUDA_EMU
  const long for_emulator = 1;
#else
  const long for_emulator = 0;
#endif
  if (m && (PyModule_AddIntConstant(m, "built_with_cuda", with_cuda) < 0 ||
            PyModule_AddIntConstant(m, "built_for_emulator", for_emulator) < 0)) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
