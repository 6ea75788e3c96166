/* Samplers (sampler.c) driven by exact models instead of a trained network.
 *
 * For data x0 ~ N(mu, s^2) and x_t = a x0 + b eps the posterior mean is
 * closed form, E[x0 | x_t] = mu + a s^2 (x_t - a mu) / (a^2 s^2 + b^2); for a
 * Gaussian mixture it is the responsibility-weighted sum of the components'
 * posterior means. The model below returns it (as eps, v or x0) per pixel on
 * the host. Checked here:
 *  - every sampler against an independent double-precision reference written
 *    from the papers' own formulas (k-diffusion's for Euler, Euler ancestral,
 *    Heun and DPM-Solver++(2M)), element by element, noise included;
 *  - every sampler reproduces the data's mean, variance and mixture weights;
 *  - identities (DDIM eta 1 = DDPM, Euler = DDIM eta 0, Euler ancestral =
 *    DDPM), prediction types, classifier-free guidance in one batched call;
 *  - convergence to the probability-flow ODE: for Gaussian data the ODE
 *    keeps (x~ - mu) / sqrt(s^2 + sigma^2) constant (x~ = x / a), so its
 *    solution is known exactly, and the error of every deterministic sampler
 *    is printed against the number of steps. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ------------------------------------------------------------- the model */
/* A pixel distribution: a mixture of K <= 2 Gaussians N(m_k, s_k^2). */
typedef struct chan {
    int K;
    double w[2], m[2], s[2];
} chan;

static const chan GAUSS0 = {1, {1, 0}, {0.5, 0}, {0.5, 0}};
static const chan GAUSS1 = {1, {1, 0}, {-0.3, 0}, {0.8, 0}};
static const chan GAUSS2 = {1, {1, 0}, {0.1, 0}, {0.3, 0}};
static const chan MIXTURE = {2, {0.3, 0.7}, {-1.5, 1.0}, {0.4, 0.5}};
/* classes for guidance; the unconditional model is their 50/50 mixture */
static const chan CLASS0 = {1, {1, 0}, {-1.0, 0}, {0.3, 0}};
static const chan CLASS1 = {1, {1, 0}, {1.0, 0}, {0.5, 0}};
static const chan CLASSES = {2, {0.5, 0.5}, {-1.0, 1.0}, {0.3, 0.5}};
#define NULL_LABEL 2

enum {
    DATA_GAUSS = 0, /* channels GAUSS0, GAUSS1, GAUSS2 */
    DATA_IMG = 1,   /* channels GAUSS0, GAUSS1, MIXTURE */
    DATA_CLASS = 2, /* one channel: CLASS0 / CLASS1 by label, else CLASSES */
};

typedef struct gm {
    cld_ctx *ctx;
    const cld_schedule *s;
    cld_pred_type pred;
    int kind, C;
    size_t hw, per; /* per = C * hw */
    chan ch[3];
    double guide; /* DATA_CLASS: > 0 applies guidance itself (cond and uncond in double) */
    float *xh, *oh;
    size_t cap; /* floats in xh, oh */
    int calls, max_batch;
} gm;

/* E[x0 | x] for x = a x0 + b eps, x0 ~ c. */
static double post_x0(const chan *c, double a, double b, double x)
{
    double lr[2], v[2], top = -INFINITY;
    for (int k = 0; k < c->K; k++) {
        v[k] = a * a * c->s[k] * c->s[k] + b * b;
        double d = x - a * c->m[k];
        lr[k] = log(c->w[k]) - 0.5 * log(v[k]) - 0.5 * d * d / v[k];
        if (lr[k] > top) top = lr[k];
    }
    double z = 0, acc = 0;
    for (int k = 0; k < c->K; k++) {
        double r = exp(lr[k] - top);
        z += r;
        acc += r * (c->m[k] + a * c->s[k] * c->s[k] * (x - a * c->m[k]) / v[k]);
    }
    return acc / z;
}

static double as_pred(cld_pred_type p, double a, double b, double x, double x0)
{
    double eps = (x - a * x0) / b;
    return p == CLD_PRED_X0 ? x0 : (p == CLD_PRED_EPS ? eps : a * eps - b * x0);
}

/* E[x0 | x] for pixel j of a sample with this label. */
static double gm_x0(const gm *g, int label, size_t j, double a, double b, double x)
{
    if (g->kind == DATA_CLASS && (label == 0 || label == 1))
        return post_x0(label ? &CLASS1 : &CLASS0, a, b, x);
    return post_x0(&g->ch[j / g->hw], a, b, x);
}

static cld_status gm_model(void *user, cl_mem x, size_t xo, cl_mem out, size_t oo, int n, const float *t,
                           const int *labels)
{
    gm *g = user;
    size_t tot = (size_t)n * g->per;
    g->calls++;
    if (n > g->max_batch) g->max_batch = n;
    if (tot > g->cap) return CLD_ERR_SHAPE;
    cld_status st = cld_buffer_read(g->ctx, x, xo * sizeof(float), tot * sizeof(float), g->xh);
    if (st != CLD_OK) return st;
    for (int k = 0; k < n; k++) {
        double a, b;
        if ((st = cld_schedule_ab(g->s, t[k], &a, &b)) != CLD_OK) return st;
        int label = labels ? labels[k] : -1;
        for (size_t j = 0; j < g->per; j++) {
            size_t i = (size_t)k * g->per + j;
            double xv = g->xh[i];
            double p = as_pred(g->pred, a, b, xv, gm_x0(g, label, j, a, b, xv));
            if (g->guide > 0) {
                double pu = as_pred(g->pred, a, b, xv, gm_x0(g, NULL_LABEL, j, a, b, xv));
                p = pu + g->guide * (p - pu);
            }
            g->oh[i] = (float)p;
        }
    }
    return cld_buffer_write(g->ctx, out, oo * sizeof(float), tot * sizeof(float), g->oh);
}

static void gm_init(gm *g, const cld_schedule *s, int kind, cld_pred_type pred, int nmax, size_t hw)
{
    memset(g, 0, sizeof *g);
    g->ctx = tu_ctx();
    g->s = s;
    g->kind = kind;
    g->pred = pred;
    g->C = kind == DATA_CLASS ? 1 : 3;
    g->hw = hw;
    g->per = (size_t)g->C * hw;
    g->ch[0] = kind == DATA_CLASS ? CLASSES : GAUSS0;
    g->ch[1] = GAUSS1;
    g->ch[2] = kind == DATA_GAUSS ? GAUSS2 : MIXTURE;
    g->cap = 2 * (size_t)nmax * g->per;
    g->xh = tu_malloc(g->cap * sizeof(float));
    g->oh = tu_malloc(g->cap * sizeof(float));
}

