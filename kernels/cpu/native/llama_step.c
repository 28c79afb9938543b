// One forward step of a Llama-family model on the CPU in one call: every layer's norms, q/k/v
// projection, rotary embedding, KV store, paged attention, output projection and gated MLP, for
// a small batch of new tokens (decode rows, short prefill chunks, or both). The products go
// through small_gemm.c's thread pool, over float32 weights or GGUF blocks (quant_gemm.c);
// everything between them runs on the calling thread, in C, where torch spent some 25 small ops
// a layer (about a third of a batch-1 step; docs/cpu_profile.md section 8).
//
// The same math as the torch path in float32 (runtime/model_executor/models/llama.py), with its
// sums taken in another order: results agree to float32 rounding, not bit for bit.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "small_gemm.h"
#include "vec.h"

typedef struct {
  const float *input_norm, *post_norm;  // [hidden]
  rs_weight_t qkv;                      // [(H + 2 Hkv) D, hidden], float32 or GGUF blocks
  const float *qkv_b;                   // [(H + 2 Hkv) D] or NULL
  rs_weight_t o;                        // [hidden, H D]
  rs_weight_t gate_up;                  // [2 I, hidden]: gate rows, then up rows
  rs_weight_t down;                     // [hidden, I]
  float *k_cache, *v_cache;             // [slots, Hkv, D]
} rs_layer_t;

typedef struct {
  long layers, hidden, heads, kv_heads, head_dim, intermediate;
  float eps, scale;
  const float *cos_table, *sin_table;  // [positions, D]: each half repeated (rotate-half layout)
  const float *final_norm;             // [hidden]
  const rs_layer_t *layer;             // [layers]
} rs_llama_t;

