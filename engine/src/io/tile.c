/* A local UNet on images of any size in overlapping tiles (denoise.h).
 *
 * Coordinates: the image (C, H, W) sits at (offset, offset) of an
 * unbounded reflect-padded plane (mirror without repeating the edge pixel,
 * as numpy's "reflect", periodic beyond). Tile (ky, kx) covers padded
 * rows ky*stride .. ky*stride + tile - 1 and likewise columns; stride is a
 * multiple of 2^(n_levels-1), so the tile's stride-2 convolutions sample
 * the same grid as on the whole plane. Per axis a tile's weight is
 *   0 over its first `margin` pixels, sin^2 rising over `blend`, 1, falling
 *   over `blend`, 0 over its last `margin`
 * and stride = tile - 2 margin - blend, so one tile's fall is the next
 * one's rise (sin^2 + cos^2 = 1). The 2-D weight is the product; the sum
 * over tiles of products is the product of the per-axis sums, so the
 * result is normalised by two 1-D arrays. At the image's border there is no
 * neighbour to fade into: the first tile along an axis drops only `edge`
 * pixels on its leading side and has no rise there, the last one likewise on
 * its trailing side, and offset = edge, so the image needs `edge` pixels of
 * padding per side, not margin + blend. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------- receptive field */

/* Dependence of a feature at scale s, index j, on input pixels
 * [s j - lo, s j + hi] (see cld_unet_receptive_radius). */
typedef struct rf {
    long lo, hi, s;
} rf;

static void rf_conv3(rf *r) { r->lo += r->s, r->hi += r->s; }

cld_status cld_unet_receptive_radius(const cld_unet_config *cfg, int *radius)
{
    if (!cfg || !radius) return cld__fail(CLD_ERR_INVALID_ARG, "cld_unet_receptive_radius: NULL argument");
    CLD_TRY(cld_unet_config_check(cfg));
    if (!cld_unet_config_is_local(cfg))
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "the UNet is not local (norm_groups %d, %d attention resolutions, "
                         "mid attention %s): its output depends on the whole image, it cannot run in tiles",
                         cfg->norm_groups, cfg->n_attn, cfg->no_mid_attn ? "off" : "on");
    /* The same walk as unet.c's build(): conv3x3 stride 1 at scale s adds s
     * each side; the stride-2 conv reads 2j-1 .. 2j+1, also s each side, and
     * doubles s; nearest 2x reads floor(j / 2): s/2 more below; concat takes
     * the wider of its inputs. 1x1 convs and the time embedding add nothing. */
    const int nres = cfg->num_res_blocks, nskip = 1 + cfg->n_levels * (nres + 1);
    rf *skip = calloc((size_t)nskip, sizeof *skip);
    if (!skip) return cld__fail(CLD_ERR_NOMEM, "cld_unet_receptive_radius: out of host memory");
    int ns = 0;
    rf h = {0, 0, 1};
    rf_conv3(&h); /* conv_in */
    skip[ns++] = h;
    for (int i = 0; i < cfg->n_levels; i++) {
        for (int j = 0; j < nres; j++) {
            rf_conv3(&h), rf_conv3(&h);
            skip[ns++] = h;
        }
        if (i != cfg->n_levels - 1) {
            rf_conv3(&h);
            h.s *= 2;
            skip[ns++] = h;
        }
    }
    for (int k = 0; k < 4; k++) rf_conv3(&h); /* mid: two ResBlocks */
    for (int u = 0; u < cfg->n_levels; u++) {
        const int i = cfg->n_levels - 1 - u;
        for (int j = 0; j <= nres; j++) {
            rf sk = skip[--ns];
            if (sk.lo > h.lo) h.lo = sk.lo;
            if (sk.hi > h.hi) h.hi = sk.hi;
            rf_conv3(&h), rf_conv3(&h);
        }
        if (i != 0) {
            h.s /= 2;
            h.lo += h.s;
            rf_conv3(&h);
        }
    }
    rf_conv3(&h); /* conv_out */
    free(skip);
    *radius = (int)(h.lo > h.hi ? h.lo : h.hi);
    return CLD_OK;
}

