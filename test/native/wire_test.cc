// sb::wire_decode and the wire_encode_* functions: protocol version 1 as
// docs/protocol.md describes it. Every frame is decoded from a heap block of
// exactly its size, so the address sanitizer reports any read past the end.
#include "wire.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "check.h"

// Counts every operator new, so a test can prove that a warm decode and
// encode allocate nothing.
static size_t g_allocations = 0;
void *operator new(size_t n) {
  ++g_allocations;
  if (void *p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, size_t) noexcept { std::free(p); }

using namespace sb;
using namespace std::string_literals;

namespace {

constexpr size_t kMax = 1024;

struct Decoded {
  int rc = 0;
  WireMessage m{};
  WireScratch scratch;
  std::string detail;
  std::string to() const { return std::string(m.to, m.to_len); }
  std::string payload() const { return std::string(m.payload, m.payload_len); }
  std::string code() const { return wire_error_code(rc); }
};

// Decodes `frame` from a heap block of exactly its size.
Decoded decode(std::string_view frame, size_t max_payload = kMax) {
  Decoded d;
  uint8_t *block = static_cast<uint8_t *>(std::calloc(frame.size() ? frame.size() : 1, 1));
  if (!frame.empty()) std::memcpy(block, frame.data(), frame.size());
  d.rc = wire_decode(block, frame.size(), max_payload, d.m, d.scratch, &d.detail);
  std::free(block);
  return d;
}

std::string code_of(std::string_view frame, size_t max_payload = kMax) { return decode(frame, max_payload).code(); }

// A client frame in the binary form, built field by field.
struct Binary {
  std::string b;
  Binary(uint8_t op, uint8_t mask) : b{char(0xB5), char(1), char(op), char(mask)} {}
  Binary &u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) b.push_back(char(v >> (8 * i)));
    return *this;
  }
  Binary &address(std::string_view s) {
    b.push_back(char(s.size()));
    b.append(s);
    return *this;
  }
  Binary &payload(std::string_view s) {
    u32(uint32_t(s.size()));
    b.append(s);
    return *this;
  }
  operator std::string_view() const { return b; }
};

// Presence bits of the binary form, in field order.
enum : uint8_t { B_ID = 1, B_REFID = 2, B_GID = 4, B_FLAGS = 8, B_TYPE = 16, B_EXPIRY = 32, B_STATUS = 64 };

mesibo_message_params_t params(uint32_t id, const char *from, const char *to) {
  mesibo_message_params_t p{};
  p.id = id;
  p.from = const_cast<char *>(from);
  p.to = const_cast<char *>(to);
  return p;
}

const std::string kBinaryPayload = "\x00\xFF\x01\x80zz\x00\xFE"s;

}  // namespace

// --- decoding JSON --------------------------------------------------------

TEST("a JSON message carries every field the brief names") {
  Decoded d = decode(R"({"op":"msg","id":17,"to":"bob","gid":5,"refid":16,"type":3,"flags":3,"expiry":60,"data":"hello"})");
  CHECK_EQ(d.code(), "OK");
  CHECK_EQ(d.m.format, WIRE_JSON);
  CHECK_EQ(d.m.op, WIRE_OP_MESSAGE);
  CHECK_EQ(d.m.id, 17u);
  CHECK_EQ(d.to(), "bob");
  CHECK_EQ(d.m.groupid, 5u);
  CHECK_EQ(d.m.refid, 16u);
  CHECK_EQ(d.m.type, 3u);
  CHECK_EQ(d.m.flags, 3u);
  CHECK_EQ(d.m.expiry, 60u);
  CHECK_EQ(d.m.status, 0u);
  CHECK_EQ(d.payload(), "hello");
}

TEST("absent numbers are 0 and an absent payload is empty but NUL-terminated") {
  Decoded d = decode(R"({"op":"msg","id":1,"to":"bob"})");
  CHECK_EQ(d.code(), "OK");
  CHECK_EQ(d.m.refid + d.m.groupid + d.m.flags + d.m.type + d.m.expiry, 0u);
  CHECK_EQ(d.m.payload_len, size_t(0));
  CHECK(d.m.payload != nullptr && d.m.payload[0] == 0);
}

TEST("the strings are NUL-terminated and the payload is writable") {
  Decoded d = decode(R"({"op":"msg","id":1,"to":"bob","data":"abc"})");
  CHECK_EQ(d.m.to[d.m.to_len], 0);
  CHECK_EQ(d.m.payload[d.m.payload_len], 0);
  CHECK_EQ(std::strlen(d.m.to), size_t(3));
  d.m.payload[0] = 'X';  // a module may rewrite the payload in place
  CHECK_EQ(d.payload(), "Xbc");
}

TEST("a JSON status is a receipt for one message, sent to its sender") {
  Decoded d = decode(R"({"op":"status","id":17,"to":"alice","status":2})");
  CHECK_EQ(d.code(), "OK");
  CHECK_EQ(d.m.op, WIRE_OP_STATUS);
  CHECK_EQ(d.m.id, 17u);
  CHECK_EQ(d.to(), "alice");
  CHECK_EQ(d.m.status, 2u);
  CHECK_EQ(code_of(R"({"op":"status","id":17,"to":"alice","status":3})"), "OK");
}

TEST("a group message needs no \"to\"") {
  Decoded d = decode(R"({"op":"msg","id":4,"gid":99,"data":"hi all"})");
  CHECK_EQ(d.code(), "OK");
  CHECK_EQ(d.m.groupid, 99u);
  CHECK_EQ(d.m.to_len, size_t(0));
  CHECK_EQ(std::string(d.m.to), "");
}

TEST("keys come in any order, with whitespace around every token") {
  Decoded d = decode(" \r\n\t{ \"data\" : \"x\" ,\n\"to\"\t:\"bob\" , \"id\" : 7 , \"op\" : \"msg\" }\n ");
  CHECK_EQ(d.code(), "OK");
  CHECK_EQ(d.m.id, 7u);
  CHECK_EQ(d.to(), "bob");
  CHECK_EQ(d.payload(), "x");
}

