/* GEMM (engine/src/blas.c, cl/gemm.cl) against a double reference: every
 * transpose combination, odd shapes, offsets, padded leading dimensions,
 * batch strides (and a shared operand), alpha/beta, k = 0, through the
 * routed entry points and through each of our kernels forced by config.
 *
 * Error metric, per element of C:
 *   |C - ref| / (|alpha| sum_k |op(A)[m,k] op(B)[k,n]| + |beta C0[m,n]|)
 * Summing K products in float (any order, with FMA) errs by at most about
 * K * 2^-24 times that denominator, so the metric does not grow with the
 * magnitude of the data, and its worst case grows only linearly with K
 * (6e-8 K: 3.6e-5 for our largest K = 600); typical errors are ~sqrt(K)
 * smaller. Tolerance 1e-4. A kernel that drops or repeats a single
 * product term fails by orders of magnitude. Elements of the C buffers
 * outside the matrices (padding, offsets, gaps between batch entries)
 * must come back untouched; with beta = 0, C starts as NaN (must not be
 * read). */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/blas.h"
#include "testutil.h"

#define TOL 1e-4
#define GUARD 1234.5f

typedef struct gcase {
    int ta, tb, m, n, k, batch;
    int pad;      /* added to every leading dimension */
    int off;      /* offset of A, B, C in their buffers (floats) */
    int gap;      /* added to every batch stride */
    int shared_b; /* B's batch stride 0 */
    float alpha, beta;
    int ldb; /* if > 0: B's leading dimension (overrides pad) */
} gcase;

enum { VIA_ROUTED, VIA_OWN, VIA_CLBLAST };

/* Run one case; returns the max error metric; checks the guards. */
static double run_case(const gcase *g, int via, const cld__gemm_cfg *cfg, const char *what)
{
    cld_ctx *ctx = tu_ctx();
    size_t m = (size_t)g->m, n = (size_t)g->n, k = (size_t)g->k, nb = (size_t)g->batch;
    size_t ar = g->ta ? k : m, ac = g->ta ? m : k; /* stored A: ar x ac */
    size_t br = g->tb ? n : k, bc = g->tb ? k : n;
    size_t lda = ac + (size_t)g->pad, ldb = g->ldb > 0 ? (size_t)g->ldb : bc + (size_t)g->pad;
    size_t ldc = n + (size_t)g->pad;
    size_t sa = ar * lda + (size_t)g->gap, sb = g->shared_b ? 0 : br * ldb + (size_t)g->gap;
    size_t sc = m * ldc + (size_t)g->gap, off = (size_t)g->off;
    size_t na = off + nb * sa + 1;
    size_t nbuf = off + (g->shared_b ? 1 : nb) * (br * ldb + (size_t)g->gap) + 1;
    size_t nc = off + nb * sc + 1;
    float *ha = tu_rand_uniform(na, 11 + (uint64_t)g->m, -1.0f, 1.0f);
    float *hb = tu_rand_uniform(nbuf, 23 + (uint64_t)g->n, -1.0f, 1.0f);
    float *hc = tu_malloc(nc * sizeof *hc), *c0 = tu_malloc(nc * sizeof *c0);
    float *c0v = tu_rand_uniform(nc, 37 + (uint64_t)g->k, -1.0f, 1.0f);
    /* C: guards outside the matrices, NaN (beta = 0) or values inside */
    for (size_t i = 0; i < nc; i++) c0[i] = GUARD;
    for (size_t z = 0; z < nb; z++)
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) {
                size_t idx = off + z * sc + i * ldc + j;
                c0[idx] = g->beta == 0.0f ? NAN : c0v[idx];
            }
    cl_mem da = tu_upload(ctx, ha, na), db = tu_upload(ctx, hb, nbuf), dc = tu_upload(ctx, c0, nc);
    cld_status s;
    if (via == VIA_ROUTED && nb == 1 && !g->gap)
        s = cld__gemm(ctx, g->ta, g->tb, m, n, k, g->alpha, da, off, lda, db, off, ldb, g->beta, dc, off,
                      ldc);
    else if (via == VIA_ROUTED)
        s = cld__gemm_batched(ctx, g->ta, g->tb, m, n, k, g->alpha, da, off, lda, sa, db, off, ldb, sb,
                              g->beta, dc, off, ldc, sc, nb);
    else if (via == VIA_OWN)
        s = cld__gemm_own(ctx, cfg, g->ta, g->tb, m, n, k, g->alpha, da, off, lda, sa, db, off, ldb, sb,
                          g->beta, dc, off, ldc, sc, nb);
    else
        s = cld__gemm_clblast(ctx, g->ta, g->tb, m, n, k, g->alpha, da, off, lda, sa, db, off, ldb, sb,
                              g->beta, dc, off, ldc, sc, nb);
    ck_assert_msg(s == CLD_OK, "%s: %s: %s", what, cld_status_name(s), cld_last_error());
    tu_download(ctx, dc, hc, nc);
    double worst = 0;
    for (size_t z = 0; z < nb; z++)
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) {
                double acc = 0, mag = 0;
                for (size_t p = 0; p < k; p++) {
                    size_t ia = off + z * sa + (g->ta ? p * lda + i : i * lda + p);
                    size_t ib = off + z * sb + (g->tb ? j * ldb + p : p * ldb + j);
                    double x = ha[ia], y = hb[ib];
                    acc += x * y;
                    mag += fabs(x * y);
                }
                size_t idx = off + z * sc + i * ldc + j;
                double ref = g->alpha * acc, den = fabs(g->alpha) * mag;
                if (g->beta != 0.0f) {
                    ref += g->beta * (double)c0[idx];
                    den += fabs(g->beta * (double)c0[idx]);
                }
                double e = fabs((double)hc[idx] - ref) / (den > 0 ? den : 1e-30);
                if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
                ck_assert_msg(!(e > TOL), "%s: C[%zu][%zu][%zu] = %.8g, want %.8g (err %.3g)", what, z, i, j,
                              (double)hc[idx], ref, e);
                hc[idx] = GUARD;
            }
    for (size_t i = 0; i < nc; i++)
        ck_assert_msg(hc[i] == GUARD, "%s: C buffer element %zu outside the matrices changed to %g", what, i,
                      (double)hc[i]);
    cld_buffer_release(da);
    cld_buffer_release(db);
    cld_buffer_release(dc);
    free(ha);
    free(hb);
    free(hc);
    free(c0);
    free(c0v);
    return worst;
}

