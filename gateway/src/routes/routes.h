// Each service's REST routes, one file each. A route with no handler answers
// 501 (a service whose routes are declared before it is built).
#pragma once

#include "router.h"

namespace zmesh::gateway {

void addIdGenRoutes(Router& router);      // /v1/ids, /v1/snowflake
void addRateLimitRoutes(Router& router);  // /v1/ratelimit
void addLockRoutes(Router& router);       // /v1/locks
void addCacheRoutes(Router& router);      // /v1/cache
void addEventRoutes(Router& router);      // /v1/events (Server-Sent Events)
void addOpsRoutes(Router& router);        // /healthz, /readyz, /metrics, /v1/mesh, /openapi.json
void addUiRoutes(Router& router);         // /ui (the dashboard, gateway/ui/)

inline void addAllRoutes(Router& router) {
  addIdGenRoutes(router);
  addRateLimitRoutes(router);
  addLockRoutes(router);
  addCacheRoutes(router);
  addEventRoutes(router);
  addOpsRoutes(router);
  addUiRoutes(router);
}

}  // namespace zmesh::gateway
