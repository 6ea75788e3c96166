/* diffusion layer internals. Builds on ops/internal.h. Not installed. */
#ifndef CLD_DIFFUSION_INTERNAL_H
#define CLD_DIFFUSION_INTERNAL_H

#include "ops/internal.h"

/* Weights of the x_0 estimate D = wc c + wu u + kx x from the model's
 * conditional output c and, with guidance g (cfg), the unconditional u:
 * wc = kp g, wu = kp (1 - g); without guidance wc = kp, wu = 0. One
 * definition for cld_sampler_run's lincomb (sampler.c) and the
 * learned-variance step (vlb.c), which must produce the same bits. */
static inline void cld__guided_weights(double kp, double g, int cfg, double *wc, double *wu)
{
    *wc = cfg ? kp * g : kp;
    *wu = cfg ? kp * (1.0 - g) : 0.0;
}

#endif
