/* cld-train's data-parallel layer (issue 16): the ranks of an `mpirun -np N
 * cld-train ...` job, the gradient all-reduce and the few agreements the
 * ranks need (the batch loss, stopping, identical weights).
 *
 * Two implementations, one linked into cld-train by the build:
 *   dist_mpi.c   with MPI (CMake option CLD_MPI, find_package(MPI));
 *   dist_none.c  without: always one rank, and a clear error when started
 *                under mpirun with more than one process.
 * The library (libcldiffusion) knows nothing of either: this is app code.
 *
 * A process not started by an MPI launcher (no OMPI_ / PMI_ / PMIX_ rank in
 * its environment) is one rank and never initialises MPI, so a plain
 * `cld-train ...` behaves exactly as a build without MPI. */
#ifndef CLD_TRAIN_DIST_H
#define CLD_TRAIN_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "cldiffusion/cldiffusion.h"

#define DIST_MAX_BUCKETS 4096
#define DIST_MAX_CHUNKS 256

typedef struct dist {
    int rank, size;             /* in the job */
    int local_rank, local_size; /* on this node (shared-memory ranks) */
    int active;                 /* MPI initialised */
    /* the gradient all-reduce: bucket_floats 0 = one MPI_Allreduce over the
     * whole flat buffer; else buckets of about that many floats, in reverse
     * parameter (= layer) order, pipelined (device-to-host read of bucket
     * k+1 while bucket k is reduced and bucket k-1 written back) */
    size_t bucket_floats;
    float *host;                       /* staging copy of the store's flat gradient layout */
    size_t n;                          /* its floats (the store's padded total) */
    int n_chunks;                      /* the store's gradient buffers (1 unless it is split) */
    size_t chunk_floats;               /* chunk k holds flat floats from k * chunk_floats */
    void *grad_chunk[DIST_MAX_CHUNKS]; /* cl_mem each */
    int n_buckets;
    size_t bk_off[DIST_MAX_BUCKETS], bk_len[DIST_MAX_BUCKETS];
    /* overlap (buckets only): each bucket's read is enqueued from the graph's
     * gradient hook as soon as the backward has added its last parameter's
     * gradient, and its all-reduce starts while the device runs the rest */
    int overlap;
    int n_params;
    int *param_bucket;                  /* parameter index -> its bucket */
    int bk_params[DIST_MAX_BUCKETS];    /* parameters in each bucket */
    int bk_left[DIST_MAX_BUCKETS];      /* ... whose gradient is not yet final this step */
    int order[DIST_MAX_BUCKETS], n_enq; /* buckets in the order their reads were enqueued */
    void *ev[DIST_MAX_BUCKETS];         /* their events (cl_event) */
    void *queue;                        /* this step's queue */
    int hook_failed;
    long early_reads, reads; /* bucket reads enqueued during the backward (by the hook), and in all */
    /* seconds summed over the calls: device-to-host, MPI, host-to-device
     * (pipelined buckets: all of it in t_reduce) */
    double t_read, t_reduce, t_write;
    char err[512]; /* the last failure's message */
} dist;

/* Set up (MPI_Init when started by an MPI launcher). 0, or 1 with d->err set. */
int dist_init(dist *d, int *argc, char ***argv);
/* The implementation, e.g. "Open MPI v4.1.4" or "none (built without MPI)". */
const char *dist_library(void);
/* Sum the flat gradient buffer of p over the ranks and divide by the rank
 * count, in place (device-to-host, MPI_Allreduce, host-to-device): each rank's
 * gradient is its shard's batch mean, so the result is the global batch's
 * mean. Blocks until the device holds the result. 0, or 1 with d->err set. */
int dist_allreduce_grads(dist *d, cld_ctx *ctx, cld_params *p);
/* Before the step's cld_graph_run of graph g (the training graph of p):
 * with d->overlap and buckets, installs the gradient hook that starts each
 * bucket's read as soon as the backward has finished it. Nothing in one
 * rank. 0, or 1 with d->err set. */
int dist_step_begin(dist *d, cld_ctx *ctx, cld_params *p, cld_graph *g);
/* Element-wise sum of v[0..n) over the ranks, in place. 0, or 1 with d->err. */
int dist_sum(dist *d, double *v, int n);
/* *same = 1 when every rank holds bit-identical parameter values in p (a
 * 64-bit hash of them compared over the ranks). 0, or 1 with d->err. */
int dist_weights_agree(dist *d, cld_ctx *ctx, cld_params *p, int *same);
/* End: MPI_Finalize, or MPI_Abort(rc) when this rank failed alone
 * (`alone`: the other ranks may be waiting in a collective). */
void dist_end(dist *d, int rc, int alone);

#endif
