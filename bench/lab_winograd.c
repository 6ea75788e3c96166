/* lab_winograd: one 3x3 stride-1 pad-1 conv through the graph executor, on
 * the implicit-GEMM kernels (conv_s1, conv_dw_s1) and on Winograd F(4x4,3x3)
 * (cl/winograd.cl), built as two graphs and run alternately; prints the best
 * of 7 runs of each and the ratio. Not built by CMake.
 *
 *   cmake --build build-bench --target cldiffusion
 *   gcc -O2 -o /tmp/lab_winograd bench/lab_winograd.c -Iengine/include -Iengine/src \
 *       -Lbuild-bench -lcldiffusion -lclblast -lOpenCL -lcjson -lz -lm
 *   /tmp/lab_winograd N Ci Co H [train]     e.g. 16 128 128 32 1
 *
 * train = 1 adds an MSE loss and the backward pass (dx and dW). Uses the test
 * hook ctx->settings.conv_winograd_mode (runtime/internal.h): 1 never, 2 always.
 * LAB_FUSED=1 / 2 sets conv_wino_fused_mode: Winograd's forward and dx in
 * chunks / as one wino_fused launch (unset: where it pays). */
#include "runtime/internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define OK(x)                                                  \
    do {                                                       \
        if ((x) != CLD_OK) {                                   \
            fprintf(stderr, "%s: %s\n", #x, cld_last_error()); \
            return 1;                                          \
        }                                                      \
    } while (0)

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s N Ci Co H [train]\n", argv[0]);
        return 2;
    }
    int N = atoi(argv[1]), Ci = atoi(argv[2]), Co = atoi(argv[3]), H = atoi(argv[4]);
    int train = argc > 5 ? atoi(argv[5]) : 0;
    cld_ctx *ctx;
    OK(cld_ctx_create(NULL, &ctx));
    cld_params *ps[2];
    cld_graph *gs[2];
    double best[2] = {1e9, 1e9};
    for (int k = 0; k < 2; k++) {
        ctx->settings.conv_winograd_mode = k == 0 ? 1 : 2; /* 0: implicit GEMM, 1: Winograd */
        ctx->settings.conv_wino_fused_mode = getenv("LAB_FUSED") ? atoi(getenv("LAB_FUSED")) : 0;
        cld_tensor *x, *w, *b, *y, *target, *loss;
        OK(cld_params_create(ctx, &ps[k]));
        OK(cld_graph_create(ctx, ps[k], &gs[k]));
        OK(cld_graph_input(gs[k], "x", 4, (int[]){N, Ci, H, H}, train, &x));
        OK(cld_graph_param(gs[k], "w", 4, (int[]){Co, Ci, 3, 3}, CLD_INIT_NORMAL, 0.05f, &w));
        OK(cld_graph_param(gs[k], "b", 1, (int[]){Co}, CLD_INIT_ZERO, 0.0f, &b));
        OK(cld_op_conv2d(gs[k], x, w, b, 1, 1, &y));
        if (train) {
            OK(cld_graph_input(gs[k], "t", 4, (int[]){N, Co, H, H}, 0, &target));
            OK(cld_op_mse_loss(gs[k], y, target, NULL, &loss));
            OK(cld_graph_set_output(gs[k], loss));
            OK(cld_graph_backward(gs[k], loss));
        } else {
            OK(cld_graph_set_output(gs[k], y));
        }
        OK(cld_graph_plan(gs[k], NULL));
    }
    ctx->settings.conv_winograd_mode = 0;
    for (int r = 0; r < 8; r++)
        for (int k = 0; k < 2; k++) {
            double t0 = now();
            OK(cld_graph_run(gs[k]));
            OK(cld_ctx_finish(ctx));
            double t = now() - t0;
            if (r > 0 && t < best[k]) best[k] = t; /* run 0 compiles */
        }
    double fl = 2.0 * N * Ci * Co * 9 * H * H * (train ? 3 : 1);
    printf("N%d %d->%d @%d %s: implicit %.2f ms (%.0f GFLOPS)  winograd %.2f ms (%.0f GFLOPS)  "
           "ratio %.2f\n",
           N, Ci, Co, H, train ? "fwd+bwd" : "fwd", best[0] * 1e3, fl / best[0] / 1e9, best[1] * 1e3,
           fl / best[1] / 1e9, best[0] / best[1]);
    for (int k = 0; k < 2; k++) {
        cld_graph_free(gs[k]);
        cld_params_free(ps[k]);
    }
    cld_ctx_free(ctx);
    return 0;
}
