/* Learned variance (vlb.c, cl/vlb.cl).
 *  - the double references: normal_kl against a closed form and Simpson
 *    integration of p log(p/q); the discretized Gaussian likelihood against
 *    Simpson integration of the approximate CDF's density over each bin
 *    (edges open), and of the true Gaussian within the approximation's
 *    measured error;
 *  - cld_op_vlb_loss against improved-diffusion's _vb_terms_bpd written in
 *    double here from the schedule (not from cld_vlb_coefs), for every
 *    prediction type, t = 0, 1, mid, T-1, decoder tails and the 1e-12
 *    clamp; its gradient against central differences of that reference on
 *    the variance half, exactly zero on the prediction half; the hybrid loss
 *    as the trainer builds it;
 *  - cld_vlb_bound against the same reference summed over t plus the prior,
 *    its noise convention, batching, labels, the strided estimate, clipping,
 *    and a known answer (point-mass data, exact model: only the decoder and
 *    prior terms remain);
 *  - cld_sampler_run_learned_var: frac 0 and 1 against cld_sampler_run's
 *    posterior and beta variances, guidance, a per-element frac against a
 *    double reference, batch independence and bad arguments; the other
 *    samplers through cld_pred_half_fn. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opcheck.h"
#include "testutil.h"

#define LN2 0.69314718055994530942
#define K0 0.79788456080286535588 /* sqrt(2 / pi) */

/* ------------------------------------------------------ double references */
static double simpson(double (*f)(double, const double *), const double *par, double lo, double hi, int n)
{
    double h = (hi - lo) / n, acc = f(lo, par) + f(hi, par);
    for (int i = 1; i < n; i++) acc += (i & 1 ? 4.0 : 2.0) * f(lo + i * h, par);
    return acc * h / 3.0;
}

static double normal_pdf(double x, double m, double lv)
{
    return exp(-0.5 * (x - m) * (x - m) / exp(lv)) / sqrt(2.0 * 3.14159265358979323846 * exp(lv));
}

/* p log(p / q) for p = N(par[0], e^par[1]), q = N(par[2], e^par[3]) */
static double kl_integrand(double x, const double *par)
{
    double p = normal_pdf(x, par[0], par[1]);
    return p > 0 ? p * (log(p) - log(normal_pdf(x, par[2], par[3]))) : 0.0;
}

START_TEST(test_normal_kl)
{
    double kl;
    const double same[][2] = {{0, 0}, {0.7, -3.1}, {-2.5, 4.0}, {1e-3, -20.0}};
    for (int i = 0; i < 4; i++) {
        TU_OK(cld_vlb_normal_kl(same[i][0], same[i][1], same[i][0], same[i][1], &kl));
        ck_assert_msg(fabs(kl) <= 1e-15, "KL(p || p) = %g", kl); /* -1 + lv - lv rounds */
    }
    /* KL(N(0, 1) || N(1, 4)) = ln(2/1) + (1 + 1) / (2 * 4) - 1/2 = ln 2 - 1/4 */
    TU_OK(cld_vlb_normal_kl(0.0, 0.0, 1.0, log(4.0), &kl));
    ck_assert_msg(fabs(kl - (LN2 - 0.25)) < 1e-15, "KL = %.17g, want ln 2 - 1/4", kl);
    const double cases[][4] = {{0.3, -1.2, -0.4, 0.5}, {-1.0, 0.8, 0.2, -0.6}, {0.05, -4.0, 0.0, -3.5}};
    for (int i = 0; i < 3; i++) {
        const double *c = cases[i];
        double sd = exp(0.5 * c[1]);
        double want = simpson(kl_integrand, c, c[0] - 14 * sd, c[0] + 14 * sd, 40000);
        TU_OK(cld_vlb_normal_kl(c[0], c[1], c[2], c[3], &kl));
        printf("  normal_kl case %d: %.15f, Simpson %.15f\n", i, kl, want);
        ck_assert_msg(fabs(kl - want) <= 1e-10 * fmax(1.0, want), "KL %.15g vs integral %.15g", kl, want);
    }
}
END_TEST

/* Density of improved-diffusion's approximate CDF 0.5 (1 + tanh(u(z))) at
 * x for N(par[0], e^(2 par[1])); and the true Gaussian density. */
static double approx_density(double x, const double *par)
{
    double s = exp(par[1]), z = (x - par[0]) / s, u = K0 * (z + 0.044715 * z * z * z);
    double ch = cosh(u);
    return 0.5 / (ch * ch) * K0 * (1.0 + 3 * 0.044715 * z * z) / s;
}
static double true_density(double x, const double *par) { return normal_pdf(x, par[0], 2.0 * par[1]); }

START_TEST(test_discretized_gaussian)
{
    /* the approximation's worst CDF error, scanned */
    double E = 0;
    for (double z = -8; z <= 8; z += 1e-4) {
        double a = 0.5 * (1 + tanh(K0 * (z + 0.044715 * z * z * z))), t = 0.5 * erfc(-z / sqrt(2.0));
        E = fmax(E, fabs(a - t));
    }
    printf("  max |approximate - true normal CDF| = %.3e\n", E);
    const double xs[] = {-1.0, -1.0 + 2.0 / 255, -0.2, 0.0, 77.0 / 127.5 - 1, 1.0};
    const double means[] = {-0.98, -0.3, 0.0, 0.01, 0.6, 1.03};
    const double lss[] = {log(0.004), log(0.02), log(0.3), 0.0};
    double worst = 0, worst_true = 0;
    for (int a = 0; a < 6; a++)
        for (int b = 0; b < 6; b++)
            for (int c = 0; c < 4; c++) {
                double x = xs[a], par[2] = {means[b], lss[c]}, nll;
                TU_OK(cld_vlb_discretized_gaussian_nll(x, par[0], par[1], &nll));
                double s = exp(par[1]), lo = x - 1.0 / 255, hi = x + 1.0 / 255;
                double farlo = par[0] - 60 * s, farhi = par[0] + 60 * s; /* beyond: mass < 1e-300 */
                if (x < -0.999) lo = fmin(farlo, hi);
                if (x > 0.999) hi = fmax(farhi, lo);
                double mass = simpson(approx_density, par, lo, hi, 20000);
                double mtrue = simpson(true_density, par, lo, hi, 20000);
                double want = -log(fmax(mass, 1e-12));
                double e = fabs(nll - want) / fmax(1.0, want);
                worst = fmax(worst, e);
                ck_assert_msg(e <= 1e-9, "x %g mean %g log_scale %g: nll %.15g, Simpson %.15g", x, par[0],
                              par[1], nll, want);
                /* the mass is a difference of two CDFs (one at an edge bin) */
                double mass_formula = exp(-nll);
                if (nll < 27.6) {
                    ck_assert_msg(fabs(mass_formula - mtrue) <= 2 * E + 1e-12,
                                  "x %g mean %g: mass %.6g vs true Gaussian %.6g", x, par[0], mass_formula,
                                  mtrue);
                    worst_true = fmax(worst_true, fabs(mass_formula - mtrue));
                }
            }
    printf("  discretized NLL vs Simpson of the approximate density: max rel err %.2e; "
           "bin mass vs the true Gaussian: max |diff| %.2e (bound 2 x %.2e)\n",
           worst, worst_true, E);
    /* by hand: x = mean = 0, sigma = 1/255: mass = Phi~(1) - Phi~(-1) = tanh(K0 (1 + 0.044715)) */
    double nll;
    TU_OK(cld_vlb_discretized_gaussian_nll(0.0, 0.0, log(1.0 / 255), &nll));
    ck_assert_msg(fabs(nll + log(tanh(K0 * 1.044715))) < 1e-14, "nll %.17g", nll);
    /* a far-off mean: the clamp */
    TU_OK(cld_vlb_discretized_gaussian_nll(0.0, 0.5, log(0.001), &nll));
    ck_assert_msg(fabs(nll + log(1e-12)) < 1e-12, "clamped nll %.17g", nll);
}
END_TEST

