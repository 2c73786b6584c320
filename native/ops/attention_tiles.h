// attention.cc's tile kernels, written once over a lane type X (ScalarLanes, Avx2Lanes,
// Avx512Lanes: X::L floats per vector). attention.cc includes this file inside a namespace
// once per instruction set (the AVX-512 copy inside a target pragma), so there is no
// include guard and no #include here: everything it uses is included before it.
//
// A tile is up to X::L query rows of one (row b, kv head), one row per lane. Every kernel
// works lane-wise only (no shuffles across lanes, keys one at a time as broadcasts), so a
// query row gets the same bits in any lane of any tile, with any lane count: the forward's
// tiles of several positions and the decode's tile of one position's heads agree exactly.
// Per lane, for a query q and keys 0..n-1:
//   s_j = scale · (q_0·k_j0 + … one FMA per element, in element order, from 0)
//   m = max_j s_j,  e_j = exp(s_j − m),  sum = e_0 + e_1 + … (in key order)
//   lse = m + log(sum),  out = (Σ_j e_j·v_j, one FMA per key in key order) · (1/sum)
// Lanes whose row attends fewer keys than the tile's longest (the causal mask) see −∞
// scores there, so exp gives exactly 0 and their sums, maxima and weighted sums are left
// exactly as they were.

// rows[r][0..hd) into t[d·L + r]: the tile's rows as lanes (a lane without a row points at
// zeros).
template <class X>
inline void gather_lanes(const float* const* rows, int64_t hd, float* t) {
  constexpr int L = X::L;
  int64_t d = 0;
#if LGRPO_AVX2
  if (L % 8 == 0)
    for (; d + 8 <= hd; d += 8)
      for (int r = 0; r < L; r += 8) transpose8x8_from_rows(rows + r, d, t + d * L + r, L);
#endif
  for (int r = 0; r < L; ++r)
    for (int64_t e = d; e < hd; ++e) t[e * L + r] = rows[r][e];
}

// gather_lanes' inverse: rows[r][d] = t[d·L + r] (a lane without a row points at a sink).
template <class X>
inline void scatter_lanes(const float* t, int64_t hd, float* const* rows) {
  constexpr int L = X::L;
  int64_t d = 0;
#if LGRPO_AVX2
  if (L % 8 == 0)
    for (; d + 8 <= hd; d += 8)
      for (int r = 0; r < L; r += 8) transpose8x8_to_rows(t + d * L + r, L, rows + r, d);
#endif
  for (int r = 0; r < L; ++r)
    for (int64_t e = d; e < hd; ++e) rows[r][e] = t[e * L + r];
}

// Per lane: whether lse and every output element (t [hd·L], lanes) are finite.
template <class X>
inline void finite_lanes(const float* t, int64_t hd, const float* lse, bool* finite) {
  constexpr int L = X::L;
  typename X::V probe = X::zero();  // Σ (x − x): 0 unless some x is NaN or ±Inf
  for (int64_t d = 0; d < hd; ++d) {
    const typename X::V x = X::load(t + d * L);
    probe = X::add(probe, X::sub(x, x));
  }
  float lanes[L];
  X::store(lanes, probe);
  for (int r = 0; r < L; ++r) finite[r] = lanes[r] == 0.0f && std::isfinite(lse[r]);
}

// s[j·L + r] = scale · Σ_d qt[d·L + r]·k_j[d] for keys j < n (k_j at k + j·stride): one FMA
// chain per (lane, key) over d in order, X::kChains keys in flight.
template <class X>
inline void lane_scores(const float* qt, const float* k, int64_t stride, int64_t n, int64_t hd, float scale,
                        float* s) {
  using V = typename X::V;
  constexpr int L = X::L;
  const V sc = X::set1(scale);
  int64_t j = 0;
  constexpr int K = X::kChains;
  for (; j + K <= n; j += K) {
    V a[K];
    for (int m = 0; m < K; ++m) a[m] = X::zero();
    const float* kj = k + j * stride;
    for (int64_t d = 0; d < hd; ++d) {
      const V qd = X::load(qt + d * L);
      for (int m = 0; m < K; ++m) a[m] = X::fma(qd, X::set1(kj[m * stride + d]), a[m]);
    }
    for (int m = 0; m < K; ++m) X::store(s + (j + m) * L, X::mul(a[m], sc));
  }
  for (; j < n; ++j) {
    V a = X::zero();
    const float* kj = k + j * stride;
    for (int64_t d = 0; d < hd; ++d) a = X::fma(X::load(qt + d * L), X::set1(kj[d]), a);
    X::store(s + j * L, X::mul(a, sc));
  }
}

