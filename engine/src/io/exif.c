/* JPEG orientation (EXIF tag 0x0112) through libexif, and applying it to
 * decoded pixels, so an image displays as its camera meant. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <libexif/exif-data.h>
#include <stdlib.h>
#include <string.h>

cld_status cld_image_exif_orientation(const char *path, int *orientation)
{
    if (!path || !orientation)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_image_exif_orientation: NULL argument");
    *orientation = 1;
    ExifData *ed = exif_data_new_from_file(path); /* NULL: no EXIF block (PNG, BMP, plain JPEG) */
    if (!ed) return CLD_OK;
    ExifEntry *e = exif_data_get_entry(ed, EXIF_TAG_ORIENTATION);
    if (e && e->format == EXIF_FORMAT_SHORT && e->components >= 1 && e->size >= 2) {
        int v = exif_get_short(e->data, exif_data_get_byte_order(ed));
        if (v >= 1 && v <= 8) *orientation = v; /* anything else: ignored, as viewers do */
    }
    exif_data_unref(ed);
    return CLD_OK;
}

cld_status cld_image_orient(cld_image *img, int orientation)
{
    if (!img || !img->data || orientation < 1 || orientation > 8)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_image_orient: orientation %d (1..8)", orientation);
    if (orientation == 1) return CLD_OK;
    const int W = img->width, H = img->height, C = img->channels;
    const int swap = orientation >= 5; /* 5..8 transpose the axes */
    const int OW = swap ? H : W, OH = swap ? W : H;
    float *o = malloc((size_t)W * H * C * sizeof *o);
    if (!o) return cld__fail(CLD_ERR_NOMEM, "cld_image_orient: out of host memory");
    /* output (x, y) takes stored pixel (sx, sy): EXIF 2 mirror, 3 rotate 180, 4 flip, 5 transpose,
     * 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise */
    for (int y = 0; y < OH; y++)
        for (int x = 0; x < OW; x++) {
            int sx, sy;
            switch (orientation) {
            case 2: sx = W - 1 - x, sy = y; break;
            case 3: sx = W - 1 - x, sy = H - 1 - y; break;
            case 4: sx = x, sy = H - 1 - y; break;
            case 5: sx = y, sy = x; break;
            case 6: sx = y, sy = H - 1 - x; break;
            case 7: sx = W - 1 - y, sy = H - 1 - x; break;
            default: sx = W - 1 - y, sy = x; break; /* 8 */
            }
            memcpy(o + ((size_t)y * OW + x) * C, img->data + ((size_t)sy * W + sx) * C,
                   (size_t)C * sizeof *o);
        }
    free(img->data);
    img->data = o;
    img->width = OW;
    img->height = OH;
    return CLD_OK;
}
