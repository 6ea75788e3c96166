/* The memory planner: a graph of a few dozen ops (chains, branches, a
 * tensor read by several later ops, reshapes, in-place ops, backward) gives
 * bit-identical, NaN-free results with and without poisoning of released
 * memory; planned offsets never overlap for simultaneously live tensors;
 * plan statistics show reuse and in-place ops. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/internal.h"
#include "testutil.h"

enum { N = 3, C = 5, H = 7, W = 9, NX = N * C * H * W, R = 4 };

static const cld_tensor *root_of(const cld_tensor *t)
{
    while (t->op && t->op->is_view) t = t->src[0];
    return t;
}

/* -------------------------------------------------- liveness on the host */
typedef struct block {
    size_t off, len;     /* floats in the arena */
    int start, end;      /* node range during which the block is live */
    const cld_tensor *t; /* producing node */
    int is_ws;           /* t's workspace rather than its output */
} block;

/* Checks from the planned offsets alone that no two arena blocks that are
 * live at the same node overlap, except an in-place op's output on its
 * first source at that source's last use. Returns the number of such
 * in-place pairs. Liveness: from the producing node to the last node that
 * reads the tensor; a view's readers (and the view itself) extend its root. */
static int check_no_overlap(cld_graph *g, size_t arena_floats)
{
    int n = 0;
    while (cld__graph_node(g, n)) n++;
    int *last = tu_malloc((size_t)n * sizeof *last);
    for (int i = 0; i < n; i++) last[i] = i;
    for (int i = 0; i < n; i++) {
        const cld_tensor *t = cld__graph_node(g, i);
        ck_assert_int_eq(t->id, i);
        for (int s = 0; s < t->nsrc; s++) {
            int r = root_of(t->src[s])->id;
            ck_assert_int_lt(r, i); /* sources come first */
            if (last[r] < i) last[r] = i;
        }
        if (t->op && t->op->is_view && last[root_of(t)->id] < i) last[root_of(t)->id] = i;
    }
    cl_mem arena = cld__graph_arena(g, 0);
    block *b = tu_malloc(2 * (size_t)n * sizeof *b);
    int nb = 0;
    for (int i = 0; i < n; i++) {
        const cld_tensor *t = cld__graph_node(g, i);
        if (t->op && t->op->is_view) {
            ck_assert_ptr_eq(t->buf, root_of(t)->buf);
            ck_assert_uint_eq(t->off, root_of(t)->off);
            continue;
        }
        if (t->buf == arena) b[nb++] = (block){t->off, t->n, i, last[i], t, 0};
        if (t->ws) b[nb++] = (block){t->ws_off, t->ws, i, i, t, 1};
    }
    int inplace = 0;
    for (int i = 0; i < nb; i++) {
        ck_assert_msg(b[i].off + b[i].len <= arena_floats, "%s [%zu, +%zu) beyond the arena (%zu floats)",
                      b[i].t->name, b[i].off, b[i].len, arena_floats);
        for (int j = i + 1; j < nb; j++) {
            const block *a = &b[i], *c = &b[j];
            int mem = a->off < c->off + c->len && c->off < a->off + a->len;
            int time = a->start <= c->end && c->start <= a->end;
            if (!mem || !time) continue;
            /* a is produced first (i < j): allowed only as c in place on a */
            int ok = !a->is_ws && !c->is_ws && a->end == c->start && c->t->op && c->t->op->inplace &&
                     root_of(c->t->src[0]) == a->t && a->off == c->off && a->len == c->len;
            ck_assert_msg(ok,
                          "'%s'%s (node %d, live %d..%d, [%zu, +%zu)) overlaps '%s'%s (node %d, live %d..%d, "
                          "[%zu, +%zu))",
                          a->t->name, a->is_ws ? " workspace" : "", a->t->id, a->start, a->end, a->off,
                          a->len, c->t->name, c->is_ws ? " workspace" : "", c->t->id, c->start, c->end,
                          c->off, c->len);
            inplace++;
        }
    }
    free(b);
    free(last);
    return inplace;
}

