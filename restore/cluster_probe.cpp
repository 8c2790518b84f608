#include "restore/cluster_probe.h"

#include <unistd.h>

#include "base/tcp.h"

namespace lifeboat::restore {

std::string NodeAddress::ToString() const { return FormatHostPort(host, port); }

bool TcpConnects(const NodeAddress& addr, int timeout_ms) {
  Result<int> fd = ConnectTcp(addr.host, addr.port, timeout_ms);
  if (!fd.ok()) return false;
  ::close(*fd);
  return true;
}

}  // namespace lifeboat::restore