static void gm_free(gm *g)
{
    free(g->xh);
    free(g->oh);
}

/* ------------------------------------------------------------- running */
typedef struct progress_log {
    int count, last, total, bad;
} progress_log;

static void on_progress(void *user, int step, int total)
{
    progress_log *p = user;
    if (step != p->last + 1) p->bad = 1;
    p->count++;
    p->last = step;
    p->total = total;
}

/* Runs a sampler with model g on n samples from seed noise, or from x_T if
 * xT is given; out (n, per) on the host. Checks calls, progress, finiteness. */
static void sample_from(const cld_schedule *s, const cld_sampler_opts *o, gm *g, int n, const int *labels,
                        uint64_t seed, const float *xT, float *out)
{
    cld_ctx *ctx = tu_ctx();
    size_t total = (size_t)n * g->per;
    cl_mem buf = xT ? tu_upload(ctx, xT, total) : NULL;
    if (!buf) TU_OK(cld_buffer_alloc(ctx, total * sizeof(float), &buf));
    progress_log pl = {0, 0, 0, 0};
    cld_sample_job job = {.n = n,
                          .per_sample = g->per,
                          .labels = labels,
                          .seed = seed,
                          .start_from_out = xT != NULL,
                          .out = buf,
                          .model = gm_model,
                          .model_user = g,
                          .progress = on_progress,
                          .progress_user = &pl};
    g->calls = 0;
    TU_OK(cld_sampler_run(ctx, s, o, &job));
    tu_download(ctx, buf, out, total);
    cld_buffer_release(buf);
    int calls;
    TU_OK(cld_sampler_model_calls(o, &calls));
    ck_assert_msg(g->calls == calls, "%s: %d model calls, expected %d", cld_sampler_name(o->kind), g->calls,
                  calls);
    ck_assert_msg(pl.count == o->steps && pl.last == o->steps && pl.total == o->steps && !pl.bad,
                  "progress: %d calls, last %d of %d", pl.count, pl.last, pl.total);
    for (size_t i = 0; i < total; i++)
        ck_assert_msg(isfinite(out[i]), "%s: non-finite output at %zu", cld_sampler_name(o->kind), i);
}

static void sample(const cld_schedule *s, const cld_sampler_opts *o, gm *g, int n, const int *labels,
                   uint64_t seed, float *out)
{
    sample_from(s, o, g, n, labels, seed, NULL, out);
}

static cld_sampler_opts opts(cld_sampler_kind kind, int steps, int karras, cld_pred_type pred)
{
    cld_sampler_opts o;
    TU_OK(cld_sampler_opts_default(kind, &o));
    o.steps = steps;
    o.karras = karras;
    o.pred = pred;
    return o;
}

static const char *opts_name(const cld_sampler_opts *o, char *buf, size_t len)
{
    static const char *preds[] = {"eps", "v", "x0"};
    const char *extra = "";
    if (o->kind == CLD_SAMPLER_DDPM) extra = o->variance == CLD_VAR_BETA ? " beta-var" : " post-var";
    char eta[24] = "";
    if (o->kind == CLD_SAMPLER_DDIM || o->kind == CLD_SAMPLER_EULER_A) {
        snprintf(eta, sizeof eta, " eta=%g", o->eta);
        extra = eta;
    }
    snprintf(buf, len, "%s%s%s %d (%s)", cld_sampler_name(o->kind), o->karras ? " karras" : "", extra,
             o->steps, preds[o->pred]);
    return buf;
}

static void assert_same(const float *a, const float *b, size_t n, double tol, const char *what)
{
    size_t at = 0;
    double e = tu_max_abs_err(a, b, n, &at);
    ck_assert_msg(e <= tol, "%s: max |difference| %.3g > %.3g at [%zu] (%g vs %g)", what, e, tol, at,
                  (double)a[at], (double)b[at]);
}

/* ----------------------------------------------- reference samplers in double */
/* Timesteps as diffusers computes them (numpy rounds half to even). */
static void ref_timesteps(int T, const cld_sampler_opts *o, int *ts)
{
    int N = o->steps;
    for (int k = 0; k < N; k++) {
        if (o->spacing == CLD_SPACING_LEADING)
            ts[k] = (N - 1 - k) * (T / N) + o->steps_offset;
        else if (o->spacing == CLD_SPACING_TRAILING)
            ts[k] = (int)nearbyint(T - k * ((double)T / N)) - 1;
        else
            ts[k] = (int)nearbyint((N - 1 - k) * (T - 1.0) / (N - 1));
    }
}

/* Noise levels sigma (N + 1, the last 0) and model times of a run. */
static void ref_sigmas(const cld_schedule *s, const cld_sampler_opts *o, double *sig, double *tm)
{
    int N = o->steps, ts[1000];
    if (o->karras) {
        double smin = sqrt((1 - s->alpha_bar[0]) / s->alpha_bar[0]);
        double smax = sqrt((1 - s->alpha_bar[s->T - 1]) / s->alpha_bar[s->T - 1]);
        for (int i = 0; i < N; i++) {
            double r =
                pow(smax, 1 / o->rho) + i / (N - 1.0) * (pow(smin, 1 / o->rho) - pow(smax, 1 / o->rho));
            sig[i] = pow(r, o->rho);
            TU_OK(cld_schedule_sigma_to_t(s, sig[i], &tm[i]));
        }
    } else {
        ref_timesteps(s->T, o, ts);
        for (int i = 0; i < N; i++) {
            double ab = s->alpha_bar[ts[i]];
            sig[i] = sqrt((1 - ab) / ab);
            tm[i] = ts[i];
        }
    }
    sig[N] = 0.0;
}

/* The denoiser of the VE samplers: D(x~, sigma) from the model at x = x~ / sqrt(1 + sigma^2). */
static double ref_D(const gm *g, size_t j, double xve, double sigma, double t)
{
    double a, b;
    TU_OK(cld_schedule_ab(g->s, (float)t, &a, &b));
    return gm_x0(g, -1, j, a, b, xve / sqrt(1 + sigma * sigma));
}

