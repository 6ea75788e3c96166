/* Settings from the environment, read once per context (cld_ctx_create):
 * the launch paths read ctx->settings, never getenv. */
#include "blas.h"

#include <stdlib.h>
#include <string.h>

/* A power of two in 1..256 from variable `name`, else 0. */
static size_t env_pow2(const char *name)
{
    const char *e = getenv(name);
    long v = e && *e ? strtol(e, NULL, 10) : 0;
    return v >= 1 && v <= 256 && !(v & (v - 1)) ? (size_t)v : 0;
}

static int env_is(const char *name, const char *value)
{
    const char *v = getenv(name);
    return v && strcmp(v, value) == 0;
}

void cld__settings_read(cld__settings *s, const cld_device_info *info)
{
    memset(s, 0, sizeof *s);
    size_t cu = info->compute_units ? info->compute_units : 1;
    /* cld__launch1d (graph/executor.c): CPUs one work-item per group (PoCL
     * runs it as a plain loop), 8 groups per compute unit; else 64 per group,
     * up to 1024 groups per unit. */
    size_t ls = env_pow2("CLD_LAUNCH1D_LS");
    s->launch1d_ls = ls ? ls : info->is_cpu ? 1 : 64;
    const char *e = getenv("CLD_LAUNCH1D_GROUPS");
    long groups = e && *e ? strtol(e, NULL, 10) : 0;
    s->launch1d_groups = groups >= 1 ? (size_t)groups : info->is_cpu ? 8 * cu : 1024 * cu;
    /* Row reductions: 1 on CPUs, where PoCL runs a one-item work-group as
     * plain vector code (10x faster than 64 items with barriers). */
    ls = env_pow2("CLD_REDUCE_LS");
    s->reduce_ls = ls ? ls : info->is_cpu ? 1 : 64;
    if (env_is("CLD_GEMM", "clblast"))
        s->gemm_backend = CLD__GEMM_CLBLAST;
    else if (env_is("CLD_GEMM", "own"))
        s->gemm_backend = CLD__GEMM_OWN;
    else
        s->gemm_backend = info->is_cpu ? CLD__GEMM_OWN : CLD__GEMM_CLBLAST;
    s->clblast_tune = !env_is("CLD_CLBLAST_TUNE", "0");
    s->conv_winograd = !env_is("CLD_CONV_WINOGRAD", "0");
    e = getenv("CLD_POISON");
    s->poison = e && *e && strcmp(e, "0") != 0;
    s->max_alloc_bytes = (size_t)info->max_alloc_bytes;
    e = getenv("CLD_MAX_ALLOC_MB");
    long mb = e && *e ? strtol(e, NULL, 10) : 0;
    if (mb >= 1 && (uint64_t)mb << 20 < info->max_alloc_bytes) {
        s->max_alloc_bytes = (size_t)mb << 20;
        s->max_alloc_env = 1;
    }
    cl_uint align_bits = 0;
    if (clGetDeviceInfo(info->device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL) !=
        CL_SUCCESS)
        align_bits = 0;
    s->base_align_bytes = align_bits / 8;
}
