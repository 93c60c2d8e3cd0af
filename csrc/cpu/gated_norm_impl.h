/*
 * Type-generic body of the CPU kernels; included only by gated_norm.c, once
 * per accumulation type, with:
 *   GN_T           float or double (the accumulation and statistics type)
 *   GN_SUF         suffix of the generated names (f32 / f64)
 *   GN_EXP_NONPOS  exp for arguments <= 0
 *   GN_SQRT        sqrt in GN_T
 *   GN_ACT_ATTR    attributes of the activation loops (multiversioning)
 * (after common.h). A row's group is converted into GN_T scratch buffers, worked on by short
 * passes that the compiler vectorises, and converted back.
 */
#define GN_CAT_(a, b) a##_##b
#define GN_CAT(a, b) GN_CAT_(a, b)
#define FN(name) GN_CAT(name, GN_SUF)
#define LOAD FN(load)
#define STORE FN(store)

#include "common_impl.h" /* sum_sq_dev, reduce_chunks */

/* sigmoid via exp(-|z|) <= 1, which never overflows; NaN propagates. */
static inline GN_T FN(sigmoid)(GN_T z) {
  const GN_T t = GN_EXP_NONPOS(z < 0 ? z : -z);
  return (z >= 0 ? (GN_T)1 : t) / ((GN_T)1 + t);
}

/* a = act(z), in place. */
GN_ACT_ATTR static void FN(act_fwd)(GN_T* GN_RESTRICT a, int64_t n, gn_act act) {
  int64_t j;
  if (act == GN_ACT_SILU) {
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) a[j] = a[j] * FN(sigmoid)(a[j]);
  } else {
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) a[j] = FN(sigmoid)(a[j]);
  }
}

/* a = act(z) in place, da = act'(z): silu' = s*(1 + z*(1-s)), sigmoid' = s*(1-s). */
GN_ACT_ATTR static void FN(act_bwd)(GN_T* GN_RESTRICT a, GN_T* GN_RESTRICT da, int64_t n, gn_act act) {
  int64_t j;
  if (act == GN_ACT_SILU) {
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) {
      const GN_T z = a[j], s = FN(sigmoid)(z);
      a[j] = z * s;
      da[j] = s * ((GN_T)1 + z * ((GN_T)1 - s));
    }
  } else {
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) {
      const GN_T s = FN(sigmoid)(a[j]);
      a[j] = s;
      da[j] = s * ((GN_T)1 - s);
    }
  }
}

static GN_T FN(sum)(const GN_T* GN_RESTRICT v, int64_t n) {
  GN_T total = 0;
  int64_t j0, j;
  for (j0 = 0; j0 < n; j0 += GN_TILE) {
    const int64_t j1 = n - j0 < GN_TILE ? n : j0 + GN_TILE;
    GN_T s = 0;
    GN_PRAGMA(omp simd reduction(+ : s))
    for (j = j0; j < j1; j++) s += v[j];
    total += s;
  }
  return total;
}

