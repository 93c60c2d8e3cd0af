/*
 * Type-generic body of the CPU kernels; included only by gated_norm.c, once
 * per accumulation type, with:
 *   GN_T           float or double (the accumulation and statistics type)
 *   GN_SUF         suffix of the generated names (f32 / f64)
 *   GN_EXP_NONPOS  exp for arguments <= 0
 *   GN_SQRT        sqrt in GN_T
 *   GN_DT          the gn_dtype of GN_T
 *   GN_VEC_ATTR    attributes of the per-thread bodies (multiversioning; their
 *                  helpers are GN_INLINE, so they are built for each copy's ISA)
 * (after common.h).
 */
#define GN_CAT_(a, b) a##_##b
#define GN_CAT(a, b) GN_CAT_(a, b)
#define FN(name) GN_CAT(name, GN_SUF)
#define LOAD FN(load)
#define STORE FN(store)

#include "common_impl.h" /* sum_sq_dev, reduce_chunks */

/* sigmoid via exp(-|z|) <= 1, which never overflows; NaN propagates. */
static GN_INLINE GN_T FN(sigmoid)(GN_T z) {
  const GN_T t = GN_EXP_NONPOS(z < 0 ? z : -z);
  return (z >= 0 ? (GN_T)1 : t) / ((GN_T)1 + t);
}

/* act(z); `silu` is a constant where this is inlined (callers branch outside loops). */
static GN_INLINE GN_T FN(act1)(GN_T z, int silu) {
  const GN_T s = FN(sigmoid)(z);
  return silu ? z * s : s;
}

/* act(z) and act'(z): silu' = s*(1 + z*(1-s)), sigmoid' = s*(1-s). */
static GN_INLINE void FN(act2)(GN_T z, int silu, GN_T* act, GN_T* dact) {
  const GN_T s = FN(sigmoid)(z);
  *act = silu ? z * s : s;
  *dact = silu ? s * ((GN_T)1 + z * ((GN_T)1 - s)) : s * ((GN_T)1 - s);
}

/* weight / bias as GN_T arrays of cols (ones / zeros when absent), in one
 * malloc'ed block the caller frees. */
static GN_T* FN(params)(const gn_prob* p, const void* weight, const void* bias) {
  const int64_t n = p->cols;
  GN_T* wb = (GN_T*)malloc((size_t)n * 2 * sizeof(GN_T));
  int64_t j;
  if (wb == NULL) return NULL;
  if (weight != NULL) {
    LOAD(wb, weight, p->pdt, n);
  } else {
    for (j = 0; j < n; j++) wb[j] = 1;
  }
  if (bias != NULL) {
    LOAD(wb + n, bias, p->pdt, n);
  } else {
    for (j = 0; j < n; j++) wb[n + j] = 0;
  }
  return wb;
}

/* ------------------------------------------------------------------------ */
/* o = ((v - mu)*rstd*w + b) (*act(z)); `gate` and `plain` are constants after
 * inlining. plain (RMSNorm, no bias) leaves out "- 0" and "+ 0", which cost ~2 of
 * the ~12 ops an element of the ungated loop and change no value but -0's sign. */
static GN_INLINE void FN(fwd_out)(GN_T* o, const GN_T* v, const GN_T* z, const GN_T* w, const GN_T* b, GN_T mu,
                                  GN_T rstd, int64_t n, int gate, int plain) {
  int64_t j;
  GN_PRAGMA(omp simd)
  for (j = 0; j < n; j++) {
    GN_T y = plain ? v[j] * rstd * w[j] : (v[j] - mu) * rstd * w[j] + b[j];
    if (gate != GN_GATE_NONE) y *= FN(act1)(z[j], gate == GN_GATE_SILU);
    o[j] = y;
  }
}

/* Forward of one (row, group) item, in at most three sweeps over the group, all but
 * the first on data the first left in L1 / L2: v = x (or x*act(z) into X), the
 * statistics, and out = ((v - mu)*rstd*w + b) (*act(z)) straight into `out`. fp32
 * rows are read and written where they lie; other dtypes go through X / A (row_in).
 * out may be x itself (in-place forward): each element is read before it is written
 * at the same index, which `omp simd` vectorises without an overlap check. */
