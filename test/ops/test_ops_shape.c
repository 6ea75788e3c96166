/* channel slice, concat (channels), nearest 2x upsample and zero padding: forward and
 * backward against double references (opcheck), and shape errors. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opcheck.h"
#include "testutil.h"

/* ------------------------------------------------------ channel slice */
typedef struct slice_case {
    int c0, count;
} slice_case;

static cld_status slice_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    const slice_case *c = user;
    return cld_op_slice_channels(g, x[0], c->c0, c->count, y);
}
#define SN 3
#define SC 7
#define SHW 15 /* 5 x 3 */
static void slice_fwd(const double *const *x, double *y, void *user)
{
    const slice_case *c = user;
    for (int n = 0; n < SN; n++)
        for (int k = 0; k < c->count; k++)
            memcpy(y + ((size_t)n * c->count + k) * SHW, x[0] + ((size_t)n * SC + c->c0 + k) * SHW,
                   SHW * sizeof(double));
}
static void slice_bwd(const double *const *x, const double *dy, double **dx, void *user)
{
    (void)x;
    const slice_case *c = user;
    for (int n = 0; n < SN; n++)
        for (int k = 0; k < c->count; k++)
            for (int j = 0; j < SHW; j++)
                dx[0][((size_t)n * SC + c->c0 + k) * SHW + j] += dy[((size_t)n * c->count + k) * SHW + j];
}

START_TEST(test_slice_channels)
{
    slice_case cases[] = {{2, 3}, {0, 4}, {4, 3}, {0, SC}};
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "slice_channels %d+%d of %d", cases[i].c0, cases[i].count, SC);
        opc_case c = {name,      1, {{"x", 4, {SN, SC, 5, 3}, 0, 0, NULL}}, slice_build, slice_fwd, slice_bwd,
                      &cases[i], 0};
        opc_check(&c, 31 + i, 1e-6, 1e-6);
    }
    /* bad channel ranges */
    cld_graph *g;
    cld_tensor *x, *y;
    int shape[4] = {2, 4, 3, 3};
    TU_OK(cld_graph_create(tu_ctx(), NULL, &g));
    TU_OK(cld_graph_input(g, "x", 4, shape, 0, &x));
    TU_STATUS(cld_op_slice_channels(g, x, 3, 2, &y), CLD_ERR_SHAPE);
    TU_STATUS(cld_op_slice_channels(g, x, -1, 2, &y), CLD_ERR_SHAPE);
    TU_STATUS(cld_op_slice_channels(g, x, 0, 0, &y), CLD_ERR_SHAPE);
    cld_graph_free(g);
}
END_TEST

/* ------------------------------------------------------------- concat */
typedef struct cat_cfg {
    int N, Ca, Cb, inner; /* inner = H*W (or 1 for 2-D operands) */
    int ndim, H, W;
    int param;
} cat_cfg;

static cld_status cat_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    (void)user;
    return cld_op_concat(g, x[0], x[1], y);
}

static void cat_ref_fwd(const double *const *x, double *y, void *user)
{
    const cat_cfg *c = user;
    size_t ra = (size_t)c->Ca * c->inner, rb = (size_t)c->Cb * c->inner;
    for (int n = 0; n < c->N; n++) {
        memcpy(y + n * (ra + rb), x[0] + n * ra, ra * sizeof(double));
        memcpy(y + n * (ra + rb) + ra, x[1] + n * rb, rb * sizeof(double));
    }
}

static void cat_ref_bwd(const double *const *x, const double *dy, double **dx, void *user)
{
    const cat_cfg *c = user;
    (void)x;
    size_t ra = (size_t)c->Ca * c->inner, rb = (size_t)c->Cb * c->inner;
    for (int n = 0; n < c->N; n++) {
        for (size_t i = 0; i < ra; i++) dx[0][n * ra + i] += dy[n * (ra + rb) + i];
        for (size_t i = 0; i < rb; i++) dx[1][n * rb + i] += dy[n * (ra + rb) + ra + i];
    }
}

static void cat_run(const char *name, cat_cfg cfg, uint64_t seed)
{
    opc_case c = {0};
    c.name = name;
    c.n_operands = 2;
    if (cfg.ndim == 4) {
        cfg.inner = cfg.H * cfg.W;
        c.op[0] = (opc_operand){"a", 4, {cfg.N, cfg.Ca, cfg.H, cfg.W}, cfg.param, 0, NULL};
        c.op[1] = (opc_operand){"b", 4, {cfg.N, cfg.Cb, cfg.H, cfg.W}, 0, 0, NULL};
    } else {
        cfg.inner = 1;
        c.op[0] = (opc_operand){"a", 2, {cfg.N, cfg.Ca}, cfg.param, 0, NULL};
        c.op[1] = (opc_operand){"b", 2, {cfg.N, cfg.Cb}, 0, 0, NULL};
    }
    c.build = cat_build;
    c.ref_forward = cat_ref_fwd;
    c.ref_backward = cat_ref_bwd;
    c.user = &cfg;
    opc_check(&c, seed, 0, 0);
}

