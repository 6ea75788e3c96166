/* Runtime: device selection, errors, kernel build and launch, the disk
 * kernel cache, and the CLBlast GEMM wrappers. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/blas.h"
#include "runtime/internal.h"
#include "testutil.h"

/* Each cache test starts from a clean environment and its own cache dir,
 * with the disk cache on (CLD_CACHE=1: by default it is off on PoCL, which
 * caches compiled kernels itself; see test_cache_default_per_driver). */
static char *fresh_cache_env(void)
{
    unsetenv("CLD_FORBID_COMPILE");
    unsetenv("CLD_KERNEL_DIR");
    setenv("CLD_CACHE", "1", 1);
    char *dir = tu_mkdtemp("cld-test-cache");
    setenv("CLD_CACHE_DIR", dir, 1);
    return dir;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

/* Number of "*.bin" files in dir; the path of the last one in `path`. */
static int cache_files(const char *dir, char *path, size_t cap)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".bin") == 0) {
            n++;
            if (path) snprintf(path, cap, "%s/%s", dir, e->d_name);
        }
    }
    closedir(d);
    return n;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* A fresh context that gets the self-test kernel; returns its stats. */
static cld_status selftest_in_new_ctx(cld_compile_stats *stats, float *value_out)
{
    cld_ctx *ctx = NULL;
    cld_status s = cld_ctx_create(NULL, &ctx);
    if (s != CLD_OK) return s;
    cl_kernel k = NULL;
    s = cld__kernel(ctx, "runtime_selftest", "fill", &k);
    if (s == CLD_OK && value_out) {
        cl_mem buf = NULL;
        TU_OK(cld_buffer_alloc(ctx, sizeof(float), &buf));
        TU_OK(cld__kargs(k, "fill", "bfu", buf, 2.5, 1u));
        size_t g = 1;
        TU_OK(cld__launch(ctx, k, "fill", 1, &g, NULL));
        TU_OK(cld_buffer_read(ctx, buf, 0, sizeof(float), value_out));
        cld_buffer_release(buf);
    }
    if (stats) cld_ctx_compile_stats(ctx, stats);
    cld_ctx_free(ctx);
    return s;
}

/* ---------------------------------------------------------------- status */
START_TEST(test_status_names)
{
    ck_assert_str_eq(cld_status_name(CLD_OK), "CLD_OK");
    ck_assert_str_eq(cld_status_name(CLD_ERR_SHAPE), "CLD_ERR_SHAPE");
    ck_assert_str_eq(cld_status_name((cld_status)12345), "CLD_ERR_UNKNOWN");
    ck_assert_str_eq(cld_cl_error_name(CL_OUT_OF_RESOURCES), "CL_OUT_OF_RESOURCES");
    ck_assert_str_eq(cld_cl_error_name(CL_INVALID_DEVICE_PARTITION_COUNT),
                     "CL_INVALID_DEVICE_PARTITION_COUNT");
    ck_assert_str_eq(cld_cl_error_name(-9999), "CL_UNKNOWN_ERROR");
    ck_assert_int_eq(cld__cl_check(CL_INVALID_KERNEL_ARGS, "clFoo"), CLD_ERR_OPENCL);
    ck_assert_str_eq(cld_last_error(), "clFoo: CL_INVALID_KERNEL_ARGS (-52)");
    ck_assert_int_eq(cld__cl_check(CL_SUCCESS, "clFoo"), CLD_OK);

    uint64_t a = 7, b = 7;
    ck_assert(cld__splitmix64(&a) == cld__splitmix64(&b));
    double sum = 0, sq = 0;
    for (int i = 0; i < 20000; i++) {
        double u = cld__rand_uniform(&a);
        ck_assert(u >= 0 && u < 1);
        double z = cld__rand_normal(&b);
        sum += z;
        sq += z * z;
    }
    ck_assert_msg(sum / 20000 > -0.05 && sum / 20000 < 0.05, "normal mean %g", sum / 20000);
    ck_assert_msg(sq / 20000 > 0.95 && sq / 20000 < 1.05, "normal var %g", sq / 20000);
}
END_TEST

/* ---------------------------------------------------------------- devices */
START_TEST(test_device_info)
{
    int n = 0, def = -1;
    TU_OK(cld_device_count(&n));
    ck_assert_int_gt(n, 0);
    TU_OK(cld_device_default(&def));
    ck_assert(def >= 0 && def < n);
    for (int i = 0; i < n; i++) {
        cld_device_info info;
        TU_OK(cld_device_info_get(i, &info));
        ck_assert_int_eq(info.index, i);
        ck_assert(info.name[0] && info.platform_name[0] && info.device_version[0]);
        ck_assert(info.compute_units > 0 && info.global_mem_bytes > 0);
        ck_assert(info.max_alloc_bytes > 0 && info.max_work_group_size > 0);
        ck_assert(info.device != NULL && info.platform != NULL);
    }
    cld_device_info info;
    TU_STATUS(cld_device_info_get(n, &info), CLD_ERR_NO_DEVICE);
}
END_TEST