/* c1 = sum(vhat*w*g), c2 = sum(w*g) with g = dy0. */
static void FN(sum_c1_c2)(const GN_T* GN_RESTRICT vhat, const GN_T* GN_RESTRICT g,
                          const GN_T* GN_RESTRICT w, int64_t n, GN_T* c1, GN_T* c2) {
  GN_T t1 = 0, t2 = 0;
  int64_t j0, j;
  for (j0 = 0; j0 < n; j0 += GN_TILE) {
    const int64_t j1 = n - j0 < GN_TILE ? n : j0 + GN_TILE;
    GN_T s1 = 0, s2 = 0;
    GN_PRAGMA(omp simd reduction(+ : s1, s2))
    for (j = j0; j < j1; j++) {
      const GN_T wg = w[j] * g[j];
      s1 += vhat[j] * wg;
      s2 += wg;
    }
    t1 += s1;
    t2 += s2;
  }
  *c1 = t1;
  *c2 = t2;
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
/* Forward of one (row, group). X holds x on entry and y on return; A holds
 * act(z) or is NULL. Returns mean and rstd through *mu / *rstd. */
static void FN(fwd_group)(const gn_prob* p, GN_T* GN_RESTRICT X, const GN_T* GN_RESTRICT A,
                          const GN_T* GN_RESTRICT w, const GN_T* GN_RESTRICT b, GN_T* mu_out,
                          GN_T* rstd_out) {
  const int64_t n = p->G;
  const GN_T inv_n = (GN_T)1 / (GN_T)n;
  GN_T mu, rstd;
  int64_t j;
  if (A != NULL && !p->norm_before_gate) {
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) X[j] *= A[j];
  }
  mu = p->is_rms ? (GN_T)0 : FN(sum)(X, n) * inv_n;
  rstd = (GN_T)1 / GN_SQRT(FN(sum_sq_dev)(X, mu, n) * inv_n + (GN_T)p->eps);
  if (A != NULL && p->norm_before_gate) {
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) X[j] = ((X[j] - mu) * rstd * w[j] + b[j]) * A[j];
  } else {
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) X[j] = (X[j] - mu) * rstd * w[j] + b[j];
  }
  *mu_out = mu;
  *rstd_out = rstd;
}

/* One thread's share of the forward (items taken per_grab at a time): run by every
 * thread of the parallel region, or alone, outside any, when the problem is too
 * small for threads. An `omp parallel` disabled by its `if` still sets up a team of
 * one (~0.5-1 us a call, a third of a small eager call); the orphaned `omp for` and
 * barrier here cost ~0.1 us outside a region. */
static void FN(fwd_team)(const gn_prob* p, const gn_fwd_args* a, const GN_T* wb, int64_t per_grab, int* failed) {
  const int64_t G = p->G, ng = p->ngroups, items = p->rows * ng;
  const int gated = a->z != NULL;
  GN_T* mean = (GN_T*)a->mean;
  GN_T* rstd = (GN_T*)a->rstd;
  GN_T* X = (GN_T*)gn_thread_scratch((size_t)G * (gated ? 2 : 1) * sizeof(GN_T), failed);
  GN_T* A = gated && X != NULL ? X + G : NULL;
  int64_t i;
  (void)per_grab; /* unused without OpenMP */
  if (X != NULL) {
    GN_PRAGMA(omp for schedule(dynamic, per_grab))
    for (i = 0; i < items; i++) {
      const int64_t r = i / ng, g = i % ng, off = g * G;
      GN_T mu, rs;
      LOAD(X, gn_at(a->x, r * a->x_stride + off, p->esz), p->dt, G);
      if (gated) {
        LOAD(A, gn_at(a->z, r * a->z_stride + off, p->esz), p->dt, G);
        FN(act_fwd)(A, G, p->act);
      }
      FN(fwd_group)(p, X, A, wb + off, wb + p->cols + off, &mu, &rs);
      STORE((void*)gn_at(a->out, r * a->out_stride + off, p->esz), X, p->dt, G);
      if (mean != NULL) mean[g * p->rows + r] = mu;
      if (rstd != NULL) rstd[g * p->rows + r] = rs;
    }
  }
  free(X);
}

