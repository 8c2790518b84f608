#include "syncproto/manifest_filter.h"

#include <algorithm>
#include <map>

namespace lifeboat::syncproto {

ServiceFilter::ServiceFilter(std::vector<std::string> services) {
  all_ = services.empty();
  for (std::string& s : services) {
    if (s == "*") {
      all_ = true;
    } else {
      services_.push_back(std::move(s));
    }
  }
  std::sort(services_.begin(), services_.end());
  services_.erase(std::unique(services_.begin(), services_.end()), services_.end());
  if (all_) services_.clear();
}

bool ServiceFilter::Matches(const std::string& service) const {
  return all_ || std::binary_search(services_.begin(), services_.end(), service);
}

ManifestSelection::ManifestSelection(const ServiceFilter& filter,
                                     const std::vector<InstanceInfo>& instances,
                                     const std::vector<ImageInfo>& images)
    : all_(filter.all()) {
  if (all_) {
    instances_ = instances;
    images_ = images;
    return;
  }
  std::map<std::string, std::string, std::less<>> origin;
  for (const ImageInfo& i : images) origin.emplace(i.uuid, i.origin);
  for (const InstanceInfo& i : instances) {
    if (!filter.Matches(i.service)) continue;
    instances_.push_back(i);
    instance_uuids_.insert(i.uuid);
    // Walk the chain while it is unseen (a cycle stops at its first repeat).
    for (std::string img = i.image_uuid; !img.empty() && image_uuids_.insert(img).second;) {
      auto it = origin.find(img);
      img = it == origin.end() ? "" : it->second;
    }
  }
  for (const ImageInfo& i : images) {
    if (image_uuids_.count(i.uuid)) images_.push_back(i);
  }
}

bool ManifestSelection::Includes(std::string_view path) const {
  if (all_) return true;
  const std::string inst = InstanceOfPath(path);
  if (!inst.empty()) return instance_uuids_.count(inst) > 0;
  constexpr std::string_view kImages = "images/";
  if (path.starts_with(kImages)) {
    const std::string_view rest = path.substr(kImages.size());
    return image_uuids_.count(rest.substr(0, rest.find('/'))) > 0;
  }
  return true;
}

}  // namespace lifeboat::syncproto