static GN_INLINE void FN(fwd_item)(const gn_prob* p, const gn_fwd_args* a, const GN_T* wb, GN_T* X, GN_T* A,
                                   int64_t r, int64_t g, GN_T* mu_out, GN_T* rstd_out) {
  const int64_t n = p->G, off = g * n;
  const GN_T inv_n = (GN_T)1 / (GN_T)n;
  const GN_T* w = wb + off;
  const GN_T* b = wb + p->cols + off;
  const int plain = p->is_rms && a->bias == NULL;
  const void* zrow = a->z != NULL ? gn_at(a->z, r * a->z_stride + off, p->esz) : NULL;
  void* orow = (void*)gn_at(a->out, r * a->out_stride + off, p->esz);
  const GN_T* v = FN(row_in)(gn_at(a->x, r * a->x_stride + off, p->esz), p->dt, X, n);
  GN_T* o = p->dt == GN_DT ? (GN_T*)orow : X;
  const GN_T* z;
  GN_T mu = 0, rstd;
  int64_t j;
  if (zrow != NULL && !p->norm_before_gate) { /* v = x*act(z), into X */
    z = FN(row_in)(zrow, p->dt, A, n);
    if (p->act == GN_ACT_SILU) {
      GN_PRAGMA(omp simd)
      for (j = 0; j < n; j++) X[j] = v[j] * FN(act1)(z[j], 1);
    } else {
      GN_PRAGMA(omp simd)
      for (j = 0; j < n; j++) X[j] = v[j] * FN(act1)(z[j], 0);
    }
    v = X;
  }
  if (!p->is_rms) {
    GN_LANE_SUM(GN_T, mu, n, i, v[i]);
    mu *= inv_n;
  }
  rstd = (GN_T)1 / GN_SQRT(FN(sum_sq_dev)(v, mu, n) * inv_n + (GN_T)p->eps);
  z = zrow != NULL && p->norm_before_gate ? FN(row_in)(zrow, p->dt, A, n) : NULL;
  if (z == NULL && plain)
    FN(fwd_out)(o, v, z, w, b, mu, rstd, n, GN_GATE_NONE, 1);
  else if (z == NULL)
    FN(fwd_out)(o, v, z, w, b, mu, rstd, n, GN_GATE_NONE, 0);
  else if (p->act == GN_ACT_SILU && plain)
    FN(fwd_out)(o, v, z, w, b, mu, rstd, n, GN_GATE_SILU, 1);
  else if (p->act == GN_ACT_SILU)
    FN(fwd_out)(o, v, z, w, b, mu, rstd, n, GN_GATE_SILU, 0);
  else if (plain)
    FN(fwd_out)(o, v, z, w, b, mu, rstd, n, GN_GATE_SIGMOID, 1);
  else
    FN(fwd_out)(o, v, z, w, b, mu, rstd, n, GN_GATE_SIGMOID, 0);
  if (o != orow) STORE(orow, o, p->dt, n);
  *mu_out = mu;
  *rstd_out = rstd;
}

/* One thread's share of the forward (items taken per_grab at a time): run by every
 * thread of the parallel region, or alone, outside any, when the problem is too
 * small for threads. An `omp parallel` disabled by its `if` still sets up a team of
 * one (~0.5-1 us a call, a third of a small eager call); the orphaned `omp for` and
 * barrier here cost ~0.1 us outside a region. */
GN_VEC_ATTR static void FN(fwd_team)(const gn_prob* p, const gn_fwd_args* a, const GN_T* wb, int64_t per_grab,
                                     int* failed) {
  const int64_t G = p->G, ng = p->ngroups, items = p->rows * ng;
  GN_T* mean = (GN_T*)a->mean;
  GN_T* rstd = (GN_T*)a->rstd;
  GN_T* X = (GN_T*)gn_thread_scratch((size_t)G * 2 * sizeof(GN_T), failed);
  int64_t i;
  (void)per_grab; /* unused without OpenMP */
  if (X != NULL) {
    GN_PRAGMA(omp for schedule(guided, per_grab))
    for (i = 0; i < items; i++) {
      const int64_t r = i / ng, g = i % ng;
      GN_T mu, rs;
      FN(fwd_item)(p, a, wb, X, X + G, r, g, &mu, &rs);
      if (mean != NULL) mean[g * p->rows + r] = mu;
      if (rstd != NULL) rstd[g * p->rows + r] = rs;
    }
  }
  free(X);
}

