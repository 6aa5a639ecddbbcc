// zmeshctl's subcommands; main.cpp parses flags and calls one of these.
// Each returns the process exit code; bad input throws std::invalid_argument
// or rpc::ConfigError with a message naming what was wrong.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace zmesh::ctl {

int cmdUp(const std::string& configPath, bool foreground);
int cmdDown(const std::string& configPath);
int cmdStatus(const std::string& configPath);
// Params from `args` in schema order, then `fields` by name (--key value), or
// from `paramsJson` alone.
int cmdCall(const std::string& configPath, const std::string& service, const std::string& method,
            const std::vector<std::string>& args,
            const std::vector<std::pair<std::string, std::string>>& fields,
            const std::string& paramsJson, bool json, std::chrono::milliseconds timeout);
// Prints events until `count` have arrived (0: forever) or `timeout` passes (0: none).
int cmdEvents(const std::string& configPath, const std::vector<std::string>& prefixes, bool json,
              int64_t count, std::chrono::milliseconds timeout);

}  // namespace zmesh::ctl
