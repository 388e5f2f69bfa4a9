/// @file startup.hpp
/// @brief The waits of a process joining a multi-process run, each with a limit: the
/// rendezvous store's port accepting a connection (await_listener), and any blocking call
/// run on a thread of its own (within). ProcessGroup's constructor uses them so that a
/// store that never answers (a launcher of another PyTorch, see docs/distributed.md) ends
/// in an error instead of a silent hang.
#pragma once

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

namespace aclora::train::distributed::detail {

using Clock = std::chrono::steady_clock;

/// Milliseconds from now until `deadline`, at least 0.
inline std::chrono::milliseconds until(Clock::time_point deadline) {
  return std::max(std::chrono::milliseconds(0),
                  std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
}

/// One TCP connection attempt to `address`, abandoned at `deadline`; the socket is closed
/// again at once. An empty string when it connected, else why not.
inline std::string connect_once(const addrinfo& address, Clock::time_point deadline) {
  const int fd = ::socket(address.ai_family, address.ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                          address.ai_protocol);
  if (fd < 0)
    return std::strerror(errno);
  int error = ::connect(fd, address.ai_addr, address.ai_addrlen) == 0 ? 0 : errno;
  if (error == EINPROGRESS) {
    pollfd poll_fd{fd, POLLOUT, 0};
    const int ready = ::poll(&poll_fd, 1, static_cast<int>(until(deadline).count()));
    socklen_t length = sizeof error;
    if (ready == 0)
      error = ETIMEDOUT;
    else if (ready < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0)
      error = errno;
  }
  ::close(fd);
  return error == 0 ? std::string() : std::strerror(error);
}

/// Waits until something accepts TCP connections at host:port (a name or an address),
/// retrying every 100 ms until `deadline`: the rendezvous store may start after this process.
/// @return std::nullopt once a connection succeeded, else the last attempt's error in words.
inline std::optional<std::string> await_listener(const std::string& host, std::uint16_t port,
                                                 Clock::time_point deadline) {
  constexpr std::chrono::milliseconds kRetry{100};
  std::string last_error;
  for (;;) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* addresses = nullptr;
    const int status =
        ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &addresses);
    if (status != 0) {
      last_error = std::string("cannot resolve '") + host + "': " + ::gai_strerror(status);
    } else {
      for (const addrinfo* address = addresses; address != nullptr; address = address->ai_next) {
        // Each attempt gets at most a second, so that a dropped SYN is retried.
        last_error =
            connect_once(*address, std::min(deadline, Clock::now() + std::chrono::seconds(1)));
        if (last_error.empty())
          break;
      }
      ::freeaddrinfo(addresses);
      if (last_error.empty())
        return std::nullopt;
    }
    if (Clock::now() + kRetry >= deadline)
      return last_error;
    std::this_thread::sleep_for(kRetry);
  }
}

/// Runs `work` on a thread of its own and returns its result (rethrowing its exception), or
/// std::nullopt when it has not finished after `limit`. A late `work` is left to finish on
/// its thread, which then drops its result: it must own everything it uses (capture by value).
template <class Work>
std::optional<std::invoke_result_t<Work>> within(std::chrono::milliseconds limit, Work work) {
  std::packaged_task<std::invoke_result_t<Work>()> task(std::move(work));
  auto result = task.get_future();
  std::thread(std::move(task)).detach();
  if (result.wait_for(limit) != std::future_status::ready)
    return std::nullopt;
  return result.get();
}

}  // namespace aclora::train::distributed::detail
