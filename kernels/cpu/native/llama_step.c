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

#include "lane_attention.h"
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

// One layer's attention, as a task over (block, head) units for the thread pool. A block is up
// to RS_LANES consecutive rows of one sequence: a decode row alone, or a slice of a prefill
// chunk, whose rows the lane kernel (lane_attention.c) takes together. Each unit's result depends
// on nothing but its own rows and head, so how the units are split over threads never changes a
// number.
typedef struct {
  long first, rows;
} block_t;

typedef struct {
  const rs_llama_t *m;
  const rs_layer_t *L;
  const float *qkv;
  long qkv_n, kv_stride, max_len;
  const long *kv_slots, *row_seq, *row_len;
  const block_t *blocks;
  float *attn, *scores;  // scores: max_len floats per thread
} attention_t;

static void attention_task(void *context, long begin, long end, int thread) {
  const attention_t *a = context;
  const rs_llama_t *m = a->m;
  long H = m->heads, D = m->head_dim, Hkv = m->kv_heads;
  for (long u = begin; u < end; u++) {
    const block_t *b = &a->blocks[u / H];
    long h = u % H, r = b->first, g = h / (H / Hkv);
    const long *slots = a->kv_slots + a->row_seq[r] * a->kv_stride;
    float *out = a->attn + r * H * D + h * D;
    if (b->rows == 1)
      attend_head(m, a->qkv + r * a->qkv_n, h, a->L->k_cache, a->L->v_cache, slots,
                  a->row_len[r], out, a->scores + thread * a->max_len);
    else
      rs_lane_attention(a->qkv + r * a->qkv_n + h * D, a->qkv_n, (int)b->rows, a->row_len + r, D,
                        m->scale, a->L->k_cache + g * D, a->L->v_cache + g * D, Hkv * D, slots,
                        out, H * D);
  }
}

// The step's rows cut into attention blocks (see attention_t); returns how many. Each (block,
// head) unit's cost, for the split over threads, goes to cost_prefix: its longest row's keys,
// a third of that for a row alone (attend_head's work for one row against the lane kernel's for
// up to 16, estimated from their operation counts: about 60 against 200 cycles a key).
static long cut_blocks(long B, long H, const long *row_seq, const long *row_len, block_t *blocks,
                       long *cost_prefix) {
  long count = 0;
  for (long r = 0; r < B;) {
    long rows = 1;
    while (r + rows < B && rows < RS_LANES && row_seq[r + rows] == row_seq[r]) rows++;
    blocks[count++] = (block_t){r, rows};
    r += rows;
  }
  cost_prefix[0] = 0;
  for (long u = 0; u < count * H; u++) {
    const block_t *b = &blocks[u / H];
    long longest = 0;
    for (long i = 0; i < b->rows; i++)
      longest = row_len[b->first + i] > longest ? row_len[b->first + i] : longest;
    cost_prefix[u + 1] = cost_prefix[u] + (b->rows == 1 ? longest : 3 * longest);
  }
  return count;
}

// The per-row work between products (norms, rotary and the KV store, the MLP's activation), as
// tasks over row ranges on the pool once a step has enough rows to pay for the dispatch.
#define PARALLEL_ROWS 16

typedef struct {
  const rs_llama_t *m;
  const rs_layer_t *L;
  float *hidden, *residual, *normed, *qkv, *gate_up, *act;
  const float *norm_weight;
  const long *positions, *out_slots;
  long qkv_n;
  int first;
} rows_t;

static void norm_task(void *context, long begin, long end, int thread) {
  (void)thread;
  const rows_t *a = context;
  long n = a->m->hidden;
  for (long r = begin; r < end; r++)
    add_and_norm(a->hidden + r * n, a->residual + r * n, a->norm_weight, a->normed + r * n, n,
                 a->m->eps, a->first);
}

static void rotate_and_store_task(void *context, long begin, long end, int thread) {
  (void)thread;
  const rows_t *a = context;
  long D = a->m->head_dim, H = a->m->heads, Hkv = a->m->kv_heads;
  for (long r = begin; r < end; r++) {
    float *row = a->qkv + r * a->qkv_n;
    const float *cos = a->m->cos_table + a->positions[r] * D;
    const float *sin = a->m->sin_table + a->positions[r] * D;
    rotate(row, H + Hkv, D, cos, sin);  // q's heads, then k's: adjacent in the row
    memcpy(a->L->k_cache + a->out_slots[r] * Hkv * D, row + H * D, Hkv * D * sizeof(float));
    memcpy(a->L->v_cache + a->out_slots[r] * Hkv * D, row + (H + Hkv) * D,
           Hkv * D * sizeof(float));
  }
}

