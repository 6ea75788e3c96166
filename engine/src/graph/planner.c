/* Memory planning: every non-pinned tensor and workspace gets an offset in
 * one arena, best-fit into the blocks released after each node's last use;
 * in-place ops take over their source's block. Inputs, outputs and input
 * gradients are pinned in a buffer of their own; parameters and their
 * gradients live in the parameter store. The arena and the pinned buffer
 * are chunks of at most the device's (or CLD_MAX_ALLOC's) allocation
 * limit, one buffer each; no tensor or workspace crosses a chunk. */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct planner {
    cld__block *free; /* sorted by offset; none crosses a chunk boundary */
    int nfree, cap;
    size_t top, peak;
    size_t align; /* floats: every block starts and ends on a multiple */
    size_t chunk; /* floats per arena chunk (a multiple of align): no block crosses k * chunk */
} planner;

static size_t align_up(const planner *p, size_t n) { return (n + p->align - 1) / p->align * p->align; }

/* Add [off, off + len) to the free list at its place, merging with its
 * neighbours except across a chunk boundary. -1 if out of host memory. */
static int pl_insert(planner *p, size_t off, size_t len)
{
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
    if (i + 1 < p->nfree && p->free[i].off + p->free[i].len == p->free[i + 1].off &&
        p->free[i + 1].off % p->chunk) {
        p->free[i].len += p->free[i + 1].len;
        memmove(&p->free[i + 1], &p->free[i + 2], (size_t)(p->nfree - i - 2) * sizeof *p->free);
        p->nfree--;
    }
    if (i > 0 && p->free[i - 1].off + p->free[i - 1].len == p->free[i].off && p->free[i].off % p->chunk) {
        p->free[i - 1].len += p->free[i].len;
        memmove(&p->free[i], &p->free[i + 1], (size_t)(p->nfree - i - 1) * sizeof *p->free);
        p->nfree--;
    }
    return 0;
}

/* Best fit in the free blocks, else on top; a block that would cross a
 * chunk boundary starts at the boundary instead (the gap becomes free).
 * len <= p->chunk (checked by the caller). (size_t)-1 if out of host memory. */
static size_t pl_alloc(planner *p, size_t len)
{
    len = align_up(p, len);
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
    size_t room = p->chunk - p->top % p->chunk;
    if (len > room) { /* next chunk; the rest of this one stays usable */
        if (pl_insert(p, p->top, room)) return (size_t)-1;
        p->top += room;
    }
    size_t off = p->top;
    p->top += len;
    if (p->top > p->peak) p->peak = p->top;
    return off;
}

static int pl_free(planner *p, size_t off, size_t len)
{
    if (pl_insert(p, off, align_up(p, len))) return -1;
    /* give the tail back (free blocks end to end at the top, across chunks too) */
    while (p->nfree && p->free[p->nfree - 1].off + p->free[p->nfree - 1].len == p->top) {
        p->top = p->free[p->nfree - 1].off;
        p->nfree--;
    }
    return 0;
}

static cld_status record_poison(cld_graph *g, const planner *pl, int *np, int *capp, size_t off, size_t len)
{
    if (!g->poison) return CLD_OK;
    if (*np == *capp) {
        int cap = *capp ? *capp * 2 : 256;
        cld__block *nr = realloc(g->pranges, (size_t)cap * sizeof *nr);
        if (!nr) return cld__fail(CLD_ERR_NOMEM, "planner: out of host memory");
        g->pranges = nr;
        *capp = cap;
    }
    g->pranges[(*np)++] = (cld__block){off, align_up(pl, len)};
    return CLD_OK;
}

/* Kernels take offsets and counts as int, and one device allocation holds
 * at most the context's limit (cld__settings.max_alloc_bytes): a tensor or
 * workspace past either is refused, naming it. A plan as a whole may be
 * larger: its arena and its pinned buffer are split into chunks that each
 * fit (no block crosses a chunk). */
static cld_status check_block(const cld_graph *g, const planner *pl, const cld_tensor *t, size_t floats,
                              int ws, const char *what, int limit_pass)
{
    char sh[96];
    if (!limit_pass && floats > (size_t)INT_MAX)
        return cld__fail(CLD_ERR_NOMEM,
                         "%s'%s' %s needs %zu floats of %s, more than the 2^31 - 1 that the kernels' int "
                         "offsets reach: use a smaller batch",
                         ws ? "workspace of " : "", t->name, cld__shape_str(t, sh, sizeof sh), floats, what);
    size_t limit = g->ctx->settings.max_alloc_bytes;
    if (limit_pass && align_up(pl, floats) > pl->chunk)
        return cld__fail(CLD_ERR_NOMEM,
                         "%s'%s' %s needs %zu bytes, more than the %zu bytes one allocation may hold on "
                         "'%s' (%s): use a smaller batch",
                         ws ? "workspace of " : "", t->name, cld__shape_str(t, sh, sizeof sh),
                         floats * sizeof(float), limit, g->ctx->info.name,
                         g->ctx->settings.max_alloc_env ? "CLD_MAX_ALLOC" : "CL_DEVICE_MAX_MEM_ALLOC_SIZE");
    return CLD_OK;
}

