/* Group norm and softmax against double references (opcheck), shape errors,
 * and the in-place forward path. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/internal.h" /* cld__op_group_norm_silu */
#include "opcheck.h"
#include "testutil.h"

/* ------------------------------------------------------------ group norm */
typedef struct gn_case {
    int N, C, HW, G;
    float eps;
    int ndim, shape[4]; /* shape of x */
    double offset;      /* added to the uniform fill of x */
    double pre_scale;   /* if nonzero: y = group_norm(scale(x, pre_scale)) */
    int silu;           /* the fused group_norm + SiLU */
    /* 1: y = group_norm(x) / 2 + x, x's two gradients summed inside the
     * backward kernel; 2: y = group_norm(x) + x, where the add's gradient
     * is the group norm's dy too (which dx may overwrite): a sum node */
    int residual;
} gn_case;

/* the group norm's weight in y (residual 1: 1/2) */
static double gn_weight(const gn_case *p) { return p->residual == 1 ? 0.5 : 1.0; }

static cld_status gn_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    const gn_case *p = user;
    cld_tensor *in = x[0];
    if (p->pre_scale != 0.0) {
        cld_status s = cld_op_scale(g, x[0], (float)p->pre_scale, &in);
        if (s) return s;
    }
    cld_tensor *h;
    cld_status s = p->silu ? cld__op_group_norm_silu(g, in, x[1], x[2], p->G, p->eps, &h)
                           : cld_op_group_norm(g, in, x[1], x[2], p->G, p->eps, &h);
    if (s || !p->residual) {
        *y = h;
        return s;
    }
    if (p->residual == 1) s = cld_op_scale(g, h, 0.5f, &h); /* its gradient a tensor of its own */
    return s ? s : cld_op_add(g, h, x[0], y);
}

/* mean and rstd of group (n, g) of x (N, C, HW) */
static void gn_ref_stats(const gn_case *p, const double *x, int n, int g, double *mean, double *rstd)
{
    int cpg = p->C / p->G, cnt = cpg * p->HW;
    const double *v = x + ((size_t)n * p->C + (size_t)g * cpg) * p->HW;
    double s = 0, q = 0;
    for (int j = 0; j < cnt; j++) s += v[j];
    *mean = s / cnt;
    for (int j = 0; j < cnt; j++) q += (v[j] - *mean) * (v[j] - *mean);
    *rstd = 1.0 / sqrt(q / cnt + (double)p->eps);
}

static double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

/* v = group_norm(x) (before the SiLU) into y */
static void gn_ref_affine(const double *const *x, double *y, void *user)
{
    const gn_case *p = user;
    int cpg = p->C / p->G;
    size_t n_all = (size_t)p->N * p->C * p->HW;
    double *xs = malloc(n_all * sizeof *xs);
    for (size_t i = 0; i < n_all; i++) xs[i] = p->pre_scale != 0.0 ? p->pre_scale * x[0][i] : x[0][i];
    for (int n = 0; n < p->N; n++)
        for (int g = 0; g < p->G; g++) {
            double mean, rstd;
            gn_ref_stats(p, xs, n, g, &mean, &rstd);
            for (int c = g * cpg; c < (g + 1) * cpg; c++)
                for (int j = 0; j < p->HW; j++) {
                    size_t i = ((size_t)n * p->C + c) * p->HW + j;
                    y[i] = (xs[i] - mean) * rstd * x[1][c] + x[2][c];
                }
        }
    free(xs);
}

static void gn_ref_forward(const double *const *x, double *y, void *user)
{
    const gn_case *p = user;
    gn_ref_affine(x, y, user);
    if (p->silu)
        for (size_t i = 0; i < (size_t)p->N * p->C * p->HW; i++) y[i] *= sigmoid(y[i]);
    if (p->residual)
        for (size_t i = 0; i < (size_t)p->N * p->C * p->HW; i++) y[i] = gn_weight(p) * y[i] + x[0][i];
}

