/* Image and IDX loaders on hostile input: decompression bombs refused from
 * the header with bounded memory, the JPEG files that crashed stb_image
 * (now decoded by libjpeg), IDX headers that declare more than the file
 * holds, and JPEG decoding against the PNG of the same picture. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

#include "testutil.h"

#define CORPUS CLD_SOURCE_DIR "/test/fuzz/corpus/image/"

static int contains(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

static unsigned char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = tu_malloc(*n);
    ck_assert(fread(b, 1, *n, f) == *n);
    fclose(f);
    return b;
}

static void write_file(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert(f != NULL);
    ck_assert(fwrite(b, 1, n, f) == n);
    fclose(f);
}

static long max_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* 65535 x 65535 PNG and JPEG headers: refused before decoding, and the
 * process's peak memory grows by less than 64 MB. */
START_TEST(test_bombs)
{
    char *dir = tu_mkdtemp("cld-img");
    char path[512];
    const long rss0 = max_rss_kb();
    cld_image img;
    TU_STATUS(cld_image_load(CORPUS "bomb.png", 0, 0, &img), CLD_ERR_FORMAT);
    ck_assert_msg(contains(cld_last_error(), "65535 x 65535"), "%s", cld_last_error());
    /* a real JPEG whose frame header claims 65500 x 65500 */
    size_t n;
    unsigned char *j = read_file(CORPUS "jpeg-rgb.jpg", &n);
    size_t sof = 0;
    for (size_t i = 2; i + 9 < n; i++)
        if (j[i] == 0xFF && j[i + 1] == 0xC0) {
            sof = i;
            break;
        }
    ck_assert_msg(sof, "no SOF0 in the seed JPEG");
    j[sof + 5] = j[sof + 7] = 0xFF, j[sof + 6] = j[sof + 8] = 0xDC; /* height, width = 65500 */
    snprintf(path, sizeof path, "%s/bomb.jpg", dir);
    write_file(path, j, n);
    int w, h, c;
    TU_OK(cld_image_info(path, &w, &h, &c));
    ck_assert_int_eq(w, 65500);
    ck_assert_int_eq(h, 65500);
    TU_STATUS(cld_image_load(path, 3, 0, &img), CLD_ERR_FORMAT);
    ck_assert_msg(contains(cld_last_error(), "over the limit"), "%s", cld_last_error());
    /* a 7 x 5 PNG whose second chunk declares 4 GB (fuzz_image: stb_image grew its IDAT
     * buffer to 2 GB before reading): refused from the chunk table */
    TU_STATUS(cld_image_load(CORPUS "regress-png-idat-length.png", 0, 0, &img), CLD_ERR_FORMAT);
    ck_assert_msg(contains(cld_last_error(), "past the end of the 290-byte file"), "%s", cld_last_error());
    /* its last 10 bytes a chunk header declaring 1.3 GB with no room for the data (fuzz_image:
     * the walk stopped at chunks without room for their CRC, stb allocated 2 GB) */
    TU_STATUS(cld_image_load(CORPUS "regress-png-last-chunk-header.png", 0, 0, &img), CLD_ERR_FORMAT);
    ck_assert_msg(contains(cld_last_error(), "past the end of the 166-byte file"), "%s", cld_last_error());
    /* Apple's CgBI chunk before the IHDR, then a chunk declaring more than the file (fuzz_image:
     * the walk ran only when IHDR came first) */
    TU_STATUS(cld_image_load(CORPUS "regress-png-cgbi-first.png", 0, 0, &img), CLD_ERR_FORMAT);
    ck_assert_msg(contains(cld_last_error(), "past the end of the 161-byte file"), "%s", cld_last_error());
    const long grew = max_rss_kb() - rss0;
    ck_assert_msg(grew < 64 * 1024, "peak memory grew by %ld kB refusing bombs", grew);
    free(j);
    unlink(path);
    rmdir(dir);
    free(dir);
}
END_TEST

/* Inputs found by the fuzzer (test/fuzz/corpus/image/regress-*): each once
 * overflowed stb_image's Huffman table. Now: a clean result either way (the
 * sanitizer CI job is what catches a regression). */
START_TEST(test_fuzz_regressions)
{
    const char *files[] = {CORPUS "regress-dht-tail.jpg", CORPUS "regress-dht-eof.jpg"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        cld_image img;
        cld_status s = cld_image_load(files[i], 0, 0, &img);
        ck_assert_msg(s == CLD_OK || s == CLD_ERR_FORMAT, "%s -> %s", files[i], cld_status_name(s));
        if (s == CLD_OK)
            cld_image_free(&img);
        else
            ck_assert_msg(contains(cld_last_error(), "JPEG"), "%s", cld_last_error());
    }
}
END_TEST

/* JPEG (libjpeg) against the same file as Pillow decodes it (a PNG made by
 * test/fuzz/make_corpus.py), colour and grey; a truncated JPEG is an error
 * naming the file. */
