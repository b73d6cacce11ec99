#include "model/rope.h"

#include <cmath>

namespace fms {
namespace {

// transformers' _compute_llama3_parameters.
at::Tensor Llama3Scale(const at::Tensor& inv_freq, const RopeScaling& s) {
  const double old_len = static_cast<double>(s.original_max_position_embeddings);
  const double low_wavelen = old_len / s.low_freq_factor;
  const double high_wavelen = old_len / s.high_freq_factor;
  const at::Tensor wavelen = 2 * M_PI / inv_freq;
  at::Tensor scaled =
      at::where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq);
  const at::Tensor smooth = (old_len / wavelen - s.low_freq_factor) /
                            (s.high_freq_factor - s.low_freq_factor);
  const at::Tensor smoothed =
      (1 - smooth) * scaled / s.factor + smooth * scaled;
  const at::Tensor medium =
      at::logical_not(wavelen < high_wavelen) & at::logical_not(wavelen > low_wavelen);
  return at::where(medium, smoothed, scaled);
}

}  // namespace

Rope::Rope(const LlamaConfig& config, at::Device device) {
  const int64_t dim = config.head_dim;
  // [dim / 2]: 1 / theta^(2i / dim), as transformers computes it.
  const at::Tensor exponents =
      at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  at::Tensor inv_freq =
      1.0 / at::pow(at::Scalar(config.rope_theta), exponents);
  switch (config.rope_scaling.type) {
    case RopeScalingType::kNone:
      break;
    case RopeScalingType::kLinear:
      inv_freq = inv_freq / config.rope_scaling.factor;
      break;
    case RopeScalingType::kLlama3:
      inv_freq = Llama3Scale(inv_freq, config.rope_scaling);
      break;
  }
  inv_freq_ = inv_freq.to(device);
}

std::pair<at::Tensor, at::Tensor> Rope::CosSin(const at::Tensor& positions) const {
  // [T, dim / 2] -> [T, dim]
  const at::Tensor freqs = positions.to(at::kFloat).unsqueeze(1) * inv_freq_.unsqueeze(0);
  const at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

at::Tensor Rope::Apply(const at::Tensor& x, const at::Tensor& cos,
                       const at::Tensor& sin) {
  // [T, 1, dim] to broadcast over heads.
  const at::Tensor c = cos.to(x.scalar_type()).unsqueeze(1);
  const at::Tensor s = sin.to(x.scalar_type()).unsqueeze(1);
  const int64_t half = x.size(-1) / 2;
  const at::Tensor rotated =
      at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * c + rotated * s;
}

}  // namespace fms