/* ---------------------------- improved-diffusion's term, in long double */
/* The formulas of gaussian_diffusion.py / losses.py evaluated in long double:
 * the decoder's bin mass is a difference of two CDFs near 1 in its tails,
 * which double leaves ~1e-16 / mass relative error that the central
 * differences below would amplify by 1 / h. */
typedef long double LD;
static LD ld_cdf(LD x) { return 0.5L * (1 + tanhl((LD)K0 * (x + 0.044715L * x * x * x))); }
static LD ld_nll(LD x, LD mean, LD log_scale)
{
    LD c = x - mean, inv = expl(-log_scale);
    LD cp = ld_cdf(inv * (c + 1.0L / 255)), cm = ld_cdf(inv * (c - 1.0L / 255));
    LD lp = x < -0.999L  ? logl(fmaxl(cp, 1e-12L))
            : x > 0.999L ? logl(fmaxl(1 - cm, 1e-12L))
                         : logl(fmaxl(cp - cm, 1e-12L));
    return -lp;
}
static LD ld_kl(LD m1, LD lv1, LD m2, LD lv2)
{
    return 0.5L * (-1 + lv2 - lv1 + expl(lv1 - lv2) + (m1 - m2) * (m1 - m2) * expl(-lv2));
}

/* _vb_terms_bpd of one sample (M elements) from the schedule's alpha_bar and
 * beta: p, v the model output halves; bits/dim. */
static double ref_term(const cld_schedule *s, cld_pred_type pred, int t, const float *p, const float *v,
                       const float *xt, const float *x0, size_t M, int clip)
{
    LD ab = s->alpha_bar[t], ab_prev = t ? s->alpha_bar[t - 1] : 1.0, beta = s->beta[t];
    LD abc = fmaxl(ab, 0x1p-24L), a = sqrtl(abc), b = sqrtl(1 - abc);
    LD coef1 = beta * sqrtl(ab_prev) / (1 - ab), coef2 = (1 - ab_prev) * sqrtl(1 - beta) / (1 - ab);
    /* posterior variance, t = 0 replaced by t = 1 */
    int tv = t ? t : 1;
    LD pv = (LD)s->beta[tv] * (1 - (LD)s->alpha_bar[tv - 1]) / (1 - (LD)s->alpha_bar[tv]);
    LD min_log = logl(pv), max_log = logl(beta), acc = 0;
    for (size_t j = 0; j < M; j++) {
        LD x = xt[j], x0h;
        if (pred == CLD_PRED_EPS)
            x0h = sqrtl(1 / abc) * x - sqrtl(1 / abc - 1) * p[j];
        else if (pred == CLD_PRED_V)
            x0h = a * x - b * p[j];
        else
            x0h = p[j];
        if (clip) x0h = fminl(1, fmaxl(-1, x0h));
        LD mean = coef1 * x0h + coef2 * x, frac = ((LD)v[j] + 1) / 2;
        LD lv = frac * max_log + (1 - frac) * min_log;
        acc += t == 0 ? ld_nll(x0[j], mean, 0.5L * lv) : ld_kl(coef1 * x0[j] + coef2 * x, min_log, mean, lv);
    }
    return (double)(acc / ((LD)M * (LD)LN2));
}

/* x_0 of 8-bit images: k / 127.5 - 1 with k uniform, every 11th 0 or 255. */
static void fill_pixels(float *x, size_t n, uint64_t seed)
{
    uint64_t st = seed;
    for (size_t i = 0; i < n; i++) {
        int k = (int)(opc_uniform(&st) * 256);
        if (i % 11 == 3) k = 0;
        if (i % 11 == 7) k = 255;
        x[i] = (float)(k / 127.5 - 1.0);
    }
}

/* A batch: x_0, x_t = a x_0 + b eps, and a model output (N, 2C, ...) whose
 * prediction is the true target plus noise of scale sc[n] and whose v is
 * uniform in [-1.5, 1.5]. */
typedef struct batch {
    int N, C, HW;
    size_t M;
    int t[8];
    float *x0, *xt, *out, *target;
} batch;

static void make_batch(batch *B, const cld_schedule *s, cld_pred_type pred, int N, int C, int HW,
                       const int *t, const double *sc, uint64_t seed)
{
    B->N = N, B->C = C, B->HW = HW, B->M = (size_t)C * HW;
    memcpy(B->t, t, (size_t)N * sizeof(int));
    size_t M = B->M;
    B->x0 = tu_malloc((size_t)N * M * sizeof(float));
    B->xt = tu_malloc((size_t)N * M * sizeof(float));
    B->out = tu_malloc((size_t)N * 2 * M * sizeof(float));
    B->target = tu_malloc((size_t)N * M * sizeof(float));
    fill_pixels(B->x0, (size_t)N * M, seed);
    uint64_t st = seed * 31 + 7;
    for (int n = 0; n < N; n++) {
        double ab = fmax(s->alpha_bar[t[n]], 0x1p-24), a = sqrt(ab), b = sqrt(1 - ab);
        for (size_t j = 0; j < M; j++) {
            double x0 = B->x0[n * M + j], e = opc_normal(&st);
            double x = a * x0 + b * e;
            double target = pred == CLD_PRED_EPS ? e : (pred == CLD_PRED_V ? a * e - b * x0 : x0);
            B->xt[n * M + j] = (float)x;
            B->target[n * M + j] = (float)target;
            B->out[n * 2 * M + j] = (float)(target + sc[n] * opc_normal(&st));
            B->out[n * 2 * M + M + j] = (float)(3.0 * opc_uniform(&st) - 1.5);
        }
    }
}

static void free_batch(batch *B) { free(B->x0), free(B->xt), free(B->out), free(B->target); }

static double ref_loss(const cld_schedule *s, cld_pred_type pred, const batch *B, const float *out)
{
    double acc = 0;
    for (int n = 0; n < B->N; n++) {
        const float *o = out + (size_t)n * 2 * B->M;
        acc += ref_term(s, pred, B->t[n], o, o + B->M, B->xt + n * B->M, B->x0 + n * B->M, B->M, 0);
    }
    return acc / B->N;
}

/* The graph of the hybrid loss: out (N, 2C, ...), x_t, x_0, coefs, and with
 * lambda > 0 L = mse(first half, target, weights) + lambda L_vlb. */
typedef struct vgraph {
    cld_graph *g;
    cld_tensor *out, *xt, *x0, *coefs, *target, *weights, *loss, *dout;
} vgraph;

