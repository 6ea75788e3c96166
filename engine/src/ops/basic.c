/* Element-wise ops: add and mul with broadcast, scale, SiLU, and the
 * broadcast-gradient reduction. Forward and backward side by side. (fill and
 * reshape are the graph layer's: autodiff emits them.) */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Launch an element-wise kernel of cl/basic.cl over t's n floats: its items
 * are chunks of 8 floats. */
static cld_status launch_chunks(cld_graph *g, cl_kernel k, const cld_tensor *t)
{
    return cld__launch1d(g, k, t, (t->n + 7) / 8);
}

/* ------------------------------------------------------- add / mul (broadcast)
 * ip[0] = mode (0 same shape, 1 per (n,c), 2 per c), ip[1] = inner, ip[2] = C */
static cld_status bcast_mode(const char *op, const cld_tensor *a, const cld_tensor *b, int *mode, int *inner,
                             int *C)
{
    *inner = 1;
    *C = a->ndim >= 2 ? a->shape[1] : 1;
    for (int i = 2; i < a->ndim; i++) *inner *= a->shape[i];
    if (a->ndim == b->ndim && !memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof(int))) {
        *mode = 0;
        return CLD_OK;
    }
    if (a->ndim >= 2) {
        int N = a->shape[0];
        int trailing_ones = 1;
        for (int i = 2; i < b->ndim; i++) trailing_ones &= b->shape[i] == 1;
        if (b->ndim >= 2 && trailing_ones && b->shape[1] == *C && b->shape[0] == N) {
            *mode = 1;
            return CLD_OK;
        }
        if (b->ndim >= 2 && trailing_ones && b->shape[1] == *C && b->shape[0] == 1) {
            *mode = 2;
            return CLD_OK;
        }
        if (b->ndim == 1 && b->shape[0] == *C) {
            *mode = 2;
            return CLD_OK;
        }
    }
    return cld__shape_fail(op, "cannot broadcast second operand over the first", a, b);
}

static cld_status binary_forward(cld_graph *g, cld_tensor *t, const char *kname)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *a = t->src[0], *b = t->src[1];
    CLD_TRY(cld__kargs(k, kname, "bibibiiiii", a->buf, (int)a->off, b->buf, (int)b->off, t->buf, (int)t->off,
                       (int)t->n, t->ip[0], t->ip[1], t->ip[2]));
    return launch_chunks(g, k, t);
}

static cld_status add_forward(cld_graph *g, cld_tensor *t) { return binary_forward(g, t, "add"); }
static cld_status mul_forward(cld_graph *g, cld_tensor *t) { return binary_forward(g, t, "mul"); }

static cld_status add_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *a = t->src[0], *b = t->src[1];
    CLD_TRY(cld__grad_add(g, a, t->grad));
    if (!(b->flags & CLD_TF_NEEDS_GRAD)) return CLD_OK;
    if (t->ip[0] == 0) return cld__grad_add(g, b, t->grad);
    cld_tensor *db;
    CLD_TRY(cld__reduce_to(g, t->grad, b, &db));
    return cld__grad_add(g, b, db);
}

static cld_status mul_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *a = t->src[0], *b = t->src[1];
    if (a->flags & CLD_TF_NEEDS_GRAD) {
        cld_tensor *da;
        CLD_TRY(cld_op_mul(g, t->grad, b, &da));
        CLD_TRY(cld__grad_add(g, a, da));
    }
    if (!(b->flags & CLD_TF_NEEDS_GRAD)) return CLD_OK;
    cld_tensor *prod;
    CLD_TRY(cld_op_mul(g, t->grad, a, &prod));
    if (t->ip[0] == 0) return cld__grad_add(g, b, prod);
    cld_tensor *db;
    CLD_TRY(cld__reduce_to(g, prod, b, &db));
    return cld__grad_add(g, b, db);
}

const cld_op_def cld__op_add = {"add", add_forward, add_backward, 1, 0, CLD_KERNELS({"basic", "add"}), NULL};
const cld_op_def cld__op_mul = {"mul", mul_forward, mul_backward, 1, 0, CLD_KERNELS({"basic", "mul"}), NULL};

static cld_status binary(cld_graph *g, const cld_op_def *op, cld_tensor *a, cld_tensor *b, cld_tensor **y)
{
    if (!g || !a || !b || !y) return cld__fail(CLD_ERR_INVALID_ARG, "%s: NULL argument", op->name);
    int mode = 0, inner = 1, C = 1;
    CLD_TRY(bcast_mode(op->name, a, b, &mode, &inner, &C));
    cld_tensor *src[2] = {a, b};
    CLD_TRY(cld__node(g, op, a->ndim, a->shape, 2, src, y));
    (*y)->ip[0] = mode;
    (*y)->ip[1] = inner;
    (*y)->ip[2] = C;
    return CLD_OK;
}

