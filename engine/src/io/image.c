/* Images: decoding through stb_image (PNG, BMP, TGA, PNM only; GIF, PSD,
 * HDR and PIC are compiled out) and libjpeg (JPEG: see jpeg.c for why not
 * stb), a pixel budget checked from the header
 * before any pixel is decoded, and PNG writing through zlib with tEXt chunks
 * (the sampler's recipes), written to a temporary name and renamed. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_TGA
#define STBI_ONLY_PNM
#define STBI_MAX_DIMENSIONS (1 << 16)
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#endif
#include "stb_image.h"

cld_status cld_image_info(const char *path, int *width, int *height, int *channels)
{
    if (!path) return cld__fail(CLD_ERR_INVALID_ARG, "cld_image_info: NULL path");
    FILE *f = fopen(path, "rb");
    if (!f) return cld__fail(CLD_ERR_IO, "cannot open image '%s': %s", path, strerror(errno));
    int w = 0, h = 0, c = 0;
    if (cld__is_jpeg(f)) {
        cld_status s = cld__jpeg_read(f, path, 0, 0, &w, &h, &c, NULL);
        fclose(f);
        if (s != CLD_OK) return s;
        if (width) *width = w;
        if (height) *height = h;
        if (channels) *channels = c;
        return CLD_OK;
    }
    int ok = stbi_info_from_file(f, &w, &h, &c);
    fclose(f);
    if (!ok)
        return cld__fail(CLD_ERR_FORMAT, "'%s' is not an image we read (PNG, JPEG, BMP, TGA, PNM): %s", path,
                         stbi_failure_reason());
    if (width) *width = w;
    if (height) *height = h;
    if (channels) *channels = c;
    return CLD_OK;
}

/* Every chunk of a PNG inside the file: stb_image grows its IDAT buffer to
 * a chunk's declared length before reading it, so a few bytes declaring a
 * 2 GB chunk cost 2 GB (found by fuzz_image). Walked from the header: the
 * 8 bytes of length and type read per chunk, up to IEND or the end of the
 * file. A chunk whose header alone fits at the very end counts too: stb
 * reads those 8 bytes and allocates (fuzz_image again, a 166-byte file
 * ending in a header that declares 1.3 GB). */
static cld_status png_chunks_fit(FILE *f, long start, const char *path)
{
    if (fseek(f, 0, SEEK_END) != 0) return CLD_OK; /* not seekable: stb's own checks */
    const long end = ftell(f);
    long pos = start + 8;
    unsigned char h[8];
    while (pos + 8 <= end && fseek(f, pos, SEEK_SET) == 0 && fread(h, 1, 8, f) == 8) {
        const uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
        if (len > 0x7fffffffu || (uint64_t)pos + 12 + len > (uint64_t)end)
            return cld__fail(CLD_ERR_FORMAT,
                             "'%s': PNG chunk '%.4s' declares %u bytes, past the end of the %ld-byte file "
                             "(truncated or corrupt)",
                             path, (const char *)h + 4, len, end);
        if (!memcmp(h + 4, "IEND", 4)) break;
        pos += 12 + (long)len;
    }
    return CLD_OK;
}

/* A failed stb_image decode: out of memory (stb's "outofmem") is
 * CLD_ERR_NOMEM, anything else a bad file. The reason is cleared before
 * each decode (stb_decode_begin): stb 2.27 sets none when the first buffer
 * of its zlib inflate cannot be allocated, and the previous call's reason
 * would be reported instead (found by test_faults_alloc); no reason at all
 * is that allocation failure. */
static void stb_decode_begin(void) { stbi__g_failure_reason = NULL; }

static cld_status stb_decode_fail(const char *path)
{
    const char *why = stbi_failure_reason();
    if (!why || strcmp(why, "outofmem") == 0)
        return cld__fail(CLD_ERR_NOMEM, "image '%s': out of host memory while decoding", path);
    return cld__fail(CLD_ERR_FORMAT, "image '%s': %s", path, why);
}