static void build_vgraph(vgraph *V, const batch *B, int H, int W, double lambda)
{
    int os[4] = {B->N, 2 * B->C, H, W}, xs[4] = {B->N, B->C, H, W}, cs[2] = {B->N, CLD_VLB_COEFS},
        ns[1] = {B->N};
    memset(V, 0, sizeof *V);
    TU_OK(cld_graph_create(tu_ctx(), NULL, &V->g));
    TU_OK(cld_graph_input(V->g, "model_out", 4, os, 1, &V->out));
    TU_OK(cld_graph_input(V->g, "x_t", 4, xs, 0, &V->xt));
    TU_OK(cld_graph_input(V->g, "x_0", 4, xs, 0, &V->x0));
    TU_OK(cld_graph_input(V->g, "coefs", 2, cs, 0, &V->coefs));
    cld_tensor *vlb;
    TU_OK(cld_op_vlb_loss(V->g, V->out, V->xt, V->x0, V->coefs, &vlb));
    V->loss = vlb;
    if (lambda > 0) {
        cld_tensor *first, *mse, *scaled;
        TU_OK(cld_graph_input(V->g, "target", 4, xs, 0, &V->target));
        TU_OK(cld_graph_input(V->g, "weights", 1, ns, 0, &V->weights));
        TU_OK(cld_op_slice_channels(V->g, V->out, 0, B->C, &first));
        TU_OK(cld_op_mse_loss(V->g, first, V->target, V->weights, &mse));
        TU_OK(cld_op_scale(V->g, vlb, (float)lambda, &scaled));
        TU_OK(cld_op_add(V->g, mse, scaled, &V->loss));
    }
    TU_OK(cld_graph_set_output(V->g, V->loss));
    TU_OK(cld_graph_backward(V->g, V->loss));
    TU_OK(cld_graph_set_poison(V->g, 1));
    TU_OK(cld_graph_plan(V->g, NULL));
    TU_OK(cld_tensor_grad(V->out, &V->dout));
}

static void run_vgraph(vgraph *V, const cld_schedule *s, cld_pred_type pred, const batch *B, float *loss,
                       float *grad)
{
    float *coefs = tu_malloc((size_t)B->N * CLD_VLB_COEFS * sizeof(float));
    TU_OK(cld_vlb_coefs(s, pred, B->N, B->t, coefs));
    TU_OK(cld_tensor_write(V->g, V->out, B->out));
    TU_OK(cld_tensor_write(V->g, V->xt, B->xt));
    TU_OK(cld_tensor_write(V->g, V->x0, B->x0));
    TU_OK(cld_tensor_write(V->g, V->coefs, coefs));
    TU_OK(cld_graph_run(V->g));
    TU_OK(cld_tensor_read(V->g, V->loss, loss));
    TU_OK(cld_tensor_read(V->g, V->dout, grad));
    free(coefs);
}

typedef struct loss_case {
    cld_schedule_kind kind;
    int zero_snr;
    cld_pred_type pred;
} loss_case;
static const loss_case LOSS_CASES[] = {
    {CLD_SCHEDULE_LINEAR, 0, CLD_PRED_EPS},
    {CLD_SCHEDULE_COSINE, 0, CLD_PRED_V},
    {CLD_SCHEDULE_LINEAR, 0, CLD_PRED_X0},
    {CLD_SCHEDULE_COSINE, 1, CLD_PRED_V},
};

/* N = 6, C = 3, 5 x 7; t = 0, 1, mid, T-1 and two more at t = 0 whose
 * predictions are 3 and 30 off: the decoder's tails and its 1e-12 clamp. */
START_TEST(test_vlb_loss)
{
    const loss_case *lc = &LOSS_CASES[_i];
    const char *preds[] = {"eps", "v", "x0"};
    cld_schedule *s;
    TU_OK(cld_schedule_create(lc->kind, 1000, 0, 0, lc->zero_snr, &s));
    const int N = 6, C = 3, H = 5, W = 7, t[6] = {0, 1, 517, 999, 0, 0};
    const double sc[6] = {0.1, 0.5, 0.5, 0.5, 3.0, 30.0};
    batch B;
    make_batch(&B, s, lc->pred, N, C, H * W, t, sc, 101 + _i);
    const size_t M = B.M, nout = (size_t)N * 2 * M;
    vgraph V;
    build_vgraph(&V, &B, H, W, 0);
    float loss, *grad = tu_malloc(nout * sizeof(float));
    run_vgraph(&V, s, lc->pred, &B, &loss, grad);
    double want = ref_loss(s, lc->pred, &B, B.out);
    double ferr = fabs(loss - want) / fabs(want);
    /* gradient: central differences of the double reference, v half */
    double *o = tu_malloc(nout * sizeof(double)), gmax = 0, gerr = 0;
    float *of = tu_malloc(nout * sizeof(float));
    memcpy(of, B.out, nout * sizeof(float));
    int nonzero_pred = 0;
    for (int n = 0; n < N; n++)
        for (size_t j = 0; j < 2 * M; j++) {
            size_t i = (size_t)n * 2 * M + j;
            if (j < M) {
                nonzero_pred += grad[i] != 0.0f;
                continue;
            }
            /* the reference reads float v: perturb by representable steps */
            float keep = of[i], h = 1.0f / 1024;
            of[i] = keep + h;
            double lp = ref_loss(s, lc->pred, &B, of);
            of[i] = keep - h;
            double lm = ref_loss(s, lc->pred, &B, of);
            of[i] = keep;
            o[i] = (lp - lm) / (2.0 * h);
            gmax = fmax(gmax, fabs(o[i]));
        }
    for (int n = 0; n < N; n++)
        for (size_t j = M; j < 2 * M; j++) {
            size_t i = (size_t)n * 2 * M + j;
            if (fabs(grad[i] - o[i]) > gerr && getenv("VLB_DEBUG"))
                printf("    n %d j %zu: grad %.6e fd %.6e v %g p %g x0 %g xt %g\n", n, j - M, grad[i], o[i],
                       B.out[i], B.out[i - M], B.x0[n * M + j - M], B.xt[n * M + j - M]);
            gerr = fmax(gerr, fabs(grad[i] - o[i]));
        }
    gerr /= gmax;
    printf("  vlb_loss %s%s %s: loss %.6f (ref %.6f) rel err %.2e; d/dv vs central differences %.2e; "
           "prediction half: %d nonzero\n",
           cld_schedule_name(lc->kind), lc->zero_snr ? " zero-snr" : "", preds[lc->pred], loss, want, ferr,
           gerr, nonzero_pred);
    ck_assert_msg(ferr <= 2e-6, "loss %.9g vs reference %.9g: rel err %.3g", loss, want, ferr);
    ck_assert_msg(gerr <= 1e-4, "gradient vs central differences: %.3g of the largest", gerr);
    ck_assert_int_eq(nonzero_pred, 0);
    free(o), free(of), free(grad);
    cld_graph_free(V.g);
    free_batch(&B);
    cld_schedule_free(s);
}
END_TEST

/* The hybrid loss as the trainer builds it: L_simple (Min-SNR-weighted MSE
 * on the first C channels, through cld_op_slice_channels) + lambda L_vlb. */
