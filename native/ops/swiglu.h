// SwiGLU gate of the Qwen2/Llama MLP: h = silu(g)·u, silu(g) = g·σ(g), elementwise over
// [rows, intermediate] (the op only sees n = rows·intermediate elements).
// Engine leaf op: f32 only, CPU twin in swiglu.cc (forward and backward together),
// CUDA twin in kernels/swiglu.cu (same signatures; asynchronous).
#pragma once

#include "../common.h"

namespace lgrpo {

struct SwigluForwardArgs {
  const float* gate;  // [n]
  const float* up;    // [n]
  int64_t n;
  float* h;           // [n] out; may alias gate or up
  int device = 0;     // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

struct SwigluBackwardArgs {
  const float* gate;  // [n] the forward's inputs
  const float* up;    // [n]
  const float* dh;    // [n]
  int64_t n;
  float* dgate;       // [n] out, overwritten; may alias gate or dh
  float* dup;         // [n] out, overwritten; may alias up or dh (not dgate)
  int device = 0;     // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

void swiglu_forward_cpu(const SwigluForwardArgs& a);
void swiglu_backward_cpu(const SwigluBackwardArgs& a);
void swiglu_forward_cuda(const SwigluForwardArgs& a);
void swiglu_backward_cuda(const SwigluBackwardArgs& a);

}  // namespace lgrpo
