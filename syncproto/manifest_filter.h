// Which part of an export a manifest answer carries for a puller's
// `services` selection (MANIFEST_REQUEST, docs/syncproto.md). One rule for
// both things a node serves: its own export (exports/exporter.h) and the
// copy it holds of a peer (catalog/held_export.h).
//
// For a selection of some services, an answer carries:
//   - the instances of those services, and every file of theirs
//     (vms/<uuid>.json, sapi/<uuid>.json, datasets/<uuid>/...);
//   - the images of their origin chains, and those images' files;
//   - every path that belongs to no instance and no image
//     (sapi/application.json, sapi/services/<service>.json), as is.
// A selection of every service (empty, or holding "*") takes the export
// whole.
#ifndef LIFEBOAT_SYNCPROTO_MANIFEST_FILTER_H_
#define LIFEBOAT_SYNCPROTO_MANIFEST_FILTER_H_

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "syncproto/manifest.h"

namespace lifeboat::syncproto {

// A `services` selection (`export.services`, a MANIFEST_REQUEST's list):
// empty or containing "*" selects every service.
class ServiceFilter {
 public:
  ServiceFilter() = default;
  explicit ServiceFilter(std::vector<std::string> services);
  bool all() const { return all_; }
  bool Matches(const std::string& service) const;
  const std::vector<std::string>& services() const { return services_; }

 private:
  bool all_ = true;
  std::vector<std::string> services_;  // sorted, without "*"
};

// The rule above applied to one export's instance and image lists.
class ManifestSelection {
 public:
  ManifestSelection(const ServiceFilter& filter, const std::vector<InstanceInfo>& instances,
                    const std::vector<ImageInfo>& images);

  // The selected instances and images, in the order of the lists given.
  const std::vector<InstanceInfo>& instances() const { return instances_; }
  const std::vector<ImageInfo>& images() const { return images_; }

  // Whether the answer carries the file or directory at export path `path`.
  bool Includes(std::string_view path) const;

 private:
  bool all_;
  std::vector<InstanceInfo> instances_;
  std::vector<ImageInfo> images_;
  std::set<std::string, std::less<>> instance_uuids_, image_uuids_;
};

}  // namespace lifeboat::syncproto

#endif  // LIFEBOAT_SYNCPROTO_MANIFEST_FILTER_H_
