// Questions to the operator on a terminal (restore, retire).
#ifndef LIFEBOAT_CLI_PROMPT_H_
#define LIFEBOAT_CLI_PROMPT_H_

#include <string>

namespace lifeboat::cli {

// Asks `question` [y/N] on stderr and reads one line of stdin. True only for
// y/Y/yes; false without asking when stdin or stderr is not a terminal.
bool AskOnTty(const std::string& question);

}  // namespace lifeboat::cli

#endif  // LIFEBOAT_CLI_PROMPT_H_