/* ---------------------------------------------------------- a big graph */
typedef struct big {
    cld_graph *g;
    cld_tensor *x, *labels, *t, *target, *weights; /* inputs */
    cld_tensor *loss, *mid, *dx;                   /* outputs */
    int iw1, iw2, itable;                          /* parameter indices */
    cld_plan_stats st;
} big;

#define B(expr) TU_OK(expr)

static void build_big(cld_params *p, int poison, big *o)
{
    memset(o, 0, sizeof *o);
    B(cld_graph_create(tu_ctx(), p, &o->g));
    cld_graph *g = o->g;
    B(cld_graph_set_poison(g, poison));
    B(cld_graph_set_seed(g, 2024));
    const int xs[4] = {N, C, H, W}, ns[1] = {N}, cs[1] = {C}, c4[4] = {1, C, 1, 1}, ts[2] = {R, C};
    cld_tensor *w1, *w2, *table;
    B(cld_graph_input(g, "x", 4, xs, 1, &o->x));
    B(cld_graph_input(g, "labels", 1, ns, 0, &o->labels));
    B(cld_graph_input(g, "t", 1, ns, 0, &o->t));
    B(cld_graph_input(g, "target", 4, xs, 0, &o->target));
    B(cld_graph_input(g, "weights", 1, ns, 0, &o->weights));
    B(cld_graph_param(g, "w1", 1, cs, CLD_INIT_NORMAL, 0.7f, &w1));
    B(cld_graph_param(g, "w2", 4, c4, CLD_INIT_NORMAL, 0.7f, &w2));
    B(cld_graph_param(g, "table", 2, ts, CLD_INIT_NORMAL, 0.5f, &table));
    o->iw1 = w1->param_index;
    o->iw2 = w2->param_index;
    o->itable = table->param_index;

    cld_tensor *a, *b, *c, *d, *e, *f, *f2, *g1, *emb, *tse, *ce, *ce2, *h, *h2;
    cld_tensor *br1, *br2, *m, *m2, *dr, *r, *r2, *r3, *s1, *s2, *s3, *q, *q2;
    B(cld_op_silu(g, o->x, &a)); /* a: read again near the end */
    B(cld_op_scale(g, a, 0.5f, &b));
    B(cld_op_mul(g, b, w1, &c));   /* (C) broadcast */
    B(cld_op_add(g, c, o->x, &d)); /* d: read again much later */
    B(cld_op_reshape(g, d, 2, (int[]){N * C, H * W}, &e));
    B(cld_op_silu(g, e, &f));
    B(cld_op_scale(g, f, -1.3f, &f2)); /* in place on f */
    B(cld_op_reshape(g, f2, 4, xs, &g1));
    B(cld_op_embedding(g, table, o->labels, &emb)); /* (N, C) */
    B(cld_op_timestep_embedding(g, o->t, C, &tse)); /* (N, C) */
    B(cld_op_add(g, emb, tse, &ce));
    B(cld_op_silu(g, ce, &ce2));
    B(cld_op_add(g, g1, ce2, &h)); /* (N, C) broadcast */
    B(cld_op_mul(g, h, w2, &h2));  /* (1, C, 1, 1) broadcast */
    B(cld_op_silu(g, h2, &br1));   /* two branches of h2 */
    B(cld_op_scale(g, h2, 0.7f, &br2));
    B(cld_op_mul(g, br1, br2, &m));
    B(cld_op_add(g, m, d, &m2));
    B(cld_op_dropout(g, m2, 0.2f, &dr));
    B(cld_op_reshape(g, dr, 2, (int[]){N, C * H * W}, &r));
    B(cld_op_scale(g, r, 1.1f, &r2));
    B(cld_op_reshape(g, r2, 4, xs, &r3));
    B(cld_op_silu(g, r3, &s1));
    B(cld_op_add(g, s1, a, &s2));
    B(cld_op_mul(g, s2, o->x, &s3));
    B(cld_op_mul(g, s3, s3, &q)); /* same operand twice */
    B(cld_op_add(g, q, s2, &q2));
    B(cld_op_mse_loss(g, q2, o->target, o->weights, &o->loss));
    o->mid = h;
    B(cld_graph_set_output(g, o->mid));
    B(cld_graph_set_output(g, o->loss));
    B(cld_graph_backward(g, o->loss));
    B(cld_tensor_grad(o->x, &o->dx));
    B(cld_graph_plan(g, &o->st));
}

