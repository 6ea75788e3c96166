/* conv2d and linear: forward and backward against double references
 * (opcheck), chunked workspaces, and shape errors. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opcheck.h"
#include "runtime/internal.h" /* cld__settings: the conv test hooks */
#include "testutil.h"

/* The conv test hooks (runtime/internal.h, cld__settings), on the shared
 * context, for conv nodes built next: at most max_chunk samples per chunk
 * (0: no cap); im2col path even where the implicit stride-1 path applies. */
static void conv_config(int max_chunk, int force_im2col)
{
    tu_ctx()->settings.conv_max_chunk = max_chunk;
    tu_ctx()->settings.conv_force_im2col = force_im2col;
}
/* Winograd F(4x4, 3x3) for 3x3 s1 p1 convs: 0 where it pays, 1 never, 2 always */
static void conv_winograd(int mode) { tu_ctx()->settings.conv_winograd_mode = mode; }
/* Winograd's 36 products through cld__gemm_batched (the GPU route) on any device */
static void conv_winograd_blas(int on) { tu_ctx()->settings.conv_wino_blas = on; }
/* Winograd's forward and dx as one wino_fused launch: 0 where it pays, 1 never, 2 always */
static void conv_winograd_fused(int mode) { tu_ctx()->settings.conv_wino_fused_mode = mode; }

/* ------------------------------------------------------------- conv2d */
typedef struct conv_cfg {
    int N, Ci, H, W, Co, K, stride, pad, bias, param;
} conv_cfg;

static int out_dim(int n, const conv_cfg *c) { return (n + 2 * c->pad - c->K) / c->stride + 1; }

static cld_status conv_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    const conv_cfg *c = user;
    return cld_op_conv2d(g, x[0], x[1], c->bias ? x[2] : NULL, c->stride, c->pad, y);
}

/* Calls f(n, co, oy, ox, ci, ky, kx, xi, wi, yi) for every tap inside the image. */
#define CONV_LOOP(c, BODY)                                                                                 \
    do {                                                                                                   \
        int Ho_ = out_dim((c)->H, (c)), Wo_ = out_dim((c)->W, (c));                                        \
        for (int n = 0; n < (c)->N; n++)                                                                   \
            for (int co = 0; co < (c)->Co; co++)                                                           \
                for (int oy = 0; oy < Ho_; oy++)                                                           \
                    for (int ox = 0; ox < Wo_; ox++) {                                                     \
                        size_t yi = (((size_t)n * (c)->Co + co) * Ho_ + oy) * Wo_ + ox;                    \
                        for (int ci = 0; ci < (c)->Ci; ci++)                                               \
                            for (int ky = 0; ky < (c)->K; ky++)                                            \
                                for (int kx = 0; kx < (c)->K; kx++) {                                      \
                                    int iy = oy * (c)->stride - (c)->pad + ky;                             \
                                    int ix = ox * (c)->stride - (c)->pad + kx;                             \
                                    if (iy < 0 || iy >= (c)->H || ix < 0 || ix >= (c)->W) continue;        \
                                    size_t xi = (((size_t)n * (c)->Ci + ci) * (c)->H + iy) * (c)->W + ix;  \
                                    size_t wi = (((size_t)co * (c)->Ci + ci) * (c)->K + ky) * (c)->K + kx; \
                                    BODY;                                                                  \
                                }                                                                          \
                    }                                                                                      \
    } while (0)

static void conv_ref_fwd(const double *const *x, double *y, void *user)
{
    const conv_cfg *c = user;
    size_t ny = (size_t)c->N * c->Co * out_dim(c->H, c) * out_dim(c->W, c);
    for (size_t i = 0; i < ny; i++) y[i] = 0;
    CONV_LOOP(c, y[yi] += x[0][xi] * x[1][wi]);
    if (c->bias) {
        size_t P = (size_t)out_dim(c->H, c) * out_dim(c->W, c);
        for (size_t i = 0; i < ny; i++) y[i] += x[2][(i / P) % (size_t)c->Co];
    }
}

