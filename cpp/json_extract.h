// Finding one member's value in a JSON text without parsing the document:
// the engine behind mesibo_util_json_extract, which modules use to pull a
// field such as "fulfillmentText" out of an HTTP response body.
#pragma once
#include <cstddef>

namespace sb {

// The value of `key` in the JSON text [src, src+len): the first occurrence of
// `key` as an object member name, at any nesting depth, in document order.
//
// Strings are returned unescaped (every JSON escape, \uXXXX and surrogate
// pairs included, decoded to UTF-8; a lone surrogate becomes U+FFFD, as in
// Node's Buffer.from(JSON.parse(...))); numbers, true, false and null as their
// literal text; an object or array value as its raw JSON text. Key comparison
// is on the unescaped member name, so "na\u006de" matches key "name"; the
// empty key matches a member named "".
//
// The result is a new malloc'd NUL-terminated string the caller frees with
// free(). A string value containing \u0000 is returned with that NUL in place,
// so a caller that uses strlen sees it cut short there.
//
// Returns nullptr when src or key is null, when the key is absent, or when the
// text is malformed: an unterminated string, a bad escape, a raw control
// character in a string, a matching member name not followed by ':' and a
// valid value, a value not followed by ',' or '}' (which is how a value cut
// short by `len` shows), or containers nested deeper than 64 in the value.
//
// The text before the match is scanned tolerantly so that a search may start
// in the middle of a document: strings must be well formed, but everything
// between them is skipped, unbalanced closers included. A string counts as a
// member name only when it follows '{', ',' or the start of the text and is
// followed by ':'; a key name inside a string value never matches.
//
// Never reads at or past src+len, and never needs src to be NUL-terminated.
// Allocates nothing but the result.
//
// `next`, when non-null, receives a pointer into src just after the matched
// value, so a caller can search again from there with len reduced by
// (next - src) to find the following occurrence; it is left untouched when
// nothing matched.
char *json_extract(const char *src, size_t len, const char *key, const char **next);

}  // namespace sb