/* ----------------------------------------------------------- the tiler */

struct cld_tiled {
    cld_ctx *ctx;
    cld_params *params;
    cld_unet_config cfg;
    cld_tile_opts opts;
    int align; /* 2^(n_levels-1) */
    int radius;
    size_t param_bytes;
    /* planned arena at sides align*8 and align*16: bytes ~ c0 + c2 side^2 */
    double c0, c2;
    int have_fit;
    cld_unet_runner *runner;
    int runner_tile;
    cl_mem xin, yout;
    int buf_tile;
};

static size_t runner_arena(cld_tiled *t, int side, cld_status *s)
{
    cld_unet_config c = t->cfg;
    c.image_size = side;
    cld_unet_runner *r = NULL;
    size_t bytes = 0;
    *s = cld_unet_runner_create(t->ctx, t->params, &c, 1, &r);
    if (*s == CLD_OK) *s = cld_unet_runner_bytes(r, &bytes);
    cld_unet_runner_free(r);
    return bytes;
}

cld_status cld_tiled_create(cld_ctx *ctx, cld_params *params, const cld_unet_config *cfg,
                            const cld_tile_opts *opts, cld_tiled **out)
{
    if (!ctx || !params || !cfg || !out)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_tiled_create: NULL argument");
    *out = NULL;
    int radius;
    CLD_TRY(cld_unet_receptive_radius(cfg, &radius));
    cld_tile_opts o = {0, -1, 0, 0, 0};
    if (opts) o = *opts;
    if (o.margin < -1 || o.blend < 0 || o.tile < 0 || o.max_tile < 0 || o.edge < -1)
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "cld_tiled_create: tile %d, margin %d, blend %d, max_tile %d, edge %d", o.tile,
                         o.margin, o.blend, o.max_tile, o.edge);
    const int exact = o.margin < 0 || o.margin >= radius;
    if (exact) o.margin = radius; /* more context than the reach changes nothing */
    if (o.edge == 0) o.edge = exact ? o.margin : CLD_TILE_DEFAULT_EDGE;
    if (o.edge < 0 || o.edge > o.margin) o.edge = o.margin;
    /* on the downsampling grid: pixel (0, 0) of the image is sampled as when
     * the UNet runs on the image itself, whatever the edge */
    const int align = 1 << (cfg->n_levels - 1);
    o.edge = (o.edge + align - 1) / align * align;
    if (!o.blend) o.blend = CLD_TILE_DEFAULT_BLEND;
    if (!o.max_tile) o.max_tile = CLD_TILE_AUTO_MAX;
    cld_tiled *t = calloc(1, sizeof *t);
    if (!t) return cld__fail(CLD_ERR_NOMEM, "cld_tiled_create: out of host memory");
    t->ctx = ctx;
    t->params = params;
    t->cfg = *cfg;
    t->cfg.dropout = 0.0f;
    t->opts = o;
    t->align = align;
    t->radius = radius;
    size_t np = 0;
    cld_status s = cld_params_count(params, NULL, &np);
    t->param_bytes = 4 * np * sizeof(float); /* the store allocates values, gradients and two moments */
    if (s != CLD_OK) {
        free(t);
        return s;
    }
    *out = t;
    return CLD_OK;
}

cld_status cld_tiled_free(cld_tiled *t)
{
    if (!t) return CLD_OK;
    cld_unet_runner_free(t->runner);
    if (t->xin) clReleaseMemObject(t->xin);
    if (t->yout) clReleaseMemObject(t->yout);
    free(t);
    return CLD_OK;
}

cld_status cld_tiled_channels(const cld_tiled *t, int *in, int *out)
{
    if (!t) return cld__fail(CLD_ERR_INVALID_ARG, "cld_tiled_channels: NULL argument");
    if (in) *in = t->cfg.in_channels;
    if (out) *out = t->cfg.out_channels;
    return CLD_OK;
}

static int ceil_div(long a, long b) { return (int)((a + b - 1) / b); }

