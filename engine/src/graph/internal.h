/* Graph layer internals: tensors (nodes), op definitions, the graph's
 * accessors for ops, and the parameter store. Builds on runtime/internal.h.
 * Not installed. */
#ifndef CLD_GRAPH_INTERNAL_H
#define CLD_GRAPH_INTERNAL_H

#include "runtime/internal.h"

/* ---------------------------------------------------------------- tensors */
/* A kernel an op launches: `name` in cl/<program>.cl (default options). */
typedef struct cld_kernel_ref {
    const char *program, *name;
} cld_kernel_ref;
#define CLD_OP_KERNELS 14 /* most kernels one op def lists */
/* An op def's kernel list, for its initializer: CLD_KERNELS({"basic", "add"}). */
#define CLD_KERNELS(...) ((const cld_kernel_ref[]){__VA_ARGS__, {NULL, NULL}})

typedef struct cld_op_def {
    const char *name;
    /* Enqueue the kernels computing t from t->src (buffers are planned);
     * they are t->kern[i], resolved by the planner from `kernels`. */
    cld_status (*forward)(cld_graph *g, cld_tensor *t);
    /* Given t->grad, add the gradients of t's sources with cld__grad_add. */
    cld_status (*backward)(cld_graph *g, cld_tensor *t);
    int inplace; /* output may take over src[0]'s buffer at its last use */
    int is_view; /* output aliases src[0]'s buffer (reshape)              */
    /* The kernels forward launches ({NULL, NULL}-terminated, at most
     * CLD_OP_KERNELS; NULL if none): cld_graph_plan looks each up once into
     * t->kern[i], so running a plan looks no kernel up. */
    const cld_kernel_ref *kernels;
    /* Which of them node t launches (bit i: kernels[i]), so that a program
     * no node needs is not built; NULL: all of them. */
    unsigned (*kernels_used)(const cld_graph *g, const cld_tensor *t);
} cld_op_def;

enum {
    CLD_TF_INPUT = 1u << 0,
    CLD_TF_PARAM = 1u << 1,
    CLD_TF_OUTPUT = 1u << 2,     /* pinned by cld_graph_set_output */
    CLD_TF_NEEDS_GRAD = 1u << 3, /* depends on a param or a grad input */
    CLD_TF_GRAD_INPUT = 1u << 4, /* input that wants its gradient */
    CLD_TF_GRAD_SINK = 1u << 5,  /* adds a parameter's gradient into the store */
    /* a gradient node whose forward can add one more source, another
     * contribution to the same gradient, into its output: cld__grad_add
     * then sums the two that way instead of with a node of its own (once;
     * not with a source in src[0]'s block, which the node may take over) */
    CLD_TF_ACC_OK = 1u << 6,
};

