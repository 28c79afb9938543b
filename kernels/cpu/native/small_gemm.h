// The small-batch products of small_gemm.c (float32 weights) and quant_gemm.c (GGUF-quantized
// weights computed in float32), for the other kernels of this library.
#pragma once
#include <stdint.h>

enum rs_weight_kind { RS_F32 = 0, RS_Q4_1 = 1, RS_Q8_0 = 2 };

// A weight matrix W [N, K], in one of three forms. The quantized ones hold GGUF blocks of 32
// weights along K (K % 32 == 0), split into two arrays so that a row's codes are contiguous:
//   RS_Q4_1: data [N, K/2] bytes, a block's 16 bytes holding element i's code (0..15) in the low
//            nibble of byte i for i < 16 and in the high nibble of byte i - 16 otherwise;
//            scales [N, K/32, 2]: each block's d and m; w = d * q + m (two roundings, as
//            dequantized into float32 by gguf-py and so by transformers)
//   RS_Q8_0: data [N, K] signed bytes q; scales [N, K/32]: each block's d; w = d * q
// Each product dequantizes in registers exactly as that, then multiplies in float32 in the same
// order as the float32 kernel: the results equal those over the dequantized weights bit for bit.
//
// Dequantizing costs compute (on the 2-core development machine's Zen 1, 2-3 cycles per 8
// weights) that pays only while a product waits on memory: above rs_quantized_rows(kind) rows of
// x a quantized weight's products may read `dense`, the same W in float32, when given; which form
// they read is measured per (weight, row count) up to 16 rows, the float32 W above (small_gemm.c).
int rs_quantized_rows(int kind);
// Whether products between rs_quantized_rows(kind) and 16 rows choose their form by measured
// speed (on, the default) or always read the float32 W (off); either way clears what was measured.
void rs_set_measured_forms(int on);
typedef struct {
  int kind;
  const void *data;     // RS_F32: const float * [N, K]
  const float *scales;  // quantized forms only
  const float *dense;   // quantized forms: the same W in float32 [N, K], or NULL
} rs_weight_t;

typedef struct {
  const float *x, *bias;
  rs_weight_t w;
  float *y;
  long M, K, N, ldx;
} rs_product_t;

// y [M, N] = x [M, K] (row stride ldx) W^T + bias (or none), on the pool's threads, or through
// BLAS for more than `rows` rows once rs_set_blas has handed over a cblas_sgemm (its integers 64
// bits wide when ints64; rows 0: never).
void rs_set_blas(void *cblas_sgemm, int ints64, long rows);
void rs_linear(const float *x, long M, long K, long ldx, const rs_weight_t *w, long N,
               const float *bias, float *y);

// Work split over the products' thread pool: task(context, begin, end, thread) runs once per
// thread over its share of [0, n), the shares cut where cost_prefix ([n + 1], non-decreasing,
// cost_prefix[i] the cost of units 0..i-1) splits the total evenly; at most max_threads threads
// (the caller is thread 0, so per-thread buffers index by `thread`). rs_thread_count() is how
// many a call may use now.
typedef void (*rs_task_fn)(void *context, long begin, long end, int thread);
void rs_parallel(rs_task_fn task, void *context, const long *cost_prefix, long n,
                 int max_threads);
int rs_thread_count(void);

// Columns [n0, n1) of a quantized product on the calling thread (quant_gemm.c), and the rows of
// W per tile it hands out (thread shares are whole tiles).
void rs_quant_columns(const rs_product_t *p, long n0, long n1);
int rs_quant_rows_per_tile(const rs_product_t *p);

// The float32 W a quantized one stands for, [N, K] into out, by the products' own dequantization.
void rs_dequantize(const rs_weight_t *w, long N, long K, float *out);
