/* io layer internals. Builds on models/ and diffusion/internal.h. Not installed. */
#ifndef CLD_IO_INTERNAL_H
#define CLD_IO_INTERNAL_H

#include "diffusion/internal.h"
#include "models/internal.h"

#endif
