/* lab_allreduce: cld-train's gradient all-reduce (apps/train/dist_mpi.c,
 * the code the trainer runs) on the parameter store of a UNet preset, timed
 * per call: device-to-host, MPI_Allreduce, host-to-device, with one buffer
 * and with pipelined buckets. Not built by CMake (needs MPI):
 *
 *   mpicc -O2 -Iengine/include -Iapps/train bench/lab_allreduce.c apps/train/dist_mpi.c \
 *       build/libcldiffusion.a -lOpenCL -lclblast -lcjson -lz -ljpeg -lexif -lm -lpthread -o /tmp/lab_ar
 *   mpirun --oversubscribe -np 2 /tmp/lab_ar [preset [reps [bucket_MiB ...]]]
 *                         (default: cifar10 5 0 4 16 64; 0 = one buffer)
 *
 * Prints, on rank 0, the median over reps of each mode's wall time per call
 * and the split (read, MPI, write) for the one-buffer mode. */
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cldiffusion/cldiffusion.h"
#include "dist.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define CK(x)                                                                           \
    do {                                                                                \
        cld_status s_ = (x);                                                            \
        if (s_) {                                                                       \
            fprintf(stderr, "%s: %s: %s\n", #x, cld_status_name(s_), cld_last_error()); \
            MPI_Abort(MPI_COMM_WORLD, 1);                                               \
        }                                                                               \
    } while (0)

int main(int argc, char **argv)
{
    dist d;
    if (dist_init(&d, &argc, &argv) || !d.active) {
        fprintf(stderr, "lab_allreduce: run under mpirun (%s)\n", d.err);
        return 1;
    }
    const char *preset = argc > 1 ? argv[1] : "cifar10";
    const int reps = argc > 2 ? atoi(argv[2]) : 5;
    double buckets[16] = {0, 4, 16, 64};
    int nb = 4;
    if (argc > 3) {
        nb = 0;
        for (int i = 3; i < argc && nb < 16; i++) buckets[nb++] = atof(argv[i]);
    }
    cld_ctx *ctx;
    CK(cld_ctx_create(NULL, &ctx));
    cld_unet_config cfg;
    CK(cld_unet_config_preset(preset, &cfg));
    cld_params *p;
    cld_unet_runner *r;
    CK(cld_params_create(ctx, &p));
    CK(cld_unet_runner_create(ctx, p, &cfg, 1, &r));
    CK(cld_params_alloc(p));
    size_t np = 0;
    int nt = 0;
    cld_params_count(p, &nt, &np);
    for (int m = 0; m < nb; m++) {
        dist e = d; /* a fresh staging buffer and bucket list per mode */
        e.host = NULL;
        e.t_read = e.t_reduce = e.t_write = 0;
        e.bucket_floats = (size_t)(buckets[m] * 1048576.0 / sizeof(float));
        double t[64];
        int n = reps < 64 ? reps : 64;
        for (int i = -1; i < n; i++) { /* i = -1: warm-up (allocation, first touch) */
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = now_s();
            if (dist_allreduce_grads(&e, ctx, p)) {
                fprintf(stderr, "%s\n", e.err);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            if (i >= 0) t[i] = now_s() - t0;
            if (i == -1) e.t_read = e.t_reduce = e.t_write = 0;
        }
        qsort(t, (size_t)n, sizeof *t, cmp);
        if (!d.rank) {
            printf("%s: %zu parameters in %d tensors, %.1f MiB of gradients, %d ranks (%s): ", preset, np, nt,
                   e.n * 4 / 1048576.0, d.size, dist_library());
            if (e.bucket_floats)
                printf("%d buckets of ~%g MiB, pipelined: median %.1f ms (min %.1f, max %.1f) per call\n",
                       e.n_buckets, buckets[m], 1e3 * t[n / 2], 1e3 * t[0], 1e3 * t[n - 1]);
            else
                printf("one buffer: median %.1f ms (min %.1f, max %.1f) per call; mean read %.1f, MPI %.1f, "
                       "write %.1f ms\n",
                       1e3 * t[n / 2], 1e3 * t[0], 1e3 * t[n - 1], 1e3 * e.t_read / n, 1e3 * e.t_reduce / n,
                       1e3 * e.t_write / n);
            fflush(stdout);
        }
        free(e.host);
    }
    cld_unet_runner_free(r);
    cld_params_free(p);
    cld_ctx_free(ctx);
    dist_end(&d, 0, 0);
    return 0;
}
