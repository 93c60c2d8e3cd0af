/*
 * gatednorm C API: framework-free problem descriptors and launchers.
 *
 * Pure C (C99, also valid C++ and CUDA C). No torch, no Python. The C++ shim
 * (shim.cpp) validates tensors, fills these descriptors and calls a launcher;
 * anything else (a C program, another framework) can do the same.
 *
 * Conventions shared by every descriptor:
 *  - A problem is `rows` x `cols` (M x N). Each row is split into
 *    ngroups = cols / group_size groups that are normalised independently.
 *  - Row r of tensor t starts at t + r * t_stride (stride in ELEMENTS, may be
 *    anything >= 0, rows may alias nothing else); the last dimension is
 *    contiguous. Indices are 64-bit: more than 2^31 elements is fine.
 *  - weight / bias / dw / db are contiguous [cols] in `param_dtype`;
 *    NULL weight means ones, NULL bias means zeros.
 *  - Statistics `mean` / `rstd` are contiguous [ngroups * rows], element
 *    g * rows + r (the layout of the Triton kernels of FLA / mamba_ssm), in
 *    fp32, or fp64 when `dtype` is GN_FLOAT64 (so fp64 gradcheck is exact).
 *  - Accumulation is fp32 (fp64 when dtype is GN_FLOAT64).
 *  - Launchers never allocate; scratch is passed in (`workspace`).
 *  - rows == 0 is valid and does nothing.
 */
#ifndef GATEDNORM_H
#define GATEDNORM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  GN_FLOAT32 = 0,
  GN_FLOAT16 = 1,
  GN_BFLOAT16 = 2,
  GN_FLOAT64 = 3
} gn_dtype;

typedef enum {
  GN_ACT_SILU = 0,    /* z * sigmoid(z); "swish" is the same */
  GN_ACT_SIGMOID = 1  /* sigmoid(z) */
} gn_act;

typedef enum {
  GN_OK = 0,
  GN_ERR_INVALID = 1,     /* a descriptor field is out of its documented range */
  GN_ERR_UNSUPPORTED = 2, /* valid, but this build/backend cannot do it */
  GN_ERR_CUDA = 3         /* a CUDA API call or launch failed: gn_cuda_error_string() */
} gn_status;

/* What to compute; shared by the forward and the backward. */
typedef struct {
  int64_t rows;
  int64_t cols;
  int64_t group_size;   /* divides cols, > 0 */
  double eps;           /* >= 0 */
  int is_rms_norm;      /* 1: mean = 0 (RMSNorm); 0: LayerNorm */
  int norm_before_gate; /* 1: y = norm(x) * act(z); 0: y = norm(x * act(z)) */
  gn_act act;
  gn_dtype dtype;       /* of x, z, out, dy, dx, dz */
  gn_dtype param_dtype; /* of weight, bias, dw, db (ignored when none is given) */
} gn_config;

typedef struct {
  gn_config cfg;
  const void* x;      int64_t x_stride;
  const void* z;      int64_t z_stride;   /* NULL: no gate */
  const void* weight;
  const void* bias;
  void* out;          int64_t out_stride;
  void* mean;         /* NULL: not stored (always NULL for RMS) */
  void* rstd;         /* NULL: not stored */
  void* workspace;    /* >= gn_*_fwd_workspace_bytes(&cfg) bytes, 16-byte aligned; NULL when that is 0 */
} gn_fwd_args;

typedef struct {
  gn_config cfg;
  const void* x;      int64_t x_stride;
  const void* z;      int64_t z_stride;   /* NULL: no gate */
  const void* weight;
  const void* bias;   /* read only when out is recomputed */
  const void* dy;     int64_t dy_stride;
  const void* mean;   /* from the forward; ignored for RMS */
  const void* rstd;   /* from the forward */
  void* dx;           int64_t dx_stride;
  void* dz;           int64_t dz_stride;  /* required iff z != NULL */
  void* dw;           /* NULL: not wanted (e.g. weight is None) */
  void* db;           /* NULL: not wanted */
  void* out;          int64_t out_stride; /* recompute the forward output; NULL: don't */
  void* workspace;    /* >= gn_*_bwd_workspace_bytes(&cfg) bytes, 16-byte aligned; CUDA needs it
                         for dw / db and for few rows of very wide groups: always pass it */
} gn_bwd_args;

