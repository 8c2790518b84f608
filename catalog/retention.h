// Which generations of an instance retention keeps (docs/catalog.md section
// 5). Pure: no disk, no clock; the store applies the answer.
//
// A generation is kept when it is one of the newest `keep_last`, or when it
// is younger than `all_for`, or when it is the newest generation of its
// hour and younger than `hourly_for`, or the newest of its day (UTC) and
// younger than `daily_for`. The current (newest) generation is always kept.
// So "every pull for a day, hourly for a week, daily for a month" keeps at
// most ~pulls-per-day + 168 + 30 generations, and each costs only what
// differs from its neighbours (objects are shared).
#ifndef LIFEBOAT_CATALOG_RETENTION_H_
#define LIFEBOAT_CATALOG_RETENTION_H_

#include <cstdint>
#include <set>
#include <utility>
#include <vector>

namespace lifeboat::catalog {

struct RetentionPolicy {
  uint32_t keep_last = 3;  // retention.generations (>= 1)
  int64_t all_for_ms = 0;  // 0: off
  int64_t hourly_for_ms = 0;
  int64_t daily_for_ms = 0;
};

// `generations`: (seq, committed at, wall ms), any order. Returns the seqs to keep.
std::set<uint64_t> RetainedGenerations(const std::vector<std::pair<uint64_t, int64_t>>& generations,
                                       int64_t now_ms, const RetentionPolicy& policy);

}  // namespace lifeboat::catalog

#endif  // LIFEBOAT_CATALOG_RETENTION_H_
