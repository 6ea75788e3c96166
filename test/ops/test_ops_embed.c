/* Timestep embedding, label embedding, dropout and the MSE loss: opcheck
 * against double references, plus determinism, edge cases and shape errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/internal.h"
#include "opcheck.h"
#include "testutil.h"

static size_t shape_numel(const int *s, int nd)
{
    size_t n = 1;
    for (int i = 0; i < nd; i++) n *= (size_t)s[i];
    return n;
}

/* ------------------------------------------------- timestep embedding */
typedef struct ts_user {
    int N, dim;
} ts_user;

/* integer timesteps in [0, 1000) and a few fractional ones */
static void fill_timesteps(double *v, size_t n, uint64_t *rng, void *user)
{
    (void)user;
    for (size_t i = 0; i < n; i++) {
        v[i] = floor(opc_uniform(rng) * 1000.0);
        if (i % 3 == 1) v[i] += 0.25;
    }
    if (n > 1) {
        v[0] = 0.0;
        v[n - 1] = 999.0;
    }
}

static cld_status ts_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    return cld_op_timestep_embedding(g, x[0], ((ts_user *)user)->dim, y);
}

static void ts_ref(const double *const *x, double *y, void *user)
{
    const ts_user *u = user;
    int half = u->dim / 2, den = half > 1 ? half - 1 : 1;
    for (int n = 0; n < u->N; n++)
        for (int j = 0; j < u->dim; j++) {
            double v = 0.0;
            if (j < 2 * half) {
                int k = j < half ? j : j - half;
                double a = x[0][n] * exp(-log(10000.0) * k / den);
                v = j < half ? sin(a) : cos(a);
            }
            y[n * u->dim + j] = v;
        }
}

static void ts_case(int N, int dim)
{
    ts_user u = {N, dim};
    char name[64];
    snprintf(name, sizeof name, "timestep_embedding N=%d dim=%d", N, dim);
    opc_case c = {.name = name,
                  .n_operands = 1,
                  .op = {{"t", 1, {N}, 0, 1, fill_timesteps}},
                  .build = ts_build,
                  .ref_forward = ts_ref,
                  .user = &u,
                  .skip_backward = 1};
    opc_check(&c, 11 + (uint64_t)dim, 0, 0);
}

START_TEST(test_timestep_embedding)
{
    ts_case(3, 17); /* odd: zero pad column */
    ts_case(1, 30);
    ts_case(3, 2); /* half = 1: a single frequency 1 */
    ts_case(5, 129);
}
END_TEST

/* Timesteps that require a gradient get none from this op, and backward
 * still builds and runs. */
START_TEST(test_timestep_embedding_no_grad)
{
    cld_ctx *ctx = tu_ctx();
    cld_params *p;
    cld_graph *g;
    TU_OK(cld_params_create(ctx, &p));
    TU_OK(cld_graph_create(ctx, p, &g));
    cld_tensor *t, *emb, *w, *y, *loss, *tgt;
    int n = 3, dim = 9;
    TU_OK(cld_graph_input(g, "t", 1, &n, 1, &t));
    TU_OK(cld_op_timestep_embedding(g, t, dim, &emb));
    int ws[1] = {dim};
    TU_OK(cld_graph_param(g, "w", 1, ws, CLD_INIT_ONE, 0, &w));
    TU_OK(cld_op_mul(g, emb, w, &y));
    int ys[2] = {n, dim};
    TU_OK(cld_graph_input(g, "target", 2, ys, 0, &tgt));
    TU_OK(cld_op_mse_loss(g, y, tgt, NULL, &loss));
    TU_OK(cld_graph_set_output(g, loss));
    TU_OK(cld_graph_backward(g, loss));
    cld_tensor *gt;
    TU_STATUS(cld_tensor_grad(t, &gt), CLD_ERR_STATE);
    TU_OK(cld_graph_plan(g, NULL));
    float tv[3] = {1, 10, 100}, tg[27] = {0}, l;
    TU_OK(cld_tensor_write(g, t, tv));
    TU_OK(cld_tensor_write(g, tgt, tg));
    TU_OK(cld_params_zero_grad(p));
    TU_OK(cld_graph_run(g));
    TU_OK(cld_tensor_read(g, loss, &l));
    ck_assert_msg(isfinite(l) && l > 0, "loss %g", (double)l);
    TU_STATUS(cld_op_timestep_embedding(NULL, t, dim, &emb), CLD_ERR_INVALID_ARG);
    cld_graph_free(g);
    cld_params_free(p);
}
END_TEST

