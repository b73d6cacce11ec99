#include "model/onednn_linear.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "gtest/gtest.h"
#include "model/linear.h"

namespace fms {
namespace {

// |ours - exact| <= one bf16 rounding of the sum of |products| (2^-8), the
// bound for an fp32 accumulation rounded to bf16 once.
void ExpectClose(const at::Tensor& ours, const at::Tensor& x, const at::Tensor& w,
                 const at::Tensor& b, const std::string& what) {
  const at::Tensor xd = x.to(at::kDouble), wd = w.to(at::kDouble);
  at::Tensor exact = at::matmul(xd, wd.t());
  at::Tensor magnitude = at::matmul(xd.abs(), wd.abs().t());
  if (b.defined()) {
    exact = exact + b.to(at::kDouble);
    magnitude = magnitude + b.to(at::kDouble).abs();
  }
  const at::Tensor excess = (ours.to(at::kDouble) - exact).abs() - magnitude / 128 - 1e-30;
  EXPECT_LE(excess.max().item<double>(), 0.0) << what;
}

class OneDnnLinearTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PacksForOneDnn(at::empty({2, 2}, at::kBFloat16))) {
      GTEST_SKIP() << "no AVX512-BF16 or no oneDNN";
    }
  }
};

TEST_F(OneDnnLinearTest, PackedProductMatchesExactForAnyRowCount) {
  c10::InferenceMode inference;
  at::manual_seed(0);
  const at::Tensor w = at::randn({200, 96}).to(at::kBFloat16);  // [out, in]
  const at::Tensor b = at::randn({200}).to(at::kBFloat16);
  const at::Tensor packed = PackForOneDnn(w);
  for (int64_t rows : {1, 5, 33, 64, 107}) {
    const at::Tensor x = at::randn({rows, 96}).to(at::kBFloat16);
    const at::Tensor y = OneDnnLinear(x, packed, at::Tensor());
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{rows, 200}));
    ExpectClose(y, x, w, at::Tensor(), "rows " + std::to_string(rows));
    ExpectClose(OneDnnLinear(x, packed, b), x, w, b, "bias, rows " + std::to_string(rows));
  }
}

TEST_F(OneDnnLinearTest, LinearUsesThePackedCopyOnlyForManyRows) {
  c10::InferenceMode inference;
  at::manual_seed(1);
  const LinearWeight weight = MakeLinearWeight(at::randn({128, 64}).to(at::kBFloat16));
  ASSERT_TRUE(weight.packed.defined());
  for (int64_t rows : {1, 32, 33, 80}) {
    const at::Tensor x = at::randn({rows, 64}).to(at::kBFloat16);
    const at::Tensor y = Linear(x, weight, at::Tensor());
    ExpectClose(y, x, weight.w, at::Tensor(), "rows " + std::to_string(rows));
    // Above the kernels' 32 rows the product is oneDNN's, bit for bit.
    if (rows > 32) {
      EXPECT_TRUE(at::equal(y, OneDnnLinear(x, weight.packed, at::Tensor())));
    }
  }
}

TEST(OneDnnLinearFp32Test, PackedFp32ProductMatchesExactAboveTheKernelsRows) {
  if (!PacksForOneDnn(at::empty({2, 2}))) GTEST_SKIP() << "no AVX-512F or no oneDNN";
  c10::InferenceMode inference;
  at::manual_seed(2);
  const LinearWeight weight = MakeLinearWeight(at::randn({96, 80}));
  ASSERT_TRUE(weight.packed.defined());
  const at::Tensor b = at::randn({96});
  for (int64_t rows : {1, 64, 65, 130}) {
    const at::Tensor x = at::randn({rows, 80});
    const at::Tensor y = Linear(x, weight, b);
    const at::Tensor xd = x.to(at::kDouble), wd = weight.w.to(at::kDouble);
    const at::Tensor exact = at::matmul(xd, wd.t()) + b.to(at::kDouble);
    const at::Tensor magnitude = at::matmul(xd.abs(), wd.abs().t()) + b.to(at::kDouble).abs();
    // fp32 accumulation: well within 1e-5 of the sum of |products|.
    EXPECT_LE(((y.to(at::kDouble) - exact).abs() - magnitude * 1e-5).max().item<double>(), 0.0)
        << "rows " << rows;
    if (rows > 64) {
      EXPECT_TRUE(at::equal(y, OneDnnLinear(x, weight.packed, b))) << rows;
    }
  }
}

TEST(OneDnnLinearPlainTest, IntegerAndOneDimensionalWeightsAreNotPacked) {
  EXPECT_FALSE(PacksForOneDnn(at::ones({8, 8}, at::kInt)));
  EXPECT_FALSE(PacksForOneDnn(at::ones({8}, at::kBFloat16)));
}

}  // namespace
}  // namespace fms
