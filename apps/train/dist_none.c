/* dist.h without MPI: one rank, nothing to reduce. Started by mpirun with
 * more than one process, every process would train the whole model alone
 * and write the same files: that is refused with a clear message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"

int dist_init(dist *d, int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    memset(d, 0, sizeof *d);
    d->size = d->local_size = 1;
    const char *v[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        const char *e = getenv(v[i]);
        if (e && atoi(e) > 1) {
            snprintf(d->err, sizeof d->err,
                     "started by an MPI launcher with %s processes, but this cld-train was built without MPI "
                     "(install libopenmpi-dev and configure with -DCLD_MPI=ON)",
                     e);
            return 1;
        }
    }
    return 0;
}

const char *dist_library(void) { return "none (built without MPI)"; }

int dist_allreduce_grads(dist *d, cld_ctx *ctx, cld_params *p)
{
    (void)d;
    (void)ctx;
    (void)p;
    return 0;
}

int dist_step_begin(dist *d, cld_ctx *ctx, cld_params *p, cld_graph *g)
{
    (void)d, (void)ctx, (void)p, (void)g;
    return 0;
}

int dist_sum(dist *d, double *v, int n)
{
    (void)d;
    (void)v;
    (void)n;
    return 0;
}

int dist_weights_agree(dist *d, cld_ctx *ctx, cld_params *p, int *same)
{
    (void)d;
    (void)ctx;
    (void)p;
    *same = 1;
    return 0;
}

void dist_end(dist *d, int rc, int alone)
{
    (void)d;
    (void)rc;
    (void)alone;
}
