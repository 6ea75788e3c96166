/* JPEG decoding through libjpeg (libjpeg-turbo), not stb_image: Debian 12's
 * stb_image 2.27 writes past a Huffman table when a DHT segment's code counts
 * add up past 256 (found by test/fuzz/fuzz_image under ASan/UBSan within
 * seconds; fixed upstream in 2.28), while libjpeg-turbo is fuzzed
 * continuously by OSS-Fuzz. Errors longjmp out of libjpeg into a clear
 * cld_status; corrupt-data warnings are counted, not printed. */
#include "internal.h"

#include <jpeglib.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

typedef struct jerr {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jerr;

static void jerr_exit(j_common_ptr c)
{
    jerr *e = (jerr *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}

static void jerr_emit(j_common_ptr c, int level)
{
    if (level < 0) c->err->num_warnings++; /* corrupt data: libjpeg recovers */
}

int cld__is_jpeg(FILE *f)
{
    const long at = ftell(f);
    const int a = getc(f), b = getc(f);
    fseek(f, at, SEEK_SET);
    return a == 0xFF && b == 0xD8;
}

/* Header (and, with px, pixels): nc 0 = the file's channels (1 grey or 3
 * RGB), else 1..4 converted like stb_image does (grey = (77 R + 150 G +
 * 29 B) >> 8, alpha 255). The pixel budget is checked before any pixel
 * buffer exists. f is left at its start. */
cld_status cld__jpeg_read(FILE *f, const char *path, int nc, size_t max_pixels, int *w, int *h, int *c,
                          unsigned char **px)
{
    struct jpeg_decompress_struct ci;
    jerr e;
    const long start = ftell(f);
    /* volatile: read after a longjmp */
    unsigned char *volatile out = NULL, *volatile row = NULL;
    memset(&ci, 0, sizeof ci);
    ci.err = jpeg_std_error(&e.pub);
    e.pub.error_exit = jerr_exit;
    e.pub.emit_message = jerr_emit;
    if (setjmp(e.jb)) {
        jpeg_destroy_decompress(&ci);
        free(out);
        free(row);
        fseek(f, start, SEEK_SET);
        return cld__fail(CLD_ERR_FORMAT, "JPEG '%s' is corrupt: %s", path, e.msg);
    }
    jpeg_create_decompress(&ci);
    jpeg_stdio_src(&ci, f);
    jpeg_read_header(&ci, TRUE);
    const int fc = ci.num_components == 1 ? 1 : 3;
    *w = (int)ci.image_width;
    *h = (int)ci.image_height;
    *c = fc;
    cld_status s = CLD_OK;
    if (ci.num_components != 1 && ci.num_components != 3)
        s = cld__fail(CLD_ERR_FORMAT, "JPEG '%s' has %d colour components (only grey and YCbCr/RGB are read)",
                      path, ci.num_components);
    else if (!px) {
        /* header only */
    } else if (*w <= 0 || *h <= 0 || (size_t)*w * (size_t)*h > max_pixels)
        s = cld__fail(CLD_ERR_FORMAT, "image '%s' declares %d x %d pixels, over the limit of %zu", path, *w,
                      *h, max_pixels);
    if (s != CLD_OK || !px) {
        jpeg_destroy_decompress(&ci);
        fseek(f, start, SEEK_SET);
        return s;
    }
    const int oc = nc ? nc : fc;
    ci.out_color_space = fc == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&ci);
    const size_t W = ci.output_width, H = ci.output_height;
    out = malloc(W * H * (size_t)oc);
    row = malloc(W * (size_t)fc);
    if (!out || !row) {
        jpeg_destroy_decompress(&ci);
        free(out);
        free(row);
        fseek(f, start, SEEK_SET);
        return cld__fail(CLD_ERR_NOMEM, "JPEG '%s': out of host memory for %zu x %zu", path, W, H);
    }
    while (ci.output_scanline < ci.output_height) {
        const size_t y = ci.output_scanline;
        JSAMPROW rp = row;
        jpeg_read_scanlines(&ci, &rp, 1);
        unsigned char *o = out + y * W * (size_t)oc;
        for (size_t x = 0; x < W; x++) {
            const unsigned char *p = row + x * (size_t)fc;
            const unsigned char r = p[0], g = p[fc > 1], b = p[fc > 1 ? 2 : 0];
            const unsigned char grey = fc == 1 ? r : (unsigned char)((r * 77 + g * 150 + b * 29) >> 8);
            switch (oc) {
            case 1: o[x] = grey; break;
            case 2: o[2 * x] = grey, o[2 * x + 1] = 255; break;
            case 3: o[3 * x] = r, o[3 * x + 1] = g, o[3 * x + 2] = b; break;
            default: o[4 * x] = r, o[4 * x + 1] = g, o[4 * x + 2] = b, o[4 * x + 3] = 255; break;
            }
        }
    }
    jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    free(row);
    fseek(f, start, SEEK_SET);
    *px = out;
    return CLD_OK;
}
