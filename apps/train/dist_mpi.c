/* dist.h with MPI. The gradient store is one flat device buffer (the
 * parameter store's grads, padded views), so one all-reduce covers every
 * parameter: read it to the host, MPI_Allreduce(MPI_IN_PLACE, SUM), scale by
 * 1/size, write it back. With buckets, the same in pieces that pipeline.
 *
 * Overlap (d->overlap, buckets only): autodiff places each parameter's
 * gradient sink where the backward has finished that gradient (the last
 * layers' first), and cld_graph_run calls the hook set by dist_step_begin
 * after each sink; when a bucket's last sink is enqueued, the hook enqueues
 * the bucket's read right behind it on the in-order queue. The host then
 * polls: each read that is done starts its MPI_Iallreduce while the device
 * still runs the backward of the earlier layers. */
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

/* Staging buffer and buckets, on first use. The store's flat layout (its
 * chunks end to end: one chunk unless the store is larger than one
 * allocation) is staged in one host buffer; buckets are cut at parameter
 * boundaries from the last parameter back, and at chunk boundaries, so a
 * bucket is one read from one chunk's gradient buffer. */
static int prepare(dist *d, cld_params *p)
{
    if (d->host) return 0;
    int nc = 0;
    size_t chunk = 0, total = 0;
    if (cld_params_layout(p, &nc, &chunk, &total) || nc < 1 || nc > DIST_MAX_CHUNKS) {
        snprintf(d->err, sizeof d->err, "gradient buffers: %s",
                 nc > DIST_MAX_CHUNKS ? "the store is split into too many chunks" : cld_last_error());
        return 1;
    }
    d->n = total;
    d->n_chunks = nc;
    d->chunk_floats = chunk;
    for (int k = 0; k < nc; k++) {
        cl_mem g;
        size_t len;
        if (cld_params_chunk_buffers(p, k, NULL, &g, &len)) {
            snprintf(d->err, sizeof d->err, "gradient buffer %d: %s", k, cld_last_error());
            return 1;
        }
        d->grad_chunk[k] = g;
    }
    d->host = malloc(total ? total * sizeof(float) : 1);
    if (!d->host) {
        snprintf(d->err, sizeof d->err, "out of host memory for the %zu-byte gradient staging buffer",
                 total * sizeof(float));
        return 1;
    }
    int nt = 0;
    cld_params_count(p, &nt, NULL);
    d->n_params = nt;
    d->param_bucket = malloc(((size_t)nt + 1) * sizeof(int));
    size_t *flat = malloc(((size_t)nt + 1) * sizeof(size_t));
    if (!d->param_bucket || !flat) {
        free(flat);
        snprintf(d->err, sizeof d->err, "out of host memory for the bucket table");
        return 1;
    }
    for (int i = 0; i < nt; i++) cld_params_flat_offset(p, i, &flat[i]);
    /* buckets [off, end), the last parameters first; bucket_floats 0: one per chunk */
    d->n_buckets = 0;
    size_t end = total;
    for (int i = nt - 1; i >= 0 && end > 0; i--) {
        const size_t cstart = flat[i] / chunk * chunk; /* the chunk this parameter is in */
        size_t off = flat[i];
        const int first_in_chunk = i == 0 || flat[i - 1] < cstart;
        if (end > cstart + chunk) end = cstart + chunk; /* never across a chunk boundary */
        if (!first_in_chunk && (!d->bucket_floats || end - off < d->bucket_floats)) continue;
        if (first_in_chunk || d->n_buckets == DIST_MAX_BUCKETS - 1) off = cstart;
        if (d->n_buckets == DIST_MAX_BUCKETS - 1) off = 0; /* the rest in one (a read per chunk) */
        d->bk_off[d->n_buckets] = off;
        d->bk_len[d->n_buckets++] = end - off;
        end = off;
    }
    for (int i = 0; i < nt; i++) {
        int b = 0;
        while (b < d->n_buckets - 1 && flat[i] < d->bk_off[b]) b++;
        d->param_bucket[i] = b;
        d->bk_params[b]++;
    }
    free(flat);
    return 0;
}

