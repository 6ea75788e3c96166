/* Execution: nodes run in creation order, each op's forward enqueuing its
 * kernels; with poisoning on, blocks released after a node are filled with
 * NaN. And the 1-D launch geometry every element-wise op uses. */
#include "internal.h"

#include <math.h>

/* A 1-D kernel covering items [0, n) with the FOR_ITEMS loop (cl/basic.cl):
 * work-group j of G takes the contiguous range [j*per, (j+1)*per), per =
 * ceil(n / G), its work-items interleaved in it; right for any geometry.
 * The geometry is the context's (settings.c: CPUs one work-item per group,
 * 8 groups per compute unit; else 64 per group, up to 1024 groups per unit;
 * CLD_LAUNCH1D_LS and CLD_LAUNCH1D_GROUPS override them, so the tests can
 * run the other shapes).
 * A kernel declaring reqd_work_group_size(S, 1, 1) instead gets one work-item
 * per item, in groups of S (ceil(n / S) groups, no override): for scalar code
 * that PoCL vectorizes across the work-items of a group (conv.cl's pack). */
cld_status cld__launch1d(cld_graph *g, cl_kernel k, const cld_tensor *t, size_t n)
{
    const cld_device_info *d = &g->ctx->info;
    size_t ls = g->ctx->settings.launch1d_ls, cap = g->ctx->settings.launch1d_groups, reqd[3] = {0, 0, 0};
    cl_int err =
        clGetKernelWorkGroupInfo(k, d->device, CL_KERNEL_COMPILE_WORK_GROUP_SIZE, sizeof reqd, reqd, NULL);
    if (err == CL_SUCCESS && reqd[0] > 0) /* one work-item per item */
        return cld__launch_items(g->ctx, k, t->name, n, reqd[0]);
    size_t groups = (n + ls - 1) / ls;
    if (groups > cap) groups = cap;
    size_t gs = groups * ls;
    return cld__launch(g->ctx, k, t->name, 1, &gs, &ls);
}

cld_status cld_graph_set_grad_hook(cld_graph *g, cld_grad_hook fn, void *user)
{
    if (!g) return cld__fail(CLD_ERR_INVALID_ARG, "cld_graph_set_grad_hook: NULL graph");
    g->grad_hook = fn;
    g->grad_hook_user = fn ? user : NULL;
    return CLD_OK;
}

cld_status cld_graph_run(cld_graph *g)
{
    if (!g) return cld__fail(CLD_ERR_INVALID_ARG, "cld_graph_run: NULL graph");
    if (!g->planned) CLD_TRY(cld_graph_plan(g, NULL));
    const float nan = NAN;
    for (int i = 0; i < g->n; i++) {
        cld_tensor *t = g->nodes[i];
        if (t->op && t->op->forward) {
            cld_status s = t->op->forward(g, t);
            if (s != CLD_OK) return s;
            if ((t->flags & CLD_TF_GRAD_SINK) && g->grad_hook) {
                s = g->grad_hook(g->grad_hook_user, t->param_index);
                if (s != CLD_OK) return s;
            }
        }
        for (int k = g->pstart[i]; k < g->pstart[i + 1]; k++) {
            size_t c = g->pranges[k].off / g->chunk_floats, off = g->pranges[k].off % g->chunk_floats;
            cl_int err =
                clEnqueueFillBuffer(g->ctx->queue, g->arenas[c], &nan, sizeof nan, off * sizeof(float),
                                    g->pranges[k].len * sizeof(float), 0, NULL, NULL);
            CLD_TRY(cld__cl_check(err, "clEnqueueFillBuffer(poison)"));
        }
    }
    return CLD_OK;
}
