#include "cli/table.h"

#include <algorithm>
#include <cctype>
#include <iostream>
#include <sstream>

namespace lifeboat::cli {

void PrintTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows, bool no_header) {
  if (no_header) {
    for (const auto& r : rows) {
      std::string line;
      for (size_t i = 0; i < r.size(); ++i) line += (i ? "\t" : "") + r[i];
      std::cout << line << "\n";
    }
    return;
  }
  std::vector<std::string> upper = header;
  for (auto& h : upper) {
    for (auto& c : h) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  std::vector<size_t> w(upper.size(), 0);
  for (size_t i = 0; i < upper.size(); ++i) w[i] = upper[i].size();
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
  }
  auto print = [&](const std::vector<std::string>& r) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(w[i] - r[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  };
  print(upper);
  for (const auto& r : rows) print(r);
}

bool ParseColumns(const std::string& command, const std::string& spec,
                  const std::vector<std::string>& all, std::vector<std::string>* out) {
  out->clear();
  std::stringstream ss(spec);
  std::string c;
  while (std::getline(ss, c, ',')) {
    if (std::find(all.begin(), all.end(), c) == all.end()) {
      std::string names;
      for (const auto& a : all) names += (names.empty() ? "" : ",") + a;
      std::cerr << "lifeboat " << command << ": unknown column '" << c << "' (columns: " << names
                << ")\n";
      return false;
    }
    out->push_back(c);
  }
  return true;
}

}  // namespace lifeboat::cli
