/* The runtime's device layer: enumerate and select OpenCL devices, create a
 * context with one in-order queue, thin buffer helpers, and kernel launch. */
#include "internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef CL_PLATFORM_NOT_FOUND_KHR /* cl_khr_icd, returned by ICD loaders */
#define CL_PLATFORM_NOT_FOUND_KHR -1001
#endif

#define CLD_MAX_PLATFORMS 16
#define CLD_MAX_DEVICES 64

static const char no_platform_hint[] =
    "install an OpenCL driver: `pocl-opencl-icd` for CPUs, or the GPU vendor's driver "
    "(e.g. nvidia-opencl-icd, intel-opencl-icd, mesa-opencl-icd or ROCm); "
    "`clinfo -l` lists what the ICD loader sees";

/* Every (platform, device) pair in a stable order: platforms as the ICD loader
 * lists them, devices of each platform in the driver's order. */
typedef struct dev_list {
    int n;
    cl_platform_id platform[CLD_MAX_DEVICES];
    cl_device_id device[CLD_MAX_DEVICES];
    int platform_index[CLD_MAX_DEVICES];
} dev_list;

static cld_status enumerate(dev_list *list)
{
    cl_platform_id plats[CLD_MAX_PLATFORMS];
    cl_uint np = 0;
    list->n = 0;
    cl_int err = clGetPlatformIDs(CLD_MAX_PLATFORMS, plats, &np);
    if (err == CL_PLATFORM_NOT_FOUND_KHR || (err == CL_SUCCESS && np == 0))
        return cld__fail(CLD_ERR_NO_PLATFORM, "no OpenCL platform found; %s", no_platform_hint);
    if (err != CL_SUCCESS)
        return cld__fail(CLD_ERR_NO_PLATFORM, "clGetPlatformIDs: %s (%d); %s", cld_cl_error_name(err),
                         (int)err, no_platform_hint);
    if (np > CLD_MAX_PLATFORMS) np = CLD_MAX_PLATFORMS;
    for (cl_uint p = 0; p < np; p++) {
        cl_device_id devs[CLD_MAX_DEVICES];
        cl_uint nd = 0;
        err = clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, CLD_MAX_DEVICES, devs, &nd);
        if (err == CL_DEVICE_NOT_FOUND) continue;
        if (err != CL_SUCCESS) continue; /* a broken platform must not hide the others */
        if (nd > CLD_MAX_DEVICES) nd = CLD_MAX_DEVICES;
        for (cl_uint d = 0; d < nd && list->n < CLD_MAX_DEVICES; d++) {
            list->platform[list->n] = plats[p];
            list->device[list->n] = devs[d];
            list->platform_index[list->n] = (int)p;
            list->n++;
        }
    }
    return CLD_OK;
}

/* String info into a fixed buffer, truncated, always terminated. */
static void platform_str(cl_platform_id p, cl_platform_info what, char *dst, size_t cap)
{
    size_t len = 0;
    dst[0] = 0;
    if (clGetPlatformInfo(p, what, 0, NULL, &len) != CL_SUCCESS || len == 0) return;
    char *tmp = malloc(len + 1);
    if (!tmp) return;
    if (clGetPlatformInfo(p, what, len, tmp, NULL) == CL_SUCCESS) {
        tmp[len] = 0;
        snprintf(dst, cap, "%s", tmp);
    }
    free(tmp);
}

/* Device string info; returns a malloc'd copy (NULL on failure). */
static char *device_str_alloc(cl_device_id d, cl_device_info what)
{
    size_t len = 0;
    if (clGetDeviceInfo(d, what, 0, NULL, &len) != CL_SUCCESS) return NULL;
    char *tmp = malloc(len + 1);
    if (!tmp) return NULL;
    if (clGetDeviceInfo(d, what, len, tmp, NULL) != CL_SUCCESS) {
        free(tmp);
        return NULL;
    }
    tmp[len] = 0;
    return tmp;
}