/* dv = dy through the SiLU (if fused), then the group norm's backward */
static void gn_ref_backward(const double *const *x, const double *dy_in, double **dx, void *user)
{
    const gn_case *p = user;
    int cpg = p->C / p->G, cnt = cpg * p->HW;
    size_t n_all = (size_t)p->N * p->C * p->HW;
    double *dy = malloc(n_all * sizeof *dy), k = gn_weight(p);
    gn_ref_affine(x, dy, user); /* v */
    for (size_t i = 0; i < n_all; i++) {
        double s = sigmoid(dy[i]);
        dy[i] = p->silu ? k * dy_in[i] * s * (1.0 + dy[i] * (1.0 - s)) : k * dy_in[i];
    }
    for (int n = 0; n < p->N; n++)
        for (int g = 0; g < p->G; g++) {
            double mean, rstd, m1 = 0, m2 = 0;
            gn_ref_stats(p, x[0], n, g, &mean, &rstd);
            size_t base = ((size_t)n * p->C + (size_t)g * cpg) * p->HW;
            for (int j = 0; j < cnt; j++) {
                int c = g * cpg + j / p->HW;
                double xh = (x[0][base + j] - mean) * rstd, gd = x[1][c] * dy[base + j];
                m1 += gd;
                m2 += gd * xh;
                dx[1][c] += dy[base + j] * xh;
                dx[2][c] += dy[base + j];
            }
            m1 /= cnt;
            m2 /= cnt;
            for (int j = 0; j < cnt; j++) {
                int c = g * cpg + j / p->HW;
                double xh = (x[0][base + j] - mean) * rstd, gd = x[1][c] * dy[base + j];
                dx[0][base + j] += rstd * (gd - m1 - xh * m2);
            }
        }
    if (p->residual)
        for (size_t i = 0; i < n_all; i++) dx[0][i] += dy_in[i];
    free(dy);
}

static void gn_fill_offset(double *v, size_t n, uint64_t *rng, void *user)
{
    const gn_case *p = user;
    for (size_t i = 0; i < n; i++) v[i] = p->offset + 2.0 * opc_uniform(rng) - 1.0;
}

static void gn_run(const char *name, gn_case p, int skip_backward)
{
    opc_case c = {0};
    c.name = name;
    c.n_operands = 3;
    c.op[0] = (opc_operand){"x", p.ndim, {0}, 0, 0, gn_fill_offset};
    memcpy(c.op[0].shape, p.shape, sizeof p.shape);
    c.op[1] = (opc_operand){"gamma", 1, {p.C}, 1, 0, NULL};
    c.op[2] = (opc_operand){"beta", 1, {p.C}, 1, 0, NULL};
    c.build = gn_build;
    c.ref_forward = gn_ref_forward;
    c.ref_backward = gn_ref_backward;
    c.user = &p;
    c.skip_backward = skip_backward;
    opc_check(&c, 42, 0, 0);
}

static gn_case gn4(int N, int C, int H, int W, int G)
{
    return (gn_case){N, C, H * W, G, 1e-5f, 4, {N, C, H, W}, 0.0, 0.0, 0, 0};
}

START_TEST(test_gn_c6_g3)
{
    gn_run("group_norm (1,6,7,7) G=3", gn4(1, 6, 7, 7, 3), 0);
    gn_run("group_norm (3,6,5,3) G=3", gn4(3, 6, 5, 3, 3), 0);
}
END_TEST

START_TEST(test_gn_c32)
{
    gn_run("group_norm (3,32,5,3) G=8", gn4(3, 32, 5, 3, 8), 0);
    gn_run("group_norm (1,32,7,7) G=32", gn4(1, 32, 7, 7, 32), 0);
    gn_run("group_norm (3,32,7,7) G=8", gn4(3, 32, 7, 7, 8), 0);
}
END_TEST

/* a group larger than many work-group strides, and large spatial sizes */
START_TEST(test_gn_large_group) { gn_run("group_norm (1,10,28,28) G=2", gn4(1, 10, 28, 28, 2), 0); }
END_TEST

START_TEST(test_gn_rank2)
{
    gn_case p = {3, 12, 1, 4, 1e-5f, 2, {3, 12}, 0.0, 0.0, 0, 0};
    gn_run("group_norm (3,12) G=4", p, 0);
}
END_TEST

