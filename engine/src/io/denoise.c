/* Photo denoising (denoise.h): the noise level of a photo, the timestep it
 * matches, and the run (one-step x0 estimate or DDIM) through the tiler. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------ noise estimation */

#define NE_BLOCK 16      /* block side, in 3x3 windows */
#define NE_QUANTILE 0.05 /* of the block values */
#define NE_MIN_FILL 0.75 /* a block counts with at least this share of valid windows */
#define NE_MIN_BLOCKS 32 /* fewer: the mean over all valid windows */
#define NE_CAL_SIDE 1026 /* pure-noise image that calibrates the quantile: 64 x 64 blocks */

/* Immerkaer's 3x3 mask [1 -2 1; -2 4 -2; 1 -2 1] at centre (i, j): its
 * response to white noise of sd s has sd 6 s, so s = sqrt(pi/2) E|k| / 6. */
static double imm(const float *p, int W, int i, int j, double scale, double hi, int *valid, double *mean)
{
    const float *r0 = p + (size_t)(i - 1) * W + j - 1, *r1 = r0 + W, *r2 = r1 + W;
    double v[9] = {r0[0], r0[1], r0[2], r1[0], r1[1], r1[2], r2[0], r2[1], r2[2]};
    double m = 0;
    *valid = 1;
    for (int k = 0; k < 9; k++) {
        v[k] *= scale;
        if (!(v[k] > 0.0 && v[k] < hi)) *valid = 0; /* clipped (or NaN) */
        m += v[k];
    }
    *mean = m / 9;
    return v[0] - 2 * v[1] + v[2] - 2 * v[3] + 4 * v[4] - 2 * v[5] + v[6] - 2 * v[7] + v[8];
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Variance of N(0, 1) truncated to [a, b]. */
static double trunc_var(double a, double b)
{
    if (a < -7 && b > 7) return 1.0;
    const double r2 = sqrt(2.0), c = 1 / sqrt(2 * acos(-1.0));
    const double Z = 0.5 * (erfc(-b / r2) - erfc(-a / r2));
    if (!(Z > 1e-12)) return 1.0 / 12 * (b - a) * (b - a); /* a sliver far out: nearly uniform */
    const double pa = c * exp(-0.5 * a * a), pb = c * exp(-0.5 * b * b);
    const double m = (pa - pb) / Z;
    double v = 1 + (a * pa - b * pb) / Z - m * m;
    return v > 0 ? v : 0;
}

/* The statistic of one plane (values times scale on 0..hi), in sigma
 * units: the NE_QUANTILE quantile over blocks of (mean |k|) / (mean
 * truncation factor), divided by `cal`; or, with fewer than NE_MIN_BLOCKS
 * full blocks, the same ratio over all valid windows. The truncation
 * factor of a window is sqrt(trunc_var) of the noise at sd `at` cut half a
 * code inside 0 and hi around the window's mean (taken on every other
 * window); at <= 0: factor 1. *raw 0: no usable window. */
static cld_status plane_stat(const float *p, int H, int W, double scale, double hi, double cal, double at,
                             double *raw)
{
    *raw = 0;
    if (H < 3 || W < 3) return CLD_OK;
    const int bh = (H - 2) / NE_BLOCK, bw = (W - 2) / NE_BLOCK;
    const double half = hi / 510.0;
    double *blocks = malloc(((size_t)bh * bw + 1) * sizeof *blocks);
    double *bsum = calloc((size_t)bw + 1, sizeof *bsum), *bf = calloc((size_t)bw + 1, sizeof *bf);
    long *bcnt = calloc((size_t)bw + 1, sizeof *bcnt), *bfn = calloc((size_t)bw + 1, sizeof *bfn);
    cld_status s = CLD_OK;
    if (!blocks || !bsum || !bf || !bcnt || !bfn)
        s = cld__fail(CLD_ERR_NOMEM, "cld_noise_estimate: out of host memory");
    double gsum = 0, gf = 0;
    long gcnt = 0, gfn = 0;
    size_t nb = 0;
    for (int i = 1; i < H - 1 && s == CLD_OK; i++) {
        const int by = (i - 1) / NE_BLOCK;
        for (int j = 1; j < W - 1; j++) {
            int ok;
            double mean, k = fabs(imm(p, W, i, j, scale, hi, &ok, &mean));
            if (!ok) continue;
            const int bx = (j - 1) / NE_BLOCK, in = by < bh && bx < bw;
            gsum += k, gcnt++;
            if (in) bsum[bx] += k, bcnt[bx]++;
            if (((i | j) & 1) == 0) {
                const double f = at > 0 ? sqrt(trunc_var((half - mean) / at, (hi - half - mean) / at)) : 1.0;
                gf += f, gfn++;
                if (in) bf[bx] += f, bfn[bx]++;
            }
        }
        if ((i - 1) % NE_BLOCK == NE_BLOCK - 1 && by < bh) {
            for (int bx = 0; bx < bw; bx++) {
                if (bcnt[bx] >= NE_MIN_FILL * NE_BLOCK * NE_BLOCK && bfn[bx] > 0 && bf[bx] > 0)
                    blocks[nb++] = (bsum[bx] / bcnt[bx]) / (bf[bx] / bfn[bx]);
                bsum[bx] = bf[bx] = 0, bcnt[bx] = bfn[bx] = 0;
            }
        }
    }
    const double k2s = sqrt(acos(-1.0) / 2) / 6;
    if (s == CLD_OK && nb >= NE_MIN_BLOCKS) {
        qsort(blocks, nb, sizeof *blocks, cmp_double);
        const double pos = NE_QUANTILE * (double)(nb - 1);
        const size_t lo = (size_t)pos;
        const double w = pos - (double)lo,
                     q = blocks[lo] * (1 - w) + (lo + 1 < nb ? blocks[lo + 1] : blocks[lo]) * w;
        *raw = k2s * q / cal;
    } else if (s == CLD_OK && gcnt >= 16 && gfn > 0 && gf > 0) {
        *raw = k2s * (gsum / (double)gcnt) / (gf / (double)gfn);
    }
    free(blocks), free(bsum), free(bf), free(bcnt), free(bfn);
    return s;
}

/* The block quantile's value on pure white noise of sd 1 (no clipping). */
static cld_status calibration(double *cal)
{
    const int S = NE_CAL_SIDE;
    float *z = malloc((size_t)S * S * sizeof *z);
    if (!z) return cld__fail(CLD_ERR_NOMEM, "cld_noise_estimate: out of host memory");
    uint64_t st = 0x6e6f697365ull; /* fixed: the constant is the same every run */
    for (size_t i = 0; i < (size_t)S * S; i++) z[i] = (float)(1000.0 + 10.0 * cld__rand_normal(&st));
    double raw = 0;
    cld_status r = plane_stat(z, S, S, 1.0, 1e9, 1.0, 0.0, &raw);
    free(z);
    CLD_TRY(r);
    *cal = raw / 10.0;
    return CLD_OK;
}

/* Low noise levels: the block statistic above reads fine texture as noise
 * (+10% at sigma 5 on the dev photos, one photo +20%). Below NE_PCA_BELOW
 * the estimate is refined on weak-texture patches (Liu, Tanaka, Okutomi
 * 2013): 7x7 patches with no clipped pixel whose sum of squared horizontal
 * and vertical differences is under its 99% quantile for pure noise of the
 * current estimate are selected; the smallest eigenvalue of their
 * covariance is the noise variance (texture has a direction, white noise
 * is in all of them), divided by that eigenvalue for as many patches of
 * pure noise of sd 1 selected the same way (the smallest eigenvalue of a
 * sample covariance is biased low: about (1 - sqrt(49 / n))^2); iterated
 * from the block estimate. At most NE_PATCH_MAX patches, on a regular grid. */
#define NE_PATCH 7
#define NE_PATCH_D (NE_PATCH * NE_PATCH)
#define NE_PATCH_MAX 40000
#define NE_PATCH_MIN 400  /* fewer selected patches: keep the block estimate */
#define NE_PCA_BELOW 30.0 /* on the 0..255 scale */

/* Sum of squared horizontal and vertical differences of a 7x7 patch. */
static double patch_texture(const double *v)
{
    double t = 0;
    for (int y = 0; y < NE_PATCH; y++)
        for (int x = 0; x < NE_PATCH; x++) {
            const double a = v[y * NE_PATCH + x];
            if (x + 1 < NE_PATCH) t += (v[y * NE_PATCH + x + 1] - a) * (v[y * NE_PATCH + x + 1] - a);
            if (y + 1 < NE_PATCH) t += (v[(y + 1) * NE_PATCH + x] - a) * (v[(y + 1) * NE_PATCH + x] - a);
        }
    return t;
}

/* Smallest eigenvalue of the symmetric n x n matrix A (destroyed): cyclic Jacobi rotations. */
static double min_eigenvalue(double *A, int n)
{
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0, diag = 0;
        for (int i = 0; i < n; i++) {
            diag += A[i * n + i] * A[i * n + i];
            for (int j = i + 1; j < n; j++) off += A[i * n + j] * A[i * n + j];
        }
        if (off <= 1e-24 * diag) break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                const double apq = A[p * n + q];
                if (fabs(apq) < 1e-300) continue;
                const double th = (A[q * n + q] - A[p * n + p]) / (2 * apq);
                const double t = (th >= 0 ? 1.0 : -1.0) / (fabs(th) + sqrt(th * th + 1));
                const double c = 1 / sqrt(t * t + 1), sn = t * c;
                for (int k = 0; k < n; k++) { /* columns p, q */
                    const double akp = A[k * n + p], akq = A[k * n + q];
                    A[k * n + p] = c * akp - sn * akq;
                    A[k * n + q] = sn * akp + c * akq;
                }
                for (int k = 0; k < n; k++) { /* rows p, q */
                    const double apk = A[p * n + k], aqk = A[q * n + k];
                    A[p * n + k] = c * apk - sn * aqk;
                    A[q * n + k] = sn * apk + c * aqk;
                }
            }
    }
    double m = A[0];
    for (int i = 1; i < n; i++) m = fmin(m, A[i * n + i]);
    return m;
}