static gn_status FN(fwd)(const gn_prob* p, const gn_fwd_args* a) {
  const int64_t G = p->G, items = p->rows * p->ngroups;
  const int par = p->rows * p->cols >= GN_PAR_MIN_ELEMS && items > 1;
  /* Guided: each thread first takes a long run of consecutive rows (as a static
   * split would: schedule(dynamic) interleaving 64 KiB runs of the two threads was
   * 10-20% slower on 2 cores: 4096 x 1024 fp32 gated, 830 -> 700 us), then ever
   * shorter ones, down to per_grab, so a thread slowed down (shared machine) does
   * not hold the others up. No cross-item reduction: the order is irrelevant. */
  const int64_t per_grab = G >= 16384 ? 1 : 16384 / G;
  GN_T* wb = FN(params)(p, a->weight, a->bias);
  int failed = 0;
  if (wb == NULL) return GN_ERR_UNSUPPORTED;
  if (par) {
    GN_PRAGMA(omp parallel)
    FN(fwd_team)(p, a, wb, per_grab, &failed);
  } else {
    FN(fwd_team)(p, a, wb, per_grab, &failed);
  }
  free(wb);
  return failed ? GN_ERR_UNSUPPORTED : GN_OK;
}

/* ------------------------------------------------------------------------ */
/* Backward of one (row, group), in three sweeps over the group, only the first
 * reading the inputs and only the last (and the first, for dz after the norm and the
 * recomputed out) writing outputs; in between the row stays in L1 / L2:
 *   1. X = vhat, DY = dy0 (the gradient reaching the norm's output), A = act(z) and
 *      AP = x*act'(z) (gate before), dz (gate after), out; dw/db partials;
 *   2. c1 = sum(vhat*w*dy0), c2 = sum(w*dy0);
 *   3. dv = (w*dy0 - vhat*c1 - c2)*rstd; dx = dv (*act(z)), dz = dv*x*act'(z).
 * buf holds 5 rows of G: X, DY, A, AP, O. fp32 rows are read and written where they
 * lie; other dtypes are converted into and out of X, DY, A, AP, O. Writes go to the
 * index just read, so in-place conversions and `omp simd` are safe. */

/* Sweep 1 of the gated backward; `silu` and `plain` are constants after inlining
 * (plain: the output as fwd_out builds it, without "+ 0", so a recomputed out is
 * bitwise the forward's, signed zeros included). */
static GN_INLINE void FN(bwd_gated_in)(const gn_prob* p, const GN_T* x, const GN_T* dy, const GN_T* z,
                                       const GN_T* w, const GN_T* b, GN_T mu, GN_T rstd, GN_T* X, GN_T* DY,
                                       GN_T* A, GN_T* AP, GN_T* dz, GN_T* o, int silu, int plain) {
  const int64_t n = p->G;
  int64_t j;
  if (!p->norm_before_gate) { /* v = x*act(z); keep act(z), x*act'(z) for sweep 3 */
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) {
      GN_T s, ds;
      const GN_T xj = x[j];
      FN(act2)(z[j], silu, &s, &ds);
      A[j] = s;
      AP[j] = ds * xj;
      X[j] = (xj * s - mu) * rstd;
      if (o != NULL) o[j] = plain ? X[j] * w[j] : X[j] * w[j] + b[j];
    }
  } else { /* dz = dy*y0*act'(z), dy0 = dy*act(z) */
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) {
      GN_T s, ds;
      const GN_T vh = (x[j] - mu) * rstd, y0 = plain ? vh * w[j] : vh * w[j] + b[j], g = dy[j];
      FN(act2)(z[j], silu, &s, &ds);
      X[j] = vh;
      dz[j] = g * y0 * ds;
      if (o != NULL) o[j] = y0 * s;
      DY[j] = g * s;
    }
  }
}