/* ------------------------------------------------------------ embedding */
typedef struct emb_user {
    int R, D, N;
    int bad; /* include out-of-range labels */
} emb_user;

static void fill_labels(double *v, size_t n, uint64_t *rng, void *user)
{
    const emb_user *u = user;
    for (size_t i = 0; i < n; i++) v[i] = floor(opc_uniform(rng) * u->R);
    if (n > 1) v[n - 1] = u->R - 1; /* the "null" class row */
    if (u->bad) {
        const double bad[] = {-1.0, (double)u->R, u->R + 7.0, -1e9, 1e9, NAN};
        for (size_t i = 0; i < n && i < 6; i++) v[2 * i % n] = bad[i];
    }
}

static int ref_row(double v, int R)
{
    double r = nearbyint(v);
    return (r >= 0.0 && r < R) ? (int)r : -1;
}

static cld_status emb_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    (void)user;
    return cld_op_embedding(g, x[0], x[1], y);
}

static void emb_ref(const double *const *x, double *y, void *user)
{
    const emb_user *u = user;
    for (int n = 0; n < u->N; n++) {
        int r = ref_row(x[1][n], u->R);
        for (int d = 0; d < u->D; d++) y[n * u->D + d] = r >= 0 ? x[0][r * u->D + d] : 0.0;
    }
}

static void emb_ref_bwd(const double *const *x, const double *dy, double **dx, void *user)
{
    const emb_user *u = user;
    for (int n = 0; n < u->N; n++) {
        int r = ref_row(x[1][n], u->R);
        if (r < 0) continue;
        for (int d = 0; d < u->D; d++) dx[0][r * u->D + d] += dy[n * u->D + d];
    }
}

static void emb_case(int R, int D, int N, int table_is_param, int bad)
{
    emb_user u = {R, D, N, bad};
    char name[80];
    snprintf(name, sizeof name, "embedding R=%d D=%d N=%d%s%s", R, D, N, table_is_param ? " param" : " input",
             bad ? " out-of-range" : "");
    opc_case c = {
        .name = name,
        .n_operands = 2,
        .op = {{"table", 2, {R, D}, table_is_param, 0, NULL}, {"labels", 1, {N}, 0, 1, fill_labels}},
        .build = emb_build,
        .ref_forward = emb_ref,
        .ref_backward = emb_ref_bwd,
        .user = &u};
    opc_check(&c, 100 + (uint64_t)(R * 7 + N), 0, 0);
}

START_TEST(test_embedding)
{
    emb_case(11, 13, 3, 1, 0);
    emb_case(11, 13, 1, 1, 0);
    emb_case(5, 7, 23, 0, 0); /* many repeated labels per row */
}
END_TEST

START_TEST(test_embedding_out_of_range)
{
    emb_case(6, 5, 15, 1, 1);
    emb_case(6, 5, 15, 0, 1);
}
END_TEST

