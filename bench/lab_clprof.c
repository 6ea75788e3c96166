/* lab_clprof: a tiny OpenCL kernel profiler to LD_PRELOAD under any program
 * (cld-bench, tests, CLBlast inside them). It turns on queue profiling,
 * records an event for every kernel launch and buffer fill/copy, and at exit
 * prints per-kernel device time to stderr (or to $CLPROF_OUT).
 *
 *   gcc -O2 -shared -fPIC -o /tmp/libclprof.so bench/lab_clprof.c -ldl -lOpenCL
 *   LD_PRELOAD=/tmp/libclprof.so build-bench/cld-bench --only unet --quick
 *
 * CLPROF_BY_SIZE=1 keys kernels by name and global size. Work is counted in
 * segments that end at each clFinish: CLPROF_SEGMENTS=1 prints one line per
 * segment (its device time and wall time since the previous one), and
 * CLPROF_ONLY=i,j,... counts only those segments (0-based) in the table,
 * e.g. to leave out warm-up runs that include kernel compilation.
 * Not built by CMake. */
#define _GNU_SOURCE
#define CL_TARGET_OPENCL_VERSION 120
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pending {
    cl_event ev;
    char key[128];
} pending;

typedef struct stat_entry {
    char key[128];
    long calls;
    double ms;
} stat_entry;

static pending *pend;
static int n_pend, cap_pend;
static stat_entry *stats;
static int n_stats, cap_stats;

static stat_entry *find_stat(const char *key)
{
    for (int i = 0; i < n_stats; i++)
        if (!strcmp(stats[i].key, key)) return &stats[i];
    if (n_stats == cap_stats) {
        cap_stats = cap_stats ? 2 * cap_stats : 256;
        stats = realloc(stats, (size_t)cap_stats * sizeof *stats);
    }
    stat_entry *s = &stats[n_stats++];
    memset(s, 0, sizeof *s);
    snprintf(s->key, sizeof s->key, "%s", key);
    return s;
}

static int segment;

static int counted(int seg)
{
    const char *only = getenv("CLPROF_ONLY");
    if (!only || !*only) return 1;
    for (const char *p = only; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) break;
        if (v == seg) return 1;
        p = *end == ',' ? end + 1 : end;
    }
    return 0;
}

static void drain(void)
{
    if (!n_pend) return;
    int count = counted(segment);
    double seg_ms = 0;
    cl_ulong first = 0, last = 0;
    for (int i = 0; i < n_pend; i++) {
        cl_ulong a = 0, b = 0;
        clWaitForEvents(1, &pend[i].ev);
        if (clGetEventProfilingInfo(pend[i].ev, CL_PROFILING_COMMAND_START, sizeof a, &a, NULL) ==
                CL_SUCCESS &&
            clGetEventProfilingInfo(pend[i].ev, CL_PROFILING_COMMAND_END, sizeof b, &b, NULL) == CL_SUCCESS) {
            seg_ms += (double)(b - a) * 1e-6;
            if (!first || a < first) first = a;
            if (b > last) last = b;
            if (count) {
                stat_entry *s = find_stat(pend[i].key);
                s->calls++;
                s->ms += (double)(b - a) * 1e-6;
            }
        }
        clReleaseEvent(pend[i].ev);
    }
    if (getenv("CLPROF_SEGMENTS"))
        fprintf(stderr, "clprof: segment %d: %d commands, %.1f ms device time over a %.1f ms span%s\n",
                segment, n_pend, seg_ms, (double)(last - first) * 1e-6, count ? "" : " (not counted)");
    n_pend = 0;
    segment++;
}

static void record(cl_event *user_ev, cl_event ev, const char *key)
{
    if (user_ev) clRetainEvent(ev);
    if (n_pend == cap_pend) {
        if (cap_pend >= 65536)
            drain();
        else {
            cap_pend = cap_pend ? 2 * cap_pend : 1024;
            pend = realloc(pend, (size_t)cap_pend * sizeof *pend);
        }
    }
    pend[n_pend].ev = ev;
    snprintf(pend[n_pend].key, sizeof pend[n_pend].key, "%s", key);
    n_pend++;
}

