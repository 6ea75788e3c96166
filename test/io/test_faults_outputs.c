/* Outputs never hold NaN or Inf, and an image that is one value is reported.
 *
 *  - cld_params_save / cld_params_save_state refuse a store holding NaN or
 *    Inf (CLD_ERR_STATE naming the tensor): the previous file keeps its
 *    bytes and no temporary file is left. cld-train's checkpoints and
 *    model files are written by these two.
 *  - cld_grid_pixels (every PNG of cld-sample and cld-train's grids) refuses
 *    NaN or Inf; cld_model_sample and the denoiser already fail on them
 *    (test_sample, test_denoise).
 *  - cld-sample and cld-denoise warn when a result is one pixel value
 *    everywhere: models whose last convolution is zeroed, with a constant
 *    bias and x0 prediction, give such results; the unchanged models must
 *    not warn. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apptest.h"
#include "testutil.h"

static void write_idx(const char *dir, const char *name, int ndim, int n)
{
    char *p = at_path(dir, name);
    at_write_idx(p, ndim, n, 5);
    free(p);
}

/* A params store of two small tensors, allocated and filled. */
static cld_params *small_store(void)
{
    cld_params *p;
    int s1[2] = {3, 4}, s2[1] = {5};
    TU_OK(cld_params_create(tu_ctx(), &p));
    TU_OK(cld_params_declare(p, "a.weight", 2, s1, CLD_INIT_NORMAL, 0.5f, NULL));
    TU_OK(cld_params_declare(p, "b.bias", 1, s2, CLD_INIT_ONE, 0, NULL));
    TU_OK(cld_params_alloc(p));
    return p;
}

static int has_tmp(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q tmp", dir);
    return system(cmd) == 0;
}

START_TEST(test_save_refuses_nonfinite)
{
    char *dir = tu_mkdtemp("cld-outputs");
    char *file = at_path(dir, "w.safetensors"), *state = at_path(dir, "state.safetensors");
    cld_params *p = small_store(), *ema;
    TU_OK(cld_params_clone(p, &ema));
    TU_OK(cld_params_alloc(ema));
    TU_OK(cld_params_copy(ema, p));
    TU_OK(cld_params_save(p, file, "{\"k\": \"v\"}"));
    TU_OK(cld_params_save_state(p, ema, state, NULL));
    size_t len0, slen0;
    unsigned char *before = at_read_file(file, &len0), *sbefore = at_read_file(state, &slen0);
    const float bad[2] = {NAN, INFINITY};
    for (int k = 0; k < 2; k++) {
        float v[5] = {1, 2, 3, 4, 5};
        v[3] = bad[k];
        int idx;
        /* in the weights: both files refuse */
        TU_OK(cld_params_find(p, "b.bias", &idx));
        TU_OK(cld_params_write(p, idx, v));
        TU_STATUS(cld_params_save(p, file, NULL), CLD_ERR_STATE);
        ck_assert_msg(strstr(cld_last_error(), "'b.bias' holds") && strstr(cld_last_error(), "element 3"),
                      "%s", cld_last_error());
        TU_STATUS(cld_params_save_state(p, ema, state, NULL), CLD_ERR_STATE);
        /* in the EMA copy only: the state file refuses, naming the section */
        float ok[5] = {1, 2, 3, 4, 5};
        TU_OK(cld_params_write(p, idx, ok));
        TU_OK(cld_params_write(ema, idx, v));
        TU_STATUS(cld_params_save_state(p, ema, state, NULL), CLD_ERR_STATE);
        ck_assert_msg(strstr(cld_last_error(), "'ema.b.bias'"), "%s", cld_last_error());
        TU_OK(cld_params_write(ema, idx, ok));
        size_t len, slen;
        unsigned char *after = at_read_file(file, &len), *safter = at_read_file(state, &slen);
        ck_assert(after && len == len0 && memcmp(before, after, len) == 0);
        ck_assert(safter && slen == slen0 && memcmp(sbefore, safter, slen) == 0);
        ck_assert_msg(!has_tmp(dir), "a temporary file was left in %s", dir);
        free(after);
        free(safter);
    }
    /* finite again: saving works (the check can pass) */
    TU_OK(cld_params_save_state(p, ema, state, NULL));
    free(before);
    free(sbefore);
    cld_params_free(p);
    cld_params_free(ema);
    free(file);
    free(state);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(test_grid_refuses_nonfinite)
{
    float x[2 * 3 * 4 * 4];
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) x[i] = (float)i / 96.0f - 0.5f;
    uint8_t *px = NULL;
    int w, h;
    TU_OK(cld_grid_pixels(x, 2, 3, 4, 2, 1, &px, &w, &h));
    free(px);
    px = NULL;
    x[3 * 16 + 5] = NAN;
    TU_STATUS(cld_grid_pixels(x, 2, 3, 4, 2, 1, &px, &w, &h), CLD_ERR_STATE);
    ck_assert_msg(strstr(cld_last_error(), "image 1 holds NaN or Inf"), "%s", cld_last_error());
    ck_assert(px == NULL);
    x[3 * 16 + 5] = -INFINITY;
    TU_STATUS(cld_grid_pixels(x, 2, 3, 4, 2, 1, &px, &w, &h), CLD_ERR_STATE);
}
END_TEST