cld_status cld_image_load(const char *path, int want_channels, size_t max_pixels, cld_image *out)
{
    if (!path || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_image_load: NULL argument");
    if (want_channels < 0 || want_channels > 4)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_image_load: want_channels = %d (0..4)", want_channels);
    memset(out, 0, sizeof *out);
    if (!max_pixels) max_pixels = CLD_IMAGE_DEFAULT_MAX_PIXELS;
    FILE *f = fopen(path, "rb");
    if (!f) return cld__fail(CLD_ERR_IO, "cannot open image '%s': %s", path, strerror(errno));
    int w = 0, h = 0, c = 0;
    if (cld__is_jpeg(f)) {
        unsigned char *px = NULL;
        cld_status s = cld__jpeg_read(f, path, want_channels, max_pixels, &w, &h, &c, &px);
        fclose(f);
        if (s != CLD_OK) return s;
        const int nc = want_channels ? want_channels : c;
        const size_t n = (size_t)w * (size_t)h * (size_t)nc;
        float *data = malloc(n * sizeof *data);
        if (!data) {
            free(px);
            return cld__fail(CLD_ERR_NOMEM, "image '%s': out of host memory for %d x %d", path, w, h);
        }
        for (size_t i = 0; i < n; i++) data[i] = px[i] / 255.0f;
        free(px);
        out->width = w;
        out->height = h;
        out->channels = nc;
        out->file_channels = c;
        out->bits = 8;
        out->data = data;
        return CLD_OK;
    }
    /* a PNG's size from its IHDR, so that a bomb is named as one (stb's
     * own check says only "unknown image type") */
    unsigned char ihdr[24];
    const long at = ftell(f);
    const int png = fread(ihdr, 1, 24, f) == 24 && !memcmp(ihdr, "\x89PNG\r\n\x1a\n", 8);
    if (png && !memcmp(ihdr + 12, "IHDR", 4)) {
        const uint32_t pw =
            (uint32_t)ihdr[16] << 24 | (uint32_t)ihdr[17] << 16 | (uint32_t)ihdr[18] << 8 | ihdr[19];
        const uint32_t ph =
            (uint32_t)ihdr[20] << 24 | (uint32_t)ihdr[21] << 16 | (uint32_t)ihdr[22] << 8 | ihdr[23];
        if ((uint64_t)pw * ph > max_pixels) {
            fclose(f);
            return cld__fail(CLD_ERR_FORMAT, "image '%s' declares %u x %u pixels, over the limit of %zu",
                             path, pw, ph, max_pixels);
        }
    }
    /* every PNG's chunk table, whatever its first chunk: stb also reads
     * Apple's CgBI PNGs, whose IHDR comes second (fuzz_image: a CgBI file
     * skipped the walk and made stb allocate 2 GB) */
    if (png) {
        cld_status cs = png_chunks_fit(f, at, path);
        if (cs != CLD_OK) {
            fclose(f);
            return cs;
        }
    }
    fseek(f, at, SEEK_SET);
    if (!stbi_info_from_file(f, &w, &h, &c)) {
        fclose(f);
        return cld__fail(CLD_ERR_FORMAT, "'%s' is not an image we read (PNG, JPEG, BMP, TGA, PNM): %s", path,
                         stbi_failure_reason());
    }
    if (w <= 0 || h <= 0 || (size_t)w * (size_t)h > max_pixels) {
        fclose(f);
        return cld__fail(CLD_ERR_FORMAT, "image '%s' declares %d x %d pixels, over the limit of %zu", path, w,
                         h, max_pixels);
    }
    const int is16 = stbi_is_16_bit_from_file(f);
    const int nc = want_channels ? want_channels : c;
    const size_t n = (size_t)w * (size_t)h * (size_t)nc;
    float *data = malloc(n * sizeof *data);
    if (!data) {
        fclose(f);
        return cld__fail(CLD_ERR_NOMEM, "image '%s': out of host memory for %d x %d", path, w, h);
    }
    int rw = 0, rh = 0, rc = 0;
    cld_status s = CLD_OK;
    if (is16) {
        stb_decode_begin();
        stbi_us *px = stbi_load_from_file_16(f, &rw, &rh, &rc, nc);
        if (!px)
            s = stb_decode_fail(path);
        else
            for (size_t i = 0; i < n; i++) data[i] = px[i] / 65535.0f;
        stbi_image_free(px);
    } else {
        stb_decode_begin();
        stbi_uc *px = stbi_load_from_file(f, &rw, &rh, &rc, nc);
        if (!px)
            s = stb_decode_fail(path);
        else
            for (size_t i = 0; i < n; i++) data[i] = px[i] / 255.0f;
        stbi_image_free(px);
    }
    fclose(f);
    if (s == CLD_OK && (rw != w || rh != h))
        s = cld__fail(CLD_ERR_FORMAT, "image '%s': decoded %d x %d, header said %d x %d", path, rw, rh, w, h);
    if (s != CLD_OK) {
        free(data);
        return s;
    }
    out->width = w;
    out->height = h;
    out->channels = nc;
    out->file_channels = c;
    out->bits = is16 ? 16 : 8;
    out->data = data;
    return CLD_OK;
}

cld_status cld_image_free(cld_image *img)
{
    if (img) {
        free(img->data);
        img->data = NULL;
    }
    return CLD_OK;
}

#if defined(__GNUC__)
#pragma GCC diagnostic pop
/* stb declares static functions it compiles out (GIF, thread-local flags):
 * the warning fires at the end of the file, so it stays off here. */
#pragma GCC diagnostic ignored "-Wunused-function"
#endif

/* ------------------------------------------------------------ PNG writer */

typedef struct png_buf {
    unsigned char *p;
    size_t n, cap;
} png_buf;

static int pb_put(png_buf *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q) return 0;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
    return 1;
}