static float silu(float x) { return x / (1.0f + expf(-x)); }

static void activation_task(void *context, long begin, long end, int thread) {
  (void)thread;
  const rows_t *a = context;
  long I = a->m->intermediate;
  for (long r = begin; r < end; r++) {
    const float *gate = a->gate_up + r * 2 * I, *up = gate + I;
    for (long i = 0; i < I; i++) a->act[r * I + i] = silu(gate[i]) * up[i];
  }
}

// task over rows [0, B): on the pool when B >= PARALLEL_ROWS (row_cost: 0, 1, ..., B), else here.
static void over_rows(rs_task_fn task, rows_t *rows, long B, const long *row_cost, int threads) {
  if (B >= PARALLEL_ROWS)
    rs_parallel(task, rows, row_cost, B, threads);
  else
    task(rows, 0, B, 0);
}

// hidden [B, hidden]: the B new tokens' embeddings in, the final norm's output out. positions
// and out_slots [B]: each token's position and the KV slot it is written to. kv_slots [S,
// kv_stride]: each sequence's slots in order; token r belongs to sequence row_seq[r] and sees
// its first row_len[r] slots (its own included: every token's K/V is stored before any
// attention runs); a sequence's tokens are consecutive rows. Returns 0, or -1 where memory for
// the step's buffers ran out (nothing written to the caches then).
int rs_llama_forward(const rs_llama_t *m, long B, float *hidden, const long *positions,
                     const long *out_slots, const long *kv_slots, long kv_stride,
                     const long *row_seq, const long *row_len) {
  long n = m->hidden, D = m->head_dim, H = m->heads, Hkv = m->kv_heads, I = m->intermediate;
  long qkv_n = (H + 2 * Hkv) * D, max_len = 0;
  for (long r = 0; r < B; r++) max_len = row_len[r] > max_len ? row_len[r] : max_len;
  int threads = rs_thread_count();
  size_t floats = B * (n + n + qkv_n + H * D + 2 * I + I) + (size_t)threads * max_len;
  float *buffer = malloc(floats * sizeof(float));
  long *cost = malloc((B * H + 1) * sizeof(long));
  long *row_cost = malloc((B + 1) * sizeof(long));
  block_t *blocks = malloc(B * sizeof(block_t));
  if (!buffer || !cost || !row_cost || !blocks) {
    free(buffer);
    free(cost);
    free(row_cost);
    free(blocks);
    return -1;
  }
  float *residual = buffer, *normed = residual + B * n, *qkv = normed + B * n;
  float *attn = qkv + B * qkv_n, *gate_up = attn + B * H * D, *act = gate_up + B * 2 * I;
  float *scores = act + B * I;
  for (long r = 0; r <= B; r++) row_cost[r] = r;
  long block_count = cut_blocks(B, H, row_seq, row_len, blocks, cost);
  attention_t at = {m,        0,       qkv,    qkv_n, kv_stride, max_len, kv_slots,
                    row_seq, row_len, blocks, attn,  scores};
  rows_t rows = {m, 0, hidden, residual, normed, qkv, gate_up, act, 0, positions, out_slots, qkv_n,
                 0};
  for (long l = 0; l < m->layers; l++) {
    const rs_layer_t *L = &m->layer[l];
    rows.L = L;
    rows.norm_weight = L->input_norm;
    rows.first = l == 0;
    over_rows(norm_task, &rows, B, row_cost, threads);
    rs_linear(normed, B, n, n, &L->qkv, qkv_n, L->qkv_b, qkv);
    over_rows(rotate_and_store_task, &rows, B, row_cost, threads);
    at.L = L;
    rs_parallel(attention_task, &at, cost, block_count * H, threads);
    rs_linear(attn, B, H * D, H * D, &L->o, n, 0, hidden);
    rows.norm_weight = L->post_norm;
    rows.first = 0;
    over_rows(norm_task, &rows, B, row_cost, threads);
    rs_linear(normed, B, n, n, &L->gate_up, 2 * I, 0, gate_up);
    over_rows(activation_task, &rows, B, row_cost, threads);
    rs_linear(act, B, I, I, &L->down, n, 0, hidden);
  }
  for (long r = 0; r < B; r++)
    add_and_norm(hidden + r * n, residual + r * n, m->final_norm, hidden + r * n, n, m->eps, 0);
  free(buffer);
  free(cost);
  free(row_cost);
  free(blocks);
  return 0;
}