/* One element (pixel j) of a run from x_T; z[k] is the noise of step k. */
static double ref_sample(const gm *g, const cld_sampler_opts *o, size_t j, double xT, const double *z)
{
    const cld_schedule *s = g->s;
    int N = o->steps;
    if (o->kind == CLD_SAMPLER_DDPM || o->kind == CLD_SAMPLER_DDIM) {
        /* Ho et al. 2020 (respaced as improved DDPM) and Song et al. 2021 */
        int ts[1000];
        ref_timesteps(s->T, o, ts);
        double x = xT;
        for (int i = 0; i < N; i++) {
            double ab_t = s->alpha_bar[ts[i]], ab_s = i + 1 < N ? s->alpha_bar[ts[i + 1]] : 1.0;
            double x0 = gm_x0(g, -1, j, sqrt(ab_t), sqrt(1 - ab_t), x);
            if (o->kind == CLD_SAMPLER_DDPM) {
                double alpha = ab_t / ab_s, beta = 1 - alpha;
                double mean = sqrt(ab_s) * beta / (1 - ab_t) * x0 + sqrt(alpha) * (1 - ab_s) / (1 - ab_t) * x;
                double var = o->variance == CLD_VAR_BETA ? beta : beta * (1 - ab_s) / (1 - ab_t);
                x = mean + (i + 1 < N ? sqrt(var) * z[i + 1] : 0.0);
            } else {
                double eps = (x - sqrt(ab_t) * x0) / sqrt(1 - ab_t);
                double sg = o->eta * sqrt((1 - ab_s) / (1 - ab_t)) * sqrt(1 - ab_t / ab_s);
                x = sqrt(ab_s) * x0 + sqrt(1 - ab_s - sg * sg) * eps + sg * z[i + 1];
            }
        }
        return x;
    }
    /* k-diffusion: sample_euler, sample_euler_ancestral, sample_heun, sample_dpmpp_2m */
    double sig[1001], tm[1001];
    ref_sigmas(s, o, sig, tm);
    double x = xT * sqrt(1 + sig[0] * sig[0]), old = 0;
    for (int i = 0; i < N; i++) {
        double D = ref_D(g, j, x, sig[i], tm[i]), d = (x - D) / sig[i];
        switch (o->kind) {
        case CLD_SAMPLER_EULER: x += d * (sig[i + 1] - sig[i]); break;
        case CLD_SAMPLER_EULER_A: {
            double up = fmin(sig[i + 1],
                             o->eta * sqrt(sig[i + 1] * sig[i + 1] *
                                           (sig[i] * sig[i] - sig[i + 1] * sig[i + 1]) / (sig[i] * sig[i])));
            double down = sqrt(sig[i + 1] * sig[i + 1] - up * up);
            x += d * (down - sig[i]);
            if (sig[i + 1] > 0) x += z[i + 1] * up;
            break;
        }
        case CLD_SAMPLER_HEUN: {
            double dt = sig[i + 1] - sig[i];
            if (sig[i + 1] == 0) {
                x += d * dt;
            } else {
                double x2 = x + d * dt;
                double d2 = (x2 - ref_D(g, j, x2, sig[i + 1], tm[i + 1])) / sig[i + 1];
                x += (d + d2) / 2 * dt;
            }
            break;
        }
        case CLD_SAMPLER_DPMPP_2M: {
            double t = -log(sig[i]), tn = -log(sig[i + 1]), h = tn - t;
            if (i == 0 || sig[i + 1] == 0) {
                x = sig[i + 1] / sig[i] * x - expm1(-h) * D;
            } else {
                double r = (t + log(sig[i - 1])) / h;
                double Dd = (1 + 1 / (2 * r)) * D - (1 / (2 * r)) * old;
                x = sig[i + 1] / sig[i] * x - expm1(-h) * Dd;
            }
            old = D;
            break;
        }
        default: ck_abort_msg("no reference for sampler %d", (int)o->kind);
        }
    }
    return x;
}

/* Device run vs the reference on every element, noise from the host reference. */
START_TEST(test_against_reference)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_SCALED_LINEAR, 1000, 0, 0, 0, &s));
    const struct {
        cld_sampler_kind kind;
        int steps, karras;
        double eta;
        cld_ddpm_variance var;
        cld_spacing sp;
    } cases[] = {
        {CLD_SAMPLER_DDPM, 30, 0, 0, CLD_VAR_POSTERIOR, CLD_SPACING_TRAILING},
        {CLD_SAMPLER_DDPM, 25, 0, 0, CLD_VAR_BETA, CLD_SPACING_LEADING},
        {CLD_SAMPLER_DDIM, 20, 0, 0, CLD_VAR_POSTERIOR, CLD_SPACING_LINSPACE},
        {CLD_SAMPLER_DDIM, 20, 0, 0.5, CLD_VAR_POSTERIOR, CLD_SPACING_TRAILING},
        {CLD_SAMPLER_DPMPP_2M, 15, 0, 0, CLD_VAR_POSTERIOR, CLD_SPACING_TRAILING},
        {CLD_SAMPLER_DPMPP_2M, 15, 1, 0, CLD_VAR_POSTERIOR, CLD_SPACING_TRAILING},
        {CLD_SAMPLER_EULER, 20, 1, 0, CLD_VAR_POSTERIOR, CLD_SPACING_TRAILING},
        {CLD_SAMPLER_EULER_A, 20, 0, 1.0, CLD_VAR_POSTERIOR, CLD_SPACING_LINSPACE},
        {CLD_SAMPLER_EULER_A, 20, 1, 0.7, CLD_VAR_POSTERIOR, CLD_SPACING_TRAILING},
        {CLD_SAMPLER_HEUN, 12, 1, 0, CLD_VAR_POSTERIOR, CLD_SPACING_TRAILING},
        {CLD_SAMPLER_HEUN, 12, 0, 0, CLD_VAR_POSTERIOR, CLD_SPACING_TRAILING},
    };
    const int n = 2;
    const uint64_t seed = 555;
    gm g;
    gm_init(&g, s, DATA_IMG, CLD_PRED_EPS, n, 5 * 11);
    size_t total = (size_t)n * g.per;
    float *got = tu_malloc(total * sizeof(float)), *want = tu_malloc(total * sizeof(float));
    float *noise = tu_malloc(31 * total * sizeof(float));
    for (int k = 0; k <= 30; k++) { /* the sampler's noise: step 0 is x_T, step k + 1 for step k */
        cld_noise_key key = {seed, CLD_NOISE_STREAM_SAMPLER, 0, (uint32_t)k};
        TU_OK(cld_noise_host(&key, n, g.per, noise + k * total));
    }
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        cld_sampler_opts o = opts(cases[c].kind, cases[c].steps, cases[c].karras, CLD_PRED_EPS);
        o.eta = cases[c].eta;
        o.variance = cases[c].var;
        o.spacing = cases[c].sp;
        sample(s, &o, &g, n, NULL, seed, got);
        for (size_t i = 0; i < total; i++) {
            double z[31];
            for (int k = 0; k <= o.steps; k++) z[k] = noise[k * total + i];
            want[i] = (float)ref_sample(&g, &o, i % g.per, z[0], z);
        }
        char name[96];
        opts_name(&o, name, sizeof name);
        double e = tu_max_abs_err(got, want, total, NULL);
        printf("  %-40s max |device - reference| = %.2e\n", name, e);
        /* float32 rounding over a few dozen steps of values up to ~3 */
        assert_same(got, want, total, 2e-5, name);
    }
    free(got), free(want), free(noise);
    gm_free(&g);
    cld_schedule_free(s);
}
END_TEST