static int pb_u32(png_buf *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8),
                          (unsigned char)v};
    return pb_put(b, x, 4);
}

/* length, type, data, CRC over type and data */
static int pb_chunk(png_buf *b, const char *type, const unsigned char *data, size_t n)
{
    if (n > 0x7fffffffu) return 0;
    if (!pb_u32(b, (uint32_t)n) || !pb_put(b, type, 4) || (n && !pb_put(b, data, n))) return 0;
    uLong crc = crc32(0L, (const Bytef *)type, 4);
    if (n) crc = crc32(crc, data, (uInt)n);
    return pb_u32(b, (uint32_t)crc);
}

cld_status cld_png_write(const char *path, int width, int height, int channels, int bits, const void *pixels,
                         int n_text, const char *const *keys, const char *const *values)
{
    if (!path || !pixels || (n_text && (!keys || !values)))
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_png_write: NULL argument");
    if (width < 1 || height < 1 || channels < 1 || channels > 4 || (bits != 8 && bits != 16))
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_png_write: %d x %d, %d channels, %d bits is not writable",
                         width, height, channels, bits);
    for (int i = 0; i < n_text; i++) {
        size_t kl = strlen(keys[i]);
        if (kl < 1 || kl > 79)
            return cld__fail(CLD_ERR_INVALID_ARG, "cld_png_write: text key '%s' must have 1..79 bytes",
                             keys[i]);
    }
    static const int color_type[5] = {0, 0, 4, 2, 6};
    const size_t bpp = (size_t)channels * (size_t)(bits / 8), row = (size_t)width * bpp;
    const size_t raw_n = (row + 1) * (size_t)height;
    unsigned char *raw = malloc(raw_n);
    png_buf b = {0};
    unsigned char *z = NULL;
    cld_status s = CLD_OK;
    if (!raw) return cld__fail(CLD_ERR_NOMEM, "cld_png_write: out of host memory");
    /* filter 1 (Sub) on every row: smaller files than none for smooth images */
    for (int y = 0; y < height; y++) {
        unsigned char *dst = raw + (size_t)y * (row + 1);
        dst[0] = 1;
        for (size_t x = 0; x < row; x++) {
            size_t i = (size_t)y * row + x;
            unsigned char v;
            if (bits == 8)
                v = ((const unsigned char *)pixels)[i];
            else {
                uint16_t w = ((const uint16_t *)pixels)[i / 2];
                v = (i & 1) ? (unsigned char)(w & 0xff) : (unsigned char)(w >> 8); /* big-endian samples */
            }
            dst[1 + x] = v;
        }
        for (size_t x = row; x-- > bpp;) dst[1 + x] = (unsigned char)(dst[1 + x] - dst[1 + x - bpp]);
    }
    uLongf zn = compressBound((uLong)raw_n);
    z = malloc(zn);
    if (!z)
        s = cld__fail(CLD_ERR_NOMEM, "cld_png_write: out of host memory");
    else if (compress2(z, &zn, raw, (uLong)raw_n, 6) != Z_OK)
        s = cld__fail(CLD_ERR_NOMEM, "cld_png_write: zlib compress2 failed");
    static const unsigned char sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    unsigned char ihdr[13];
    for (int i = 0; i < 4; i++) {
        ihdr[i] = (unsigned char)((uint32_t)width >> (24 - 8 * i));
        ihdr[4 + i] = (unsigned char)((uint32_t)height >> (24 - 8 * i));
    }
    ihdr[8] = (unsigned char)bits;
    ihdr[9] = (unsigned char)color_type[channels];
    ihdr[10] = ihdr[11] = ihdr[12] = 0;
    int ok = s == CLD_OK && pb_put(&b, sig, 8) && pb_chunk(&b, "IHDR", ihdr, 13);
    for (int i = 0; ok && i < n_text; i++) {
        size_t kl = strlen(keys[i]), vl = strlen(values[i]);
        unsigned char *t = malloc(kl + 1 + vl);
        ok = t != NULL;
        if (ok) {
            memcpy(t, keys[i], kl);
            t[kl] = 0;
            memcpy(t + kl + 1, values[i], vl);
            ok = pb_chunk(&b, "tEXt", t, kl + 1 + vl);
        }
        free(t);
    }
    ok = ok && pb_chunk(&b, "IDAT", z, zn) && pb_chunk(&b, "IEND", NULL, 0);
    if (s == CLD_OK && !ok) s = cld__fail(CLD_ERR_NOMEM, "cld_png_write: out of host memory");
    free(raw);
    free(z);
    if (s == CLD_OK) s = cld_file_write_atomic(path, b.p, b.n);
    free(b.p);
    return s;
}

