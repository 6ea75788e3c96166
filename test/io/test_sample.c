/* Sampling from model files (sample.h) and the cld-sample program.
 *
 * Models here are tiny random UNets (8x8x1, 3 classes, T = 100) written by
 * the test itself, so nothing depends on a trained model. Mechanisms with
 * an exact answer (SDEdit's start, RePaint's known pixels, trajectories)
 * are checked with a mock model function against host references; the real
 * UNet path for determinism and batch independence; the program for its
 * options, errors, byte-identical output and --replay. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "graph/internal.h"
#include "apptest.h"
#include "testutil.h"

#define T_STEPS 100

/* ------------------------------------------------------------ helpers */

static cld_unet_config tiny_config(int classes, int out_channels)
{
    cld_unet_config c;
    memset(&c, 0, sizeof c);
    c.in_channels = 1;
    c.out_channels = out_channels;
    c.image_size = 8;
    c.base_channels = 8;
    c.n_levels = 2;
    c.mult[0] = 1;
    c.mult[1] = 2;
    c.num_res_blocks = 1;
    c.n_attn = 1;
    c.attn_res[0] = 4;
    c.heads = 1;
    c.norm_groups = 4;
    c.num_classes = classes;
    return c;
}

/* A random tiny model file: every parameter N(0, 0.3^2); `nan` puts a NaN
 * into the output convolution's bias. */
static void make_model(const char *path, int classes, int out_channels, int nan)
{
    cld_model_meta m;
    memset(&m, 0, sizeof m);
    m.unet = tiny_config(classes, out_channels);
    m.diffusion.schedule = CLD_SCHEDULE_COSINE;
    m.diffusion.T = T_STEPS;
    m.diffusion.pred = CLD_PRED_V;
    m.diffusion.learned_variance = out_channels == 2;
    const char *names[3] = {"alpha", "beta", "gamma"};
    for (int k = 0; k < classes && k < 3; k++) strcpy(m.class_names[k], names[k]);
    m.n_class_names = classes;
    cld_params *p = tu_random_unet_params(&m.unet, 1000, 0.3f, nan ? AT_NAN_MARKER : 0);
    char *json;
    TU_OK(cld_model_meta_to_json(&m, &json));
    TU_OK(cld_params_save(p, path, json));
    if (nan) at_poison_float(path, AT_NAN_MARKER);
    free(json);
    cld_params_free(p);
}

/* A tiny model file in a fresh folder, loaded. */
typedef struct fixture {
    char *dir, *path;
    cld_model *m;
} fixture;

static fixture open_tiny(int classes, int out_channels, int nan)
{
    fixture f;
    f.dir = tu_mkdtemp("cld-sample");
    f.path = at_path(f.dir, "m.safetensors");
    make_model(f.path, classes, out_channels, nan);
    TU_OK(cld_model_load(tu_ctx(), f.path, &f.m));
    return f;
}

static void close_tiny(fixture *f)
{
    cld_model_free(f->m);
    tu_rm_rf(f->dir);
    free(f->dir);
    free(f->path);
}

/* A spec for the tiny model: n samples cycling over 3 classes, guidance 2. */
static int g_labels[64];
static cld_sample_spec tiny_spec(cld_sampler_kind kind, int steps, int n, int batch)
{
    cld_sample_spec sp;
    TU_OK(cld_sample_spec_default(&sp));
    TU_OK(cld_sampler_opts_default(kind, &sp.opts));
    sp.opts.steps = steps;
    sp.opts.guidance = 2.0;
    for (int i = 0; i < 64; i++) g_labels[i] = i % 3;
    sp.labels = g_labels;
    sp.n = n;
    sp.batch = batch;
    sp.seed = 77;
    return sp;
}

/* A model function with a known answer: predicts x_0 = `value` everywhere
 * and records what it was called with. */
#define MOCK_CALLS 256
typedef struct mock {
    size_t per;
    float value;
    int calls;
    float t[MOCK_CALLS];
    int n[MOCK_CALLS];
    float *x[MOCK_CALLS];
} mock;

static cld_status mock_fn(void *user, cl_mem x, size_t x_off, cl_mem out, size_t out_off, int n,
                          const float *t, const int *labels)
{
    (void)labels;
    mock *m = user;
    cld_ctx *ctx = tu_ctx();
    size_t cnt = (size_t)n * m->per;
    float *v = tu_malloc(cnt * sizeof *v);
    TU_OK(cld_buffer_read(ctx, x, x_off * sizeof(float), cnt * sizeof(float), v));
    if (m->calls < MOCK_CALLS) {
        m->t[m->calls] = t[0];
        m->n[m->calls] = n;
        m->x[m->calls] = v;
    } else {
        free(v);
    }
    m->calls++;
    float *o = tu_malloc(cnt * sizeof *o);
    for (size_t i = 0; i < cnt; i++) o[i] = m->value;
    TU_OK(cld_buffer_write(ctx, out, out_off * sizeof(float), cnt * sizeof(float), o));
    free(o);
    return CLD_OK;
}

static void mock_free(mock *m)
{
    for (int i = 0; i < m->calls && i < MOCK_CALLS; i++) free(m->x[i]);
}

/* --------------------------------------------------------- library */

START_TEST(test_file_hash_and_assets)
{
    char *dir = tu_mkdtemp("cld-sample"), *f = at_path(dir, "h.bin");
    const char *text[3] = {"", "a", "foobar"};
    const uint64_t want[3] = {0xcbf29ce484222325ull, 0xaf63dc4c8601ec8cull,
                              0x85944171f73967e8ull}; /* FNV-1a 64 */
    for (int i = 0; i < 3; i++) {
        uint64_t h = 0;
        at_write_file(f, text[i], strlen(text[i]));
        TU_OK(cld_file_hash(f, &h));
        ck_assert_msg(h == want[i], "fnv1a64('%s') = %016llx, want %016llx", text[i], (unsigned long long)h,
                      (unsigned long long)want[i]);
    }
    uint64_t h;
    TU_STATUS(cld_file_hash("/nonexistent/x", &h), CLD_ERR_IO);

    char *asset = at_path(dir, "thing.safetensors"), buf[4096];
    at_write_file(asset, "x", 1);
    setenv("CLD_ASSETS", dir, 1);
    TU_OK(cld_asset_path("thing.safetensors", buf, sizeof buf));
    ck_assert_str_eq(buf, asset);
    TU_STATUS(cld_asset_path("none.safetensors", buf, sizeof buf), CLD_ERR_IO);
    ck_assert_msg(strstr(cld_last_error(), dir) && strstr(cld_last_error(), "CLD_ASSETS"), "%s",
                  cld_last_error());
    TU_STATUS(cld_asset_path("thing.safetensors", buf, 4), CLD_ERR_INVALID_ARG);
    unsetenv("CLD_ASSETS");
    tu_rm_rf(dir);
    free(dir);
    free(f);
    free(asset);
}
END_TEST

