#include "agent/admission.h"

namespace lifeboat::agent {

std::string Admission::HostOf(const std::string& remote) {
  if (!remote.empty() && remote.front() == '[') {
    const size_t close = remote.find(']');
    return close == std::string::npos ? remote : remote.substr(1, close - 1);
  }
  const size_t colon = remote.rfind(':');
  return colon == std::string::npos ? remote : remote.substr(0, colon);
}

std::optional<uint64_t> Admission::OldestPending(const std::string* host) const {
  for (const auto& [id, h] : pending_) {
    if (host == nullptr || h == *host) return id;
  }
  return std::nullopt;
}

std::optional<uint64_t> Admission::Arrive(uint64_t id, const std::string& remote) {
  const std::string host = HostOf(remote);
  std::optional<uint64_t> evict;
  if (pending_per_host_[host] >= limits_.max_pending_per_address) {
    evict = OldestPending(&host);
  } else if (pending_.size() >= limits_.max_pending) {
    evict = OldestPending(nullptr);
  }
  if (evict) {
    Gone(*evict);
    ++evicted_total_;
  }
  pending_.emplace(id, host);
  ++pending_per_host_[host];
  return evict;
}

bool Admission::Admit(uint64_t id) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return admitted_.count(id) != 0;
  if (--pending_per_host_[it->second] == 0) pending_per_host_.erase(it->second);
  pending_.erase(it);
  if (admitted_.size() >= limits_.max_admitted) return false;
  admitted_.insert(id);
  return true;
}

void Admission::Gone(uint64_t id) {
  if (auto it = pending_.find(id); it != pending_.end()) {
    if (--pending_per_host_[it->second] == 0) pending_per_host_.erase(it->second);
    pending_.erase(it);
    return;
  }
  admitted_.erase(id);
}

}  // namespace lifeboat::agent
