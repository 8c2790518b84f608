#include "catalog/internal/view_prefill.h"

#include <algorithm>
#include <utility>

#include "base/log.h"
#include "catalog/checkout.h"

namespace lifeboat::catalog::internal {

using syncproto::EntryKind;
using syncproto::FileEntry;

ViewPrefill::ViewPrefill(Env& env, const ObjectStore& objects, std::string staged_dir,
                         std::vector<Digest256> staged, std::vector<View> views)
    : env_(env),
      objects_(objects),
      staged_dir_(std::move(staged_dir)),
      staged_(std::move(staged)),
      views_(std::move(views)),
      filled_(views_.size(), false) {
  thread_ = std::thread([this] { Run(); });
}

ViewPrefill::~ViewPrefill() { Join(); }

void ViewPrefill::Join() {
  if (thread_.joinable()) thread_.join();
}

void ViewPrefill::Run() {
  const ObjectPathFn path_of = [this](const Digest256& id) {
    return std::binary_search(staged_.begin(), staged_.end(), id)
               ? ObjectStore::StagedPath(staged_dir_, id)
               : objects_.PathOf(id);
  };
  for (size_t i = 0; i < views_.size(); ++i) {
    Status st = FillCheckout(env_, path_of, *views_[i].entries, views_[i].skeleton);
    filled_[i] = st.ok();
    if (!st.ok()) {
      log::Info("catalog: a new view is built after the commit instead",
                {{"view", views_[i].skeleton}, {"error", st.message()}});
    }
  }
}

Status ViewPrefill::Relink(Env& env, const ObjectStore& objects,
                           const std::vector<FileEntry>& entries,
                           const std::vector<Digest256>& not_adopted, const std::string& skeleton) {
  if (not_adopted.empty()) return Status::Ok();
  for (const FileEntry& e : entries) {
    if (e.kind != EntryKind::kFile ||
        !std::binary_search(not_adopted.begin(), not_adopted.end(), e.sha256)) {
      continue;
    }
    const std::string path = skeleton + "/" + e.path;
    RETURN_IF_ERROR(env.RemoveFile(path));
    RETURN_IF_ERROR(env.Link(objects.PathOf(e.sha256), path));
  }
  return Status::Ok();
}

}  // namespace lifeboat::catalog::internal
