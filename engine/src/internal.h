/* Internal declarations shared by the engine's source files. Not installed. */
#ifndef CLD_INTERNAL_H
#define CLD_INTERNAL_H

#include "cldiffusion/cldiffusion.h"
#include <stdarg.h>
#include <stdio.h>

/* ---------------------------------------------------------------- errors */
/* Record a formatted message as this thread's last error; returns `s`. */
cld_status cld__fail(cld_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Record "what: CL_ERROR_NAME (code)" if err != CL_SUCCESS. */
cld_status cld__cl_check(cl_int err, const char *what);
#define CLD_TRY(expr)                 \
    do {                              \
        cld_status s__ = (expr);      \
        if (s__ != CLD_OK) return s__; \
    } while (0)
#define CLD_CL_TRY(expr, what) CLD_TRY(cld__cl_check((expr), (what)))

/* ---------------------------------------------------------------- context */
typedef struct cld__kernel_entry {
    char *key;        /* program \n options \n kernel */
    cl_kernel kernel;
} cld__kernel_entry;

typedef struct cld__program_entry {
    char *key;        /* program \n options */
    cl_program program;
} cld__program_entry;

struct cld_ctx {
    cld_device_info info;
    cl_context context;
    cl_command_queue queue;
    cld__program_entry *programs;
    int n_programs, cap_programs;
    cld__kernel_entry *kernels;
    int n_kernels, cap_kernels;
    cld_compile_stats stats;
    cl_mem gemm_scratch;          /* packed GEMM panels, reused (blas.c) */
    size_t gemm_scratch_bytes;
};

/* Set kernel arguments from a format string: 'b' cl_mem, 'i' int,
 * 'u' unsigned, 'f' float (passed as double), 'l' __local bytes (size_t),
 * 'L' uint64 (cl_ulong). */
cld_status cld__kargs(cl_kernel k, const char *what, const char *fmt, ...);
/* Enqueue an NDRange; global sizes are rounded up to multiples of local. */
cld_status cld__launch(cld_ctx *ctx, cl_kernel k, const char *what, cl_uint dims,
                       const size_t *global, const size_t *local);
/* 1-D launch over n items for node t (named in errors). The geometry depends
 * on the device (CPU: few one-item work-groups), so the kernel must cover
 * [0, n) itself with the FOR_ITEMS loop of cl/basic.cl, never one item per
 * work-item with an `if (i < n)` guard, unless it declares
 * reqd_work_group_size(S, 1, 1): then one work-item per item (graph.c). */
cld_status cld__launch1d(cld_graph *g, cl_kernel k, const cld_tensor *t, size_t n);
/* Shorthand: get kernel `name` of `program` with default options. */
cld_status cld__kernel(cld_ctx *ctx, const char *program, const char *name, cl_kernel *out);

/* CLBlast wrappers (row-major). Offsets and leading dims in floats. */
cld_status cld__gemm(cld_ctx *ctx, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                     float alpha, cl_mem a, size_t a_off, size_t lda, cl_mem b, size_t b_off,
                     size_t ldb, float beta, cl_mem c, size_t c_off, size_t ldc);
cld_status cld__gemm_batched(cld_ctx *ctx, int trans_a, int trans_b, size_t m, size_t n,
                             size_t k, float alpha, cl_mem a, size_t a_off, size_t lda,
                             size_t a_stride, cl_mem b, size_t b_off, size_t ldb,
                             size_t b_stride, float beta, cl_mem c, size_t c_off, size_t ldc,
                             size_t c_stride, size_t batch);

/* ---------------------------------------------------------------- tensors */
typedef struct cld_op_def {
    const char *name;
    /* Enqueue the kernels computing t from t->src (buffers are planned). */
    cld_status (*forward)(cld_graph *g, cld_tensor *t);
    /* Given t->grad, add the gradients of t's sources with cld__grad_add. */
    cld_status (*backward)(cld_graph *g, cld_tensor *t);
    int inplace;   /* output may take over src[0]'s buffer at its last use */
    int is_view;   /* output aliases src[0]'s buffer (reshape)              */
} cld_op_def;

enum {
    CLD_TF_INPUT = 1u << 0,
    CLD_TF_PARAM = 1u << 1,
    CLD_TF_OUTPUT = 1u << 2,     /* pinned by cld_graph_set_output */
    CLD_TF_NEEDS_GRAD = 1u << 3, /* depends on a param or a grad input */
    CLD_TF_GRAD_INPUT = 1u << 4, /* input that wants its gradient */
};

#define CLD_MAX_SRC 4
struct cld_tensor {
    int id;                       /* position in g->nodes */
    const cld_op_def *op;         /* NULL for inputs and params */
    int ndim;
    int shape[CLD_MAX_DIMS];
    size_t n;                     /* element count */
    cld_tensor *src[CLD_MAX_SRC];
    int nsrc;
    int ip[8];                    /* integer op parameters */
    float fp[8];                  /* float op parameters */
    unsigned flags;
    int param_index;              /* for params, and for param-grad sinks */
    char name[96];
    size_t ws;                    /* workspace floats the op needs */
    /* set by the planner */
    cl_mem buf;
    size_t off;                   /* in floats */
    size_t ws_off;                /* workspace offset in g->arena, floats */
    cld_tensor *grad;             /* gradient tensor during/after backward */
};

/* Create a node of op `op` with shape and sources (NULL-terminated list
 * can be shorter than CLD_MAX_SRC: pass nsrc). Fails on NULL sources. */
cld_status cld__node(cld_graph *g, const cld_op_def *op, int ndim, const int *shape, int nsrc,
                     cld_tensor *const *src, cld_tensor **out);
/* Backward from a non-scalar y with a given seed gradient dy (an input of
 * y's size): used by the op tests to get J^T r directly. */
cld_status cld__graph_backward_seed(cld_graph *g, cld_tensor *y, cld_tensor *dy);
/* Accumulate `grad` into src's gradient (no-op if src needs no grad). */
cld_status cld__grad_add(cld_graph *g, cld_tensor *src, cld_tensor *grad);
/* Shape to text, e.g. "(3, 64, 28, 28)", in a caller buffer. */
const char *cld__shape_str(const cld_tensor *t, char *buf, size_t len);
/* Fail with CLD_ERR_SHAPE: "op: message (shapes of a, b)". */
cld_status cld__shape_fail(const char *op, const char *msg, const cld_tensor *a,
                           const cld_tensor *b);

cld_ctx *cld__graph_ctx(const cld_graph *g);
uint64_t cld__graph_seed(const cld_graph *g);
/* Arena buffer of the graph (for workspaces). */
cl_mem cld__graph_arena(const cld_graph *g);
/* Node i in execution order (0 <= i < n_nodes), else NULL. For tests. */
cld_tensor *cld__graph_node(const cld_graph *g, int i);

/* Element-wise helpers used by several ops' backward passes (ops_basic.c). */
extern const cld_op_def cld__op_add, cld__op_mul, cld__op_scale, cld__op_fill;
/* y = sum over batch and spatial of x: (N,C,H,W) -> shape of `like` ((C) or (1,C,1,1)...). */
cld_status cld__reduce_to(cld_graph *g, cld_tensor *x, const cld_tensor *like, cld_tensor **y);
/* y = silu(group_norm(x)) in one pass, as cld_op_group_norm then cld_op_silu (ops_norm.c). */
cld_status cld__op_group_norm_silu(cld_graph *g, cld_tensor *x, cld_tensor *gamma,
                                   cld_tensor *beta, int groups, float eps, cld_tensor **y);

/* ---------------------------------------------------------------- params */
typedef struct cld__param {
    char name[96];
    int ndim;
    int shape[CLD_MAX_DIMS];
    size_t n, off;
    cld_init init;
    float scale;
} cld__param;

struct cld_params {
    cld_ctx *ctx;
    cld__param *items;
    int count, cap;
    size_t total;
    uint64_t seed;
    int allocated;
    cl_mem values, grads, m, v;
};

/* Host-side deterministic RNG (splitmix64 / Box-Muller), for init and tests. */
uint64_t cld__splitmix64(uint64_t *state);
double cld__rand_uniform(uint64_t *state);   /* [0, 1) */
double cld__rand_normal(uint64_t *state);

/* JPEG through libjpeg (jpeg.c): is f (at its current position) a JPEG;
 * header and optionally pixels (8-bit, nc channels, malloc'd). */
int cld__is_jpeg(FILE *f);
cld_status cld__jpeg_read(FILE *f, const char *path, int nc, size_t max_pixels, int *w, int *h, int *c,
                          unsigned char **px);

#endif