/* Read (write) floats [off, off + len) of the flat layout from (to) the
 * chunks' gradient buffers into (from) the staging buffer; one command per
 * chunk touched, the last one's event in *ev (NULL: none). */
static cl_int move(dist *d, cl_command_queue q, int write, size_t off, size_t len, cl_bool block,
                   cl_event *ev)
{
    cl_int err = CL_SUCCESS;
    while (len && err == CL_SUCCESS) {
        const size_t k = off / d->chunk_floats, in = off - k * d->chunk_floats;
        const size_t m = d->chunk_floats - in < len ? d->chunk_floats - in : len;
        cl_mem g = (cl_mem)d->grad_chunk[k];
        cl_event *e = m == len ? ev : NULL;
        err = write ? clEnqueueWriteBuffer(q, g, block, in * sizeof(float), m * sizeof(float), d->host + off,
                                           0, NULL, e)
                    : clEnqueueReadBuffer(q, g, block, in * sizeof(float), m * sizeof(float), d->host + off,
                                          0, NULL, e);
        off += m;
        len -= m;
    }
    return err;
}

static int enqueue_read(dist *d, int k)
{
    cl_event ev = NULL;
    cl_int err = move(d, (cl_command_queue)d->queue, 0, d->bk_off[k], d->bk_len[k], CL_FALSE, &ev);
    if (err != CL_SUCCESS) return cl_fail(d, "reading the gradients", err);
    d->ev[d->n_enq] = ev;
    d->order[d->n_enq++] = k;
    d->bk_left[k] = -1; /* enqueued */
    return 0;
}

/* cld_graph_run's gradient hook: the sink of parameter `pi` is enqueued. */
static cld_status on_grad(void *user, int pi)
{
    dist *d = user;
    if (pi < 0 || pi >= d->n_params) return CLD_OK;
    const int k = d->param_bucket[pi];
    if (d->bk_left[k] > 0 && --d->bk_left[k] == 0) {
        if (enqueue_read(d, k)) {
            d->hook_failed = 1;
            return CLD_ERR_OPENCL;
        }
        clFlush((cl_command_queue)d->queue); /* start it on the device now */
    }
    return CLD_OK;
}

