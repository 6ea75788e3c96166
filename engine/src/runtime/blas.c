/* Matrix products behind cld__gemm / cld__gemm_batched (internal.h), all
 * row-major: our kernels (cl/gemm.cl) on CPU devices, CLBlast elsewhere
 * (CLD_GEMM=own|clblast overrides), and CLBlast's tuning for PoCL.
 * Measurements and the choices they led to: bench/NOTES.md, section GEMM. */
#include "blas.h"

#include <clblast_c.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *blas_status_name(CLBlastStatusCode s)
{
    switch (s) {
        /* one case per E(), several to a line */
        // clang-format off
#define E(name) case CLBlast##name: return "CLBlast" #name;
    E(NotImplemented) E(InvalidMatrixA) E(InvalidMatrixB) E(InvalidMatrixC)
    E(InvalidVectorX) E(InvalidVectorY) E(InvalidDimension) E(InvalidLeadDimA)
    E(InvalidLeadDimB) E(InvalidLeadDimC) E(InvalidIncrementX) E(InvalidIncrementY)
    E(InsufficientMemoryA) E(InsufficientMemoryB) E(InsufficientMemoryC)
    E(InsufficientMemoryX) E(InsufficientMemoryY) E(InsufficientMemoryTemp)
    E(InvalidBatchCount) E(InvalidOverrideKernel) E(MissingOverrideParameter)
    E(InvalidLocalMemUsage) E(NoHalfPrecision) E(NoDoublePrecision) E(InvalidVectorScalar)
    E(InsufficientMemoryScalar) E(DatabaseError) E(UnknownError) E(UnexpectedError)
#undef E
    default: break;
    }
    // clang-format on
    /* The remaining codes mirror OpenCL's. */
    return cld_cl_error_name((cl_int)s);
}

static CLBlastTranspose tr(int t) { return t ? CLBlastTransposeYes : CLBlastTransposeNo; }

/* CLBlast's parameters for ctx's device, installed before its first CLBlast
 * call (here rather than in cld_ctx_create, so the context knows nothing of
 * BLAS); a failure only warns, once per process. */
static void tune_once(cld_ctx *ctx)
{
    static atomic_int warned;
    ctx->blas_tuned = 1;
    if (ctx->settings.clblast_tune && cld__blas_tune(ctx) != CLD_OK && !atomic_exchange(&warned, 1))
        fprintf(stderr, "cldiffusion: warning: %s; continuing with CLBlast's defaults\n", cld_last_error());
}

cld_status cld__gemm_clblast(cld_ctx *ctx, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                             float alpha, cl_mem a, size_t a_off, size_t lda, size_t a_stride, cl_mem b,
                             size_t b_off, size_t ldb, size_t b_stride, float beta, cl_mem c, size_t c_off,
                             size_t ldc, size_t c_stride, size_t batch)
{
    if (!ctx) return cld__fail(CLD_ERR_INVALID_ARG, "gemm: ctx is NULL");
    if (m == 0 || n == 0 || batch == 0) return CLD_OK;
    if (!ctx->blas_tuned) tune_once(ctx);
    CLBlastStatusCode s;
    if (batch == 1)
        s = CLBlastSgemm(CLBlastLayoutRowMajor, tr(trans_a), tr(trans_b), m, n, k, alpha, a, a_off, lda, b,
                         b_off, ldb, beta, c, c_off, ldc, &ctx->queue, NULL);
    else
        s = CLBlastSgemmStridedBatched(CLBlastLayoutRowMajor, tr(trans_a), tr(trans_b), m, n, k, alpha, a,
                                       a_off, lda, a_stride, b, b_off, ldb, b_stride, beta, c, c_off, ldc,
                                       c_stride, batch, &ctx->queue, NULL);
    if (s == CLBlastSuccess) return CLD_OK;
    return cld__fail(CLD_ERR_BLAS,
                     "CLBlastSgemm%s(%s%s m=%zu n=%zu k=%zu batch=%zu lda=%zu ldb=%zu ldc=%zu, "
                     "offsets %zu/%zu/%zu, strides %zu/%zu/%zu) on '%s': status %d (%s)",
                     batch == 1 ? "" : "StridedBatched", trans_a ? "At" : "A", trans_b ? "Bt" : "B", m, n, k,
                     batch, lda, ldb, ldc, a_off, b_off, c_off, a_stride, b_stride, c_stride, ctx->info.name,
                     (int)s, blas_status_name(s));
}

/* ------------------------------------------------------------------ own */