START_TEST(test_hybrid_loss)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 0, &s));
    const int N = 3, C = 3, H = 5, W = 7, t[3] = {0, 400, 999};
    const double sc[3] = {0.2, 0.2, 0.2}, lambda = 0.37;
    batch B;
    make_batch(&B, s, CLD_PRED_EPS, N, C, H * W, t, sc, 7);
    const size_t M = B.M, nout = (size_t)N * 2 * M;
    float w[3];
    for (int n = 0; n < N; n++) {
        double wd;
        TU_OK(cld_loss_weight(s, t[n], CLD_PRED_EPS, CLD_LOSS_MIN_SNR, 5.0, &wd));
        w[n] = (float)wd;
    }
    vgraph V, V0;
    build_vgraph(&V, &B, H, W, lambda);
    build_vgraph(&V0, &B, H, W, 0);
    TU_OK(cld_tensor_write(V.g, V.target, B.target));
    TU_OK(cld_tensor_write(V.g, V.weights, w));
    float loss, vloss, *grad = tu_malloc(nout * sizeof(float)), *vgrad = tu_malloc(nout * sizeof(float));
    run_vgraph(&V, s, CLD_PRED_EPS, &B, &loss, grad);
    run_vgraph(&V0, s, CLD_PRED_EPS, &B, &vloss, vgrad);
    double mse = 0;
    float *want = tu_malloc(nout * sizeof(float));
    for (int n = 0; n < N; n++)
        for (size_t j = 0; j < M; j++) {
            double d = (double)B.out[n * 2 * M + j] - B.target[n * M + j];
            mse += w[n] * d * d / ((double)N * M);
            want[n * 2 * M + j] = (float)(2.0 * w[n] * d / ((double)N * M));
            want[n * 2 * M + M + j] = (float)(lambda * vgrad[n * 2 * M + M + j]);
        }
    double ref = mse + lambda * ref_loss(s, CLD_PRED_EPS, &B, B.out);
    size_t at;
    double gerr = tu_max_rel_err(grad, want, nout, 1e-3, &at), lerr = fabs(loss - ref) / ref;
    printf("  hybrid loss %.6f (ref %.6f) rel err %.2e; gradient rel err %.2e\n", loss, ref, lerr, gerr);
    ck_assert_msg(lerr <= 2e-6, "hybrid loss %.9g vs %.9g", loss, ref);
    ck_assert_msg(gerr <= 1e-5, "hybrid gradient at [%zu]: %g vs %g", at, grad[at], want[at]);
    free(grad), free(vgrad), free(want);
    cld_graph_free(V.g);
    cld_graph_free(V0.g);
    free_batch(&B);
    cld_schedule_free(s);
}
END_TEST

START_TEST(test_vlb_arguments)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 100, 0, 0, 0, &s));
    float row[CLD_VLB_COEFS];
    int bad = 100, zero = 0;
    TU_STATUS(cld_vlb_coefs(s, CLD_PRED_EPS, 1, &bad, row), CLD_ERR_INVALID_ARG);
    TU_OK(cld_vlb_coefs(s, CLD_PRED_EPS, 1, &zero, row));
    ck_assert_msg(row[6] == 1.0f && row[2] == 1.0f && row[3] == 0.0f, "t = 0 row: decoder %g, c0 %g, ct %g",
                  row[6], row[2], row[3]);
    cld_graph *g;
    cld_tensor *o, *x, *x2, *c, *cb, *l;
    int os[4] = {2, 6, 3, 3}, xs[4] = {2, 3, 3, 3}, x2s[4] = {2, 2, 3, 3}, cs[2] = {2, CLD_VLB_COEFS},
        cbs[2] = {2, 4};
    TU_OK(cld_graph_create(tu_ctx(), NULL, &g));
    TU_OK(cld_graph_input(g, "o", 4, os, 1, &o));
    TU_OK(cld_graph_input(g, "x", 4, xs, 0, &x));
    TU_OK(cld_graph_input(g, "x2", 4, x2s, 0, &x2));
    TU_OK(cld_graph_input(g, "c", 2, cs, 0, &c));
    TU_OK(cld_graph_input(g, "cb", 2, cbs, 0, &cb));
    TU_STATUS(cld_op_vlb_loss(g, o, x2, x2, c, &l), CLD_ERR_SHAPE); /* 6 != 2 * 2 channels */
    TU_STATUS(cld_op_vlb_loss(g, o, x, x2, c, &l), CLD_ERR_SHAPE);
    TU_STATUS(cld_op_vlb_loss(g, o, x, x, cb, &l), CLD_ERR_SHAPE);
    TU_STATUS(cld_op_vlb_loss(g, o, x, x, NULL, &l), CLD_ERR_INVALID_ARG);
    TU_OK(cld_op_vlb_loss(g, o, x, x, c, &l));
    cld_graph_free(g);
    cld_schedule_free(s);
}
END_TEST

/* ------------------------------------------------------------ the bound */
/* A host model: a smooth function of (x, t) (mode 0), or the exact model
 * of point-mass data x0p with v = -1 (mode 1). Records which (image, t)
 * pairs it saw by matching x_t with the documented noise. */
typedef struct bm {
    cld_ctx *ctx;
    const cld_schedule *s;
    cld_pred_type pred;
    int mode, n;
    size_t M;
    const float *x0p;     /* mode 1: (M) */
    const float *xt_want; /* (T, n, M) expected x_t, or NULL */
    const int *labels;    /* expected labels, or NULL */
    int *seen;            /* (T, n) */
    int bad_xt, bad_label;
    double xt_err;
    float *xh, *oh;
    size_t cap;
} bm;

static void bm_out(const bm *m, double x, int t, int j, double *p, double *v)
{
    double a, b;
    TU_OK(cld_schedule_ab(m->s, t, &a, &b));
    if (m->mode == 1) {
        double x0 = m->x0p[j], e = (x - a * x0) / b;
        *p = m->pred == CLD_PRED_EPS ? e : (m->pred == CLD_PRED_V ? a * e - b * x0 : x0);
        *v = -1.0;
        return;
    }
    *p = 0.7 * x + 0.2 * sin(3 * x) + 0.1 * t / m->s->T;
    *v = 0.9 * tanh(x) + 0.2 * cos(t);
}

static cld_status bm_model(void *user, cl_mem x, size_t xo, cl_mem out, size_t oo, int nb, const float *t,
                           const int *labels)
{
    bm *m = user;
    size_t M = m->M;
    if ((size_t)nb * 2 * M > m->cap) return CLD_ERR_SHAPE;
    cld_status st = cld_buffer_read(m->ctx, x, xo * sizeof(float), (size_t)nb * M * sizeof(float), m->xh);
    if (st) return st;
    for (int k = 0; k < nb; k++) {
        int ti = (int)t[k];
        const float *xk = m->xh + k * M;
        if (m->xt_want) {
            int best = -1;
            double be = INFINITY;
            for (int i = 0; i < m->n; i++) {
                double e = tu_max_abs_err(xk, m->xt_want + ((size_t)ti * m->n + i) * M, M, NULL);
                if (e < be) be = e, best = i;
            }
            m->xt_err = fmax(m->xt_err, be);
            if (be > 1e-6) m->bad_xt++;
            m->seen[ti * m->n + best]++;
            if (m->labels && (!labels || labels[k] != m->labels[best])) m->bad_label++;
        }
        for (size_t j = 0; j < M; j++) {
            double p, v;
            bm_out(m, xk[j], ti, (int)j, &p, &v);
            m->oh[k * 2 * M + j] = (float)p;
            m->oh[k * 2 * M + M + j] = (float)v;
        }
    }
    return cld_buffer_write(m->ctx, out, oo * sizeof(float), (size_t)nb * 2 * M * sizeof(float), m->oh);
}

