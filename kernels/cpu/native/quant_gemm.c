// Small-batch products over GGUF-quantized weights (Q4_1, Q8_0; see small_gemm.h), in float32.
//
// Why: a decode step reads every weight once, so its time is the weights' bytes over memory
// bandwidth. The embedded model's GGUF stores its layers in Q4_1 (0.75 bytes a weight here, with
// float scales) and its embedding (the tied LM head) in Q8_0 (1.125): reading those blocks and
// dequantizing in registers moves 4-5x fewer bytes than the float32 copy. The values computed
// are the float32 copy's own (d * q + m rounded as gguf-py rounds it), taken in the same order as
// small_gemm.c's tiles, so a product equals the float32 one bit for bit.
#include <stdint.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "small_gemm.h"
#include "vec.h"

typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint8_t u8x8 __attribute__((vector_size(8), aligned(1)));
typedef int8_t s8x8 __attribute__((vector_size(8), aligned(1)));

#define MAX_NR 4
#define BLOCK 32

// 8 bytes widened to 8 int32 lanes: one vpmovzxbd / vpmovsxbd with AVX2 (GCC's generic
// conversion loads them a byte at a time).
static inline v8i widen_u8(const uint8_t *p) {
#if defined(__AVX2__)
  return (v8i)_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
#else
  return __builtin_convertvector(*(const u8x8 *)p, v8i);
#endif
}

static inline v8i widen_s8(const int8_t *p) {
#if defined(__AVX2__)
  return (v8i)_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p));
#else
  return __builtin_convertvector(*(const s8x8 *)p, v8i);
#endif
}

// Sub-vector `sub` (elements 8 sub .. 8 sub + 7) of a block, dequantized. gguf-py rounds d * q,
// then d * q + m; but d (a float16: 11 significant bits) times q (4 bits; Q8_0's 8) is exact in
// float32, so the first rounding is a no-op and one fused multiply-add gives the same float. That
// holds fused or not, so no compiler choice can change the values.
static inline __attribute__((always_inline)) v8 q4_1_sub(const uint8_t *codes, int sub, v8 d,
                                                         v8 m) {
  v8i e = widen_u8(codes + (sub & 1) * 8);
  e = sub < 2 ? (e & 15) : (e >> 4);
  return __builtin_convertvector(e, v8) * d + m;
}

static inline __attribute__((always_inline)) v8 q8_0_sub(const int8_t *codes, int sub, v8 d) {
  return __builtin_convertvector(widen_s8(codes + sub * 8), v8) * d;
}

// Bytes of codes and floats of scales per block, per form.
#define CODE_BYTES(KIND) ((KIND) == RS_Q4_1 ? BLOCK / 2 : BLOCK)
#define SCALES(KIND) ((KIND) == RS_Q4_1 ? 2 : 1)

// One MR x NR block of y over quantized rows n .. n + NR - 1 of W; `next`, when >= 0, is the
// first row of the next block of W, prefetched while this one computes.
static inline __attribute__((always_inline)) void qtile(int KIND, int MR, int NR,
                                                        const rs_product_t *p, long m, long n,
                                                        long next) {
  const long K = p->K, blocks = K / BLOCK, ldx = p->ldx;
  const long code_row = blocks * CODE_BYTES(KIND), scale_row = blocks * SCALES(KIND);
  const uint8_t *codes = (const uint8_t *)p->w.data + n * code_row;
  const float *scales = p->w.scales + n * scale_row;
  const float *x = p->x + m * ldx;
  v8 acc[MAX_MR][MAX_NR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) acc[i][j] = (v8){0};
  for (long b = 0; b < blocks; b++) {
    if (next >= 0 && !(b & 1)) {  // one 64-byte line of each row's codes per 64 bytes read
      const uint8_t *ahead = (const uint8_t *)p->w.data + next * code_row + b * CODE_BYTES(KIND);
#pragma GCC unroll 4
      for (int j = 0; j < NR; j++) {
        __builtin_prefetch(ahead + j * code_row);
        if (KIND == RS_Q8_0) __builtin_prefetch(ahead + j * code_row + BLOCK);
        if (!(b & 7)) __builtin_prefetch(p->w.scales + (next + j) * scale_row + b * SCALES(KIND));
      }
    }
    // Row by row of W, so that only one row's scales and codes are live (all NR rows' at once
    // spilled to the stack); each accumulator still adds its block's 4 sub-vectors in order.
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) {
      const float *s = scales + j * scale_row + b * SCALES(KIND);
      const uint8_t *c = codes + j * code_row + b * CODE_BYTES(KIND);
      v8 d = splat(s[0]), mn = KIND == RS_Q4_1 ? splat(s[1]) : (v8){0};
#pragma GCC unroll 4
      for (int sub = 0; sub < 4; sub++) {
        v8 wv = KIND == RS_Q4_1 ? q4_1_sub(c, sub, d, mn) : q8_0_sub((const int8_t *)c, sub, d);
        PIN(wv);
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) acc[i][j] += load8(x + i * ldx + b * BLOCK + sub * 8) * wv;
      }
    }
  }
  float *y = p->y + m * p->N + n;