START_TEST(test_model_load)
{
    cld_ctx *ctx = tu_ctx();
    char *dir = tu_mkdtemp("cld-sample"), *path = at_path(dir, "m.safetensors"),
         *bad = at_path(dir, "bad.safetensors");
    make_model(path, 3, 1, 0);
    cld_model *m;
    TU_OK(cld_model_load(ctx, path, &m));
    ck_assert_int_eq(m->meta.unet.num_classes, 3);
    ck_assert_int_eq(m->meta.diffusion.T, T_STEPS);
    ck_assert_int_eq((int)m->per_sample, 64);
    uint64_t h;
    TU_OK(cld_file_hash(path, &h));
    ck_assert(h == m->hash);
    ck_assert_msg(m->plan_bytes[1] > m->plan_bytes[0], "plans %zu, %zu", m->plan_bytes[0], m->plan_bytes[1]);
    int k = -1;
    TU_OK(cld_model_class_parse(m, "beta", &k));
    ck_assert_int_eq(k, 1);
    TU_OK(cld_model_class_parse(m, "GAMMA", &k));
    ck_assert_int_eq(k, 2);
    TU_OK(cld_model_class_parse(m, "0", &k));
    ck_assert_int_eq(k, 0);
    TU_STATUS(cld_model_class_parse(m, "3", &k), CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_model_class_parse(m, "delta", &k), CLD_ERR_INVALID_ARG);
    ck_assert_msg(strstr(cld_last_error(), "'delta'") && strstr(cld_last_error(), "'gamma'"), "%s",
                  cld_last_error());
    /* a model loaded for sampling holds its values only: no gradient or AdamW buffers (a quarter of
     * a trained store), even after sampling */
    cld_sample_spec sp;
    cld_sample_spec_default(&sp);
    TU_OK(cld_sampler_opts_default(CLD_SAMPLER_DDIM, &sp.opts));
    sp.opts.steps = 2;
    sp.n = sp.batch = 1;
    float img[64];
    TU_OK(cld_model_sample(m, &sp, img));
    cl_mem vals = NULL;
    TU_OK(cld_params_buffers(m->params, &vals, NULL));
    ck_assert(vals != NULL);
    ck_assert_msg(!cld__params_has_train(m->params), "a sampled model allocated gradient buffers");
    cld_model_free(m);

    /* missing, truncated, random, and a safetensors file that is no model */
    TU_STATUS(cld_model_load(ctx, "/nonexistent/m.safetensors", &m), CLD_ERR_IO);
    ck_assert(m == NULL);
    size_t len = 0;
    unsigned char *bytes = at_read_file(path, &len);
    at_write_file(bad, bytes, len / 2);
    TU_STATUS(cld_model_load(ctx, bad, &m), CLD_ERR_FORMAT);
    ck_assert_msg(strstr(cld_last_error(), bad), "%s", cld_last_error());
    at_write_file(bad, "this is not a model at all, just some text", 42);
    TU_STATUS(cld_model_load(ctx, bad, &m), CLD_ERR_FORMAT);
    cld_params *p;
    TU_OK(cld_params_create(ctx, &p));
    int one = 4;
    TU_OK(cld_params_declare(p, "w", 1, &one, CLD_INIT_ONE, 0, NULL));
    TU_OK(cld_params_alloc(p));
    TU_OK(cld_params_save(p, bad, "{\"note\": \"weights only\"}"));
    TU_STATUS(cld_model_load(ctx, bad, &m), CLD_ERR_FORMAT);
    ck_assert_msg(strstr(cld_last_error(), "cld.format"), "%s", cld_last_error());
    cld_params_free(p);
    free(bytes);
    tu_rm_rf(dir);
    free(dir);
    free(path);
    free(bad);
}
END_TEST

/* The batch split: the plan's extrapolation is an upper bound of a real
 * runner's plan, a batch that cannot fit is refused, a fitted one fits. */
START_TEST(test_batch_memory)
{
    cld_ctx *ctx = tu_ctx();
    fixture f = open_tiny(3, 1, 0);
    cld_model *m = f.m;
    cld_batch_memory mem;
    TU_OK(cld_model_batch_memory(m, 9, 1, &mem));
    cld_unet_runner *r;
    size_t real;
    TU_OK(cld_unet_runner_create(ctx, m->params, &m->meta.unet, 18, &r));
    TU_OK(cld_unet_runner_bytes(r, &real));
    size_t real_largest;
    TU_OK(cld_unet_runner_largest(r, &real_largest));
    cld_unet_runner_free(r);
    ck_assert_msg(real <= mem.arena_bytes, "runner at batch 18 plans %zu bytes, the estimate says %zu", real,
                  mem.arena_bytes);
    ck_assert_msg(real_largest <= mem.largest_bytes && mem.largest_bytes < mem.arena_bytes,
                  "largest block: runner %zu, estimate %zu, arena %zu", real_largest, mem.largest_bytes,
                  mem.arena_bytes);
    /* the arena is split into chunks: a device whose max allocation is under the arena but over
     * the largest block takes the batch */
    char lim[32];
    snprintf(lim, sizeof lim, "%zu", (mem.largest_bytes + mem.arena_bytes) / 2);
    setenv("CLD_MAX_ALLOC", lim, 1);
    cld_ctx *small;
    TU_OK(cld_ctx_create(NULL, &small));
    cld_model *ms;
    TU_OK(cld_model_load(small, f.path, &ms));
    TU_OK(cld_model_check_batch(ms, 9, 1));
    cld_batch_memory mem2;
    TU_OK(cld_model_batch_memory(ms, 9, 1, &mem2));
    ck_assert_uint_lt(mem2.max_alloc_bytes, mem2.arena_bytes);
    cld_model_free(ms);
    cld_ctx_free(small);
    unsetenv("CLD_MAX_ALLOC");
    ck_assert_msg(mem.arena_bytes < 2 * real, "estimate %zu is far above the plan %zu", mem.arena_bytes,
                  real);
    TU_STATUS(cld_model_check_batch(m, 1000000, 1), CLD_ERR_NOMEM);
    ck_assert_msg(strstr(cld_last_error(), "1000000 samples") && strstr(cld_last_error(), "MiB"), "%s",
                  cld_last_error());
    int b = 0;
    TU_OK(cld_model_fit_batch(m, 1, 5, &b));
    ck_assert_int_eq(b, 5);
    TU_OK(cld_model_fit_batch(m, 1, 1000000, &b));
    ck_assert_msg(b > 5 && b < 1000000, "fit %d", b);
    TU_OK(cld_model_check_batch(m, b, 1));
    TU_STATUS(cld_model_check_batch(m, b + 1, 1), CLD_ERR_NOMEM);
    close_tiny(&f);
}
END_TEST