/* ------------------------------------------------------- distribution tests */
/* Every sampler at a step count where its discretisation bias is small must
 * reproduce the data: mean within 0.02 sd, variance within 3 %, the mass
 * below the mixture's valley within 0.01, plus 5 standard errors of the
 * sampling noise. Deterministic samplers start from stratified x_T (normal
 * quantiles), which leaves no sampling noise to speak of. */
#define BIAS_MEAN 0.02
#define BIAS_VAR 0.03
#define BIAS_WEIGHT 0.01
#define MIX_SPLIT (-0.25)

typedef struct moments {
    double mean, var, below;
} moments;

static moments measure(const float *x, int n, size_t per, size_t first, size_t count)
{
    double s1 = 0, s2 = 0, nb = 0, cnt = 0;
    for (int k = 0; k < n; k++)
        for (size_t j = first; j < first + count; j++) {
            double v = x[(size_t)k * per + j];
            s1 += v, s2 += v * v, nb += v < MIX_SPLIT, cnt++;
        }
    moments m = {s1 / cnt, s2 / cnt - (s1 / cnt) * (s1 / cnt), nb / cnt};
    return m;
}

static double phi(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

static void check_moments(const char *what, moments got, const chan *c, double cnt, int stratified)
{
    double mean = 0, var = 0, m4 = 0;
    for (int k = 0; k < c->K; k++) mean += c->w[k] * c->m[k];
    for (int k = 0; k < c->K; k++) {
        double d = c->m[k] - mean, v = c->s[k] * c->s[k];
        var += c->w[k] * (d * d + v);
        m4 += c->w[k] * (d * d * d * d + 6 * d * d * v + 3 * v * v);
    }
    double k5 = stratified ? 0.0 : 5.0;
    double tol_mean = k5 * sqrt(var / cnt) + BIAS_MEAN * sqrt(var);
    double tol_var = k5 * sqrt((m4 - var * var) / cnt) + BIAS_VAR * var;
    printf("    %-12s mean %+.4f (want %+.4f +- %.4f)  var %.4f (want %.4f +- %.4f)", what, got.mean, mean,
           tol_mean, got.var, var, tol_var);
    int ok = fabs(got.mean - mean) <= tol_mean && fabs(got.var - var) <= tol_var;
    if (c->K == 2) {
        double p = 0;
        for (int k = 0; k < 2; k++) p += c->w[k] * phi((MIX_SPLIT - c->m[k]) / c->s[k]);
        double tol = k5 * sqrt(p * (1 - p) / cnt) + BIAS_WEIGHT;
        printf("  P(x < %g) %.4f (want %.4f +- %.4f)", MIX_SPLIT, got.below, p, tol);
        ok = ok && fabs(got.below - p) <= tol;
    }
    printf("\n");
    ck_assert_msg(ok, "%s: statistics out of tolerance (see above)", what);
}

/* x_T: per channel, the normal quantiles Phi^-1((k + 0.5) / M) in shuffled order. */
static void stratified_xT(float *x, int n, size_t per, size_t hw)
{
    size_t M = (size_t)n * hw;
    uint64_t rng = 12345;
    for (size_t c = 0; c < per / hw; c++) {
        float *q = tu_malloc(M * sizeof(float));
        for (size_t k = 0; k < M; k++) {
            double p = (k + 0.5) / M, lo = -10, hi = 10;
            for (int it = 0; it < 60; it++) {
                double mid = 0.5 * (lo + hi);
                if (phi(mid) < p)
                    lo = mid;
                else
                    hi = mid;
            }
            q[k] = (float)(0.5 * (lo + hi));
        }
        for (size_t k = M - 1; k > 0; k--) { /* Fisher-Yates */
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t r = (size_t)((rng >> 33) % (k + 1));
            float t = q[k];
            q[k] = q[r], q[r] = t;
        }
        for (size_t k = 0; k < M; k++) x[(k / hw) * per + c * hw + k % hw] = q[k];
        free(q);
    }
}

#define DIST_N 24
#define DIST_HW (19 * 23)

static const struct {
    cld_sampler_kind kind;
    int steps, karras;
    double eta;
    cld_ddpm_variance var;
    cld_pred_type pred;
} dist_cases[] = {
    {CLD_SAMPLER_DDPM, 1000, 0, 0, CLD_VAR_POSTERIOR, CLD_PRED_EPS},
    {CLD_SAMPLER_DDPM, 1000, 0, 0, CLD_VAR_BETA, CLD_PRED_V},
    {CLD_SAMPLER_DDIM, 250, 0, 0, CLD_VAR_POSTERIOR, CLD_PRED_V},
    {CLD_SAMPLER_DDIM, 500, 0, 1.0, CLD_VAR_POSTERIOR, CLD_PRED_X0},
    {CLD_SAMPLER_DPMPP_2M, 50, 0, 0, CLD_VAR_POSTERIOR, CLD_PRED_X0},
    {CLD_SAMPLER_DPMPP_2M, 50, 1, 0, CLD_VAR_POSTERIOR, CLD_PRED_EPS},
    {CLD_SAMPLER_EULER, 250, 1, 0, CLD_VAR_POSTERIOR, CLD_PRED_EPS},
    {CLD_SAMPLER_EULER_A, 500, 0, 1.0, CLD_VAR_POSTERIOR, CLD_PRED_V},
    {CLD_SAMPLER_HEUN, 50, 1, 0, CLD_VAR_POSTERIOR, CLD_PRED_X0},
};
#define N_DIST_CASES ((int)(sizeof dist_cases / sizeof dist_cases[0]))

static void run_dist_case(int i, int zero_snr)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, zero_snr, &s));
    cld_sampler_opts o = opts(dist_cases[i].kind, dist_cases[i].steps, dist_cases[i].karras,
                              zero_snr ? CLD_PRED_V : dist_cases[i].pred);
    o.eta = dist_cases[i].eta;
    o.variance = dist_cases[i].var;
    int stochastic = o.kind == CLD_SAMPLER_DDPM || o.eta > 0;
    gm g;
    gm_init(&g, s, DATA_IMG, o.pred, DIST_N, DIST_HW);
    size_t total = (size_t)DIST_N * g.per;
    float *x = tu_malloc(total * sizeof(float)), *xT = NULL;
    if (!stochastic) {
        xT = tu_malloc(total * sizeof(float));
        stratified_xT(xT, DIST_N, g.per, DIST_HW);
    }
    double t0 = tu_now();
    sample_from(s, &o, &g, DIST_N, NULL, 1234, xT, x);
    char name[96];
    opts_name(&o, name, sizeof name);
    printf("  %s%s, %s x_T (%.1f s)\n", name, zero_snr ? ", zero terminal SNR" : "",
           stochastic ? "random" : "stratified", tu_now() - t0);
    const char *what[3] = {"N(0.5, 0.5^2)", "N(-0.3,0.8^2)", "mixture"};
    for (int c = 0; c < 3; c++)
        check_moments(what[c], measure(x, DIST_N, g.per, (size_t)c * DIST_HW, DIST_HW), &g.ch[c],
                      (double)DIST_N * DIST_HW, !stochastic);
    free(x);
    free(xT);
    gm_free(&g);
    cld_schedule_free(s);
}

