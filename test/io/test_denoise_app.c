/* The cld-denoise program: every bad input is a clear error with no file
 * left behind; 8- and 16-bit, grey and colour round trips (--strength 0
 * gives the input back exactly, at its bit depth); EXIF orientation of a
 * JPEG made here; folders; --progress json; a NaN model. The model is a
 * tiny random local UNet written by the test (cosine T = 1000, v, trained
 * range t_max 400 in its cld.train metadata). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "apptest.h"
#include "testutil.h"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#endif
#include <stb/stb_image_write.h>

static const char *app(void) { return at_app("cld-denoise", "CLD_DENOISE"); }

static char *path_in(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = tu_malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void make_model(const char *path, int nan)
{
    cld_model_meta m;
    memset(&m, 0, sizeof m);
    cld_unet_config *c = &m.unet;
    c->in_channels = c->out_channels = 3;
    c->image_size = 16;
    c->base_channels = 8;
    c->n_levels = 2;
    c->mult[0] = 1, c->mult[1] = 2;
    c->num_res_blocks = 1;
    c->heads = 1;
    c->no_mid_attn = 1;
    m.diffusion.schedule = CLD_SCHEDULE_COSINE;
    m.diffusion.T = 1000;
    m.diffusion.pred = CLD_PRED_V;
    cld_params *p = tu_random_unet_params(c, 500, 0.05f, nan ? AT_NAN_MARKER : 0);
    char *json;
    TU_OK(cld_model_meta_to_json(&m, &json));
    /* the trainer's record: trained on timesteps 0 .. 400 */
    size_t L = strlen(json);
    char *full = tu_malloc(L + 64);
    memcpy(full, json, L - 1);
    snprintf(full + L - 1, 64, ",\"cld.train\":\"{\\\"t_max\\\":400}\"}");
    TU_OK(cld_params_save(p, path, full));
    if (nan) at_poison_float(path, AT_NAN_MARKER);
    free(full);
    free(json);
    cld_params_free(p);
}

/* 8- or 16-bit PNG of random pixels. */
static void write_png(const char *path, int w, int h, int c, int bits, uint64_t seed)
{
    const size_t n = (size_t)w * h * c;
    float *v = tu_rand_uniform(n, seed, 0, 1);
    void *px = tu_malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        if (bits == 16)
            ((uint16_t *)px)[i] = (uint16_t)(v[i] * 65535);
        else
            ((uint8_t *)px)[i] = (uint8_t)(v[i] * 255);
    }
    TU_OK(cld_png_write(path, w, h, c, bits, px, 0, NULL, NULL));
    free(px);
    free(v);
}

static uint32_t crc32_of(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return ~c;
}

