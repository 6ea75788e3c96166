/* safetensors save/load of a parameter store.
 *
 * File layout (https://github.com/huggingface/safetensors):
 *   u64 little-endian header length L
 *   L bytes of JSON: {"__metadata__": {str: str}, "name": {"dtype": "F32",
 *                    "shape": [..], "data_offsets": [begin, end]}, ...}
 *                    padded with spaces to a multiple of 8
 *   the data section: every tensor's little-endian bytes, offsets relative
 *   to its start, tensors covering it exactly (no holes, no overlaps).
 *
 * Saving writes F32 in store order to path.tmp, fsyncs it and renames it
 * over path; on any failure (a NaN or Inf in the data is one) the temp
 * file is removed and path is untouched.
 * Loading validates the whole header before reading data, converts F32, F16
 * and BF16 to float in a host staging copy and writes the store only once
 * everything has been read: on failure the store is unchanged.
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER 100000000ull /* the reference implementation's limit */
#define ST_CHUNK 65536             /* floats converted per write/read chunk */

static int host_is_le(void)
{
    const uint32_t one = 1;
    return *(const unsigned char *)&one == 1;
}

/* ------------------------------------------------------------- dtypes */

typedef enum { DT_F32, DT_F16, DT_BF16, DT_OTHER } dt_kind;

static const struct {
    const char *name;
    int size;
    dt_kind kind;
} dtypes[] = {
    {"F32", 4, DT_F32},    {"F16", 2, DT_F16},       {"BF16", 2, DT_BF16},     {"F64", 8, DT_OTHER},
    {"I64", 8, DT_OTHER},  {"U64", 8, DT_OTHER},     {"I32", 4, DT_OTHER},     {"U32", 4, DT_OTHER},
    {"I16", 2, DT_OTHER},  {"U16", 2, DT_OTHER},     {"I8", 1, DT_OTHER},      {"U8", 1, DT_OTHER},
    {"BOOL", 1, DT_OTHER}, {"F8_E5M2", 1, DT_OTHER}, {"F8_E4M3", 1, DT_OTHER},
};
#define N_DTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0) {
        float v = ldexpf((float)man, -24); /* zero or subnormal */
        return sign ? -v : v;
    }
    if (exp == 31)
        bits = sign | 0x7f800000u | (man << 13); /* inf, nan */
    else
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* n elements of `kind` (little-endian bytes) -> floats */
static void convert(dt_kind kind, const unsigned char *src, size_t n, float *dst)
{
    for (size_t i = 0; i < n; i++) {
        if (kind == DT_F32) {
            uint32_t b = (uint32_t)src[4 * i] | (uint32_t)src[4 * i + 1] << 8 |
                         (uint32_t)src[4 * i + 2] << 16 | (uint32_t)src[4 * i + 3] << 24;
            memcpy(&dst[i], &b, sizeof b);
        } else {
            uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
            dst[i] = kind == DT_F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
    }
}

/* ---------------------------------------------------------------- save */

/* A JSON object whose values are all strings (safetensors' __metadata__). */
static int is_string_map(const cJSON *o)
{
    if (!cJSON_IsObject(o)) return 0;
    for (const cJSON *e = o->child; e; e = e->next)
        if (!cJSON_IsString(e)) return 0;
    return 1;
}

/* The header JSON, padded with spaces to a multiple of 8 (malloc'd). */
static cld_status save_header(const cld_params *p, const char *const *prefixes, int nsec,
                              const char *metadata_json, char **out, size_t *len)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return cld__fail(CLD_ERR_NOMEM, "cld_params_save: out of host memory");
    cld_status s = CLD_OK;
    if (metadata_json) {
        cJSON *meta = cJSON_Parse(metadata_json);
        if (!is_string_map(meta)) {
            cJSON_Delete(meta);
            s = cld__fail(CLD_ERR_INVALID_ARG,
                          "cld_params_save: metadata must be a JSON object of string "
                          "values, got '%.60s'",
                          metadata_json);
        } else if (!cJSON_AddItemToObject(root, "__metadata__", meta)) {
            /* not attached: ours to free; a file without its metadata must not be written */
            cJSON_Delete(meta);
            s = cld__fail(CLD_ERR_NOMEM, "cld_params_save: out of host memory");
        }
    }
    size_t begin = 0;
    char name[160];
    for (int sec = 0; sec < nsec && s == CLD_OK; sec++)
        for (int i = 0; i < p->count && s == CLD_OK; i++) {
            const cld__param *q = &p->items[i];
            snprintf(name, sizeof name, "%s%s", prefixes[sec], q->name);
            if (!strcmp(name, "__metadata__")) {
                s = cld__fail(CLD_ERR_INVALID_ARG, "cld_params_save: a parameter is named '__metadata__'");
                break;
            }
            cJSON *t = cJSON_AddObjectToObject(root, name);
            cJSON *shape = t ? cJSON_CreateIntArray(q->shape, q->ndim) : NULL;
            cJSON *offs = shape ? cJSON_CreateArray() : NULL;
            if (offs) {
                cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)begin));
                cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(begin + q->n * 4)));
            }
            /* an item not attached to the tree is ours to free (found by test_faults_alloc) */
            int ok = offs && cJSON_GetArraySize(offs) == 2 && cJSON_AddStringToObject(t, "dtype", "F32");
            if (ok && cJSON_AddItemToObject(t, "shape", shape))
                shape = NULL;
            else
                ok = 0;
            if (ok && cJSON_AddItemToObject(t, "data_offsets", offs))
                offs = NULL;
            else
                ok = 0;
            cJSON_Delete(shape);
            cJSON_Delete(offs);
            if (!ok) s = cld__fail(CLD_ERR_NOMEM, "cld_params_save: out of host memory");
            begin += q->n * 4;
        }
    char *text = s == CLD_OK ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (s != CLD_OK) return s;
    if (!text) return cld__fail(CLD_ERR_NOMEM, "cld_params_save: out of host memory");
    size_t n = strlen(text), padded = (n + 7) / 8 * 8;
    char *h = malloc(padded + 1);
    if (h) {
        memcpy(h, text, n);
        memset(h + n, ' ', padded - n);
        h[padded] = 0;
    }
    cJSON_free(text);
    if (!h) return cld__fail(CLD_ERR_NOMEM, "cld_params_save: out of host memory");
    *out = h;
    *len = padded;
    return CLD_OK;
}

