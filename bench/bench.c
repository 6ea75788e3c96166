/* Micro-benchmarks of engine internals for cld-bench (cldiffusion/bench.h):
 * the GEMM as the ops call it, and conv2d through the graph executor. */
#include "graph/internal.h"
#include "bench.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double bench_now(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A device buffer of n random normal floats. */
static cld_status random_buffer(cld_ctx *ctx, size_t n, uint64_t seed, cl_mem *out)
{
    float *h = malloc(n * sizeof *h);
    if (!h) return cld__fail(CLD_ERR_NOMEM, "bench: out of host memory (%zu floats)", n);
    for (size_t i = 0; i < n; i++) h[i] = (float)cld__rand_normal(&seed);
    cld_status s = cld_buffer_alloc(ctx, n * sizeof(float), out);
    if (s == CLD_OK) s = cld_buffer_write(ctx, *out, 0, n * sizeof(float), h);
    free(h);
    return s;
}

/* Fill a planned graph input with random values. */
static cld_status random_input(cld_graph *g, cld_tensor *t, uint64_t seed)
{
    size_t n;
    CLD_TRY(cld_tensor_numel(t, &n));
    float *h = malloc(n * sizeof *h);
    if (!h) return cld__fail(CLD_ERR_NOMEM, "bench: out of host memory (%zu floats)", n);
    for (size_t i = 0; i < n; i++) h[i] = (float)cld__rand_normal(&seed);
    cld_status s = cld_tensor_write(g, t, h);
    free(h);
    return s;
}

/* ------------------------------------------------------------------ GEMM */

typedef struct gemm_job {
    cld_ctx *ctx;
    int batch, m, n, k, reps;
    cl_mem a, b, c;
} gemm_job;

static cld_status gemm_sample(const gemm_job *j, double *seconds)
{
    double t0 = bench_now();
    for (int r = 0; r < j->reps; r++) {
        size_t m = (size_t)j->m, n = (size_t)j->n, k = (size_t)j->k;
        if (j->batch == 1)
            CLD_TRY(cld__gemm(j->ctx, 0, 0, m, n, k, 1.0f, j->a, 0, k, j->b, 0, n, 0.0f, j->c, 0, n));
        else
            CLD_TRY(cld__gemm_batched(j->ctx, 0, 0, m, n, k, 1.0f, j->a, 0, k, m * k, j->b, 0, n, k * n, 0.0f,
                                      j->c, 0, n, m * n, (size_t)j->batch));
    }
    CLD_TRY(cld_ctx_finish(j->ctx));
    *seconds = (bench_now() - t0) / j->reps;
    return CLD_OK;
}

cld_status cld_bench_gemm(cld_ctx *ctx, int batch, int m, int n, int k, int iters, double *gflops)
{
    if (!ctx || !gflops || batch < 1 || m < 1 || n < 1 || k < 1 || iters < 1)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_bench_gemm: bad argument (batch %d, %dx%dx%d, iters %d)",
                         batch, m, n, k, iters);
    double flops = 2.0 * batch * (double)m * (double)n * (double)k;
    gemm_job j = {ctx, batch, m, n, k, 1, NULL, NULL, NULL};
    j.reps = flops >= 2e9 ? 1 : (int)(2e9 / flops);
    double *dt = malloc((size_t)iters * sizeof *dt);
    if (!dt) return cld__fail(CLD_ERR_NOMEM, "cld_bench_gemm: out of host memory");
    size_t B = (size_t)batch;
    cld_status s = random_buffer(ctx, B * (size_t)m * (size_t)k, 1, &j.a);
    if (s == CLD_OK) s = random_buffer(ctx, B * (size_t)k * (size_t)n, 2, &j.b);
    if (s == CLD_OK) s = cld_buffer_alloc(ctx, B * (size_t)m * (size_t)n * sizeof(float), &j.c);
    double warm;
    if (s == CLD_OK) s = gemm_sample(&j, &warm);
    for (int i = 0; i < iters && s == CLD_OK; i++) s = gemm_sample(&j, &dt[i]);
    if (s == CLD_OK) {
        qsort(dt, (size_t)iters, sizeof *dt, cmp_double);
        *gflops = flops / dt[iters / 2] / 1e9;
    }
    free(dt);
    if (j.a) cld_buffer_release(j.a);
    if (j.b) cld_buffer_release(j.b);
    if (j.c) cld_buffer_release(j.c);
    return s;
}