static gn_status FN(fwd)(const gn_prob* p, const gn_fwd_args* a) {
  const int64_t G = p->G, items = p->rows * p->ngroups;
  const int par = p->rows * p->cols >= GN_PAR_MIN_ELEMS && items > 1;
  /* Dynamic: a thread slowed down (shared machine) does not hold the others
   * up. The forward has no cross-item reduction, so order is irrelevant. */
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
/* Backward of one (row, group), on scratch rows of G elements:
 *   entry:  X = x, DY = dy, A = z (gated only)
 *   return: DY = dx, AP = dz (gated only), O = recomputed out (O != NULL)
 * and dw/db partials accumulated into dwp/dbp (when dwp != NULL). */
static void FN(bwd_group)(const gn_prob* p, GN_T* GN_RESTRICT X, GN_T* GN_RESTRICT DY,
                          GN_T* GN_RESTRICT A, GN_T* GN_RESTRICT AP, GN_T* GN_RESTRICT O,
                          const GN_T* GN_RESTRICT w, const GN_T* GN_RESTRICT b, GN_T mu, GN_T rstd,
                          GN_T* GN_RESTRICT dwp, GN_T* GN_RESTRICT dbp) {
  const int64_t n = p->G;
  const GN_T inv_n = (GN_T)1 / (GN_T)n;
  const int before = A != NULL && !p->norm_before_gate; /* gate before the norm */
  const int after = A != NULL && p->norm_before_gate;
  GN_T c1, c2;
  int64_t j;
  if (A != NULL) FN(act_bwd)(A, AP, n, p->act);
  if (before) { /* v = x*act(z); keep x*act'(z) for dz */
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) {
      AP[j] *= X[j];
      X[j] *= A[j];
    }
  }
  GN_PRAGMA(omp simd)
  for (j = 0; j < n; j++) X[j] = (X[j] - mu) * rstd; /* vhat */
  if (after) { /* dz = dy*y0*act'(z), dy0 = dy*act(z) */
    if (O != NULL) {
      GN_PRAGMA(omp simd)
      for (j = 0; j < n; j++) {
        const GN_T y0 = X[j] * w[j] + b[j];
        AP[j] = DY[j] * y0 * AP[j];
        O[j] = y0 * A[j];
        DY[j] *= A[j];
      }
    } else {
      GN_PRAGMA(omp simd)
      for (j = 0; j < n; j++) {
        AP[j] = DY[j] * (X[j] * w[j] + b[j]) * AP[j];
        DY[j] *= A[j];
      }
    }
  } else if (O != NULL) {
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) O[j] = X[j] * w[j] + b[j];
  }
  /* DY is dy0 from here on */
  if (dwp != NULL) {
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) {
      dwp[j] += DY[j] * X[j];
      dbp[j] += DY[j];
    }
  }
  FN(sum_c1_c2)(X, DY, w, n, &c1, &c2);
  c1 *= inv_n;
  c2 = p->is_rms ? (GN_T)0 : c2 * inv_n;
  GN_PRAGMA(omp simd)
  for (j = 0; j < n; j++) DY[j] = (w[j] * DY[j] - X[j] * c1 - c2) * rstd; /* dv */
  if (before) { /* dz = dv*x*act'(z), dx = dv*act(z) */
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) {
      AP[j] *= DY[j];
      DY[j] *= A[j];
    }
  }
}

/* One work item of the backward: rows [r0, r1) x groups [g0, g1), with the
 * chunk's dw/db partials for those columns at dwp/dbp (or NULL). */
