/*
 * Type-generic body of the fused add + RMSNorm CPU kernels; included only by
 * add_rms_norm.c (after common.h), once per accumulation type, with:
 *   GN_T     float or double (the accumulation and statistics type)
 *   GN_SUF   suffix of the generated names (f32 / f64)
 *   GN_SQRT  sqrt in GN_T
 *   GN_DT    the gn_dtype of GN_T
 *   GN_VEC_ATTR  attributes of the per-thread bodies (multiversioning; their
 *                helpers are GN_INLINE, so they are built for each copy's ISA)
 * Outputs may alias inputs (in place): see the forward's and backward's notes.
 */
#define GN_CAT_(a, b) a##_##b
#define GN_CAT(a, b) GN_CAT_(a, b)
#define FN(name) GN_CAT(name, GN_SUF)
#define LOAD FN(load)
#define STORE FN(store)
#define ADD FN(add)
#define ROUND FN(round)

#include "common_impl.h" /* sum_sq_dev, reduce_chunks */

/* w' as GN_T[cols]: w, 1 + w with gemma, ones without a weight; malloc'ed,
 * the caller frees. */
static GN_T* FN(an_weight)(const gn_an_prob* p, const void* weight) {
  const int64_t n = p->cols;
  GN_T* w = (GN_T*)malloc((size_t)n * sizeof(GN_T));
  int64_t j;
  if (w == NULL) return NULL;
  if (weight != NULL) {
    LOAD(w, weight, p->pdt, n);
    if (p->gemma) {
      for (j = 0; j < n; j++) w[j] += (GN_T)1;
    }
  } else {
    for (j = 0; j < n; j++) w[j] = 1;
  }
  return w;
}

/* ------------------------------------------------------------------------ */
/* Forward: per row, h = residual (+ x) in GN_T, rounded to residual's dtype (h_s,
 * stored as residual_out), rstd from mean(h_s^2), out = h_s*rstd*w'. Without x, an
 * fp32 (fp64) residual row is read where it lies and out written straight into its
 * row; with x, the sum goes through H, so every input row is read in full before
 * an output row is written (outputs may alias inputs). Without x, out / residual_out
 * may still be the residual itself: the output loop reads each element before
 * writing it, and residual_out is not copied onto itself. */
/* One thread's share of the forward (rows taken per_grab at a time): run by every
 * thread of the parallel region, or alone when the problem is too small for
 * threads (see fwd_team in gated_norm_impl.h: a serialised region costs ~0.5-1 us). */
GN_VEC_ATTR static void FN(an_fwd_team)(const gn_an_prob* p, const gn_addnorm_fwd_args* a, const GN_T* w,
                                        int64_t per_grab, int* failed) {
  const int64_t n = p->cols, rows = p->rows;
  const GN_T inv_n = (GN_T)1 / (GN_T)n;
  const GN_T eps = (GN_T)p->eps;
  GN_T* rstd = (GN_T*)a->rstd;
  GN_T* H = (GN_T*)gn_thread_scratch((size_t)n * sizeof(GN_T), failed);
  int64_t r;
  (void)per_grab; /* unused without OpenMP */
  if (H != NULL) {
    GN_PRAGMA(omp for schedule(guided, per_grab))
    for (r = 0; r < rows; r++) {
      const void* rrow = gn_at(a->residual, r * a->residual_stride, p->resz);
      void* orow = (void*)gn_at(a->out, r * a->out_stride, p->esz);
      GN_T* o = p->dt == GN_DT ? (GN_T*)orow : H;
      const GN_T* h = H;
      GN_T rs;
      int64_t j;
      if (a->x != NULL) {
        LOAD(H, rrow, p->rdt, n);
        ADD(H, gn_at(a->x, r * a->x_stride, p->esz), p->dt, n);
        ROUND(H, p->rdt, n); /* h_s: stores to rdt exactly from here on */
      } else {
        h = FN(row_in)(rrow, p->rdt, H, n); /* already h_s */
      }
      if (a->residual_out != NULL) {
        void* hrow = (void*)gn_at(a->residual_out, r * a->residual_out_stride, p->resz);
        if (hrow != (const void*)h) STORE(hrow, h, p->rdt, n);
      }
      rs = (GN_T)1 / GN_SQRT(FN(sum_sq_dev)(h, (GN_T)0, n) * inv_n + eps);
      GN_PRAGMA(omp simd)
      for (j = 0; j < n; j++) o[j] = h[j] * rs * w[j];
      if (o != orow) STORE(orow, o, p->dt, n);
      if (rstd != NULL) rstd[r] = rs;
    }
  }
  free(H);
}