START_TEST(test_concat)
{
    /* N, Ca, Cb, inner, ndim, H, W, param */
    cat_run("concat N3 2+5 5x6", (cat_cfg){3, 2, 5, 0, 4, 5, 6, 0}, 1);
    cat_run("concat N1 3+1 7x7", (cat_cfg){1, 3, 1, 0, 4, 7, 7, 0}, 2);
    cat_run("concat N3 4+3 28x28 param", (cat_cfg){3, 4, 3, 0, 4, 28, 28, 1}, 3);
    cat_run("concat N3 2-D 7+5", (cat_cfg){3, 7, 5, 0, 2, 1, 1, 0}, 4);
}
END_TEST

/* Both operands the same tensor: the gradients of the two halves add up. */
static cld_status cat_self_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    (void)user;
    return cld_op_concat(g, x[0], x[0], y);
}

static void cat_self_fwd(const double *const *x, double *y, void *user)
{
    const double *xx[2] = {x[0], x[0]};
    cat_ref_fwd(xx, y, user);
}

static void cat_self_bwd(const double *const *x, const double *dy, double **dx, void *user)
{
    double *dd[2] = {dx[0], dx[0]};
    cat_ref_bwd(x, dy, dd, user);
}

START_TEST(test_concat_self)
{
    cat_cfg cfg = {3, 3, 3, 5 * 6, 4, 5, 6, 0};
    opc_case c = {0};
    c.name = "concat (x, x) N3 3 5x6";
    c.n_operands = 1;
    c.op[0] = (opc_operand){"x", 4, {3, 3, 5, 6}, 0, 0, NULL};
    c.build = cat_self_build;
    c.ref_forward = cat_self_fwd;
    c.ref_backward = cat_self_bwd;
    c.user = &cfg;
    opc_check(&c, 5, 0, 0);
}
END_TEST

/* --------------------------------------------------------- upsample2x */
typedef struct up_cfg {
    int N, C, H, W;
} up_cfg;

static cld_status up_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    (void)user;
    return cld_op_upsample2x(g, x[0], y);
}

static void up_ref_fwd(const double *const *x, double *y, void *user)
{
    const up_cfg *c = user;
    size_t i = 0;
    for (int nc = 0; nc < c->N * c->C; nc++)
        for (int oy = 0; oy < 2 * c->H; oy++)
            for (int ox = 0; ox < 2 * c->W; ox++) y[i++] = x[0][((size_t)nc * c->H + oy / 2) * c->W + ox / 2];
}

static void up_ref_bwd(const double *const *x, const double *dy, double **dx, void *user)
{
    const up_cfg *c = user;
    (void)x;
    size_t i = 0;
    for (int nc = 0; nc < c->N * c->C; nc++)
        for (int oy = 0; oy < 2 * c->H; oy++)
            for (int ox = 0; ox < 2 * c->W; ox++)
                dx[0][((size_t)nc * c->H + oy / 2) * c->W + ox / 2] += dy[i++];
}

static void up_run(const char *name, up_cfg cfg, uint64_t seed, int param)
{
    opc_case c = {0};
    c.name = name;
    c.n_operands = 1;
    c.op[0] = (opc_operand){"x", 4, {cfg.N, cfg.C, cfg.H, cfg.W}, param, 0, NULL};
    c.build = up_build;
    c.ref_forward = up_ref_fwd;
    c.ref_backward = up_ref_bwd;
    c.user = &cfg;
    opc_check(&c, seed, 0, 0);
}

START_TEST(test_upsample)
{
    up_run("upsample2x N3 5 7x7", (up_cfg){3, 5, 7, 7}, 11, 0);
    up_run("upsample2x N1 2 5x6", (up_cfg){1, 2, 5, 6}, 12, 0);
    up_run("upsample2x N3 3 14x14 param", (up_cfg){3, 3, 14, 14}, 13, 1);
    up_run("upsample2x N1 1 1x3", (up_cfg){1, 1, 1, 3}, 14, 0);
}
END_TEST

/* -------------------------------------------------------------- pad2d */
typedef struct pad_cfg {
    int N, C, H, W, top, bottom, left, right;
} pad_cfg;

static cld_status pad_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    const pad_cfg *c = user;
    return cld_op_pad2d(g, x[0], c->top, c->bottom, c->left, c->right, y);
}

