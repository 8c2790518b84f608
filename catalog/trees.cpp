// Generation trees (trees.h): building them in O(changed directories) and
// reading them back, each checked against its name.
#include "catalog/trees.h"

#include <algorithm>
#include <set>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/text.h"
#include "catalog/internal/store_impl.h"

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

// Index of the first entry at or after `from` whose path is not below `key`
// (bytewise).
size_t LowerBound(const std::vector<FileEntry>& files, std::string_view key, size_t from = 0) {
  auto it = std::lower_bound(files.begin() + static_cast<std::ptrdiff_t>(from), files.end(), key,
                             [](const FileEntry& f, std::string_view k) { return f.path < k; });
  return static_cast<size_t>(it - files.begin());
}

// Directories whose subtree differs: the parents of every changed path, and
// theirs up to the top ("").
std::set<std::string> ChangedDirs(const std::vector<std::string>& changed) {
  std::set<std::string> dirs;
  for (const std::string& path : changed) {
    for (std::string_view d = Parent(path);; d = Parent(d)) {
      if (!dirs.emplace(d).second || d.empty()) break;  // its ancestors are marked already
    }
  }
  return dirs;
}

class Builder {
 public:
  Builder(const std::vector<FileEntry>& files, const TreeIds* prev, std::set<std::string> changed,
          TreeShape shape)
      : files_(files), prev_(prev), changed_(std::move(changed)), shape_(shape) {}

  // The members of `dir`'s tree ("" for the top) as a JSON array: every
  // entry below `dir` with no entry between them, and every entry below a
  // member directory listed inline (TreeShape); any other member with
  // descendants carries the id of its own tree (built, or kept). Each
  // member's object (a file's, a subtree's) is appended to `children`.
  std::string Members(const std::string& dir, std::vector<Digest256>* children) {
    const std::string prefix = Prefix(dir);
    std::string text = "[";
    bool first = true;
    const size_t end =
        dir.empty() ? files_.size() : LowerBound(files_, dir + "0");  // '0' follows '/'
    // [first, end) of each member's descendants not reached yet, the
    // nearest last: a member's descendants follow its siblings that sort
    // between them ("d-x" < "d/f"), whose own descendants come first.
    std::vector<std::pair<size_t, size_t>> below;
    std::set<std::string, std::less<>> inlined;  // member directories listed inline
    size_t lines = 0;  // this tree's lines: its direct members and its inlined subtrees
    for (size_t i = dir.empty() ? 0 : LowerBound(files_, prefix); i < end;) {
      if (!below.empty() && i >= below.back().first) {
        i = std::max(i, below.back().second);
        below.pop_back();
        continue;
      }
      const FileEntry& f = files_[i];
      const size_t owner = AncestorEntry(f.path, prefix.size());
      const bool in_inlined =
          owner != 0 && inlined.count(std::string_view(f.path).substr(0, owner)) != 0;
      if (owner != 0 && !in_inlined) {
        // Below member f.path[0, owner), listed before its subtree: skip that.
        i = LowerBound(files_, f.path.substr(0, owner) + "0");
        continue;
      }
      text += first ? "\n" : ",\n";
      first = false;
      AppendEntry(&text, f);
      if (!in_inlined) ++lines;
      if (f.kind == syncproto::EntryKind::kFile) children->push_back(f.sha256);
      const std::string sub = f.path + "/";
      const size_t first_below = LowerBound(files_, sub, i + 1);
      if (!in_inlined && first_below < files_.size() && files_[first_below].path.starts_with(sub)) {
        // A directory (of any kind, were a peer to send that).
        const size_t end_below = LowerBound(files_, f.path + "0", first_below);
        const size_t n = end_below - first_below;
        if (n < shape_.inline_below && lines + n <= shape_.max_inline_lines) {
          inlined.insert(f.path);  // its descendants follow as members
          lines += n;
        } else {
          text.pop_back();  // the entry's closing brace
          const Digest256 tree = Tree(f.path);
          children->push_back(tree);
          text += ",\"tree\":\"" + tree.Hex() + "\"}";
          below.emplace_back(first_below, end_below);
        }
      }
      ++i;
    }
    text += first ? "]" : "\n]";
    return text;
  }

