/* Host allocation failures, every one in turn.
 *
 * The test is linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,
 * --wrap=strdup,--wrap=free and the cJSON calls that allocate
 * (test/CMakeLists.txt), so every allocation made by the library's objects
 * (and stb_image's, compiled into image.c) and every cJSON call from them
 * goes through the __wrap_ functions below, while the OpenCL driver's,
 * libjpeg's and libc's own stay untouched.
 *
 * A scenario (load a model and sample with it, read safetensors, load
 * images, a few training steps...) is run once to count its allocations,
 * A, then once for every N = 1 .. A with allocation N failing (returning
 * NULL, errno ENOMEM). Each run must either fail with a status other than
 * CLD_OK and a non-empty cld_last_error() (cleared before the run), or
 * succeed with the same result as the run without failures; and when it
 * has freed everything, no allocation made during it may still be live
 * (the wrapper tracks every pointer it handed out). Under ASan + LSan
 * (build-asan/) the same runs are checked for memory errors too.
 *
 * Two modes: "once" fails allocation N only; "from" fails N and every
 * later one, so error paths that allocate while cleaning up are exercised
 * too. Each scenario prints its allocation count and the outcomes. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <execinfo.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "apptest.h"
#include "runtime/internal.h"
#include "testutil.h"

/* ------------------------------------------------------------ the hook */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
void __wrap_free(void *p);

#define FA_CAP (1u << 20) /* pointers tracked at once */

static pthread_mutex_t fa_mu = PTHREAD_MUTEX_INITIALIZER;
static int fa_armed;     /* count and track allocations */
static long fa_count;    /* allocations since arming */
static long fa_fail_at;  /* 0: none */
static int fa_from;      /* fail fa_fail_at and every later one */
static long fa_failed;   /* allocations failed since arming */
static void **fa_ptr;    /* open addressing, linear probing */
static long *fa_seq;     /* the allocation's number */
static void **fa_caller; /* its return address */
static long fa_live;     /* tracked pointers */
static int fa_overflow;  /* the table filled up */

static size_t fa_slot(const void *p)
{
    uint64_t h = (uint64_t)(uintptr_t)p;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return (size_t)(h & (FA_CAP - 1));
}

/* CLD_FAULTS_PROFILE=1: allocations of the clean runs by caller. */
#define FA_PROF 4096
extern char __executable_start; /* the linker's: addresses relative to it go to addr2line */
static int fa_profile;
static void *fa_prof_at[FA_PROF];
static long fa_prof_n[FA_PROF];
static void fa_prof_add(void *caller) /* fa_mu held */
{
    size_t i = fa_slot(caller) & (FA_PROF - 1);
    for (int k = 0; k < FA_PROF && fa_prof_at[i] && fa_prof_at[i] != caller; k++) i = (i + 1) & (FA_PROF - 1);
    fa_prof_at[i] = caller;
    fa_prof_n[i]++;
}

static void fa_add(void *p, void *caller) /* fa_mu held */
{
    if (fa_live >= (long)(FA_CAP / 2)) {
        fa_overflow = 1;
        return;
    }
    size_t i = fa_slot(p);
    while (fa_ptr[i]) i = (i + 1) & (FA_CAP - 1);
    if (fa_profile && !fa_fail_at) fa_prof_add(caller);
    fa_ptr[i] = p;
    fa_seq[i] = fa_count;
    fa_caller[i] = caller;
    fa_live++;
}

static void fa_del(void *p) /* fa_mu held; backward-shift deletion */
{
    size_t i = fa_slot(p);
    while (fa_ptr[i] && fa_ptr[i] != p) i = (i + 1) & (FA_CAP - 1);
    if (!fa_ptr[i]) return;
    size_t j = i;
    for (;;) {
        j = (j + 1) & (FA_CAP - 1);
        if (!fa_ptr[j]) break;
        size_t k = fa_slot(fa_ptr[j]);
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
        fa_ptr[i] = fa_ptr[j];
        fa_seq[i] = fa_seq[j];
        fa_caller[i] = fa_caller[j];
        i = j;
    }
    fa_ptr[i] = NULL;
    fa_live--;
}

