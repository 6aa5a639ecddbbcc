// Routes of services not built yet: declared here so the route table, the
// OpenAPI document and 405/404 answers are already right; each answers 501
// until its service's issue moves it into a file of its own with handlers.
#include "routes/routes.h"

namespace zmesh::gateway {

void addLockRoutes(Router& router) {
  router.add({http::verb::post, "/v1/locks/{name}", Scope::kLocks, "lock", true, {}});
  router.add({http::verb::post, "/v1/locks/{name}/renew", Scope::kLocks, "lock", true, {}});
  router.add({http::verb::delete_, "/v1/locks/{name}", Scope::kLocks, "lock", true, {}});
  router.add({http::verb::get, "/v1/locks/{name}", Scope::kLocks, "lock", false, {}});
  router.add({http::verb::post, "/v1/locks/{name}/validate", Scope::kLocks, "lock", false, {}});
}

void addCacheRoutes(Router& router) {
  router.add({http::verb::put, "/v1/cache/{key}", Scope::kCache, "cache", true, {}});
  router.add({http::verb::get, "/v1/cache/{key}", Scope::kCache, "cache", false, {}});
  router.add({http::verb::delete_, "/v1/cache/{key}", Scope::kCache, "cache", true, {}});
  router.add({http::verb::get, "/v1/cache", Scope::kCache, "cache", false, {}});
}

}  // namespace zmesh::gateway