typedef struct big_out {
    float loss, mid[N * C * H * W], dx[NX], dw1[C], dw2[C], dtable[R * C];
} big_out;

static void run_big(cld_params *p, big *o, big_out *out)
{
    float *xv = tu_rand_uniform(NX, 1, -1.5f, 1.5f), *tg = tu_rand_uniform(NX, 2, -1, 1);
    float lab[N] = {3, 0, 3}, tv[N] = {0, 417, 999}, wv[N] = {0.5f, 1.0f, 2.0f};
    B(cld_tensor_write(o->g, o->x, xv));
    B(cld_tensor_write(o->g, o->target, tg));
    B(cld_tensor_write(o->g, o->labels, lab));
    B(cld_tensor_write(o->g, o->t, tv));
    B(cld_tensor_write(o->g, o->weights, wv));
    B(cld_params_zero_grad(p));
    B(cld_graph_run(o->g));
    B(cld_tensor_read(o->g, o->loss, &out->loss));
    B(cld_tensor_read(o->g, o->mid, out->mid));
    B(cld_tensor_read(o->g, o->dx, out->dx));
    B(cld_params_read_grad(p, o->iw1, out->dw1));
    B(cld_params_read_grad(p, o->iw2, out->dw2));
    B(cld_params_read_grad(p, o->itable, out->dtable));
    free(xv);
    free(tg);
}

static void assert_finite(const float *v, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++) ck_assert_msg(isfinite(v[i]), "%s[%zu] = %g", what, i, (double)v[i]);
}

START_TEST(test_poison_bit_identical)
{
    cld_params *p;
    B(cld_params_create(tu_ctx(), &p));
    B(cld_params_set_seed(p, 77));
    big plain, pois;
    build_big(p, 0, &plain);
    build_big(p, 1, &pois);
    ck_assert_int_ge(plain.st.n_nodes, 60);
    fprintf(stderr, "planner: %d nodes, peak %zu bytes, sum %zu, pinned %zu, in place %d\n", plain.st.n_nodes,
            plain.st.peak_bytes, plain.st.sum_bytes, plain.st.pinned_bytes, plain.st.n_inplace);
    ck_assert_int_eq(pois.st.n_nodes, plain.st.n_nodes);
    ck_assert_uint_eq(pois.st.peak_bytes, plain.st.peak_bytes);
    ck_assert_uint_lt(plain.st.peak_bytes, plain.st.sum_bytes);
    ck_assert_int_gt(plain.st.n_inplace, 0);

    static big_out a, b, c;
    /* the plan resolved every node's kernels: running it looks none up */
    unsigned long lookups = tu_ctx()->kernel_lookups;
    run_big(p, &plain, &a);
    ck_assert_uint_eq(tu_ctx()->kernel_lookups, lookups);
    run_big(p, &pois, &b);
    run_big(p, &pois, &c); /* a second run over memory poisoned by the first */
    assert_finite(&a.loss, 1, "loss");
    assert_finite(a.mid, NX, "mid");
    assert_finite(a.dx, NX, "dx");
    assert_finite(a.dw1, C, "dw1");
    assert_finite(a.dw2, C, "dw2");
    assert_finite(a.dtable, R * C, "dtable");
    ck_assert_msg(a.loss > 0, "loss %g", (double)a.loss);
    /* gradients reached every parameter (row 1, 2 of the table are unused) */
    double s1 = 0, s2 = 0;
    for (int i = 0; i < C; i++) s1 += fabs(a.dw1[i]), s2 += fabs(a.dw2[i]);
    ck_assert(s1 > 0 && s2 > 0);
    for (int i = 0; i < C; i++) {
        ck_assert(a.dtable[0 * C + i] != 0 && a.dtable[3 * C + i] != 0);
        ck_assert(a.dtable[1 * C + i] == 0 && a.dtable[2 * C + i] == 0);
    }
    ck_assert_msg(!memcmp(&a, &b, sizeof a), "poisoned run differs from the plain run");
    ck_assert_msg(!memcmp(&a, &c, sizeof a), "second poisoned run differs from the plain run");

    size_t arena_floats = plain.st.peak_bytes / sizeof(float);
    int ip = check_no_overlap(plain.g, arena_floats);
    ck_assert_int_eq(ip, plain.st.n_inplace);
    cld_graph_free(plain.g);
    cld_graph_free(pois.g);
    cld_params_free(p);
}
END_TEST