/* Same seed: the same floats and the same PNG bytes; a sample is the same
 * alone, in a batch of 7 (position 3), in runs of 3, and in a batch of 20. */
START_TEST(test_deterministic_and_batch_independent)
{
    fixture f = open_tiny(3, 1, 0);
    cld_model *m = f.m;
    char *p1 = at_path(f.dir, "a.png"), *p2 = at_path(f.dir, "b.png");
    const cld_sampler_kind kinds[3] = {CLD_SAMPLER_DPMPP_2M, CLD_SAMPLER_EULER_A, CLD_SAMPLER_DDPM};
    const size_t per = m->per_sample;
    float *a = tu_malloc(7 * per * sizeof(float)), *b = tu_malloc(7 * per * sizeof(float)),
          *one = tu_malloc(per * sizeof(float));
    for (int k = 0; k < 3; k++) {
        cld_sample_spec sp = tiny_spec(kinds[k], 6, 7, 7);
        TU_OK(cld_model_sample(m, &sp, a));
        TU_OK(cld_model_sample(m, &sp, b));
        ck_assert_msg(memcmp(a, b, 7 * per * sizeof(float)) == 0, "%s: two runs differ",
                      cld_sampler_name(kinds[k]));
        sp.batch = 3;
        TU_OK(cld_model_sample(m, &sp, b));
        double worst = tu_max_abs_err(b, a, 7 * per, NULL);
        ck_assert_msg(worst == 0.0, "%s: runs of 3 vs one of 7: max difference %g",
                      cld_sampler_name(kinds[k]), worst);
        cld_sample_spec s1 = sp;
        s1.n = 1;
        s1.batch = 1;
        s1.first_index = 3;
        s1.labels = &g_labels[3];
        TU_OK(cld_model_sample(m, &s1, one));
        worst = tu_max_abs_err(one, a + 3 * per, per, NULL);
        ck_assert_msg(worst == 0.0, "%s: sample 3 alone vs in a batch of 7: max difference %g",
                      cld_sampler_name(kinds[k]), worst);
        if (k == 0) { /* a batch of 20, 40 UNet rows with guidance: past every GEMM size threshold */
            float *big = tu_malloc(20 * per * sizeof(float));
            cld_sample_spec s20 = sp;
            s20.n = 20;
            s20.batch = 20;
            TU_OK(cld_model_sample(m, &s20, big));
            worst = tu_max_abs_err(one, big + 3 * per, per, NULL);
            ck_assert_msg(worst == 0.0, "%s: sample 3 alone vs in a batch of 20: max difference %g",
                          cld_sampler_name(kinds[k]), worst);
            free(big);
        }
        for (size_t i = 0; i < 7 * per; i++) ck_assert(isfinite(a[i]));
        sp.seed++;
        TU_OK(cld_model_sample(m, &sp, b));
        ck_assert_msg(tu_max_abs_err(b, a, 7 * per, NULL) > 0.01, "another seed gives the same samples");
    }
    /* PNG bytes */
    uint8_t *px;
    int w, h;
    TU_OK(cld_grid_pixels(a, 7, 1, 8, 3, 2, &px, &w, &h));
    const char *keys[1] = {CLD_RECIPE_KEY}, *vals[1] = {"{}"};
    TU_OK(cld_png_write(p1, w, h, 1, 8, px, 1, keys, vals));
    free(px);
    cld_sample_spec sp = tiny_spec(CLD_SAMPLER_DDPM, 6, 7, 7);
    sp.seed = 77; /* the seed of `a` */
    TU_OK(cld_model_sample(m, &sp, b));
    TU_OK(cld_grid_pixels(b, 7, 1, 8, 3, 2, &px, &w, &h));
    TU_OK(cld_png_write(p2, w, h, 1, 8, px, 1, keys, vals));
    free(px);
    at_files_equal(p1, p2);
    free(a);
    free(b);
    free(one);
    close_tiny(&f);
    free(p1);
    free(p2);
}
END_TEST

/* NaN weights: an error naming the sample, never a result. */
START_TEST(test_nonfinite_is_an_error)
{
    fixture f = open_tiny(3, 1, 1);
    float *out = tu_malloc(4 * f.m->per_sample * sizeof(float));
    cld_sample_spec sp = tiny_spec(CLD_SAMPLER_DPMPP_2M, 3, 4, 4);
    TU_STATUS(cld_model_sample(f.m, &sp, out), CLD_ERR_STATE);
    ck_assert_msg(strstr(cld_last_error(), "NaN") && strstr(cld_last_error(), "sample 0"), "%s",
                  cld_last_error());
    close_tiny(&f);
    /* guidance and labels on a model without classes */
    f = open_tiny(0, 1, 0);
    TU_STATUS(cld_model_sample(f.m, &sp, out), CLD_ERR_INVALID_ARG);
    sp.labels = NULL;
    TU_STATUS(cld_model_sample(f.m, &sp, out), CLD_ERR_INVALID_ARG);
    ck_assert_msg(strstr(cld_last_error(), "guidance"), "%s", cld_last_error());
    sp.opts.guidance = 1.0;
    TU_OK(cld_model_sample(f.m, &sp, out));
    free(out);
    close_tiny(&f);
}
END_TEST

/* A learned-variance model (twice the output channels): DDIM takes the
 * prediction half (against a model whose weights are that half), DDPM
 * the learned variance (against cld_sampler_run_learned_var). */
