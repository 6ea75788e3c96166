/* io layer internals. Builds on models/ and diffusion/internal.h. Not installed. */
#ifndef CLD_IO_INTERNAL_H
#define CLD_IO_INTERNAL_H

#include "diffusion/internal.h"
#include "models/internal.h"

/* JPEG through libjpeg (jpeg.c): is f (at its current position) a JPEG;
 * header and optionally pixels (8-bit, nc channels, malloc'd). */
int cld__is_jpeg(FILE *f);
cld_status cld__jpeg_read(FILE *f, const char *path, int nc, size_t max_pixels, int *w, int *h, int *c,
                          unsigned char **px);

#endif
