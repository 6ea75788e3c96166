/* safetensors save/load of the parameter store: round trip, F16/BF16 input,
 * validation of malformed files, atomic saves. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static int contains(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

typedef struct pdecl {
    const char *name;
    int ndim;
    int shape[4];
} pdecl;

/* A conv kernel, a bias of odd length and a matrix: non-multiples of the
 * store's 32-float alignment. */
static const pdecl decls[] = {
    {"down.conv.weight", 4, {3, 5, 2, 2}},
    {"down.conv.bias", 1, {7}},
    {"proj.weight", 2, {4, 9}},
};
#define N_DECLS 3

static cld_params *make_store(uint64_t seed)
{
    cld_params *p;
    TU_OK(cld_params_create(tu_ctx(), &p));
    TU_OK(cld_params_set_seed(p, seed));
    for (int i = 0; i < N_DECLS; i++)
        TU_OK(
            cld_params_declare(p, decls[i].name, decls[i].ndim, decls[i].shape, CLD_INIT_NORMAL, 1.0f, NULL));
    TU_OK(cld_params_alloc(p));
    return p;
}

/* All values of the store, in declaration order (malloc'd). */
static float *snapshot(cld_params *p, size_t *n_out)
{
    size_t n;
    TU_OK(cld_params_count(p, NULL, &n));
    float *v = tu_malloc(n * sizeof *v), *at = v;
    int count;
    TU_OK(cld_params_count(p, &count, NULL));
    for (int i = 0; i < count; i++) {
        int nd, sh[4];
        TU_OK(cld_params_info(p, i, NULL, &nd, sh, NULL));
        TU_OK(cld_params_read(p, i, at));
        size_t k = 1;
        for (int d = 0; d < nd; d++) k *= (size_t)sh[d];
        at += k;
    }
    *n_out = n;
    return v;
}

static void assert_same(const float *a, const float *b, size_t n, const char *what)
{
    ck_assert_msg(memcmp(a, b, n * sizeof *a) == 0, "%s: values differ", what);
}

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *d = tu_malloc((size_t)n + 1);
    ck_assert(fread(d, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return d;
}

static void write_bytes(const char *path, const void *d, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert(fwrite(d, 1, n, f) == n);
    fclose(f);
}

/* A safetensors file from a header text (padded to 8 bytes) and a data section. */
static void write_st(const char *path, const char *header, const void *data, size_t data_len)
{
    size_t hl = strlen(header), padded = (hl + 7) / 8 * 8;
    unsigned char *buf = tu_malloc(8 + padded + data_len);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, header, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    if (data_len) memcpy(buf + 8 + padded, data, data_len);
    write_bytes(path, buf, 8 + padded + data_len);
    free(buf);
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = tu_malloc(n);
    snprintf(s, n, "%s/%s", dir, name);
    return s;
}

/* Remove the test directory; free its name and the file name in it. */
static void remove_dir(char *dir, char *path)
{
    tu_rm_rf(dir);
    free(dir);
    free(path);
}

/* ------------------------------------------------------------- round trip */

START_TEST(test_round_trip)
{
    char *dir = tu_mkdtemp("cld-st"), *path = join(dir, "m.safetensors");
    cld_params *a = make_store(1), *b = make_store(2);
    size_t n, nb;
    float *va = snapshot(a, &n), *vb = snapshot(b, &nb);
    ck_assert(memcmp(va, vb, n * sizeof *va) != 0); /* different seeds */
    const char *meta = "{\"format\":\"pt\",\"step\":\"1200\"}";
    TU_OK(cld_params_save(a, path, meta));

    /* the layout: u64 header length (a multiple of 8), JSON, F32 data */
    size_t len;
    unsigned char *file = read_file(path, &len);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)file[i] << (8 * i);
    ck_assert_uint_eq(hl % 8, 0);
    ck_assert_uint_eq(len, 8 + hl + n * 4);
    ck_assert_int_eq(file[8], '{');
    char *header = tu_malloc(hl + 1);
    memcpy(header, file + 8, hl);
    header[hl] = 0;
    ck_assert_msg(contains(header, "\"down.conv.weight\":{\"dtype\":\"F32\",\"shape\":[3,5,2,2],"
                                   "\"data_offsets\":[0,240]}"),
                  "%s", header);
    ck_assert_msg(
        contains(header, "\"proj.weight\":{\"dtype\":\"F32\",\"shape\":[4,9],\"data_offsets\":[268,412]}"),
        "%s", header);
    ck_assert_msg(contains(header, "\"__metadata__\":{\"format\":\"pt\",\"step\":\"1200\"}"), "%s", header);
    float first;
    memcpy(&first, file + 8 + hl, 4); /* little-endian host */
    ck_assert(first == va[0]);
    free(header);
    free(file);
    char *tmp = join(dir, "m.safetensors.tmp");
    ck_assert_msg(access(tmp, F_OK) != 0, "temporary file left behind");
    free(tmp);

    char *meta_out = NULL;
    TU_OK(cld_params_load(b, path, &meta_out));
    free(vb);
    vb = snapshot(b, &nb);
    assert_same(vb, va, n, "after load");
    ck_assert_str_eq(meta_out, meta);
    free(meta_out);
    /* without metadata: __metadata__ absent, NULL comes back */
    TU_OK(cld_params_save(a, path, NULL));
    meta_out = (char *)1;
    TU_OK(cld_params_load(b, path, &meta_out));
    ck_assert_ptr_null(meta_out);
    TU_OK(cld_params_load(b, path, NULL));
    TU_STATUS(cld_params_load(b, "/nonexistent/m.safetensors", NULL), CLD_ERR_IO);
    TU_STATUS(cld_params_save(a, path, "{\"step\": 3}"), CLD_ERR_INVALID_ARG); /* values must be strings */
    TU_STATUS(cld_params_save(a, path, "not json"), CLD_ERR_INVALID_ARG);
    free(va);
    free(vb);
    cld_params_free(a);
    cld_params_free(b);
    remove_dir(dir, path);
}
END_TEST

