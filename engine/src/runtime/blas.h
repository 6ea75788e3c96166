/* Matrix products: CLBlast, our own kernels (cl/gemm.cl), and the routing
 * between them behind cld__gemm / cld__gemm_batched (internal.h). */
#ifndef CLD_BLAS_H
#define CLD_BLAS_H

#include "internal.h"

/* Install tuned CLBlast parameters ("Xgemm", and the size below which
 * CLBlast runs its untuned XgemmDirect) for devices that CLBlast's own
 * database does not cover well (today: PoCL on CPUs; see PERF-FACTS.md).
 * A no-op (CLD_OK) on other devices. Failure is not fatal for the caller.
 * cld__gemm_clblast calls it before a context's first CLBlast call. */
cld_status cld__blas_tune(cld_ctx *ctx);

/* Parameters of our kernels (cl/gemm.cl, see there) and of the choice
 * between them (blas.c). */
typedef struct cld__gemm_cfg {
    int tm, tn, vw;  /* micro-tile TM x TN per work-item, vectors of VW floats */
    int ku;          /* K-loop unroll */
    int dm, dn, dvw; /* gemm_dot (A B^T): DM x DN dots per work-item, VW */
    int pack;        /* pack op(B) (and op(A) if transposed) into panels and
                        run gemm_packed_ab / _b: 0 never, 1 always, 2 when
                        worth it (blas.c, worth_packing) */
    int pack_a;      /* when packing, pack op(A) even if not transposed */
    int tb_dot;      /* unpacked A B^T through gemm_dot (else gemm_nt) */
} cld__gemm_cfg;

/* The default configuration for ctx's device. */
cld__gemm_cfg cld__gemm_default_cfg(const cld_ctx *ctx);

/* Which implementation cld__gemm* use on ctx (ctx->settings.gemm_backend,
 * read once from CLD_GEMM=clblast|own when the context is made), else
 * own on CPU devices and CLBlast on others. */
enum { CLD__GEMM_CLBLAST = 0, CLD__GEMM_OWN = 1 };
int cld__gemm_backend(const cld_ctx *ctx);

/* Strided-batched GEMM through one specific implementation (arguments as
 * cld__gemm_batched). cfg NULL = cld__gemm_default_cfg. */
cld_status cld__gemm_own(cld_ctx *ctx, const cld__gemm_cfg *cfg, int trans_a, int trans_b, size_t m, size_t n,
                         size_t k, float alpha, cl_mem a, size_t a_off, size_t lda, size_t a_stride, cl_mem b,
                         size_t b_off, size_t ldb, size_t b_stride, float beta, cl_mem c, size_t c_off,
                         size_t ldc, size_t c_stride, size_t batch);
cld_status cld__gemm_clblast(cld_ctx *ctx, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                             float alpha, cl_mem a, size_t a_off, size_t lda, size_t a_stride, cl_mem b,
                             size_t b_off, size_t ldb, size_t b_stride, float beta, cl_mem c, size_t c_off,
                             size_t ldc, size_t c_stride, size_t batch);

#endif