/* ------------------------------------------------------------------ conv */

/* Median seconds of `iters` runs of g after one warm-up. */
static cld_status time_graph(cld_ctx *ctx, cld_graph *g, int iters, double *out)
{
    double *dt = malloc((size_t)iters * sizeof *dt);
    if (!dt) return cld__fail(CLD_ERR_NOMEM, "bench: out of host memory");
    cld_status s = CLD_OK;
    for (int i = 0; i <= iters && s == CLD_OK; i++) {
        double t0 = bench_now();
        s = cld_graph_run(g);
        if (s == CLD_OK) s = cld_ctx_finish(ctx);
        if (i > 0) dt[i - 1] = bench_now() - t0;
    }
    if (s == CLD_OK) {
        qsort(dt, (size_t)iters, sizeof *dt, cmp_double);
        *out = dt[iters / 2];
    }
    free(dt);
    return s;
}

/* y = conv3x3(x) + b on a new graph over params p; with `bwd`, also the
 * gradients of x, w and b from a random seed gradient dy. */
static cld_status conv_graph(cld_ctx *ctx, cld_params *p, const int xs[4], int co, int bwd, cld_graph **out)
{
    const int ws[4] = {co, xs[1], 3, 3}, ys[4] = {xs[0], co, xs[2], xs[3]};
    cld_tensor *x, *w, *b, *y, *dy = NULL;
    CLD_TRY(cld_graph_create(ctx, p, out));
    cld_graph *g = *out;
    CLD_TRY(cld_graph_input(g, "x", 4, xs, bwd, &x));
    CLD_TRY(cld_graph_param(g, "w", 4, ws, CLD_INIT_NORMAL, 0.05f, &w));
    CLD_TRY(cld_graph_param(g, "b", 1, &co, CLD_INIT_NORMAL, 0.05f, &b));
    CLD_TRY(cld_op_conv2d(g, x, w, b, 1, 1, &y));
    CLD_TRY(cld_graph_set_output(g, y));
    if (bwd) {
        CLD_TRY(cld_graph_input(g, "dy", 4, ys, 0, &dy));
        CLD_TRY(cld__graph_backward_seed(g, y, dy));
    }
    CLD_TRY(cld_graph_plan(g, NULL));
    CLD_TRY(random_input(g, x, 3));
    if (dy) CLD_TRY(random_input(g, dy, 4));
    return CLD_OK;
}

cld_status cld_bench_conv(cld_ctx *ctx, int n, int c, int h, int w, int co, int iters, double *fwd_gflops,
                          double *bwd_gflops)
{
    if (!ctx || !fwd_gflops || !bwd_gflops || n < 1 || c < 1 || h < 1 || w < 1 || co < 1 || iters < 1)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_bench_conv: bad argument");
    const int xs[4] = {n, c, h, w};
    double flops = 2.0 * n * co * (double)h * w * c * 9;
    cld_params *p = NULL;
    cld_graph *gf = NULL, *gb = NULL;
    double tf = 0, tfb = 0;
    cld_status s = cld_params_create(ctx, &p);
    if (s == CLD_OK) s = conv_graph(ctx, p, xs, co, 0, &gf);
    if (s == CLD_OK) s = conv_graph(ctx, p, xs, co, 1, &gb);
    if (s == CLD_OK) s = time_graph(ctx, gf, iters, &tf);
    if (s == CLD_OK) s = time_graph(ctx, gb, iters, &tfb);
    if (s == CLD_OK) {
        *fwd_gflops = flops / tf / 1e9;
        double tb = tfb - tf;
        *bwd_gflops = 2.0 * flops / (tb > 1e-9 ? tb : 1e-9) / 1e9;
    }
    if (gf) cld_graph_free(gf);
    if (gb) cld_graph_free(gb);
    if (p) cld_params_free(p);
    return s;
}