/* ---------------------------------------------------------- F16 and BF16 */

START_TEST(test_f16_bf16_fixture)
{
    char *dir = tu_mkdtemp("cld-st"), *path = join(dir, "half.safetensors");
    /* data section: b (BF16, 8 bytes) first, then a (F16, 12), c (F32, 8),
     * then an I64 tensor the store does not have (ignored) */
    static const unsigned char data[] = {
        /* b: BF16 1.0, -3.140625, 2^127, 2^-133 (a float subnormal) */
        0x80,
        0x3f,
        0x49,
        0xc0,
        0x00,
        0x7f,
        0x01,
        0x00,
        /* a: F16 1.0, -2.0, 0.5, 65504, 2^-24 (subnormal), -0.0 */
        0x00,
        0x3c,
        0x00,
        0xc0,
        0x00,
        0x38,
        0xff,
        0x7b,
        0x01,
        0x00,
        0x00,
        0x80,
        /* c: F32 0.1f (0x3dcccccd), -7.5f (0xc0f00000) */
        0xcd,
        0xcc,
        0xcc,
        0x3d,
        0x00,
        0x00,
        0xf0,
        0xc0,
        /* extra: I64 42 */
        42,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    };
    write_st(path,
             "{\"a\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[8,20]},"
             "\"__metadata__\":{\"source\":\"fixture\"},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
             "\"extra\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[28,36]},"
             "\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[20,28]}}",
             data, sizeof data);
    cld_params *p;
    TU_OK(cld_params_create(tu_ctx(), &p));
    int ia, ib, ic;
    TU_OK(cld_params_declare(p, "a", 2, (int[]){2, 3}, CLD_INIT_ZERO, 0, &ia));
    TU_OK(cld_params_declare(p, "b", 1, (int[]){4}, CLD_INIT_ZERO, 0, &ib));
    TU_OK(cld_params_declare(p, "c", 1, (int[]){2}, CLD_INIT_ZERO, 0, &ic));
    char *meta = NULL;
    TU_OK(cld_params_load(p, path, &meta));
    ck_assert_str_eq(meta, "{\"source\":\"fixture\"}");
    free(meta);
    float a[6], b[4], c[2];
    TU_OK(cld_params_read(p, ia, a));
    TU_OK(cld_params_read(p, ib, b));
    TU_OK(cld_params_read(p, ic, c));
    const float wa[6] = {1.0f, -2.0f, 0.5f, 65504.0f, 5.9604644775390625e-08f, -0.0f};
    const float wb[4] = {1.0f, -3.140625f, 1.7014118346046923e38f, 9.183549615799121e-41f};
    const float wc[2] = {0.1f, -7.5f};
    for (int i = 0; i < 6; i++) ck_assert_msg(a[i] == wa[i], "a[%d] = %g, want %g", i, a[i], wa[i]);
    ck_assert(signbit(a[5]));
    for (int i = 0; i < 4; i++) ck_assert_msg(b[i] == wb[i], "b[%d] = %g, want %g", i, b[i], wb[i]);
    for (int i = 0; i < 2; i++) ck_assert_msg(c[i] == wc[i], "c[%d] = %g, want %g", i, c[i], wc[i]);

    /* F16 inf and nan */
    static const unsigned char special[] = {0x00, 0x7c, 0x00, 0xfc, 0x00, 0x7e, 0x00, 0x00,
                                            0x00, 0x00, 0x00, 0x00, 0,    0,    0,    0,
                                            0,    0,    0,    0,    0,    0,    0,    0};
    write_st(path,
             "{\"a\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[12,20]},"
             "\"c\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[20,24]}}",
             special, sizeof special);
    TU_OK(cld_params_load(p, path, NULL));
    TU_OK(cld_params_read(p, ia, a));
    ck_assert(isinf(a[0]) && a[0] > 0 && isinf(a[1]) && a[1] < 0 && isnan(a[2]) && a[3] == 0.0f);
    cld_params_free(p);
    remove_dir(dir, path);
}
END_TEST

