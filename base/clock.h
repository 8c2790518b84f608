// Clock: an injectable source of time, so tests control it (envoy's
// SimulatedTimeSystem). Wall time is for timestamps an operator reads and for
// ages (stale_after, removed_grace); monotonic time is for timeouts and
// scheduling, which must not jump when the wall clock does.
#ifndef LIFEBOAT_BASE_CLOCK_H_
#define LIFEBOAT_BASE_CLOCK_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lifeboat {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t WallMs() const = 0;       // milliseconds since the Unix epoch
  virtual int64_t MonotonicMs() const = 0;  // milliseconds since an arbitrary start
  static Clock* Real();                     // never null, never freed
};

// A clock that moves only when told. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t wall_ms = 1'700'000'000'000, int64_t mono_ms = 0)
      : wall_ms_(wall_ms), mono_ms_(mono_ms) {}
  int64_t WallMs() const override { return wall_ms_.load(); }
  int64_t MonotonicMs() const override { return mono_ms_.load(); }
  void Advance(int64_t ms) {
    wall_ms_ += ms;
    mono_ms_ += ms;
  }
  void SetWall(int64_t wall_ms) { wall_ms_ = wall_ms; }  // a wall-clock jump

 private:
  std::atomic<int64_t> wall_ms_;
  std::atomic<int64_t> mono_ms_;
};

// "2026-11-21T16:25:03.123Z"
std::string FormatIso8601Ms(int64_t wall_ms);
// Reads what FormatIso8601Ms writes, with or without the milliseconds
// ("2026-11-21T16:25:03Z"); UTC only. nullopt on anything else.
std::optional<int64_t> ParseIso8601Ms(std::string_view text);

// How long ago `then_ms` was on the wall clock, for ages that only wall time
// recorded (the catalog's pull times). kNeverMs when `then_ms` is 0 (never);
// kClockChangedMs when `then_ms` lies more than kClockSlackMs in the future:
// the clock was set back, and an age computed from it would make old data
// look fresh. Callers show "clock changed" and treat the data as stale.
inline constexpr int64_t kNeverMs = -1;
inline constexpr int64_t kClockChangedMs = -2;
inline constexpr int64_t kClockSlackMs = 5'000;
int64_t WallAgeMs(int64_t then_ms, int64_t now_ms);

}  // namespace lifeboat

#endif  // LIFEBOAT_BASE_CLOCK_H_
