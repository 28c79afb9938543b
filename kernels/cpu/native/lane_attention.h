// Causal attention of several consecutive query rows of one sequence at once, the queries held
// in vector lanes (lane_attention.c): the prefill chunks of the C forward step (llama_step.c).
#pragma once

// Query rows per call: one per lane of two vectors.
#define RS_LANES 16
// Longest head the lane kernel takes (its per-call buffers live on the stack).
#define RS_LANE_MAX_HEAD_DIM 256

// Softmax attention of `rows` (1..RS_LANES) query vectors q[i] (row i at q + i * q_stride, D
// floats, not yet scaled) over the first len[i] keys and values of one KV head: key j at
// k + slots[j] * kv_stride (D floats), value j likewise at v. Row i's D outputs go to
// out + i * out_stride. Each lane keeps its own running maximum and sum (the online softmax of
// FlashAttention), so no key past a row's own length ever counts toward it.
void rs_lane_attention(const float *q, long q_stride, int rows, const long *len, long D,
                       float scale, const float *k, const float *v, long kv_stride,
                       const long *slots, float *out, long out_stride);
