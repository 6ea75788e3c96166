/* Losses (cl/loss.cl). Forward and backward side by side. */
#include "internal.h"

#define MSE_LS 64
#define MSE_CHUNK 4096 /* must match cl/loss.cl */

/* ---------------------------------------------------------------- MSE
 * loss (1) = (1/N) sum_n w_n mean_m (pred - target)^2 over pred, target
 * (N, ...) = (N, M); weights (N) or absent (= 1).
 * src = {pred, target[, weights]}; ip[0] = N, ip[1] = M, ip[2] = chunks per
 * sample. Deterministic two-stage reduction: per-(sample, chunk) partial
 * sums into the node's workspace, then one work-group sums them in a fixed
 * order (no atomics). */
static cld_status mse_forward(cld_graph *g, cld_tensor *t)
{
    cld_ctx *ctx = cld__graph_ctx(g);
    const cld_tensor *p = t->src[0], *q = t->src[1];
    const cld_tensor *w = t->nsrc > 2 ? t->src[2] : p;
    int N = t->ip[0], M = t->ip[1], nchunk = t->ip[2];
    cl_mem ws = t->ws_buf;
    cl_kernel k = t->kern[0];
    CLD_TRY(cld__kargs(k, t->name, "bibibiii", p->buf, (int)p->off, q->buf, (int)q->off, ws, (int)t->ws_off,
                       M, nchunk));
    size_t ls = MSE_LS, gs = (size_t)N * (size_t)nchunk * MSE_LS;
    CLD_TRY(cld__launch(ctx, k, t->name, 1, &gs, &ls));
    k = t->kern[1];
    CLD_TRY(cld__kargs(k, t->name, "bibiibiiif", ws, (int)t->ws_off, w->buf, (int)w->off, t->nsrc > 2, t->buf,
                       (int)t->off, N, nchunk, 1.0 / ((double)N * (double)M)));
    gs = MSE_LS;
    return cld__launch(ctx, k, t->name, 1, &gs, &ls);
}

/* d pred (or d target) = fp[0] * dloss * w_n * (pred - target).
 * src = {pred, target, dloss[, weights]}. */
static cld_status mse_grad_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *p = t->src[0], *q = t->src[1], *dl = t->src[2];
    const cld_tensor *w = t->nsrc > 3 ? t->src[3] : p;
    CLD_TRY(cld__kargs(k, t->name, "bibibiibibiiif", p->buf, (int)p->off, q->buf, (int)q->off, w->buf,
                       (int)w->off, t->nsrc > 3, dl->buf, (int)dl->off, t->buf, (int)t->off, (int)t->n,
                       t->ip[1], (double)t->fp[0]));
    size_t gs = t->n, ls = MSE_LS;
    return cld__launch(cld__graph_ctx(g), k, t->name, 1, &gs, &ls);
}
static const cld_op_def op_mse_grad = {
    "mse_grad", mse_grad_forward, NULL, 0, 0, CLD_KERNELS({"loss", "mse_grad"}), NULL};

/* d weights (N) = fp[0] * dloss * sum_m (pred - target)^2, src = {pred, target, dloss}. */
static cld_status mse_wgrad_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *p = t->src[0], *q = t->src[1], *dl = t->src[2];
    CLD_TRY(cld__kargs(k, t->name, "bibibibiif", p->buf, (int)p->off, q->buf, (int)q->off, dl->buf,
                       (int)dl->off, t->buf, (int)t->off, t->ip[1], (double)t->fp[0]));
    size_t gs = t->n * MSE_LS, ls = MSE_LS;
    return cld__launch(cld__graph_ctx(g), k, t->name, 1, &gs, &ls);
}
static const cld_op_def op_mse_wgrad = {
    "mse_wgrad", mse_wgrad_forward, NULL, 0, 0, CLD_KERNELS({"loss", "mse_wgrad"}), NULL};

static cld_status mse_backward(cld_graph *g, cld_tensor *t)
{
    int N = t->ip[0], M = t->ip[1];
    double inv = 1.0 / ((double)N * (double)M);
    cld_tensor *src[4] = {t->src[0], t->src[1], t->grad, t->nsrc > 2 ? t->src[2] : NULL};
    int nsrc = t->nsrc > 2 ? 4 : 3;
    for (int which = 0; which < 2; which++) { /* 0: pred, 1: target */
        cld_tensor *x = t->src[which], *dx;
        if (!(x->flags & CLD_TF_NEEDS_GRAD)) continue;
        CLD_TRY(cld__node(g, &op_mse_grad, x->ndim, x->shape, nsrc, src, &dx));
        dx->ip[1] = M;
        dx->fp[0] = (float)((which ? -2.0 : 2.0) * inv);
        CLD_TRY(cld__grad_add(g, x, dx));
    }
    if (t->nsrc > 2 && (t->src[2]->flags & CLD_TF_NEEDS_GRAD)) {
        cld_tensor *dw;
        CLD_TRY(cld__node(g, &op_mse_wgrad, t->src[2]->ndim, t->src[2]->shape, 3, src, &dw));
        dw->ip[1] = M;
        dw->fp[0] = (float)inv;
        CLD_TRY(cld__grad_add(g, t->src[2], dw));
    }
    return CLD_OK;
}
static const cld_op_def op_mse = {
    "mse_loss", mse_forward, mse_backward, 0, 0, CLD_KERNELS({"loss", "mse_partial"}, {"loss", "mse_final"}),
    NULL};

cld_status cld_op_mse_loss(cld_graph *g, cld_tensor *pred, cld_tensor *target, cld_tensor *weights,
                           cld_tensor **loss)
{
    if (!g || !pred || !target || !loss) return cld__fail(CLD_ERR_INVALID_ARG, "mse_loss: NULL argument");
    if (pred->ndim != target->ndim)
        return cld__shape_fail("mse_loss", "pred and target differ", pred, target);
    for (int i = 0; i < pred->ndim; i++)
        if (pred->shape[i] != target->shape[i])
            return cld__shape_fail("mse_loss", "pred and target differ", pred, target);
    int N = pred->shape[0];
    if (weights && (weights->ndim != 1 || weights->shape[0] != N))
        return cld__shape_fail("mse_loss", "weights must be (N) for pred (N, ...)", weights, pred);
    size_t M = pred->n / (size_t)N;
    int nchunk = (int)((M + MSE_CHUNK - 1) / MSE_CHUNK);
    cld_tensor *src[3] = {pred, target, weights};
    int one = 1;
    CLD_TRY(cld__node(g, &op_mse, 1, &one, weights ? 3 : 2, src, loss));
    (*loss)->ip[0] = N;
    (*loss)->ip[1] = (int)M;
    (*loss)->ip[2] = nchunk;
    (*loss)->ws = (size_t)N * (size_t)nchunk;
    return CLD_OK;
}
