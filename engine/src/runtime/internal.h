/* Runtime layer internals: errors, the context (device, queue, program and
 * kernel caches), kernel launches, GEMM routing, host RNG. Not installed. */
#ifndef CLD_RUNTIME_INTERNAL_H
#define CLD_RUNTIME_INTERNAL_H

#include "cldiffusion/cldiffusion.h"
#include <stdarg.h>
#include <stdio.h>

/* ---------------------------------------------------------------- errors */
/* Record a formatted message as this thread's last error; returns `s`. */
cld_status cld__fail(cld_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Record "what: CL_ERROR_NAME (code)" if err != CL_SUCCESS. */
cld_status cld__cl_check(cl_int err, const char *what);
#define CLD_TRY(expr)                  \
    do {                               \
        cld_status s__ = (expr);       \
        if (s__ != CLD_OK) return s__; \
    } while (0)
#define CLD_CL_TRY(expr, what) CLD_TRY(cld__cl_check((expr), (what)))

/* A device buffer (clCreateBuffer with flags, host): more than the device's
 * max single allocation is refused as OpenCL specifies (a driver may not
 * check; $CLD_MAX_ALLOC lowers the limit to simulate a smaller device).
 * CLD_ERR_NOMEM for any allocation failure, naming `what`, the size and
 * the limit; *out NULL on failure. */
struct cld_ctx;
/* CLD_MAX_ALLOC=SIZE (bytes, or K, M, G): the allocation limit it asks
 * for, 0 when unset or not a size (device.c lowers the device's to it). */
uint64_t cld__env_max_alloc(void);
cld_status cld__buffer_create(struct cld_ctx *ctx, cl_mem_flags flags, size_t bytes, void *host,
                              const char *what, cl_mem *out);

/* ---------------------------------------------------------------- context */
typedef struct cld__kernel_entry {
    char *key; /* program \n options \n kernel */
    cl_kernel kernel;
} cld__kernel_entry;

/* cld__kernel's lookup table (program.c): (program, name) string pointers
 * -> index in ctx->kernels. */
#define CLD__KERNEL_SLOTS 256
typedef struct cld__kernel_slot {
    const char *program, *name;
    int entry;
} cld__kernel_slot;

typedef struct cld__program_entry {
    char *key; /* program \n options */
    cl_program program;
} cld__program_entry;

/* Settings from the environment, read once when the context is created
 * (settings.c), resolved against the device: nothing on a launch path calls
 * getenv. Tests change them on their context directly (Check runs each test
 * in its own process, so nothing leaks into the next test).
 *
 * The launch configuration of every op family is chosen here, once, from the
 * device (settings.c is the one place; cld_ctx_launch_config prints it,
 * `cld-devices --verbose`): CPU devices get the values measured on PoCL,
 * others (gpu_path) the GPU ones; CLD_FORCE_GPU_PATH=1 takes the GPU ones on
 * any device, so the GPU code paths run (and are tested) on PoCL and Oclgrind. */
typedef struct cld__settings {
    int gpu_path; /* GPU decisions: not a CPU device, or CLD_FORCE_GPU_PATH=1 */
    /* element-wise (cld__launch1d, graph/executor.c): CLD_LAUNCH1D_LS / _GROUPS override */
    size_t launch1d_ls;     /* work-group size: CPU 1; GPU 64 (<= the device's work-group limit) */
    size_t launch1d_groups; /* most work-groups: CPU 8 per unit; GPU 1024 per unit */
    /* row reductions (reduce_rows, group norm, softmax, the VLB's row sums): one
     * work-group per row, a local-memory tree on GPUs; CLD_REDUCE_LS overrides */
    size_t
        reduce_ls; /* CPU 1 (PoCL runs it as plain vector code); GPU 64 (work-group and local-memory limits) */
    /* products (linear, matmul, attention; Winograd's 36 products) */
    int gemm_backend; /* CLD__GEMM_CLBLAST or CLD__GEMM_OWN: CLD_GEMM, else own on CPUs, CLBlast on the GPU path */
    int wino_blas; /* Winograd's products through cld__gemm_batched (GPU path), else wino_gemm */
    int wino_fused; /* CPU path: Winograd's forward and dx in one kernel where it pays (CLD_WINO_FUSED=0: never) */
    int clblast_tune;  /* install the PoCL CLBlast parameters (0 if CLD_CLBLAST_TUNE=0) */
    int conv_winograd; /* Winograd where it pays (0 if CLD_CONV_WINOGRAD=0) */
    int poison;        /* new graphs poison released memory (CLD_POISON) */
    /* Most bytes in one device buffer: the graph arena, its pinned buffer
     * and the parameter store are split into chunks of at most this (no
     * tensor crosses one). CL_DEVICE_MAX_MEM_ALLOC_SIZE, lowered by
     * CLD_MAX_ALLOC=SIZE (device.c; max_alloc_env then 1). */
    size_t max_alloc_bytes;
    int max_alloc_env;
    size_t base_align_bytes; /* CL_DEVICE_MEM_BASE_ADDR_ALIGN, in bytes: chunk sizes are multiples */
    size_t cache_bytes;      /* CL_DEVICE_GLOBAL_MEM_CACHE_SIZE (0: unknown) */
    /* Test hooks, never from the environment (test/ops/test_ops_conv.c,
     * test/models/test_unet.c, bench/lab_winograd.c), for conv nodes built
     * afterwards: at most conv_max_chunk samples per chunk (0: no cap), the
     * im2col path where the implicit one applies, Winograd 0 where it pays /
     * 1 never / 2 always, Winograd's products through the batched GEMM
     * (the GPU route) on CPUs too, and its fused kernel (wino_fused) 0 where
     * it pays / 1 never / 2 always. */
    int conv_max_chunk, conv_force_im2col, conv_winograd_mode, conv_wino_blas, conv_wino_fused_mode;
} cld__settings;
/* Fill s from the environment for the device `info` (settings.c). */
void cld__settings_read(cld__settings *s, const cld_device_info *info);

#define CLD__GEMM_KERNELS 10 /* cl/gemm.cl's kernels (blas.c) */

struct cld_ctx {
    cld_device_info info;
    cld__settings settings;
    cl_context context;
    cl_command_queue queue;
    cld__program_entry *programs;
    int n_programs, cap_programs;
    cld__kernel_entry *kernels;
    int n_kernels, cap_kernels;
    cld__kernel_slot kernel_slots[CLD__KERNEL_SLOTS];
    unsigned long kernel_lookups; /* cld__kernel calls: tests check a planned graph's run makes none */
    cld_compile_stats stats;
    cl_kernel gemm_kernels[CLD__GEMM_KERNELS]; /* the default configuration's, once looked up (blas.c) */
    cl_mem gemm_scratch;                       /* packed GEMM panels, reused (blas.c) */
    size_t gemm_scratch_bytes;
    int blas_tuned; /* cld__blas_tune ran (first CLBlast call, blas.c) */
};

/* Set kernel arguments from a format string: 'b' cl_mem, 'i' int,
 * 'u' unsigned, 'f' float (passed as double), 'l' __local bytes (size_t),
 * 'L' uint64 (cl_ulong). */
cld_status cld__kargs(cl_kernel k, const char *what, const char *fmt, ...);
/* Enqueue an NDRange; global sizes are rounded up to multiples of local. */
cld_status cld__launch(cld_ctx *ctx, cl_kernel k, const char *what, cl_uint dims, const size_t *global,
                       const size_t *local);
/* One work-item per item over n items in groups of ls. The kernel's item is
 * CLD_ITEM (get_global_id(1) * get_global_size(0) + get_global_id(0)) and
 * it guards i < n: past 65535 work-items the grid is folded into 2-D,
 * since PoCL compiles a kernel again for a grid at least 65536 wide in a
 * dimension (~0.3 s per kernel on a 2-core CPU), so small and large
 * launches share one compiled kernel. */
cld_status cld__launch_items(cld_ctx *ctx, cl_kernel k, const char *what, size_t n, size_t ls);
/* Shorthand: get kernel `name` of `program` with default options. After the
 * first call from a call site (same string pointers) a table lookup: no
 * malloc, no scan of the context's kernels (program.c). Graph ops do not
 * call it: the planner resolves their kernels into the nodes (t->kern). */
cld_status cld__kernel(cld_ctx *ctx, const char *program, const char *name, cl_kernel *out);

/* Matrix products (row-major), routed by blas.c to our kernels (cl/gemm.cl)
 * or CLBlast (cld__gemm_backend). Offsets and leading dims in floats. */
cld_status cld__gemm(cld_ctx *ctx, int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                     cl_mem a, size_t a_off, size_t lda, cl_mem b, size_t b_off, size_t ldb, float beta,
                     cl_mem c, size_t c_off, size_t ldc);
cld_status cld__gemm_batched(cld_ctx *ctx, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                             float alpha, cl_mem a, size_t a_off, size_t lda, size_t a_stride, cl_mem b,
                             size_t b_off, size_t ldb, size_t b_stride, float beta, cl_mem c, size_t c_off,
                             size_t ldc, size_t c_stride, size_t batch);

/* Host-side deterministic RNG (splitmix64 / Box-Muller), for init and tests. */
uint64_t cld__splitmix64(uint64_t *state);
double cld__rand_uniform(uint64_t *state); /* [0, 1) */
double cld__rand_normal(uint64_t *state);

#endif
