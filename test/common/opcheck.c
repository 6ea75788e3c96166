#include "opcheck.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/internal.h"
#include "testutil.h"

double opc_uniform(uint64_t *rng)
{
    uint64_t z = (*rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

double opc_normal(uint64_t *rng)
{
    double u1 = opc_uniform(rng), u2 = opc_uniform(rng);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static size_t numel(const opc_operand *o)
{
    size_t n = 1;
    for (int i = 0; i < o->ndim; i++) n *= (size_t)o->shape[i];
    return n;
}

/* max |a - b| / max(1e-3, max |b|); a NaN on either side (which fmax would
 * drop) gives INFINITY. */
static double rel_err_dd(const double *a, const double *b, size_t n)
{
    double m = 1e-3, e = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(b[i]));
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (!(d <= e)) e = isnan(d) ? INFINITY : d;
    }
    return e / m;
}

static double rel_err(const float *a, const double *b, size_t n)
{
    double *ad = malloc((n ? n : 1) * sizeof *ad);
    if (!ad) return INFINITY;
    for (size_t i = 0; i < n; i++) ad[i] = a[i];
    double e = rel_err_dd(ad, b, n);
    free(ad);
    return e;
}

#define FAIL(msg)                                                                \
    do {                                                                         \
        fprintf(stderr, "opcheck %s: %s: %s\n", c->name, msg, cld_last_error()); \
        rc = -1;                                                                 \
        goto done;                                                               \
    } while (0)

int opc_run(const opc_case *c, uint64_t seed, opc_result *res)
{
    int rc = 0, k = c->n_operands;
    cld_ctx *ctx = tu_ctx();
    cld_params *params = NULL;
    cld_graph *g = NULL;
    cld_tensor *x[OPC_MAX_OPERANDS] = {0}, *y = NULL, *dyt = NULL;
    double *xd[OPC_MAX_OPERANDS] = {0}, *dxd[OPC_MAX_OPERANDS] = {0};
    float *xf = NULL, *gf = NULL;
    double *yd = NULL, *r = NULL, *ytmp = NULL;
    float *yf = NULL, *rf = NULL;
    size_t ny = 0, maxn = 0;
    uint64_t rng = seed * 7919 + 17;
    memset(res, 0, sizeof *res);

    if (cld_params_create(ctx, &params) || cld_graph_create(ctx, params, &g)) FAIL("create");
    for (int i = 0; i < k; i++) {
        const opc_operand *o = &c->op[i];
        size_t n = numel(o);
        if (n > maxn) maxn = n;
        xd[i] = malloc(n * sizeof(double));
        dxd[i] = calloc(n, sizeof(double));
        if (o->fill)
            o->fill(xd[i], n, &rng, c->user);
        else
            for (size_t j = 0; j < n; j++) xd[i][j] = 2.0 * opc_uniform(&rng) - 1.0;
        /* operands are exactly representable in float: the reference sees
         * the same numbers as the device */
        for (size_t j = 0; j < n; j++) xd[i][j] = (double)(float)xd[i][j];
        cld_status s = o->is_param ? cld_graph_param(g, o->name, o->ndim, o->shape, CLD_INIT_ZERO, 0, &x[i])
                                   : cld_graph_input(g, o->name, o->ndim, o->shape, !o->no_grad, &x[i]);
        if (s) FAIL("operand");
    }
    if (c->build(g, x, &y, c->user)) FAIL("build");
    ny = y->n;
    if (cld_graph_set_output(g, y)) FAIL("set_output");
    if (!c->skip_backward) {
        if (cld_graph_input(g, "dy", y->ndim, y->shape, 0, &dyt)) FAIL("dy input");
        if (cld__graph_backward_seed(g, y, dyt)) FAIL("backward");
    }
    if (cld_graph_plan(g, NULL)) FAIL("plan");
    xf = malloc((maxn > ny ? maxn : ny) * sizeof(float));
    gf = malloc((maxn > ny ? maxn : ny) * sizeof(float));
    for (int i = 0; i < k; i++) {
        size_t n = numel(&c->op[i]);
        for (size_t j = 0; j < n; j++) xf[j] = (float)xd[i][j];
        cld_status s = c->op[i].is_param ? cld_params_write(params, x[i]->param_index, xf)
                                         : cld_tensor_write(g, x[i], xf);
        if (s) FAIL("write operand");
    }
    yd = calloc(ny, sizeof(double));
    ytmp = calloc(ny, sizeof(double));
    yf = malloc(ny * sizeof(float));
    r = malloc(ny * sizeof(double));
    rf = malloc(ny * sizeof(float));
    for (size_t j = 0; j < ny; j++) {
        rf[j] = (float)(2.0 * opc_uniform(&rng) - 1.0);
        r[j] = rf[j];
    }
    if (dyt && cld_tensor_write(g, dyt, rf)) FAIL("write dy");
    if (cld_params_zero_grad(params) && params->count) FAIL("zero grad");
    if (cld_graph_run(g) || cld_tensor_read(g, y, yf)) FAIL("run");
    c->ref_forward((const double *const *)xd, yd, c->user);
    res->fwd_err = rel_err(yf, yd, ny);
    if (c->skip_backward) goto done;

    c->ref_backward((const double *const *)xd, r, dxd, c->user);
    for (int i = 0; i < k; i++) {
        if (c->op[i].no_grad) continue;
        size_t n = numel(&c->op[i]);
        cld_status s;
        if (c->op[i].is_param) {
            s = cld_params_read_grad(params, x[i]->param_index, gf);
        } else {
            cld_tensor *gt;
            s = cld_tensor_grad(x[i], &gt);
            if (!s) s = cld_tensor_read(g, gt, gf);
        }
        if (s) FAIL("read grad");
        double e = rel_err(gf, dxd[i], n);
        if (e > res->bwd_err || isnan(e)) res->bwd_err = e;
    }
    /* finite differences of the reference on up to 24 coordinates per operand */
    for (int i = 0; i < k; i++) {
        if (c->op[i].no_grad) continue;
        size_t n = numel(&c->op[i]);
        int samples = n < 24 ? (int)n : 24;
        double fd[24], an[24];
        for (int sidx = 0; sidx < samples; sidx++) {
            size_t j = n <= 24 ? (size_t)sidx : (size_t)(opc_uniform(&rng) * (double)n);
            double keep = xd[i][j], h = 1e-6 * fmax(1.0, fabs(keep)), lp = 0, lm = 0;
            xd[i][j] = keep + h;
            c->ref_forward((const double *const *)xd, ytmp, c->user);
            for (size_t q = 0; q < ny; q++) lp += ytmp[q] * r[q];
            xd[i][j] = keep - h;
            c->ref_forward((const double *const *)xd, ytmp, c->user);
            for (size_t q = 0; q < ny; q++) lm += ytmp[q] * r[q];
            xd[i][j] = keep;
            fd[sidx] = (lp - lm) / (2 * h);
            an[sidx] = dxd[i][j];
        }
        double e = rel_err_dd(fd, an, (size_t)samples);
        if (e > res->fd_err || isnan(e)) res->fd_err = e;
    }
done:
    for (int i = 0; i < k; i++) {
        free(xd[i]);
        free(dxd[i]);
    }
    free(xf);
    free(gf);
    free(yd);
    free(ytmp);
    free(yf);
    free(r);
    free(rf);
    cld_graph_free(g);
    cld_params_free(params);
    return rc;
}

void opc_check(const opc_case *c, uint64_t seed, double tol_fwd, double tol_bwd)
{
    opc_result res;
    if (tol_fwd <= 0) tol_fwd = 1e-4;
    if (tol_bwd <= 0) tol_bwd = 1e-4;
    int rc = opc_run(c, seed, &res);
    ck_assert_msg(rc == 0, "%s: library call failed: %s", c->name, cld_last_error());
    fprintf(stderr, "opcheck %-40s fwd %.2e  bwd %.2e  fd %.2e\n", c->name, res.fwd_err, res.bwd_err,
            res.fd_err);
    ck_assert_msg(res.fwd_err <= tol_fwd, "%s: forward error %.3e > %.1e", c->name, res.fwd_err, tol_fwd);
    if (!c->skip_backward) {
        ck_assert_msg(res.bwd_err <= tol_bwd, "%s: backward error %.3e > %.1e", c->name, res.bwd_err,
                      tol_bwd);
        ck_assert_msg(res.fd_err <= 1e-5, "%s: reference gradient vs finite differences %.3e > 1e-5", c->name,
                      res.fd_err);
    }
}