/* Tiles along an axis of n pixels (at padded offset edge). */
static int tiles_along(int n, int tile, int edge, int stride)
{
    long need = (long)n + 2L * edge - tile; /* last pixel before the last tile's dropped edge */
    return need <= 0 ? 1 : 1 + ceil_div(need, stride);
}

/* Planned device bytes of one tile of side `side`. */
static cld_status tile_bytes(cld_tiled *t, int side, double *bytes)
{
    if (!t->have_fit) {
        cld_status s;
        const int a = t->align * 8, b = t->align * 16;
        double ya = (double)runner_arena(t, a, &s);
        if (s != CLD_OK) return s;
        double yb = (double)runner_arena(t, b, &s);
        if (s != CLD_OK) return s;
        t->c2 = (yb - ya) / ((double)b * b - (double)a * a);
        if (t->c2 < 0) t->c2 = 0;
        t->c0 = ya - t->c2 * a * a;
        t->have_fit = 1;
    }
    const double staging = (double)(t->cfg.in_channels + t->cfg.out_channels) * side * side * sizeof(float);
    *bytes = t->c0 + t->c2 * side * side + staging;
    return CLD_OK;
}

static cld_status plan_side(cld_tiled *t, int side, int H, int W, cld_tile_plan *p)
{
    const int m = t->opts.margin, a = t->align;
    int stride = (side - 2 * m - t->opts.blend) / a * a;
    if (side % a || stride < a)
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "tile %d: must be a multiple of %d and leave room for the margins "
                         "(2 x %d) and the blend (%d) plus %d: at least %d",
                         side, a, m, t->opts.blend, a, ((2 * m + t->opts.blend + a) + a - 1) / a * a);
    p->tile = side;
    p->margin = m;
    p->stride = stride;
    p->blend = side - 2 * m - stride;
    p->offset = t->opts.edge;
    p->nx = tiles_along(W, side, p->offset, stride);
    p->ny = tiles_along(H, side, p->offset, stride);
    return CLD_OK;
}

cld_status cld_tiled_plan(cld_tiled *t, int H, int W, cld_tile_plan *plan)
{
    if (!t || !plan || H < 1 || W < 1) return cld__fail(CLD_ERR_INVALID_ARG, "cld_tiled_plan: bad argument");
    cld_device_info info;
    CLD_TRY(cld_ctx_device_info(t->ctx, &info));
    const double budget = (double)info.global_mem_bytes / 2 - (double)t->param_bytes;
    memset(plan, 0, sizeof *plan);
    plan->budget_bytes = budget > 0 ? (size_t)budget : 0;
    double bytes;
    if (t->opts.tile) {
        CLD_TRY(plan_side(t, t->opts.tile, H, W, plan));
    } else {
        const int a = t->align, m = t->opts.margin;
        const int lo = ((2 * m + t->opts.blend + a) + a - 1) / a * a;
        /* no bigger than one tile over the whole image */
        int hi = ((H > W ? H : W) + 2 * t->opts.edge + a - 1) / a * a;
        if (hi > t->opts.max_tile / a * a) hi = t->opts.max_tile / a * a;
        if (hi < lo) hi = lo;
        double best = -1;
        for (int side = lo; side <= hi; side += a) {
            CLD_TRY(tile_bytes(t, side, &bytes));
            if (bytes > budget || (side > lo && t->c0 + t->c2 * side * side > (double)info.max_alloc_bytes))
                break;
            cld_tile_plan p;
            CLD_TRY(plan_side(t, side, H, W, &p));
            /* pixels computed, plus a fixed cost per tile (launches, copies) worth a 32 x 32 tile */
            const double cost = (double)p.nx * p.ny * ((double)side * side + 1024.0);
            if (best < 0 || cost < best) best = cost, *plan = p;
        }
        if (best < 0) {
            CLD_TRY(tile_bytes(t, lo, &bytes));
            return cld__fail(CLD_ERR_NOMEM,
                             "the smallest tile (%d) needs %.1f MiB of device memory; device '%s' "
                             "allows %.1f MiB (half its memory, less the parameters)",
                             lo, bytes / 1048576.0, info.name, budget / 1048576.0);
        }
        plan->budget_bytes = budget > 0 ? (size_t)budget : 0;
    }
    CLD_TRY(tile_bytes(t, plan->tile, &bytes));
    plan->device_bytes = (size_t)bytes;
    if (t->opts.tile && bytes > budget)
        return cld__fail(CLD_ERR_NOMEM,
                         "tile %d needs %.1f MiB of device memory; device '%s' allows %.1f MiB (half "
                         "its memory, less the parameters)",
                         plan->tile, bytes / 1048576.0, info.name, budget / 1048576.0);
    return CLD_OK;
}