typedef struct prog {
    long calls, last, total;
    int bad;
} prog;
static void on_prog(void *user, long done, long total)
{
    prog *p = user;
    if (done <= p->last) p->bad = 1;
    p->calls++, p->last = done, p->total = total;
}

/* x_t of every (t, image) from the documented noise, in double then float. */
static float *expected_xt(const cld_schedule *s, const float *x0, int n, size_t M, uint64_t seed,
                          uint32_t first)
{
    float *xt = tu_malloc((size_t)s->T * n * M * sizeof(float)), *z = tu_malloc(M * sizeof(float));
    for (int t = 0; t < s->T; t++)
        for (int i = 0; i < n; i++) {
            cld_noise_key key = {seed, CLD_NOISE_STREAM_VLB, first + (uint32_t)i, (uint32_t)t};
            TU_OK(cld_noise_host(&key, 1, M, z));
            double a = sqrt(s->alpha_bar[t]), b = sqrt(1 - s->alpha_bar[t]);
            for (size_t j = 0; j < M; j++)
                xt[((size_t)t * n + i) * M + j] = (float)(a * x0[i * M + j] + b * z[j]);
        }
    free(z);
    return xt;
}

static double ref_prior(const cld_schedule *s, const float *x0, size_t M)
{
    double ab = s->alpha_bar[s->T - 1], acc = 0, kl;
    for (size_t j = 0; j < M; j++) {
        TU_OK(cld_vlb_normal_kl(sqrt(ab) * x0[j], log(1 - ab), 0, 0, &kl));
        acc += kl;
    }
    return acc / ((double)M * LN2);
}

/* terms (T, n) of the reference on the expected x_t and the model's float output */
static void ref_bound_terms(bm *m, const float *x0, const float *xt, int clip, double *terms)
{
    const cld_schedule *s = m->s;
    size_t M = m->M;
    float *p = tu_malloc(M * sizeof(float)), *v = tu_malloc(M * sizeof(float));
    for (int t = 0; t < s->T; t++)
        for (int i = 0; i < m->n; i++) {
            const float *x = xt + ((size_t)t * m->n + i) * M;
            for (size_t j = 0; j < M; j++) {
                double pd, vd;
                bm_out(m, x[j], t, (int)j, &pd, &vd);
                p[j] = (float)pd, v[j] = (float)vd;
            }
            terms[t * m->n + i] = ref_term(s, m->pred, t, p, v, x, x0 + i * M, M, clip);
        }
    free(p), free(v);
}

static void run_bound(bm *m, cl_mem x0b, const int *labels, int stride, int max_batch, int clip, double *bpd,
                      double *terms, prog *pg)
{
    cld_vlb_job j = {.n = m->n,
                     .per_sample = m->M,
                     .x0 = x0b,
                     .labels = labels,
                     .pred = m->pred,
                     .clip_denoised = clip,
                     .t_stride = stride,
                     .max_batch = max_batch,
                     .seed = 99,
                     .first_index = 5,
                     .model = bm_model,
                     .model_user = m,
                     .progress = on_prog,
                     .progress_user = pg,
                     .bpd = bpd,
                     .terms_bpd = terms};
    memset(pg, 0, sizeof *pg);
    if (m->seen) memset(m->seen, 0, (size_t)m->s->T * m->n * sizeof(int));
    TU_OK(cld_vlb_bound(tu_ctx(), m->s, &j));
}

START_TEST(test_bound_reference)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 12, 1e-3, 0.2, 0, &s));
    const int n = 3, T = s->T, labels[3] = {4, 0, 9};
    const size_t M = 2 * 3 * 5;
    float *x0 = tu_malloc((size_t)n * M * sizeof(float));
    fill_pixels(x0, (size_t)n * M, 4242);
    cl_mem x0b = tu_upload(tu_ctx(), x0, (size_t)n * M);
    float *xt = expected_xt(s, x0, n, M, 99, 5);
    int seen[12 * 3];
    bm m = {tu_ctx(), s, CLD_PRED_EPS, 0, n, M, NULL, xt, labels, seen, 0, 0, 0, NULL, NULL, 0};
    m.cap = 64 * 2 * M;
    m.xh = tu_malloc(m.cap * sizeof(float)), m.oh = tu_malloc(m.cap * sizeof(float));
    double bpd[3], terms[13], bpd2[3], terms2[13], ref[12 * 3], want[3];
    prog pg;
    for (int clip = 0; clip < 2; clip++) {
        ref_bound_terms(&m, x0, xt, clip, ref);
        run_bound(&m, x0b, labels, 1, 4, clip, bpd, terms, &pg);
        /* every pair once, x_t as documented, labels passed */
        for (int i = 0; i < T * n; i++)
            ck_assert_msg(seen[i] == 1, "pair (t %d, image %d) seen %d times", i / n, i % n, seen[i]);
        ck_assert_msg(m.bad_xt == 0 && m.bad_label == 0, "%d x_t off (worst %.3g), %d labels wrong", m.bad_xt,
                      m.xt_err, m.bad_label);
        ck_assert_msg(pg.last == T * n && pg.total == T * n && pg.calls == (T * n + 3) / 4 && !pg.bad,
                      "progress: %ld calls, last %ld of %ld", pg.calls, pg.last, pg.total);
        double err = 0, terr = 0;
        for (int i = 0; i < n; i++) {
            want[i] = ref_prior(s, x0 + i * M, M);
            for (int t = 0; t < T; t++) want[i] += ref[t * n + i];
            err = fmax(err, fabs(bpd[i] - want[i]) / want[i]);
        }
        for (int t = 0; t < T; t++) {
            double mt = 0;
            for (int i = 0; i < n; i++) mt += ref[t * n + i] / n;
            terr = fmax(terr, fabs(terms[t] - mt) / fmax(mt, 1e-3));
        }
        printf(
            "  bound (T 12, clip %d): bpd %.5f %.5f %.5f, rel err %.2e; terms rel err %.2e; x_t within %.1e\n",
            clip, bpd[0], bpd[1], bpd[2], err, terr, m.xt_err);
        ck_assert_msg(err <= 1e-5 && terr <= 1e-5, "bound vs reference: %.3g, terms %.3g", err, terr);
        /* the result does not depend on the batching */
        m.xt_want = NULL;
        run_bound(&m, x0b, labels, 1, 7, clip, bpd2, terms2, &pg);
        ck_assert(memcmp(bpd, bpd2, sizeof bpd) == 0 && memcmp(terms, terms2, sizeof terms) == 0);
        m.xt_want = xt;
    }
    /* every 3rd t: t = 0 (weight 1), 10 (2), 7, 4, 1 (3 each) */
    run_bound(&m, x0b, labels, 3, 5, 1, bpd2, terms2, &pg);
    const int ev[] = {0, 1, 4, 7, 10}, wt[] = {1, 3, 3, 3, 2};
    int count = 0;
    for (int i = 0; i < T * n; i++) count += seen[i];
    ck_assert_int_eq(count, 5 * n);
    for (int i = 0; i < n; i++) {
        double w = ref_prior(s, x0 + i * M, M);
        for (int k = 0; k < 5; k++) {
            ck_assert_int_eq(seen[ev[k] * n + i], 1);
            w += wt[k] * ref[ev[k] * n + i];
        }
        ck_assert_msg(fabs(bpd2[i] - w) <= 1e-5 * w, "stride 3: image %d: %.8f vs %.8f", i, bpd2[i], w);
    }
    /* bad jobs */
    cld_vlb_job j = {
        .n = n, .per_sample = M, .x0 = x0b, .max_batch = 0, .model = bm_model, .model_user = &m, .bpd = bpd};
    TU_STATUS(cld_vlb_bound(tu_ctx(), s, &j), CLD_ERR_INVALID_ARG);
    j.max_batch = 4, j.bpd = NULL;
    TU_STATUS(cld_vlb_bound(tu_ctx(), s, &j), CLD_ERR_INVALID_ARG);
    cld_buffer_release(x0b);
    free(x0), free(xt), free(m.xh), free(m.oh);
    cld_schedule_free(s);
}
END_TEST

