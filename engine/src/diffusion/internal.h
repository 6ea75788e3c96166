/* diffusion layer internals. Builds on ops/internal.h. Not installed. */
#ifndef CLD_DIFFUSION_INTERNAL_H
#define CLD_DIFFUSION_INTERNAL_H

#include "ops/internal.h"

#endif