TEST("unknown keys are skipped, whatever valid JSON they hold") {
  Decoded d = decode(R"({"op":"msg","x":{"a":[1,-2.5e+3,true,false,null,"s\n",{}],"b":[]},"id":3,"y":"\ud83d\ude00","z":0,"to":"bob"})");
  CHECK_EQ(d.code(), "OK");
  CHECK_EQ(d.m.id, 3u);
  CHECK_EQ(d.to(), "bob");
}

TEST("numbers: every unsigned 32-bit value, nothing else") {
  CHECK_EQ(decode(R"({"op":"msg","id":4294967295,"to":"b","type":0})").m.id, 4294967295u);
  CHECK_EQ(code_of(R"({"op":"msg","id":4294967296,"to":"b"})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"msg","id":99999999999999999999999,"to":"b"})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"msg","id":-1,"to":"b"})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"msg","id":-0,"to":"b"})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"msg","id":1.0,"to":"b"})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"msg","id":1e3,"to":"b"})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"msg","id":"17","to":"b"})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"msg","id":null,"to":"b"})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","expiry":true})"), "E_BAD_FIELD");
  // Not JSON numbers at all: a syntax error.
  CHECK_EQ(code_of(R"({"op":"msg","id":017,"to":"b"})"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(R"({"op":"msg","id":+1,"to":"b"})"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(R"({"op":"msg","id":1.,"to":"b"})"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(R"({"op":"msg","id":1e,"to":"b"})"), "E_FRAME_MALFORMED");
}

TEST("the detail of a bad number names the field") {
  Decoded d = decode(R"({"op":"msg","id":1,"to":"b","refid":-3})");
  CHECK_EQ(d.code(), "E_BAD_FIELD");
  CHECK(d.detail.find("\"refid\"") != std::string::npos);
}

// --- strings ----------------------------------------------------------------

TEST("every JSON escape decodes") {
  Decoded d = decode(R"({"op":"msg","id":1,"to":"b","data":"q\"b\\s\/n\nr\rt\tb\bf\f"})");
  CHECK_EQ(d.code(), "OK");
  CHECK_EQ(d.payload(), "q\"b\\s/n\nr\rt\tb\bf\f");
}

TEST("\\u escapes decode to UTF-8 of one, two and three bytes, \\u0000 included") {
  Decoded d = decode(R"({"op":"msg","id":1,"to":"b","data":"\u0041\u00e9\u20AC\u0000!"})");
  CHECK_EQ(d.code(), "OK");
  CHECK_EQ(d.payload(), "A\xC3\xA9\xE2\x82\xAC\x00!"s);
}

TEST("a surrogate pair decodes to one four-byte character") {
  Decoded d = decode(R"({"op":"msg","id":1,"to":"b","data":"<\ud83d\ude00>"})");
  CHECK_EQ(d.code(), "OK");
  CHECK_EQ(d.payload(), "<\xF0\x9F\x98\x80>");
  CHECK_EQ(decode(R"({"op":"msg","id":1,"to":"b","data":"\uDBFF\uDFFF"})").payload(), "\xF4\x8F\xBF\xBF");
}

TEST("lone surrogates are malformed") {
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":"\ud83d"})"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":"\ude00"})"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":"\ud83dx"})"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":"\ud83d\u0041"})"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":"\ud83d\ud83d"})"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","skip":"\ude00"})"), "E_FRAME_MALFORMED");
}

TEST("bad escapes, raw control characters and invalid UTF-8 are malformed") {
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":"\x41"})"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":"\u12G4"})"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":"\u12"})"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of("{\"op\":\"msg\",\"id\":1,\"to\":\"b\",\"data\":\"a\nb\"}"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of("{\"op\":\"msg\",\"id\":1,\"to\":\"b\",\"data\":\"\xFF\"}"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of("{\"op\":\"msg\",\"id\":1,\"to\":\"b\",\"data\":\"\xC0\x80\"}"), "E_FRAME_MALFORMED");      // overlong
  CHECK_EQ(code_of("{\"op\":\"msg\",\"id\":1,\"to\":\"b\",\"data\":\"\xED\xA0\x80\"}"), "E_FRAME_MALFORMED");  // surrogate
  CHECK_EQ(code_of("{\"op\":\"msg\",\"id\":1,\"to\":\"b\",\"x\":\"\xF4\x90\x80\x80\"}"), "E_FRAME_MALFORMED");  // > U+10FFFF
}

TEST("raw UTF-8 passes through strings unchanged") {
  Decoded d = decode("{\"op\":\"msg\",\"id\":1,\"to\":\"b\xC3\xB6rje\",\"data\":\"\xE6\x97\xA5\xF0\x9F\x98\x80\"}");
  CHECK_EQ(d.code(), "OK");
  CHECK_EQ(d.to(), "b\xC3\xB6rje");
  CHECK_EQ(d.payload(), "\xE6\x97\xA5\xF0\x9F\x98\x80");
}

TEST("keys are compared after unescaping") {
  Decoded d = decode(R"({"\u006fp":"m\u0073g","i\u0064":5,"t\u006F":"b"})");
  CHECK_EQ(d.code(), "OK");
  CHECK_EQ(d.m.id, 5u);
  // A key that only looks like a known one is unknown, and skipped.
  CHECK_EQ(code_of(R"({"op":"msg","id":5,"to":"b","to\u0000":1,"ids":2})"), "OK");
}

TEST("keys and strings with escapes or non-ASCII bytes take the general scan and mean the same") {
  Decoded d = decode(R"({"o\u0070":"ms\u0067","\u0069d":5,"t\u006f":"b\u006fb","flag\u0073":3,"dat\u0061":"x\u0079"})");
  CHECK_EQ(d.code(), "OK");
  CHECK_EQ(d.m.op, WIRE_OP_MESSAGE);
  CHECK_EQ(d.m.id, 5u);
  CHECK_EQ(d.to(), "bob");
  CHECK_EQ(d.m.flags, 3u);
  CHECK_EQ(d.payload(), "xy");
  // Keys of eight bytes and more, plain or not, are unknown and skipped.
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","flagsxyz":1,"expiry_and_more":"x","d\u0061ta_long":2})"), "OK");
  CHECK_EQ(code_of("{\"op\":\"msg\",\"id\":1,\"to\":\"b\",\"\xC3\xB6p\":1,\"op\xC3\xB6\":2}"), "OK");
  // A key with an escape is still a duplicate.
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","\u0069d":2})"), "E_FRAME_MALFORMED");
  // Invalid UTF-8 in a key, after plain bytes, is malformed.
  CHECK_EQ(code_of("{\"op\":\"msg\",\"id\":1,\"to\":\"b\",\"abcdefghij\xFF\":1}"), "E_FRAME_MALFORMED");
  // "op" spelled with a non-ASCII byte, raw or escaped, is no op.
  CHECK_EQ(code_of("{\"op\":\"ms\xC3\xA9\",\"id\":1,\"to\":\"b\"}"), "E_UNKNOWN_OP");
  CHECK_EQ(code_of(R"({"op":"msg\u0000","id":1,"to":"b"})"), "E_UNKNOWN_OP");
  CHECK_EQ(code_of(R"({"op":"statusstatus","id":1,"to":"b"})"), "E_UNKNOWN_OP");
}

