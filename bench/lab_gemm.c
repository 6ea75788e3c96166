/* lab_gemm: GEMM kernel lab. Validates and times CLBlast (as tuned at
 * context creation) and configurations of our own kernel (cl/gemm.cl) on
 * the UNet's shapes, side by side, in interleaved rounds (the machine is
 * shared: compare variants within one run, read the medians).
 *
 *   cmake --build build-gemm --target cldiffusion
 *   gcc -O2 -o /tmp/lab_gemm bench/lab_gemm.c -Iengine/include -Iengine/src \
 *       -Lbuild-gemm -lcldiffusion -lclblast -lOpenCL -lcjson -lz -lm
 *   CLD_KERNEL_DIR=cl /tmp/lab_gemm [-r ROUNDS] [-t SECONDS] [-i SIZE] [-s SHAPE]... [VARIANT]...
 *
 * -i SIZE overrides CLBlast's XGEMM_MIN_INDIRECT_SIZE (below it CLBlast
 * runs its untuned XgemmDirect kernel instead of the tuned Xgemm).
 *
 * SHAPE: "ta,tb,M,N,K[,batch]" (row-major C = op(A) op(B)); default: the
 * UNet set below. VARIANT: "clblast", or "own:TMxTN,vVW,uKU,pPACK,aPACK_A,dDMxDN,wDVW,tTBDOT"
 * (fields of cld__gemm_cfg in engine/src/blas.h) with any part omitted
 * taking the default (e.g. "own:4x16", "own:p0,t0");
 * default variants: clblast and own (default config).
 * Each (shape, variant) is checked once against a double reference
 * (max |C - ref| / max |ref|), then timed: per round, the kernel is run
 * back to back for about SECONDS (default 0.2) and GFLOPS taken; the table
 * gives the median and best over ROUNDS (default 5), and "cpu": the median
 * of flops / (CPU seconds of this process / cores), which is what the
 * variant would reach with the cores to itself (other jobs on the machine
 * stretch wall time but not our CPU time; spinning threads would inflate
 * it, PoCL's workers sleep). Not built by CMake. */
#include "runtime/blas.h"

#include <clblast_c.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

typedef struct shape {
    int ta, tb, m, n, k, batch;
} shape;

typedef struct variant {
    char name[64];
    int own;
    cld__gemm_cfg cfg;
} variant;

static const shape default_shapes[] = {
    /* conv as im2col + GEMM, forward W (Co, Ci*9) x col (Ci*9, H*W) */
    {0, 0, 64, 784, 576, 1},
    {0, 0, 128, 196, 1152, 1},
    {0, 0, 128, 1024, 1152, 1},
    {0, 0, 256, 256, 2304, 1},
    {0, 0, 256, 64, 2304, 1},
    /* and backward: dcol = W^T dY; dW = dY col^T */
    {1, 0, 576, 784, 64, 1},
    {1, 0, 1152, 1024, 128, 1},
    {0, 1, 64, 576, 784, 1},
    {0, 1, 128, 1152, 1024, 1},
    /* attention of the cifar10 UNet at 16x16 (L = 256 positions, d = 256
     * channels, batch 8): s = q^T k (TA), o = v a^T (TB), and in backward
     * k dY^T (TB), q dY and dY a (NN), dY^T v (TA) */
    {1, 0, 256, 256, 256, 8},
    {0, 1, 256, 256, 256, 8},
    {0, 0, 256, 256, 256, 8},
    /* attention of the fashion-mnist UNet at 7x7 (L = 49, d = 128) */
    {1, 0, 49, 49, 128, 8},
    {0, 1, 128, 49, 49, 8},
    {0, 0, 128, 49, 49, 8},
    /* linear layers (time embedding, batch 8): y = x w^T, dx = dy w,
     * dw = dy^T x */
    {0, 1, 8, 512, 128, 1},
    {0, 1, 8, 512, 512, 1},
    {0, 0, 8, 512, 512, 1},
    {1, 0, 512, 512, 8, 1},
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds used by all threads of this process (PoCL's workers too). */
static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)ru.ru_stime.tv_usec;
}

static void die(const char *what, cld_status s)
{
    fprintf(stderr, "lab_gemm: %s: %s: %s\n", what, cld_status_name(s), cld_last_error());
    exit(1);
}