/* Run g with every transpose combination through `via`. */
static void all_transposes(gcase g, int via, const cld__gemm_cfg *cfg, const char *cfg_name)
{
    for (int t = 0; t < 4; t++) {
        g.ta = t & 1;
        g.tb = t >> 1;
        char what[160];
        snprintf(what, sizeof what, "%s%s %dx%dx%d batch %d pad %d off %d alpha %g beta %g (%s)",
                 g.ta ? "At" : "A", g.tb ? "Bt" : "B", g.m, g.n, g.k, g.batch, g.pad, g.off, (double)g.alpha,
                 (double)g.beta, cfg_name);
        run_case(&g, via, cfg, what);
    }
}

/* The shapes every path is run on: tiny, odd, edges of the 6 x 16 tile
 * (N < 16, M < 6), large enough to pack (M, N >= 32), batched with gaps,
 * a shared B, and a long K (A B^T through gemm_dot). */
static const gcase shapes[] = {
    {0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1.0f, 0.0f, 0},     {0, 0, 7, 5, 9, 1, 0, 0, 0, 0, 1.0f, 0.0f, 0},
    {0, 0, 5, 3, 70, 1, 3, 1, 0, 0, -0.5f, 0.25f, 0},  {0, 0, 65, 33, 129, 1, 5, 7, 0, 0, 0.7f, 0.5f, 0},
    {0, 0, 50, 49, 17, 3, 2, 3, 11, 0, 1.0f, 0.0f, 0}, {0, 0, 40, 36, 20, 3, 0, 0, 0, 1, 1.5f, -1.0f, 0},
    {0, 0, 34, 40, 600, 1, 1, 0, 0, 0, 1.0f, 0.0f, 0},
};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))

/* Each configuration forces one path of cld__gemm_own (blas.h). */
static cld__gemm_cfg cfg_of(int which, const char **name)
{
    cld__gemm_cfg c = cld__gemm_default_cfg(tu_ctx());
    switch (which) {
    case 0: *name = "default"; break;
    case 1:
        *name = "in place, B^T gathered";
        c.pack = 0;
        c.tb_dot = 0;
        break;
    case 2:
        *name = "in place, gemm_dot";
        c.pack = 0;
        c.tb_dot = 1;
        break;
    case 3:
        *name = "packed B";
        c.pack = 1;
        c.pack_a = 0;
        break;
    case 4:
        *name = "packed A and B";
        c.pack = 1;
        c.pack_a = 1;
        break;
    default: /* other tile shapes, vector widths and unrolls */
        *name = "tiles 5x32 float16, unroll 8; dots 2x3 float4";
        c.tm = 5;
        c.tn = 32;
        c.vw = 16;
        c.ku = 8;
        c.dm = 2;
        c.dn = 3;
        c.dvw = 4;
        c.pack = which == 5 ? 2 : 1; /* auto, then packed everywhere */
        break;
    }
    return c;
}