// Calls f(Width<C>{}, d0) over [0, hd) in chunks of Max and one remainder chunk, so
// kernels keep a chunk's accumulators in registers.
template <int C>
using Width = std::integral_constant<int, C>;
template <int Max, int C = Max - 1, class F>
inline void remainder_chunk(int64_t rest, int64_t d0, F&& f) {
  if constexpr (C > 0) {
    if (rest == C) return f(Width<C>{}, d0);
    remainder_chunk<Max, C - 1>(rest, d0, f);
  }
}
template <int Max, class F>
inline void for_chunks(int64_t hd, F&& f) {
  int64_t d0 = 0;
  for (; d0 + Max <= hd; d0 += Max) f(Width<Max>{}, d0);
  remainder_chunk<Max>(hd - d0, d0, f);
}

// ot[c·L + r] = mult · Σ_{j < n} w[j·L + r]·rows_j[d0 + c] for c < C (rows_j at rows + j·stride),
// one FMA per key in key order. Keys at or past n_full are added only in lanes whose limit
// (nl) is above them, so a lane's sum holds exactly its own keys.
template <class X, int C>
inline void lane_weighted_sum(const float* w, const float* rows, int64_t stride, int64_t n_full, int64_t n,
                              typename X::V nl, typename X::V mult, float* ot) {
  using V = typename X::V;
  constexpr int L = X::L;
  V a[C];
  for (int c = 0; c < C; ++c) a[c] = X::zero();
  int64_t j = 0;
  for (; j < n_full; ++j) {
    const V wj = X::load(w + j * L);
    const float* x = rows + j * stride;
    for (int c = 0; c < C; ++c) a[c] = X::fma(wj, X::set1(x[c]), a[c]);
  }
  for (; j < n; ++j) {
    const auto live = X::less(X::set1(static_cast<float>(j)), nl);
    const V wj = X::load(w + j * L);
    const float* x = rows + j * stride;
    for (int c = 0; c < C; ++c) a[c] = X::select(live, X::fma(wj, X::set1(x[c]), a[c]), a[c]);
  }
  for (int c = 0; c < C; ++c) X::store(ot + c * L, X::mul(a[c], mult));
}

// The forward of one tile: lane r attends keys 0..nl[r]−1 (n_full <= nl[r] <= n; a lane
// without a row has nl = n and zero queries). qt [hd·L] the queries as lanes; s [n·L]
// scratch. Writes ot [hd·L] (the outputs as lanes), lse[L] (NaN where a score was not
// finite).
template <class X>
void attend_tile(const float* qt, const float* nl_lanes, int64_t n_full, int64_t n, const float* k, const float* v,
                 int64_t stride, int64_t hd, float scale, float* s, float* ot, float* lse) {
  using V = typename X::V;
  constexpr int L = X::L;
  lane_scores<X>(qt, k, stride, n, hd, scale, s);
  const V nl = X::load(nl_lanes);
  V mx = X::set1(-INFINITY), probe = X::zero();  // probe: Σ (s − s), 0 unless a score is NaN or ±Inf
  int64_t j = 0;
  for (; j < n_full; ++j) {
    const V x = X::load(s + j * L);
    probe = X::add(probe, X::sub(x, x));
    mx = X::max(mx, x);
  }
  for (; j < n; ++j) {
    const auto live = X::less(X::set1(static_cast<float>(j)), nl);
    const V x = X::load(s + j * L), xl = X::select(live, x, X::zero()), masked = X::select(live, x, X::set1(-INFINITY));
    probe = X::add(probe, X::sub(xl, xl));
    mx = X::max(mx, masked);
    X::store(s + j * L, masked);
  }
  V sum = X::zero();
  for (j = 0; j < n; ++j) {
    const V e = X::exp(X::sub(X::load(s + j * L), mx));
    X::store(s + j * L, e);
    sum = X::add(sum, e);
  }
  float m_l[L], sum_l[L], probe_l[L];
  X::store(m_l, mx);
  X::store(sum_l, sum);
  X::store(probe_l, probe);
  for (int r = 0; r < L; ++r) lse[r] = probe_l[r] == 0.0f ? m_l[r] + std::log(sum_l[r]) : NAN;
  const V inv = X::div(X::set1(1.0f), sum);
  for_chunks<X::kChains>(hd, [&](auto width, int64_t d0) {
    lane_weighted_sum<X, decltype(width)::value>(s, v + d0, stride, n_full, n, nl, inv, ot + d0 * L);
  });
}

