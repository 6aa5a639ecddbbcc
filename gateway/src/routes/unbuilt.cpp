// Routes of services not built yet: declared here so the route table, the
// OpenAPI document and 405/404 answers are already right; each answers 501
// until its service's issue moves it into a file of its own with handlers.
#include "routes/routes.h"

namespace zmesh::gateway {

void addCacheRoutes(Router& router) {
  router.add({http::verb::put, "/v1/cache/{key}", Scope::kCache, "cache", true, {}});
  router.add({http::verb::get, "/v1/cache/{key}", Scope::kCache, "cache", false, {}});
  router.add({http::verb::delete_, "/v1/cache/{key}", Scope::kCache, "cache", true, {}});
  router.add({http::verb::get, "/v1/cache", Scope::kCache, "cache", false, {}});
}

}  // namespace zmesh::gateway
