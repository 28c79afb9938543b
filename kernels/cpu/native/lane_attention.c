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

typedef int v8i __attribute__((vector_size(32)));

// Keys per block: 2 x 4 score accumulators, two query vectors and a broadcast key element fit
// AVX2's 16 registers, and so do the value pass's 8 probabilities, 4 outputs and one element.
#define KEYS 4
#define VECS (RS_LANES / 8)  // query vectors
_Static_assert(VECS == 2, "the score loop names its two query vectors");

static inline v8 select8(v8i mask, v8 a, v8 b) {
  return (v8)(((v8i)a & mask) | ((v8i)b & ~mask));
}

static inline v8 max8(v8 a, v8 b) { return select8(a > b, a, b); }

// e^x for x <= 0 (every argument here is a score minus a maximum at least as large), lane by
// lane: x = n ln 2 + r with |r| <= ln 2 / 2, e^r by Cephes' degree-6 polynomial for expf (about
// 1 ulp), 2^n put into the exponent bits. Below expf's smallest normal result (x < -87.3, -inf
// included, whose arithmetic above gives NaN) the result is exactly 0: a masked score adds nothing.
static inline v8 exp8(v8 x) {
  const v8 round = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  v8i underflow = x < splat(-87.33654f);
  v8 n = (x * splat(1.44269504088896341f) + round) - round;
  v8 r = x - n * splat(0.693359375f);
  r = r - n * splat(-2.12194440e-4f);
  v8 p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * (r * r) + r + splat(1.0f);
  v8i scale = (__builtin_convertvector(n, v8i) + 127) << 23;
  return (v8)((v8i)(p * (v8)scale) & ~underflow);
}

void rs_lane_attention(const float *q, long q_stride, int rows, const long *len, long D,
                       float scale, const float *k, const float *v, long kv_stride,
                       const long *slots, float *out, long out_stride) {
  // [D][VECS]: element d of each lane's query (scaled) and output (not yet divided by its sum).
  v8 qt[RS_LANE_MAX_HEAD_DIM][VECS], ot[RS_LANE_MAX_HEAD_DIM][VECS];
  long longest = 0, shortest = LONG_MAX;
  v8 lengths[VECS];
  for (int i = 0; i < RS_LANES; i++) {
    long n = i < rows ? len[i] : 0;  // a lane past `rows` sees no key: its sum stays 0, unread
    lengths[i / 8][i % 8] = (float)n;
    longest = n > longest ? n : longest;
    shortest = n < shortest ? n : shortest;
  }
  for (long d = 0; d < D; d++)
    for (int a = 0; a < VECS; a++) {
      for (int i = 0; i < 8; i++) {
        int row = a * 8 + i;
        qt[d][a][i] = row < rows ? q[row * q_stride + d] * scale : 0.0f;
      }
      ot[d][a] = (v8){0};
    }
  // A finite start: with -inf, a lane whose first block is all masked would take -inf - -inf.
  v8 top[VECS], total[VECS];
  for (int a = 0; a < VECS; a++) {
    top[a] = splat(-1e30f);
    total[a] = (v8){0};
  }
  for (long j0 = 0; j0 < longest; j0 += KEYS) {
    const float *kp[KEYS], *vp[KEYS], *kn[KEYS], *vn[KEYS];
#pragma GCC unroll 4
    for (int t = 0; t < KEYS; t++) {
      long j = j0 + t < longest ? j0 + t : j0;  // past the end: any key, masked below
      kp[t] = k + slots[j] * kv_stride;
      vp[t] = v + slots[j] * kv_stride;
      long next = j0 + KEYS + t < longest ? j0 + KEYS + t : j;
      kn[t] = k + slots[next] * kv_stride;
      vn[t] = v + slots[next] * kv_stride;
    }
    v8 s[VECS][KEYS];
#pragma GCC unroll 2
    for (int a = 0; a < VECS; a++)
#pragma GCC unroll 4
      for (int t = 0; t < KEYS; t++) s[a][t] = (v8){0};
    for (long d = 0; d < D; d++) {
      if (!(d & 15)) {  // the next block's keys and values: paged rows the prefetcher can't guess
#pragma GCC unroll 4
        for (int t = 0; t < KEYS; t++) {
          __builtin_prefetch(kn[t] + d);
          __builtin_prefetch(vn[t] + d);
        }
      }
      v8 q0 = qt[d][0], q1 = qt[d][1];
      PIN(q0);
      PIN(q1);
#pragma GCC unroll 4
      for (int t = 0; t < KEYS; t++) {
        v8 key = splat(kp[t][d]);
        PIN(key);
        s[0][t] += q0 * key;
        s[1][t] += q1 * key;
      }
    }
    if (j0 + KEYS > shortest) {  // some lane's row ends within this block
#pragma GCC unroll 2
      for (int a = 0; a < VECS; a++)
#pragma GCC unroll 4
        for (int t = 0; t < KEYS; t++)
          s[a][t] = select8(splat((float)(j0 + t)) < lengths[a], s[a][t], splat(-__builtin_inff()));
    }
    v8 rescale[VECS];
    int moved = 0;  // whether any lane's maximum rose: else the outputs need no rescaling
#pragma GCC unroll 2
    for (int a = 0; a < VECS; a++) {
      v8 m = top[a];
#pragma GCC unroll 4
      for (int t = 0; t < KEYS; t++) m = max8(m, s[a][t]);
      v8i rose = m > top[a];
      for (int i = 0; i < 8; i++) moved |= rose[i];
      rescale[a] = exp8(top[a] - m);
      top[a] = m;
      v8 sum = {0};
#pragma GCC unroll 4
      for (int t = 0; t < KEYS; t++) {
        s[a][t] = exp8(s[a][t] - m);
        sum += s[a][t];
      }
      total[a] = total[a] * rescale[a] + sum;
    }
    // Two output elements at a time: four independent chains of multiply-adds (one chain waits
    // out each multiply-add's latency).
    for (long d = 0; d + 2 <= D; d += 2) {
      v8 o[2][VECS];
#pragma GCC unroll 2
      for (int e = 0; e < 2; e++)
#pragma GCC unroll 2
        for (int a = 0; a < VECS; a++) o[e][a] = moved ? ot[d + e][a] * rescale[a] : ot[d + e][a];
#pragma GCC unroll 4
      for (int t = 0; t < KEYS; t++)
#pragma GCC unroll 2
        for (int e = 0; e < 2; e++) {
          v8 value = splat(vp[t][d + e]);
          PIN(value);
#pragma GCC unroll 2
          for (int a = 0; a < VECS; a++) o[e][a] += s[a][t] * value;
        }
#pragma GCC unroll 2
      for (int e = 0; e < 2; e++)
#pragma GCC unroll 2
        for (int a = 0; a < VECS; a++) ot[d + e][a] = o[e][a];
    }
  }
  for (int i = 0; i < rows; i++) {
    float inv = 1.0f / total[i / 8][i % 8];
    for (long d = 0; d < D; d++) out[i * out_stride + d] = ot[d][i / 8][i % 8] * inv;
  }
}
