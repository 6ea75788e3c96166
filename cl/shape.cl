/* Layout ops: channel concat / slice and nearest 2x upsampling. Every buffer
 * argument is followed by its offset in floats. Multi-dimensional launches
 * (dim 0 along contiguous memory, local 64x1(x1)) so that no work-item
 * divides: on a CPU, integer division per element costs more than the copy. */

/* y (N, Ca+Cb, inner) = [a (N, Ca, inner), b (N, Cb, inner)] along dim 1.
 * 3-D launch (inner, Ca+Cb, N). */
__kernel void concat(__global const float *a, int ao, __global const float *b, int bo,
                     __global float *y, int yo, int Ca, int Cb, int inner)
{
    int q = get_global_id(0), c = get_global_id(1), n = get_global_id(2);
    if (q >= inner) return;
    int Ct = Ca + Cb;
    y[yo + (n * Ct + c) * inner + q] =
        c < Ca ? a[ao + (n * Ca + c) * inner + q] : b[bo + (n * Cb + c - Ca) * inner + q];
}

/* y (N, Cs, inner) = x[:, c0:c0+Cs] of x (N, C, inner). 3-D launch (inner, Cs, N). */
__kernel void channel_slice(__global const float *x, int xo, __global float *y, int yo, int C,
                            int c0, int Cs, int inner)
{
    int q = get_global_id(0), c = get_global_id(1), n = get_global_id(2);
    if (q >= inner) return;
    y[yo + (n * Cs + c) * inner + q] = x[xo + (n * C + c0 + c) * inner + q];
}

/* y (NC, 2H, 2W) = x (NC, H, W) repeated 2x2: input row r = nc*H + iy
 * fills output rows 2r and 2r + 1. 2-D launch (W, NC*H). */
__kernel void upsample2x(__global const float *x, int xo, __global float *y, int yo, int rows,
                         int W)
{
    int ix = get_global_id(0), r = get_global_id(1);
    if (ix >= W || r >= rows) return;
    float v = x[xo + r * W + ix];
    __global float *d = y + yo + 2 * r * 2 * W;
    vstore2((float2)(v, v), ix, d);
    vstore2((float2)(v, v), ix, d + 2 * W);
}

/* dx (NC, H, W) = sum of the 2x2 blocks of dy (NC, 2H, 2W): input row r =
 * nc*H + iy gathers output rows 2r and 2r + 1. 2-D launch (W, NC*H). */
__kernel void upsample2x_grad(__global const float *dy, int dyo, __global float *dx, int dxo,
                              int rows, int W)
{
    int ix = get_global_id(0), r = get_global_id(1);
    if (ix >= W || r >= rows) return;
    int base = dyo + 2 * r * 2 * W + 2 * ix;
    dx[dxo + r * W + ix] = (dy[base] + dy[base + 1]) + (dy[base + 2 * W] + dy[base + 2 * W + 1]);
}
