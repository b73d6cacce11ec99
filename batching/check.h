// FMS_CHECK: crash with a message on a broken invariant (a bug, never a
// request's fault; those get absl::Status).

#ifndef FMS_BATCHING_CHECK_H_
#define FMS_BATCHING_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FMS_CHECK(condition, message)                                    \
  do {                                                                   \
    if (!(condition)) {                                                  \
      std::fprintf(stderr, "%s:%d: check failed: %s: %s\n", __FILE__,    \
                   __LINE__, #condition, message);                       \
      std::abort();                                                      \
    }                                                                    \
  } while (false)

#endif  // FMS_BATCHING_CHECK_H_