/* Chosen on PoCL 3.1 / Zen 5 (kernels compiled for AVX2: 16 vector
 * registers of 8 floats): 6 x 16 tiles keep 12 accumulators + 2 B vectors
 * + 1 broadcast in registers. GPUs are routed to CLBlast (cld__gemm_backend);
 * forced onto our kernels there (CLD_GEMM=own) the same configuration runs,
 * correct but untuned (one work-item per work-group). */
cld__gemm_cfg cld__gemm_default_cfg(const cld_ctx *ctx)
{
    (void)ctx; /* these values are cl/gemm.cl's #ifndef defaults: keep them equal */
    cld__gemm_cfg c = {
        .tm = 6, .tn = 16, .vw = 8, .ku = 4, .dm = 3, .dn = 4, .dvw = 8, .pack = 2, .pack_a = 0, .tb_dot = 1};
    return c;
}

int cld__gemm_backend(const cld_ctx *ctx) { return ctx->settings.gemm_backend; }

/* Is the last float index into a matrix (rows x cols, leading dim ld, batch
 * stride st) safely inside the kernels' int arithmetic? */
static int fits_int(size_t off, size_t st, size_t batch, size_t rows, size_t cols, size_t ld)
{
    double last = (double)off + (double)st * (double)(batch - 1) +
                  (double)ld * (double)(rows ? rows - 1 : 0) + (double)cols;
    return last < (double)INT_MAX / 2;
}

static size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

enum { GK_NN, GK_TN, GK_NT, GK_TT, GK_DOT, GK_PACK_B_ROWS, GK_PACK_A, GK_PACK_B, GK_PACKED_AB, GK_PACKED_B };
static const char *const gk_names[CLD__GEMM_KERNELS] = {
    "gemm_nn",          "gemm_tn",     "gemm_nt",     "gemm_tt",        "gemm_dot",
    "gemm_pack_b_rows", "gemm_pack_a", "gemm_pack_b", "gemm_packed_ab", "gemm_packed_b"};

/* Kernel `which` of gemm.cl built with `opts`. The default configuration's
 * (dflt) are kept in the context once looked up, so a GEMM per graph node
 * per run looks nothing up, as the nodes' own kernels (graph/planner.c);
 * a caller's configuration (benchmarks, tuning) asks cld_ctx_kernel. */
static cld_status gemm_kernel(cld_ctx *ctx, int dflt, const char *opts, int which, cl_kernel *k)
{
    if (dflt && ctx->gemm_kernels[which]) {
        *k = ctx->gemm_kernels[which];
        return CLD_OK;
    }
    CLD_TRY(cld_ctx_kernel(ctx, "gemm", opts, gk_names[which], k));
    if (dflt) ctx->gemm_kernels[which] = *k;
    return CLD_OK;
}

/* Scratch for packed panels, kept in the context between calls: a fresh
 * buffer per call costs page faults on PoCL (~2 ms for 2 MB, more than the
 * packing). Reusing it is safe because ops are enqueued on the context's
 * in-order queue: one call's packing runs after the previous call's product.
 * A replaced buffer is freed by OpenCL once its enqueued kernels are done. */
static cld_status scratch_get(cld_ctx *ctx, size_t floats, cl_mem *out)
{
    size_t bytes = floats * sizeof(float);
    if (ctx->gemm_scratch && ctx->gemm_scratch_bytes < bytes) {
        clReleaseMemObject(ctx->gemm_scratch);
        ctx->gemm_scratch = NULL;
    }
    if (!ctx->gemm_scratch) {
        CLD_TRY(cld__buffer_create(ctx, CL_MEM_READ_WRITE, bytes, NULL, "gemm packing buffer",
                                   &ctx->gemm_scratch));
        ctx->gemm_scratch_bytes = bytes;
    }
    *out = ctx->gemm_scratch;
    return CLD_OK;
}

/* Reject a matrix whose last element lies beyond its buffer (the kernels
 * would read or write out of bounds). */