START_TEST(test_select_by_index)
{
    unsetenv("CLD_DEVICE");
    int n = 0, idx = -1;
    TU_OK(cld_device_count(&n));
    TU_OK(cld_device_select("0", &idx));
    ck_assert_int_eq(idx, 0);
    char spec[16];
    snprintf(spec, sizeof spec, "%d", n - 1);
    TU_OK(cld_device_select(spec, &idx));
    ck_assert_int_eq(idx, n - 1);
    snprintf(spec, sizeof spec, "%d", n);
    TU_STATUS(cld_device_select(spec, &idx), CLD_ERR_NO_DEVICE);

    int def = -1;
    TU_OK(cld_device_default(&def));
    TU_OK(cld_device_select(NULL, &idx));
    ck_assert_int_eq(idx, def);
    TU_OK(cld_device_select("", &idx));
    ck_assert_int_eq(idx, def);
}
END_TEST

START_TEST(test_select_by_name)
{
    int n = 0, idx = -1;
    TU_OK(cld_device_count(&n));
    int last = n - 1;
    cld_device_info info;
    TU_OK(cld_device_info_get(last, &info));
    /* Upper-cased full "platform / device" matches, case-insensitively. */
    char spec[300];
    snprintf(spec, sizeof spec, "%s / %s", info.platform_name, info.name);
    for (char *p = spec; *p; p++) *p = (char)toupper((unsigned char)*p);
    TU_OK(cld_device_select(spec, &idx));
    ck_assert_int_eq(idx, last);
    /* A lower-cased middle part of the device name picks the first device with it. */
    size_t len = strlen(info.name);
    snprintf(spec, sizeof spec, "%.*s", (int)(len > 6 ? 6 : len), info.name + (len > 8 ? 2 : 0));
    for (char *p = spec; *p; p++) *p = (char)tolower((unsigned char)*p);
    TU_OK(cld_device_select(spec, &idx));
    cld_device_info got;
    TU_OK(cld_device_info_get(idx, &got));
    char full[300];
    snprintf(full, sizeof full, "%s / %s", got.platform_name, got.name);
    for (char *p = full; *p; p++) *p = (char)tolower((unsigned char)*p);
    ck_assert_msg(strstr(full, spec) != NULL, "'%s' picked '%s'", spec, full);
    ck_assert_int_le(idx, last);
}
END_TEST

START_TEST(test_select_by_type)
{
    int n = 0, idx = -1;
    TU_OK(cld_device_count(&n));
    int first_cpu = -1, first_gpu = -1;
    for (int i = 0; i < n; i++) {
        cld_device_info info;
        TU_OK(cld_device_info_get(i, &info));
        if (info.is_cpu && first_cpu < 0) first_cpu = i;
        if (info.is_gpu && first_gpu < 0) first_gpu = i;
    }
    /* "cpu" and "gpu" (any case) pick the first device of that type, or fail. */
    ck_assert_int_eq(cld_device_select("CPU", &idx), first_cpu >= 0 ? CLD_OK : CLD_ERR_NO_DEVICE);
    if (first_cpu >= 0) ck_assert_int_eq(idx, first_cpu);
    ck_assert_int_eq(cld_device_select("gpu", &idx), first_gpu >= 0 ? CLD_OK : CLD_ERR_NO_DEVICE);
    if (first_gpu >= 0)
        ck_assert_int_eq(idx, first_gpu);
    else
        ck_assert_ptr_nonnull(strstr(cld_last_error(), "available devices"));
}
END_TEST

START_TEST(test_select_by_env)
{
    int n = 0, idx = -1;
    TU_OK(cld_device_count(&n));
    cld_device_info info;
    TU_OK(cld_device_info_get(n - 1, &info));
    char spec[16];
    snprintf(spec, sizeof spec, "%d", n - 1);
    setenv("CLD_DEVICE", spec, 1);
    TU_OK(cld_device_select(NULL, &idx));
    ck_assert_int_eq(idx, n - 1);
    cld_ctx *ctx = NULL;
    TU_OK(cld_ctx_create(NULL, &ctx));
    cld_device_info got;
    TU_OK(cld_ctx_device_info(ctx, &got));
    ck_assert_str_eq(got.name, info.name);
    ck_assert(cld_ctx_cl_context(ctx) != NULL && cld_ctx_queue(ctx) != NULL);
    /* The queue is in-order. */
    cl_command_queue_properties props = 0;
    ck_assert_int_eq(
        clGetCommandQueueInfo(cld_ctx_queue(ctx), CL_QUEUE_PROPERTIES, sizeof props, &props, NULL),
        CL_SUCCESS);
    ck_assert(!(props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE));
    TU_OK(cld_ctx_finish(ctx));
    TU_OK(cld_ctx_free(ctx));

    /* An explicit spec wins over CLD_DEVICE; cld_device_default ignores it. */
    TU_OK(cld_device_select("0", &idx));
    ck_assert_int_eq(idx, 0);

    setenv("CLD_DEVICE", "no-such-device-from-env", 1);
    TU_STATUS(cld_device_select(NULL, &idx), CLD_ERR_NO_DEVICE);
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "CLD_DEVICE"));
    TU_STATUS(cld_ctx_create(NULL, &ctx), CLD_ERR_NO_DEVICE);
    ck_assert_ptr_null(ctx);
    unsetenv("CLD_DEVICE");
}
END_TEST

