/* The parameter store: values, gradients and AdamW moments each live in ONE
 * device allocation, carved into named views (offsets in floats). */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

cld_status cld_params_create(cld_ctx *ctx, cld_params **out)
{
    if (!ctx || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_create: NULL argument");
    cld_params *p = calloc(1, sizeof *p);
    if (!p) return cld__fail(CLD_ERR_NOMEM, "cld_params_create: out of host memory");
    p->ctx = ctx;
    *out = p;
    return CLD_OK;
}

cld_status cld_params_free(cld_params *p)
{
    if (!p) return CLD_OK;
    cl_mem bufs[4] = {p->values, p->grads, p->m, p->v};
    for (int i = 0; i < 4; i++)
        if (bufs[i]) clReleaseMemObject(bufs[i]);
    free(p->items);
    free(p);
    return CLD_OK;
}

cld_status cld_params_set_seed(cld_params *p, uint64_t seed)
{
    if (!p) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_set_seed: NULL store");
    p->seed = seed;
    return CLD_OK;
}

cld_status cld_params_find(const cld_params *p, const char *name, int *index)
{
    if (!p || !name) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_find: NULL argument");
    for (int i = 0; i < p->count; i++)
        if (!strcmp(p->items[i].name, name)) {
            if (index) *index = i;
            return CLD_OK;
        }
    return cld__fail(CLD_ERR_INVALID_ARG, "parameter '%s' not found", name);
}

cld_status cld_params_declare(cld_params *p, const char *name, int ndim, const int *shape, cld_init init,
                              float scale, int *index)
{
    if (!p || !name || !shape) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_declare: NULL argument");
    if (strlen(name) >= sizeof p->items[0].name)
        return cld__fail(CLD_ERR_INVALID_ARG, "parameter name too long: '%s'", name);
    if (ndim < 1 || ndim > CLD_MAX_DIMS)
        return cld__fail(CLD_ERR_SHAPE, "parameter '%s': rank %d not in 1..%d", name, ndim, CLD_MAX_DIMS);
    for (int i = 0; i < p->count; i++) {
        cld__param *q = &p->items[i];
        if (strcmp(q->name, name)) continue;
        if (q->ndim != ndim || memcmp(q->shape, shape, (size_t)ndim * sizeof(int)))
            return cld__fail(CLD_ERR_SHAPE, "parameter '%s' redeclared with another shape", name);
        if (index) *index = i;
        return CLD_OK;
    }
    if (p->allocated)
        return cld__fail(CLD_ERR_STATE, "parameter '%s' declared after the store was allocated", name);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0)
            return cld__fail(CLD_ERR_SHAPE, "parameter '%s': dimension %d is %d", name, i, shape[i]);
        n *= (size_t)shape[i];
    }
    if (p->count == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        cld__param *ni = realloc(p->items, (size_t)cap * sizeof *ni);
        if (!ni) return cld__fail(CLD_ERR_NOMEM, "cld_params_declare: out of host memory");
        p->items = ni;
        p->cap = cap;
    }
    cld__param *q = &p->items[p->count];
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%s", name);
    q->ndim = ndim;
    memcpy(q->shape, shape, (size_t)ndim * sizeof(int));
    q->n = n;
    q->off = p->total;
    q->init = init;
    q->scale = scale;
    p->total += (n + 31) / 32 * 32; /* 128-byte aligned views */
    if (index) *index = p->count;
    p->count++;
    return CLD_OK;
}

static void init_values(const cld__param *q, uint64_t *rng, float *dst)
{
    for (size_t i = 0; i < q->n; i++) {
        switch (q->init) {
        case CLD_INIT_ZERO: dst[i] = 0.0f; break;
        case CLD_INIT_ONE: dst[i] = 1.0f; break;
        case CLD_INIT_UNIFORM: dst[i] = (float)((2.0 * cld__rand_uniform(rng) - 1.0) * q->scale); break;
        case CLD_INIT_NORMAL: dst[i] = (float)(cld__rand_normal(rng) * q->scale); break;
        }
    }
}

