/* cldiffusion: diffusion models in C on any OpenCL 1.2+ device.
 *
 * Conventions
 *  - Every public function returns a cld_status; CLD_OK is 0. On failure,
 *    cld_last_error() (thread-local) says what failed and where.
 *  - Tensors are float32, contiguous, row-major, up to 4 dimensions; image
 *    tensors are NCHW. Shapes are written in comments as (N, C, H, W).
 *  - The library never calls exit() or abort().
 *
 * This header is the runtime (devices, contexts, buffers, kernel builds) and
 * includes every other public header: graph.h (graph executor and ops),
 * diffusion.h, unet.h, train.h, model.h, io.h, vlb.h, sample.h, denoise.h.
 *
 * Thread safety: one context per thread. A cld_ctx and everything made on
 * it (buffers, parameter stores, graphs, runners, models) belong to one
 * thread at a time: the context shares its cl_kernel objects (whose
 * arguments are set at each launch), its command queue and its GEMM scratch
 * between all the graphs made on it, so two threads using one context race.
 * Distinct contexts share no mutable state and may run on different
 * threads at once (on the same device too). cld_last_error() is per thread;
 * functions that take no context (names, parsing, host references) may run
 * on any thread.
 */
#ifndef CLDIFFUSION_H
#define CLDIFFUSION_H

#include <stddef.h>
#include <stdint.h>

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CLD_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------ status */
typedef enum cld_status {
    CLD_OK = 0,
    CLD_ERR_INVALID_ARG = -1001,       /* bad argument from the caller            */
    CLD_ERR_NO_PLATFORM = -1002,       /* no OpenCL platform installed            */
    CLD_ERR_NO_DEVICE = -1003,         /* device spec matches nothing             */
    CLD_ERR_OPENCL = -1004,            /* an OpenCL call failed (name in message) */
    CLD_ERR_BUILD = -1005,             /* kernel build failed (log in message)    */
    CLD_ERR_COMPILE_FORBIDDEN = -1006, /* CLD_FORBID_COMPILE set and a compile was needed */
    CLD_ERR_IO = -1007,                /* file could not be read or written       */
    CLD_ERR_FORMAT = -1008,            /* file content is malformed               */
    CLD_ERR_SHAPE = -1009,             /* tensor shapes do not fit the op         */
    CLD_ERR_NOMEM = -1010,             /* host or device allocation failed        */
    CLD_ERR_STATE = -1011,             /* call not valid in the object's state    */
    CLD_ERR_BLAS = -1012,              /* a matrix product failed or was given too small a buffer */
} cld_status;

/* Message of the last failure on this thread ("" if none). */
const char *cld_last_error(void);
/* Short name of a status ("CLD_ERR_SHAPE"). Never NULL. */
const char *cld_status_name(cld_status s);
/* Name of an OpenCL error code ("CL_OUT_OF_RESOURCES"). Never NULL. */
const char *cld_cl_error_name(cl_int err);

/* ------------------------------------------------------------------ devices */
typedef struct cld_device_info {
    int index; /* global index across all platforms */
    int platform_index;
    char platform_name[128];
    char platform_version[128];
    char name[128];
    char vendor[128];
    char driver_version[128];
    char device_version[128];
    int is_gpu, is_cpu;
    unsigned compute_units;
    uint64_t global_mem_bytes;
    uint64_t local_mem_bytes;
    uint64_t max_alloc_bytes;
    size_t max_work_group_size;
    int has_fp16, has_fp64;
    cl_platform_id platform;
    cl_device_id device;
} cld_device_info;

/* Number of OpenCL devices over all platforms. CLD_ERR_NO_PLATFORM if none. */
cld_status cld_device_count(int *count);
/* Info of device `index` (0 <= index < count). */
cld_status cld_device_info_get(int index, cld_device_info *out);
/* Resolve a device spec: NULL or "" means $CLD_DEVICE, and if that is unset
 * the default (first GPU, else first CPU, else device 0). A spec is a decimal
 * index, "gpu" or "cpu" (the first device of that type), or a
 * case-insensitive substring of "platform name / device name".
 * An unknown spec gives CLD_ERR_NO_DEVICE and a message listing devices. */
