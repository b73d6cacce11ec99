// FUZZ_CHECK: the oracle of a fuzz target. A violated property prints what and
// where and aborts, which libFuzzer reports as a crash with the input saved.

#ifndef FMS_TESTS_FUZZ_FUZZ_CHECK_H_
#define FMS_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(condition, what)                                                  \
  do {                                                                               \
    if (!(condition)) {                                                              \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: %s\n", __FILE__, __LINE__, \
                   #condition, what);                                                \
      std::abort();                                                                  \
    }                                                                                \
  } while (false)

#endif  // FMS_TESTS_FUZZ_FUZZ_CHECK_H_
