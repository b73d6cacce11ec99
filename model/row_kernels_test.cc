#include "model/row_kernels.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace fms {
namespace {

template <typename E>
at::ScalarType TypeOf() {
  return std::is_same_v<E, float> ? at::kFloat : at::kBFloat16;
}

// |ours - ref| <= 2 roundings to E of ref (2^-23 or 2^-8 relative), plus a
// little absolute slack for values near zero.
void ExpectClose(const at::Tensor& ours, const at::Tensor& ref, const std::string& what) {
  const double eps = ours.scalar_type() == at::kFloat ? 0x1p-22 : 0x1p-7;
  const at::Tensor bound = ref.abs() * eps + 1e-6;
  const at::Tensor excess = (ours.to(at::kDouble) - ref.to(at::kDouble)).abs() - bound;
  EXPECT_LE(excess.max().item<double>(), 0.0) << what;
}

template <typename E>
class RowKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HasRowKernels<E>()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  }
};
using Types = ::testing::Types<float, c10::BFloat16>;
TYPED_TEST_SUITE(RowKernelsTest, Types);

// Every tail length of the 16-value vectors, and a model's widths.
constexpr int64_t kWidths[] = {1, 7, 15, 16, 17, 33, 576, 1536};

TYPED_TEST(RowKernelsTest, SiluMulMatchesLibTorchWithItsRounding) {
  using E = TypeParam;
  c10::InferenceMode inference;
  at::manual_seed(1);
  for (int64_t n : kWidths) {
    // Gates up to +-40: exp's whole useful range, both saturating ends.
    const at::Tensor gate = (at::randn({n}) * 12).clamp(-40, 40).to(TypeOf<E>());
    const at::Tensor up = at::randn({n}).to(TypeOf<E>());
    at::Tensor y = at::empty({n}, gate.options());
    SiluMulRow(gate.const_data_ptr<E>(), up.const_data_ptr<E>(), y.mutable_data_ptr<E>(), n);
    // LibTorch stores silu's result in E before the product, as the model does.
    ExpectClose(y, at::silu(gate) * up, "n " + std::to_string(n));
  }
}

TYPED_TEST(RowKernelsTest, SiluMulKeepsNanAndSaturates) {
  using E = TypeParam;
  c10::InferenceMode inference;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const at::Tensor gate = at::tensor({nan, -200.0f, 200.0f, 0.0f}).to(TypeOf<E>());
  const at::Tensor up = at::ones({4}, gate.options());
  at::Tensor y = at::empty({4}, gate.options());
  SiluMulRow(gate.const_data_ptr<E>(), up.const_data_ptr<E>(), y.mutable_data_ptr<E>(), 4);
  const at::Tensor f = y.to(at::kFloat);
  EXPECT_TRUE(std::isnan(f[0].item<float>()));
  EXPECT_EQ(f[1].item<float>(), 0.0f);  // -200 / (1 + e^200): e^200 saturates
  EXPECT_EQ(f[2].item<float>(), 200.0f);
  EXPECT_EQ(f[3].item<float>(), 0.0f);
}

TYPED_TEST(RowKernelsTest, RmsNormMatchesLibTorchWithItsRounding) {
  using E = TypeParam;
  c10::InferenceMode inference;
  at::manual_seed(2);
  for (int64_t n : kWidths) {
    const at::Tensor x = (at::randn({n}) * 3).to(TypeOf<E>());
    const at::Tensor w = at::rand({n}).add(0.5).to(TypeOf<E>());
    at::Tensor y = at::empty({n}, x.options());
    RmsNormRow(x.const_data_ptr<E>(), w.const_data_ptr<E>(), y.mutable_data_ptr<E>(), n, 1e-5f);
    const at::Tensor x32 = x.to(at::kFloat);
    const at::Tensor ref = w * (x32 * at::rsqrt(x32.pow(2).mean() + 1e-5)).to(TypeOf<E>());
    ExpectClose(y, ref, "n " + std::to_string(n));
  }
}

TYPED_TEST(RowKernelsTest, AddIsExactElementwiseAddition) {
  using E = TypeParam;
  c10::InferenceMode inference;
  at::manual_seed(3);
  for (int64_t n : kWidths) {
    at::Tensor a = at::randn({n}).to(TypeOf<E>());
    const at::Tensor b = at::randn({n}).to(TypeOf<E>());
    const at::Tensor ref = a + b;  // One rounding, as the kernel's.
    AddRow(a.mutable_data_ptr<E>(), b.const_data_ptr<E>(), n);
    EXPECT_TRUE(at::equal(a, ref)) << "n " << n;
  }
}

TYPED_TEST(RowKernelsTest, RopeMatchesTransformersFormulaInE) {
  using E = TypeParam;
  c10::InferenceMode inference;
  at::manual_seed(4);
  // Head widths with every tail of the half (1, 17, 32, 48 and 64 values).
  for (int64_t d : {2, 34, 64, 96, 128}) {
    const int64_t heads = 5, half = d / 2;
    at::Tensor x = at::randn({heads, d}).to(TypeOf<E>());
    const at::Tensor angles = at::rand({half}) * 1000;  // positions up to 1,000
    const at::Tensor cos = at::cat({angles, angles}).cos(), sin = at::cat({angles, angles}).sin();
    // transformers: x * cos + rotate_half(x) * sin, every op in E.
    const at::Tensor rotated = at::cat({-x.narrow(1, half, half), x.narrow(1, 0, half)}, 1);
    const at::Tensor ref = x * cos.to(TypeOf<E>()) + rotated * sin.to(TypeOf<E>());
    RopeRow(x.mutable_data_ptr<E>(), cos.const_data_ptr<float>(), sin.const_data_ptr<float>(),
            heads, d);
    if (std::is_same_v<E, float>) {
      ExpectClose(x, ref, "d " + std::to_string(d));  // GCC may fuse a product and a sum
    } else {
      EXPECT_TRUE(at::equal(x, ref)) << "d " << d;  // each bf16 rounding as LibTorch's
    }
  }
}

}  // namespace
}  // namespace fms
