// GET /v1/events: the mesh's events as Server-Sent Events (API.md "Events").
#include "exchange.h"
#include "routes/routes.h"

namespace zmesh::gateway {

namespace {

void events(const std::shared_ptr<Exchange>& ex) {
  auto topics = ex->queryAll("topic");
  for (auto& topic : topics)
    for (unsigned char c : topic)
      if (c <= 0x20 || c >= 0x7f)
        return ex->fail(rpc::StatusCode::INVALID_ARGUMENT,
                        "topic \"" + topic + "\" has a character that is not printable ASCII");
  std::optional<std::string> lastEventId;
  if (auto it = ex->request().find("Last-Event-ID"); it != ex->request().end())
    lastEventId = std::string(it->value());
  ex->startEventStream(std::move(topics), std::move(lastEventId));
}

}  // namespace

void addEventRoutes(Router& router) {
  router.add({http::verb::get, "/v1/events", Scope::kEvents, "broker", false, events, true});
}

}  // namespace zmesh::gateway