/* ------------------------------------------------------------- bad files */

START_TEST(test_truncated)
{
    char *dir = tu_mkdtemp("cld-st"), *path = join(dir, "m.safetensors"), *cut = join(dir, "cut.safetensors");
    cld_params *a = make_store(1), *b = make_store(2);
    TU_OK(cld_params_save(a, path, "{\"k\":\"v\"}"));
    size_t len, n;
    unsigned char *file = read_file(path, &len);
    float *before = snapshot(b, &n);
    const size_t cuts[] = {len - 1, len - 100, 8 + 40, 9, 7, 0};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(cut, file, cuts[i]);
        TU_STATUS(cld_params_load(b, cut, NULL), CLD_ERR_FORMAT);
        ck_assert_msg(contains(cld_last_error(), "cut.safetensors"), "%s", cld_last_error());
        float *after = snapshot(b, &n);
        assert_same(after, before, n, "store after a failed load");
        free(after);
    }
    /* one byte too many is an error too (the tensors must cover the data) */
    unsigned char *longer = tu_malloc(len + 1);
    memcpy(longer, file, len);
    longer[len] = 0;
    write_bytes(cut, longer, len + 1);
    TU_STATUS(cld_params_load(b, cut, NULL), CLD_ERR_FORMAT);
    free(longer);
    free(before);
    free(file);
    cld_params_free(a);
    cld_params_free(b);
    remove_dir(dir, path);
    free(cut);
}
END_TEST