  BuiltTrees Finish(std::string top, std::vector<Digest256> top_ids) {
    return BuiltTrees{std::move(top), std::make_shared<const TreeIds>(std::move(ids_)),
                      std::move(encoded_), std::move(top_ids)};
  }

 private:
  // The id of the tree of member `dir`: the previous one when its subtree
  // is unchanged (its descendants' ids copied along), else encoded.
  Digest256 Tree(const std::string& dir) {
    if (prev_ != nullptr && !changed_.count(dir)) {
      if (auto it = prev_->find(dir); it != prev_->end()) {
        KeepSubtree(dir);
        return it->second;
      }
    }
    std::string text = "{\"lifeboat_tree\":1";
    AppendBytes(&text, "dir", dir);
    std::vector<Digest256> children;
    text += ",\"entries\":" + Members(dir, &children) + "}\n";
    const Digest256 id = Sha256Digest(text);
    ids_[dir] = id;
    encoded_.push_back(TreeText{id, std::move(text), std::move(children)});
    return id;
  }

  // The length of the shortest ancestor of `path` that is an entry and
  // longer than `from` bytes (the tree's prefix), or 0 when there is none.
  size_t AncestorEntry(const std::string& path, size_t from) const {
    for (size_t slash = path.find('/', from); slash != std::string::npos;
         slash = path.find('/', slash + 1)) {
      const std::string_view a = std::string_view(path).substr(0, slash);
      const size_t k = LowerBound(files_, a);
      if (k < files_.size() && files_[k].path == a) return slash;
    }
    return 0;
  }

  // Copies the ids of `dir` and every tree below it from prev_.
  void KeepSubtree(const std::string& dir) {
    ids_[dir] = prev_->at(dir);
    for (auto it = prev_->lower_bound(dir + "/"); it != prev_->end() && it->first < dir + "0";
         ++it) {
      ids_.insert(*it);
    }
  }

  const std::vector<FileEntry>& files_;
  const TreeIds* prev_;
  const std::set<std::string> changed_;
  const TreeShape shape_;
  TreeIds ids_;
  std::vector<TreeText> encoded_;
};

Status Fault(TreeFault* fault, const Digest256& id, bool missing, Status st) {
  if (fault != nullptr) *fault = TreeFault{id, missing};
  return st;
}

using Todo = std::vector<std::pair<std::string, Digest256>>;