/* Count one allocation; 1 if it must fail. fa_mu held. */
static int fa_next_fails(void)
{
    if (!fa_armed) return 0;
    fa_count++;
    if (fa_fail_at && (fa_count == fa_fail_at || (fa_from && fa_count > fa_fail_at))) {
        fa_failed++;
        return 1;
    }
    return 0;
}

/* CLD_FAULTS_TRACE=N: print the stack of every failed allocation N (fa_mu not held). */
static void fa_trace(int failed)
{
    static long want = -1;
    if (want < 0) {
        const char *v = getenv("CLD_FAULTS_TRACE");
        want = v ? atol(v) : 0;
    }
    if (!failed || !want || fa_fail_at != want) return;
    void *frames[24];
    int n = backtrace(frames, 24);
    fprintf(stderr, "allocation %ld failed here:\n", want);
    backtrace_symbols_fd(frames, n, 2);
}

void *__wrap_malloc(size_t n)
{
    pthread_mutex_lock(&fa_mu);
    void *p = NULL;
    if (fa_next_fails()) {
        errno = ENOMEM;
    } else {
        p = __real_malloc(n);
        if (p && fa_armed) fa_add(p, __builtin_return_address(0));
    }
    pthread_mutex_unlock(&fa_mu);
    fa_trace(!p);
    return p;
}

void *__wrap_calloc(size_t n, size_t size)
{
    pthread_mutex_lock(&fa_mu);
    void *p = NULL;
    if (fa_next_fails()) {
        errno = ENOMEM;
    } else {
        p = __real_calloc(n, size);
        if (p && fa_armed) fa_add(p, __builtin_return_address(0));
    }
    pthread_mutex_unlock(&fa_mu);
    fa_trace(!p);
    return p;
}

void *__wrap_realloc(void *p, size_t n)
{
    pthread_mutex_lock(&fa_mu);
    void *q = NULL;
    if (fa_next_fails()) {
        errno = ENOMEM; /* p stays valid, as realloc leaves it */
    } else {
        q = __real_realloc(p, n);
        if (q || n == 0) {
            if (p && fa_live) fa_del(p);
            if (q && fa_armed) fa_add(q, __builtin_return_address(0));
        }
    }
    pthread_mutex_unlock(&fa_mu);
    fa_trace(!q && n);
    return q;
}

char *__wrap_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    pthread_mutex_lock(&fa_mu);
    char *d = NULL;
    if (fa_next_fails()) {
        errno = ENOMEM;
    } else {
        d = __real_malloc(n);
        if (d) {
            memcpy(d, s, n);
            if (fa_armed) fa_add(d, __builtin_return_address(0));
        }
    }
    pthread_mutex_unlock(&fa_mu);
    return d;
}

void __wrap_free(void *p)
{
    if (!p) return;
    pthread_mutex_lock(&fa_mu);
    if (fa_live) fa_del(p);
    pthread_mutex_unlock(&fa_mu);
    __real_free(p);
}

/* cJSON (a shared library) allocates one block per node and string: a
 * header's parse is thousands, all failing the same way, inside cJSON.
 * What our code must handle is the call returning NULL (false), so each
 * cJSON call that allocates counts as one allocation here; the trees
 * themselves are not tracked (LSan still sees them under ASan). */
static int fa_call_fails(void)
{
    pthread_mutex_lock(&fa_mu);
    int f = fa_next_fails();
    pthread_mutex_unlock(&fa_mu);
    return f;
}

#define FA_WRAP(ret, name, params, args, fail) \
    ret __real_##name params;                  \
    ret __wrap_##name params;                  \
    ret __wrap_##name params                   \
    {                                          \
        if (fa_call_fails()) return fail;      \
        return __real_##name args;             \
    }
FA_WRAP(cJSON *, cJSON_Parse, (const char *v), (v), NULL)
FA_WRAP(cJSON *, cJSON_ParseWithLengthOpts, (const char *v, size_t n, const char **end, cJSON_bool z),
        (v, n, end, z), NULL)
