// A message against a schema (the first byte picks one): checkFields()'s
// compiled plan must give the Dynamic API's verdict, and checkFields() the
// dynamic reads' words, whatever the bytes; a disagreement aborts.
#include <cstdlib>
#include <string>
#include <vector>

#include "check.h"
#include "checkshapes.capnp.h"
#include "testsvc.capnp.h"
#include "zmesh/idl/admin.capnp.h"
#include "zmesh/idl/cache.capnp.h"
#include "zmesh/idl/common.capnp.h"
#include "zmesh/idl/idgen.capnp.h"
#include "zmesh/idl/lock.capnp.h"
#include "zmesh/idl/ratelimit.capnp.h"
#include "zmesh/rpc/frame.h"

namespace {

using namespace zmesh;

// In a fixed order: the corpus's first bytes index it (make_seeds.cpp writes them).
const std::vector<capnp::StructSchema>& schemas() {
  static const std::vector<capnp::StructSchema> all = [] {
    std::vector<capnp::StructSchema> out{capnp::Schema::from<test::Shapes>(),
                                         capnp::Schema::from<idl::CacheLogRecord>(),
                                         capnp::Schema::from<idl::IdGenLogRecord>(),
                                         capnp::Schema::from<idl::LockLogRecord>(),
                                         capnp::Schema::from<idl::RateLimitLogRecord>(),
                                         capnp::Schema::from<idl::RpcHeader>(),
                                         capnp::Schema::from<idl::Event>(),
                                         capnp::Schema::from<idl::LockSnapshot>(),
                                         capnp::Schema::from<idl::RateLimitSnapshot>(),
                                         capnp::Schema::from<idl::IdGenSnapshot>()};
    for (auto iface :
         {capnp::Schema::from<idl::Admin>(), capnp::Schema::from<idl::IdGen>(),
          capnp::Schema::from<idl::Cache>(), capnp::Schema::from<idl::Lock>(),
          capnp::Schema::from<idl::RateLimit>(), capnp::Schema::from<test::TestService>()}) {
      for (auto method : iface.getMethods()) {
        out.push_back(method.getParamType());
        out.push_back(method.getResultType());
      }
    }
    return out;
  }();
  return all;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  auto schema = schemas()[data[0] % schemas().size()];
  const uint8_t* bytes = data + 1;
  size_t n = size - 1;
  // Each reader on a message of its own: reads count against its traversal budget.
  auto options = rpc::readerOptionsFor(n);
  bool fast;
  try {
    rpc::FrameMessage m(bytes, n, options);
    fast = rpc::checkFieldsFast(m.any(), schema);
  } catch (const rpc::FrameError&) {
    return 0;  // refused when opened: no field check runs
  }
  std::string dynamic, combined;
  try {
    rpc::FrameMessage m(bytes, n, options);
    rpc::checkFieldsDynamic(m.any(), schema, "params");
  } catch (const rpc::FrameError& e) {
    dynamic = e.what();
  }
  try {
    rpc::FrameMessage m(bytes, n, options);
    rpc::checkFields(m.any(), schema, "params");
  } catch (const rpc::FrameError& e) {
    combined = e.what();
  }
  if (fast != dynamic.empty() || combined != dynamic) std::abort();
  return 0;
}