cld_status cld_params_alloc(cld_params *p)
{
    if (!p) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_alloc: NULL store");
    if (p->allocated) return CLD_OK;
    if (!p->count) return cld__fail(CLD_ERR_STATE, "cld_params_alloc: no parameters declared");
    size_t bytes = p->total * sizeof(float);
    cl_mem *bufs[4] = {&p->values, &p->grads, &p->m, &p->v};
    const char *names[4] = {"values", "grads", "adam m", "adam v"};
    for (int i = 0; i < 4; i++) {
        char what[96];
        snprintf(what, sizeof what, "cld_params_alloc: parameter %s", names[i]);
        CLD_TRY(cld__buffer_create(p->ctx, CL_MEM_READ_WRITE, bytes, NULL, what, bufs[i]));
        const float zero = 0.0f;
        cl_int err =
            clEnqueueFillBuffer(p->ctx->queue, *bufs[i], &zero, sizeof zero, 0, bytes, 0, NULL, NULL);
        CLD_TRY(cld__cl_check(err, "clEnqueueFillBuffer(params)"));
    }
    float *host = calloc(p->total ? p->total : 1, sizeof(float));
    if (!host) return cld__fail(CLD_ERR_NOMEM, "cld_params_alloc: out of host memory");
    for (int i = 0; i < p->count; i++) {
        /* one RNG stream per parameter, from its index: adding a parameter
         * later does not change the others' initial values */
        uint64_t rng = p->seed * 0x9E3779B97F4A7C15ull + (uint64_t)i * 0xD1B54A32D192ED03ull + 1;
        init_values(&p->items[i], &rng, host + p->items[i].off);
    }
    cl_int err = clEnqueueWriteBuffer(p->ctx->queue, p->values, CL_TRUE, 0, bytes, host, 0, NULL, NULL);
    free(host);
    CLD_TRY(cld__cl_check(err, "clEnqueueWriteBuffer(params)"));
    p->allocated = 1;
    return CLD_OK;
}

cld_status cld_params_count(const cld_params *p, int *n_tensors, size_t *n_scalars)
{
    if (!p) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_count: NULL store");
    size_t s = 0;
    for (int i = 0; i < p->count; i++) s += p->items[i].n;
    if (n_tensors) *n_tensors = p->count;
    if (n_scalars) *n_scalars = s;
    return CLD_OK;
}

cld_status cld_params_info(const cld_params *p, int index, const char **name, int *ndim,
                           int shape[CLD_MAX_DIMS], size_t *offset)
{
    if (!p || index < 0 || index >= p->count)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_info: no parameter %d", index);
    const cld__param *q = &p->items[index];
    if (name) *name = q->name;
    if (ndim) *ndim = q->ndim;
    if (shape)
        for (int i = 0; i < CLD_MAX_DIMS; i++) shape[i] = i < q->ndim ? q->shape[i] : 1;
    if (offset) *offset = q->off;
    return CLD_OK;
}

static cld_status rw(cld_params *p, int index, cl_mem which, int write, void *host, const char *what)
{
    if (!p || !host || index < 0 || index >= p->count)
        return cld__fail(CLD_ERR_INVALID_ARG, "%s: bad argument (parameter %d)", what, index);
    CLD_TRY(cld_params_alloc(p));
    const cld__param *q = &p->items[index];
    cl_int err = write
                     ? clEnqueueWriteBuffer(p->ctx->queue, which ? which : p->values, CL_TRUE,
                                            q->off * sizeof(float), q->n * sizeof(float), host, 0, NULL, NULL)
                     : clEnqueueReadBuffer(p->ctx->queue, which ? which : p->values, CL_TRUE,
                                           q->off * sizeof(float), q->n * sizeof(float), host, 0, NULL, NULL);
    return cld__cl_check(err, what);
}

cld_status cld_params_read(cld_params *p, int index, float *dst)
{
    return rw(p, index, NULL, 0, dst, "cld_params_read");
}

cld_status cld_params_write(cld_params *p, int index, const float *src)
{
    return rw(p, index, NULL, 1, (void *)src, "cld_params_write");
}

cld_status cld_params_read_grad(cld_params *p, int index, float *dst)
{
    if (p) CLD_TRY(cld_params_alloc(p));
    return rw(p, index, p ? p->grads : NULL, 0, dst, "cld_params_read_grad");
}

cld_status cld_params_zero_grad(cld_params *p)
{
    if (!p) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_zero_grad: NULL store");
    CLD_TRY(cld_params_alloc(p));
    const float zero = 0.0f;
    cl_int err = clEnqueueFillBuffer(p->ctx->queue, p->grads, &zero, sizeof zero, 0, p->total * sizeof(float),
                                     0, NULL, NULL);
    return cld__cl_check(err, "clEnqueueFillBuffer(zero grads)");
}

cld_status cld_params_buffers(const cld_params *p, cl_mem *values, cl_mem *grads)
{
    if (!p) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_buffers: NULL store");
    if (!p->allocated) return cld__fail(CLD_ERR_STATE, "cld_params_buffers: store not allocated");
    if (values) *values = p->values;
    if (grads) *grads = p->grads;
    return CLD_OK;
}