FA_WRAP(char *, cJSON_Print, (const cJSON *x), (x), NULL)
FA_WRAP(char *, cJSON_PrintUnformatted, (const cJSON *x), (x), NULL)
FA_WRAP(cJSON *, cJSON_CreateObject, (void), (), NULL)
FA_WRAP(cJSON *, cJSON_CreateArray, (void), (), NULL)
FA_WRAP(cJSON *, cJSON_CreateNumber, (double v), (v), NULL)
FA_WRAP(cJSON *, cJSON_CreateString, (const char *v), (v), NULL)
FA_WRAP(cJSON *, cJSON_CreateIntArray, (const int *v, int n), (v, n), NULL)
FA_WRAP(cJSON *, cJSON_AddNumberToObject, (cJSON * o, const char *k, double v), (o, k, v), NULL)
FA_WRAP(cJSON *, cJSON_AddStringToObject, (cJSON * o, const char *k, const char *v), (o, k, v), NULL)
FA_WRAP(cJSON *, cJSON_AddBoolToObject, (cJSON * o, const char *k, cJSON_bool v), (o, k, v), NULL)
FA_WRAP(cJSON *, cJSON_AddObjectToObject, (cJSON * o, const char *k), (o, k), NULL)
FA_WRAP(cJSON *, cJSON_AddArrayToObject, (cJSON * o, const char *k), (o, k), NULL)
FA_WRAP(cJSON_bool, cJSON_AddItemToObject, (cJSON * o, const char *k, cJSON *x), (o, k, x), 0)

static void fa_init(void)
{
    if (!fa_ptr) {
        fa_ptr = __real_calloc(FA_CAP, sizeof *fa_ptr);
        fa_seq = __real_calloc(FA_CAP, sizeof *fa_seq);
        fa_caller = __real_calloc(FA_CAP, sizeof *fa_caller);
        ck_assert(fa_ptr && fa_seq && fa_caller);
    }
    fa_profile = getenv("CLD_FAULTS_PROFILE") != NULL;
    memset(fa_prof_n, 0, sizeof fa_prof_n);
}

static void fa_arm(long fail_at, int from)
{
    pthread_mutex_lock(&fa_mu);
    fa_count = 0;
    fa_failed = 0;
    fa_fail_at = fail_at;
    fa_from = from;
    fa_armed = 1;
    pthread_mutex_unlock(&fa_mu);
}

/* Stop counting; *count, *failed: of the armed period. */
static void fa_disarm(long *count, long *failed)
{
    pthread_mutex_lock(&fa_mu);
    fa_armed = 0;
    *count = fa_count;
    *failed = fa_failed;
    pthread_mutex_unlock(&fa_mu);
}

/* Stop tracking what is live (the warm-up run's caches). */
static void fa_forget(void)
{
    pthread_mutex_lock(&fa_mu);
    memset(fa_ptr, 0, FA_CAP * sizeof *fa_ptr);
    fa_live = 0;
    pthread_mutex_unlock(&fa_mu);
}

/* Fail the test if an allocation of the armed period is still live
 * (printing up to 8: their numbers and callers, for addr2line). */
static void fa_check_no_leak(const char *scenario, long fail_at, int from)
{
    pthread_mutex_lock(&fa_mu);
    long live = fa_live;
    int shown = 0;
    char msg[1024] = "";
    size_t len = 0;
    for (size_t i = 0; i < FA_CAP && live && shown < 8; i++)
        if (fa_ptr[i]) {
            int n = snprintf(msg + len, sizeof msg - len, " #%ld from 0x%lx", fa_seq[i],
                             (long)((char *)fa_caller[i] - &__executable_start));
            if (n > 0 && (size_t)n < sizeof msg - len) len += (size_t)n;
            shown++;
        }
    int overflow = fa_overflow;
    /* forget them, so one leak is reported once */
    memset(fa_ptr, 0, FA_CAP * sizeof *fa_ptr);
    fa_live = 0;
    pthread_mutex_unlock(&fa_mu);
    ck_assert_msg(!overflow, "%s: more than %u live allocations", scenario, FA_CAP / 2);
    ck_assert_msg(live == 0, "%s: failing allocation %ld%s: %ld allocation(s) leaked:%s", scenario, fail_at,
                  from ? " and later" : "", live, msg);
}