static cld_status write_all(FILE *f, const void *data, size_t bytes, const char *tmp)
{
    if (bytes && fwrite(data, 1, bytes, f) != bytes)
        return cld__fail(CLD_ERR_IO, "cld_params_save: writing '%s': %s", tmp, strerror(errno));
    return CLD_OK;
}

/* Length prefix and header to an open file. */
static cld_status write_header(FILE *f, const char *header, size_t hlen, const char *tmp)
{
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    CLD_TRY(write_all(f, len8, 8, tmp));
    return write_all(f, header, hlen, tmp);
}

/* One section's data (a store-layout copy in `host`) to an open file. A
 * NaN or Inf is refused: a checkpoint or model file never holds one (its
 * weights could not be used; the previous file stays). */
static cld_status write_section(FILE *f, const cld_params *p, const float *host, const char *prefix,
                                const char *tmp)
{
    for (int i = 0; i < p->count; i++) {
        const float *v = host + p->items[i].off;
        for (size_t j = 0; j < p->items[i].n; j++)
            if (!isfinite(v[j]))
                return cld__fail(CLD_ERR_STATE,
                                 "cld_params_save: '%s%s' holds %s at element %zu: not writing a file whose "
                                 "weights cannot be used",
                                 prefix, p->items[i].name, isnan(v[j]) ? "NaN" : "Inf", j);
    }
    unsigned char *chunk = NULL;
    if (!host_is_le() && !(chunk = malloc(ST_CHUNK * 4)))
        return cld__fail(CLD_ERR_NOMEM, "cld_params_save: out of host memory");
    cld_status s = CLD_OK;
    for (int i = 0; i < p->count && s == CLD_OK; i++) {
        const float *v = host + p->items[i].off;
        size_t n = p->items[i].n;
        if (!chunk) {
            s = write_all(f, v, n * 4, tmp);
            continue;
        }
        for (size_t j = 0; j < n && s == CLD_OK; j += ST_CHUNK) {
            size_t m = n - j < ST_CHUNK ? n - j : ST_CHUNK;
            for (size_t k = 0; k < m; k++) {
                uint32_t b;
                memcpy(&b, &v[j + k], 4);
                for (int c = 0; c < 4; c++) chunk[4 * k + (size_t)c] = (unsigned char)(b >> (8 * c));
            }
            s = write_all(f, chunk, m * 4, tmp);
        }
    }
    free(chunk);
    return s;
}

