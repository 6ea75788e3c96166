/* Datasets for training: IDX files (MNIST / Fashion-MNIST, gzipped or not)
 * and folders of images (class = subfolder), a data order that is a pure
 * function of (seed, global sample index), and a loader thread that
 * prepares the next batches while the device works.
 *
 * Pixels come out as floats in [-1, 1], (C, H, W) per sample.
 * Order: global index g is sample perm_e[g mod n] of epoch e = g / n, where
 * perm_e is a Fisher-Yates shuffle driven by splitmix64(seed, e). A resumed
 * run at global index g computes perm_e directly: no replay from the start.
 * Augmentation (flips, crop offsets) is drawn from a hash of (seed, g), so it
 * too does not depend on where a run was interrupted. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

typedef struct folder_item {
    char *path;
    int label;
    int w, h;
    unsigned char *pixels; /* decoded on first use (HWC u8), kept */
} folder_item;

struct cld_dataset {
    cld_dataset_info info;
    unsigned char *u8;  /* IDX: n * H * W */
    int *labels;        /* n, or NULL */
    folder_item *items; /* folder datasets */
    char **class_names;
    pthread_mutex_t lock; /* decoding cache of folder datasets */
};

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* ------------------------------------------------------------------ IDX */

static cld_status gz_read_all(gzFile f, void *dst, size_t n, const char *path, const char *what)
{
    unsigned char *p = dst;
    while (n) {
        unsigned chunk = n > (1u << 30) ? (1u << 30) : (unsigned)n;
        int got = gzread(f, p, chunk);
        if (got <= 0) {
            int zerr = 0;
            const char *msg = gzerror(f, &zerr);
            if (got < 0 || zerr < 0)
                return cld__fail(CLD_ERR_FORMAT, "IDX file '%s': corrupt data while reading %s (%s)", path,
                                 what, msg);
            return cld__fail(CLD_ERR_FORMAT, "IDX file '%s': ends early while reading %s (truncated file?)",
                             path, what);
        }
        p += got;
        n -= (size_t)got;
    }
    return CLD_OK;
}

/* Header: magic 0 0 0x08 ndim, then ndim big-endian u32 dims. *most is the
 * most payload bytes the file can hold: its size less the header when raw,
 * deflate's best ratio (1032:1) times its size when gzipped. A header that
 * declares more is refused before anything is allocated for it. */
static cld_status idx_open(const char *path, int want_ndim, gzFile *out, uint32_t dims[3], uint64_t *most)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return cld__fail(CLD_ERR_IO, "cannot open IDX file '%s': %s", path, strerror(errno));
    gzFile f = gzopen(path, "rb");
    if (!f) return cld__fail(CLD_ERR_IO, "cannot open IDX file '%s': %s", path, strerror(errno));
    unsigned char m[4];
    cld_status s = gz_read_all(f, m, 4, path, "the header");
    if (s == CLD_OK && (m[0] || m[1] || m[2] != 0x08))
        s = cld__fail(CLD_ERR_FORMAT, "'%s' is not an IDX file of unsigned bytes (magic %02x %02x %02x %02x)",
                      path, m[0], m[1], m[2], m[3]);
    if (s == CLD_OK && m[3] != want_ndim)
        s = cld__fail(CLD_ERR_FORMAT, "IDX file '%s' has %d dimensions, %d expected (%s)", path, m[3],
                      want_ndim, want_ndim == 3 ? "images" : "labels");
    for (int i = 0; i < want_ndim && s == CLD_OK; i++) {
        unsigned char d[4];
        s = gz_read_all(f, d, 4, path, "the header");
        dims[i] = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
    }
    if (s != CLD_OK) {
        gzclose(f);
        return s;
    }
    const uint64_t size = (uint64_t)st.st_size, hdr = 4 + 4 * (uint64_t)want_ndim;
    *most = gzdirect(f) ? (size > hdr ? size - hdr : 0) : size * 1032;
    *out = f;
    return CLD_OK;
}

static cld_status ds_alloc(cld_dataset **out)
{
    cld_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return cld__fail(CLD_ERR_NOMEM, "dataset: out of host memory");
    pthread_mutex_init(&ds->lock, NULL);
    *out = ds;
    return CLD_OK;
}