static cld_status check_extent(const char *which, cl_mem buf, size_t off, size_t st, size_t batch,
                               size_t rows, size_t cols, size_t ld)
{
    size_t size = 0;
    cl_int err = clGetMemObjectInfo(buf, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (err != CL_SUCCESS) return cld__cl_check(err, "gemm: clGetMemObjectInfo(CL_MEM_SIZE)");
    size_t need = off + st * (batch - 1) + ld * (rows ? rows - 1 : 0) + cols;
    if (need * sizeof(float) > size)
        return cld__fail(CLD_ERR_BLAS, "gemm: matrix %s needs %zu floats but its buffer holds %zu", which,
                         need, size / sizeof(float));
    return CLD_OK;
}

/* Pack `batch` matrices S (U x L), S(u, l) = src[so + z*ss + u*su + l*sl],
 * into panels of R = TM (which = 'a') or TN ('b') rows at dst + dso: see
 * pack_panel in cl/gemm.cl. */
static cld_status pack(cld_ctx *ctx, int dflt, const char *opts, char which, cl_mem dst, size_t dso,
                       cl_mem src, size_t so, size_t su, size_t sl, size_t ss, size_t U, size_t L, size_t R,
                       size_t batch)
{
    cl_kernel k;
    size_t p0 = 0, ls[3] = {64, 1, 1};
    if (which == 'b' && su == 1 && U >= R) { /* rows of B: full panels as vectors */
        p0 = U / R;
        CLD_TRY(gemm_kernel(ctx, dflt, opts, GK_PACK_B_ROWS, &k));
        CLD_TRY(cld__kargs(k, "gemm_pack_b_rows", "bibiiiii", dst, (int)dso, src, (int)so, (int)sl, (int)ss,
                           (int)U, (int)L));
        size_t gs[3] = {ceil_div(L, 8), ceil_div(p0, 8), batch}, lr[3] = {1, 8, 1};
        CLD_TRY(cld__launch(ctx, k, "gemm_pack_b_rows", 3, gs, lr));
        if (p0 * R == U) return CLD_OK;
    }
    const char *name = which == 'a' ? "gemm_pack_a" : "gemm_pack_b";
    CLD_TRY(gemm_kernel(ctx, dflt, opts, which == 'a' ? GK_PACK_A : GK_PACK_B, &k));
    CLD_TRY(cld__kargs(k, name, "bibiiiiiiii", dst, (int)dso, src, (int)so, (int)su, (int)sl, (int)ss, (int)U,
                       (int)L, 0, (int)p0));
    size_t gs[3] = {L, ceil_div(U, R) - p0, batch};
    return cld__launch(ctx, k, name, 3, gs, ls);
}

/* Do k rows of stride ld floats, a few floats read from each in turn by
 * a work-item and again by the next, collide in the L1 cache's sets? In
 * an L1 of 64 sets of 64-byte lines, 8-way (32 KiB), rows 2^j floats
 * apart (2^j the largest power of two dividing ld) fall into 1024 / 2^j
 * sets for 2^j >= 16, so only 8192 / 2^j of them stay. For 2^j <= 32 the
 * limit is the cache's size, which packing does not change. */
static int aliases(size_t ld, size_t k)
{
    size_t pow2 = ld & (~ld + 1);
    return pow2 >= 64 && k * pow2 > 8192;
}

/* Pack (cfg pack = 2)? Measured on PoCL/CPU (bench/NOTES.md, GEMM): A B
 * read in place is as fast as packed unless B's rows alias; A^T read in
 * place runs at half speed; A B^T: gemm_dot wins for long K. Packing does
 * not pay for small products. A B^T is decided by K alone: gemm_dot sums
 * K in vector lanes, the other kernels in order, so they round differently,
 * and m is the batch of a linear layer: a sample must not depend on its
 * batch (it did, by up to 3.8e-6, from 32 UNet rows on; README, cld-sample). */
static int worth_packing(const cld__gemm_cfg *p, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                         size_t ldb)
{
    if (trans_b && !trans_a && p->tb_dot) return k < 512;
    if (m < 32 || n < 32) return 0;
    if (!trans_a && !trans_b) return aliases(ldb, k);
    return 1;
}

cld_status cld__gemm_own(cld_ctx *ctx, const cld__gemm_cfg *cfg, int trans_a, int trans_b, size_t m, size_t n,
                         size_t k, float alpha, cl_mem a, size_t a_off, size_t lda, size_t a_stride, cl_mem b,
                         size_t b_off, size_t ldb, size_t b_stride, float beta, cl_mem c, size_t c_off,
                         size_t ldc, size_t c_stride, size_t batch)
{
    if (!ctx) return cld__fail(CLD_ERR_INVALID_ARG, "gemm: ctx is NULL");
    if (m == 0 || n == 0 || batch == 0) return CLD_OK;
    cld__gemm_cfg dc = cld__gemm_default_cfg(ctx);
    const cld__gemm_cfg *p = cfg ? cfg : &dc;
    size_t tm = (size_t)p->tm, tn = (size_t)p->tn;
    int packed =
        k > 0 && (p->pack == 1 || (p->pack == 2 && worth_packing(p, trans_a, trans_b, m, n, k, ldb)));
    int pack_a = packed && (trans_a || p->pack_a);
    int dot = !packed && trans_b && !trans_a && p->tb_dot;
    /* packed panels: A then B, one copy per batch entry (one if shared) */
    size_t na = a_stride ? batch : 1, nb = b_stride ? batch : 1;
    size_t a_len = pack_a ? na * ceil_div(m, tm) * tm * k : 0;
    size_t b_len = packed ? nb * ceil_div(n, tn) * tn * k : 0;
    if (!fits_int(a_off, a_stride, batch, trans_a ? k : m, trans_a ? m : k, lda) ||
        !fits_int(b_off, b_stride, batch, trans_b ? n : k, trans_b ? k : n, ldb) ||
        !fits_int(c_off, c_stride, batch, m, n, ldc) || !fits_int(0, 0, 1, 1, a_len + b_len, 0) ||
        batch >= 65536)
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "gemm (own kernels): %zux%zux%zu batch %zu exceeds int indexing", m, n, k, batch);
    /* the default configuration is gemm.cl's own #ifndef defaults: no
     * options, so that program is part of the one-program bundle
     * (runtime/program.c) instead of a build apart */
    const cld__gemm_cfg d = cld__gemm_default_cfg(ctx);
    char opts[160] = "";
    if (p->tm != d.tm || p->tn != d.tn || p->vw != d.vw || p->ku != d.ku || p->dm != d.dm || p->dn != d.dn ||
        p->dvw != d.dvw)
        snprintf(opts, sizeof opts, "-DTM=%d -DTN=%d -DVW=%d -DKU=%d -DDM=%d -DDN=%d -DDVW=%d", p->tm, p->tn,
                 p->vw, p->ku, p->dm, p->dn, p->dvw);
    cl_kernel kg;
    if (!packed) {
        int which = dot ? GK_DOT : GK_NN + (trans_a ? 1 : 0) + (trans_b ? 2 : 0);
        const char *name = gk_names[which];
        CLD_TRY(gemm_kernel(ctx, !cfg, opts, which, &kg));
        CLD_TRY(cld__kargs(kg, name, "iiifbiiibiiifbiii", (int)m, (int)n, (int)k, (double)alpha, a,
                           (int)a_off, (int)lda, (int)a_stride, b, (int)b_off, (int)ldb, (int)b_stride,
                           (double)beta, c, (int)c_off, (int)ldc, (int)c_stride));
        size_t gs[3] = {ceil_div(m, dot ? (size_t)p->dm : tm), ceil_div(n, dot ? (size_t)p->dn : tn), batch};
        size_t ls[3] = {1, 1, 1};
        return cld__launch(ctx, kg, name, 3, gs, ls);
    }
    cl_mem tmp = NULL;
    CLD_TRY(scratch_get(ctx, a_len + b_len, &tmp));
    clRetainMemObject(tmp);
    /* S(m, k) = op(A); S(n, k) = op(B)^T */
    cld_status s = CLD_OK;
    if (pack_a)
        s = pack(ctx, !cfg, opts, 'a', tmp, 0, a, a_off, trans_a ? 1 : lda, trans_a ? lda : 1, a_stride, m, k,
                 tm, na);
    if (s == CLD_OK)
        s = pack(ctx, !cfg, opts, 'b', tmp, a_len, b, b_off, trans_b ? ldb : 1, trans_b ? 1 : ldb, b_stride,
                 n, k, tn, nb);
    const char *name = pack_a ? "gemm_packed_ab" : "gemm_packed_b";
    if (s == CLD_OK) s = gemm_kernel(ctx, !cfg, opts, pack_a ? GK_PACKED_AB : GK_PACKED_B, &kg);
    int spb = b_stride ? (int)(b_len / batch) : 0;
    if (s == CLD_OK && pack_a) /* a plain C: one segment of n columns, no bias */
        s = cld__kargs(kg, name, "iiifbiibiifbiiiiibii", (int)m, (int)n, (int)k, (double)alpha, tmp, 0,
                       a_stride ? (int)(a_len / batch) : 0, tmp, (int)a_len, spb, (double)beta, c, (int)c_off,
                       (int)ldc, (int)c_stride, (int)n, 0, c, 0, 0);
    else if (s == CLD_OK)
        s = cld__kargs(kg, name, "iiifbiiibiifbiii", (int)m, (int)n, (int)k, (double)alpha, a, (int)a_off,
                       (int)lda, (int)a_stride, tmp, (int)a_len, spb, (double)beta, c, (int)c_off, (int)ldc,
                       (int)c_stride);
    size_t gs[3] = {ceil_div(m, tm), ceil_div(n, tn), batch}, ls[3] = {1, 1, 1};
    if (s == CLD_OK) s = cld__launch(ctx, kg, name, 3, gs, ls);
    clReleaseMemObject(tmp);
    return s;
}

