// Typed statistics on the wire: Admin.stats' results (idl/admin.capnp) from
// and into MetricFamily values.
#pragma once

#include <vector>

#include "zmesh/idl/admin.capnp.h"
#include "zmesh/rpc/metrics.h"

namespace zmesh::rpc {

void writeFamilies(const std::vector<MetricFamily>& families,
                   idl::Admin::StatsResults::Builder results);
// Reads a reply from another process: an unknown kind reads as a gauge; a
// malformed message throws kj::Exception (as any capnp read does).
std::vector<MetricFamily> readFamilies(idl::Admin::StatsResults::Reader results);

}  // namespace zmesh::rpc
