/* Helpers shared by all Check tests: a shared context, seeded random data,
 * error metrics, temp dirs. Test-specific helpers belong in the test's file. */
#ifndef CLD_TESTUTIL_H
#define CLD_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "cldiffusion/cldiffusion.h"

/* Fail the test with status name and cld_last_error() unless `expr` is CLD_OK. */
#define TU_OK(expr)                                                                                        \
    do {                                                                                                   \
        cld_status tu_s__ = (expr);                                                                        \
        ck_assert_msg(tu_s__ == CLD_OK, "%s -> %s: %s", #expr, cld_status_name(tu_s__), cld_last_error()); \
    } while (0)

/* Fail unless `expr` returns exactly `want`. */
#define TU_STATUS(expr, want)                                                                         \
    do {                                                                                              \
        cld_status tu_s__ = (expr);                                                                   \
        ck_assert_msg(tu_s__ == (want), "%s -> %s (expected %s): %s", #expr, cld_status_name(tu_s__), \
                      cld_status_name(want), cld_last_error());                                       \
    } while (0)

/* Context on $CLD_DEVICE or the default device, created on first use and kept
 * for the life of the process (each Check test runs in its own fork). */
cld_ctx *tu_ctx(void);

/* malloc that aborts the test on failure. */
void *tu_malloc(size_t bytes);
/* n floats, uniform in [lo, hi) / normal N(0, std^2), reproducible from seed. */
void tu_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi);
void tu_fill_normal(float *x, size_t n, uint64_t seed, float std);

/* The parameters a UNet of `cfg` declares, every one random with seed
 * `seed` + its index: N(0, std^2), or with std 0 weights N(0, 1/fan_in) and
 * 1-D tensors N(0, 0.1^2). A nonzero `marker` goes into conv_out.bias[0]
 * (a test then turns it into a NaN in the saved file). */
cld_params *tu_random_unet_params(const cld_unet_config *cfg, uint64_t seed, float std, float marker);
float *tu_rand_uniform(size_t n, uint64_t seed, float lo, float hi); /* tu_malloc'd */

/* max_i |got-want| / max(|want|, floor); *worst (optional) gets the index. */
double tu_max_rel_err(const float *got, const float *want, size_t n, double floor, size_t *worst);
double tu_max_abs_err(const float *got, const float *want, size_t n, size_t *worst);
/* Fail the test if tu_max_rel_err(floor=1) > tol, naming `what` and the worst index. */
#define TU_ASSERT_CLOSE(got, want, n, tol, what)                                                       \
    do {                                                                                               \
        size_t tu_i__ = 0;                                                                             \
        double tu_e__ = tu_max_rel_err((got), (want), (n), 1.0, &tu_i__);                              \
        ck_assert_msg(tu_e__ <= (tol), "%s: max rel err %.3g > %.3g at [%zu]: got %g want %g", (what), \
                      tu_e__, (double)(tol), tu_i__, (double)(got)[tu_i__], (double)(want)[tu_i__]);   \
    } while (0)

/* Device buffer holding a copy of host floats / host copy of a device buffer. */
cl_mem tu_upload(cld_ctx *ctx, const float *x, size_t n);
void tu_download(cld_ctx *ctx, cl_mem buf, float *x, size_t n);

/* Run every test of suite s (freeing it), print Check's summary; returns the
 * process exit status (0 when all passed). Every test's main() ends in this. */
int tu_run_suite(Suite *s);

/* A fresh directory "$TMPDIR/<prefix>-XXXXXX" (default /tmp); the caller
 * free()s the returned path. tu_rm_rf removes a tree made by the tests. */
char *tu_mkdtemp(const char *prefix);
void tu_rm_rf(const char *path);

/* Seconds from a monotonic clock. */
double tu_now(void);

#endif
