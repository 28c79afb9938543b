// Causal attention for prefill chunks on the CPU, queries in vector lanes.
//
// Why: the C step's per-(query, key) loop (attend_head in llama_step.c) takes a dot product
// across a vector's lanes for every pair: eight multiply-adds in one dependency chain, a
// horizontal sum, a scalar exp. Here lane i of a vector is query row i (two vectors: 16 rows), so
// a score for 16 queries and one key is two independent multiply-adds of one broadcast key
// element; the softmax runs down the lanes (each lane its own running maximum and sum, the
// online softmax of FlashAttention) and the exp is a vector polynomial. Keys come a few at a
// time from the paged cache, each read once for all 16 queries, the next ones prefetched.
// docs/cpu_profile.md section 14 has the measurements.
#include "lane_attention.h"

#include <limits.h>

#include "vec.h"

// The lane vector: 16 floats where AVX-512 has them (one vector of queries, 32 registers; 1.3x
// faster than two 8-float vectors on an AVX-512 Xeon, docs/cpu_profile.md section 15), else 8
// (two vectors, AVX2's 16 registers). Keys per block: VECS x KEYS score accumulators, the
// query vectors and a broadcast key element fit the register file, and so do the value pass's
// KEYS probabilities, its VECS x OUT_ELEMS outputs and one element; OUT_ELEMS x VECS independent
// chains of multiply-adds hide an add's latency in the value pass.
#if defined(__AVX512F__)
#define WIDTH 16
#define KEYS 8
#define OUT_ELEMS 8
#define LPIN(v) __asm__("" : "+v"(v))
#else
#define WIDTH 8
#define KEYS 4
#define OUT_ELEMS 2
#define LPIN(v) PIN(v)
#endif
#define VECS (RS_LANES / WIDTH)  // query vectors
_Static_assert(RS_LANES % WIDTH == 0, "whole query vectors");

typedef float lv __attribute__((vector_size(WIDTH * 4)));
typedef int lvi __attribute__((vector_size(WIDTH * 4)));

// Element by element: GCC turns `(lv){0} + f` into a scalar add and a register broadcast.
#if WIDTH == 16
static inline lv lsplat(float f) { return (lv){f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f}; }
#else
static inline lv lsplat(float f) { return (lv){f, f, f, f, f, f, f, f}; }
#endif

static inline lv select_lv(lvi mask, lv a, lv b) {
  return (lv)(((lvi)a & mask) | ((lvi)b & ~mask));
}

static inline lv max_lv(lv a, lv b) { return select_lv(a > b, a, b); }

// e^x for x <= 0 (every argument here is a score minus a maximum at least as large), lane by
// lane: x = n ln 2 + r with |r| <= ln 2 / 2, e^r by Cephes' degree-6 polynomial for expf (about
// 1 ulp), 2^n put into the exponent bits. Below expf's smallest normal result (x < -87.3, -inf
// included, whose arithmetic above gives NaN) the result is exactly 0: a masked score adds nothing.
static inline lv exp_lv(lv x) {
  const lv round = lsplat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  lvi underflow = x < lsplat(-87.33654f);
  lv n = (x * lsplat(1.44269504088896341f) + round) - round;
  lv r = x - n * lsplat(0.693359375f);
  r = r - n * lsplat(-2.12194440e-4f);
  lv p = lsplat(1.9875691500e-4f);
  p = p * r + lsplat(1.3981999507e-3f);
  p = p * r + lsplat(8.3334519073e-3f);
  p = p * r + lsplat(4.1665795894e-2f);
  p = p * r + lsplat(1.6666665459e-1f);
  p = p * r + lsplat(5.0000001201e-1f);
  p = p * (r * r) + r + lsplat(1.0f);
  lvi scale = (__builtin_convertvector(n, lvi) + 127) << 23;
  return (lv)((lvi)(p * (lv)scale) & ~underflow);
}

// ot[d .. d + E) += the block's KEYS values weighted by their probabilities s, after rescaling
// (when `moved`): E x VECS independent chains.
static inline __attribute__((always_inline)) void value_pass(int E, lv (*ot)[VECS], long d,
                                                             const float *const *vp,
                                                             lv (*s)[KEYS], int moved,
                                                             const lv *rescale) {
  lv o[OUT_ELEMS][VECS];
#pragma GCC unroll 8
  for (int e = 0; e < E; e++)
#pragma GCC unroll 2
    for (int a = 0; a < VECS; a++) o[e][a] = moved ? ot[d + e][a] * rescale[a] : ot[d + e][a];
#pragma GCC unroll 8
  for (int t = 0; t < KEYS; t++)
#pragma GCC unroll 8
    for (int e = 0; e < E; e++) {
      lv value = lsplat(vp[t][d + e]);
      LPIN(value);
#pragma GCC unroll 2
      for (int a = 0; a < VECS; a++) o[e][a] += s[a][t] * value;
    }
#pragma GCC unroll 8
  for (int e = 0; e < E; e++)
#pragma GCC unroll 2
    for (int a = 0; a < VECS; a++) ot[d + e][a] = o[e][a];
}

