#include "model/bf16_gemv.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <vector>

#include "gtest/gtest.h"
#include "model/linear.h"
#include "model/torch_threads.h"

namespace fms {
namespace {

// Products of the bf16 inputs summed in double: the exact answer the kernel
// rounds to bf16 (up to fp32 accumulation error).
at::Tensor Reference(const at::Tensor& a, const at::Tensor& b) {
  return at::matmul(a.to(at::kDouble), b.to(at::kDouble));
}

// |ours - ref| <= rounded / 256 (bf16 roundings, 2^-8 relative, of the
// values `rounded`) + 1e-5 * magnitude (fp32 accumulation of sum |w| |x|).
void ExpectClose(const at::Tensor& ours, const at::Tensor& ref, const at::Tensor& rounded,
                 const at::Tensor& magnitude, const std::string& what) {
  const at::Tensor bound = rounded / 256 + magnitude * 1e-5 + 1e-30;
  const at::Tensor excess = (ours.to(at::kDouble) - ref).abs() - bound;
  EXPECT_LE(excess.max().item<double>(), 0.0) << what;
}

class Bf16GemvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HasBf16DotProduct()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  }
};

TEST_F(Bf16GemvTest, MatchesExactProductsForEveryRowAndColumnTail) {
  at::manual_seed(0);
  for (int64_t cols : {1, 31, 32, 33, 176, 768, 4096}) {
    for (int64_t rows : {1, 3, 4, 5, 67}) {
      for (int64_t batch : {1, 2, 3, 4, 7, 13, 32}) {
        const at::Tensor w = at::randn({rows, cols}).to(at::kBFloat16);   // [rows, cols]
        const at::Tensor x = at::randn({batch, cols}).to(at::kBFloat16);  // [batch, cols]
        // [batch, rows + 3]: the stride leaves 3 columns the kernel must not touch.
        at::Tensor y = at::full({batch, rows + 3}, 7.0, at::kBFloat16);
        Bf16Gemv(w.const_data_ptr<c10::BFloat16>(), x.const_data_ptr<c10::BFloat16>(), batch,
                 y.mutable_data_ptr<c10::BFloat16>(), rows + 3, rows, cols);
        const at::Tensor ref = Reference(x, w.t());  // [batch, rows]
        const std::string what = "rows " + std::to_string(rows) + " cols " +
                                 std::to_string(cols) + " batch " + std::to_string(batch);
        ExpectClose(y.narrow(1, 0, rows), ref, ref.abs(), Reference(x.abs(), w.abs().t()),
                    what);
        EXPECT_TRUE(at::equal(y.narrow(1, rows, 3), at::full({batch, 3}, 7.0, at::kBFloat16)))
            << what;
      }
    }
  }
}

TEST_F(Bf16GemvTest, LinearUsesItForFewRowsOnAnyThreadCount) {
  c10::InferenceMode inference;
  at::manual_seed(1);
  const at::Tensor w = at::randn({300, 176}).to(at::kBFloat16);  // [out, in]
  const at::Tensor b = at::randn({300}).to(at::kBFloat16);       // [out]
  for (int threads : {1, 2}) {
    ConfigureTorchThreads({.intra_op_threads = threads});
    for (int64_t t : {1, 2, 9, 32}) {
      const at::Tensor x = at::randn({t, 176}).to(at::kBFloat16);  // [t, in]
      const at::Tensor ours = Linear(x, w, b);                      // [t, out]
      ASSERT_EQ(ours.sizes(), (std::vector<int64_t>{t, 300}));
      const at::Tensor product = Reference(x, w.t());
      const at::Tensor ref = product + b.to(at::kDouble);
      // The bias is added in bf16 after the product is rounded: two roundings.
      ExpectClose(ours, ref, product.abs() + ref.abs(), Reference(x.abs(), w.abs().t()),
                  "threads " + std::to_string(threads) + " rows " + std::to_string(t));
    }
  }
}

}  // namespace
}  // namespace fms