/* x feeds the group norm and a residual add: the add's gradient is summed
 * into dx by gn_bwd_fused (no gradient-sum node), with and without SiLU,
 * or by a sum node where it is the group norm's dy too */
START_TEST(test_gn_residual)
{
    gn_case p = gn4(3, 6, 5, 3, 3);
    p.residual = 1;
    gn_run("group_norm + x (3,6,5,3) G=3", p, 0);
    p = gn4(2, 32, 7, 7, 8);
    p.residual = 1;
    p.silu = 1;
    gn_run("group_norm_silu + x (2,32,7,7) G=8", p, 0);
    p.residual = 2;
    gn_run("group_norm_silu + x, shared gradient (2,32,7,7) G=8", p, 0);
}
END_TEST

/* Mean far from zero: a one-pass sum of squares would lose the variance. */
START_TEST(test_gn_offset_mean)
{
    gn_case p = gn4(3, 6, 5, 3, 3);
    p.offset = 20.0;
    gn_run("group_norm (3,6,5,3) G=3 mean 20", p, 0);
}
END_TEST

/* Forward only after a temporary: group_norm runs in place on scale's output. */
START_TEST(test_gn_inplace_forward)
{
    gn_case p = gn4(3, 6, 5, 3, 3);
    p.pre_scale = 1.5;
    gn_run("group_norm in place (3,6,5,3) G=3", p, 1);
}
END_TEST

/* group_norm + SiLU in one node */
START_TEST(test_gn_silu)
{
    gn_case p = gn4(3, 6, 5, 3, 3);
    p.silu = 1;
    gn_run("group_norm_silu (3,6,5,3) G=3", p, 0);
    p = gn4(1, 32, 7, 7, 8);
    p.silu = 1;
    gn_run("group_norm_silu (1,32,7,7) G=8", p, 0);
    p = gn4(3, 6, 5, 3, 3);
    p.silu = 1;
    p.pre_scale = 2.0;
    gn_run("group_norm_silu in place (3,6,5,3) G=3", p, 1);
}
END_TEST

/* The same kernels with 64 work-items per work-group (the GPU shape; the
 * host picks 1 on CPUs): strided float8 chunks, tails and the local trees. */
START_TEST(test_gn_workgroup_64)
{
    tu_ctx()->settings.reduce_ls = 64; /* as CLD_REDUCE_LS=64; Check forks each test: no leak */
    gn_run("group_norm ls=64 (3,6,5,3) G=3", gn4(3, 6, 5, 3, 3), 0);
    gn_run("group_norm ls=64 (1,10,28,28) G=2", gn4(1, 10, 28, 28, 2), 0);
    gn_case p = {3, 12, 1, 4, 1e-5f, 2, {3, 12}, 0.0, 0.0, 0, 0};
    gn_run("group_norm ls=64 (3,12) G=4", p, 0);
    p = gn4(3, 6, 5, 3, 3);
    p.silu = 1;
    gn_run("group_norm_silu ls=64 (3,6,5,3) G=3", p, 0);
}
END_TEST

/* --------------------------------------------------------------- softmax */
typedef struct sm_case {
    int rows, D;
    double range; /* x uniform in [-range, range] */
    double pre_scale;
} sm_case;

static cld_status sm_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    const sm_case *p = user;
    cld_tensor *in = x[0];
    if (p->pre_scale != 0.0) {
        cld_status s = cld_op_scale(g, x[0], (float)p->pre_scale, &in);
        if (s) return s;
    }
    return cld_op_softmax(g, in, y);
}

static void sm_ref_forward(const double *const *x, double *y, void *user)
{
    const sm_case *p = user;
    double k = p->pre_scale != 0.0 ? p->pre_scale : 1.0;
    for (int r = 0; r < p->rows; r++) {
        const double *xr = x[0] + (size_t)r * p->D;
        double *yr = y + (size_t)r * p->D, m = -INFINITY, s = 0;
        for (int j = 0; j < p->D; j++) m = fmax(m, k * xr[j]);
        for (int j = 0; j < p->D; j++) s += yr[j] = exp(k * xr[j] - m);
        for (int j = 0; j < p->D; j++) yr[j] /= s;
    }
}