/* cov (49 x 49) = the covariance of the m patches d[k * 49 ...]; returns its smallest eigenvalue. */
static double patch_min_eig(const double *d, size_t m, double *cov)
{
    double mean[NE_PATCH_D] = {0};
    memset(cov, 0, NE_PATCH_D * NE_PATCH_D * sizeof *cov);
    for (size_t k = 0; k < m; k++, d += NE_PATCH_D)
        for (int a = 0; a < NE_PATCH_D; a++) {
            mean[a] += d[a];
            for (int b = a; b < NE_PATCH_D; b++) cov[a * NE_PATCH_D + b] += d[a] * d[b];
        }
    for (int a = 0; a < NE_PATCH_D; a++)
        for (int b = a; b < NE_PATCH_D; b++) {
            const double c = cov[a * NE_PATCH_D + b] / (double)m - mean[a] * mean[b] / ((double)m * m);
            cov[a * NE_PATCH_D + b] = cov[b * NE_PATCH_D + a] = c;
        }
    return min_eigenvalue(cov, NE_PATCH_D);
}

/* m patches of pure white noise of sd 1 with texture under q99 (fixed seed) into d. */
static void noise_patches(double *d, size_t m, double q99)
{
    uint64_t st = 0x6e6f6973ull;
    for (size_t k = 0; k < m;) {
        double *v = d + k * NE_PATCH_D;
        for (int a = 0; a < NE_PATCH_D; a++) v[a] = cld__rand_normal(&st);
        if (patch_texture(v) < q99) k++;
    }
}

