/*
 * CPU kernels of gatednorm: fused residual add + RMSNorm, forward and backward
 * (contract: "Fused add + RMSNorm" in csrc/gatednorm.h).
 *
 * Plain C99 + optional OpenMP; no torch. Like gated_norm.c, the kernel bodies
 * are type-generic (add_rms_norm_impl.h), instantiated with float accumulation
 * (fp32 / fp16 / bf16 problems) and double accumulation (fp64 problems). The
 * accumulation type follows `dtype` (of x / out); residual and parameters may
 * have any dtype. This file holds the conversions only this kernel needs,
 * validation, the backward's chunking and the entry points; the rest is in
 * common.h / common_impl.h, shared with the gated-norm kernels.
 */
#include "common.h"

/* ------------------------------------------------------------------------ */
/* Conversions on top of common.h's row loads / stores. */

/* dst += src, src converted to float first (the add is in fp32). */
GN_MULTIVERSION static void add_f32(float* GN_RESTRICT dst, const void* src, gn_dtype t, int64_t n) {
  int64_t j;
  if (t == GN_FLOAT32) {
    const float* s = (const float*)src;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) dst[j] += s[j];
  } else if (t == GN_FLOAT16) {
    const uint16_t* s = (const uint16_t*)src;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) dst[j] += gn_half_to_float(s[j]);
  } else if (t == GN_BFLOAT16) {
    const uint16_t* s = (const uint16_t*)src;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) dst[j] += gn_bf16_to_float(s[j]);
  } else {
    const double* s = (const double*)src;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) dst[j] += (float)s[j];
  }
}

/* v = v rounded to t and back: the value a store to t then a load keep.
 * Nothing to do for fp32 / fp64, which hold any float exactly. */
GN_MULTIVERSION static void round_f32(float* GN_RESTRICT v, gn_dtype t, int64_t n) {
  int64_t j;
  if (t == GN_FLOAT16) {
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) v[j] = gn_half_to_float(gn_float_to_half(v[j]));
  } else if (t == GN_BFLOAT16) {
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) v[j] = gn_bf16_to_float(gn_float_to_bf16(v[j]));
  }
}

static void add_f64(double* GN_RESTRICT dst, const void* src, gn_dtype t, int64_t n) {
  int64_t j;
  if (t == GN_FLOAT64) {
    const double* s = (const double*)src;
    for (j = 0; j < n; j++) dst[j] += s[j];
  } else if (t == GN_FLOAT32) {
    const float* s = (const float*)src;
    for (j = 0; j < n; j++) dst[j] += (double)s[j];
  } else if (t == GN_FLOAT16) {
    const uint16_t* s = (const uint16_t*)src;
    for (j = 0; j < n; j++) dst[j] += (double)gn_half_to_float(s[j]);
  } else {
    const uint16_t* s = (const uint16_t*)src;
    for (j = 0; j < n; j++) dst[j] += (double)gn_bf16_to_float(s[j]);
  }
}

/* Double -> fp16 / bf16 goes through float, as store_f64 (and torch) do. */
static void round_f64(double* GN_RESTRICT v, gn_dtype t, int64_t n) {
  int64_t j;
  if (t == GN_FLOAT32) {
    for (j = 0; j < n; j++) v[j] = (double)(float)v[j];
  } else if (t == GN_FLOAT16) {
    for (j = 0; j < n; j++) v[j] = (double)gn_half_to_float(gn_float_to_half((float)v[j]));
  } else if (t == GN_BFLOAT16) {
    for (j = 0; j < n; j++) v[j] = (double)gn_bf16_to_float(gn_float_to_bf16((float)v[j]));
  }
}

/* ------------------------------------------------------------------------ */
/* Validation and the resolved problem. */

typedef struct {
  int64_t rows, cols;
  double eps;
  int gemma;
  gn_dtype dt, rdt, pdt;
  size_t esz, resz; /* bytes per element of dt / rdt */
} gn_an_prob;

