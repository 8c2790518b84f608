// Tables on stdout, one convention for every command: aligned columns under
// an upper-case header (the column names, upper-cased) for people; with -H
// (no_header) one line per row, cells separated by one tab, no header and no
// other text, for scripts. Cells that came from outside must already be
// escaped for the terminal (base/text.h EscapeForTerminal).
#ifndef LIFEBOAT_CLI_TABLE_H_
#define LIFEBOAT_CLI_TABLE_H_

#include <string>
#include <vector>

namespace lifeboat::cli {

void PrintTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows, bool no_header);

// Splits "-o a,b,c" into columns; returns false (and prints an error naming
// the command and the valid columns) on an unknown one.
bool ParseColumns(const std::string& command, const std::string& spec,
                  const std::vector<std::string>& all, std::vector<std::string>* out);

}  // namespace lifeboat::cli

#endif  // LIFEBOAT_CLI_TABLE_H_
