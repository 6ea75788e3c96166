/* The graph executor: node creation, reverse-mode autodiff, memory planning
 * and in-order execution. Ops live in ops_*.c; each defines a cld_op_def with
 * its forward and backward side by side. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CLD_ALIGN_FLOATS 32 /* 128-byte alignment of every planned block */

typedef struct cld__block {
    size_t off, len;
} cld__block;

struct cld_graph {
    cld_ctx *ctx;
    cld_params *params;
    cld_tensor **nodes;
    int n, cap;
    int n_fwd;          /* nodes before cld_graph_backward, or n */
    int has_backward;
    int planned;
    int poison;
    uint64_t seed;
    cl_mem arena;       /* activations and workspaces */
    cl_mem pinned;      /* inputs, outputs, input gradients */
    /* poison ranges released after each node: node i owns [pstart[i], pstart[i+1]) */
    cld__block *pranges;
    int *pstart;
    cld_plan_stats stats;
};

cld_ctx *cld__graph_ctx(const cld_graph *g) { return g->ctx; }
uint64_t cld__graph_seed(const cld_graph *g) { return g->seed; }
cl_mem cld__graph_arena(const cld_graph *g) { return g->arena; }

/* A 1-D kernel covering items [0, n) with the FOR_ITEMS loop (cl/basic.cl):
 * work-group j of G takes the contiguous range [j*per, (j+1)*per), per =
 * ceil(n / G), its work-items interleaved in it; right for any geometry.
 * CPUs: one work-item per group (PoCL runs it as a plain loop: no per-item
 * overhead), 8 groups per compute unit. Else 64 per group, up to 1024 groups
 * per unit. CLD_LAUNCH1D_LS (a power of two up to 256) and CLD_LAUNCH1D_GROUPS
 * override them, so the tests can run the other shapes.
 * A kernel declaring reqd_work_group_size(S, 1, 1) instead gets one work-item
 * per item, in groups of S (ceil(n / S) groups, no override): for scalar code
 * that PoCL vectorizes across the work-items of a group (conv.cl's pack). */
cld_status cld__launch1d(cld_graph *g, cl_kernel k, const cld_tensor *t, size_t n)
{
    const cld_device_info *d = &g->ctx->info;
    size_t cu = d->compute_units ? d->compute_units : 1;
    size_t ls = d->is_cpu ? 1 : 64, cap = d->is_cpu ? 8 * cu : 1024 * cu, reqd[3] = {0, 0, 0};
    cl_int err = clGetKernelWorkGroupInfo(k, d->device, CL_KERNEL_COMPILE_WORK_GROUP_SIZE,
                                          sizeof reqd, reqd, NULL);
    if (err == CL_SUCCESS && reqd[0] > 0) {
        ls = reqd[0];
        cap = (n + ls - 1) / ls;
    } else {
        const char *e = getenv("CLD_LAUNCH1D_LS");
        long v = e && *e ? strtol(e, NULL, 10) : 0;
        if (v >= 1 && v <= 256 && !(v & (v - 1))) ls = (size_t)v;
        e = getenv("CLD_LAUNCH1D_GROUPS");
        v = e && *e ? strtol(e, NULL, 10) : 0;
        if (v >= 1) cap = (size_t)v;
    }
    size_t groups = (n + ls - 1) / ls;
    if (groups > cap) groups = cap;
    size_t gs = groups * ls;
    return cld__launch(g->ctx, k, t->name, 1, &gs, &ls);
}
cld_tensor *cld__graph_node(const cld_graph *g, int i) { return g && i >= 0 && i < g->n ? g->nodes[i] : NULL; }

const char *cld__shape_str(const cld_tensor *t, char *buf, size_t len)
{
    if (!t) {
        snprintf(buf, len, "(null)");
        return buf;
    }
    size_t k = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < t->ndim && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, i ? ", %d" : "%d", t->shape[i]);
    if (k < len) snprintf(buf + k, len - k, ")");
    return buf;
}

cld_status cld__shape_fail(const char *op, const char *msg, const cld_tensor *a, const cld_tensor *b)
{
    char sa[96], sb[96];
    if (b)
        return cld__fail(CLD_ERR_SHAPE, "%s: %s: shapes %s and %s", op, msg,
                         cld__shape_str(a, sa, sizeof sa), cld__shape_str(b, sb, sizeof sb));
    return cld__fail(CLD_ERR_SHAPE, "%s: %s: shape %s", op, msg, cld__shape_str(a, sa, sizeof sa));
}