static void device_str(cl_device_id d, cl_device_info what, char *dst, size_t cap)
{
    char *s = device_str_alloc(d, what);
    snprintf(dst, cap, "%s", s ? s : "");
    free(s);
    /* Some drivers pad names with spaces. */
    size_t n = strlen(dst);
    while (n > 0 && dst[n - 1] == ' ') dst[--n] = 0;
}

static int has_token(const char *list, const char *tok)
{
    size_t n = strlen(tok);
    for (const char *p = list; p && (p = strstr(p, tok)) != NULL; p += n) {
        int start_ok = p == list || p[-1] == ' ';
        int end_ok = p[n] == 0 || p[n] == ' ';
        if (start_ok && end_ok) return 1;
    }
    return 0;
}

static void fill_info(const dev_list *list, int i, cld_device_info *o)
{
    memset(o, 0, sizeof *o);
    cl_device_id d = list->device[i];
    o->index = i;
    o->platform_index = list->platform_index[i];
    o->platform = list->platform[i];
    o->device = d;
    platform_str(o->platform, CL_PLATFORM_NAME, o->platform_name, sizeof o->platform_name);
    platform_str(o->platform, CL_PLATFORM_VERSION, o->platform_version, sizeof o->platform_version);
    device_str(d, CL_DEVICE_NAME, o->name, sizeof o->name);
    device_str(d, CL_DEVICE_VENDOR, o->vendor, sizeof o->vendor);
    device_str(d, CL_DRIVER_VERSION, o->driver_version, sizeof o->driver_version);
    device_str(d, CL_DEVICE_VERSION, o->device_version, sizeof o->device_version);

    cl_device_type type = 0;
    cl_uint cu = 0;
    cl_ulong gmem = 0, lmem = 0, maxalloc = 0;
    size_t wg = 0;
    cl_device_fp_config dfp = 0;
    clGetDeviceInfo(d, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    clGetDeviceInfo(d, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
    clGetDeviceInfo(d, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof gmem, &gmem, NULL);
    clGetDeviceInfo(d, CL_DEVICE_LOCAL_MEM_SIZE, sizeof lmem, &lmem, NULL);
    clGetDeviceInfo(d, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof maxalloc, &maxalloc, NULL);
    clGetDeviceInfo(d, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
    if (clGetDeviceInfo(d, CL_DEVICE_DOUBLE_FP_CONFIG, sizeof dfp, &dfp, NULL) != CL_SUCCESS) dfp = 0;
    o->is_gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
    o->is_cpu = (type & CL_DEVICE_TYPE_CPU) != 0;
    o->compute_units = cu;
    o->global_mem_bytes = gmem;
    o->local_mem_bytes = lmem;
    o->max_alloc_bytes = maxalloc;
    /* CLD_MAX_ALLOC: a smaller device, for tests */
    const uint64_t lim = cld__env_max_alloc();
    if (lim && lim < o->max_alloc_bytes) o->max_alloc_bytes = (cl_ulong)lim;
    o->max_work_group_size = wg;

    char *ext = device_str_alloc(d, CL_DEVICE_EXTENSIONS);
    o->has_fp16 = ext && has_token(ext, "cl_khr_fp16");
    o->has_fp64 = (ext && has_token(ext, "cl_khr_fp64")) || dfp != 0;
    free(ext);
}

uint64_t cld__env_max_alloc(void)
{
    const char *lim = getenv("CLD_MAX_ALLOC");
    if (!lim || !*lim) return 0;
    char *end = NULL;
    double v = strtod(lim, &end);
    if (end && (*end == 'K' || *end == 'k')) v *= 1024.0;
    if (end && (*end == 'M' || *end == 'm')) v *= 1048576.0;
    if (end && (*end == 'G' || *end == 'g')) v *= 1073741824.0;
    return v >= 1 && v < 1.8e19 ? (uint64_t)v : 0;
}

cld_status cld_device_count(int *count)
{
    if (!count) return cld__fail(CLD_ERR_INVALID_ARG, "cld_device_count: count is NULL");
    dev_list list;
    CLD_TRY(enumerate(&list));
    *count = list.n;
    return CLD_OK;
}

cld_status cld_device_info_get(int index, cld_device_info *out)
{
    if (!out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_device_info_get: out is NULL");
    dev_list list;
    CLD_TRY(enumerate(&list));
    if (index < 0 || index >= list.n)
        return cld__fail(CLD_ERR_NO_DEVICE,
                         "cld_device_info_get: device index %d out of range "
                         "(%d devices)",
                         index, list.n);
    fill_info(&list, index, out);
    return CLD_OK;
}

static int default_index(const dev_list *list)
{
    for (int pass = 0; pass < 2; pass++) {
        cl_device_type want = pass == 0 ? CL_DEVICE_TYPE_GPU : CL_DEVICE_TYPE_CPU;
        for (int i = 0; i < list->n; i++) {
            cl_device_type type = 0;
            clGetDeviceInfo(list->device[i], CL_DEVICE_TYPE, sizeof type, &type, NULL);
            if (type & want) return i;
        }
    }
    return 0;
}

cld_status cld_device_default(int *index)
{
    if (!index) return cld__fail(CLD_ERR_INVALID_ARG, "cld_device_default: index is NULL");
    dev_list list;
    CLD_TRY(enumerate(&list));
    if (list.n == 0)
        return cld__fail(CLD_ERR_NO_DEVICE, "OpenCL platforms exist but expose no device; %s",
                         no_platform_hint);
    *index = default_index(&list);
    return CLD_OK;
}

static int ci_contains(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    if (n == 0) return 1;
    for (; *hay; hay++) {
        size_t k = 0;
        while (k < n && hay[k] && tolower((unsigned char)hay[k]) == tolower((unsigned char)needle[k])) k++;
        if (k == n) return 1;
    }
    return 0;
}

static int is_index(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return 0;
    return 1;
}

cld_status cld_device_select(const char *spec, int *index)
{
    if (!index) return cld__fail(CLD_ERR_INVALID_ARG, "cld_device_select: index is NULL");
    const char *source = "device spec";
    if (!spec || !*spec) {
        spec = getenv("CLD_DEVICE");
        source = "CLD_DEVICE";
    }
    if (!spec || !*spec) return cld_device_default(index);

    dev_list list;
    CLD_TRY(enumerate(&list));
    if (is_index(spec)) {
        long i = strtol(spec, NULL, 10);
        if (i < list.n) {
            *index = (int)i;
            return CLD_OK;
        }
    } else if (!strcasecmp(spec, "gpu") || !strcasecmp(spec, "cpu")) {
        /* a device type: the first device of that type */
        int want_gpu = !strcasecmp(spec, "gpu");
        for (int i = 0; i < list.n; i++) {
            cld_device_info info;
            fill_info(&list, i, &info);
            if (want_gpu ? info.is_gpu : info.is_cpu) {
                *index = i;
                return CLD_OK;
            }
        }
    } else {
        for (int i = 0; i < list.n; i++) {
            cld_device_info info;
            fill_info(&list, i, &info);
            char full[300];
            snprintf(full, sizeof full, "%s / %s", info.platform_name, info.name);
            if (ci_contains(full, spec)) {
                *index = i;
                return CLD_OK;
            }
        }
    }

    /* No match: list what there is. */
    char msg[3500];
    size_t used = 0;
    msg[0] = 0;
    for (int i = 0; i < list.n && used < sizeof msg; i++) {
        cld_device_info info;
        fill_info(&list, i, &info);
        int w = snprintf(msg + used, sizeof msg - used, "\n  [%d] %s / %s", i, info.platform_name, info.name);
        if (w < 0) break;
        used += (size_t)w;
    }
    return cld__fail(CLD_ERR_NO_DEVICE,
                     "%s '%s' matches no OpenCL device (give an index, \"gpu\", \"cpu\" or a "
                     "case-insensitive part of \"platform / device\"); available devices:%s",
                     source, spec, list.n ? msg : " none");
}

/* ---------------------------------------------------------------- context */
cld_status cld_ctx_create(const char *device_spec, cld_ctx **out)
{
    if (!out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_ctx_create: out is NULL");
    *out = NULL;
    int index = 0;
    CLD_TRY(cld_device_select(device_spec, &index));

    cld_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return cld__fail(CLD_ERR_NOMEM, "cld_ctx_create: out of host memory");
    cld_status s = cld_device_info_get(index, &ctx->info);
    if (s != CLD_OK) goto fail;
    cld__settings_read(&ctx->settings, &ctx->info);

    cl_int err = CL_SUCCESS;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)ctx->info.platform, 0};
    ctx->context = clCreateContext(props, 1, &ctx->info.device, NULL, NULL, &err);
    if (err != CL_SUCCESS) {
        s = cld__fail(CLD_ERR_OPENCL, "clCreateContext on '%s / %s': %s (%d)", ctx->info.platform_name,
                      ctx->info.name, cld_cl_error_name(err), (int)err);
        goto fail;
    }
    /* In-order queue: ops rely on submission order instead of events. */
    ctx->queue = clCreateCommandQueue(ctx->context, ctx->info.device, 0, &err);
    if (err != CL_SUCCESS) {
        s = cld__fail(CLD_ERR_OPENCL, "clCreateCommandQueue on '%s': %s (%d)", ctx->info.name,
                      cld_cl_error_name(err), (int)err);
        goto fail;
    }

    *out = ctx;
    return CLD_OK;
fail:
    cld_ctx_free(ctx);
    return s;
}

cld_status cld_ctx_free(cld_ctx *ctx)
{
    if (!ctx) return CLD_OK;
    if (ctx->queue) clFinish(ctx->queue);
    for (int i = 0; i < ctx->n_kernels; i++) {
        clReleaseKernel(ctx->kernels[i].kernel);
        free(ctx->kernels[i].key);
    }
    for (int i = 0; i < ctx->n_programs; i++) {
        clReleaseProgram(ctx->programs[i].program);
        free(ctx->programs[i].key);
    }
    free(ctx->kernels);
    free(ctx->programs);
    if (ctx->gemm_scratch) clReleaseMemObject(ctx->gemm_scratch);
    if (ctx->queue) clReleaseCommandQueue(ctx->queue);
    if (ctx->context) clReleaseContext(ctx->context);
    free(ctx);
    return CLD_OK;
}

cld_status cld_ctx_device_info(const cld_ctx *ctx, cld_device_info *out)
{
    if (!ctx || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_ctx_device_info: NULL argument");
    *out = ctx->info;
    return CLD_OK;
}

cl_context cld_ctx_cl_context(const cld_ctx *ctx) { return ctx ? ctx->context : NULL; }
cl_command_queue cld_ctx_queue(const cld_ctx *ctx) { return ctx ? ctx->queue : NULL; }

cld_status cld_ctx_finish(cld_ctx *ctx)
{
    if (!ctx) return cld__fail(CLD_ERR_INVALID_ARG, "cld_ctx_finish: ctx is NULL");
    return cld__cl_check(clFinish(ctx->queue), "clFinish");
}

cld_status cld_ctx_compile_stats(const cld_ctx *ctx, cld_compile_stats *out)
{
    if (!ctx || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_ctx_compile_stats: NULL argument");
    *out = ctx->stats;
    return CLD_OK;
}

/* ---------------------------------------------------------------- buffers */
cld_status cld__buffer_create(cld_ctx *ctx, cl_mem_flags flags, size_t bytes, void *host, const char *what,
                              cl_mem *out)
{
    cl_int err = CL_INVALID_BUFFER_SIZE;
    *out = NULL;
    if (bytes > 0 && bytes <= ctx->info.max_alloc_bytes)
        *out = clCreateBuffer(ctx->context, flags, bytes, host, &err);
    if (*out && err == CL_SUCCESS) return CLD_OK;
    if (*out) clReleaseMemObject(*out);
    *out = NULL;
    cld_status s = (err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_RESOURCES ||
                    err == CL_OUT_OF_HOST_MEMORY || err == CL_INVALID_BUFFER_SIZE)
                       ? CLD_ERR_NOMEM
                       : CLD_ERR_OPENCL;
    return cld__fail(s, "%s: device buffer of %zu bytes on '%s' (max single allocation %llu bytes): %s (%d)",
                     what ? what : "clCreateBuffer", bytes, ctx->info.name,
                     (unsigned long long)ctx->info.max_alloc_bytes, cld_cl_error_name(err), (int)err);
}

cld_status cld_buffer_alloc(cld_ctx *ctx, size_t bytes, cl_mem *out)
{
    if (!ctx || !out || bytes == 0)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_buffer_alloc: NULL argument or 0 bytes");
    return cld__buffer_create(ctx, CL_MEM_READ_WRITE, bytes, NULL, "cld_buffer_alloc", out);
}

cld_status cld_buffer_write(cld_ctx *ctx, cl_mem buf, size_t offset_bytes, size_t bytes, const void *src)
{
    if (!ctx || !buf || (bytes && !src))
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_buffer_write: NULL argument");
    if (bytes == 0) return CLD_OK;
    cl_int err = clEnqueueWriteBuffer(ctx->queue, buf, CL_TRUE, offset_bytes, bytes, src, 0, NULL, NULL);
    if (err == CL_SUCCESS) return CLD_OK;
    return cld__fail(CLD_ERR_OPENCL, "clEnqueueWriteBuffer(offset %zu, %zu bytes): %s (%d)", offset_bytes,
                     bytes, cld_cl_error_name(err), (int)err);
}

cld_status cld_buffer_read(cld_ctx *ctx, cl_mem buf, size_t offset_bytes, size_t bytes, void *dst)
{
    if (!ctx || !buf || (bytes && !dst))
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_buffer_read: NULL argument");
    if (bytes == 0) return CLD_OK;
    cl_int err = clEnqueueReadBuffer(ctx->queue, buf, CL_TRUE, offset_bytes, bytes, dst, 0, NULL, NULL);
    if (err == CL_SUCCESS) return CLD_OK;
    return cld__fail(CLD_ERR_OPENCL, "clEnqueueReadBuffer(offset %zu, %zu bytes): %s (%d)", offset_bytes,
                     bytes, cld_cl_error_name(err), (int)err);
}

cld_status cld_buffer_release(cl_mem buf)
{
    if (!buf) return CLD_OK;
    return cld__cl_check(clReleaseMemObject(buf), "clReleaseMemObject");
}

/* ---------------------------------------------------------------- kernels */
static void kernel_name(cl_kernel k, char *dst, size_t cap)
{
    dst[0] = 0;
    if (!k || clGetKernelInfo(k, CL_KERNEL_FUNCTION_NAME, cap, dst, NULL) != CL_SUCCESS)
        snprintf(dst, cap, "?");
    dst[cap - 1] = 0;
}

cld_status cld__kargs(cl_kernel k, const char *what, const char *fmt, ...)
{
    if (!k || !fmt)
        return cld__fail(CLD_ERR_INVALID_ARG, "%s: cld__kargs: NULL kernel or format",
                         what ? what : "kernel");
    va_list ap;
    va_start(ap, fmt);
    cl_int err = CL_SUCCESS;
    cl_uint i = 0;
    for (; fmt[i]; i++) {
        switch (fmt[i]) {
        case 'b': {
            cl_mem m = va_arg(ap, cl_mem);
            err = clSetKernelArg(k, i, sizeof m, &m);
            break;
        }
        case 'i': {
            cl_int v = va_arg(ap, int);
            err = clSetKernelArg(k, i, sizeof v, &v);
            break;
        }
        case 'u': {
            cl_uint v = va_arg(ap, unsigned);
            err = clSetKernelArg(k, i, sizeof v, &v);
            break;
        }
        case 'f': {
            cl_float v = (cl_float)va_arg(ap, double);
            err = clSetKernelArg(k, i, sizeof v, &v);
            break;
        }
        case 'l': {
            size_t bytes = va_arg(ap, size_t);
            err = clSetKernelArg(k, i, bytes, NULL);
            break;
        }
        case 'L': {
            cl_ulong v = va_arg(ap, uint64_t);
            err = clSetKernelArg(k, i, sizeof v, &v);
            break;
        }
        default:
            va_end(ap);
            return cld__fail(CLD_ERR_INVALID_ARG, "%s: cld__kargs: bad format character '%c'",
                             what ? what : "kernel", fmt[i]);
        }
        if (err != CL_SUCCESS) break;
    }
    va_end(ap);
    if (err == CL_SUCCESS) return CLD_OK;
    char name[128];
    kernel_name(k, name, sizeof name);
    return cld__fail(CLD_ERR_OPENCL, "%s: clSetKernelArg(kernel '%s', arg %u '%c'): %s (%d)",
                     what ? what : "kernel", name, (unsigned)i, fmt[i], cld_cl_error_name(err), (int)err);
}

cld_status cld__launch(cld_ctx *ctx, cl_kernel k, const char *what, cl_uint dims, const size_t *global,
                       const size_t *local)
{
    if (!ctx || !k || !global || dims < 1 || dims > 3)
        return cld__fail(CLD_ERR_INVALID_ARG, "%s: cld__launch: bad arguments", what ? what : "kernel");
    size_t g[3] = {1, 1, 1};
    for (cl_uint d = 0; d < dims; d++) {
        g[d] = global[d];
        if (g[d] == 0) return CLD_OK; /* empty launch: nothing to do */
        if (local && local[d]) g[d] = (g[d] + local[d] - 1) / local[d] * local[d];
    }
    cl_int err = clEnqueueNDRangeKernel(ctx->queue, k, dims, NULL, g, local, 0, NULL, NULL);
    if (err == CL_SUCCESS) return CLD_OK;
    char name[128];
    kernel_name(k, name, sizeof name);
    char shape[160];
    int w = snprintf(shape, sizeof shape, "global %zu", g[0]);
    for (cl_uint d = 1; d < dims && w > 0 && (size_t)w < sizeof shape; d++)
        w += snprintf(shape + w, sizeof shape - (size_t)w, "x%zu", g[d]);
    if (local && w > 0 && (size_t)w < sizeof shape) {
        w += snprintf(shape + w, sizeof shape - (size_t)w, ", local %zu", local[0]);
        for (cl_uint d = 1; d < dims && w > 0 && (size_t)w < sizeof shape; d++)
            w += snprintf(shape + w, sizeof shape - (size_t)w, "x%zu", local[d]);
    }
    return cld__fail(CLD_ERR_OPENCL, "%s: clEnqueueNDRangeKernel(kernel '%s', %s) on '%s': %s (%d)",
                     what ? what : "kernel", name, shape, ctx->info.name, cld_cl_error_name(err), (int)err);
}

cld_status cld__launch_items(cld_ctx *ctx, cl_kernel k, const char *what, size_t n, size_t ls)
{
    if (!ls)
        return cld__fail(CLD_ERR_INVALID_ARG, "%s: cld__launch_items: local size 0", what ? what : "kernel");
    const size_t groups = (n + ls - 1) / ls;
    if (groups * ls < 65536) {
        const size_t gs = groups * ls;
        return cld__launch(ctx, k, what, 1, &gs, &ls);
    }
    const size_t row = 65535 / ls, rows = (groups + row - 1) / row;
    const size_t g2[2] = {((groups + rows - 1) / rows) * ls, rows}, l2[2] = {ls, 1};
    return cld__launch(ctx, k, what, 2, g2, l2);
}