static void sm_ref_backward(const double *const *x, const double *dy, double **dx, void *user)
{
    const sm_case *p = user;
    double *y = malloc((size_t)p->rows * p->D * sizeof *y);
    sm_ref_forward(x, y, user);
    for (int r = 0; r < p->rows; r++) {
        const double *yr = y + (size_t)r * p->D, *dr = dy + (size_t)r * p->D;
        double s = 0;
        for (int j = 0; j < p->D; j++) s += yr[j] * dr[j];
        for (int j = 0; j < p->D; j++) dx[0][(size_t)r * p->D + j] += yr[j] * (dr[j] - s);
    }
    free(y);
}

static void sm_fill(double *v, size_t n, uint64_t *rng, void *user)
{
    const sm_case *p = user;
    for (size_t i = 0; i < n; i++) v[i] = p->range * (2.0 * opc_uniform(rng) - 1.0);
}

/* x of shape `shape` (last dim D), rows = product of the others */
static void sm_run(const char *name, int ndim, const int *shape, double range, int skip_backward,
                   double pre_scale)
{
    sm_case p = {1, shape[ndim - 1], range, pre_scale};
    for (int i = 0; i < ndim - 1; i++) p.rows *= shape[i];
    opc_case c = {0};
    c.name = name;
    c.n_operands = 1;
    c.op[0] = (opc_operand){"x", ndim, {0}, 0, 0, sm_fill};
    memcpy(c.op[0].shape, shape, (size_t)ndim * sizeof(int));
    c.build = sm_build;
    c.ref_forward = sm_ref_forward;
    c.ref_backward = sm_ref_backward;
    c.user = &p;
    c.skip_backward = skip_backward;
    opc_check(&c, 7, 0, 0);
}

START_TEST(test_softmax_49)
{
    sm_run("softmax (3,7,49)", 3, (int[]){3, 7, 49}, 3.0, 0, 0.0);
    sm_run("softmax (49,49)", 2, (int[]){49, 49}, 3.0, 0, 0.0);
}
END_TEST

START_TEST(test_softmax_1000) { sm_run("softmax (3,7,1000)", 3, (int[]){3, 7, 1000}, 3.0, 0, 0.0); }
END_TEST

START_TEST(test_softmax_short_rows)
{
    sm_run("softmax (5,3,1)", 3, (int[]){5, 3, 1}, 3.0, 0, 0.0);
    sm_run("softmax (2,3,5,7)", 4, (int[]){2, 3, 5, 7}, 3.0, 0, 0.0);
}
END_TEST

START_TEST(test_softmax_workgroup_64)
{
    tu_ctx()->settings.reduce_ls = 64;
    sm_run("softmax ls=64 (3,7,49)", 3, (int[]){3, 7, 49}, 3.0, 0, 0.0);
    sm_run("softmax ls=64 (3,7,1000)", 3, (int[]){3, 7, 1000}, 3.0, 0, 0.0);
}
END_TEST

/* exp(100) overflows float: only a max-subtracted softmax stays finite */
START_TEST(test_softmax_large_logits)
{
    sm_run("softmax (3,7,49) logits in [-100,100]", 3, (int[]){3, 7, 49}, 100.0, 1, 0.0);
}
END_TEST

START_TEST(test_softmax_inplace_forward)
{
    sm_run("softmax in place (3,7,49)", 3, (int[]){3, 7, 49}, 3.0, 1, 0.5);
}
END_TEST

/* The in-place paths above really ran in place. */
START_TEST(test_inplace_planned)
{
    cld_ctx *ctx = tu_ctx();
    cld_params *params;
    cld_graph *g;
    cld_tensor *x, *gam, *bet, *s1, *s2, *y1, *y2, *y3;
    TU_OK(cld_params_create(ctx, &params));
    TU_OK(cld_graph_create(ctx, params, &g));
    TU_OK(cld_graph_input(g, "x", 4, (int[]){3, 6, 5, 3}, 0, &x));
    TU_OK(cld_graph_param(g, "gamma", 1, (int[]){6}, CLD_INIT_ONE, 0, &gam));
    TU_OK(cld_graph_param(g, "beta", 1, (int[]){6}, CLD_INIT_ZERO, 0, &bet));
    TU_OK(cld_op_scale(g, x, 2.0f, &s1));
    TU_OK(cld_op_group_norm(g, s1, gam, bet, 3, 1e-5f, &y1));
    TU_OK(cld_op_scale(g, y1, 2.0f, &s2));
    TU_OK(cld_op_softmax(g, s2, &y2));
    TU_OK(cld_op_scale(g, y2, 1.0f, &y3));
    TU_OK(cld_graph_set_output(g, y3));
    cld_plan_stats st;
    TU_OK(cld_graph_plan(g, &st));
    /* group_norm, softmax and scale(y1); not scale(x) (x is an input), and
     * not the last scale (its output is pinned) */
    ck_assert_int_eq(st.n_inplace, 3);
    cld_graph_free(g);
    cld_params_free(params);
}
END_TEST