#define REAL(name)                        \
    static __typeof__(&name) real_##name; \
    if (!real_##name) real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

cl_command_queue clCreateCommandQueue(cl_context c, cl_device_id d, cl_command_queue_properties p,
                                      cl_int *err)
{
    REAL(clCreateCommandQueue);
    return real_clCreateCommandQueue(c, d, p | CL_QUEUE_PROFILING_ENABLE, err);
}

cl_int clEnqueueNDRangeKernel(cl_command_queue q, cl_kernel k, cl_uint dim, const size_t *off,
                              const size_t *gws, const size_t *lws, cl_uint nw, const cl_event *wl,
                              cl_event *ev)
{
    REAL(clEnqueueNDRangeKernel);
    cl_event mine;
    cl_int r = real_clEnqueueNDRangeKernel(q, k, dim, off, gws, lws, nw, wl, ev ? ev : &mine);
    if (r != CL_SUCCESS) return r;
    char name[96] = "?", key[128];
    clGetKernelInfo(k, CL_KERNEL_FUNCTION_NAME, sizeof name, name, NULL);
    if (getenv("CLPROF_BY_SIZE")) {
        snprintf(key, sizeof key, "%s [%zu", name, gws[0]);
        for (cl_uint i = 1; i < dim; i++)
            snprintf(key + strlen(key), sizeof key - strlen(key), "x%zu", gws[i]);
        snprintf(key + strlen(key), sizeof key - strlen(key), "]");
    } else {
        snprintf(key, sizeof key, "%s", name);
    }
    record(ev, ev ? *ev : mine, key);
    return r;
}

cl_int clEnqueueFillBuffer(cl_command_queue q, cl_mem b, const void *pat, size_t ps, size_t off, size_t size,
                           cl_uint nw, const cl_event *wl, cl_event *ev)
{
    REAL(clEnqueueFillBuffer);
    cl_event mine;
    cl_int r = real_clEnqueueFillBuffer(q, b, pat, ps, off, size, nw, wl, ev ? ev : &mine);
    if (r == CL_SUCCESS) record(ev, ev ? *ev : mine, "(fill buffer)");
    return r;
}

cl_int clEnqueueCopyBuffer(cl_command_queue q, cl_mem s, cl_mem d, size_t so, size_t dof, size_t size,
                           cl_uint nw, const cl_event *wl, cl_event *ev)
{
    REAL(clEnqueueCopyBuffer);
    cl_event mine;
    cl_int r = real_clEnqueueCopyBuffer(q, s, d, so, dof, size, nw, wl, ev ? ev : &mine);
    if (r == CL_SUCCESS) record(ev, ev ? *ev : mine, "(copy buffer)");
    return r;
}

cl_int clFinish(cl_command_queue q)
{
    REAL(clFinish);
    cl_int r = real_clFinish(q);
    drain();
    return r;
}

static int cmp_ms(const void *a, const void *b)
{
    double x = ((const stat_entry *)a)->ms, y = ((const stat_entry *)b)->ms;
    return (x < y) - (x > y);
}

__attribute__((destructor)) static void report(void)
{
    drain();
    if (!n_stats) return;
    const char *path = getenv("CLPROF_OUT");
    FILE *f = path ? fopen(path, "w") : stderr;
    if (!f) f = stderr;
    qsort(stats, (size_t)n_stats, sizeof *stats, cmp_ms);
    double total = 0;
    for (int i = 0; i < n_stats; i++) total += stats[i].ms;
    fprintf(f, "clprof: %.1f ms of device time in %d kinds of commands\n", total, n_stats);
    fprintf(f, "%-60s %8s %12s %7s\n", "kernel", "calls", "ms", "%");
    for (int i = 0; i < n_stats; i++)
        fprintf(f, "%-60s %8ld %12.2f %6.1f%%\n", stats[i].key, stats[i].calls, stats[i].ms,
                100.0 * stats[i].ms / total);
    if (f != stderr) fclose(f);
}