/* Point-mass data (every image the same x0p) and the exact model with the
 * posterior variance: every KL term vanishes, and the bound is the decoder
 * term of N(x0p, posterior variance at t = 1) plus the prior, by hand:
 * Phi~(z) - Phi~(-z) = tanh(u(z)) inside, Phi~(z) = (1 + tanh(u(z))) / 2 at
 * the edges, z = (1/255) / sigma. */
START_TEST(test_bound_exact_model)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 0, &s));
    const int n = 2;
    const size_t M = 16;
    float x0p[16], *x0 = tu_malloc((size_t)n * M * sizeof(float));
    fill_pixels(x0p, M, 77);
    for (int i = 0; i < n; i++) memcpy(x0 + i * M, x0p, sizeof x0p);
    cl_mem x0b = tu_upload(tu_ctx(), x0, (size_t)n * M);
    const cld_pred_type preds[2] = {CLD_PRED_EPS, CLD_PRED_V};
    for (int k = 0; k < 2; k++) {
        bm m = {tu_ctx(), s, preds[k], 1, n, M, x0p, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, 0};
        m.cap = 333 * 2 * M;
        m.xh = tu_malloc(m.cap * sizeof(float)), m.oh = tu_malloc(m.cap * sizeof(float));
        double bpd[2], terms[1001];
        prog pg;
        run_bound(&m, x0b, NULL, 1, 333, 0, bpd, terms, &pg);
        double pv1 = s->beta[1] * (1 - s->alpha_bar[0]) / (1 - s->alpha_bar[1]);
        double z = (1.0 / 255) / sqrt(pv1), tu = tanh(K0 * (z + 0.044715 * z * z * z)), dec = 0, kl = 0;
        int edges = 0;
        for (size_t j = 0; j < M; j++) {
            edges += fabs(x0p[j]) > 0.999;
            dec -= fabs(x0p[j]) > 0.999 ? log(0.5 * (1 + tu)) : log(tu);
        }
        dec /= M * LN2;
        for (int t = 1; t < 1000; t++) kl += terms[t];
        double want = dec + ref_prior(s, x0p, M);
        /* float: an edge bin's likelihood is first order in the mean, whose
         * error (x0_hat from float x_t and coefficients) is ~2 ulp(1); inside
         * bins it cancels to second order. Plus 1e-6 for the rest. */
        double tol = edges * (1 / sqrt(pv1)) * 2.4e-7 / (M * LN2) + 1e-6 * dec;
        printf("  exact model (%s): bpd %.7f, want %.7f (decoder %.7f vs %.7f, tolerance %.1e; prior %.2e); "
               "sum of KL terms %.2e\n",
               k ? "v" : "eps", bpd[0], want, terms[0], dec, tol, terms[1000], kl);
        /* the same image under other noise */
        ck_assert_msg(fabs(bpd[0] - bpd[1]) <= tol, "identical images: %.9g vs %.9g", bpd[0], bpd[1]);
        ck_assert_msg(fabs(terms[0] - dec) <= tol, "decoder %.9g vs %.9g", terms[0], dec);
        ck_assert_msg(kl >= 0 && kl < 1e-6, "KL terms of the exact model sum to %.3g bits/dim", kl);
        ck_assert_msg(fabs(bpd[0] - want) <= tol, "bpd %.9g vs %.9g", bpd[0], want);
        free(m.xh), free(m.oh);
    }
    cld_buffer_release(x0b);
    free(x0);
    cld_schedule_free(s);
}
END_TEST

/* ------------------------------------------------------------- sampling */
/* Gaussian data, one N(m, s^2) per channel (labels 0, 1: other Gaussians,
 * NULL_LABEL the unconditional one); the model returns the exact posterior
 * mean as its prediction and, if learned, a variance half: v_cond or v_uncond
 * (by label), or tanh(x) with vtanh. */
#define NULL_LABEL 2
typedef struct sm {
    cld_ctx *ctx;
    const cld_schedule *s;
    cld_pred_type pred;
    int learned, vtanh;
    double v_cond, v_uncond;
    size_t hw, per; /* per = 3 hw */
    float *xh, *oh;
    size_t cap;
    int calls;
} sm;

static const double SM_M[3] = {0.5, -0.3, 0.1}, SM_S[3] = {0.5, 0.8, 0.3};
static const double CL_M[2] = {-1.0, 1.0}, CL_S[2] = {0.3, 0.5};

static double sm_x0(const sm *g, int label, size_t j, double a, double b, double x)
{
    double m = label == 0 || label == 1 ? CL_M[label] : SM_M[j / g->hw];
    double sd = label == 0 || label == 1 ? CL_S[label] : SM_S[j / g->hw];
    return m + a * sd * sd * (x - a * m) / (a * a * sd * sd + b * b);
}

static cld_status sm_model(void *user, cl_mem x, size_t xo, cl_mem out, size_t oo, int n, const float *t,
                           const int *labels)
{
    sm *g = user;
    size_t per = g->per, ow = g->learned ? 2 * per : per;
    g->calls++;
    if ((size_t)n * ow > g->cap) return CLD_ERR_SHAPE;
    cld_status st = cld_buffer_read(g->ctx, x, xo * sizeof(float), (size_t)n * per * sizeof(float), g->xh);
    if (st) return st;
    for (int k = 0; k < n; k++) {
        double a, b;
        if ((st = cld_schedule_ab(g->s, t[k], &a, &b))) return st;
        int label = labels ? labels[k] : NULL_LABEL;
        for (size_t j = 0; j < per; j++) {
            double xv = g->xh[k * per + j], x0 = sm_x0(g, label, j, a, b, xv), e = (xv - a * x0) / b;
            g->oh[k * ow + j] =
                (float)(g->pred == CLD_PRED_X0 ? x0 : (g->pred == CLD_PRED_EPS ? e : a * e - b * x0));
            if (g->learned)
                g->oh[k * ow + per + j] =
                    (float)(g->vtanh ? tanh(xv)
                                     : (labels && labels[k] == NULL_LABEL ? g->v_uncond : g->v_cond));
        }
    }
    return cld_buffer_write(g->ctx, out, oo * sizeof(float), (size_t)n * ow * sizeof(float), g->oh);
}

