/* CLBlast integration beyond the GEMM wrappers declared in internal.h. */
#ifndef CLD_BLAS_H
#define CLD_BLAS_H

#include "internal.h"

/* Install tuned CLBlast "Xgemm" parameters for devices that CLBlast's own
 * database does not cover well (today: PoCL on CPUs; see PERF-FACTS.md).
 * A no-op (CLD_OK) on other devices. Failure is not fatal for the caller. */
cld_status cld__blas_tune(cld_ctx *ctx);

#endif