START_TEST(test_wrong_shape_and_missing)
{
    char *dir = tu_mkdtemp("cld-st"), *path = join(dir, "m.safetensors");
    cld_params *a = make_store(1);
    TU_OK(cld_params_save(a, path, NULL));
    size_t n;
    /* proj.weight declared (9, 4) instead of (4, 9) */
    cld_params *b;
    TU_OK(cld_params_create(tu_ctx(), &b));
    TU_OK(cld_params_declare(b, "down.conv.weight", 4, (int[]){3, 5, 2, 2}, CLD_INIT_ONE, 0, NULL));
    TU_OK(cld_params_declare(b, "proj.weight", 2, (int[]){9, 4}, CLD_INIT_ONE, 0, NULL));
    TU_OK(cld_params_alloc(b));
    float *before = snapshot(b, &n);
    TU_STATUS(cld_params_load(b, path, NULL), CLD_ERR_FORMAT);
    ck_assert_msg(contains(cld_last_error(), "'proj.weight'") && contains(cld_last_error(), "(4, 9)") &&
                      contains(cld_last_error(), "(9, 4)"),
                  "%s", cld_last_error());
    float *after = snapshot(b, &n);
    assert_same(after, before, n, "store after a failed load"); /* down.conv.weight was not loaded either */
    free(after);
    free(before);
    cld_params_free(b);
    /* a tensor the file lacks */
    TU_OK(cld_params_create(tu_ctx(), &b));
    TU_OK(cld_params_declare(b, "proj.weight", 2, (int[]){4, 9}, CLD_INIT_ONE, 0, NULL));
    TU_OK(cld_params_declare(b, "head.bias", 1, (int[]){3}, CLD_INIT_ONE, 0, NULL));
    TU_STATUS(cld_params_load(b, path, NULL), CLD_ERR_FORMAT);
    ck_assert_msg(contains(cld_last_error(), "'head.bias'") && contains(cld_last_error(), "missing"), "%s",
                  cld_last_error());
    cld_params_free(b);
    cld_params_free(a);
    remove_dir(dir, path);
}
END_TEST

/* Malformed headers, each with a store holding tensor "x" (2) F32. */
START_TEST(test_bad_headers)
{
    char *dir = tu_mkdtemp("cld-st"), *path = join(dir, "bad.safetensors");
    cld_params *p;
    TU_OK(cld_params_create(tu_ctx(), &p));
    int ix;
    TU_OK(cld_params_declare(p, "x", 1, (int[]){2}, CLD_INIT_ONE, 0, &ix));
    const float data[4] = {1, 2, 3, 4};
    const struct {
        const char *header, *needle;
        size_t data_len;
    } bad[] = {
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", "JSON", 8},
        {"[1,2]", "not a JSON object", 8},
        {"{\"x\":{\"dtype\":\"F31\",\"shape\":[2],\"data_offsets\":[0,8]}}", "unknown dtype", 8},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", "need 12", 8},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", "reversed", 8},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "run past", 4},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "cover", 16},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", "hole", 16},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         "overlaps", 12},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
         "twice", 16},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", "shape[0]", 8},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", "data_offsets", 8},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2]}}", "data_offsets", 8},
        {"{\"x\":{\"shape\":[2],\"data_offsets\":[0,8]}}", "dtype", 8},
        {"{\"x\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "dtype I32", 8},
        {"{\"__metadata__\":{\"n\":3},\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         "__metadata__", 8},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x", "after the header", 8},
        /* shape product overflow: 2^31-1 cubed F32 is far past 2^64 bytes */
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2147483647,2147483647,2147483647],\"data_offsets\":[0,8]}}",
         "too large", 8},
        /* not UTF-8: a lone continuation byte, an overlong '/', a surrogate */
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"__metadata__\":{\"k\":\"\x80\"}}",
         "UTF-8", 8},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"__metadata__\":{\"k\":\"\xc0\xaf\"}}",
         "UTF-8", 8},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"__metadata__\":{\"k\":\"\xed\xa0\x80\"}}",
         "UTF-8", 8},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_st(path, bad[i].header, data, bad[i].data_len);
        TU_STATUS(cld_params_load(p, path, NULL), CLD_ERR_FORMAT);
        ck_assert_msg(contains(cld_last_error(), bad[i].needle), "case %zu: '%s' lacks '%s'", i,
                      cld_last_error(), bad[i].needle);
    }
    /* header length larger than the file / absurdly large */
    unsigned char raw[16] = {0xf0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, '{', '}'};
    write_bytes(path, raw, sizeof raw);
    TU_STATUS(cld_params_load(p, path, NULL), CLD_ERR_FORMAT);
    ck_assert_msg(contains(cld_last_error(), "header length"), "%s", cld_last_error());
    raw[0] = 9, memset(raw + 1, 0, 7);
    write_bytes(path, raw, sizeof raw);
    TU_STATUS(cld_params_load(p, path, NULL), CLD_ERR_FORMAT);
    /* a header of 100 MB + 1 in a file that holds it: over the format's limit */
    {
        const uint64_t hl = 100000001ull;
        FILE *f = fopen(path, "wb");
        ck_assert(f != NULL);
        for (int i = 0; i < 8; i++) fputc((int)(hl >> (8 * i) & 0xff), f);
        ck_assert(fseek(f, (long)hl + 7, SEEK_SET) == 0 && fputc(' ', f) != EOF); /* sparse */
        fclose(f);
        TU_STATUS(cld_params_load(p, path, NULL), CLD_ERR_FORMAT);
        ck_assert_msg(contains(cld_last_error(), "header length"), "%s", cld_last_error());
    }
    /* a valid multi-byte UTF-8 name still loads */
    write_st(
        path,
        "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"__metadata__\":{\"k\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}}",
        data, 8);
    TU_OK(cld_params_load(p, path, NULL));
    /* and a good one still loads */
    write_st(path, "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", data, 8);
    TU_OK(cld_params_load(p, path, NULL));
    float x[2];
    TU_OK(cld_params_read(p, ix, x));
    ck_assert(x[0] == 1.0f && x[1] == 2.0f);
    cld_params_free(p);
    remove_dir(dir, path);
}
END_TEST

