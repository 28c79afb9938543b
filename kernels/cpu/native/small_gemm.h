// The small-batch product of small_gemm.c, for the other kernels of this library.
#pragma once

void rs_linear_f32(const float *x, long M, long K, long ldx, const float *w, long N,
                   const float *bias, float *y);