#define CLD_MAX_SRC 5 /* group_norm_grad_x: dy, x, coef, part and a gradient to add */
struct cld_tensor {
    int id;               /* position in g->nodes */
    const cld_op_def *op; /* NULL for inputs and params */
    int ndim;
    int shape[CLD_MAX_DIMS];
    size_t n; /* element count */
    cld_tensor *src[CLD_MAX_SRC];
    int nsrc;
    int ip[8];   /* integer op parameters */
    float fp[8]; /* float op parameters */
    unsigned flags;
    int param_index; /* for params, and for param-grad sinks */
    char name[96];
    size_t ws; /* workspace floats the op needs */
    /* set by the planner */
    cl_mem buf;
    size_t off;                     /* in floats */
    size_t ws_off;                  /* workspace offset in ws_buf, floats */
    cl_mem ws_buf;                  /* the arena chunk holding the workspace */
    cl_kernel kern[CLD_OP_KERNELS]; /* op->kernels, those op->kernels_used says (else NULL) */
    cld_tensor *grad;               /* gradient tensor during/after backward */
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
cld_status cld__shape_fail(const char *op, const char *msg, const cld_tensor *a, const cld_tensor *b);

cld_ctx *cld__graph_ctx(const cld_graph *g);
uint64_t cld__graph_seed(const cld_graph *g);
/* Chunk k of the graph's arena (NULL before planning or past the last);
 * ops reach their workspace through t->ws_buf. For tests. */
cl_mem cld__graph_arena(const cld_graph *g, int k);
/* Node i in execution order (0 <= i < n_nodes), else NULL. For tests. */
cld_tensor *cld__graph_node(const cld_graph *g, int i);

/* 1-D launch over n items for node t (named in errors). The geometry depends
 * on the device (CPU: few one-item work-groups), so the kernel must cover
 * [0, n) itself with the FOR_ITEMS loop of cl/basic.cl, never one item per
 * work-item with an `if (i < n)` guard, unless it declares
 * reqd_work_group_size(S, 1, 1): then one work-item per item, item
 * CLD_ITEM, through cld__launch_items (runtime/internal.h). */
cld_status cld__launch1d(cld_graph *g, cl_kernel k, const cld_tensor *t, size_t n);

/* ---------------------------------------------------------------- the graph
 * Shared by graph.c (nodes), autodiff.c, planner.c and executor.c. */
#define CLD_ALIGN_FLOATS 32 /* 128-byte alignment of every planned block */

typedef struct cld__block {
    size_t off, len;
} cld__block;

struct cld_graph {
    cld_ctx *ctx;
    cld_params *params;
    cld_tensor **nodes;
    int n, cap;
    int n_fwd; /* nodes before cld_graph_backward, or n */
    int has_backward;
    int planned;
    int poison;
    uint64_t seed;
    cld_grad_hook grad_hook; /* called after each gradient sink is enqueued */
    void *grad_hook_user;
    cl_mem *arenas; /* activations and workspaces: n_arenas chunks */
    cl_mem *pinned; /* inputs, outputs, input gradients: n_pinned chunks */
    int n_arenas, n_pinned;
    size_t chunk_floats; /* planned offset k * chunk_floats + o: offset o of chunk k */
    /* poison ranges released after each node: node i owns [pstart[i], pstart[i+1]),
     * planned offsets (as above) */
    cld__block *pranges;
    int *pstart;
    cld_plan_stats stats;
};

/* The tensor whose buffer t aliases (t itself unless t is a view). */
static inline cld_tensor *cld__root_of(cld_tensor *t)
{
    while (t->op && t->op->is_view) t = t->src[0];
    return t;
}

/* Inputs, params and outputs: placed outside the arena, never reused. */
static inline int cld__is_pinned(const cld_tensor *t)
{
    return (t->flags & (CLD_TF_INPUT | CLD_TF_PARAM | CLD_TF_OUTPUT)) != 0;
}

/* y = fp[0] everywhere: autodiff's seed, and ops' zero padding (autodiff.c). */
extern const cld_op_def cld__op_fill;

/* ---------------------------------------------------------------- params */
typedef struct cld__param {
    char name[96];
    int ndim;
    int shape[CLD_MAX_DIMS];
    size_t n, off;
    cld_init init;
    float scale;
} cld__param;

/* Offsets are in one layout of `total` floats split into chunks of `chunk`
 * floats (the context's allocation limit): offset k * chunk + o is offset o
 * of buffer k of each kind; no parameter crosses a chunk. */
struct cld_params {
    cld_ctx *ctx;
    cld__param *items;
    int count, cap;
    size_t total, chunk;
    uint64_t seed;
    int allocated;       /* values */
    int train_allocated; /* grads, m, v: only for a store that is trained */
    int n_chunks;
    cl_mem *values, *grads, *m, *v; /* n_chunks buffers each */
};

/* Parameter `index`'s buffer (its gradient's if grad) and offset in it. */
cld_status cld__params_place(cld_params *p, int index, int grad, cl_mem *buf, size_t *off);
/* The gradient and AdamW buffers (after the values), on first need. */
cld_status cld__params_alloc_train(cld_params *p);
/* 1 if the gradient and AdamW buffers exist (for tests). */
int cld__params_has_train(const cld_params *p);
/* Floats of chunk k. */
static inline size_t cld__params_chunk_len(const cld_params *p, int k)
{
    size_t start = (size_t)k * p->chunk;
    return p->total - start < p->chunk ? p->total - start : p->chunk;
}
/* All p->total floats of chunked buffers `bufs` (one kind of p or of a
 * store of p's layout) from or to host (p's layout). */
cld_status cld__params_rw_all(const cld_params *p, cl_mem *bufs, int write, float *host, const char *what);

#endif
