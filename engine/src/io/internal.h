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

/* JPEG through libjpeg (jpeg.c): is f (at its current position) a JPEG;
 * header and optionally pixels (8-bit, nc channels, malloc'd). */
int cld__is_jpeg(FILE *f);
cld_status cld__jpeg_read(FILE *f, const char *path, int nc, size_t max_pixels, int *w, int *h, int *c,
                          unsigned char **px);

#endif