TEST("an address with escapes decodes to its text, and its limits hold however it is written") {
  CHECK_EQ(decode(R"({"op":"msg","id":1,"to":"a\"b\\c\/d"})").to(), "a\"b\\c/d");
  CHECK_EQ(decode(R"({"op":"msg","id":1,"to":"x"})").to(), "x");
  CHECK_EQ(decode("{\"op\":\"msg\",\"id\":1,\"to\":\"bo\xC3\xB6\"}").to(), "bo\xC3\xB6");
  std::string longest(254, 'a');
  CHECK_EQ(decode(R"({"op":"msg","id":1,"to":")" + longest + "\\u0062\"}").to(), longest + "b");
  Decoded d = decode(R"({"op":"msg","id":1,"to":")" + longest + "\\u0062c\"}");
  CHECK_EQ(d.code(), "E_BAD_ADDRESS");
  CHECK(d.detail.find("(256 bytes)") != std::string::npos);
  d = decode(R"({"op":"msg","id":1,"to":")" + std::string(300, 'a') + "\"}");
  CHECK_EQ(d.code(), "E_BAD_ADDRESS");
  CHECK(d.detail.find("(300 bytes)") != std::string::npos);
  CHECK_EQ(d.m.to_len, size_t(0));
  CHECK_EQ(std::string(d.m.to), "");
}

TEST("a payload is copied whole whether plain, escaped late or non-ASCII") {
  std::string plain(100, 'p');
  CHECK_EQ(decode(R"({"op":"msg","id":1,"to":"b","data":")" + plain + "\"}").payload(), plain);
  CHECK_EQ(decode(R"({"op":"msg","id":1,"to":"b","data":")" + plain + "\\n" + plain + "\"}").payload(),
           plain + "\n" + plain);
  CHECK_EQ(decode("{\"op\":\"msg\",\"id\":1,\"to\":\"b\",\"data\":\"" + plain + "\xE2\x82\xAC\"}").payload(),
           plain + "\xE2\x82\xAC");
  CHECK_EQ(code_of("{\"op\":\"msg\",\"id\":1,\"to\":\"b\",\"data\":\"" + plain + "\xE2\x82\"}"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of("{\"op\":\"msg\",\"id\":1,\"to\":\"b\",\"data\":\"" + plain + "\x7F\x01\"}"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":")" + plain), "E_FRAME_MALFORMED");
}

// --- payloads ---------------------------------------------------------------

TEST("a b64 payload carries NUL and 0xFF bytes") {
  Decoded d = decode(R"({"op":"msg","id":1,"to":"b","b64":"AP8BgHp6AP4="})");
  CHECK_EQ(d.code(), "OK");
  CHECK_EQ(d.payload(), kBinaryPayload);
  CHECK_EQ(d.m.payload[d.m.payload_len], 0);
}

TEST("b64 padding is optional, and an escaped slash is still a slash") {
  CHECK_EQ(decode(R"({"op":"msg","id":1,"to":"b","b64":"AP8BgHp6AP4"})").payload(), kBinaryPayload);
  CHECK_EQ(decode(R"({"op":"msg","id":1,"to":"b","b64":"\/\/\/\/"})").payload(), "\xFF\xFF\xFF");
  CHECK_EQ(decode(R"({"op":"msg","id":1,"to":"b","b64":"QQ=="})").payload(), "A");
  CHECK_EQ(decode(R"({"op":"msg","id":1,"to":"b","b64":"QUI="})").payload(), "AB");
  CHECK_EQ(decode(R"({"op":"msg","id":1,"to":"b","b64":""})").payload(), "");
}

TEST("text that is not base64 is E_BAD_BASE64") {
  for (const char *bad : {"QQ=", "Q", "QQ=A", "Q===", "QR==", "QUJ=", "Q Q=", "QQ==QQ==", "a-_b", "\\u00e9AAA"}) {
    std::string frame = R"({"op":"msg","id":1,"to":"b","b64":")" + std::string(bad) + "\"}";
    CHECK_EQ(code_of(frame), "E_BAD_BASE64");
  }
}