static void sm_init(sm *g, const cld_schedule *s, cld_pred_type pred, int nmax, size_t hw)
{
    memset(g, 0, sizeof *g);
    g->ctx = tu_ctx(), g->s = s, g->pred = pred, g->hw = hw, g->per = 3 * hw;
    g->cap = 4 * (size_t)nmax * g->per;
    g->xh = tu_malloc(g->cap * sizeof(float)), g->oh = tu_malloc(g->cap * sizeof(float));
}

typedef struct sprog {
    int count, last;
} sprog;
static void on_sprog(void *user, int step, int total)
{
    sprog *p = user;
    (void)total;
    p->count++, p->last = step;
}

/* One run on n samples into out (host): the learned-variance sampler, or
 * cld_sampler_run with the model's first half only. */
static void run_sampler(sm *g, const cld_sampler_opts *o, int learned, int n, const int *labels,
                        uint32_t first, const float *xT, float *out)
{
    cld_ctx *ctx = tu_ctx();
    size_t total = (size_t)n * g->per;
    cl_mem buf = xT ? tu_upload(ctx, xT, total) : NULL;
    if (!buf) TU_OK(cld_buffer_alloc(ctx, total * sizeof(float), &buf));
    sprog pg = {0, 0};
    cld_sample_job job = {.n = n,
                          .per_sample = g->per,
                          .labels = labels,
                          .seed = 2024,
                          .first_index = first,
                          .start_from_out = xT != NULL,
                          .out = buf,
                          .model = sm_model,
                          .model_user = g,
                          .progress = on_sprog,
                          .progress_user = &pg};
    g->learned = learned;
    g->calls = 0;
    if (learned)
        TU_OK(cld_sampler_run_learned_var(ctx, g->s, o, &job));
    else
        TU_OK(cld_sampler_run(ctx, g->s, o, &job));
    tu_download(ctx, buf, out, total);
    cld_buffer_release(buf);
    ck_assert_msg(g->calls == o->steps && pg.count == o->steps && pg.last == o->steps,
                  "%d model calls, %d progress calls for %d steps", g->calls, pg.count, o->steps);
}

/* frac 0 is the posterior variance, frac 1 beta: the same numbers as
 * cld_sampler_run's DDPM up to float rounding of the noise scale. */
START_TEST(test_sampler_fixed_ends)
{
    cld_schedule *lin, *cos0;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 0, &lin));
    TU_OK(cld_schedule_create(CLD_SCHEDULE_COSINE, 1000, 0, 0, 1, &cos0));
    const struct {
        const cld_schedule *s;
        cld_pred_type pred;
        int steps, offset;
        cld_spacing sp;
    } cases[] = {
        {lin, CLD_PRED_EPS, 50, 0, CLD_SPACING_TRAILING},
        {lin, CLD_PRED_V, 20, 1, CLD_SPACING_LEADING},
        {lin, CLD_PRED_X0, 10, 0, CLD_SPACING_LINSPACE},
        {cos0, CLD_PRED_V, 25, 0, CLD_SPACING_TRAILING},
    };
    const int n = 4;
    sm g;
    sm_init(&g, lin, CLD_PRED_EPS, n, 5 * 7);
    size_t total = (size_t)n * g.per;
    float *a = tu_malloc(total * sizeof(float)), *b = tu_malloc(total * sizeof(float));
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int end = 0; end < 2; end++) {
            cld_sampler_opts o;
            TU_OK(cld_sampler_opts_default(CLD_SAMPLER_DDPM, &o));
            o.steps = cases[c].steps, o.steps_offset = cases[c].offset, o.spacing = cases[c].sp;
            o.pred = cases[c].pred;
            o.variance = end ? CLD_VAR_BETA : CLD_VAR_POSTERIOR;
            g.s = cases[c].s, g.pred = cases[c].pred, g.vtanh = 0;
            g.v_cond = g.v_uncond = end ? 1.0 : -1.0;
            run_sampler(&g, &o, 1, n, NULL, 0, NULL, a);
            run_sampler(&g, &o, 0, n, NULL, 0, NULL, b);
            double e = tu_max_abs_err(a, b, total, NULL);
            printf("  learned var, frac %d vs ddpm %s (%d steps, pred %d%s): max |diff| %.2e\n", end,
                   end ? "beta" : "posterior", o.steps, (int)o.pred, g.s == cos0 ? ", cosine zero-snr" : "",
                   e);
            ck_assert_msg(e <= 1e-6, "frac %d: max |difference| %.3g", end, e);
        }
    free(a), free(b), free(g.xh), free(g.oh);
    cld_schedule_free(lin);
    cld_schedule_free(cos0);
}
END_TEST

/* Guided: the prediction is guided, the variance is the conditional
 * branch's: cond v = -1, uncond v = 1 is the posterior variance (the
 * unconditional branch's would be beta). */
START_TEST(test_sampler_guidance)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 0, &s));
    const int n = 4, labels[4] = {0, 1, 1, 0};
    sm g;
    sm_init(&g, s, CLD_PRED_EPS, 2 * n, 3 * 5);
    size_t total = (size_t)n * g.per;
    float *a = tu_malloc(total * sizeof(float)), *b = tu_malloc(total * sizeof(float));
    cld_sampler_opts o;
    TU_OK(cld_sampler_opts_default(CLD_SAMPLER_DDPM, &o));
    o.steps = 30, o.guidance = 3.0, o.null_label = NULL_LABEL, o.variance = CLD_VAR_POSTERIOR;
    g.v_cond = -1.0, g.v_uncond = 1.0;
    run_sampler(&g, &o, 1, n, labels, 0, NULL, a);
    run_sampler(&g, &o, 0, n, labels, 0, NULL, b);
    double e = tu_max_abs_err(a, b, total, NULL);
    printf("  learned var, guidance 3 (cond v = -1, uncond v = 1) vs ddpm posterior: max |diff| %.2e\n", e);
    ck_assert_msg(e <= 1e-6, "guided: max |difference| %.3g", e);
    free(a), free(b), free(g.xh), free(g.oh);
    cld_schedule_free(s);
}
END_TEST

/* v = tanh(x) per element against improved-diffusion's respaced p_sample in
 * double: betas from alpha_bar on the subsequence, log variance between
 * log beta and the clipped log posterior variance. */
