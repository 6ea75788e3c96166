/* AdamW over the parameter store (kernel in cl/optim.cl).
 *
 * Weight decay is decoupled and applies to tensors of 2+ dims (conv kernels,
 * linear weights, embedding tables), not to biases or norm scales. The store
 * is walked in runs of consecutive tensors with the same decay: one launch
 * per run (split at chunk boundaries) over the run's span, alignment padding included (padding has zero
 * values and gradients, so it stays zero). No host synchronisation. */
#include "internal.h"

#include <math.h>

static int decays(const cld__param *q) { return q->ndim >= 2; }

cld_status cld_params_adamw(cld_params *p, float lr, float beta1, float beta2, float eps, float weight_decay,
                            int step)
{
    if (!p) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_adamw: NULL store");
    if (step < 1) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_adamw: step = %d (counts from 1)", step);
    if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f) || !(eps > 0.0f) ||
        !(lr >= 0.0f) || !(weight_decay >= 0.0f))
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "cld_params_adamw: bad hyper-parameters (lr %g, betas %g %g, "
                         "eps %g, weight decay %g)",
                         lr, beta1, beta2, eps, weight_decay);
    if (!p->count) return cld__fail(CLD_ERR_STATE, "cld_params_adamw: the store has no parameters");
    CLD_TRY(cld__params_alloc_train(p));
    cl_kernel k;
    CLD_TRY(cld__kernel(p->ctx, "optim", "adamw", &k));
    const double bc1 = 1.0 - pow((double)beta1, step), bc2_sqrt = sqrt(1.0 - pow((double)beta2, step));
    /* one launch per run of parameters that decay alike within a chunk;
     * without weight decay, one per chunk (the same arithmetic: decay 0) */
    for (int i = 0; i < p->count;) {
        int j = i + 1, c = (int)(p->items[i].off / p->chunk);
        while (j < p->count && (weight_decay == 0.0f || decays(&p->items[j]) == decays(&p->items[i])) &&
               p->items[j].off / p->chunk == (size_t)c)
            j++;
        size_t begin = p->items[i].off, end = p->total;
        if (j < p->count && p->items[j].off / p->chunk == (size_t)c)
            end = p->items[j].off;
        else if (end > (size_t)(c + 1) * p->chunk)
            end = (size_t)(c + 1) * p->chunk; /* the run ends its chunk */
        double decay = decays(&p->items[i]) ? (double)lr * weight_decay : 0.0;
        CLD_TRY(cld__kargs(k, "adamw", "bbbbiifffffff", p->values[c], p->grads[c], p->m[c], p->v[c],
                           (int)(begin - (size_t)c * p->chunk), (int)(end - begin), (double)lr, (double)beta1,
                           (double)beta2, (double)eps, decay, bc1, bc2_sqrt));
        size_t gs = end - begin, ls = 64;
        CLD_TRY(cld__launch(p->ctx, k, "adamw", 1, &gs, &ls));
        i = j;
    }
    return CLD_OK;
}
