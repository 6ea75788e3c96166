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

/* The largest power of two <= n (n >= 1). */
static size_t pow2_floor(size_t n)
{
    size_t p = 1;
    while (p <= n / 2) p *= 2;
    return p;
}

/* A GPU work-group size: `want`, at most the device's work-group limit and,
 * for kernels keeping `local_per_item` bytes per work-item in local memory,
 * half its local memory; a power of two (the reduction trees halve it). */
static size_t gpu_ls(const cld_device_info *info, size_t want, size_t local_per_item)
{
    size_t ls = want;
    if (info->max_work_group_size && ls > info->max_work_group_size) ls = info->max_work_group_size;
    if (local_per_item && info->local_mem_bytes && ls * local_per_item > info->local_mem_bytes / 2)
        ls = (size_t)(info->local_mem_bytes / 2 / local_per_item);
    return pow2_floor(ls ? ls : 1);
}

void cld__settings_read(cld__settings *s, const cld_device_info *info)
{
    memset(s, 0, sizeof *s);
    size_t cu = info->compute_units ? info->compute_units : 1;
    s->gpu_path = !info->is_cpu || env_is("CLD_FORCE_GPU_PATH", "1");
    /* cld__launch1d (graph/executor.c): CPUs one work-item per group (PoCL
     * runs it as a plain loop), 8 groups per compute unit; GPUs 64 per group
     * (two 32-wide warps, one 64-wide wavefront), up to 1024 groups per unit. */
    size_t ls = env_pow2("CLD_LAUNCH1D_LS");
    s->launch1d_ls = ls ? ls : s->gpu_path ? gpu_ls(info, 64, 0) : 1;
    const char *e = getenv("CLD_LAUNCH1D_GROUPS");
    long groups = e && *e ? strtol(e, NULL, 10) : 0;
    s->launch1d_groups = groups >= 1 ? (size_t)groups : s->gpu_path ? 1024 * cu : 8 * cu;
    /* Row reductions: 1 on CPUs, where PoCL runs a one-item work-group as
     * plain vector code (10x faster than 64 items with barriers); on GPUs a
     * work-group of 64 sums its row through a local-memory tree (group norm
     * keeps 2 floats per item). */
    ls = env_pow2("CLD_REDUCE_LS");
    s->reduce_ls = ls ? ls : s->gpu_path ? gpu_ls(info, 64, 2 * sizeof(float)) : 1;
    if (env_is("CLD_GEMM", "clblast"))
        s->gemm_backend = CLD__GEMM_CLBLAST;
    else if (env_is("CLD_GEMM", "own"))
        s->gemm_backend = CLD__GEMM_OWN;
    else
        s->gemm_backend = s->gpu_path ? CLD__GEMM_CLBLAST : CLD__GEMM_OWN;
    /* wino_gemm runs one work-item per work-group: right for PoCL, wrong for
     * GPUs, which take the batched GEMM (CLBlast, tuned per device). */
    s->wino_blas = s->gpu_path;
    s->wino_fused = !env_is("CLD_WINO_FUSED", "0");
    s->clblast_tune = !env_is("CLD_CLBLAST_TUNE", "0");
    s->conv_winograd = !env_is("CLD_CONV_WINOGRAD", "0");
    e = getenv("CLD_POISON");
    s->poison = e && *e && strcmp(e, "0") != 0;
    /* the device's limit, already lowered by CLD_MAX_ALLOC (device.c) */
    s->max_alloc_bytes = (size_t)info->max_alloc_bytes;
    const uint64_t lim = cld__env_max_alloc(); /* the limit came from it when it is the limit */
    s->max_alloc_env = lim && lim == info->max_alloc_bytes;
    cl_uint align_bits = 0;
    if (clGetDeviceInfo(info->device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL) !=
        CL_SUCCESS)
        align_bits = 0;
    s->base_align_bytes = align_bits / 8;
    cl_ulong cache = 0;
    if (clGetDeviceInfo(info->device, CL_DEVICE_GLOBAL_MEM_CACHE_SIZE, sizeof cache, &cache, NULL) !=
        CL_SUCCESS)
        cache = 0;
    s->cache_bytes = (size_t)cache;
}

cld_status cld_ctx_launch_config(const cld_ctx *ctx, char *buf, size_t cap)
{
    if (!ctx || !buf || !cap) return cld__fail(CLD_ERR_INVALID_ARG, "cld_ctx_launch_config: NULL argument");
    const cld__settings *s = &ctx->settings;
    const char *why = !ctx->info.is_cpu ? "not a CPU device"
                      : s->gpu_path     ? "CLD_FORCE_GPU_PATH=1"
                                        : "CPU device";
    snprintf(buf, cap,
             "launch configuration: %s path (%s)\n"
             "  element-wise (cld__launch1d): %zu work-items per group, at most %zu groups\n"
             "  row reductions (reduce_rows, group norm, softmax, VLB sums): %zu work-items per row%s\n"
             "  losses (MSE, VLB) and gradient norm: 64 work-items per group (loss.cl, vlb.cl, optim.cl)\n"
             "  products (linear, matmul, attention): %s\n"
             "  conv: own tiles (6 x 16 per work-item, one per group); Winograd products: %s;\n"
             "    Winograd chunks of samples: %s%s\n"
             "  allocation limit: %zu bytes per buffer (%s); blocks aligned to 128 bytes, chunks to %zu\n",
             s->gpu_path ? "GPU" : "CPU", why, s->launch1d_ls, s->launch1d_groups, s->reduce_ls,
             s->reduce_ls > 1 ? " (local-memory tree)" : "",
             s->gemm_backend == CLD__GEMM_OWN ? "own kernels (cl/gemm.cl), one tile per work-item"
                                              : "CLBlast",
             s->conv_wino_blas || s->wino_blas ? "batched GEMM (the products route)"
                                               : "wino_gemm (4 column tiles per group)",
             !s->gpu_path && s->cache_bytes ? "within 1/6 of the global memory cache" : "within 64 MB",
             !s->wino_blas && s->wino_fused
                 ? ";\n    Winograd forward and dx as one kernel (wino_fused) where U is at most 4 MB"
                 : "",
             s->max_alloc_bytes, s->max_alloc_env ? "CLD_MAX_ALLOC" : "CL_DEVICE_MAX_MEM_ALLOC_SIZE",
             s->base_align_bytes > 128 ? s->base_align_bytes : (size_t)128);
    return CLD_OK;
}
