// Token embedding: out[i] = table[ids[i]] for a [vocab, dim] table; the backward
// scatter-adds the output gradient rows into dtable.
// Engine leaf op: f32 only, CPU twin in embedding.cc (forward and backward together),
// CUDA twin in kernels/embedding.cu (same signatures).
#pragma once

#include "../common.h"

namespace lgrpo {

struct EmbeddingForwardArgs {
  const float* table;    // [vocab, dim]
  const int32_t* ids;    // [n], each in [0, vocab)
  int64_t n, vocab, dim;
  float* out;            // [n, dim] out
  int device = 0;        // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

struct EmbeddingBackwardArgs {
  const int32_t* ids;    // [n], each in [0, vocab)
  const float* dout;     // [n, dim]
  int64_t n, vocab, dim;
  float* dtable;         // [vocab, dim], ACCUMULATED (+=): a tied LM head adds into the same buffer
  int device = 0;        // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

// Both check every id first and throw lgrpo::Error (Range) naming `ids` before writing anything.
void embedding_forward_cpu(const EmbeddingForwardArgs& a);
void embedding_backward_cpu(const EmbeddingBackwardArgs& a);
void embedding_forward_cuda(const EmbeddingForwardArgs& a);
void embedding_backward_cuda(const EmbeddingBackwardArgs& a);

// Throws lgrpo::Error (Range) naming `ids` for the first id outside [0, vocab); both twins
// use it (the CUDA twin on a host copy of the ids).
void check_embedding_ids(const int32_t* ids, int64_t n, int64_t vocab);

}  // namespace lgrpo
