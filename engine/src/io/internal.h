/* io layer internals. Builds on models/ and diffusion/internal.h. Not installed. */
#ifndef CLD_IO_INTERNAL_H
#define CLD_IO_INTERNAL_H

#include "diffusion/internal.h"
#include "models/internal.h"

/* Load a safetensors file whose tensor names go through `map` (canonical
 * store name into out; 0: no such parameter), requiring an exact match
 * (no missing, unexpected or doubled tensor); check_only: validate the
 * header against the store and stop (no data read, no device memory)
 * (safetensors.c, for diffusers.c). */
typedef int (*cld__tensor_name_map)(const char *file_name, char *out, size_t cap);
cld_status cld__params_load_mapped(cld_params *p, const char *path, cld__tensor_name_map map, int check_only);

#endif
