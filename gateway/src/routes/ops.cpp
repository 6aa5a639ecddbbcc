// Operations routes: /healthz, /readyz, /metrics, /openapi.json (API.md).
#include <boost/asio/post.hpp>
#include <boost/json.hpp>
#include <mutex>

#include "asio_types.h"
#include "exchange.h"
#include "gateway.h"
#include "openapi_json.h"
#include "routes/routes.h"
#include "zmesh/idl/admin.capnp.h"

namespace zmesh::gateway {

namespace {

using idl::Admin;

uint16_t adminMethod(const char* name) {
  return rpc::methodOrdinal(capnp::Schema::from<Admin>(), name);
}

void healthz(const std::shared_ptr<Exchange>& ex) {
  ex->replyJson(http::status::ok, {{"status", "ok"}});
}

// Calls Admin.<method> on every built service at once and hands the replies,
// in service order, to `done` when the last one is in.
void askEveryService(
    const std::shared_ptr<Exchange>& ex, uint16_t methodId,
    std::function<void(std::vector<std::pair<const ServiceTarget*, rpc::Reply>>&)> done) {
  auto& gateway = ex->worker().gateway();
  struct Pending {
    std::vector<std::pair<const ServiceTarget*, std::optional<rpc::Reply>>> replies;
    size_t remaining = 0;
  };
  auto pending = std::make_shared<Pending>();
  for (auto& service : gateway.services())
    if (service.built) pending->replies.emplace_back(&service, std::nullopt);
  pending->remaining = pending->replies.size();
  auto finish = [pending, done] {
    std::vector<std::pair<const ServiceTarget*, rpc::Reply>> out;
    for (auto& [service, reply] : pending->replies) out.emplace_back(service, std::move(*reply));
    done(out);
  };
  if (pending->remaining == 0) return finish();
  for (size_t i = 0; i < pending->replies.size(); ++i) {
    capnp::MallocMessageBuilder params(8);
    params.initRoot<Admin::HealthParams>();  // every Admin method takes an empty struct
    ex->callEndpoint(pending->replies[i].first->adminEndpoint, capnp::typeId<Admin>(), methodId,
                     params, gateway.config().readinessTimeout,
                     [pending, i, finish](Exchange&, rpc::Reply& reply) {
                       pending->replies[i].second.emplace(std::move(reply));
                       if (--pending->remaining == 0) finish();
                     });
  }
}

void readyz(const std::shared_ptr<Exchange>& ex) {
  static const uint16_t kHealth = adminMethod("health");
  auto& gateway = ex->worker().gateway();
  askEveryService(ex, kHealth, [ex, &gateway](auto& replies) {
    bool ready = !gateway.stopping();
    boost::json::array services;
    for (auto& [service, reply] : replies) {
      boost::json::object entry;
      entry["service"] = service->name;
      entry["endpoint"] = service->adminEndpoint;
      if (!reply.status.ok()) {
        entry["state"] = "down";
        entry["detail"] =
            std::string(rpc::statusName(reply.status.code)) + ": " + reply.status.message;
        ready = false;
      } else {
        auto health = reply.template results<Admin::HealthResults>();
        entry["state"] = health.getOk() ? "up" : "unhealthy";
        entry["detail"] = health.getDetail().cStr();
        ready = ready && health.getOk();
      }
      services.push_back(std::move(entry));
    }
    for (auto& service : gateway.services())
      if (!service.built)
        services.push_back({{"service", service.name},
                            {"state", "not_built"},
                            {"detail", "configured, but this build has no such service"}});
    boost::json::object body;
    body["ready"] = ready;
    body["services"] = std::move(services);
    ex->replyJson(ready ? http::status::ok : http::status::service_unavailable, body);
  });
}

// Every worker's RPC client counters, read on its own thread, summed by service.
void gatherClientCounters(Gateway& gateway, boost::asio::io_context& origin,
                          std::function<void(std::vector<ClientSample>)> done) {
  struct Pending {
    std::mutex mutex;
    std::map<std::string, rpc::ConnectionCounters> sums;  // by endpoint
    size_t remaining;
  };
  auto pending = std::make_shared<Pending>();
  pending->remaining = gateway.workers().size();
  for (auto& worker : gateway.workers()) {
    boost::asio::post(worker->io(), [pending, w = worker.get(), &gateway, &origin, done] {
      auto counters = w->counters();
      std::lock_guard lock(pending->mutex);
      for (auto& [endpoint, c] : counters) {
        auto& s = pending->sums[endpoint];
        s.calls += c.calls;
        s.retries += c.retries;
        s.deadlineExceeded += c.deadlineExceeded;
        s.backPressured += c.backPressured;
        s.unavailable += c.unavailable;
        s.lateReplies += c.lateReplies;
        s.malformedReplies += c.malformedReplies;
        s.disconnects += c.disconnects;
      }
      if (--pending->remaining > 0) return;
      std::vector<ClientSample> samples;
      for (auto& service : gateway.services()) {
        for (auto* endpoint : {&service.endpoint, &service.adminEndpoint}) {
          auto it = pending->sums.find(*endpoint);
          if (it == pending->sums.end()) continue;
          auto& c = it->second;
          samples.push_back({service.name + (endpoint == &service.adminEndpoint &&
                                                     service.adminEndpoint != service.endpoint
                                                 ? "_admin"
                                                 : ""),
                             {{"calls", c.calls},
                              {"retries", c.retries},
                              {"deadline_exceeded", c.deadlineExceeded},
                              {"back_pressured", c.backPressured},
                              {"unavailable", c.unavailable},
                              {"late_replies", c.lateReplies},
                              {"malformed_replies", c.malformedReplies},
                              {"disconnects", c.disconnects}}});
          if (service.adminEndpoint == service.endpoint) break;
        }
      }
      boost::asio::post(
          origin, [done, samples = std::move(samples)]() mutable { done(std::move(samples)); });
    });
  }
}

void metrics(const std::shared_ptr<Exchange>& ex) {
  static const uint16_t kStats = adminMethod("stats");
  auto& gateway = ex->worker().gateway();
  askEveryService(ex, kStats, [ex, &gateway](auto& replies) {
    std::vector<ServiceSample> services;
    for (auto& [service, reply] : replies) {
      ServiceSample sample{service->name, reply.status.ok(), {}};
      if (reply.status.ok())
        for (auto counter : reply.template results<Admin::StatsResults>().getCounters())
          sample.counters.emplace_back(counter.getName().cStr(), counter.getValue());
      services.push_back(std::move(sample));
    }
    // Handlers posted to the other workers carry only weak references: a
    // scrape must never leave another worker owning this worker's session
    // (at stop, the workers' queues are destroyed one after the other). This
    // worker keeps the exchange alive, bounded by the readiness timeout.
    auto keeper = std::make_shared<Timer>(ex->worker().io());
    keeper->expires_after(gateway.config().readinessTimeout);
    keeper->async_wait([ex, keeper](boost::system::error_code ec) {
      if (!ec)
        ex->fail(rpc::StatusCode::DEADLINE_EXCEEDED, "the workers did not report their counters");
    });
    std::weak_ptr<Exchange> weakExchange = ex;
    std::weak_ptr<Timer> weakKeeper = keeper;
    gatherClientCounters(
        gateway, ex->worker().io(),
        [weakExchange, weakKeeper, &gateway, services](std::vector<ClientSample> clients) {
          if (auto ex = weakExchange.lock())
            ex->reply(textResponse(http::status::ok, "text/plain; version=0.0.4; charset=utf-8",
                                   gateway.metrics().render(services, clients)));
          if (auto keeper = weakKeeper.lock()) keeper->cancel();
        });
  });
}

void openapi(const std::shared_ptr<Exchange>& ex) {
  ex->reply(textResponse(http::status::ok, "application/json", std::string(kOpenApiJson)));
}

}  // namespace

void addOpsRoutes(Router& router) {
  router.add({http::verb::get, "/healthz", std::nullopt, "", false, healthz});
  router.add({http::verb::get, "/readyz", std::nullopt, "", false, readyz});
  router.add({http::verb::get, "/metrics", std::nullopt, "", false, metrics});
  router.add({http::verb::get, "/openapi.json", std::nullopt, "", false, openapi});
}

}  // namespace zmesh::gateway
