/* dist.h with MPI. The gradient store is one flat device buffer (the
 * parameter store's grads, padded views), so one all-reduce covers every
 * parameter: read it to the host, MPI_Allreduce(MPI_IN_PLACE, SUM), scale by
 * 1/size, write it back. With buckets, the same in pieces that pipeline.
 *
 * What the buckets cannot do here: start before the backward pass is over.
 * cld_graph_run enqueues every node in one call with no per-node hook
 * (callback or event after node i), and autodiff adds every parameter's
 * gradient into the store with sinks appended after the whole backward
 * walk, so no bucket is final before the backward ends; bench/NOTES.md
 * ("Data-parallel training") says what the library would need. */
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int launched_by_mpi(void)
{
    const char *v[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++)
        if (getenv(v[i])) return 1;
    return 0;
}

static int mpi_fail(dist *d, const char *what, int code)
{
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(code, msg, &len);
    snprintf(d->err, sizeof d->err, "%s failed on rank %d of %d: %s", what, d->rank, d->size, msg);
    return 1;
}

static int cl_fail(dist *d, const char *what, cl_int err)
{
    snprintf(d->err, sizeof d->err, "%s failed on rank %d: OpenCL error %d", what, d->rank, (int)err);
    return 1;
}

int dist_init(dist *d, int *argc, char ***argv)
{
    memset(d, 0, sizeof *d);
    d->size = d->local_size = 1;
    if (!launched_by_mpi()) return 0;
    /* Open MPI busy-polls while a rank waits in a collective, which takes the
     * core from the very rank it waits for when cores are shared (measured:
     * bench/NOTES.md, 2r-core vs 2r-yield); yield instead, unless set */
    setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
    int code = MPI_Init(argc, argv);
    if (code != MPI_SUCCESS) {
        snprintf(d->err, sizeof d->err, "MPI_Init failed (code %d)", code);
        return 1;
    }
    d->active = 1;
    /* errors come back as codes: the rank prints what failed, then aborts the job */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node) ==
        MPI_SUCCESS) {
        MPI_Comm_rank(node, &d->local_rank);
        MPI_Comm_size(node, &d->local_size);
        MPI_Comm_free(&node);
    } else {
        d->local_rank = d->rank;
        d->local_size = d->size;
    }
    return 0;
}

const char *dist_library(void)
{
    static char name[MPI_MAX_LIBRARY_VERSION_STRING + 1];
    int len = 0;
    if (!name[0]) {
        MPI_Get_library_version(name, &len);
        char *nl = strchr(name, '\n');
        if (nl) *nl = 0;
        nl = strchr(name, ',');
        if (nl) *nl = 0;
    }
    return name;
}

/* Staging buffer and buckets, on first use: the grads buffer's size, and
 * bucket boundaries at parameter boundaries from the last parameter back. */
static int prepare(dist *d, cld_params *p, cl_mem grads)
{
    if (d->host) return 0;
    size_t bytes = 0;
    cl_int err = clGetMemObjectInfo(grads, CL_MEM_SIZE, sizeof bytes, &bytes, NULL);
    if (err != CL_SUCCESS) return cl_fail(d, "clGetMemObjectInfo(gradients)", err);
    d->n = bytes / sizeof(float);
    d->host = malloc(bytes ? bytes : 1);
    if (!d->host) {
        snprintf(d->err, sizeof d->err, "out of host memory for the %zu-byte gradient staging buffer", bytes);
        return 1;
    }
    int nt = 0;
    cld_params_count(p, &nt, NULL);
    d->n_buckets = 0;
    size_t end = d->n; /* buckets [off, end), the last parameters first */
    for (int i = nt - 1; i >= 0; i--) {
        size_t off = 0;
        cld_params_info(p, i, NULL, NULL, NULL, &off);
        const int first = i == 0;
        if (d->bucket_floats && !first && end - off < d->bucket_floats) continue;
        if (first) off = 0;
        if (d->n_buckets == DIST_MAX_BUCKETS - 1) off = 0;
        d->bk_off[d->n_buckets] = off;
        d->bk_len[d->n_buckets++] = end - off;
        end = off;
        if (!end) break;
    }
    if (!d->bucket_floats) { /* one bucket: the whole buffer */
        d->n_buckets = 1;
        d->bk_off[0] = 0;
        d->bk_len[0] = d->n;
    }
    return 0;
}

