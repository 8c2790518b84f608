// Logging: bunyan-shaped JSON lines (the shape Triton's tools read: v, level,
// name, hostname, pid, time, msg + fields) or a human format on a TTY, written
// to stderr through spdlog. Thread-safe once Init() has returned.
#ifndef LIFEBOAT_BASE_LOG_H_
#define LIFEBOAT_BASE_LOG_H_

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace lifeboat::log {

// bunyan's numeric levels.
enum class Level : int {
  kTrace = 10,
  kDebug = 20,
  kInfo = 30,
  kWarn = 40,
  kError = 50,
  kFatal = 60
};

enum class Format { kAuto, kJson, kHuman };  // kAuto: human on a TTY, JSON otherwise

// Sets the logger name, format and minimum level. May be called again (tests).
// Before Init, messages at warn and above go to stderr in the human format.
void Init(std::string name, Format format = Format::kAuto, Level min_level = Level::kInfo);

// Parses "trace".."fatal"; false when unknown.
bool ParseLevel(std::string_view text, Level* out);

// Extra fields are a JSON object; they may not override the bunyan core keys.
void Log(Level level, std::string_view msg, const nlohmann::json& fields = nullptr);
inline void Debug(std::string_view m, const nlohmann::json& f = nullptr) {
  Log(Level::kDebug, m, f);
}
inline void Info(std::string_view m, const nlohmann::json& f = nullptr) { Log(Level::kInfo, m, f); }
inline void Warn(std::string_view m, const nlohmann::json& f = nullptr) { Log(Level::kWarn, m, f); }
inline void Error(std::string_view m, const nlohmann::json& f = nullptr) {
  Log(Level::kError, m, f);
}
bool Enabled(Level level);

// Pure formatters, exposed for tests.
std::string FormatBunyan(std::string_view name, std::string_view hostname, int64_t pid,
                         int64_t wall_ms, Level level, std::string_view msg,
                         const nlohmann::json& fields);
std::string FormatHuman(int64_t wall_ms, Level level, std::string_view msg,
                        const nlohmann::json& fields);

}  // namespace lifeboat::log

#endif  // LIFEBOAT_BASE_LOG_H_
