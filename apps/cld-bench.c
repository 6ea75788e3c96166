/* cld-bench: the engine's performance rows, keyed like bench/torch_reference.py
 * so that bench/run.sh can print ours/PyTorch ratios.
 *
 *   cld-bench [--device SPEC] [--quick] [--json] [--only GROUPS]
 *
 * GROUPS is a comma list of gemm, conv, unet, sample, start, mem (default:
 * all); cli-start runs only start's rows of the default cld-sample command. Rows that fail print "n/a" with the error; the exit code is then 1. */
#define _XOPEN_SOURCE 700

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"

static const char *prog = "cld-bench";

/* ----------------------------------------------------------------- rows */
typedef struct row {
    char key[48];
    char label[96];
    const char *unit;
    int has_value;
    double value;
    int higher_is_better;
    char note[384];
} row;

#define MAX_ROWS 64
static row rows[MAX_ROWS];
static int n_rows, n_failed;

static row *add_row(const char *key, const char *label, const char *unit, int higher_is_better)
{
    if (n_rows == MAX_ROWS) return NULL;
    row *r = &rows[n_rows++];
    memset(r, 0, sizeof *r);
    snprintf(r->key, sizeof r->key, "%s", key);
    snprintf(r->label, sizeof r->label, "%s", label);
    r->unit = unit;
    r->higher_is_better = higher_is_better;
    return r;
}

static void set_value(row *r, double v)
{
    if (!r) return;
    r->has_value = 1;
    r->value = v;
}

/* Mark row r (and any rows of the same failing call) as n/a. */
static void set_fail(row *r, cld_status s)
{
    if (!r) return;
    r->has_value = 0;
    snprintf(r->note, sizeof r->note, "%s: %s", cld_status_name(s), cld_last_error());
    n_failed++;
}

/* ------------------------------------------------------------ workloads */
/* Keep in sync with bench/torch_reference.py (GEMMS, CONVS, WORKLOADS). */
typedef struct gemm_shape {
    const char *key, *label;
    int batch, m, n, k;
} gemm_shape;

static const gemm_shape gemms[] = {
    {"gemm_a_conv64", "GEMM conv 64->64 @28x28, 32 img (64x25088x576)", 1, 64, 25088, 576},
    {"gemm_b_conv128", "GEMM conv 128->128 @32x32, 16 img (128x16384x1152)", 1, 128, 16384, 1152},
    {"gemm_b_conv256", "GEMM conv 256->256 @8x8, 16 img (256x1024x2304)", 1, 256, 1024, 2304},
    {"gemm_b_attn", "GEMM attn QK^T @16x16 C256, batch 16 (256x256x256)", 16, 256, 256, 256},
    {"gemm_1024", "GEMM square 1024^3", 1, 1024, 1024, 1024},
};

typedef struct conv_shape {
    const char *key, *label;
    int n, c, h, w, co;
} conv_shape;

static const conv_shape convs[] = {
    {"conv_a", "conv3x3 64->64 @28x28, batch 64", 64, 64, 28, 28, 64},
    {"conv_b", "conv3x3 128->128 @32x32, batch 16", 16, 128, 32, 32, 128},
};

typedef struct workload {
    const char *tag, *preset;
    int batch;
    size_t params;
    int train_group;           /* 1: a row of the train group, not of unet/mem */
    int base, groups, classes; /* > 0: override the preset (dropout then 0), as cld-train --preset small */
} workload;