START_TEST(test_unknown_device_lists_devices)
{
    int idx = -1, n = 0;
    TU_STATUS(cld_device_select("definitely-not-a-device", &idx), CLD_ERR_NO_DEVICE);
    const char *msg = cld_last_error();
    ck_assert_ptr_nonnull(strstr(msg, "definitely-not-a-device"));
    TU_OK(cld_device_count(&n));
    char line[300];
    for (int i = 0; i < n; i++) {
        cld_device_info info;
        TU_OK(cld_device_info_get(i, &info));
        snprintf(line, sizeof line, "  [%d] %s / %s", i, info.platform_name, info.name);
        TU_STATUS(cld_device_select("definitely-not-a-device", &idx), CLD_ERR_NO_DEVICE);
        ck_assert_msg(strstr(cld_last_error(), line) != NULL, "'%s' not in: %s", line, cld_last_error());
    }
}
END_TEST

/* Without any ICD the library says which package to install. Needs a fresh
 * process (the ICD loader reads its config once), so only in fork mode. */
START_TEST(test_no_platform)
{
    const char *fork_mode = getenv("CK_FORK");
    if (fork_mode && strcmp(fork_mode, "no") == 0) return;
    char *empty = tu_mkdtemp("cld-no-icd");
    setenv("OCL_ICD_VENDORS", empty, 1);
    unsetenv("OCL_ICD_FILENAMES");
    int n = 0;
    cld_status s = cld_device_count(&n);
    if (s == CLD_OK) { /* a loader that ignores OCL_ICD_VENDORS: cannot simulate */
        tu_rm_rf(empty);
        free(empty);
        return;
    }
    ck_assert_int_eq(s, CLD_ERR_NO_PLATFORM);
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "pocl-opencl-icd"));
    cld_ctx *ctx = NULL;
    TU_STATUS(cld_ctx_create(NULL, &ctx), CLD_ERR_NO_PLATFORM);
    tu_rm_rf(empty);
    free(empty);
}
END_TEST

/* ---------------------------------------------------------------- kernels */
/* Issue 15: the launch configuration is chosen once per context from the
 * device, in one place; CLD_FORCE_GPU_PATH=1 takes the GPU choices on a CPU
 * device (each setting asserted), and cld_ctx_launch_config says which. */
START_TEST(test_launch_config_gpu_path)
{
    unsetenv("CLD_FORCE_GPU_PATH");
    unsetenv("CLD_LAUNCH1D_LS");
    unsetenv("CLD_LAUNCH1D_GROUPS");
    unsetenv("CLD_REDUCE_LS");
    unsetenv("CLD_GEMM");
    char text[2048];
    for (int force = 0; force < 2; force++) {
        if (force) setenv("CLD_FORCE_GPU_PATH", "1", 1);
        cld_ctx *ctx;
        TU_OK(cld_ctx_create(NULL, &ctx));
        const cld__settings *st = &ctx->settings;
        size_t cu = ctx->info.compute_units ? ctx->info.compute_units : 1;
        TU_OK(cld_ctx_launch_config(ctx, text, sizeof text));
        fprintf(stderr, "%s", text);
        if (ctx->info.is_cpu && !force) { /* PoCL's values, as before the switch existed */
            ck_assert_int_eq(st->gpu_path, 0);
            ck_assert_uint_eq(st->launch1d_ls, 1);
            ck_assert_uint_eq(st->launch1d_groups, 8 * cu);
            ck_assert_uint_eq(st->reduce_ls, 1);
            ck_assert_int_eq(st->gemm_backend, CLD__GEMM_OWN);
            ck_assert_int_eq(st->wino_blas, 0);
            ck_assert(strstr(text, "CPU path (CPU device)"));
        } else {
            ck_assert_int_eq(st->gpu_path, 1);
            ck_assert_uint_eq(st->launch1d_ls, 64);
            ck_assert_uint_eq(st->launch1d_groups, 1024 * cu);
            ck_assert_uint_eq(st->reduce_ls, 64);
            ck_assert_int_eq(st->gemm_backend, CLD__GEMM_CLBLAST);
            ck_assert_int_eq(st->wino_blas, 1);
            ck_assert(strstr(text, "GPU path"));
            if (ctx->info.is_cpu) ck_assert(strstr(text, "CLD_FORCE_GPU_PATH=1"));
        }
        TU_STATUS(cld_ctx_launch_config(ctx, NULL, 10), CLD_ERR_INVALID_ARG);
        cld_ctx_free(ctx);
    }
    unsetenv("CLD_FORCE_GPU_PATH");
}
END_TEST

/* The prelude's inline exp (the SiLU's sigmoid, cl/prelude.cl) against
 * double exp over its whole range [-87, 88], in float8 and scalar form:
 * at most 4e-7 relative error (measured 2.27e-7 on PoCL); clamped outside. */
