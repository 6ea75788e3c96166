/* Op test harness: checks one op's forward and backward on the device
 * against a plain C reference computed in double, and checks the
 * reference's gradients against central finite differences.
 *
 * Each case lists its operands (graph inputs with requires_grad, or
 * parameters), a builder that adds the op to a graph, and the reference
 * forward/backward. The harness:
 *  1. fills operands with seeded random values (uniform [-1, 1], or a
 *     caller-chosen fill), runs the graph, and compares y with ref_forward;
 *  2. seeds backward with a random r (dy = r, via cld__graph_backward_seed)
 *     and compares every operand's gradient with ref_backward(r);
 *  3. checks ref_backward against central differences of
 *     L(x) = sum(ref_forward(x) * r) in double on sampled coordinates.
 * Error measure: max |a - b| / max(max |b|, 1e-3) over the tensor. */
#ifndef CLD_OPCHECK_H
#define CLD_OPCHECK_H

#include "cldiffusion/cldiffusion.h"

#define OPC_MAX_OPERANDS 6

typedef struct opc_operand {
    const char *name;
    int ndim;
    int shape[4];
    int is_param; /* parameter (tests the param-grad sink) vs input  */
    int no_grad;  /* integer-like operands (labels, timesteps)        */
    /* optional custom fill (else uniform [-1, 1]) */
    void (*fill)(double *v, size_t n, uint64_t *rng, void *user);
} opc_operand;

typedef struct opc_case {
    const char *name;
    int n_operands;
    opc_operand op[OPC_MAX_OPERANDS];
    /* add the op to g; x[i] are the operand tensors */
    cld_status (*build)(cld_graph *g, cld_tensor **x, cld_tensor **y, void *user);
    /* y = f(x) in double; y has the element count of the graph output */
    void (*ref_forward)(const double *const *x, double *y, void *user);
    /* dx[i] (zeroed by the harness) += J_i^T dy for every operand */
    void (*ref_backward)(const double *const *x, const double *dy, double **dx, void *user);
    void *user;
    int skip_backward; /* forward-only op */
} opc_case;

typedef struct opc_result {
    double fwd_err, bwd_err, fd_err;
} opc_result;

/* Runs the case on the test context. Returns 0 and fills res on success;
 * on a library failure it returns -1 and prints cld_last_error(). */
int opc_run(const opc_case *c, uint64_t seed, opc_result *res);

/* Convenience for Check tests: runs and asserts fwd <= 1e-4, bwd <= 1e-4,
 * fd <= 1e-5 (unless overridden by positive tolerances). */
void opc_check(const opc_case *c, uint64_t seed, double tol_fwd, double tol_bwd);

/* Host RNG for fills. */
double opc_uniform(uint64_t *rng); /* [0,1) */
double opc_normal(uint64_t *rng);

#endif
