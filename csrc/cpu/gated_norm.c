/*
 * CPU kernels of gatednorm: gated RMSNorm / LayerNorm forward and backward.
 *
 * Plain C99 + optional OpenMP; no torch. The math is DESIGN.md section 2, the
 * contract csrc/gatednorm.h. The kernel bodies are type-generic and live in
 * gated_norm_impl.h, instantiated here twice: with float accumulation (fp32 /
 * fp16 / bf16 problems) and with double accumulation (fp64 problems, so fp64
 * gradcheck is exact). This file holds what is shared: dtype conversions, a
 * vectorisable exp, descriptor validation, the backward's chunking (which fixes
 * the dw/db reduction order) and the public entry points.
 */
#include "../gatednorm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef __FAST_MATH__
/* The fp16 rounding below relies on IEEE float arithmetic (overflow to inf,
 * round-to-nearest-even); -ffast-math would let gcc fold it away. */
#error "csrc/cpu/gated_norm.c must not be compiled with -ffast-math"
#endif

/* OpenMP pragmas that vanish (without -Wunknown-pragmas noise) when the
 * build has no OpenMP: everything is still correct, just serial. */
#ifdef _OPENMP
#define GN_PRAGMA(x) _Pragma(#x)
#else
#define GN_PRAGMA(x)
#endif

/* The fp32 activation loops (exp + divide per element) and the fp16/bf16
 * conversion loops are compute-bound: on x86-64 with glibc (ifunc), gcc also
 * builds AVX2 copies of them and picks one at load time (~1.5x on the whole
 * fp32 fwd+bwd, more for fp16). They are element-wise and AVX2 brings no FMA
 * to contract into, so both copies give bitwise the same results. (An AVX-512
 * copy would contract a*b+c into FMAs where contraction is on, e.g. g++.) */
#ifndef GN_MULTIVERSION /* -DGN_MULTIVERSION= turns it off */
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define GN_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define GN_MULTIVERSION
#endif
#endif

#ifdef __cplusplus
#define GN_RESTRICT __restrict
#else
#define GN_RESTRICT restrict
#endif

/* ------------------------------------------------------------------------ */
/* fp16 / bf16 <-> fp32, bit-exact, branch-free so loops over them vectorise.
 * Selects are done with bit masks, not ?:, on purpose: when one arm of a ?:
 * is a constant, gcc sinks the float math of the other arm into a branch and,
 * since float ops may trap (-ftrapping-math), then refuses to vectorise. */

static inline uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static inline float f32_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* all-ones when c, else zero */
static inline uint32_t mask_u32(int c) { return (uint32_t)0 - (uint32_t)(c != 0); }

/* m ? a : b, bitwise */
static inline uint32_t sel_u32(uint32_t m, uint32_t a, uint32_t b) { return (a & m) | (b & ~m); }

/* IEEE half -> float (exact). Normal halves are re-biased by a multiply
 * (inf/NaN keep an all-ones exponent); subnormal halves are built as
 * 0.5 + m*2^-24 in float and the 0.5 subtracted, which is exact. */
static inline float gn_half_to_float(uint16_t h) {
  const uint32_t w = (uint32_t)h << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = f32_from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = f32_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t m = mask_u32(two_w < (1u << 27));
  return f32_from_bits(sign | sel_u32(m, f32_bits(denormalized), f32_bits(normalized)));
}

/* float -> IEEE half, round to nearest even, overflow to inf, subnormals,
 * NaN kept quiet. The FPU does the rounding: scaling by 2^112 then 2^-110
 * saturates values too large for half to inf, and adding a power of two
 * chosen from the exponent (at least 2^-14's worth) leaves exactly the half's
 * mantissa bits, correctly rounded, in the low bits of the sum. */