static const workload workloads[] = {
    {"a", "fashion-mnist", 64, 6469889, 0, 0, 0, 0},
    {"b", "cifar10", 16, 35746307, 0, 0, 0, 0},
    /* the shipped Fashion-MNIST model (cld-train --preset small, 10 classes): the UNet step
     * alone, against which bench/run.sh puts cld-train's whole step */
    {"s", "fashion-mnist", 64, 1624577, 1, 32, 16, 10},
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define CLD_TRY_APP(expr)              \
    do {                               \
        cld_status s__ = (expr);       \
        if (s__ != CLD_OK) return s__; \
    } while (0)

/* ------------------------------------------------------------ groups */
static void bench_gemm(cld_ctx *ctx, int quick)
{
    for (size_t i = 0; i < N_OF(gemms); i++) {
        const gemm_shape *g = &gemms[i];
        row *r = add_row(g->key, g->label, "GFLOPS", 1);
        double gf;
        cld_status s = cld_bench_gemm(ctx, g->batch, g->m, g->n, g->k, quick ? 3 : 7, &gf);
        if (s == CLD_OK)
            set_value(r, gf);
        else
            set_fail(r, s);
    }
}

static void bench_conv(cld_ctx *ctx, int quick)
{
    for (size_t i = 0; i < N_OF(convs); i++) {
        const conv_shape *c = &convs[i];
        char key[48], label[96];
        snprintf(key, sizeof key, "%s_fwd", c->key);
        snprintf(label, sizeof label, "%s forward", c->label);
        row *rf = add_row(key, label, "GFLOPS", 1);
        snprintf(key, sizeof key, "%s_bwd", c->key);
        snprintf(label, sizeof label, "%s backward", c->label);
        row *rb = add_row(key, label, "GFLOPS", 1);
        double f, b;
        cld_status s = cld_bench_conv(ctx, c->n, c->c, c->h, c->w, c->co, quick ? 2 : 5, &f, &b);
        if (s == CLD_OK) {
            set_value(rf, f);
            set_value(rb, b);
            if (rf)
                snprintf(rf->note, sizeof rf->note,
                         "2*N*Co*Ci*9*H*W flops per pass on both sides (Winograd does ~4x fewer)");
            if (rb) snprintf(rb->note, sizeof rb->note, "time(fwd+bwd) - time(fwd)");
        } else {
            set_fail(rf, s);
            set_fail(rb, s);
        }
    }
}

/* Profiling overrides (--workload, --batch): one workload, another batch. */
static const char *only_workload;
static int batch_override;

static void bench_unet(cld_ctx *ctx, int quick, int want_unet, int want_mem, int train_group)
{
    for (size_t i = 0; i < N_OF(workloads); i++) {
        workload wl = workloads[i];
        const workload *w = &wl;
        if (only_workload ? strcmp(only_workload, w->tag) != 0 : w->train_group != train_group) continue;
        if (batch_override > 0) wl.batch = batch_override;
        char key[48], label[96];
        row *rf = NULL, *rt = NULL, *mf = NULL, *mt = NULL;
        if (want_unet) {
            snprintf(key, sizeof key, "unet_%s_fwd", w->tag);
            snprintf(label, sizeof label, "UNet forward (%s) %s batch %d", w->tag,
                     w->base > 0 ? "shipped fashion-mnist" : w->preset, w->batch);
            rf = add_row(key, label, "img/s", 1);
            snprintf(key, sizeof key, "unet_%s_train", w->tag);
            snprintf(label, sizeof label, "UNet train step (AdamW) (%s) %s batch %d", w->tag,
                     w->base > 0 ? "shipped fashion-mnist" : w->preset, w->batch);
            rt = add_row(key, label, "img/s", 1);
        }
        if (want_mem) {
            snprintf(key, sizeof key, "mem_%s_fwd", w->tag);
            snprintf(label, sizeof label, "peak memory, forward (%s) batch %d", w->tag, w->batch);
            mf = add_row(key, label, "MiB", 0);
            snprintf(key, sizeof key, "mem_%s_train", w->tag);
            snprintf(label, sizeof label, "peak memory, training (%s) batch %d", w->tag, w->batch);
            mt = add_row(key, label, "MiB", 0);
        }
        cld_unet_config cfg;
        cld_unet_timing t;
        cld_status s = cld_unet_config_preset(w->preset, &cfg);
        if (w->base > 0)
            cfg.base_channels = w->base, cfg.norm_groups = w->groups, cfg.num_classes = w->classes,
            cfg.dropout = 0.0f;
        if (s == CLD_OK) s = cld_unet_time(ctx, &cfg, w->batch, quick ? 1 : 3, &t);
        if (s == CLD_OK && t.n_params != w->params) {
            fprintf(stderr, "%s: %s has %zu parameters, expected %zu\n", prog, w->preset, t.n_params,
                    w->params);
        }
        if (s != CLD_OK) {
            set_fail(rf, s);
            set_fail(rt, s);
            set_fail(mf, s);
            set_fail(mt, s);
            continue;
        }
        if (rf) set_value(rf, w->batch / t.forward_s);
        if (rt) set_value(rt, w->batch / t.train_step_s);
        /* Planned arena plus the parameter store: values for inference;
         * values, grads, AdamW m and v for training. */
        double pb = 4.0 * (double)t.n_params;
        if (mf) {
            set_value(mf, ((double)t.fwd_peak_bytes + pb) / 1048576.0);
            snprintf(mf->note, sizeof mf->note,
                     "planned arena %.1f MiB + params %.1f MiB (sum of tensors %.1f MiB)",
                     t.fwd_peak_bytes / 1048576.0, pb / 1048576.0, t.fwd_sum_bytes / 1048576.0);
        }
        if (mt) {
            set_value(mt, ((double)t.train_peak_bytes + 4 * pb) / 1048576.0);
            snprintf(mt->note, sizeof mt->note,
                     "planned arena %.1f MiB + params/grads/m/v %.1f MiB (sum of tensors %.1f MiB)",
                     t.train_peak_bytes / 1048576.0, 4 * pb / 1048576.0, t.train_sum_bytes / 1048576.0);
        }
    }
}

/* The UNet as a sampler model: copy x into the graph's input, write t, run
 * the inference graph, copy its output out. */
typedef struct unet_model {
    cld_ctx *ctx;
    cld_graph *g;
    cld_tensor *x, *t, *y;
    int n;
    size_t per_sample;
} unet_model;

static cld_status copy_buffer(cld_ctx *ctx, cl_mem src, size_t src_off, cl_mem dst, size_t dst_off,
                              size_t floats)
{
    cl_int err = clEnqueueCopyBuffer(cld_ctx_queue(ctx), src, dst, src_off * sizeof(float),
                                     dst_off * sizeof(float), floats * sizeof(float), 0, NULL, NULL);
    return err == CL_SUCCESS ? CLD_OK : CLD_ERR_OPENCL;
}

static cld_status unet_model_fn(void *user, cl_mem x, size_t x_off, cl_mem out, size_t out_off, int n,
                                const float *t, const int *labels)
{
    unet_model *m = user;
    (void)labels;
    if (n != m->n) return CLD_ERR_SHAPE;
    cl_mem buf;
    size_t off;
    size_t count = (size_t)n * m->per_sample;
    CLD_TRY_APP(cld_tensor_buffer(m->x, &buf, &off));
    CLD_TRY_APP(copy_buffer(m->ctx, x, x_off, buf, off, count));
    CLD_TRY_APP(cld_tensor_write(m->g, m->t, t));
    CLD_TRY_APP(cld_graph_run(m->g));
    CLD_TRY_APP(cld_tensor_buffer(m->y, &buf, &off));
    return copy_buffer(m->ctx, buf, off, out, out_off, count);
}

/* 64 images of workload (a) in 20 DDIM steps (eta 0, linspace spacing, linear
 * schedule, T = 1000), randomly initialised weights, after one warm-up
 * forward pass (kernel compilation excluded). */
static cld_status sample_run(cld_ctx *ctx, double *seconds)
{
    const int N = 64, S = 28;
    cld_unet_config cfg;
    cld_params *p = NULL;
    cld_schedule *sch = NULL;
    cl_mem out = NULL;
    unet_model m = {ctx, NULL, NULL, NULL, NULL, N, (size_t)S * S};
    const int xs[4] = {N, 1, S, S};
    float *h = calloc((size_t)N * m.per_sample, sizeof *h);
    if (!h) return CLD_ERR_NOMEM;
    cld_status s = cld_unet_config_preset("fashion-mnist", &cfg);
    cfg.dropout = 0.0f;
    if (s == CLD_OK) s = cld_params_create(ctx, &p);
    if (s == CLD_OK) s = cld_graph_create(ctx, p, &m.g);
    if (s == CLD_OK) s = cld_graph_input(m.g, "x", 4, xs, 0, &m.x);
    if (s == CLD_OK) s = cld_graph_input(m.g, "t", 1, &N, 0, &m.t);
    if (s == CLD_OK) s = cld_unet_build(m.g, &cfg, m.x, m.t, NULL, &m.y);
    if (s == CLD_OK) s = cld_graph_set_output(m.g, m.y);
    if (s == CLD_OK) s = cld_graph_plan(m.g, NULL);
    if (s == CLD_OK) s = cld_tensor_write(m.g, m.x, h);
    if (s == CLD_OK) s = cld_tensor_write(m.g, m.t, h);
    if (s == CLD_OK) s = cld_graph_run(m.g); /* warm-up */
    if (s == CLD_OK) s = cld_ctx_finish(ctx);
    if (s == CLD_OK) s = cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 0, &sch);
    if (s == CLD_OK) s = cld_buffer_alloc(ctx, (size_t)N * m.per_sample * sizeof(float), &out);
    cld_sampler_opts o;
    if (s == CLD_OK) s = cld_sampler_opts_default(CLD_SAMPLER_DDIM, &o);
    if (s == CLD_OK) {
        o.steps = 20;
        o.spacing = CLD_SPACING_LINSPACE;
        o.eta = 0.0;
        cld_sample_job job;
        memset(&job, 0, sizeof job);
        job.n = N;
        job.per_sample = m.per_sample;
        job.seed = 1;
        job.out = out;
        job.model = unet_model_fn;
        job.model_user = &m;
        double t0 = cli_now_s();
        s = cld_sampler_run(ctx, sch, &o, &job);
        if (s == CLD_OK) s = cld_buffer_read(ctx, out, 0, (size_t)N * m.per_sample * sizeof(float), h);
        *seconds = cli_now_s() - t0;
    }
    if (out) cld_buffer_release(out);
    if (sch) cld_schedule_free(sch);
    if (m.g) cld_graph_free(m.g);
    if (p) cld_params_free(p);
    free(h);
    return s;
}

