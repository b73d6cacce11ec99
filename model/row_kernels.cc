#include "model/row_kernels.h"

#include <immintrin.h>

#include <cmath>

#include "model/bf16_gemv.h"
#include "model/fp32_gemv.h"

// GCC 12 flags the intrinsics' own "undefined" registers as uninitialized
// once inlined (false positives inside <immintrin.h>, as in bf16_gemv.cc).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fms {
namespace {

#define FMS_ROW_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

constexpr int64_t kLanes = 16;  // floats per 512-bit register.

FMS_ROW_TARGET inline __mmask16 Mask(int64_t left) {
  return left >= kLanes ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
}

// Loads, stores and the rounding of each element type, in fp32 registers.
template <typename E>
struct Lanes;

template <>
struct Lanes<float> {
  FMS_ROW_TARGET static __m512 Load(const float* p, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, p);
  }
  FMS_ROW_TARGET static void Store(float* p, __m512 v, __mmask16 m) {
    _mm512_mask_storeu_ps(p, m, v);
  }
  FMS_ROW_TARGET static __m512 Round(__m512 v) { return v; }
};

template <>
struct Lanes<c10::BFloat16> {
  // bf16 is the high half of an fp32: widen and shift.
  FMS_ROW_TARGET static __m512 Load(const c10::BFloat16* p, __mmask16 m) {
    const __m256i half = _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
  }
  // Round to nearest even, as c10::BFloat16(float).
  FMS_ROW_TARGET static void Store(c10::BFloat16* p, __m512 v, __mmask16 m) {
    _mm256_mask_storeu_epi16(p, m, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
  }
  FMS_ROW_TARGET static __m512 Round(__m512 v) {
    const __m256i half = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
  }
};

// e^x: x = n ln2 + r with |r| <= ln2 / 2, e^r by Cephes' expf polynomial,
// scaled by 2^n (scalef saturates to 0 and infinity). NaN stays NaN.
FMS_ROW_TARGET inline __m512 Exp(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(100.0f), x);  // min(c, NaN) is NaN; e^100 is inf
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

template <typename E>
FMS_ROW_TARGET void SiluMulImpl(const E* gate, const E* up, E* y, int64_t n) {
  using L = Lanes<E>;
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = Mask(n - i);
    const __m512 g = L::Load(gate + i, m);
    const __m512 e = Exp(_mm512_sub_ps(_mm512_setzero_ps(), g));
    const __m512 silu = L::Round(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
    L::Store(y + i, _mm512_mul_ps(silu, L::Load(up + i, m)), m);
  }
}

template <typename E>
FMS_ROW_TARGET void RmsNormImpl(const E* x, const E* w, E* y, int64_t n, float eps) {
  using L = Lanes<E>;
  __m512 squares = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += kLanes) {
    const __m512 v = L::Load(x + i, Mask(n - i));
    squares = _mm512_fmadd_ps(v, v, squares);
  }
  const float r = 1.0f / std::sqrt(_mm512_reduce_add_ps(squares) / n + eps);
  const __m512 rv = _mm512_set1_ps(r);
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = Mask(n - i);
    const __m512 normed = L::Round(_mm512_mul_ps(L::Load(x + i, m), rv));
    L::Store(y + i, _mm512_mul_ps(L::Load(w + i, m), normed), m);
  }
}

template <typename E>
FMS_ROW_TARGET void AddImpl(E* a, const E* b, int64_t n) {
  using L = Lanes<E>;
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = Mask(n - i);
    L::Store(a + i, _mm512_add_ps(L::Load(a + i, m), L::Load(b + i, m)), m);
  }
}

template <typename E>
FMS_ROW_TARGET void RopeImpl(E* x, const float* cos, const float* sin, int64_t heads,
                             int64_t d) {
  using L = Lanes<E>;
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; i += kLanes) {
    const __mmask16 m = Mask(half - i);
    const __m512 c0 = L::Round(_mm512_maskz_loadu_ps(m, cos + i));
    const __m512 s0 = L::Round(_mm512_maskz_loadu_ps(m, sin + i));
    const __m512 c1 = L::Round(_mm512_maskz_loadu_ps(m, cos + half + i));
    const __m512 s1 = L::Round(_mm512_maskz_loadu_ps(m, sin + half + i));
    for (E* v = x; v < x + heads * d; v += d) {
      const __m512 a = L::Load(v + i, m), b = L::Load(v + half + i, m);
      // First half a * c0 - b * s0, second b * c1 + a * s1; each product rounded.
      const __m512 lo = _mm512_sub_ps(L::Round(_mm512_mul_ps(a, c0)),
                                      L::Round(_mm512_mul_ps(b, s0)));
      const __m512 hi = _mm512_add_ps(L::Round(_mm512_mul_ps(b, c1)),
                                      L::Round(_mm512_mul_ps(a, s1)));
      L::Store(v + i, lo, m);
      L::Store(v + half + i, hi, m);
    }
  }
}

}  // namespace

template <>
bool HasRowKernels<float>() {
  return HasAvx512() && HasBf16DotProduct();  // One target for both types.
}
template <>
bool HasRowKernels<c10::BFloat16>() {
  return HasBf16DotProduct();
}

template <typename E>
void SiluMulRow(const E* gate, const E* up, E* y, int64_t n) {
  SiluMulImpl(gate, up, y, n);
}
template <typename E>
void RmsNormRow(const E* x, const E* w, E* y, int64_t n, float eps) {
  RmsNormImpl(x, w, y, n, eps);
}
template <typename E>
void AddRow(E* a, const E* b, int64_t n) {
  AddImpl(a, b, n);
}

template <typename E>
void RopeRow(E* x, const float* cos, const float* sin, int64_t heads, int64_t d) {
  RopeImpl(x, cos, sin, heads, d);
}

template void SiluMulRow(const float*, const float*, float*, int64_t);
template void SiluMulRow(const c10::BFloat16*, const c10::BFloat16*, c10::BFloat16*, int64_t);
template void RmsNormRow(const float*, const float*, float*, int64_t, float);
template void RmsNormRow(const c10::BFloat16*, const c10::BFloat16*, c10::BFloat16*, int64_t,
                         float);
template void AddRow(float*, const float*, int64_t);
template void AddRow(c10::BFloat16*, const c10::BFloat16*, int64_t);
template void RopeRow(float*, const float*, const float*, int64_t, int64_t);
template void RopeRow(c10::BFloat16*, const float*, const float*, int64_t, int64_t);

}  // namespace fms