cld_status cld_dataset_open_idx(const char *images, const char *labels, cld_dataset **out)
{
    if (!images || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_dataset_open_idx: NULL argument");
    *out = NULL;
    gzFile f = NULL;
    uint32_t d[3];
    uint64_t most = 0;
    CLD_TRY(idx_open(images, 3, &f, d, &most));
    cld_dataset *ds = NULL;
    cld_status s = CLD_OK;
    if (!d[0] || !d[1] || !d[2] || d[1] > 4096 || d[2] > 4096 || d[0] > (1u << 28))
        s = cld__fail(CLD_ERR_FORMAT, "IDX file '%s': %u images of %u x %u is not a usable size", images,
                      d[0], d[1], d[2]);
    const size_t n = (size_t)d[0] * d[1] * d[2];
    if (s == CLD_OK && n > most)
        s = cld__fail(CLD_ERR_FORMAT,
                      "IDX file '%s' declares %u images of %u x %u, more than its %llu bytes can hold "
                      "(truncated file?)",
                      images, d[0], d[1], d[2], (unsigned long long)most);
    if (s == CLD_OK) s = ds_alloc(&ds);
    if (s == CLD_OK && !(ds->u8 = malloc(n)))
        s = cld__fail(CLD_ERR_NOMEM, "IDX file '%s': out of host memory", images);
    if (s == CLD_OK) s = gz_read_all(f, ds->u8, n, images, "the pixels");
    if (s == CLD_OK) {
        unsigned char extra;
        if (gzread(f, &extra, 1) > 0)
            s = cld__fail(CLD_ERR_FORMAT, "IDX file '%s': bytes after %u images of %u x %u", images, d[0],
                          d[1], d[2]);
    }
    gzclose(f);
    if (s == CLD_OK) {
        ds->info.n = (int)d[0];
        ds->info.channels = 1;
        ds->info.height = (int)d[1];
        ds->info.width = (int)d[2];
    }
    if (s == CLD_OK && labels) {
        uint32_t ld[3];
        f = NULL;
        s = idx_open(labels, 1, &f, ld, &most);
        if (s == CLD_OK && ld[0] != d[0])
            s = cld__fail(CLD_ERR_FORMAT, "labels '%s' hold %u labels but images '%s' hold %u images", labels,
                          ld[0], images, d[0]);
        if (s == CLD_OK && ld[0] > most)
            s = cld__fail(CLD_ERR_FORMAT,
                          "IDX file '%s' declares %u labels, more than its %llu bytes can hold "
                          "(truncated file?)",
                          labels, ld[0], (unsigned long long)most);
        unsigned char *lb = NULL;
        if (s == CLD_OK && (!(lb = malloc(d[0])) || !(ds->labels = malloc(d[0] * sizeof(int)))))
            s = cld__fail(CLD_ERR_NOMEM, "IDX file '%s': out of host memory", labels);
        if (s == CLD_OK) s = gz_read_all(f, lb, d[0], labels, "the labels");
        if (s == CLD_OK) {
            unsigned char extra;
            if (gzread(f, &extra, 1) > 0)
                s = cld__fail(CLD_ERR_FORMAT, "IDX file '%s': bytes after %u labels", labels, ld[0]);
        }
        int maxl = -1;
        for (uint32_t i = 0; s == CLD_OK && i < d[0]; i++) {
            ds->labels[i] = lb[i];
            if (lb[i] > maxl) maxl = lb[i];
        }
        if (s == CLD_OK && maxl > 254) s = cld__fail(CLD_ERR_FORMAT, "labels '%s': label %d", labels, maxl);
        if (s == CLD_OK) ds->info.num_classes = maxl + 1;
        free(lb);
        if (f) gzclose(f);
    }
    if (s != CLD_OK) {
        cld_dataset_free(ds);
        return s;
    }
    *out = ds;
    return CLD_OK;
}

/* --------------------------------------------------------------- folders */

static int is_image_name(const char *n)
{
    const char *dot = strrchr(n, '.');
    if (!dot || n[0] == '.') return 0;
    static const char *ext[] = {".png", ".jpg", ".jpeg", ".bmp", ".tga", ".pnm", ".ppm", ".pgm"};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (!strcasecmp(dot, ext[i])) return 1;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted names in dir: regular files that look like images (dirs = 0) or
 * subfolders (dirs = 1). */
static cld_status list_dir(const char *dir, int dirs, char ***names, int *count)
{
    *names = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) return cld__fail(CLD_ERR_IO, "cannot open folder '%s': %s", dir, strerror(errno));
    char **v = NULL;
    int n = 0, cap = 0;
    cld_status s = CLD_OK;
    struct dirent *e;
    char path[4096];
    while (s == CLD_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0) continue;
        if (dirs ? !S_ISDIR(st.st_mode) : !(S_ISREG(st.st_mode) && is_image_name(e->d_name))) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) {
                s = cld__fail(CLD_ERR_NOMEM, "folder '%s': out of host memory", dir);
                break;
            }
            v = nv;
        }
        if (!(v[n] = strdup(e->d_name)))
            s = cld__fail(CLD_ERR_NOMEM, "folder '%s': out of host memory", dir);
        else
            n++;
    }
    closedir(d);
    if (s == CLD_OK && n) qsort(v, (size_t)n, sizeof *v, cmp_str);
    if (s != CLD_OK) {
        for (int i = 0; i < n; i++) free(v[i]);
        free(v);
        return s;
    }
    *names = v;
    *count = n;
    return CLD_OK;
}

