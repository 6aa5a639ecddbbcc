// The asio objects of a worker, typed by its io_context's executor. Each is
// bound to one worker for life; naming the executor type instead of asio's
// type-erased any_io_executor saves an erased copy and call per operation.
#pragma once

#include <boost/asio/basic_stream_socket.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/basic_stream_descriptor.hpp>
#include <chrono>

namespace zmesh::gateway {

using Executor = boost::asio::io_context::executor_type;
using Socket = boost::asio::basic_stream_socket<boost::asio::ip::tcp, Executor>;
using Timer = boost::asio::basic_waitable_timer<
    std::chrono::steady_clock, boost::asio::wait_traits<std::chrono::steady_clock>, Executor>;
using Descriptor = boost::asio::posix::basic_stream_descriptor<Executor>;

}  // namespace zmesh::gateway