int dist_step_begin(dist *d, cld_ctx *ctx, cld_params *p, cld_graph *g)
{
    if (d->size == 1) return 0;
    if (prepare(d, p)) return 1;
    d->queue = cld_ctx_queue(ctx);
    d->n_enq = 0;
    d->hook_failed = 0;
    for (int k = 0; k < d->n_buckets; k++) d->bk_left[k] = d->bk_params[k] ? d->bk_params[k] : 1;
    const int on = d->overlap && d->n_buckets > 1 && d->n <= (size_t)1 << 30;
    if (cld_graph_set_grad_hook(g, on ? on_grad : NULL, d)) {
        snprintf(d->err, sizeof d->err, "gradient hook: %s", cld_last_error());
        return 1;
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
    if (prepare(d, p)) return 1;
    cl_command_queue q = cld_ctx_queue(ctx);
    const float inv = 1.0f / (float)d->size;
    cl_int err;
    if (d->n_buckets == 1 || d->n > (size_t)1 << 30) {
        double t0 = now_s();
        err = move(d, q, 0, 0, d->n, CL_TRUE, NULL);
        if (err != CL_SUCCESS) return cl_fail(d, "reading the gradients", err);
        double t1 = now_s();
        if (allreduce_floats(d, d->host, d->n)) return 1;
        scale(d->host, d->n, inv);
        double t2 = now_s();
        err = move(d, q, 1, 0, d->n, CL_TRUE, NULL);
        if (err != CL_SUCCESS) return cl_fail(d, "writing the gradients", err);
        d->t_read += t1 - t0;
        d->t_reduce += t2 - t1;
        d->t_write += now_s() - t2;
        return 0;
    }
    /* pipelined buckets: the reads not yet enqueued by the gradient hook are
     * enqueued now (the queue is in order, so they complete one by one); the
     * host polls, starting each bucket's all-reduce as soon as its read is
     * done and writing each back as soon as its all-reduce is */
    const double t0 = now_s();
    const int nb = d->n_buckets;
    MPI_Request rq[DIST_MAX_BUCKETS];
    int rc = d->hook_failed, started = 0;
    if (!rc && d->queue != (void *)q) { /* dist_step_begin was not called: no hook this step */
        d->queue = q;
        d->n_enq = 0;
        for (int k = 0; k < nb; k++) d->bk_left[k] = 1;
    }
    d->early_reads += d->n_enq;
    for (int k = 0; k < nb && !rc; k++)
        if (d->bk_left[k] >= 0) rc = enqueue_read(d, k);
    d->reads += d->n_enq;
    clFlush(q);
    const int enq = d->n_enq;
    int done_reads = 0;
    while (!rc && done_reads < enq) {
        cl_int st = CL_QUEUED;
        err = clGetEventInfo((cl_event)d->ev[done_reads], CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof st, &st,
                             NULL);
        if (err != CL_SUCCESS || st < 0) {
            rc = cl_fail(d, "reading the gradients", err != CL_SUCCESS ? err : st);
            break;
        }
        if (st != CL_COMPLETE && !started) { /* nothing in flight needs MPI progress: block */
            err = clWaitForEvents(1, (cl_event *)&d->ev[done_reads]);
            if (err != CL_SUCCESS) {
                rc = cl_fail(d, "reading the gradients", err);
                break;
            }
        } else if (st != CL_COMPLETE) {
            int flag; /* MPI progress for the buckets in flight (no MPI progress thread) */
            MPI_Testall(started, rq, &flag, MPI_STATUSES_IGNORE);
            struct timespec ts = {0, 50 * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        const int k = d->order[done_reads++];
        int code = MPI_Iallreduce(MPI_IN_PLACE, d->host + d->bk_off[k], (int)d->bk_len[k], MPI_FLOAT, MPI_SUM,
                                  MPI_COMM_WORLD, &rq[started]);
        if (code != MPI_SUCCESS) {
            rc = mpi_fail(d, "MPI_Iallreduce(gradients)", code);
            break;
        }
        started++;
    }
    for (int j = 0; j < started; j++) {
        const int k = d->order[j];
        int code = MPI_Wait(&rq[j], MPI_STATUS_IGNORE);
        if (code != MPI_SUCCESS && !rc) rc = mpi_fail(d, "MPI_Iallreduce(gradients)", code);
        if (rc) continue;
        scale(d->host + d->bk_off[k], d->bk_len[k], inv);
        err = move(d, q, 1, d->bk_off[k], d->bk_len[k], CL_FALSE, NULL);
        if (err != CL_SUCCESS) rc = cl_fail(d, "writing the gradients", err);
    }
    for (int j = 0; j < enq; j++) clReleaseEvent((cl_event)d->ev[j]);
    d->n_enq = 0;
    d->queue = NULL;   /* the next step starts with dist_step_begin again */
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
    if (prepare(d, p)) return 1;
    for (int k = 0; k < d->n_chunks; k++) { /* the values, chunk by chunk, into the staging buffer */
        cl_mem values;
        size_t len;
        if (cld_params_chunk_buffers(p, k, &values, NULL, &len)) {
            snprintf(d->err, sizeof d->err, "parameter buffer %d: %s", k, cld_last_error());
            return 1;
        }
        cl_int err = clEnqueueReadBuffer(cld_ctx_queue(ctx), values, CL_TRUE, 0, len * sizeof(float),
                                         d->host + (size_t)k * d->chunk_floats, 0, NULL, NULL);
        if (err != CL_SUCCESS) return cl_fail(d, "reading the weights", err);
    }
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
    free(d->param_bucket);
    d->host = NULL;
    if (!d->active) return;
    if (rc != 0 && alone && d->size > 1) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, rc);
    }
    MPI_Finalize();
}