TEST("a binary frame carries every field and raw payload bytes") {
  Binary b(WIRE_OP_MESSAGE, B_ID | B_REFID | B_GID | B_FLAGS | B_TYPE | B_EXPIRY);
  b.u32(17).u32(16).u32(5).u32(3).u32(0x10001).u32(60).address("bob").address("").payload(kBinaryPayload);
  Decoded d = decode(b);
  CHECK_EQ(d.code(), "OK");
  CHECK_EQ(d.m.format, WIRE_BINARY);
  CHECK_EQ(d.m.op, WIRE_OP_MESSAGE);
  CHECK_EQ(d.m.id, 17u);
  CHECK_EQ(d.m.refid, 16u);
  CHECK_EQ(d.m.groupid, 5u);
  CHECK_EQ(d.m.flags, 3u);
  CHECK_EQ(d.m.type, 0x10001u);
  CHECK_EQ(d.m.expiry, 60u);
  CHECK_EQ(d.to(), "bob");
  CHECK_EQ(d.payload(), kBinaryPayload);
  CHECK_EQ(d.m.payload[d.m.payload_len], 0);
}

TEST("a binary status needs only id, status and to") {
  Decoded d = decode(Binary(WIRE_OP_STATUS, B_ID | B_STATUS).u32(9).u32(3).address("alice").address("").payload(""));
  CHECK_EQ(d.code(), "OK");
  CHECK_EQ(d.m.op, WIRE_OP_STATUS);
  CHECK_EQ(d.m.id, 9u);
  CHECK_EQ(d.m.status, 3u);
  CHECK_EQ(d.to(), "alice");
}

TEST("payload size: max_payload bytes pass, one more is E_PAYLOAD_TOO_LARGE in every form") {
  std::string at(kMax, 'a'), over(kMax + 1, 'a');
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":")" + at + "\"}"), "OK");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":")" + over + "\"}"), "E_PAYLOAD_TOO_LARGE");
  // The limit applies to the decoded bytes: 1024 digits are 768 bytes, 2048 are 1536.
  std::string b64(1024, 'A');
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","b64":")" + b64 + "\"}"), "OK");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","b64":")" + b64 + b64 + "\"}"), "E_PAYLOAD_TOO_LARGE");
  CHECK_EQ(code_of(Binary(1, B_ID).u32(1).address("b").address("").payload(at)), "OK");
  CHECK_EQ(code_of(Binary(1, B_ID).u32(1).address("b").address("").payload(over)), "E_PAYLOAD_TOO_LARGE");
}

TEST("escapes count as the bytes they decode to") {
  std::string escaped;
  for (size_t i = 0; i < kMax; ++i) escaped += "\\u00e9";  // 6 bytes of text, 2 of payload each
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":")" + escaped + "\"}", kMax * 2), "OK");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":")" + escaped + "\"}", kMax * 2 - 1),
           "E_PAYLOAD_TOO_LARGE");
}

// --- encoding ---------------------------------------------------------------

TEST("a JSON delivery writes the fields that are set, in a fixed order") {
  mesibo_message_params_t p = params(17, "alice", "bob");
  std::string out;
  size_t n = wire_encode_message(WIRE_JSON, p, "hello", 5, out);
  CHECK_EQ(out, R"({"op":"msg","id":17,"from":"alice","to":"bob","data":"hello"})");
  CHECK_EQ(n, out.size());
  p.groupid = 5, p.refid = 16, p.type = 3, p.flags = 0x103, p.expiry = 60;
  wire_encode_message(WIRE_JSON, p, "", 0, out);
  CHECK_EQ(out, R"({"op":"msg","id":17,"from":"alice","to":"bob","gid":5,"refid":16,"type":3,"flags":259,"expiry":60,"data":""})");
}

TEST("the encoder writes \"data\" for UTF-8 payloads, escaped, and \"b64\" for anything else") {
  mesibo_message_params_t p = params(1, "a", "b");
  std::string out;
  std::string text = "q\"b\\c/\n\r\t\b\f\x01\x1F\x7F\xC3\xA9\xF0\x9F\x98\x80"s;
  wire_encode_message(WIRE_JSON, p, text.data(), text.size(), out);
  CHECK_EQ(out, "{\"op\":\"msg\",\"id\":1,\"from\":\"a\",\"to\":\"b\",\"data\":\"q\\\"b\\\\c/\\n\\r\\t\\b\\f\\u0001\\u001f\x7F"
                "\xC3\xA9\xF0\x9F\x98\x80\"}");
  // A NUL is valid UTF-8: it goes as text, escaped.
  wire_encode_message(WIRE_JSON, p, "a\0b", 3, out);
  CHECK_EQ(out, R"({"op":"msg","id":1,"from":"a","to":"b","data":"a\u0000b"})");
  wire_encode_message(WIRE_JSON, p, kBinaryPayload.data(), kBinaryPayload.size(), out);
  CHECK_EQ(out, R"({"op":"msg","id":1,"from":"a","to":"b","b64":"AP8BgHp6AP4="})");
  wire_encode_message(WIRE_JSON, p, "\xFF", 1, out);
  CHECK_EQ(out, R"({"op":"msg","id":1,"from":"a","to":"b","b64":"/w=="})");
  wire_encode_message(WIRE_JSON, p, "\xC3", 1, out);  // a character cut in half
  CHECK_EQ(out, R"({"op":"msg","id":1,"from":"a","to":"b","b64":"ww=="})");
}

TEST("addresses are escaped, and bytes that are not UTF-8 become U+FFFD, so JSON stays valid") {
  mesibo_message_params_t p = params(1, "al\"ice\x01", "b\xFFob");
  std::string out;
  wire_encode_message(WIRE_JSON, p, "x", 1, out);
  CHECK_EQ(out, "{\"op\":\"msg\",\"id\":1,\"from\":\"al\\\"ice\\u0001\",\"to\":\"b\xEF\xBF\xBDob\",\"data\":\"x\"}");
}

