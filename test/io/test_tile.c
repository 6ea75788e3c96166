/* Tiling a local UNet (denoise.h): the receptive radius against the
 * architecture's walk done by hand, and the result of cld_tiled_run
 * independent of the tile size (and the blend) on awkward sizes: 1x1,
 * 513x520, 4097x3 and primes. The model is a small random-weight local UNet
 * made here (every weight nonzero, so every path of the receptive field is
 * live). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static cld_unet_config local_config(int levels)
{
    cld_unet_config c;
    memset(&c, 0, sizeof c);
    c.in_channels = 3;
    c.out_channels = 3;
    c.image_size = 16;
    c.base_channels = 8;
    c.n_levels = levels;
    for (int i = 0; i < levels; i++) c.mult[i] = i ? 2 : 1;
    c.num_res_blocks = 1;
    c.heads = 1;
    c.norm_groups = 0;
    c.no_mid_attn = 1;
    return c;
}

START_TEST(test_receptive_radius)
{
    /* 2 levels, 1 ResBlock: conv_in 1, ResBlock 2, down 1 (s = 2), ResBlock 4,
     * mid 8, up at s 2: 2 ResBlocks 8, nearest 2x +1 below, conv 1, up at s 1:
     * 2 ResBlocks 4, conv_out 1: 31 below, 30 above. */
    cld_unet_config c = local_config(2);
    int r = 0;
    TU_OK(cld_unet_receptive_radius(&c, &r));
    ck_assert_int_eq(r, 31);
    c = local_config(3);
    TU_OK(cld_unet_receptive_radius(&c, &r));
    ck_assert_int_eq(r, 69);
    /* the photo denoiser's shape: base 32, mult 1,2,2,2, 2 ResBlocks */
    c = local_config(4);
    c.num_res_blocks = 2;
    TU_OK(cld_unet_receptive_radius(&c, &r));
    ck_assert_int_eq(r, 205);
    c.norm_groups = 8;
    TU_STATUS(cld_unet_receptive_radius(&c, &r), CLD_ERR_INVALID_ARG);
    ck_assert(strstr(cld_last_error(), "not local"));
}
END_TEST

/* The UNet's output at one pixel changes when an input pixel at distance
 * radius changes (the bound is tight along one axis), and not beyond. */
START_TEST(test_radius_is_the_reach)
{
    cld_unet_config c = local_config(2);
    cld_params *p = tu_random_unet_params(&c, 77, 0, 0);
    int r = 0;
    TU_OK(cld_unet_receptive_radius(&c, &r));
    const int H = 5, W = 160, x0 = 80;
    cld_tile_opts o = {0, r, 0, 0, 0};
    cld_tiled *t;
    TU_OK(cld_tiled_create(tu_ctx(), p, &c, &o, &t));
    float *x = tu_rand_uniform((size_t)3 * H * W, 5, -1, 1), *a = tu_malloc(sizeof(float) * 3 * H * W),
          *b = tu_malloc(sizeof(float) * 3 * H * W);
    TU_OK(cld_tiled_run(t, x, H, W, 10.0f, a, NULL, NULL));
    int reach_lo = 0, reach_hi = 0;
    for (int d = 1; d <= r + 3; d++) {
        for (int side = -1; side <= 1; side += 2) {
            float *y = tu_malloc(sizeof(float) * 3 * H * W);
            memcpy(y, x, sizeof(float) * 3 * H * W);
            for (int c2 = 0; c2 < 3; c2++) y[(size_t)c2 * H * W + 2 * W + x0 + side * d] += 1.0f;
            TU_OK(cld_tiled_run(t, y, H, W, 10.0f, b, NULL, NULL));
            double diff = 0;
            for (int c2 = 0; c2 < 3; c2++)
                diff += fabs(a[(size_t)c2 * H * W + 2 * W + x0] - b[(size_t)c2 * H * W + 2 * W + x0]);
            if (diff > 0) {
                if (side < 0)
                    reach_lo = d;
                else
                    reach_hi = d;
            }
            free(y);
        }
    }
    ck_assert_msg(reach_lo <= r && reach_hi <= r, "reach %d / %d beyond the radius %d", reach_lo, reach_hi,
                  r);
    ck_assert_msg(reach_lo >= r - 2 || reach_hi >= r - 2, "reach %d / %d: the radius %d is loose", reach_lo,
                  reach_hi, r);
    free(x);
    free(a);
    free(b);
    cld_tiled_free(t);
    cld_params_free(p);
}
END_TEST

typedef struct size_case {
    int h, w;
} size_case;