static GN_INLINE void FN(bwd_row)(const gn_prob* p, const gn_bwd_args* a, const GN_T* wb, GN_T* buf, int64_t r,
                                  int64_t g, GN_T* dwp, GN_T* dbp) {
  const int64_t n = p->G, off = g * n;
  const int direct = p->dt == GN_DT, after = a->z != NULL && p->norm_before_gate;
  const int plain = p->is_rms && a->bias == NULL;
  const GN_T inv_n = (GN_T)1 / (GN_T)n;
  const GN_T* w = wb + off;
  const GN_T* b = wb + p->cols + off;
  const GN_T mu = p->is_rms ? (GN_T)0 : ((const GN_T*)a->mean)[g * p->rows + r];
  const GN_T rstd = ((const GN_T*)a->rstd)[g * p->rows + r];
  GN_T *X = buf, *DY = buf + n, *A = buf + 2 * n, *AP = buf + 3 * n, *O = buf + 4 * n;
  void* dxrow = (void*)gn_at(a->dx, r * a->dx_stride + off, p->esz);
  void* dzrow = a->z != NULL ? (void*)gn_at(a->dz, r * a->dz_stride + off, p->esz) : NULL;
  void* orow = a->out != NULL ? (void*)gn_at(a->out, r * a->out_stride + off, p->esz) : NULL;
  const GN_T* x = FN(row_in)(gn_at(a->x, r * a->x_stride + off, p->esz), p->dt, X, n);
  const GN_T* dy = FN(row_in)(gn_at(a->dy, r * a->dy_stride + off, p->esz), p->dt, DY, n);
  const GN_T* dy0 = after ? DY : dy;
  GN_T* dx = direct ? (GN_T*)dxrow : DY;
  GN_T* dz = direct ? (GN_T*)dzrow : AP;
  GN_T* o = orow == NULL ? NULL : direct ? (GN_T*)orow : O;
  GN_T c1, c2 = 0;
  int64_t j;
  if (a->z != NULL) {
    const GN_T* z = FN(row_in)(gn_at(a->z, r * a->z_stride + off, p->esz), p->dt, A, n);
    if (p->act == GN_ACT_SILU && plain)
      FN(bwd_gated_in)(p, x, dy, z, w, b, mu, rstd, X, DY, A, AP, dz, o, 1, 1);
    else if (p->act == GN_ACT_SILU)
      FN(bwd_gated_in)(p, x, dy, z, w, b, mu, rstd, X, DY, A, AP, dz, o, 1, 0);
    else if (plain)
      FN(bwd_gated_in)(p, x, dy, z, w, b, mu, rstd, X, DY, A, AP, dz, o, 0, 1);
    else
      FN(bwd_gated_in)(p, x, dy, z, w, b, mu, rstd, X, DY, A, AP, dz, o, 0, 0);
  } else {
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) X[j] = (x[j] - mu) * rstd;
    if (o != NULL && plain) {
      GN_PRAGMA(omp simd)
      for (j = 0; j < n; j++) o[j] = X[j] * w[j];
    } else if (o != NULL) {
      GN_PRAGMA(omp simd)
      for (j = 0; j < n; j++) o[j] = X[j] * w[j] + b[j];
    }
  }
  if (dwp != NULL) {
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) {
      dwp[j] += dy0[j] * X[j];
      dbp[j] += dy0[j];
    }
  }
  GN_LANE_SUM(GN_T, c1, n, i, X[i] * (w[i] * dy0[i]));
  if (!p->is_rms) GN_LANE_SUM(GN_T, c2, n, i, w[i] * dy0[i]);
  c1 *= inv_n;
  c2 *= inv_n;
  if (a->z != NULL && !p->norm_before_gate) { /* dz = dv*x*act'(z), dx = dv*act(z) */
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) {
      const GN_T dv = (w[j] * dy0[j] - X[j] * c1 - c2) * rstd;
      dz[j] = AP[j] * dv;
      dx[j] = dv * A[j];
    }
  } else {
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) dx[j] = (w[j] * dy0[j] - X[j] * c1 - c2) * rstd;
  }
  if (!direct) {
    STORE(dxrow, dx, p->dt, n);
    if (dzrow != NULL) STORE(dzrow, dz, p->dt, n);
    if (orow != NULL) STORE(orow, o, p->dt, n);
  }
}