// What the backward of one tile needs beside the forward's inputs: per lane the saved lse
// and D = dO·o (the softmax backward's row term).
// p and ds [n·L]: p_j = exp(s_j − lse) and ds_j = scale·p_j·(dO·v_j − D), 0 past a lane's
// keys; dqt [hd·L]: Σ_j ds_j·k_j, the tile's dq as lanes.
template <class X>
void backward_tile(const float* qt, const float* dot, const float* lse_lanes, const float* d_lanes,
                   const float* nl_lanes, int64_t n_full, int64_t n, const float* k, const float* v, int64_t stride,
                   int64_t hd, float scale, float* p, float* ds, float* dqt) {
  using V = typename X::V;
  constexpr int L = X::L;
  lane_scores<X>(qt, k, stride, n, hd, scale, p);
  lane_scores<X>(dot, v, stride, n, hd, 1.0f, ds);
  const V lse = X::load(lse_lanes), dd = X::load(d_lanes), nl = X::load(nl_lanes), sc = X::set1(scale);
  for (int64_t j = 0; j < n; ++j) {
    V e = X::exp(X::sub(X::load(p + j * L), lse));
    V g = X::mul(sc, X::mul(e, X::sub(X::load(ds + j * L), dd)));
    if (j >= n_full) {
      const auto live = X::less(X::set1(static_cast<float>(j)), nl);
      e = X::select(live, e, X::zero());
      g = X::select(live, g, X::zero());
    }
    X::store(p + j * L, e);
    X::store(ds + j * L, g);
  }
  for_chunks<X::kChains>(hd, [&](auto width, int64_t d0) {
    lane_weighted_sum<X, decltype(width)::value>(ds, k + d0, stride, n, n, nl, X::set1(1.0f), dqt + d0 * L);
  });
}

// src [n·L] (keys as rows, lanes as columns) into dst [L rows of ld], keys [n, ld) zero.
template <class X>
inline void keys_to_rows(const float* src, int64_t n, int64_t ld, float* dst) {
  constexpr int L = X::L;
  int64_t j = 0;
#if LGRPO_AVX2
  if (L % 8 == 0)
    for (; j + 8 <= n; j += 8)
      for (int r = 0; r < L; r += 8) transpose8x8(src + j * L + r, L, dst + r * ld + j, ld);
#endif
  for (int r = 0; r < L; ++r) {
    for (int64_t jj = j; jj < n; ++jj) dst[r * ld + jj] = src[jj * L + r];
    std::fill(dst + r * ld + n, dst + (r + 1) * ld, 0.0f);
  }
}