START_TEST(test_distribution) { run_dist_case(_i, 0); }
END_TEST

/* Zero terminal SNR with v-prediction (x_T is then exactly the noise), with
 * the trailing spacing Lin et al. recommend. (Karras sigmas would span
 * 0.01 .. 4096 here and need more steps.) */
START_TEST(test_distribution_zero_snr)
{
    static const int which[] = {2, 4, 7}; /* DDIM, DPM-Solver++(2M), Euler ancestral */
    run_dist_case(which[_i], 1);
}
END_TEST

/* ------------------------------------------------------------ equivalences */
static float *img_run(const cld_schedule *s, cld_sampler_opts o, cld_pred_type pred, int n)
{
    gm g;
    o.pred = pred;
    gm_init(&g, s, DATA_IMG, pred, n, 7 * 11);
    float *x = tu_malloc((size_t)n * g.per * sizeof(float));
    sample(s, &o, &g, n, NULL, 99, x);
    gm_free(&g);
    return x;
}

/* The same sampler with an eps, v or x0 model gives the same samples. */
START_TEST(test_prediction_types_agree)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_SCALED_LINEAR, 1000, 0, 0, 0, &s));
    const int n = 2;
    const size_t total = n * 3 * 7 * 11;
    for (int k = 0; k <= CLD_SAMPLER_HEUN; k++) {
        cld_sampler_opts o = opts((cld_sampler_kind)k, 12, k == CLD_SAMPLER_HEUN, CLD_PRED_EPS);
        float *e = img_run(s, o, CLD_PRED_EPS, n), *v = img_run(s, o, CLD_PRED_V, n),
              *x0 = img_run(s, o, CLD_PRED_X0, n);
        char what[64];
        snprintf(what, sizeof what, "%s eps vs v", cld_sampler_name(o.kind));
        assert_same(e, v, total, 1e-5, what);
        snprintf(what, sizeof what, "%s eps vs x0", cld_sampler_name(o.kind));
        assert_same(e, x0, total, 1e-5, what);
        free(e), free(v), free(x0);
    }
    cld_schedule_free(s);
}
END_TEST

/* DDIM eta 1 and Euler ancestral are DDPM with the posterior variance; Euler
 * on the discrete timesteps is DDIM eta 0; one DPM-Solver++ step is a DDIM step. */
START_TEST(test_sampler_identities)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 0, &s));
    const int n = 2;
    const size_t total = n * 3 * 7 * 11;
    cld_sampler_opts ddpm = opts(CLD_SAMPLER_DDPM, 40, 0, CLD_PRED_EPS);
    cld_sampler_opts ddim1 = opts(CLD_SAMPLER_DDIM, 40, 0, CLD_PRED_EPS);
    cld_sampler_opts eula = opts(CLD_SAMPLER_EULER_A, 40, 0, CLD_PRED_EPS);
    ddim1.eta = 1.0;
    float *a = img_run(s, ddpm, CLD_PRED_EPS, n), *b = img_run(s, ddim1, CLD_PRED_EPS, n),
          *c = img_run(s, eula, CLD_PRED_EPS, n);
    assert_same(a, b, total, 1e-5, "DDIM eta=1 vs DDPM");
    assert_same(a, c, total, 1e-5, "Euler ancestral vs DDPM");
    free(a), free(b), free(c);
    for (int sp = 0; sp < 3; sp++) {
        cld_sampler_opts ddim = opts(CLD_SAMPLER_DDIM, 25, 0, CLD_PRED_EPS);
        cld_sampler_opts eul = opts(CLD_SAMPLER_EULER, 25, 0, CLD_PRED_EPS);
        ddim.spacing = eul.spacing = (cld_spacing)sp;
        a = img_run(s, ddim, CLD_PRED_V, n), b = img_run(s, eul, CLD_PRED_V, n);
        ck_assert_msg(memcmp(a, b, total * sizeof(float)) == 0, "Euler != DDIM eta=0 (spacing %d)", sp);
        free(a), free(b);
    }
    cld_sampler_opts d1 = opts(CLD_SAMPLER_DDIM, 1, 0, CLD_PRED_EPS);
    cld_sampler_opts p1 = opts(CLD_SAMPLER_DPMPP_2M, 1, 0, CLD_PRED_EPS);
    a = img_run(s, d1, CLD_PRED_X0, n), b = img_run(s, p1, CLD_PRED_X0, n);
    ck_assert(memcmp(a, b, total * sizeof(float)) == 0);
    free(a), free(b);
    cld_schedule_free(s);
}
END_TEST