/* ------------------------------------------------------------ scenarios */

/* A scenario: runs with the hook armed, frees all it made, returns its
 * status; *digest (when the run succeeded) summarises its result so a run
 * that survived a failed allocation can be compared with the clean run. */
typedef cld_status (*scenario_fn)(void *user, uint64_t *digest);

static uint64_t digest_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

typedef struct outcome {
    long allocations;            /* of the clean run */
    long runs, failed, survived; /* runs; failed with a status; succeeded with the clean result */
    long nomem, other;           /* errors: CLD_ERR_NOMEM, any other status */
} outcome;

/* Run `fn` clean, then with each `once_stride`-th allocation N = 1 .. A
 * failing ("once"), then with N and all later ones failing ("from", every
 * `from_stride`-th N). CLD_FAULTS_FULL=1 makes both strides 1. */
static void run_every_n(const char *name, scenario_fn fn, void *user, long once_stride, long from_stride,
                        outcome *o)
{
    const char *full = getenv("CLD_FAULTS_FULL");
    if (full && *full && strcmp(full, "0") != 0) once_stride = from_stride = 1;
    memset(o, 0, sizeof *o);
    fa_init();
    long count, failed;
    uint64_t clean = 0, d;
    /* a warm-up run: caches of the context (kernels, GEMM plans) belong to it, not the scenario */
    fa_arm(0, 0);
    cld_status s = fn(user, &clean);
    fa_disarm(&count, &failed);
    ck_assert_msg(s == CLD_OK, "%s: the clean run failed: %s: %s", name, cld_status_name(s),
                  cld_last_error());
    fa_forget();
    fa_arm(0, 0);
    s = fn(user, &clean);
    fa_disarm(&count, &failed);
    ck_assert_msg(s == CLD_OK, "%s: the clean run failed: %s: %s", name, cld_status_name(s),
                  cld_last_error());
    fa_check_no_leak(name, 0, 0);
    o->allocations = count;
    double t0 = tu_now(), shown = t0;
    fprintf(stderr, "%s: %ld allocations in the clean run\n", name, count);
    for (int i = 0; i < FA_PROF && fa_profile; i++)
        if (fa_prof_n[i] > 0)
            fprintf(stderr, "  %ld from 0x%lx\n", fa_prof_n[i] / 2,
                    (long)((char *)fa_prof_at[i] - &__executable_start));
    for (int from = 0; from <= 1; from++) {
        for (long n = 1;; n += from ? from_stride : once_stride) {
            cld__fail(CLD_OK, "%s", ""); /* a stale message would hide a missing one */
            fa_arm(n, from);
            d = 0;
            s = fn(user, &d);
            fa_disarm(&count, &failed);
            if (failed == 0) break; /* past the last allocation */
            if (tu_now() - shown > 30) {
                shown = tu_now();
                fprintf(stderr, "  %s: at allocation %ld%s of %ld, %.0f s\n", name, n, from ? "+" : "",
                        o->allocations, shown - t0);
            }
            o->runs++;
            fa_check_no_leak(name, n, from);
            if (s == CLD_OK) {
                ck_assert_msg(
                    d == clean,
                    "%s: failing allocation %ld%s: CLD_OK but a different result (a failure reported as another error?)",
                    name, n, from ? " and later" : "");
                o->survived++;
            } else {
                const char *msg = cld_last_error();
                ck_assert_msg(msg && *msg, "%s: failing allocation %ld%s: %s with no error message", name, n,
                              from ? " and later" : "", cld_status_name(s));
                o->failed++;
                if (s == CLD_ERR_NOMEM)
                    o->nomem++;
                else
                    o->other++;
                if (s != CLD_ERR_NOMEM && getenv("CLD_FAULTS_VERBOSE"))
                    fprintf(stderr, "  %s #%ld%s: %s: %s\n", name, n, from ? "+" : "", cld_status_name(s),
                            msg);
            }
        }
    }
    fprintf(
        stderr,
        "%s: %ld allocations; N stride %ld (once), %ld (N and later); %ld runs with allocation(s) failed: %ld "
        "errors (%ld CLD_ERR_NOMEM, %ld other), %ld survived with the clean result; %.1f s\n",
        name, o->allocations, once_stride, from_stride, o->runs, o->failed, o->nomem, o->other, o->survived,
        tu_now() - t0);
    ck_assert_msg(o->allocations > 0, "%s: no allocation counted: is the test linked with --wrap?", name);
}

