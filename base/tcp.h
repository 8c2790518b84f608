// Blocking-style TCP client connects for the command line and the restore
// probes (the agent's own connections go through libuv: agent/connection.h).
#ifndef LIFEBOAT_BASE_TCP_H_
#define LIFEBOAT_BASE_TCP_H_

#include <cstdint>
#include <string>

#include "base/status.h"

namespace lifeboat {

// "host:port", IPv6 hosts bracketed ("[::1]:4650").
std::string FormatHostPort(const std::string& host, uint16_t port);

// Resolves `host` and connects to the first of its addresses that accepts
// within `timeout_ms` (each address gets the time that is left). Returns a
// connected, non-blocking, close-on-exec socket the caller owns. Errors name
// host:port: kUnavailable when it does not resolve or refuses, kTemporary
// when it timed out.
Result<int> ConnectTcp(const std::string& host, uint16_t port, int64_t timeout_ms);

}  // namespace lifeboat

#endif  // LIFEBOAT_BASE_TCP_H_