static int parse_variant(const char *s, const cld__gemm_cfg *def, variant *v)
{
    memset(v, 0, sizeof *v);
    snprintf(v->name, sizeof v->name, "%s", s);
    if (strcmp(s, "clblast") == 0) return 1;
    if (strncmp(s, "own", 3) != 0) return 0;
    v->own = 1;
    v->cfg = *def;
    const char *p = s + 3;
    if (*p == ':') p++;
    /* one-letter fields taking one number */
    struct {
        char key;
        int *field;
    } one[] = {
        {'v', &v->cfg.vw},     {'u', &v->cfg.ku},  {'p', &v->cfg.pack},
        {'a', &v->cfg.pack_a}, {'w', &v->cfg.dvw}, {'t', &v->cfg.tb_dot},
    };
    while (*p) {
        int a, b, used = 0, found = 0;
        if (sscanf(p, "%dx%d%n", &a, &b, &used) == 2) {
            v->cfg.tm = a;
            v->cfg.tn = b;
            found = 1;
        } else if (sscanf(p, "d%dx%d%n", &a, &b, &used) == 2) {
            v->cfg.dm = a;
            v->cfg.dn = b;
            found = 1;
        } else {
            for (size_t i = 0; i < sizeof one / sizeof one[0] && !found; i++)
                if (*p == one[i].key && sscanf(p + 1, "%d%n", one[i].field, &used) == 1) {
                    used++;
                    found = 1;
                }
        }
        if (!found) return 0;
        p += used;
        if (*p == ',') p++;
    }
    return 1;
}