cld_status cld_device_select(const char *spec, int *index);
/* Index of the default device (ignoring $CLD_DEVICE). */
cld_status cld_device_default(int *index);

/* A context: one device, one in-order queue, a kernel cache. */
typedef struct cld_ctx cld_ctx;
cld_status cld_ctx_create(const char *device_spec, cld_ctx **out);
cld_status cld_ctx_free(cld_ctx *ctx);
cld_status cld_ctx_device_info(const cld_ctx *ctx, cld_device_info *out);
cl_context cld_ctx_cl_context(const cld_ctx *ctx);
cl_command_queue cld_ctx_queue(const cld_ctx *ctx);
/* Block until all enqueued work is done. */
cld_status cld_ctx_finish(cld_ctx *ctx);

/* Compile statistics of this context (programs built from source vs loaded
 * from the on-disk cache), for tests and cld-bench. */
typedef struct cld_compile_stats {
    int programs_built;      /* compiled from source */
    int programs_from_cache; /* loaded from the disk cache */
    double seconds;          /* wall time spent getting programs */
} cld_compile_stats;
cld_status cld_ctx_compile_stats(const cld_ctx *ctx, cld_compile_stats *out);

/* The launch configuration this context chose for each op family (work-group
 * sizes, GEMM route, allocation limit), as lines of text into buf (cap bytes,
 * NUL-terminated; truncated if short). Chosen once per context from the
 * device; CLD_FORCE_GPU_PATH=1 takes the GPU choices on a CPU device (to test
 * them on PoCL or Oclgrind). `cld-devices --verbose` prints it. */
cld_status cld_ctx_launch_config(const cld_ctx *ctx, char *buf, size_t cap);

/* Get (building or loading from cache on first use) a kernel of program
 * `program` (a file in cl/ without ".cl") specialised with `options`
 * (e.g. "-DTILE=16"; NULL = none). The kernel is owned by the context.
 * Environment: CLD_KERNEL_DIR=dir reads sources from disk; CLD_CACHE=0
 * disables the binary cache, CLD_CACHE=1 turns it on also on PoCL (off there
 * by default: PoCL caches compiled kernels itself, and exporting a binary
 * compiles every kernel of the program); CLD_CACHE_DIR overrides its location;
 * CLD_FORBID_COMPILE=1 makes any real compilation fail (for tests). */
cld_status cld_ctx_kernel(cld_ctx *ctx, const char *program, const char *options, const char *kernel_name,
                          cl_kernel *out);
/* Build every embedded program with default options (cold/warm-start timing). */
cld_status cld_ctx_build_all(cld_ctx *ctx);
/* Names of embedded programs: NULL-terminated. */
cld_status cld_kernel_sources(const char *const **names, const char *const **sources);

/* Device buffers (thin helpers). */
cld_status cld_buffer_alloc(cld_ctx *ctx, size_t bytes, cl_mem *out);
cld_status cld_buffer_write(cld_ctx *ctx, cl_mem buf, size_t offset_bytes, size_t bytes, const void *src);
cld_status cld_buffer_read(cld_ctx *ctx, cl_mem buf, size_t offset_bytes, size_t bytes, void *dst);
cld_status cld_buffer_release(cl_mem buf);

#ifdef __cplusplus
}
#endif

#include "cldiffusion/graph.h"
#include "cldiffusion/diffusion.h"
#include "cldiffusion/unet.h"
#include "cldiffusion/train.h"
#include "cldiffusion/model.h"
#include "cldiffusion/io.h"
#include "cldiffusion/vlb.h"
#include "cldiffusion/diffusers.h"
#include "cldiffusion/sample.h"
#include "cldiffusion/denoise.h"

#endif
