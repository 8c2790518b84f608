// sd_notify(3) without libsystemd: sends a state string ("READY=1",
// "STOPPING=1", "STATUS=...") as one datagram to the unix socket named by
// $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace). Not under
// systemd (no $NOTIFY_SOCKET) it does nothing and returns OK. Thread-safe.
#ifndef LIFEBOAT_AGENT_SD_NOTIFY_H_
#define LIFEBOAT_AGENT_SD_NOTIFY_H_

#include <string_view>

#include "base/status.h"

namespace lifeboat::agent {

Status SdNotify(std::string_view state);

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_SD_NOTIFY_H_
