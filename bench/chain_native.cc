// The chain without N-API: core_submit in a tight loop, so the figure is
// decode + chain + encode alone. Usage: chain_native MODULE_DIR MODULES FORMAT N
// (FORMAT: json | binary). Prints "ns_per_msg=<float>".
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core.h"

int main(int argc, char **argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s MODULE_DIR MODULES json|binary N\n", argv[0]);
    return 2;
  }
  const int modules = std::atoi(argv[2]);
  const bool binary = std::strcmp(argv[3], "binary") == 0;
  const long n = std::atol(argv[4]);
  std::string text = std::string("module_dir = ") + argv[1] + "\n";
  for (int i = 0; i < modules; ++i) text += "module pass\n";
  sb::Config cfg;
  sb::ConfigError cerr;
  if (!sb::config_parse(text, "<bench>", ".", cfg, cerr)) {
    std::fprintf(stderr, "%s\n", cerr.to_string().c_str());
    return 1;
  }
  sb::Core core;
  sb::OpenError oerr;
  if (!sb::core_open(core, cfg, sb::Host{}, oerr)) {
    std::fprintf(stderr, "%s: %s\n", oerr.code.c_str(), oerr.message.c_str());
    return 1;
  }
  // A 100-byte client frame in the chosen form.
  std::string payload(binary ? 81 : 58, 'x');
  std::string frame;
  if (binary) {
    const char head[] = {char(0xB5), 1, 1, 1, 1, 0, 0, 0, 3, 'b', 'o', 'b', 0};
    frame.assign(head, sizeof head);
    uint32_t len = static_cast<uint32_t>(payload.size());
    frame.append(reinterpret_cast<const char *>(&len), 4);
    frame += payload;
  } else {
    frame = "{\"op\":\"msg\",\"id\":1,\"to\":\"bob\",\"flags\":3,\"data\":\"" + payload + "\"}";
  }
  sb::SubmitResult res;
  size_t bytes = 0;
  for (long i = 0; i < n / 10; ++i)
    sb::core_submit(core, "alice", 5, reinterpret_cast<const uint8_t *>(frame.data()), frame.size(), -1, res);
  uint64_t t0 = sb::now_ns();
  for (long i = 0; i < n; ++i) {
    int rc = sb::core_submit(core, "alice", 5, reinterpret_cast<const uint8_t *>(frame.data()), frame.size(), -1, res);
    if (rc != 0 || res.verdict != MESIBO_RESULT_PASS) {
      std::fprintf(stderr, "submit failed: %d\n", rc);
      return 1;
    }
    bytes += res.frame_len;
  }
  uint64_t t1 = sb::now_ns();
  std::printf("frame_bytes=%zu out_bytes=%zu ns_per_msg=%.1f\n", frame.size(), bytes / n, double(t1 - t0) / n);
  sb::core_close(core);
  return 0;
}