// dkt[d·ldk + j] += Σ_r ds[r][j]·q_r[d] and dvt[d·ldk + j] += Σ_r p[r][j]·dO_r[d] for
// the keys j in [j0, j0 + L) (as lanes), d in [d0, d0 + C), the rows r in [r_begin, r_end) in
// order (pt, dst: [row][key] of row stride ld).
template <class X, int C>
inline void lane_key_grads(const float* pt, const float* dst, int64_t ld, const float* const* q_rows,
                           const float* const* dout_rows, int r_begin, int r_end, int64_t j0, int64_t d0, float* dkt,
                           float* dvt, int64_t ldk) {
  using V = typename X::V;
  V ak[C], av[C];
  for (int c = 0; c < C; ++c) {
    ak[c] = X::load(dkt + (d0 + c) * ldk + j0);
    av[c] = X::load(dvt + (d0 + c) * ldk + j0);
  }
  for (int r = r_begin; r < r_end; ++r) {
    const V w = X::load(dst + r * ld + j0), pw = X::load(pt + r * ld + j0);
    const float *q = q_rows[r] + d0, *dout = dout_rows[r] + d0;
    for (int c = 0; c < C; ++c) {
      ak[c] = X::fma(w, X::set1(q[c]), ak[c]);
      av[c] = X::fma(pw, X::set1(dout[c]), av[c]);
    }
  }
  for (int c = 0; c < C; ++c) {
    X::store(dkt + (d0 + c) * ldk + j0, ak[c]);
    X::store(dvt + (d0 + c) * ldk + j0, av[c]);
  }
}

// ---- Drivers: one work item each, over the tiles of one (row b, kv head). -------------

// Per-thread scratch of the drivers below, carved from one buffer of floats(T, hd, backward)
// floats (the forward and decode use the part up to p's end). Nothing in it is read before
// it is written but zeros, which the constructor fills.
template <class X>
struct TileScratch {
  static constexpr int L = X::L;
  int64_t keys;                 // keys rounded up to whole lanes, and 8 more (keys_to_rows' blocks)
  float *zeros, *sink;          // [hd]: the row of a lane without one; where its output goes
  float *qt, *dot, *ot;         // [hd·L] queries, dO (backward) and outputs or dq, as lanes
  float *p, *ds, *pt, *dst;     // [keys·L] per key as lanes, then per row (ds, pt, dst: backward)
  float *dkt, *dvt;             // [hd·keys] dk and dv, keys as columns (backward)
  static int64_t floats(int64_t T, int64_t hd, bool backward) {
    const int64_t forward = 2 * hd + 3 * hd * L + rounded(T) * L;
    return backward ? forward + 3 * rounded(T) * L + 2 * hd * rounded(T) : forward;
  }
  static int64_t rounded(int64_t T) { return (std::max<int64_t>(T, 1) + L - 1) / L * L + 8; }
  TileScratch(float* base, int64_t T, int64_t hd) : keys(rounded(T)) {
    zeros = base, sink = zeros + hd, qt = sink + hd, dot = qt + hd * L, ot = dot + hd * L;
    p = ot + hd * L, ds = p + keys * L, pt = ds + keys * L, dst = pt + keys * L;
    dkt = dst + keys * L, dvt = dkt + hd * keys;
    std::fill(zeros, zeros + hd, 0.0f);
  }
};

