/* Normalisation ops: group norm (optionally fused with SiLU) and softmax.
 * Forward and backward side by side; kernels in cl/norm.cl, cl/softmax.cl.
 *
 * Group norm is two nodes: "group_norm_stats" (N, C, 4) holds per (n, c)
 * (rstd gamma[c], beta[c], mean, rstd) of its group and stays alive for the
 * backward pass; "group_norm" applies it element-wise (in place when x is
 * dead afterwards). The coefficients carry gamma and beta so that every
 * backward node fits in CLD_MAX_SRC sources. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>

/* Work-group size of the row reductions: ctx->settings.reduce_ls (1 on
 * CPUs, 64 elsewhere, CLD_REDUCE_LS overrides it: runtime/settings.c). */
static size_t reduce_ls(const cld_ctx *ctx) { return ctx->settings.reduce_ls; }

/* Launch kernel k with one work-group per row; `part_bytes` of local memory
 * per work-item go in argument `part_arg` (skipped if part_bytes is 0). */
static cld_status launch_rows(cld_graph *g, cl_kernel k, const cld_tensor *t, size_t rows, cl_uint part_arg,
                              size_t part_bytes)
{
    cld_ctx *ctx = cld__graph_ctx(g);
    size_t ls = reduce_ls(ctx), gs = rows * ls;
    if (part_bytes) CLD_CL_TRY(clSetKernelArg(k, part_arg, ls * part_bytes, NULL), "clSetKernelArg(local)");
    return cld__launch(ctx, k, t->name, 1, &gs, &ls);
}

/* ------------------------------------------------------------ group norm
 * Every group-norm node: ip[0] N, [1] C, [2] HW, [3] groups. Also: stats
 * fp[0] eps; group_norm ip[4] act (1: SiLU); affine gradients ip[4] with_xhat. */

/* A slot: a node that computes nothing, whose block the next node writes
 * as a second output (a node has one): the planner places it here and
 * keeps it alive until its last reader. */
static cld_status gn_slot_forward(cld_graph *g, cld_tensor *t)
{
    (void)g;
    (void)t;
    return CLD_OK;
}

/* coef (N, C, 4), written by the group_norm node after it (gn_fused) and
 * alive for the backward; its sources (x, gamma, beta) name gamma and
 * beta for the group_norm node and the backward */
static const cld_op_def op_gn_stats_slot = {"group_norm_stats", gn_slot_forward, NULL, 0, 0, NULL, NULL};

/* y and the statistics in one pass over each group: src (x, coef slot) */
static cld_status gn_fused_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *x = t->src[0], *coef = t->src[1], *gam = coef->src[1], *bet = coef->src[2];
    CLD_TRY(cld__kargs(k, t->name, "bibibibibiiiifi", x->buf, (int)x->off, gam->buf, (int)gam->off, bet->buf,
                       (int)bet->off, coef->buf, (int)coef->off, t->buf, (int)t->off, t->ip[1], t->ip[2],
                       t->ip[1] / t->ip[3], (double)coef->fp[0], t->ip[4]));
    return launch_rows(g, k, t, (size_t)t->ip[0] * t->ip[3], 15, 2 * sizeof(float));
}

/* The backward pass (cl/norm.cl): "group_norm_bwd_partials" (N, C, 2) holds
 * per (n, c) row S1 = sum dv, S2 = sum dv (x - mean), dv the gradient before
 * the SiLU (if fused); dx, dgamma and dbeta come from it. Where x needs a
 * gradient, gn_bwd_fused computes the partials and dx group by group in
 * one pass over x and dy (the second pass hits the cache); else
 * gn_bwd_partials computes them for the affine gradients alone. */

/* part (N, C, 2): src (x, coef, dy); ip[4] act */
static cld_status gn_partials_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *x = t->src[0], *coef = t->src[1], *dy = t->src[2];
    CLD_TRY(cld__kargs(k, t->name, "bibibibiii", x->buf, (int)x->off, coef->buf, (int)coef->off, dy->buf,
                       (int)dy->off, t->buf, (int)t->off, t->ip[2], t->ip[4]));
    return launch_rows(g, k, t, (size_t)t->ip[0] * t->ip[1], 10, 2 * sizeof(float));
}
static const cld_op_def op_gn_partials = {"group_norm_bwd_partials",
                                          gn_partials_forward,
                                          NULL,
                                          0,
                                          0,
                                          CLD_KERNELS({"norm", "gn_bwd_partials"}),
                                          NULL};

/* part (N, C, 2), written by the group_norm_grad_x node after it
 * (gn_bwd_fused) and alive until the affine gradients have read it */
