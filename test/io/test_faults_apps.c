/* Device faults seen by every program: no OpenCL driver at all, a kernel
 * program that does not build, and a device buffer larger than the
 * device's max single allocation. Each program must stop with a nonzero
 * exit status and a message naming the fault, and write no output.
 *
 *  - no driver: OCL_ICD_VENDORS names an empty folder, so the ICD loader
 *    finds no platform;
 *  - broken kernels: CLD_KERNEL_DIR holds copies of the cl/ sources with a line of
 *    garbage appended (program.c reads kernels from there first);
 *  - too big a buffer: CLD_MAX_ALLOC=16K lowers the device's max single
 *    allocation (device.c; clCreateBuffer refuses larger buffers as OpenCL
 *    specifies), so the first parameter or activation buffer fails; and,
 *    on the real limit, a cld-train batch whose activations exceed it (or
 *    the kernels' 2^31-float offsets, whichever is checked first).
 *
 * cld-devices allocates no device memory, so it has no case of the last
 * kind: with CLD_MAX_ALLOC it lists the lowered limit and exits 0. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apptest.h"
#include "testutil.h"

#define TINY                                                                                         \
    "--base 8 --mult 1,2 --res-blocks 1 --attn 4 --groups 4 --T 100 --batch 4 --warmup 2 --val-n 8 " \
    "--grid-every 0 --progress none"

static void write_idx(const char *dir, const char *name, int ndim, int n)
{
    char *p = at_path(dir, name);
    at_write_idx(p, ndim, n, 99);
    free(p);
}

/* A folder with IDX data, a tiny model (trained 1 step), a noisy photo, an
 * empty vendors folder and a folder of broken kernel sources. */
static char *make_fixture(void)
{
    char *dir = tu_mkdtemp("cld-faults-apps");
    write_idx(dir, "train-images-idx3-ubyte", 3, 16);
    write_idx(dir, "train-labels-idx1-ubyte", 1, 16);
    write_idx(dir, "t10k-images-idx3-ubyte", 3, 8);
    write_idx(dir, "t10k-labels-idx1-ubyte", 1, 8);
    char *err = NULL;
    int st = at_run(at_app("cld-train", "CLD_TRAIN"), dir,
                    "--data train-images-idx3-ubyte " TINY " --steps 1 --val-every 0 --out run", NULL, &err);
    ck_assert_msg(st == 0, "cld-train: %s", err);
    free(err);
    /* a 24x24 noisy colour photo */
    uint8_t px[24 * 24 * 3];
    uint64_t s = 7;
    for (size_t i = 0; i < sizeof px; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        px[i] = (uint8_t)(96 + (s >> 59) + (i % 72));
    }
    char *p = at_path(dir, "photo.png");
    TU_OK(cld_png_write(p, 24, 24, 3, 8, px, 0, NULL, NULL));
    free(p);
    p = at_path(dir, "empty-vendors");
    ck_assert(mkdir(p, 0755) == 0);
    free(p);
    p = at_path(dir, "badcl");
    ck_assert(mkdir(p, 0755) == 0);
    DIR *d = opendir(CLD_SOURCE_DIR "/cl");
    ck_assert(d != NULL);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 3, ".cl") != 0) continue;
        char src[4096], dst[4096];
        snprintf(src, sizeof src, "%s/cl/%s", CLD_SOURCE_DIR, e->d_name);
        snprintf(dst, sizeof dst, "%s/%s", p, e->d_name);
        size_t sl;
        unsigned char *text = at_read_file(src, &sl);
        ck_assert(text != NULL);
        const char garbage[] = "\nthis line is not OpenCL C;\n";
        unsigned char *out = tu_malloc(sl + sizeof garbage);
        memcpy(out, text, sl);
        memcpy(out + sl, garbage, sizeof garbage - 1);
        at_write_file(dst, out, sl + sizeof garbage - 1);
        free(out);
        free(text);
        n++;
    }
    closedir(d);
    ck_assert_int_gt(n, 5);
    free(p);
    return dir;
}

/* The programs, each with arguments that reach device work. */
static const struct {
    const char *app, *args, *output; /* output: what a run would write, or NULL */
} apps[] = {
    {"cld-devices", "--build-all", NULL},
    {"cld-sample", "--model run/model.safetensors --n 1 --steps 2 --out s.png --progress none", "s.png"},
    {"cld-denoise", "photo.png -o d.png --sigma 20", "d.png"},
    {"cld-bench", "--quick --only gemm", NULL},
    {"cld-train", "--data train-images-idx3-ubyte " TINY " --steps 1 --val-every 0 --out run2",
     "run2/model.safetensors"},
};
#define N_APPS ((int)(sizeof apps / sizeof apps[0]))