/* The 99% quantile of patch_texture on pure white noise of sd 1 (fixed seed). */
static cld_status texture_quantile(double *q99)
{
    const int n = 20000;
    double *t = malloc((size_t)n * sizeof *t), v[NE_PATCH_D];
    if (!t) return cld__fail(CLD_ERR_NOMEM, "cld_noise_estimate: out of host memory");
    uint64_t st = 0x7465787475ull;
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < NE_PATCH_D; k++) v[k] = cld__rand_normal(&st);
        t[i] = patch_texture(v);
    }
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    *q99 = t[(int)(0.99 * (n - 1))];
    free(t);
    return CLD_OK;
}

/* The weak-texture refinement of the estimate s0 of one plane (values times
 * scale on 0..hi); *out = s0 when too few patches qualify. */
static cld_status pca_refine(const float *p, int H, int W, double scale, double hi, double q99, double s0,
                             double *out)
{
    *out = s0;
    if (H < NE_PATCH || W < NE_PATCH || !(s0 > 0)) return CLD_OK;
    const double cells = (double)(H - NE_PATCH + 1) * (W - NE_PATCH + 1);
    const int step = (int)fmax(2.0, ceil(sqrt(cells / NE_PATCH_MAX)));
    const size_t cap = (size_t)((H - NE_PATCH) / step + 1) * (size_t)((W - NE_PATCH) / step + 1);
    double *v = malloc(cap * NE_PATCH_D * sizeof *v), *tex = malloc(cap * sizeof *tex);
    double *cov = malloc(NE_PATCH_D * NE_PATCH_D * sizeof *cov);
    if (!v || !tex || !cov) {
        free(v), free(tex), free(cov);
        return cld__fail(CLD_ERR_NOMEM, "cld_noise_estimate: out of host memory");
    }
    size_t n = 0;
    for (int i = 0; i + NE_PATCH <= H; i += step)
        for (int j = 0; j + NE_PATCH <= W; j += step) {
            double *d = v + n * NE_PATCH_D;
            int ok = 1;
            for (int y = 0; y < NE_PATCH && ok; y++)
                for (int x = 0; x < NE_PATCH; x++) {
                    const double a = (double)p[(size_t)(i + y) * W + j + x] * scale;
                    if (!(a > 0.0 && a < hi)) { /* clipped (or NaN) */
                        ok = 0;
                        break;
                    }
                    d[y * NE_PATCH + x] = a;
                }
            if (ok) tex[n] = patch_texture(d), n++;
        }
    double *sel = malloc((n + 1) * NE_PATCH_D * sizeof *sel);
    if (!sel) {
        free(v), free(tex), free(cov);
        return cld__fail(CLD_ERR_NOMEM, "cld_noise_estimate: out of host memory");
    }
    double s = s0, unit = 0;
    size_t unit_m = 0;
    for (int it = 0; it < 8; it++) {
        const double thr = q99 * s * s;
        size_t m = 0;
        for (size_t k = 0; k < n; k++)
            if (tex[k] < thr) memcpy(sel + m++ * NE_PATCH_D, v + k * NE_PATCH_D, NE_PATCH_D * sizeof *v);
        if (m < NE_PATCH_MIN) break;
        const double lam = patch_min_eig(sel, m, cov);
        if (m != unit_m) { /* the pure-noise eigenvalue depends on m alone */
            noise_patches(sel, m, q99);
            unit = patch_min_eig(sel, m, cov);
            unit_m = m;
        }
        const double next = sqrt(fmax(lam, 0.0) / unit);
        const int done = fabs(next - s) < 1e-3 * s;
        s = next;
        *out = s;
        if (done || !(s > 0)) break;
    }
    free(sel);
    free(v), free(tex), free(cov);
    return CLD_OK;
}