cld_status cld_graph_create(cld_ctx *ctx, cld_params *params, cld_graph **out)
{
    if (!ctx || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_graph_create: NULL argument");
    cld_graph *g = calloc(1, sizeof *g);
    if (!g) return cld__fail(CLD_ERR_NOMEM, "cld_graph_create: out of host memory");
    g->ctx = ctx;
    g->params = params;
    const char *p = getenv("CLD_POISON");
    g->poison = p && *p && strcmp(p, "0") != 0;
    *out = g;
    return CLD_OK;
}

cld_status cld_graph_free(cld_graph *g)
{
    if (!g) return CLD_OK;
    for (int i = 0; i < g->n; i++) free(g->nodes[i]);
    free(g->nodes);
    free(g->pranges);
    free(g->pstart);
    if (g->arena) clReleaseMemObject(g->arena);
    if (g->pinned) clReleaseMemObject(g->pinned);
    free(g);
    return CLD_OK;
}

cld_status cld_graph_set_seed(cld_graph *g, uint64_t seed)
{
    if (!g) return cld__fail(CLD_ERR_INVALID_ARG, "cld_graph_set_seed: NULL graph");
    g->seed = seed;
    return CLD_OK;
}

cld_status cld_graph_set_poison(cld_graph *g, int on)
{
    if (!g) return cld__fail(CLD_ERR_INVALID_ARG, "cld_graph_set_poison: NULL graph");
    if (g->planned) return cld__fail(CLD_ERR_STATE, "cld_graph_set_poison: graph already planned");
    g->poison = on;
    return CLD_OK;
}

static cld_status push_node(cld_graph *g, cld_tensor *t)
{
    if (g->planned) {
        cld_status s = cld__fail(CLD_ERR_STATE, "graph already planned: cannot add node '%s'",
                                 t->op ? t->op->name : "input");
        free(t);
        return s;
    }
    if (g->n == g->cap) {
        int cap = g->cap ? g->cap * 2 : 256;
        cld_tensor **nn = realloc(g->nodes, (size_t)cap * sizeof *nn);
        if (!nn) {
            free(t);
            return cld__fail(CLD_ERR_NOMEM, "graph: out of host memory");
        }
        g->nodes = nn;
        g->cap = cap;
    }
    t->id = g->n;
    g->nodes[g->n++] = t;
    return CLD_OK;
}

static cld_status new_tensor(int ndim, const int *shape, const char *what, cld_tensor **out)
{
    if (ndim < 1 || ndim > CLD_MAX_DIMS || !shape)
        return cld__fail(CLD_ERR_SHAPE, "%s: rank %d not in 1..%d", what, ndim, CLD_MAX_DIMS);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0)
            return cld__fail(CLD_ERR_SHAPE, "%s: dimension %d is %d (must be > 0)", what, i, shape[i]);
        n *= (size_t)shape[i];
    }
    cld_tensor *t = calloc(1, sizeof *t);
    if (!t) return cld__fail(CLD_ERR_NOMEM, "%s: out of host memory", what);
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof(int));
    t->n = n;
    t->param_index = -1;
    *out = t;
    return CLD_OK;
}

cld_status cld__node(cld_graph *g, const cld_op_def *op, int ndim, const int *shape, int nsrc,
                     cld_tensor *const *src, cld_tensor **out)
{
    if (!g || !op || !out) return cld__fail(CLD_ERR_INVALID_ARG, "graph node: NULL argument");
    *out = NULL;
    if (nsrc < 0 || nsrc > CLD_MAX_SRC)
        return cld__fail(CLD_ERR_INVALID_ARG, "%s: %d sources", op->name, nsrc);
    for (int i = 0; i < nsrc; i++)
        if (!src[i]) return cld__fail(CLD_ERR_INVALID_ARG, "%s: input %d is NULL", op->name, i);
    cld_tensor *t;
    CLD_TRY(new_tensor(ndim, shape, op->name, &t));
    t->op = op;
    t->nsrc = nsrc;
    for (int i = 0; i < nsrc; i++) {
        t->src[i] = src[i];
        if (src[i]->flags & CLD_TF_NEEDS_GRAD) t->flags |= CLD_TF_NEEDS_GRAD;
    }
    snprintf(t->name, sizeof t->name, "%s", op->name);
    CLD_TRY(push_node(g, t));
    *out = t;
    return CLD_OK;
}