/* fsync the directory holding `path`, so the rename is durable (best effort). */
static void sync_parent_dir(const char *path)
{
    size_t n = strlen(path);
    char *dir = malloc(n + 2);
    if (!dir) return;
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

/* Sections: section k holds every parameter, named prefixes[k] + name, from
 * chunked device buffers bufs[k] (the layout of the store's values; NULL:
 * the values). */
static cld_status save_sections(cld_params *p, const char *path, const char *metadata_json,
                                const char *const *prefixes, cl_mem *const *bufs, int nsec)
{
    if (!p || !path || !*path) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_save: NULL argument");
    if (!p->count) return cld__fail(CLD_ERR_STATE, "cld_params_save: the store has no parameters");
    char *header = NULL, *tmp = NULL;
    float *host = NULL;
    size_t hlen = 0;
    CLD_TRY(save_header(p, prefixes, nsec, metadata_json, &header, &hlen));
    cld_status s = cld_params_alloc(p);
    if (s == CLD_OK) {
        host = malloc(p->total * sizeof *host);
        tmp = malloc(strlen(path) + 5);
        if (!host || !tmp) s = cld__fail(CLD_ERR_NOMEM, "cld_params_save: out of host memory");
    }
    if (s == CLD_OK) {
        strcpy(tmp, path);
        strcat(tmp, ".tmp");
        FILE *f = fopen(tmp, "wb");
        if (!f) {
            s = cld__fail(CLD_ERR_IO, "cld_params_save: cannot create '%s': %s", tmp, strerror(errno));
        } else {
            s = write_header(f, header, hlen, tmp);
            for (int k = 0; k < nsec && s == CLD_OK; k++) {
                s = cld__params_rw_all(p, bufs[k] ? bufs[k] : p->values, 0, host,
                                       "cld_params_save: clEnqueueReadBuffer(params)");
                if (s == CLD_OK) s = write_section(f, p, host, prefixes[k], tmp);
            }
            if (s == CLD_OK && (fflush(f) != 0 || fsync(fileno(f)) != 0))
                s = cld__fail(CLD_ERR_IO, "cld_params_save: flushing '%s': %s", tmp, strerror(errno));
            if (fclose(f) != 0 && s == CLD_OK)
                s = cld__fail(CLD_ERR_IO, "cld_params_save: closing '%s': %s", tmp, strerror(errno));
            if (s == CLD_OK && rename(tmp, path) != 0)
                s = cld__fail(CLD_ERR_IO, "cld_params_save: renaming '%s' to '%s': %s", tmp, path,
                              strerror(errno));
            if (s != CLD_OK)
                unlink(tmp); /* we created it: never leave a partial file behind */
            else
                sync_parent_dir(path);
        }
    }
    free(header);
    free(host);
    free(tmp);
    return s;
}

cld_status cld_params_save(cld_params *p, const char *path, const char *metadata_json)
{
    const char *prefix = "";
    cl_mem *buf = NULL; /* the values */
    return save_sections(p, path, metadata_json, &prefix, &buf, 1);
}

/* ---------------------------------------------------------------- load */

typedef struct st_entry {
    const char *name;
    int dtype; /* index in dtypes[] */
    int ndim;
    int shape[CLD_MAX_DIMS]; /* valid when ndim <= CLD_MAX_DIMS */
    uint64_t begin, end;
} st_entry;

/* A non-negative integer-valued JSON number below 2^53. */
static int json_u64(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= 9007199254740992.0) || d != floor(d)) return 0;
    *out = (uint64_t)d;
    return 1;
}

static const char *shape_text(int ndim, const int *shape, char *buf, size_t cap)
{
    size_t k = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, i ? ", %d" : "%d", shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, ")");
    return buf;
}

/* One tensor entry of the header; data_len is the size of the data section. */
static cld_status parse_entry(const cJSON *e, uint64_t data_len, const char *path, st_entry *out)
{
    const char *name = e->string;
    memset(out, 0, sizeof *out);
    out->name = name;
#define BADT(...) return cld__fail(CLD_ERR_FORMAT, "safetensors '%s': tensor '%s': " __VA_ARGS__)
    if (!cJSON_IsObject(e)) BADT("not a JSON object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt)) BADT("missing or non-string 'dtype'", path, name);
    out->dtype = -1;
    for (int i = 0; i < N_DTYPES; i++)
        if (!strcmp(dtypes[i].name, dt->valuestring)) out->dtype = i;
    if (out->dtype < 0) BADT("unknown dtype '%.16s'", path, name, dt->valuestring);
    if (!cJSON_IsArray(shape)) BADT("missing or non-array 'shape'", path, name);
    uint64_t numel = 1;
    int nd = 0;
    for (const cJSON *d = shape->child; d; d = d->next, nd++) {
        uint64_t v;
        if (!json_u64(d, &v) || v > 2147483647u)
            BADT("shape[%d] is not a non-negative integer", path, name, nd);
        if (nd < CLD_MAX_DIMS) out->shape[nd] = (int)v;
        if (v && numel > UINT64_MAX / 8 / v) BADT("shape is too large", path, name);
        numel *= v;
    }
    out->ndim = nd;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_u64(offs->child, &out->begin) ||
        !json_u64(offs->child->next, &out->end))
        BADT("'data_offsets' must be two non-negative integers", path, name);
    if (out->begin > out->end)
        BADT("data_offsets [%llu, %llu] are reversed", path, name, (unsigned long long)out->begin,
             (unsigned long long)out->end);
    if (out->end > data_len)
        BADT("data_offsets [%llu, %llu] run past the data section of %llu bytes (truncated file?)", path,
             name, (unsigned long long)out->begin, (unsigned long long)out->end,
             (unsigned long long)data_len);
    if (out->end - out->begin != numel * (uint64_t)dtypes[out->dtype].size)
        BADT("data_offsets [%llu, %llu] hold %llu bytes, shape and dtype %s need %llu", path, name,
             (unsigned long long)out->begin, (unsigned long long)out->end,
             (unsigned long long)(out->end - out->begin), dtypes[out->dtype].name,
             (unsigned long long)(numel * (uint64_t)dtypes[out->dtype].size));
#undef BADT
    return CLD_OK;
}

