#include "base/clock.h"

#include <algorithm>

#include <time.h>

#include <cstdio>

namespace lifeboat {
namespace {

class RealClock final : public Clock {
 public:
  int64_t WallMs() const override { return Read(CLOCK_REALTIME); }
  int64_t MonotonicMs() const override { return Read(CLOCK_MONOTONIC); }

 private:
  static int64_t Read(clockid_t id) {
    struct timespec ts;
    ::clock_gettime(id, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
  }
};

}  // namespace

Clock* Clock::Real() {
  static RealClock* clock = new RealClock();
  return clock;
}

std::string FormatIso8601Ms(int64_t wall_ms) {
  time_t secs = static_cast<time_t>(wall_ms / 1000);
  int ms = static_cast<int>(wall_ms % 1000);
  if (ms < 0) {
    ms += 1000;
    secs -= 1;
  }
  struct tm tm;
  ::gmtime_r(&secs, &tm);
  char buf[80];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

std::optional<int64_t> ParseIso8601Ms(std::string_view text) {
  int y, mo, d, h, mi, s, ms = 0, used = 0;
  const std::string t(text);
  if (std::sscanf(t.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &used) != 6 ||
      used != 19) {
    return std::nullopt;
  }
  std::string_view rest = text.substr(19);
  if (rest.size() == 5 && rest[0] == '.') {
    int digits = 0;
    for (char c : rest.substr(1, 3)) {
      if (c < '0' || c > '9') return std::nullopt;
      digits = digits * 10 + (c - '0');
    }
    ms = digits;
    rest = rest.substr(4);
  }
  if (rest != "Z" || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) {
    return std::nullopt;
  }
  struct tm tm = {};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return static_cast<int64_t>(::timegm(&tm)) * 1000 + ms;
}

int64_t WallAgeMs(int64_t then_ms, int64_t now_ms) {
  if (then_ms <= 0) return kNeverMs;
  if (then_ms > now_ms + kClockSlackMs) return kClockChangedMs;
  return std::max<int64_t>(0, now_ms - then_ms);
}

}  // namespace lifeboat
