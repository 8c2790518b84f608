#include "conf/config.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "base/suggest.h"
#include "base/text.h"

namespace lifeboat::conf {
namespace {

constexpr uint64_t kMaxConfigSize = 1 << 20;
constexpr uint64_t kMaxSecretFileSize = 64 << 10;
constexpr size_t kMinClusterKeyBytes = 32;

// ---- Value syntax ------------------------------------------------------------

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsLower(char c) { return c >= 'a' && c <= 'z'; }
bool IsNameChar(char c) {
  return IsDigit(c) || IsLower(c) || (c >= 'A' && c <= 'Z') || c == '.' || c == '_' || c == '-';
}

// Reads the digits at text[*pos...] into *out; false when there are none or
// the number does not fit in uint64.
bool ReadNumber(std::string_view text, size_t* pos, uint64_t* out) {
  size_t start = *pos;
  uint64_t v = 0;
  while (*pos < text.size() && IsDigit(text[*pos])) {
    if (__builtin_mul_overflow(v, 10u, &v) ||
        __builtin_add_overflow(v, static_cast<uint64_t>(text[*pos] - '0'), &v)) {
      return false;
    }
    ++*pos;
  }
  *out = v;
  return *pos > start;
}

struct DurationUnit {
  std::string_view name;
  int64_t ms;
};
// Largest first: a duration's units must appear in this order.
constexpr DurationUnit kDurationUnits[] = {
    {"d", 86'400'000}, {"h", 3'600'000}, {"m", 60'000}, {"s", 1'000}, {"ms", 1}};

Status BadDuration(std::string_view text, std::string_view why) {
  return ConfigError("\"" + std::string(text) + "\" is not a duration (" + std::string(why) +
                     "): expected <number><unit> groups such as \"90s\", \"5m\", \"2h30m\"; "
                     "units d, h, m, s, ms");
}

Status BadSize(std::string_view text, std::string_view why) {
  return ConfigError("\"" + std::string(text) + "\" is not a size (" + std::string(why) +
                     "): expected bytes or <number> with K, M, G or T (powers of 1024) such "
                     "as \"0\", \"512K\", \"10M\", \"1G\"");
}

bool IsValidHostname(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  size_t label_start = 0;
  for (size_t i = 0; i <= host.size(); ++i) {
    if (i == host.size() || host[i] == '.') {
      std::string_view label = host.substr(label_start, i - label_start);
      if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
        return i == host.size() && label.empty() && i > 0;  // allow one trailing dot
      }
      label_start = i + 1;
      continue;
    }
    char c = host[i];
    if (!(IsDigit(c) || IsLower(c) || (c >= 'A' && c <= 'Z') || c == '-')) return false;
  }
  return true;
}

bool IsLoopbackHost(std::string_view host) {
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

bool IsWildcardHost(std::string_view host) { return host == "0.0.0.0" || host == "::"; }

bool IsUuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    char c = s[i];
    if (dash ? c != '-' : !(IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

std::string Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n\v\f";
  size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(kSpace);
  return std::string(s.substr(b, e - b + 1));
}

std::string FormatNumber(double v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string TypeName(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    default:
      return "nothing";
  }
}

// ---- The parser ----------------------------------------------------------------

// Where a value came from, for problems found after the walk.
struct Place {
  int line = 0;
  int column = 0;
};

Place PlaceOf(const toml::source_region& r) {
  return {static_cast<int>(r.begin.line), static_cast<int>(r.begin.column)};
}

class Parser;

// A known key of a table: its name and how its value is parsed. `parse`
// reports its own problems.
struct Field {
  std::string_view name;
  bool required = false;
  std::function<void(const toml::node& value, const std::string& key)> parse;
};

class Parser {
 public:
  Parser(std::string file, Env& env) : file_(std::move(file)), env_(env) {}

  Config Parse(const toml::table& root);
  std::vector<ConfigProblem> TakeProblems() { return std::move(problems_); }

 private:
  void Problem(Place at, std::string key, std::string message) {
    bad_keys_.insert(key);
    problems_.push_back({file_, at.line, at.column, std::move(key), std::move(message)});
  }
  void Problem(const toml::node& n, std::string key, std::string message) {
    Problem(PlaceOf(n.source()), std::move(key), std::move(message));
  }
  void Warning(Config& c, const std::string& key, std::string message) {
    Place at = PlaceAt(key);
    c.warnings.push_back({file_, at.line, at.column, key, std::move(message)});
  }
  Place PlaceAt(const std::string& key) const {
    auto it = places_.find(key);
    return it == places_.end() ? Place{} : it->second;
  }
  bool Has(const std::string& key) const { return places_.count(key) != 0; }
  bool Bad(const std::string& key) const { return bad_keys_.count(key) != 0; }

  // Sends each entry of `table` to its field; unknown keys and missing
  // required keys are problems.
  void Walk(const toml::table& table, const std::string& prefix, const std::vector<Field>& fields);
  void UnknownKey(Place at, const std::string& key, std::string_view name,
                  const std::vector<Field>& fields);
  // Walks the table at root[name] when present; a missing table counts as
  // empty (so its required keys are reported).
  void Section(const toml::table& root, std::string_view name, const std::vector<Field>& fields);

  // Field makers. Each stores a valid value into *out or reports a problem.
  Field Text(std::string_view name, std::string* out,
             std::function<std::string(const std::string&)> check, bool required = false);
  Field AbsoluteDir(std::string_view name, std::string* out);
  Field FilePath(std::string_view name, std::string* out, bool required = false);
  Field DurationField(std::string_view name, Duration* out, Duration min);
  Field SizeField(std::string_view name, uint64_t* out, uint64_t min);
  Field Address(std::string_view name, HostPort* out, bool required = false);
  Field Count(std::string_view name, uint32_t* out, int64_t min, int64_t max);
  Field Fraction(std::string_view name, double* out, double min, double max);
  Field Names(std::string_view name, std::vector<std::string>* out, bool allow_star);
  // A command: a shell string or an argv array; `allow_off`: [] is valid
  // and stores an empty argv (the feature is off).
  Field Argv(std::string_view name, std::vector<std::string>* out, bool allow_off = false);
  template <typename E>
  Field Choice(std::string_view name, E* out, std::vector<std::pair<std::string_view, E>> choices);

  std::optional<std::string> String(const toml::node& n, const std::string& key,
                                    std::string_view expected);

  void ParsePeers(const toml::node& value, Config& c);
  void ResolveSymlinkedDirs(Config& c);
  void CheckCrossFields(Config& c);
  void LoadSecrets(Config& c);
  std::string ResolvePath(const std::string& path) const;
  std::optional<std::string> ReadSecret(const std::string& key, const std::string& path);

  std::string file_;
  Env& env_;
  std::vector<ConfigProblem> problems_;
  std::map<std::string, Place> places_;  // key -> where its value is
  std::set<std::string> bad_keys_;       // keys with a problem: no cross-checks on them
};

void Parser::UnknownKey(Place at, const std::string& key, std::string_view name,
                        const std::vector<Field>& fields) {
  std::string msg = "unknown key";
  std::vector<std::string> names;
  for (const Field& f : fields) names.emplace_back(f.name);
  if (std::string best = ClosestName(name, names); !best.empty()) {
    msg += " (did you mean \"" + best + "\"?)";
  }
  Problem(at, key, msg);
}

void Parser::Walk(const toml::table& table, const std::string& prefix,
                  const std::vector<Field>& fields) {
  for (auto&& [k, v] : table) {
    std::string name(k.str());
    std::string key = prefix.empty() ? name : prefix + "." + name;
    auto field =
        std::find_if(fields.begin(), fields.end(), [&](const Field& f) { return f.name == name; });
    if (field == fields.end()) {
      UnknownKey(PlaceOf(k.source()), key, name, fields);
      continue;
    }
    places_[key] = PlaceOf(v.source());
    field->parse(v, key);
  }
  for (const Field& f : fields) {
    if (f.required && !table.contains(f.name)) {
      std::string key = prefix + "." + std::string(f.name);
      Problem(PlaceOf(table.source()), key, "missing required key (in the [" + prefix + "] table)");
    }
  }
}

void Parser::Section(const toml::table& root, std::string_view name,
                     const std::vector<Field>& fields) {
  const toml::node* n = root.get(name);
  if (n == nullptr) {
    Walk(toml::table{}, std::string(name), fields);
    return;
  }
  if (!n->is_table()) {
    Problem(*n, std::string(name),
            "expected a [" + std::string(name) + "] table, found " + TypeName(*n));
    return;
  }
  Walk(*n->as_table(), std::string(name), fields);
}

std::optional<std::string> Parser::String(const toml::node& n, const std::string& key,
                                          std::string_view expected) {
  if (const auto* s = n.as_string()) return s->get();
  Problem(n, key, "expected " + std::string(expected) + ", found " + TypeName(n));
  return std::nullopt;
}

Field Parser::Text(std::string_view name, std::string* out,
                   std::function<std::string(const std::string&)> check, bool required) {
  return {name, required, [=, this](const toml::node& n, const std::string& key) {
            auto s = String(n, key, "a string");
            if (!s) return;
            if (std::string why = check(*s); !why.empty()) return Problem(n, key, why);
            *out = *s;
          }};
}

Field Parser::AbsoluteDir(std::string_view name, std::string* out) {
  return Text(name, out, [](const std::string& s) -> std::string {
    if (s.empty() || s.front() != '/') {
      return "expected an absolute directory path, found \"" + s + "\"";
    }
    return "";
  });
}

Field Parser::FilePath(std::string_view name, std::string* out, bool required) {
  return Text(
      name, out,
      [](const std::string& s) -> std::string { return s.empty() ? "expected a file path" : ""; },
      required);
}

Field Parser::DurationField(std::string_view name, Duration* out, Duration min) {
  return {name, false, [=, this](const toml::node& n, const std::string& key) {
            auto s = String(n, key, "a duration string such as \"5m\"");
            if (!s) return;
            Result<Duration> d = ParseDuration(*s);
            if (!d.ok()) return Problem(n, key, d.status().message());
            if (*d < min) {
              return Problem(n, key,
                             "expected at least " + FormatDuration(min) + ", found \"" + *s + "\"");
            }
            *out = *d;
          }};
}

Field Parser::SizeField(std::string_view name, uint64_t* out, uint64_t min) {
  return {name, false, [=, this](const toml::node& n, const std::string& key) {
            uint64_t v;
            if (const auto* i = n.as_integer()) {
              if (i->get() < 0) return Problem(n, key, "expected a size, found a negative number");
              v = static_cast<uint64_t>(i->get());
            } else {
              auto s = String(n, key, "a size such as \"10M\"");
              if (!s) return;
              Result<uint64_t> r = ParseSize(*s);
              if (!r.ok()) return Problem(n, key, r.status().message());
              v = *r;
            }
            if (v < min) return Problem(n, key, "expected at least " + FormatSize(min));
            *out = v;
          }};
}

Field Parser::Address(std::string_view name, HostPort* out, bool required) {
  return {name, required, [=, this](const toml::node& n, const std::string& key) {
            auto s = String(n, key, "a \"host:port\" string");
            if (!s) return;
            Result<HostPort> hp = ParseHostPort(*s);
            if (!hp.ok()) return Problem(n, key, hp.status().message());
            *out = *hp;
          }};
}

Field Parser::Count(std::string_view name, uint32_t* out, int64_t min, int64_t max) {
  return {name, false, [=, this](const toml::node& n, const std::string& key) {
            const auto* i = n.as_integer();
            if (i == nullptr) return Problem(n, key, "expected an integer, found " + TypeName(n));
            if (i->get() < min || i->get() > max) {
              return Problem(n, key,
                             "expected an integer from " + std::to_string(min) + " to " +
                                 std::to_string(max) + ", found " + std::to_string(i->get()));
            }
            *out = static_cast<uint32_t>(i->get());
          }};
}

Field Parser::Fraction(std::string_view name, double* out, double min, double max) {
  return {name, false, [=, this](const toml::node& n, const std::string& key) {
            double v;
            if (const auto* f = n.as_floating_point()) {
              v = f->get();
            } else if (const auto* i = n.as_integer()) {
              v = static_cast<double>(i->get());
            } else {
              return Problem(n, key, "expected a number, found " + TypeName(n));
            }
            if (!(v >= min && v <= max)) {  // also rejects nan
              return Problem(
                  n, key,
                  "expected a number from " + FormatNumber(min) + " to " + FormatNumber(max));
            }
            *out = v;
          }};
}

Field Parser::Names(std::string_view name, std::vector<std::string>* out, bool allow_star) {
  return {name, false, [=, this](const toml::node& n, const std::string& key) {
            const auto* arr = n.as_array();
            if (arr == nullptr) {
              return Problem(n, key, "expected an array of service names, found " + TypeName(n));
            }
            std::vector<std::string> names;
            std::set<std::string> seen;
            bool ok = true;
            for (size_t i = 0; i < arr->size(); ++i) {
              const toml::node& el = *arr->get(i);
              std::string el_key = key + "[" + std::to_string(i) + "]";
              auto s = String(el, el_key, "a service name");
              if (!s) {
                ok = false;
                continue;
              }
              bool valid = !s->empty() && std::all_of(s->begin(), s->end(), [](char c) {
                return IsDigit(c) || IsLower(c) || c == '_' || c == '-';
              });
              if (!(valid || (allow_star && *s == "*"))) {
                Problem(el, el_key,
                        "expected a service name ([a-z0-9_-]+)" +
                            std::string(allow_star ? " or \"*\"" : "") + ", found \"" + *s + "\"");
                ok = false;
              } else if (!seen.insert(*s).second) {
                Problem(el, el_key, "\"" + *s + "\" is listed twice");
                ok = false;
              }
              names.push_back(*s);
            }
            if (!ok) return;
            if (names.empty()) return Problem(n, key, "expected at least one service name");
            if (seen.count("*") && names.size() > 1) {
              return Problem(n, key, "\"*\" already means every service; list it alone");
            }
            *out = std::move(names);
          }};
}

Field Parser::Argv(std::string_view name, std::vector<std::string>* out, bool allow_off) {
  return {name, false, [=, this](const toml::node& n, const std::string& key) {
            if (const auto* arr = n.as_array(); allow_off && arr != nullptr && arr->empty()) {
              out->clear();
              return;
            }
            if (const auto* s = n.as_string()) {
              if (Trim(s->get()).empty()) return Problem(n, key, "expected a command, found \"\"");
              *out = {"/bin/sh", "-c", s->get()};
              return;
            }
            const auto* arr = n.as_array();
            if (arr == nullptr || arr->empty() || !arr->is_homogeneous(toml::node_type::string)) {
              return Problem(n, key,
                             "expected a command: a shell string or a non-empty array of strings "
                             "(argv)");
            }
            std::vector<std::string> argv;
            for (const auto& el : *arr) argv.push_back(el.as_string()->get());
            if (argv[0].empty()) return Problem(n, key, "expected a program as argv[0]");
            *out = std::move(argv);
          }};
}

template <typename E>
Field Parser::Choice(std::string_view name, E* out,
                     std::vector<std::pair<std::string_view, E>> choices) {
  return {name, false, [=, this](const toml::node& n, const std::string& key) {
            std::string expected;
            for (const auto& [word, value] : choices) {
              expected += (expected.empty() ? "\"" : ", \"") + std::string(word) + "\"";
            }
            auto s = String(n, key, "one of " + expected);
            if (!s) return;
            for (const auto& [word, value] : choices) {
              if (*s == word) {
                *out = value;
                return;
              }
            }
            Problem(n, key, "expected one of " + expected + ", found \"" + *s + "\"");
          }};
}

std::string CheckUuid(const std::string& s) {
  return IsUuid(s)
             ? ""
             : "expected a uuid like \"564dd1ac-164d-cc50-247c-b2eb0cf21ce5\", found \"" + s + "\"";
}

std::string CheckName(const std::string& s) {
  if (s.empty() || s.size() > 64 || !std::all_of(s.begin(), s.end(), IsNameChar)) {
    return "expected a name of 1 to 64 characters [A-Za-z0-9._-], found \"" + s + "\"";
  }
  return "";
}

Config Parser::Parse(const toml::table& root) {
  Config c;
  c.source_path = file_;
  auto& a = c.agent;
  auto& l = a.limits;
  auto& r = c.restore;
  // Top level: only the sections; each is walked below in a fixed order so
  // problems come out in section order.
  std::vector<Field> top;
  for (std::string_view name :
       {"node", "agent", "auth", "export", "peer", "retention", "restore", "drill"}) {
    top.push_back({name, false, nullptr});
  }
  for (auto&& [k, v] : root) {
    std::string name(k.str());
    if (std::none_of(top.begin(), top.end(), [&](const Field& f) { return f.name == name; })) {
      UnknownKey(PlaceOf(k.source()), name, name, top);
    }
  }
  Section(
      root, "node",
      {Text("uuid", &c.node.uuid, CheckUuid, true), Text("name", &c.node.name, CheckName, true)});
  std::vector<Field> agent = {
      Address("listen", &a.listen),
      Address("api", &a.api),
      AbsoluteDir("data_dir", &a.data_dir),
      DurationField("interval", &a.interval, std::chrono::seconds(1)),
      Fraction("jitter", &a.jitter, 0.0, 0.5),
      DurationField("stale_after", &a.stale_after, std::chrono::seconds(1)),
      DurationField("scrub_interval", &a.scrub_interval, Duration(0)),
      SizeField("bwlimit", &a.bwlimit, 0),
      Choice<log::Level>("log_level", &a.log_level,
                         {{"trace", log::Level::kTrace},
                          {"debug", log::Level::kDebug},
                          {"info", log::Level::kInfo},
                          {"warn", log::Level::kWarn},
                          {"error", log::Level::kError},
                          {"fatal", log::Level::kFatal}}),
      {"limits", false, [&, this](const toml::node& n, const std::string& key) {
         if (!n.is_table()) return Problem(n, key, "expected an [agent.limits] table");
         Walk(*n.as_table(), key,
              {Count("max_files_in_flight", &l.max_files_in_flight, 1, 4096),
               SizeField("max_memory", &l.max_memory, 1 << 20),
               DurationField("pull_deadline", &l.pull_deadline, std::chrono::seconds(1)),
               DurationField("connect_timeout", &l.connect_timeout, std::chrono::milliseconds(1)),
               DurationField("io_timeout", &l.io_timeout, std::chrono::milliseconds(1))});
       }}};
  Section(root, "agent", agent);
  Section(root, "auth",
          {Choice<Transport>("transport", &c.auth.transport,
                             {{"tls-psk", Transport::kTlsPsk},
                              {"tls-ca", Transport::kTlsCa},
                              {"plain", Transport::kPlain}}),
           FilePath("cluster_key_file", &c.auth.cluster_key_file, true),
           FilePath("api_token_file", &c.auth.api_token_file), FilePath("ca_file", &c.auth.ca_file),
           FilePath("cert_file", &c.auth.cert_file), FilePath("key_file", &c.auth.key_file)});
  Section(root, "export",
          {Choice<ExportProvider>(
               "provider", &c.export_.provider,
               {{"dir", ExportProvider::kDir}, {"smartos", ExportProvider::kSmartos}}),
           AbsoluteDir("root", &c.export_.root), Names("services", &c.export_.services, true),
           Argv("sapi_command", &c.export_.sapi_command, /*allow_off=*/true),
           DurationField("full_walk_interval", &c.export_.full_walk_interval, Duration(0))});
  if (const toml::node* peers = root.get("peer")) ParsePeers(*peers, c);
  Section(root, "retention",
          {Count("generations", &c.retention.generations, 1, 100),
           DurationField("removed_grace", &c.retention.removed_grace, Duration(0)),
           DurationField("keep_all_for", &c.retention.keep_all_for, Duration(0)),
           DurationField("keep_hourly_for", &c.retention.keep_hourly_for, Duration(0)),
           DurationField("keep_daily_for", &c.retention.keep_daily_for, Duration(0)),
           Names("release_went_back", &c.retention.release_went_back, false)});
  std::vector<Field> restore = {
      Choice<RestoreBackend>("backend", &r.backend,
                             {{"dir", RestoreBackend::kDir},
                              {"smartos", RestoreBackend::kSmartos},
                              {"exec", RestoreBackend::kExec}}),
      AbsoluteDir("target", &r.target),
      Names("order", &r.order, false),
      DurationField("await_timeout", &r.await_timeout, std::chrono::seconds(1)),
      {"exec", false, [&, this](const toml::node& n, const std::string& key) {
         if (!n.is_table()) return Problem(n, key, "expected a [restore.exec] table");
         Walk(*n.as_table(), key,
              {Argv("install_image", &r.exec.install_image),
               Argv("create_instance", &r.exec.create_instance),
               Argv("restore_data", &r.exec.restore_data),
               Argv("await_instance", &r.exec.await_instance),
               Argv("adopt_instance", &r.exec.adopt_instance),
               Argv("register_sapi", &r.exec.register_sapi),
               Argv("retire_old_records", &r.exec.retire_old_records)});
       }}};
  Section(root, "restore", restore);
  Section(root, "drill",
          {DurationField("interval", &c.drill.interval, Duration(0)),
           AbsoluteDir("dir", &c.drill.dir), SizeField("max_bytes", &c.drill.max_bytes, 0)});
  std::transform(c.node.uuid.begin(), c.node.uuid.end(), c.node.uuid.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  ResolveSymlinkedDirs(c);
  CheckCrossFields(c);
  LoadSecrets(c);
  // toml++ iterates tables in key order; report in file order, placeless last.
  std::stable_sort(problems_.begin(), problems_.end(),
                   [](const ConfigProblem& x, const ConfigProblem& y) {
                     auto rank = [](const ConfigProblem& p) {
                       return std::pair(p.line == 0 ? INT_MAX : p.line, p.column);
                     };
                     return rank(x) < rank(y);
                   });
  return c;
}

void Parser::ParsePeers(const toml::node& value, Config& c) {
  const auto* arr = value.as_array();
  if (arr == nullptr || !arr->is_array_of_tables()) {
    return Problem(value, "peer", "expected [[peer]] tables (one per peer, with name and address)");
  }
  for (size_t i = 0; i < arr->size(); ++i) {
    PeerConfig p;
    std::string prefix = "peer[" + std::to_string(i) + "]";
    Walk(*arr->get(i)->as_table(), prefix,
         {Text("name", &p.name, CheckName, true), Address("address", &p.address, true),
          Address("api", &p.api)});
    c.peers.push_back(std::move(p));
  }
}

// A data_dir (or drill dir) that is a symlink to the real directory, as
// operators set up to move data to a bigger pool, is resolved once here, so
// every command and the agent work on the real path (the store never writes
// through a symlink). A path that does not exist yet stays as written.
void Parser::ResolveSymlinkedDirs(Config& c) {
  for (std::string* dir : {&c.agent.data_dir, &c.drill.dir}) {
    char resolved[PATH_MAX];
    if (!dir->empty() && ::realpath(dir->c_str(), resolved) != nullptr) *dir = resolved;
  }
}

void Parser::CheckCrossFields(Config& c) {
  const AgentConfig& a = c.agent;
  std::vector<std::string> peer_names;
  for (const PeerConfig& p : c.peers) peer_names.push_back(p.name);
  for (const std::string& n : c.retention.release_went_back) {
    if (Bad("retention.release_went_back") ||
        std::find(peer_names.begin(), peer_names.end(), n) != peer_names.end()) {
      continue;
    }
    std::string msg = "\"" + n + "\" is not a [[peer]] name";
    if (std::string best = ClosestName(n, peer_names); !best.empty()) {
      msg += " (did you mean \"" + best + "\"?)";
    }
    Problem(PlaceAt("retention.release_went_back"), "retention.release_went_back", msg);
  }
  if (a.api == a.listen && !Bad("agent.api") && !Bad("agent.listen")) {
    std::string key = Has("agent.api") ? "agent.api" : "agent.listen";
    Problem(PlaceAt(key), key,
            "agent.api and agent.listen are both " + a.listen.ToString() + "; they must differ");
  }
  if (a.stale_after <= a.interval && !Bad("agent.stale_after") && !Bad("agent.interval")) {
    std::string key = Has("agent.stale_after") ? "agent.stale_after" : "agent.interval";
    Problem(PlaceAt(key), key,
            "agent.stale_after (" + FormatDuration(a.stale_after) +
                ") must be longer than agent.interval (" + FormatDuration(a.interval) + ")");
  }
  auto inside = [](const std::string& dir, const std::string& root) {
    return dir == root || dir.rfind(root + "/", 0) == 0 || root.rfind(dir + "/", 0) == 0;
  };
  if (inside(c.drill.dir, a.data_dir) && !Bad("drill.dir") && !Bad("agent.data_dir")) {
    std::string key = Has("drill.dir") ? "drill.dir" : "agent.data_dir";
    Problem(PlaceAt(key), key,
            "drill.dir (" + c.drill.dir + ") and agent.data_dir (" + a.data_dir +
                ") must not contain each other: a drill's scratch copy is not catalog data");
  }
  if (c.auth.transport == Transport::kTlsCa && !Bad("auth.transport")) {
    for (auto [name, path] :
         {std::pair{"ca_file", &c.auth.ca_file}, std::pair{"cert_file", &c.auth.cert_file},
          std::pair{"key_file", &c.auth.key_file}}) {
      std::string key = "auth." + std::string(name);
      if (path->empty() && !Has(key)) {
        Problem(PlaceAt("auth.transport"), key,
                "missing: auth.transport = \"tls-ca\" needs the cluster CA, this node's "
                "certificate and its key");
      }
    }
  }
  if (c.auth.transport == Transport::kPlain) {
    Warning(c, "auth.transport",
            "transport \"plain\": peer traffic (VM payloads, delegate data) crosses the "
            "network unencrypted; use it for benchmarks only");
  }
  if (c.restore.backend == RestoreBackend::kExec) {
    const RestoreExecConfig& e = c.restore.exec;
    for (auto [name, argv] : {std::pair{"install_image", &e.install_image},
                              std::pair{"create_instance", &e.create_instance},
                              std::pair{"restore_data", &e.restore_data}}) {
      if (argv->empty() && !Has("restore.exec." + std::string(name))) {
        Problem(PlaceAt("restore.backend"), "restore.exec." + std::string(name),
                "missing: restore.backend = \"exec\" needs this command");
      }
    }
  }
  std::map<std::string, size_t> names;
  std::map<std::string, size_t> addresses;
  for (size_t i = 0; i < c.peers.size(); ++i) {
    const PeerConfig& p = c.peers[i];
    std::string name_key = "peer[" + std::to_string(i) + "].name";
    std::string addr_key = "peer[" + std::to_string(i) + "].address";
    if (!p.name.empty()) {
      if (auto [it, fresh] = names.emplace(p.name, i); !fresh) {
        Problem(PlaceAt(name_key), name_key,
                "duplicate peer name \"" + p.name + "\" (also peer[" + std::to_string(it->second) +
                    "])");
      }
      if (p.name == c.node.name) {
        Problem(PlaceAt(name_key), name_key,
                "peer \"" + p.name + "\" is this node (node.name); list only the other nodes");
      }
    }
    std::string api_key = "peer[" + std::to_string(i) + "].api";
    if (p.api.port != 0 && IsWildcardHost(p.api.host)) {
      Problem(PlaceAt(api_key), api_key,
              "peer api " + p.api.ToString() +
                  " is a wildcard address; give the address this node reaches the peer's "
                  "control API at");
    }
    if (p.address.port != 0) {
      std::string addr = p.address.ToString();
      if (auto [it, fresh] = addresses.emplace(addr, i); !fresh) {
        Problem(
            PlaceAt(addr_key), addr_key,
            "duplicate peer address " + addr + " (also peer[" + std::to_string(it->second) + "])");
      }
      bool self = !Bad("agent.listen") &&
                  (p.address == a.listen ||
                   (IsWildcardHost(a.listen.host) && IsLoopbackHost(p.address.host) &&
                    p.address.port == a.listen.port));
      if (self) {
        Problem(PlaceAt(addr_key), addr_key,
                "peer address " + addr + " is this node's own agent.listen (" +
                    a.listen.ToString() + ")");
      }
    }
  }
  if (c.peers.empty()) {
    Warning(c, "peer",
            "no [[peer]] configured: this node pulls from nobody (fine for a single headnode)");
  }
  // Anyone who reaches the control API can start pulls and read the catalog:
  // beyond loopback it must carry a token.
  if (!Bad("agent.api") && !IsLoopbackHost(a.api.host) && !Has("auth.api_token_file")) {
    Problem(PlaceAt("agent.api"), "agent.api",
            "the control API would listen on " + a.api.ToString() +
                ", beyond loopback, without a token: set auth.api_token_file, or bind "
                "agent.api to 127.0.0.1");
  }
}

std::string Parser::ResolvePath(const std::string& path) const {
  std::filesystem::path p(path);
  if (p.is_relative()) p = std::filesystem::path(DirName(file_)) / p;
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(p, ec);
  return (ec ? p : abs).lexically_normal().string();
}

std::optional<std::string> Parser::ReadSecret(const std::string& key, const std::string& path) {
  Result<std::string> text = ReadFileToString(env_, path, kMaxSecretFileSize);
  if (!text.ok()) {
    Problem(PlaceAt(key), key, "cannot read the file: " + text.status().message());
    return std::nullopt;
  }
  return Trim(*text);
}

void Parser::LoadSecrets(Config& c) {
  AuthConfig& auth = c.auth;
  if (!auth.cluster_key_file.empty()) {
    auth.cluster_key_file = ResolvePath(auth.cluster_key_file);
    if (auto key = ReadSecret("auth.cluster_key_file", auth.cluster_key_file)) {
      if (key->size() < kMinClusterKeyBytes) {
        Problem(PlaceAt("auth.cluster_key_file"), "auth.cluster_key_file",
                "the key in " + auth.cluster_key_file + " is " + std::to_string(key->size()) +
                    " bytes after trimming whitespace; expected at least " +
                    std::to_string(kMinClusterKeyBytes) +
                    " (make one with `openssl rand -hex 32`)");
      } else {
        auth.cluster_key = std::move(*key);
        if (auth.cluster_key == kExampleClusterKey) {
          Warning(c, "auth.cluster_key_file",
                  "this is the published example key: generate a secret one with "
                  "`openssl rand -hex 32`");
        }
        Result<FileStat> st = env_.Stat(auth.cluster_key_file);
        if (auth.cluster_key != kExampleClusterKey && st.ok() && st->type == FileType::kRegular &&
            (st->mode & 077) != 0) {
          char mode[16];
          snprintf(mode, sizeof mode, "%04o", st->mode);
          Warning(c, "auth.cluster_key_file",
                  auth.cluster_key_file + " has mode " + mode +
                      ": other users can read the cluster key (chmod 600 it)");
        }
      }
    }
  }
  if (!auth.api_token_file.empty()) {
    auth.api_token_file = ResolvePath(auth.api_token_file);
    if (auto token = ReadSecret("auth.api_token_file", auth.api_token_file)) {
      if (token->empty()) {
        Problem(PlaceAt("auth.api_token_file"), "auth.api_token_file",
                auth.api_token_file + " is empty; expected a token");
      }
      auth.api_token = std::move(*token);
    }
  }
  for (auto [name, path] :
       {std::pair{"ca_file", &auth.ca_file}, std::pair{"cert_file", &auth.cert_file},
        std::pair{"key_file", &auth.key_file}}) {
    if (path->empty()) continue;
    *path = ResolvePath(*path);
    std::string key = "auth." + std::string(name);
    Result<std::unique_ptr<ReadableFile>> f = env_.OpenRead(*path);
    if (!f.ok()) Problem(PlaceAt(key), key, "cannot read the file: " + f.status().message());
  }
}

Status ProblemsStatus(const std::vector<ConfigProblem>& problems) {
  std::string msg;
  for (const ConfigProblem& p : problems) {
    if (!msg.empty()) msg += "\n";
    msg += p.ToString();
  }
  return ConfigError(std::move(msg));
}

Result<Config> Finish(std::vector<ConfigProblem> found, Config config,
                      std::vector<ConfigProblem>* problems) {
  if (problems != nullptr) *problems = found;
  if (!found.empty()) return ProblemsStatus(found);
  return config;
}

}  // namespace

// ---- Public -------------------------------------------------------------------

std::string HostPort::ToString() const {
  bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string_view TransportName(Transport t) {
  switch (t) {
    case Transport::kTlsPsk:
      return "tls-psk";
    case Transport::kTlsCa:
      return "tls-ca";
    case Transport::kPlain:
      return "plain";
  }
  return "?";
}

std::string_view ExportProviderName(ExportProvider p) {
  return p == ExportProvider::kDir ? "dir" : "smartos";
}

std::string_view RestoreBackendName(RestoreBackend b) {
  switch (b) {
    case RestoreBackend::kDir:
      return "dir";
    case RestoreBackend::kSmartos:
      return "smartos";
    case RestoreBackend::kExec:
      return "exec";
  }
  return "?";
}

const std::vector<std::string>& DefaultServiceOrder() {
  static const auto* order = new std::vector<std::string>{
      "assets",  "sapi",     "amonredis", "ufds",   "workflow", "amon",    "sdc", "papi",
      "napi",    "rabbitmq", "imgapi",    "cnapi",  "fwapi",    "vmapi",   "ca",  "mahi",
      "adminui", "cloudapi", "cns",       "docker", "cmon",     "portolan"};
  return *order;
}

std::string ConfigProblem::ToString() const {
  std::string out = file;
  if (line > 0) {
    out += ":" + std::to_string(line);
    if (column > 0) out += ":" + std::to_string(column);
  }
  out += ": ";
  if (!key.empty()) out += key + ": ";
  return out + message;
}

Result<Duration> ParseDuration(std::string_view text) {
  if (text.empty()) return BadDuration(text, "empty");
  size_t pos = 0;
  size_t next_unit = 0;  // index into kDurationUnits: the largest unit still allowed
  int64_t total = 0;
  while (pos < text.size()) {
    uint64_t n;
    if (!IsDigit(text[pos])) return BadDuration(text, "expected a digit");
    if (!ReadNumber(text, &pos, &n)) return BadDuration(text, "too large");
    size_t unit_start = pos;
    while (pos < text.size() && IsLower(text[pos])) ++pos;
    std::string_view unit = text.substr(unit_start, pos - unit_start);
    if (unit.empty()) return BadDuration(text, "missing unit");
    size_t u = next_unit;
    while (u < std::size(kDurationUnits) && kDurationUnits[u].name != unit) ++u;
    if (u == std::size(kDurationUnits)) {
      bool known = std::any_of(std::begin(kDurationUnits), std::end(kDurationUnits),
                               [&](const DurationUnit& d) { return d.name == unit; });
      return BadDuration(text, known ? "units must go from largest to smallest, each once"
                                     : "unknown unit \"" + std::string(unit) + "\"");
    }
    int64_t ms;
    if (n > static_cast<uint64_t>(INT64_MAX) ||
        __builtin_mul_overflow(static_cast<int64_t>(n), kDurationUnits[u].ms, &ms) ||
        __builtin_add_overflow(total, ms, &total)) {
      return BadDuration(text, "too large");
    }
    next_unit = u + 1;
  }
  return Duration(total);
}

Result<uint64_t> ParseSize(std::string_view text) {
  size_t pos = 0;
  uint64_t n;
  if (text.empty() || !IsDigit(text[0])) return BadSize(text, "expected a digit first");
  if (!ReadNumber(text, &pos, &n)) return BadSize(text, "too large");
  std::string_view suffix = text.substr(pos);
  int shift = 0;
  if (!suffix.empty() && suffix != "B") {
    constexpr std::string_view kUnits = "KMGT";
    size_t u = kUnits.find(suffix[0]);
    std::string_view rest = suffix.substr(1);
    if (u == std::string_view::npos || !(rest.empty() || rest == "B" || rest == "iB")) {
      return BadSize(text, "unknown unit \"" + std::string(suffix) + "\"");
    }
    shift = 10 * static_cast<int>(u + 1);
  }
  if (shift > 0 && n > (UINT64_MAX >> shift)) return BadSize(text, "too large");
  return n << shift;
}

Result<HostPort> ParseHostPort(std::string_view text) {
  auto bad = [&](std::string_view why) -> Status {
    return ConfigError("\"" + std::string(text) + "\" is not a host:port address (" +
                       std::string(why) +
                       "): expected an IPv4 address, [IPv6] address or host name, then "
                       ":port with port 1..65535");
  };
  std::string host;
  std::string_view port_text;
  if (text.starts_with("[")) {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return bad("missing ]");
    host = std::string(text.substr(1, close - 1));
    in6_addr a6;
    if (inet_pton(AF_INET6, host.c_str(), &a6) != 1) return bad("bad IPv6 address");
    if (close + 1 >= text.size() || text[close + 1] != ':') return bad("missing :port");
    port_text = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("missing :port");
    host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) return bad("put an IPv6 address in brackets");
    if (host.empty()) return bad("missing host");
    bool numeric =
        std::all_of(host.begin(), host.end(), [](char c) { return IsDigit(c) || c == '.'; });
    in_addr a4;
    if (numeric ? inet_pton(AF_INET, host.c_str(), &a4) != 1 : !IsValidHostname(host)) {
      return bad(numeric ? "bad IPv4 address" : "bad host name");
    }
  }
  size_t pos = 0;
  uint64_t port = 0;
  if (port_text.empty() || port_text.size() > 5 || !ReadNumber(port_text, &pos, &port) ||
      pos != port_text.size()) {
    return bad("bad port");
  }
  if (port < 1 || port > 65535) return bad("port out of range");
  return HostPort{std::move(host), static_cast<uint16_t>(port)};
}

std::string FormatDuration(Duration d) {
  int64_t ms = d.count();
  if (ms == 0) return "0s";
  std::string out = ms < 0 ? "-" : "";
  uint64_t left = ms < 0 ? 0 - static_cast<uint64_t>(ms) : static_cast<uint64_t>(ms);
  for (const DurationUnit& u : kDurationUnits) {
    uint64_t n = left / static_cast<uint64_t>(u.ms);
    if (n == 0) continue;
    out += std::to_string(n) + std::string(u.name);
    left -= n * static_cast<uint64_t>(u.ms);
  }
  return out;
}

std::string FormatSize(uint64_t bytes) {
  constexpr std::string_view kUnits = "TGMK";
  for (size_t i = 0; i < kUnits.size(); ++i) {
    int shift = 10 * static_cast<int>(kUnits.size() - i);
    uint64_t unit = uint64_t{1} << shift;
    if (bytes != 0 && bytes % unit == 0) return std::to_string(bytes >> shift) + kUnits[i];
  }
  return std::to_string(bytes);
}

Result<Config> ParseConfig(std::string_view text, std::string source_name,
                           std::vector<ConfigProblem>* problems, Env* env) {
  if (env == nullptr) env = Env::Default();
  if (size_t bad = FirstInvalidUtf8(text); bad != std::string_view::npos) {
    std::string_view before = text.substr(0, bad);
    int line = 1 + static_cast<int>(std::count(before.begin(), before.end(), '\n'));
    size_t line_start = before.rfind('\n');
    int column =
        static_cast<int>(bad - (line_start == std::string_view::npos ? 0 : line_start + 1)) + 1;
    char byte[8];
    snprintf(byte, sizeof byte, "0x%02x", static_cast<unsigned char>(text[bad]));
    return Finish({{source_name, line, column, "",
                    std::string("invalid UTF-8 (byte ") + byte + "); the file must be UTF-8"}},
                  Config{}, problems);
  }
  toml::table root;
  try {
    root = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    Place at = PlaceOf(e.source());
    return Finish({{source_name, at.line, at.column, "",
                    "TOML syntax error: " + std::string(e.description())}},
                  Config{}, problems);
  }
  Parser parser(source_name, *env);
  Config config = parser.Parse(root);
  return Finish(parser.TakeProblems(), std::move(config), problems);
}

Result<Config> LoadConfig(const std::string& path, std::vector<ConfigProblem>* problems, Env* env) {
  if (env == nullptr) env = Env::Default();
  Result<std::string> text = ReadFileToString(*env, path, kMaxConfigSize);
  if (!text.ok()) {
    return Finish({{path, 0, 0, "", "cannot read the config file: " + text.status().message() +
                        " (name it with -c FILE or $LIFEBOAT_CONFIG)"}},
                  Config{}, problems);
  }
  return ParseConfig(*text, path, problems, env);
}

}  // namespace lifeboat::conf