TEST("long addresses and payloads encode the same as short ones, piece for piece") {
  // Each piece escapes to six bytes, so these heads do not fit on the stack.
  std::string from(300, '\x01'), to(200, '"'), from_json, to_json;
  for (size_t i = 0; i < from.size(); ++i) from_json += "\\u0001";
  for (size_t i = 0; i < to.size(); ++i) to_json += "\\\"";
  mesibo_message_params_t p = params(7, from.c_str(), to.c_str());
  p.groupid = 9, p.refid = 4294967295u, p.type = 1, p.flags = 10, p.expiry = 100;
  std::string out;
  size_t n = wire_encode_message(WIRE_JSON, p, "hi", 2, out);
  CHECK_EQ(n, out.size());
  CHECK_EQ(out, R"({"op":"msg","id":7,"from":")" + from_json + R"(","to":")" + to_json +
                    R"(","gid":9,"refid":4294967295,"type":1,"flags":10,"expiry":100,"data":"hi"})");
  wire_encode_message(WIRE_JSON, p, "\xFF", 1, out);
  CHECK_EQ(out, R"({"op":"msg","id":7,"from":")" + from_json + R"(","to":")" + to_json +
                    R"(","gid":9,"refid":4294967295,"type":1,"flags":10,"expiry":100,"b64":"/w=="})");
  p.status = 2;
  wire_encode_status(WIRE_JSON, p, out);
  CHECK_EQ(out, R"({"op":"status","id":7,"from":")" + from_json + R"(","gid":9,"status":2})");

  // Payloads around the size that still shares the stack buffer with short
  // addresses, as text with escapes and as base64 when the last byte is not UTF-8.
  p = params(1, "a", "b");
  for (size_t len : {0, 1, 250, 290, 294, 295, 296, 300, 1000, 5000}) {
    std::string text, json;
    for (size_t i = 0; i < len; ++i) {
      char c = "ab\"\n\x01z"[i % 6];
      text += c;
      json += c == '"' ? "\\\"" : c == '\n' ? "\\n" : c == '\x01' ? "\\u0001" : std::string(1, c);
    }
    wire_encode_message(WIRE_JSON, p, text.data(), text.size(), out);
    CHECK_EQ(out, R"({"op":"msg","id":1,"from":"a","to":"b","data":")" + json + "\"}");
    std::string bytes = text + "\xC3";
    wire_encode_message(WIRE_JSON, p, bytes.data(), bytes.size(), out);
    Decoded d = decode(out, 8192);
    CHECK_EQ(d.code(), "E_BAD_FIELD");  // "from" is for servers; the syntax is sound
    CHECK(out.find(R"(,"to":"b","b64":")") != std::string::npos);
    CHECK_EQ(d.payload(), bytes);
  }
}

TEST("the binary form cuts an address longer than 255 bytes at a character boundary") {
  std::string to = std::string(254, 'a') + "\xC3\xB6" + "z", from(300, 'f');
  mesibo_message_params_t p = params(1, from.c_str(), to.c_str());
  std::string out;
  wire_encode_message(WIRE_BINARY, p, "x", 1, out);
  CHECK_EQ(out, "\xB5\x01\x01\x01\x01\x00\x00\x00"s + "\xFE" + std::string(254, 'a') + "\xFF" + std::string(255, 'f') +
                    "\x01\x00\x00\x00x"s);
  p.status = 3;
  wire_encode_status(WIRE_BINARY, p, out);
  CHECK_EQ(out, "\xB5\x01\x02\x41\x01\x00\x00\x00\x03\x00\x00\x00\x00"s + "\xFF" + std::string(255, 'f') +
                    "\x00\x00\x00\x00"s);
}

TEST("a binary delivery has the documented layout") {
  mesibo_message_params_t p = params(0x01020304, "al", "bob");
  p.groupid = 7, p.expiry = 0x100;
  std::string out;
  size_t n = wire_encode_message(WIRE_BINARY, p, "\x00\xFF", 2, out);
  CHECK_EQ(n, out.size());
  CHECK_EQ(out, "\xB5\x01\x01\x25"          // magic, version, op 1, fields: id gid expiry
                "\x04\x03\x02\x01"          // id
                "\x07\x00\x00\x00"          // gid
                "\x00\x01\x00\x00"          // expiry
                "\x03" "bob"                // to
                "\x02" "al"                 // from
                "\x02\x00\x00\x00\x00\xFF"s);  // payload
}

TEST("a delivery encoded without \"from\" is a client frame that decodes to the same message") {
  std::vector<std::string> payloads = {"", "hello", "q\"\\\n\x01\x7F", "a\0b"s, kBinaryPayload, "\xC3",
                                       "\xF0\x9F\x98\x80 \xE2\x82\xAC"};
  for (WireFormat f : {WIRE_JSON, WIRE_BINARY}) {
    for (const std::string &payload : payloads) {
      mesibo_message_params_t p = params(0xFFFFFFFF, nullptr, "b\xC3\xB6" "b");
      p.groupid = 1, p.refid = 2, p.type = 0x80000000u, p.flags = 0x10f, p.expiry = 86400;
      std::string out;
      wire_encode_message(f, p, payload.data(), payload.size(), out);
      Decoded d = decode(out);
      CHECK_EQ(d.code(), "OK");
      CHECK_EQ(d.m.format, f);
      CHECK_EQ(d.m.op, WIRE_OP_MESSAGE);
      CHECK_EQ(d.m.id, 0xFFFFFFFFu);
      CHECK_EQ(d.m.groupid, 1u);
      CHECK_EQ(d.m.refid, 2u);
      CHECK_EQ(d.m.type, 0x80000000u);
      CHECK_EQ(d.m.flags, 0x10fu);
      CHECK_EQ(d.m.expiry, 86400u);
      CHECK_EQ(d.to(), "b\xC3\xB6" "b");
      CHECK_EQ(d.payload(), payload);
    }
  }
}

