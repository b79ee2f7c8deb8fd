// What each thread calling our oneDNN ops keeps for itself (engine/cpu/onednn_conv.cpp,
// onednn_linear.cpp): IPNA's patch lanes call the same ops from several threads at once, and a
// oneDNN stream, a scratchpad or a staging buffer serves one thread at a time.
#pragma once
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <thread>

namespace ipna::cpu {

// One S (which has a dnnl::stream `strm`) per calling thread, made at its first call with a stream
// on `eng`. Entries stay put while the owner lives, so the reference stays valid between calls.
template <typename S>
class OnednnPerThread {
 public:
  S& mine(const dnnl::engine& eng) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto [it, fresh] = by_thread_.try_emplace(std::this_thread::get_id());
    if (fresh) it->second.strm = dnnl::stream(eng);
    return it->second;
  }

 private:
  std::mutex mutex_;
  std::map<std::thread::id, S> by_thread_;
};

}  // namespace ipna::cpu
