// The event bus: publishers connect to XSUB, subscribers to XPUB; the broker
// forwards messages one way and subscriptions the other, on the service loop.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "zmesh/rpc/server.h"

namespace zmesh::broker {

struct BrokerOptions {
  std::string xsub = "tcp://127.0.0.1:7101";
  std::string xpub = "tcp://127.0.0.1:7102";
  int hwm = 100000;  // per subscriber; beyond it ZeroMQ drops and subscribers see a gap
};

// Topic prefixes counted one by one in stats; events of any further prefix
// are counted together under "other", so invented topics add no series.
inline constexpr size_t kMaxCountedServices = 64;
// A topic's label in broker.messages/bytes: its first segment when that is
// [a-z0-9_-]{1,32}, else kInvalidPrefix.
inline constexpr std::string_view kInvalidPrefix = "_invalid";
std::string_view topicPrefixLabel(std::string_view topic);

class Broker {
 public:
  // Binds both sockets and joins them to `server`'s loop; counters go to its stats.
  Broker(zmq::context_t& context, rpc::Server& server, BrokerOptions options);
  std::string xsubEndpoint();
  std::string xpubEndpoint();

 private:
  void forwardEvents();
  void forwardSubscriptions();

  BrokerOptions options_;
  zmq::socket_t xsub_;
  zmq::socket_t xpub_;
  // Per topic prefix (the service part, "lock" of "lock.acquired"): messages,
  // bytes; at most kMaxCountedServices of them, then "_other".
  std::map<std::string, std::pair<uint64_t, uint64_t>, std::less<>> perService_;
  uint64_t subscriptions_ = 0;
  uint64_t unsubscriptions_ = 0;
  uint64_t malformed_ = 0;
};

}  // namespace zmesh::broker
