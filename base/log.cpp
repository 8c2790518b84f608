#include "base/log.h"

#include <unistd.h>

#include <atomic>
#include <mutex>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "base/clock.h"
#include "base/text.h"

namespace lifeboat::log {
namespace {

struct State {
  std::mutex mu;
  std::string name = "lifeboat";
  std::string hostname;
  bool json = false;
  std::shared_ptr<spdlog::logger> logger;
};

State& GetState() {
  static State* s = new State();
  return *s;
}

std::atomic<int> g_min_level{static_cast<int>(Level::kWarn)};

const char* LevelName(Level level) {
  switch (level) {
    case Level::kTrace:
      return "TRACE";
    case Level::kDebug:
      return "DEBUG";
    case Level::kInfo:
      return "INFO";
    case Level::kWarn:
      return "WARN";
    case Level::kError:
      return "ERROR";
    case Level::kFatal:
      return "FATAL";
  }
  return "?";
}

std::string Hostname() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

std::shared_ptr<spdlog::logger> MakeLogger() {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("lifeboat", sink);
  logger->set_pattern("%v");
  logger->set_level(spdlog::level::trace);
  logger->flush_on(spdlog::level::trace);
  return logger;
}

}  // namespace

void Init(std::string name, Format format, Level min_level) {
  State& s = GetState();
  std::lock_guard<std::mutex> lock(s.mu);
  s.name = std::move(name);
  s.hostname = Hostname();
  s.json = format == Format::kJson || (format == Format::kAuto && !::isatty(STDERR_FILENO));
  if (!s.logger) s.logger = MakeLogger();
  g_min_level = static_cast<int>(min_level);
}

bool ParseLevel(std::string_view text, Level* out) {
  static const std::pair<std::string_view, Level> kLevels[] = {
      {"trace", Level::kTrace}, {"debug", Level::kDebug}, {"info", Level::kInfo},
      {"warn", Level::kWarn},   {"error", Level::kError}, {"fatal", Level::kFatal}};
  for (const auto& [n, l] : kLevels) {
    if (n == text) {
      *out = l;
      return true;
    }
  }
  return false;
}

bool Enabled(Level level) { return static_cast<int>(level) >= g_min_level.load(); }

void Log(Level level, std::string_view msg, const nlohmann::json& fields) {
  if (!Enabled(level)) return;
  State& s = GetState();
  std::shared_ptr<spdlog::logger> logger;
  std::string line;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (!s.logger) {
      s.logger = MakeLogger();
      s.hostname = Hostname();
    }
    logger = s.logger;
    int64_t now = Clock::Real()->WallMs();
    line = s.json ? FormatBunyan(s.name, s.hostname, ::getpid(), now, level, msg, fields)
                  : FormatHuman(now, level, msg, fields);
  }
  logger->log(spdlog::level::info, line);
}

std::string FormatBunyan(std::string_view name, std::string_view hostname, int64_t pid,
                         int64_t wall_ms, Level level, std::string_view msg,
                         const nlohmann::json& fields) {
  nlohmann::ordered_json j;
  j["name"] = name;
  j["hostname"] = hostname;
  j["pid"] = pid;
  j["level"] = static_cast<int>(level);
  if (fields.is_object()) {
    for (auto it = fields.begin(); it != fields.end(); ++it) {
      static const char* kCore[] = {"v", "level", "name", "hostname", "pid", "time", "msg"};
      bool core = false;
      for (const char* k : kCore) core = core || it.key() == k;
      if (!core) j[it.key()] = it.value();
    }
  }
  j["msg"] = msg;
  j["time"] = FormatIso8601Ms(wall_ms);
  j["v"] = 0;
  return DumpJson(j);
}

std::string FormatHuman(int64_t wall_ms, Level level, std::string_view msg,
                        const nlohmann::json& fields) {
  std::string out = FormatIso8601Ms(wall_ms);
  out += ' ';
  out += LevelName(level);
  out += ' ';
  out += msg;
  if (fields.is_object()) {
    for (auto it = fields.begin(); it != fields.end(); ++it) {
      out += ' ';
      out += it.key();
      out += '=';
      out += it.value().is_string()
                 ? it.value().get<std::string>()
                 : DumpJson(it.value());
    }
  }
  return out;
}

}  // namespace lifeboat::log