/* Alternating silu / scale chain: each scale runs in place on the silu
 * before it, and the arena holds about two tensors. */
START_TEST(test_chain_reuse)
{
    cld_graph *g;
    B(cld_graph_create(tu_ctx(), NULL, &g));
    const int xs[4] = {N, C, H, W};
    cld_tensor *x, *y;
    B(cld_graph_input(g, "x", 4, xs, 0, &x));
    y = x;
    for (int i = 0; i < 6; i++) {
        B(cld_op_silu(g, y, &y));
        B(cld_op_scale(g, y, 0.9f, &y));
    }
    B(cld_op_silu(g, y, &y));
    B(cld_graph_set_output(g, y));
    cld_plan_stats st;
    B(cld_graph_plan(g, &st));
    fprintf(stderr, "chain: peak %zu bytes, sum %zu, in place %d\n", st.peak_bytes, st.sum_bytes,
            st.n_inplace);
    ck_assert_int_eq(st.n_nodes, 14);
    ck_assert_int_eq(st.n_inplace, 6);
    ck_assert_uint_lt(st.peak_bytes, st.sum_bytes);
    ck_assert_uint_le(st.peak_bytes, 2 * (NX * sizeof(float) + 128));
    ck_assert_uint_ge(st.sum_bytes, 12 * NX * sizeof(float));
    ck_assert_int_eq(check_no_overlap(g, st.peak_bytes / sizeof(float)), 6);

    float *xv = tu_rand_uniform(NX, 3, -2, 2), *yv = tu_malloc(NX * sizeof(float));
    B(cld_tensor_write(g, x, xv));
    B(cld_graph_run(g));
    B(cld_tensor_read(g, y, yv));
    for (int i = 0; i < NX; i++) {
        double v = xv[i];
        for (int k = 0; k < 6; k++) v = 0.9 * v / (1 + exp(-v));
        v = v / (1 + exp(-v));
        ck_assert_msg(fabs(yv[i] - v) <= 1e-5, "y[%d] = %.7g, want %.7g", i, (double)yv[i], v);
    }
    free(xv);
    free(yv);
    cld_graph_free(g);
}
END_TEST

/* No in-place op on a tensor that is read later: b = 0.5 a cannot overwrite
 * a (read again by the add), the add can overwrite b. */