START_TEST(test_prelude_exp)
{
    cld_ctx *ctx = NULL;
    TU_OK(cld_ctx_create(NULL, &ctx));
    cl_kernel k = NULL;
    TU_OK(cld__kernel(ctx, "runtime_selftest", "prelude_exp", &k));
    enum { N = 8 * 40000 };
    float *x = tu_malloc(N * sizeof *x), *y = tu_malloc(N * sizeof *y), *z = tu_malloc(N * sizeof *z);
    float *u = tu_rand_uniform(N, 7, 0.0f, 1.0f);
    for (int i = 0; i < N; i++) /* a grid over [-87, 88] with random offsets, then special points */
        x[i] = (float)(-87.0 + 175.0 * (i + (double)u[i]) / N);
    free(u);
    const float special[] = {0.0f,         -0.0f, 1e-8f, -1e-8f, 0.34657359f,
                             -0.34657359f, 1.0f,  -1.0f, 88.0f,  -87.0f};
    memcpy(x, special, sizeof special);
    x[N - 2] = 200.0f;  /* clamped to 88 */
    x[N - 1] = -200.0f; /* clamped to -87 */
    cl_mem bx = tu_upload(ctx, x, N), by = NULL, bz = NULL;
    TU_OK(cld_buffer_alloc(ctx, N * sizeof(float), &by));
    TU_OK(cld_buffer_alloc(ctx, N * sizeof(float), &bz));
    TU_OK(cld__kargs(k, "test prelude_exp", "bbbi", bx, by, bz, N / 8));
    size_t g = N / 8;
    TU_OK(cld__launch(ctx, k, "test prelude_exp", 1, &g, NULL));
    tu_download(ctx, by, y, N);
    tu_download(ctx, bz, z, N);
    double worst = 0.0;
    for (int i = 0; i < N; i++) {
        double xi = x[i] > 88.0f ? 88.0 : x[i] < -87.0f ? -87.0 : x[i], want = exp(xi);
        double ey = fabs(y[i] - want) / want, ez = fabs(z[i] - want) / want;
        if (ey > worst) worst = ey;
        if (ez > worst) worst = ez;
        if (!(ey <= 4e-7 && ez <= 4e-7))
            ck_abort_msg("cld_exp(%.9g) = %.9g (float8) / %.9g (scalar), want %.9g", (double)x[i],
                         (double)y[i], (double)z[i], want);
    }
    fprintf(stderr, "prelude exp: worst relative error %.3g\n", worst);
    ck_assert_float_eq(y[0], 1.0f);
    cld_buffer_release(bx);
    cld_buffer_release(by);
    cld_buffer_release(bz);
    free(x);
    free(y);
    free(z);
    cld_ctx_free(ctx);
}
END_TEST

START_TEST(test_fill_and_launch)
{
    char *dir = fresh_cache_env();
    cld_ctx *ctx = NULL;
    TU_OK(cld_ctx_create(NULL, &ctx));
    cl_kernel fill = NULL, axpy = NULL, again = NULL;
    TU_OK(cld__kernel(ctx, "runtime_selftest", "fill", &fill));
    TU_OK(cld__kernel(ctx, "runtime_selftest", "axpy", &axpy));
    TU_OK(cld__kernel(ctx, "runtime_selftest", "fill", &again));
    ck_assert_ptr_eq(fill, again); /* kernels are cached in the context */
    cld_compile_stats st;
    TU_OK(cld_ctx_compile_stats(ctx, &st));
    ck_assert_int_eq(st.programs_built + st.programs_from_cache, 1);

    enum { N = 1000 }; /* not a multiple of the local size: rounded up */
    float *x = tu_rand_uniform(N, 1, -1, 1), *y = tu_rand_uniform(N, 2, -1, 1);
    float *want = tu_malloc(N * sizeof *want), *got = tu_malloc(N * sizeof *got);
    cl_mem bx = tu_upload(ctx, x, N), by = NULL;
    TU_OK(cld_buffer_alloc(ctx, N * sizeof(float), &by));
    TU_OK(cld__kargs(fill, "test fill", "bfu", by, 0.0, (unsigned)N));
    size_t g = N, l = 64;
    TU_OK(cld__launch(ctx, fill, "test fill", 1, &g, &l));
    /* Write the second half through an offset. */
    TU_OK(cld_buffer_write(ctx, by, N / 2 * sizeof(float), N / 2 * sizeof(float), y + N / 2));
    TU_OK(cld__kargs(axpy, "test axpy", "bbfu", bx, by, 3.0, (unsigned)N));
    TU_OK(cld__launch(ctx, axpy, "test axpy", 1, &g, NULL));
    TU_OK(cld_ctx_finish(ctx));
    tu_download(ctx, by, got, N);
    for (int i = 0; i < N; i++) want[i] = 3.0f * x[i] + (i < N / 2 ? 0.0f : y[i]);
    TU_ASSERT_CLOSE(got, want, N, 1e-6, "axpy");
    float part[4];
    TU_OK(cld_buffer_read(ctx, by, (N - 4) * sizeof(float), sizeof part, part));
    TU_ASSERT_CLOSE(part, want + N - 4, 4, 1e-6, "read at offset");

    /* Errors name the kernel and the caller's label. */
    TU_STATUS(cld__kargs(fill, "bad fmt", "bq", by), CLD_ERR_INVALID_ARG);
    size_t huge_local = 1u << 20, huge_global = 1u << 20;
    TU_STATUS(cld__launch(ctx, fill, "too big", 1, &huge_global, &huge_local), CLD_ERR_OPENCL);
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "fill"));
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "too big"));
    cl_kernel none = NULL;
    TU_STATUS(cld__kernel(ctx, "runtime_selftest", "no_such_kernel", &none), CLD_ERR_OPENCL);
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "no_such_kernel"));
    TU_STATUS(cld__kernel(ctx, "no_such_program", "k", &none), CLD_ERR_INVALID_ARG);

    cld_buffer_release(bx);
    cld_buffer_release(by);
    free(x), free(y), free(want), free(got);
    TU_OK(cld_ctx_free(ctx));
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(test_options_specialise)
{
    char *dir = fresh_cache_env();
    char *kdir = tu_mkdtemp("cld-test-kernels");
    char path[4200];
    snprintf(path, sizeof path, "%s/spec_selftest.cl", kdir);
    write_text(path, "__kernel void put(__global float *x) { x[0] = VALUE; }\n");
    setenv("CLD_KERNEL_DIR", kdir, 1);
    cld_ctx *ctx = NULL;
    TU_OK(cld_ctx_create(NULL, &ctx));
    cl_mem buf = NULL;
    TU_OK(cld_buffer_alloc(ctx, sizeof(float), &buf));
    const char *opts[2] = {"-DVALUE=1.5f", "-DVALUE=-4.0f"};
    const float want[2] = {1.5f, -4.0f};
    for (int i = 0; i < 2; i++) {
        cl_kernel k = NULL;
        TU_OK(cld_ctx_kernel(ctx, "spec_selftest", opts[i], "put", &k));
        TU_OK(cld__kargs(k, "put", "b", buf));
        size_t g = 1;
        TU_OK(cld__launch(ctx, k, "put", 1, &g, NULL));
        float v = 0;
        TU_OK(cld_buffer_read(ctx, buf, 0, sizeof v, &v));
        ck_assert_float_eq(v, want[i]);
    }
    ck_assert_int_eq(cache_files(dir, NULL, 0), 2); /* one cache file per option set */
    cld_buffer_release(buf);
    TU_OK(cld_ctx_free(ctx));
    tu_rm_rf(kdir);
    tu_rm_rf(dir);
    free(kdir);
    free(dir);
}
END_TEST