/* Files made once per test by cld-train: a tiny model and its state. */
typedef struct fixture {
    char *dir, *model, *state, *images, *labels;
    cld_unet_config cfg; /* the model's */
    cld_model_meta meta; /* the model's */
    cld_ctx *ctx;
} fixture;

#define TINY                                                                                         \
    "--base 8 --mult 1,2 --res-blocks 1 --attn 4 --groups 4 --T 100 --batch 4 --warmup 2 --val-n 8 " \
    "--grid-every 0 --progress none"

static void write_idx(const char *path, int ndim, int n) { at_write_idx(path, ndim, n, 12345); }

static void fixture_make(fixture *f)
{
    f->dir = tu_mkdtemp("cld-faults");
    f->images = at_path(f->dir, "train-images-idx3-ubyte");
    f->labels = at_path(f->dir, "train-labels-idx1-ubyte");
    write_idx(f->images, 3, 16);
    write_idx(f->labels, 1, 16);
    char *p;
    write_idx(p = at_path(f->dir, "t10k-images-idx3-ubyte"), 3, 8), free(p);
    write_idx(p = at_path(f->dir, "t10k-labels-idx1-ubyte"), 1, 8), free(p);
    char *err = NULL;
    int st = at_run(at_app("cld-train", "CLD_TRAIN"), f->dir,
                    "--data train-images-idx3-ubyte " TINY " --steps 1 --val-every 0 --out run", NULL, &err);
    ck_assert_msg(st == 0, "cld-train: %s", err);
    free(err);
    f->model = at_path(f->dir, "run/model.safetensors");
    f->state = at_path(f->dir, "run/state-000000001.safetensors");
    ck_assert(at_exists(f->model) && at_exists(f->state));
    char *meta = NULL;
    cld_model_meta mm;
    TU_OK(cld_safetensors_metadata(f->state, &meta));
    TU_OK(cld_model_meta_from_json(meta, &mm));
    free(meta);
    f->cfg = mm.unet;
    f->meta = mm;
    TU_OK(cld_ctx_create(NULL, &f->ctx));
}

static void fixture_free(fixture *f)
{
    cld_ctx_free(f->ctx);
    tu_rm_rf(f->dir);
    free(f->dir);
    free(f->model);
    free(f->state);
    free(f->images);
    free(f->labels);
}

/* Load the model file and sample one image with 2 DDIM steps. */
static cld_status sc_model(void *user, uint64_t *digest)
{
    fixture *f = user;
    cld_model *m = NULL;
    float out[64];
    cld_status s = cld_model_load(f->ctx, f->model, &m);
    cld_sample_spec spec;
    if (!s) s = cld_sample_spec_default(&spec);
    if (!s) {
        s = cld_sampler_opts_default(CLD_SAMPLER_DDIM, &spec.opts);
        spec.opts.steps = 2;
        spec.n = 1;
        spec.seed = 7;
        spec.batch = 1;
    }
    if (!s) s = cld_model_sample(m, &spec, out);
    if (!s) *digest = digest_bytes(0xcbf29ce484222325ull, out, sizeof out);
    if (m) cld_model_free(m);
    return s;
}