static int cmp_begin(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past
 * U+10FFFF. cJSON takes any bytes; the safetensors format says UTF-8. */
static size_t utf8_bad_at(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const unsigned c = s[i];
        size_t len;
        unsigned min, cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0)
            len = 2, min = 0x80, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0)
            len = 3, min = 0x800, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0)
            len = 4, min = 0x10000, cp = c & 0x07;
        else
            return i;
        if (n - i < len) return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return n;
}

/* Parse and validate the header: entries (unsorted) and the metadata object. */
static cld_status parse_header(const char *text, size_t hlen, uint64_t data_len, const char *path,
                               cJSON **root, st_entry **entries, int *n_entries, const cJSON **meta)
{
    const char *end = NULL;
    const size_t bad = utf8_bad_at((const unsigned char *)text, hlen);
    if (bad < hlen)
        return cld__fail(CLD_ERR_FORMAT, "safetensors '%s': header is not valid UTF-8 (byte %zu)", path, bad);
    *root = cJSON_ParseWithLengthOpts(text, hlen, &end, 0);
    if (!*root) return cld__fail(CLD_ERR_FORMAT, "safetensors '%s': header is not valid JSON", path);
    for (const char *c = end; c < text + hlen; c++)
        if (*c != ' ' && *c != '\t' && *c != '\n' && *c != '\r')
            return cld__fail(CLD_ERR_FORMAT, "safetensors '%s': bytes after the header's JSON", path);
    if (!cJSON_IsObject(*root))
        return cld__fail(CLD_ERR_FORMAT, "safetensors '%s': header is not a JSON object", path);
    int n = cJSON_GetArraySize(*root);
    st_entry *es = calloc((size_t)n + 1, sizeof *es);
    if (!es) return cld__fail(CLD_ERR_NOMEM, "cld_params_load: out of host memory");
    *entries = es;
    int k = 0;
    *meta = NULL;
    for (const cJSON *e = (*root)->child; e; e = e->next) {
        for (const cJSON *f = (*root)->child; f != e; f = f->next)
            if (!strcmp(f->string, e->string))
                return cld__fail(CLD_ERR_FORMAT, "safetensors '%s': key '%s' appears twice", path, e->string);
        if (!strcmp(e->string, "__metadata__")) {
            if (!is_string_map(e))
                return cld__fail(CLD_ERR_FORMAT, "safetensors '%s': __metadata__ is not an object of strings",
                                 path);
            *meta = e;
            continue;
        }
        CLD_TRY(parse_entry(e, data_len, path, &es[k]));
        k++;
    }
    *n_entries = k;
    /* the tensors must tile the data section exactly */
    st_entry *sorted = malloc(((size_t)k + 1) * sizeof *sorted);
    if (!sorted) return cld__fail(CLD_ERR_NOMEM, "cld_params_load: out of host memory");
    memcpy(sorted, es, (size_t)k * sizeof *es);
    qsort(sorted, (size_t)k, sizeof *sorted, cmp_begin);
    uint64_t at = 0;
    cld_status s = CLD_OK;
    for (int i = 0; i < k && s == CLD_OK; i++) {
        if (sorted[i].begin < at)
            s = cld__fail(CLD_ERR_FORMAT, "safetensors '%s': tensor '%s' overlaps another tensor's data",
                          path, sorted[i].name);
        else if (sorted[i].begin > at)
            s = cld__fail(CLD_ERR_FORMAT, "safetensors '%s': hole of %llu bytes before tensor '%s'", path,
                          (unsigned long long)(sorted[i].begin - at), sorted[i].name);
        at = sorted[i].end;
    }
    if (s == CLD_OK && at != data_len)
        s = cld__fail(CLD_ERR_FORMAT,
                      "safetensors '%s': the data section has %llu bytes but the tensors "
                      "cover %llu",
                      path, (unsigned long long)data_len, (unsigned long long)at);
    free(sorted);
    return s;
}

