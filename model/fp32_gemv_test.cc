#include "model/fp32_gemv.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/linear.h"
#include "model/torch_threads.h"

namespace fms {
namespace {

// |ours - exact| <= 1e-5 * sum |w| |x| (fp32 accumulation in another order).
void ExpectClose(const at::Tensor& ours, const at::Tensor& x, const at::Tensor& w,
                 const std::string& what) {
  const at::Tensor exact = at::matmul(x.to(at::kDouble), w.to(at::kDouble).t());
  const at::Tensor bound = at::matmul(x.abs().to(at::kDouble), w.abs().to(at::kDouble).t());
  const at::Tensor excess = (ours.to(at::kDouble) - exact).abs() - bound * 1e-5;
  EXPECT_LE(excess.max().item<double>(), 0.0) << what;
}

class Fp32GemvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HasAvx512()) GTEST_SKIP() << "this CPU has no AVX-512F";
  }
};

TEST_F(Fp32GemvTest, MatchesExactProductsForEveryRowAndColumnTail) {
  at::manual_seed(0);
  for (int64_t cols : {1, 15, 16, 17, 176, 576}) {
    for (int64_t rows : {1, 7, 8, 9, 67}) {
      for (int64_t batch : {1, 2, 3, 4, 6, 13}) {
        const at::Tensor w = at::randn({rows, cols});   // [rows, cols]
        const at::Tensor x = at::randn({batch, cols});  // [batch, cols]
        // [batch, rows + 3]: the stride leaves 3 columns the kernel must not touch.
        at::Tensor y = at::full({batch, rows + 3}, 7.0);
        Fp32Gemv(w.const_data_ptr<float>(), x.const_data_ptr<float>(), batch,
                 y.mutable_data_ptr<float>(), rows + 3, rows, cols);
        const std::string what = "rows " + std::to_string(rows) + " cols " +
                                 std::to_string(cols) + " batch " + std::to_string(batch);
        ExpectClose(y.narrow(1, 0, rows), x, w, what);
        EXPECT_TRUE(at::equal(y.narrow(1, rows, 3), at::full({batch, 3}, 7.0))) << what;
      }
    }
  }
}

TEST_F(Fp32GemvTest, LinearUsesItForFewRowsOnAnyThreadCount) {
  c10::InferenceMode inference;
  at::manual_seed(1);
  const at::Tensor w = at::randn({300, 176});  // [out, in]
  const at::Tensor b = at::randn({300});       // [out]
  for (int threads : {1, 2}) {
    ConfigureTorchThreads({.intra_op_threads = threads});
    for (int64_t t : {1, 4, 16, 64}) {
      const at::Tensor x = at::randn({t, 176});  // [t, in]
      const at::Tensor ours = Linear(x, w, b);    // [t, out]
      ASSERT_EQ(ours.sizes(), (std::vector<int64_t>{t, 300}));
      ExpectClose(ours - b, x, w, "threads " + std::to_string(threads));
    }
  }
}

}  // namespace
}  // namespace fms