#pragma GCC unroll 4
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) {
      float s = lane_sum(acc[i][j]);
      y[i * p->N + j] = p->bias ? s + p->bias[n + j] : s;
    }
}

typedef void (*qtile_fn)(const rs_product_t *, long, long, long);
#define QTILE(KIND, MR, NR)                                                             \
  static void qtile_##KIND##_##MR##_##NR(const rs_product_t *p, long m, long n, long next) { \
    qtile(KIND, MR, NR, p, m, n, next);                                                 \
  }
#define QTILE_ROW(KIND, MR) QTILE(KIND, MR, 1) QTILE(KIND, MR, 2) QTILE(KIND, MR, 3) QTILE(KIND, MR, 4)
QTILE_ROW(RS_Q4_1, 1) QTILE_ROW(RS_Q4_1, 2) QTILE_ROW(RS_Q4_1, 3) QTILE_ROW(RS_Q4_1, 4)
QTILE_ROW(RS_Q8_0, 1) QTILE_ROW(RS_Q8_0, 2) QTILE_ROW(RS_Q8_0, 3) QTILE_ROW(RS_Q8_0, 4)
#define QTILE_PTRS(KIND, MR)                                                    \
  {qtile_##KIND##_##MR##_1, qtile_##KIND##_##MR##_2, qtile_##KIND##_##MR##_3, \
   qtile_##KIND##_##MR##_4}
static const qtile_fn Q4_1_TILES[MAX_MR][MAX_NR] = {
    QTILE_PTRS(RS_Q4_1, 1), QTILE_PTRS(RS_Q4_1, 2), QTILE_PTRS(RS_Q4_1, 3), QTILE_PTRS(RS_Q4_1, 4)};
static const qtile_fn Q8_0_TILES[MAX_MR][MAX_NR] = {
    QTILE_PTRS(RS_Q8_0, 1), QTILE_PTRS(RS_Q8_0, 2), QTILE_PTRS(RS_Q8_0, 3), QTILE_PTRS(RS_Q8_0, 4)};

// Rows of W per tile for MR rows of x: MR * NR accumulators, NR dequantized vectors, x and the
// dequantizing temporaries within AVX2's 16 registers.
static const int NR_FOR_MR[MAX_MR + 1] = {0, 4, 4, 3, 2};

// Measured on the development machine (a step's products, two threads, against float32 read
// from memory): Q4_1 1.6x faster at one row, about even at 4; Q8_0 2.5x at one row, 1.15x at 4.
int rs_quantized_rows(int kind) { return kind == RS_Q4_1 ? 3 : kind == RS_Q8_0 ? 4 : 0; }

int rs_quant_rows_per_tile(const rs_product_t *p) { return NR_FOR_MR[main_mr(p->M)]; }

void rs_quant_columns(const rs_product_t *p, long n0, long n1) {
  const qtile_fn(*tiles)[MAX_NR] = p->w.kind == RS_Q4_1 ? Q4_1_TILES : Q8_0_TILES;
  int mr = main_mr(p->M), nr = NR_FOR_MR[mr];
  for (long n = n0; n < n1; n += nr) {
    int nb = (int)(n1 - n < nr ? n1 - n : nr);
    for (long m = 0; m < p->M; m += mr) {
      int mb = (int)(p->M - m < mr ? p->M - m : mr);
      long next = (m == 0 && n + nr < n1) ? n + nr : -1;
      tiles[mb - 1][nb - 1](p, m, n, next);
    }
  }
}

void rs_dequantize(const rs_weight_t *w, long N, long K, float *out) {
  const long blocks = K / BLOCK;
  const long code_row = blocks * CODE_BYTES(w->kind), scale_row = blocks * SCALES(w->kind);
  for (long n = 0; n < N; n++)
    for (long b = 0; b < blocks; b++) {
      const uint8_t *c = (const uint8_t *)w->data + n * code_row + b * CODE_BYTES(w->kind);
      const float *s = w->scales + n * scale_row + b * SCALES(w->kind);
      v8 d = splat(s[0]);
      for (int sub = 0; sub < 4; sub++) {
        v8 v = w->kind == RS_Q4_1 ? q4_1_sub(c, sub, d, splat(s[1]))
                                  : q8_0_sub((const int8_t *)c, sub, d);
        *(v8u *)(out + n * K + b * BLOCK + sub * 8) = v;
      }
    }
}