/* DDIM eta 0 uses no noise after x_T: from a given x_T any seed gives the same bits. */
START_TEST(test_ddim_deterministic)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_COSINE, 1000, 0, 0, 0, &s));
    gm g;
    gm_init(&g, s, DATA_IMG, CLD_PRED_EPS, 2, 5 * 3);
    size_t total = 2 * g.per;
    float *xT = tu_malloc(total * sizeof(float)), *r1 = tu_malloc(total * sizeof(float)),
          *r2 = tu_malloc(total * sizeof(float));
    tu_fill_normal(xT, total, 5, 1.0f);
    cld_sampler_opts o = opts(CLD_SAMPLER_DDIM, 30, 0, CLD_PRED_EPS);
    sample_from(s, &o, &g, 2, NULL, 1, xT, r1);
    sample_from(s, &o, &g, 2, NULL, 777, xT, r2);
    ck_assert_msg(memcmp(r1, r2, total * sizeof(float)) == 0, "DDIM eta 0 depends on the seed");
    o.eta = 0.5; /* with eta > 0 it does */
    sample_from(s, &o, &g, 2, NULL, 1, xT, r1);
    sample_from(s, &o, &g, 2, NULL, 777, xT, r2);
    ck_assert(memcmp(r1, r2, total * sizeof(float)) != 0);
    /* same seed, same bits */
    sample(s, &o, &g, 2, NULL, 31, r1);
    sample(s, &o, &g, 2, NULL, 31, r2);
    ck_assert(memcmp(r1, r2, total * sizeof(float)) == 0);
    /* a sample does not depend on its batch: sample 1 == sample 0 with first_index 1 */
    cld_ctx *ctx = tu_ctx();
    cl_mem buf;
    TU_OK(cld_buffer_alloc(ctx, total * sizeof(float), &buf));
    cld_sample_job job = {.n = 1,
                          .per_sample = g.per,
                          .seed = 31,
                          .first_index = 1,
                          .out = buf,
                          .model = gm_model,
                          .model_user = &g};
    TU_OK(cld_sampler_run(ctx, s, &o, &job));
    tu_download(ctx, buf, r2, g.per);
    ck_assert(memcmp(r1 + g.per, r2, g.per * sizeof(float)) == 0);
    cld_buffer_release(buf);
    free(xT), free(r1), free(r2);
    gm_free(&g);
    cld_schedule_free(s);
}
END_TEST

/* ------------------------------------------------- classifier-free guidance */
START_TEST(test_guidance)
{
    /* The linear schedule: x_T ~ N(0, 1) is then close to the true marginal
     * N(a_T mu, ...) (a_T = 0.006); with Stable Diffusion's schedule (a_T =
     * 0.068) the class means come out visibly shrunk, by a_T mu s. */
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 0, &s));
    const int n = 16;
    int labels[16];
    for (int i = 0; i < n; i++) labels[i] = i % 2;
    gm g;
    gm_init(&g, s, DATA_CLASS, CLD_PRED_EPS, n, 17 * 19);
    size_t total = (size_t)n * g.per;
    float *a = tu_malloc(total * sizeof(float)), *b = tu_malloc(total * sizeof(float));
    const cld_sampler_kind kinds[] = {CLD_SAMPLER_DPMPP_2M, CLD_SAMPLER_HEUN, CLD_SAMPLER_EULER_A};
    for (int k = 0; k < 3; k++) {
        cld_sampler_opts o = opts(kinds[k], 12, kinds[k] == CLD_SAMPLER_HEUN, CLD_PRED_V);
        o.null_label = NULL_LABEL;
        g.pred = CLD_PRED_V;
        /* one batched call of 2n per model evaluation */
        o.guidance = 3.0;
        g.max_batch = 0;
        g.guide = 0;
        sample(s, &o, &g, n, labels, 7, a);
        ck_assert_int_eq(g.max_batch, 2 * n);
        /* the same as a model that applies the guidance itself */
        cld_sampler_opts o1 = o;
        o1.guidance = 1.0;
        g.max_batch = 0;
        g.guide = 3.0;
        sample(s, &o1, &g, n, labels, 7, b);
        ck_assert_int_eq(g.max_batch, n);
        char what[64];
        snprintf(what, sizeof what, "%s guidance 3 vs pre-guided model", cld_sampler_name(o.kind));
        assert_same(a, b, total, 1e-5, what);
    }
    /* guidance 1: the conditional distributions; 0: the unconditional one */
    cld_sampler_opts o = opts(CLD_SAMPLER_DPMPP_2M, 50, 1, CLD_PRED_EPS);
    o.null_label = NULL_LABEL;
    g.pred = CLD_PRED_EPS;
    g.guide = 0;
    float *xT = tu_malloc(total * sizeof(float));
    stratified_xT(xT, n, g.per, g.per);
    sample_from(s, &o, &g, n, labels, 8, xT, a);
    printf("  guidance (DPM-Solver++(2M) karras 50, stratified x_T)\n");
    for (int c = 0; c < 2; c++) {
        double s1 = 0, s2 = 0, cnt = (double)(n / 2) * g.per;
        for (int i = c; i < n; i += 2)
            for (size_t j = 0; j < g.per; j++) {
                double v = a[(size_t)i * g.per + j];
                s1 += v, s2 += v * v;
            }
        moments mo = {s1 / cnt, s2 / cnt - (s1 / cnt) * (s1 / cnt), 0};
        /* half the stratified x_T per class: not exactly stratified, allow 5 SE */
        check_moments(c ? "class 1" : "class 0", mo, c ? &CLASS1 : &CLASS0, cnt, 0);
    }
    o.guidance = 0.0;
    sample_from(s, &o, &g, n, labels, 8, xT, a);
    ck_assert_int_eq(g.max_batch, 2 * n);
    check_moments("unguided", measure(a, n, g.per, 0, g.per), &CLASSES, (double)total, 1);
    free(a), free(b), free(xT);
    gm_free(&g);
    cld_schedule_free(s);
}
END_TEST

