/* Element-wise ops of ops_basic.c: add and mul in every broadcast mode,
 * scale, SiLU, reshape, and their shape errors. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ops/internal.h"
#include "opcheck.h"
#include "testutil.h"

/* a (N, C, ...) with `inner` elements per (n, c); b broadcast per mode:
 * 0 same shape, 1 per (n, c), 2 per c. */
typedef struct bin_user {
    int mul;
    int mode;
    int N, C, inner;
} bin_user;

static size_t bidx(const bin_user *u, size_t i)
{
    return u->mode == 0 ? i : (u->mode == 1 ? i / (size_t)u->inner : (i / (size_t)u->inner) % (size_t)u->C);
}

static cld_status bin_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    const bin_user *u = user;
    return u->mul ? cld_op_mul(g, x[0], x[1], y) : cld_op_add(g, x[0], x[1], y);
}

static void bin_ref(const double *const *x, double *y, void *user)
{
    const bin_user *u = user;
    size_t n = (size_t)u->N * u->C * u->inner;
    for (size_t i = 0; i < n; i++) y[i] = u->mul ? x[0][i] * x[1][bidx(u, i)] : x[0][i] + x[1][bidx(u, i)];
}

static void bin_ref_bwd(const double *const *x, const double *dy, double **dx, void *user)
{
    const bin_user *u = user;
    size_t n = (size_t)u->N * u->C * u->inner;
    for (size_t i = 0; i < n; i++) {
        size_t j = bidx(u, i);
        dx[0][i] += u->mul ? dy[i] * x[1][j] : dy[i];
        dx[1][j] += u->mul ? dy[i] * x[0][i] : dy[i];
    }
}

/* a has shape `as` (rank 4), b has shape `bs` of rank `bnd`. */
static void bin_case(int mul, const int *as, int bnd, const int *bs, int mode, int b_is_param)
{
    bin_user u = {mul, mode, as[0], as[1], as[2] * as[3]};
    char name[96];
    int k =
        snprintf(name, sizeof name, "%s (%d,%d,%d,%d) by (", mul ? "mul" : "add", as[0], as[1], as[2], as[3]);
    for (int i = 0; i < bnd; i++) k += snprintf(name + k, sizeof name - (size_t)k, i ? ",%d" : "%d", bs[i]);
    snprintf(name + k, sizeof name - (size_t)k, ")%s", b_is_param ? " param" : "");
    opc_case c = {.name = name,
                  .n_operands = 2,
                  .op = {{"a", 4, {as[0], as[1], as[2], as[3]}, 0, 0, NULL},
                         {"b",
                          bnd,
                          {bs[0], bnd > 1 ? bs[1] : 0, bnd > 2 ? bs[2] : 0, bnd > 3 ? bs[3] : 0},
                          b_is_param,
                          0,
                          NULL}},
                  .build = bin_build,
                  .ref_forward = bin_ref,
                  .ref_backward = bin_ref_bwd,
                  .user = &u};
    opc_check(&c, 1000 + (uint64_t)(mul * 100 + mode * 10 + bnd), 0, 0);
}

/* Every broadcast mode for batch 3 and batch 1. */
static void bin_all_modes(int mul)
{
    const int shapes[2][4] = {{3, 5, 7, 9}, {1, 7, 5, 3}};
    for (int s = 0; s < 2; s++) {
        const int *a = shapes[s];
        int N = a[0], C = a[1];
        bin_case(mul, a, 4, a, 0, 0);
        bin_case(mul, a, 4, (int[]){N, C, 1, 1}, 1, 0);
        bin_case(mul, a, 2, (int[]){N, C}, 1, 0);
        bin_case(mul, a, 4, (int[]){1, C, 1, 1}, 2, 1);
        bin_case(mul, a, 1, (int[]){C}, 2, 1);
    }
}

START_TEST(test_add_broadcast) { bin_all_modes(0); }
END_TEST

START_TEST(test_mul_broadcast) { bin_all_modes(1); }
END_TEST

/* a + a and a * a: the same tensor in both operands accumulates both
 * gradient contributions. */
static cld_status self_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    return *(int *)user ? cld_op_mul(g, x[0], x[0], y) : cld_op_add(g, x[0], x[0], y);
}
static void self_ref(const double *const *x, double *y, void *user)
{
    for (size_t i = 0; i < 3 * 5 * 7; i++) y[i] = *(int *)user ? x[0][i] * x[0][i] : 2 * x[0][i];
}
static void self_ref_bwd(const double *const *x, const double *dy, double **dx, void *user)
{
    for (size_t i = 0; i < 3 * 5 * 7; i++) dx[0][i] += dy[i] * (*(int *)user ? 2 * x[0][i] : 2.0);
}