/* MPI counts are int: a bucket past 2^30 floats goes in pieces. */
static int allreduce_floats(dist *d, float *x, size_t n)
{
    for (size_t done = 0; done < n;) {
        int c = n - done > (1u << 30) ? 1 << 30 : (int)(n - done);
        int code = MPI_Allreduce(MPI_IN_PLACE, x + done, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (code != MPI_SUCCESS) return mpi_fail(d, "MPI_Allreduce(gradients)", code);
        done += (size_t)c;
    }
    return 0;
}

static void scale(float *x, size_t n, float s)
{
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

int dist_allreduce_grads(dist *d, cld_ctx *ctx, cld_params *p)
{
    if (d->size == 1) return 0;
    cl_mem values, grads;
    cld_status s = cld_params_buffers(p, &values, &grads);
    if (s) {
        snprintf(d->err, sizeof d->err, "gradient buffer: %s", cld_last_error());
        return 1;
    }
    if (prepare(d, p, grads)) return 1;
    cl_command_queue q = cld_ctx_queue(ctx);
    const float inv = 1.0f / (float)d->size;
    cl_int err;
    if (d->n_buckets == 1 || d->n > (size_t)1 << 30) {
        double t0 = now_s();
        err = clEnqueueReadBuffer(q, grads, CL_TRUE, 0, d->n * sizeof(float), d->host, 0, NULL, NULL);
        if (err != CL_SUCCESS) return cl_fail(d, "reading the gradients", err);
        double t1 = now_s();
        if (allreduce_floats(d, d->host, d->n)) return 1;
        scale(d->host, d->n, inv);
        double t2 = now_s();
        err = clEnqueueWriteBuffer(q, grads, CL_TRUE, 0, d->n * sizeof(float), d->host, 0, NULL, NULL);
        if (err != CL_SUCCESS) return cl_fail(d, "writing the gradients", err);
        d->t_read += t1 - t0;
        d->t_reduce += t2 - t1;
        d->t_write += now_s() - t2;
        return 0;
    }
    /* pipelined buckets: all reads enqueued at once (the queue is in order, so
     * they complete one by one), each bucket's all-reduce started as soon as
     * its read is done, each written back as soon as its all-reduce is */
    const double t0 = now_s();
    const int nb = d->n_buckets;
    cl_event ev[DIST_MAX_BUCKETS];
    MPI_Request rq[DIST_MAX_BUCKETS];
    int rc = 0, started = 0, enq = 0;
    for (int k = 0; k < nb; k++, enq++) {
        err = clEnqueueReadBuffer(q, grads, CL_FALSE, d->bk_off[k] * sizeof(float),
                                  d->bk_len[k] * sizeof(float), d->host + d->bk_off[k], 0, NULL, &ev[k]);
        if (err != CL_SUCCESS) {
            rc = cl_fail(d, "reading the gradients", err);
            break;
        }
    }
    clFlush(q);
    for (int k = 0; k < enq && !rc; k++) {
        err = clWaitForEvents(1, &ev[k]);
        if (err != CL_SUCCESS) {
            rc = cl_fail(d, "reading the gradients", err);
            break;
        }
        int code = MPI_Iallreduce(MPI_IN_PLACE, d->host + d->bk_off[k], (int)d->bk_len[k], MPI_FLOAT, MPI_SUM,
                                  MPI_COMM_WORLD, &rq[k]);
        if (code != MPI_SUCCESS) {
            rc = mpi_fail(d, "MPI_Iallreduce(gradients)", code);
            break;
        }
        started++;
        int flag; /* progress for the buckets in flight (no MPI progress thread) */
        MPI_Testall(started, rq, &flag, MPI_STATUSES_IGNORE);
    }
    for (int k = 0; k < started; k++) {
        int code = MPI_Wait(&rq[k], MPI_STATUS_IGNORE);
        if (code != MPI_SUCCESS && !rc) rc = mpi_fail(d, "MPI_Iallreduce(gradients)", code);
        if (rc) continue;
        scale(d->host + d->bk_off[k], d->bk_len[k], inv);
        err = clEnqueueWriteBuffer(q, grads, CL_FALSE, d->bk_off[k] * sizeof(float),
                                   d->bk_len[k] * sizeof(float), d->host + d->bk_off[k], 0, NULL, NULL);
        if (err != CL_SUCCESS) rc = cl_fail(d, "writing the gradients", err);
    }
    for (int k = 0; k < enq; k++) clReleaseEvent(ev[k]);
    err = clFinish(q); /* the host buffer is in use until the writes are done */
    if (!rc && err != CL_SUCCESS) rc = cl_fail(d, "writing the gradients", err);
    d->t_reduce += now_s() - t0;
    return rc;
}

int dist_sum(dist *d, double *v, int n)
{
    if (d->size == 1) return 0;
    int code = MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return code == MPI_SUCCESS ? 0 : mpi_fail(d, "MPI_Allreduce(loss)", code);
}

int dist_weights_agree(dist *d, cld_ctx *ctx, cld_params *p, int *same)
{
    *same = 1;
    if (d->size == 1) return 0;
    cl_mem values, grads;
    if (cld_params_buffers(p, &values, &grads)) {
        snprintf(d->err, sizeof d->err, "parameter buffer: %s", cld_last_error());
        return 1;
    }
    if (prepare(d, p, grads)) return 1;
    cl_int err = clEnqueueReadBuffer(cld_ctx_queue(ctx), values, CL_TRUE, 0, d->n * sizeof(float), d->host, 0,
                                     NULL, NULL);
    if (err != CL_SUCCESS) return cl_fail(d, "reading the weights", err);
    uint64_t h = 0x9E3779B97F4A7C15ull;
    const uint32_t *w = (const uint32_t *)(const void *)d->host;
    for (size_t i = 0; i < d->n; i++) h = (h ^ w[i]) * 0x100000001B3ull;
    /* max of h and of ~h: both equal to this rank's exactly when all ranks agree */
    uint64_t v[2] = {h, ~h};
    int code = MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    if (code != MPI_SUCCESS) return mpi_fail(d, "MPI_Allreduce(weight hash)", code);
    *same = v[0] == h && v[1] == ~h;
    return 0;
}

void dist_end(dist *d, int rc, int alone)
{
    free(d->host);
    d->host = NULL;
    if (!d->active) return;
    if (rc != 0 && alone && d->size > 1) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, rc);
    }
    MPI_Finalize();
}
