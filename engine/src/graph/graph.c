/* The graph: node creation, inputs, parameters and outputs, and tensor
 * access. Autodiff is in autodiff.c, memory planning in planner.c, execution
 * in executor.c; ops live in ops/, each a cld_op_def with its forward and
 * backward side by side. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

cld_ctx *cld__graph_ctx(const cld_graph *g) { return g->ctx; }
uint64_t cld__graph_seed(const cld_graph *g) { return g->seed; }
cl_mem cld__graph_arena(const cld_graph *g, int k) { return k >= 0 && k < g->n_arenas ? g->arenas[k] : NULL; }

cld_tensor *cld__graph_node(const cld_graph *g, int i)
{
    return g && i >= 0 && i < g->n ? g->nodes[i] : NULL;
}

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
        return cld__fail(CLD_ERR_SHAPE, "%s: %s: shapes %s and %s", op, msg, cld__shape_str(a, sa, sizeof sa),
                         cld__shape_str(b, sb, sizeof sb));
    return cld__fail(CLD_ERR_SHAPE, "%s: %s: shape %s", op, msg, cld__shape_str(a, sa, sizeof sa));
}

cld_status cld_graph_create(cld_ctx *ctx, cld_params *params, cld_graph **out)
{
    if (!ctx || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_graph_create: NULL argument");
    cld_graph *g = calloc(1, sizeof *g);
    if (!g) return cld__fail(CLD_ERR_NOMEM, "cld_graph_create: out of host memory");
    g->ctx = ctx;
    g->params = params;
    g->poison = ctx->settings.poison;
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
    for (int k = 0; k < g->n_arenas; k++)
        if (g->arenas[k]) clReleaseMemObject(g->arenas[k]);
    for (int k = 0; k < g->n_pinned; k++)
        if (g->pinned[k]) clReleaseMemObject(g->pinned[k]);
    free(g->arenas);
    free(g->pinned);
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

cld_status cld_graph_input(cld_graph *g, const char *name, int ndim, const int *shape, int requires_grad,
                           cld_tensor **out)
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

cld_status cld_graph_param(cld_graph *g, const char *name, int ndim, const int *shape, cld_init init,
                           float scale, cld_tensor **out)
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

/* --------------------------------------------------------------- reshape
 * A view: no kernel, the planner gives it its source's buffer. Here, not in
 * ops/, because autodiff reshapes gradients to their tensor's shape. */
static cld_status reshape_backward(cld_graph *g, cld_tensor *t)
{
    return cld__grad_add(g, t->src[0], t->grad); /* grad_add reshapes */
}
static const cld_op_def op_reshape = {"reshape", NULL, reshape_backward, 0, 1, NULL, NULL};

cld_status cld_op_reshape(cld_graph *g, cld_tensor *x, int ndim, const int *shape, cld_tensor **y)
{
    if (!x || !shape) return cld__fail(CLD_ERR_INVALID_ARG, "reshape: NULL argument");
    size_t n = 1;
    for (int i = 0; i < ndim && i < CLD_MAX_DIMS; i++) n *= shape[i] > 0 ? (size_t)shape[i] : 0;
    if (n != x->n) {
        cld_tensor tmp = {0};
        tmp.ndim = ndim < 1 ? 1 : (ndim > CLD_MAX_DIMS ? CLD_MAX_DIMS : ndim);
        memcpy(tmp.shape, shape, (size_t)tmp.ndim * sizeof(int));
        return cld__shape_fail("reshape", "element count differs", x, &tmp);
    }
    return cld__node(g, &op_reshape, ndim, shape, 1, &x, y);
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
    if (!cld__is_pinned(cld__root_of((cld_tensor *)t)))
        return cld__fail(CLD_ERR_STATE,
                         "%s: '%s' is a temporary; mark it with cld_graph_set_output "
                         "before planning",
                         what, t->name);
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