static void conv_ref_bwd(const double *const *x, const double *dy, double **dx, void *user)
{
    const conv_cfg *c = user;
    CONV_LOOP(c, {
        dx[0][xi] += dy[yi] * x[1][wi];
        dx[1][wi] += dy[yi] * x[0][xi];
    });
    if (c->bias) {
        size_t P = (size_t)out_dim(c->H, c) * out_dim(c->W, c);
        size_t ny = (size_t)c->N * c->Co * P;
        for (size_t i = 0; i < ny; i++) dx[2][(i / P) % (size_t)c->Co] += dy[i];
    }
}

/* Tolerance of conv_run's forward and backward against the double reference
 * (0: opcheck's default, 1e-4). Winograd's transforms cost a few ulps: the
 * README claims ~3e-6 per conv, the cases below measure at most 4.4e-6 (PoCL,
 * forward and backward), so they are held to 1e-5. */
#define CONV_WINO_TOL 1e-5
static double conv_tol;

static void conv_run(const char *name, conv_cfg cfg, uint64_t seed)
{
    opc_case c = {0};
    c.name = name;
    c.n_operands = cfg.bias ? 3 : 2;
    c.op[0] = (opc_operand){"x", 4, {cfg.N, cfg.Ci, cfg.H, cfg.W}, 0, 0, NULL};
    c.op[1] = (opc_operand){"w", 4, {cfg.Co, cfg.Ci, cfg.K, cfg.K}, cfg.param, 0, NULL};
    c.op[2] = (opc_operand){"b", 1, {cfg.Co}, cfg.param, 0, NULL};
    c.build = conv_build;
    c.ref_forward = conv_ref_fwd;
    c.ref_backward = conv_ref_bwd;
    c.user = &cfg;
    opc_check(&c, seed, conv_tol, conv_tol);
}

START_TEST(test_conv3x3_stride1)
{
    /* N, Ci, H, W, Co, K, stride, pad, bias, param */
    conv_run("conv 3x3 s1 p1 N3 3->5 7x7 bias", (conv_cfg){3, 3, 7, 7, 5, 3, 1, 1, 1, 0}, 1);
    conv_run("conv 3x3 s1 p1 N1 3->5 5x6 nobias", (conv_cfg){1, 3, 5, 6, 5, 3, 1, 1, 0, 0}, 2);
    conv_run("conv 3x3 s1 p1 N1 2->3 28x28 param", (conv_cfg){1, 2, 28, 28, 3, 3, 1, 1, 1, 1}, 3);
    conv_run("conv 3x3 s1 p0 N3 4->3 7x7 param", (conv_cfg){3, 4, 7, 7, 3, 3, 1, 0, 1, 1}, 4);
    conv_run("conv 3x3 s1 p1 N3 7->13 5x6 bias", (conv_cfg){3, 7, 5, 6, 13, 3, 1, 1, 1, 0}, 5);
}
END_TEST

START_TEST(test_conv_stride1_other_k)
{
    conv_run("conv 5x5 s1 p2 N3 3->5 7x7 bias", (conv_cfg){3, 3, 7, 7, 5, 5, 1, 2, 1, 0}, 31);
    conv_run("conv 2x2 s1 p1 N1 3->5 5x6 param", (conv_cfg){1, 3, 5, 6, 5, 2, 1, 1, 1, 1}, 32);
    conv_run("conv 5x5 s1 p1 N1 2->3 7x7 nobias", (conv_cfg){1, 2, 7, 7, 3, 5, 1, 1, 0, 0}, 33);
    /* pad > K-1: the im2col path */
    conv_run("conv 1x1 s1 p1 N3 3->5 5x6 bias", (conv_cfg){3, 3, 5, 6, 5, 1, 1, 1, 1, 0}, 34);
}
END_TEST

