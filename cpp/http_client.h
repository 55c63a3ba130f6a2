// What the rest of the core needs from http_client.cc beyond the exported
// mesibo_util_http: the process-wide extra CA bundle (the http_ca_file
// setting), which the socket client trusts too.
#pragma once
#include <string>

namespace sb {

// Sets the extra CA bundle (PEM) that TLS connections of modules trust
// besides the system's; empty: none. Returns false, with `why`, when the file
// cannot be read. Any thread.
bool http_set_ca_file(const std::string &path, std::string *why);

// The bundle set last, or "". Any thread.
std::string http_ca_file();

}  // namespace sb