static void free_names(char **v, int n)
{
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

static cld_status add_items(cld_dataset *ds, const char *dir, int label, int *cap)
{
    char **files;
    int nf;
    CLD_TRY(list_dir(dir, 0, &files, &nf));
    cld_status s = CLD_OK;
    for (int i = 0; i < nf && s == CLD_OK; i++) {
        if (ds->info.n == *cap) {
            *cap = *cap ? 2 * *cap : 256;
            folder_item *ni = realloc(ds->items, (size_t)*cap * sizeof *ni);
            if (!ni) {
                s = cld__fail(CLD_ERR_NOMEM, "folder '%s': out of host memory", dir);
                break;
            }
            ds->items = ni;
        }
        folder_item *it = &ds->items[ds->info.n];
        memset(it, 0, sizeof *it);
        size_t len = strlen(dir) + strlen(files[i]) + 2;
        if (!(it->path = malloc(len))) {
            s = cld__fail(CLD_ERR_NOMEM, "folder '%s': out of host memory", dir);
            break;
        }
        snprintf(it->path, len, "%s/%s", dir, files[i]);
        it->label = label;
        ds->info.n++;
        int c;
        s = cld_image_info(it->path, &it->w, &it->h, &c);
    }
    free_names(files, nf);
    return s;
}

cld_status cld_dataset_open_folder(const char *dir, int channels, int crop, cld_dataset **out)
{
    if (!dir || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_dataset_open_folder: NULL argument");
    if (channels != 1 && channels != 3)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_dataset_open_folder: channels = %d (1 or 3)", channels);
    if (crop < 1) return cld__fail(CLD_ERR_INVALID_ARG, "cld_dataset_open_folder: crop = %d", crop);
    *out = NULL;
    cld_dataset *ds = NULL;
    CLD_TRY(ds_alloc(&ds));
    char **sub = NULL;
    int nsub = 0, cap = 0;
    cld_status s = list_dir(dir, 1, &sub, &nsub);
    if (s == CLD_OK && nsub) {
        /* class = subfolder name, in sorted order */
        ds->class_names = calloc((size_t)nsub, sizeof *ds->class_names);
        if (!ds->class_names) s = cld__fail(CLD_ERR_NOMEM, "folder '%s': out of host memory", dir);
        for (int k = 0; k < nsub && s == CLD_OK; k++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, sub[k]);
            int before = ds->info.n;
            s = add_items(ds, path, k, &cap);
            if (s == CLD_OK && ds->info.n == before)
                s = cld__fail(CLD_ERR_FORMAT, "class folder '%s' holds no images (PNG, JPG, BMP, TGA, PNM)",
                              path);
            ds->class_names[k] = sub[k];
            sub[k] = NULL;
            ds->info.num_classes = k + 1;
        }
    } else if (s == CLD_OK) {
        s = add_items(ds, dir, 0, &cap);
    }
    if (sub) free_names(sub, nsub);
    if (s == CLD_OK && !ds->info.n)
        s = cld__fail(CLD_ERR_FORMAT, "folder '%s' holds no images (PNG, JPG, BMP, TGA, PNM)", dir);
    for (int i = 0; i < ds->info.n && s == CLD_OK; i++)
        if (ds->items[i].w < crop || ds->items[i].h < crop)
            s = cld__fail(CLD_ERR_FORMAT, "image '%s' is %d x %d, smaller than the crop of %d x %d",
                          ds->items[i].path, ds->items[i].w, ds->items[i].h, crop, crop);
    if (s != CLD_OK) {
        cld_dataset_free(ds);
        return s;
    }
    ds->info.channels = channels;
    ds->info.height = ds->info.width = crop;
    *out = ds;
    return CLD_OK;
}

cld_status cld_dataset_free(cld_dataset *ds)
{
    if (!ds) return CLD_OK;
    free(ds->u8);
    free(ds->labels);
    for (int i = 0; ds->items && i < ds->info.n; i++) {
        free(ds->items[i].path);
        free(ds->items[i].pixels);
    }
    free(ds->items);
    for (int k = 0; ds->class_names && k < ds->info.num_classes; k++) free(ds->class_names[k]);
    free(ds->class_names);
    pthread_mutex_destroy(&ds->lock);
    free(ds);
    return CLD_OK;
}

cld_status cld_dataset_get_info(const cld_dataset *ds, cld_dataset_info *info)
{
    if (!ds || !info) return cld__fail(CLD_ERR_INVALID_ARG, "cld_dataset_get_info: NULL argument");
    *info = ds->info;
    return CLD_OK;
}

cld_status cld_dataset_class_name(const cld_dataset *ds, int k, const char **name)
{
    if (!ds || !name || k < 0 || k >= ds->info.num_classes)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_dataset_class_name: no class %d", k);
    *name = ds->class_names ? ds->class_names[k] : NULL;
    return CLD_OK;
}

/* Decoded pixels of a folder item (HWC u8, ds->info.channels), cached. */
static cld_status folder_pixels(cld_dataset *ds, folder_item *it, const unsigned char **px)
{
    pthread_mutex_lock(&ds->lock);
    unsigned char *have = it->pixels;
    pthread_mutex_unlock(&ds->lock);
    if (!have) {
        cld_image img;
        CLD_TRY(cld_image_load(it->path, ds->info.channels, 0, &img));
        size_t n = (size_t)img.width * img.height * img.channels;
        unsigned char *u = malloc(n);
        if (!u) {
            cld_image_free(&img);
            return cld__fail(CLD_ERR_NOMEM, "image '%s': out of host memory", it->path);
        }
        /* 8-bit cache; 16-bit inputs are rounded */
        for (size_t i = 0; i < n; i++) u[i] = (unsigned char)(img.data[i] * 255.0f + 0.5f);
        if (img.width != it->w || img.height != it->h) {
            cld_image_free(&img);
            free(u);
            return cld__fail(CLD_ERR_FORMAT, "image '%s' changed size while training", it->path);
        }
        cld_image_free(&img);
        pthread_mutex_lock(&ds->lock);
        if (!it->pixels)
            it->pixels = u;
        else
            free(u);
        have = it->pixels;
        pthread_mutex_unlock(&ds->lock);
    }
    *px = have;
    return CLD_OK;
}

cld_status cld_dataset_get(cld_dataset *ds, int index, const cld_augment *aug, uint64_t seed, uint64_t global,
                           float *out, int *label)
{
    if (!ds || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_dataset_get: NULL argument");
    if (index < 0 || index >= ds->info.n)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_dataset_get: index %d of %d", index, ds->info.n);
    const uint64_t r = mix64(mix64(seed ^ 0xA5A5A5A5ull) + global);
    const int flip = aug && aug->hflip && (r & 1);
    const int H = ds->info.height, W = ds->info.width, C = ds->info.channels;
    if (ds->u8) {
        const unsigned char *src = ds->u8 + (size_t)index * H * W;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) out[y * W + x] = src[y * W + (flip ? W - 1 - x : x)] / 127.5f - 1.0f;
        if (label) *label = ds->labels ? ds->labels[index] : 0;
        return CLD_OK;
    }
    folder_item *it = &ds->items[index];
    const unsigned char *px = NULL;
    CLD_TRY(folder_pixels(ds, it, &px));
    const int ox = (int)((r >> 8) % (uint64_t)(it->w - W + 1)),
              oy = (int)((r >> 32) % (uint64_t)(it->h - H + 1));
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int sx = ox + (flip ? W - 1 - x : x), sy = oy + y;
                out[((size_t)c * H + y) * W + x] = px[((size_t)sy * it->w + sx) * C + c] / 127.5f - 1.0f;
            }
    if (label) *label = it->label;
    return CLD_OK;
}