START_TEST(test_conv3x3_stride2)
{
    conv_run("conv 3x3 s2 p1 N3 3->5 7x7 bias", (conv_cfg){3, 3, 7, 7, 5, 3, 2, 1, 1, 0}, 6);
    conv_run("conv 3x3 s2 p1 N1 5->3 5x6 param", (conv_cfg){1, 5, 5, 6, 3, 3, 2, 1, 1, 1}, 7);
    conv_run("conv 3x3 s2 p1 N1 2->3 28x28 nobias", (conv_cfg){1, 2, 28, 28, 3, 3, 2, 1, 0, 0}, 8);
    conv_run("conv 4x4 s3 p2 N3 3->5 7x7 bias", (conv_cfg){3, 3, 7, 7, 5, 4, 3, 2, 1, 0}, 9);
    /* im2col panels of 260 x 260 outputs: pack's 76050 work-items run as a
     * grid folded into 2-D (cld__launch1d, past 65535) */
    conv_run("conv 3x3 s2 p1 N1 2->3 520x520 bias", (conv_cfg){1, 2, 520, 520, 3, 3, 2, 1, 1, 0}, 55);
}
END_TEST

START_TEST(test_conv1x1)
{
    conv_run("conv 1x1 N3 5->3 5x6 nobias", (conv_cfg){3, 5, 5, 6, 3, 1, 1, 0, 0, 0}, 10);
    conv_run("conv 1x1 N1 3->5 7x7 bias param", (conv_cfg){1, 3, 7, 7, 5, 1, 1, 0, 1, 1}, 11);
    conv_run("conv 1x1 N3 17->7 7x7 bias", (conv_cfg){3, 17, 7, 7, 7, 1, 1, 0, 1, 0}, 12);
    conv_run("conv 1x1 s2 N3 3->5 7x7 bias", (conv_cfg){3, 3, 7, 7, 5, 1, 2, 0, 1, 0}, 13);
    /* planes of whole 16-wide tiles: conv_s1 reads x (and dy) in place */
    conv_run("conv 1x1 N2 5->7 4x8 bias param", (conv_cfg){2, 5, 4, 8, 7, 1, 1, 0, 1, 1}, 53);
    conv_run("conv 1x1 N3 9->2 8x6 nobias", (conv_cfg){3, 9, 8, 6, 2, 1, 1, 0, 0, 0}, 54);
}
END_TEST

/* The im2col path on shapes the implicit stride-1 path would take. */
START_TEST(test_conv_im2col_path)
{
    conv_config(0, 1);
    conv_run("im2col conv 3x3 s1 p1 N3 3->5 7x7", (conv_cfg){3, 3, 7, 7, 5, 3, 1, 1, 1, 0}, 14);
    conv_run("im2col conv 3x3 s1 p1 N1 2->3 28x28", (conv_cfg){1, 2, 28, 28, 3, 3, 1, 1, 1, 1}, 15);
    conv_run("im2col conv 1x1 N3 5->3 5x6", (conv_cfg){3, 5, 5, 6, 3, 1, 1, 0, 0, 0}, 16);
    conv_config(0, 0);
}
END_TEST

/* Chunks of 1 and of 2 samples (the last one ragged: N = 3 in chunks of 2),
 * on both paths; weight gradients accumulate over the chunks. */
START_TEST(test_conv_chunked)
{
    conv_config(1, 0);
    conv_run("chunk1 conv 3x3 s1 N3 3->5 7x7", (conv_cfg){3, 3, 7, 7, 5, 3, 1, 1, 1, 1}, 17);
    conv_config(2, 0);
    conv_run("chunk2 conv 3x3 s1 N3 3->5 5x6", (conv_cfg){3, 3, 5, 6, 5, 3, 1, 1, 1, 0}, 18);
    conv_run("chunk2 conv 3x3 s2 N3 3->5 7x7", (conv_cfg){3, 3, 7, 7, 5, 3, 2, 1, 0, 0}, 19);
    conv_config(2, 1);
    conv_run("chunk2 im2col conv 3x3 s1 N3 3->5 7x7", (conv_cfg){3, 3, 7, 7, 5, 3, 1, 1, 1, 1}, 20);
    conv_config(0, 0);
}
END_TEST