// The forward's tiles tiles[0..count) of (b, kv head) (tile i: rows [i·L, i·L + L) of its
// len·G rows, position-major); returns the first non-finite row (in [B, Hq, T] order) or -1.
template <class X>
int64_t forward_tiles(const AttentionForwardArgs& a, int64_t b, int64_t kvh, const int64_t* tiles, int count,
                      float* scratch) {
  constexpr int L = X::L;
  const int64_t T = a.seq, Hq = a.q_heads, Hkv = a.kv_heads, hd = a.head_dim, G = Hq / Hkv, len = a.lengths[b];
  const float* kb = a.k + (b * T * Hkv + kvh) * hd;
  const float* vb = a.v + (b * T * Hkv + kvh) * hd;
  TileScratch<X> w(scratch, T, hd);
  int64_t bad = -1;
  for (int i = 0; i < count; ++i) {
    const int64_t r0 = tiles[i] * L, rows = std::min<int64_t>(L, len * G - r0);
    const float* q_rows[L];
    float* out_rows[L];
    float nl[L], lse[L];
    const int64_t t_first = r0 / G, t_last = (r0 + rows - 1) / G;
    for (int r = 0; r < L; ++r) {
      const int64_t t = (r0 + r) / G, g = (r0 + r) % G, off = ((b * T + t) * Hq + kvh * G + g) * hd;
      q_rows[r] = r < rows ? a.q + off : w.zeros;
      out_rows[r] = r < rows ? a.out + off : w.sink;
      nl[r] = static_cast<float>(r < rows ? t + 1 : t_last + 1);
    }
    gather_lanes<X>(q_rows, hd, w.qt);
    attend_tile<X>(w.qt, nl, t_first + 1, t_last + 1, kb, vb, Hkv * hd, hd, a.scale, w.p, w.ot, lse);
    scatter_lanes<X>(w.ot, hd, out_rows);
    bool finite[L];
    finite_lanes<X>(w.ot, hd, lse, finite);
    for (int r = 0; r < rows; ++r) {
      const int64_t t = (r0 + r) / G, g = (r0 + r) % G, row = (b * Hq + kvh * G + g) * T + t;
      a.lse[row] = lse[r];
      if (!finite[r] && (bad < 0 || row < bad)) bad = row;
    }
  }
  return bad;
}

// The decode's heads g in [g0, g0 + L) of (b, kv head) against the cache's first len keys.
template <class X>
int64_t decode_tile(const AttentionDecodeArgs& a, int64_t b, int64_t kvh, int64_t g0, float* scratch) {
  constexpr int L = X::L;
  const int64_t T = a.max_seq, Hq = a.q_heads, Hkv = a.kv_heads, hd = a.head_dim, G = Hq / Hkv, len = a.lengths[b];
  const int64_t rows = std::min<int64_t>(L, G - g0), first = b * Hq + kvh * G + g0;
  if (len == 0) {  // nothing to attend: 0, as the forward's padded rows
    std::fill(a.out + first * hd, a.out + (first + rows) * hd, 0.0f);
    return -1;
  }
  TileScratch<X> w(scratch, T, hd);
  const float* q_rows[L];
  float* out_rows[L];
  float nl[L], lse[L];
  for (int r = 0; r < L; ++r) {
    q_rows[r] = r < rows ? a.q + (first + r) * hd : w.zeros;
    out_rows[r] = r < rows ? a.out + (first + r) * hd : w.sink;
    nl[r] = static_cast<float>(len);
  }
  gather_lanes<X>(q_rows, hd, w.qt);
  attend_tile<X>(w.qt, nl, len, len, a.k_cache + (b * T * Hkv + kvh) * hd, a.v_cache + (b * T * Hkv + kvh) * hd,
                 Hkv * hd, hd, a.scale, w.p, w.ot, lse);
  scatter_lanes<X>(w.ot, hd, out_rows);
  bool finite[L];
  finite_lanes<X>(w.ot, hd, lse, finite);
  for (int r = 0; r < rows; ++r)
    if (!finite[r]) return first + r;
  return -1;
}

