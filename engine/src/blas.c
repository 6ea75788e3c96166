/* GEMM through CLBlast's C API (row-major), and per-device CLBlast tuning. */
#include "blas.h"

#include <clblast_c.h>
#include <string.h>

static const char *blas_status_name(CLBlastStatusCode s) {
    switch (s) {
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
    /* The remaining codes mirror OpenCL's. */
    return cld_cl_error_name((cl_int)s);
}

static CLBlastTranspose tr(int t) { return t ? CLBlastTransposeYes : CLBlastTransposeNo; }

cld_status cld__gemm(cld_ctx *ctx, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                     float alpha, cl_mem a, size_t a_off, size_t lda, cl_mem b, size_t b_off,
                     size_t ldb, float beta, cl_mem c, size_t c_off, size_t ldc) {
    if (!ctx) return cld__fail(CLD_ERR_INVALID_ARG, "gemm: ctx is NULL");
    if (m == 0 || n == 0) return CLD_OK;
    CLBlastStatusCode s = CLBlastSgemm(CLBlastLayoutRowMajor, tr(trans_a), tr(trans_b), m, n, k,
                                       alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc,
                                       &ctx->queue, NULL);
    if (s == CLBlastSuccess) return CLD_OK;
    return cld__fail(CLD_ERR_BLAS,
                     "CLBlastSgemm(%s%s m=%zu n=%zu k=%zu lda=%zu ldb=%zu ldc=%zu, offsets "
                     "%zu/%zu/%zu) on '%s': status %d (%s)",
                     trans_a ? "At" : "A", trans_b ? "Bt" : "B", m, n, k, lda, ldb, ldc, a_off,
                     b_off, c_off, ctx->info.name, (int)s, blas_status_name(s));
}

cld_status cld__gemm_batched(cld_ctx *ctx, int trans_a, int trans_b, size_t m, size_t n,
                             size_t k, float alpha, cl_mem a, size_t a_off, size_t lda,
                             size_t a_stride, cl_mem b, size_t b_off, size_t ldb,
                             size_t b_stride, float beta, cl_mem c, size_t c_off, size_t ldc,
                             size_t c_stride, size_t batch) {
    if (!ctx) return cld__fail(CLD_ERR_INVALID_ARG, "gemm_batched: ctx is NULL");
    if (m == 0 || n == 0 || batch == 0) return CLD_OK;
    CLBlastStatusCode s = CLBlastSgemmStridedBatched(
        CLBlastLayoutRowMajor, tr(trans_a), tr(trans_b), m, n, k, alpha, a, a_off, lda, a_stride,
        b, b_off, ldb, b_stride, beta, c, c_off, ldc, c_stride, batch, &ctx->queue, NULL);
    if (s == CLBlastSuccess) return CLD_OK;
    return cld__fail(CLD_ERR_BLAS,
                     "CLBlastSgemmStridedBatched(%s%s m=%zu n=%zu k=%zu batch=%zu lda=%zu "
                     "ldb=%zu ldc=%zu, strides %zu/%zu/%zu) on '%s': status %d (%s)",
                     trans_a ? "At" : "A", trans_b ? "Bt" : "B", m, n, k, batch, lda, ldb, ldc,
                     a_stride, b_stride, c_stride, ctx->info.name, (int)s, blas_status_name(s));
}

static int is_pocl(const cld_device_info *info) {
    return strstr(info->platform_name, "Portable Computing Language") != NULL ||
           strstr(info->platform_name, "pocl") != NULL;
}

cld_status cld__blas_tune(cld_ctx *ctx) {
    if (!ctx) return cld__fail(CLD_ERR_INVALID_ARG, "cld__blas_tune: ctx is NULL");
    if (!(ctx->info.is_cpu && is_pocl(&ctx->info))) return CLD_OK;
    /* Best point of a small grid on PoCL/CPU (PERF-FACTS.md): ~3x CLBlast's defaults
     * for SGEMM 1024^3. Xgemm needs every one of its 16 parameters. */
    static const char *names[] = {"GEMMK", "KREG", "KWG", "KWI",  "MDIMA", "MDIMC",
                                  "MWG",   "NDIMB", "NDIMC", "NWG", "SA",    "SB",
                                  "STRM",  "STRN", "VWM",  "VWN"};
    static const size_t values[] = {0, 1, 16, 2, 4, 4, 64, 4, 4, 64, 0, 0, 1, 1, 8, 8};
    CLBlastStatusCode s =
        CLBlastOverrideParameters(ctx->info.device, "Xgemm", CLBlastPrecisionSingle,
                                  sizeof values / sizeof values[0], names, values);
    if (s == CLBlastSuccess) return CLD_OK;
    return cld__fail(CLD_ERR_BLAS, "CLBlastOverrideParameters(Xgemm) on '%s': status %d (%s)",
                     ctx->info.name, (int)s, blas_status_name(s));
}
