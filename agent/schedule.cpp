#include "agent/schedule.h"

#include "base/clock.h"

#include <algorithm>
#include <cmath>

namespace lifeboat::agent {

int64_t NextPullDelayMs(const SchedulePolicy& p, double u) {
  double j = std::clamp(p.jitter, 0.0, 1.0) * (2.0 * std::clamp(u, 0.0, 1.0) - 1.0);
  double d = static_cast<double>(p.interval_ms) * (1.0 + j);
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(d)));
}

int64_t BackoffDelayMs(const SchedulePolicy& p, int failures, double u) {
  int64_t cap = std::max<int64_t>(1, std::min(p.backoff_max_ms, p.interval_ms));
  int shift = std::clamp(failures - 1, 0, 40);
  double exp = static_cast<double>(p.backoff_base_ms) * std::ldexp(1.0, shift);
  double ceiling = std::min(static_cast<double>(cap), exp);
  double d = ceiling * (0.5 + 0.5 * std::clamp(u, 0.0, 1.0));
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(d)));
}

bool IsStale(int64_t last_success_wall_ms, int64_t now_wall_ms, int64_t stale_after_ms) {
  const int64_t age = WallAgeMs(last_success_wall_ms, now_wall_ms);
  return age < 0 || age > stale_after_ms;  // never, or a clock set back: unknown is stale
}

TokenBucket::TokenBucket(uint64_t rate_bytes_per_s, uint64_t burst_bytes, int64_t now_ms)
    : rate_(rate_bytes_per_s),
      burst_(static_cast<double>(std::max<uint64_t>(burst_bytes, 1))),
      level_(burst_),
      last_ms_(now_ms) {}

void TokenBucket::Refill(int64_t now_ms) {
  if (now_ms <= last_ms_) return;
  level_ = std::min(burst_, level_ + static_cast<double>(rate_) * (now_ms - last_ms_) / 1000.0);
  last_ms_ = now_ms;
}

void TokenBucket::Consume(uint64_t bytes, int64_t now_ms) {
  if (rate_ == 0) return;
  Refill(now_ms);
  level_ -= static_cast<double>(bytes);
}

int64_t TokenBucket::DelayMs(int64_t now_ms) {
  if (rate_ == 0) return 0;
  Refill(now_ms);
  if (level_ > 0) return 0;
  return static_cast<int64_t>(std::ceil((1.0 - level_) * 1000.0 / static_cast<double>(rate_)));
}

}  // namespace lifeboat::agent
