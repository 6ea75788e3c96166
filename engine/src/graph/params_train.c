/* Training helpers over a parameter store: a store of the same layout (for
 * EMA weights), the EMA update, the global gradient norm and its clipping.
 * Kernels in cl/optim.cl. No host synchronisation except where a number is
 * returned (cld_params_grad_norm). */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SQNORM_GROUPS 64
#define SQNORM_LS 64

cld_status cld_params_clone(const cld_params *src, cld_params **out)
{
    if (!src || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_clone: NULL argument");
    if (!src->count) return cld__fail(CLD_ERR_STATE, "cld_params_clone: the store has no parameters");
    cld_params *p = NULL;
    CLD_TRY(cld_params_create(src->ctx, &p));
    cld_status s = CLD_OK;
    for (int i = 0; i < src->count && s == CLD_OK; i++) {
        const cld__param *q = &src->items[i];
        s = cld_params_declare(p, q->name, q->ndim, q->shape, q->init, q->scale, NULL);
    }
    if (s == CLD_OK) s = cld_params_set_seed(p, src->seed);
    if (s != CLD_OK) {
        cld_params_free(p);
        return s;
    }
    *out = p;
    return CLD_OK;
}

static cld_status same_layout(const cld_params *a, const cld_params *b, const char *what)
{
    if (!a || !b) return cld__fail(CLD_ERR_INVALID_ARG, "%s: NULL store", what);
    if (a->count != b->count || a->total != b->total || a->chunk != b->chunk)
        return cld__fail(CLD_ERR_INVALID_ARG, "%s: the two stores have different layouts (%d vs %d tensors)",
                         what, a->count, b->count);
    for (int i = 0; i < a->count; i++)
        if (a->items[i].off != b->items[i].off || a->items[i].n != b->items[i].n)
            return cld__fail(CLD_ERR_INVALID_ARG, "%s: parameter '%s' differs between the stores", what,
                             a->items[i].name);
    return CLD_OK;
}

cld_status cld_params_copy(cld_params *dst, cld_params *src)
{
    CLD_TRY(same_layout(dst, src, "cld_params_copy"));
    CLD_TRY(cld_params_alloc(src));
    CLD_TRY(cld_params_alloc(dst));
    for (int k = 0; k < src->n_chunks; k++) {
        cl_int err = clEnqueueCopyBuffer(src->ctx->queue, src->values[k], dst->values[k], 0, 0,
                                         cld__params_chunk_len(src, k) * sizeof(float), 0, NULL, NULL);
        CLD_TRY(cld__cl_check(err, "cld_params_copy: clEnqueueCopyBuffer"));
    }
    return CLD_OK;
}

cld_status cld_params_ema_update(cld_params *ema, cld_params *src, float decay)
{
    CLD_TRY(same_layout(ema, src, "cld_params_ema_update"));
    if (!(decay >= 0.0f && decay <= 1.0f))
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_ema_update: decay %g is not in [0, 1]", decay);
    CLD_TRY(cld_params_alloc(src));
    CLD_TRY(cld_params_alloc(ema));
    cl_kernel k;
    CLD_TRY(cld__kernel(src->ctx, "optim", "ema_update", &k));
    for (int c = 0; c < src->n_chunks; c++) { /* chunks hold at most 2^31 - 1 floats */
        size_t n = cld__params_chunk_len(src, c);
        CLD_TRY(cld__kargs(k, "ema_update", "bbif", ema->values[c], src->values[c], (int)n, (double)decay));
        size_t gs = n, ls = 64;
        CLD_TRY(cld__launch(src->ctx, k, "ema_update", 1, &gs, &ls));
    }
    return CLD_OK;
}

cld_status cld_params_grad_norm(cld_params *p, double *norm)
{
    if (!p || !norm) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_grad_norm: NULL argument");
    CLD_TRY(cld__params_alloc_train(p));
    cl_mem part;
    CLD_TRY(cld__buffer_create(p->ctx, CL_MEM_READ_WRITE, SQNORM_GROUPS * sizeof(float), NULL,
                               "cld_params_grad_norm", &part));
    cl_kernel k;
    cld_status s = cld__kernel(p->ctx, "optim", "sqnorm_partial", &k);
    /* per chunk (one for a store under the allocation limit): partial sums, summed here in order */
    double sum = 0.0;
    for (int c = 0; c < p->n_chunks && s == CLD_OK; c++) {
        s = cld__kargs(k, "sqnorm_partial", "bibl", p->grads[c], (int)cld__params_chunk_len(p, c), part,
                       (size_t)SQNORM_LS * sizeof(float));
        size_t gs = SQNORM_GROUPS * SQNORM_LS, ls = SQNORM_LS;
        if (s == CLD_OK) s = cld__launch(p->ctx, k, "sqnorm_partial", 1, &gs, &ls);
        float host[SQNORM_GROUPS];
        if (s == CLD_OK) {
            cl_int err =
                clEnqueueReadBuffer(p->ctx->queue, part, CL_TRUE, 0, sizeof host, host, 0, NULL, NULL);
            s = cld__cl_check(err, "cld_params_grad_norm: clEnqueueReadBuffer");
        }
        for (int i = 0; i < SQNORM_GROUPS && s == CLD_OK; i++) sum += host[i];
    }
    clReleaseMemObject(part);
    if (s != CLD_OK) return s;
    *norm = sqrt(sum);
    return CLD_OK;
}

cld_status cld_params_grad_scale(cld_params *p, float scale)
{
    if (!p) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_grad_scale: NULL store");
    if (!isfinite(scale)) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_grad_scale: scale %g", scale);
    CLD_TRY(cld__params_alloc_train(p));
    cl_kernel k;
    CLD_TRY(cld__kernel(p->ctx, "optim", "scale_inplace", &k));
    for (int c = 0; c < p->n_chunks; c++) {
        size_t n = cld__params_chunk_len(p, c);
        CLD_TRY(cld__kargs(k, "scale_inplace", "bif", p->grads[c], (int)n, (double)scale));
        size_t gs = n, ls = 64;
        CLD_TRY(cld__launch(p->ctx, k, "scale_inplace", 1, &gs, &ls));
    }
    return CLD_OK;
}

cld_status cld_params_find_nonfinite(cld_params *p, int grads, int *index)
{
    if (!p || !index) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_find_nonfinite: NULL argument");
    *index = -1;
    float *host = NULL;
    for (int i = 0; i < p->count && *index < 0; i++) {
        const cld__param *q = &p->items[i];
        float *h = realloc(host, q->n * sizeof *h);
        if (!h) {
            free(host);
            return cld__fail(CLD_ERR_NOMEM, "cld_params_find_nonfinite: out of host memory");
        }
        host = h;
        cld_status s = grads ? cld_params_read_grad(p, i, host) : cld_params_read(p, i, host);
        if (s != CLD_OK) {
            free(host);
            return s;
        }
        for (size_t j = 0; j < q->n; j++)
            if (!isfinite(host[j])) {
                *index = i;
                break;
            }
    }
    free(host);
    return CLD_OK;
}