/* calibration() and texture_quantile() are constants: computed once per
 * process (recomputed per call only if that first try ran out of memory) */
static pthread_once_t ne_once = PTHREAD_ONCE_INIT;
static double ne_cal, ne_q99;
static int ne_ready;
static void ne_constants(void)
{
    ne_ready = calibration(&ne_cal) == CLD_OK && texture_quantile(&ne_q99) == CLD_OK;
}

cld_status cld_noise_estimate(const float *x, int C, int H, int W, double range, double *sigma)
{
    if (!x || !sigma || C < 1 || H < 1 || W < 1 || !(range > 0))
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_noise_estimate: bad argument");
    double cal = 0, q99 = 0;
    pthread_once(&ne_once, ne_constants);
    if (ne_ready)
        cal = ne_cal, q99 = ne_q99;
    else
        CLD_TRY(calibration(&cal));
    for (int c = 0; c < C; c++) {
        const float *p = x + (size_t)c * H * W;
        double s = 0;
        CLD_TRY(plane_stat(p, H, W, range, range, cal, 0.0, &s));
        /* clipped windows were dropped: the rest saw noise truncated at the
         * bounds, by a factor that depends on sigma itself */
        for (int it = 0; it < 12 && s > 0; it++) {
            double next;
            CLD_TRY(plane_stat(p, H, W, range, range, cal, s, &next));
            if (next > range / 2) next = range / 2; /* no sd of values in [0, range] is larger */
            const int done = fabs(next - s) < 1e-3 * s;
            s = next;
            if (done) break;
        }
        if (s > 0 && s < NE_PCA_BELOW * range / 255.0) {
            if (!(q99 > 0)) CLD_TRY(texture_quantile(&q99));
            CLD_TRY(pca_refine(p, H, W, range, range, q99, s, &s));
        }
        sigma[c] = s;
    }
    return CLD_OK;
}