/* Every store parameter from the file into `stage` (floats, store layout). */
static cld_status read_tensors(FILE *f, const cld_params *p, const st_entry *es, int n, uint64_t data_start,
                               const char *path, const char *prefix, float *stage)
{
    char name[160];
    unsigned char *raw = malloc(ST_CHUNK * 4);
    if (!raw) return cld__fail(CLD_ERR_NOMEM, "cld_params_load: out of host memory");
    cld_status s = CLD_OK;
    char sa[96], sb[96];
    for (int i = 0; i < p->count && s == CLD_OK; i++) {
        const cld__param *q = &p->items[i];
        const st_entry *e = NULL;
        snprintf(name, sizeof name, "%s%s", prefix, q->name);
        for (int j = 0; j < n && !e; j++)
            if (!strcmp(es[j].name, name)) e = &es[j];
        if (!e) {
            s = cld__fail(CLD_ERR_FORMAT, "safetensors '%s': tensor '%s' is missing", path, name);
            break;
        }
        if (e->ndim != q->ndim || memcmp(e->shape, q->shape, (size_t)q->ndim * sizeof(int))) {
            if (e->ndim > CLD_MAX_DIMS)
                snprintf(sa, sizeof sa, "of rank %d", e->ndim);
            else
                shape_text(e->ndim, e->shape, sa, sizeof sa);
            s = cld__fail(CLD_ERR_FORMAT,
                          "safetensors '%s': tensor '%s' has shape %s in the file, %s in the model", path,
                          name, sa, shape_text(q->ndim, q->shape, sb, sizeof sb));
            break;
        }
        dt_kind kind = dtypes[e->dtype].kind;
        if (kind == DT_OTHER) {
            s = cld__fail(CLD_ERR_FORMAT,
                          "safetensors '%s': tensor '%s' has dtype %s (F32, F16 or BF16 needed)", path, name,
                          dtypes[e->dtype].name);
            break;
        }
        const size_t esz = (size_t)dtypes[e->dtype].size;
        if (fseeko(f, (off_t)(data_start + e->begin), SEEK_SET) != 0) {
            s = cld__fail(CLD_ERR_IO, "safetensors '%s': seek: %s", path, strerror(errno));
            break;
        }
        for (size_t j = 0; j < q->n && s == CLD_OK; j += ST_CHUNK) {
            size_t m = q->n - j < ST_CHUNK ? q->n - j : ST_CHUNK;
            if (fread(raw, esz, m, f) != m)
                s = cld__fail(CLD_ERR_FORMAT, "safetensors '%s': tensor '%s': file ends early (truncated)",
                              path, name);
            else
                convert(kind, raw, m, stage + q->off + j);
        }
    }
    free(raw);
    return s;
}

/* Mapped loading (diffusers checkpoints): every file tensor's name goes
 * through `map` (its canonical store name into out, 0 if it has none), and
 * the file must match
 * the store exactly: the first store parameter that is missing, of another
 * shape or not a float dtype, or the first file tensor the store does not
 * have (or that fills a parameter twice), is named in the error. Checked
 * from the header alone, before any data is read. */
static cld_status map_entries(const cld_params *p, st_entry *es, int n, const char *path,
                              cld__tensor_name_map map, char (*names)[160])
{
    char sa[96], sb[96];
    int *owner = calloc((size_t)p->count + 1, sizeof *owner);
    if (!owner) return cld__fail(CLD_ERR_NOMEM, "cld_params_load: out of host memory");
    cld_status s = CLD_OK;
    for (int j = 0; j < n && s == CLD_OK; j++) {
        const char *orig = es[j].name;
        if (!map(orig, names[j], sizeof names[j])) {
            s = cld__fail(CLD_ERR_FORMAT,
                          "safetensors '%s': unexpected tensor '%s' (not a parameter of the model)", path,
                          orig);
            break;
        }
        int i = 0;
        while (i < p->count && strcmp(p->items[i].name, names[j])) i++;
        if (i == p->count) {
            s = cld__fail(CLD_ERR_FORMAT,
                          "safetensors '%s': unexpected tensor '%s' (not a parameter of the model)", path,
                          orig);
            break;
        }
        if (owner[i]) {
            s = cld__fail(CLD_ERR_FORMAT, "safetensors '%s': tensors '%s' and '%s' are both parameter '%s'",
                          path, es[owner[i] - 1].name, orig, names[j]);
            break;
        }
        owner[i] = j + 1;
    }
    for (int i = 0; i < p->count && s == CLD_OK; i++) {
        const cld__param *q = &p->items[i];
        if (!owner[i]) {
            s = cld__fail(CLD_ERR_FORMAT, "safetensors '%s': tensor '%s' is missing", path, q->name);
            break;
        }
        const st_entry *e = &es[owner[i] - 1];
        if (e->ndim != q->ndim || memcmp(e->shape, q->shape, (size_t)q->ndim * sizeof(int))) {
            if (e->ndim > CLD_MAX_DIMS)
                snprintf(sa, sizeof sa, "of rank %d", e->ndim);
            else
                shape_text(e->ndim, e->shape, sa, sizeof sa);
            s = cld__fail(CLD_ERR_FORMAT,
                          "safetensors '%s': tensor '%s' has shape %s in the file, %s in the model", path,
                          e->name, sa, shape_text(q->ndim, q->shape, sb, sizeof sb));
        } else if (dtypes[e->dtype].kind == DT_OTHER) {
            s = cld__fail(CLD_ERR_FORMAT,
                          "safetensors '%s': tensor '%s' has dtype %s (F32, F16 or BF16 needed)", path,
                          e->name, dtypes[e->dtype].name);
        }
    }
    for (int j = 0; j < n && s == CLD_OK; j++) es[j].name = names[j];
    free(owner);
    return s;
}