START_TEST(test_inplace_only_at_last_use)
{
    cld_graph *g;
    B(cld_graph_create(tu_ctx(), NULL, &g));
    const int xs[3] = {3, 7, 5};
    cld_tensor *x, *a, *b, *c, *d;
    B(cld_graph_input(g, "x", 3, xs, 0, &x));
    B(cld_op_silu(g, x, &a));
    B(cld_op_scale(g, a, 0.5f, &b));
    B(cld_op_add(g, b, a, &c));
    B(cld_op_silu(g, c, &d));
    B(cld_graph_set_output(g, d));
    cld_plan_stats st;
    B(cld_graph_plan(g, &st));
    ck_assert_int_eq(st.n_inplace, 1);
    ck_assert_uint_eq(c->off, b->off);
    ck_assert_uint_ne(b->off, a->off);
    ck_assert_int_eq(check_no_overlap(g, st.peak_bytes / sizeof(float)), 1);
    float xv[105], dv[105];
    tu_fill_uniform(xv, 105, 9, -3, 3);
    B(cld_tensor_write(g, x, xv));
    B(cld_graph_run(g));
    B(cld_tensor_read(g, d, dv));
    for (int i = 0; i < 105; i++) {
        double s = 1.5 * xv[i] / (1 + exp(-(double)xv[i]));
        double want = s / (1 + exp(-s));
        ck_assert_msg(fabs(dv[i] - want) <= 1e-5, "d[%d] = %.7g, want %.7g", i, (double)dv[i], want);
    }
    cld_graph_free(g);
}
END_TEST

/* Temporaries cannot be read or written; inputs, outputs (and views of
 * them) can, after planning. */
START_TEST(test_temporary_access)
{
    cld_graph *g;
    B(cld_graph_create(tu_ctx(), NULL, &g));
    const int xs[2] = {5, 7}, rs[1] = {35};
    cld_tensor *x, *a, *b, *v;
    B(cld_graph_input(g, "x", 2, xs, 0, &x));
    B(cld_op_silu(g, x, &a));
    B(cld_op_scale(g, a, 2.0f, &b));
    B(cld_op_reshape(g, b, 1, rs, &v));
    B(cld_graph_set_output(g, v));
    float xv[35], buf[35] = {0};
    tu_fill_uniform(xv, 35, 11, -2, 2);
    TU_STATUS(cld_tensor_write(g, x, xv), CLD_ERR_STATE); /* not planned */
    B(cld_graph_plan(g, NULL));
    TU_STATUS(cld_tensor_read(g, a, buf), CLD_ERR_STATE);
    ck_assert_msg(strstr(cld_last_error(), "temporary") != NULL, "message: %s", cld_last_error());
    TU_STATUS(cld_tensor_write(g, a, buf), CLD_ERR_STATE);
    TU_STATUS(cld_op_silu(g, x, &a), CLD_ERR_STATE); /* no nodes after planning */
    B(cld_tensor_write(g, x, xv));
    B(cld_graph_run(g));
    /* v and its root b read back 2 silu(x), each into a buffer first set to
     * NaN, so a read that does nothing fails */
    cld_tensor *reads[2] = {v, b}; /* the root of an output view is pinned too */
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 35; i++) buf[i] = NAN;
        B(cld_tensor_read(g, reads[k], buf));
        for (int i = 0; i < 35; i++) {
            double want = 2.0 * xv[i] / (1 + exp(-(double)xv[i]));
            ck_assert_msg(fabs(buf[i] - want) <= 1e-5, "%s[%d] = %.7g, want %.7g", k ? "b" : "v", i,
                          (double)buf[i], want);
        }
    }
    cld_graph_free(g);
}
END_TEST

/* Kernels index the arena with int: a plan needing more than 2^31 - 1
 * floats of activations, or of inputs and outputs, is refused with a clear
 * error before anything is allocated (no device buffer of 8 GiB here). */
