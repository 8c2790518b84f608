// Generation trees (trees.h): building them in O(changed directories) and
// reading them back, each checked against its name.
#include "catalog/trees.h"

#include <algorithm>
#include <set>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/text.h"
#include "catalog/internal/store_impl.h"
#include "catalog/internal/util.h"

namespace lifeboat::catalog {
namespace {

constexpr uint64_t kMaxTreeBytes = 1ull << 30;

// The directory part of an export path, "" for a path without a slash.
std::string_view Parent(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : path.substr(0, slash);
}

// "<dir>/" ("" for the top): what every path under `dir` starts with.
std::string Prefix(const std::string& dir) { return dir.empty() ? dir : dir + "/"; }

// Index of the first entry whose path is not below `key` (bytewise).
size_t LowerBound(const std::vector<FileEntry>& files, std::string_view key) {
  auto it = std::lower_bound(files.begin(), files.end(), key,
                             [](const FileEntry& f, std::string_view k) { return f.path < k; });
  return static_cast<size_t>(it - files.begin());
}

// Directories whose subtree differs between `a` and `b` (both sorted): the
// parents of every path that was added, removed or changed, and theirs up to
// the top ("").
std::set<std::string> ChangedDirs(const std::vector<FileEntry>& a, const std::vector<FileEntry>& b) {
  std::set<std::string> dirs;
  auto mark = [&](std::string_view path) {
    for (std::string_view d = Parent(path);; d = Parent(d)) {
      if (!dirs.emplace(d).second || d.empty()) return;  // its ancestors are marked already
    }
  };
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    if (j == b.size() || (i < a.size() && a[i].path < b[j].path)) {
      mark(a[i++].path);
    } else if (i == a.size() || b[j].path < a[i].path) {
      mark(b[j++].path);
    } else {
      if (!(a[i] == b[j])) mark(a[i].path);
      ++i;
      ++j;
    }
  }
  return dirs;
}

class Builder {
 public:
  Builder(const std::vector<FileEntry>& files, const TreeIds* prev,
          std::set<std::string> changed)
      : files_(files), prev_(prev), changed_(std::move(changed)) {}

  // The id of `dir`'s tree: the previous one when its subtree is unchanged
  // (its descendants' ids copied along), else encoded from its children.
  Digest256 Build(const std::string& dir) {
    if (prev_ != nullptr && !changed_.count(dir)) {
      if (auto it = prev_->find(dir); it != prev_->end()) {
        KeepSubtree(dir);
        return it->second;
      }
    }
    const std::string prefix = Prefix(dir);
    std::string text = "{\"lifeboat_tree\":1";
    AppendBytes(&text, "dir", dir);
    text += ",\"entries\":[";
    bool first = true;
    auto line = [&]() -> std::string& {
      text += first ? "\n" : ",\n";
      first = false;
      return text;
    };
    const size_t end = dir.empty() ? files_.size() : LowerBound(files_, dir + "0");  // '0' follows '/'
    for (size_t i = dir.empty() ? 0 : LowerBound(files_, prefix); i < end;) {
      const FileEntry& f = files_[i];
      const size_t slash = f.path.find('/', prefix.size());
      if (slash == std::string::npos) {  // a child
        AppendEntry(&line(), f);
        if (HasDescendants(f.path)) {  // a directory (of any kind, were a peer to send that)
          text.pop_back();  // the entry's closing brace
          AppendTreeId(&text, Build(f.path));
          text.push_back('}');
        }
        ++i;
        continue;
      }
      // A descendant of child directory `sub`: its subtree was listed with
      // the child's entry, or `sub` is implied (no entry of its own).
      const std::string sub = f.path.substr(0, slash);
      if (const size_t k = LowerBound(files_, sub); k == files_.size() || files_[k].path != sub) {
        std::string& out = line();
        out += "{\"implied\":true";
        AppendBytes(&out, "path", sub);
        AppendTreeId(&out, Build(sub));
        out.push_back('}');
      }
      i = LowerBound(files_, sub + "0");  // past sub's subtree
    }
    text += "\n]}\n";
    const Digest256 id = Sha256Digest(text);
    ids_[dir] = id;
    encoded_.push_back(TreeText{id, std::move(text)});
    return id;
  }

  BuiltTrees Finish(const Digest256& root) {
    return BuiltTrees{root, std::make_shared<const TreeIds>(std::move(ids_)), std::move(encoded_)};
  }

 private:
  bool HasDescendants(const std::string& dir) const {
    const size_t k = LowerBound(files_, dir + "/");
    return k < files_.size() && files_[k].path.starts_with(dir + "/");
  }

