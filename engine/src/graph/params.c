/* The parameter store: values, gradients and AdamW moments each live in one
 * device allocation (gradients and moments only once something trains the
 * store: a training graph is planned, or a gradient or optimizer call), or in chunks of at most the context's allocation limit
 * (CL_DEVICE_MAX_MEM_ALLOC_SIZE, CLD_MAX_ALLOC) when the store is larger,
 * carved into named views (offsets in floats); no view crosses a chunk. */
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
    /* 0: a context without a device (cld_unet_param_count's dry run) */
    size_t chunk = ctx->settings.max_alloc_bytes ? ctx->settings.max_alloc_bytes / sizeof(float) : (size_t)-1;
    if (chunk > (size_t)2147483647) chunk = 2147483647;           /* the kernels' int offsets */
    size_t unit = ctx->settings.base_align_bytes / sizeof(float); /* chunks: whole base alignments */
    unit = unit > 32 ? (unit + 31) / 32 * 32 : 32;
    p->chunk = chunk / unit * unit;
    if (!p->chunk) {
        free(p);
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_create: allocation limit of %zu bytes is too small",
                         ctx->settings.max_alloc_bytes);
    }
    *out = p;
    return CLD_OK;
}

static void release_all(cl_mem *bufs, int n)
{
    for (int k = 0; bufs && k < n; k++)
        if (bufs[k]) clReleaseMemObject(bufs[k]);
    free(bufs);
}