START_TEST(test_same_operand_twice)
{
    for (int mul = 0; mul < 2; mul++) {
        opc_case c = {.name = mul ? "mul (x, x)" : "add (x, x)",
                      .n_operands = 1,
                      .op = {{"x", 3, {3, 5, 7}, 0, 0, NULL}},
                      .build = self_build,
                      .ref_forward = self_ref,
                      .ref_backward = self_ref_bwd,
                      .user = &mul};
        opc_check(&c, 77, 0, 0);
    }
}
END_TEST

/* ------------------------------------------------------ scale and SiLU */
typedef struct un_user {
    int kind; /* 0 scale, 1 silu, 2 reshape */
    float alpha;
    size_t n;
    int ndim;
    int shape[4];
} un_user;

static cld_status un_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    const un_user *u = user;
    if (u->kind == 0) return cld_op_scale(g, x[0], u->alpha, y);
    if (u->kind == 1) return cld_op_silu(g, x[0], y);
    return cld_op_reshape(g, x[0], u->ndim, u->shape, y);
}

static void un_ref(const double *const *x, double *y, void *user)
{
    const un_user *u = user;
    for (size_t i = 0; i < u->n; i++) {
        double v = x[0][i];
        y[i] = u->kind == 0 ? (double)u->alpha * v : (u->kind == 1 ? v / (1.0 + exp(-v)) : v);
    }
}

static void un_ref_bwd(const double *const *x, const double *dy, double **dx, void *user)
{
    const un_user *u = user;
    for (size_t i = 0; i < u->n; i++) {
        double v = x[0][i], s = 1.0 / (1.0 + exp(-v));
        dx[0][i] +=
            dy[i] * (u->kind == 0 ? (double)u->alpha : (u->kind == 1 ? s * (1.0 + v * (1.0 - s)) : 1.0));
    }
}

static void fill_wide(double *v, size_t n, uint64_t *rng, void *user)
{
    (void)user;
    for (size_t i = 0; i < n; i++) v[i] = 12.0 * opc_uniform(rng) - 6.0;
}

static void un_case(const char *name, int kind, float alpha, const int *xs, int ndim_y, const int *ys)
{
    un_user u = {kind, alpha, (size_t)xs[0] * xs[1] * xs[2] * xs[3], ndim_y, {0}};
    if (ys) memcpy(u.shape, ys, (size_t)ndim_y * sizeof(int));
    opc_case c = {.name = name,
                  .n_operands = 1,
                  .op = {{"x", 4, {xs[0], xs[1], xs[2], xs[3]}, 0, 0, kind == 1 ? fill_wide : NULL}},
                  .build = un_build,
                  .ref_forward = un_ref,
                  .ref_backward = un_ref_bwd,
                  .user = &u};
    opc_check(&c, 31 + (uint64_t)kind, 0, 0);
}

START_TEST(test_scale)
{
    un_case("scale -0.37 (3,5,7,9)", 0, -0.37f, (int[]){3, 5, 7, 9}, 0, NULL);
    un_case("scale 2.5 (1,3,28,28)", 0, 2.5f, (int[]){1, 3, 28, 28}, 0, NULL);
}
END_TEST

START_TEST(test_silu)
{
    un_case("silu (3,5,7,9)", 1, 0, (int[]){3, 5, 7, 9}, 0, NULL);
    un_case("silu (1,3,28,28)", 1, 0, (int[]){1, 3, 28, 28}, 0, NULL);
}
END_TEST

START_TEST(test_reshape)
{
    un_case("reshape (3,5,7,9)->(15,63)", 2, 0, (int[]){3, 5, 7, 9}, 2, (int[]){15, 63});
    un_case("reshape (1,3,7,5)->(105)", 2, 0, (int[]){1, 3, 7, 5}, 1, (int[]){105});
}
END_TEST

/* A chain through a reshape: silu(reshape(x) * 1.5) + reshape(x). The
 * reshaped tensor is used twice and its gradient comes back through the
 * view to x. */
