// What the rest of the core needs from http_client.cc beyond the exported
// mesibo_util_http: the trust store that HTTPS and the socket client's TLS
// share (the system's CAs plus the http_ca_file setting).
#pragma once
#include <string>

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace sb {

// Loads the system's CAs into `ctx`. OpenSSL's default paths are where the
// OpenSSL build expects them; a Node binary from nodejs.org looks in
// /usr/local/ssl, which most distributions lack, so the usual system bundles
// are tried when the default paths are missing.
void load_system_cas(ssl_ctx_st *ctx);

// Sets the extra CA bundle (PEM) that TLS connections of modules trust
// besides the system's; empty: none. Returns false, with `why`, when the file
// cannot be read. Any thread.
bool http_set_ca_file(const std::string &path, std::string *why);

// The bundle set last, or "". Any thread.
std::string http_ca_file();

}  // namespace sb