cld_status cld_params_free(cld_params *p)
{
    if (!p) return CLD_OK;
    release_all(p->values, p->n_chunks);
    release_all(p->grads, p->n_chunks);
    release_all(p->m, p->n_chunks);
    release_all(p->v, p->n_chunks);
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
    size_t len = (n + 31) / 32 * 32; /* 128-byte aligned views */
    if (len > p->chunk)
        return cld__fail(CLD_ERR_NOMEM,
                         "parameter '%s' needs %zu bytes, more than the %zu bytes one allocation may hold on "
                         "'%s' (%s)",
                         name, n * sizeof(float), p->chunk * sizeof(float), p->ctx->info.name,
                         p->ctx->settings.max_alloc_env ? "CLD_MAX_ALLOC" : "CL_DEVICE_MAX_MEM_ALLOC_SIZE");
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
    if (len > p->chunk - p->total % p->chunk) p->total += p->chunk - p->total % p->chunk; /* next chunk */
    q->off = p->total;
    q->init = init;
    q->scale = scale;
    p->total += len;
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

cld_status cld__params_rw_all(const cld_params *p, cl_mem *bufs, int write, float *host, const char *what)
{
    for (int k = 0; k < p->n_chunks; k++) {
        size_t bytes = cld__params_chunk_len(p, k) * sizeof(float);
        float *h = host + (size_t)k * p->chunk;
        cl_int err = write ? clEnqueueWriteBuffer(p->ctx->queue, bufs[k], CL_TRUE, 0, bytes, h, 0, NULL, NULL)
                           : clEnqueueReadBuffer(p->ctx->queue, bufs[k], CL_TRUE, 0, bytes, h, 0, NULL, NULL);
        CLD_TRY(cld__cl_check(err, what));
    }
    return CLD_OK;
}

/* Buffers of kinds [first, last) of {values, grads, adam m, adam v}, zeroed. */
static cld_status alloc_kinds(cld_params *p, int first, int last)
{
    cl_mem **bufs[4] = {&p->values, &p->grads, &p->m, &p->v};
    const char *names[4] = {"values", "grads", "adam m", "adam v"};
    const int n = p->n_chunks;
    for (int i = first; i < last; i++) {
        release_all(*bufs[i], n); /* a failed earlier try */
        *bufs[i] = calloc((size_t)n, sizeof(cl_mem));
        if (!*bufs[i]) return cld__fail(CLD_ERR_NOMEM, "cld_params_alloc: out of host memory");
        for (int k = 0; k < n; k++) {
            size_t bytes = cld__params_chunk_len(p, k) * sizeof(float);
            char what[128];
            snprintf(what, sizeof what, "parameter %s, chunk %d of %d", names[i], k + 1, n);
            CLD_TRY(cld__buffer_create(p->ctx, CL_MEM_READ_WRITE, bytes, NULL, what, &(*bufs[i])[k]));
            const float zero = 0.0f;
            cl_int err = clEnqueueFillBuffer(p->ctx->queue, (*bufs[i])[k], &zero, sizeof zero, 0, bytes, 0,
                                             NULL, NULL);
            CLD_TRY(cld__cl_check(err, "clEnqueueFillBuffer(params)"));
        }
    }
    return CLD_OK;
}

/* The values only: a store that is never trained (sampling, an EMA copy)
 * holds a quarter of what a trained one does. */
cld_status cld_params_alloc(cld_params *p)
{
    if (!p) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_alloc: NULL store");
    if (p->allocated) return CLD_OK;
    if (!p->count) return cld__fail(CLD_ERR_STATE, "cld_params_alloc: no parameters declared");
    p->n_chunks = (int)((p->total + p->chunk - 1) / p->chunk);
    CLD_TRY(alloc_kinds(p, 0, 1));
    float *host = calloc(p->total ? p->total : 1, sizeof(float));
    if (!host) return cld__fail(CLD_ERR_NOMEM, "cld_params_alloc: out of host memory");
    for (int i = 0; i < p->count; i++) {
        /* one RNG stream per parameter, from its index: adding a parameter
         * later does not change the others' initial values */
        uint64_t rng = p->seed * 0x9E3779B97F4A7C15ull + (uint64_t)i * 0xD1B54A32D192ED03ull + 1;
        init_values(&p->items[i], &rng, host + p->items[i].off);
    }
    cld_status s = cld__params_rw_all(p, p->values, 1, host, "clEnqueueWriteBuffer(params)");
    free(host);
    CLD_TRY(s);
    p->allocated = 1;
    return CLD_OK;
}

int cld__params_has_train(const cld_params *p) { return p && p->train_allocated; }

cld_status cld__params_alloc_train(cld_params *p)
{
    CLD_TRY(cld_params_alloc(p));
    if (p->train_allocated) return CLD_OK;
    CLD_TRY(alloc_kinds(p, 1, 4));
    p->train_allocated = 1;
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
    if (offset) *offset = q->off % p->chunk;
    return CLD_OK;
}

cld_status cld__params_place(cld_params *p, int index, int grad, cl_mem *buf, size_t *off)
{
    if (!p || index < 0 || index >= p->count)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld__params_place: no parameter %d", index);
    if (!p->allocated) return cld__fail(CLD_ERR_STATE, "cld__params_place: store not allocated");
    if (grad) CLD_TRY(cld__params_alloc_train(p)); /* a training graph: gradients from now on */
    const cld__param *q = &p->items[index];
    *buf = (grad ? p->grads : p->values)[q->off / p->chunk];
    *off = q->off % p->chunk;
    return CLD_OK;
}

static cld_status rw(cld_params *p, int index, int grad, int write, void *host, const char *what)
{
    if (!p || !host || index < 0 || index >= p->count)
        return cld__fail(CLD_ERR_INVALID_ARG, "%s: bad argument (parameter %d)", what, index);
    CLD_TRY(grad ? cld__params_alloc_train(p) : cld_params_alloc(p));
    const cld__param *q = &p->items[index];
    cl_mem b;
    size_t off;
    CLD_TRY(cld__params_place(p, index, grad, &b, &off));
    cl_int err = write ? clEnqueueWriteBuffer(p->ctx->queue, b, CL_TRUE, off * sizeof(float),
                                              q->n * sizeof(float), host, 0, NULL, NULL)
                       : clEnqueueReadBuffer(p->ctx->queue, b, CL_TRUE, off * sizeof(float),
                                             q->n * sizeof(float), host, 0, NULL, NULL);
    return cld__cl_check(err, what);
}

cld_status cld_params_read(cld_params *p, int index, float *dst)
{
    return rw(p, index, 0, 0, dst, "cld_params_read");
}

cld_status cld_params_write(cld_params *p, int index, const float *src)
{
    return rw(p, index, 0, 1, (void *)src, "cld_params_write");
}

cld_status cld_params_read_grad(cld_params *p, int index, float *dst)
{
    return rw(p, index, 1, 0, dst, "cld_params_read_grad");
}

cld_status cld_params_zero_grad(cld_params *p)
{
    if (!p) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_zero_grad: NULL store");
    CLD_TRY(cld__params_alloc_train(p));
    const float zero = 0.0f;
    for (int k = 0; k < p->n_chunks; k++) {
        cl_int err = clEnqueueFillBuffer(p->ctx->queue, p->grads[k], &zero, sizeof zero, 0,
                                         cld__params_chunk_len(p, k) * sizeof(float), 0, NULL, NULL);
        CLD_TRY(cld__cl_check(err, "clEnqueueFillBuffer(zero grads)"));
    }
    return CLD_OK;
}

cld_status cld_params_buffers(cld_params *p, cl_mem *values, cl_mem *grads)
{
    if (!p) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_buffers: NULL store");
    if (!p->allocated) return cld__fail(CLD_ERR_STATE, "cld_params_buffers: store not allocated");
    if (p->n_chunks != 1)
        return cld__fail(
            CLD_ERR_STATE,
            "cld_params_buffers: the store is split into %d buffers (allocation limit %zu bytes)",
            p->n_chunks, p->chunk * sizeof(float));
    if (grads) CLD_TRY(cld__params_alloc_train(p));
    if (values) *values = p->values[0];
    if (grads) *grads = p->grads[0];
    return CLD_OK;
}

cld_status cld_params_layout(const cld_params *p, int *n_chunks, size_t *chunk_floats, size_t *total_floats)
{
    if (!p) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_layout: NULL store");
    if (!p->allocated) return cld__fail(CLD_ERR_STATE, "cld_params_layout: store not allocated");
    if (n_chunks) *n_chunks = p->n_chunks;
    if (chunk_floats) *chunk_floats = p->chunk;
    if (total_floats) *total_floats = p->total;
    return CLD_OK;
}

cld_status cld_params_chunk_buffers(cld_params *p, int k, cl_mem *values, cl_mem *grads, size_t *floats)
{
    if (!p) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_chunk_buffers: NULL store");
    if (!p->allocated) return cld__fail(CLD_ERR_STATE, "cld_params_chunk_buffers: store not allocated");
    if (k < 0 || k >= p->n_chunks)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_chunk_buffers: no chunk %d (the store has %d)", k,
                         p->n_chunks);
    if (grads) CLD_TRY(cld__params_alloc_train(p));
    if (values) *values = p->values[k];
    if (grads) *grads = p->grads[k];
    if (floats) *floats = cld__params_chunk_len(p, k);
    return CLD_OK;
}

cld_status cld_params_flat_offset(const cld_params *p, int index, size_t *offset)
{
    if (!p || !offset || index < 0 || index >= p->count)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_flat_offset: no parameter %d", index);
    *offset = p->items[index].off;
    return CLD_OK;
}
