// Sizes and durations for people: one style for every command's text output
// (JSON output carries plain numbers: bytes and seconds).
#ifndef LIFEBOAT_BASE_UNITS_H_
#define LIFEBOAT_BASE_UNITS_H_

#include <cstdint>
#include <string>

namespace lifeboat {

// "512 B", "1.5 KiB", "22.0 MiB", "1.1 GiB" (binary units, one decimal).
std::string HumanBytes(uint64_t bytes);

// "42s", "3m12s", "2h05m", "3d04h"; "-" for a negative value (unknown).
std::string HumanAge(int64_t seconds);

}  // namespace lifeboat

#endif  // LIFEBOAT_BASE_UNITS_H_
