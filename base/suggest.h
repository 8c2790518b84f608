// "Did you mean ...?": the closest known name to a mistyped one, for config
// keys (conf), subcommands and options (cli).
#ifndef LIFEBOAT_BASE_SUGGEST_H_
#define LIFEBOAT_BASE_SUGGEST_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace lifeboat {

// Levenshtein distance (insertions, deletions, substitutions of bytes).
size_t EditDistance(std::string_view a, std::string_view b);

// The candidate closest to `name` when fewer than `max_distance` edits away
// (the first of equals), else "".
std::string ClosestName(std::string_view name, const std::vector<std::string>& candidates,
                        size_t max_distance = 3);

}  // namespace lifeboat

#endif  // LIFEBOAT_BASE_SUGGEST_H_
