/* Files in and out: images (stb_image decoding, PNG writing with text),
 * atomic file writes, and training datasets with a background loader.
 * Included by cldiffusion.h.
 *
 * Thread safety: functions on distinct objects may run on any threads. A
 * cld_dataset may be read by several threads (its decode cache is locked);
 * a cld_loader belongs to one consumer thread (it runs one thread of its
 * own). */
#ifndef CLDIFFUSION_IO_H
#define CLDIFFUSION_IO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- images */
/* Default pixel budget of cld_image_load: 256 megapixels (a 24 MP photo is
 * far inside, a 65535 x 65535 header is refused before any decoding). */
#define CLD_IMAGE_DEFAULT_MAX_PIXELS ((size_t)256 << 20)

typedef struct cld_image {
    int width, height;
    int channels;      /* of data */
    int file_channels; /* as stored in the file */
    int bits;          /* 8 or 16, as stored */
    float *data;       /* (height, width, channels) interleaved, in [0, 1] */
} cld_image;

/* Header only: size and channels, without decoding pixels. */
cld_status cld_image_info(const char *path, int *width, int *height, int *channels);
/* Decode PNG, JPEG, BMP, TGA or PNM (8 or 16 bits). want_channels 0 keeps
 * the file's, else 1..4 converts. max_pixels 0 = the default budget,
 * checked from the header before allocating. */
cld_status cld_image_load(const char *path, int want_channels, size_t max_pixels, cld_image *out);
cld_status cld_image_free(cld_image *img);
/* EXIF orientation (1..8, 1 = as stored) of a file: 1 when it has no EXIF
 * data or no valid tag (libexif parses; a damaged block reads as none). */
cld_status cld_image_exif_orientation(const char *path, int *orientation);
/* Apply an EXIF orientation to decoded pixels (5..8 swap width and height). */
cld_status cld_image_orient(cld_image *img, int orientation);

/* PNG of (height, width, channels) interleaved samples: bits 8 (uint8_t) or
 * 16 (uint16_t, host order), channels 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA.
 * n_text tEXt chunks keys[i] = values[i] (keys 1..79 bytes). Written to a
 * temporary name in the same folder, fsynced and renamed: path is either
 * untouched or complete. */
cld_status cld_png_write(const char *path, int width, int height, int channels, int bits, const void *pixels,
                         int n_text, const char *const *keys, const char *const *values);
/* The value of tEXt entry `key` of a PNG (malloc'd, caller frees). */
cld_status cld_png_read_text(const char *path, const char *key, char **value);
/* Write n bytes to path through a temporary file, fsync, rename, fsync the
 * folder. */
cld_status cld_file_write_atomic(const char *path, const void *data, size_t n);

/* -------------------------------------------------------------- datasets */
typedef struct cld_dataset cld_dataset;
typedef struct cld_dataset_info {
    int n; /* samples */
    int channels, height, width;
    int num_classes; /* 0 or 1: unlabelled */
} cld_dataset_info;

typedef struct cld_augment {
    int hflip; /* random horizontal flips */
} cld_augment;

/* IDX files (MNIST layout), gzipped or not; labels may be NULL. The label
 * count must match the image count. */
cld_status cld_dataset_open_idx(const char *images, const char *labels, cld_dataset **out);
/* A folder of images: with subfolders, class k = the k-th subfolder name in
 * sorted order; without, one class. Samples are random crop x crop windows
 * (every image must be at least that big: checked from the headers at open).
 * channels 1 or 3. */
cld_status cld_dataset_open_folder(const char *dir, int channels, int crop, cld_dataset **out);
cld_status cld_dataset_free(cld_dataset *ds);
cld_status cld_dataset_get_info(const cld_dataset *ds, cld_dataset_info *info);
/* Class name (folder datasets), or NULL for IDX. */
cld_status cld_dataset_class_name(const cld_dataset *ds, int k, const char **name);
/* Sample `index` into out (C, H, W) in [-1, 1], augmented from (seed, global). */
cld_status cld_dataset_get(cld_dataset *ds, int index, const cld_augment *aug, uint64_t seed, uint64_t global,
                           float *out, int *label);
/* Which sample global index `global` reads in a dataset of n (see dataset.c). */
cld_status cld_data_order_index(int n, uint64_t seed, uint64_t global, int *index);

/* Batches global indices first_global + k * batch + (0 .. batch-1) prepared
 * on a thread of its own, a few batches ahead. */
typedef struct cld_loader cld_loader;
cld_status cld_loader_create(cld_dataset *ds, int batch, const cld_augment *aug, uint64_t seed,
                             uint64_t first_global, cld_loader **out);
/* A shard of each global batch: samples shard_start .. shard_start +
 * shard_len - 1 of the batches of global_batch samples above (data-parallel
 * training: each rank prepares only its own part; the samples are those the
 * whole batch holds at those positions). */
cld_status cld_loader_create_shard(cld_dataset *ds, int global_batch, int shard_start, int shard_len,
                                   const cld_augment *aug, uint64_t seed, uint64_t first_global,
                                   cld_loader **out);
/* Copy the next batch: x (batch or shard_len, C, H, W), labels or NULL;
 * *first_global: the global index of its first sample. */
cld_status cld_loader_next(cld_loader *ld, float *x, int *labels, uint64_t *first_global);
/* Seconds cld_loader_next spent waiting for the thread so far. */
cld_status cld_loader_wait_seconds(const cld_loader *ld, double *seconds);
cld_status cld_loader_free(cld_loader *ld);

#ifdef __cplusplus
}
#endif
#endif