/* fsync the folder holding path (the rename's durability); best effort. */
static void sync_dir_of(const char *path)
{
    char *dir = strdup(path);
    if (!dir) return;
    char *slash = strrchr(dir, '/');
    const char *d = ".";
    if (slash == dir)
        d = "/";
    else if (slash) {
        *slash = 0;
        d = dir;
    }
    int fd = open(d, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

cld_status cld_file_write_atomic(const char *path, const void *data, size_t n)
{
    if (!path || (!data && n)) return cld__fail(CLD_ERR_INVALID_ARG, "cld_file_write_atomic: NULL argument");
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 16);
    if (!tmp) return cld__fail(CLD_ERR_NOMEM, "cld_file_write_atomic: out of host memory");
    snprintf(tmp, pl + 16, "%s.tmp%ld", path, (long)getpid() % 100000);
    cld_status s = CLD_OK;
    FILE *f = fopen(tmp, "wb");
    if (!f)
        s = cld__fail(CLD_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
    else {
        if (n && fwrite(data, 1, n, f) != n)
            s = cld__fail(CLD_ERR_IO, "writing '%s': %s", tmp, strerror(errno));
        if (s == CLD_OK && (fflush(f) != 0 || fsync(fileno(f)) != 0))
            s = cld__fail(CLD_ERR_IO, "flushing '%s': %s", tmp, strerror(errno));
        if (fclose(f) != 0 && s == CLD_OK)
            s = cld__fail(CLD_ERR_IO, "closing '%s': %s", tmp, strerror(errno));
        if (s == CLD_OK && rename(tmp, path) != 0)
            s = cld__fail(CLD_ERR_IO, "renaming '%s' to '%s': %s", tmp, path, strerror(errno));
        if (s != CLD_OK)
            unlink(tmp);
        else
            sync_dir_of(path);
    }
    free(tmp);
    return s;
}

cld_status cld_png_read_text(const char *path, const char *key, char **value)
{
    if (!path || !key || !value) return cld__fail(CLD_ERR_INVALID_ARG, "cld_png_read_text: NULL argument");
    *value = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return cld__fail(CLD_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    unsigned char sig[8];
    static const unsigned char want[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    cld_status s = CLD_OK;
    if (fread(sig, 1, 8, f) != 8 || memcmp(sig, want, 8))
        s = cld__fail(CLD_ERR_FORMAT, "'%s' is not a PNG file", path);
    const size_t kl = strlen(key);
    while (s == CLD_OK && !*value) {
        unsigned char hd[8];
        if (fread(hd, 1, 8, f) != 8) {
            s = cld__fail(CLD_ERR_FORMAT, "'%s': PNG ends without an IEND chunk", path);
            break;
        }
        uint32_t len = (uint32_t)hd[0] << 24 | (uint32_t)hd[1] << 16 | (uint32_t)hd[2] << 8 | hd[3];
        if (len > 0x7fffffffu) {
            s = cld__fail(CLD_ERR_FORMAT, "'%s': PNG chunk length %u out of range", path, len);
            break;
        }
        if (!memcmp(hd + 4, "IEND", 4)) break;
        if (memcmp(hd + 4, "tEXt", 4) || len > (1u << 20)) {
            if (fseeko(f, (off_t)len + 4, SEEK_CUR) != 0)
                s = cld__fail(CLD_ERR_FORMAT, "'%s': truncated PNG", path);
            continue;
        }
        unsigned char *t = malloc((size_t)len + 1);
        if (!t) {
            s = cld__fail(CLD_ERR_NOMEM, "cld_png_read_text: out of host memory");
            break;
        }
        unsigned char crcb[4];
        if (fread(t, 1, len, f) != len || fread(crcb, 1, 4, f) != 4) {
            free(t);
            s = cld__fail(CLD_ERR_FORMAT, "'%s': truncated PNG text chunk", path);
            break;
        }
        uLong crc = crc32(crc32(0L, hd + 4, 4), t, (uInt)len);
        uint32_t got = (uint32_t)crcb[0] << 24 | (uint32_t)crcb[1] << 16 | (uint32_t)crcb[2] << 8 | crcb[3];
        if ((uint32_t)crc != got) {
            free(t);
            s = cld__fail(CLD_ERR_FORMAT, "'%s': a PNG text chunk fails its CRC (corrupt file)", path);
            break;
        }
        t[len] = 0;
        if (len > kl && !memcmp(t, key, kl) && t[kl] == 0) {
            size_t vl = len - kl - 1;
            char *v = malloc(vl + 1);
            if (!v)
                s = cld__fail(CLD_ERR_NOMEM, "cld_png_read_text: out of host memory");
            else {
                memcpy(v, t + kl + 1, vl);
                v[vl] = 0;
                *value = v;
            }
        }
        free(t);
    }
    fclose(f);
    if (s == CLD_OK && !*value) s = cld__fail(CLD_ERR_FORMAT, "'%s' has no PNG text entry '%s'", path, key);
    return s;
}