TEST("a status frame names the message, the peer and the status") {
  mesibo_message_params_t p = params(17, "bob", "alice");
  p.status = MESIBO_MODULE_MSGSTATUS_DELIVERED;
  std::string out;
  wire_encode_status(WIRE_JSON, p, out);
  CHECK_EQ(out, R"({"op":"status","id":17,"from":"bob","status":2})");
  p.groupid = 3, p.status = MESIBO_MODULE_MSGSTATUS_INVALIDDEST;
  wire_encode_status(WIRE_JSON, p, out);
  CHECK_EQ(out, R"({"op":"status","id":17,"from":"bob","gid":3,"status":131})");
  p.groupid = 0, p.status = 1;
  size_t n = wire_encode_status(WIRE_BINARY, p, out);
  CHECK_EQ(n, out.size());
  CHECK_EQ(out, "\xB5\x01\x02\x41"            // op 2, fields: id status
                "\x11\x00\x00\x00\x01\x00\x00\x00"
                "\x00"                        // no "to": the frame goes to alice
                "\x03" "bob"
                "\x00\x00\x00\x00"s);
}

TEST("an error frame has the code, the message, the frame's id and the detail") {
  std::string out;
  wire_encode_error(WIRE_JSON, WIRE_E_MALFORMED, 17, "expected ':' at byte 9", out);
  CHECK_EQ(out, std::string(R"({"op":"error","code":"E_FRAME_MALFORMED","message":")") +
                    wire_error_message(WIRE_E_MALFORMED) + R"(","id":17,"detail":"expected ':' at byte 9"})");
  wire_encode_error(WIRE_JSON, WIRE_E_EMPTY, 0, nullptr, out);
  CHECK_EQ(out, std::string(R"({"op":"error","code":"E_FRAME_EMPTY","message":")") +
                    wire_error_message(WIRE_E_EMPTY) + R"(","id":0})");
  // Messages quote field names; the JSON form escapes those quotes.
  wire_encode_error(WIRE_JSON, WIRE_E_UNKNOWN_OP, 0, "", out);
  CHECK(out.find(R"(use \"msg\")") != std::string::npos);

  size_t n = wire_encode_error(WIRE_BINARY, WIRE_E_BAD_FIELD, 5, "\"id\"", out);
  std::string text = std::string("E_BAD_FIELD\n") + wire_error_message(WIRE_E_BAD_FIELD) + "\n\"id\"";
  std::string head = "\xB5\x01\x03\x41\x05\x00\x00\x00\x06\x00\x00\x00\x00\x00"s;
  head.push_back(char(text.size()));
  head.append(3, '\0');
  CHECK_EQ(out, head + text);
  CHECK_EQ(n, out.size());
}

TEST("every error has a stable code and a message that ends a sentence") {
  struct { int err; const char *code; } table[] = {
      {WIRE_E_EMPTY, "E_FRAME_EMPTY"},         {WIRE_E_TOO_LARGE, "E_FRAME_TOO_LARGE"},
      {WIRE_E_MALFORMED, "E_FRAME_MALFORMED"}, {WIRE_E_TRUNCATED, "E_FRAME_TRUNCATED"},
      {WIRE_E_UNKNOWN_OP, "E_UNKNOWN_OP"},     {WIRE_E_BAD_FIELD, "E_BAD_FIELD"},
      {WIRE_E_NO_DESTINATION, "E_NO_DESTINATION"}, {WIRE_E_BAD_ADDRESS, "E_BAD_ADDRESS"},
      {WIRE_E_BAD_VERSION, "E_BAD_VERSION"},   {WIRE_E_BAD_BASE64, "E_BAD_BASE64"},
      {WIRE_E_PAYLOAD_TOO_LARGE, "E_PAYLOAD_TOO_LARGE"},
  };
  for (auto &t : table) {
    CHECK_EQ(wire_error_code(t.err), std::string(t.code));
    std::string message = wire_error_message(t.err);
    CHECK(message.size() > 20 && message.back() == '.');
  }
  CHECK_EQ(wire_error_code(WIRE_OK), std::string("OK"));
  CHECK_EQ(wire_error_code(-99), std::string("E_UNKNOWN_ERROR"));
  CHECK(wire_error_message(-99) != nullptr);
}

// --- each error, and what triggers it -----------------------------------------

TEST("E_FRAME_EMPTY: a frame of zero bytes") {
  Decoded d = decode("");
  CHECK_EQ(d.code(), "E_FRAME_EMPTY");
  CHECK_EQ(d.m.to_len + d.m.payload_len, size_t(0));
}

TEST("E_FRAME_TOO_LARGE: longer than 2 * max_payload + 4096, refused before parsing") {
  std::string big(2 * kMax + 4097, 'x');  // not even JSON: never looked at
  CHECK_EQ(code_of(big), "E_FRAME_TOO_LARGE");
  big.pop_back();
  CHECK_EQ(code_of(big), "E_FRAME_MALFORMED");
}

TEST("E_FRAME_MALFORMED: JSON syntax") {
  for (const char *bad : {" ", "[]", "\"op\"", "{", "{\"op\":\"msg\"", "{\"op\" \"msg\"}", "{\"op\":\"msg\",}",
                          "{,}", "{\"op\":msg}", "{\"op\":\"msg\"} x", "{}{}", "{\"x\":tru}", "{\"x\":nul}",
                          "{\"x\":[1,]}", "{\"x\":[1 2]}", "{\"x\":{\"a\"}}", "{\"x\":{1:2}}", "\xEF\xBB\xBF{}"}) {
    Decoded d = decode(bad);
    CHECK_EQ(d.code(), "E_FRAME_MALFORMED");
    CHECK(d.detail.find("at byte") != std::string::npos);
  }
  CHECK_EQ(code_of("{\"op\":\"msg\",\"id\":1,\"to\":\"b\"}\x00"s), "E_FRAME_MALFORMED");
}