static double run_max_diff(cld_tiled *t, cld_tiled *ref, int H, int W, int *tiles)
{
    const size_t n = (size_t)3 * H * W;
    float *x = tu_rand_uniform(n, (uint64_t)H * 7919 + (uint64_t)W, -1, 1);
    float *a = tu_malloc(n * sizeof *a), *b = tu_malloc(n * sizeof *b);
    cld_tile_plan pl;
    TU_OK(cld_tiled_plan(t, H, W, &pl));
    *tiles = pl.nx * pl.ny;
    TU_OK(cld_tiled_run(t, x, H, W, 37.5f, a, NULL, NULL));
    TU_OK(cld_tiled_run(ref, x, H, W, 37.5f, b, NULL, NULL));
    double scale = 0, d = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(b[i]) > scale) scale = fabs(b[i]);
        if (fabs(a[i] - b[i]) > d) d = fabs(a[i] - b[i]);
    }
    ck_assert_msg(scale > 0.05, "%d x %d: output is ~0 (max %g): the test would not see a difference", H, W,
                  scale);
    free(x);
    free(a);
    free(b);
    return d / scale;
}

START_TEST(test_tile_size_invariance)
{
    cld_unet_config c = local_config(2);
    cld_params *p = tu_random_unet_params(&c, 77, 0, 0);
    /* reference: one tile over the whole image where it fits (auto, up to 1024) */
    cld_tiled *ref;
    cld_tile_opts ro = {0, -1, 0, 1024, 0};
    TU_OK(cld_tiled_create(tu_ctx(), p, &c, &ro, &ref));
    const size_case sizes[] = {{1, 1}, {513, 520}, {3, 4097}, {4097, 3}, {97, 89}, {7, 131}, {2, 2}, {61, 1}};
    const int tiles[] = {96, 128, 202};
    const int blends[] = {16, 4, 31};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        for (size_t j = 0; j < 3; j++) {
            cld_tiled *t;
            cld_tile_opts o = {tiles[j], -1, blends[j], 0, 0};
            const int H = sizes[k].h, W = sizes[k].w;
            if (tiles[j] == 96 && (size_t)H * W > 100000) continue; /* stride 18: thousands of tiles */
            TU_OK(cld_tiled_create(tu_ctx(), p, &c, &o, &t));
            int nt = 0;
            double d = run_max_diff(t, ref, H, W, &nt);
            ck_assert_msg(d <= 1e-3,
                          "%d x %d, tile %d, blend %d (%d tiles): max diff %.3g of the output's range", H, W,
                          tiles[j], blends[j], nt, d);
            if (k == 1) ck_assert_int_gt(nt, 4); /* 513 x 520 really is cut */
            cld_tiled_free(t);
        }
    }
    cld_tiled_free(ref);
    cld_params_free(p);
}
END_TEST

/* A margin below the radius is the caller's trade: the result then does
 * depend on the tile (so the invariance test above can fail). */
START_TEST(test_short_margin_is_visible)
{
    cld_unet_config c = local_config(2);
    cld_params *p = tu_random_unet_params(&c, 77, 0, 0);
    cld_tiled *a, *b;
    cld_tile_opts oa = {64, 4, 8, 0, 0}, ob = {0, -1, 0, 1024, 0};
    TU_OK(cld_tiled_create(tu_ctx(), p, &c, &oa, &a));
    TU_OK(cld_tiled_create(tu_ctx(), p, &c, &ob, &b));
    int nt;
    double d = run_max_diff(a, b, 150, 150, &nt);
    ck_assert_msg(d > 1e-3, "margin 4 of radius 31 gave max diff %.3g", d);
    cld_tiled_free(a);
    cld_tiled_free(b);
    cld_params_free(p);
}
END_TEST

/* The edge context: a photo that fits one tile is padded by `edge` pixels
 * per side, not by the margin; with an exact margin the edge defaults to
 * it, and a shorter edge changes only pixels within the radius of the
 * border: deeper inside, small tiles with a short edge still agree with one
 * exact tile. */
