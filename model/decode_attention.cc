#include "model/decode_attention.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "model/fp32_gemv.h"  // HasAvx512

// GCC 12 flags an intrinsic's own "undefined" register as uninitialized when
// it is inlined (a false positive inside <immintrin.h>).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fms {
namespace {

#define FMS_AVX512 __attribute__((target("avx512f")))

constexpr int64_t kLanes = 16;  // floats per 512-bit register.

inline float ToFloat(float x) { return x; }
inline float ToFloat(c10::BFloat16 x) { return static_cast<float>(x); }

FMS_AVX512 inline __m512 Load(const float* p) { return _mm512_loadu_ps(p); }
FMS_AVX512 inline __m512 Load(const c10::BFloat16* p) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

// The kernels of one block of n cache slots, `stride` elements apart:
// scores[i] = scale * q . k_i, and out += sum_i p[i] * v_i. d is a multiple
// of kLanes in the AVX-512 versions.
template <typename E>
FMS_AVX512 void ScoresAvx512(const float* q, const E* k, int64_t n, int64_t stride,
                             int64_t d, float scale, float* scores) {
  for (int64_t i = 0; i < n; ++i, k += stride) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t c = 0; c < d; c += kLanes) {
      acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + c), Load(k + c), acc);
    }
    scores[i] = scale * _mm512_reduce_add_ps(acc);
  }
}

template <typename E>
FMS_AVX512 void WeightedSumAvx512(const float* p, const E* v, int64_t n, int64_t stride,
                                  int64_t d, float* out) {
  for (int64_t c = 0; c < d; c += kLanes) {
    __m512 acc = _mm512_loadu_ps(out + c);
    const E* row = v + c;
    for (int64_t i = 0; i < n; ++i, row += stride) {
      acc = _mm512_fmadd_ps(_mm512_set1_ps(p[i]), Load(row), acc);
    }
    _mm512_storeu_ps(out + c, acc);
  }
}

template <typename E>
void ScoresScalar(const float* q, const E* k, int64_t n, int64_t stride, int64_t d,
                  float scale, float* scores) {
  for (int64_t i = 0; i < n; ++i, k += stride) {
    float acc = 0;
    for (int64_t c = 0; c < d; ++c) acc += q[c] * ToFloat(k[c]);
    scores[i] = scale * acc;
  }
}

template <typename E>
void WeightedSumScalar(const float* p, const E* v, int64_t n, int64_t stride, int64_t d,
                       float* out) {
  for (int64_t i = 0; i < n; ++i, v += stride) {
    for (int64_t c = 0; c < d; ++c) out[c] += p[i] * ToFloat(v[c]);
  }
}

// One query head of one decode row against its sequence's cached keys.
struct Head {
  const float* q;        // [d], fp32
  const int32_t* table;  // the sequence's block table
  int64_t length;        // keys to read
  int64_t kv_offset;     // kv head * d
};

template <typename E>
void Attend(const Head& head, const E* keys, const E* values, int64_t stride, int64_t d,
            int64_t block_size, bool simd, std::vector<float>& scores, float* out) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  scores.resize(head.length);
  const auto slots = [&](int64_t p) {
    return static_cast<int64_t>(head.table[p / block_size]) * block_size * stride +
           head.kv_offset;
  };
  for (int64_t p = 0; p < head.length; p += block_size) {
    const int64_t n = std::min(block_size, head.length - p);
    (simd ? ScoresAvx512<E> : ScoresScalar<E>)(head.q, keys + slots(p), n, stride, d,
                                               scale, scores.data() + p);
  }
  const float max = *std::max_element(scores.begin(), scores.end());
  float sum = 0;
  for (float& s : scores) sum += (s = std::exp(s - max));
  std::fill(out, out + d, 0.0f);
  for (int64_t p = 0; p < head.length; p += block_size) {
    const int64_t n = std::min(block_size, head.length - p);
    (simd ? WeightedSumAvx512<E> : WeightedSumScalar<E>)(scores.data() + p,
                                                         values + slots(p), n, stride, d,
                                                         out);
  }
  for (int64_t c = 0; c < d; ++c) out[c] /= sum;
}

template <typename E>
void Run(const DecodeContext& context, const at::Tensor& q, int64_t heads,
         const at::Tensor& key_cache, const at::Tensor& value_cache, at::Tensor& result) {
  const int64_t rows = q.size(0), d = q.size(1) / heads;
  const int64_t kv_heads = key_cache.size(1), group = heads / kv_heads;
  const int64_t stride = kv_heads * d;  // elements between consecutive slots
  const bool simd = HasAvx512() && d % kLanes == 0;
  const E* keys = key_cache.const_data_ptr<E>();
  const E* values = value_cache.const_data_ptr<E>();
  const E* queries = q.const_data_ptr<E>();
  E* output = result.mutable_data_ptr<E>();
  at::parallel_for(0, rows * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores, qf(d), out(d);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task / heads, h = task % heads;
      const E* qrow = queries + t * q.stride(0) + h * d;
      for (int64_t c = 0; c < d; ++c) qf[c] = ToFloat(qrow[c]);
      const Head head{qf.data(), context.block_tables[t], context.lengths[t],
                      (h / group) * d};
      Attend<E>(head, keys, values, stride, d, context.block_size, simd, scores, out.data());
      E* dst = output + t * heads * d + h * d;
      for (int64_t c = 0; c < d; ++c) dst[c] = E(out[c]);
    }
  });
}

}  // namespace

at::Tensor DecodeAttention(const DecodeContext& context, const at::Tensor& q, int64_t heads,
                           const at::Tensor& key_cache, const at::Tensor& value_cache) {
  TORCH_CHECK(q.dim() == 2 && q.stride(1) == 1 && q.size(1) % heads == 0,
              "q must be [T, heads * d] with contiguous rows");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous() &&
                  key_cache.scalar_type() == q.scalar_type() &&
                  value_cache.scalar_type() == q.scalar_type(),
              "caches must be contiguous and of q's dtype");
  TORCH_CHECK(heads % key_cache.size(1) == 0 && key_cache.size(2) * heads == q.size(1),
              "head counts do not match");
  TORCH_CHECK(static_cast<int64_t>(context.lengths.size()) == q.size(0) &&
                  context.block_tables.size() == context.lengths.size(),
              "one context per row");
  at::Tensor result = at::empty({q.size(0), q.size(1)}, q.options());
  if (q.scalar_type() == at::kBFloat16) {
    Run<c10::BFloat16>(context, q, heads, key_cache, value_cache, result);
  } else {
    TORCH_CHECK(q.scalar_type() == at::kFloat, "float or bfloat16 only");
    Run<float>(context, q, heads, key_cache, value_cache, result);
  }
  return result;
}

}  // namespace fms