/* ------------------------------------------------------------ shape errors */
START_TEST(test_shape_errors)
{
    cld_ctx *ctx = tu_ctx();
    cld_params *params;
    cld_graph *g;
    cld_tensor *x, *x1, *gam, *gam5, *bet, *y = NULL;
    TU_OK(cld_params_create(ctx, &params));
    TU_OK(cld_graph_create(ctx, params, &g));
    TU_OK(cld_graph_input(g, "x", 4, (int[]){2, 6, 5, 5}, 0, &x));
    TU_OK(cld_graph_input(g, "x1", 1, (int[]){6}, 0, &x1));
    TU_OK(cld_graph_param(g, "gamma", 1, (int[]){6}, CLD_INIT_ONE, 0, &gam));
    TU_OK(cld_graph_param(g, "gamma5", 1, (int[]){5}, CLD_INIT_ONE, 0, &gam5));
    TU_OK(cld_graph_param(g, "beta", 1, (int[]){6}, CLD_INIT_ZERO, 0, &bet));

    TU_STATUS(cld_op_group_norm(g, x, gam, bet, 4, 1e-5f, &y), CLD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "group_norm"));
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "(2, 6, 5, 5)"));
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "4 groups"));
    TU_STATUS(cld_op_group_norm(g, x, gam, bet, 0, 1e-5f, &y), CLD_ERR_SHAPE);
    TU_STATUS(cld_op_group_norm(g, x, gam5, bet, 3, 1e-5f, &y), CLD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "(5)"));
    TU_STATUS(cld_op_group_norm(g, x1, gam, bet, 3, 1e-5f, &y), CLD_ERR_SHAPE);
    TU_STATUS(cld_op_group_norm(g, x, NULL, bet, 3, 1e-5f, &y), CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_op_group_norm(g, x, gam, bet, 3, -1.0f, &y), CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_op_softmax(g, NULL, &y), CLD_ERR_INVALID_ARG);
    /* a good call still works after the failures */
    TU_OK(cld_op_group_norm(g, x, gam, bet, 3, 1e-5f, &y));
    ck_assert_ptr_nonnull(y);
    cld_graph_free(g);
    cld_params_free(params);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ops_norm");
    TCase *tc = tcase_create("group_norm");
    tcase_add_test(tc, test_gn_c6_g3);
    tcase_add_test(tc, test_gn_c32);
    tcase_add_test(tc, test_gn_large_group);
    tcase_add_test(tc, test_gn_rank2);
    tcase_add_test(tc, test_gn_offset_mean);
    tcase_add_test(tc, test_gn_residual);
    tcase_add_test(tc, test_gn_inplace_forward);
    tcase_add_test(tc, test_gn_silu);
    tcase_add_test(tc, test_gn_workgroup_64);
    suite_add_tcase(s, tc);
    tc = tcase_create("softmax");
    tcase_add_test(tc, test_softmax_49);
    tcase_add_test(tc, test_softmax_1000);
    tcase_add_test(tc, test_softmax_short_rows);
    tcase_add_test(tc, test_softmax_large_logits);
    tcase_add_test(tc, test_softmax_inplace_forward);
    tcase_add_test(tc, test_softmax_workgroup_64);
    suite_add_tcase(s, tc);
    tc = tcase_create("graph");
    tcase_add_test(tc, test_inplace_planned);
    tcase_add_test(tc, test_shape_errors);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