START_TEST(test_edge_context)
{
    cld_unet_config c = local_config(4);
    c.num_res_blocks = 2; /* the photo denoiser's shape, radius 205 */
    cld_params *p = tu_random_unet_params(&c, 78, 0, 0);
    cld_tiled *t;
    cld_tile_plan pl;
    cld_tile_opts o = {0, 48, 0, 0, 0}; /* cld-denoise's default */
    TU_OK(cld_tiled_create(tu_ctx(), p, &c, &o, &t));
    TU_OK(cld_tiled_plan(t, 500, 500, &pl));
    ck_assert_int_eq(pl.offset, CLD_TILE_DEFAULT_EDGE);
    ck_assert_int_eq(pl.nx * pl.ny, 1);
    ck_assert_int_eq(pl.tile, 520); /* 500 + 2 x 8, a multiple of 8 */
    cld_tiled_free(t);
    o.edge = -1; /* the margin */
    TU_OK(cld_tiled_create(tu_ctx(), p, &c, &o, &t));
    TU_OK(cld_tiled_plan(t, 500, 500, &pl));
    ck_assert_int_eq(pl.offset, 48);
    ck_assert_int_eq(pl.tile, 600);
    cld_tiled_free(t);
    o.margin = -1, o.edge = 0; /* exact: the edge is the radius, on the grid of 8 */
    TU_OK(cld_tiled_create(tu_ctx(), p, &c, &o, &t));
    TU_OK(cld_tiled_plan(t, 100, 100, &pl));
    ck_assert_int_eq(pl.offset, 208);
    cld_tiled_free(t);
    cld_params_free(p);

    c = local_config(2); /* radius 31 */
    p = tu_random_unet_params(&c, 77, 0, 0);
    cld_tiled *a, *b;
    cld_tile_opts oa = {96, -1, 0, 0, 4}, ob = {0, -1, 0, 1024, 0}; /* b: exact, edge 32 */
    TU_OK(cld_tiled_create(tu_ctx(), p, &c, &oa, &a));
    TU_OK(cld_tiled_create(tu_ctx(), p, &c, &ob, &b));
    const int H = 150, W = 150, r = 31;
    const size_t n = (size_t)3 * H * W;
    float *x = tu_rand_uniform(n, 4242, -1, 1), *ya = tu_malloc(n * sizeof *ya),
          *yb = tu_malloc(n * sizeof *yb);
    TU_OK(cld_tiled_plan(a, H, W, &pl));
    ck_assert_int_gt(pl.nx * pl.ny, 4);
    TU_OK(cld_tiled_run(a, x, H, W, 37.5f, ya, NULL, NULL));
    TU_OK(cld_tiled_run(b, x, H, W, 37.5f, yb, NULL, NULL));
    double inner = 0, border = 0, scale = 0;
    for (int ch = 0; ch < 3; ch++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                const size_t k = ((size_t)ch * H + i) * W + j;
                const double d = fabs(ya[k] - yb[k]);
                if (fabs(yb[k]) > scale) scale = fabs(yb[k]);
                const int deep = i >= r && i < H - r && j >= r && j < W - r;
                if (deep && d > inner) inner = d;
                if (!deep && d > border) border = d;
            }
    ck_assert(scale > 0.05);
    ck_assert_msg(inner <= 1e-3 * scale, "inside: max diff %.3g of %.3g", inner, scale);
    ck_assert_msg(border > 1e-3 * scale, "edge 4 of radius 31 changed nothing at the border (%.3g)", border);
    free(x);
    free(ya);
    free(yb);
    cld_tiled_free(a);
    cld_tiled_free(b);
    cld_params_free(p);
}
END_TEST

START_TEST(test_bad_tiles)
{
    cld_unet_config c = local_config(3);
    cld_params *p = tu_random_unet_params(&c, 77, 0, 0);
    cld_tiled *t;
    cld_tile_plan pl;
    cld_tile_opts o = {150, -1, 0, 0, 0}; /* not a multiple of 4 */
    TU_OK(cld_tiled_create(tu_ctx(), p, &c, &o, &t));
    TU_STATUS(cld_tiled_plan(t, 100, 100, &pl), CLD_ERR_INVALID_ARG);
    ck_assert(strstr(cld_last_error(), "multiple of 4"));
    cld_tiled_free(t);
    o.tile = 152; /* 2 x 69 + 16 + 4 = 158 needed */
    TU_OK(cld_tiled_create(tu_ctx(), p, &c, &o, &t));
    TU_STATUS(cld_tiled_plan(t, 100, 100, &pl), CLD_ERR_INVALID_ARG);
    ck_assert(strstr(cld_last_error(), "at least 160"));
    cld_tiled_free(t);
    o.tile = 1 << 16; /* far over any device's memory */
    TU_OK(cld_tiled_create(tu_ctx(), p, &c, &o, &t));
    TU_STATUS(cld_tiled_plan(t, 100, 100, &pl), CLD_ERR_NOMEM);
    cld_tiled_free(t);
    /* a non-local config is refused up front */
    c.norm_groups = 4;
    TU_STATUS(cld_tiled_create(tu_ctx(), p, &c, NULL, &t), CLD_ERR_INVALID_ARG);
    cld_params_free(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tile");
    TCase *tc = tcase_create("tile");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_receptive_radius);
    tcase_add_test(tc, test_radius_is_the_reach);
    tcase_add_test(tc, test_tile_size_invariance);
    tcase_add_test(tc, test_short_margin_is_visible);
    tcase_add_test(tc, test_edge_context);
    tcase_add_test(tc, test_bad_tiles);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