/* ----------------------------------------------------------------- order */

static cld_status make_perm(int n, uint64_t seed, uint64_t epoch, int *perm)
{
    for (int i = 0; i < n; i++) perm[i] = i;
    uint64_t st = mix64(seed) ^ mix64(epoch + 0x1234567ull);
    for (int i = n - 1; i > 0; i--) {
        st = mix64(st);
        int j = (int)(st % (uint64_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    return CLD_OK;
}

cld_status cld_data_order_index(int n, uint64_t seed, uint64_t global, int *index)
{
    if (n < 1 || !index) return cld__fail(CLD_ERR_INVALID_ARG, "cld_data_order_index: n = %d", n);
    int *perm = malloc((size_t)n * sizeof *perm);
    if (!perm) return cld__fail(CLD_ERR_NOMEM, "cld_data_order_index: out of host memory");
    make_perm(n, seed, global / (uint64_t)n, perm);
    *index = perm[global % (uint64_t)n];
    free(perm);
    return CLD_OK;
}

/* ---------------------------------------------------------------- loader */

#define LOADER_DEPTH 3

struct cld_loader {
    cld_dataset *ds;
    cld_augment aug;
    int batch;                  /* samples per delivered batch (the shard) */
    int stride, shard;          /* global batch size, and the shard's position in it */
    uint64_t seed, next_global; /* of the next global batch the thread prepares */
    size_t per_sample;
    float *x[LOADER_DEPTH];
    int *labels[LOADER_DEPTH];
    uint64_t first[LOADER_DEPTH];
    int head, count; /* ring of prepared batches */
    int stop;
    cld_status err;
    char errmsg[512];
    int *perm;
    uint64_t perm_epoch;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    double wait_s; /* total time next() waited */
};

static void *loader_main(void *arg)
{
    cld_loader *ld = arg;
    const int n = ld->ds->info.n;
    for (;;) {
        pthread_mutex_lock(&ld->mu);
        while (!ld->stop && ld->count == LOADER_DEPTH) pthread_cond_wait(&ld->cv, &ld->mu);
        if (ld->stop) {
            pthread_mutex_unlock(&ld->mu);
            return NULL;
        }
        int slot = (ld->head + ld->count) % LOADER_DEPTH;
        uint64_t g0 = ld->next_global;
        pthread_mutex_unlock(&ld->mu);
        cld_status s = CLD_OK;
        for (int b = 0; b < ld->batch && s == CLD_OK; b++) {
            uint64_t g = g0 + (uint64_t)ld->shard + (uint64_t)b, e = g / (uint64_t)n;
            if (e != ld->perm_epoch) {
                make_perm(n, ld->seed, e, ld->perm);
                ld->perm_epoch = e;
            }
            s = cld_dataset_get(ld->ds, ld->perm[g % (uint64_t)n], &ld->aug, ld->seed, g,
                                ld->x[slot] + (size_t)b * ld->per_sample, &ld->labels[slot][b]);
        }
        pthread_mutex_lock(&ld->mu);
        if (s != CLD_OK) {
            ld->err = s;
            snprintf(ld->errmsg, sizeof ld->errmsg, "%s", cld_last_error());
            ld->stop = 1;
            pthread_cond_broadcast(&ld->cv);
            pthread_mutex_unlock(&ld->mu);
            return NULL;
        }
        ld->first[slot] = g0 + (uint64_t)ld->shard;
        ld->next_global = g0 + (uint64_t)ld->stride;
        ld->count++;
        pthread_cond_broadcast(&ld->cv);
        pthread_mutex_unlock(&ld->mu);
    }
}

cld_status cld_loader_create(cld_dataset *ds, int batch, const cld_augment *aug, uint64_t seed,
                             uint64_t first_global, cld_loader **out)
{
    return cld_loader_create_shard(ds, batch, 0, batch, aug, seed, first_global, out);
}

cld_status cld_loader_create_shard(cld_dataset *ds, int global_batch, int shard_start, int shard_len,
                                   const cld_augment *aug, uint64_t seed, uint64_t first_global,
                                   cld_loader **out)
{
    if (!ds || !out || global_batch < 1 || shard_len < 1 || shard_start < 0 ||
        shard_start > global_batch - shard_len)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_loader_create: bad batch (global %d, shard of %d at %d)",
                         global_batch, shard_len, shard_start);
    const int batch = shard_len;
    cld_loader *ld = calloc(1, sizeof *ld);
    if (!ld) return cld__fail(CLD_ERR_NOMEM, "cld_loader_create: out of host memory");
    ld->ds = ds;
    if (aug) ld->aug = *aug;
    ld->batch = batch;
    ld->stride = global_batch;
    ld->shard = shard_start;
    ld->seed = seed;
    ld->next_global = first_global;
    ld->per_sample = (size_t)ds->info.channels * ds->info.height * ds->info.width;
    ld->perm_epoch = UINT64_MAX;
    int ok = (ld->perm = malloc((size_t)ds->info.n * sizeof(int))) != NULL;
    for (int i = 0; ok && i < LOADER_DEPTH; i++)
        ok = (ld->x[i] = malloc((size_t)batch * ld->per_sample * sizeof(float))) &&
             (ld->labels[i] = malloc((size_t)batch * sizeof(int)));
    if (!ok) {
        ld->stop = 1;
        cld_loader_free(ld);
        return cld__fail(CLD_ERR_NOMEM, "cld_loader_create: out of host memory");
    }
    pthread_mutex_init(&ld->mu, NULL);
    pthread_cond_init(&ld->cv, NULL);
    if (pthread_create(&ld->thread, NULL, loader_main, ld) != 0) {
        pthread_mutex_destroy(&ld->mu);
        pthread_cond_destroy(&ld->cv);
        for (int i = 0; i < LOADER_DEPTH; i++) {
            free(ld->x[i]);
            free(ld->labels[i]);
        }
        free(ld->perm);
        free(ld);
        return cld__fail(CLD_ERR_NOMEM, "cld_loader_create: cannot start the loader thread");
    }
    *out = ld;
    return CLD_OK;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

cld_status cld_loader_next(cld_loader *ld, float *x, int *labels, uint64_t *first_global)
{
    if (!ld || !x) return cld__fail(CLD_ERR_INVALID_ARG, "cld_loader_next: NULL argument");
    double t0 = mono_s();
    pthread_mutex_lock(&ld->mu);
    while (!ld->count && !ld->err) pthread_cond_wait(&ld->cv, &ld->mu);
    if (!ld->count && ld->err) {
        cld_status s = ld->err;
        pthread_mutex_unlock(&ld->mu);
        return cld__fail(s, "%s", ld->errmsg);
    }
    int slot = ld->head;
    pthread_mutex_unlock(&ld->mu);
    ld->wait_s += mono_s() - t0;
    memcpy(x, ld->x[slot], (size_t)ld->batch * ld->per_sample * sizeof(float));
    if (labels) memcpy(labels, ld->labels[slot], (size_t)ld->batch * sizeof(int));
    if (first_global) *first_global = ld->first[slot];
    pthread_mutex_lock(&ld->mu);
    ld->head = (ld->head + 1) % LOADER_DEPTH;
    ld->count--;
    pthread_cond_broadcast(&ld->cv);
    pthread_mutex_unlock(&ld->mu);
    return CLD_OK;
}

cld_status cld_loader_wait_seconds(const cld_loader *ld, double *seconds)
{
    if (!ld || !seconds) return cld__fail(CLD_ERR_INVALID_ARG, "cld_loader_wait_seconds: NULL argument");
    *seconds = ld->wait_s;
    return CLD_OK;
}

cld_status cld_loader_free(cld_loader *ld)
{
    if (!ld) return CLD_OK;
    if (ld->thread) {
        pthread_mutex_lock(&ld->mu);
        ld->stop = 1;
        pthread_cond_broadcast(&ld->cv);
        pthread_mutex_unlock(&ld->mu);
        pthread_join(ld->thread, NULL);
        pthread_mutex_destroy(&ld->mu);
        pthread_cond_destroy(&ld->cv);
    }
    for (int i = 0; i < LOADER_DEPTH; i++) {
        free(ld->x[i]);
        free(ld->labels[i]);
    }
    free(ld->perm);
    free(ld);
    return CLD_OK;
}