/* --------------------------------------------- timesteps, points, arguments */
START_TEST(test_points)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 0, &s));
    cld_sampler_point p[1001];
    int count;
    cld_sampler_opts o = opts(CLD_SAMPLER_DDIM, 10, 0, CLD_PRED_EPS);
    const int want[3][10] = {{900, 800, 700, 600, 500, 400, 300, 200, 100, 0},
                             {999, 899, 799, 699, 599, 499, 399, 299, 199, 99},
                             {999, 888, 777, 666, 555, 444, 333, 222, 111, 0}};
    for (int sp = 0; sp < 3; sp++) {
        o.spacing = (cld_spacing)sp;
        TU_OK(cld_sampler_points(s, &o, p, &count));
        ck_assert_int_eq(count, 11);
        for (int i = 0; i < 10; i++) {
            ck_assert_msg(p[i].t == want[sp][i], "spacing %d point %d: t %g", sp, i, p[i].t);
            ck_assert(p[i].a == sqrt(s->alpha_bar[want[sp][i]]));
        }
        ck_assert(p[10].t == -1 && p[10].a == 1 && p[10].b == 0);
    }
    o.steps = 3; /* numpy rounds 666.67 -> 667, 333.33 -> 333 */
    o.spacing = CLD_SPACING_TRAILING;
    TU_OK(cld_sampler_points(s, &o, p, &count));
    ck_assert(p[0].t == 999 && p[1].t == 666 && p[2].t == 332);
    o.steps = 1000;
    for (int sp = 0; sp < 3; sp++) {
        o.spacing = (cld_spacing)sp;
        TU_OK(cld_sampler_points(s, &o, p, &count));
        for (int i = 0; i < 1000; i++) ck_assert(p[i].t == 999 - i);
    }
    o.steps = 4;
    o.spacing = CLD_SPACING_LEADING;
    o.steps_offset = 1; /* Stable Diffusion: 751, 501, 251, 1 */
    TU_OK(cld_sampler_points(s, &o, p, &count));
    ck_assert(p[0].t == 751 && p[3].t == 1);
    /* Karras: sigma_max .. sigma_min with rho 7 in between */
    o = opts(CLD_SAMPLER_HEUN, 8, 1, CLD_PRED_EPS);
    TU_OK(cld_sampler_points(s, &o, p, &count));
    double smin = sqrt((1 - s->alpha_bar[0]) / s->alpha_bar[0]);
    double smax = sqrt((1 - s->alpha_bar[999]) / s->alpha_bar[999]);
    for (int i = 0; i < 8; i++) {
        double r = pow(smax, 1 / 7.0) + i / 7.0 * (pow(smin, 1 / 7.0) - pow(smax, 1 / 7.0));
        double sg = pow(r, 7.0), tt;
        ck_assert_msg(fabs(p[i].b / p[i].a - sg) < 1e-9 * sg, "karras %d: %g want %g", i, p[i].b / p[i].a,
                      sg);
        TU_OK(cld_schedule_sigma_to_t(s, sg, &tt));
        ck_assert(fabs(p[i].t - tt) < 1e-9);
    }
    ck_assert(fabs(p[0].t - 999) < 1e-6 && fabs(p[7].t) < 1e-6);
    /* bad options */
    o = opts(CLD_SAMPLER_DDPM, 10, 1, CLD_PRED_EPS);
    TU_STATUS(cld_sampler_points(s, &o, p, &count), CLD_ERR_INVALID_ARG);
    o = opts(CLD_SAMPLER_DDIM, 1001, 0, CLD_PRED_EPS);
    TU_STATUS(cld_sampler_points(s, &o, p, &count), CLD_ERR_INVALID_ARG);
    o = opts(CLD_SAMPLER_DDIM, 10, 0, CLD_PRED_EPS);
    o.spacing = CLD_SPACING_LEADING;
    o.steps_offset = 100; /* 900 + 100 is past T - 1 */
    TU_STATUS(cld_sampler_points(s, &o, p, &count), CLD_ERR_INVALID_ARG);
    cld_sampler_kind kind;
    TU_OK(cld_sampler_parse("dpmpp_2m", &kind));
    ck_assert(kind == CLD_SAMPLER_DPMPP_2M);
    TU_STATUS(cld_sampler_parse("plms", &kind), CLD_ERR_INVALID_ARG);
    for (int k = 0; k <= CLD_SAMPLER_HEUN; k++) {
        TU_OK(cld_sampler_parse(cld_sampler_name((cld_sampler_kind)k), &kind));
        ck_assert_int_eq(kind, k);
    }
    cld_schedule_free(s);
}
END_TEST

START_TEST(test_run_arguments)
{
    cld_ctx *ctx = tu_ctx();
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 100, 0, 0, 0, &s));
    gm g;
    gm_init(&g, s, DATA_IMG, CLD_PRED_EPS, 1, 3);
    cl_mem buf;
    TU_OK(cld_buffer_alloc(ctx, 9 * sizeof(float), &buf));
    cld_sampler_opts o = opts(CLD_SAMPLER_DDIM, 10, 0, CLD_PRED_EPS);
    cld_sample_job job = {.n = 1, .per_sample = 9, .out = buf, .model = gm_model, .model_user = &g};
    TU_OK(cld_sampler_run(ctx, s, &o, &job));
    job.n = 0;
    TU_STATUS(cld_sampler_run(ctx, s, &o, &job), CLD_ERR_INVALID_ARG);
    job.n = 1;
    job.model = NULL;
    TU_STATUS(cld_sampler_run(ctx, s, &o, &job), CLD_ERR_INVALID_ARG);
    job.model = gm_model;
    o.steps = 101;
    TU_STATUS(cld_sampler_run(ctx, s, &o, &job), CLD_ERR_INVALID_ARG);
    o.steps = 10;
    o.eta = -1;
    TU_STATUS(cld_sampler_run(ctx, s, &o, &job), CLD_ERR_INVALID_ARG);
    o.eta = 0;
    /* a failing model stops the run with its status */
    g.cap = 0;
    TU_STATUS(cld_sampler_run(ctx, s, &o, &job), CLD_ERR_SHAPE);
    gm_free(&g);
    cld_buffer_release(buf);
    cld_schedule_free(s);
}
END_TEST

/* ------------------------------------------------------ error against steps */
#define TAB_N 4
#define TAB_HW (16 * 16)
static const int tab_steps[] = {5, 10, 20, 50, 100, 200, 500, 1000};
#define N_TAB ((int)(sizeof tab_steps / sizeof tab_steps[0]))

/* RMS over pixels of (output - exact) for Gaussian data. The exact result is
 * the probability-flow ODE from the first point (sigma_T) down to
 * sigma_min = sigma(t = 0), followed by the exact denoiser there, which is
 * how every sampler ends (its last step, to sigma = 0, returns D):
 *   x~(sigma) - mu = (x~_T - mu) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_T^2)
 *   D(x~, sigma) = mu + s^2 (x~ - mu) / (s^2 + sigma^2).
 * *jump gets the RMS distance of that result from the sigma = 0 solution. */
