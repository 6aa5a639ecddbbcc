#include "zmq_asio.h"

#include <kj/common.h>

#include <boost/asio/post.hpp>
#include <utility>

namespace zmesh::gateway {

namespace asio = boost::asio;

struct AsioConnection::Watch {
  Watch(asio::io_context& io, int fd) : descriptor(io, fd) {}
  Descriptor descriptor;
  bool armed = false;
};

namespace {

// A turn of draining is bounded so HTTP sessions on the same thread get their
// turn; the rest continues in a posted handler (no new edge would come for it).
constexpr int kMaxRoundsPerTurn = 16;

}  // namespace

AsioConnection::AsioConnection(asio::io_context& io, zmq::context_t& context, std::string endpoint,
                               rpc::ConnectionOptions options)
    : io_(io),
      connection_(context, std::move(endpoint), options),
      timer_(io),
      alive_(std::make_shared<AsioConnection*>(this)) {
  for (int fd : connection_.fds()) watches_.push_back(std::make_unique<Watch>(io, fd));
  arm();
}

AsioConnection::~AsioConnection() {
  alive_.reset();
  // Calls not yet handed to the connection are failed like those in flight.
  for (auto& p : pending_)
    p.done(rpc::Reply({rpc::StatusCode::UNAVAILABLE, "the gateway is stopping"}, std::nullopt));
  pending_.clear();
  for (auto& watch : watches_) watch->descriptor.release();
  timer_.cancel();
}

void AsioConnection::call(uint64_t interfaceId, uint16_t methodId, zmq::message_t params,
                          rpc::CallOptions options, rpc::ReplyCallback done) {
  pending_.push_back(
      {interfaceId, methodId, std::move(params), std::move(options), std::move(done)});
  schedulePump();
}

void AsioConnection::sendPending() {
  // A failure the connection answers at once (bad options, fail-fast) runs
  // `done` here, inside pump(), never inside call(): the caller may not be ready.
  sending_.swap(pending_);  // a call made from a `done` below waits for the next pump
  // Emptied however the loop ends: a call moved from must never be sent again.
  KJ_DEFER(sending_.clear());
  for (auto& p : sending_)
    connection_.call(p.interfaceId, p.methodId, std::move(p.params), std::move(p.options),
                     std::move(p.done));
}

void AsioConnection::schedulePump() {
  if (pumpScheduled_) return;
  pumpScheduled_ = true;
  std::weak_ptr<AsioConnection*> alive = alive_;
  asio::post(io_, [alive] {
    if (auto self = alive.lock()) {
      (*self)->pumpScheduled_ = false;
      (*self)->pump();
    }
  });
}

void AsioConnection::pump() {
  sendPending();
  // A wake-up of the fd or the timer has work for process(). A pump that only
  // sent asks ZMQ_EVENTS first (a send can take the edge of a reply that
  // arrived meanwhile): one check, where process() costs a receive on each of
  // the connection's sockets, and with it a libzmq mailbox poll each.
  bool work = std::exchange(due_, false) || connection_.hasWork();
  for (int round = 0; work; ++round) {
    if (round == kMaxRoundsPerTurn) {
      due_ = true;
      schedulePump();
      return;
    }
    connection_.process();
    work = connection_.hasWork();
  }
  arm();
}

void AsioConnection::arm() {
  std::weak_ptr<AsioConnection*> alive = alive_;
  for (auto& watch : watches_) {
    if (watch->armed) continue;
    watch->armed = true;
    Watch* w = watch.get();
    w->descriptor.async_wait(Descriptor::wait_read,
                             [alive, w](const boost::system::error_code& ec) {
                               auto self = alive.lock();
                               if (!self) return;
                               w->armed = false;
                               if (ec) return;
                               // Posted, not run here: the HTTP handlers of this
                               // turn queue their calls first, and one pump sends
                               // them and drains the replies together.
                               (*self)->due_ = true;
                               (*self)->schedulePump();
                             });
  }
  // The timer moves only when the connection's next deadline comes before the
  // armed one: a wake-up that fires early just pumps and re-arms. Moving it on
  // every pump would cost a cancelled wait per request.
  auto next = connection_.nextTimer();
  if (!next || (timerArmed_ && timerAt_ <= *next)) return;
  timerArmed_ = true;
  timerAt_ = *next;
  timer_.expires_at(*next);
  timer_.async_wait([alive](const boost::system::error_code& ec) {
    if (ec == asio::error::operation_aborted) return;  // moved earlier, or closing
    auto self = alive.lock();
    if (!self) return;
    (*self)->timerArmed_ = false;
    (*self)->due_ = true;
    (*self)->pump();
  });
}

}  // namespace zmesh::gateway
