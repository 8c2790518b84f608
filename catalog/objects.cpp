#include "catalog/objects.h"

namespace lifeboat::catalog {

std::string ObjectStore::PathOf(const Digest256& id) const {
  const std::string hex = id.Hex();
  return dir_ + "/" + hex.substr(0, 2) + "/" + hex.substr(2);
}

bool ObjectStore::Has(const Digest256& id) const {
  auto st = env_.Stat(PathOf(id));
  return st.ok() && st->type == FileType::kRegular;
}

Status ObjectStore::Adopt(const std::string& staged, const Digest256& id,
                          std::set<std::string>* changed_dirs, bool* was_held) {
  const std::string path = PathOf(id);
  const std::string fan = DirName(path);
  const bool held = Has(id);
  if (was_held != nullptr) *was_held = held;
  if (held) return env_.RemoveFile(staged);
  auto st = env_.Stat(fan);
  if (!st.ok()) {
    if (st.status().code() != Code::kNotFound) return st.status();
    RETURN_IF_ERROR(env_.MakeDir(fan, 0700));
    changed_dirs->insert(dir_);
  } else if (st->type != FileType::kDirectory) {
    return DataError("refusing to store object " + id.Hex() + ": " + fan + " is not a directory");
  }
  RETURN_IF_ERROR(env_.Rename(staged, path));
  changed_dirs->insert(fan);
  return Status::Ok();
}

std::string ObjectStore::StagedPath(const std::string& staged_dir, const Digest256& id) {
  const std::string hex = id.Hex();
  return staged_dir + "/" + hex.substr(0, 2) + "/" + hex.substr(2);
}

Status ObjectStore::AdoptStaged(const std::string& staged_dir, const std::vector<Digest256>& ids,
                                std::set<std::string>* changed_dirs,
                                std::vector<Digest256>* already_held) {
  std::map<std::string, std::vector<Digest256>> by_fan;  // "ab" -> its objects
  for (const Digest256& id : ids) by_fan[id.Hex().substr(0, 2)].push_back(id);
  for (const auto& [fan, fan_ids] : by_fan) {
    const std::string path = dir_ + "/" + fan;
    const std::string staged_fan = staged_dir + "/" + fan;
    auto st = env_.Stat(path);
    if (!st.ok() && st.status().code() != Code::kNotFound) return st.status();
    if (!st.ok() && HoldsExactly(staged_fan, fan_ids)) {
      RETURN_IF_ERROR(env_.Rename(staged_fan, path));
      changed_dirs->insert(dir_);
      changed_dirs->insert(path);
      continue;
    }
    for (const Digest256& id : fan_ids) {
      bool held = false;
      RETURN_IF_ERROR(Adopt(StagedPath(staged_dir, id), id, changed_dirs, &held));
      if (held && already_held != nullptr) already_held->push_back(id);
    }
  }
  return Status::Ok();
}

// True when directory `staged_fan` holds regular files named after `ids`
// (their last 62 hex) and nothing else.
bool ObjectStore::HoldsExactly(const std::string& staged_fan, const std::vector<Digest256>& ids) {
  auto names = env_.ListDir(staged_fan);
  if (!names.ok() || names->size() != ids.size()) return false;
  std::set<std::string> want;
  for (const Digest256& id : ids) want.insert(id.Hex().substr(2));
  for (const DirEntry& e : *names) {
    FileType type = e.type;
    if (type == FileType::kOther) {  // the filesystem did not say (d_type unknown)
      auto st = env_.Stat(staged_fan + "/" + e.name);
      if (!st.ok()) return false;
      type = st->type;
    }
    if (type != FileType::kRegular || !want.erase(e.name)) return false;
  }
  return want.empty();
}

namespace {

// <2 hex>: the name of a fan-out directory (the hex of Digest256::Hex).
bool IsFanOutName(std::string_view name) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
  return name.size() == 2 && hex(name[0]) && hex(name[1]);
}

}  // namespace

Result<ObjectStore::Listing> ObjectStore::List() const {
  Listing out;
  auto fans = env_.ListDir(dir_);
  if (!fans.ok()) {
    if (fans.status().code() == Code::kNotFound) return out;
    return fans.status();
  }
  for (const DirEntry& fan : *fans) {
    const std::string fan_dir = dir_ + "/" + fan.name;
    if (!IsFanOutName(fan.name) || !IsDirectory(env_, fan_dir)) {
      out.strays.push_back(fan_dir);
      continue;
    }
    auto names = env_.ListDir(fan_dir);
    if (!names.ok()) continue;
    for (const DirEntry& e : *names) {
      const std::string name = fan.name + e.name;
      if (auto id = Digest256::FromHex(name); id && id->Hex() == name) {
        out.ids.push_back(*id);
      } else {
        out.strays.push_back(fan_dir + "/" + e.name);
      }
    }
  }
  return out;
}

void ObjectRefs::Add(const std::vector<Digest256>& ids) {
  for (const Digest256& id : ids) ++counts_[id];
}

void ObjectRefs::AddTree(const Digest256& id, const std::vector<Digest256>& children) {
  if (!trees_.emplace(id, children).second) return;
  Add(children);
}

void ObjectRefs::Release(const std::vector<Digest256>& ids, std::vector<Digest256>* freed) {
  std::vector<Digest256> todo(ids.rbegin(), ids.rend());  // a stack: no recursion per level
  while (!todo.empty()) {
    const Digest256 id = todo.back();
    todo.pop_back();
    auto it = counts_.find(id);
    if (it == counts_.end()) continue;
    if (--it->second != 0) continue;
    counts_.erase(it);
    freed->push_back(id);
    if (auto tree = trees_.find(id); tree != trees_.end()) {
      todo.insert(todo.end(), tree->second.rbegin(), tree->second.rend());
      trees_.erase(tree);
    }
  }
}

uint32_t ObjectRefs::Count(const Digest256& id) const {
  auto it = counts_.find(id);
  return it == counts_.end() ? 0 : it->second;
}

}  // namespace lifeboat::catalog
