/* Timestep embedding, class-label embedding and dropout (cl/embed.cl).
 * Forward and backward side by side. */
#include "internal.h"

#include <string.h>

/* ---------------------------------------------------- timestep embedding
 * t (N) -> y (N, dim). ip[0] = dim.
 * Timesteps are data: no gradient flows to t. If t needs a gradient anyway
 * (e.g. an input created with requires_grad), backward contributes nothing,
 * so t gets no gradient from this op. */
static cld_status tsemb_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *ts = t->src[0];
    CLD_TRY(
        cld__kargs(k, t->name, "bibiii", ts->buf, (int)ts->off, t->buf, (int)t->off, t->shape[0], t->ip[0]));
    return cld__launch1d(g, k, t, t->n);
}

static cld_status tsemb_backward(cld_graph *g, cld_tensor *t)
{
    (void)g;
    (void)t; /* d y / d t is not propagated: timesteps are data */
    return CLD_OK;
}
static const cld_op_def op_tsemb = {"timestep_embedding",
                                    tsemb_forward,
                                    tsemb_backward,
                                    0,
                                    0,
                                    CLD_KERNELS({"embed", "timestep_embedding"}),
                                    NULL};

cld_status cld_op_timestep_embedding(cld_graph *g, cld_tensor *t, int dim, cld_tensor **y)
{
    if (!g || !t || !y) return cld__fail(CLD_ERR_INVALID_ARG, "timestep_embedding: NULL argument");
    if (t->ndim != 1) return cld__shape_fail("timestep_embedding", "timesteps must be (N)", t, NULL);
    if (dim < 2) return cld__fail(CLD_ERR_INVALID_ARG, "timestep_embedding: dim %d < 2", dim);
    int shape[2] = {t->shape[0], dim};
    CLD_TRY(cld__node(g, &op_tsemb, 2, shape, 1, &t, y));
    (*y)->ip[0] = dim;
    return CLD_OK;
}

/* diffusers' variant (float32 arithmetic as torch, flip_sin_to_cos,
 * downscale_freq_shift): ip[0] dim, ip[1] flip, fp in ip[2] as float bits. */
static cld_status tsemb_torch_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *ts = t->src[0];
    float shift;
    memcpy(&shift, &t->ip[2], sizeof shift);
    CLD_TRY(cld__kargs(k, t->name, "bibiiiif", ts->buf, (int)ts->off, t->buf, (int)t->off, t->shape[0],
                       t->ip[0], t->ip[1], shift));
    return cld__launch1d(g, k, t, t->n);
}
static const cld_op_def op_tsemb_torch = {"timestep_embedding",
                                          tsemb_torch_forward,
                                          tsemb_backward,
                                          0,
                                          0,
                                          CLD_KERNELS({"embed", "timestep_embedding_torch"}),
                                          NULL};

cld_status cld__op_timestep_embedding_torch(cld_graph *g, cld_tensor *t, int dim, int flip, float shift,
                                            cld_tensor **y)
{
    if (!g || !t || !y) return cld__fail(CLD_ERR_INVALID_ARG, "timestep_embedding: NULL argument");
    if (t->ndim != 1) return cld__shape_fail("timestep_embedding", "timesteps must be (N)", t, NULL);
    if (dim < 2) return cld__fail(CLD_ERR_INVALID_ARG, "timestep_embedding: dim %d < 2", dim);
    if (!((float)(dim / 2) - shift > 0.0f))
        return cld__fail(CLD_ERR_INVALID_ARG, "timestep_embedding: freq_shift %g must be below dim / 2 = %d",
                         (double)shift, dim / 2);
    int shape[2] = {t->shape[0], dim};
    CLD_TRY(cld__node(g, &op_tsemb_torch, 2, shape, 1, &t, y));
    (*y)->ip[0] = dim;
    (*y)->ip[1] = flip ? 1 : 0;
    memcpy(&(*y)->ip[2], &shift, sizeof shift);
    return CLD_OK;
}

/* ------------------------------------------------------------- embedding
 * table (R, D), labels (N) -> y (N, D). Labels hold integer ids as floats
 * and are rounded to the nearest integer. An id outside [0, R) (or NaN)
 * reads nothing: its output row is zero and it adds no gradient (apps
 * validate ids; the kernels only guarantee no out-of-bounds access).
 * Labels get no gradient. For classifier-free guidance the table has
 * num_classes + 1 rows, the last one being the "null" class. */
