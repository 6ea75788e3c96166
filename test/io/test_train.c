/* Training data (io.h datasets and loader) and the cld-train program.
 *
 * Data sets are tiny IDX files (8x8 images, 3 classes) and PNG folders
 * written by the test itself. The program runs a tiny UNet (base 8, two
 * levels, T = 100) for a few steps on the CPU device, so each run takes
 * about a second: resume must give byte-identical state and model files,
 * every bad input must stop with a clear message before any device work,
 * a NaN must stop training and keep the last checkpoint, SIGTERM must
 * write a checkpoint that resumes exactly. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "apptest.h"
#include "testutil.h"

/* ------------------------------------------------------------ helpers */

static uint8_t *random_bytes(size_t n, uint64_t seed, int mod)
{
    uint8_t *b = tu_malloc(n);
    uint64_t st = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        b[i] = (uint8_t)((st >> 33) % (uint64_t)mod);
    }
    return b;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* An IDX file: ndim 3 (n images of size x size) or 1 (n labels < classes),
 * raw or gzipped. Returns the payload (malloc'd) so tests can compare. */
static uint8_t *write_idx(const char *path, int ndim, int n, int size, int classes, uint64_t seed, int gz)
{
    uint8_t hdr[16] = {0, 0, 8, (uint8_t)ndim};
    put_be32(hdr + 4, (uint32_t)n);
    put_be32(hdr + 8, (uint32_t)size);
    put_be32(hdr + 12, (uint32_t)size);
    const size_t hlen = ndim == 3 ? 16 : 8, plen = ndim == 3 ? (size_t)n * size * size : (size_t)n;
    uint8_t *payload = random_bytes(plen, seed, ndim == 3 ? 256 : classes);
    if (gz) {
        gzFile f = gzopen(path, "wb");
        ck_assert(f != NULL);
        ck_assert(gzwrite(f, hdr, (unsigned)hlen) == (int)hlen);
        ck_assert(gzwrite(f, payload, (unsigned)plen) == (int)plen);
        ck_assert(gzclose(f) == Z_OK);
    } else {
        uint8_t *all = tu_malloc(hlen + plen);
        memcpy(all, hdr, hlen);
        memcpy(all + hlen, payload, plen);
        at_write_file(path, all, hlen + plen);
        free(all);
    }
    return payload;
}

/* Train and test IDX files of 8x8 images, 3 classes, in dir (n_train images). */
static void write_idx_set(const char *dir, int n_train)
{
    char *p;
    free(write_idx(p = at_path(dir, "train-images-idx3-ubyte"), 3, n_train, 8, 0, 1, 0)), free(p);
    free(write_idx(p = at_path(dir, "train-labels-idx1-ubyte"), 1, n_train, 0, 3, 2, 0)), free(p);
    free(write_idx(p = at_path(dir, "t10k-images-idx3-ubyte"), 3, 12, 8, 0, 3, 0)), free(p);
    free(write_idx(p = at_path(dir, "t10k-labels-idx1-ubyte"), 1, 12, 0, 3, 4, 0)), free(p);
}

static void write_png(const char *path, int w, int h, int channels, uint64_t seed)
{
    uint8_t *px = random_bytes((size_t)w * h * channels, seed, 256);
    TU_OK(cld_png_write(path, w, h, channels, 8, px, 0, NULL, NULL));
    free(px);
}

static void make_dir(const char *dir, const char *name)
{
    char *p = at_path(dir, name);
    ck_assert_msg(mkdir(p, 0777) == 0, "mkdir %s", p);
    free(p);
}

/* Run cld-train ($CLD_TRAIN, else the build folder) with `args` in `dir`. */
static int train(const char *dir, const char *args, char **err)
{
    return at_run(at_app("cld-train", "CLD_TRAIN"), dir, args, NULL, err);
}

/* The tiny model and run every app test uses (about 45k parameters). */
#define TINY                                                                                         \
    "--base 8 --mult 1,2 --res-blocks 1 --attn 4 --groups 4 --T 100 --batch 4 --warmup 2 --val-n 8 " \
    "--grid-every 0 --progress none"

/* --------------------------------------------------------- data sets */

/* Raw and gzipped IDX read the same pixels (x / 127.5 - 1) and labels. */
START_TEST(test_idx_raw_and_gz)
{
    char *dir = tu_mkdtemp("cld-train"), *raw = at_path(dir, "r-images"), *gz = at_path(dir, "g-images.gz"),
         *lab = at_path(dir, "labels.gz");
    uint8_t *px = write_idx(raw, 3, 5, 6, 0, 7, 0), *lb = write_idx(lab, 1, 5, 0, 4, 8, 1);
    free(write_idx(gz, 3, 5, 6, 0, 7, 1));
    cld_dataset *a, *b;
    TU_OK(cld_dataset_open_idx(raw, lab, &a));
    TU_OK(cld_dataset_open_idx(gz, NULL, &b));
    cld_dataset_info ia, ib;
    TU_OK(cld_dataset_get_info(a, &ia));
    TU_OK(cld_dataset_get_info(b, &ib));
    ck_assert(ia.n == 5 && ia.channels == 1 && ia.height == 6 && ia.width == 6);
    ck_assert(ib.n == 5 && ib.height == 6 && ib.num_classes == 0);
    int maxl = 0;
    for (int i = 0; i < 5; i++) maxl = lb[i] > maxl ? lb[i] : maxl;
    ck_assert_int_eq(ia.num_classes, maxl + 1);
    float x[36], y[36];
    for (int i = 0; i < 5; i++) {
        int la = -1, lbv = -1;
        TU_OK(cld_dataset_get(a, i, NULL, 0, 0, x, &la));
        TU_OK(cld_dataset_get(b, i, NULL, 0, 0, y, &lbv));
        ck_assert_int_eq(la, lb[i]);
        ck_assert_int_eq(lbv, 0);
        for (int k = 0; k < 36; k++) {
            ck_assert_msg(x[k] == px[i * 36 + k] / 127.5f - 1.0f, "image %d pixel %d", i, k);
            ck_assert(x[k] == y[k]);
        }
    }
    cld_dataset_free(a);
    cld_dataset_free(b);
    free(px);
    free(lb);
    free(raw);
    free(gz);
    free(lab);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* Broken IDX files: a clear error naming the problem and the file. */
START_TEST(test_idx_errors)
{
    char *dir = tu_mkdtemp("cld-train"), *img = at_path(dir, "i"), *gz = at_path(dir, "i.gz"),
         *lab = at_path(dir, "l"), *bad = at_path(dir, "bad");
    free(write_idx(img, 3, 10, 8, 0, 1, 0));
    free(write_idx(gz, 3, 10, 8, 0, 1, 1));
    free(write_idx(lab, 1, 9, 0, 3, 2, 0));
    size_t len, glen;
    uint8_t *bytes = at_read_file(img, &len), *gbytes = at_read_file(gz, &glen);
    cld_dataset *ds = NULL;
    TU_STATUS(cld_dataset_open_idx(dir, NULL, &ds), CLD_ERR_FORMAT); /* a folder: gz reads nothing */
    char *missing = at_path(dir, "missing");
    TU_STATUS(cld_dataset_open_idx(missing, NULL, &ds), CLD_ERR_IO);
    ck_assert_msg(strstr(cld_last_error(), "cannot open IDX file") && strstr(cld_last_error(), "missing"),
                  "%s", cld_last_error());
    free(missing);
    at_write_file(bad, bytes, len - 7); /* raw, truncated */
    TU_STATUS(cld_dataset_open_idx(bad, NULL, &ds), CLD_ERR_FORMAT);
    ck_assert_msg(strstr(cld_last_error(), "truncated file"), "%s", cld_last_error());
    at_write_file(bad, gbytes, glen - 12); /* gz, truncated */
    TU_STATUS(cld_dataset_open_idx(bad, NULL, &ds), CLD_ERR_FORMAT);
    ck_assert_msg(strstr(cld_last_error(), "ends early") || strstr(cld_last_error(), "corrupt"), "%s",
                  cld_last_error());
    gbytes[glen / 2] ^= 0x55; /* gz, corrupt in the middle of the deflate stream */
    gbytes[glen / 2 + 1] ^= 0xAA;
    at_write_file(bad, gbytes, glen);
    TU_STATUS(cld_dataset_open_idx(bad, NULL, &ds), CLD_ERR_FORMAT);
    ck_assert_msg(strstr(cld_last_error(), "corrupt") || strstr(cld_last_error(), "ends early"), "%s",
                  cld_last_error());
    at_write_file(bad, "hello, world", 12);
    TU_STATUS(cld_dataset_open_idx(bad, NULL, &ds), CLD_ERR_FORMAT);
    ck_assert_msg(strstr(cld_last_error(), "not an IDX file"), "%s", cld_last_error());
    bytes[len] = 0;
    uint8_t *longer = tu_malloc(len + 1);
    memcpy(longer, bytes, len);
    longer[len] = 1;
    at_write_file(bad, longer, len + 1);
    TU_STATUS(cld_dataset_open_idx(bad, NULL, &ds), CLD_ERR_FORMAT);
    ck_assert_msg(strstr(cld_last_error(), "bytes after"), "%s", cld_last_error());
    TU_STATUS(cld_dataset_open_idx(img, lab, &ds), CLD_ERR_FORMAT);
    ck_assert_msg(strstr(cld_last_error(), "9 labels") && strstr(cld_last_error(), "10 images"), "%s",
                  cld_last_error());
    TU_STATUS(cld_dataset_open_idx(lab, NULL, &ds), CLD_ERR_FORMAT); /* labels given as images */
    ck_assert_msg(strstr(cld_last_error(), "1 dimensions, 3 expected"), "%s", cld_last_error());
    ck_assert(ds == NULL);
    free(longer);
    free(bytes);
    free(gbytes);
    free(img);
    free(gz);
    free(lab);
    free(bad);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* Folders: classes are subfolders in sorted order; crops are windows of the
 * image, flips mirror them, both a function of (seed, global index). */
START_TEST(test_folder_classes_crops_flips)
{
    char *dir = tu_mkdtemp("cld-train");
    make_dir(dir, "zebra");
    make_dir(dir, "ant");
    char *p;
    write_png(p = at_path(dir, "zebra/a.png"), 12, 10, 3, 1), free(p);
    write_png(p = at_path(dir, "zebra/b.png"), 8, 9, 3, 2), free(p);
    write_png(p = at_path(dir, "ant/c.png"), 16, 11, 3, 3), free(p);
    at_write_file(p = at_path(dir, "ant/notes.txt"), "x", 1), free(p);
    cld_dataset *ds;
    TU_OK(cld_dataset_open_folder(dir, 3, 8, &ds));
    cld_dataset_info in;
    TU_OK(cld_dataset_get_info(ds, &in));
    ck_assert(in.n == 3 && in.num_classes == 2 && in.channels == 3 && in.height == 8 && in.width == 8);
    const char *n0, *n1;
    TU_OK(cld_dataset_class_name(ds, 0, &n0));
    TU_OK(cld_dataset_class_name(ds, 1, &n1));
    ck_assert_str_eq(n0, "ant");
    ck_assert_str_eq(n1, "zebra");
    /* item 0 is ant/c.png (16 x 11): each sample must be a window of it, maybe mirrored */
    cld_image src;
    p = at_path(dir, "ant/c.png");
    TU_OK(cld_image_load(p, 3, 0, &src));
    free(p);
    const cld_augment aug = {1};
    float x[3 * 64], y[3 * 64];
    int flips = 0, offsets = 0, last_ox = -1;
    for (uint64_t g = 0; g < 24; g++) {
        int label;
        TU_OK(cld_dataset_get(ds, 0, &aug, 5, g, x, &label));
        ck_assert_int_eq(label, 0);
        TU_OK(cld_dataset_get(ds, 0, &aug, 5, g, y, NULL));
        ck_assert_msg(memcmp(x, y, sizeof x) == 0, "global %d: two reads differ", (int)g);
        int found = 0;
        for (int oy = 0; oy + 8 <= 11 && !found; oy++)
            for (int ox = 0; ox + 8 <= 16 && !found; ox++)
                for (int flip = 0; flip < 2 && !found; flip++) {
                    int ok = 1;
                    for (int c = 0; c < 3 && ok; c++)
                        for (int yy = 0; yy < 8 && ok; yy++)
                            for (int xx = 0; xx < 8 && ok; xx++) {
                                int sx = ox + (flip ? 7 - xx : xx);
                                float want = src.data[((size_t)(oy + yy) * 16 + sx) * 3 + c] * 2.0f - 1.0f;
                                ok = fabsf(x[(c * 8 + yy) * 8 + xx] - want) < 1e-5f;
                            }
                    if (ok) {
                        found = 1;
                        flips += flip;
                        offsets += ox != last_ox;
                        last_ox = ox;
                    }
                }
        ck_assert_msg(found, "global %d: the sample is no 8x8 window of the image", (int)g);
    }
    ck_assert_msg(flips > 3 && flips < 21, "%d flips in 24 draws", flips);
    ck_assert_msg(offsets > 4, "the crop offset changed only %d times in 24 draws", offsets);
    /* another seed: other draws */
    TU_OK(cld_dataset_get(ds, 0, &aug, 5, 3, x, NULL));
    int differ = 0;
    for (uint64_t s = 6; s < 12; s++) {
        TU_OK(cld_dataset_get(ds, 0, &aug, s, 3, y, NULL));
        differ += memcmp(x, y, sizeof x) != 0;
    }
    ck_assert_msg(differ >= 3, "only %d of 6 seeds changed the crop", differ);
    cld_image_free(&src);
    cld_dataset_free(ds);

    /* errors: an image smaller than the crop, an empty class folder, an empty folder */
    TU_STATUS(cld_dataset_open_folder(dir, 3, 10, &ds), CLD_ERR_FORMAT);
    ck_assert_msg(strstr(cld_last_error(), "smaller than the crop of 10 x 10") &&
                      strstr(cld_last_error(), "b.png"),
                  "%s", cld_last_error());
    make_dir(dir, "empty");
    TU_STATUS(cld_dataset_open_folder(dir, 3, 8, &ds), CLD_ERR_FORMAT);
    ck_assert_msg(strstr(cld_last_error(), "class folder") &&
                      strstr(cld_last_error(), "empty' holds no images"),
                  "%s", cld_last_error());
    p = at_path(dir, "empty");
    TU_STATUS(cld_dataset_open_folder(p, 3, 8, &ds), CLD_ERR_FORMAT);
    ck_assert_msg(strstr(cld_last_error(), "holds no images"), "%s", cld_last_error());
    free(p);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* Each epoch visits every sample once, in an order set by (seed, epoch). */
START_TEST(test_epoch_order)
{
    const int n = 37;
    int seen[37], first[37], idx;
    for (int e = 0; e < 3; e++) {
        memset(seen, 0, sizeof seen);
        int same_as_first = 1;
        for (int i = 0; i < n; i++) {
            TU_OK(cld_data_order_index(n, 11, (uint64_t)e * n + i, &idx));
            ck_assert(idx >= 0 && idx < n);
            seen[idx]++;
            if (e == 0)
                first[i] = idx;
            else
                same_as_first &= first[i] == idx;
        }
        for (int i = 0; i < n; i++)
            ck_assert_msg(seen[i] == 1, "epoch %d: sample %d seen %d times", e, i, seen[i]);
        if (e) ck_assert_msg(!same_as_first, "epoch %d has epoch 0's order", e);
    }
    int same = 1, ident = 1;
    for (int i = 0; i < n; i++) {
        TU_OK(cld_data_order_index(n, 12, (uint64_t)i, &idx));
        same &= idx == first[i];
        ident &= first[i] == i;
    }
    ck_assert_msg(!same, "seeds 11 and 12 give one order");
    ck_assert_msg(!ident, "the order is not shuffled");
    TU_STATUS(cld_data_order_index(0, 1, 0, &idx), CLD_ERR_INVALID_ARG);
}
END_TEST

/* The loader thread delivers exactly what direct reads give, from any
 * starting global index (a resumed run) and across epochs. */
START_TEST(test_loader_matches_direct_reads)
{
    char *dir = tu_mkdtemp("cld-train");
    write_idx_set(dir, 10);
    char *img = at_path(dir, "train-images-idx3-ubyte"), *lab = at_path(dir, "train-labels-idx1-ubyte");
    cld_dataset *ds;
    TU_OK(cld_dataset_open_idx(img, lab, &ds));
    const cld_augment aug = {1};
    const int B = 3;
    const uint64_t start = 7; /* mid-epoch */
    cld_loader *ld;
    TU_OK(cld_loader_create(ds, B, &aug, 99, start, &ld));
    float x[3 * 64], want[64];
    int labels[3], wl;
    for (int k = 0; k < 9; k++) { /* 27 samples: three epochs of 10 */
        uint64_t g0 = 0;
        TU_OK(cld_loader_next(ld, x, labels, &g0));
        ck_assert_int_eq((int)g0, (int)(start + (uint64_t)k * B));
        for (int b = 0; b < B; b++) {
            int idx;
            TU_OK(cld_data_order_index(10, 99, g0 + (uint64_t)b, &idx));
            TU_OK(cld_dataset_get(ds, idx, &aug, 99, g0 + (uint64_t)b, want, &wl));
            ck_assert_msg(memcmp(x + b * 64, want, sizeof want) == 0, "batch %d sample %d differs", k, b);
            ck_assert_int_eq(labels[b], wl);
        }
    }
    double wait = -1;
    TU_OK(cld_loader_wait_seconds(ld, &wait));
    ck_assert(wait >= 0);
    TU_OK(cld_loader_free(ld));
    cld_dataset_free(ds);
    free(img);
    free(lab);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* Shards of a global batch of 5 (positions 0-1 and 2-4) deliver exactly
 * the whole batch's samples at those positions, across epochs; a shard
 * outside the batch is refused. */
START_TEST(test_loader_shards)
{
    char *dir = tu_mkdtemp("cld-train");
    write_idx_set(dir, 10);
    char *img = at_path(dir, "train-images-idx3-ubyte"), *lab = at_path(dir, "train-labels-idx1-ubyte");
    cld_dataset *ds;
    TU_OK(cld_dataset_open_idx(img, lab, &ds));
    const cld_augment aug = {1};
    cld_loader *all, *lo, *hi, *bad = NULL;
    TU_OK(cld_loader_create(ds, 5, &aug, 5, 3, &all));
    TU_OK(cld_loader_create_shard(ds, 5, 0, 2, &aug, 5, 3, &lo));
    TU_OK(cld_loader_create_shard(ds, 5, 2, 3, &aug, 5, 3, &hi));
    ck_assert_int_eq(cld_loader_create_shard(ds, 5, 3, 3, &aug, 5, 3, &bad), CLD_ERR_INVALID_ARG);
    ck_assert_int_eq(cld_loader_create_shard(ds, 5, 0, 0, &aug, 5, 3, &bad), CLD_ERR_INVALID_ARG);
    ck_assert(bad == NULL);
    float x[5 * 64], y[3 * 64];
    int lx[5], ly[3];
    for (int k = 0; k < 6; k++) { /* 30 samples: three epochs */
        uint64_t g0, g1, g2;
        TU_OK(cld_loader_next(all, x, lx, &g0));
        TU_OK(cld_loader_next(lo, y, ly, &g1));
        ck_assert_int_eq((int)g1, (int)g0);
        ck_assert(memcmp(x, y, 2 * 64 * sizeof(float)) == 0 && memcmp(lx, ly, 2 * sizeof(int)) == 0);
        TU_OK(cld_loader_next(hi, y, ly, &g2));
        ck_assert_int_eq((int)g2, (int)g0 + 2);
        ck_assert(memcmp(x + 2 * 64, y, 3 * 64 * sizeof(float)) == 0 &&
                  memcmp(lx + 2, ly, 3 * sizeof(int)) == 0);
    }
    TU_OK(cld_loader_free(all));
    TU_OK(cld_loader_free(lo));
    TU_OK(cld_loader_free(hi));
    cld_dataset_free(ds);
    free(img);
    free(lab);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------------- the app */

static int count_states(const char *dir)
{
    int n = 0;
    for (int s = 0; s <= 64; s++) {
        char name[64];
        snprintf(name, sizeof name, "%s/state-%09d.safetensors", dir, s);
        n += at_exists(name);
    }
    return n;
}

static void same_run_files(const char *a, const char *b, int step)
{
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/state-%09d.safetensors", a, step);
    snprintf(pb, sizeof pb, "%s/state-%09d.safetensors", b, step);
    at_files_equal(pa, pb);
    snprintf(pa, sizeof pa, "%s/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/model.safetensors", b);
    at_files_equal(pa, pb);
}

/* 10 steps in one go == 6 steps (stop) + resume to 10, byte for byte, with
 * flips, class dropout and an epoch boundary (10 steps x 4 > 24 samples). */
START_TEST(test_app_resume_exact)
{
    char *dir = tu_mkdtemp("cld-train");
    write_idx_set(dir, 24);
    char *err = NULL;
    const char *run =
        "--data train-images-idx3-ubyte " TINY " --hflip --steps 10 --ckpt-every 4 --keep 2 --seed 3";
    char args[2048];
    snprintf(args, sizeof args, "%s --out a", run);
    ck_assert_msg(train(dir, args, &err) == 0, "%s", err);
    ck_assert_msg(strstr(err, "10 steps (10 this run)") && strstr(err, "validation loss"), "%s", err);
    free(err);
    snprintf(args, sizeof args, "%s --out b --stop-after 6", run);
    ck_assert_msg(train(dir, args, &err) == 0, "%s", err);
    free(err);
    char *b6 = at_path(dir, "b/state-000000006.safetensors");
    ck_assert_msg(at_exists(b6), "--stop-after 6 wrote no state at step 6");
    ck_assert_msg(train(dir, "--data train-images-idx3-ubyte --out b --resume --progress none", &err) == 0,
                  "%s", err);
    ck_assert_msg(strstr(err, "resumed from") && strstr(err, "10 steps (4 this run)"), "%s", err);
    free(err);
    char *a = at_path(dir, "a"), *b = at_path(dir, "b");
    same_run_files(a, b, 10);
    /* --keep 2: states 8 and 10 remain */
    ck_assert_int_eq(count_states(a), 2);
    /* the log continues: one header, rows up to step 10 */
    char *csv = at_path(b, "log.csv");
    size_t len;
    char *text = (char *)at_read_file(csv, &len);
    ck_assert_msg(text && !strncmp(text, "step,loss,val_loss", 18) && strstr(text, "\n10,") &&
                      !strstr(text + 1, "step,loss"),
                  "%s", text);
    free(text);
    /* a different seed gives different weights (the comparison can fail) */
    snprintf(args, sizeof args,
             "--data train-images-idx3-ubyte " TINY " --hflip --steps 10 --ckpt-every 4 --seed 4 "
             "--out c");
    ck_assert_int_eq(train(dir, args, NULL), 0);
    char *ma = at_path(a, "model.safetensors"), *mc = at_path(dir, "c/model.safetensors");
    size_t la, lc;
    unsigned char *x = at_read_file(ma, &la), *y = at_read_file(mc, &lc);
    ck_assert(x && y && (la != lc || memcmp(x, y, la) != 0));
    free(x);
    free(y);
    free(ma);
    free(mc);
    free(csv);
    free(a);
    free(b);
    free(b6);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* Every bad input: its message, a nonzero exit, nothing written, and no
 * device work started (no "device:" line). */
START_TEST(test_app_errors)
{
    char *dir = tu_mkdtemp("cld-train");
    write_idx_set(dir, 12);
    char *p;
    size_t len;
    /* broken copies of the training images */
    make_dir(dir, "cut");
    make_dir(dir, "gz");
    make_dir(dir, "badgz");
    make_dir(dir, "few");
    char *img = at_path(dir, "train-images-idx3-ubyte");
    uint8_t *bytes = at_read_file(img, &len);
    at_write_file(p = at_path(dir, "cut/train-images-idx3-ubyte"), bytes, len - 5), free(p);
    free(bytes);
    free(write_idx(p = at_path(dir, "gz/train-images-idx3-ubyte.gz"), 3, 12, 8, 0, 1, 1)), free(p);
    p = at_path(dir, "gz/train-images-idx3-ubyte.gz");
    bytes = at_read_file(p, &len);
    free(p);
    bytes[len / 2] ^= 0x5A;
    bytes[len / 2 + 1] ^= 0xA5;
    at_write_file(p = at_path(dir, "badgz/train-images-idx3-ubyte.gz"), bytes, len), free(p);
    free(bytes);
    free(write_idx(p = at_path(dir, "few/train-images-idx3-ubyte"), 3, 12, 8, 0, 1, 0)), free(p);
    free(write_idx(p = at_path(dir, "few/train-labels-idx1-ubyte"), 1, 11, 0, 3, 2, 0)), free(p);
    free(write_idx(p = at_path(dir, "big-images-idx3-ubyte"), 3, 4, 16, 0, 5, 0)), free(p);
    at_write_file(p = at_path(dir, "text"), "not an idx file\n", 16), free(p);
    at_write_file(p = at_path(dir, "afile"), "x", 1), free(p);
    make_dir(dir, "empty");
    make_dir(dir, "photos");
    make_dir(dir, "photos/cats");
    write_png(p = at_path(dir, "photos/cats/a.png"), 20, 20, 3, 1), free(p);
    write_png(p = at_path(dir, "photos/cats/b.png"), 12, 20, 3, 2), free(p);
    /* a finished run to resume against */
    char *err = NULL;
    ck_assert_msg(train(dir, "--data train-images-idx3-ubyte " TINY " --steps 2 --out run", &err) == 0, "%s",
                  err);
    free(err);
    const app_case cases[] = {
        /* flags */
        {"--bogus --out o", 2, "unknown option '--bogus'"},
        {"--data train-images-idx3-ubyte", 2, "--out DIR is required"},
        {"--out o", 2, "--data PATH is required"},
        {"--data train-images-idx3-ubyte --out o --lr fast", 2, "--lr: 'fast' is not a number"},
        {"--data train-images-idx3-ubyte --out o --batch 0", 2, "--batch: '0' is not a number in [1, 65536]"},
        {"--data train-images-idx3-ubyte --out o --mult 1,x", 2, "--mult: '1,x' is not a list"},
        {"--data train-images-idx3-ubyte --out o --pred score", 2, "score"},
        {"--data train-images-idx3-ubyte --out o --schedule cubic", 2, "cubic"},
        {"--data train-images-idx3-ubyte --out o --progress loud", 2, "--progress: bar, json or none"},
        {"--data train-images-idx3-ubyte --out o --channels 2", 2, "--channels: 1 or 3"},
        {"--data train-images-idx3-ubyte --out o --steps", 2, "needs a value"},
        {"--data train-images-idx3-ubyte --out o --class-names a,b", 2,
         "--class-names gives 2 names, the data has 3"},
        /* data */
        {"--data missing-images-idx3-ubyte --out o", 1, "cannot open IDX file 'missing-images-idx3-ubyte'"},
        {"--data cut/train-images-idx3-ubyte --out o", 1, "truncated file"},
        {"--data badgz/train-images-idx3-ubyte.gz --out o", 1, "corrupt"},
        {"--data text --out o", 1, "is not an IDX file"},
        {"--data few/train-images-idx3-ubyte --out o", 1, "hold 11 labels but images"},
        {"--data train-images-idx3-ubyte --labels few/train-labels-idx1-ubyte --out o", 1,
         "hold 11 labels but images"},
        {"--data train-images-idx3-ubyte --val-data big-images-idx3-ubyte --out o", 1,
         "--val-data: samples are 1x16x16"},
        {"--data empty --out o", 1, "folder 'empty' holds no images"},
        {"--data photos --crop 16 --out o", 1, "smaller than the crop of 16 x 16"},
        {"--data train-images-idx3-ubyte --config missing.json --out o", 1, "cannot open 'missing.json'"},
        {"--data train-images-idx3-ubyte --base 8 --groups 3 --out o", 1, "model config"},
        {"--data train-images-idx3-ubyte " TINY " --t-max 100 --out o", 2,
         "--t-max 100: the timesteps are 0 .. 99"},
        /* output */
        {"--data train-images-idx3-ubyte " TINY " --out afile/sub", 1, "--out: cannot create 'afile/sub'"},
        {"--data train-images-idx3-ubyte " TINY " --out afile", 1, "--out: cannot write into 'afile'"},
        /* resume */
        {"--data train-images-idx3-ubyte --out nothing --resume", 1, "no output folder 'nothing'"},
        {"--data train-images-idx3-ubyte --out empty --resume", 1, "no state-*.safetensors in 'empty'"},
        {"--data train-images-idx3-ubyte --out run --resume --lr 0.1", 1,
         "--lr does not match the training settings"},
        {"--data train-images-idx3-ubyte --out run --resume --seed 7", 1, "--seed does not match"},
        {"--data train-images-idx3-ubyte --out run --resume --t-max 5", 1,
         "--t-max does not match the training settings"},
        {"--data train-images-idx3-ubyte --out run --resume --noisy-8bit", 1,
         "--noisy-8bit does not match the training settings"},
        {"--data train-images-idx3-ubyte --out run --resume --pred eps", 1,
         "--pred does not match the diffusion"},
        {"--data train-images-idx3-ubyte --out run --resume --base 16", 1,
         "the model config from --base does not match"},
        {"--data big-images-idx3-ubyte --out run --resume", 1, "does not fit the model of 'run/state-"},
        {"--data photos --crop 8 --channels 3 --out run --resume", 1, "does not fit the model of"},
        /* init */
        {"--data train-images-idx3-ubyte --out o --init run/model.safetensors --resume", 2,
         "--init starts a new run, --resume continues one"},
        {"--data train-images-idx3-ubyte --out o --init", 2, "needs a value"},
        {"--data train-images-idx3-ubyte --out o --init missing.safetensors", 1, "missing.safetensors"},
        {"--data train-images-idx3-ubyte --out o --init text", 1, "--init"},
        {"--data train-images-idx3-ubyte --out o --init run/model.safetensors --pred eps", 1,
         "--pred does not match the diffusion settings of 'run/model.safetensors'"},
        {"--data train-images-idx3-ubyte --out o --init run/model.safetensors --base 16", 1,
         "the model config from --base does not match the model of 'run/model.safetensors'"},
        {"--data big-images-idx3-ubyte --out o --init run/model.safetensors", 1,
         "does not fit the model of 'run/model.safetensors'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_int_eq(train(dir, cases[i].args, &err), cases[i].status);
        ck_assert_msg(strstr(err, cases[i].message), "'%s': stderr lacks '%s': %s", cases[i].args,
                      cases[i].message, err);
        ck_assert_msg(!strstr(err, "device:") && !strstr(err, "training graph"),
                      "'%s' started the device: %s", cases[i].args, err);
        free(err);
        char *o = at_path(dir, "o");
        ck_assert_msg(!at_exists(o), "'%s' created the output folder", cases[i].args);
        free(o);
    }
    /* the resumed-against run is untouched */
    p = at_path(dir, "run");
    ck_assert_int_eq(count_states(p), 1);
    free(p);
    char *so = NULL;
    ck_assert_int_eq(at_run(at_app("cld-train", "CLD_TRAIN"), dir, "--help", &so, NULL), 0);
    ck_assert(strstr(so, "--resume") && strstr(so, "--hflip"));
    free(so);
    free(img);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* A weight of 1e30 makes the loss overflow: training stops at the next step
 * naming it and the tensor, and the last good checkpoint stays as it was. */
START_TEST(test_app_nan_stops)
{
    char *dir = tu_mkdtemp("cld-train");
    write_idx_set(dir, 12);
    char *err = NULL;
    ck_assert_msg(train(dir, "--data train-images-idx3-ubyte " TINY " --steps 2 --out run", &err) == 0, "%s",
                  err);
    free(err);
    /* rewrite the state with conv_out.weight = 1e30 (the tiny model's layout) */
    char *state = at_path(dir, "run/state-000000002.safetensors"), *meta = NULL;
    TU_OK(cld_safetensors_metadata(state, &meta));
    cld_model_meta mm;
    TU_OK(cld_model_meta_from_json(meta, &mm));
    cld_ctx *ctx = tu_ctx();
    cld_params *p, *ema;
    cld_unet_runner *r;
    TU_OK(cld_params_create(ctx, &p));
    TU_OK(cld_unet_runner_create(ctx, p, &mm.unet, 1, &r));
    TU_OK(cld_params_clone(p, &ema));
    TU_OK(cld_params_alloc(ema));
    TU_OK(cld_params_load_state(p, ema, state, NULL));
    int idx, nd, shape[CLD_MAX_DIMS];
    TU_OK(cld_params_find(p, "conv_out.weight", &idx));
    TU_OK(cld_params_info(p, idx, NULL, &nd, shape, NULL));
    size_t n = 1;
    for (int d = 0; d < nd; d++) n *= (size_t)shape[d];
    float *v = tu_malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = 1e30f;
    TU_OK(cld_params_write(p, idx, v));
    TU_OK(cld_params_save_state(p, ema, state, meta));
    free(v);
    cld_unet_runner_free(r);
    cld_params_free(p);
    cld_params_free(ema);
    size_t before_len;
    unsigned char *before = at_read_file(state, &before_len);
    ck_assert_int_eq(
        train(dir, "--data train-images-idx3-ubyte --out run --resume --steps 6 --ckpt-every 1", &err), 1);
    ck_assert_msg(strstr(err, "step 3: the loss is inf") || strstr(err, "step 3: the loss is nan") ||
                      strstr(err, "step 3: the gradient of"),
                  "%s", err);
    ck_assert_msg(strstr(err, "'conv_out.weight'") || strstr(err, "first non-finite"), "no tensor named: %s",
                  err);
    ck_assert_msg(strstr(err, "the last checkpoint is kept"), "%s", err);
    free(err);
    char *run = at_path(dir, "run");
    ck_assert_int_eq(count_states(run), 1);
    size_t after_len;
    unsigned char *after = at_read_file(state, &after_len);
    ck_assert(after && after_len == before_len && memcmp(before, after, after_len) == 0);
    free(before);
    free(after);
    free(run);
    free(meta);
    free(state);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* SIGTERM mid-run: exit 130 with a checkpoint at the step reached, and a
 * resume from it ends with the uninterrupted run's bytes. */
START_TEST(test_app_sigterm_checkpoint)
{
    char *dir = tu_mkdtemp("cld-train");
    write_idx_set(dir, 24);
    const char *run =
        "--data train-images-idx3-ubyte " TINY " --steps 300 --ckpt-every 1000 --val-every 0 --log-every 1";
    char args[2048];
    snprintf(args, sizeof args, "%s --out b", run);
    pid_t pid = at_spawn(at_app("cld-train", "CLD_TRAIN"), dir, args);
    char *csv = at_path(dir, "b/log.csv");
    int rows = 0;
    for (int tries = 0; tries < 1200 && rows < 4; tries++) { /* up to 120 s for 3 steps */
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        size_t len = 0;
        char *t = (char *)at_read_file(csv, &len);
        rows = 0;
        for (size_t i = 0; t && i < len; i++) rows += t[i] == '\n';
        free(t);
    }
    ck_assert_msg(rows >= 4, "no training steps logged");
    ck_assert(kill(pid, SIGTERM) == 0);
    int st = at_wait(pid);
    char *e = at_path(dir, "bg-stderr");
    size_t len;
    char *err = (char *)at_read_file(e, &len);
    ck_assert_msg(st == 130, "exit %d: %s", st, err);
    char *at = strstr(err, "terminated: writing a checkpoint at step ");
    ck_assert_msg(at, "%s", err);
    long step = strtol(at + strlen("terminated: writing a checkpoint at step "), NULL, 10);
    ck_assert_msg(step >= 3 && step < 300, "step %ld", step);
    free(err);
    char name[64];
    snprintf(name, sizeof name, "b/state-%09ld.safetensors", step);
    char *sp = at_path(dir, name);
    ck_assert_msg(at_exists(sp), "no %s", sp);
    /* resume for 3 more steps; the uninterrupted run to the same step */
    ck_assert_int_eq(train(dir, "--data train-images-idx3-ubyte --out b --resume --stop-after 3", NULL), 0);
    snprintf(args, sizeof args, "%s --out a --stop-after %ld", run, step + 3);
    ck_assert_int_eq(train(dir, args, NULL), 0);
    char *a = at_path(dir, "a"), *b = at_path(dir, "b");
    same_run_files(a, b, (int)step + 3);
    free(a);
    free(b);
    free(sp);
    free(e);
    free(csv);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* A state file's weights and EMA, on the test's context. */
typedef struct state {
    cld_params *p, *ema;
    cld_unet_runner *r;
    char *meta;
    cld_model_meta mm;
} state;

static void state_load(state *st, const char *path)
{
    cld_ctx *ctx = tu_ctx();
    TU_OK(cld_safetensors_metadata(path, &st->meta));
    TU_OK(cld_model_meta_from_json(st->meta, &st->mm));
    TU_OK(cld_params_create(ctx, &st->p));
    TU_OK(cld_unet_runner_create(ctx, st->p, &st->mm.unet, 1, &st->r));
    TU_OK(cld_params_clone(st->p, &st->ema));
    TU_OK(cld_params_alloc(st->ema));
    TU_OK(cld_params_load_state(st->p, st->ema, path, NULL));
}

static void state_free(state *st)
{
    cld_unet_runner_free(st->r);
    cld_params_free(st->p);
    cld_params_free(st->ema);
    free(st->meta);
}

/* conv_out.weight (out, in, 3, 3) of a state: tu_malloc'd, *per = floats per output channel. */
static float *conv_out_weight(state *st, size_t *per)
{
    int idx, nd, shape[CLD_MAX_DIMS];
    TU_OK(cld_params_find(st->p, "conv_out.weight", &idx));
    TU_OK(cld_params_info(st->p, idx, NULL, &nd, shape, NULL));
    ck_assert_int_eq(nd, 4);
    *per = (size_t)shape[1] * shape[2] * shape[3];
    float *w = tu_malloc((size_t)shape[0] * *per * sizeof *w);
    TU_OK(cld_params_read(st->p, idx, w));
    return w;
}

static double max_abs(const float *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

/* --init: a new run starts from a model's weights (raw and EMA), with a fresh
 * optimiser. With --lr 0 AdamW moves nothing, so two steps later both copies
 * still hold the model's weights (a random start would not). */
START_TEST(test_app_init)
{
    char *dir = tu_mkdtemp("cld-train");
    write_idx_set(dir, 12);
    char *err = NULL;
    ck_assert_msg(train(dir, "--data train-images-idx3-ubyte " TINY " --steps 4 --seed 3 --out a", &err) == 0,
                  "%s", err);
    free(err);
    ck_assert_msg(train(dir,
                        "--data train-images-idx3-ubyte --init a/model.safetensors --lr 0 --steps 2 "
                        "--batch 4 --val-n 8 --grid-every 0 --progress none --seed 9 --out b",
                        &err) == 0,
                  "%s", err);
    ck_assert_msg(strstr(err, "initialised from a/model.safetensors"), "%s", err);
    free(err);
    state a, b;
    char *pa = at_path(dir, "a/state-000000004.safetensors"),
         *pb = at_path(dir, "b/state-000000002.safetensors");
    state_load(&a, pa);
    state_load(&b, pb);
    /* the model's settings came with it: T = 100 and the tiny config */
    ck_assert_int_eq(b.mm.diffusion.T, 100);
    ck_assert_int_eq(b.mm.unet.base_channels, 8);
    int idx, nd, shape[CLD_MAX_DIMS];
    TU_OK(cld_params_find(a.ema, "conv_out.weight", &idx));
    TU_OK(cld_params_info(a.ema, idx, NULL, &nd, shape, NULL));
    const size_t n = (size_t)shape[0] * shape[1] * shape[2] * shape[3];
    float *want = tu_malloc(n * sizeof *want), *raw = tu_malloc(n * sizeof *raw),
          *ema = tu_malloc(n * sizeof *ema);
    TU_OK(cld_params_read(a.ema, idx, want));
    TU_OK(cld_params_read(b.p, idx, raw));
    TU_OK(cld_params_read(b.ema, idx, ema));
    double m = max_abs(want, n);
    ck_assert(m > 0);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(raw[i] == want[i], "raw weight %zu: %g, the model's %g", i, raw[i], want[i]);
        ck_assert_msg(fabs(ema[i] - want[i]) <= 1e-6 * m, "EMA weight %zu: %g, the model's %g", i, ema[i],
                      want[i]);
    }
    free(want);
    free(raw);
    free(ema);
    state_free(&a);
    state_free(&b);
    free(pa);
    free(pb);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* --init of a local model (no normalisation, no attention) may change the crop size: no weight
 * depends on it, and the new run's model records the new size. A model with attention may not
 * (the big-images case of test_app_errors). */
START_TEST(test_app_init_local_crop)
{
    char *dir = tu_mkdtemp("cld-train"), *p;
    make_dir(dir, "photos");
    make_dir(dir, "photos/all");
    write_png(p = at_path(dir, "photos/all/a.png"), 20, 20, 3, 1), free(p);
    write_png(p = at_path(dir, "photos/all/b.png"), 18, 24, 3, 2), free(p);
    char *err = NULL;
    ck_assert_msg(train(dir,
                        "--data photos --crop 8 --local --base 8 --mult 1,2 --res-blocks 1 --T 100 "
                        "--batch 2 --warmup 1 --steps 2 --val-every 0 --grid-every 0 --progress none --out a",
                        &err) == 0,
                  "%s", err);
    free(err);
    ck_assert_msg(train(dir,
                        "--data photos --crop 16 --init a/model.safetensors --steps 2 --batch 2 "
                        "--val-every 0 --grid-every 0 --progress none --out b",
                        &err) == 0,
                  "%s", err);
    ck_assert_msg(strstr(err, "trained at 8 x 8, continuing at 16 x 16"), "%s", err);
    free(err);
    /* the exact resume of that run keeps its size */
    ck_assert_int_eq(train(dir, "--data photos --crop 8 --out b --resume --steps 3", &err), 1);
    ck_assert_msg(strstr(err, "does not fit the model of"), "%s", err);
    free(err);
    state b;
    char *pb = at_path(dir, "b/state-000000002.safetensors");
    state_load(&b, pb);
    ck_assert_int_eq(b.mm.unet.image_size, 16);
    ck_assert_int_eq(b.mm.unet.base_channels, 8);
    state_free(&b);
    free(pb);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* The validation loss column of the last row of DIR/log.csv that has one. */
static double last_val_loss(const char *dir, const char *run)
{
    char *csv = at_path(dir, run);
    size_t len;
    char *text = (char *)at_read_file(csv, &len);
    ck_assert_msg(text != NULL, "no %s", csv);
    double v = NAN;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        double step, loss, val;
        if (sscanf(line, "%lf,%lf,%lf", &step, &loss, &val) == 3) v = val;
    }
    free(text);
    free(csv);
    return v;
}

/* --noisy-8bit: stored with the run, kept by --resume, refused by the resume
 * of a run without it, and it changes what the model is trained and validated on. */
START_TEST(test_app_noisy_8bit)
{
    char *dir = tu_mkdtemp("cld-train"), *p;
    make_dir(dir, "photos");
    make_dir(dir, "photos/all");
    write_png(p = at_path(dir, "photos/all/a.png"), 20, 20, 3, 1), free(p);
    write_png(p = at_path(dir, "photos/all/b.png"), 18, 24, 3, 2), free(p);
    const char *run = "--data photos --val-data photos --crop 8 --local --base 8 --mult 1,2 --res-blocks 1 "
                      "--T 100 --t-max 60 --batch 2 --warmup 1 --steps 2 --val-every 2 --val-n 2 "
                      "--grid-every 0 --progress none --seed 5";
    char args[1024], *err = NULL;
    snprintf(args, sizeof args, "%s --noisy-8bit --out q", run);
    ck_assert_msg(train(dir, args, &err) == 0, "%s", err);
    free(err);
    snprintf(args, sizeof args, "%s --out g", run);
    ck_assert_msg(train(dir, args, &err) == 0, "%s", err);
    free(err);
    double vq = last_val_loss(dir, "q/log.csv"), vg = last_val_loss(dir, "g/log.csv");
    ck_assert_msg(isfinite(vq) && isfinite(vg) && vq != vg, "validation loss 8-bit %g, plain %g", vq, vg);
    char *meta = NULL, *st = at_path(dir, "q/state-000000002.safetensors");
    TU_OK(cld_safetensors_metadata(st, &meta));
    ck_assert_msg(strstr(meta, "noisy_levels") != NULL, "%s", meta);
    free(meta);
    free(st);
    /* a resume takes it from the state, whether the flag is repeated or not */
    ck_assert_msg(train(dir,
                        "--data photos --val-data photos --out q --resume --steps 3 --t-max 60 --noisy-8bit",
                        &err) == 0,
                  "%s", err);
    free(err);
    ck_assert_msg(train(dir, "--data photos --val-data photos --out q --resume --steps 4", &err) == 0, "%s",
                  err);
    free(err);
    st = at_path(dir, "q/state-000000004.safetensors");
    TU_OK(cld_safetensors_metadata(st, &meta));
    ck_assert_msg(strstr(meta, "noisy_levels") != NULL, "%s", meta);
    free(meta);
    free(st);
    /* the plain run refuses a resume that adds it */
    ck_assert_int_eq(
        train(dir, "--data photos --val-data photos --out g --resume --steps 3 --noisy-8bit", &err), 1);
    ck_assert_msg(strstr(err, "--noisy-8bit does not match the training settings"), "%s", err);
    free(err);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

/* --learn-sigma: 2C output channels and "learned_range" in the model; the
 * hybrid loss trains the variance half only through L_vlb (lambda 0 leaves
 * it at its zero init); resume is exact; --eval-nll gives a finite bound;
 * cld-sample samples the model with DDPM (its variance) and DPM-Solver++. */
START_TEST(test_app_learned_sigma)
{
    char *dir = tu_mkdtemp("cld-train");
    write_idx_set(dir, 24);
    char *err = NULL, args[2048];
    const char *run =
        "--data train-images-idx3-ubyte " TINY " --learn-sigma --steps 6 --ckpt-every 3 --seed 5";
    snprintf(args, sizeof args, "%s --out a --grid-every 6", run);
    ck_assert_msg(train(dir, args, &err) == 0, "%s", err);
    free(err);
    snprintf(args, sizeof args, "%s --out b --stop-after 4", run);
    ck_assert_int_eq(train(dir, args, NULL), 0);
    ck_assert_msg(
        train(dir, "--data train-images-idx3-ubyte --out b --resume --eval-nll 5 --nll-stride 10", &err) == 0,
        "%s", err);
    char *a = at_path(dir, "a"), *b = at_path(dir, "b");
    same_run_files(a, b, 6);
    char *at = strstr(err, "variational bound ");
    ck_assert_msg(at, "%s", err);
    double bpd = strtod(at + strlen("variational bound "), NULL);
    ck_assert_msg(isfinite(bpd) && bpd > 0 && bpd < 100, "bound %g bits/dim: %s", bpd, err);
    ck_assert_msg(strstr(err, "5 test images, t stride 10"), "%s", err);
    free(err);
    char *csv = at_path(b, "nll.csv");
    size_t len;
    char *text = (char *)at_read_file(csv, &len);
    ck_assert_msg(text && strstr(text, "step,images,t_stride,bpd,standard_error\n6,5,10,"), "%s", text);
    free(text);
    free(csv);
    char *grid = at_path(a, "grid-000000006.png");
    int w, h, c;
    TU_OK(cld_image_info(grid, &w, &h, &c));
    ck_assert_msg(w == 3 * 10 + 2 && h == 4 * 10 + 2 && c == 1, "grid %d x %d x %d", w, h, c);
    free(grid);

    /* the model file */
    char *model = at_path(a, "model.safetensors"), *meta = NULL;
    TU_OK(cld_safetensors_metadata(model, &meta));
    ck_assert_msg(strstr(meta, "learned_range"), "%s", meta);
    cld_model_meta mm;
    TU_OK(cld_model_meta_from_json(meta, &mm));
    ck_assert(mm.diffusion.learned_variance && mm.unet.out_channels == 2 && mm.unet.in_channels == 1);
    free(meta);

    /* the variance half learns from L_vlb alone */
    for (int lambda0 = 0; lambda0 < 2; lambda0++) {
        snprintf(args, sizeof args,
                 "--data train-images-idx3-ubyte " TINY " --learn-sigma --steps 3 --out l%d%s", lambda0,
                 lambda0 ? " --vlb-weight 0" : "");
        ck_assert_int_eq(train(dir, args, NULL), 0);
        char name[64];
        snprintf(name, sizeof name, "l%d/state-000000003.safetensors", lambda0);
        char *sp = at_path(dir, name);
        state st;
        state_load(&st, sp);
        size_t per;
        float *wt = conv_out_weight(&st, &per);
        const double mean_half = max_abs(wt, per), var_half = max_abs(wt + per, per);
        ck_assert_msg(mean_half > 0, "lambda %s: the prediction half did not train", lambda0 ? "0" : "0.001");
        if (lambda0)
            ck_assert_msg(var_half == 0, "lambda 0: the variance half moved (%g)", var_half);
        else
            ck_assert_msg(var_half > 0, "lambda 0.001: the variance half did not train");
        free(wt);
        state_free(&st);
        free(sp);
    }

    /* cld-sample: DDPM with the learned variance, and a sampler on the prediction half */
    const char *sample = at_app("cld-sample", "CLD_SAMPLE");
    ck_assert_msg(at_run(sample, dir,
                         "--model a/model.safetensors --sampler ddpm --steps 5 --n 3 --out d.png", NULL,
                         &err) == 0,
                  "%s", err);
    free(err);
    ck_assert_msg(
        at_run(sample, dir, "--model a/model.safetensors --steps 5 --n 3 --out e.png", NULL, &err) == 0, "%s",
        err);
    free(err);
    char *d = at_path(dir, "d.png"), *e = at_path(dir, "e.png");
    TU_OK(cld_image_info(d, &w, &h, &c));
    TU_OK(cld_image_info(e, &w, &h, &c));

    /* --eval-nll needs a learned variance, and held-back data */
    ck_assert_int_eq(train(dir, "--data train-images-idx3-ubyte " TINY " --steps 1 --eval-nll --out f", &err),
                     2);
    ck_assert_msg(strstr(err, "--eval-nll needs a model with a learned variance"), "%s", err);
    free(err);
    ck_assert_int_eq(
        train(dir, "--data t10k-images-idx3-ubyte " TINY " --learn-sigma --steps 1 --eval-nll 3 --out f",
              &err),
        2);
    ck_assert_msg(strstr(err, "--eval-nll needs held-back data"), "%s", err);
    free(err);
    /* resuming a learned-variance state without it, or a fixed one with it, is a conflict */
    ck_assert_int_eq(train(dir, "--data train-images-idx3-ubyte --out run0 " TINY " --steps 1", NULL), 0);
    ck_assert_int_eq(train(dir, "--data train-images-idx3-ubyte --out run0 --resume --learn-sigma", &err), 1);
    ck_assert_msg(strstr(err, "model config from --learn-sigma does not match"), "%s", err);
    free(err);
    ck_assert_int_eq(train(dir, "--data train-images-idx3-ubyte --out a --resume --vlb-weight 0.01", &err),
                     1);
    ck_assert_msg(strstr(err, "--vlb-weight does not match"), "%s", err);
    free(err);
    free(d);
    free(e);
    free(model);
    free(a);
    free(b);
    tu_rm_rf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train");
    TCase *data = tcase_create("data");
    tcase_add_test(data, test_idx_raw_and_gz);
    tcase_add_test(data, test_idx_errors);
    tcase_add_test(data, test_folder_classes_crops_flips);
    tcase_add_test(data, test_epoch_order);
    tcase_add_test(data, test_loader_matches_direct_reads);
    tcase_add_test(data, test_loader_shards);
    suite_add_tcase(s, data);
    TCase *tapp = tcase_create("app");
    tcase_set_timeout(tapp, 300);
    tcase_add_test(tapp, test_app_resume_exact);
    tcase_add_test(tapp, test_app_errors);
    tcase_add_test(tapp, test_app_nan_stops);
    tcase_add_test(tapp, test_app_sigterm_checkpoint);
    tcase_add_test(tapp, test_app_learned_sigma);
    tcase_add_test(tapp, test_app_init);
    tcase_add_test(tapp, test_app_init_local_crop);
    tcase_add_test(tapp, test_app_noisy_8bit);
    suite_add_tcase(s, tapp);
    return tu_run_suite(s);
}