START_TEST(test_embedding_shape_errors)
{
    cld_ctx *ctx = tu_ctx();
    cld_graph *g;
    TU_OK(cld_graph_create(ctx, NULL, &g));
    cld_tensor *tb, *lb, *lb2, *y;
    int ts[2] = {7, 5}, ls[1] = {3}, ls2[2] = {3, 1};
    TU_OK(cld_graph_input(g, "table", 2, ts, 0, &tb));
    TU_OK(cld_graph_input(g, "labels", 1, ls, 0, &lb));
    TU_OK(cld_graph_input(g, "labels2", 2, ls2, 0, &lb2));
    TU_STATUS(cld_op_embedding(g, tb, lb2, &y), CLD_ERR_SHAPE);
    ck_assert_msg(strstr(cld_last_error(), "embedding") && strstr(cld_last_error(), "(3, 1)"), "message: %s",
                  cld_last_error());
    TU_STATUS(cld_op_embedding(g, lb, lb, &y), CLD_ERR_SHAPE);
    TU_OK(cld_op_embedding(g, tb, lb, &y));
    int nd, sh[4];
    TU_OK(cld_tensor_shape(y, &nd, sh));
    ck_assert_int_eq(nd, 2);
    ck_assert_int_eq(sh[0], 3);
    ck_assert_int_eq(sh[1], 5);
    cld_graph_free(g);
}
END_TEST

/* -------------------------------------------------------------- dropout */

/* C mirror of dropout_uniform() in cl/embed.cl. */
static double ref_dropout_u(uint64_t seed, uint32_t node, uint32_t i)
{
    uint64_t z = seed ^ (0xD1B54A32D192ED03ull * ((uint64_t)node + 1u));
    z += 0x9E3779B97F4A7C15ull * ((uint64_t)i + 1u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(uint32_t)(z >> 40) / 16777216.0;
}

typedef struct drop_user {
    float p;
    uint64_t seed;
    int node; /* id of the dropout node, set by the builder */
    size_t n;
} drop_user;

static cld_status drop_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    drop_user *u = user;
    CLD_TRY(cld_graph_set_seed(g, u->seed));
    CLD_TRY(cld_op_dropout(g, x[0], u->p, y));
    u->node = (*y)->id;
    return CLD_OK;
}

static double drop_factor(const drop_user *u, size_t i)
{
    if (u->p == 0.0f) return 1.0;
    return ref_dropout_u(u->seed, (uint32_t)u->node, (uint32_t)i) >= (double)u->p ? 1.0 / (1.0 - u->p) : 0.0;
}

static void drop_ref(const double *const *x, double *y, void *user)
{
    const drop_user *u = user;
    for (size_t i = 0; i < u->n; i++) y[i] = x[0][i] * drop_factor(u, i);
}

static void drop_ref_bwd(const double *const *x, const double *dy, double **dx, void *user)
{
    (void)x;
    const drop_user *u = user;
    for (size_t i = 0; i < u->n; i++) dx[0][i] += dy[i] * drop_factor(u, i);
}

static void drop_case(const int *shape, float p, uint64_t seed)
{
    drop_user u = {p, seed, -1, shape_numel(shape, 4)};
    char name[80];
    snprintf(name, sizeof name, "dropout (%d,%d,%d,%d) p=%.2f", shape[0], shape[1], shape[2], shape[3],
             (double)p);
    opc_case c = {.name = name,
                  .n_operands = 1,
                  .op = {{"x", 4, {shape[0], shape[1], shape[2], shape[3]}, 0, 0, NULL}},
                  .build = drop_build,
                  .ref_forward = drop_ref,
                  .ref_backward = drop_ref_bwd,
                  .user = &u};
    opc_check(&c, seed, 0, 0);
    ck_assert_int_ge(u.node, 0);
}

START_TEST(test_dropout)
{
    const int s3[4] = {3, 5, 7, 9}, s1[4] = {1, 3, 28, 28};
    drop_case(s3, 0.3f, 42);
    drop_case(s1, 0.1f, 7);
    drop_case(s3, 0.75f, 1234567890123ull);
}
END_TEST

START_TEST(test_dropout_identity)
{
    const int s[4] = {3, 5, 7, 9};
    drop_case(s, 0.0f, 3);
    cld_graph *g;
    TU_OK(cld_graph_create(tu_ctx(), NULL, &g));
    cld_tensor *x, *y;
    TU_OK(cld_graph_input(g, "x", 4, s, 0, &x));
    TU_OK(cld_op_dropout(g, x, 0.0f, &y));
    ck_assert_ptr_eq(x, y);
    TU_STATUS(cld_op_dropout(g, x, 1.0f, &y), CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_op_dropout(g, x, -0.1f, &y), CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_op_dropout(g, x, NAN, &y), CLD_ERR_INVALID_ARG);
    cld_graph_free(g);
}
END_TEST

