/* Layout ops: channel slices (backward: zero padding), channel concat
 * (backward: channel slices) and nearest 2x upsampling (backward: 2x2 block
 * sums). Forward and backward side by side. */
#include "internal.h"

#include <string.h>

/* Product of the dims after the channel dim. */
static int inner_of(const cld_tensor *t)
{
    int inner = 1;
    for (int i = 2; i < t->ndim; i++) inner *= t->shape[i];
    return inner;
}

/* ------------------------------------------------------- channel slice
 * y (N, Cs, ...) = x[:, c0 : c0 + Cs, ...]; ip[0] = c0. Backward: dy padded
 * with zero channels (concat's backward uses the forward alone). */
static cld_status slice_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *x = t->src[0];
    CLD_TRY(cld__kargs(k, t->name, "bibiiiiii", x->buf, (int)x->off, t->buf, (int)t->off, t->shape[0],
                       x->shape[1], t->ip[0], t->shape[1], inner_of(t)));
    return cld__launch1d(g, k, t, (size_t)t->shape[0] * (size_t)t->shape[1]); // rows of y
}

/* Zeros shaped like x with `c` channels, concatenated before (or after) *acc. */
static cld_status pad_channels(cld_graph *g, const cld_tensor *x, int c, int before, cld_tensor **acc)
{
    if (c == 0) return CLD_OK;
    int shape[CLD_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[1] = c;
    cld_tensor *z;
    CLD_TRY(cld__node(g, &cld__op_fill, x->ndim, shape, 0, NULL, &z));
    z->fp[0] = 0.0f;
    return before ? cld_op_concat(g, z, *acc, acc) : cld_op_concat(g, *acc, z, acc);
}

static cld_status slice_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *x = t->src[0], *dx = t->grad;
    CLD_TRY(pad_channels(g, x, t->ip[0], 1, &dx));
    CLD_TRY(pad_channels(g, x, x->shape[1] - t->ip[0] - t->shape[1], 0, &dx));
    return cld__grad_add(g, x, dx);
}
static const cld_op_def op_slice = {
    "slice_channels", slice_forward, slice_backward, 0, 0, CLD_KERNELS({"shape", "channel_slice"}), NULL};

cld_status cld_op_slice_channels(cld_graph *g, cld_tensor *x, int c0, int count, cld_tensor **y)
{
    if (!g || !x || !y) return cld__fail(CLD_ERR_INVALID_ARG, "slice_channels: NULL argument");
    if (x->ndim < 2) return cld__shape_fail("slice_channels", "input must be (N, C, ...)", x, NULL);
    if (c0 < 0 || count < 1 || c0 + count > x->shape[1])
        return cld__fail(CLD_ERR_SHAPE, "slice_channels: channels %d .. %d of %d", c0, c0 + count - 1,
                         x->shape[1]);
    int shape[CLD_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[1] = count;
    CLD_TRY(cld__node(g, &op_slice, x->ndim, shape, 1, &x, y));
    (*y)->ip[0] = c0;
    return CLD_OK;
}

/* -------------------------------------------------------------- concat
 * y (N, Ca+Cb, ...) from a (N, Ca, ...), b (N, Cb, ...) */
static cld_status concat_forward(cld_graph *g, cld_tensor *t)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *a = t->src[0], *b = t->src[1];
    CLD_TRY(cld__kargs(k, "concat", "bibibiiiii", a->buf, (int)a->off, b->buf, (int)b->off, t->buf,
                       (int)t->off, t->shape[0], a->shape[1], b->shape[1], inner_of(t)));
    return cld__launch1d(g, k, t, (size_t)t->shape[0] * (size_t)t->shape[1]); // rows of y
}

static cld_status concat_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *a = t->src[0], *b = t->src[1], *da, *db;
    if (a->flags & CLD_TF_NEEDS_GRAD) {
        CLD_TRY(cld_op_slice_channels(g, t->grad, 0, a->shape[1], &da));
        CLD_TRY(cld__grad_add(g, a, da));
    }
    if (b->flags & CLD_TF_NEEDS_GRAD) {
        CLD_TRY(cld_op_slice_channels(g, t->grad, a->shape[1], b->shape[1], &db));
        CLD_TRY(cld__grad_add(g, b, db));
    }
    return CLD_OK;
}
static const cld_op_def op_concat = {
    "concat", concat_forward, concat_backward, 0, 0, CLD_KERNELS({"shape", "concat"}), NULL};

cld_status cld_op_concat(cld_graph *g, cld_tensor *a, cld_tensor *b, cld_tensor **y)
{
    if (!g || !a || !b || !y) return cld__fail(CLD_ERR_INVALID_ARG, "concat: NULL argument");
    int ok = a->ndim >= 2 && a->ndim == b->ndim && a->shape[0] == b->shape[0];
    for (int i = 2; ok && i < a->ndim; i++) ok = a->shape[i] == b->shape[i];
    if (!ok) return cld__shape_fail("concat", "shapes must agree except in dim 1", a, b);
    int shape[CLD_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) shape[i] = a->shape[i];
    shape[1] = a->shape[1] + b->shape[1];
    cld_tensor *src[2] = {a, b};
    return cld__node(g, &op_concat, a->ndim, shape, 2, src, y);
}

