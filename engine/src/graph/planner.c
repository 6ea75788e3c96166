/* Memory planning: every non-pinned tensor and workspace gets an offset in
 * one arena, best-fit into the blocks released after each node's last use;
 * in-place ops take over their source's block. Inputs, outputs and input
 * gradients are pinned in a buffer of their own; parameters and their
 * gradients live in the parameter store. */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct planner {
    cld__block *free;
    int nfree, cap;
    size_t top, peak;
} planner;

static size_t align_up(size_t n) { return (n + CLD_ALIGN_FLOATS - 1) / CLD_ALIGN_FLOATS * CLD_ALIGN_FLOATS; }

static size_t pl_alloc(planner *p, size_t len)
{
    len = align_up(len);
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
    size_t off = p->top;
    p->top += len;
    if (p->top > p->peak) p->peak = p->top;
    return off;
}

static int pl_free(planner *p, size_t off, size_t len)
{
    len = align_up(len);
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
    if (i + 1 < p->nfree && p->free[i].off + p->free[i].len == p->free[i + 1].off) {
        p->free[i].len += p->free[i + 1].len;
        memmove(&p->free[i + 1], &p->free[i + 2], (size_t)(p->nfree - i - 2) * sizeof *p->free);
        p->nfree--;
    }
    if (i > 0 && p->free[i - 1].off + p->free[i - 1].len == p->free[i].off) {
        p->free[i - 1].len += p->free[i].len;
        memmove(&p->free[i], &p->free[i + 1], (size_t)(p->nfree - i - 1) * sizeof *p->free);
        p->nfree--;
        i--;
    }
    if (p->free[i].off + p->free[i].len == p->top) { /* give the tail back */
        p->top = p->free[i].off;
        p->nfree--;
    }
    return 0;
}

static cld_status record_poison(cld_graph *g, int *np, int *capp, size_t off, size_t len)
{
    if (!g->poison) return CLD_OK;
    if (*np == *capp) {
        int cap = *capp ? *capp * 2 : 256;
        cld__block *nr = realloc(g->pranges, (size_t)cap * sizeof *nr);
        if (!nr) return cld__fail(CLD_ERR_NOMEM, "planner: out of host memory");
        g->pranges = nr;
        *capp = cap;
    }
    g->pranges[(*np)++] = (cld__block){off, align_up(len)};
    return CLD_OK;
}

/* Kernels take offsets and counts as int: past 2^31 - 1 floats (an 8 GiB
 * arena) they would wrap silently, so such a plan is refused. */
static cld_status check_int_offsets(size_t floats, const char *what)
{
    if (floats <= (size_t)INT_MAX) return CLD_OK;
    return cld__fail(CLD_ERR_NOMEM,
                     "graph needs %zu floats of %s, more than the 2^31 - 1 that the kernels' "
                     "int offsets reach: use a smaller batch",
                     floats, what);
}

cld_status cld_graph_plan(cld_graph *g, cld_plan_stats *stats)
{
    if (!g) return cld__fail(CLD_ERR_INVALID_ARG, "cld_graph_plan: NULL graph");
    if (g->planned) {
        if (stats) *stats = g->stats;
        return CLD_OK;
    }
    if (g->params) CLD_TRY(check_int_offsets(g->params->total, "parameters"));
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
    /* pinned tensors: one region each in the pinned buffer */
    size_t pinned_n = 0;
    cld_plan_stats st = {0};
    for (int i = 0; i < n; i++) {
        cld_tensor *t = g->nodes[i];
        if ((t->flags & (CLD_TF_INPUT | CLD_TF_OUTPUT)) && !(t->flags & CLD_TF_PARAM) &&
            !(t->op && t->op->is_view)) {
            t->off = pinned_n;
            pinned_n += align_up(t->n);
        }
    }
    st.pinned_bytes = pinned_n * sizeof(float);
    planner pl = {0};
    int np = 0, capp = 0;
    cld_status s = CLD_OK;
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
                align_up(r0->n) >= align_up(t->n) && r0->n == t->n) {
                t->off = r0->off;
                owner[r0->id] = 0;
                owner[i] = 1;
                st.n_inplace++;
            } else {
                t->off = pl_alloc(&pl, t->n);
                owner[i] = 1;
            }
            st.sum_bytes += align_up(t->n) * sizeof(float);
        }
        if (t->ws) {
            t->ws_off = pl_alloc(&pl, t->ws);
            st.sum_bytes += align_up(t->ws) * sizeof(float);
            if (pl_free(&pl, t->ws_off, t->ws)) s = cld__fail(CLD_ERR_NOMEM, "planner: out of host memory");
            if (s == CLD_OK) s = record_poison(g, &np, &capp, t->ws_off, t->ws);
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
                s = record_poison(g, &np, &capp, r->off, r->n);
        }
    }
    g->pstart[n] = np;
    free(pl.free);
    free(last);
    free(owner);
    if (s != CLD_OK) return s;

    CLD_TRY(check_int_offsets(pl.peak, "activations"));
    CLD_TRY(check_int_offsets(pinned_n, "inputs and outputs"));
    size_t arena_bytes = (pl.peak ? pl.peak : CLD_ALIGN_FLOATS) * sizeof(float);
    size_t pinned_bytes = (pinned_n ? pinned_n : CLD_ALIGN_FLOATS) * sizeof(float);
    if (arena_bytes > g->ctx->info.max_alloc_bytes || pinned_bytes > g->ctx->info.max_alloc_bytes)
        return cld__fail(CLD_ERR_NOMEM,
                         "graph needs %zu bytes of activations, device '%s' allows "
                         "%llu per allocation: use a smaller batch",
                         arena_bytes, g->ctx->info.name, (unsigned long long)g->ctx->info.max_alloc_bytes);
    CLD_TRY(cld__buffer_create(g->ctx, CL_MEM_READ_WRITE, arena_bytes, NULL, "graph arena", &g->arena));
    CLD_TRY(cld__buffer_create(g->ctx, CL_MEM_READ_WRITE, pinned_bytes, NULL, "graph inputs/outputs",
                               &g->pinned));

    /* bind buffers in node order (views follow their source) */
    for (int i = 0; i < n; i++) {
        cld_tensor *t = g->nodes[i];
        if (t->op && t->op->is_view) {
            t->buf = t->src[0]->buf;
            t->off = t->src[0]->off;
        } else if (t->flags & CLD_TF_PARAM) {
            size_t off;
            CLD_TRY(cld_params_info(g->params, t->param_index, NULL, NULL, NULL, &off));
            t->buf = t->op ? g->params->grads : g->params->values;
            t->off = off;
        } else if (t->flags & (CLD_TF_INPUT | CLD_TF_OUTPUT)) {
            t->buf = g->pinned;
        } else {
            t->buf = g->arena;
        }
    }
    st.peak_bytes = pl.peak * sizeof(float);
    st.param_bytes = g->params ? g->params->total * sizeof(float) : 0;
    st.n_nodes = n;
    g->stats = st;
    g->planned = 1;
    if (stats) *stats = st;
    return CLD_OK;
}
