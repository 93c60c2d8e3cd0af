/*
 * CPU kernels of gatednorm: gated RMSNorm / LayerNorm forward and backward.
 *
 * Plain C99 + optional OpenMP; no torch. The math is DESIGN.md section 2, the
 * contract csrc/gatednorm.h. The kernel bodies are type-generic and live in
 * gated_norm_impl.h, instantiated here twice: with float accumulation (fp32 /
 * fp16 / bf16 problems) and with double accumulation (fp64 problems, so fp64
 * gradcheck is exact). This file holds what is shared by the two: a
 * vectorisable exp, descriptor validation, the backward's chunking (which fixes
 * the dw/db reduction order) and the public entry points. What it shares with
 * the other CPU kernels (dtype conversions, row chunking, tiled sums) is in
 * common.h / common_impl.h.
 */
#include "common.h"

/* ------------------------------------------------------------------------ */
/* exp(x) for x <= 0 (or NaN), within 1.03 ulp of exp down to x = -86 and 0 below
 * (results under 2^-124 are flushed: sigmoid / silu of z < -86 are 0 or -0),
 * written so that gcc vectorises it (libm's expf is a scalar call). Cephes' range
 * reduction x = n*ln2 + r, |r| <= ln2/2, with ln2 split in two, then 1 + r +
 * r^2*P(r) with a degree-4 P fitted to exp on that range (relative error 6e-9, 0.1
 * ulp). Measured over every float in [-86, 0] against double exp: max 1.021 ulp
 * (0.989 with separate multiplies and adds). The activations are throughput-bound on
 * this arithmetic, so each op counts: the flush lets 2^n be one normal scale (n >=
 * -125), which with the shorter polynomial made the silu loop 1.5x faster than with
 * gradual underflow, and the FMAs (explicit: common.h, GN_MULTIVERSION) another
 * 1.37x (0.254 -> 0.186 ns an element, x86-64-v4, L1-resident). */
static GN_INLINE float gn_expf_nonpos(float x) {
  const float magic = 0x1.8p23f; /* adding it rounds to an integer in the low bits */
  const float fn = fmaf(x, 1.44269504088896341f, magic);
  const uint32_t n = f32_bits(fn) - f32_bits(magic); /* no UB for NaN */
  const float nf = fn - magic;
  float r = fmaf(nf, -0.693359375f, x);
  r = fmaf(nf, 2.12194440e-4f, r);
  const float r2 = r * r;
  float p = 1.3754379469901323e-3f;
  p = fmaf(p, r, 8.366432040929794e-3f);
  p = fmaf(p, r, 4.1669219732284546e-2f);
  p = fmaf(p, r, 1.6666540503501892e-1f);
  p = fmaf(p, r, 4.9999991059303284e-1f);
  p = fmaf(p, r2, r) + 1.0f;
  /* a multiply, not an add into p's exponent bits: NaN stays NaN */
  p = p * f32_from_bits((n + 127u) << 23);
  return f32_from_bits(sel_u32(mask_u32(x < -86.0f), 0u, f32_bits(p)));
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

/* ------------------------------------------------------------------------ */
/* Backward chunking (gn_row_chunks in common.h): each chunk's partials are
 * [dw | db], 2 * cols accumulators. Workspace:
 *   nchunks * 2 * cols * (4, or 8 for fp64) bytes, at most
 *   max(32 MiB, 2 * cols * 8): 8 MiB at 4096 x 4096 fp32, 32 MiB at cols 2^20. */

static gn_chunks bwd_chunks(const gn_config* c) {
  return gn_row_chunks(c->rows, c->cols, 2 * c->cols * (int64_t)acc_size(c->dtype));
}

size_t gn_cpu_fwd_workspace_bytes(const gn_config* cfg) {
  (void)cfg;  /* a CPU thread holds whole groups: no partial statistics to hand over */
  return 0;
}

size_t gn_cpu_bwd_workspace_bytes(const gn_config* cfg) {
  if (cfg == NULL || cfg->rows <= 0 || cfg->cols <= 0) return 0;
  return (size_t)bwd_chunks(cfg).nchunks * 2 * (size_t)cfg->cols * acc_size(cfg->dtype);
}

/* ------------------------------------------------------------------------ */
/* The two instantiations of the kernels. */

enum { GN_GATE_NONE, GN_GATE_SILU, GN_GATE_SIGMOID }; /* fwd_out's `gate` */

#define GN_T float
#define GN_SUF f32
#define GN_EXP_NONPOS gn_expf_nonpos
#define GN_SQRT sqrtf
#define GN_DT GN_FLOAT32
#define GN_VEC_ATTR GN_MULTIVERSION
#include "gated_norm_impl.h"
#undef GN_T
#undef GN_SUF
#undef GN_EXP_NONPOS
#undef GN_SQRT
#undef GN_DT
#undef GN_VEC_ATTR

#define GN_T double
#define GN_SUF f64
#define GN_EXP_NONPOS exp
#define GN_SQRT sqrt
#define GN_DT GN_FLOAT64
#define GN_VEC_ATTR /* libm's exp is scalar: little to gain */
#include "gated_norm_impl.h"
#undef GN_T
#undef GN_SUF
#undef GN_EXP_NONPOS
#undef GN_SQRT
#undef GN_DT
#undef GN_VEC_ATTR

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
