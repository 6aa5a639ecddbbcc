#include "broker.h"

#include <algorithm>
#include <zmq_addon.hpp>

#include "zmesh/rpc/events.h"

namespace zmesh::broker {

Broker::Broker(zmq::context_t& context, rpc::Server& server, BrokerOptions options)
    : options_(std::move(options)),
      xsub_(context, zmq::socket_type::xsub),
      xpub_(context, zmq::socket_type::xpub) {
  for (auto* s : {&xsub_, &xpub_}) {
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::sndhwm, options_.hwm);
    s->set(zmq::sockopt::rcvhwm, options_.hwm);
  }
  // libzmq drops the connection of a peer sending more: events past what every
  // subscriber would refuse anyway, subscriptions past any sane topic prefix.
  xsub_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(rpc::Subscriber::kMaxEventBytes));
  xpub_.set(zmq::sockopt::maxmsgsize, int64_t{64 << 10});
  try {
    xsub_.bind(options_.xsub);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("broker: cannot bind xsub " + options_.xsub + ": " + e.what());
  }
  try {
    xpub_.bind(options_.xpub);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("broker: cannot bind xpub " + options_.xpub + ": " + e.what());
  }
  server.watchSocket(xsub_, [this] { forwardEvents(); });
  server.watchSocket(xpub_, [this] { forwardSubscriptions(); });
  server.stats().add([this](rpc::MetricsOut& out) {
    // kMaxCountedServices prefixes at most (then "_other"), under MetricsOut's cap.
    auto messages = out.family("broker.messages", rpc::MetricKind::kCounter,
                               "Events forwarded, by topic prefix", {"topic_prefix"});
    auto bytes = out.family("broker.bytes", rpc::MetricKind::kCounter,
                            "Event bytes forwarded, by topic prefix", {"topic_prefix"});
    for (auto& [service, counts] : perService_) {
      messages.sample({service}, static_cast<double>(counts.first));
      bytes.sample({service}, static_cast<double>(counts.second));
    }
    out.counter("broker.subscriptions", "Subscriptions forwarded to publishers",
                static_cast<double>(subscriptions_));
    out.counter("broker.unsubscriptions", "Unsubscriptions forwarded to publishers",
                static_cast<double>(unsubscriptions_));
    out.counter("broker.malformed", "Messages dropped: not an event",
                static_cast<double>(malformed_));
  });
}

std::string_view topicPrefixLabel(std::string_view topic) {
  auto prefix = topic.substr(0, topic.find('.'));
  // Publishers are not trusted to send text: the label must stay valid UTF-8
  // and short whatever the bytes.
  bool plain = !prefix.empty() && prefix.size() <= 32 &&
               std::all_of(prefix.begin(), prefix.end(), [](char c) {
                 return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
               });
  return plain ? prefix : kInvalidPrefix;
}

std::string Broker::xsubEndpoint() { return xsub_.get(zmq::sockopt::last_endpoint); }
std::string Broker::xpubEndpoint() { return xpub_.get(zmq::sockopt::last_endpoint); }

void Broker::forwardEvents() {
  std::vector<zmq::message_t> frames;
  // Bounded, so a flood of events cannot starve the Admin socket on the same loop.
  for (int i = 0; i < 4096; ++i) {
    frames.clear();
    if (!zmq::recv_multipart(xsub_, std::back_inserter(frames), zmq::recv_flags::dontwait)) return;
    if (frames.empty()) continue;
    std::string_view topic(static_cast<const char*>(frames[0].data()), frames[0].size());
    auto it = perService_.find(topicPrefixLabel(topic));
    if (it == perService_.end()) {
      std::string_view label = topicPrefixLabel(topic);
      if (perService_.size() >= kMaxCountedServices) label = rpc::MetricsOut::kOther;
      it = perService_.try_emplace(std::string(label), 0, 0).first;
    }
    ++it->second.first;
    for (auto& f : frames) it->second.second += f.size();
    // XPUB never blocks: a subscriber at its high-water mark loses this message
    // and sees the gap in the sequence numbers.
    zmq::send_multipart(xpub_, frames, zmq::send_flags::dontwait);
  }
}

void Broker::forwardSubscriptions() {
  for (int i = 0; i < 4096; ++i) {
    zmq::message_t m;
    if (!xpub_.recv(m, zmq::recv_flags::dontwait)) return;
    if (m.size() == 0) {
      ++malformed_;
      continue;
    }
    auto first = static_cast<const uint8_t*>(m.data())[0];
    if (first == 1)
      ++subscriptions_;
    else if (first == 0)
      ++unsubscriptions_;
    xsub_.send(m, zmq::send_flags::dontwait);
  }
}

}  // namespace zmesh::broker