START_TEST(test_learned_variance_model)
{
    cld_ctx *ctx = tu_ctx();
    fixture f = open_tiny(3, 2, 0);
    cld_model *m = f.m;
    float *out = tu_malloc(5 * m->per_sample * sizeof(float)),
          *ref = tu_malloc(5 * m->per_sample * sizeof(float));
    cld_sample_spec sp = tiny_spec(CLD_SAMPLER_DDIM, 4, 5, 5);
    TU_OK(cld_model_sample(m, &sp, out));
    /* the reference: keep only output channel 0 of conv_out in a 1-channel model */
    cld_unet_config c1 = tiny_config(3, 1);
    cld_params *p1;
    cld_unet_runner *r1;
    TU_OK(cld_params_create(ctx, &p1));
    TU_OK(cld_unet_runner_create(ctx, p1, &c1, 10, &r1));
    int count = 0;
    TU_OK(cld_params_count(p1, &count, NULL));
    for (int i = 0; i < count; i++) {
        const char *name;
        int nd, shape[CLD_MAX_DIMS], j;
        TU_OK(cld_params_info(p1, i, &name, &nd, shape, NULL));
        TU_OK(cld_params_find(m->params, name, &j));
        size_t n = 1;
        for (int d = 0; d < nd; d++) n *= (size_t)shape[d];
        float *v = tu_malloc(2 * n * sizeof *v); /* conv_out's first n floats are output channel 0 */
        TU_OK(cld_params_read(m->params, j, v));
        TU_OK(cld_params_write(p1, i, v));
        free(v);
    }
    cld_sample_spec s1 = sp;
    s1.opts.pred = m->meta.diffusion.pred;
    s1.opts.null_label = 3;
    TU_OK(cld_sample_with(ctx, m->schedule, cld_unet_runner_fn, r1, 1, 8, &s1, ref));
    ck_assert_msg(memcmp(out, ref, 5 * m->per_sample * sizeof(float)) == 0, "max difference %g",
                  tu_max_abs_err(out, ref, 5 * m->per_sample, NULL));

    sp.opts.kind = CLD_SAMPLER_DDPM;
    TU_OK(cld_model_sample(m, &sp, out));
    cld_sample_job job;
    memset(&job, 0, sizeof job);
    job.n = 5;
    job.per_sample = m->per_sample;
    job.labels = sp.labels;
    job.seed = sp.seed;
    TU_OK(cld_buffer_alloc(ctx, 5 * m->per_sample * sizeof(float), &job.out));
    job.model = cld_unet_runner_fn;
    job.model_user = m->runner;
    s1.opts.kind = CLD_SAMPLER_DDPM;
    TU_OK(cld_sampler_run_learned_var(ctx, m->schedule, &s1.opts, &job));
    TU_OK(cld_buffer_read(ctx, job.out, 0, 5 * m->per_sample * sizeof(float), ref));
    cld_buffer_release(job.out);
    ck_assert_msg(memcmp(out, ref, 5 * m->per_sample * sizeof(float)) == 0, "ddpm: max difference %g",
                  tu_max_abs_err(out, ref, 5 * m->per_sample, NULL));
    cld_unet_runner_free(r1);
    cld_params_free(p1);
    free(out);
    free(ref);
    close_tiny(&f);
}
END_TEST

static float *random_init(void)
{
    float *init = tu_malloc(64 * sizeof(float));
    tu_fill_uniform(init, 64, 5, -1.0f, 1.0f);
    return init;
}

/* SDEdit: the model first sees the init noised to timestep
 * round(strength T) - 1 with noise step 0, and round(strength steps) steps run. */
START_TEST(test_sdedit_start)
{
    cld_ctx *ctx = tu_ctx();
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_COSINE, T_STEPS, 0, 0, 0, &s));
    float *init = random_init(), out[3 * 64], z[3 * 64];
    mock mk = {64, 0.25f, 0, {0}, {0}, {0}};
    cld_sample_spec sp = tiny_spec(CLD_SAMPLER_DDIM, 10, 3, 3);
    sp.opts.pred = CLD_PRED_X0;
    sp.opts.guidance = 1.0;
    sp.init = init;
    sp.strength = 0.42;
    sp.first_index = 11;
    TU_OK(cld_sample_with(ctx, s, mock_fn, &mk, 1, 8, &sp, out));
    const int t0 = 41;             /* round(0.42 * 100) - 1 */
    ck_assert_int_eq(mk.calls, 4); /* round(0.42 * 10) */
    ck_assert_msg(mk.t[0] == (float)t0, "first timestep %g, want %d", mk.t[0], t0);
    for (int i = 1; i < mk.calls; i++) ck_assert(mk.t[i] < mk.t[i - 1]);
    cld_noise_key key = {sp.seed, CLD_NOISE_STREAM_SAMPLER, 11, 0};
    TU_OK(cld_noise_host(&key, 3, 64, z));
    const double a = sqrt(s->alpha_bar[t0]), b = sqrt(1.0 - s->alpha_bar[t0]);
    double worst = 0;
    for (int i = 0; i < 3 * 64; i++) worst = fmax(worst, fabs(mk.x[0][i] - (a * init[i % 64] + b * z[i])));
    ck_assert_msg(worst < 1e-6, "start differs from a x0 + b z by %g", worst);
    for (int i = 0; i < 3 * 64; i++) ck_assert(fabsf(out[i] - 0.25f) < 1e-6f); /* D = 0.25 at the clean end */
    mock_free(&mk);
    free(init);
    cld_schedule_free(s);
}
END_TEST

START_TEST(test_repaint_schedule)
{
    int pt[64], n = 0;
    const int want1[] = {0, 1, 0, 1, 2, 1, 2, 3, 2, 3, 4};
    TU_OK(cld_repaint_schedule(4, 1, 2, pt, 64, &n));
    ck_assert_int_eq(n, 11);
    for (int i = 0; i < n; i++) ck_assert_int_eq(pt[i], want1[i]);
    const int want2[] = {0, 1, 2, 1, 0, 1, 2, 3, 4, 3, 2, 3, 4, 5, 6};
    TU_OK(cld_repaint_schedule(6, 2, 2, pt, 64, &n));
    ck_assert_int_eq(n, 15);
    for (int i = 0; i < n; i++) ck_assert_int_eq(pt[i], want2[i]);
    TU_OK(cld_repaint_schedule(5, 1, 1, pt, 64, &n));
    ck_assert_int_eq(n, 6);
    TU_STATUS(cld_repaint_schedule(4, 1, 3, pt, 5, &n), CLD_ERR_INVALID_ARG);
    ck_assert_int_eq(n, 1 + 4 + 2 * 2 * 3);
}
END_TEST

/* RePaint: after every step the model sees the known pixels as the init
 * noised to that step's level (noise stream KNOWN), the result keeps them
 * exactly, the regenerated pixels follow the model; the model sees the
 * timesteps of the jump schedule. */
