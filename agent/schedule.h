// Scheduling arithmetic as pure functions over time values, so the policy is
// unit-tested without a loop or a clock: when the next periodic pull is due,
// how long to back off after failures, when held data is stale, and a token
// bucket for the bandwidth limit. Random inputs come in as `u` in [0, 1).
#ifndef LIFEBOAT_AGENT_SCHEDULE_H_
#define LIFEBOAT_AGENT_SCHEDULE_H_

#include <cstdint>
#include <random>

namespace lifeboat::agent {

struct SchedulePolicy {
  int64_t interval_ms = 5 * 60 * 1000;  // agent.interval
  double jitter = 0.1;                  // each wait is interval * (1 + j), j in [-jitter, +jitter]
  int64_t backoff_base_ms = 2000;       // first retry after a failure
  int64_t backoff_max_ms = 5 * 60 * 1000;  // never longer than this (capped at interval too)
};

// Delay before the next periodic pull: interval * (1 + jitter * (2u - 1)), >= 1 ms.
int64_t NextPullDelayMs(const SchedulePolicy& p, double u);

// Delay before retry number `failures` (1 = first failure): "full jitter"
// exponential backoff, min(cap, base * 2^(failures-1)) scaled into [cap/2, cap]
// by u, where cap is min(backoff_max, interval). >= 1 ms.
int64_t BackoffDelayMs(const SchedulePolicy& p, int failures, double u);

// True when data last refreshed at `last_success_wall_ms` (0 = never) is older
// than `stale_after_ms` at `now_wall_ms`.
bool IsStale(int64_t last_success_wall_ms, int64_t now_wall_ms, int64_t stale_after_ms);

// A token bucket over bytes: `rate` bytes/s refill, `burst` bytes capacity.
// Consume() may take the level negative (a read already happened); the caller
// then waits DelayMs() before reading again. rate 0 = unlimited.
class TokenBucket {
 public:
  TokenBucket(uint64_t rate_bytes_per_s, uint64_t burst_bytes, int64_t now_ms);
  void Consume(uint64_t bytes, int64_t now_ms);
  // Milliseconds until the level is positive again (0 when it is already).
  int64_t DelayMs(int64_t now_ms);
  bool unlimited() const { return rate_ == 0; }

 private:
  void Refill(int64_t now_ms);
  uint64_t rate_;
  double burst_;
  double level_;
  int64_t last_ms_;
};

// A uniform [0, 1) source for the functions above (not for cryptography).
class Jitter {
 public:
  Jitter() : rng_(std::random_device{}()) {}
  explicit Jitter(uint64_t seed) : rng_(seed) {}
  double Next() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

 private:
  std::mt19937_64 rng_;
};

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_SCHEDULE_H_