/* visit every output element: its index and the input index (or -1) */
#define PAD_FOR(c, body)                                                                        \
    do {                                                                                        \
        const int Ho_ = (c)->H + (c)->top + (c)->bottom, Wo_ = (c)->W + (c)->left + (c)->right; \
        size_t o_ = 0;                                                                          \
        for (int nc = 0; nc < (c)->N * (c)->C; nc++)                                            \
            for (int i = 0; i < Ho_; i++)                                                       \
                for (int j = 0; j < Wo_; j++, o_++) {                                           \
                    int si = i - (c)->top, sj = j - (c)->left;                                  \
                    long src_ = si >= 0 && si < (c)->H && sj >= 0 && sj < (c)->W                \
                                    ? ((long)nc * (c)->H + si) * (c)->W + sj                    \
                                    : -1;                                                       \
                    body;                                                                       \
                }                                                                               \
    } while (0)

static void pad_ref_fwd(const double *const *x, double *y, void *user)
{
    const pad_cfg *c = user;
    PAD_FOR(c, y[o_] = src_ >= 0 ? x[0][src_] : 0.0);
}

static void pad_ref_bwd(const double *const *x, const double *dy, double **dx, void *user)
{
    const pad_cfg *c = user;
    (void)x;
    PAD_FOR(c, if (src_ >= 0) dx[0][src_] += dy[o_]);
}

static void pad_run(const char *name, pad_cfg cfg, uint64_t seed)
{
    opc_case c = {0};
    c.name = name;
    c.n_operands = 1;
    c.op[0] = (opc_operand){"x", 4, {cfg.N, cfg.C, cfg.H, cfg.W}, 0, 0, NULL};
    c.build = pad_build;
    c.ref_forward = pad_ref_fwd;
    c.ref_backward = pad_ref_bwd;
    c.user = &cfg;
    opc_check(&c, seed, 0, 0);
}

START_TEST(test_pad2d)
{
    pad_run("pad2d (0,1,0,1) N2 3 6x6 (diffusers' downsampling)", (pad_cfg){2, 3, 6, 6, 0, 1, 0, 1}, 21);
    pad_run("pad2d (2,0,1,3) N1 2 5x7", (pad_cfg){1, 2, 5, 7, 2, 0, 1, 3}, 22);
    pad_run("pad2d (0,0,0,0) N1 1 3x3", (pad_cfg){1, 1, 3, 3, 0, 0, 0, 0}, 23);
}
END_TEST

START_TEST(test_shape_errors)
{
    cld_graph *g;
    TU_OK(cld_graph_create(tu_ctx(), NULL, &g));
    cld_tensor *a, *b, *c, *v, *y = NULL;
    TU_OK(cld_graph_input(g, "a", 4, (int[]){3, 2, 5, 6}, 1, &a));
    TU_OK(cld_graph_input(g, "b", 4, (int[]){3, 4, 5, 7}, 1, &b));
    TU_OK(cld_graph_input(g, "c", 4, (int[]){2, 4, 5, 6}, 1, &c));
    TU_OK(cld_graph_input(g, "v", 3, (int[]){3, 2, 5}, 1, &v));
    TU_STATUS(cld_op_concat(g, a, b, &y), CLD_ERR_SHAPE);
    const char *m = cld_last_error();
    ck_assert_msg(strstr(m, "concat") && strstr(m, "(3, 2, 5, 6)") && strstr(m, "(3, 4, 5, 7)"), "%s", m);
    TU_STATUS(cld_op_concat(g, a, c, &y), CLD_ERR_SHAPE);
    TU_STATUS(cld_op_concat(g, a, v, &y), CLD_ERR_SHAPE);
    TU_STATUS(cld_op_upsample2x(g, v, &y), CLD_ERR_SHAPE);
    ck_assert_msg(strstr(cld_last_error(), "upsample2x") != NULL, "%s", cld_last_error());
    TU_STATUS(cld_op_pad2d(g, v, 0, 1, 0, 1, &y), CLD_ERR_SHAPE);
    TU_STATUS(cld_op_pad2d(g, a, 0, -1, 0, 1, &y), CLD_ERR_INVALID_ARG);
    ck_assert_ptr_null(y);
    TU_OK(cld_op_upsample2x(g, a, &y));
    int nd, shape[4];
    TU_OK(cld_tensor_shape(y, &nd, shape));
    ck_assert_int_eq(shape[2], 10);
    ck_assert_int_eq(shape[3], 12);
    cld_graph_free(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ops_shape");
    TCase *tc = tcase_create("shape");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_slice_channels);
    tcase_add_test(tc, test_concat);
    tcase_add_test(tc, test_concat_self);
    tcase_add_test(tc, test_pad2d);
    tcase_add_test(tc, test_upsample);
    tcase_add_test(tc, test_shape_errors);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