static cld_status chain_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    (void)user;
    cld_tensor *r, *s, *a;
    CLD_TRY(cld_op_reshape(g, x[0], 2, (int[]){15, 21}, &r));
    CLD_TRY(cld_op_scale(g, r, 1.5f, &s));
    CLD_TRY(cld_op_silu(g, s, &a));
    return cld_op_add(g, a, r, y);
}
static void chain_ref(const double *const *x, double *y, void *user)
{
    (void)user;
    for (size_t i = 0; i < 315; i++) {
        double s = 1.5 * x[0][i];
        y[i] = s / (1.0 + exp(-s)) + x[0][i];
    }
}
static void chain_ref_bwd(const double *const *x, const double *dy, double **dx, void *user)
{
    (void)user;
    for (size_t i = 0; i < 315; i++) {
        double s = 1.5 * x[0][i], sg = 1.0 / (1.0 + exp(-s));
        dx[0][i] += dy[i] * (1.5 * sg * (1.0 + s * (1.0 - sg)) + 1.0);
    }
}

START_TEST(test_reshape_chain)
{
    opc_case c = {.name = "silu(1.5 reshape(x)) + reshape(x)",
                  .n_operands = 1,
                  .op = {{"x", 3, {3, 5, 21}, 0, 0, NULL}},
                  .build = chain_build,
                  .ref_forward = chain_ref,
                  .ref_backward = chain_ref_bwd};
    opc_check(&c, 5, 0, 0);
}
END_TEST

/* --------------------------------------------------------- shape errors */
static void expect_shape_error(cld_status s, const char *op, const char *sa, const char *sb)
{
    ck_assert_msg(s == CLD_ERR_SHAPE, "%s: got %s, want CLD_ERR_SHAPE", op, cld_status_name(s));
    const char *m = cld_last_error();
    ck_assert_msg(strstr(m, op) != NULL, "message does not name '%s': %s", op, m);
    ck_assert_msg(strstr(m, sa) != NULL, "message does not show %s: %s", sa, m);
    if (sb) ck_assert_msg(strstr(m, sb) != NULL, "message does not show %s: %s", sb, m);
}

START_TEST(test_shape_errors)
{
    cld_graph *g;
    TU_OK(cld_graph_create(tu_ctx(), NULL, &g));
    cld_tensor *a, *b1, *b2, *b3, *b4, *y;
    TU_OK(cld_graph_input(g, "a", 4, (int[]){3, 5, 7, 9}, 0, &a));
    TU_OK(cld_graph_input(g, "b1", 4, (int[]){3, 4, 1, 1}, 0, &b1));
    TU_OK(cld_graph_input(g, "b2", 4, (int[]){3, 5, 7, 1}, 0, &b2));
    TU_OK(cld_graph_input(g, "b3", 2, (int[]){2, 5}, 0, &b3));
    TU_OK(cld_graph_input(g, "b4", 1, (int[]){7}, 0, &b4));
    expect_shape_error(cld_op_add(g, a, b1, &y), "add", "(3, 5, 7, 9)", "(3, 4, 1, 1)");
    expect_shape_error(cld_op_add(g, a, b2, &y), "add", "(3, 5, 7, 9)", "(3, 5, 7, 1)");
    expect_shape_error(cld_op_mul(g, a, b3, &y), "mul", "(3, 5, 7, 9)", "(2, 5)");
    expect_shape_error(cld_op_mul(g, a, b4, &y), "mul", "(3, 5, 7, 9)", "(7)");
    /* the broadcast operand must be the second one */
    expect_shape_error(cld_op_add(g, b1, a, &y), "add", "(3, 4, 1, 1)", "(3, 5, 7, 9)");
    expect_shape_error(cld_op_reshape(g, a, 2, (int[]){15, 62}, &y), "reshape", "(3, 5, 7, 9)", "(15, 62)");
    TU_STATUS(cld_op_add(g, a, NULL, &y), CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_op_silu(g, NULL, &y), CLD_ERR_INVALID_ARG);
    /* valid calls still work after errors */
    TU_OK(cld_op_add(g, a, a, &y));
    TU_OK(cld_op_reshape(g, a, 2, (int[]){15, 63}, &y));
    cld_graph_free(g);
}
END_TEST

static Suite *basic_suite(void)
{
    Suite *s = suite_create("ops_basic");
    TCase *tc = tcase_create("broadcast");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_add_broadcast);
    tcase_add_test(tc, test_mul_broadcast);
    tcase_add_test(tc, test_same_operand_twice);
    suite_add_tcase(s, tc);

    tc = tcase_create("unary");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_scale);
    tcase_add_test(tc, test_silu);
    tcase_add_test(tc, test_reshape);
    tcase_add_test(tc, test_reshape_chain);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_test(tc, test_shape_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(basic_suite()); }
