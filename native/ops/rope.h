// Rotary position embedding, Hugging Face "rotate_half" convention (Qwen2/Llama):
// for head dim hd, half = hd/2, inv_freq_j = θ^(−2j/hd) (rounded to f32, as HF computes it
// in f32), angle = pos·inv_freq_j (in double), and per head
//   (x1, x2) = (x[:half], x[half:]) → (x1·cos − x2·sin, x2·cos + x1·sin).
// The backward is the transpose, a rotation by −angle. Positions are given per token, so
// the same op serves padded prefill (pos = t) and KV-cache decode (pos = cache length).
//
// cos/sin come either from a table built once with rope_table_cpu (the engine builds one
// per model and reuses it across layers and steps) or, when no table is given, are
// computed per token. Both give the same bits: the table holds exactly what the per-token
// path computes.
#pragma once

#include "../common.h"

namespace lgrpo {

struct RopeArgs {
  float* q;                  // [tokens, q_heads, head_dim], rotated in place
  float* k;                  // [tokens, kv_heads, head_dim], rotated in place; nullptr to skip
  const int32_t* positions;  // [tokens], each >= 0 (and < table_positions when a table is given)
  int64_t tokens, q_heads, kv_heads, head_dim;  // head_dim even
  double theta;              // rope_theta; ignored when a table is given
  const float* cos_table;    // [table_positions, head_dim/2] from rope_table_cpu, or nullptr
  const float* sin_table;    // same layout
  int64_t table_positions;
  int device = 0;            // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

// Fills cos/sin [positions, head_dim/2] for positions 0 .. positions-1.
void rope_table_cpu(double theta, int64_t head_dim, int64_t positions, float* cos_out, float* sin_out);

// Both throw lgrpo::Error naming `positions` (before touching q or k) on a bad position.
void rope_forward_cpu(const RopeArgs& a);   // rotate by +angle
void rope_backward_cpu(const RopeArgs& a);  // rotate gradients dq, dk (passed as q, k) by −angle

// The CUDA twins (kernels/rope.cu): the same values (up to the last bit of the double
// cos/sin) and the same errors; the table is written on `device`.
void rope_table_cuda(double theta, int64_t head_dim, int64_t positions, float* cos_out, float* sin_out, int device);
void rope_forward_cuda(const RopeArgs& a);
void rope_backward_cuda(const RopeArgs& a);

}  // namespace lgrpo
