#include "model/decode_kernels.h"

#include <ATen/Parallel.h>

#include <cmath>

#include "model/row_kernels.h"

namespace fms {
namespace {

// Values per parallel task: below it a loop runs on the calling thread (a
// parallel region costs more than a few thousand additions).
constexpr int64_t kGrainValues = 16384;

int64_t RowGrain(int64_t row_values) {
  return std::max<int64_t>(1, kGrainValues / std::max<int64_t>(1, row_values));
}

// The value rounded to E, as a float: each LibTorch op's result is stored in
// the tensor's dtype before the next op reads it.
template <typename E>
inline float Round(float x) {
  return static_cast<float>(E(x));
}

// Calls f.template operator()<E>() with E the C++ type of `type`.
template <typename F>
void Dispatch(at::ScalarType type, F&& f) {
  if (type == at::kBFloat16) {
    f.template operator()<c10::BFloat16>();
  } else {
    TORCH_CHECK(type == at::kFloat, "the CPU decode path takes float or bfloat16");
    f.template operator()<float>();
  }
}

template <typename E>
void RotateRow(E* x, const float* cos, const float* sin, int64_t heads, int64_t d) {
  const int64_t half = d / 2;
  for (int64_t h = 0; h < heads; ++h, x += d) {
    // x * cos + rotate_half(x) * sin, each product rounded as transformers'.
    for (int64_t i = 0; i < half; ++i) {
      const float a = static_cast<float>(x[i]), b = static_cast<float>(x[i + half]);
      const float c0 = Round<E>(cos[i]), s0 = Round<E>(sin[i]);
      const float c1 = Round<E>(cos[i + half]), s1 = Round<E>(sin[i + half]);
      x[i] = E(Round<E>(a * c0) + Round<E>(-b * s0));
      x[i + half] = E(Round<E>(b * c1) + Round<E>(a * s1));
    }
  }
}

}  // namespace

at::Tensor RmsNormRows(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && weight.scalar_type() == x.scalar_type(),
              "RmsNormRows: x [T, n] contiguous, weight of its dtype");
  at::Tensor out = at::empty_like(x);
  const int64_t n = x.size(1);
  Dispatch(x.scalar_type(), [&]<typename E>() {
    const E* in = x.const_data_ptr<E>();
    const E* w = weight.const_data_ptr<E>();
    E* y = out.mutable_data_ptr<E>();
    const bool vector = HasRowKernels<E>();
    at::parallel_for(0, x.size(0), RowGrain(n), [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const E* row = in + t * n;
        if (vector) {
          RmsNormRow(row, w, y + t * n, n, static_cast<float>(eps));
          continue;
        }
        float squares = 0;
        for (int64_t i = 0; i < n; ++i) {
          const float v = static_cast<float>(row[i]);
          squares += v * v;
        }
        const float r = 1.0f / std::sqrt(squares / n + static_cast<float>(eps));
        for (int64_t i = 0; i < n; ++i) {
          y[t * n + i] = E(static_cast<float>(w[i]) * Round<E>(static_cast<float>(row[i]) * r));
        }
      }
    });
  });
  return out;
}

void RotateAndCache(const QkvLayout& layout, const at::Tensor& cos, const at::Tensor& sin,
                    absl::Span<const int64_t> slots, at::Tensor& qkv,
                    at::Tensor& key_cache, at::Tensor& value_cache) {
  const int64_t d = layout.head_dim, kv_values = layout.kv_heads * d;
  const int64_t width = (layout.heads + 2 * layout.kv_heads) * d;
  TORCH_CHECK(qkv.dim() == 2 && qkv.is_contiguous() && qkv.size(1) == width &&
                  static_cast<int64_t>(slots.size()) == qkv.size(0) && d % 2 == 0,
              "RotateAndCache: qkv [T, (heads + 2 * kv_heads) * d], a slot per row");
  TORCH_CHECK(cos.scalar_type() == at::kFloat && cos.is_contiguous() && sin.is_contiguous(),
              "RotateAndCache: cos and sin fp32 [T, d]");
  Dispatch(qkv.scalar_type(), [&]<typename E>() {
    E* base = qkv.mutable_data_ptr<E>();
    E* keys = key_cache.mutable_data_ptr<E>();
    E* values = value_cache.mutable_data_ptr<E>();
    const bool vector = HasRowKernels<E>();
    at::parallel_for(0, qkv.size(0), RowGrain(width), [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        E* row = base + t * width;
        const float* c = cos.const_data_ptr<float>() + t * d;
        const float* s = sin.const_data_ptr<float>() + t * d;
        // q and k are adjacent.
        if (vector) {
          RopeRow(row, c, s, layout.heads + layout.kv_heads, d);
        } else {
          RotateRow(row, c, s, layout.heads + layout.kv_heads, d);
        }
        const E* k = row + layout.heads * d;
        std::copy(k, k + kv_values, keys + slots[t] * kv_values);
        std::copy(k + kv_values, k + 2 * kv_values, values + slots[t] * kv_values);
      }
    });
  });
}

at::Tensor SiluMul(const at::Tensor& gate_up) {
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.is_contiguous() && gate_up.size(1) % 2 == 0,
              "SiluMul: gate_up [T, 2 * n] contiguous");
  const int64_t n = gate_up.size(1) / 2;
  at::Tensor out = at::empty({gate_up.size(0), n}, gate_up.options());
  Dispatch(gate_up.scalar_type(), [&]<typename E>() {
    const E* in = gate_up.const_data_ptr<E>();
    E* y = out.mutable_data_ptr<E>();
    const bool vector = HasRowKernels<E>();
    at::parallel_for(0, gate_up.size(0), RowGrain(n), [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const E* gate = in + t * 2 * n;
        const E* up = gate + n;
        if (vector) {
          SiluMulRow(gate, up, y + t * n, n);
          continue;
        }
        for (int64_t i = 0; i < n; ++i) {
          const float g = static_cast<float>(gate[i]);
          y[t * n + i] = E(Round<E>(g / (1.0f + std::exp(-g))) * static_cast<float>(up[i]));
        }
      }
    });
  });
  return out;
}

void AddInPlace(at::Tensor& x, const at::Tensor& y) {
  TORCH_CHECK(x.is_contiguous() && y.is_contiguous() && x.sizes() == y.sizes() &&
                  x.scalar_type() == y.scalar_type(),
              "AddInPlace: two contiguous tensors of one shape and dtype");
  Dispatch(x.scalar_type(), [&]<typename E>() {
    E* a = x.mutable_data_ptr<E>();
    const E* b = y.const_data_ptr<E>();
    const bool vector = HasRowKernels<E>();
    at::parallel_for(0, x.numel(), kGrainValues, [&](int64_t begin, int64_t end) {
      if (vector) return AddRow(a + begin, b + begin, end - begin);
      for (int64_t i = begin; i < end; ++i) {
        a[i] = E(static_cast<float>(a[i]) + static_cast<float>(b[i]));
      }
    });
  });
}

}  // namespace fms
