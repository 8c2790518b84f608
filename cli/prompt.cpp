#include "cli/prompt.h"

#include <unistd.h>

#include <iostream>

namespace lifeboat::cli {

bool AskOnTty(const std::string& question) {
  if (!::isatty(0) || !::isatty(2)) return false;
  std::cerr << question << " [y/N] " << std::flush;
  std::string answer;
  if (!std::getline(std::cin, answer)) return false;
  return answer == "y" || answer == "Y" || answer == "yes";
}

}  // namespace lifeboat::cli