START_TEST(test_broken_kernel_reports_log)
{
    char *dir = fresh_cache_env();
    char *kdir = tu_mkdtemp("cld-test-kernels");
    char path[4200];
    snprintf(path, sizeof path, "%s/broken_selftest.cl", kdir);
    write_text(path, "__kernel void broken(__global float *x) {\n"
                     "    x[0] = undeclared_identifier_xyzzy * 2.0f;\n"
                     "}\n");
    setenv("CLD_KERNEL_DIR", kdir, 1);
    cld_ctx *ctx = NULL;
    TU_OK(cld_ctx_create(NULL, &ctx));
    cl_kernel k = NULL;
    TU_STATUS(cld_ctx_kernel(ctx, "broken_selftest", "-DFOO=1", "broken", &k), CLD_ERR_BUILD);
    const char *msg = cld_last_error();
    ck_assert_msg(strstr(msg, "broken_selftest") != NULL, "no program name: %s", msg);
    ck_assert_msg(strstr(msg, "-DFOO=1") != NULL, "no options: %s", msg);
    ck_assert_msg(strstr(msg, "undeclared_identifier_xyzzy") != NULL, "no build log: %s", msg);
    cld_device_info info;
    TU_OK(cld_ctx_device_info(ctx, &info));
    ck_assert_msg(strstr(msg, info.name) != NULL, "no device name: %s", msg);
    ck_assert_int_eq(cache_files(dir, NULL, 0), 0);

    /* Embedded programs are still found when CLD_KERNEL_DIR lacks them. */
    TU_OK(cld__kernel(ctx, "runtime_selftest", "fill", &k));
    TU_OK(cld_ctx_free(ctx));
    tu_rm_rf(kdir);
    tu_rm_rf(dir);
    free(kdir);
    free(dir);
}
END_TEST

START_TEST(test_kernel_dir_overrides_embedded)
{
    char *dir = fresh_cache_env();
    float v = 0;
    cld_compile_stats st;
    TU_OK(selftest_in_new_ctx(&st, &v));
    ck_assert_float_eq(v, 2.5f);

    /* Same program name from disk, different source: a different cache entry. */
    char *kdir = tu_mkdtemp("cld-test-kernels");
    char path[4200];
    snprintf(path, sizeof path, "%s/runtime_selftest.cl", kdir);
    write_text(path, "__kernel void fill(__global float *x, const float v, const uint n) {\n"
                     "    const uint i = get_global_id(0);\n"
                     "    if (i < n) x[i] = v + 1.0f;\n"
                     "}\n");
    setenv("CLD_KERNEL_DIR", kdir, 1);
    TU_OK(selftest_in_new_ctx(&st, &v));
    ck_assert_float_eq(v, 3.5f);
    ck_assert_int_eq(st.programs_built, 1);
    ck_assert_int_eq(cache_files(dir, NULL, 0), 2);
    tu_rm_rf(kdir);
    tu_rm_rf(dir);
    free(kdir);
    free(dir);
}
END_TEST