/* ------------------------------------------------------------ denoising */

cld_status cld_denoise_timestep(const cld_schedule *s, double sigma255, double *t)
{
    if (!s || !t || !(sigma255 > 0))
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_denoise_timestep: sigma %g", sigma255);
    return cld_schedule_sigma_to_t(s, 2.0 * sigma255 / 255.0, t);
}

cld_status cld_denoise_max_sigma(const cld_schedule *s, int t_max, double *sigma255)
{
    if (!s || !sigma255 || t_max < 0)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_denoise_max_sigma: bad argument");
    double sg;
    CLD_TRY(cld_schedule_sigma(s, t_max < s->T ? t_max : s->T - 1, &sg));
    *sigma255 = sg * 255.0 / 2.0;
    return CLD_OK;
}

/* Tiles of every step as one count. */
typedef struct step_progress {
    const cld_denoise_opts *o;
    int step;
} step_progress;

static void on_tile(void *user, int done, int total)
{
    step_progress *p = user;
    p->o->progress(p->o->progress_user, p->step * total + done, p->o->steps * total);
}

cld_status cld_denoise_run(cld_tiled *t, const cld_schedule *s, cld_pred_type pred, const cld_denoise_opts *o,
                           const float *img, int H, int W, float *out)
{
    if (!t || !s || !o || !img || !out || H < 1 || W < 1)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_denoise_run: bad argument");
    if (o->steps < 1 || !(o->strength >= 0 && o->strength <= 1) || !(o->sigma > 0))
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_denoise_run: steps %d, strength %g, sigma %g", o->steps,
                         o->strength, o->sigma);
    int C, Co;
    CLD_TRY(cld_tiled_channels(t, &C, &Co));
    if (Co != C)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_denoise_run: the UNet maps %d channels to %d", C, Co);
    double t0;
    CLD_TRY(cld_denoise_timestep(s, o->sigma, &t0));
    const size_t n = (size_t)C * H * W;
    float *x = malloc(n * sizeof *x), *p = malloc(n * sizeof *p);
    if (!x || !p) {
        free(x), free(p);
        return cld__fail(CLD_ERR_NOMEM, "cld_denoise_run: out of host memory for %d x %d x %d", C, H, W);
    }
    double a, b;
    cld_status st = cld_schedule_ab(s, t0, &a, &b);
    for (size_t i = 0; i < n && st == CLD_OK; i++) x[i] = (float)(a * (2.0 * img[i] - 1.0));
    /* per step k: x at t_k = t0 (1 - k / steps); the last step ends at the clean end */
    step_progress pr = {o, 0};
    for (int k = 0; k < o->steps && st == CLD_OK; k++) {
        const double tk = t0 * (1.0 - (double)k / o->steps);
        double kx, kp;
        st = cld_schedule_ab(s, tk, &a, &b);
        if (st == CLD_OK) st = cld_pred_coefs(pred, CLD_PRED_X0, a, b, &kx, &kp);
        if (st == CLD_OK) pr.step = k;
        if (st == CLD_OK) st = cld_tiled_run(t, x, H, W, (float)tk, p, o->progress ? on_tile : NULL, &pr);
        if (st != CLD_OK) break;
        /* p <- x0 estimate */
        for (size_t i = 0; i < n; i++) p[i] = (float)(kx * x[i] + kp * p[i]);
        if (k + 1 < o->steps) { /* DDIM, eta 0: x_next = a' x0 + b' eps, eps = (x - a x0) / b */
            double a1, b1;
            st = cld_schedule_ab(s, t0 * (1.0 - (double)(k + 1) / o->steps), &a1, &b1);
            for (size_t i = 0; i < n && st == CLD_OK; i++) {
                const double eps = (x[i] - a * p[i]) / b;
                x[i] = (float)(a1 * p[i] + b1 * eps);
            }
        }
    }
    for (size_t i = 0; i < n && st == CLD_OK; i++) {
        double v = o->strength * (p[i] + 1.0) / 2.0 + (1.0 - o->strength) * img[i];
        if (!isfinite(v)) {
            st = cld__fail(CLD_ERR_STATE, "the denoised image is not finite (%g) at element %zu", v, i);
            break;
        }
        out[i] = (float)(v < 0 ? 0 : v > 1 ? 1 : v);
    }
    free(x);
    free(p);
    return st;
}