static gn_status FN(an_fwd)(const gn_an_prob* p, const gn_addnorm_fwd_args* a) {
  const int64_t n = p->cols, rows = p->rows;
  const int par = rows * n >= GN_PAR_MIN_ELEMS && rows > 1;
  /* Guided: each thread first takes a long run of consecutive rows (as a static
   * split would: schedule(dynamic) interleaving 64 KiB runs of the two threads was
   * 10-20% slower on 2 cores: 4096 x 1024 fp32 gated, 830 -> 700 us), then ever
   * shorter ones, down to per_grab, so a thread slowed down (shared machine) does
   * not hold the others up. No cross-item reduction: the order is irrelevant. */
  const int64_t per_grab = n >= 16384 ? 1 : 16384 / n;
  GN_T* w = FN(an_weight)(p, a->weight);
  int failed = 0;
  if (w == NULL) return GN_ERR_UNSUPPORTED;
  if (par) {
    GN_PRAGMA(omp parallel)
    FN(an_fwd_team)(p, a, w, per_grab, &failed);
  } else {
    FN(an_fwd_team)(p, a, w, per_grab, &failed);
  }
  free(w);
  return failed ? GN_ERR_UNSUPPORTED : GN_OK;
}

/* ------------------------------------------------------------------------ */
/* Backward of rows [r0, r1) (one chunk); the chunk's dw partial (or NULL) is zeroed
 * and accumulated in row order. fp32 (fp64) h / dout rows are read where they lie;
 * g = dout*w' and then dh are built in D, converted out to dx / dresidual. */
static GN_INLINE void FN(an_bwd_rows)(const gn_an_prob* p, const gn_addnorm_bwd_args* a, const GN_T* w, GN_T* H,
                                      GN_T* D, int64_t r0, int64_t r1, GN_T* dwp) {
  const int64_t n = p->cols;
  const GN_T inv_n = (GN_T)1 / (GN_T)n;
  const GN_T* rstd = (const GN_T*)a->rstd;
  int64_t r, j;
  if (dwp != NULL) memset(dwp, 0, (size_t)n * sizeof(GN_T));
  for (r = r0; r < r1; r++) {
    const GN_T rs = rstd[r];
    const GN_T* h = FN(row_in)(gn_at(a->h, r * a->h_stride, p->resz), p->rdt, H, n);
    const GN_T* d = FN(row_in)(gn_at(a->dout, r * a->dout_stride, p->esz), p->dt, D, n);
    GN_T k;
    if (dwp != NULL) {
      GN_PRAGMA(omp simd)
      for (j = 0; j < n; j++) {
        dwp[j] += d[j] * (h[j] * rs);
        D[j] = d[j] * w[j]; /* g */
      }
    } else {
      GN_PRAGMA(omp simd)
      for (j = 0; j < n; j++) D[j] = d[j] * w[j];
    }
    k = rs * rs * (FN(dot)(D, h, n) * inv_n);
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) D[j] = rs * (D[j] - h[j] * k); /* dh, without dresidual_out */
    if (a->dresidual_out != NULL)
      ADD(D, gn_at(a->dresidual_out, r * a->dresidual_out_stride, p->resz), p->rdt, n);
    if (a->dx != NULL) STORE((void*)gn_at(a->dx, r * a->dx_stride, p->esz), D, p->dt, n);
    if (a->dresidual != NULL)
      STORE((void*)gn_at(a->dresidual, r * a->dresidual_stride, p->resz), D, p->rdt, n);
  }
}

/* One thread's share of the backward: whole chunks (see gn_row_chunks). */
GN_VEC_ATTR static void FN(an_bwd_team)(const gn_an_prob* p, const gn_addnorm_bwd_args* a, const GN_T* w,
                                        gn_chunks k, int* failed) {
  const int64_t n = p->cols;
  GN_T* buf = (GN_T*)gn_thread_scratch((size_t)n * 2 * sizeof(GN_T), failed);
  int64_t c;
  if (buf != NULL) {
    /* any schedule: results depend on the chunking only (see gn_row_chunks) */
    GN_PRAGMA(omp for schedule(guided, 1))
    for (c = 0; c < k.nchunks; c++) {
      const int64_t r0 = c * k.rows_per_chunk, r1 = min64(r0 + k.rows_per_chunk, p->rows);
      FN(an_bwd_rows)(p, a, w, buf, buf + n, r0, r1, a->dw != NULL ? (GN_T*)a->workspace + c * n : NULL);
    }
  }
  free(buf);
}

static gn_status FN(an_bwd)(const gn_an_prob* p, const gn_addnorm_bwd_args* a, gn_chunks k) {
  const int64_t n = p->cols;
  const int par = p->rows * n >= GN_PAR_MIN_ELEMS && k.nchunks > 1;
  GN_T* w = FN(an_weight)(p, a->weight);
  int failed = 0;
  (void)par; /* unused without OpenMP */
  if (w == NULL) return GN_ERR_UNSUPPORTED;
  GN_PRAGMA(omp parallel if (par))
  FN(an_bwd_team)(p, a, w, k, &failed);
  free(w);
  if (failed) return GN_ERR_UNSUPPORTED;
  if (a->dw != NULL) {
    void* const dst[1] = {a->dw};
    FN(reduce_chunks)((const GN_T*)a->workspace, k.nchunks, 1, n, dst, p->pdt);
  }
  return GN_OK;
}

#undef GN_CAT_
#undef GN_CAT
#undef FN
#undef LOAD
#undef STORE
#undef ADD
#undef ROUND