/* ------------------------------------------------------------------ routing */

cld_status cld__gemm_batched(cld_ctx *ctx, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                             float alpha, cl_mem a, size_t a_off, size_t lda, size_t a_stride, cl_mem b,
                             size_t b_off, size_t ldb, size_t b_stride, float beta, cl_mem c, size_t c_off,
                             size_t ldc, size_t c_stride, size_t batch)
{
    if (!ctx) return cld__fail(CLD_ERR_INVALID_ARG, "gemm: ctx is NULL");
    if (m == 0 || n == 0 || batch == 0) return CLD_OK;
    if (k) {
        CLD_TRY(check_extent("A", a, a_off, a_stride, batch, trans_a ? k : m, trans_a ? m : k, lda));
        CLD_TRY(check_extent("B", b, b_off, b_stride, batch, trans_b ? n : k, trans_b ? k : n, ldb));
    }
    CLD_TRY(check_extent("C", c, c_off, c_stride, batch, m, n, ldc));
    /* k == 0 (C = beta C) too: CLBlast rejects it */
    if (cld__gemm_backend(ctx) == CLD__GEMM_OWN || k == 0) {
        cld_status s = cld__gemm_own(ctx, NULL, trans_a, trans_b, m, n, k, alpha, a, a_off, lda, a_stride, b,
                                     b_off, ldb, b_stride, beta, c, c_off, ldc, c_stride, batch);
        if (s != CLD_ERR_INVALID_ARG) return s; /* else beyond int indexing: CLBlast */
    }
    return cld__gemm_clblast(ctx, trans_a, trans_b, m, n, k, alpha, a, a_off, lda, a_stride, b, b_off, ldb,
                             b_stride, beta, c, c_off, ldc, c_stride, batch);
}

