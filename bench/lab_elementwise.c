/* lab_elementwise: UNet forward / train-step throughput (cld_unet_time) for
 * the fashion-mnist and cifar10 presets, to measure element-wise and fusion
 * work. Not built by CMake:
 *
 *   gcc -O2 -Iengine/include -Ibuild-fuse/generated bench/lab_elementwise.c \
 *       build-fuse/libcldiffusion.a -lOpenCL -lclblast -lcjson -lz -lm -o /tmp/lab_ew
 *   /tmp/lab_ew [preset batch iters]...      (default: fashion-mnist 64 3 cifar10 16 3)
 *   /tmp/lab_ew ops [N C H W [reps]]         single-op graphs: best of reps, ms and GB/s
 *                                            ($LAB_OPS=0,9: only ops 0 and 9)
 *   /tmp/lab_ew net preset batch reps        UNet forward and train step: best of reps,
 *                                            wall and process CPU time (steadier on a busy
 *                                            machine: other processes inflate wall time)
 *
 * Per-kernel device time: LD_PRELOAD the profiler of bench/lab_clprof.c. */
#define _POSIX_C_SOURCE 200809L
#include "cldiffusion/cldiffusion.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double now_s(void) { return clock_s(CLOCK_MONOTONIC); }
static double cpu_s(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

/* UNet of `preset` at `batch`, forward only or a training step (MSE against
 * a random target, backward, AdamW): best wall and CPU seconds of reps. */
static int time_net(cld_ctx *ctx, const char *preset, int batch, int train, int reps)
{
    cld_unet_config cfg;
    cld_params *p = NULL;
    cld_graph *g = NULL;
    cld_tensor *x, *t, *labels = NULL, *y, *target, *loss;
    cld_status s = cld_unet_config_preset(preset, &cfg);
    if (!train) cfg.dropout = 0.0f;
    int S = cfg.image_size, xs[4] = {batch, cfg.in_channels, S, S};
    if (s == CLD_OK) s = cld_params_create(ctx, &p);
    if (s == CLD_OK) s = cld_graph_create(ctx, p, &g);
    if (s == CLD_OK) s = cld_graph_input(g, "x", 4, xs, 0, &x);
    if (s == CLD_OK) s = cld_graph_input(g, "t", 1, &batch, 0, &t);
    if (s == CLD_OK) s = cld_unet_build(g, &cfg, x, t, labels, &y);
    if (s == CLD_OK && train) {
        xs[1] = cfg.out_channels;
        s = cld_graph_input(g, "target", 4, xs, 0, &target);
        if (s == CLD_OK) s = cld_op_mse_loss(g, y, target, NULL, &loss);
        if (s == CLD_OK) s = cld_graph_set_output(g, loss);
        if (s == CLD_OK) s = cld_graph_backward(g, loss);
    } else if (s == CLD_OK) {
        s = cld_graph_set_output(g, y);
    }
    if (s == CLD_OK) s = cld_graph_plan(g, NULL);
    size_t n = (size_t)batch * 4 * S * S; /* >= x, target (<= 4 channels) */
    float *buf = calloc(n, sizeof *buf);
    for (size_t i = 0; buf && i < n; i++) buf[i] = (float)((i * 7919u) % 2001u) / 1000.0f - 1.0f;
    if (s == CLD_OK) s = cld_tensor_write(g, x, buf);
    if (s == CLD_OK && train) s = cld_tensor_write(g, target, buf);
    for (int i = 0; buf && i < batch; i++) buf[i] = (float)((i * 37) % 1000);
    if (s == CLD_OK) s = cld_tensor_write(g, t, buf);
    free(buf);
    double wall = 1e30, cpu = 1e30;
    for (int r = 0; r <= reps && s == CLD_OK; r++) {
        double w0 = now_s(), c0 = cpu_s();
        if (train) {
            s = cld_graph_set_seed(g, (uint64_t)r + 1);
            if (s == CLD_OK) s = cld_params_zero_grad(p);
            if (s == CLD_OK) s = cld_graph_run(g);
            if (s == CLD_OK) s = cld_params_adamw(p, 2e-4f, 0.9f, 0.999f, 1e-8f, 0.0f, r + 1);
        } else {
            s = cld_graph_run(g);
        }
        if (s == CLD_OK) s = cld_ctx_finish(ctx);
        double w = now_s() - w0, c = cpu_s() - c0;
        if (r > 0 && w < wall) wall = w;
        if (r > 0 && c < cpu) cpu = c;
    }
    if (s == CLD_OK)
        printf("%-14s batch %3d %-8s wall %8.1f ms (%6.1f img/s)  cpu %8.1f ms (%6.1f img/s per 2 cores)\n",
               preset, batch, train ? "train" : "forward", 1e3 * wall, batch / wall, 1e3 * cpu,
               2.0 * batch / cpu);
    else
        fprintf(stderr, "%s: %s\n", preset, cld_last_error());
    fflush(stdout);
    cld_graph_free(g);
    cld_params_free(p);
    return s != CLD_OK;
}

enum {
    OP_SILU,
    OP_ADD,
    OP_ADD_NC,
    OP_DROPOUT,
    OP_CONCAT,
    OP_UPSAMPLE,
    OP_GN,
    OP_CONV3,
    OP_SILU_TRAIN,
    OP_CONV3_TRAIN,
    OP_CONV_S2_TRAIN,
    OP_COUNT
};
static const char *const op_names[OP_COUNT] = {
    "silu",       "add",          "add (N,C,1,1)", "dropout 0.1",     "concat",         "upsample2x",
    "group_norm", "conv3x3 C->C", "silu fwd+bwd",  "conv3x3 fwd+bwd", "conv s2 fwd+bwd"};

/* Build, plan and time one single-op graph on x (N, C, H, W): best of reps. */
static int time_op(cld_ctx *ctx, int op, const int *xs, int reps)
{
    cld_params *p = NULL;
    cld_graph *g = NULL;
    cld_tensor *x, *b = NULL, *y = NULL, *w, *bias, *loss;
    int nc[4] = {xs[0], xs[1], 1, 1}, cs[1] = {xs[1]}, ws[4] = {xs[1], xs[1], 3, 3};
    size_t n = (size_t)xs[0] * xs[1] * xs[2] * xs[3], bytes = 2 * n * sizeof(float);
    cld_status s = cld_params_create(ctx, &p);
    if (s == CLD_OK) s = cld_graph_create(ctx, p, &g);
    int train = op == OP_SILU_TRAIN || op == OP_CONV3_TRAIN || op == OP_CONV_S2_TRAIN;
    int ys[4] = {xs[0], xs[1], op == OP_CONV_S2_TRAIN ? (xs[2] + 1) / 2 : xs[2],
                 op == OP_CONV_S2_TRAIN ? (xs[3] + 1) / 2 : xs[3]};
    if (s == CLD_OK) s = cld_graph_input(g, "x", 4, xs, train, &x);
    switch (op) {
    case OP_SILU: s = s ? s : cld_op_silu(g, x, &y); break;
    case OP_ADD:
        if (s == CLD_OK) s = cld_graph_input(g, "b", 4, xs, 0, &b);
        if (s == CLD_OK) s = cld_op_add(g, x, b, &y);
        bytes = 3 * n * sizeof(float);
        break;
    case OP_ADD_NC:
        if (s == CLD_OK) s = cld_graph_input(g, "b", 4, nc, 0, &b);
        if (s == CLD_OK) s = cld_op_add(g, x, b, &y);
        break;
    case OP_DROPOUT: s = s ? s : cld_op_dropout(g, x, 0.1f, &y); break;
    case OP_CONCAT:
        if (s == CLD_OK) s = cld_graph_input(g, "b", 4, xs, 0, &b);
        if (s == CLD_OK) s = cld_op_concat(g, x, b, &y);
        bytes = 4 * n * sizeof(float);
        break;
    case OP_UPSAMPLE:
        s = s ? s : cld_op_upsample2x(g, x, &y);
        bytes = 5 * n * sizeof(float);
        break;
    case OP_GN:
        if (s == CLD_OK) s = cld_graph_param(g, "g", 1, cs, CLD_INIT_ONE, 0.0f, &w);
        if (s == CLD_OK) s = cld_graph_param(g, "b", 1, cs, CLD_INIT_ZERO, 0.0f, &bias);
        if (s == CLD_OK) s = cld_op_group_norm(g, x, w, bias, 32, 1e-6f, &y);
        bytes = 3 * n * sizeof(float);
        break;
    case OP_CONV3:
        if (s == CLD_OK) s = cld_graph_param(g, "w", 4, ws, CLD_INIT_UNIFORM, 0.05f, &w);
        if (s == CLD_OK) s = cld_graph_param(g, "b", 1, cs, CLD_INIT_ZERO, 0.0f, &bias);
        if (s == CLD_OK) s = cld_op_conv2d(g, x, w, bias, 1, 1, &y);
        break;
    case OP_SILU_TRAIN:
    case OP_CONV3_TRAIN:
    case OP_CONV_S2_TRAIN:
        if (s == CLD_OK) s = cld_graph_input(g, "b", 4, ys, 0, &b);
        if (s == CLD_OK && op != OP_SILU_TRAIN)
            s = cld_graph_param(g, "w", 4, ws, CLD_INIT_UNIFORM, 0.05f, &w);
        if (s == CLD_OK && op != OP_SILU_TRAIN)
            s = cld_graph_param(g, "b", 1, cs, CLD_INIT_ZERO, 0.0f, &bias);
        if (s == CLD_OK && op == OP_SILU_TRAIN) s = cld_op_silu(g, x, &y);
        if (s == CLD_OK && op != OP_SILU_TRAIN)
            s = cld_op_conv2d(g, x, w, bias, op == OP_CONV_S2_TRAIN ? 2 : 1, 1, &y);
        if (s == CLD_OK) s = cld_op_mse_loss(g, y, b, NULL, &loss);
        if (s == CLD_OK) s = cld_graph_set_output(g, loss);
        if (s == CLD_OK) s = cld_graph_backward(g, loss);
        y = NULL;
        bytes = 7 * n * sizeof(float);
        break;
    }
    if (s == CLD_OK && y) s = cld_graph_set_output(g, y);
    if (s == CLD_OK) s = cld_graph_plan(g, NULL);
    float *buf = malloc(n * sizeof *buf);
    for (size_t i = 0; buf && i < n; i++) buf[i] = (float)((i * 7919u) % 2001u) / 1000.0f - 1.0f;
    if (s == CLD_OK) s = cld_tensor_write(g, x, buf);
    if (s == CLD_OK && b) s = cld_tensor_write(g, b, buf); /* b is at most x's size */
    free(buf);
    double best = 1e30, best_cpu = 1e30;
    for (int r = 0; r <= reps && s == CLD_OK; r++) {
        double t0 = now_s(), c0 = cpu_s();
        s = cld_graph_run(g);
        if (s == CLD_OK) s = cld_ctx_finish(ctx);
        double dt = now_s() - t0, dc = cpu_s() - c0;
        if (r > 0 && dt < best) best = dt;
        if (r > 0 && dc < best_cpu) best_cpu = dc;
    }
    if (s == CLD_OK)
        printf("  %-14s %8.3f ms  %6.2f GB/s  (cpu %8.3f ms)\n", op_names[op], 1e3 * best, bytes / best / 1e9,
               1e3 * best_cpu);
    else
        fprintf(stderr, "%s: %s\n", op_names[op], cld_last_error());
    cld_graph_free(g);
    cld_params_free(p);
    return s != CLD_OK;
}

static int run(cld_ctx *ctx, const char *preset, int batch, int iters)
{
    cld_unet_config cfg;
    cld_unet_timing t;
    if (cld_unet_config_preset(preset, &cfg) != CLD_OK ||
        cld_unet_time(ctx, &cfg, batch, iters, &t) != CLD_OK) {
        fprintf(stderr, "%s: %s\n", preset, cld_last_error());
        return 1;
    }
    printf("%-14s batch %3d: forward %8.1f ms (%7.1f img/s)  train step %8.1f ms (%6.1f img/s)"
           "  peak fwd %.0f MB train %.0f MB\n",
           preset, batch, 1e3 * t.forward_s, batch / t.forward_s, 1e3 * t.train_step_s,
           batch / t.train_step_s, t.fwd_peak_bytes / 1e6, t.train_peak_bytes / 1e6);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    cld_ctx *ctx;
    if (cld_ctx_create(NULL, &ctx) != CLD_OK) {
        fprintf(stderr, "%s\n", cld_last_error());
        return 1;
    }
    int bad = 0;
    if (argc > 1 && !strcmp(argv[1], "ops")) {
        int xs[4] = {16, 128, 32, 32}, reps = argc > 6 ? atoi(argv[6]) : 10;
        for (int i = 0; i < 4 && i + 2 < argc; i++) xs[i] = atoi(argv[i + 2]);
        printf("ops on (%d, %d, %d, %d):\n", xs[0], xs[1], xs[2], xs[3]);
        const char *only = getenv("LAB_OPS"); /* e.g. "0,9": op indices to run */
        for (int op = 0; op < OP_COUNT; op++) {
            char key[8];
            snprintf(key, sizeof key, "%d", op);
            int hit = !only;
            for (const char *q = only; q && *q; q += strcspn(q, ",") + (q[strcspn(q, ",")] != 0))
                hit |= strlen(key) == strcspn(q, ",") && !strncmp(q, key, strlen(key));
            if (hit) bad |= time_op(ctx, op, xs, reps);
        }
        cld_ctx_free(ctx);
        return bad;
    }
    if (argc > 4 && !strcmp(argv[1], "net")) {
        int batch = atoi(argv[3]), reps = atoi(argv[4]);
        bad |= time_net(ctx, argv[2], batch, 0, reps);
        bad |= time_net(ctx, argv[2], batch, 1, reps);
        cld_ctx_free(ctx);
        return bad;
    }
    if (argc < 4) {
        bad |= run(ctx, "fashion-mnist", 64, 3);
        bad |= run(ctx, "cifar10", 16, 3);
    }
    for (int i = 1; i + 2 < argc; i += 3) bad |= run(ctx, argv[i], atoi(argv[i + 1]), atoi(argv[i + 2]));
    cld_ctx_free(ctx);
    return bad;
}