static void bench_sample(cld_ctx *ctx)
{
    row *r = add_row("sample_a", "sample 64 images of (a), 20 DDIM steps", "s", 0);
    double sec = 0;
    cld_status s = sample_run(ctx, &sec);
    if (s == CLD_OK)
        set_value(r, sec);
    else
        set_fail(r, s);
}

/* ------------------------------------------------------------ start-up */
/* Child mode: time context creation, the first forward pass of UNet (a) at
 * batch 1 (compiling what it needs), then building every remaining program.
 * Prints one line: "probe <first_forward_s> <build_all_s> <built> <cached>". */
static int startup_probe(const char *device)
{
    double t0 = cli_now_s();
    cld_ctx *ctx = NULL;
    cld_params *p = NULL;
    cld_graph *g = NULL;
    cld_tensor *x, *t, *y;
    cld_unet_config cfg;
    const int xs[4] = {1, 1, 28, 28}, one = 1;
    float img[28 * 28] = {0}, ts[1] = {500.0f};
    cld_status s = cld_ctx_create(device, &ctx);
    if (s == CLD_OK) s = cld_unet_config_preset("fashion-mnist", &cfg);
    if (s == CLD_OK) s = cld_params_create(ctx, &p);
    if (s == CLD_OK) s = cld_graph_create(ctx, p, &g);
    if (s == CLD_OK) s = cld_graph_input(g, "x", 4, xs, 0, &x);
    if (s == CLD_OK) s = cld_graph_input(g, "t", 1, &one, 0, &t);
    if (s == CLD_OK) s = cld_unet_build(g, &cfg, x, t, NULL, &y);
    if (s == CLD_OK) s = cld_graph_set_output(g, y);
    if (s == CLD_OK) s = cld_graph_plan(g, NULL);
    if (s == CLD_OK) s = cld_tensor_write(g, x, img);
    if (s == CLD_OK) s = cld_tensor_write(g, t, ts);
    if (s == CLD_OK) s = cld_graph_run(g);
    if (s == CLD_OK) s = cld_tensor_read(g, y, img);
    double t1 = cli_now_s();
    if (s == CLD_OK) s = cld_ctx_build_all(ctx);
    double t2 = cli_now_s();
    cld_compile_stats cs = {0, 0, 0};
    if (s == CLD_OK) s = cld_ctx_compile_stats(ctx, &cs);
    if (g) cld_graph_free(g);
    if (p) cld_params_free(p);
    if (ctx) cld_ctx_free(ctx);
    if (s != CLD_OK) return cli_fail(prog, "startup probe", s);
    printf("probe %.6f %.6f %d %d\n", t1 - t0, t2 - t1, cs.programs_built, cs.programs_from_cache);
    return CLI_EXIT_OK;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Run the probe in a child process with fresh kernel caches (ours and
 * PoCL's), twice: cold (empty caches), then warm. */
static void bench_start(const char *device)
{
    row *cold = add_row("start_cold", "cold start to first forward (a) batch 1", "s", 0);
    row *warm = add_row("start_warm", "warm start to first forward (a) batch 1", "s", 0);
    row *bcold = add_row("build_all_cold", "cld_ctx_build_all after it, cold", "s", 0);
    row *bwarm = add_row("build_all_warm", "cld_ctx_build_all after it, warm", "s", 0);
    char exe[4096], dir[] = "/tmp/cld-bench-XXXXXX", sub[4200], cmd[8500];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0 || !mkdtemp(dir)) {
        cld_status s = CLD_ERR_IO;
        set_fail(cold, s);
        set_fail(warm, s);
        set_fail(bcold, s);
        set_fail(bwarm, s);
        return;
    }
    exe[n] = 0;
    snprintf(sub, sizeof sub, "%s/cld", dir);
    setenv("CLD_CACHE_DIR", sub, 1);
    snprintf(sub, sizeof sub, "%s/pocl", dir);
    setenv("POCL_CACHE_DIR", sub, 1);
    unsetenv("CLD_CACHE");
    snprintf(cmd, sizeof cmd, "'%s' --startup-probe%s%s%s", exe, device ? " --device '" : "",
             device ? device : "", device ? "'" : "");
    row *rr[2][2] = {{cold, bcold}, {warm, bwarm}};
    for (int pass = 0; pass < 2; pass++) {
        FILE *f = popen(cmd, "r");
        char line[256] = "";
        double first = 0, all = 0;
        int built = 0, cached = 0, ok = 0;
        if (f) {
            while (fgets(line, sizeof line, f))
                if (sscanf(line, "probe %lf %lf %d %d", &first, &all, &built, &cached) == 4) ok = 1;
            if (pclose(f) != 0) ok = 0;
        }
        if (!ok) {
            for (int j = 0; j < 2; j++) {
                if (!rr[pass][j]) continue;
                rr[pass][j]->has_value = 0;
                snprintf(rr[pass][j]->note, sizeof rr[pass][j]->note, "startup probe failed (see stderr)");
                n_failed++;
            }
            continue;
        }
        set_value(rr[pass][0], first);
        set_value(rr[pass][1], all);
        if (rr[pass][0])
            snprintf(rr[pass][0]->note, sizeof rr[pass][0]->note,
                     "%s kernel caches; after build_all: %d programs built, %d from cache",
                     pass ? "warm" : "empty", built, cached);
    }
    unsetenv("CLD_CACHE_DIR");
    unsetenv("POCL_CACHE_DIR");
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The default command of cld-sample (the bundled model, its default grid),
 * run as a child process next to this one with fresh kernel caches (ours
 * and PoCL's): cold (empty), then warm. The start-up overhead is everything
 * but steady sampling: wall - steps x the median step time (--progress json
 * gives every step's elapsed time). The first step cannot be timed alone:
 * the sampler runs a step ahead of the device, and PoCL compiles a kernel
 * on its first launch on the device side. On a loaded machine the estimate
 * carries the jitter of 20 steps; the note has the precise parts: the time
 * outside the sampling call (process, device, model, PNG, exit) and the
 * time in clBuildProgram. */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct cli_run {
    double wall, median_step, sampling, build_s;
    int steps, built, cached, ok;
} cli_run;

static void run_cli_sample(const char *cmd, const char *err_path, cli_run *r)
{
    double el[1024];
    int n = 0, total = 0, step;
    memset(r, 0, sizeof *r);
    double t0 = cli_now_s();
    FILE *f = popen(cmd, "r");
    char line[512];
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        double e;
        if (sscanf(line, "{\"step\": %d, \"total\": %d, \"elapsed\": %lf", &step, &total, &e) == 3 &&
            n < 1024)
            el[n++] = e;
    }
    int rc = pclose(f);
    r->wall = cli_now_s() - t0;
    if (rc != 0 || n < 3 || n != total) return;
    /* step k's time (k >= 2); the first step carries the first launches */
    double d[1024];
    for (int k = 1; k < n; k++) d[k - 1] = el[k] - el[k - 1];
    qsort(d, (size_t)(n - 1), sizeof *d, cmp_double);
    r->median_step = d[(n - 1) / 2];
    r->steps = n;
    FILE *e = fopen(err_path, "r");
    while (e && fgets(line, sizeof line, e)) {
        const char *k = strstr(line, "kernels: "), *smp = strstr(line, " samples in ");
        if (k && smp && sscanf(smp, " samples in %lf", &r->sampling) == 1 &&
            sscanf(k, "kernels: %d programs compiled, %d from the cache, %lf s", &r->built, &r->cached,
                   &r->build_s) == 3)
            r->ok = 1;
    }
    if (e) fclose(e);
}

static void bench_cli_start(const char *device)
{
    row *rr[2][2] = {
        {add_row("sample_cold_overhead", "cld-sample default command, cold caches: all but sampling", "s", 0),
         add_row("sample_cold_total", "cld-sample default command, cold caches: wall", "s", 0)},
        {add_row("sample_warm_overhead", "cld-sample default command, warm caches: all but sampling", "s", 0),
         add_row("sample_warm_total", "cld-sample default command, warm caches: wall", "s", 0)}};
    char exe[4096], dir[] = "/tmp/cld-bench-XXXXXX", sub[4200], err[64], cmd[8400];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0 || !mkdtemp(dir)) {
        for (int i = 0; i < 4; i++) set_fail(rr[i / 2][i % 2], CLD_ERR_IO);
        return;
    }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(sub, sizeof sub, "%s/cld", dir);
    setenv("CLD_CACHE_DIR", sub, 1);
    snprintf(sub, sizeof sub, "%s/pocl", dir);
    setenv("POCL_CACHE_DIR", sub, 1);
    unsetenv("CLD_CACHE");
    snprintf(err, sizeof err, "%s/stderr.txt", dir);
    snprintf(cmd, sizeof cmd, "'%s/cld-sample' --progress json --out '%s/samples.png'%s%s%s 2>'%s'", exe, dir,
             device ? " --device '" : "", device ? device : "", device ? "'" : "", err);
    int failed = 0;
    for (int pass = 0; pass < 2; pass++) {
        cli_run r;
        run_cli_sample(cmd, err, &r);
        if (!r.ok) {
            failed = 1;
            for (int j = 0; j < 2; j++) {
                if (!rr[pass][j]) continue;
                snprintf(rr[pass][j]->note, sizeof rr[pass][j]->note,
                         "cld-sample failed or printed no timings (no bundled model? CLD_ASSETS); "
                         "its stderr: %s",
                         err);
                n_failed++;
            }
            continue;
        }
        set_value(rr[pass][0], r.wall - r.steps * r.median_step);
        set_value(rr[pass][1], r.wall);
        if (rr[pass][0])
            snprintf(rr[pass][0]->note, sizeof rr[pass][0]->note,
                     "%s caches: wall %.2f s - %d steps x median %.3f s; outside sampling %.2f s; in "
                     "clBuildProgram %.2f s: %d programs built, %d from our cache",
                     pass ? "warm" : "empty", r.wall, r.steps, r.median_step, r.wall - r.sampling, r.build_s,
                     r.built, r.cached);
    }
    unsetenv("CLD_CACHE_DIR");
    unsetenv("POCL_CACHE_DIR");
    if (!failed) nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ------------------------------------------------------------ output */
static void print_json(FILE *f, const cld_device_info *info, int quick)
{
    fprintf(f, "{\n \"meta\": {\"engine\": \"cldiffusion\", \"version\": \"%s\", \"device\": ",
            CLD_VERSION_STRING);
    char dev[300];
    snprintf(dev, sizeof dev, "%s / %s", info->platform_name, info->name);
    cli_json_str(f, dev);
    fprintf(f, ", \"compute_units\": %u, \"quick\": %s},\n \"rows\": [", info->compute_units,
            quick ? "true" : "false");
    for (int i = 0; i < n_rows; i++) {
        const row *r = &rows[i];
        fprintf(f, "%s\n  {\"key\": ", i ? "," : "");
        cli_json_str(f, r->key);
        fprintf(f, ", \"label\": ");
        cli_json_str(f, r->label);
        fprintf(f, ", \"unit\": ");
        cli_json_str(f, r->unit);
        if (r->has_value)
            fprintf(f, ", \"value\": %.6g", r->value);
        else
            fprintf(f, ", \"value\": null");
        fprintf(f, ", \"higher_is_better\": %s, \"note\": ", r->higher_is_better ? "true" : "false");
        cli_json_str(f, r->note);
        fprintf(f, "}");
    }
    fprintf(f, "\n ]\n}\n");
}

static void print_table(FILE *f)
{
    for (int i = 0; i < n_rows; i++) {
        const row *r = &rows[i];
        if (r->has_value)
            fprintf(f, "%-58s %12.3f %s\n", r->label, r->value, r->unit);
        else
            fprintf(f, "%-58s %12s %s  (%s)\n", r->label, "n/a", r->unit, r->note);
    }
    for (int i = 0, head = 0; i < n_rows; i++) {
        if (!rows[i].has_value || !rows[i].note[0]) continue;
        if (!head++) fprintf(f, "notes:\n");
        fprintf(f, "- %s: %s\n", rows[i].key, rows[i].note);
    }
}

static int has_group(const char *only, const char *name)
{
    if (!only || !*only) return 1;
    size_t n = strlen(name);
    for (const char *p = only; (p = strstr(p, name)) != NULL; p += n) {
        int start = p == only || p[-1] == ',';
        int end = p[n] == 0 || p[n] == ',';
        if (start && end) return 1;
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [--device SPEC] [--quick] [--json] [--only GROUPS]\n"
            "  Engine performance rows: GEMM and conv GFLOPS, UNet forward and training\n"
            "  images/s, sampling time, cold/warm start, planned peak memory.\n"
            "  --device SPEC  OpenCL device (index or name substring; default $CLD_DEVICE)\n"
            "  --quick        fewer iterations\n"
            "  --json         JSON instead of a table (same keys as bench/torch_reference.py)\n"
            "  --only GROUPS  comma list of gemm,conv,unet,sample,start,mem,train; cli-start: only the\n"
            "                 cold/warm rows of the default cld-sample command (next to cld-bench);\n"
            "                 train: the UNet step of the shipped Fashion-MNIST config (s)\n"
            "                 (bench/run.sh adds cld-train's whole step)\n"
            "  --workload a|b|s, --batch N   UNet rows of one workload / at another batch\n"
            "                 (for profiling; the rows then differ from PyTorch's)\n",
            prog);
}

int main(int argc, char **argv)
{
    const char *device = NULL, *only = NULL, *batch_arg = NULL;
    int quick = 0, json = 0, probe = 0;
    for (int i = 1; i < argc; i++) {
        int m;
        if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--startup-probe")) {
            probe = 1;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return CLI_EXIT_OK;
        } else if ((m = cli_opt_value(argc, argv, &i, "--device", &device)) != 0) {
            if (m < 0) return CLI_EXIT_USAGE;
        } else if ((m = cli_opt_value(argc, argv, &i, "--only", &only)) != 0) {
            if (m < 0) return CLI_EXIT_USAGE;
        } else if ((m = cli_opt_value(argc, argv, &i, "--workload", &only_workload)) != 0) {
            if (m < 0) return CLI_EXIT_USAGE;
        } else if ((m = cli_opt_value(argc, argv, &i, "--batch", &batch_arg)) != 0) {
            if (m < 0) return CLI_EXIT_USAGE;
            batch_override = atoi(batch_arg);
            if (batch_override < 1) {
                fprintf(stderr, "%s: --batch needs a positive integer\n", prog);
                return CLI_EXIT_USAGE;
            }
        } else {
            fprintf(stderr, "%s: unknown argument '%s'\n", prog, argv[i]);
            usage(stderr);
            return CLI_EXIT_USAGE;
        }
    }
    if (probe) return startup_probe(device);

    cld_ctx *ctx = NULL;
    cld_status s = cli_ctx_create(device, json ? stderr : stdout, &ctx);
    if (s != CLD_OK) return cli_fail(prog, "creating the context", s);
    cld_device_info info;
    s = cld_ctx_device_info(ctx, &info);
    if (s != CLD_OK) {
        cld_ctx_free(ctx);
        return cli_fail(prog, "device info", s);
    }
    if (has_group(only, "gemm")) bench_gemm(ctx, quick);
    if (has_group(only, "conv")) bench_conv(ctx, quick);
    if (has_group(only, "unet") || has_group(only, "mem"))
        bench_unet(ctx, quick, has_group(only, "unet"), has_group(only, "mem"), 0);
    if (has_group(only, "train")) bench_unet(ctx, quick, 1, 0, 1);
    if (has_group(only, "sample")) bench_sample(ctx);
    cld_ctx_free(ctx);
    if (has_group(only, "start")) bench_start(device);
    if (has_group(only, "start") || has_group(only, "cli-start")) bench_cli_start(device);

    if (json)
        print_json(stdout, &info, quick);
    else
        print_table(stdout);
    return n_failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}