/* One thread's share of the backward. Work item: rows [r0, r1) (one chunk) x groups
 * [g0, g1), with the chunk's dw/db partials (or none), zeroed and summed in row order. */
GN_VEC_ATTR static void FN(bwd_team)(const gn_prob* p, const gn_bwd_args* a, const GN_T* wb, gn_chunks k,
                                     int64_t gper, int64_t gblocks, int* failed) {
  const int64_t G = p->G, ng = p->ngroups, items = k.nchunks * gblocks;
  GN_T* ws = (GN_T*)a->workspace;
  const int want_params = a->dw != NULL || a->db != NULL;
  GN_T* buf = (GN_T*)gn_thread_scratch((size_t)G * 5 * sizeof(GN_T), failed);
  int64_t i;
  if (buf != NULL) {
    /* any schedule: results depend on the chunking only (see bwd_chunks) */
    GN_PRAGMA(omp for schedule(guided, 1))
    for (i = 0; i < items; i++) {
      const int64_t c = i / gblocks, gb = i % gblocks;
      const int64_t r0 = c * k.rows_per_chunk, r1 = min64(r0 + k.rows_per_chunk, p->rows);
      const int64_t g0 = gb * gper, g1 = min64(g0 + gper, ng);
      GN_T* dwp = want_params ? ws + 2 * c * p->cols : NULL;
      GN_T* dbp = want_params ? dwp + p->cols : NULL;
      int64_t r, g;
      if (dwp != NULL) {
        memset(dwp + g0 * G, 0, (size_t)((g1 - g0) * G) * sizeof(GN_T));
        memset(dbp + g0 * G, 0, (size_t)((g1 - g0) * G) * sizeof(GN_T));
      }
      for (r = r0; r < r1; r++)
        for (g = g0; g < g1; g++)
          FN(bwd_row)(p, a, wb, buf, r, g, dwp != NULL ? dwp + g * G : NULL, dbp != NULL ? dbp + g * G : NULL);
    }
  }
  free(buf);
}

static gn_status FN(bwd)(const gn_prob* p, const gn_bwd_args* a, gn_chunks k) {
  const int64_t ng = p->ngroups;
  /* Split groups too when there are few row chunks (few, long rows); this
   * only changes who computes what, never the order of any sum. */
  const int64_t gsplit = k.nchunks >= 16 ? 1 : (ng < 16 / k.nchunks ? ng : 16 / k.nchunks);
  const int64_t gper = (ng + gsplit - 1) / gsplit, gblocks = (ng + gper - 1) / gper;
  const int par = p->rows * p->cols >= GN_PAR_MIN_ELEMS && k.nchunks * gblocks > 1;
  GN_T* wb = FN(params)(p, a->weight, a->bias);
  int failed = 0;
  (void)par; /* unused without OpenMP */
  if (wb == NULL) return GN_ERR_UNSUPPORTED;
  GN_PRAGMA(omp parallel if (par))
  FN(bwd_team)(p, a, wb, k, gper, gblocks, &failed);
  free(wb);
  if (failed) return GN_ERR_UNSUPPORTED;
  if (a->dw != NULL || a->db != NULL) {
    /* chunk c's partials are [dw | db] (see bwd_team) */
    void* const dst[2] = {a->dw, a->db};
    FN(reduce_chunks)((const GN_T*)a->workspace, k.nchunks, 2, p->cols, dst, p->pdt);
  }
  return GN_OK;
}

#undef GN_CAT_
#undef GN_CAT
#undef FN
#undef LOAD
#undef STORE