START_TEST(test_routed)
{
    for (int i = 0; i < N_SHAPES; i++) all_transposes(shapes[i], VIA_ROUTED, NULL, "routed");
}
END_TEST

START_TEST(test_own_configs)
{
    const char *name;
    cld__gemm_cfg c = cfg_of(_i, &name);
    for (int i = 0; i < N_SHAPES; i++) all_transposes(shapes[i], VIA_OWN, &c, name);
}
END_TEST

/* gemm_dot with 16-wide vectors and 1 x 1 dots. */
START_TEST(test_dot_wide)
{
    cld__gemm_cfg c = cld__gemm_default_cfg(tu_ctx());
    c.pack = 0;
    c.dm = c.dn = 1;
    c.dvw = 16;
    gcase g = shapes[3];
    g.tb = 1;
    run_case(&g, VIA_OWN, &c, "A Bt, gemm_dot 1x1 float16");
    g = shapes[6];
    g.tb = 1;
    run_case(&g, VIA_OWN, &c, "A Bt (long K), gemm_dot 1x1 float16");
}
END_TEST

/* B's rows 4 KiB apart with a long K: the routed A B packs B (aliasing). */
START_TEST(test_aliasing_ldb)
{
    gcase g = {0, 0, 40, 70, 200, 1, 0, 0, 0, 0, 1.0f, 0.0f, 1024};
    run_case(&g, VIA_ROUTED, NULL, "A B, ldb 1024, routed");
    g.tb = 1;
    g.ldb = 0;
    g.pad = 1024 - 200;
    run_case(&g, VIA_ROUTED, NULL, "A B^T, ldb 1024, routed");
}
END_TEST

/* k = 0: C = beta C (alpha irrelevant); CLBlast rejects it, we do not. */
START_TEST(test_k_zero)
{
    gcase g = {0, 0, 5, 6, 0, 2, 1, 2, 3, 0, 2.0f, 0.5f, 0};
    all_transposes(g, VIA_ROUTED, NULL, "routed, k = 0");
    g.beta = 0.0f; /* C = 0 from NaN */
    all_transposes(g, VIA_ROUTED, NULL, "routed, k = 0, beta = 0");
}
END_TEST

/* The CLBlast wrapper (the route on GPUs), batched (one shape: CLBlast's
 * kernels take ~20 s to build on PoCL). */
START_TEST(test_clblast)
{
    gcase g = shapes[4];
    g.alpha = 0.5f;
    g.beta = 2.0f;
    run_case(&g, VIA_CLBLAST, NULL, "CLBlast A B batched");
}
END_TEST

START_TEST(test_backend_switch)
{
    cld_ctx *ctx = tu_ctx();
    cld_device_info info;
    TU_OK(cld_ctx_device_info(ctx, &info));
    /* CLD_GEMM is read once per context (runtime/settings.c) */
    const char *names[3] = {NULL, "clblast", "own"};
    /* the default: own kernels on the CPU path, CLBlast on the GPU path (CLD_FORCE_GPU_PATH, read alike) */
    const int want[3] = {ctx->settings.gpu_path ? CLD__GEMM_CLBLAST : CLD__GEMM_OWN, CLD__GEMM_CLBLAST,
                         CLD__GEMM_OWN};
    for (int i = 0; i < 3; i++) {
        if (names[i])
            setenv("CLD_GEMM", names[i], 1);
        else
            unsetenv("CLD_GEMM");
        cld_ctx *c;
        TU_OK(cld_ctx_create(NULL, &c));
        setenv("CLD_GEMM", "clblast", 1); /* read at creation only */
        ck_assert_int_eq(cld__gemm_backend(c), want[i]);
        TU_OK(cld_ctx_free(c));
    }
    unsetenv("CLD_GEMM");
    ctx->settings.gemm_backend = CLD__GEMM_OWN;
    gcase g = shapes[3];
    all_transposes(g, VIA_ROUTED, NULL, "routed, CLD_GEMM=own");
}
END_TEST

static void add(Suite *s, const char *name, const TTest *t, int loop_end)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 300);
    if (loop_end)
        tcase_add_loop_test(tc, t, 0, loop_end);
    else
        tcase_add_test(tc, t);
    suite_add_tcase(s, tc);
}

int main(void)
{
    Suite *s = suite_create("gemm");
    add(s, "routed", test_routed, 0);
    add(s, "own_configs", test_own_configs, 7);
    add(s, "dot_wide", test_dot_wide, 0);
    add(s, "aliasing_ldb", test_aliasing_ldb, 0);
    add(s, "k_zero", test_k_zero, 0);
    add(s, "clblast", test_clblast, 0);
    add(s, "backend_switch", test_backend_switch, 0);
    return tu_run_suite(s);
}