/* ---------------------------------------------------------- upsample2x
 * y (N, C, 2H, 2W) = x (N, C, H, W) repeated 2x2 */
/* Kernel `name` from t->src[0] to t over the rows (N*C*H) of the small
 * (N, C, H, W) side, W wide. */
static cld_status up_kernel(cld_graph *g, cld_tensor *t, const char *name, int rows, int W)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *src = t->src[0];
    CLD_TRY(cld__kargs(k, name, "bibiii", src->buf, (int)src->off, t->buf, (int)t->off, rows, W));
    return cld__launch1d(g, k, t, (size_t)rows);
}

static cld_status upsample_forward(cld_graph *g, cld_tensor *t)
{
    // rows of x (N*C*H), width W
    const cld_tensor *x = t->src[0];
    return up_kernel(g, t, "upsample2x", x->shape[0] * x->shape[1] * x->shape[2], x->shape[3]);
}

/* dx (N, C, H, W) from src dy (N, C, 2H, 2W) */
static cld_status upsample_grad_forward(cld_graph *g, cld_tensor *t)
{
    // rows of dx (N*C*H), width W
    return up_kernel(g, t, "upsample2x_grad", t->shape[0] * t->shape[1] * t->shape[2], t->shape[3]);
}
static const cld_op_def op_upsample_grad = {
    "upsample2x_grad", upsample_grad_forward, NULL, 0, 0, CLD_KERNELS({"shape", "upsample2x_grad"}), NULL};

static cld_status upsample_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *x = t->src[0], *dx;
    CLD_TRY(cld__node(g, &op_upsample_grad, x->ndim, x->shape, 1, &t->grad, &dx));
    return cld__grad_add(g, x, dx);
}
static const cld_op_def op_upsample = {
    "upsample2x", upsample_forward, upsample_backward, 0, 0, CLD_KERNELS({"shape", "upsample2x"}), NULL};

cld_status cld_op_upsample2x(cld_graph *g, cld_tensor *x, cld_tensor **y)
{
    if (!g || !x || !y) return cld__fail(CLD_ERR_INVALID_ARG, "upsample2x: NULL argument");
    if (x->ndim != 4) return cld__shape_fail("upsample2x", "input must be (N, C, H, W)", x, NULL);
    int shape[4] = {x->shape[0], x->shape[1], 2 * x->shape[2], 2 * x->shape[3]};
    return cld__node(g, &op_upsample, 4, shape, 1, &x, y);
}

/* --------------------------------------------------------------- pad2d
 * y (N, C, H + top + bottom, W + left + right): x placed at (top, left),
 * zeros around; the gradient is the same kernel cropping dy back. */
static cld_status pad_kernel(cld_graph *g, cld_tensor *t, int top, int left)
{
    cl_kernel k = t->kern[0];
    const cld_tensor *x = t->src[0];
    CLD_TRY(cld__kargs(k, "pad2d", "bibiiiiiiii", x->buf, (int)x->off, t->buf, (int)t->off,
                       x->shape[0] * x->shape[1], x->shape[2], x->shape[3], t->shape[2], t->shape[3], top,
                       left));
    return cld__launch1d(g, k, t, t->n);
}

static cld_status pad_forward(cld_graph *g, cld_tensor *t) { return pad_kernel(g, t, t->ip[0], t->ip[1]); }

static cld_status crop_forward(cld_graph *g, cld_tensor *t) { return pad_kernel(g, t, -t->ip[0], -t->ip[1]); }
static const cld_op_def op_pad_grad = {
    "pad2d_grad", crop_forward, NULL, 0, 0, CLD_KERNELS({"shape", "pad2d"}), NULL};

static cld_status pad_backward(cld_graph *g, cld_tensor *t)
{
    cld_tensor *x = t->src[0], *dx;
    CLD_TRY(cld__node(g, &op_pad_grad, x->ndim, x->shape, 1, &t->grad, &dx));
    dx->ip[0] = t->ip[0];
    dx->ip[1] = t->ip[1];
    return cld__grad_add(g, x, dx);
}
static const cld_op_def op_pad = {"pad2d", pad_forward, pad_backward, 0, 0, CLD_KERNELS({"shape", "pad2d"}),
                                  NULL};

cld_status cld_op_pad2d(cld_graph *g, cld_tensor *x, int top, int bottom, int left, int right, cld_tensor **y)
{
    if (!g || !x || !y) return cld__fail(CLD_ERR_INVALID_ARG, "pad2d: NULL argument");
    if (x->ndim != 4) return cld__shape_fail("pad2d", "input must be (N, C, H, W)", x, NULL);
    if (top < 0 || bottom < 0 || left < 0 || right < 0)
        return cld__fail(CLD_ERR_INVALID_ARG, "pad2d: negative padding (%d, %d, %d, %d)", top, bottom, left,
                         right);
    int shape[4] = {x->shape[0], x->shape[1], x->shape[2] + top + bottom, x->shape[3] + left + right};
    CLD_TRY(cld__node(g, &op_pad, 4, shape, 1, &x, y));
    (*y)->ip[0] = top;
    (*y)->ip[1] = left;
    return CLD_OK;
}