cld_status cld__gemm(cld_ctx *ctx, int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                     cl_mem a, size_t a_off, size_t lda, cl_mem b, size_t b_off, size_t ldb, float beta,
                     cl_mem c, size_t c_off, size_t ldc)
{
    return cld__gemm_batched(ctx, trans_a, trans_b, m, n, k, alpha, a, a_off, lda, 0, b, b_off, ldb, 0, beta,
                             c, c_off, ldc, 0, 1);
}

static int is_pocl(const cld_device_info *info)
{
    return strstr(info->platform_name, "Portable Computing Language") != NULL ||
           strstr(info->platform_name, "pocl") != NULL;
}

cld_status cld__blas_tune(cld_ctx *ctx)
{
    if (!ctx) return cld__fail(CLD_ERR_INVALID_ARG, "cld__blas_tune: ctx is NULL");
    if (!(ctx->info.is_cpu && is_pocl(&ctx->info))) return CLD_OK;
    /* Best point of a small grid on PoCL/CPU (PERF-FACTS.md): ~3x CLBlast's defaults
     * for SGEMM 1024^3. Xgemm needs every one of its 16 parameters. */
    static const char *names[] = {"GEMMK", "KREG", "KWG", "KWI", "MDIMA", "MDIMC", "MWG", "NDIMB",
                                  "NDIMC", "NWG",  "SA",  "SB",  "STRM",  "STRN",  "VWM", "VWN"};
    static const size_t values[] = {0, 1, 16, 2, 4, 4, 64, 4, 4, 64, 0, 0, 1, 1, 8, 8};
    CLBlastStatusCode s = CLBlastOverrideParameters(ctx->info.device, "Xgemm", CLBlastPrecisionSingle,
                                                    sizeof values / sizeof values[0], names, values);
    if (s != CLBlastSuccess)
        return cld__fail(CLD_ERR_BLAS, "CLBlastOverrideParameters(Xgemm) on '%s': status %d (%s)",
                         ctx->info.name, (int)s, blas_status_name(s));
    /* Below m*n*k = size^3 CLBlast runs XgemmDirect, untuned here: 2-3 GFLOPS
     * against 8-25 for the tuned Xgemm at 256^3-sized products (bench/NOTES.md,
     * GEMM; CLBlast's default size is larger). */
    const char *rname[] = {"XGEMM_MIN_INDIRECT_SIZE"};
    const size_t rvalue[] = {128};
    s = CLBlastOverrideParameters(ctx->info.device, "GemmRoutine", CLBlastPrecisionSingle, 1, rname, rvalue);
    if (s == CLBlastSuccess) return CLD_OK;
    return cld__fail(CLD_ERR_BLAS, "CLBlastOverrideParameters(GemmRoutine) on '%s': status %d (%s)",
                     ctx->info.name, (int)s, blas_status_name(s));
}