/* ---------------------------------------------------------------- disk cache */
START_TEST(test_warm_cache_compiles_nothing)
{
    char *dir = fresh_cache_env();
    cld_compile_stats st;
    float v = 0;
    TU_OK(selftest_in_new_ctx(&st, &v));
    ck_assert_int_eq(st.programs_built, 1);
    ck_assert_int_eq(st.programs_from_cache, 0);
    ck_assert_int_eq(cache_files(dir, NULL, 0), 1);

    setenv("CLD_FORBID_COMPILE", "1", 1);
    v = 0;
    TU_OK(selftest_in_new_ctx(&st, &v));
    ck_assert_int_eq(st.programs_built, 0);
    ck_assert_int_eq(st.programs_from_cache, 1);
    ck_assert_float_eq(v, 2.5f); /* the cached binary runs */

    /* Forbidding compiles makes a cache miss fail, naming the program. */
    setenv("CLD_CACHE", "0", 1);
    TU_STATUS(selftest_in_new_ctx(&st, NULL), CLD_ERR_COMPILE_FORBIDDEN);
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "runtime_selftest"));
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

static void damage_and_check(void (*damage)(const char *path))
{
    char *dir = fresh_cache_env();
    cld_compile_stats st;
    float v = 0;
    TU_OK(selftest_in_new_ctx(&st, NULL));
    char path[4200];
    ck_assert_int_eq(cache_files(dir, path, sizeof path), 1);
    long good_size = file_size(path);
    damage(path);

    /* A damaged file is not trusted: with compiles forbidden it must fail... */
    setenv("CLD_FORBID_COMPILE", "1", 1);
    TU_STATUS(selftest_in_new_ctx(&st, NULL), CLD_ERR_COMPILE_FORBIDDEN);
    /* ...and otherwise it is rebuilt and rewritten. */
    unsetenv("CLD_FORBID_COMPILE");
    TU_OK(selftest_in_new_ctx(&st, &v));
    ck_assert_int_eq(st.programs_built, 1);
    ck_assert_int_eq(st.programs_from_cache, 0);
    ck_assert_float_eq(v, 2.5f);
    ck_assert_int_eq(cache_files(dir, path, sizeof path), 1);
    ck_assert_int_eq(file_size(path), good_size);
    setenv("CLD_FORBID_COMPILE", "1", 1);
    TU_OK(selftest_in_new_ctx(&st, &v));
    ck_assert_int_eq(st.programs_from_cache, 1);
    tu_rm_rf(dir);
    free(dir);
}

static void truncate_half(const char *path) { ck_assert_int_eq(truncate(path, file_size(path) / 2), 0); }
static void truncate_tail(const char *path)
{ /* loses only the CRC */
    ck_assert_int_eq(truncate(path, file_size(path) - 2), 0);
}
static void flip_binary_byte(const char *path)
{
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    long at = file_size(path) - 4 - 16; /* inside the binary, before the CRC */
    fseek(f, at, SEEK_SET);
    int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 0x5a, f);
    fclose(f);
}
static void wrong_magic(const char *path)
{
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    fputc('X', f);
    fclose(f);
}

START_TEST(test_truncated_cache_rebuilt)
{
    damage_and_check(truncate_half);
    damage_and_check(truncate_tail);
}
END_TEST

START_TEST(test_corrupt_cache_rebuilt)
{
    damage_and_check(flip_binary_byte);
    damage_and_check(wrong_magic);
}
END_TEST

START_TEST(test_unwritable_cache_dir)
{
    char *base = fresh_cache_env();
    /* A path below a regular file cannot be created, even by root. */
    char file[4200], dir[4300];
    snprintf(file, sizeof file, "%s/file", base);
    write_text(file, "not a directory\n");
    snprintf(dir, sizeof dir, "%s/sub/cache", file);
    setenv("CLD_CACHE_DIR", dir, 1);
    cld_compile_stats st;
    float v = 0;
    TU_OK(selftest_in_new_ctx(&st, &v));
    ck_assert_int_eq(st.programs_built, 1);
    ck_assert_float_eq(v, 2.5f);
    TU_OK(selftest_in_new_ctx(&st, &v)); /* still works, still without cache */
    ck_assert_int_eq(st.programs_built, 1);
    tu_rm_rf(base);
    free(base);
}
END_TEST