/* Winograd F(4x4, 3x3), forward, dx and dW,
 * rows of 1, 2, 3, 7, 8 and 10 tiles (winograd.cl pads them to 1, 2, 4, 8,
 * 8, 16 and packs 8/TWp rows per work-item below 8), products of 1 to 5
 * column tiles (wino_gemm takes 4 per work-item), sizes not multiples of
 * the 4x4 tile, channel counts not multiples of the
 * 6-row register tile, ragged chunks, and the automatic choice (>= 32
 * channels both ways) against the same double reference and tolerances. */
START_TEST(test_conv_winograd)
{
    conv_tol = CONV_WINO_TOL; /* every case below runs Winograd */
    conv_winograd(2);
    /* forward and dx in chunks (wino_input, wino_gemm, wino_output), then as
     * one wino_fused launch: its groups of 16 tiles, the second one past the
     * last row of tiles in some cases */
    for (int fused = 1; fused <= 2; fused++) {
        conv_winograd_fused(fused);
        conv_run("wino conv 3x3 N3 3->5 7x7 bias", (conv_cfg){3, 3, 7, 7, 5, 3, 1, 1, 1, 0}, 41);
        conv_run("wino conv 3x3 N1 7->13 5x6 param", (conv_cfg){1, 7, 5, 6, 13, 3, 1, 1, 1, 1}, 42);
        conv_run("wino conv 3x3 N2 5->3 13x9 nobias", (conv_cfg){2, 5, 13, 9, 3, 3, 1, 1, 0, 0}, 43);
        conv_run("wino conv 3x3 N1 2->3 3x3 param", (conv_cfg){1, 2, 3, 3, 3, 3, 1, 1, 1, 1}, 44);
        /* rows of more than 8 tiles (two lane groups), full-width fast paths */
        conv_run("wino conv 3x3 N2 3->4 6x37 bias", (conv_cfg){2, 3, 6, 37, 4, 3, 1, 1, 1, 0}, 48);
        conv_run("wino conv 3x3 N2 2->5 9x32 param", (conv_cfg){2, 2, 9, 32, 5, 3, 1, 1, 1, 1}, 49);
        conv_run("wino conv 3x3 N3 3->2 5x26 bias", (conv_cfg){3, 3, 5, 26, 2, 3, 1, 1, 1, 0}, 50);
        /* rows of 18 tiles (three lane groups, the middle one away from both borders) */
        conv_run("wino conv 3x3 N1 3->4 5x70 param", (conv_cfg){1, 3, 5, 70, 4, 3, 1, 1, 1, 1}, 58);
        /* 5 column tiles of 16 (80 tiles): wino_gemm's group of 4 and a last one */
        conv_run("wino conv 3x3 N3 3->7 11x30 bias", (conv_cfg){3, 3, 11, 30, 7, 3, 1, 1, 1, 0}, 57);
        /* planes of whole tiles: the transforms' row loads never overhang a plane */
        conv_run("wino conv 3x3 N2 3->5 8x16 param", (conv_cfg){2, 3, 8, 16, 5, 3, 1, 1, 1, 1}, 55);
        /* 37 output channels: 6-row register tiles with a last one of 1 row, in all three products */
        conv_run("wino conv 3x3 N2 6->37 7x9 param", (conv_cfg){2, 6, 7, 9, 37, 3, 1, 1, 1, 1}, 59);
        conv_config(2, 0);
        conv_run("wino chunk2 conv 3x3 N3 4->7 9x5", (conv_cfg){3, 4, 9, 5, 7, 3, 1, 1, 1, 1}, 45);
        /* the weight gradient summed over chunks with 19 output channels (a last tile of 1 row) */
        conv_run("wino chunk2 conv 3x3 N3 5->19 6x11", (conv_cfg){3, 5, 6, 11, 19, 3, 1, 1, 1, 1}, 60);
        conv_run("wino chunk2 conv 3x3 N3 2->3 4x8", (conv_cfg){3, 2, 4, 8, 3, 3, 1, 1, 1, 1}, 56);
        conv_config(0, 0);
    }
    conv_winograd_fused(0);
    conv_winograd_blas(1); /* the route GPUs take */
    conv_run("wino blas conv 3x3 N2 7->13 6x37 param", (conv_cfg){2, 7, 6, 37, 13, 3, 1, 1, 1, 1}, 51);
    conv_run("wino blas conv 3x3 N3 5->3 7x7 bias", (conv_cfg){3, 5, 7, 7, 3, 3, 1, 1, 1, 0}, 52);
    conv_winograd_blas(0);
    conv_winograd(0);
    conv_run("auto conv 3x3 N2 33->34 10x9 param", (conv_cfg){2, 33, 10, 9, 34, 3, 1, 1, 1, 1}, 46);
    conv_run("auto conv 3x3 N1 70->33 8x8 bias", (conv_cfg){1, 70, 8, 8, 33, 3, 1, 1, 1, 0}, 47);
    conv_tol = 0;
}
END_TEST