START_TEST(test_jpeg_decode)
{
    cld_image png, jpg, grey;
    TU_OK(cld_image_load(CORPUS "jpeg-rgb-decoded.png", 0, 0, &png));
    TU_OK(cld_image_load(CORPUS "jpeg-rgb.jpg", 0, 0, &jpg));
    ck_assert_int_eq(jpg.width, 7);
    ck_assert_int_eq(jpg.height, 5);
    ck_assert_int_eq(jpg.channels, 3);
    ck_assert_int_eq(jpg.file_channels, 3);
    ck_assert_int_eq(jpg.bits, 8);
    /* libjpeg versions may round the IDCT differently by one level */
    for (int i = 0; i < 7 * 5 * 3; i++)
        ck_assert_msg(fabsf(jpg.data[i] - png.data[i]) <= 1.01f / 255, "pixel value %d: %g, Pillow %g", i,
                      jpg.data[i] * 255, png.data[i] * 255);
    TU_OK(cld_image_load(CORPUS "jpeg-rgb.jpg", 1, 0, &grey));
    ck_assert_int_eq(grey.channels, 1);
    for (int i = 0; i < 7 * 5; i++) {
        const float *p = jpg.data + 3 * i;
        const int r = (int)(p[0] * 255 + 0.5f), g = (int)(p[1] * 255 + 0.5f), b = (int)(p[2] * 255 + 0.5f);
        const float want = (float)((r * 77 + g * 150 + b * 29) >> 8) / 255.0f;
        ck_assert_msg(fabsf(grey.data[i] - want) < 1e-6f, "grey[%d] %g want %g", i, grey.data[i], want);
    }
    cld_image_free(&grey);
    TU_OK(cld_image_load(CORPUS "jpeg-l.jpg", 0, 0, &grey));
    ck_assert_int_eq(grey.channels, 1);
    ck_assert_int_eq(grey.file_channels, 1);
    cld_image_free(&grey);
    cld_image_free(&jpg);
    cld_image_free(&png);

    char *dir = tu_mkdtemp("cld-img");
    char path[512];
    size_t n;
    unsigned char *j = read_file(CORPUS "jpeg-rgb.jpg", &n);
    snprintf(path, sizeof path, "%s/cut.jpg", dir);
    write_file(path, j, 40); /* inside the quantisation tables */
    TU_STATUS(cld_image_load(path, 0, 0, &jpg), CLD_ERR_FORMAT);
    ck_assert_msg(contains(cld_last_error(), "cut.jpg"), "%s", cld_last_error());
    free(j);
    unlink(path);
    rmdir(dir);
    free(dir);
}
END_TEST

static void write_idx(const char *path, int gz, int ndim, const unsigned *dims, const unsigned char *data,
                      size_t n)
{
    unsigned char hdr[16] = {0, 0, 8, (unsigned char)ndim};
    for (int i = 0; i < ndim; i++)
        for (int k = 0; k < 4; k++) hdr[4 + 4 * i + k] = (unsigned char)(dims[i] >> (24 - 8 * k));
    if (gz) {
        gzFile f = gzopen(path, "wb");
        ck_assert(f != NULL);
        ck_assert(gzwrite(f, hdr, 4 + 4 * ndim) == 4 + 4 * ndim);
        if (n) ck_assert(gzwrite(f, data, (unsigned)n) == (int)n);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        ck_assert(f != NULL);
        ck_assert(fwrite(hdr, 1, 4 + 4 * (size_t)ndim, f) == 4 + 4 * (size_t)ndim);
        if (n) ck_assert(fwrite(data, 1, n, f) == n);
        fclose(f);
    }
}

/* An IDX header that declares far more images (or labels) than the file
 * holds is refused before the pixel buffer is allocated: raw and gzipped. */
START_TEST(test_idx_lying_header)
{
    char *dir = tu_mkdtemp("cld-idx");
    char im[512], lb[512];
    snprintf(im, sizeof im, "%s/images", dir);
    snprintf(lb, sizeof lb, "%s/labels", dir);
    unsigned char px[60] = {0}, lab[3] = {0, 1, 2};
    for (int gz = 0; gz < 2; gz++) {
        const long rss0 = max_rss_kb();
        cld_dataset *ds = NULL;
        write_idx(im, gz, 3, (unsigned[]){200000000u, 28, 28}, px, sizeof px); /* 157 GB declared */
        TU_STATUS(cld_dataset_open_idx(im, NULL, &ds), CLD_ERR_FORMAT);
        ck_assert_msg(contains(cld_last_error(), "more than its"), "%s", cld_last_error());
        ck_assert_msg(max_rss_kb() - rss0 < 64 * 1024, "peak memory grew by %ld kB", max_rss_kb() - rss0);
        write_idx(im, gz, 3, (unsigned[]){3, 4, 5}, px, sizeof px);
        write_idx(lb, gz, 1, (unsigned[]){3}, lab, 0); /* declares 3 labels, holds none */
        TU_STATUS(cld_dataset_open_idx(im, lb, &ds), CLD_ERR_FORMAT);
        ck_assert_msg(gz || contains(cld_last_error(), "more than its"), "%s", cld_last_error());
        write_idx(lb, gz, 1, (unsigned[]){3}, lab, 3);
        TU_OK(cld_dataset_open_idx(im, lb, &ds));
        cld_dataset_info info;
        TU_OK(cld_dataset_get_info(ds, &info));
        ck_assert_int_eq(info.n, 3);
        ck_assert_int_eq(info.num_classes, 3);
        cld_dataset_free(ds);
    }
    unlink(im);
    unlink(lb);
    rmdir(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("image");
    TCase *tc = tcase_create("loaders");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_bombs);
    tcase_add_test(tc, test_fuzz_regressions);
    tcase_add_test(tc, test_jpeg_decode);
    tcase_add_test(tc, test_idx_lying_header);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