START_TEST(test_repaint_known_pixels)
{
    cld_ctx *ctx = tu_ctx();
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_COSINE, T_STEPS, 0, 0, 0, &s));
    float *init = random_init(), mask[64], out[2 * 64], z[2 * 64];
    for (int p = 0; p < 64; p++) mask[p] = (p % 8) < 4 ? 1.0f : 0.0f; /* regenerate the left half */
    mock mk = {64, 0.3f, 0, {0}, {0}, {0}};
    cld_sample_spec sp = tiny_spec(CLD_SAMPLER_DDPM, 5, 2, 2);
    sp.opts.pred = CLD_PRED_X0;
    sp.opts.guidance = 1.0;
    sp.init = init;
    sp.mask = mask;
    sp.resample = 2;
    sp.first_index = 4;
    TU_OK(cld_sample_with(ctx, s, mock_fn, &mk, 1, 8, &sp, out));
    int seq[64], len;
    TU_OK(cld_repaint_schedule(5, 1, 2, seq, 64, &len));
    cld_sampler_point pts[6];
    TU_OK(cld_sampler_points(s, &sp.opts, pts, NULL));
    int forward = 0;
    for (int k = 1; k < len; k++) {
        if (seq[k] < seq[k - 1]) continue;
        ck_assert_msg(forward < mk.calls && mk.t[forward] == (float)pts[seq[k - 1]].t,
                      "call %d at t %g, want %g", forward, mk.t[forward], pts[seq[k - 1]].t);
        /* a call right after a step (not after a jump) sees the known pixels at that step's level */
        if (k >= 2 && seq[k - 1] > seq[k - 2]) {
            const cld_sampler_point *P = &pts[seq[k - 1]];
            cld_noise_key key = {sp.seed, CLD_NOISE_STREAM_KNOWN, 4, (uint32_t)(k - 1)};
            TU_OK(cld_noise_host(&key, 2, 64, z));
            for (int i = 0; i < 2 * 64; i++)
                if (mask[i % 64] == 0.0f) {
                    double want = P->a * init[i % 64] + P->b * z[i];
                    ck_assert_msg(fabs(mk.x[forward][i] - want) < 1e-6, "pass %d, pixel %d: %g, want %g", k,
                                  i, mk.x[forward][i], want);
                }
        }
        forward++;
    }
    ck_assert_int_eq(mk.calls, forward);
    ck_assert_int_eq(forward, 5 + 4); /* 5 steps, each of the 4 jumps redoes one */
    for (int i = 0; i < 2 * 64; i++) {
        float want = mask[i % 64] == 0.0f ? init[i % 64] : 0.3f;
        ck_assert_msg(out[i] == want, "pixel %d: %g, want %g", i, out[i], want);
    }
    mock_free(&mk);
    sp.opts.kind = CLD_SAMPLER_DPMPP_2M;
    TU_STATUS(cld_sample_with(ctx, s, mock_fn, &mk, 1, 8, &sp, out), CLD_ERR_INVALID_ARG);
    free(init);
    cld_schedule_free(s);
}
END_TEST

/* Trajectory: frame 0 is the start noise (bit for bit the host noise),
 * the last frame the result; also split over runs. */
START_TEST(test_trajectory)
{
    cld_ctx *ctx = tu_ctx();
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_COSINE, T_STEPS, 0, 0, 0, &s));
    mock mk = {64, -0.5f, 0, {0}, {0}, {0}};
    float out[5 * 64], traj[5 * 4 * 64], z[5 * 64];
    cld_sample_spec sp = tiny_spec(CLD_SAMPLER_EULER, 6, 5, 2);
    sp.opts.pred = CLD_PRED_X0;
    sp.frames = 4;
    sp.trajectory = traj;
    TU_OK(cld_sample_with(ctx, s, mock_fn, &mk, 1, 8, &sp, out));
    ck_assert_int_eq(mk.calls, 3 * 6);
    ck_assert_int_eq(mk.n[0], 4); /* guidance: 2 samples twice */
    cld_noise_key key = {sp.seed, CLD_NOISE_STREAM_SAMPLER, 0, 0};
    TU_OK(cld_noise_host(&key, 5, 64, z));
    for (int i = 0; i < 5; i++) {
        ck_assert(memcmp(traj + (size_t)(i * 4) * 64, z + i * 64, 64 * sizeof(float)) == 0);
        ck_assert(memcmp(traj + (size_t)(i * 4 + 3) * 64, out + i * 64, 64 * sizeof(float)) == 0);
        ck_assert(memcmp(traj + (size_t)(i * 4 + 1) * 64, traj + (size_t)(i * 4 + 2) * 64,
                         64 * sizeof(float)) != 0);
    }
    mock_free(&mk);
    sp.frames = 8; /* more frames than steps + 1 */
    TU_STATUS(cld_sample_with(ctx, s, mock_fn, &mk, 1, 8, &sp, out), CLD_ERR_INVALID_ARG);
    cld_schedule_free(s);
}
END_TEST

START_TEST(test_grid_and_recipe)
{
    float x[3 * 4] = {-1, 1, 0, 0.5f, -2, 2, -1, -1, 1, 1, 1, 1};
    uint8_t *px;
    int w, h;
    TU_OK(cld_grid_pixels(x, 3, 1, 2, 2, 1, &px, &w, &h));
    ck_assert_int_eq(w, 7);
    ck_assert_int_eq(h, 7);
    const uint8_t want[7 * 7] = {0, 0, 0,   0,   0, 0, 0, 0, 0, 255, 0, 0, 255, 0,   0, 128, 191,
                                 0, 0, 0,   0,   0, 0, 0, 0, 0, 0,   0, 0, 255, 255, 0, 0,   0,
                                 0, 0, 255, 255, 0, 0, 0, 0, 0, 0,   0, 0, 0,   0,   0};
    ck_assert(memcmp(px, want, sizeof want) == 0);
    free(px);
    TU_OK(cld_grid_pixels(x, 1, 1, 2, 1, 0, &px, &w, &h));
    ck_assert(w == 2 && h == 2 && px[0] == 0 && px[1] == 255 && px[2] == 128 && px[3] == 191);
    free(px);

    cld_recipe r, back;
    memset(&r, 0, sizeof r);
    strcpy(r.model, "m.safetensors");
    r.model_hash = 0xfedcba9876543210ull;
    r.sampler = CLD_SAMPLER_EULER_A;
    r.karras = 1;
    r.steps = 17;
    r.eta = 0.5;
    r.guidance = 2.5;
    r.seed = 9007199254740991ull;
    r.first_index = 12;
    r.n = 5;
    r.n_classes = 2;
    r.classes[0] = 2;
    r.classes[1] = 0;
    r.batch = 3;
    strcpy(r.layout, "single");
    strcpy(r.init, "in.png");
    r.init_hash = 1;
    r.strength = 0.6;
    strcpy(r.mask, "mask.png");
    r.mask_hash = 2;
    r.resample = 3;
    r.jump = 2;
    r.overrides.set = 0x1ff; /* every override kept */
    r.overrides.schedule = CLD_SCHEDULE_SCALED_LINEAR;
    r.overrides.T = 500;
    r.overrides.beta_start = 0.001;
    r.overrides.beta_end = 0.015;
    r.overrides.pred = CLD_PRED_X0;
    r.overrides.variance = CLD_VAR_BETA;
    r.overrides.clip_sample = 1.5;
    r.overrides.steps_offset = 1;
    r.overrides.set_alpha_to_one = 1;
    char *json;
    TU_OK(cld_recipe_to_json(&r, NULL, &json));
    TU_OK(cld_recipe_from_json(json, &back));
    r.spacing = CLD_SPACING_TRAILING;
    ck_assert_msg(memcmp(&r, &back, sizeof r) == 0, "recipe changed in a round trip: %s", json);
    char *bad = tu_malloc(strlen(json) + 16);
    strcpy(bad, json);
    char *f = strstr(bad, "cld-recipe 1");
    f[11] = '9';
    TU_STATUS(cld_recipe_from_json(bad, &back), CLD_ERR_FORMAT);
    ck_assert_msg(strstr(cld_last_error(), "cld-recipe 9"), "%s", cld_last_error());
    strcpy(bad, json);
    memcpy(strstr(bad, "\"steps\""), "\"stepz\"", 7);
    TU_STATUS(cld_recipe_from_json(bad, &back), CLD_ERR_FORMAT);
    ck_assert_msg(strstr(cld_last_error(), "'steps'"), "%s", cld_last_error());
    TU_STATUS(cld_recipe_from_json("{", &back), CLD_ERR_FORMAT);
    strcpy(bad, json);
    memcpy(strstr(bad, "\"beta_end\""), "\"beta_enf\"", 10);
    TU_STATUS(cld_recipe_from_json(bad, &back), CLD_ERR_FORMAT);
    ck_assert_msg(strstr(cld_last_error(), "unknown override 'beta_enf'"), "%s", cld_last_error());
    free(bad);
    free(json);
}
END_TEST