static const cld_op_def op_gn_part_slot = {
    "group_norm_bwd_partials", gn_slot_forward, NULL, 0, 0, NULL, NULL};

/* dx (N, C, H, W) (+ src[4], another gradient of x, if there) and the
 * partials in src[3]'s block: src (dy, x, coef, part[, acc]); ip[4] act;
 * one work-group per group; may take over dy */
static cld_status gn_grad_fused_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *dy = t->src[0], *x = t->src[1], *coef = t->src[2], *part = t->src[3];
    const cld_tensor *acc = t->nsrc > 4 ? t->src[4] : NULL;
    CLD_TRY(cld__kargs(k, t->name, "bibibibibibiiiii", dy->buf, (int)dy->off, x->buf, (int)x->off, coef->buf,
                       (int)coef->off, part->buf, (int)part->off, acc ? acc->buf : t->buf,
                       acc ? (int)acc->off : 0, t->buf, (int)t->off, t->ip[2], t->ip[1] / t->ip[3], t->ip[4],
                       acc != NULL));
    return launch_rows(g, k, t, (size_t)t->ip[0] * t->ip[3], 16, 2 * sizeof(float));
}
static const cld_op_def op_gn_grad_fused = {
    "group_norm_grad_x", gn_grad_fused_forward, NULL, 1, 0, CLD_KERNELS({"norm", "gn_bwd_fused"}), NULL};

/* dgamma (C) (ip[4] = 1) or dbeta (C) (ip[4] = 0): src (part, coef) */
static cld_status gn_grad_affine_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *part = t->src[0], *coef = t->src[1];
    CLD_TRY(cld__kargs(k, t->name, "bibibiiii", part->buf, (int)part->off, coef->buf, (int)coef->off, t->buf,
                       (int)t->off, t->ip[0], t->ip[1], t->ip[4]));
    return cld__launch1d(g, k, t, (size_t)t->ip[1]);
}
static const cld_op_def op_gn_grad_affine = {"group_norm_grad_affine",
                                             gn_grad_affine_forward,
                                             NULL,
                                             0,
                                             0,
                                             CLD_KERNELS({"norm", "gn_bwd_affine"}),
                                             NULL};

/* A node of op `op` with the dimensions (ip[0..3]) of group-norm node `like`,
 * ip[4] = extra and the given shape. */
static cld_status gn_node(cld_graph *g, const cld_op_def *op, const cld_tensor *like, int extra, int ndim,
                          const int *shape, int nsrc, cld_tensor *const *src, cld_tensor **out)
{
    CLD_TRY(cld__node(g, op, ndim, shape, nsrc, src, out));
    for (int i = 0; i < 4; i++) (*out)->ip[i] = like->ip[i];
    (*out)->ip[4] = extra;
    return CLD_OK;
}

static cld_status gn_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *x = t->src[0], *coef = t->src[1], *gam = coef->src[1], *bet = coef->src[2], *part, *d;
    int act = t->ip[4], pshape[3] = {t->ip[0], t->ip[1], 2};
    cld_tensor *src[4] = {x, coef, t->grad, NULL};
    cld_tensor *dx = NULL;
    if (x->flags & CLD_TF_NEEDS_GRAD) {
        /* dx and the partials in one pass over each group (gn_bwd_fused) */
        CLD_TRY(gn_node(g, &op_gn_part_slot, t, act, 3, pshape, 0, NULL, &part));
        cld_tensor *xsrc[4] = {t->grad, x, coef, part};
        CLD_TRY(gn_node(g, &op_gn_grad_fused, t, act, x->ndim, x->shape, 4, xsrc, &dx));
        dx->flags |= CLD_TF_ACC_OK; /* src[4]: x's other gradient, if any (cld__grad_add) */
    } else {
        CLD_TRY(gn_node(g, &op_gn_partials, t, act, 3, pshape, 3, src, &part));
    }
    if (gam->flags & CLD_TF_NEEDS_GRAD) {
        cld_tensor *asrc[2] = {part, coef};
        CLD_TRY(gn_node(g, &op_gn_grad_affine, t, 1, gam->ndim, gam->shape, 2, asrc, &d));
        CLD_TRY(cld__grad_add(g, gam, d));
    }
    if (bet->flags & CLD_TF_NEEDS_GRAD) {
        cld_tensor *asrc[2] = {part, coef};
        CLD_TRY(gn_node(g, &op_gn_grad_affine, t, 0, bet->ndim, bet->shape, 2, asrc, &d));
        CLD_TRY(cld__grad_add(g, bet, d));
    }
    return dx ? cld__grad_add(g, x, dx) : CLD_OK;
}
static const cld_op_def op_group_norm = {
    "group_norm", gn_fused_forward, gn_backward, 1, 0, CLD_KERNELS({"norm", "gn_fused"}), NULL};