START_TEST(test_cache_disabled)
{
    char *dir = fresh_cache_env();
    setenv("CLD_CACHE", "0", 1);
    cld_compile_stats st;
    TU_OK(selftest_in_new_ctx(&st, NULL));
    TU_OK(selftest_in_new_ctx(&st, NULL));
    ck_assert_int_eq(st.programs_built, 1);
    ck_assert_int_eq(cache_files(dir, NULL, 0), 0);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* Without CLD_CACHE, our cache stays off where the driver caches compiled
 * kernels itself (PoCL, unless POCL_KERNEL_CACHE=0): storing a PoCL binary
 * makes PoCL compile every kernel of the program first. */
START_TEST(test_cache_default_per_driver)
{
    char *dir = fresh_cache_env();
    unsetenv("CLD_CACHE");
    cld_ctx *ctx = NULL;
    TU_OK(cld_ctx_create(NULL, &ctx));
    cld_device_info info;
    TU_OK(cld_ctx_device_info(ctx, &info));
    TU_OK(cld_ctx_free(ctx));
    const int pocl = strstr(info.platform_name, "Portable Computing Language") != NULL;
    const char *pk = getenv("POCL_KERNEL_CACHE");
    char *saved = pk ? strdup(pk) : NULL;
    unsetenv("POCL_KERNEL_CACHE");
    cld_compile_stats st;
    float v = 0;
    TU_OK(selftest_in_new_ctx(&st, &v));
    ck_assert_float_eq(v, 2.5f);
    ck_assert_int_eq(st.programs_built, 1);
    ck_assert_int_eq(cache_files(dir, NULL, 0), pocl ? 0 : 1);
    if (pocl) { /* PoCL without its own cache: ours is on */
        setenv("POCL_KERNEL_CACHE", "0", 1);
        TU_OK(selftest_in_new_ctx(&st, &v));
        ck_assert_int_eq(cache_files(dir, NULL, 0), 1);
        TU_OK(selftest_in_new_ctx(&st, &v));
        ck_assert_int_eq(st.programs_from_cache, 1);
    }
    if (saved)
        setenv("POCL_KERNEL_CACHE", saved, 1);
    else
        unsetenv("POCL_KERNEL_CACHE");
    free(saved);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(test_build_all)
{
    char *dir = fresh_cache_env();
    const char *const *names = NULL, *const *sources = NULL;
    TU_OK(cld_kernel_sources(&names, &sources));
    int n = 0, has_selftest = 0, has_prelude = 0;
    for (; names[n]; n++) {
        ck_assert_ptr_nonnull(sources[n]);
        has_selftest |= strcmp(names[n], "runtime_selftest") == 0;
        has_prelude |= strcmp(names[n], "prelude") == 0;
    }
    ck_assert(has_selftest && has_prelude);

    /* the bundle (every program but the self-test) and the self-test; one
     * by one with CLD_BUNDLE=0 (without the disk cache: storing binaries
     * makes PoCL compile every kernel, the bundle's test has done that) */
    for (int one_by_one = 0; one_by_one < 2; one_by_one++) {
        const int want = one_by_one ? n - 1 : 2; /* the prelude is in every program, not one itself */
        if (one_by_one) setenv("CLD_BUNDLE", "0", 1), setenv("CLD_CACHE", "0", 1);
        cld_ctx *ctx = NULL;
        TU_OK(cld_ctx_create(NULL, &ctx));
        TU_OK(cld_ctx_build_all(ctx));
        cld_compile_stats st;
        TU_OK(cld_ctx_compile_stats(ctx, &st));
        ck_assert_int_eq(st.programs_built, want);
        ck_assert(st.seconds > 0);
        TU_OK(cld_ctx_build_all(ctx)); /* idempotent within a context */
        TU_OK(cld_ctx_compile_stats(ctx, &st));
        ck_assert_int_eq(st.programs_built, want);
        /* a kernel of every member comes from the one program */
        cl_kernel a, b;
        TU_OK(cld__kernel(ctx, "basic", "fill", &a));
        TU_OK(cld__kernel(ctx, "norm", "gn_fused", &b));
        TU_OK(cld_ctx_compile_stats(ctx, &st));
        ck_assert_int_eq(st.programs_built, want);
        TU_OK(cld_ctx_free(ctx));
        if (one_by_one) break;

        setenv("CLD_FORBID_COMPILE", "1", 1);
        TU_OK(cld_ctx_create(NULL, &ctx));
        TU_OK(cld_ctx_build_all(ctx));
        TU_OK(cld_ctx_compile_stats(ctx, &st));
        ck_assert_int_eq(st.programs_built, 0);
        ck_assert_int_eq(st.programs_from_cache, want);
        TU_OK(cld_ctx_free(ctx));
        unsetenv("CLD_FORBID_COMPILE");
    }
    unsetenv("CLD_BUNDLE");
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* ---------------------------------------------------------------- GEMM */
/* C = alpha * op(A) * op(B) + beta * C, row-major, reference in double. */
static void gemm_ref(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                     const float *b, int ldb, float beta, float *c, int ldc)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++)
                s += (double)(ta ? a[p * lda + i] : a[i * lda + p]) *
                     (double)(tb ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * ldc + j] = (float)(alpha * s + beta * c[i * ldc + j]);
        }
}