START_TEST(test_int_offsets_refused)
{
    for (int k = 0; k < 2; k++) {
        cld_graph *g;
        B(cld_graph_create(tu_ctx(), NULL, &g));
        cld_tensor *x, *y, *loss;
        if (k == 0) { /* pinned: an input of 2^31 floats */
            B(cld_graph_input(g, "x", 2, (int[]){1 << 16, 1 << 15}, 0, &x));
            B(cld_graph_set_output(g, x));
        } else { /* arena: 2^30 floats in, 2^32 upsampled, one loss out */
            B(cld_graph_input(g, "x", 4, (int[]){1, 1, 1 << 15, 1 << 15}, 0, &x));
            B(cld_op_upsample2x(g, x, &y));
            B(cld_op_mse_loss(g, y, y, NULL, &loss));
            B(cld_graph_set_output(g, loss));
        }
        TU_STATUS(cld_graph_plan(g, NULL), CLD_ERR_NOMEM);
        const char *msg = cld_last_error();
        ck_assert_msg(strstr(msg, "2^31 - 1") && strstr(msg, k == 0 ? "inputs and outputs" : "activations"),
                      "message: %s", msg);
        ck_assert_ptr_null(cld__graph_arena(g, 0));
        cld_graph_free(g);
    }
}
END_TEST

/* Issue 15: CLD_MAX_ALLOC lowers the per-buffer limit (read when a
 * context is made). A graph larger than it is split into chunks; a single
 * tensor larger than it is refused, naming the tensor and the limit. So is
 * a parameter. */
START_TEST(test_tensor_over_alloc_limit)
{
    setenv("CLD_MAX_ALLOC", "1M", 1);
    cld_ctx *ctx;
    B(cld_ctx_create(NULL, &ctx));
    /* two 0.75 MiB tensors live at once fit only in two chunks */
    cld_graph *g;
    B(cld_graph_create(ctx, NULL, &g));
    cld_tensor *x, *a, *b, *y;
    B(cld_graph_input(g, "x", 2, (int[]){3, 65536}, 0, &x));
    B(cld_op_silu(g, x, &a));
    B(cld_op_scale(g, x, 2.0f, &b));
    B(cld_op_add(g, a, b, &y));
    B(cld_graph_set_output(g, y));
    cld_plan_stats st;
    B(cld_graph_plan(g, &st));
    ck_assert_int_eq(st.n_arena_chunks, 2);
    cld_graph_free(g);
    /* one 1.5 MiB tensor does not fit */
    B(cld_graph_create(ctx, NULL, &g));
    B(cld_graph_input(g, "x", 2, (int[]){3, 65536}, 0, &x));
    B(cld_op_reshape(g, x, 4, (int[]){1, 3, 256, 256}, &a));
    B(cld_op_upsample2x(g, a, &b)); /* 3 x 512 x 512 floats: 3 MiB */
    B(cld_op_scale(g, b, 0.5f, &y));
    B(cld_graph_set_output(g, x));
    TU_STATUS(cld_graph_plan(g, NULL), CLD_ERR_NOMEM);
    const char *msg = cld_last_error();
    ck_assert_msg(strstr(msg, b->name) && strstr(msg, "1048576 bytes") && strstr(msg, "CLD_MAX_ALLOC"),
                  "message: %s", msg);
    ck_assert_ptr_null(cld__graph_arena(g, 0));
    cld_graph_free(g);
    /* and a parameter of 2 MiB */
    cld_params *p;
    B(cld_params_create(ctx, &p));
    TU_STATUS(cld_params_declare(p, "big.weight", 2, (int[]){512, 1024}, CLD_INIT_ZERO, 0.0f, NULL),
              CLD_ERR_NOMEM);
    msg = cld_last_error();
    ck_assert_msg(strstr(msg, "big.weight") && strstr(msg, "1048576 bytes"), "message: %s", msg);
    cld_params_free(p);
    cld_ctx_free(ctx);
    unsetenv("CLD_MAX_ALLOC");
}
END_TEST

static Suite *planner_suite(void)
{
    Suite *s = suite_create("planner");
    TCase *tc = tcase_create("planner");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_poison_bit_identical);
    tcase_add_test(tc, test_int_offsets_refused);
    tcase_add_test(tc, test_tensor_over_alloc_limit);
    tcase_add_test(tc, test_chain_reuse);
    tcase_add_test(tc, test_inplace_only_at_last_use);
    tcase_add_test(tc, test_temporary_access);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(planner_suite()); }
