// Causal grouped-query self-attention (Qwen2/Llama) over right-padded rows, and its
// one-position decode variant against a KV cache. Engine leaf op: f32 only; CPU twin in
// attention.cc (forward, backward and decode together).
//
// Layout: q [B, T, Hq, hd], k and v [B, T, Hkv, hd], Hq a multiple of Hkv; query head h
// reads kv head h / (Hq/Hkv). Row b holds len_b valid tokens (0 <= len_b <= T): query t
// attends keys 0..t, which are all valid when t < len_b; outputs (and lse) at t >= len_b
// are 0 and receive no gradient. Scores are scale·q·k (scale usually 1/sqrt(hd)).
//
// Memory: the forward saves only the row logsumexp lse [B, Hq, T]; the backward
// recomputes the probabilities from q, k and lse (flash-attention style), so training
// memory is O(B·H·T), not O(B·H·T²).
//
// Threads: the forward splits (kv head, row, pair of query tiles) items, the decode (row,
// kv head) items; the backward splits (row, kv head) items because each owns its dk/dv
// rows outright (no float atomics, fixed sum order), so it uses at most B·Hkv threads.
// Results are the same bits for any thread count.
//
// Decode reproduces the forward exactly: both run the same tile kernel, whose result for
// a query row never depends on the other rows of its tile or on keys past its own, so
// attention_decode over a cache holding tokens 0..t gives the very bits of
// attention_forward's row t.
#pragma once

#include "../common.h"

namespace lgrpo {

struct AttentionForwardArgs {
  const float* q;          // [B, T, Hq, hd]
  const float* k;          // [B, T, Hkv, hd]
  const float* v;          // [B, T, Hkv, hd]
  const int32_t* lengths;  // [B], each in [0, T]
  int64_t batch, seq, q_heads, kv_heads, head_dim;
  float scale;
  float* out;              // [B, T, Hq, hd] out
  float* lse;              // [B, Hq, T] out: logsumexp of each row's scores (0 at padded rows)
  int device = 0;          // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

struct AttentionBackwardArgs {
  const float* q;          // forward inputs, as above
  const float* k;
  const float* v;
  const int32_t* lengths;
  int64_t batch, seq, q_heads, kv_heads, head_dim;
  float scale;
  const float* out;        // [B, T, Hq, hd] from the forward
  const float* lse;        // [B, Hq, T] from the forward
  const float* dout;       // [B, T, Hq, hd]; ignored at padded rows
  float* dq;               // [B, T, Hq, hd] out, overwritten
  float* dk;               // [B, T, Hkv, hd] out, overwritten (summed over the group's query heads)
  float* dv;               // [B, T, Hkv, hd] out, overwritten
  int device = 0;          // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

struct AttentionDecodeArgs {
  const float* q;          // [B, Hq, hd]: one new query per row (already rotated)
  const float* k_cache;    // [B, max_seq, Hkv, hd]
  const float* v_cache;    // [B, max_seq, Hkv, hd]
  const int32_t* lengths;  // [B], each in [0, max_seq]: cache entries to attend, the new token's included
  int64_t batch, max_seq, q_heads, kv_heads, head_dim;
  float scale;
  float* out;              // [B, Hq, hd] out (0 where lengths is 0)
  int device = 0;          // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

// The forward and decode return the index (in [B, Hq, T] resp. [B, Hq] order) of the
// first row whose output or lse is not finite (non-finite inputs reached it), or -1.
// All three throw lgrpo::Error naming `lengths` on a length out of range, before writing.
int64_t attention_forward_cpu(const AttentionForwardArgs& a);
void attention_backward_cpu(const AttentionBackwardArgs& a);
int64_t attention_decode_cpu(const AttentionDecodeArgs& a);
// CUDA twins (kernels/attention.cu), same contract; head_dim at most 256. Decode gives
// the CUDA forward's exact bits; CUDA and CPU agree to rounding, not bit for bit.
int64_t attention_forward_cuda(const AttentionForwardArgs& a);
void attention_backward_cuda(const AttentionBackwardArgs& a);
int64_t attention_decode_cuda(const AttentionDecodeArgs& a);

}  // namespace lgrpo