START_TEST(test_sampler_reference)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_COSINE, 1000, 0, 0, 0, &s));
    const int n = 3, N = 30, T = 1000;
    sm g;
    sm_init(&g, s, CLD_PRED_EPS, n, 4 * 5);
    g.vtanh = 1;
    size_t total = (size_t)n * g.per;
    float *got = tu_malloc(total * sizeof(float)), *want = tu_malloc(total * sizeof(float));
    float *z = tu_malloc((size_t)(N + 1) * total * sizeof(float));
    for (int k = 0; k <= N; k++) {
        cld_noise_key key = {2024, CLD_NOISE_STREAM_SAMPLER, 0, (uint32_t)k};
        TU_OK(cld_noise_host(&key, n, g.per, z + k * total));
    }
    cld_sampler_opts o;
    TU_OK(cld_sampler_opts_default(CLD_SAMPLER_DDPM, &o));
    o.steps = N, o.spacing = CLD_SPACING_TRAILING;
    run_sampler(&g, &o, 1, n, NULL, 0, NULL, got);
    int ts[30];
    for (int k = 0; k < N; k++) ts[k] = (int)nearbyint(T - k * ((double)T / N)) - 1;
    for (size_t i = 0; i < total; i++) {
        double x = z[i];
        size_t j = i % g.per;
        for (int k = 0; k < N; k++) {
            double ab = s->alpha_bar[ts[k]], abp = k + 1 < N ? s->alpha_bar[ts[k + 1]] : 1.0;
            double beta = 1 - ab / abp, x0 = sm_x0(&g, NULL_LABEL, j, sqrt(ab), sqrt(1 - ab), x);
            double mean = sqrt(abp) * beta / (1 - ab) * x0 + sqrt(1 - beta) * (1 - abp) / (1 - ab) * x;
            if (k + 1 < N) {
                double pv = beta * (1 - abp) / (1 - ab), frac = (tanh((float)x) + 1) / 2;
                double lv = frac * log(beta) + (1 - frac) * log(pv);
                x = mean + exp(0.5 * lv) * z[(size_t)(k + 1) * total + i];
            } else {
                x = mean;
            }
        }
        want[i] = (float)x;
    }
    double e = tu_max_abs_err(got, want, total, NULL);
    printf("  learned var (v = tanh x), 30 steps vs double reference: max |diff| %.2e\n", e);
    /* float32 rounding over a few dozen steps of values up to ~3 (as test_sampler) */
    ck_assert_msg(e <= 2e-5, "max |device - reference| %.3g", e);
    free(got), free(want), free(z), free(g.xh), free(g.oh);
    cld_schedule_free(s);
}
END_TEST

/* Other samplers on the learned-variance model through cld_pred_half_fn:
 * the same bits as the model without the variance half. */
START_TEST(test_pred_half)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 0, &s));
    const int n = 3, labels[3] = {1, 0, 1};
    sm g;
    sm_init(&g, s, CLD_PRED_V, 2 * n, 5 * 3);
    g.vtanh = 1;
    size_t total = (size_t)n * g.per;
    float *a = tu_malloc(total * sizeof(float)), *b = tu_malloc(total * sizeof(float));
    cl_mem buf;
    TU_OK(cld_buffer_alloc(tu_ctx(), total * sizeof(float), &buf));
    const cld_sampler_kind kinds[2] = {CLD_SAMPLER_DDIM, CLD_SAMPLER_DPMPP_2M};
    for (int k = 0; k < 2; k++) {
        cld_sampler_opts o;
        TU_OK(cld_sampler_opts_default(kinds[k], &o));
        o.steps = 12, o.pred = CLD_PRED_V, o.guidance = 2.0, o.null_label = NULL_LABEL;
        cld_pred_half h = {tu_ctx(), sm_model, &g, g.per};
        cld_sample_job job = {.n = n,
                              .per_sample = g.per,
                              .labels = labels,
                              .seed = 3,
                              .out = buf,
                              .model = cld_pred_half_fn,
                              .model_user = &h};
        g.learned = 1;
        TU_OK(cld_sampler_run(tu_ctx(), s, &o, &job));
        tu_download(tu_ctx(), buf, a, total);
        g.learned = 0;
        job.model = sm_model, job.model_user = &g;
        TU_OK(cld_sampler_run(tu_ctx(), s, &o, &job));
        tu_download(tu_ctx(), buf, b, total);
        ck_assert_msg(memcmp(a, b, total * sizeof(float)) == 0, "%s through cld_pred_half_fn differs",
                      cld_sampler_name(kinds[k]));
    }
    cld_pred_half bad = {tu_ctx(), NULL, NULL, g.per};
    TU_STATUS(cld_pred_half_fn(&bad, buf, 0, buf, 0, 1, NULL, NULL), CLD_ERR_INVALID_ARG);
    cld_buffer_release(buf);
    free(a), free(b), free(g.xh), free(g.oh);
    cld_schedule_free(s);
}
END_TEST

START_TEST(test_sampler_batch_and_args)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 0, &s));
    sm g;
    sm_init(&g, s, CLD_PRED_EPS, 3, 2 * 3);
    g.vtanh = 1;
    size_t per = g.per;
    float *a = tu_malloc(3 * per * sizeof(float)), *b = tu_malloc(per * sizeof(float)),
          *xT = tu_malloc(per * sizeof(float));
    cld_sampler_opts o;
    TU_OK(cld_sampler_opts_default(CLD_SAMPLER_DDPM, &o));
    o.steps = 15;
    run_sampler(&g, &o, 1, 3, NULL, 10, NULL, a);
    run_sampler(&g, &o, 1, 1, NULL, 12, NULL, b); /* sample 2 of the first run, alone */
    ck_assert_msg(memcmp(a + 2 * per, b, per * sizeof(float)) == 0, "a sample depends on its batch");
    cld_noise_key key = {2024, CLD_NOISE_STREAM_SAMPLER, 12, 0};
    TU_OK(cld_noise_host(&key, 1, per, xT));
    run_sampler(&g, &o, 1, 1, NULL, 12, xT, b); /* start_from_out with the same x_T */
    ck_assert_msg(memcmp(a + 2 * per, b, per * sizeof(float)) == 0, "start_from_out differs");
    cl_mem buf;
    TU_OK(cld_buffer_alloc(tu_ctx(), per * sizeof(float), &buf));
    cld_sample_job job = {.n = 1, .per_sample = per, .out = buf, .model = sm_model, .model_user = &g};
    o.kind = CLD_SAMPLER_DDIM;
    TU_STATUS(cld_sampler_run_learned_var(tu_ctx(), s, &o, &job), CLD_ERR_INVALID_ARG);
    o.kind = CLD_SAMPLER_DDPM, o.steps = 0;
    TU_STATUS(cld_sampler_run_learned_var(tu_ctx(), s, &o, &job), CLD_ERR_INVALID_ARG);
    o.steps = 10, job.n = 0;
    TU_STATUS(cld_sampler_run_learned_var(tu_ctx(), s, &o, &job), CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_sampler_run_learned_var(tu_ctx(), s, &o, NULL), CLD_ERR_INVALID_ARG);
    cld_buffer_release(buf);
    free(a), free(b), free(xT), free(g.xh), free(g.oh);
    cld_schedule_free(s);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("vlb");
    TCase *tc = tcase_create("vlb");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_normal_kl);
    tcase_add_test(tc, test_discretized_gaussian);
    tcase_add_loop_test(tc, test_vlb_loss, 0, (int)(sizeof LOSS_CASES / sizeof LOSS_CASES[0]));
    tcase_add_test(tc, test_hybrid_loss);
    tcase_add_test(tc, test_vlb_arguments);
    tcase_add_test(tc, test_bound_reference);
    tcase_add_test(tc, test_bound_exact_model);
    tcase_add_test(tc, test_sampler_fixed_ends);
    tcase_add_test(tc, test_sampler_guidance);
    tcase_add_test(tc, test_sampler_reference);
    tcase_add_test(tc, test_pred_half);
    tcase_add_test(tc, test_sampler_batch_and_args);
    suite_add_tcase(su, tc);
    return tu_run_suite(su);
}