  // Copies the ids of `dir` and every directory below it from prev_.
  void KeepSubtree(const std::string& dir) {
    if (dir.empty()) {
      ids_ = *prev_;
      return;
    }
    ids_[dir] = prev_->at(dir);
    for (auto it = prev_->lower_bound(dir + "/"); it != prev_->end() && it->first < dir + "0"; ++it) {
      ids_.insert(*it);
    }
  }

  static void AppendTreeId(std::string* out, const Digest256& id) {
    *out += ",\"tree\":\"" + id.Hex() + "\"";
  }

  const std::vector<FileEntry>& files_;
  const TreeIds* prev_;
  const std::set<std::string> changed_;
  TreeIds ids_;
  std::vector<TreeText> encoded_;
};

Status Fault(TreeFault* fault, const Digest256& id, bool missing, Status st) {
  if (fault != nullptr) *fault = TreeFault{id, missing};
  return st;
}

// One tree's text, parsed and checked: its name, its directory, its
// children's paths. Appends its entries to `files` and its subtrees to `todo`.
Status ReadOneTree(Env& env, const ObjectStore& objects, const Digest256& id,
                   const std::string& dir, std::vector<FileEntry>* files,
                   std::vector<std::pair<std::string, Digest256>>* todo, TreeFault* fault) {
  const std::string where = objects.PathOf(id);
  auto text = ReadFileToString(env, where, kMaxTreeBytes);
  if (!text.ok()) {
    const bool missing = text.status().code() == Code::kNotFound;
    return Fault(fault, id, missing, text.status().WithContext("generation tree"));
  }
  auto bad = [&](const std::string& what) {
    return Fault(fault, id, false, DataError("generation tree " + where + ": " + what));
  };
  if (Sha256Digest(*text) != id) return bad("not what its name says (SHA-256 mismatch)");
  auto j = internal::ParseJson(*text, where);
  if (!j.ok()) return bad(j.status().message());
  try {
    auto d = GetBytes(*j, "dir");
    if (!d.ok() || *d != dir) return bad("lists directory \"" + EscapeForTerminal(d.ok() ? *d : "") +
                                         "\", expected \"" + EscapeForTerminal(dir) + "\"");
    for (const nlohmann::json& e : j->at("entries")) {
      std::string path;
      if (e.value("implied", false)) {
        ASSIGN_OR_RETURN(path, GetBytes(e, "path"));
      } else {
        ASSIGN_OR_RETURN(FileEntry f, EntryFromJson(e));
        path = f.path;
        files->push_back(std::move(f));
      }
      if (Parent(path) != dir) return bad("entry \"" + EscapeForTerminal(path) + "\" is not a child");
      if (e.contains("tree")) {
        auto sub = Digest256::FromHex(e["tree"].get<std::string>());
        if (!sub) return bad("bad tree id for \"" + EscapeForTerminal(path) + "\"");
        todo->emplace_back(path, *sub);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  return Status::Ok();
}

}  // namespace

BuiltTrees BuildTrees(const std::vector<FileEntry>& files, const std::vector<FileEntry>* prev_files,
                      const TreeIds* prev_ids) {
  const bool incremental = prev_files != nullptr && prev_ids != nullptr;
  Builder b(files, incremental ? prev_ids : nullptr,
            incremental ? ChangedDirs(*prev_files, files) : std::set<std::string>());
  const Digest256 root = b.Build("");
  return b.Finish(root);
}

Status ReadTrees(Env& env, const ObjectStore& objects, const Digest256& root,
                 std::vector<FileEntry>* files, TreeIds* ids, TreeFault* fault) {
  files->clear();
  ids->clear();
  std::vector<std::pair<std::string, Digest256>> todo{{"", root}};
  while (!todo.empty()) {
    auto [dir, id] = std::move(todo.back());
    todo.pop_back();
    if (!ids->emplace(dir, id).second) {
      return Fault(fault, id, false, DataError("generation tree " + objects.PathOf(id) +
                                                   ": directory \"" + EscapeForTerminal(dir) +
                                                   "\" listed twice"));
    }
    RETURN_IF_ERROR(ReadOneTree(env, objects, id, dir, files, &todo, fault));
  }
  std::sort(files->begin(), files->end(),
            [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; });
  for (size_t k = 1; k < files->size(); ++k) {
    if ((*files)[k - 1].path == (*files)[k].path) {
      return Fault(fault, root, false,
                   DataError("generation tree " + objects.PathOf(root) + ": \"" +
                             EscapeForTerminal((*files)[k].path) + "\" listed twice"));
    }
  }
  return Status::Ok();
}

}  // namespace lifeboat::catalog