static double ode_error(const cld_schedule *s, const cld_sampler_opts *o, gm *g, double *jump)
{
    size_t total = (size_t)TAB_N * g->per;
    float *x = tu_malloc(total * sizeof(float)), *xT = tu_malloc(total * sizeof(float));
    sample(s, o, g, TAB_N, NULL, 4242, x);
    cld_noise_key key = {4242, CLD_NOISE_STREAM_SAMPLER, 0, 0};
    TU_OK(cld_noise_host(&key, TAB_N, g->per, xT));
    cld_sampler_point p0[1001];
    TU_OK(cld_sampler_points(s, o, p0, NULL));
    double sT = p0[0].b / p0[0].a, smin = exp(s->log_sigma[0]), acc = 0, accj = 0;
    for (size_t i = 0; i < total; i++) {
        const chan *c = &g->ch[(i % g->per) / g->hw];
        double mu = c->m[0], sd = c->s[0], y = xT[i] / p0[0].a - mu;
        double flow0 = sd * y / sqrt(sd * sd + sT * sT); /* x~(0) - mu */
        double exact = mu + flow0 * sd / sqrt(sd * sd + smin * smin);
        acc += (x[i] - exact) * (x[i] - exact);
        accj += (exact - mu - flow0) * (exact - mu - flow0);
    }
    if (jump) *jump = sqrt(accj / total);
    free(x), free(xT);
    return sqrt(acc / total);
}

START_TEST(test_ode_error_table)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_SCALED_LINEAR, 1000, 0, 0, 0, &s));
    gm g;
    gm_init(&g, s, DATA_GAUSS, CLD_PRED_EPS, TAB_N, TAB_HW);
    const struct {
        cld_sampler_kind kind;
        int karras;
    } rows[] = {{CLD_SAMPLER_DDIM, 0},     {CLD_SAMPLER_EULER, 1}, {CLD_SAMPLER_DPMPP_2M, 0},
                {CLD_SAMPLER_DPMPP_2M, 1}, {CLD_SAMPLER_HEUN, 0},  {CLD_SAMPLER_HEUN, 1}};
    enum { R_DDIM, R_EULER_K, R_DPM, R_DPM_K, R_HEUN, R_HEUN_K, N_ROWS };
    double err[N_ROWS][N_TAB], jump = 0;
    double t0 = tu_now();
    printf("\nRMS error against the exact probability-flow ODE solution; Gaussian pixels N(0.5, 0.5^2),\n"
           "N(-0.3, 0.8^2), N(0.1, 0.3^2); scaled-linear schedule (Stable Diffusion), T = 1000;\n"
           "eps model; trailing spacing unless Karras; float32 on the device:\n");
    printf("%-22s", "sampler \\ steps");
    for (int j = 0; j < N_TAB; j++) printf(" %9d", tab_steps[j]);
    printf("\n");
    for (int r = 0; r < N_ROWS; r++) {
        char name[40];
        snprintf(name, sizeof name, "%s%s", cld_sampler_name(rows[r].kind),
                 rows[r].karras                     ? " karras"
                 : rows[r].kind == CLD_SAMPLER_DDIM ? " eta=0"
                                                    : "");
        printf("%-22s", name);
        for (int j = 0; j < N_TAB; j++) {
            cld_sampler_opts o = opts(rows[r].kind, tab_steps[j], rows[r].karras, CLD_PRED_EPS);
            err[r][j] = ode_error(s, &o, &g, &jump);
            printf(" %9.2e", err[r][j]);
        }
        printf("\n");
    }
    printf("(the last step jumps from sigma_min = %.4f to 0 with the denoiser; against the\n"
           "sigma = 0 ODE solution every entry carries in addition that jump, %.2e RMS; %.1f s)\n",
           exp(s->log_sigma[0]), jump, tu_now() - t0);
    /* DDIM converges to the ODE solution, at first order */
    for (int j = 1; j < N_TAB; j++)
        ck_assert_msg(err[R_DDIM][j] < err[R_DDIM][j - 1], "DDIM error does not shrink at %d steps",
                      tab_steps[j]);
    ck_assert_msg(err[R_DDIM][N_TAB - 1] < err[R_DDIM][1] / 50, "DDIM: no convergence");
    double o1 = log(err[R_DDIM][3] / err[R_DDIM][5]) / log(4.0); /* 50 -> 200 */
    ck_assert_msg(o1 > 0.8 && o1 < 1.3, "DDIM order %g", o1);
    /* DPM-Solver++(2M) and Heun (Karras) are second order */
    double o2 = log(err[R_DPM_K][3] / err[R_DPM_K][5]) / log(4.0);
    double oh = log(err[R_HEUN_K][3] / err[R_HEUN_K][5]) / log(4.0);
    printf("observed order 50 -> 200 steps: ddim %.2f, dpmpp_2m karras %.2f, heun karras %.2f\n", o1, o2, oh);
    ck_assert_msg(o2 > 1.6, "DPM-Solver++(2M) order %g", o2);
    ck_assert_msg(oh > 1.6, "Heun order %g", oh);
    /* DPM-Solver++(2M) at 20 steps: DDIM needs well over 100 steps for that */
    int need = 0;
    for (int j = 0; j < N_TAB && !need; j++)
        if (err[R_DDIM][j] <= err[R_DPM_K][2]) need = tab_steps[j];
    printf("dpmpp_2m karras at 20 steps: %.2e; DDIM reaches it first at %d steps\n", err[R_DPM_K][2], need);
    ck_assert_msg(need == 0 || need > 200, "DDIM matches DPM-Solver++(2M) at 20 steps already at %d", need);
    gm_free(&g);
    cld_schedule_free(s);
}
END_TEST

static Suite *sampler_suite(void)
{
    Suite *s = suite_create("sampler");
    TCase *tc = tcase_create("basics");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_points);
    tcase_add_test(tc, test_run_arguments);
    tcase_add_test(tc, test_against_reference);
    tcase_add_test(tc, test_ddim_deterministic);
    tcase_add_test(tc, test_sampler_identities);
    tcase_add_test(tc, test_prediction_types_agree);
    tcase_add_test(tc, test_guidance);
    suite_add_tcase(s, tc);
    tc = tcase_create("distribution");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_distribution, 0, N_DIST_CASES);
    tcase_add_loop_test(tc, test_distribution_zero_snr, 0, 3);
    suite_add_tcase(s, tc);
    tc = tcase_create("convergence");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_ode_error_table);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep the printed tables when a forked test fails */
    return tu_run_suite(sampler_suite());
}
