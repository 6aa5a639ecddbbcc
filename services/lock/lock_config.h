// The [lock] section of the mesh file, read into the service's options: every
// key range-checked, a bad one (or an unknown one) a ConfigError naming its
// line and key.
#pragma once

#include <optional>
#include <string>

#include "service.h"
#include "zmesh/rpc/config.h"
#include "zmesh/rpc/host.h"

namespace zmesh::lock {

// `fsyncFlag`: --fsync, which overrides the file's fsync. data_dir is the
// file's (resolved against its directory); main applies --data-dir/--memory.
LockServiceOptions parseLockOptions(const rpc::ConfigSection& s,
                                    const std::optional<std::string>& fsyncFlag = std::nullopt);

}  // namespace zmesh::lock