/* ---- Fused add + RMSNorm (sgl-kernel / vLLM / FlashInfer contract) ----
 * Per row:  h = x + residual (fp32), stored as residual_out (its own dtype);
 *           out = h_s * rstd * w',  rstd = 1/sqrt(mean(h_s^2) + eps),
 * where h_s is h AS STORED in residual_out (rounded to its dtype; the vLLM and
 * unfused-PyTorch semantics: the next layer sees exactly the residual that was
 * normalised) and w' = w, or 1 + w with `gemma` (Gemma / Qwen3-Next form).
 * x == NULL: no add, h = residual (plain RMSNorm of `residual`).
 * residual_out == NULL: h is not stored (then h_s = h rounded to residual's dtype).
 * Outputs may alias inputs exactly (in place: out == x, residual_out == residual). */
typedef struct {
  int64_t rows;
  int64_t cols;
  double eps;               /* >= 0 */
  int gemma;                /* 1: weight applied as 1 + w */
  gn_dtype dtype;           /* of x, out, dout, dx */
  gn_dtype residual_dtype;  /* of residual, residual_out, dresidual_out, dresidual */
  gn_dtype param_dtype;     /* of weight, dw */
} gn_addnorm_config;

typedef struct {
  gn_addnorm_config cfg;
  const void* x;          int64_t x_stride;             /* NULL: no add */
  const void* residual;   int64_t residual_stride;
  void* residual_out;     int64_t residual_out_stride;  /* NULL: not stored */
  const void* weight;     /* [cols]; NULL: ones (gemma: 1 + 0) */
  void* out;              int64_t out_stride;
  void* rstd;             /* [rows] fp32 (fp64 for fp64 dtype); NULL: not stored */
} gn_addnorm_fwd_args;

/* Backward of (out, residual_out) = add_rms_norm(x, residual): with g = dout * w',
 * dh = rstd * (g - h * rstd^2 * mean(g * h)) + dresidual_out;
 * dx = dh (x's dtype), dresidual = dh (residual's dtype), dw = sum over rows of
 * dout * h * rstd (fp32 partials reduced in a fixed order). */
typedef struct {
  gn_addnorm_config cfg;
  const void* h;          int64_t h_stride;      /* the stored residual_out of the forward */
  const void* weight;     /* NULL: ones */
  const void* rstd;       /* from the forward */
  const void* dout;       int64_t dout_stride;
  const void* dresidual_out; int64_t dresidual_out_stride; /* NULL: zero */
  void* dx;               int64_t dx_stride;     /* x's dtype; NULL: not wanted */
  void* dresidual;        int64_t dresidual_stride; /* residual's dtype; NULL: not wanted */
  void* dw;               /* [cols] param dtype; NULL: not wanted */
  void* workspace;        /* >= gn_*_addnorm_bwd_workspace_bytes(&cfg), 16-byte aligned */
} gn_addnorm_bwd_args;

/* ---- CPU (csrc/cpu) ---- */
size_t gn_cpu_fwd_workspace_bytes(const gn_config* cfg); /* 0: the CPU forward needs none */
size_t gn_cpu_bwd_workspace_bytes(const gn_config* cfg);
gn_status gn_cpu_fwd(const gn_fwd_args* a);
gn_status gn_cpu_bwd(const gn_bwd_args* a);

size_t gn_cpu_addnorm_bwd_workspace_bytes(const gn_addnorm_config* cfg);
gn_status gn_cpu_addnorm_fwd(const gn_addnorm_fwd_args* a);
gn_status gn_cpu_addnorm_bwd(const gn_addnorm_bwd_args* a);

/* ---- CUDA (csrc/cuda): run on `stream` (a cudaStream_t) of the current
 * device; never synchronise the host; capturable in a CUDA graph. ---- */
size_t gn_cuda_fwd_workspace_bytes(const gn_config* cfg); /* > 0 only for few rows of very wide groups */
size_t gn_cuda_bwd_workspace_bytes(const gn_config* cfg);
gn_status gn_cuda_fwd(const gn_fwd_args* a, void* stream);
gn_status gn_cuda_bwd(const gn_bwd_args* a, void* stream);
const char* gn_cuda_error_string(void); /* detail of the last GN_ERR_CUDA of this thread */

size_t gn_cuda_addnorm_bwd_workspace_bytes(const gn_addnorm_config* cfg);
gn_status gn_cuda_addnorm_fwd(const gn_addnorm_fwd_args* a, void* stream);
gn_status gn_cuda_addnorm_bwd(const gn_addnorm_bwd_args* a, void* stream);

/* Helpers shared by both backends. */
static inline size_t gn_dtype_size(gn_dtype t) {
  return t == GN_FLOAT64 ? 8 : (t == GN_FLOAT32 ? 4 : 2);
}
/* fp64 statistics for fp64 problems, fp32 otherwise. */
static inline gn_dtype gn_stat_dtype(gn_dtype t) {
  return t == GN_FLOAT64 ? GN_FLOAT64 : GN_FLOAT32;
}

#ifdef __cplusplus
}
#endif

#endif /* GATEDNORM_H */
