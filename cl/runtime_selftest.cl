/* Trivial kernels for the runtime tests (test/test_runtime.c). */

/* x[i] = value for i < n. */
__kernel void fill(__global float *x, const float value, const uint n) {
    const uint i = get_global_id(0);
    if (i < n) x[i] = value;
}

/* y[i] = a * x[i] + y[i] for i < n. */
__kernel void axpy(__global const float *x, __global float *y, const float a, const uint n) {
    const uint i = get_global_id(0);
    if (i < n) y[i] = a * x[i] + y[i];
}