/* A PNG whose header declares w x h (and nothing else valid after it). */
static void write_bomb(const char *path, uint32_t w, uint32_t h)
{
    unsigned char b[33] = {137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    for (int i = 0; i < 4; i++)
        b[16 + i] = (unsigned char)(w >> (24 - 8 * i)), b[20 + i] = (unsigned char)(h >> (24 - 8 * i));
    b[24] = 8, b[25] = 2, b[26] = b[27] = b[28] = 0;
    uint32_t crc = crc32_of(b + 12, 17);
    for (int i = 0; i < 4; i++) b[29 + i] = (unsigned char)(crc >> (24 - 8 * i));
    at_write_file(path, b, sizeof b);
}

START_TEST(test_bad_inputs)
{
    char *dir = tu_mkdtemp("cld-denoise-app");
    char *model = path_in(dir, "m.safetensors"), *p;
    make_model(model, 0);
    p = path_in(dir, "nan.safetensors");
    make_model(p, 1);
    free(p);
    p = path_in(dir, "text.png");
    at_write_file(p, "hello, not an image", 19);
    free(p);
    p = path_in(dir, "good.png");
    write_png(p, 40, 30, 3, 8, 1);
    size_t len;
    unsigned char *bytes = at_read_file(p, &len);
    free(p);
    p = path_in(dir, "cut.png");
    at_write_file(p, bytes, len / 2);
    free(p);
    free(bytes);
    p = path_in(dir, "bomb.png");
    write_bomb(p, 17000, 17000); /* 289 M pixels: over the 256 M budget, under stb's own limit */
    free(p);
    p = path_in(dir, "huge.png");
    write_bomb(p, 1u << 20, 1u << 20);
    free(p);
    p = path_in(dir, "flat.png");
    {
        uint8_t px[16 * 16 * 3];
        memset(px, 128, sizeof px);
        TU_OK(cld_png_write(p, 16, 16, 3, 8, px, 0, NULL, NULL));
    }
    free(p);
    p = path_in(dir, "afile");
    at_write_file(p, "x", 1);
    free(p);
    const app_case cases[] = {
        {"text.png -o o.png", 1, "not an image"},
        {"cut.png -o o.png", 1, "cut.png"},
        {"bomb.png -o o.png", 1, "over the limit"},
        {"huge.png -o o.png", 1, "huge.png"},
        {"missing.png -o o.png", 1, "missing.png"},
        {"good.png -o o.png --sigma 200", 2, "over the model's trained range"},
        {"good.png -o o.png --sigma -3", 2, "--sigma"},
        {"good.png -o /nonexistent/o.png", 1, "cannot write"},
        {"good.png -o afile/o.png", 1, "cannot write"},
        {"good.png -o o.jpg", 2, "must be a .png"},
        {"good.png", 2, "no output"},
        {"good.png -o o.png --tile 50 --sigma 20", 1, "multiple of 2"},
        {"good.png -o o.png --steps 0", 2, "--steps"},
        {"good.png -o o.png --edge 0", 2, "--edge: '0'"},
        {"good.png -o o.png --edge wide", 2, "--edge: 'wide'"},
        {"good.png -o o.png --strength 2", 2, "--strength"},
        {"good.png -o o.png --bogus", 2, "unknown option '--bogus'"},
        {"flat.png -o o.png", 1, "no noise measurable"},
        {". -o .", 2, "would be overwritten"},
        {"good.png -o o.png --model missing.safetensors", 1, "missing.safetensors"},
        {"good.png -o o.png --model nan.safetensors --sigma 20", 1, "not finite"},
    };
    char *out = path_in(dir, "o.png");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[1024], *err = NULL;
        snprintf(args, sizeof args, "%s%s", cases[i].args,
                 strstr(cases[i].args, "--model") ? "" : " --model m.safetensors");
        int st = at_run(app(), dir, args, NULL, &err);
        ck_assert_msg(st == cases[i].status, "'%s': exit %d, want %d; stderr: %s", args, st, cases[i].status,
                      err);
        ck_assert_msg(strstr(err, cases[i].message), "'%s': stderr lacks '%s': %s", args, cases[i].message,
                      err);
        ck_assert_msg(!at_exists(out), "'%s' left an output file", args);
        free(err);
    }
    free(out);
    free(model);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* --strength 0 returns the input: every pixel, at its bit depth and channels. */
START_TEST(test_round_trips)
{
    char *dir = tu_mkdtemp("cld-denoise-rt");
    char *model = path_in(dir, "m.safetensors");
    make_model(model, 0);
    const int chans[] = {1, 3, 4, 2}, bits[] = {16, 16, 8, 8};
    for (int k = 0; k < 4; k++) {
        char *in = path_in(dir, "in.png"), *out = path_in(dir, "out.png"), *err = NULL;
        write_png(in, 37, 23, chans[k], bits[k], 10 + k);
        int st =
            at_run(app(), dir, "in.png -o out.png --model m.safetensors --strength 0 --sigma 10", NULL, &err);
        ck_assert_msg(st == 0, "%d channels %d bits: exit %d: %s", chans[k], bits[k], st, err);
        cld_image a, b;
        TU_OK(cld_image_load(in, 0, 0, &a));
        TU_OK(cld_image_load(out, 0, 0, &b));
        ck_assert_int_eq(b.bits, bits[k]);
        ck_assert_int_eq(b.file_channels, chans[k]);
        ck_assert(a.width == b.width && a.height == b.height);
        ck_assert_msg(tu_max_abs_err(a.data, b.data, (size_t)37 * 23 * chans[k], NULL) == 0,
                      "%d channels %d bits: pixels changed", chans[k], bits[k]);
        /* and a real denoise keeps the depth, channels and the input file */
        size_t l1, l2;
        unsigned char *before = at_read_file(in, &l1);
        ck_assert_int_eq(at_run(app(), dir, "in.png -o out.png --model m.safetensors --sigma 10", NULL, NULL),
                         0);
        unsigned char *after = at_read_file(in, &l2);
        ck_assert(l1 == l2 && !memcmp(before, after, l1));
        cld_image_free(&b);
        TU_OK(cld_image_load(out, 0, 0, &b));
        ck_assert_int_eq(b.bits, bits[k]);
        ck_assert_int_eq(b.file_channels, chans[k]);
        free(before), free(after);
        cld_image_free(&a), cld_image_free(&b);
        free(in), free(out), free(err);
    }
    free(model);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* A JPEG with an EXIF APP1 segment (orientation `o`) inserted after SOI. */
static void write_jpeg_oriented(const char *path, const uint8_t *px, int w, int h, int o)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.plain", path);
    ck_assert(stbi_write_jpg(tmp, w, h, 3, px, 95));
    size_t len;
    unsigned char *j = at_read_file(tmp, &len);
    remove(tmp);
    /* "Exif\0\0", TIFF little-endian header, IFD0 of one entry: 0x0112 SHORT 1 = o, next IFD 0 */
    const unsigned char app1[] = {0xFF,
                                  0xE1,
                                  0x00,
                                  0x22,
                                  'E',
                                  'x',
                                  'i',
                                  'f',
                                  0,
                                  0,
                                  'I',
                                  'I',
                                  0x2A,
                                  0,
                                  8,
                                  0,
                                  0,
                                  0,
                                  1,
                                  0,
                                  0x12,
                                  0x01,
                                  3,
                                  0,
                                  1,
                                  0,
                                  0,
                                  0,
                                  (unsigned char)o,
                                  0,
                                  0,
                                  0,
                                  0,
                                  0,
                                  0,
                                  0};
    unsigned char *b = tu_malloc(len + sizeof app1);
    memcpy(b, j, 2);
    memcpy(b + 2, app1, sizeof app1);
    memcpy(b + 2 + sizeof app1, j + 2, len - 2);
    at_write_file(path, b, len + sizeof app1);
    free(b);
    free(j);
}

START_TEST(test_exif_orientation)
{
    char *dir = tu_mkdtemp("cld-denoise-exif");
    char *model = path_in(dir, "m.safetensors");
    make_model(model, 0);
    /* 32 x 16, stored: left half white, right half black, a grey top-left 8x8 corner */
    const int W = 32, H = 16;
    uint8_t px[32 * 16 * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++) px[(y * W + x) * 3 + c] = x < 8 && y < 8 ? 128 : x < 16 ? 255 : 0;
    /* displayed corner of the stored grey top-left, per orientation (w x h after it) */
    for (int o = 1; o <= 8; o++) {
        char *in = path_in(dir, "in.jpg"), *out = path_in(dir, "out.png");
        write_jpeg_oriented(in, px, W, H, o);
        int got = 0;
        TU_OK(cld_image_exif_orientation(in, &got));
        ck_assert_int_eq(got, o);
        char *err = NULL;
        ck_assert_int_eq(
            at_run(app(), dir, "in.jpg -o out.png --model m.safetensors --strength 0 --sigma 5", NULL, &err),
            0);
        if (o != 1) ck_assert_msg(strstr(err, "EXIF orientation"), "%s", err);
        cld_image b;
        TU_OK(cld_image_load(out, 1, 0, &b));
        const int swap = o >= 5;
        ck_assert_int_eq(b.width, swap ? H : W);
        ck_assert_int_eq(b.height, swap ? W : H);
        /* where the stored (x, y) pixel lands, as EXIF defines each value */
        const int sx = 2, sy = 3; /* inside the grey corner */
        int dx, dy;
        switch (o) {
        case 1: dx = sx, dy = sy; break;
        case 2: dx = W - 1 - sx, dy = sy; break;
        case 3: dx = W - 1 - sx, dy = H - 1 - sy; break;
        case 4: dx = sx, dy = H - 1 - sy; break;
        case 5: dx = sy, dy = sx; break;
        case 6: dx = H - 1 - sy, dy = sx; break;
        case 7: dx = H - 1 - sy, dy = W - 1 - sx; break;
        default: dx = sy, dy = W - 1 - sx; break;
        }
        const float v = b.data[dy * b.width + dx];
        ck_assert_msg(fabsf(v - 128 / 255.0f) < 0.05f, "orientation %d: displayed (%d, %d) = %g, want grey",
                      o, dx, dy, v);
        cld_image_free(&b);
        free(in), free(out), free(err);
    }
    /* a damaged EXIF block reads as no orientation */
    char *in = path_in(dir, "bad.jpg");
    write_jpeg_oriented(in, px, W, H, 6);
    size_t len;
    unsigned char *j = at_read_file(in, &len);
    memset(j + 12, 0xEE, 8); /* the TIFF header */
    at_write_file(in, j, len);
    int got = 0;
    TU_OK(cld_image_exif_orientation(in, &got));
    ck_assert_int_eq(got, 1);
    free(j);
    free(in);
    free(model);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(test_folder_and_json)
{
    char *dir = tu_mkdtemp("cld-denoise-dir");
    char *model = path_in(dir, "m.safetensors"), *sub = path_in(dir, "in"), *p;
    make_model(model, 0);
    ck_assert_int_eq(mkdir(sub, 0777), 0);
    p = path_in(sub, "a.png");
    write_png(p, 20, 20, 3, 8, 3);
    free(p);
    p = path_in(sub, "b.bmp");
    {
        uint8_t px[12 * 9];
        for (int i = 0; i < 12 * 9; i++) px[i] = (uint8_t)(60 + (i % 12) * 5 + (i / 12) * 3 + (i * 37) % 7);
        ck_assert(stbi_write_bmp(p, 12, 9, 1, px));
    }
    free(p);
    char *so = NULL, *err = NULL;
    int st = at_run(app(), dir, "in -o out --model m.safetensors --progress json --sigma 20", &so, &err);
    ck_assert_msg(st == 0, "exit %d: %s", st, err);
    ck_assert_msg(strstr(so, "\"tile\": 1") && strstr(so, "{\"out\": \"out/a.png\"}") &&
                      strstr(so, "out/b.png"),
                  "%s", so);
    ck_assert_msg(strstr(err, "s per megapixel on") && strstr(err, "device:"), "%s", err);
    ck_assert_msg(strstr(err, "estimated noise sd"), "%s", err);
    p = path_in(dir, "out/b.png");
    cld_image b;
    TU_OK(cld_image_load(p, 0, 0, &b));
    ck_assert(b.bits == 8 && b.width == 12 && b.height == 9); /* stb writes BMPs as 24-bit */
    cld_image_free(&b);
    free(p);
    free(so), free(err);
    free(sub), free(model);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("denoise_app");
    TCase *tc = tcase_create("app");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_bad_inputs);
    tcase_add_test(tc, test_round_trips);
    tcase_add_test(tc, test_exif_orientation);
    tcase_add_test(tc, test_folder_and_json);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