/* The state file: its metadata, one tensor, and all of it into two stores. */
static cld_status sc_safetensors(void *user, uint64_t *digest)
{
    fixture *f = user;
    char *meta = NULL;
    float *data = NULL;
    int nd, shape[CLD_MAX_DIMS];
    cld_model_meta mm;
    cld_params *p = NULL, *ema = NULL;
    cld_unet_runner *r = NULL;
    cld_status s = cld_safetensors_metadata(f->state, &meta);
    if (!s) s = cld_model_meta_from_json(meta, &mm);
    if (!s) s = cld_safetensors_read(f->state, "ema.conv_out.bias", &nd, shape, &data);
    if (!s) s = cld_params_create(f->ctx, &p);
    if (!s) s = cld_unet_runner_create(f->ctx, p, &mm.unet, 1, &r);
    if (!s) s = cld_params_clone(p, &ema);
    if (!s) s = cld_params_alloc(ema);
    if (!s) s = cld_params_load_state(p, ema, f->state, NULL);
    float w[8] = {0};
    int idx;
    if (!s) s = cld_params_find(ema, "conv_out.bias", &idx);
    if (!s) s = cld_params_read(ema, idx, w);
    if (!s) {
        *digest = digest_bytes(0xcbf29ce484222325ull, data, (size_t)shape[0] * sizeof *data);
        *digest = digest_bytes(*digest, w, sizeof w);
        *digest = digest_bytes(*digest, meta, strlen(meta));
    }
    free(data);
    free(meta);
    cld_unet_runner_free(r);
    cld_params_free(p);
    cld_params_free(ema);
    return s;
}

/* Every image of the fuzz corpus: info, load, EXIF orientation; a PNG with
 * a text chunk written and read back. Files the loader refuses (the bomb,
 * the regression seeds) count as results too: their status is digested. */
static cld_status sc_images(void *user, uint64_t *digest)
{
    fixture *f = user;
    static const char *const files[] = {
        "bmp-rgb.bmp",  "bomb.png",  "jpeg-l.jpg",  "jpeg-rgb.jpg",        "png-l.png", "png-rgb.png",
        "png-rgba.png", "png16.png", "ppm-rgb.ppm", "regress-dht-eof.jpg", "text.png",  "tga-rgb.tga",
    };
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/test/fuzz/corpus/image/%s", CLD_SOURCE_DIR, files[i]);
        int w = 0, hh = 0, c = 0, orient = 1;
        cld_status s = cld_image_info(path, &w, &hh, &c);
        if (s == CLD_ERR_NOMEM) return s;
        int info[4] = {(int)s, w, hh, c};
        h = digest_bytes(h, info, sizeof info);
        cld_image img = {0};
        s = cld_image_load(path, 0, (size_t)1 << 22, &img);
        if (s == CLD_ERR_NOMEM) return s;
        if (s && getenv("CLD_FAULTS_VERBOSE"))
            fprintf(stderr, "    #%ld %s: %s\n", fa_fail_at, files[i], cld_last_error());
        h = digest_bytes(h, &s, sizeof s);
        if (s == CLD_OK) {
            h = digest_bytes(h, img.data, (size_t)img.width * img.height * img.channels * sizeof *img.data);
            cld_image_free(&img);
        }
        if (strstr(files[i], ".jpg")) {
            s = cld_image_exif_orientation(path, &orient);
            if (s == CLD_ERR_NOMEM) return s;
            h = digest_bytes(h, &s, sizeof s);
            h = digest_bytes(h, &orient, sizeof orient);
        }
    }
    /* PNG with text, written and read back */
    uint8_t px[4 * 4 * 3];
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 7);
    char path[4096], *text = NULL;
    snprintf(path, sizeof path, "%s/text-out.png", f->dir);
    const char *keys[] = {"cld.recipe"}, *vals[] = {"{\"a\": 1}"};
    cld_status s = cld_png_write(path, 4, 4, 3, 8, px, 1, keys, vals);
    if (!s) s = cld_png_read_text(path, "cld.recipe", &text);
    if (!s) h = digest_bytes(h, text, strlen(text));
    free(text);
    if (!s) *digest = h;
    return s;
}

