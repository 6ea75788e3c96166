/* Layout ops: channel concat / slice and nearest 2x upsampling. Every buffer
 * argument is followed by its offset in floats.
 *
 * Launched by cld__launch1d over n items, any geometry, walked with FOR_ITEMS
 * (cl/prelude.cl). An item
 * is a row: one division per row, then float8 / float4 copies along it (on
 * a CPU, integer division per element costs more than the copy). */

/* d[0, len) = s[0, len) */
inline void copy_row(__global float *d, __global const float *s, int len)
{
    int l8 = len & ~7;
    for (int j = 0; j < l8; j += 8) vstore8(vload8(0, s + j), 0, d + j);
    for (int j = l8; j < len; j++) d[j] = s[j];
}

/* y (N, Ca+Cb, inner) = [a (N, Ca, inner), b (N, Cb, inner)] along dim 1.
 * Items: the N*(Ca+Cb) rows of y. */
__kernel void concat(__global const float *a, int ao, __global const float *b, int bo, __global float *y,
                     int yo, int N, int Ca, int Cb, int inner)
{
    int Ct = Ca + Cb;
    FOR_ITEMS(r, N * Ct)
    {
        int n = r / Ct, c = r - n * Ct;
        __global const float *s = c < Ca ? a + ao + (n * Ca + c) * inner : b + bo + (n * Cb + c - Ca) * inner;
        copy_row(y + yo + r * inner, s, inner);
    }
}

/* y (N, Cs, inner) = x[:, c0:c0+Cs] of x (N, C, inner). Items: the N*Cs rows of y. */
__kernel void channel_slice(__global const float *x, int xo, __global float *y, int yo, int N, int C, int c0,
                            int Cs, int inner)
{
    FOR_ITEMS(r, N * Cs)
    {
        int n = r / Cs, c = r - n * Cs;
        copy_row(y + yo + r * inner, x + xo + (n * C + c0 + c) * inner, inner);
    }
}

/* y (NC, 2H, 2W) = x (NC, H, W) repeated 2x2: input row r = nc*H + iy
 * fills output rows 2r and 2r + 1. Items: the rows of x. */
__kernel void upsample2x(__global const float *x, int xo, __global float *y, int yo, int rows, int W)
{
    int w4 = W & ~3;
    FOR_ITEMS(r, rows)
    {
        __global const float *s = x + xo + r * W;
        __global float *d = y + yo + 2 * r * 2 * W;
        for (int ix = 0; ix < w4; ix += 4) {
            float4 v = vload4(0, s + ix);
            float8 o = (float8)(v.s0, v.s0, v.s1, v.s1, v.s2, v.s2, v.s3, v.s3);
            vstore8(o, 0, d + 2 * ix);
            vstore8(o, 0, d + 2 * W + 2 * ix);
        }
        for (int ix = w4; ix < W; ix++) {
            float v = s[ix];
            vstore2((float2)(v, v), ix, d);
            vstore2((float2)(v, v), ix, d + 2 * W);
        }
    }
}

/* dx (NC, H, W) = sum of the 2x2 blocks of dy (NC, 2H, 2W): input row r =
 * nc*H + iy gathers output rows 2r and 2r + 1. Items: the rows of dx. */
__kernel void upsample2x_grad(__global const float *dy, int dyo, __global float *dx, int dxo, int rows, int W)
{
    int w4 = W & ~3;
    FOR_ITEMS(r, rows)
    {
        __global const float *s0 = dy + dyo + 2 * r * 2 * W, *s1 = s0 + 2 * W;
        __global float *d = dx + dxo + r * W;
        for (int ix = 0; ix < w4; ix += 4) {
            float8 v = vload8(0, s0 + 2 * ix) + vload8(0, s1 + 2 * ix);
            vstore4(v.even + v.odd, 0, d + ix);
        }
        for (int ix = w4; ix < W; ix++) d[ix] = (s0[2 * ix] + s0[2 * ix + 1]) + (s1[2 * ix] + s1[2 * ix + 1]);
    }
}

/* Zero padding (or cropping, with negative top/left and a smaller output):
 * y[n, c, i, j] = x[n, c, i - top, j - left], 0 outside x. x (R, H, W) with
 * R = N*C rows of planes, y (R, Ho, Wo); one item per output element. */
__kernel void pad2d(__global const float *x, int xo, __global float *y, int yo, int R, int H, int W, int Ho,
                    int Wo, int top, int left)
{
    FOR_ITEMS(e, R * Ho * Wo)
    {
        int j = e % Wo, i = (e / Wo) % Ho, r = e / (Wo * Ho);
        int si = i - top, sj = j - left;
        y[yo + e] = (si >= 0 && si < H && sj >= 0 && sj < W) ? x[xo + (r * H + si) * W + sj] : 0.0f;
    }
}