cld_status cld_op_add(cld_graph *g, cld_tensor *a, cld_tensor *b, cld_tensor **y)
{
    return binary(g, &cld__op_add, a, b, y);
}

cld_status cld_op_mul(cld_graph *g, cld_tensor *a, cld_tensor *b, cld_tensor **y)
{
    return binary(g, &cld__op_mul, a, b, y);
}

/* ------------------------------------------------- reduce to broadcast shape */
/* Work-group size of the row reductions: ctx->settings.reduce_ls (1 on
 * CPUs, 64 elsewhere, CLD_REDUCE_LS overrides it: runtime/settings.c). */
static size_t reduce_ls(const cld_ctx *ctx) { return ctx->settings.reduce_ls; }

static cld_status reduce_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *x = t->src[0];
    const cld_tensor *w = t->nsrc > 1 ? t->src[1] : x;
    size_t ls = reduce_ls(cld__graph_ctx(g)), gs = t->n * ls;
    CLD_TRY(cld__kargs(k, "reduce_rows", "bibiibiiiiil", x->buf, (int)x->off, w->buf, (int)w->off,
                       t->nsrc > 1, t->buf, (int)t->off, t->ip[0], t->ip[1], t->ip[2], t->ip[3],
                       ls * sizeof(float)));
    return cld__launch(cld__graph_ctx(g), k, t->name, 1, &gs, &ls);
}
static const cld_op_def op_reduce = {
    "reduce", reduce_forward, NULL, 0, 0, CLD_KERNELS({"basic", "reduce_rows"}), NULL};

cld_status cld__reduce_to(cld_graph *g, cld_tensor *x, const cld_tensor *like, cld_tensor **y)
{
    int mode = 0, inner = 1, C = 1;
    CLD_TRY(bcast_mode("reduce", x, like, &mode, &inner, &C));
    if (mode == 0) return cld__shape_fail("reduce", "nothing to reduce", x, like);
    CLD_TRY(cld__node(g, &op_reduce, like->ndim, like->shape, 1, &x, y));
    (*y)->ip[0] = x->shape[0];
    (*y)->ip[1] = C;
    (*y)->ip[2] = inner;
    (*y)->ip[3] = mode;
    return CLD_OK;
}

/* ----------------------------------------------------------------- scale */
static cld_status scale_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *x = t->src[0];
    CLD_TRY(cld__kargs(k, "scale", "bibiif", x->buf, (int)x->off, t->buf, (int)t->off, (int)t->n,
                       (double)t->fp[0]));
    return launch_chunks(g, k, t);
}

static cld_status scale_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *dx;
    CLD_TRY(cld_op_scale(g, t->grad, t->fp[0], &dx));
    return cld__grad_add(g, t->src[0], dx);
}
const cld_op_def cld__op_scale = {
    "scale", scale_forward, scale_backward, 1, 0, CLD_KERNELS({"basic", "scale"}), NULL};

cld_status cld_op_scale(cld_graph *g, cld_tensor *x, float alpha, cld_tensor **y)
{
    if (!x) return cld__fail(CLD_ERR_INVALID_ARG, "scale: NULL input");
    CLD_TRY(cld__node(g, &cld__op_scale, x->ndim, x->shape, 1, &x, y));
    (*y)->fp[0] = alpha;
    return CLD_OK;
}

/* ------------------------------------------------------------------ SiLU */
static cld_status silu_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *x = t->src[0];
    CLD_TRY(cld__kargs(k, "silu", "bibii", x->buf, (int)x->off, t->buf, (int)t->off, (int)t->n));
    return launch_chunks(g, k, t);
}

static cld_status silu_grad_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *x = t->src[0], *dy = t->src[1];
    CLD_TRY(cld__kargs(k, "silu_bwd", "bibibii", x->buf, (int)x->off, dy->buf, (int)dy->off, t->buf,
                       (int)t->off, (int)t->n));
    return launch_chunks(g, k, t);
}
static const cld_op_def op_silu_grad = {
    "silu_grad", silu_grad_forward, NULL, 0, 0, CLD_KERNELS({"basic", "silu_bwd"}), NULL};

static cld_status silu_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *src[2] = {t->src[0], t->grad}, *dx;
    CLD_TRY(cld__node(g, &op_silu_grad, t->ndim, t->shape, 2, src, &dx));
    return cld__grad_add(g, t->src[0], dx);
}
static const cld_op_def op_silu = {
    "silu", silu_forward, silu_backward, 0, 0, CLD_KERNELS({"basic", "silu_fwd"}), NULL};

cld_status cld_op_silu(cld_graph *g, cld_tensor *x, cld_tensor **y)
{
    if (!x) return cld__fail(CLD_ERR_INVALID_ARG, "silu: NULL input");
    return cld__node(g, &op_silu, x->ndim, x->shape, 1, &x, y);
}