/* Kept fraction ~ 1 - p; masks depend on the seed and on the node, and are
 * reproducible for the same seed. */
START_TEST(test_dropout_mask_statistics)
{
    enum { N = 3 * 61 * 127 };
    const float p = 0.35f;
    cld_graph *g;
    TU_OK(cld_graph_create(tu_ctx(), NULL, &g));
    cld_tensor *x, *y1, *y2;
    int s[1] = {N};
    TU_OK(cld_graph_input(g, "x", 1, s, 0, &x));
    TU_OK(cld_op_dropout(g, x, p, &y1));
    TU_OK(cld_op_dropout(g, x, p, &y2));
    TU_OK(cld_graph_set_output(g, y1));
    TU_OK(cld_graph_set_output(g, y2));
    TU_OK(cld_graph_plan(g, NULL));
    float *ones = tu_malloc(N * sizeof(float)), *a = tu_malloc(N * sizeof(float)),
          *b = tu_malloc(N * sizeof(float)), *c = tu_malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) ones[i] = 1.0f;
    TU_OK(cld_tensor_write(g, x, ones));
    TU_OK(cld_graph_set_seed(g, 99));
    TU_OK(cld_graph_run(g));
    TU_OK(cld_tensor_read(g, y1, a));
    TU_OK(cld_tensor_read(g, y2, b));
    int kept = 0, same_nodes = 0;
    float scale = 1.0f / (1.0f - p);
    for (int i = 0; i < N; i++) {
        ck_assert_msg(a[i] == 0.0f || a[i] == scale, "y[%d] = %g", i, (double)a[i]);
        kept += a[i] != 0.0f;
        same_nodes += (a[i] != 0.0f) == (b[i] != 0.0f);
    }
    double frac = (double)kept / N;
    /* binomial std ~ 0.0028: 5 sigma */
    ck_assert_msg(fabs(frac - (1.0 - p)) < 0.015, "kept fraction %.4f, want %.2f", frac, 1.0 - p);
    /* independent masks agree on p^2 + (1-p)^2 = 0.545 of the elements */
    ck_assert_msg(fabs((double)same_nodes / N - 0.545) < 0.02, "two nodes agree on %d of %d", same_nodes, N);
    TU_OK(cld_graph_run(g));
    TU_OK(cld_tensor_read(g, y1, c));
    ck_assert_msg(!memcmp(a, c, N * sizeof(float)), "same seed gave another mask");
    TU_OK(cld_graph_set_seed(g, 100));
    TU_OK(cld_graph_run(g));
    TU_OK(cld_tensor_read(g, y1, c));
    int same_seed = 0;
    for (int i = 0; i < N; i++) same_seed += (a[i] != 0.0f) == (c[i] != 0.0f);
    ck_assert_msg(fabs((double)same_seed / N - 0.545) < 0.02, "seeds 99/100 agree on %d of %d", same_seed, N);
    free(ones);
    free(a);
    free(b);
    free(c);
    cld_graph_free(g);
}
END_TEST

/* ------------------------------------------------------------- MSE loss */
typedef struct mse_user {
    int N;
    size_t M;
    int weighted;
} mse_user;

static void fill_weights(double *v, size_t n, uint64_t *rng, void *user)
{
    (void)user;
    for (size_t i = 0; i < n; i++) v[i] = 0.25 + 2.0 * opc_uniform(rng);
}

static cld_status mse_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    const mse_user *u = user;
    return cld_op_mse_loss(g, x[0], x[1], u->weighted ? x[2] : NULL, y);
}