static void FN(bwd_item)(const gn_prob* p, const gn_bwd_args* a, const GN_T* wb, GN_T* buf,
                         int64_t r0, int64_t r1, int64_t g0, int64_t g1, GN_T* dwp, GN_T* dbp) {
  const int64_t G = p->G;
  const int gated = a->z != NULL;
  GN_T* X = buf;
  GN_T* DY = buf + G;
  GN_T* A = gated ? buf + 2 * G : NULL;
  GN_T* AP = gated ? buf + 3 * G : NULL;
  GN_T* O = a->out != NULL ? buf + (gated ? 4 : 2) * G : NULL;
  const GN_T* mean = (const GN_T*)a->mean;
  const GN_T* rstd = (const GN_T*)a->rstd;
  int64_t r, g;
  if (dwp != NULL) {
    memset(dwp + g0 * G, 0, (size_t)((g1 - g0) * G) * sizeof(GN_T));
    memset(dbp + g0 * G, 0, (size_t)((g1 - g0) * G) * sizeof(GN_T));
  }
  for (r = r0; r < r1; r++) {
    for (g = g0; g < g1; g++) {
      const int64_t off = g * G;
      const GN_T mu = p->is_rms ? (GN_T)0 : mean[g * p->rows + r];
      LOAD(X, gn_at(a->x, r * a->x_stride + off, p->esz), p->dt, G);
      LOAD(DY, gn_at(a->dy, r * a->dy_stride + off, p->esz), p->dt, G);
      if (gated) LOAD(A, gn_at(a->z, r * a->z_stride + off, p->esz), p->dt, G);
      FN(bwd_group)(p, X, DY, A, AP, O, wb + off, wb + p->cols + off, mu, rstd[g * p->rows + r],
                    dwp != NULL ? dwp + off : NULL, dbp != NULL ? dbp + off : NULL);
      STORE((void*)gn_at(a->dx, r * a->dx_stride + off, p->esz), DY, p->dt, G);
      if (gated) STORE((void*)gn_at(a->dz, r * a->dz_stride + off, p->esz), AP, p->dt, G);
      if (O != NULL) STORE((void*)gn_at(a->out, r * a->out_stride + off, p->esz), O, p->dt, G);
    }
  }
}

static gn_status FN(bwd)(const gn_prob* p, const gn_bwd_args* a, gn_chunks k) {
  const int64_t G = p->G, ng = p->ngroups;
  const int want_params = a->dw != NULL || a->db != NULL;
  const int nbuf = 2 + (a->z != NULL ? 2 : 0) + (a->out != NULL ? 1 : 0);
  /* Split groups too when there are few row chunks (few, long rows); this
   * only changes who computes what, never the order of any sum. */
  const int64_t gsplit = k.nchunks >= 16 ? 1 : (ng < 16 / k.nchunks ? ng : 16 / k.nchunks);
  const int64_t gper = (ng + gsplit - 1) / gsplit, gblocks = (ng + gper - 1) / gper;
  const int64_t items = k.nchunks * gblocks;
  const int par = p->rows * p->cols >= GN_PAR_MIN_ELEMS && items > 1;
  GN_T* ws = (GN_T*)a->workspace;
  GN_T* wb = FN(params)(p, a->weight, a->bias);
  int failed = 0;
  (void)par; /* unused without OpenMP */
  if (wb == NULL) return GN_ERR_UNSUPPORTED;

  GN_PRAGMA(omp parallel if (par))
  {
    GN_T* buf = (GN_T*)gn_thread_scratch((size_t)G * (size_t)nbuf * sizeof(GN_T), &failed);
    int64_t i;
    if (buf != NULL) {
      /* any schedule: results depend on the chunking only (see bwd_chunks) */
      GN_PRAGMA(omp for schedule(dynamic, 1))
      for (i = 0; i < items; i++) {
        const int64_t c = i / gblocks, gb = i % gblocks;
        const int64_t r0 = c * k.rows_per_chunk;
        const int64_t r1 = r0 + k.rows_per_chunk < p->rows ? r0 + k.rows_per_chunk : p->rows;
        const int64_t g0 = gb * gper, g1 = g0 + gper < ng ? g0 + gper : ng;
        GN_T* dwp = want_params ? ws + 2 * c * p->cols : NULL;
        FN(bwd_item)(p, a, wb, buf, r0, r1, g0, g1, dwp, dwp != NULL ? dwp + p->cols : NULL);
      }
    }
    free(buf);
  }
  free(wb);
  if (failed) return GN_ERR_UNSUPPORTED;
  if (want_params) {
    /* chunk c's partials are [dw | db] (see bwd_item) */
    void* const dst[2] = {a->dw, a->db};
    FN(reduce_chunks)(ws, k.nchunks, 2, p->cols, dst, p->pdt);
  }
  return GN_OK;
}

#undef GN_CAT_
#undef GN_CAT
#undef FN
#undef LOAD
#undef STORE