static float dot(const float *a, const float *b, long n) {
  v8 acc = {0};
  long i = 0;
  for (; i + 8 <= n; i += 8) acc += *(const v8u *)(a + i) * *(const v8u *)(b + i);
  float s = lane_sum(acc);
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

// y += a * x over n floats.
static void axpy(float *y, float a, const float *x, long n) {
  long i = 0;
  for (; i + 8 <= n; i += 8) *(v8u *)(y + i) += a * *(const v8u *)(x + i);
  for (; i < n; i++) y[i] += a * x[i];
}

// residual = x (first layer) or residual + x; out = residual / rms(residual) * weight.
static void add_and_norm(float *x, float *residual, const float *weight, float *out, long n,
                         float eps, int first) {
  if (first)
    memcpy(residual, x, n * sizeof(float));
  else
    for (long i = 0; i < n; i++) residual[i] += x[i];
  float inv = 1.0f / sqrtf(dot(residual, residual, n) / (float)n + eps);
  for (long i = 0; i < n; i++) out[i] = residual[i] * inv * weight[i];
}

// Rotate-half rotary embedding of `heads` heads of D at one position, in place.
static void rotate(float *x, long heads, long D, const float *cos, const float *sin) {
  long half = D / 2;
  for (long h = 0; h < heads; h++, x += D)
    for (long i = 0; i < half; i++) {
      float a = x[i], b = x[i + half];
      x[i] = a * cos[i] - b * sin[i];
      x[i + half] = b * cos[i + half] + a * sin[i + half];
    }
}

// Softmax attention of query head h of one row over its `len` cached tokens at `slots`, into
// out (that head's D floats); scores: len floats of scratch.
static void attend_head(const rs_llama_t *m, const float *q, long h, const float *k_cache,
                        const float *v_cache, const long *slots, long len, float *out,
                        float *scores) {
  long D = m->head_dim, Hkv = m->kv_heads, g = h / (m->heads / m->kv_heads);
  const float *qh = q + h * D;
  float top = -INFINITY, total = 0.0f;
  for (long j = 0; j < len; j++) {
    float s = dot(qh, k_cache + (slots[j] * Hkv + g) * D, D) * m->scale;
    scores[j] = s;
    top = s > top ? s : top;
  }
  for (long j = 0; j < len; j++) total += (scores[j] = expf(scores[j] - top));
  float inv = 1.0f / total;
  for (long j = 0; j < len; j++) scores[j] *= inv;
  memset(out, 0, D * sizeof(float));
  for (long j = 0; j < len; j++) axpy(out, scores[j], v_cache + (slots[j] * Hkv + g) * D, D);
}

// One layer's attention, as a task over (row, head) units for the thread pool: each unit's
// result depends on nothing but its own row and head, so how the units are split over threads
// never changes a number.
typedef struct {
  const rs_llama_t *m;
  const rs_layer_t *L;
  const float *qkv;
  long qkv_n, kv_stride, max_len;
  const long *kv_slots, *row_seq, *row_len;
  float *attn, *scores;  // scores: max_len floats per thread
} attention_t;

static void attention_task(void *context, long begin, long end, int thread) {
  const attention_t *a = context;
  long H = a->m->heads, D = a->m->head_dim;
  for (long u = begin; u < end; u++) {
    long r = u / H, h = u % H;
    attend_head(a->m, a->qkv + r * a->qkv_n, h, a->L->k_cache, a->L->v_cache,
                a->kv_slots + a->row_seq[r] * a->kv_stride, a->row_len[r],
                a->attn + r * H * D + h * D, a->scores + thread * a->max_len);
  }
}

static float silu(float x) { return x / (1.0f + expf(-x)); }

// hidden [B, hidden]: the B new tokens' embeddings in, the final norm's output out. positions
// and out_slots [B]: each token's position and the KV slot it is written to. kv_slots [S,
// kv_stride]: each sequence's slots in order; token r belongs to sequence row_seq[r] and sees
// its first row_len[r] slots (its own included: every token's K/V is stored before any
// attention runs). Returns 0, or -1 where memory for the step's buffers ran out (nothing
// written to the caches then).
int rs_llama_forward(const rs_llama_t *m, long B, float *hidden, const long *positions,
                     const long *out_slots, const long *kv_slots, long kv_stride,
                     const long *row_seq, const long *row_len) {
  long n = m->hidden, D = m->head_dim, H = m->heads, Hkv = m->kv_heads, I = m->intermediate;
  long qkv_n = (H + 2 * Hkv) * D, max_len = 0;
  for (long r = 0; r < B; r++) max_len = row_len[r] > max_len ? row_len[r] : max_len;
  // Attention's split over threads, by cost: each (row, head) unit costs its row's length.
  int threads = rs_thread_count();
  size_t floats = B * (n + n + qkv_n + H * D + 2 * I + I) + (size_t)threads * max_len;
  float *buffer = malloc(floats * sizeof(float));
  long *cost = malloc((B * H + 1) * sizeof(long));
  if (!buffer || !cost) {
    free(buffer);
    free(cost);
    return -1;
  }
  float *residual = buffer, *normed = residual + B * n, *qkv = normed + B * n;
  float *attn = qkv + B * qkv_n, *gate_up = attn + B * H * D, *act = gate_up + B * 2 * I;
  float *scores = act + B * I;
  cost[0] = 0;
  for (long u = 0; u < B * H; u++) cost[u + 1] = cost[u] + row_len[u / H];
  attention_t at = {m, 0, qkv, qkv_n, kv_stride, max_len, kv_slots, row_seq, row_len, attn,
                    scores};
  for (long l = 0; l < m->layers; l++) {
    const rs_layer_t *L = &m->layer[l];
    for (long r = 0; r < B; r++)
      add_and_norm(hidden + r * n, residual + r * n, L->input_norm, normed + r * n, n, m->eps,
                   l == 0);
    rs_linear(normed, B, n, n, &L->qkv, qkv_n, L->qkv_b, qkv);
    for (long r = 0; r < B; r++) {
      float *row = qkv + r * qkv_n;
      const float *cos = m->cos_table + positions[r] * D, *sin = m->sin_table + positions[r] * D;
      rotate(row, H + Hkv, D, cos, sin);  // q's heads, then k's: adjacent in the row
      memcpy(L->k_cache + out_slots[r] * Hkv * D, row + H * D, Hkv * D * sizeof(float));
      memcpy(L->v_cache + out_slots[r] * Hkv * D, row + (H + Hkv) * D, Hkv * D * sizeof(float));
    }
    at.L = L;
    rs_parallel(attention_task, &at, cost, B * H, threads);
    rs_linear(attn, B, H * D, H * D, &L->o, n, 0, hidden);
    for (long r = 0; r < B; r++)
      add_and_norm(hidden + r * n, residual + r * n, L->post_norm, normed + r * n, n, m->eps, 0);
    rs_linear(normed, B, n, n, &L->gate_up, 2 * I, 0, gate_up);
    for (long r = 0; r < B; r++) {
      const float *gate = gate_up + r * 2 * I, *up = gate + I;
      for (long i = 0; i < I; i++) act[r * I + i] = silu(gate[i]) * up[i];
    }
    rs_linear(act, B, I, I, &L->down, n, 0, hidden);
  }
  for (long r = 0; r < B; r++)
    add_and_norm(hidden + r * n, residual + r * n, m->final_norm, hidden + r * n, n, m->eps, 0);
  free(buffer);
  free(cost);
  return 0;
}