static inline uint16_t gn_float_to_half(float f) {
  float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = f32_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = f32_from_bits((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = f32_bits(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  return (uint16_t)((sign >> 16) | sel_u32(mask_u32(shl1_w > 0xFF000000u), 0x7E00u, nonsign));
}

static inline float gn_bf16_to_float(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

/* float -> bf16, round to nearest even; NaN stays NaN (quiet bit forced so
 * that a payload living only in the low bits cannot round to inf). */
static inline uint16_t gn_float_to_bf16(float f) {
  const uint32_t u = f32_bits(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x0040u;
  return (uint16_t)sel_u32(mask_u32((u & 0x7FFFFFFFu) > 0x7F800000u), nan, rounded);
}

/* ------------------------------------------------------------------------ */
/* exp(x) for x <= 0 (or NaN), within ~1 ulp of expf, written so that gcc
 * vectorises it (libm's expf is a scalar call). Cephes' range reduction
 * x = n*ln2 + r, |r| <= ln2/2, with ln2 split in two so n*C1 is exact, and
 * its degree-7 polynomial. 2^n is applied as two factors so results in the
 * subnormal range underflow gradually instead of flushing to zero. */
static inline float gn_expf_nonpos(float x) {
  /* exp(-104) < 2^-149 rounds to 0 anyway; NaN passes (compare is false) */
  x = f32_from_bits(sel_u32(mask_u32(x < -104.0f), f32_bits(-104.0f), f32_bits(x)));
  const float magic = 0x1.8p23f; /* adding it rounds to an integer in the low bits */
  const float fn = x * 1.44269504088896341f + magic;
  const int32_t n = (int32_t)(f32_bits(fn) - f32_bits(magic)); /* no UB for NaN */
  const float nf = fn - magic;
  float r = x - nf * 0.693359375f;
  r = r - nf * -2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const int32_t n1 = n / 2, n2 = n - n1; /* each in [-75, 0]: normal scales */
  const float s1 = f32_from_bits((uint32_t)(n1 + 127) << 23);
  const float s2 = f32_from_bits((uint32_t)(n2 + 127) << 23);
  return p * s1 * s2;
}

/* ------------------------------------------------------------------------ */
/* Row conversion between storage dtypes and the accumulation type. The
 * dtype switch is outside the loops so each loop is a plain vector loop.
 * Double -> fp16/bf16 goes through float (as torch's casts do). */

GN_MULTIVERSION static void load_f32(float* GN_RESTRICT dst, const void* src, gn_dtype t, int64_t n) {
  int64_t j;
  if (t == GN_FLOAT32) {
    memcpy(dst, src, (size_t)n * sizeof(float));
  } else if (t == GN_FLOAT16) {
    const uint16_t* s = (const uint16_t*)src;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) dst[j] = gn_half_to_float(s[j]);
  } else if (t == GN_BFLOAT16) {
    const uint16_t* s = (const uint16_t*)src;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) dst[j] = gn_bf16_to_float(s[j]);
  } else {
    const double* s = (const double*)src;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) dst[j] = (float)s[j];
  }
}

GN_MULTIVERSION static void store_f32(void* dst, const float* GN_RESTRICT src, gn_dtype t, int64_t n) {
  int64_t j;
  if (t == GN_FLOAT32) {
    memcpy(dst, src, (size_t)n * sizeof(float));
  } else if (t == GN_FLOAT16) {
    uint16_t* d = (uint16_t*)dst;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) d[j] = gn_float_to_half(src[j]);
  } else if (t == GN_BFLOAT16) {
    uint16_t* d = (uint16_t*)dst;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) d[j] = gn_float_to_bf16(src[j]);
  } else {
    double* d = (double*)dst;
    GN_PRAGMA(omp simd)
    for (j = 0; j < n; j++) d[j] = (double)src[j];
  }
}

static void load_f64(double* GN_RESTRICT dst, const void* src, gn_dtype t, int64_t n) {
  int64_t j;
  if (t == GN_FLOAT64) {
    memcpy(dst, src, (size_t)n * sizeof(double));
  } else if (t == GN_FLOAT32) {
    const float* s = (const float*)src;
    for (j = 0; j < n; j++) dst[j] = (double)s[j];
  } else if (t == GN_FLOAT16) {
    const uint16_t* s = (const uint16_t*)src;
    for (j = 0; j < n; j++) dst[j] = (double)gn_half_to_float(s[j]);
  } else {
    const uint16_t* s = (const uint16_t*)src;
    for (j = 0; j < n; j++) dst[j] = (double)gn_bf16_to_float(s[j]);
  }
}