// The backward of (b, kv head): every tile of its len·G query rows (position-major), then
// dk and dv from the keys' sums kept as lanes.
template <class X>
void backward_item(const AttentionBackwardArgs& a, int64_t b, int64_t kvh, float* scratch) {
  using V = typename X::V;
  constexpr int L = X::L;
  const int64_t T = a.seq, Hq = a.q_heads, Hkv = a.kv_heads, hd = a.head_dim, G = Hq / Hkv, len = a.lengths[b];
  const int64_t kv_stride = Hkv * hd;
  const float* kb = a.k + (b * T * Hkv + kvh) * hd;
  const float* vb = a.v + (b * T * Hkv + kvh) * hd;
  TileScratch<X> w(scratch, T, hd);
  const int64_t ldk = w.keys;
  std::fill(w.dkt, w.dkt + 2 * hd * ldk, 0.0f);
  for (int64_t t = len; t < T; ++t)
    std::fill(a.dq + ((b * T + t) * Hq + kvh * G) * hd, a.dq + ((b * T + t) * Hq + kvh * G + G) * hd, 0.0f);
  for (int64_t r0 = 0; r0 < len * G; r0 += L) {
    const int64_t rows = std::min<int64_t>(L, len * G - r0);
    const int64_t t_first = r0 / G, t_last = (r0 + rows - 1) / G, n = t_last + 1, ld = (n + L - 1) / L * L;
    const float *q_rows[L], *dout_rows[L], *out_rows[L];
    float* dq_rows[L];
    float nl[L], lse[L], dd[L];
    for (int r = 0; r < L; ++r) {
      const int64_t t = (r0 + r) / G, g = (r0 + r) % G, off = ((b * T + t) * Hq + kvh * G + g) * hd;
      const bool live = r < rows;
      q_rows[r] = live ? a.q + off : w.zeros;
      dout_rows[r] = live ? a.dout + off : w.zeros;
      out_rows[r] = live ? a.out + off : w.zeros;
      dq_rows[r] = live ? a.dq + off : w.sink;
      nl[r] = static_cast<float>(live ? t + 1 : n);
      lse[r] = live ? a.lse[(b * Hq + kvh * G + g) * T + t] : 0.0f;
    }
    gather_lanes<X>(q_rows, hd, w.qt);
    gather_lanes<X>(dout_rows, hd, w.dot);
    gather_lanes<X>(out_rows, hd, w.ot);
    V acc = X::zero();  // D = dO·o per lane
    for (int64_t d = 0; d < hd; ++d) acc = X::fma(X::load(w.dot + d * L), X::load(w.ot + d * L), acc);
    X::store(dd, acc);
    backward_tile<X>(w.qt, w.dot, lse, dd, nl, t_first + 1, n, kb, vb, kv_stride, hd, a.scale, w.p, w.ds, w.ot);
    scatter_lanes<X>(w.ot, hd, dq_rows);
    keys_to_rows<X>(w.p, n, ld, w.pt);
    keys_to_rows<X>(w.ds, n, ld, w.dst);
    for (int64_t j0 = 0; j0 < n; j0 += L) {
      int r_begin = 0;  // rows before it end before key j0: all their terms are 0
      while (r_begin < rows && (r0 + r_begin) / G < j0) ++r_begin;
      for_chunks<X::kChains / 2>(hd, [&](auto width, int64_t d0) {  // dk and dv: two chains per element
        lane_key_grads<X, decltype(width)::value>(w.pt, w.dst, ld, q_rows, dout_rows, r_begin, static_cast<int>(rows),
                                                  j0, d0, w.dkt, w.dvt, ldk);
      });
    }
  }
  // dk and dv rows from their columns; rows past the length get 0.
  float* dk = a.dk + (b * T * Hkv + kvh) * hd;
  float* dv = a.dv + (b * T * Hkv + kvh) * hd;
  int64_t t = 0;
#if LGRPO_AVX2
  for (; t + 8 <= len; t += 8)
    for (int64_t d = 0; d + 8 <= hd; d += 8) {
      transpose8x8(w.dkt + d * ldk + t, ldk, dk + t * kv_stride + d, kv_stride);
      transpose8x8(w.dvt + d * ldk + t, ldk, dv + t * kv_stride + d, kv_stride);
    }
  const int64_t d_done = hd / 8 * 8;
  for (int64_t u = 0; u < t; ++u)
    for (int64_t d = d_done; d < hd; ++d) {
      dk[u * kv_stride + d] = w.dkt[d * ldk + u];
      dv[u * kv_stride + d] = w.dvt[d * ldk + u];
    }
#endif
  for (; t < T; ++t)
    for (int64_t d = 0; d < hd; ++d) {
      dk[t * kv_stride + d] = t < len ? w.dkt[d * ldk + t] : 0.0f;
      dv[t * kv_stride + d] = t < len ? w.dvt[d * ldk + t] : 0.0f;
    }
}