static void mse_ref(const double *const *x, double *y, void *user)
{
    const mse_user *u = user;
    double acc = 0.0;
    for (int n = 0; n < u->N; n++) {
        double s = 0.0;
        for (size_t j = 0; j < u->M; j++) {
            double d = x[0][n * u->M + j] - x[1][n * u->M + j];
            s += d * d;
        }
        acc += (u->weighted ? x[2][n] : 1.0) * s / (double)u->M;
    }
    y[0] = acc / u->N;
}

static void mse_ref_bwd(const double *const *x, const double *dy, double **dx, void *user)
{
    const mse_user *u = user;
    double c = 2.0 * dy[0] / ((double)u->N * (double)u->M);
    for (int n = 0; n < u->N; n++) {
        double w = u->weighted ? x[2][n] : 1.0, s = 0.0;
        for (size_t j = 0; j < u->M; j++) {
            size_t i = n * u->M + j;
            double d = x[0][i] - x[1][i];
            dx[0][i] += c * w * d;
            dx[1][i] -= c * w * d;
            s += d * d;
        }
        if (u->weighted) dx[2][n] += dy[0] * s / ((double)u->N * (double)u->M);
    }
}

/* weighted: 0 none, 1 data weights, 2 weights that need a gradient */
static void mse_case(const int *shape, int weighted, int target_grad)
{
    mse_user u = {shape[0], shape_numel(shape, 4) / (size_t)shape[0], weighted != 0};
    char name[96];
    snprintf(name, sizeof name, "mse_loss (%d,%d,%d,%d) w=%d tgrad=%d", shape[0], shape[1], shape[2],
             shape[3], weighted, target_grad);
    opc_case c = {.name = name,
                  .n_operands = weighted ? 3 : 2,
                  .op = {{"pred", 4, {shape[0], shape[1], shape[2], shape[3]}, 0, 0, NULL},
                         {"target", 4, {shape[0], shape[1], shape[2], shape[3]}, 0, !target_grad, NULL},
                         {"weights", 1, {shape[0]}, 0, weighted != 2, fill_weights}},
                  .build = mse_build,
                  .ref_forward = mse_ref,
                  .ref_backward = mse_ref_bwd,
                  .user = &u};
    opc_check(&c, 5 + (uint64_t)shape_numel(shape, 4), 0, 0);
}

START_TEST(test_mse_loss)
{
    const int s3[4] = {3, 5, 7, 9}, s1[4] = {1, 3, 28, 28};
    mse_case(s3, 0, 1);
    mse_case(s3, 1, 0);
    mse_case(s1, 1, 1);
    mse_case(s3, 2, 1);
}
END_TEST

/* Samples larger than one reduction chunk (4096), several chunks per sample. */
START_TEST(test_mse_loss_multichunk)
{
    const int s[4] = {3, 3, 45, 47};
    mse_case(s, 1, 1);
    const int s1[4] = {1, 1, 97, 89};
    mse_case(s1, 0, 0);
}
END_TEST

