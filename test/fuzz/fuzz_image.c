/* libFuzzer: the image loader (stb_image through our wrapper: PNG, JPEG,
 * BMP, TGA, PNM only, pixel budget checked from the header) and the PNG
 * text reader used by --replay. */
#include "fuzz_common.h"

#include <cldiffusion/cldiffusion.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = fuzz_file(0, data, size);
    cld_image img;
    int w, h, c;
    (void)cld_image_info(p, &w, &h, &c);
    /* a quarter-megapixel budget keeps each run fast (the 10^7-run
     * campaign); the budget logic is the same at any size */
    if (cld_image_load(p, 0, (size_t)1 << 18, &img) == CLD_OK) cld_image_free(&img);
    char *v = NULL;
    if (cld_png_read_text(p, "cld.recipe", &v) == CLD_OK) free(v);
    return 0;
}
