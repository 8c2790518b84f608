// Status and Result<T>: errors are values in Lifeboat.
//
// A Status is either OK or carries a Code, a human message that says what
// failed, where (path, peer, file:line) and why (errno text), and a retryable
// flag: a peer timeout is worth retrying, a digest mismatch is not.
//
// Codes map one-to-one to sysexits(3) so the CLI can turn any error into the
// exit code an operator's scripts expect (see ExitCode()).
#ifndef LIFEBOAT_BASE_STATUS_H_
#define LIFEBOAT_BASE_STATUS_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace lifeboat {

enum class Code : int {
  kOk = 0,
  kUsage = 64,        // EX_USAGE: the command was called wrongly
  kData = 65,         // EX_DATAERR: bad input data (corrupt file, bad frame, bad digest)
  kUnavailable = 69,  // EX_UNAVAILABLE: a peer or the agent is not there
  kInternal = 70,     // EX_SOFTWARE: a bug in Lifeboat
  kIo = 74,           // EX_IOERR: a local read/write/fsync failed
  kTemporary = 75,    // EX_TEMPFAIL: try again later (timeouts, busy)
  kPermission = 77,   // EX_NOPERM: authentication or permission refused
  kConfig = 78,       // EX_CONFIG: the configuration is wrong
  kNotFound = 79,     // not a sysexit: a looked-up thing does not exist (exits 65 at the CLI)
};

// The short name of a code ("io", "data", ...), used in logs and JSON errors.
std::string_view CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(Code code, std::string message, bool retryable = false);

  static Status Ok() { return Status(); }

  bool ok() const { return rep_ == nullptr; }
  Code code() const { return rep_ ? rep_->code : Code::kOk; }
  const std::string& message() const;
  bool retryable() const { return rep_ && rep_->retryable; }

  // "io: write failed on /x: No space left on device" ("ok" when OK).
  std::string ToString() const;

  // The same error with "context: " put in front of the message.
  Status WithContext(std::string_view context) const;

  // Process exit code for this status (0 when OK).
  int ExitCode() const;

  // Explicitly drop a Status whose failure does not matter (cleanup paths).
  void IgnoreError() const {}

 private:
  struct Rep {
    Code code;
    std::string message;
    bool retryable;
  };
  std::shared_ptr<const Rep> rep_;  // null when OK; shared so copies are cheap
};

// Converters, one per error source (leveldb's PosixError): they say the
// operation, the path and the errno text, e.g. "rename /a -> /b: Permission denied".
Status PosixError(std::string_view operation, std::string_view path, int err);
Status IoError(std::string message, bool retryable = false);
Status DataError(std::string message);
Status ConfigError(std::string message);
Status UsageError(std::string message);
Status UnavailableError(std::string message, bool retryable = true);
Status TemporaryError(std::string message);
Status PermissionError(std::string message);
Status NotFoundError(std::string message);
Status InternalError(std::string message);

// Result<T> holds a T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit on purpose
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: must not be OK

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace lifeboat

#define LIFEBOAT_CONCAT_INNER_(a, b) a##b
#define LIFEBOAT_CONCAT_(a, b) LIFEBOAT_CONCAT_INNER_(a, b)

// Return the Status of `expr` from the current function when it is not OK.
#define RETURN_IF_ERROR(expr)                            \
  do {                                                   \
    ::lifeboat::Status lifeboat_status_ = (expr);        \
    if (!lifeboat_status_.ok()) return lifeboat_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, F())`: declare x from a Result, or return its error.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL_(LIFEBOAT_CONCAT_(lifeboat_result_, __LINE__), lhs, rexpr)
#define ASSIGN_OR_RETURN_IMPL_(result, lhs, rexpr) \
  auto result = (rexpr);                           \
  if (!result.ok()) return result.status();        \
  lhs = std::move(result).value()

#endif  // LIFEBOAT_BASE_STATUS_H_