static void store_f64(void* dst, const double* GN_RESTRICT src, gn_dtype t, int64_t n) {
  int64_t j;
  if (t == GN_FLOAT64) {
    memcpy(dst, src, (size_t)n * sizeof(double));
  } else if (t == GN_FLOAT32) {
    float* d = (float*)dst;
    for (j = 0; j < n; j++) d[j] = (float)src[j];
  } else if (t == GN_FLOAT16) {
    uint16_t* d = (uint16_t*)dst;
    for (j = 0; j < n; j++) d[j] = gn_float_to_half((float)src[j]);
  } else {
    uint16_t* d = (uint16_t*)dst;
    for (j = 0; j < n; j++) d[j] = gn_float_to_bf16((float)src[j]);
  }
}

/* ------------------------------------------------------------------------ */
/* Validation and the resolved problem. */

typedef struct {
  int64_t rows, cols, G, ngroups;
  double eps;
  int is_rms, norm_before_gate;
  gn_act act;
  gn_dtype dt, pdt;
  size_t esz, pesz; /* bytes per element of dt / pdt */
} gn_prob;

static int dtype_ok(gn_dtype t) {
  return t == GN_FLOAT32 || t == GN_FLOAT16 || t == GN_BFLOAT16 || t == GN_FLOAT64;
}

/* rows > 0 here; `params` says whether param_dtype is used. */
static gn_status make_prob(const gn_config* c, int params, gn_prob* p) {
  if (c->cols <= 0 || c->group_size <= 0 || c->cols % c->group_size != 0) return GN_ERR_INVALID;
  if (!(c->eps >= 0.0)) return GN_ERR_INVALID; /* also rejects NaN */
  if (!dtype_ok(c->dtype) || (params && !dtype_ok(c->param_dtype))) return GN_ERR_INVALID;
  if (c->act != GN_ACT_SILU && c->act != GN_ACT_SIGMOID) return GN_ERR_INVALID;
  p->rows = c->rows;
  p->cols = c->cols;
  p->G = c->group_size;
  p->ngroups = c->cols / c->group_size;
  p->eps = c->eps;
  p->is_rms = c->is_rms_norm != 0;
  p->norm_before_gate = c->norm_before_gate != 0;
  p->act = c->act;
  p->dt = c->dtype;
  p->pdt = params ? c->param_dtype : c->dtype;
  p->esz = gn_dtype_size(p->dt);
  p->pesz = gn_dtype_size(p->pdt);
  return GN_OK;
}

/* Below this many elements a parallel region costs more than it saves. */
#define GN_PAR_MIN_ELEMS 32768

/* ------------------------------------------------------------------------ */
/* Backward chunking. dw/db are reduced in two fixed stages: rows are cut into
 * `nchunks` consecutive blocks, each block sums its rows in row order into
 * its own [dw | db] partial in the workspace, then partials are summed in
 * block order. The cut depends only on the config (never on the thread
 * count or on which thread runs a block), so dw/db are bitwise reproducible
 * with any OMP_NUM_THREADS and any schedule. Workspace:
 *   nchunks * 2 * cols * (4, or 8 for fp64) bytes, at most
 *   max(32 MiB, 2 * cols * 8): 8 MiB at 4096 x 4096 fp32, 32 MiB at cols 2^20. */

#define GN_WS_BUDGET ((int64_t)32 << 20) /* bytes of partials we aim to stay under */
#define GN_MAX_CHUNKS 256                 /* plenty of parallelism for many cores */
#define GN_MIN_CHUNKS 64                  /* ... kept even when rows are few */
#define GN_CHUNK_ROWS 16                  /* rows per chunk: the reduce costs ~1/40 */
#define GN_MIN_CHUNK_ELEMS 16384          /* tiny problems: few chunks */

