/* Ops layer internals: helpers shared between op families. Builds on
 * graph/internal.h. Not installed. */
#ifndef CLD_OPS_INTERNAL_H
#define CLD_OPS_INTERNAL_H

#include "graph/internal.h"

/* Element-wise helpers used by several ops' backward passes (basic.c);
 * cld__op_fill is graph/internal.h's. */
extern const cld_op_def cld__op_add, cld__op_mul, cld__op_scale;
/* y = sum over batch and spatial of x: (N,C,H,W) -> shape of `like` ((C) or (1,C,1,1)...). */
cld_status cld__reduce_to(cld_graph *g, cld_tensor *x, const cld_tensor *like, cld_tensor **y);
/* y = silu(group_norm(x)) in one pass, as cld_op_group_norm then cld_op_silu (ops_norm.c). */
cld_status cld__op_group_norm_silu(cld_graph *g, cld_tensor *x, cld_tensor *gamma, cld_tensor *beta,
                                   int groups, float eps, cld_tensor **y);
/* diffusers' timestep embedding (float32 as torch; flip_sin_to_cos, freq_shift) (embed.c). */
cld_status cld__op_timestep_embedding_torch(cld_graph *g, cld_tensor *t, int dim, int flip, float shift,
                                            cld_tensor **y);

#endif