TEST("E_FRAME_MALFORMED: a known key twice") {
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","to":"c"})"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":"x","\u0064ata":"y"})"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(R"({"op":"msg","op":"status","id":1,"to":"b"})"), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","x":1,"x":2})"), "OK");  // unknown keys are not checked
}

TEST("E_FRAME_MALFORMED: nesting deeper than 32 levels") {
  auto nested = [](int levels) {  // the frame object is level 1
    return R"({"op":"msg","id":1,"to":"b","x":)" + std::string(levels - 1, '[') + std::string(levels - 1, ']') + "}";
  };
  CHECK_EQ(code_of(nested(32)), "OK");
  CHECK_EQ(code_of(nested(33)), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(nested(2000)), "E_FRAME_MALFORMED");
}

TEST("E_FRAME_MALFORMED: a binary frame with bytes after the payload, or a reserved bit") {
  Binary ok = Binary(1, B_ID).u32(1).address("b").address("").payload("x");
  CHECK_EQ(code_of(ok), "OK");
  CHECK_EQ(code_of(ok.b + "\x00"s), "E_FRAME_MALFORMED");
  CHECK_EQ(code_of(Binary(1, B_ID | 0x80).u32(1).address("b").address("").payload("x")), "E_FRAME_MALFORMED");
}

TEST("E_FRAME_TRUNCATED: every proper prefix of a binary frame") {
  Binary b(WIRE_OP_MESSAGE, B_ID | B_REFID | B_GID | B_FLAGS | B_TYPE | B_EXPIRY | B_STATUS);
  b.u32(1).u32(2).u32(3).u32(4).u32(5).u32(6).u32(7).address("bob").address("").payload(kBinaryPayload);
  std::string full = b.b;
  for (size_t n = 1; n < full.size(); ++n) CHECK_EQ(code_of(full.substr(0, n)), "E_FRAME_TRUNCATED");
  // The status field makes this a bad message, but only once the frame is whole.
  CHECK_EQ(code_of(full), "E_BAD_FIELD");
}

TEST("every proper prefix of a JSON frame is refused") {
  std::string full = R"({"op":"msg","id":17,"to":"b\u00f6b","gid":2,"b64":"AP8=","x":[{"y":null}]})";
  CHECK_EQ(code_of(full), "OK");
  for (size_t n = 1; n < full.size(); ++n) CHECK_EQ(code_of(full.substr(0, n)), "E_FRAME_MALFORMED");
}

TEST("E_UNKNOWN_OP: no op, an op a client may not send, or not a string") {
  CHECK_EQ(code_of(R"({"id":1,"to":"b"})"), "E_UNKNOWN_OP");
  CHECK_EQ(code_of(R"({})"), "E_UNKNOWN_OP");
  CHECK_EQ(code_of(R"({"op":"error","id":1,"to":"b"})"), "E_UNKNOWN_OP");
  CHECK_EQ(code_of(R"({"op":"MSG","id":1,"to":"b"})"), "E_UNKNOWN_OP");
  CHECK_EQ(code_of(R"({"op":"message","id":1,"to":"b"})"), "E_UNKNOWN_OP");
  CHECK_EQ(code_of(R"({"op":1,"id":1,"to":"b"})"), "E_UNKNOWN_OP");
  CHECK_EQ(code_of(Binary(3, B_ID).u32(1).address("b").address("").payload("")), "E_UNKNOWN_OP");
  CHECK_EQ(code_of(Binary(0, B_ID).u32(1).address("b").address("").payload("")), "E_UNKNOWN_OP");
}

TEST("E_BAD_FIELD: a field the op does not carry, or a missing id or status") {
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":"x","b64":"eA=="})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","data":5})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"b","status":2})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"status","id":1,"to":"b","status":2,"data":"x"})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"status","id":1,"to":"b","status":2,"gid":4})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"msg","to":"b"})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"msg","id":0,"to":"b"})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"status","id":1,"to":"b"})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"status","id":1,"to":"b","status":1})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(R"({"op":"status","id":1,"to":"b","status":128})"), "E_BAD_FIELD");
  CHECK_EQ(code_of(Binary(2, B_ID | B_STATUS).u32(1).u32(2).address("b").address("").payload("x")), "E_BAD_FIELD");
  CHECK_EQ(code_of(Binary(1, 0).address("b").address("").payload("x")), "E_BAD_FIELD");
}

TEST("E_BAD_FIELD: a client never says who it is") {
  Decoded d = decode(R"({"op":"msg","id":1,"from":"mallory","to":"b"})");
  CHECK_EQ(d.code(), "E_BAD_FIELD");
  CHECK(d.detail.find("\"from\"") != std::string::npos);
  CHECK_EQ(code_of(Binary(1, B_ID).u32(1).address("b").address("mallory").payload("")), "E_BAD_FIELD");
}

TEST("E_NO_DESTINATION: a message for nobody, a status without \"to\"") {
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"data":"x"})"), "E_NO_DESTINATION");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"gid":0,"data":"x"})"), "E_NO_DESTINATION");
  CHECK_EQ(code_of(R"({"op":"status","id":1,"status":2})"), "E_NO_DESTINATION");
  CHECK_EQ(code_of(Binary(1, B_ID).u32(1).address("").address("").payload("x")), "E_NO_DESTINATION");
}

