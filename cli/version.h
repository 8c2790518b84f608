#ifndef LIFEBOAT_CLI_VERSION_H_
#define LIFEBOAT_CLI_VERSION_H_

#include <string>

namespace lifeboat::cli {

// "lifeboat 0.1.0\nlibrsync 2.3.2\n..." or one JSON object (with a newline).
std::string VersionText(bool json);

}  // namespace lifeboat::cli

#endif  // LIFEBOAT_CLI_VERSION_H_