/* Mirror index into 0 .. n-1 (reflect without repeating the edge). */
static int mirror(long i, int n)
{
    if (n == 1) return 0;
    const long period = 2L * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return (int)(i < n ? i : period - i);
}

/* The kind of tile k of count along an axis: 1 first, 2 last, 3 both, 0 neither. */
#define WKIND(k, count) (((k) == 0 ? 1 : 0) | ((k) == (count)-1 ? 2 : 0))

/* sin^2 rise over the blend: weight of the d-th kept pixel from a side
 * shared with a neighbour */
static double rise(int d, int b)
{
    if (d >= b) return 1.0;
    const double x = sin(1.5707963267948966 * (d + 0.5) / b); /* pi/2 */
    return x * x;
}

/* Per-axis weight of position u (0 .. tile-1) of a tile of kind WKIND: a
 * side at the image border (kind & 1 leading, kind & 2 trailing) keeps all
 * but the edge context and does not fade. */
static double axis_weight(const cld_tile_plan *p, int kind, int u)
{
    const int m = p->margin, b = p->blend, n = p->tile;
    const int lo = kind & 1 ? p->offset : m, hi = kind & 2 ? p->offset : m;
    if (u < lo || u >= n - hi) return 0.0;
    double w = 1.0;
    if (!(kind & 1)) w *= rise(u - m, b);
    if (!(kind & 2)) w *= rise(n - m - 1 - u, b);
    return w;
}

static cld_status ensure_runner(cld_tiled *t, int side)
{
    if (t->runner && t->runner_tile == side) return CLD_OK;
    cld_unet_runner_free(t->runner);
    t->runner = NULL;
    cld_unet_config c = t->cfg;
    c.image_size = side;
    CLD_TRY(cld_unet_runner_create(t->ctx, t->params, &c, 1, &t->runner));
    t->runner_tile = side;
    if (t->buf_tile != side) {
        if (t->xin) clReleaseMemObject(t->xin);
        if (t->yout) clReleaseMemObject(t->yout);
        t->xin = t->yout = NULL;
        t->buf_tile = 0;
        const size_t px = (size_t)side * side * sizeof(float);
        CLD_TRY(cld_buffer_alloc(t->ctx, px * t->cfg.in_channels, &t->xin));
        CLD_TRY(cld_buffer_alloc(t->ctx, px * t->cfg.out_channels, &t->yout));
        t->buf_tile = side;
    }
    return CLD_OK;
}

