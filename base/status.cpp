#include "base/status.h"

#include <cstring>

namespace lifeboat {

std::string_view CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kUsage:
      return "usage";
    case Code::kData:
      return "data";
    case Code::kUnavailable:
      return "unavailable";
    case Code::kInternal:
      return "internal";
    case Code::kIo:
      return "io";
    case Code::kTemporary:
      return "temporary";
    case Code::kPermission:
      return "permission";
    case Code::kConfig:
      return "config";
    case Code::kNotFound:
      return "not_found";
  }
  return "unknown";
}

Status::Status(Code code, std::string message, bool retryable) {
  if (code == Code::kOk) return;
  rep_ = std::make_shared<const Rep>(Rep{code, std::move(message), retryable});
}

const std::string& Status::message() const {
  static const std::string kEmpty;
  return rep_ ? rep_->message : kEmpty;
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string out(CodeName(code()));
  out += ": ";
  out += message();
  return out;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  msg += ": ";
  msg += message();
  return Status(code(), std::move(msg), retryable());
}

int Status::ExitCode() const {
  if (ok()) return 0;
  if (code() == Code::kNotFound) return static_cast<int>(Code::kData);
  return static_cast<int>(code());
}

Status PosixError(std::string_view operation, std::string_view path, int err) {
  std::string msg(operation);
  if (!path.empty()) {
    msg += " ";
    msg += path;
  }
  msg += ": ";
  msg += std::strerror(err);
  switch (err) {
    case ENOENT:
      return Status(Code::kNotFound, std::move(msg));
    case EACCES:
    case EPERM:
      return Status(Code::kPermission, std::move(msg));
    case EINTR:
    case EAGAIN:
    case ETIMEDOUT:
      return Status(Code::kTemporary, std::move(msg), true);
    case ECONNREFUSED:
    case ECONNRESET:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EPIPE:
      return Status(Code::kUnavailable, std::move(msg), true);
    default:
      return Status(Code::kIo, std::move(msg));
  }
}

Status IoError(std::string message, bool retryable) {
  return Status(Code::kIo, std::move(message), retryable);
}
Status DataError(std::string message) { return Status(Code::kData, std::move(message)); }
Status ConfigError(std::string message) { return Status(Code::kConfig, std::move(message)); }
Status UsageError(std::string message) { return Status(Code::kUsage, std::move(message)); }
Status UnavailableError(std::string message, bool retryable) {
  return Status(Code::kUnavailable, std::move(message), retryable);
}
Status TemporaryError(std::string message) {
  return Status(Code::kTemporary, std::move(message), true);
}
Status PermissionError(std::string message) {
  return Status(Code::kPermission, std::move(message));
}
Status NotFoundError(std::string message) { return Status(Code::kNotFound, std::move(message)); }
Status InternalError(std::string message) { return Status(Code::kInternal, std::move(message)); }

}  // namespace lifeboat
