/* models layer internals. Builds on ops/internal.h. Not installed. */
#ifndef CLD_MODELS_INTERNAL_H
#define CLD_MODELS_INTERNAL_H

#include "ops/internal.h"

#endif