/* Run app k with `env` (VAR=value ...) before it; it must exit nonzero with
 * `message` in its stderr and leave no output file. */
static void expect_fault(const char *dir, int k, const char *env, const char *message, const char *fault)
{
    char bin[4096], *err = NULL, *out = NULL;
    snprintf(bin, sizeof bin, "%s", at_app(apps[k].app, NULL));
    char cmd[8192];
    /* at_run quotes bin: pass the environment through env(1) */
    snprintf(cmd, sizeof cmd, "%s '%s' %s", env, bin, apps[k].args);
    int st = at_run("/usr/bin/env", dir, cmd, &out, &err);
    ck_assert_msg(st != 0, "%s, %s: exit 0: %s", fault, apps[k].app, err);
    /* cld-bench reports a failed row in its table (stdout), the others on stderr */
    ck_assert_msg((err && strstr(err, message)) || (out && strstr(out, message)),
                  "%s, %s: exit %d without '%s': %s%s", fault, apps[k].app, st, message, out, err);
    if (apps[k].output) {
        char *p = at_path(dir, apps[k].output);
        ck_assert_msg(!at_exists(p), "%s, %s: wrote %s", fault, apps[k].app, apps[k].output);
        free(p);
    }
    fprintf(stderr, "%s, %s: exit %d\n", fault, apps[k].app, st);
    free(out);
    free(err);
}

START_TEST(test_no_driver)
{
    char *dir = make_fixture(), env[4200];
    snprintf(env, sizeof env, "OCL_ICD_VENDORS='%s/empty-vendors' OCL_ICD_FILENAMES=", dir);
    for (int k = 0; k < N_APPS; k++) expect_fault(dir, k, env, "no OpenCL platform", "no driver");
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(test_kernel_build_failure)
{
    char *dir = make_fixture(), env[4200];
    /* CLD_CACHE=0: no kernel binary cached from the good sources may stand in */
    snprintf(env, sizeof env, "CLD_KERNEL_DIR='%s/badcl' CLD_CACHE=0", dir);
    for (int k = 0; k < N_APPS; k++)
        expect_fault(dir, k, env, "building kernel program", "broken kernel source");
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(test_device_alloc_failure)
{
    char *dir = make_fixture();
    for (int k = 1; k < N_APPS; k++) /* not cld-devices: it allocates nothing */
        expect_fault(dir, k, "CLD_MAX_ALLOC=16K", "16384 bytes", "16 KiB max allocation");
    /* cld-devices shows the lowered limit and succeeds */
    char *out = NULL, cmd[4200];
    snprintf(cmd, sizeof cmd, "CLD_MAX_ALLOC=16K '%s'", at_app("cld-devices", NULL));
    ck_assert_int_eq(at_run("/usr/bin/env", dir, cmd, &out, NULL), 0);
    ck_assert_msg(strstr(out, "max allocation 16.0 KiB"), "%s", out);
    free(out);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* The device's real limit: a training batch whose activations exceed its
 * max single allocation is refused before any buffer is made. */
START_TEST(test_train_batch_over_device_limit)
{
    char *dir = make_fixture(), *err = NULL;
    cld_ctx *ctx = tu_ctx();
    cld_device_info info;
    TU_OK(cld_ctx_device_info(ctx, &info));
    /* base 64 at batch 65536 (the largest cld-train takes): ~100 GiB of activations, past both the
     * device's max allocation (PoCL here: 8 GiB) and the kernels' 2^31-float offsets */
    long batch = 65536;
    char args[2048];
    snprintf(args, sizeof args,
             "--data train-images-idx3-ubyte --base 64 --mult 1,2 --res-blocks 1 --attn 4 --groups 8 --T 100 "
             "--batch %ld --val-n 8 --grid-every 0 --progress none --steps 1 --val-every 0 --out big",
             batch);
    int st = at_run(at_app("cld-train", "CLD_TRAIN"), dir, args, NULL, &err);
    ck_assert_msg(st == 1 && strstr(err, "use a smaller batch"), "batch %ld: exit %d: %s", batch, st, err);
    fprintf(stderr, "cld-train --batch %ld on a %.1f GiB max allocation: exit %d\n", batch,
            info.max_alloc_bytes / 1073741824.0, st);
    free(err);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("faults_apps");
    TCase *tc = tcase_create("apps");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_no_driver);
    tcase_add_test(tc, test_kernel_build_failure);
    tcase_add_test(tc, test_device_alloc_failure);
    tcase_add_test(tc, test_train_batch_over_device_limit);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