/* A copy of model file `src` at `dst` whose output is x0 = `bias`
 * everywhere: conv_out zeroed, its bias constant, prediction x0. */
static void constant_model(const char *src, const char *dst, float bias)
{
    cld_model *m;
    char *meta;
    TU_OK(cld_model_load(tu_ctx(), src, &m));
    TU_OK(cld_safetensors_metadata(src, &meta));
    const char *from = "\\\"prediction\\\":\\\"", *at = strstr(meta, from);
    ck_assert_msg(at, "no prediction in %s", meta);
    at += strlen(from);
    const char *end = strstr(at, "\\\"");
    ck_assert(end);
    char *edited = tu_malloc(strlen(meta) + 8);
    snprintf(edited, strlen(meta) + 8, "%.*sx0%s", (int)(at - meta), meta, end);
    int idx, nd, shape[CLD_MAX_DIMS];
    for (int k = 0; k < 2; k++) {
        TU_OK(cld_params_find(m->params, k ? "conv_out.bias" : "conv_out.weight", &idx));
        TU_OK(cld_params_info(m->params, idx, NULL, &nd, shape, NULL));
        size_t n = 1;
        for (int d = 0; d < nd; d++) n *= (size_t)shape[d];
        float *v = tu_malloc(n * sizeof *v);
        for (size_t i = 0; i < n; i++) v[i] = k ? bias : 0.0f;
        TU_OK(cld_params_write(m->params, idx, v));
        free(v);
    }
    TU_OK(cld_params_save(m->params, dst, edited));
    free(edited);
    free(meta);
    cld_model_free(m);
}

START_TEST(test_sample_warns_one_value)
{
    char *dir = tu_mkdtemp("cld-outputs"), *err = NULL;
    write_idx(dir, "train-images-idx3-ubyte", 3, 16);
    write_idx(dir, "train-labels-idx1-ubyte", 1, 16);
    write_idx(dir, "t10k-images-idx3-ubyte", 3, 8);
    write_idx(dir, "t10k-labels-idx1-ubyte", 1, 8);
    ck_assert_int_eq(
        at_run(at_app("cld-train", "CLD_TRAIN"), dir,
               "--data train-images-idx3-ubyte --base 8 --mult 1,2 --res-blocks 1 --attn 4 --groups 4 "
               "--T 100 --batch 4 --val-n 8 --grid-every 0 --progress none --steps 2 --val-every 0 "
               "--out run",
               NULL, NULL),
        0);
    char *model = at_path(dir, "run/model.safetensors"), *flat = at_path(dir, "flat.safetensors");
    constant_model(model, flat, 0.3f);
    const char *bin = at_app("cld-sample", "CLD_SAMPLE");
    ck_assert_int_eq(at_run(bin, dir,
                            "--model run/model.safetensors --n 2 --steps 4 --out a.png --progress none", NULL,
                            &err),
                     0);
    ck_assert_msg(!strstr(err, "one value everywhere"), "the trained model warned: %s", err);
    free(err);
    ck_assert_int_eq(
        at_run(bin, dir,
               "--model flat.safetensors --sampler ddim --n 2 --steps 4 --out b.png --progress none", NULL,
               &err),
        0);
    /* round((0.3 + 1) * 127.5) = 166 */
    ck_assert_msg(strstr(err, "warning: sample 0 is one value everywhere (pixel 166)") &&
                      strstr(err, "warning: sample 1 is one value everywhere"),
                  "%s", err);
    free(err);
    free(model);
    free(flat);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(test_denoise_warns_one_value)
{
    char *dir = tu_mkdtemp("cld-outputs"), *err = NULL, asset[4096];
    TU_OK(cld_asset_path("photo-denoiser.safetensors", asset, sizeof asset));
    char *flat = at_path(dir, "flat.safetensors"), *photo = at_path(dir, "photo.png");
    constant_model(asset, flat, -0.5f);
    uint8_t px[32 * 32 * 3];
    uint64_t s = 3;
    for (size_t i = 0; i < sizeof px; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        px[i] = (uint8_t)(64 + (s >> 58) + (i % 96));
    }
    TU_OK(cld_png_write(photo, 32, 32, 3, 8, px, 0, NULL, NULL));
    const char *bin = at_app("cld-denoise", "CLD_DENOISE");
    ck_assert_int_eq(at_run(bin, dir, "photo.png -o a.png --sigma 20 --progress none", NULL, &err), 0);
    ck_assert_msg(!strstr(err, "one value everywhere"), "the shipped denoiser warned: %s", err);
    free(err);
    char args[4200];
    snprintf(args, sizeof args, "photo.png -o b.png --sigma 20 --progress none --model '%s'", flat);
    ck_assert_int_eq(at_run(bin, dir, args, NULL, &err), 0);
    /* output (x0 + 1) / 2 = 0.25: round(0.25 * 255) = 64 */
    ck_assert_msg(strstr(err, "warning: b.png: the result is one value everywhere (64 of 255)"), "%s", err);
    free(err);
    free(flat);
    free(photo);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("faults_outputs");
    TCase *tc = tcase_create("outputs");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_save_refuses_nonfinite);
    tcase_add_test(tc, test_grid_refuses_nonfinite);
    tcase_add_test(tc, test_sample_warns_one_value);
    tcase_add_test(tc, test_denoise_warns_one_value);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