cld_status cld_graph_input(cld_graph *g, const char *name, int ndim, const int *shape,
                           int requires_grad, cld_tensor **out)
{
    if (!g || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_graph_input: NULL argument");
    cld_tensor *t;
    CLD_TRY(new_tensor(ndim, shape, "cld_graph_input", &t));
    t->flags = CLD_TF_INPUT | (requires_grad ? CLD_TF_NEEDS_GRAD | CLD_TF_GRAD_INPUT : 0);
    snprintf(t->name, sizeof t->name, "%s", name ? name : "input");
    CLD_TRY(push_node(g, t));
    *out = t;
    return CLD_OK;
}

cld_status cld_graph_param(cld_graph *g, const char *name, int ndim, const int *shape,
                           cld_init init, float scale, cld_tensor **out)
{
    if (!g || !name || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_graph_param: NULL argument");
    if (!g->params) return cld__fail(CLD_ERR_STATE, "cld_graph_param: graph has no parameter store");
    int idx;
    CLD_TRY(cld_params_declare(g->params, name, ndim, shape, init, scale, &idx));
    for (int i = 0; i < g->n; i++)
        if ((g->nodes[i]->flags & CLD_TF_PARAM) && g->nodes[i]->param_index == idx && !g->nodes[i]->op) {
            *out = g->nodes[i];
            return CLD_OK;
        }
    cld_tensor *t;
    CLD_TRY(new_tensor(ndim, shape, "cld_graph_param", &t));
    t->flags = CLD_TF_PARAM | CLD_TF_NEEDS_GRAD;
    t->param_index = idx;
    snprintf(t->name, sizeof t->name, "%s", name);
    CLD_TRY(push_node(g, t));
    *out = t;
    return CLD_OK;
}

static cld_tensor *root_of(cld_tensor *t)
{
    while (t->op && t->op->is_view) t = t->src[0];
    return t;
}

cld_status cld_graph_set_output(cld_graph *g, cld_tensor *t)
{
    if (!g || !t) return cld__fail(CLD_ERR_INVALID_ARG, "cld_graph_set_output: NULL argument");
    if (g->planned) return cld__fail(CLD_ERR_STATE, "cld_graph_set_output: graph already planned");
    for (cld_tensor *u = t;; u = u->src[0]) {
        u->flags |= CLD_TF_OUTPUT;
        if (!(u->op && u->op->is_view)) break;
    }
    return CLD_OK;
}

/* ------------------------------------------------------------- autodiff */

static cld_status backward_from(cld_graph *g);

cld_status cld__grad_add(cld_graph *g, cld_tensor *src, cld_tensor *grad)
{
    if (!(src->flags & CLD_TF_NEEDS_GRAD)) return CLD_OK;
    if (!grad) return cld__fail(CLD_ERR_INVALID_ARG, "gradient of '%s' is NULL", src->name);
    if (grad->n != src->n) return cld__shape_fail("gradient", "size differs from its tensor", grad, src);
    if (grad->ndim != src->ndim || memcmp(grad->shape, src->shape, (size_t)src->ndim * sizeof(int)))
        CLD_TRY(cld_op_reshape(g, grad, src->ndim, src->shape, &grad));
    if (!src->grad) {
        src->grad = grad;
        return CLD_OK;
    }
    cld_tensor *sum;
    CLD_TRY(cld_op_add(g, src->grad, grad, &sum));
    src->grad = sum;
    return CLD_OK;
}

/* Sink writing a parameter gradient into the store: grads[param] += src. */
static cld_status param_grad_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k;
    CLD_TRY(cld__kernel(g->ctx, "basic", "axpy", &k));
    cl_mem xb = t->src[0]->buf;
    int n = (int)t->n, yo = (int)t->off, xo = (int)t->src[0]->off;
    CLD_TRY(cld__kargs(k, "param grad", "bibiif", t->buf, yo, xb, xo, n, 1.0));
    return cld__launch1d(g, k, t, t->n);
}
static const cld_op_def op_param_grad = {"param_grad", param_grad_forward, NULL, 0, 0};

cld_status cld_graph_backward(cld_graph *g, cld_tensor *loss)
{
    if (!g || !loss) return cld__fail(CLD_ERR_INVALID_ARG, "cld_graph_backward: NULL argument");
    if (g->has_backward) return cld__fail(CLD_ERR_STATE, "cld_graph_backward: called twice");
    if (g->planned) return cld__fail(CLD_ERR_STATE, "cld_graph_backward: graph already planned");
    if (loss->n != 1) return cld__shape_fail("cld_graph_backward", "loss must have one element", loss, NULL);
    g->n_fwd = g->n;
    g->has_backward = 1;
    if (!(loss->flags & CLD_TF_NEEDS_GRAD)) return CLD_OK;
    cld_tensor *one;
    CLD_TRY(cld__node(g, &cld__op_fill, loss->ndim, loss->shape, 0, NULL, &one));
    one->fp[0] = 1.0f;
    loss->grad = one;
    return backward_from(g);
}

/* Walk the forward nodes in reverse, then add the parameter-gradient sinks
 * and pin the gradients of inputs that asked for one. */
static cld_status backward_from(cld_graph *g)
{
    for (int i = g->n_fwd - 1; i >= 0; i--) {
        cld_tensor *t = g->nodes[i];
        if (!t->grad || !t->op || !(t->flags & CLD_TF_NEEDS_GRAD)) continue;
        if (!t->op->backward)
            return cld__fail(CLD_ERR_STATE, "op '%s' has no backward", t->op->name);
        CLD_TRY(t->op->backward(g, t));
    }
    for (int i = 0; i < g->n_fwd; i++) {
        cld_tensor *t = g->nodes[i];
        if ((t->flags & CLD_TF_PARAM) && !t->op && t->grad) {
            cld_tensor *sink;
            CLD_TRY(cld__node(g, &op_param_grad, t->ndim, t->shape, 1, &t->grad, &sink));
            sink->flags |= CLD_TF_PARAM;
            sink->param_index = t->param_index;
            snprintf(sink->name, sizeof sink->name, "grad:%.90s", t->name);
        } else if ((t->flags & CLD_TF_GRAD_INPUT) && t->grad) {
            CLD_TRY(cld_graph_set_output(g, t->grad));
        }
    }
    return CLD_OK;
}

cld_status cld__graph_backward_seed(cld_graph *g, cld_tensor *y, cld_tensor *dy)
{
    if (!g || !y || !dy) return cld__fail(CLD_ERR_INVALID_ARG, "backward_seed: NULL argument");
    if (g->has_backward || g->planned) return cld__fail(CLD_ERR_STATE, "backward_seed: bad state");
    if (dy->n != y->n) return cld__shape_fail("backward_seed", "seed gradient size differs", dy, y);
    g->n_fwd = g->n;
    g->has_backward = 1;
    y->grad = dy;
    return backward_from(g);
}

cld_status cld_tensor_grad(const cld_tensor *t, cld_tensor **grad)
{
    if (!t || !grad) return cld__fail(CLD_ERR_INVALID_ARG, "cld_tensor_grad: NULL argument");
    if (!(t->flags & CLD_TF_GRAD_INPUT) || !t->grad)
        return cld__fail(CLD_ERR_STATE, "cld_tensor_grad: '%s' has no gradient (input without "
                         "requires_grad, not connected to the loss, or no backward)", t->name);
    *grad = t->grad;
    return CLD_OK;
}

/* ------------------------------------------------------- memory planning */

typedef struct planner {
    cld__block *free;
    int nfree, cap;
    size_t top, peak;
} planner;

static size_t align_up(size_t n) { return (n + CLD_ALIGN_FLOATS - 1) / CLD_ALIGN_FLOATS * CLD_ALIGN_FLOATS; }

static size_t pl_alloc(planner *p, size_t len)
{
    len = align_up(len);
    int best = -1;
    for (int i = 0; i < p->nfree; i++)
        if (p->free[i].len >= len && (best < 0 || p->free[i].len < p->free[best].len)) best = i;
    if (best >= 0) {
        size_t off = p->free[best].off;
        p->free[best].off += len;
        p->free[best].len -= len;
        if (!p->free[best].len) {
            memmove(&p->free[best], &p->free[best + 1], (size_t)(p->nfree - best - 1) * sizeof *p->free);
            p->nfree--;
        }
        return off;
    }
    size_t off = p->top;
    p->top += len;
    if (p->top > p->peak) p->peak = p->top;
    return off;
}

static int pl_free(planner *p, size_t off, size_t len)
{
    len = align_up(len);
    if (p->nfree == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        cld__block *nf = realloc(p->free, (size_t)cap * sizeof *nf);
        if (!nf) return -1;
        p->free = nf;
        p->cap = cap;
    }
    int i = 0;
    while (i < p->nfree && p->free[i].off < off) i++;
    memmove(&p->free[i + 1], &p->free[i], (size_t)(p->nfree - i) * sizeof *p->free);
    p->free[i] = (cld__block){off, len};
    p->nfree++;
    if (i + 1 < p->nfree && p->free[i].off + p->free[i].len == p->free[i + 1].off) {
        p->free[i].len += p->free[i + 1].len;
        memmove(&p->free[i + 1], &p->free[i + 2], (size_t)(p->nfree - i - 2) * sizeof *p->free);
        p->nfree--;
    }
    if (i > 0 && p->free[i - 1].off + p->free[i - 1].len == p->free[i].off) {
        p->free[i - 1].len += p->free[i].len;
        memmove(&p->free[i], &p->free[i + 1], (size_t)(p->nfree - i - 1) * sizeof *p->free);
        p->nfree--;
        i--;
    }
    if (p->free[i].off + p->free[i].len == p->top) { /* give the tail back */
        p->top = p->free[i].off;
        p->nfree--;
    }
    return 0;
}

static int is_pinned(const cld_tensor *t)
{
    return (t->flags & (CLD_TF_INPUT | CLD_TF_PARAM | CLD_TF_OUTPUT)) != 0;
}

static cld_status record_poison(cld_graph *g, int *np, int *capp, size_t off, size_t len)
{
    if (!g->poison) return CLD_OK;
    if (*np == *capp) {
        int cap = *capp ? *capp * 2 : 256;
        cld__block *nr = realloc(g->pranges, (size_t)cap * sizeof *nr);
        if (!nr) return cld__fail(CLD_ERR_NOMEM, "planner: out of host memory");
        g->pranges = nr;
        *capp = cap;
    }
    g->pranges[(*np)++] = (cld__block){off, align_up(len)};
    return CLD_OK;
}

cld_status cld_graph_plan(cld_graph *g, cld_plan_stats *stats)
{
    if (!g) return cld__fail(CLD_ERR_INVALID_ARG, "cld_graph_plan: NULL graph");
    if (g->planned) {
        if (stats) *stats = g->stats;
        return CLD_OK;
    }
    if (g->params && g->params->count) CLD_TRY(cld_params_alloc(g->params));
    int n = g->n;
    int *last = calloc((size_t)n + 1, sizeof *last);
    int *owner = calloc((size_t)n + 1, sizeof *owner); /* 1 if the node owns its block */
    g->pstart = calloc((size_t)n + 1, sizeof *g->pstart);
    if (!last || !owner || !g->pstart) {
        free(last);
        free(owner);
        return cld__fail(CLD_ERR_NOMEM, "planner: out of host memory");
    }
    /* last use of each root (views extend their root's life) */
    for (int i = 0; i < n; i++) last[i] = i;
    for (int i = 0; i < n; i++) {
        cld_tensor *t = g->nodes[i];
        for (int s = 0; s < t->nsrc; s++) {
            int r = root_of(t->src[s])->id;
            if (last[r] < i) last[r] = i;
        }
        if (t->op && t->op->is_view) {
            int r = root_of(t)->id;
            if (last[r] < i) last[r] = i;
        }
    }
    /* pinned tensors: one region each in the pinned buffer */
    size_t pinned_n = 0;
    cld_plan_stats st = {0};
    for (int i = 0; i < n; i++) {
        cld_tensor *t = g->nodes[i];
        if ((t->flags & (CLD_TF_INPUT | CLD_TF_OUTPUT)) && !(t->flags & CLD_TF_PARAM) &&
            !(t->op && t->op->is_view)) {
            t->off = pinned_n;
            pinned_n += align_up(t->n);
        }
    }
    st.pinned_bytes = pinned_n * sizeof(float);
    planner pl = {0};
    int np = 0, capp = 0;
    cld_status s = CLD_OK;
    for (int i = 0; i < n && s == CLD_OK; i++) {
        cld_tensor *t = g->nodes[i];
        g->pstart[i] = np;
        if (t->op && t->op->is_view) {
            /* aliases its source: resolved at run time from the root */
        } else if (is_pinned(t)) {
            /* placed above or in the params store */
        } else {
            cld_tensor *r0 = t->nsrc ? root_of(t->src[0]) : NULL;
            if (t->op && t->op->inplace && r0 && !is_pinned(r0) && owner[r0->id] &&
                last[r0->id] == i && align_up(r0->n) >= align_up(t->n) && r0->n == t->n) {
                t->off = r0->off;
                owner[r0->id] = 0;
                owner[i] = 1;
                st.n_inplace++;
            } else {
                t->off = pl_alloc(&pl, t->n);
                owner[i] = 1;
            }
            st.sum_bytes += align_up(t->n) * sizeof(float);
        }
        if (t->ws) {
            t->ws_off = pl_alloc(&pl, t->ws);
            st.sum_bytes += align_up(t->ws) * sizeof(float);
            if (pl_free(&pl, t->ws_off, t->ws)) s = cld__fail(CLD_ERR_NOMEM, "planner: out of host memory");
            if (s == CLD_OK) s = record_poison(g, &np, &capp, t->ws_off, t->ws);
        }
        /* release sources (and dead outputs) whose last use is this node */
        for (int k = 0; k <= t->nsrc && s == CLD_OK; k++) {
            cld_tensor *r = k < t->nsrc ? root_of(t->src[k]) : t;
            if (k == t->nsrc && (t->op && t->op->is_view)) break;
            if (!owner[r->id] || last[r->id] != i || is_pinned(r)) continue;
            owner[r->id] = 0;
            if (pl_free(&pl, r->off, r->n)) s = cld__fail(CLD_ERR_NOMEM, "planner: out of host memory");
            else s = record_poison(g, &np, &capp, r->off, r->n);
        }
    }
    g->pstart[n] = np;
    free(pl.free);
    free(last);
    free(owner);
    if (s != CLD_OK) return s;

    cl_int err;
    size_t arena_bytes = (pl.peak ? pl.peak : CLD_ALIGN_FLOATS) * sizeof(float);
    size_t pinned_bytes = (pinned_n ? pinned_n : CLD_ALIGN_FLOATS) * sizeof(float);
    if (arena_bytes > g->ctx->info.max_alloc_bytes || pinned_bytes > g->ctx->info.max_alloc_bytes)
        return cld__fail(CLD_ERR_NOMEM, "graph needs %zu bytes of activations, device '%s' allows "
                         "%llu per allocation: use a smaller batch",
                         arena_bytes, g->ctx->info.name, (unsigned long long)g->ctx->info.max_alloc_bytes);
    g->arena = clCreateBuffer(g->ctx->context, CL_MEM_READ_WRITE, arena_bytes, NULL, &err);
    CLD_TRY(cld__cl_check(err, "clCreateBuffer(graph arena)"));
    g->pinned = clCreateBuffer(g->ctx->context, CL_MEM_READ_WRITE, pinned_bytes, NULL, &err);
    CLD_TRY(cld__cl_check(err, "clCreateBuffer(graph inputs/outputs)"));

    /* bind buffers in node order (views follow their source) */
    for (int i = 0; i < n; i++) {
        cld_tensor *t = g->nodes[i];
        if (t->op && t->op->is_view) {
            t->buf = t->src[0]->buf;
            t->off = t->src[0]->off;
        } else if (t->flags & CLD_TF_PARAM) {
            size_t off;
            CLD_TRY(cld_params_info(g->params, t->param_index, NULL, NULL, NULL, &off));
            t->buf = t->op ? g->params->grads : g->params->values;
            t->off = off;
        } else if (t->flags & (CLD_TF_INPUT | CLD_TF_OUTPUT)) {
            t->buf = g->pinned;
        } else {
            t->buf = g->arena;
        }
    }
    st.peak_bytes = pl.peak * sizeof(float);
    st.param_bytes = g->params ? g->params->total * sizeof(float) : 0;
    st.n_nodes = n;
    g->stats = st;
    g->planned = 1;
    if (stats) *stats = st;
    return CLD_OK;
}

cld_status cld_graph_run(cld_graph *g)
{
    if (!g) return cld__fail(CLD_ERR_INVALID_ARG, "cld_graph_run: NULL graph");
    if (!g->planned) CLD_TRY(cld_graph_plan(g, NULL));
    const float nan = NAN;
    for (int i = 0; i < g->n; i++) {
        cld_tensor *t = g->nodes[i];
        if (t->op && t->op->forward) {
            cld_status s = t->op->forward(g, t);
            if (s != CLD_OK) return s;
        }
        for (int k = g->pstart[i]; k < g->pstart[i + 1]; k++) {
            cl_int err = clEnqueueFillBuffer(g->ctx->queue, g->arena, &nan, sizeof nan,
                                             g->pranges[k].off * sizeof(float),
                                             g->pranges[k].len * sizeof(float), 0, NULL, NULL);
            CLD_TRY(cld__cl_check(err, "clEnqueueFillBuffer(poison)"));
        }
    }
    return CLD_OK;
}

/* ---------------------------------------------------------------- tensors */

cld_status cld_tensor_shape(const cld_tensor *t, int *ndim, int shape[CLD_MAX_DIMS])
{
    if (!t) return cld__fail(CLD_ERR_INVALID_ARG, "cld_tensor_shape: NULL tensor");
    if (ndim) *ndim = t->ndim;
    if (shape)
        for (int i = 0; i < CLD_MAX_DIMS; i++) shape[i] = i < t->ndim ? t->shape[i] : 1;
    return CLD_OK;
}

cld_status cld_tensor_numel(const cld_tensor *t, size_t *n)
{
    if (!t || !n) return cld__fail(CLD_ERR_INVALID_ARG, "cld_tensor_numel: NULL argument");
    *n = t->n;
    return CLD_OK;
}

static cld_status check_readable(cld_graph *g, const cld_tensor *t, const char *what)
{
    if (!g || !t) return cld__fail(CLD_ERR_INVALID_ARG, "%s: NULL argument", what);
    if (!g->planned) return cld__fail(CLD_ERR_STATE, "%s: graph not planned", what);
    if (!is_pinned(root_of((cld_tensor *)t)))
        return cld__fail(CLD_ERR_STATE, "%s: '%s' is a temporary; mark it with cld_graph_set_output "
                         "before planning", what, t->name);
    return CLD_OK;
}

cld_status cld_tensor_write(cld_graph *g, cld_tensor *t, const float *src)
{
    CLD_TRY(check_readable(g, t, "cld_tensor_write"));
    cl_int err = clEnqueueWriteBuffer(g->ctx->queue, t->buf, CL_TRUE, t->off * sizeof(float),
                                      t->n * sizeof(float), src, 0, NULL, NULL);
    return cld__cl_check(err, "clEnqueueWriteBuffer(tensor)");
}

cld_status cld_tensor_read(cld_graph *g, cld_tensor *t, float *dst)
{
    CLD_TRY(check_readable(g, t, "cld_tensor_read"));
    cl_int err = clEnqueueReadBuffer(g->ctx->queue, t->buf, CL_TRUE, t->off * sizeof(float),
                                     t->n * sizeof(float), dst, 0, NULL, NULL);
    return cld__cl_check(err, "clEnqueueReadBuffer(tensor)");
}

cld_status cld_tensor_buffer(const cld_tensor *t, cl_mem *buf, size_t *offset)
{
    if (!t) return cld__fail(CLD_ERR_INVALID_ARG, "cld_tensor_buffer: NULL tensor");
    if (!t->buf) return cld__fail(CLD_ERR_STATE, "cld_tensor_buffer: '%s' not planned", t->name);
    if (buf) *buf = t->buf;
    if (offset) *offset = t->off;
    return CLD_OK;
}