TEST("E_BAD_ADDRESS: empty, too long, control characters, not UTF-8, not a string") {
  std::string longest(255, 'a');
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":")" + longest + "\"}"), "OK");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":")" + longest + "a\"}"), "E_BAD_ADDRESS");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":""})"), "E_BAD_ADDRESS");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"a\u0001b"})"), "E_BAD_ADDRESS");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"a\nb"})"), "E_BAD_ADDRESS");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":"a\u0000"})"), "E_BAD_ADDRESS");
  CHECK_EQ(code_of(R"({"op":"msg","id":1,"to":7})"), "E_BAD_ADDRESS");
  CHECK_EQ(code_of("{\"op\":\"msg\",\"id\":1,\"to\":\"a\xFF\"}"), "E_BAD_ADDRESS");
  CHECK_EQ(code_of(Binary(1, B_ID).u32(1).address("a\xC3").address("").payload("")), "E_BAD_ADDRESS");
  CHECK_EQ(code_of(Binary(1, B_ID).u32(1).address("a\x1F").address("").payload("")), "E_BAD_ADDRESS");
  CHECK_EQ(code_of(Binary(1, B_ID).u32(1).address(longest).address("").payload("")), "OK");
}

TEST("E_BAD_VERSION: a binary version byte or a JSON \"v\" other than 1") {
  Binary b = Binary(1, B_ID).u32(1).address("b").address("").payload("");
  b.b[1] = 2;
  CHECK_EQ(code_of(b), "E_BAD_VERSION");
  CHECK_EQ(code_of("\xB5\x00"s), "E_BAD_VERSION");
  CHECK_EQ(code_of("\xB5"), "E_FRAME_TRUNCATED");
  CHECK_EQ(code_of(R"({"v":1,"op":"msg","id":1,"to":"b"})"), "OK");
  CHECK_EQ(code_of(R"({"v":2,"op":"msg","id":1,"to":"b"})"), "E_BAD_VERSION");
  CHECK_EQ(code_of(R"({"v":"1","op":"msg","id":1,"to":"b"})"), "E_BAD_VERSION");
  // The version explains everything else that looks wrong to a v1 decoder.
  CHECK_EQ(code_of(R"({"op":"send","to":"","v":2})"), "E_BAD_VERSION");
}

TEST("the id of a refused frame is reported wherever it appears") {
  Decoded d = decode(R"({"to":"","op":"msg","id":9})");
  CHECK_EQ(d.code(), "E_BAD_ADDRESS");
  CHECK_EQ(d.m.id, 9u);
  d = decode(Binary(1, B_ID).u32(12).address("").address("x").payload(""));
  CHECK_EQ(d.code(), "E_BAD_FIELD");
  CHECK_EQ(d.m.id, 12u);
  // A syntax error wins over a value error seen before it; an id read before
  // the syntax error is still known, one after it is not.
  d = decode(R"({"to":"","op":"msg","id":9,})");
  CHECK_EQ(d.code(), "E_FRAME_MALFORMED");
  CHECK_EQ(d.m.id, 9u);
  CHECK_EQ(decode(R"({"op":"msg","to":"b",,"id":9})").m.id, 0u);
  // A number that is not a valid id is no id.
  CHECK_EQ(decode(R"({"op":"msg","to":"b","id":9.5})").m.id, 0u);
  CHECK_EQ(decode(Binary(1, B_ID).u32(12).b.substr(0, 7)).m.id, 0u);
  CHECK_EQ(decode(Binary(1, B_ID).u32(12).b).m.id, 12u);
}

// --- allocation ---------------------------------------------------------------

TEST("a warm decode and encode allocate nothing") {
  std::vector<std::string> frames = {
      R"({"op":"msg","id":17,"to":"bob","data":"hello \u00e9 \ud83d\ude00","x":[1,{"y":2}]})",
      R"({"op":"msg","id":17,"to":"bob","b64":"AP8BgHp6AP4="})",
      R"({"op":"status","id":17,"to":"alice","status":3})",
      Binary(1, B_ID | B_FLAGS).u32(1).u32(3).address("bob").address("").payload(kBinaryPayload).b,
      R"({"op":"msg","id":1,"to":"","data":"refused"})",
  };
  WireScratch scratch;
  WireMessage m{};
  std::string out;
  mesibo_message_params_t p = params(1, "alice", "bob");
  auto round = [&] {
    for (const std::string &f : frames) {
      wire_decode(reinterpret_cast<const uint8_t *>(f.data()), f.size(), kMax, m, scratch);
      wire_encode_message(WIRE_JSON, p, m.payload, m.payload_len, out);
      wire_encode_message(WIRE_BINARY, p, m.payload, m.payload_len, out);
      wire_encode_status(WIRE_JSON, p, out);
      wire_encode_error(WIRE_JSON, WIRE_E_BAD_ADDRESS, m.id, nullptr, out);
    }
  };
  round();  // warm: the scratch and `out` reach their working sizes
  size_t capacity = scratch.buf.capacity();
  const char *buffer = scratch.buf.data();
  size_t before = g_allocations;
  for (int i = 0; i < 100; ++i) round();
  CHECK_EQ(g_allocations - before, size_t(0));
  CHECK_EQ(scratch.buf.capacity(), capacity);
  CHECK(scratch.buf.data() == buffer);
}

TEST("the scratch grows only for a frame longer than any before") {
  WireScratch scratch;
  WireMessage m{};
  std::string big = R"({"op":"msg","id":1,"to":"b","data":")" + std::string(900, 'z') + "\"}";
  std::string small = R"({"op":"msg","id":1,"to":"b","data":"z"})";
  wire_decode(reinterpret_cast<const uint8_t *>(big.data()), big.size(), kMax, m, scratch);
  size_t capacity = scratch.buf.capacity();
  for (int i = 0; i < 10; ++i) {
    CHECK_EQ(wire_decode(reinterpret_cast<const uint8_t *>(small.data()), small.size(), kMax, m, scratch), int(WIRE_OK));
    CHECK_EQ(wire_decode(reinterpret_cast<const uint8_t *>(big.data()), big.size(), kMax, m, scratch), int(WIRE_OK));
  }
  CHECK_EQ(scratch.buf.capacity(), capacity);
  CHECK_EQ(m.payload_len, size_t(900));
}