/* Create the n_chunks buffers of a chunked region of `floats` floats,
 * `chunk` floats each but the last. */
static cld_status make_chunks(cld_graph *g, size_t floats, size_t chunk, size_t align, cl_mem **out,
                              int *count, const char *what)
{
    if (!floats) floats = align;
    size_t n = (floats + chunk - 1) / chunk;
    *out = calloc(n, sizeof **out);
    if (!*out) return cld__fail(CLD_ERR_NOMEM, "planner: out of host memory");
    *count = (int)n;
    for (size_t k = 0; k < n; k++) {
        size_t len = k + 1 < n ? chunk : floats - k * chunk;
        char msg[128];
        snprintf(msg, sizeof msg, "graph %s, chunk %zu of %zu", what, k + 1, n);
        CLD_TRY(cld__buffer_create(g->ctx, CL_MEM_READ_WRITE, len * sizeof(float), NULL, msg, &(*out)[k]));
    }
    return CLD_OK;
}

/* Every node's kernels (op->kernels, those op->kernels_used names), looked
 * up once here so that running the plan looks none up: t->kern[i]. The
 * cl_kernel objects stay the context's, shared with its other graphs
 * (cldiffusion.h's thread rule). */
static cld_status resolve_kernels(cld_graph *g)
{
    for (int i = 0; i < g->n; i++) {
        cld_tensor *t = g->nodes[i];
        const cld_kernel_ref *ks = t->op ? t->op->kernels : NULL;
        if (!ks) continue;
        unsigned used = t->op->kernels_used ? t->op->kernels_used(g, t) : ~0u;
        for (int j = 0; ks[j].name; j++) {
            if (j >= CLD_OP_KERNELS)
                return cld__fail(CLD_ERR_STATE, "op '%s' lists more than %d kernels", t->op->name,
                                 CLD_OP_KERNELS);
            t->kern[j] = NULL;
            if (used >> j & 1u) CLD_TRY(cld__kernel(g->ctx, ks[j].program, ks[j].name, &t->kern[j]));
        }
    }
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
            int r = cld__root_of(t->src[s])->id;
            if (last[r] < i) last[r] = i;
        }
        if (t->op && t->op->is_view) {
            int r = cld__root_of(t)->id;
            if (last[r] < i) last[r] = i;
        }
    }
    /* Blocks start on 128 bytes. Chunks are at most the context's
     * allocation limit and 2^31 - 1 floats (int offsets), a multiple of the
     * device's base address alignment (CL_DEVICE_MEM_BASE_ADDR_ALIGN: 128
     * bytes on PoCL, 512 on rusticl), so that every chunk boundary is a valid
     * sub-buffer origin of one buffer; each chunk is a buffer of its own and
     * kernels get offsets as arguments, so inside a chunk 128 bytes is all a
     * block needs (the alignment of any data type). */
    const cld_ctx *ctx = g->ctx;
    planner pl = {0};
    pl.align = CLD_ALIGN_FLOATS;
    size_t unit = ctx->settings.base_align_bytes / sizeof(float);
    if (unit < pl.align) unit = pl.align;
    unit = (unit + pl.align - 1) / pl.align * pl.align;
    size_t chunk = ctx->settings.max_alloc_bytes / sizeof(float);
    if (chunk > (size_t)INT_MAX) chunk = (size_t)INT_MAX;
    pl.chunk = chunk / unit * unit;
    cld_status s = CLD_OK;
    /* int range first (the kernels' limit), then the allocation limit */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n && s == CLD_OK; i++) {
            cld_tensor *t = g->nodes[i];
            if ((t->op && t->op->is_view) || (t->flags & CLD_TF_PARAM)) continue;
            s = check_block(g, &pl, t, t->n, 0, cld__is_pinned(t) ? "inputs and outputs" : "activations",
                            pass);
            if (s == CLD_OK && t->ws) s = check_block(g, &pl, t, t->ws, 1, "workspace", pass);
        }
    if (s == CLD_OK && pl.chunk < pl.align)
        s = cld__fail(CLD_ERR_NOMEM, "allocation limit of %zu bytes is below one block of %zu",
                      ctx->settings.max_alloc_bytes, pl.align * sizeof(float));
    if (s != CLD_OK) {
        free(last);
        free(owner);
        return s;
    }
    /* pinned tensors: one region each in the pinned buffer (its chunks) */
    planner pp = pl;
    cld_plan_stats st = {0};
    for (int i = 0; i < n; i++) {
        cld_tensor *t = g->nodes[i];
        if ((t->flags & (CLD_TF_INPUT | CLD_TF_OUTPUT)) && !(t->flags & CLD_TF_PARAM) &&
            !(t->op && t->op->is_view)) {
            size_t len = align_up(&pp, t->n);
            if (len > pp.chunk - pp.top % pp.chunk) pp.top += pp.chunk - pp.top % pp.chunk;
            t->off = pp.top;
            pp.top += len;
        }
    }
    size_t pinned_n = pp.top;
    st.pinned_bytes = pinned_n * sizeof(float);
    int np = 0, capp = 0;
    for (int i = 0; i < n && s == CLD_OK; i++) {
        cld_tensor *t = g->nodes[i];
        g->pstart[i] = np;
        if (t->op && t->op->is_view) {
            /* aliases its source: resolved at run time from the root */
        } else if (cld__is_pinned(t)) {
            /* placed above or in the params store */
        } else {
            cld_tensor *r0 = t->nsrc ? cld__root_of(t->src[0]) : NULL;
            if (t->op && t->op->inplace && r0 && !cld__is_pinned(r0) && owner[r0->id] && last[r0->id] == i &&
                align_up(&pl, r0->n) >= align_up(&pl, t->n) && r0->n == t->n) {
                t->off = r0->off;
                owner[r0->id] = 0;
                owner[i] = 1;
                st.n_inplace++;
            } else {
                t->off = pl_alloc(&pl, t->n);
                owner[i] = 1;
                if (t->off == (size_t)-1) s = cld__fail(CLD_ERR_NOMEM, "planner: out of host memory");
            }
            st.sum_bytes += align_up(&pl, t->n) * sizeof(float);
            if (t->n * sizeof(float) > st.largest_bytes) st.largest_bytes = t->n * sizeof(float);
        }
        if (t->ws && s == CLD_OK) {
            if (t->ws * sizeof(float) > st.largest_bytes) st.largest_bytes = t->ws * sizeof(float);
            t->ws_off = pl_alloc(&pl, t->ws);
            st.sum_bytes += align_up(&pl, t->ws) * sizeof(float);
            if (t->ws_off == (size_t)-1 || pl_free(&pl, t->ws_off, t->ws))
                s = cld__fail(CLD_ERR_NOMEM, "planner: out of host memory");
            if (s == CLD_OK) s = record_poison(g, &pl, &np, &capp, t->ws_off, t->ws);
        }
        /* release sources (and dead outputs) whose last use is this node */
        for (int k = 0; k <= t->nsrc && s == CLD_OK; k++) {
            cld_tensor *r = k < t->nsrc ? cld__root_of(t->src[k]) : t;
            if (k == t->nsrc && (t->op && t->op->is_view)) break;
            if (!owner[r->id] || last[r->id] != i || cld__is_pinned(r)) continue;
            owner[r->id] = 0;
            if (pl_free(&pl, r->off, r->n))
                s = cld__fail(CLD_ERR_NOMEM, "planner: out of host memory");
            else
                s = record_poison(g, &pl, &np, &capp, r->off, r->n);
        }
    }
    g->pstart[n] = np;
    free(pl.free);
    free(last);
    free(owner);
    if (s != CLD_OK) return s;

    /* chunks lift the one-allocation limit, not the device's memory */
    const double need = ((double)pl.peak + (double)pinned_n) * sizeof(float);
    if (g->ctx->info.global_mem_bytes && need > (double)g->ctx->info.global_mem_bytes)
        return cld__fail(CLD_ERR_NOMEM,
                         "graph needs %.0f bytes of activations, device '%s' has %llu bytes of memory: use a "
                         "smaller batch",
                         need, g->ctx->info.name, (unsigned long long)g->ctx->info.global_mem_bytes);
    CLD_TRY(resolve_kernels(g));
    g->chunk_floats = pl.chunk;
    CLD_TRY(make_chunks(g, pl.peak, pl.chunk, pl.align, &g->arenas, &g->n_arenas, "arena"));
    CLD_TRY(make_chunks(g, pinned_n, pl.chunk, pl.align, &g->pinned, &g->n_pinned, "inputs/outputs"));

    /* bind buffers in node order (views follow their source): a planned
     * offset k * chunk + o is offset o in chunk k */
    for (int i = 0; i < n; i++) {
        cld_tensor *t = g->nodes[i];
        if (t->op && t->op->is_view) {
            t->buf = t->src[0]->buf;
            t->off = t->src[0]->off;
        } else if (t->flags & CLD_TF_PARAM) {
            CLD_TRY(cld__params_place(g->params, t->param_index, t->op != NULL, &t->buf, &t->off));
        } else if (t->flags & (CLD_TF_INPUT | CLD_TF_OUTPUT)) {
            t->buf = g->pinned[t->off / pl.chunk];
            t->off %= pl.chunk;
        } else {
            t->buf = g->arenas[t->off / pl.chunk];
            t->off %= pl.chunk;
        }
        if (t->ws) {
            t->ws_buf = g->arenas[t->ws_off / pl.chunk];
            t->ws_off %= pl.chunk;
        }
    }
    st.peak_bytes = pl.peak * sizeof(float);
    st.param_bytes = g->params ? g->params->total * sizeof(float) : 0;
    st.n_arena_chunks = g->n_arenas;
    st.n_nodes = n;
    g->stats = st;
    g->planned = 1;
    if (stats) *stats = st;
    return CLD_OK;
}
