// The gateway's route table: method + path pattern → handler. Patterns are
// literal segments and {name} captures ("/v1/ids/{namespace}"). Each service's
// routes are added by one file under routes/.
// Immutable once the gateway starts: shared by every worker.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "auth.h"
#include "responses.h"

namespace zmesh::gateway {

class Exchange;
using Handler = std::function<void(const std::shared_ptr<Exchange>&)>;

struct Route {
  http::verb method;
  std::string pattern;          // "/v1/ids/{namespace}"
  std::optional<Scope> scope;   // needed when auth is on; nullopt: public
  std::string service;          // the mesh service behind it; "" for the gateway's own
  bool idempotencyKey = false;  // honours Idempotency-Key (state-changing POST/PUT/DELETE)
  Handler handler;              // empty: the service is not built yet (501)
  // Takes ?access_token= as the bearer token (only GET /v1/events: browsers'
  // EventSource cannot set headers, and a token in a URL ends up in logs).
  bool queryToken = false;
  // Its {captures} also match an empty segment, which the handler then
  // refuses with a 400 naming it (/v1/cache/); otherwise such a path is a 404.
  bool emptyCaptures = false;
  // HEAD is answered as GET without the body (a GET route only; the static
  // files of /ui): RFC 9110 9.3.2.
  bool head = false;
};

class Router {
 public:
  // Throws std::logic_error on a malformed pattern or a duplicate route.
  void add(Route route);

  struct Match {
    const Route* route = nullptr;                             // set on a match
    std::vector<std::pair<std::string, std::string>> params;  // captures, decoded
    std::vector<http::verb> allowed;   // path matched but not the method: 405 with these
    const Route* pathRoute = nullptr;  // then: the first route whose path matched
  };
  // `segments`: the request path's decoded segments ("/v1/ids/a%2Fb" → v1, ids, a/b).
  Match match(http::verb method, const std::vector<std::string>& segments) const;

  const std::vector<Route>& routes() const { return routes_; }

 private:
  struct Compiled {
    std::vector<std::string> segments;  // "{x}" marks a capture
  };
  std::vector<Route> routes_;
  std::vector<Compiled> compiled_;
};

// "GET, POST" for an Allow header.
std::string allowHeader(const std::vector<http::verb>& methods);

}  // namespace zmesh::gateway