/* rows > 0 here; `params` says whether param_dtype is used. */
static gn_status make_an_prob(const gn_addnorm_config* c, int params, gn_an_prob* p) {
  if (c->cols <= 0) return GN_ERR_INVALID;
  if (!(c->eps >= 0.0)) return GN_ERR_INVALID; /* also rejects NaN */
  if (!dtype_ok(c->dtype) || !dtype_ok(c->residual_dtype)) return GN_ERR_INVALID;
  if (params && !dtype_ok(c->param_dtype)) return GN_ERR_INVALID;
  p->rows = c->rows;
  p->cols = c->cols;
  p->eps = c->eps;
  p->gemma = c->gemma != 0;
  p->dt = c->dtype;
  p->rdt = c->residual_dtype;
  p->pdt = params ? c->param_dtype : c->dtype;
  p->esz = gn_dtype_size(p->dt);
  p->resz = gn_dtype_size(p->rdt);
  return GN_OK;
}

/* ------------------------------------------------------------------------ */
/* Backward chunking (gn_row_chunks in common.h), as in the gated-norm
 * backward: each chunk's partial is dw alone, cols accumulators. Workspace:
 *   nchunks * cols * (4, or 8 for fp64) bytes, at most
 *   max(32 MiB, cols * 8): 4 MiB at 4096 x 4096 fp32, 32 MiB at cols 2^20. */

static gn_chunks an_bwd_chunks(const gn_addnorm_config* c) {
  return gn_row_chunks(c->rows, c->cols, c->cols * (int64_t)acc_size(c->dtype));
}

size_t gn_cpu_addnorm_bwd_workspace_bytes(const gn_addnorm_config* cfg) {
  if (cfg == NULL || cfg->rows <= 0 || cfg->cols <= 0) return 0;
  return (size_t)an_bwd_chunks(cfg).nchunks * (size_t)cfg->cols * acc_size(cfg->dtype);
}

/* ------------------------------------------------------------------------ */
/* The two instantiations of the kernels. */

#define GN_T float
#define GN_DT GN_FLOAT32
#define GN_SUF f32
#define GN_SQRT sqrtf
#define GN_VEC_ATTR GN_MULTIVERSION
#include "add_rms_norm_impl.h"
#undef GN_T
#undef GN_DT
#undef GN_SUF
#undef GN_SQRT
#undef GN_VEC_ATTR

#define GN_T double
#define GN_DT GN_FLOAT64
#define GN_SUF f64
#define GN_SQRT sqrt
#define GN_VEC_ATTR GN_MULTIVERSION
#include "add_rms_norm_impl.h"
#undef GN_T
#undef GN_DT
#undef GN_SUF
#undef GN_SQRT
#undef GN_VEC_ATTR

/* ------------------------------------------------------------------------ */
/* Entry points. */

gn_status gn_cpu_addnorm_fwd(const gn_addnorm_fwd_args* a) {
  gn_an_prob p;
  gn_status st;
  if (a == NULL || a->cfg.rows < 0) return GN_ERR_INVALID;
  if (a->cfg.rows == 0) return GN_OK;
  st = make_an_prob(&a->cfg, a->weight != NULL, &p);
  if (st != GN_OK) return st;
  if (a->residual == NULL || a->out == NULL) return GN_ERR_INVALID;
  return p.dt == GN_FLOAT64 ? an_fwd_f64(&p, a) : an_fwd_f32(&p, a);
}

gn_status gn_cpu_addnorm_bwd(const gn_addnorm_bwd_args* a) {
  gn_an_prob p;
  gn_status st;
  if (a == NULL || a->cfg.rows < 0) return GN_ERR_INVALID;
  if (a->cfg.rows == 0) return GN_OK;
  st = make_an_prob(&a->cfg, a->weight != NULL || a->dw != NULL, &p);
  if (st != GN_OK) return st;
  if (a->h == NULL || a->dout == NULL || a->rstd == NULL) return GN_ERR_INVALID;
  if (a->dw != NULL && a->workspace == NULL) return GN_ERR_INVALID;
  return p.dt == GN_FLOAT64 ? an_bwd_f64(&p, a, an_bwd_chunks(&a->cfg))
                            : an_bwd_f32(&p, a, an_bwd_chunks(&a->cfg));
}