void rs_lane_attention(const float *q, long q_stride, int rows, const long *len, long D,
                       float scale, const float *k, const float *v, long kv_stride,
                       const long *slots, float *out, long out_stride) {
  // [D][VECS]: element d of each lane's query (scaled) and output (not yet divided by its sum).
  lv qt[RS_LANE_MAX_HEAD_DIM][VECS], ot[RS_LANE_MAX_HEAD_DIM][VECS];
  long longest = 0, shortest = LONG_MAX;
  lv lengths[VECS];
  for (int i = 0; i < RS_LANES; i++) {
    long n = i < rows ? len[i] : 0;  // a lane past `rows` sees no key: its sum stays 0, unread
    lengths[i / WIDTH][i % WIDTH] = (float)n;
    longest = n > longest ? n : longest;
    shortest = n < shortest ? n : shortest;
  }
  for (long d = 0; d < D; d++)
    for (int a = 0; a < VECS; a++) {
      for (int i = 0; i < WIDTH; i++) {
        int row = a * WIDTH + i;
        qt[d][a][i] = row < rows ? q[row * q_stride + d] * scale : 0.0f;
      }
      ot[d][a] = (lv){0};
    }
  // A finite start: with -inf, a lane whose first block is all masked would take -inf - -inf.
  lv top[VECS], total[VECS];
  for (int a = 0; a < VECS; a++) {
    top[a] = lsplat(-1e30f);
    total[a] = (lv){0};
  }
  for (long j0 = 0; j0 < longest; j0 += KEYS) {
    const float *kp[KEYS], *vp[KEYS], *kn[KEYS], *vn[KEYS];
#pragma GCC unroll 8
    for (int t = 0; t < KEYS; t++) {
      long j = j0 + t < longest ? j0 + t : j0;  // past the end: any key, masked below
      kp[t] = k + slots[j] * kv_stride;
      vp[t] = v + slots[j] * kv_stride;
      long next = j0 + KEYS + t < longest ? j0 + KEYS + t : j;
      kn[t] = k + slots[next] * kv_stride;
      vn[t] = v + slots[next] * kv_stride;
    }
    lv s[VECS][KEYS];
#pragma GCC unroll 2
    for (int a = 0; a < VECS; a++)
#pragma GCC unroll 8
      for (int t = 0; t < KEYS; t++) s[a][t] = (lv){0};
    for (long d = 0; d < D; d++) {
      if (!(d & 15)) {  // the next block's keys and values: paged rows the prefetcher can't guess
#pragma GCC unroll 8
        for (int t = 0; t < KEYS; t++) {
          __builtin_prefetch(kn[t] + d);
          __builtin_prefetch(vn[t] + d);
        }
      }
      lv qd[VECS];
#pragma GCC unroll 2
      for (int a = 0; a < VECS; a++) {
        qd[a] = qt[d][a];
        LPIN(qd[a]);
      }
#pragma GCC unroll 8
      for (int t = 0; t < KEYS; t++) {
        lv key = lsplat(kp[t][d]);
        LPIN(key);
#pragma GCC unroll 2
        for (int a = 0; a < VECS; a++) s[a][t] += qd[a] * key;
      }
    }
    if (j0 + KEYS > shortest) {  // some lane's row ends within this block
#pragma GCC unroll 2
      for (int a = 0; a < VECS; a++)
#pragma GCC unroll 8
        for (int t = 0; t < KEYS; t++)
          s[a][t] = select_lv(lsplat((float)(j0 + t)) < lengths[a], s[a][t],
                              lsplat(-__builtin_inff()));
    }
    lv rescale[VECS];
    int moved = 0;  // whether any lane's maximum rose: else the outputs need no rescaling
#pragma GCC unroll 2
    for (int a = 0; a < VECS; a++) {
      lv m = top[a];
#pragma GCC unroll 8
      for (int t = 0; t < KEYS; t++) m = max_lv(m, s[a][t]);
      lvi rose = m > top[a];
      for (int i = 0; i < WIDTH; i++) moved |= rose[i];
      rescale[a] = exp_lv(top[a] - m);
      top[a] = m;
      lv sum = {0};
#pragma GCC unroll 8
      for (int t = 0; t < KEYS; t++) {
        s[a][t] = exp_lv(s[a][t] - m);
        sum += s[a][t];
      }
      total[a] = total[a] * rescale[a] + sum;
    }
    long d = 0;
    for (; d + OUT_ELEMS <= D; d += OUT_ELEMS) value_pass(OUT_ELEMS, ot, d, vp, s, moved, rescale);
    for (; d + 2 <= D; d += 2) value_pass(2, ot, d, vp, s, moved, rescale);  // D is even
  }
  for (int i = 0; i < rows; i++) {
    float inv = 1.0f / total[i / WIDTH][i % WIDTH];
    for (long d = 0; d < D; d++) out[i * out_stride + d] = ot[d][i / WIDTH][i % WIDTH] * inv;
  }
}