/* ------------------------------------------------------------- the app */

/* Run cld-sample ($CLD_SAMPLE, else the build folder) with `args` in `dir`. */
static int run_app(const char *dir, const char *args, char **out, char **err)
{
    return at_run(at_app("cld-sample", "CLD_SAMPLE"), dir, args, out, err);
}

/* A small grey (or RGB) PNG of random pixels, dir/name. */
static void write_image(const char *dir, const char *name, int size, int channels, uint64_t seed)
{
    uint8_t px[64 * 64 * 3];
    uint64_t st = seed;
    for (int i = 0; i < size * size * channels; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        px[i] = (uint8_t)(st >> 56);
    }
    char *path = at_path(dir, name);
    TU_OK(cld_png_write(path, size, size, channels, 8, px, 0, NULL, NULL));
    free(path);
}

START_TEST(test_app_errors)
{
    char *dir = tu_mkdtemp("cld-sample-app");
    char *model = at_path(dir, "m.safetensors"), *unc = at_path(dir, "u.safetensors"),
         *nan = at_path(dir, "nan.safetensors");
    char *cut = at_path(dir, "cut.safetensors"), *text = at_path(dir, "text.safetensors"),
         *out = at_path(dir, "o.png");
    make_model(model, 3, 1, 0);
    make_model(unc, 0, 1, 0);
    make_model(nan, 3, 1, 1);
    size_t len = 0;
    unsigned char *bytes = at_read_file(model, &len);
    at_write_file(cut, bytes, len - 100);
    free(bytes);
    at_write_file(text, "hello", 5);
    write_image(dir, "big.png", 9, 1, 1);
    write_image(dir, "rgb.png", 8, 3, 2);
    write_image(dir, "in.png", 8, 1, 3);
    char *afile = at_path(dir, "afile");
    at_write_file(afile, "x", 1);
    free(afile);
    const app_case cases[] = {
        {"--bogus", 2, "unknown option '--bogus'"},
        {"--model m.safetensors --sampler plms", 2, "unknown sampler 'plms'"},
        {"--model m.safetensors --spacing cubic", 2, "unknown spacing 'cubic'"},
        {"--model m.safetensors --class delta", 2, "unknown class 'delta'"},
        {"--model m.safetensors --class 7", 2, "class 7"},
        {"--model m.safetensors --steps 0", 2, "--steps: '0' is not a number"},
        {"--model m.safetensors --steps 101", 2, "T = 100"},
        {"--out o.png --model m.safetensors --steps", 2, "needs a value"},
        {"--model u.safetensors --guidance 3", 2, "no class conditioning"},
        {"--model u.safetensors --class 0", 2, "no class conditioning"},
        {"--model m.safetensors --strength 0.5", 2, "--strength needs --init"},
        {"--model m.safetensors --mask in.png", 2, "--mask needs --init"},
        {"--model m.safetensors --init in.png --mask in.png --sampler heun", 2, "ddpm or ddim"},
        {"--model m.safetensors --eta 0.5", 2, "--eta applies to ddim and euler-a"},
        {"--replay o.png --steps 3", 2, "--steps cannot be combined"},
        {"--model missing.safetensors", 1, "missing.safetensors"},
        {"--model cut.safetensors", 1, "cut.safetensors"},
        {"--model text.safetensors", 1, "not a safetensors file"},
        {"--model nan.safetensors --steps 2 --n 3", 1, "NaN"},
        {"--model m.safetensors --out afile/o.png", 1, "cannot write"},
        {"--model m.safetensors --out /nonexistent/o.png", 1, "cannot write"},
        {"--model m.safetensors --out o.jpg", 1, "neither a .png file nor a folder"},
        {"--model m.safetensors --init big.png", 1, "9 x 9"},
        {"--model m.safetensors --init rgb.png", 1, "3 channels"},
        {"--model m.safetensors --init missing.png", 1, "missing.png"},
        {"--model m.safetensors --batch 1000000", 1, "1000000 samples"},
        {"--replay in.png", 1, "cld.recipe"},
        {"--model m.safetensors --prediction eps2", 2, "unknown prediction type 'eps2'"},
        {"--model m.safetensors --schedule cubic", 2, "unknown schedule 'cubic'"},
        {"--model m.safetensors --variance fixed_large", 2, "--variance applies to ddpm"},
        {"--model m.safetensors --sampler ddpm --variance learned", 2, "fixed_small or fixed_large"},
        {"--model m.safetensors --clip-sample 1", 2, "--clip-sample applies to ddpm and ddim"},
        {"--model m.safetensors --sampler ddpm --set-alpha-to-one true", 2, "applies to ddim"},
        {"--model m.safetensors --sampler ddim --set-alpha-to-one yes", 2, "true or false"},
        {"--model m.safetensors --train-steps 50 --steps 60", 2, "T = 50"},
        {"--model m.safetensors --beta-start 0.5 --beta-end 0.1 --schedule linear", 1, "betas 0.5 .. 0.1"},
        {"--replay o.png --prediction v", 2, "--prediction cannot be combined"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[1024], *err = NULL, *so = NULL;
        snprintf(args, sizeof args, "%s --out o.png", cases[i].args);
        if (strstr(cases[i].args, "--out")) snprintf(args, sizeof args, "%s", cases[i].args);
        int st = run_app(dir, args, &so, &err);
        ck_assert_msg(st == cases[i].status, "'%s': exit %d, want %d; stderr: %s", args, st, cases[i].status,
                      err);
        ck_assert_msg(strstr(err, cases[i].message), "'%s': stderr lacks '%s': %s", args, cases[i].message,
                      err);
        ck_assert_msg(!at_exists(out), "'%s' left an output file", args);
        ck_assert_msg(so[0] == 0, "'%s' printed to stdout: %s", args, so);
        free(err);
        free(so);
    }
    char *so;
    ck_assert_int_eq(run_app(dir, "--help", &so, NULL), 0);
    ck_assert(strstr(so, "--replay") && strstr(so, "--sampler"));
    free(so);
    ck_assert_int_eq(run_app(dir, "--version", &so, NULL), 0);
    ck_assert(strstr(so, CLD_VERSION_STRING));
    free(so);
    tu_rm_rf(dir);
    free(dir);
    free(model);
    free(unc);
    free(nan);
    free(cut);
    free(text);
    free(out);
}
END_TEST

/* Two runs with one seed: identical bytes; --replay: the same bytes again,
 * for a grid and for one file of a folder made in a batch of 4. */
START_TEST(test_app_identical_and_replay)
{
    char *dir = tu_mkdtemp("cld-sample-app"), *model = at_path(dir, "m.safetensors");
    make_model(model, 3, 1, 0);
    char *so = NULL, *err = NULL;
    const char *common = "--model m.safetensors --steps 4 --n 5 --seed 9 --class beta --class 0";
    char args[1024];
    snprintf(args, sizeof args, "%s --out a.png", common);
    ck_assert_int_eq(run_app(dir, args, &so, &err), 0);
    ck_assert_str_eq(so, "a.png\n");
    ck_assert_msg(strstr(err, "device:") && strstr(err, "dpm++2m") && strstr(err, "seed 9") &&
                      strstr(err, "4 steps"),
                  "%s", err);
    free(so);
    free(err);
    snprintf(args, sizeof args, "%s --out b.png", common);
    ck_assert_int_eq(run_app(dir, args, NULL, NULL), 0);
    char *a = at_path(dir, "a.png"), *b = at_path(dir, "b.png"), *c = at_path(dir, "c.png");
    at_files_equal(a, b);
    char *recipe = NULL;
    TU_OK(cld_png_read_text(a, CLD_RECIPE_KEY, &recipe));
    ck_assert_msg(strstr(recipe, "\"seed\":\"9\"") && strstr(recipe, "\"classes\":[1,0]") &&
                      strstr(recipe, "\"class_names\":[\"beta\",\"alpha\"]") && strstr(recipe, "fnv1a64:"),
                  "%s", recipe);
    free(recipe);
    /* no --spacing: the sampler's default (Heun: Karras sigmas) */
    ck_assert_int_eq(
        run_app(dir, "--model m.safetensors --sampler heun --steps 2 --n 1 --out h.png", NULL, NULL), 0);
    char *hp = at_path(dir, "h.png");
    TU_OK(cld_png_read_text(hp, CLD_RECIPE_KEY, &recipe));
    ck_assert_msg(strstr(recipe, "\"sampler\":\"heun\",\"spacing\":\"karras\""), "%s", recipe);
    free(recipe);
    free(hp);
    ck_assert_int_eq(run_app(dir, "--replay a.png --out c.png", NULL, NULL), 0);
    at_files_equal(a, c);
    ck_assert_int_eq(run_app(dir, "--replay a.png", NULL, NULL), 0);
    char *ar = at_path(dir, "a-replay.png");
    at_files_equal(a, ar);

    /* a folder: one PNG per sample named by index, class and seed */
    snprintf(args, sizeof args,
             "--model m.safetensors --steps 3 --n 4 --batch 4 --seed 5 --sampler euler-a --out "
             "dir/");
    ck_assert_int_eq(run_app(dir, args, &so, NULL), 0);
    ck_assert_str_eq(so, "dir/sample-00000-alpha-seed5.png\ndir/sample-00001-beta-seed5.png\n"
                         "dir/sample-00002-gamma-seed5.png\ndir/sample-00003-alpha-seed5.png\n");
    free(so);
    ck_assert_int_eq(run_app(dir, "--replay dir/sample-00002-gamma-seed5.png --out one.png", NULL, NULL), 0);
    char *f2 = at_path(dir, "dir/sample-00002-gamma-seed5.png"), *one = at_path(dir, "one.png");
    at_files_equal(f2, one);
    /* overrides of the model's defaults change the picture and are kept in the recipe */
    const char *ovr = "--model m.safetensors --steps 4 --n 2 --seed 3 --sampler ddim --out ";
    snprintf(args, sizeof args, "%sp.png", ovr);
    ck_assert_int_eq(run_app(dir, args, NULL, NULL), 0);
    snprintf(args, sizeof args,
             "%sq.png --prediction x0 --schedule linear --beta-end 0.03 --clip-sample 0.5 "
             "--set-alpha-to-one false --spacing leading --steps-offset 1",
             ovr);
    ck_assert_int_eq(run_app(dir, args, NULL, &err), 0);
    free(err);
    char *pp = at_path(dir, "p.png"), *qp = at_path(dir, "q.png"), *rp = at_path(dir, "r.png");
    size_t lp, lq;
    unsigned char *bp = at_read_file(pp, &lp), *bq = at_read_file(qp, &lq);
    ck_assert_msg(lp != lq || memcmp(bp, bq, lp), "the overrides did not change the samples");
    free(bp);
    free(bq);
    TU_OK(cld_png_read_text(qp, CLD_RECIPE_KEY, &recipe));
    ck_assert_msg(strstr(recipe, "\"override\":{\"schedule\":\"linear\",\"beta_end\":0.03,"
                                 "\"prediction\":\"x0\",\"clip_sample\":0.5,\"steps_offset\":1,"
                                 "\"set_alpha_to_one\":false}"),
                  "%s", recipe);
    free(recipe);
    ck_assert_int_eq(run_app(dir, "--replay q.png --out r.png", NULL, NULL), 0);
    at_files_equal(qp, rp);
    free(pp);
    free(qp);
    free(rp);
    /* a changed model is refused */
    make_model(model, 3, 1, 1);
    ck_assert_int_eq(run_app(dir, "--replay a.png --out d.png", NULL, &err), 1);
    ck_assert_msg(strstr(err, "hash"), "%s", err);
    free(err);
    tu_rm_rf(dir);
    free(dir);
    free(model);
    free(a);
    free(b);
    free(c);
    free(ar);
    free(f2);
    free(one);
}
END_TEST

/* --progress json: one object a line, then the result; inpainting keeps
 * the init's pixels outside the mask byte for byte; --trajectory; the
 * default model through CLD_ASSETS. */
START_TEST(test_app_progress_inpaint_defaults)
{
    char *dir = tu_mkdtemp("cld-sample-app"), *model = at_path(dir, "fashion-mnist.safetensors");
    make_model(model, 3, 1, 0);
    char *so = NULL, *err = NULL;
    ck_assert_int_eq(
        run_app(dir,
                "--model fashion-mnist.safetensors --steps 3 --n 4 --batch 2 --progress json --out "
                "p.png",
                &so, NULL),
        0);
    int lines = 0;
    for (char *l = strtok(so, "\n"); l; l = strtok(NULL, "\n"), lines++) {
        if (lines < 6) {
            int step, total;
            double el, eta;
            ck_assert_msg(sscanf(l, "{\"step\": %d, \"total\": %d, \"elapsed\": %lf, \"eta\": %lf}", &step,
                                 &total, &el, &eta) == 4 &&
                              step == lines + 1 && total == 6,
                          "line %d: %s", lines, l);
        } else {
            ck_assert_str_eq(l, "{\"out\": \"p.png\"}");
        }
    }
    ck_assert_int_eq(lines, 7);
    free(so);

    /* inpainting: mask white on the left half */
    uint8_t mask[64], init_px[64];
    for (int p = 0; p < 64; p++) mask[p] = (p % 8) < 4 ? 255 : 0;
    char *mp = at_path(dir, "mask.png"), *ip = at_path(dir, "in.png"), *op = at_path(dir, "inpaint/");
    TU_OK(cld_png_write(mp, 8, 8, 1, 8, mask, 0, NULL, NULL));
    write_image(dir, "in.png", 8, 1, 4);
    ck_assert_int_eq(
        run_app(dir,
                "--model fashion-mnist.safetensors --steps 4 --n 3 --init in.png --mask mask.png "
                "--resample 2 --out inpaint/",
                NULL, &err),
        0);
    ck_assert_msg(strstr(err, "ddpm") && strstr(err, "resample 2"), "%s", err);
    free(err);
    cld_image in, got;
    TU_OK(cld_image_load(ip, 0, 0, &in));
    for (int p = 0; p < 64; p++) init_px[p] = (uint8_t)lroundf(in.data[p] * 255.0f);
    int differ = 0;
    for (int i = 0; i < 3; i++) {
        char name[256];
        snprintf(name, sizeof name, "%ssample-%05d-%s-seed0.png", op, i,
                 i == 0   ? "alpha"
                 : i == 1 ? "beta"
                          : "gamma");
        TU_OK(cld_image_load(name, 0, 0, &got));
        for (int p = 0; p < 64; p++) {
            uint8_t v = (uint8_t)lroundf(got.data[p] * 255.0f);
            if (mask[p] == 0)
                ck_assert_msg(v == init_px[p], "%s pixel %d: %d, init %d", name, p, v, init_px[p]);
            else
                differ += v != init_px[p];
        }
        cld_image_free(&got);
    }
    ck_assert_msg(differ > 3 * 32 / 2, "only %d regenerated pixels changed", differ);
    cld_image_free(&in);
    ck_assert_int_eq(run_app(dir, "--replay inpaint/sample-00001-beta-seed0.png --out again.png", NULL, NULL),
                     0);
    char *f1 = at_path(dir, "inpaint/sample-00001-beta-seed0.png"), *again = at_path(dir, "again.png");
    at_files_equal(f1, again);

    /* img2img and a trajectory strip: 3 samples x (4 steps + 1) frames */
    ck_assert_int_eq(run_app(dir,
                             "--model fashion-mnist.safetensors --steps 8 --n 3 --init in.png --strength 0.5 "
                             "--trajectory --out traj.png",
                             NULL, NULL),
                     0);
    char *tp = at_path(dir, "traj.png");
    int w, h, c;
    TU_OK(cld_image_info(tp, &w, &h, &c));
    ck_assert_msg(w == 5 * 10 + 2 && h == 3 * 10 + 2 && c == 1, "strip %d x %d x %d", w, h, c);

    /* no --model: the bundled one, found through CLD_ASSETS */
    setenv("CLD_ASSETS", dir, 1);
    ck_assert_int_eq(run_app(dir, "--steps 2 --n 3 --out def.png", &so, &err), 0);
    unsetenv("CLD_ASSETS");
    ck_assert_str_eq(so, "def.png\n");
    ck_assert_msg(strstr(err, model), "%s", err);
    free(so);
    free(err);
    char *def = at_path(dir, "def.png"), *recipe = NULL;
    TU_OK(cld_png_read_text(def, CLD_RECIPE_KEY, &recipe));
    ck_assert_msg(strstr(recipe, "\"model\":\"asset:fashion-mnist.safetensors\""), "%s", recipe);
    free(recipe);
    /* the recipe names the asset, not where it lay: a replay finds it wherever CLD_ASSETS says */
    char *moved = at_path(dir, "moved"), *moved_model = at_path(dir, "moved/fashion-mnist.safetensors");
    ck_assert(mkdir(moved, 0777) == 0 && rename(model, moved_model) == 0);
    setenv("CLD_ASSETS", moved, 1);
    ck_assert_int_eq(run_app(dir, "--replay def.png --out def2.png", NULL, NULL), 0);
    ck_assert_int_eq(
        run_app(dir, "--model asset:fashion-mnist.safetensors --steps 2 --n 3 --out def3.png", NULL, NULL),
        0);
    unsetenv("CLD_ASSETS");
    char *def2 = at_path(dir, "def2.png"), *def3 = at_path(dir, "def3.png");
    at_files_equal(def, def2);
    at_files_equal(def, def3);
    free(def);
    free(def2);
    free(def3);
    free(moved);
    free(moved_model);
    tu_rm_rf(dir);
    free(dir);
    free(model);
    free(mp);
    free(ip);
    free(op);
    free(f1);
    free(again);
    free(tp);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sample");
    TCase *lib = tcase_create("library");
    tcase_set_timeout(lib, 300);
    tcase_add_test(lib, test_file_hash_and_assets);
    tcase_add_test(lib, test_model_load);
    tcase_add_test(lib, test_batch_memory);
    tcase_add_test(lib, test_deterministic_and_batch_independent);
    tcase_add_test(lib, test_nonfinite_is_an_error);
    tcase_add_test(lib, test_learned_variance_model);
    tcase_add_test(lib, test_sdedit_start);
    tcase_add_test(lib, test_repaint_schedule);
    tcase_add_test(lib, test_repaint_known_pixels);
    tcase_add_test(lib, test_trajectory);
    tcase_add_test(lib, test_grid_and_recipe);
    suite_add_tcase(s, lib);
    TCase *tapp = tcase_create("app");
    tcase_set_timeout(tapp, 300);
    tcase_add_test(tapp, test_app_errors);
    tcase_add_test(tapp, test_app_identical_and_replay);
    tcase_add_test(tapp, test_app_progress_inpaint_defaults);
    suite_add_tcase(s, tapp);
    return tu_run_suite(s);
}