static cld_status emb_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *tb = t->src[0], *lb = t->src[1];
    CLD_TRY(cld__kargs(k, t->name, "bibibiiii", tb->buf, (int)tb->off, lb->buf, (int)lb->off, t->buf,
                       (int)t->off, t->shape[0], tb->shape[0], tb->shape[1]));
    return cld__launch1d(g, k, t, t->n);
}

/* dtable (R, D) from src = {labels (N), dy (N, D)}. */
static cld_status emb_grad_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *lb = t->src[0], *dy = t->src[1];
    CLD_TRY(cld__kargs(k, t->name, "bibibiiii", lb->buf, (int)lb->off, dy->buf, (int)dy->off, t->buf,
                       (int)t->off, lb->shape[0], t->shape[0], t->shape[1]));
    return cld__launch1d(g, k, t, t->n);
}
static const cld_op_def op_emb_grad = {
    "embedding_grad", emb_grad_forward, NULL, 0, 0, CLD_KERNELS({"embed", "embedding_bwd"}), NULL};

static cld_status emb_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *table = t->src[0];
    if (!(table->flags & CLD_TF_NEEDS_GRAD)) return CLD_OK;
    cld_tensor *src[2] = {t->src[1], t->grad}, *dt;
    CLD_TRY(cld__node(g, &op_emb_grad, 2, table->shape, 2, src, &dt));
    return cld__grad_add(g, table, dt);
}
static const cld_op_def op_emb = {
    "embedding", emb_forward, emb_backward, 0, 0, CLD_KERNELS({"embed", "embedding_fwd"}), NULL};

cld_status cld_op_embedding(cld_graph *g, cld_tensor *table, cld_tensor *labels, cld_tensor **y)
{
    if (!g || !table || !labels || !y) return cld__fail(CLD_ERR_INVALID_ARG, "embedding: NULL argument");
    if (table->ndim != 2 || labels->ndim != 1)
        return cld__shape_fail("embedding", "need table (R, D) and labels (N)", table, labels);
    int shape[2] = {labels->shape[0], table->shape[1]};
    cld_tensor *src[2] = {table, labels};
    return cld__node(g, &op_emb, 2, shape, 2, src, y);
}

/* --------------------------------------------------------------- dropout
 * y = x * mask / (1 - p), mask_i = [u(seed, node, i) >= p] with u a counter
 * hash (cl/embed.cl) of the graph seed at run time, the id of the forward
 * node (ip[0]) and the element index. Nothing is stored: the backward node
 * is the same op on dy with the forward node's id, so it recomputes the same
 * mask in the same run. fp[0] = p, fp[1] = 1 / (1 - p). */
static cld_status dropout_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *x = t->src[0];
    CLD_TRY(cld__kargs(k, t->name, "bibiiffLu", x->buf, (int)x->off, t->buf, (int)t->off, (int)t->n,
                       (double)t->fp[0], (double)t->fp[1], cld__graph_seed(g), (unsigned)t->ip[0]));
    return cld__launch1d(g, k, t, (t->n + 7) / 8); // chunks of 8 elements
}

static cld_status dropout_backward(cld_graph *g, cld_tensor *t);
static const cld_op_def op_dropout = {
    "dropout", dropout_forward, dropout_backward, 1, 0, CLD_KERNELS({"embed", "dropout"}), NULL};

static cld_status dropout_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *dx;
    CLD_TRY(cld__node(g, &op_dropout, t->ndim, t->shape, 1, &t->grad, &dx));
    dx->ip[0] = t->ip[0];
    dx->fp[0] = t->fp[0];
    dx->fp[1] = t->fp[1];
    return cld__grad_add(g, t->src[0], dx);
}

cld_status cld_op_dropout(cld_graph *g, cld_tensor *x, float p, cld_tensor **y)
{
    if (!g || !x || !y) return cld__fail(CLD_ERR_INVALID_ARG, "dropout: NULL argument");
    if (!(p >= 0.0f && p < 1.0f))
        return cld__fail(CLD_ERR_INVALID_ARG, "dropout: probability %g not in [0, 1)", (double)p);
    if (p == 0.0f) {
        *y = x; /* identity: no node */
        return CLD_OK;
    }
    CLD_TRY(cld__node(g, &op_dropout, x->ndim, x->shape, 1, &x, y));
    (*y)->ip[0] = (*y)->id;
    (*y)->fp[0] = p;
    (*y)->fp[1] = 1.0f / (1.0f - p);
    return CLD_OK;
}