/* A training run: the IDX data set and its loader thread, the training
 * graph with its backward pass and plan, 2 AdamW steps with EMA, and the
 * state saved. */
static cld_status sc_train(void *user, uint64_t *digest)
{
    fixture *f = user;
    cld_dataset *ds = NULL;
    cld_loader *ld = NULL;
    cld_params *p = NULL, *ema = NULL;
    cld_graph *g = NULL;
    cld_tensor *x, *t, *pred, *eps, *loss;
    const int B = 2;
    int xs[4] = {B, 1, 8, 8}, ts[1] = {B}, labels[2];
    float hx[2 * 64], ht[2] = {3, 60}, he[2 * 64], lv = 0;
    cld_plan_stats st;
    char path[4096];
    snprintf(path, sizeof path, "%s/train-state.safetensors", f->dir);
    cld_unet_config cfg = f->cfg; /* the tiny model's, unconditional */
    cfg.num_classes = 0;
    cfg.dropout = 0;
    cld_status s = cld_dataset_open_idx(f->images, f->labels, &ds);
    if (!s) s = cld_loader_create(ds, B, NULL, 5, 0, &ld);
    if (!s) s = cld_params_create(f->ctx, &p);
    if (!s) s = cld_params_set_seed(p, 11);
    if (!s) s = cld_graph_create(f->ctx, p, &g);
    if (!s) s = cld_graph_input(g, "x_t", 4, xs, 0, &x);
    if (!s) s = cld_graph_input(g, "t", 1, ts, 0, &t);
    if (!s) s = cld_unet_build(g, &cfg, x, t, NULL, &pred);
    if (!s) s = cld_graph_input(g, "eps", 4, xs, 0, &eps);
    if (!s) s = cld_op_mse_loss(g, pred, eps, NULL, &loss);
    if (!s) s = cld_graph_set_output(g, loss);
    if (!s) s = cld_graph_backward(g, loss);
    if (!s) s = cld_graph_plan(g, &st);
    if (!s) s = cld_params_clone(p, &ema);
    if (!s) s = cld_params_alloc(ema);
    if (!s) s = cld_params_copy(ema, p);
    for (int step = 1; step <= 2 && !s; step++) {
        uint64_t g0;
        s = cld_loader_next(ld, hx, labels, &g0);
        for (int i = 0; i < B * 64; i++) he[i] = 0.5f * hx[(i * 7) % (B * 64)];
        if (!s) s = cld_tensor_write(g, x, hx);
        if (!s) s = cld_tensor_write(g, t, ht);
        if (!s) s = cld_tensor_write(g, eps, he);
        if (!s) s = cld_params_zero_grad(p);
        if (!s) s = cld_graph_run(g);
        if (!s) s = cld_tensor_read(g, loss, &lv);
        if (!s) s = cld_params_adamw(p, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, step);
        if (!s) s = cld_params_ema_update(ema, p, 0.9f);
    }
    if (!s) s = cld_params_save_state(p, ema, path, "{\"cld.test\": \"faults\"}");
    float w[8];
    int idx;
    if (!s) s = cld_params_find(ema, "conv_out.bias", &idx);
    if (!s) s = cld_params_read(ema, idx, w);
    if (!s) *digest = digest_bytes(digest_bytes(0xcbf29ce484222325ull, &lv, sizeof lv), w, sizeof w);
    cld_graph_free(g);
    cld_params_free(p);
    cld_params_free(ema);
    cld_loader_free(ld);
    cld_dataset_free(ds);
    return s;
}