/* The loss and its gradient are bit-identical over repeated runs. */
START_TEST(test_mse_loss_deterministic)
{
    cld_graph *g;
    TU_OK(cld_graph_create(tu_ctx(), NULL, &g));
    int s[4] = {3, 5, 61, 67};
    size_t n = shape_numel(s, 4);
    cld_tensor *p, *t, *l, *dp;
    TU_OK(cld_graph_input(g, "pred", 4, s, 1, &p));
    TU_OK(cld_graph_input(g, "target", 4, s, 0, &t));
    TU_OK(cld_op_mse_loss(g, p, t, NULL, &l));
    TU_OK(cld_graph_set_output(g, l));
    TU_OK(cld_graph_backward(g, l));
    TU_OK(cld_tensor_grad(p, &dp));
    TU_OK(cld_graph_plan(g, NULL));
    float *pv = tu_rand_uniform(n, 1, -3, 3), *tv = tu_rand_uniform(n, 2, -3, 3);
    float *g0 = tu_malloc(n * sizeof(float)), *g1 = tu_malloc(n * sizeof(float));
    TU_OK(cld_tensor_write(g, p, pv));
    TU_OK(cld_tensor_write(g, t, tv));
    float l0, l1;
    TU_OK(cld_graph_run(g));
    TU_OK(cld_tensor_read(g, l, &l0));
    TU_OK(cld_tensor_read(g, dp, g0));
    double ref = 0;
    for (size_t i = 0; i < n; i++) ref += ((double)pv[i] - tv[i]) * ((double)pv[i] - tv[i]);
    ref /= (double)n;
    ck_assert_msg(fabs(l0 - ref) <= 1e-5 * ref, "loss %.9g, reference %.9g", (double)l0, ref);
    for (int rep = 0; rep < 3; rep++) {
        TU_OK(cld_graph_run(g));
        TU_OK(cld_tensor_read(g, l, &l1));
        TU_OK(cld_tensor_read(g, dp, g1));
        ck_assert_msg(!memcmp(&l0, &l1, sizeof l0), "loss %.9g then %.9g", (double)l0, (double)l1);
        ck_assert_msg(!memcmp(g0, g1, n * sizeof(float)), "gradient differs between runs");
    }
    free(pv);
    free(tv);
    free(g0);
    free(g1);
    cld_graph_free(g);
}
END_TEST

START_TEST(test_mse_loss_shape_errors)
{
    cld_graph *g;
    TU_OK(cld_graph_create(tu_ctx(), NULL, &g));
    int s[4] = {3, 5, 7, 9}, s2[4] = {3, 5, 9, 7}, ws[1] = {3}, ws2[1] = {2};
    cld_tensor *p, *t, *t2, *w, *w2, *l;
    TU_OK(cld_graph_input(g, "pred", 4, s, 0, &p));
    TU_OK(cld_graph_input(g, "target", 4, s, 0, &t));
    TU_OK(cld_graph_input(g, "target2", 4, s2, 0, &t2));
    TU_OK(cld_graph_input(g, "w", 1, ws, 0, &w));
    TU_OK(cld_graph_input(g, "w2", 1, ws2, 0, &w2));
    TU_STATUS(cld_op_mse_loss(g, p, t2, NULL, &l), CLD_ERR_SHAPE);
    ck_assert_msg(strstr(cld_last_error(), "mse_loss") && strstr(cld_last_error(), "(3, 5, 7, 9)") &&
                      strstr(cld_last_error(), "(3, 5, 9, 7)"),
                  "message: %s", cld_last_error());
    TU_STATUS(cld_op_mse_loss(g, p, t, w2, &l), CLD_ERR_SHAPE);
    ck_assert_msg(strstr(cld_last_error(), "(2)"), "message: %s", cld_last_error());
    TU_STATUS(cld_op_mse_loss(g, p, t, NULL, NULL), CLD_ERR_INVALID_ARG);
    TU_OK(cld_op_mse_loss(g, p, t, w, &l));
    size_t n;
    TU_OK(cld_tensor_numel(l, &n));
    ck_assert_uint_eq(n, 1);
    cld_graph_free(g);
}
END_TEST

static Suite *embed_suite(void)
{
    Suite *s = suite_create("ops_embed");
    TCase *tc = tcase_create("timestep");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_timestep_embedding);
    tcase_add_test(tc, test_timestep_embedding_no_grad);
    suite_add_tcase(s, tc);

    tc = tcase_create("embedding");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_embedding);
    tcase_add_test(tc, test_embedding_out_of_range);
    tcase_add_test(tc, test_embedding_shape_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("dropout");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_dropout);
    tcase_add_test(tc, test_dropout_identity);
    tcase_add_test(tc, test_dropout_mask_statistics);
    suite_add_tcase(s, tc);

    tc = tcase_create("mse");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_mse_loss);
    tcase_add_test(tc, test_mse_loss_multichunk);
    tcase_add_test(tc, test_mse_loss_deterministic);
    tcase_add_test(tc, test_mse_loss_shape_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(embed_suite()); }