/* ---------------------------------------------------------- atomic saves */

START_TEST(test_failed_save_keeps_old_file)
{
    char *dir = tu_mkdtemp("cld-st"), *path = join(dir, "m.safetensors"),
         *tmp = join(dir, "m.safetensors.tmp");
    cld_params *a = make_store(1), *b = make_store(2);
    TU_OK(cld_params_save(a, path, NULL));
    size_t len0, len1;
    unsigned char *old = read_file(path, &len0), *now;

    /* 1. the temporary cannot be created (a directory is in the way) */
    ck_assert_int_eq(mkdir(tmp, 0700), 0);
    TU_STATUS(cld_params_save(b, path, NULL), CLD_ERR_IO);
    ck_assert_msg(contains(cld_last_error(), "m.safetensors.tmp"), "%s", cld_last_error());
    now = read_file(path, &len1);
    ck_assert(len1 == len0 && memcmp(now, old, len0) == 0);
    free(now);
    ck_assert_int_eq(rmdir(tmp), 0);

    /* 2. writing fails half-way (file size limit: EFBIG instead of SIGXFSZ) */
    struct rlimit keep, small = {.rlim_cur = 256, .rlim_max = RLIM_INFINITY};
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &keep), 0);
    small.rlim_max = keep.rlim_max;
    signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
    cld_status s = cld_params_save(b, path, NULL);
    setrlimit(RLIMIT_FSIZE, &keep);
    signal(SIGXFSZ, SIG_DFL);
    ck_assert_msg(s == CLD_ERR_IO, "save under a 256-byte limit: %s: %s", cld_status_name(s),
                  cld_last_error());
    now = read_file(path, &len1);
    ck_assert(len1 == len0 && memcmp(now, old, len0) == 0);
    free(now);
    ck_assert_msg(access(tmp, F_OK) != 0, "the partial temporary file was left behind");

    /* 3. bad metadata: nothing is written */
    TU_STATUS(cld_params_save(b, path, "[\"a\"]"), CLD_ERR_INVALID_ARG);
    now = read_file(path, &len1);
    ck_assert(len1 == len0 && memcmp(now, old, len0) == 0);
    free(now);

    /* and a good save replaces the file */
    TU_OK(cld_params_save(b, path, NULL));
    now = read_file(path, &len1);
    ck_assert(len1 == len0 && memcmp(now, old, len0) != 0);
    free(now);
    free(old);
    cld_params_free(a);
    cld_params_free(b);
    remove_dir(dir, path);
    free(tmp);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("params_io");
    TCase *tc = tcase_create("safetensors");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_f16_bf16_fixture);
    tcase_add_test(tc, test_truncated);
    tcase_add_test(tc, test_wrong_shape_and_missing);
    tcase_add_test(tc, test_bad_headers);
    tcase_add_test(tc, test_failed_save_keeps_old_file);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