static cld_status run_once(cld_ctx *ctx, const variant *v, const shape *s, cl_mem a, cl_mem b, cl_mem c)
{
    size_t m = (size_t)s->m, n = (size_t)s->n, k = (size_t)s->k;
    size_t lda = s->ta ? m : k, ldb = s->tb ? k : n;
    if (v->own)
        return cld__gemm_own(ctx, &v->cfg, s->ta, s->tb, m, n, k, 1.0f, a, 0, lda, m * k, b, 0, ldb, k * n,
                             0.0f, c, 0, n, m * n, (size_t)s->batch);
    return cld__gemm_clblast(ctx, s->ta, s->tb, m, n, k, 1.0f, a, 0, lda, m * k, b, 0, ldb, k * n, 0.0f, c, 0,
                             n, m * n, (size_t)s->batch);
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv)
{
    int rounds = 5;
    double secs = 0.2;
    shape shapes[64];
    int ns = 0;
    char *vargs[32];
    int nv_args = 0;
    size_t indirect = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-r") && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-t") && i + 1 < argc) {
            secs = atof(argv[++i]);
        } else if (!strcmp(argv[i], "-i") && i + 1 < argc) {
            indirect = (size_t)atol(argv[++i]);
        } else if (!strcmp(argv[i], "-s") && i + 1 < argc && ns < 64) {
            shape *s = &shapes[ns];
            s->batch = 1;
            if (sscanf(argv[++i], "%d,%d,%d,%d,%d,%d", &s->ta, &s->tb, &s->m, &s->n, &s->k, &s->batch) < 5) {
                fprintf(stderr, "lab_gemm: bad shape '%s'\n", argv[i]);
                return 2;
            }
            ns++;
        } else if (nv_args < 32) {
            vargs[nv_args++] = argv[i];
        }
    }
    if (ns == 0) {
        ns = (int)(sizeof default_shapes / sizeof default_shapes[0]);
        memcpy(shapes, default_shapes, sizeof default_shapes);
    }
    double ncpu = (double)sysconf(_SC_NPROCESSORS_ONLN);
    cld_ctx *ctx;
    cld_status st = cld_ctx_create(NULL, &ctx);
    if (st != CLD_OK) die("cld_ctx_create", st);
    if (indirect) {
        /* CLBlast's switch from XgemmDirect to the (tuned) indirect Xgemm */
        const char *nm[] = {"XGEMM_MIN_INDIRECT_SIZE"};
        size_t val[] = {indirect};
        cld_device_info info;
        cld_ctx_device_info(ctx, &info);
        CLBlastStatusCode cs =
            CLBlastOverrideParameters(info.device, "GemmRoutine", CLBlastPrecisionSingle, 1, nm, val);
        if (cs != CLBlastSuccess) fprintf(stderr, "lab_gemm: GemmRoutine override: %d\n", (int)cs);
    }
    cld__gemm_cfg def = cld__gemm_default_cfg(ctx);
    variant vs[32];
    int nv = 0;
    if (nv_args == 0) {
        parse_variant("clblast", &def, &vs[nv++]);
        parse_variant("own", &def, &vs[nv++]);
    }
    for (int i = 0; i < nv_args; i++) {
        if (!parse_variant(vargs[i], &def, &vs[nv])) {
            fprintf(stderr, "lab_gemm: bad variant '%s'\n", vargs[i]);
            return 2;
        }
        nv++;
    }
    printf("%-22s", "shape (ta,tb,M,N,K,b)");
    for (int v = 0; v < nv; v++) printf(" %22s", vs[v].name);
    printf("\n%-22s", "");
    for (int v = 0; v < nv; v++) printf(" %22s", "med/best|cpu GF");
    printf("\n");
    for (int si = 0; si < ns; si++) {
        const shape *s = &shapes[si];
        size_t M = (size_t)s->m, N = (size_t)s->n, K = (size_t)s->k, Bt = (size_t)s->batch;
        size_t na = Bt * M * K, nb = Bt * K * N, nc = Bt * M * N;
        float *ha = malloc(na * sizeof *ha), *hb = malloc(nb * sizeof *hb);
        float *hc = malloc(nc * sizeof *hc);
        double *ref = malloc(nc * sizeof *ref);
        uint64_t seed = 42 + (uint64_t)si;
        for (size_t i = 0; i < na; i++) ha[i] = (float)cld__rand_uniform(&seed) * 2 - 1;
        for (size_t i = 0; i < nb; i++) hb[i] = (float)cld__rand_uniform(&seed) * 2 - 1;
        double refmax = 0;
        for (size_t z = 0; z < Bt; z++)
            for (size_t i = 0; i < M; i++)
                for (size_t j = 0; j < N; j++) {
                    double acc = 0;
                    for (size_t p = 0; p < K; p++) {
                        double x = s->ta ? ha[z * M * K + p * M + i] : ha[z * M * K + i * K + p];
                        double y = s->tb ? hb[z * K * N + j * K + p] : hb[z * K * N + p * N + j];
                        acc += x * y;
                    }
                    ref[z * M * N + i * N + j] = acc;
                    if (fabs(acc) > refmax) refmax = fabs(acc);
                }
        cl_mem a, b, c;
        if ((st = cld_buffer_alloc(ctx, na * 4, &a)) != CLD_OK ||
            (st = cld_buffer_alloc(ctx, nb * 4, &b)) != CLD_OK ||
            (st = cld_buffer_alloc(ctx, nc * 4, &c)) != CLD_OK ||
            (st = cld_buffer_write(ctx, a, 0, na * 4, ha)) != CLD_OK ||
            (st = cld_buffer_write(ctx, b, 0, nb * 4, hb)) != CLD_OK)
            die("buffers", st);
        double flops = 2.0 * (double)Bt * (double)M * (double)N * (double)K;
        double errs[32], gf[32][64], cgf[32][64];
        int reps[32];
        for (int v = 0; v < nv; v++) {
            /* poison C: beta = 0 must not read it */
            for (size_t i = 0; i < nc; i++) hc[i] = NAN;
            if ((st = cld_buffer_write(ctx, c, 0, nc * 4, hc)) != CLD_OK) die("write C", st);
            double t0 = now();
            if ((st = run_once(ctx, &vs[v], s, a, b, c)) != CLD_OK) die(vs[v].name, st);
            if ((st = cld_ctx_finish(ctx)) != CLD_OK) die("finish", st);
            double first = now() - t0;
            if ((st = cld_buffer_read(ctx, c, 0, nc * 4, hc)) != CLD_OK) die("read C", st);
            double e = 0;
            for (size_t i = 0; i < nc; i++) {
                double d = fabs((double)hc[i] - ref[i]);
                if (!(d <= e)) e = isnan(d) ? INFINITY : d;
            }
            errs[v] = e / (refmax > 0 ? refmax : 1);
            /* repetitions per round from a second (warm) run */
            t0 = now();
            if ((st = run_once(ctx, &vs[v], s, a, b, c)) != CLD_OK) die(vs[v].name, st);
            cld_ctx_finish(ctx);
            double one = now() - t0;
            reps[v] = (int)(secs / (one > 1e-6 ? one : 1e-6));
            if (reps[v] < 1) reps[v] = 1;
            (void)first;
        }
        for (int r = 0; r < rounds && r < 64; r++)
            for (int v = 0; v < nv; v++) {
                double t0 = now(), c0 = cpu_now();
                for (int i = 0; i < reps[v]; i++)
                    if ((st = run_once(ctx, &vs[v], s, a, b, c)) != CLD_OK) die(vs[v].name, st);
                cld_ctx_finish(ctx);
                gf[v][r] = flops * reps[v] / (now() - t0) / 1e9;
                cgf[v][r] = flops * reps[v] / ((cpu_now() - c0) / ncpu) / 1e9;
            }
        char label[64];
        snprintf(label, sizeof label, "%d,%d,%d,%d,%d,%d", s->ta, s->tb, s->m, s->n, s->k, s->batch);
        printf("%-22s", label);
        for (int v = 0; v < nv; v++) {
            int R = rounds < 64 ? rounds : 64;
            qsort(gf[v], (size_t)R, sizeof(double), cmp_double);
            qsort(cgf[v], (size_t)R, sizeof(double), cmp_double);
            char cell[64];
            snprintf(cell, sizeof cell, "%5.1f/%5.1f|%5.1f%s", gf[v][R / 2], gf[v][R - 1], cgf[v][R / 2],
                     errs[v] > 1e-5 ? " BAD" : "");
            printf(" %22s", cell);
            if (errs[v] > 1e-5) fprintf(stderr, "  %s on %s: rel err %.3g\n", vs[v].name, label, errs[v]);
        }
        printf("\n");
        fflush(stdout);
        cld_buffer_release(a);
        cld_buffer_release(b);
        cld_buffer_release(c);
        free(ha);
        free(hb);
        free(hc);
        free(ref);
    }
    cld_ctx_free(ctx);
    return 0;
}
