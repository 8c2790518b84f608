#include "restore/tree_copy.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace lifeboat::restore {
namespace {

struct Node {
  std::string rel;  // "" for the root
  FileStat st;
  std::string link_target;
};

Status Walk(Env& env, const std::string& root, const std::string& rel, std::vector<Node>& out) {
  std::string dir = rel.empty() ? root : JoinPath(root, rel);
  ASSIGN_OR_RETURN(auto entries, env.ListDir(dir));
  std::sort(entries.begin(), entries.end(),
            [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  for (const DirEntry& e : entries) {
    std::string child_rel = rel.empty() ? e.name : JoinPath(rel, e.name);
    std::string path = JoinPath(root, child_rel);
    ASSIGN_OR_RETURN(FileStat st, env.Stat(path));
    Node n{child_rel, st, ""};
    switch (st.type) {
      case FileType::kDirectory:
        out.push_back(n);
        RETURN_IF_ERROR(Walk(env, root, child_rel, out));
        break;
      case FileType::kSymlink: {
        ASSIGN_OR_RETURN(n.link_target, env.ReadLink(path));
        RETURN_IF_ERROR(CheckSymlinkInside(child_rel, n.link_target).WithContext(root));
        out.push_back(std::move(n));
        break;
      }
      case FileType::kRegular:
        out.push_back(std::move(n));
        break;
      case FileType::kOther:
        return DataError("cannot restore " + path + ": not a file, directory or symlink");
    }
  }
  return Status::Ok();
}

}  // namespace

Status CheckSymlinkInside(std::string_view rel_link_path, std::string_view target) {
  auto fail = [&](std::string_view why) {
    return DataError("symlink " + std::string(rel_link_path) + " -> " + std::string(target) + " " +
                     std::string(why));
  };
  if (target.empty()) return fail("has an empty target");
  if (target.find('\0') != std::string_view::npos) return fail("has a NUL byte in its target");
  if (target.front() == '/') return fail("points outside the instance (absolute target)");
  long depth = static_cast<long>(std::count(rel_link_path.begin(), rel_link_path.end(), '/'));
  size_t start = 0;
  while (start <= target.size()) {
    size_t slash = target.find('/', start);
    std::string_view part = target.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part == "..") {
      if (--depth < 0) return fail("points outside the instance (climbs above its root)");
    } else if (!part.empty() && part != ".") {
      ++depth;
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return Status::Ok();
}

Status ClearDir(Env& env, const std::string& dir) {
  ASSIGN_OR_RETURN(auto entries, env.ListDir(dir));
  for (const DirEntry& e : entries) RETURN_IF_ERROR(RemoveTree(env, JoinPath(dir, e.name)));
  return Status::Ok();
}

Result<CopyStats> CopyTree(Env& env, const std::string& from, const std::string& to,
                           const CopyOptions& options) {
  auto meta_of = [&](const std::string& rel, const FileStat& st) {
    if (options.meta != nullptr) {
      if (auto it = options.meta->find(rel); it != options.meta->end()) return it->second;
    }
    return EntryMeta{st.mode, st.mtime_ns, st.uid, st.gid, ""};
  };
  auto own = [&](const std::string& path, const EntryMeta& m) {
    return options.set_owners ? env.SetOwner(path, m.uid, m.gid) : Status::Ok();
  };
  ASSIGN_OR_RETURN(FileStat root_st, env.Stat(from));
  if (root_st.type != FileType::kDirectory) {
    return DataError("cannot restore " + from + ": not a directory");
  }
  std::vector<Node> nodes;
  RETURN_IF_ERROR(Walk(env, from, "", nodes));

  auto dst = env.Stat(to);
  if (dst.ok()) {
    if (dst->type != FileType::kDirectory)
      return IoError("restore into " + to + ": not a directory");
    ASSIGN_OR_RETURN(auto existing, env.ListDir(to));
    if (!existing.empty()) return IoError("restore into " + to + ": directory is not empty");
  } else if (dst.status().code() == Code::kNotFound) {
    RETURN_IF_ERROR(env.MakeDir(to, 0700));
  } else {
    return dst.status();
  }

  CopyStats stats;
  std::vector<const Node*> copies;
  std::vector<std::pair<const Node*, const Node*>> links;  // (link, first copy)
  std::map<std::pair<uint64_t, uint64_t>, const Node*> first_of_inode;
  std::map<std::string_view, const Node*> file_by_rel;
  for (const Node& n : nodes) {
    if (n.st.type == FileType::kRegular) file_by_rel.emplace(n.rel, &n);
  }
  // The copy a file is a hard link of, or null when it is copied itself.
  auto link_source = [&](const Node& n) -> const Node* {
    if (options.meta == nullptr) {
      if (n.st.nlink < 2) return nullptr;
      auto [it, inserted] = first_of_inode.emplace(std::make_pair(n.st.dev, n.st.ino), &n);
      return inserted ? nullptr : it->second;
    }
    const std::string of = meta_of(n.rel, n.st).hardlink_of;
    if (of.empty()) return nullptr;
    auto it = file_by_rel.find(of);
    if (it == file_by_rel.end() || it->second == &n || it->second->st.size != n.st.size ||
        !meta_of(it->second->rel, it->second->st).hardlink_of.empty()) {
      return nullptr;  // no such first copy: copy this one on its own
    }
    return it->second;
  };
  for (const Node& n : nodes) {
    std::string path = JoinPath(to, n.rel);
    switch (n.st.type) {
      case FileType::kDirectory:
        RETURN_IF_ERROR(env.MakeDir(path, 0700));
        ++stats.dirs;
        break;
      case FileType::kSymlink:
        RETURN_IF_ERROR(env.Symlink(n.link_target, path));
        RETURN_IF_ERROR(own(path, meta_of(n.rel, n.st)));
        RETURN_IF_ERROR(env.SetMtime(path, meta_of(n.rel, n.st).mtime_ns));
        ++stats.symlinks;
        break;
      case FileType::kRegular:
        if (const Node* first = link_source(n); first != nullptr) {
          links.emplace_back(&n, first);
        } else {
          copies.push_back(&n);
        }
        break;
      case FileType::kOther:
        break;
    }
  }

  // Biggest files first, so one large file does not start last.
  std::stable_sort(copies.begin(), copies.end(),
                   [](const Node* a, const Node* b) { return a->st.size > b->st.size; });
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  Status first_error;
  auto worker = [&] {
    for (;;) {
      size_t i = next.fetch_add(1);
      if (i >= copies.size() || failed.load()) return;
      const Node& n = *copies[i];
      std::string src = JoinPath(from, n.rel);
      std::string dst_path = JoinPath(to, n.rel);
      const EntryMeta m = meta_of(n.rel, n.st);
      Status st = env.CopyFile(src, dst_path, m.mode);
      // chown clears set-id bits: owner first. CopyFile's mode passes
      // through the umask: set it exactly.
      if (st.ok()) st = own(dst_path, m);
      if (st.ok()) st = env.SetMode(dst_path, m.mode);
      if (st.ok()) st = env.SetMtime(dst_path, m.mtime_ns);
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (!failed.exchange(true)) first_error = st;
      }
    }
  };
  int threads = std::clamp(options.threads, 1, 64);
  threads = static_cast<int>(std::min<size_t>(static_cast<size_t>(threads), copies.size()));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
  if (failed.load()) return first_error;
  for (const Node* n : copies) {
    ++stats.files;
    stats.bytes += n->st.size;
  }

  for (const auto& [link, first] : links) {
    RETURN_IF_ERROR(env.Link(JoinPath(to, first->rel), JoinPath(to, link->rel)));
    ++stats.hardlinks;
  }
  // Directory modes and mtimes last (creating entries changes a directory's
  // mtime), deepest first so a read-only directory is filled before it closes.
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    if (it->st.type != FileType::kDirectory) continue;
    std::string path = JoinPath(to, it->rel);
    const EntryMeta m = meta_of(it->rel, it->st);
    RETURN_IF_ERROR(own(path, m));
    RETURN_IF_ERROR(env.SetMode(path, m.mode));
    RETURN_IF_ERROR(env.SetMtime(path, m.mtime_ns));
  }
  const EntryMeta root_meta = meta_of("", root_st);
  RETURN_IF_ERROR(own(to, root_meta));
  RETURN_IF_ERROR(env.SetMode(to, root_meta.mode));
  RETURN_IF_ERROR(env.SetMtime(to, root_meta.mtime_ns));
  return stats;
}

}  // namespace lifeboat::restore
