// An rpc::Connection (one DEALER) joined to an asio io_context through ZMQ_FD.
//
// ZMQ_FD is edge-triggered and a send or receive can consume the edge, so after
// every wake-up and after every call sent this re-reads ZMQ_EVENTS and drains
// until nothing is pending; only then does it wait on the fd again. Without the
// re-check after a send, a reply that arrived during the send leaves the fd
// unreadable with POLLIN set, and the worker stalls for good (DESIGN.md §3).
// Owned by one io_context thread; never blocks it.
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "asio_types.h"
#include "zmesh/rpc/client.h"

namespace zmesh::gateway {

class AsioConnection {
 public:
  AsioConnection(boost::asio::io_context& io, zmq::context_t& context, std::string endpoint,
                 rpc::ConnectionOptions options);
  // Releases the fds from asio before libzmq closes them (asio closing
  // libzmq's eventfd aborts the process), then fails calls in flight.
  ~AsioConnection();
  AsioConnection(const AsioConnection&) = delete;
  AsioConnection& operator=(const AsioConnection&) = delete;

  // `done` runs later on this io_context's thread (never inside call()).
  void call(uint64_t interfaceId, uint16_t methodId, zmq::message_t params,
            rpc::CallOptions options, rpc::ReplyCallback done);

  const rpc::ConnectionCounters& counters() const { return connection_.counters(); }
  const std::string& endpoint() const { return connection_.endpoint(); }

 private:
  struct Watch;
  void schedulePump();
  void pump();
  void sendPending();
  void arm();

  struct Pending {
    uint64_t interfaceId;
    uint16_t methodId;
    zmq::message_t params;
    rpc::CallOptions options;
    rpc::ReplyCallback done;
  };

  boost::asio::io_context& io_;
  rpc::Connection connection_;
  // Calls made during this turn of the io_context, sent together by the next
  // pump: one wake-up of libzmq's I/O thread (and one TCP write) for many.
  std::vector<Pending> pending_;
  std::vector<Pending> sending_;  // pending_'s previous buffer, kept for its capacity
  std::vector<std::unique_ptr<Watch>> watches_;
  Timer timer_;
  bool timerArmed_ = false;
  rpc::Clock::time_point timerAt_;
  bool pumpScheduled_ = false;
  // The next pump runs process() without asking ZMQ_EVENTS first: an fd or
  // the timer fired, or the last pump stopped at its round limit.
  bool due_ = false;
  // Handlers hold a weak copy: a handler that outlives this object does nothing.
  std::shared_ptr<AsioConnection*> alive_;
};

}  // namespace zmesh::gateway
