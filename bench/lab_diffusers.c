/* cldiffusion's side of bench/diffusers_compare.py: load the diffusers
 * folder it wrote, run the forward pass and the DDIM run of DIR/ref.safetensors
 * and print the relative error (max |ours - ref| / max |ref|) and the seconds
 * per forward pass and per DDIM step (median of ITERS after a warm-up), and
 * the planned device memory of one image.
 *
 *   cmake --build build --target cldiffusion
 *   gcc -O2 -o /tmp/lab_diffusers bench/lab_diffusers.c -Iengine/include -Iengine/src \
 *       -Lbuild -lcldiffusion -lclblast -lOpenCL -lcjson -lz -ljpeg -lm -lpthread
 *   CLD_KERNEL_DIR=cl /tmp/lab_diffusers DIR [ITERS [STEPS]]
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cldiffusion/cldiffusion.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double rel_err(const float *got, const float *want, size_t n)
{
    double e = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= e)) e = d;
        if (fabs(want[i]) > w) w = fabs(want[i]);
    }
    return e / (w > 0 ? w : 1);
}

#define OK(x)                                                                           \
    do {                                                                                \
        cld_status s_ = (x);                                                            \
        if (s_) {                                                                       \
            fprintf(stderr, "%s: %s: %s\n", #x, cld_status_name(s_), cld_last_error()); \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

static float *get(const char *ref, const char *name, size_t *n)
{
    int nd, sh[CLD_MAX_DIMS];
    float *v = NULL;
    if (cld_safetensors_read(ref, name, &nd, sh, &v) != CLD_OK) return NULL;
    *n = 1;
    for (int i = 0; i < nd; i++) *n *= (size_t)sh[i];
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: lab_diffusers DIR [ITERS [STEPS]]\n");
        return 2;
    }
    const char *dir = argv[1];
    const int iters = argc > 2 ? atoi(argv[2]) : 3 /* 0: one run */, steps = argc > 3 ? atoi(argv[3]) : 3;
    char ref[4096];
    snprintf(ref, sizeof ref, "%s/ref.safetensors", dir);
    cld_ctx *ctx;
    OK(cld_ctx_create(NULL, &ctx));
    cld_device_info info;
    OK(cld_ctx_device_info(ctx, &info));
    double t0 = now();
    cld_model *m;
    OK(cld_model_load(ctx, dir, &m));
    const double load_s = now() - t0;
    size_t np = 0;
    OK(cld_params_count(m->params, NULL, &np));
    cld_batch_memory mem;
    OK(cld_model_batch_memory(m, 1, 0, &mem));
    printf("cldiffusion: %s, %zu parameters, loaded in %.2f s; planned per run of 1 image: arena %.0f MiB "
           "(batch 2: %.0f MiB), total with weights %.0f MiB\n",
           info.name, np, load_s, m->plan_bytes[0] / 1048576.0, m->plan_bytes[1] / 1048576.0,
           mem.total_bytes / 1048576.0);

    size_t nx, nout, nt;
    float *x = get(ref, "x", &nx), *t = get(ref, "t", &nt), *want = get(ref, "out", &nout);
    if (!x || !t || !want) {
        fprintf(stderr, "%s: no x, t, out\n", ref);
        return 1;
    }
    cld_unet_runner *r;
    OK(cld_unet_runner_create(ctx, m->params, &m->meta.unet, 1, &r));
    cl_mem xb, ob;
    OK(cld_buffer_alloc(ctx, nx * sizeof(float), &xb));
    OK(cld_buffer_alloc(ctx, nout * sizeof(float), &ob));
    OK(cld_buffer_write(ctx, xb, 0, nx * sizeof(float), x));
    double *dt = malloc((size_t)(iters + 1) * sizeof *dt);
    float *got = malloc(nout * sizeof *got);
    for (int i = 0; i <= iters; i++) {
        double s = now();
        OK(cld_unet_runner_fn(r, xb, 0, ob, 0, 1, t, NULL));
        OK(cld_ctx_finish(ctx));
        dt[i] = now() - s;
    }
    OK(cld_buffer_read(ctx, ob, 0, nout * sizeof(float), got));
    qsort(dt + 1, (size_t)iters, sizeof *dt, cmp);
    if (iters > 0)
        printf("cldiffusion: forward (batch 1) %.3f s (median of %d; first %.3f s), relative error %.2e\n",
               dt[1 + iters / 2], iters, dt[0], rel_err(got, want, nout));
    else
        printf(
            "cldiffusion: forward (batch 1) %.3f s (one run, kernels from the cache), relative error %.2e\n",
            dt[0], rel_err(got, want, nout));
    cld_unet_runner_free(r);

    size_t nT, n0;
    float *xT = steps > 0 ? get(ref, "ddim_xT", &nT) : NULL, *x0 = xT ? get(ref, "ddim_x0", &n0) : NULL;
    if (xT && x0) {
        cld_sample_spec sp;
        OK(cld_sample_spec_default(&sp));
        OK(cld_sampler_opts_default(CLD_SAMPLER_DDIM, &sp.opts));
        OK(cld_diffusers_sampler_defaults(&m->sched, &sp.opts));
        sp.opts.steps = steps;
        sp.n = 1;
        sp.batch = 1;
        sp.noise = xT;
        float *res = malloc(n0 * sizeof *res);
        double s = now();
        OK(cld_model_sample(m, &sp, res));
        double per = (now() - s) / steps;
        printf("cldiffusion: DDIM %d steps: %.3f s per step, relative error %.2e", steps, per,
               rel_err(res, x0, n0));
        size_t n64;
        float *x64 = get(ref, "ddim_x0_f64", &n64);
        if (x64 && n64 == n0) printf(" (against diffusers in float64: %.2e)", rel_err(res, x64, n0));
        printf("\n");
        free(x64);
        free(res);
    }
    free(xT), free(x0), free(x), free(t), free(want), free(got), free(dt);
    cld_buffer_release(xb);
    cld_buffer_release(ob);
    cld_model_free(m);
    cld_ctx_free(ctx);
    return 0;
}