static const cld_op_def op_group_norm_silu = {
    "group_norm_silu", gn_fused_forward, gn_backward, 1, 0, CLD_KERNELS({"norm", "gn_fused"}), NULL};

static cld_status group_norm(cld_graph *g, const cld_op_def *op, cld_tensor *x, cld_tensor *gamma,
                             cld_tensor *beta, int groups, float eps, cld_tensor **y)
{
    if (!g || !x || !gamma || !beta || !y)
        return cld__fail(CLD_ERR_INVALID_ARG, "%s: NULL argument", op->name);
    if (!(eps >= 0.0f)) return cld__fail(CLD_ERR_INVALID_ARG, "%s: eps %g < 0", op->name, (double)eps);
    if (x->ndim < 2)
        return cld__shape_fail(op->name, "input must be (N, C), (N, C, L) or (N, C, H, W)", x, NULL);
    int N = x->shape[0], C = x->shape[1];
    int HW = (int)(x->n / ((size_t)N * (size_t)C));
    char msg[96];
    if (groups <= 0 || C % groups) {
        snprintf(msg, sizeof msg, "%d channels do not split into %d groups", C, groups);
        return cld__shape_fail(op->name, msg, x, NULL);
    }
    if (gamma->n != (size_t)C || beta->n != (size_t)C) {
        snprintf(msg, sizeof msg, "gamma and beta must have C = %d elements", C);
        return cld__shape_fail(op->name, msg, gamma, beta);
    }
    int coef_shape[3] = {N, C, 4};
    cld_tensor *src[3] = {x, gamma, beta}, *coef;
    CLD_TRY(cld__node(g, &op_gn_stats_slot, 3, coef_shape, 3, src, &coef)); // (N, C, 4), by gn_fused
    int ip[4] = {N, C, HW, groups};
    for (int i = 0; i < 4; i++) coef->ip[i] = ip[i];
    coef->fp[0] = eps;
    src[1] = coef;
    return gn_node(g, op, coef, op == &op_group_norm_silu, x->ndim, x->shape, 2, src, y);
}

cld_status cld_op_group_norm(cld_graph *g, cld_tensor *x, cld_tensor *gamma, cld_tensor *beta, int groups,
                             float eps, cld_tensor **y)
{
    return group_norm(g, &op_group_norm, x, gamma, beta, groups, eps, y);
}

cld_status cld__op_group_norm_silu(cld_graph *g, cld_tensor *x, cld_tensor *gamma, cld_tensor *beta,
                                   int groups, float eps, cld_tensor **y)
{
    return group_norm(g, &op_group_norm_silu, x, gamma, beta, groups, eps, y);
}

/* --------------------------------------------------------------- softmax
 * x viewed as (R, D) with D the last dimension. */
static int sm_rows(const cld_tensor *t) { return (int)(t->n / (size_t)t->shape[t->ndim - 1]); }

/* dx = y (dy - sum(dy y)): src (y, dy); may take over y's buffer */
static cld_status softmax_grad_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *yy = t->src[0], *dy = t->src[1];
    CLD_TRY(cld__kargs(k, t->name, "bibibii", yy->buf, (int)yy->off, dy->buf, (int)dy->off, t->buf,
                       (int)t->off, t->shape[t->ndim - 1]));
    return launch_rows(g, k, t, (size_t)sm_rows(t), 7, sizeof(float));
}
static const cld_op_def op_softmax_grad = {
    "softmax_grad", softmax_grad_forward, NULL, 1, 0, CLD_KERNELS({"softmax", "softmax_bwd"}), NULL};

static cld_status softmax_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *x = t->src[0];
    CLD_TRY(cld__kargs(k, t->name, "bibii", x->buf, (int)x->off, t->buf, (int)t->off, t->shape[t->ndim - 1]));
    return launch_rows(g, k, t, (size_t)sm_rows(t), 5, sizeof(float));
}

static cld_status softmax_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *src[2] = {t, t->grad}, *dx;
    CLD_TRY(cld__node(g, &op_softmax_grad, t->ndim, t->shape, 2, src, &dx));
    return cld__grad_add(g, t->src[0], dx);
}
static const cld_op_def op_softmax = {
    "softmax", softmax_forward, softmax_backward, 1, 0, CLD_KERNELS({"softmax", "softmax_fwd"}), NULL};

cld_status cld_op_softmax(cld_graph *g, cld_tensor *x, cld_tensor **y)
{
    if (!g || !x || !y) return cld__fail(CLD_ERR_INVALID_ARG, "softmax: NULL argument");
    return cld__node(g, &op_softmax, x->ndim, x->shape, 1, &x, y);
}
