// Operations routes: /healthz, /readyz, /metrics, /v1/mesh, /openapi.json (API.md).
#include <boost/asio/post.hpp>
#include <boost/json.hpp>
#include <cmath>
#include <mutex>
#include <utility>

#include "asio_types.h"
#include "exchange.h"
#include "gateway.h"
#include "openapi_json.h"
#include "routes/routes.h"
#include "zmesh/idl/admin.capnp.h"
#include "zmesh/rpc/clock.h"
#include "zmesh/rpc/metrics_wire.h"

namespace zmesh::gateway {

namespace {

using idl::Admin;

uint16_t adminMethod(const char* name) {
  return rpc::methodOrdinal(capnp::Schema::from<Admin>(), name);
}

void healthz(const std::shared_ptr<Exchange>& ex) {
  ex->replyJson(http::status::ok, {{"status", "ok"}});
}

// Calls Admin.<method> on every built service at once (and on the gateway's
// own Admin endpoint first, with `self`) and hands the replies, in that
// order, to `done` when the last one is in.
void askEveryService(
    const std::shared_ptr<Exchange>& ex, uint16_t methodId, bool self,
    std::function<void(std::vector<std::pair<const ServiceTarget*, rpc::Reply>>&)> done) {
  auto& gateway = ex->worker().gateway();
  struct Pending {
    std::vector<std::pair<const ServiceTarget*, std::optional<rpc::Reply>>> replies;
    size_t remaining = 0;
  };
  auto pending = std::make_shared<Pending>();
  if (self && gateway.self()) pending->replies.emplace_back(gateway.self(), std::nullopt);
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

// Answers from the shared result when it is fresh, or joins (or starts) the
// fetch of a new one: `fetch` runs for one asker of many and must put().
template <class T, class Answer, class Fetch>
void shared(const std::shared_ptr<Exchange>& ex, SharedResult<T>& result, Answer answer,
            Fetch fetch) {
  auto& metrics = ex->worker().gateway().metrics();
  auto* io = &ex->worker().io();
  // put() may run on another worker: the answer is posted to this one.
  auto got = result.get([ex, io, answer](const typename SharedResult<T>::Value& value) {
    boost::asio::post(*io, [ex, answer, value] { answer(ex, *value); });
  });
  switch (got.outcome) {
    case SharedResult<T>::Outcome::kFresh:
      metrics.count(Metrics::Limit::kOpsCacheHits);
      return answer(ex, *got.value);
    case SharedResult<T>::Outcome::kJoined:
      metrics.count(Metrics::Limit::kOpsCacheHits);
      return;
    case SharedResult<T>::Outcome::kFetch:
      metrics.count(Metrics::Limit::kOpsCacheRefreshes);
      return fetch();
  }
}

void readyz(const std::shared_ptr<Exchange>& ex) {
  static const uint16_t kHealth = adminMethod("health");
  auto& gateway = ex->worker().gateway();
  auto answer = [&gateway](const std::shared_ptr<Exchange>& ex, const Readiness& readiness) {
    bool ready = readiness.ready && !gateway.stopping();
    std::string body = "{\"ready\":";
    body += ready ? "true" : "false";
    body += ",\"services\":" + readiness.services + "}";
    ex->reply(textResponse(ready ? http::status::ok : http::status::service_unavailable,
                           "application/json", std::move(body)));
  };
  shared(ex, gateway.readiness(), answer, [ex, &gateway] {
    askEveryService(ex, kHealth, false, [&gateway](auto& replies) {
      Readiness readiness;
      boost::json::array services;
      for (auto& [service, reply] : replies) {
        boost::json::object entry;
        entry["service"] = service->name;
        entry["endpoint"] = service->adminEndpoint;
        if (!reply.status.ok()) {
          entry["state"] = "down";
          entry["detail"] =
              std::string(rpc::statusName(reply.status.code)) + ": " + reply.status.message;
          readiness.ready = false;
        } else {
          auto health = reply.template results<Admin::HealthResults>();
          entry["state"] = health.getOk() ? "up" : "unhealthy";
          entry["detail"] = health.getDetail().cStr();
          readiness.ready = readiness.ready && health.getOk();
        }
        services.push_back(std::move(entry));
      }
      for (auto& service : gateway.services())
        if (!service.built)
          services.push_back({{"service", service.name},
                              {"state", "not_built"},
                              {"detail", "configured, but this build has no such service"}});
      readiness.services = boost::json::serialize(services);
      gateway.readiness().put(std::move(readiness));
    });
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

// Asks every service for its Admin.stats and every worker for its client
// counters, and puts the result into gateway.samples() (for /metrics and /v1/mesh).
void fetchSamples(const std::shared_ptr<Exchange>& ex, Gateway& gateway) {
  static const uint16_t kStats = adminMethod("stats");
  askEveryService(ex, kStats, true, [ex, &gateway](auto& replies) {
    const int64_t sampledMs = rpc::unixMillis();
    auto services = std::make_shared<std::vector<ServiceSample>>();
    auto self = std::make_shared<std::optional<ServiceSample>>();
    for (auto& [service, reply] : replies) {
      ServiceSample sample;
      sample.service = service->name;
      sample.up = reply.status.ok();
      if (!sample.up) {
        sample.error =
            std::string(rpc::statusName(reply.status.code)) + ": " + reply.status.message;
      } else {
        // A malformed reply must not lose the whole refresh (the askers would wait it out).
        try {
          sample.families = rpc::readFamilies(reply.template results<Admin::StatsResults>());
        } catch (const kj::Exception& e) {
          sample.up = false;
          sample.error =
              "INTERNAL: malformed Admin.stats reply: " + std::string(e.getDescription());
        }
      }
      if (service == gateway.self())
        self->emplace(std::move(sample));
      else
        services->push_back(std::move(sample));
    }
    // /metrics and /v1/mesh show the gateway process's families other than
    // its own (zmesh_gateway_*, rendered uncapped from Metrics): process.*,
    // rpc.*. Not metrics.series_folded: it counts folds of the capped
    // gateway.* families of Admin.stats, which neither shows.
    if (*self) {
      ServiceSample process{"gateway", (*self)->up, (*self)->error, {}};
      for (auto& f : (*self)->families)
        if (!f.name.starts_with("gateway.") && f.name != "metrics.series_folded")
          process.families.push_back(f);
      // Down too: zmesh_service_up{service="gateway"} reads 0 rather than vanishing.
      services->insert(services->begin(), std::move(process));
    }
    // Counted once per refresh, not per scrape: a rate above 0 means a conflict now.
    gateway.metrics().count(Metrics::Limit::kMetricConflicts, Metrics::conflicts(*services));
    // Handlers posted to the other workers carry only weak references: a
    // scrape must never leave another worker owning this worker's objects
    // (at stop, the workers' queues are destroyed one after the other).
    // The result is put once: with the workers' counters, or without them
    // after the readiness timeout.
    auto done = std::make_shared<bool>(false);
    auto keeper = std::make_shared<Timer>(ex->worker().io());
    keeper->expires_after(gateway.config().readinessTimeout);
    keeper->async_wait(
        [keeper, done, services, self, sampledMs, &gateway](boost::system::error_code ec) {
          if (ec || std::exchange(*done, true)) return;
          gateway.samples().put({*services, {}, *self, sampledMs});
        });
    std::weak_ptr<Timer> weakKeeper = keeper;
    std::weak_ptr<bool> weakDone = done;
    gatherClientCounters(gateway, ex->worker().io(),
                         [weakKeeper, weakDone, &gateway, services, self,
                          sampledMs](std::vector<ClientSample> clients) {
                           auto done = weakDone.lock();
                           if (!done || std::exchange(*done, true)) return;
                           if (auto keeper = weakKeeper.lock()) keeper->cancel();
                           gateway.samples().put({*services, std::move(clients), *self, sampledMs});
                         });
  });
}

void refreshIdempotency(Gateway& gateway) {
  auto idempotency = gateway.idempotency().stats();
  gateway.metrics().setIdempotency(
      {idempotency.entries, idempotency.bytes, idempotency.evictions, idempotency.quotaEvictions});
}

void metrics(const std::shared_ptr<Exchange>& ex) {
  auto& gateway = ex->worker().gateway();
  // The gateway's own numbers are always current; the services' are shared.
  auto answer = [&gateway](const std::shared_ptr<Exchange>& ex, const ServiceSamples& samples) {
    refreshIdempotency(gateway);
    ex->reply(textResponse(http::status::ok, "text/plain; version=0.0.4; charset=utf-8",
                           gateway.metrics().render(samples.services, samples.clients)));
  };
  shared(ex, gateway.samples(), answer, [ex, &gateway] { fetchSamples(ex, gateway); });
}

// ---- GET /v1/mesh: every process's typed statistics, as JSON for a dashboard ----

// A count as a JSON integer (12, not 1.2E1), anything else as a double; JSON
// has no NaN or infinity: null.
boost::json::value jsonNumber(double v) {
  if (!std::isfinite(v)) return nullptr;
  if (v == std::trunc(v) && std::fabs(v) < 9.0e15) return static_cast<int64_t>(v);
  return v;
}

boost::json::object familyJson(const rpc::MetricFamily& f) {
  const bool histogram = f.kind == rpc::MetricKind::kHistogram;
  boost::json::object out;
  out["name"] = f.name;
  out["prometheus"] = sanitizeMetricName(rpc::prometheusName(f));
  out["kind"] = rpc::kindName(f.kind);
  out["help"] = f.help;
  boost::json::array labels;
  for (auto& name : f.labelNames) labels.emplace_back(name);
  out["labels"] = std::move(labels);
  if (histogram) {
    boost::json::array bounds;
    for (double b : f.bounds) bounds.push_back(jsonNumber(b));
    out["bounds"] = std::move(bounds);
  }
  boost::json::array samples;
  for (auto& s : f.samples) {
    boost::json::object sample;
    boost::json::array values;
    for (auto& v : s.labelValues) values.emplace_back(v);
    sample["labels"] = std::move(values);
    sample["value"] = jsonNumber(s.value);
    if (histogram) {
      boost::json::array buckets;
      for (uint64_t b : s.buckets) buckets.emplace_back(b);
      sample["buckets"] = std::move(buckets);
      sample["sum"] = jsonNumber(s.sum);
    }
    samples.push_back(std::move(sample));
  }
  out["samples"] = std::move(samples);
  return out;
}

boost::json::array familiesJson(const std::vector<rpc::MetricFamily>& families) {
  boost::json::array out;
  for (auto& f : families) out.push_back(familyJson(f));
  return out;
}

void mesh(const std::shared_ptr<Exchange>& ex) {
  auto& gateway = ex->worker().gateway();
  auto answer = [&gateway](const std::shared_ptr<Exchange>& ex, const ServiceSamples& samples) {
    refreshIdempotency(gateway);
    boost::json::array services;
    const int64_t now = rpc::unixMillis();
    // The gateway as /metrics shows it: its own families uncapped and read
    // now, its client counters, then its process's other families (the
    // shared result's "gateway" entry, filtered as /metrics renders it).
    auto own = gateway.metrics().families();
    for (auto& f : Metrics::clientFamilies(samples.clients)) own.push_back(std::move(f));
    for (auto& s : samples.services)
      if (s.service == "gateway" && s.up)
        own.insert(own.end(), s.families.begin(), s.families.end());
    // sampled_ms: the gateway's own numbers are read now; the services' when
    // the shared result was gathered (rates are per that interval).
    services.push_back({{"name", "gateway"},
                        {"state", "up"},
                        {"sampled_ms", now},
                        {"metrics", familiesJson(own)}});
    for (auto& target : gateway.services()) {
      boost::json::object entry;
      entry["name"] = target.name;
      entry["sampled_ms"] = samples.sampledMs;
      // The later sample of a service wins, as in /metrics.
      const ServiceSample* sample = nullptr;
      for (auto& s : samples.services)
        if (s.service == target.name) sample = &s;
      if (sample && sample->up) {
        entry["state"] = "up";
        entry["metrics"] = familiesJson(sample->families);
      } else {
        entry["state"] = "down";
        entry["error"] = !target.built ? "NOT_BUILT: configured, but this build has no such service"
                         : sample      ? sample->error
                                       : "UNAVAILABLE: not asked yet";
        entry["metrics"] = boost::json::array();
      }
      services.push_back(std::move(entry));
    }
    ex->replyJson(http::status::ok, {{"time_ms", now}, {"services", std::move(services)}});
  };
  shared(ex, gateway.samples(), answer, [ex, &gateway] { fetchSamples(ex, gateway); });
}

void openapi(const std::shared_ptr<Exchange>& ex) {
  ex->reply(textResponse(http::status::ok, "application/json", std::string(kOpenApiJson)));
}

}  // namespace

void addOpsRoutes(Router& router) {
  router.add({http::verb::get, "/healthz", std::nullopt, "", false, healthz});
  router.add({http::verb::get, "/readyz", std::nullopt, "", false, readyz});
  router.add({http::verb::get, "/metrics", std::nullopt, "", false, metrics});
  router.add({http::verb::get, "/v1/mesh", Scope::kStats, "", false, mesh});
  router.add({http::verb::get, "/openapi.json", std::nullopt, "", false, openapi});
}

}  // namespace zmesh::gateway