static cld_status load_sections_mapped(cld_params *p, const char *path, char **metadata_json_out,
                                       const char *const *prefixes, cl_mem *const *bufs, int nsec,
                                       cld__tensor_name_map map, int check_only);

static cld_status load_sections(cld_params *p, const char *path, char **metadata_json_out,
                                const char *const *prefixes, cl_mem *const *bufs, int nsec)
{
    return load_sections_mapped(p, path, metadata_json_out, prefixes, bufs, nsec, NULL, 0);
}

static cld_status load_sections_mapped(cld_params *p, const char *path, char **metadata_json_out,
                                       const char *const *prefixes, cl_mem *const *bufs, int nsec,
                                       cld__tensor_name_map map, int check_only)
{
    if (metadata_json_out) *metadata_json_out = NULL;
    if (!p || !path) return cld__fail(CLD_ERR_INVALID_ARG, "cld_params_load: NULL argument");
    if (!p->count) return cld__fail(CLD_ERR_STATE, "cld_params_load: the store has no parameters declared");
    FILE *f = fopen(path, "rb");
    if (!f) return cld__fail(CLD_ERR_IO, "cld_params_load: cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    char *header = NULL, *meta_text = NULL;
    cJSON *root = NULL;
    st_entry *es = NULL;
    float *stage = NULL;
    int n = 0;
    const cJSON *meta = NULL;
    cld_status s = CLD_OK;
    unsigned char len8[8];
    uint64_t hlen = 0, size = 0;
    if (fstat(fileno(f), &st) != 0)
        s = cld__fail(CLD_ERR_IO, "cld_params_load: stat '%s': %s", path, strerror(errno));
    else
        size = (uint64_t)st.st_size;
    if (s == CLD_OK && (size < 8 || fread(len8, 1, 8, f) != 8))
        s = cld__fail(CLD_ERR_FORMAT, "safetensors '%s': %llu bytes, too short for a header length", path,
                      (unsigned long long)size);
    if (s == CLD_OK) {
        for (int i = 0; i < 8; i++) hlen |= (uint64_t)len8[i] << (8 * i);
        if (hlen < 2 || hlen > ST_MAX_HEADER || hlen > size - 8)
            s = cld__fail(CLD_ERR_FORMAT,
                          "safetensors '%s': header length %llu is out of range (file has %llu "
                          "bytes, limit %llu)",
                          path, (unsigned long long)hlen, (unsigned long long)size, ST_MAX_HEADER);
    }
    if (s == CLD_OK) {
        header = malloc((size_t)hlen + 1);
        if (!header)
            s = cld__fail(CLD_ERR_NOMEM, "cld_params_load: out of host memory");
        else if (fread(header, 1, (size_t)hlen, f) != hlen)
            s = cld__fail(CLD_ERR_FORMAT, "safetensors '%s': header is truncated", path);
        else
            header[hlen] = 0;
    }
    if (s == CLD_OK) s = parse_header(header, (size_t)hlen, size - 8 - hlen, path, &root, &es, &n, &meta);
    char(*names)[160] = NULL;
    if (s == CLD_OK && map) {
        names = calloc((size_t)n + 1, sizeof *names);
        s = names ? map_entries(p, es, n, path, map, names)
                  : cld__fail(CLD_ERR_NOMEM, "cld_params_load: out of host memory");
    }
    if (s == CLD_OK && check_only) {
        free(names);
        free(es);
        cJSON_Delete(root);
        free(header);
        fclose(f);
        return CLD_OK;
    }
    if (s == CLD_OK) {
        stage = calloc(p->total * (size_t)nsec + 1, sizeof *stage);
        if (!stage) s = cld__fail(CLD_ERR_NOMEM, "cld_params_load: out of host memory");
    }
    for (int k = 0; k < nsec && s == CLD_OK; k++)
        s = read_tensors(f, p, es, n, 8 + hlen, path, prefixes[k], stage + p->total * (size_t)k);
    if (s == CLD_OK && meta && metadata_json_out) {
        char *text = cJSON_PrintUnformatted(meta);
        meta_text = text ? malloc(strlen(text) + 1) : NULL; /* the caller frees with free() */
        if (meta_text)
            strcpy(meta_text, text);
        else
            s = cld__fail(CLD_ERR_NOMEM, "cld_params_load: out of host memory");
        if (text) cJSON_free(text);
    }
    /* everything read and checked: now the store changes */
    if (s == CLD_OK) s = cld_params_alloc(p);
    for (int k = 0; k < nsec && s == CLD_OK; k++) {
        s = cld__params_rw_all(p, bufs[k] ? bufs[k] : p->values, 1, stage + p->total * (size_t)k,
                               "cld_params_load: clEnqueueWriteBuffer(params)");
    }
    if (s == CLD_OK && metadata_json_out) {
        *metadata_json_out = meta_text;
        meta_text = NULL;
    }
    free(meta_text);
    free(stage);
    free(names);
    free(es);
    cJSON_Delete(root);
    free(header);
    fclose(f);
    return s;
}

cld_status cld__params_load_mapped(cld_params *p, const char *path, cld__tensor_name_map map, int check_only)
{
    if (!map) return cld__fail(CLD_ERR_INVALID_ARG, "cld__params_load_mapped: NULL map");
    const char *prefix = "";
    cl_mem *buf = NULL;
    return load_sections_mapped(p, path, NULL, &prefix, &buf, 1, map, check_only);
}

cld_status cld_params_load(cld_params *p, const char *path, char **metadata_json_out)
{
    const char *prefix = "";
    cl_mem *buf = NULL; /* the values */
    return load_sections(p, path, metadata_json_out, &prefix, &buf, 1);
}

/* Training state: raw weights under their own names, then the EMA weights,
 * AdamW's m and v under prefixes. The EMA store must have p's layout. */
static const char *const state_prefixes[4] = {"", "ema.", "adam_m.", "adam_v."};

static cld_status state_buffers(cld_params *p, cld_params *ema, cl_mem *bufs[4], const char *what)
{
    if (!p || !ema) return cld__fail(CLD_ERR_INVALID_ARG, "%s: NULL store", what);
    if (ema->count != p->count || ema->total != p->total || ema->chunk != p->chunk)
        return cld__fail(CLD_ERR_INVALID_ARG, "%s: the EMA store does not have the model's layout", what);
    CLD_TRY(cld__params_alloc_train(p)); /* the moments */
    CLD_TRY(cld_params_alloc(ema));
    bufs[0] = p->values;
    bufs[1] = ema->values;
    bufs[2] = p->m;
    bufs[3] = p->v;
    return CLD_OK;
}

cld_status cld_params_save_state(cld_params *p, cld_params *ema, const char *path, const char *metadata_json)
{
    cl_mem *bufs[4];
    CLD_TRY(state_buffers(p, ema, bufs, "cld_params_save_state"));
    return save_sections(p, path, metadata_json, state_prefixes, bufs, 4);
}

cld_status cld_params_load_state(cld_params *p, cld_params *ema, const char *path, char **metadata_json_out)
{
    if (metadata_json_out) *metadata_json_out = NULL;
    cl_mem *bufs[4];
    CLD_TRY(state_buffers(p, ema, bufs, "cld_params_load_state"));
    return load_sections(p, path, metadata_json_out, state_prefixes, bufs, 4);
}

/* A file's parsed and validated header (the metadata and read paths). */
typedef struct st_file {
    FILE *f;
    uint64_t hlen;
    char *header;
    cJSON *root;
    st_entry *es;
    int n;
    const cJSON *meta;
} st_file;

static void st_close(st_file *h)
{
    free(h->es);
    cJSON_Delete(h->root);
    free(h->header);
    if (h->f) fclose(h->f);
    memset(h, 0, sizeof *h);
}

static cld_status st_open(const char *path, st_file *h)
{
    memset(h, 0, sizeof *h);
    h->f = fopen(path, "rb");
    if (!h->f) return cld__fail(CLD_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    unsigned char len8[8];
    uint64_t size = 0;
    cld_status s = CLD_OK;
    if (fstat(fileno(h->f), &st) != 0)
        s = cld__fail(CLD_ERR_IO, "stat '%s': %s", path, strerror(errno));
    else
        size = (uint64_t)st.st_size;
    if (s == CLD_OK && (size < 8 || fread(len8, 1, 8, h->f) != 8))
        s = cld__fail(CLD_ERR_FORMAT, "'%s' (%llu bytes) is not a safetensors file: too short", path,
                      (unsigned long long)size);
    if (s == CLD_OK) {
        for (int i = 0; i < 8; i++) h->hlen |= (uint64_t)len8[i] << (8 * i);
        if (h->hlen < 2 || h->hlen > ST_MAX_HEADER || h->hlen > size - 8)
            s = cld__fail(CLD_ERR_FORMAT,
                          "'%s' is not a safetensors file: header length %llu out of range (file "
                          "has %llu bytes)",
                          path, (unsigned long long)h->hlen, (unsigned long long)size);
    }
    if (s == CLD_OK) {
        h->header = malloc((size_t)h->hlen + 1);
        if (!h->header)
            s = cld__fail(CLD_ERR_NOMEM, "safetensors '%s': out of host memory", path);
        else if (fread(h->header, 1, (size_t)h->hlen, h->f) != h->hlen)
            s = cld__fail(CLD_ERR_FORMAT, "safetensors '%s': header is truncated", path);
        else
            h->header[h->hlen] = 0;
    }
    if (s == CLD_OK)
        s = parse_header(h->header, (size_t)h->hlen, size - 8 - h->hlen, path, &h->root, &h->es, &h->n,
                         &h->meta);
    if (s != CLD_OK) st_close(h);
    return s;
}

cld_status cld_safetensors_metadata(const char *path, char **metadata_json)
{
    if (!path || !metadata_json)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_safetensors_metadata: NULL argument");
    *metadata_json = NULL;
    st_file h;
    CLD_TRY(st_open(path, &h));
    cld_status s = CLD_OK;
    if (h.meta) {
        char *text = cJSON_PrintUnformatted(h.meta);
        *metadata_json = text ? malloc(strlen(text) + 1) : NULL;
        if (*metadata_json)
            strcpy(*metadata_json, text);
        else
            s = cld__fail(CLD_ERR_NOMEM, "cld_safetensors_metadata: out of host memory");
        if (text) cJSON_free(text);
    } else {
        s = cld__fail(CLD_ERR_FORMAT, "safetensors '%s' has no __metadata__", path);
    }
    st_close(&h);
    return s;
}

cld_status cld_safetensors_read(const char *path, const char *name, int *ndim, int shape[CLD_MAX_DIMS],
                                float **data)
{
    if (!path || !ndim || !shape || !data)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_safetensors_read: NULL argument");
    *data = NULL;
    st_file h;
    CLD_TRY(st_open(path, &h));
    unsigned char *raw = NULL;
    float *out = NULL;
    cld_status s = CLD_OK;
    const st_entry *e = NULL;
    for (int j = 0; j < h.n && !e && name; j++)
        if (!strcmp(h.es[j].name, name)) e = &h.es[j];
    if (!name && h.n == 1) e = &h.es[0];
    if (!e && name)
        s = cld__fail(CLD_ERR_FORMAT, "safetensors '%s': no tensor '%s'", path, name);
    else if (!e)
        s = cld__fail(CLD_ERR_FORMAT, "safetensors '%s': %d tensors, one expected", path, h.n);
    if (s == CLD_OK && e->ndim > CLD_MAX_DIMS)
        s = cld__fail(CLD_ERR_FORMAT, "safetensors '%s': tensor '%s' has rank %d (at most %d)", path, e->name,
                      e->ndim, CLD_MAX_DIMS);
    if (s == CLD_OK && dtypes[e->dtype].kind == DT_OTHER)
        s = cld__fail(CLD_ERR_FORMAT, "safetensors '%s': tensor '%s' has dtype %s (F32, F16 or BF16 needed)",
                      path, e->name, dtypes[e->dtype].name);
    if (s == CLD_OK) {
        const size_t esz = (size_t)dtypes[e->dtype].size, count = (size_t)((e->end - e->begin) / esz);
        raw = malloc(count * esz + 1);
        out = malloc(count * sizeof *out + 1);
        if (!raw || !out)
            s = cld__fail(CLD_ERR_NOMEM, "cld_safetensors_read: out of host memory");
        else if (fseeko(h.f, (off_t)(8 + h.hlen + e->begin), SEEK_SET) != 0 ||
                 fread(raw, esz, count, h.f) != count)
            s = cld__fail(CLD_ERR_FORMAT, "safetensors '%s': tensor '%s': file ends early (truncated)", path,
                          e->name);
        else
            convert(dtypes[e->dtype].kind, raw, count, out);
    }
    if (s == CLD_OK) {
        *ndim = e->ndim;
        memcpy(shape, e->shape, (size_t)e->ndim * sizeof(int));
        *data = out;
        out = NULL;
    }
    free(out);
    free(raw);
    st_close(&h);
    return s;
}