/* The model's metadata and UNet config to JSON and back. */
static cld_status sc_json(void *user, uint64_t *digest)
{
    fixture *f = user;
    char *meta = NULL, *unet = NULL;
    cld_model_meta back;
    cld_unet_config cfg;
    cld_status s = cld_model_meta_to_json(&f->meta, &meta);
    if (!s) s = cld_model_meta_from_json(meta, &back);
    if (!s) s = cld_unet_config_to_json(&f->cfg, &unet);
    if (!s) s = cld_unet_config_from_json(unet, &cfg);
    if (!s) {
        *digest = digest_bytes(0xcbf29ce484222325ull, meta, strlen(meta));
        *digest = digest_bytes(*digest, unet, strlen(unet));
        *digest = digest_bytes(*digest, &back.n_class_names, sizeof back.n_class_names);
        *digest = digest_bytes(*digest, &cfg.base_channels, sizeof cfg.base_channels);
    }
    free(meta);
    free(unet);
    return s;
}

/* A context of its own: created, a kernel built and run, freed. */
static cld_status sc_ctx(void *user, uint64_t *digest)
{
    (void)user;
    cld_ctx *ctx = NULL;
    cld_params *p = NULL;
    cld_graph *g = NULL;
    cld_tensor *a, *y;
    int shape[1] = {4};
    float in[4] = {1, -2, 3, -4}, out[4] = {0};
    cld_status s = cld_ctx_create(NULL, &ctx);
    if (!s) s = cld_params_create(ctx, &p);
    if (!s) s = cld_graph_create(ctx, p, &g);
    if (!s) s = cld_graph_input(g, "a", 1, shape, 0, &a);
    if (!s) s = cld_op_silu(g, a, &y);
    if (!s) s = cld_graph_set_output(g, y);
    if (!s) s = cld_graph_plan(g, NULL);
    if (!s) s = cld_tensor_write(g, a, in);
    if (!s) s = cld_graph_run(g);
    if (!s) s = cld_tensor_read(g, y, out);
    if (!s) *digest = digest_bytes(0xcbf29ce484222325ull, out, sizeof out);
    cld_graph_free(g);
    cld_params_free(p);
    cld_ctx_free(ctx);
    return s;
}

/* ------------------------------------------------------------ tests */

/* Under ASan a training run costs ~7x: CI's sanitizer pass tries every
 * 7th N of it (CLD_FAULTS_FULL=1: all; README's Hardening table has the
 * full counts). */
#if defined(__SANITIZE_ADDRESS__)
#define FA_SLOW 7
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FA_SLOW 7
#endif
#endif
#ifndef FA_SLOW
#define FA_SLOW 1
#endif

START_TEST(test_alloc_model)
{
    fixture f;
    fixture_make(&f);
    outcome o;
    run_every_n("model load + sample", sc_model, &f, 1, 1, &o);
    fixture_free(&f);
}
END_TEST

START_TEST(test_alloc_safetensors)
{
    fixture f;
    fixture_make(&f);
    outcome o;
    run_every_n("safetensors", sc_safetensors, &f, 1, 1, &o);
    fixture_free(&f);
}
END_TEST

START_TEST(test_alloc_json)
{
    fixture f;
    fixture_make(&f);
    outcome o;
    run_every_n("model metadata JSON", sc_json, &f, 1, 1, &o);
    fixture_free(&f);
}
END_TEST

START_TEST(test_alloc_images)
{
    fixture f;
    fixture_make(&f);
    outcome o;
    run_every_n("images", sc_images, &f, 1, 1, &o);
    fixture_free(&f);
}
END_TEST

START_TEST(test_alloc_train)
{
    fixture f;
    fixture_make(&f);
    outcome o;
    run_every_n("training steps", sc_train, &f, FA_SLOW, 7 * FA_SLOW, &o);
    fixture_free(&f);
}
END_TEST

START_TEST(test_alloc_ctx)
{
    outcome o;
    run_every_n("context", sc_ctx, NULL, 1, 1, &o);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("faults_alloc");
    TCase *tc = tcase_create("alloc");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, test_alloc_ctx);
    tcase_add_test(tc, test_alloc_safetensors);
    tcase_add_test(tc, test_alloc_json);
    tcase_add_test(tc, test_alloc_images);
    tcase_add_test(tc, test_alloc_model);
    tcase_add_test(tc, test_alloc_train);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
