/* Reverse-mode autodiff: gradients are new nodes appended after the forward
 * ones. The gradient rule: a source's gradient is the sum of what each
 * consumer contributes (cld__grad_add); parameter gradients are added into
 * the parameter store by one sink node each. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static cld_status backward_from(cld_graph *g);

/* The ops autodiff itself emits live here, so the graph layer needs nothing
 * from ops/: the constant seed (fill, also used by ops for zero padding) and
 * the sum of two same-shape gradients (basic.cl's add in its same-shape
 * mode, in place like cld_op_add). Gradient nodes get no backward: the walk
 * in backward_from visits forward nodes only. */
static cld_status fill_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    CLD_TRY(cld__kargs(k, "fill", "biif", t->buf, (int)t->off, (int)t->n, (double)t->fp[0]));
    return cld__launch1d(g, k, t, (t->n + 7) / 8); /* items are chunks of 8 floats */
}
const cld_op_def cld__op_fill = {"fill", fill_forward, NULL, 0, 0, CLD_KERNELS({"basic", "fill"}), NULL};

static cld_status grad_sum_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *a = t->src[0], *b = t->src[1];
    CLD_TRY(cld__kargs(k, "add", "bibibiiiii", a->buf, (int)a->off, b->buf, (int)b->off, t->buf, (int)t->off,
                       (int)t->n, 0, 1, 1)); /* mode 0: inner, C unused */
    return cld__launch1d(g, k, t, (t->n + 7) / 8);
}
static const cld_op_def op_grad_sum = {"add", grad_sum_forward, NULL, 1, 0, CLD_KERNELS({"basic", "add"}),
                                       NULL};

/* 1 if no node after t reads it */
static int unused_after(const cld_graph *g, const cld_tensor *t)
{
    for (int i = t->id + 1; i < g->n; i++)
        for (int k = 0; k < g->nodes[i]->nsrc; k++)
            if (g->nodes[i]->src[k] == t) return 0;
    return 1;
}

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
    if ((grad->flags & CLD_TF_ACC_OK) && grad->nsrc < CLD_MAX_SRC && src->grad->n == grad->n &&
        cld__root_of(src->grad) != cld__root_of(grad->src[0]) && unused_after(g, grad)) {
        grad->src[grad->nsrc++] = src->grad; /* grad's node adds the other contribution */
        grad->flags &= ~CLD_TF_ACC_OK;
        src->grad = grad;
        return CLD_OK;
    }
    cld_tensor *sum, *both[2] = {src->grad, grad};
    CLD_TRY(cld__node(g, &op_grad_sum, src->ndim, src->shape, 2, both, &sum));
    src->grad = sum;
    return CLD_OK;
}

/* Sink writing a parameter gradient into the store: grads[param] += src. */
static cld_status param_grad_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    cl_mem xb = t->src[0]->buf;
    int n = (int)t->n, yo = (int)t->off, xo = (int)t->src[0]->off;
    CLD_TRY(cld__kargs(k, "param grad", "bibiif", t->buf, yo, xb, xo, n, 1.0));
    return cld__launch1d(g, k, t, t->n);
}
static const cld_op_def op_param_grad = {
    "param_grad", param_grad_forward, NULL, 0, 0, CLD_KERNELS({"basic", "axpy"}), NULL};

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

/* A parameter-gradient sink: grads[param] += the parameter's gradient. */
static cld_status add_sink(cld_graph *g, cld_tensor *t)
{
    cld_tensor *sink;
    CLD_TRY(cld__node(g, &op_param_grad, t->ndim, t->shape, 1, &t->grad, &sink));
    sink->flags |= CLD_TF_PARAM | CLD_TF_GRAD_SINK;
    sink->param_index = t->param_index;
    snprintf(sink->name, sizeof sink->name, "grad:%.90s", t->name);
    return CLD_OK;
}

/* Walk the forward nodes in reverse. A parameter's gradient is complete
 * once the walk has passed its first consumer (every contribution comes
 * from a consumer's backward), so its sink is added right there: the
 * store's gradients of the last layers are final while the backward of the
 * first ones is still to run (what an all-reduce can overlap, see
 * cld_graph_set_grad_hook), and the gradient tensors die sooner. Then the
 * gradients of inputs that asked for one are pinned. */
static cld_status backward_from(cld_graph *g)
{
    int *first = malloc(((size_t)g->n_fwd + 1) * sizeof *first); /* node id -> its first consumer */
    if (!first) return cld__fail(CLD_ERR_NOMEM, "cld_graph_backward: out of host memory");
    for (int i = 0; i < g->n_fwd; i++) first[i] = -1;
    for (int i = 0; i < g->n_fwd; i++) {
        const cld_tensor *t = g->nodes[i];
        for (int k = 0; k < t->nsrc; k++) {
            const cld_tensor *s = t->src[k];
            if (s && s->id < g->n_fwd && first[s->id] < 0) first[s->id] = i;
        }
    }
    cld_status st = CLD_OK;
    for (int i = g->n_fwd - 1; i >= 0 && st == CLD_OK; i--) {
        cld_tensor *t = g->nodes[i];
        if (t->grad && t->op && (t->flags & CLD_TF_NEEDS_GRAD)) {
            if (!t->op->backward) {
                st = cld__fail(CLD_ERR_STATE, "op '%s' has no backward", t->op->name);
                break;
            }
            st = t->op->backward(g, t);
        }
        /* the sinks of parameters first used by node i, in store order */
        for (int k = 0; k < t->nsrc && st == CLD_OK; k++) {
            cld_tensor *p = t->src[k];
            if (!p || p->id >= g->n_fwd || first[p->id] != i || !(p->flags & CLD_TF_PARAM) || p->op ||
                !p->grad)
                continue;
            int dup = 0; /* a node that takes one parameter twice */
            for (int j = 0; j < k; j++) dup |= t->src[j] == p;
            if (!dup) st = add_sink(g, p);
        }
    }
    free(first);
    CLD_TRY(st);
    for (int i = 0; i < g->n_fwd; i++) {
        cld_tensor *t = g->nodes[i];
        if ((t->flags & CLD_TF_GRAD_INPUT) && t->grad) CLD_TRY(cld_graph_set_output(g, t->grad));
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
        return cld__fail(CLD_ERR_STATE,
                         "cld_tensor_grad: '%s' has no gradient (input without "
                         "requires_grad, not connected to the loss, or no backward)",
                         t->name);
    *grad = t->grad;
    return CLD_OK;
}