// The members of the tree of `dir` (a parsed JSON array), each checked to be
// below it: appended to `files`, their subtrees to `todo`. `bad(what)` makes
// the error of a problem.
template <typename Bad>
Status ReadMembers(const nlohmann::json& members, const std::string& dir,
                   std::vector<FileEntry>* files, Todo* todo, const Bad& bad) {
  const std::string prefix = Prefix(dir);
  try {
    for (const nlohmann::json& e : members) {
      ASSIGN_OR_RETURN(FileEntry f, EntryFromJson(e));
      if (!f.path.starts_with(prefix) || f.path.size() == prefix.size()) {
        return bad("entry \"" + EscapeForTerminal(f.path) + "\" is not below it");
      }
      if (e.contains("tree")) {
        auto sub = Digest256::FromHex(e["tree"].get<std::string>());
        if (!sub) return bad("bad tree id for \"" + EscapeForTerminal(f.path) + "\"");
        todo->emplace_back(f.path, *sub);
      }
      files->push_back(std::move(f));
    }
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  return Status::Ok();
}

// One tree object, checked against its name and its directory: its
// members appended to `files`, its subtrees to `todo`. Taken from `cache`
// when there (else added to it when given).
Status ReadOneTree(Env& env, const ObjectStore& objects, const Digest256& id,
                   const std::string& dir, std::vector<FileEntry>* files, Todo* todo,
                   TreeFault* fault, TreeCache* cache) {
  const std::string where = objects.PathOf(id);
  auto bad = [&](const std::string& what) {
    return Fault(fault, id, false, DataError("generation tree " + where + ": " + what));
  };
  auto wrong_dir = [&](const std::string& listed) {
    return bad("lists directory \"" + EscapeForTerminal(listed) + "\", expected \"" +
               EscapeForTerminal(dir) + "\"");
  };
  if (cache != nullptr) {
    if (auto hit = cache->trees.find(id); hit != cache->trees.end()) {
      const TreeCache::Tree& t = hit->second;
      if (t.dir != dir) return wrong_dir(t.dir);
      files->insert(files->end(), t.members.begin(), t.members.end());
      todo->insert(todo->end(), t.subtrees.begin(), t.subtrees.end());
      return Status::Ok();
    }
  }
  auto text = ReadFileToString(env, where, kMaxTreeBytes);
  if (!text.ok()) {
    const bool missing = text.status().code() == Code::kNotFound;
    return Fault(fault, id, missing, text.status().WithContext("generation tree"));
  }
  if (Sha256Digest(*text) != id) return bad("not what its name says (SHA-256 mismatch)");
  auto j = ParseJson(*text, where);
  if (!j.ok()) return bad(j.status().message());
  auto d = GetBytes(*j, "dir");
  if (!d.ok() || *d != dir) return wrong_dir(d.ok() ? *d : "");
  if (!j->contains("entries")) return bad("no entries");
  if (cache == nullptr) return ReadMembers((*j)["entries"], dir, files, todo, bad);
  TreeCache::Tree t;
  t.dir = dir;
  RETURN_IF_ERROR(ReadMembers((*j)["entries"], dir, &t.members, &t.subtrees, bad));
  files->insert(files->end(), t.members.begin(), t.members.end());
  todo->insert(todo->end(), t.subtrees.begin(), t.subtrees.end());
  cache->trees.emplace(id, std::move(t));
  return Status::Ok();
}

}  // namespace

std::vector<std::string> ChangedPaths(const std::vector<FileEntry>& a,
                                      const std::vector<FileEntry>& b) {
  std::vector<std::string> changed;
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    if (j == b.size() || (i < a.size() && a[i].path < b[j].path)) {
      changed.push_back(a[i++].path);
    } else if (i == a.size() || b[j].path < a[i].path) {
      changed.push_back(b[j++].path);
    } else {
      if (!(a[i] == b[j])) changed.push_back(a[i].path);
      ++i;
      ++j;
    }
  }
  return changed;
}

BuiltTrees BuildTrees(const std::vector<FileEntry>& files, const std::vector<std::string>* changed,
                      const TreeIds* prev_ids, TreeShape shape) {
  const bool incremental = changed != nullptr && prev_ids != nullptr;
  Builder b(files, incremental ? prev_ids : nullptr,
            incremental ? ChangedDirs(*changed) : std::set<std::string>(), shape);
  std::vector<Digest256> top_ids;
  std::string top = b.Members("", &top_ids);
  return b.Finish(std::move(top), std::move(top_ids));
}

Status ReadTrees(Env& env, const ObjectStore& objects, const nlohmann::json& top,
                 std::vector<FileEntry>* files, TreeIds* ids, TreeFault* fault, TreeCache* cache) {
  files->clear();
  ids->clear();
  Todo todo;
  RETURN_IF_ERROR(ReadMembers(top, "", files, &todo, [](const std::string& what) {
    return DataError("generation description: " + what);
  }));
  while (!todo.empty()) {
    auto [dir, id] = std::move(todo.back());
    todo.pop_back();
    if (!ids->emplace(dir, id).second) {
      return Fault(fault, id, false,
                   DataError("generation tree " + objects.PathOf(id) + ": directory \"" +
                             EscapeForTerminal(dir) + "\" listed twice"));
    }
    RETURN_IF_ERROR(ReadOneTree(env, objects, id, dir, files, &todo, fault, cache));
  }
  std::sort(files->begin(), files->end(),
            [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; });
  for (size_t k = 1; k < files->size(); ++k) {
    if ((*files)[k - 1].path == (*files)[k].path) {
      return DataError("generation trees list \"" + EscapeForTerminal((*files)[k].path) +
                       "\" twice");
    }
  }
  return Status::Ok();
}

}  // namespace lifeboat::catalog