cld_status cld_tiled_run(cld_tiled *t, const float *x, int H, int W, float timestep, float *out,
                         void (*progress)(void *user, int done, int total), void *user)
{
    if (!t || !x || !out || H < 1 || W < 1)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_tiled_run: bad argument");
    cld_tile_plan p;
    CLD_TRY(cld_tiled_plan(t, H, W, &p));
    CLD_TRY(ensure_runner(t, p.tile));
    const int Ci = t->cfg.in_channels, Co = t->cfg.out_channels, T = p.tile;
    const size_t plane = (size_t)T * T;
    float *tin = malloc(plane * Ci * sizeof *tin), *tout = malloc(plane * Co * sizeof *tout);
    /* per-axis weights of the four kinds of tile (WKIND), the same along both axes */
    double *wv = malloc(4 * (size_t)T * sizeof *wv), *nx = calloc((size_t)W, sizeof *nx),
           *ny = calloc((size_t)H, sizeof *ny);
    int *col = malloc((size_t)T * sizeof *col);
    cld_status s = CLD_OK;
    if (!tin || !tout || !wv || !nx || !ny || !col)
        s = cld__fail(CLD_ERR_NOMEM, "cld_tiled_run: out of host memory");
    if (s == CLD_OK) {
        for (int v = 0; v < 4; v++)
            for (int u = 0; u < T; u++) wv[v * T + u] = axis_weight(&p, v, u);
        /* per-axis weight sums at every image pixel */
        for (int k = 0; k < p.nx; k++)
            for (int u = 0; u < T; u++) {
                long xi = (long)k * p.stride + u - p.offset;
                if (xi >= 0 && xi < W) nx[xi] += wv[WKIND(k, p.nx) * T + u];
            }
        for (int k = 0; k < p.ny; k++)
            for (int u = 0; u < T; u++) {
                long yi = (long)k * p.stride + u - p.offset;
                if (yi >= 0 && yi < H) ny[yi] += wv[WKIND(k, p.ny) * T + u];
            }
        for (int i = 0; i < W && s == CLD_OK; i++)
            if (!(nx[i] > 0))
                s = cld__fail(CLD_ERR_STATE, "cld_tiled_run: column %d has no tile weight (bug)", i);
        for (int i = 0; i < H && s == CLD_OK; i++)
            if (!(ny[i] > 0))
                s = cld__fail(CLD_ERR_STATE, "cld_tiled_run: row %d has no tile weight (bug)", i);
    }
    if (s == CLD_OK) memset(out, 0, (size_t)Co * H * W * sizeof *out);
    const int total = p.nx * p.ny;
    for (int ky = 0; ky < p.ny && s == CLD_OK; ky++) {
        for (int kx = 0; kx < p.nx && s == CLD_OK; kx++) {
            const long y0 = (long)ky * p.stride - p.offset, x0 = (long)kx * p.stride - p.offset;
            for (int u = 0; u < T; u++) col[u] = mirror(x0 + u, W);
            for (int c = 0; c < Ci; c++)
                for (int r = 0; r < T; r++) {
                    const float *src = x + ((size_t)c * H + mirror(y0 + r, H)) * W;
                    float *dst = tin + ((size_t)c * T + r) * T;
                    for (int u = 0; u < T; u++) dst[u] = src[col[u]];
                }
            s = cld_buffer_write(t->ctx, t->xin, 0, plane * Ci * sizeof(float), tin);
            if (s == CLD_OK) s = cld_unet_runner_fn(t->runner, t->xin, 0, t->yout, 0, 1, &timestep, NULL);
            if (s == CLD_OK) s = cld_buffer_read(t->ctx, t->yout, 0, plane * Co * sizeof(float), tout);
            if (s != CLD_OK) break;
            const double *wr = wv + WKIND(ky, p.ny) * T, *wc = wv + WKIND(kx, p.nx) * T;
            for (int c = 0; c < Co; c++)
                for (int r = 0; r < T; r++) {
                    const long yi = y0 + r;
                    if (yi < 0 || yi >= H || wr[r] == 0.0) continue;
                    const float *src = tout + ((size_t)c * T + r) * T;
                    float *dst = out + ((size_t)c * H + yi) * W;
                    for (int u = 0; u < T; u++) {
                        const long xi = x0 + u;
                        if (xi < 0 || xi >= W || wc[u] == 0.0) continue;
                        dst[xi] += (float)(wr[r] * wc[u] * src[u]);
                    }
                }
            if (progress) progress(user, ky * p.nx + kx + 1, total);
        }
    }
    for (int c = 0; c < Co && s == CLD_OK; c++)
        for (int yi = 0; yi < H && s == CLD_OK; yi++) {
            float *row = out + ((size_t)c * H + yi) * W;
            for (int xi = 0; xi < W; xi++) {
                row[xi] = (float)(row[xi] / (nx[xi] * ny[yi]));
                if (!isfinite(row[xi])) {
                    s = cld__fail(CLD_ERR_STATE,
                                  "the UNet output is not finite (%g) at channel %d, pixel (%d, %d)",
                                  (double)row[xi], c, xi, yi);
                    break;
                }
            }
        }
    free(tin);
    free(tout);
    free(wv);
    free(nx);
    free(ny);
    free(col);
    return s;
}