static void check_gemm(cld_ctx *ctx, int ta, int tb, int m, int n, int k, int batch)
{
    /* Padded leading dimensions and nonzero offsets exercise the wrappers. */
    int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
    size_t sa = (size_t)lda * (ta ? k : m), sb = (size_t)ldb * (tb ? n : k), sc = (size_t)ldc * m;
    size_t off = 5;
    size_t na = off + sa * batch, nb = off + sb * batch, nc = off + sc * batch;
    float *a = tu_rand_uniform(na, 11, -1, 1), *b = tu_rand_uniform(nb, 12, -1, 1);
    float *c = tu_rand_uniform(nc, 13, -1, 1), *want = tu_malloc(nc * sizeof *want);
    float *got = tu_malloc(nc * sizeof *got);
    memcpy(want, c, nc * sizeof *c);
    float alpha = 0.75f, beta = 0.5f;
    for (int q = 0; q < batch; q++)
        gemm_ref(ta, tb, m, n, k, alpha, a + off + q * sa, lda, b + off + q * sb, ldb, beta,
                 want + off + q * sc, ldc);
    cl_mem da = tu_upload(ctx, a, na), db = tu_upload(ctx, b, nb), dc = tu_upload(ctx, c, nc);
    if (batch == 1)
        TU_OK(cld__gemm(ctx, ta, tb, m, n, k, alpha, da, off, lda, db, off, ldb, beta, dc, off, ldc));
    else
        TU_OK(cld__gemm_batched(ctx, ta, tb, m, n, k, alpha, da, off, lda, sa, db, off, ldb, sb, beta, dc,
                                off, ldc, sc, batch));
    tu_download(ctx, dc, got, nc);
    char what[96];
    snprintf(what, sizeof what, "gemm ta=%d tb=%d %dx%dx%d batch %d", ta, tb, m, n, k, batch);
    TU_ASSERT_CLOSE(got, want, nc, 1e-4, what);
    cld_buffer_release(da), cld_buffer_release(db), cld_buffer_release(dc);
    free(a), free(b), free(c), free(want), free(got);
}

START_TEST(test_gemm_small)
{
    cld_ctx *ctx = tu_ctx();
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) check_gemm(ctx, ta, tb, 37, 45, 29, 1);
    check_gemm(ctx, 0, 1, 17, 33, 40, 3);
    check_gemm(ctx, 1, 0, 20, 8, 12, 4);
}
END_TEST

START_TEST(test_gemm_large_tuned)
{
    cld_ctx *ctx = tu_ctx();
    TU_OK(cld__blas_tune(ctx)); /* the tuned parameters are accepted */
    /* Large enough for CLBlast's indirect Xgemm kernel (the tuned one). */
    check_gemm(ctx, 0, 0, 520, 384, 300, 1);
    check_gemm(ctx, 1, 1, 256, 320, 512, 2);
    /* A buffer too small for the product is rejected before any kernel runs. */
    cl_mem tiny = NULL;
    TU_OK(cld_buffer_alloc(ctx, 16, &tiny));
    TU_STATUS(cld__gemm(ctx, 0, 0, 64, 64, 64, 1.0f, tiny, 0, 64, tiny, 0, 64, 0.0f, tiny, 0, 64),
              CLD_ERR_BLAS);
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "buffer holds 4"));
    /* CLBlast wrapper errors carry CLBlast's status. */
    TU_STATUS(cld__gemm_clblast(ctx, 0, 0, 64, 64, 64, 1.0f, tiny, 0, 64, 0, tiny, 0, 64, 0, 0.0f, tiny, 0,
                                64, 0, 1),
              CLD_ERR_BLAS);
    ck_assert_ptr_nonnull(strstr(cld_last_error(), "status"));
    cld_buffer_release(tiny);
}
END_TEST

static Suite *runtime_suite(void)
{
    Suite *s = suite_create("runtime");
    TCase *tc = tcase_create("devices");
    tcase_add_test(tc, test_status_names);
    tcase_add_test(tc, test_device_info);
    tcase_add_test(tc, test_select_by_index);
    tcase_add_test(tc, test_select_by_name);
    tcase_add_test(tc, test_select_by_type);
    tcase_add_test(tc, test_select_by_env);
    tcase_add_test(tc, test_unknown_device_lists_devices);
    tcase_add_test(tc, test_no_platform);
    suite_add_tcase(s, tc);

    tc = tcase_create("kernels");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_fill_and_launch);
    tcase_add_test(tc, test_launch_config_gpu_path);
    tcase_add_test(tc, test_options_specialise);
    tcase_add_test(tc, test_broken_kernel_reports_log);
    tcase_add_test(tc, test_kernel_dir_overrides_embedded);
    suite_add_tcase(s, tc);

    tc = tcase_create("cache");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_warm_cache_compiles_nothing);
    tcase_add_test(tc, test_truncated_cache_rebuilt);
    tcase_add_test(tc, test_corrupt_cache_rebuilt);
    tcase_add_test(tc, test_unwritable_cache_dir);
    tcase_add_test(tc, test_cache_disabled);
    tcase_add_test(tc, test_cache_default_per_driver);
    tcase_add_test(tc, test_build_all);
    tcase_add_test(tc, test_prelude_exp);
    suite_add_tcase(s, tc);

    tc = tcase_create("blas");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_gemm_small);
    tcase_add_test(tc, test_gemm_large_tuned);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(runtime_suite()); }
