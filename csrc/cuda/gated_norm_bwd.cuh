// Gated norm backward: the per-row and per-element pieces shared by the register
// kernel (gated_norm_bwd.cu) and the loop kernel (gated_norm_bwd_loop.cu).
#pragma once

#include "common.cuh"
#include "plan.h"

namespace gn {

template <typename T>
struct BwdRow {
  const T* x;
  const T* z;
  const T* dy;
  T* dx;
  T* dz;
  T* out;
};

template <typename T>
__device__ __forceinline__ BwdRow<T> bwd_row(const gn_bwd_args& a, int64_t r, int64_t col0) {
  BwdRow<T> p;
  p.x = static_cast<const T*>(a.x) + r * a.x_stride + col0;
  p.z = a.z ? static_cast<const T*>(a.z) + r * a.z_stride + col0 : nullptr;
  p.dy = static_cast<const T*>(a.dy) + r * a.dy_stride + col0;
  p.dx = static_cast<T*>(a.dx) + r * a.dx_stride + col0;
  p.dz = a.z ? static_cast<T*>(a.dz) + r * a.dz_stride + col0 : nullptr;
  p.out = a.out ? static_cast<T*>(a.out) + r * a.out_stride + col0 : nullptr;
  return p;
}

// The per-element part shared by both paths. In: the activation (a literal where the
// caller specialises on it), x, z (raw), dy, w, b, the statistics. Out: dy0 (gradient
// w.r.t. the affine output before the gate), vhat, act(z), act'(z), and y (the forward
// output, for recompute) / dz for a gate after the norm.
template <typename A>
struct Elem {
  A vhat, dy0, az, daz, y, dz_after;
};

template <typename A>
__device__ __forceinline__ Elem<A> elem_grad(gn_act act, bool gate, bool after, A x, A z, A dy, A w, A b, A mean,
                                             A rstd) {
  Elem<A> e;
  e.az = A(1);
  e.daz = A(0);
  if (gate) act_fwd_bwd(z, act, e.az, e.daz);
  const bool before = gate && !after;
  const A v = before ? x * e.az : x;
  e.vhat = (v - mean) * rstd;
  const A y0 = e.vhat * w + b;
  e.y = after ? y0 * e.az : y0;
  e.dz_after = after ? dy * y0 * e.daz : A(0);
  e.dy0 = after ? dy * e.az : dy;
  return e;
}

// dx and dz of one element once the group sums c1 = mean(vhat*w*dy0) and
// c2 = mean(w*dy0) (LayerNorm only) are known.
template <typename A>
__device__ __forceinline__ void input_grads(bool gate, bool after, const Elem<A>& e, A x, A w, A c1, A c2, A rstd,
                                            A& dx, A& dz) {
  const A dv = (w * e.dy0 - e.vhat * c1 - c2) * rstd;
  if (gate && !after) {
    dx = dv * e.az;
    dz = dv * x * e.daz;
  } else {
    dx = dv;
    dz = e.dz_after;
  }
}

template <typename A>
__device__ __forceinline__ void load_stats(const gn_bwd_args& a, int64_t g, int64_t r, A& mean, A& rstd) {
  const int64_t i = g * a.cfg.rows + r;
  mean = a.cfg.is_rms_norm ? A(0) : static_cast<const A*>(a.mean)[i];
  rstd = static_cast<const A*>(a.rstd)[i];
}

// Bytes of a row of x, dy (and z) staged by the loop path, rounded to 16 (its dw/db
// sums follow them in shared memory).
template <typename T>
__host__ __device__ inline size_t bwd_loop_stage_bytes(int64_t G, bool gate) {
  return ((size_t)G * sizeof(T) * (gate ? 3 : 2) + 15) / 16 * 16;
}

// The loop path (groups too long for the register path): one block per (row,
// group); see gated_norm_bwd_loop.cu. `parts` gets the number of dw/db partials it
// writes (its grid.y, at most p.grid.y).
gn_status launch_bwd_loop(const gn_bwd_args& a, const Plan& p, cudaStream_t s, unsigned& parts);
// The wide path (few rows of very wide groups, bwd_wide_layout; gated_norm_bwd_wide.cu):
// its dw/db partials are the workspace's first w.row_splits rows (launch_reduce's layout),
// the row sums after them; it needs a.workspace even without dw and db.
gn_status launch_bwd_wide(const gn_bwd_args& a, bool aligned, const WideBwd& w, const DeviceInfo& dev,
                          cudaStream_t s);
size_t bwd_wide_workspace_bytes(const gn_config& c, const WideBwd& w);
// The loop path on aligned rows, staged by cp.async (gated_norm_bwd_loop_async.cu).
gn_status launch_bwd_loop_async(const gn_bwd_args& a, const Plan& p, cudaStream_t s, unsigned& parts);

}  // namespace gn