static int contains(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

START_TEST(test_conv_shape_errors)
{
    cld_params *p;
    cld_graph *g;
    TU_OK(cld_params_create(tu_ctx(), &p));
    TU_OK(cld_graph_create(tu_ctx(), p, &g));
    cld_tensor *x, *w, *w2, *b, *y = NULL;
    TU_OK(cld_graph_input(g, "x", 4, (int[]){3, 4, 7, 7}, 1, &x));
    TU_OK(cld_graph_input(g, "w", 4, (int[]){5, 3, 3, 3}, 1, &w));
    TU_STATUS(cld_op_conv2d(g, x, w, NULL, 1, 1, &y), CLD_ERR_SHAPE);
    const char *msg = cld_last_error();
    ck_assert_msg(contains(msg, "conv2d") && contains(msg, "(3, 4, 7, 7)") && contains(msg, "(5, 3, 3, 3)"),
                  "message does not name the op and both shapes: %s", msg);
    ck_assert_ptr_null(y);
    /* bias of the wrong length, non-square kernel, kernel larger than input */
    TU_OK(cld_graph_input(g, "w2", 4, (int[]){5, 4, 3, 3}, 1, &w2));
    TU_OK(cld_graph_input(g, "b", 1, (int[]){4}, 1, &b));
    TU_STATUS(cld_op_conv2d(g, x, w2, b, 1, 1, &y), CLD_ERR_SHAPE);
    ck_assert_msg(contains(cld_last_error(), "conv2d"), "%s", cld_last_error());
    cld_tensor *wr;
    TU_OK(cld_graph_input(g, "wr", 4, (int[]){5, 4, 3, 2}, 1, &wr));
    TU_STATUS(cld_op_conv2d(g, x, wr, NULL, 1, 1, &y), CLD_ERR_SHAPE);
    cld_tensor *wbig;
    TU_OK(cld_graph_input(g, "wbig", 4, (int[]){5, 4, 9, 9}, 1, &wbig));
    TU_STATUS(cld_op_conv2d(g, x, wbig, NULL, 1, 0, &y), CLD_ERR_SHAPE);
    TU_STATUS(cld_op_conv2d(g, x, w2, NULL, 0, 1, &y), CLD_ERR_INVALID_ARG);
    /* the right shapes build */
    TU_OK(cld_op_conv2d(g, x, w2, NULL, 2, 1, &y));
    int nd, shape[4];
    TU_OK(cld_tensor_shape(y, &nd, shape));
    ck_assert_int_eq(nd, 4);
    ck_assert_int_eq(shape[0], 3);
    ck_assert_int_eq(shape[1], 5);
    ck_assert_int_eq(shape[2], 4);
    ck_assert_int_eq(shape[3], 4);
    cld_graph_free(g);
    cld_params_free(p);
}
END_TEST

/* ------------------------------------------------------------- linear */
typedef struct lin_cfg {
    int N, K, M, bias, param;
    int xdims; /* x as (N, K) or (N, K/4, 2, 2) */
} lin_cfg;

static cld_status lin_build(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user)
{
    const lin_cfg *c = user;
    return cld_op_linear(g, x[0], x[1], c->bias ? x[2] : NULL, y);
}

static void lin_ref_fwd(const double *const *x, double *y, void *user)
{
    const lin_cfg *c = user;
    for (int n = 0; n < c->N; n++)
        for (int m = 0; m < c->M; m++) {
            double acc = c->bias ? x[2][m] : 0.0;
            for (int k = 0; k < c->K; k++) acc += x[0][n * c->K + k] * x[1][m * c->K + k];
            y[n * c->M + m] = acc;
        }
}

static void lin_ref_bwd(const double *const *x, const double *dy, double **dx, void *user)
{
    const lin_cfg *c = user;
    for (int n = 0; n < c->N; n++)
        for (int m = 0; m < c->M; m++) {
            double d = dy[n * c->M + m];
            for (int k = 0; k < c->K; k++) {
                dx[0][n * c->K + k] += d * x[1][m * c->K + k];
                dx[1][m * c->K + k] += d * x[0][n * c->K + k];
            }
            if (c->bias) dx[2][m] += d;
        }
}

static void lin_run(const char *name, lin_cfg cfg, uint64_t seed)
{
    opc_case c = {0};
    c.name = name;
    c.n_operands = cfg.bias ? 3 : 2;
    if (cfg.xdims == 4)
        c.op[0] = (opc_operand){"x", 4, {cfg.N, cfg.K / 4, 2, 2}, 0, 0, NULL};
    else
        c.op[0] = (opc_operand){"x", 2, {cfg.N, cfg.K}, 0, 0, NULL};
    c.op[1] = (opc_operand){"w", 2, {cfg.M, cfg.K}, cfg.param, 0, NULL};
    c.op[2] = (opc_operand){"b", 1, {cfg.M}, cfg.param, 0, NULL};
    c.build = lin_build;
    c.ref_forward = lin_ref_fwd;
    c.ref_backward = lin_ref_bwd;
    c.user = &cfg;
    opc_check(&c, seed, conv_tol, conv_tol);
}

START_TEST(test_linear)
{
    /* N, K, M, bias, param, xdims */
    lin_run("linear N3 K7 M5 bias", (lin_cfg){3, 7, 5, 1, 0, 2}, 21);
    lin_run("linear N3 K7 M5 nobias param", (lin_cfg){3, 7, 5, 0, 1, 2}, 22);
    lin_run("linear N1 K7 M5 bias param", (lin_cfg){1, 7, 5, 1, 1, 2}, 23);
    lin_run("linear N3 (3,2,2)->K12 M5 bias", (lin_cfg){3, 12, 5, 1, 0, 4}, 24);
}
END_TEST

START_TEST(test_linear_shape_errors)
{
    cld_graph *g;
    TU_OK(cld_graph_create(tu_ctx(), NULL, &g));
    cld_tensor *x, *w, *b, *y = NULL;
    TU_OK(cld_graph_input(g, "x", 2, (int[]){3, 7}, 1, &x));
    TU_OK(cld_graph_input(g, "w", 2, (int[]){5, 6}, 1, &w));
    TU_STATUS(cld_op_linear(g, x, w, NULL, &y), CLD_ERR_SHAPE);
    ck_assert_msg(contains(cld_last_error(), "linear") && contains(cld_last_error(), "(3, 7)") &&
                      contains(cld_last_error(), "(5, 6)"),
                  "%s", cld_last_error());
    TU_OK(cld_graph_input(g, "w7", 2, (int[]){5, 7}, 1, &w));
    TU_OK(cld_graph_input(g, "b", 1, (int[]){4}, 1, &b));
    TU_STATUS(cld_op_linear(g, x, w, b, &y), CLD_ERR_SHAPE);
    ck_assert_ptr_null(y);
    cld_graph_free(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ops_conv");
    TCase *tc = tcase_create("conv");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_conv3x3_stride1);
    tcase_add_test(tc, test_conv_stride1_other_k);
    tcase_add_test(tc, test_conv3x3_stride2);
    tcase_add_test(tc, test_conv1x1);
    tcase_add_test(tc, test_conv_im2col_path);
    tcase_add_test(tc, test_conv_chunked);
    tcase_add_test(tc, test_conv_winograd);
    tcase_add_test(tc, test_conv_shape_errors);
    tcase_add_test(tc, test_linear);
    tcase_add_test(tc, test_linear_shape_errors);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