typedef struct {
  int64_t nchunks, rows_per_chunk;
} gn_chunks;

static size_t acc_size(gn_dtype t) { return t == GN_FLOAT64 ? sizeof(double) : sizeof(float); }

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

static gn_chunks bwd_chunks(const gn_config* c) {
  gn_chunks k;
  const int64_t per_chunk = 2 * c->cols * (int64_t)acc_size(c->dtype);
  int64_t n = max64((c->rows + GN_CHUNK_ROWS - 1) / GN_CHUNK_ROWS, min64(c->rows, GN_MIN_CHUNKS));
  n = min64(n, (c->rows * c->cols + GN_MIN_CHUNK_ELEMS - 1) / GN_MIN_CHUNK_ELEMS);
  n = min64(n, min64(GN_MAX_CHUNKS, GN_WS_BUDGET / per_chunk));
  n = max64(n, 1);
  k.rows_per_chunk = (c->rows + n - 1) / n;
  k.nchunks = (c->rows + k.rows_per_chunk - 1) / k.rows_per_chunk; /* no empty chunk */
  return k;
}

size_t gn_cpu_bwd_workspace_bytes(const gn_config* cfg) {
  if (cfg == NULL || cfg->rows <= 0 || cfg->cols <= 0) return 0;
  return (size_t)bwd_chunks(cfg).nchunks * 2 * (size_t)cfg->cols * acc_size(cfg->dtype);
}

/* ------------------------------------------------------------------------ */
/* The two instantiations of the kernels. */

#define GN_T float
#define GN_SUF f32
#define GN_EXP_NONPOS gn_expf_nonpos
#define GN_SQRT sqrtf
#define GN_ACT_ATTR GN_MULTIVERSION
#include "gated_norm_impl.h"
#undef GN_T
#undef GN_SUF
#undef GN_EXP_NONPOS
#undef GN_SQRT
#undef GN_ACT_ATTR

#define GN_T double
#define GN_SUF f64
#define GN_EXP_NONPOS exp
#define GN_SQRT sqrt
#define GN_ACT_ATTR /* libm's exp is scalar: nothing to gain */
#include "gated_norm_impl.h"
#undef GN_T
#undef GN_SUF
#undef GN_EXP_NONPOS
#undef GN_SQRT
#undef GN_ACT_ATTR

/* ------------------------------------------------------------------------ */
/* Entry points. */

gn_status gn_cpu_fwd(const gn_fwd_args* a) {
  gn_prob p;
  gn_status st;
  if (a == NULL || a->cfg.rows < 0) return GN_ERR_INVALID;
  if (a->cfg.rows == 0) return GN_OK;
  st = make_prob(&a->cfg, a->weight != NULL || a->bias != NULL, &p);
  if (st != GN_OK) return st;
  if (a->x == NULL || a->out == NULL) return GN_ERR_INVALID;
  return p.dt == GN_FLOAT64 ? fwd_f64(&p, a) : fwd_f32(&p, a);
}

gn_status gn_cpu_bwd(const gn_bwd_args* a) {
  gn_prob p;
  gn_status st;
  int params;
  if (a == NULL || a->cfg.rows < 0) return GN_ERR_INVALID;
  if (a->cfg.rows == 0) return GN_OK;
  params = a->weight != NULL || a->bias != NULL || a->dw != NULL || a->db != NULL;
  st = make_prob(&a->cfg, params, &p);
  if (st != GN_OK) return st;
  if (a->x == NULL || a->dy == NULL || a->dx == NULL || a->rstd == NULL) return GN_ERR_INVALID;
  if (!p.is_rms && a->mean == NULL) return GN_ERR_INVALID;
  if (a->z != NULL && a->dz == NULL) return GN_ERR_INVALID;
  if ((a->dw != NULL || a->db != NULL) && a->workspace == NULL) return GN_ERR_INVALID;
  return p.dt == GN_FLOAT64 ? bwd_f64(&p, a, bwd_chunks(&a->cfg)) : bwd_f32(&p, a, bwd_chunks(&a->cfg));
}
