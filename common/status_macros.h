// Small Status helpers; abseil 20220623 ships no status macros.
#ifndef CERTCAST_COMMON_STATUS_MACROS_H_
#define CERTCAST_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define CERTCAST_CONCAT_INNER_(a, b) a##b
#define CERTCAST_CONCAT_(a, b) CERTCAST_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                            \
  do {                                                   \
    ::absl::Status certcast_status_ = (expr);            \
    if (!certcast_status_.ok()) return certcast_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, Foo());` assigns the value or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(CERTCAST_CONCAT_(certcast_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

namespace certcast {

// Returns `status` with `prefix: ` prepended to its message, keeping code and payloads.
absl::Status Annotate(const absl::Status& status, absl::string_view prefix);

}  // namespace certcast

#endif  // CERTCAST_COMMON_STATUS_MACROS_H_
